//! Secrets at rest: client and upstream secrets are encrypted with the configured 32-byte key
//! (XChaCha20-Poly1305, a random 24-byte nonce per value), stored as base64 of nonce ‖ ciphertext.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, KeyInit},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore;
use sha2::{Digest as _, Sha256};

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the stored secret is not valid base64")]
    Encoding,
    #[error("the stored secret can't be decrypted with the configured encryption key")]
    Decrypt,
    #[error("the decrypted secret is not UTF-8")]
    NotUtf8,
}

/// Encrypts and decrypts secrets stored in the database.
#[derive(Clone)]
pub struct Encrypter {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Encrypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encrypter(..)")
    }
}

impl Encrypter {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    pub fn encrypt(&self, rng: &mut impl RngCore, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce can't fail for in-memory buffers.
        let ciphertext = self
            .cipher
            .encrypt(&XNonce::from(nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        STANDARD.encode(out)
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, CryptoError> {
        let bytes = STANDARD.decode(stored).map_err(|_| CryptoError::Encoding)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotUtf8)
    }
}

/// SHA-256 of a token or code: how secrets that are only ever compared are stored.
pub fn sha256(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let mut rng = StdRng::seed_from_u64(9);
        let enc = Encrypter::new(&[7; 32]);
        let a = enc.encrypt(&mut rng, "s3cret");
        let b = enc.encrypt(&mut rng, "s3cret");
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(enc.decrypt(&a).unwrap(), "s3cret");
        assert_eq!(
            Encrypter::new(&[8; 32]).decrypt(&a),
            Err(CryptoError::Decrypt)
        );
        let mut raw = STANDARD.decode(&a).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            enc.decrypt(&STANDARD.encode(raw)),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(enc.decrypt("%%%"), Err(CryptoError::Encoding));
        assert_eq!(enc.decrypt("AAAA"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn sha256_is_the_standard_digest() {
        assert_eq!(
            hex::encode(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
