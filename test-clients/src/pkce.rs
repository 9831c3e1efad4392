//! PKCE (RFC 7636), as a client makes it: a random verifier and its S256 challenge.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::{CryptoRng, RngCore};
use sha2::{Digest as _, Sha256};

/// A code verifier and the matching `S256` code challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkcePair {
    pub verifier: String,
    pub challenge: String,
}

impl PkcePair {
    /// RFC 7636 §4.1: 32 random octets, base64url-encoded to a 43-character verifier (the
    /// recommended construction).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self::from_verifier(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// RFC 7636 §4.2: `code_challenge = BASE64URL(SHA256(ASCII(code_verifier)))`.
    pub fn from_verifier(verifier: String) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let pair = PkcePair::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            pair.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    proptest! {
        #[test]
        fn verifiers_follow_rfc7636_section_4_1(seed in any::<u64>()) {
            let pair = PkcePair::generate(&mut StdRng::seed_from_u64(seed));
            // 43..=128 characters from the unreserved set
            prop_assert_eq!(pair.verifier.len(), 43);
            prop_assert!(pair.verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
            prop_assert_eq!(pair.challenge.len(), 43);
            prop_assert_eq!(PkcePair::from_verifier(pair.verifier.clone()), pair);
        }
    }
}
