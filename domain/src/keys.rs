//! Signing keys: loading PEM keys, their public JWKs, RFC 7638 thumbprints and the JWKS.
//!
//! Supported keys: RSA (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`), used with RS256, and
//! NIST P-256 (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`), used with ES256. RS256 must always
//! be available (OIDC Core §15.1), so a keystore without an RSA key is refused.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use rand::{CryptoRng, RngCore};
use rsa::{
    pkcs1::DecodeRsaPrivateKey as _,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding},
    traits::PublicKeyParts as _,
    RsaPrivateKey,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// RSA keys shorter than this are refused (RFC 7518 §3.3: 2048 bits or larger MUST be used).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM private key (expected a `-----BEGIN … PRIVATE KEY-----` block)")]
    NotPem,
    #[error("encrypted private keys are not supported: decrypt it first (`openssl pkey -in key.pem -out plain.pem`)")]
    Encrypted,
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("invalid {format} key: {reason}")]
    Invalid {
        format: &'static str,
        reason: String,
    },
    #[error("RSA key of {0} bits is too short: at least 2048 bits are required")]
    TooShort(usize),
    #[error("no RSA key: RS256 must always be available (OIDC Core §15.1)")]
    NoRsaKey,
    #[error("two keys share the key ID `{0}`")]
    DuplicateKid(String),
}

/// The signature algorithms this provider signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rs256,
    Es256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    /// The same algorithm for the JWS library.
    pub fn jws(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// A private key of a supported kind.
#[derive(Clone)]
pub enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            Self::Rsa(k) => write!(f, "PrivateKey::Rsa({} bits)", k.size() * 8),
            Self::P256(_) => f.write_str("PrivateKey::P256"),
        }
    }
}

impl PrivateKey {
    /// Parses a PEM private key: PKCS#1 (RSA), SEC1 (P-256) or unencrypted PKCS#8 (either).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let label = pem
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
            .ok_or(KeyError::NotPem)?;
        let invalid = |format: &'static str| {
            move |e: &dyn std::fmt::Display| KeyError::Invalid {
                format,
                reason: e.to_string(),
            }
        };
        let key = match label {
            "RSA PRIVATE KEY" => Self::Rsa(Box::new(
                RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| invalid("PKCS#1")(&e))?,
            )),
            "EC PRIVATE KEY" => Self::P256(p256::SecretKey::from_sec1_pem(pem).map_err(|_| {
                KeyError::Unsupported(
                    "this SEC1 key is not a valid NIST P-256 key (only P-256 is supported)".into(),
                )
            })?),
            "PRIVATE KEY" => {
                if let Ok(key) = RsaPrivateKey::from_pkcs8_pem(pem) {
                    Self::Rsa(Box::new(key))
                } else if let Ok(key) = p256::SecretKey::from_pkcs8_pem(pem) {
                    Self::P256(key)
                } else {
                    return Err(KeyError::Unsupported(
                        "this PKCS#8 key is neither RSA nor NIST P-256".into(),
                    ));
                }
            }
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            other => return Err(KeyError::Unsupported(format!("PEM block `{other}`"))),
        };
        if let Self::Rsa(rsa) = &key {
            let bits = rsa.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(KeyError::TooShort(bits));
            }
        }
        Ok(key)
    }

    /// A fresh 2048-bit RSA key.
    pub fn generate_rsa<R: RngCore + CryptoRng>(rng: &mut R) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::new(rng, MIN_RSA_BITS).map_err(|e| KeyError::Invalid {
            format: "RSA",
            reason: e.to_string(),
        })?;
        Ok(Self::Rsa(Box::new(key)))
    }

    /// A fresh P-256 key.
    pub fn generate_p256<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::P256(p256::SecretKey::random(rng))
    }

    /// The key as an unencrypted PKCS#8 PEM document.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = match self {
            Self::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string()).map_err(|e| KeyError::Invalid {
            format: "PKCS#8",
            reason: e.to_string(),
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Rsa(_) => Algorithm::Rs256,
            Self::P256(_) => Algorithm::Es256,
        }
    }

    /// The public key's required JWK members (RFC 7518 §6.2.1, §6.3.1), in lexicographic order.
    fn required_members(&self) -> Value {
        match self {
            Self::Rsa(k) => json!({
                "e": URL_SAFE_NO_PAD.encode(k.e().to_bytes_be()),
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()),
            }),
            Self::P256(k) => {
                let point = k.public_key().to_encoded_point(false);
                json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(point.x().map(|x| &x[..]).unwrap_or_default()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().map(|y| &y[..]).unwrap_or_default()),
                })
            }
        }
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): the hash of the required members,
    /// lexicographically ordered, without whitespace (§3.2).
    pub fn thumbprint(&self) -> String {
        thumbprint_of(&self.required_members())
    }
}

/// RFC 7638 §3: SHA-256 over the JSON of the required members. `serde_json` writes object members
/// in key order (no `preserve_order` feature here) and without whitespace.
fn thumbprint_of(members: &Value) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(members.to_string().as_bytes()))
}

/// A signing key with its key ID.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub key: PrivateKey,
    /// The key in the form the JWS signer takes (PKCS#1 DER for RSA, PKCS#8 DER for P-256),
    /// encoded once rather than at every signature.
    encoding: jsonwebtoken::EncodingKey,
    /// The public half as a JWS verification key, made once (for `id_token_hint`s).
    decoding: Option<jsonwebtoken::DecodingKey>,
}

impl SigningKey {
    /// A key whose ID is the one given, or else its RFC 7638 thumbprint.
    pub fn new(key: PrivateKey, kid: Option<String>) -> Self {
        use p256::pkcs8::EncodePrivateKey as _;
        use rsa::pkcs1::EncodeRsaPrivateKey as _;

        let kid = kid.unwrap_or_else(|| key.thumbprint());
        // Encoding a valid in-memory key can't fail; an empty key would make signing fail
        // with an error, never a panic.
        let encoding = match &key {
            PrivateKey::Rsa(k) => jsonwebtoken::EncodingKey::from_rsa_der(
                k.to_pkcs1_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
                    .as_slice(),
            ),
            PrivateKey::P256(k) => jsonwebtoken::EncodingKey::from_ec_der(
                k.to_pkcs8_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
                    .as_slice(),
            ),
        };
        let decoding = Self::decoding_key(&key);
        Self {
            kid,
            key,
            encoding,
            decoding,
        }
    }

    /// Signs claims as a compact JWS (RFC 7515 §7.1) with this key's algorithm, naming the key
    /// in the `kid` header so verifiers pick it from the JWKS.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = jsonwebtoken::Header::new(self.key.algorithm().jws());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyError::Invalid {
            format: "JWS",
            reason: e.to_string(),
        })
    }

    /// The public half as a JWS verification key.
    fn decoding_key(key: &PrivateKey) -> Option<jsonwebtoken::DecodingKey> {
        let jwk = key.required_members();
        let member = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match key {
            PrivateKey::Rsa(_) => {
                jsonwebtoken::DecodingKey::from_rsa_components(&member("n"), &member("e")).ok()
            }
            PrivateKey::P256(_) => {
                jsonwebtoken::DecodingKey::from_ec_components(&member("x"), &member("y")).ok()
            }
        }
    }

    /// The public JWK (RFC 7517 §4) published in the JWKS.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.key.required_members();
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), self.kid.clone().into());
            map.insert("use".into(), "sig".into());
            map.insert("alg".into(), self.key.algorithm().as_str().into());
        }
        jwk
    }
}

/// The provider's signing keys.
#[derive(Debug, Clone)]
pub struct Keystore {
    keys: Vec<SigningKey>,
}

impl Keystore {
    /// A keystore: key IDs unique, and at least one RSA key (OIDC Core §15.1: RS256 MUST).
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
        }
        if !keys.iter().any(|k| k.key.algorithm() == Algorithm::Rs256) {
            return Err(KeyError::NoRsaKey);
        }
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The first key for an algorithm.
    pub fn for_algorithm(&self, alg: Algorithm) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.key.algorithm() == alg)
    }

    /// The algorithms there is a key for, RS256 first.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = Vec::new();
        for alg in [Algorithm::Rs256, Algorithm::Es256] {
            if self.for_algorithm(alg).is_some() {
                algs.push(alg);
            }
        }
        algs
    }

    /// Signs claims with the first key for `alg` (RS256 when the client asked for nothing else,
    /// OIDC Core §15.1). `None` when there is no key for that algorithm.
    pub fn sign<T: serde::Serialize>(
        &self,
        alg: Algorithm,
        claims: &T,
    ) -> Option<Result<String, KeyError>> {
        self.for_algorithm(alg).map(|key| key.sign(claims))
    }

    /// Reads a JWT this server signed (an `id_token_hint`): the signature must verify with the
    /// key its `kid` names and `iss` must be `issuer`. Expiry is NOT checked: RP-Initiated Logout
    /// §2 lets an expired ID token serve as a hint. `None` for anything else.
    pub fn verify_own<T: serde::de::DeserializeOwned>(&self, jwt: &str, issuer: &str) -> Option<T> {
        let header = jsonwebtoken::decode_header(jwt).ok()?;
        let key = self
            .keys
            .iter()
            .find(|k| Some(&k.kid) == header.kid.as_ref())?;
        let alg = key.key.algorithm().jws();
        if header.alg != alg {
            return None;
        }
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[issuer]);
        jsonwebtoken::decode::<T>(jwt, key.decoding.as_ref()?, &validation)
            .ok()
            .map(|data| data.claims)
    }

    /// The public JWK Set (RFC 7517 §5).
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1
        let members = json!({
            "e": "AQAB",
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        });
        assert_eq!(
            thumbprint_of(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    fn rsa_key() -> RsaPrivateKey {
        match PrivateKey::generate_rsa(&mut StdRng::seed_from_u64(1)).unwrap() {
            PrivateKey::Rsa(k) => *k,
            PrivateKey::P256(_) => unreachable!(),
        }
    }

    #[test]
    fn loads_every_pem_format_to_the_same_key() {
        use p256::pkcs8::EncodePrivateKey as _;
        use rsa::pkcs1::EncodeRsaPrivateKey as _;

        let rsa = rsa_key();
        let pkcs1 = rsa.to_pkcs1_pem(LineEnding::LF).unwrap();
        let pkcs8 = rsa.to_pkcs8_pem(LineEnding::LF).unwrap();
        let a = PrivateKey::from_pem(&pkcs1).unwrap();
        let b = PrivateKey::from_pem(&pkcs8).unwrap();
        assert_eq!(a.algorithm(), Algorithm::Rs256);
        assert_eq!(a.thumbprint(), b.thumbprint());

        let ec = p256::SecretKey::random(&mut StdRng::seed_from_u64(2));
        let sec1 = ec.to_sec1_pem(LineEnding::LF).unwrap();
        let pkcs8 = ec.to_pkcs8_pem(LineEnding::LF).unwrap();
        let c = PrivateKey::from_pem(&sec1).unwrap();
        let d = PrivateKey::from_pem(&pkcs8).unwrap();
        assert_eq!(c.algorithm(), Algorithm::Es256);
        assert_eq!(c.thumbprint(), d.thumbprint());
        assert_ne!(a.thumbprint(), c.thumbprint());
    }

    #[test]
    fn refuses_bad_keys_with_a_reason() {
        assert_eq!(PrivateKey::from_pem("hello").unwrap_err(), KeyError::NotPem);
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            PrivateKey::from_pem(encrypted).unwrap_err(),
            KeyError::Encrypted
        );
        let garbage = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(garbage).unwrap_err(),
            KeyError::Invalid {
                format: "PKCS#1",
                ..
            }
        ));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            PrivateKey::from_pem(cert).unwrap_err(),
            KeyError::Unsupported(_)
        ));
        let short = RsaPrivateKey::new(&mut StdRng::seed_from_u64(3), 1024).unwrap();
        let short = short.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(
            PrivateKey::from_pem(&short).unwrap_err(),
            KeyError::TooShort(1024)
        );
    }

    #[test]
    fn jwks_and_keystore_rules() {
        let rsa = SigningKey::new(PrivateKey::Rsa(Box::new(rsa_key())), None);
        let ec = SigningKey::new(
            PrivateKey::generate_p256(&mut StdRng::seed_from_u64(4)),
            Some("ec-1".into()),
        );
        assert_eq!(rsa.kid, rsa.key.thumbprint());
        let store = Keystore::new(vec![rsa.clone(), ec.clone()]).unwrap();
        assert_eq!(store.algorithms(), vec![Algorithm::Rs256, Algorithm::Es256]);
        let jwks = store.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kty"], "RSA");
        assert_eq!(keys[0]["alg"], "RS256");
        assert_eq!(keys[0]["e"], "AQAB");
        assert_eq!(keys[1]["kid"], "ec-1");
        assert_eq!(keys[1]["crv"], "P-256");
        assert_eq!(keys[1]["x"].as_str().unwrap().len(), 43);
        // No private member leaks.
        for key in keys {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(key.get(private).is_none(), "{private} leaked");
            }
        }
        assert_eq!(
            Keystore::new(vec![ec.clone()]).unwrap_err(),
            KeyError::NoRsaKey
        );
        assert_eq!(
            Keystore::new(vec![rsa.clone(), rsa.clone()]).unwrap_err(),
            KeyError::DuplicateKid(rsa.kid.clone())
        );
    }
}

#[cfg(test)]
mod verify_tests {
    use rand::{rngs::StdRng, SeedableRng};
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_back_its_own_tokens_only() {
        let rsa = SigningKey::new(
            PrivateKey::generate_rsa(&mut StdRng::seed_from_u64(8)).unwrap(),
            None,
        );
        let ec = SigningKey::new(
            PrivateKey::generate_p256(&mut StdRng::seed_from_u64(9)),
            None,
        );
        let store = Keystore::new(vec![rsa, ec]).unwrap();
        let claims = json!({"iss": "https://a/", "aud": "c", "sub": "u", "exp": 1, "sid": "s"});
        for alg in [Algorithm::Rs256, Algorithm::Es256] {
            let jwt = store.sign(alg, &claims).unwrap().unwrap();
            // Expired long ago, still a valid hint.
            let read: Value = store.verify_own(&jwt, "https://a/").unwrap();
            assert_eq!(read["sid"], "s");
            assert!(
                store.verify_own::<Value>(&jwt, "https://b/").is_none(),
                "other issuer"
            );
            let mut tampered = jwt.clone();
            tampered.replace_range(jwt.len() - 4.., "AAAA");
            assert!(store.verify_own::<Value>(&tampered, "https://a/").is_none());
        }
        let other = Keystore::new(vec![SigningKey::new(
            PrivateKey::generate_rsa(&mut StdRng::seed_from_u64(10)).unwrap(),
            None,
        )])
        .unwrap();
        let foreign = other.sign(Algorithm::Rs256, &claims).unwrap().unwrap();
        assert!(
            store.verify_own::<Value>(&foreign, "https://a/").is_none(),
            "not our key"
        );
        assert!(store.verify_own::<Value>("garbage", "https://a/").is_none());
    }
}
