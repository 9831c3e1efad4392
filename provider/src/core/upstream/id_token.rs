//! Validation of an upstream provider's ID token, as OIDC Core §3.1.3.7 lists it for the
//! authorization code flow, without I/O: the caller hands over the provider's keys (its JWKS)
//! and what it expects.
//!
//! The checks, in the order of the section (item numbers in the comments): not encrypted (1),
//! `iss` (2), `aud` (3), `azp` when there are several audiences or when present (4, 5), the
//! signature with the key the `kid` names and the configured algorithm (6, 7), `exp` (9), `iat`
//! not in the future, `nonce` (11). `at_hash` is checked when present (§3.1.3.8 lets the client
//! bind the access token to the ID token with it). The clock is the caller's, with a small leeway.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::{DateTime, Utc};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, Jwk, PublicKeyUse},
    Algorithm, AlgorithmFamily, DecodingKey, Validation,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha384, Sha512};
use subtle::ConstantTimeEq as _;

use crate::domain::id_token::left_half_sha256;

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 60;

/// Why an ID token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("it is not a signed JWT")]
    Malformed,
    #[error("encrypted ID tokens are not supported")]
    Encrypted,
    #[error("it is signed with {found}, but the provider is configured for {expected}")]
    Algorithm { expected: String, found: String },
    #[error("no key of the provider's JWKS matches it (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("its signature does not verify")]
    Signature,
    #[error("its claims are not a JSON object")]
    Claims,
    #[error("its issuer is {found:?}, not {expected:?}")]
    Issuer {
        expected: String,
        found: Option<String>,
    },
    #[error("it was not issued to this client (aud)")]
    Audience,
    #[error("its authorized party (azp) is not this client")]
    AuthorizedParty,
    #[error("it has expired")]
    Expired,
    #[error("it has no valid expiry (exp)")]
    MissingExpiry,
    #[error("it was issued in the future (iat)")]
    IssuedInFuture,
    #[error("its nonce does not match the one sent")]
    Nonce,
    #[error("its at_hash does not match the access token")]
    AccessTokenHash,
    #[error("it has no subject (sub)")]
    Subject,
}

/// What the ID token must say.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The configured signature algorithm.
    pub algorithm: &'a str,
    pub nonce: Option<&'a str>,
    /// The access token issued with it, for `at_hash`.
    pub access_token: Option<&'a str>,
    pub now: DateTime<Utc>,
}

fn header(jwt: &str) -> Result<jsonwebtoken::Header, IdTokenError> {
    // RFC 7516 §9: a JWE has five parts, a JWS three.
    match jwt.split('.').count() {
        3 => {}
        5 => return Err(IdTokenError::Encrypted),
        _ => return Err(IdTokenError::Malformed),
    }
    jsonwebtoken::decode_header(jwt).map_err(|_| IdTokenError::Malformed)
}

/// Does this JWK fit a signature with `alg`?
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    // RFC 7517 §4.2: a key marked for encryption is not for signatures.
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    // RFC 7517 §4.4: a key that names its algorithm is for that algorithm only.
    if let Some(key_alg) = jwk.common.key_algorithm {
        let named = serde_json::to_value(key_alg).ok();
        let wanted = serde_json::to_value(alg).ok();
        if named != wanted {
            return false;
        }
    }
    matches!(
        (&jwk.algorithm, alg.family()),
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), AlgorithmFamily::Ec)
            | (AlgorithmParameters::OctetKeyPair(_), AlgorithmFamily::Ed)
    )
}

/// The key that verifies the token: the one its `kid` names; without a `kid`, the only key of
/// the set that fits (OIDC Core §10.1: with several keys, the `kid` MUST be given).
fn select<'k>(keys: &'k [Jwk], kid: Option<&str>, alg: Algorithm) -> Option<&'k Jwk> {
    let mut candidates = keys.iter().filter(|k| fits(k, alg));
    match kid {
        Some(kid) => candidates.find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => {
            let first = candidates.next()?;
            candidates.next().is_none().then_some(first)
        }
    }
}

/// Is there a key for this token in `keys`? (When not, the caller refetches the JWKS once.)
pub fn has_key(keys: &[Jwk], jwt: &str, algorithm: &str) -> bool {
    let (Ok(header), Ok(alg)) = (header(jwt), algorithm.parse::<Algorithm>()) else {
        return true;
    };
    select(keys, header.kid.as_deref(), alg).is_some()
}

/// The `at_hash` of a token for an ID token signed with `alg`: the left half of its hash with
/// the algorithm's hash function (OIDC Core §3.1.3.6), SHA-256 as for our own ID tokens
/// ([`left_half_sha256`]) unless the algorithm says otherwise.
fn left_half_hash(alg: Algorithm, value: &str) -> String {
    fn left_half<D: Digest>(value: &str) -> String {
        let digest = D::digest(value.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
    }
    match alg {
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => left_half::<Sha384>(value),
        // EdDSA with Ed25519 uses SHA-512 (OpenID Connect errata for EdDSA).
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => left_half::<Sha512>(value),
        _ => left_half_sha256(value),
    }
}

/// Validates an ID token; returns its claims.
pub fn validate(
    jwt: &str,
    keys: &[Jwk],
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let header = header(jwt)?;
    // Item 7: the configured algorithm (RS256 by default), never `none` or a MAC.
    let alg: Algorithm = expected
        .algorithm
        .parse()
        .map_err(|_| IdTokenError::Algorithm {
            expected: expected.algorithm.to_owned(),
            found: format!("{:?}", header.alg),
        })?;
    if header.alg != alg || alg.family() == AlgorithmFamily::Hmac {
        return Err(IdTokenError::Algorithm {
            expected: expected.algorithm.to_owned(),
            found: format!("{:?}", header.alg),
        });
    }
    // Item 6: the signature, with the provider's key.
    let jwk = select(keys, header.kid.as_deref(), alg)
        .ok_or_else(|| IdTokenError::UnknownKey(header.kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey(header.kid))?;
    let mut validation = Validation::new(alg);
    // The claims are checked below, with the injected clock and exact rules.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::Signature,
            jsonwebtoken::errors::ErrorKind::Json(_) => IdTokenError::Claims,
            _ => IdTokenError::Signature,
        })?
        .claims;
    let Value::Object(claims) = claims else {
        return Err(IdTokenError::Claims);
    };

    // Item 2: the issuer, exactly.
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss != Some(expected.issuer) {
        return Err(IdTokenError::Issuer {
            expected: expected.issuer.to_owned(),
            found: iss.map(str::to_owned),
        });
    }
    // Item 3: `aud` contains the client ID (a string or an array of strings).
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(IdTokenError::Audience);
    }
    // Items 4 and 5: with several audiences the client checks `azp`; when present, it must be
    // this client.
    let azp = claims.get("azp").and_then(Value::as_str);
    if (audiences.len() > 1 && azp.is_none()) || azp.is_some_and(|a| a != expected.client_id) {
        return Err(IdTokenError::AuthorizedParty);
    }
    // Item 9: not expired.
    let now = expected.now.timestamp();
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::MissingExpiry)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(IdTokenError::Expired);
    }
    // Item 10: `iat` is there to reject tokens issued in the future (beyond the leeway).
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
        if iat > now.saturating_add(LEEWAY_SECS) {
            return Err(IdTokenError::IssuedInFuture);
        }
    }
    // Item 11: the nonce sent in the authorization request, exactly.
    if let Some(nonce) = expected.nonce {
        let got = claims
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bool::from(got.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(IdTokenError::Nonce);
        }
    }
    // §3.1.3.8: `at_hash`, when present, binds the access token.
    if let (Some(at_hash), Some(token)) = (
        claims.get("at_hash").and_then(Value::as_str),
        expected.access_token,
    ) {
        if at_hash != left_half_hash(alg, token) {
            return Err(IdTokenError::AccessTokenHash);
        }
    }
    // OIDC Core §2: `sub` is REQUIRED.
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => {}
        _ => return Err(IdTokenError::Subject),
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};
    use serde_json::json;

    use super::*;
    use crate::keys::{PrivateKey, SigningKey};

    struct Fixture {
        rsa: SigningKey,
        ec: SigningKey,
        other: SigningKey,
        now: DateTime<Utc>,
    }

    fn fixture() -> Fixture {
        Fixture {
            rsa: SigningKey::new(
                PrivateKey::generate_rsa(&mut StdRng::seed_from_u64(21)).unwrap(),
                Some("r1".into()),
            ),
            ec: SigningKey::new(
                PrivateKey::generate_p256(&mut StdRng::seed_from_u64(22)),
                Some("e1".into()),
            ),
            other: SigningKey::new(
                PrivateKey::generate_rsa(&mut StdRng::seed_from_u64(23)).unwrap(),
                Some("r1".into()),
            ),
            now: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn jwks(keys: &[&SigningKey]) -> Vec<Jwk> {
        keys.iter()
            .map(|k| serde_json::from_value(k.public_jwk()).unwrap())
            .collect()
    }

    fn claims(f: &Fixture) -> Value {
        json!({
            "iss": "https://id.example/", "sub": "u1", "aud": "client",
            "exp": f.now.timestamp() + 300, "iat": f.now.timestamp(), "nonce": "n0nce",
            "at_hash": left_half_sha256("at"),
            "email": "u1@id.example",
        })
    }

    fn expected(f: &Fixture) -> Expected<'static> {
        Expected {
            issuer: "https://id.example/",
            client_id: "client",
            algorithm: "RS256",
            nonce: Some("n0nce"),
            access_token: Some("at"),
            now: f.now,
        }
    }

    fn with(f: &Fixture, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = claims(f);
        change(c.as_object_mut().unwrap());
        f.rsa.sign(&c).unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let f = fixture();
        let keys = jwks(&[&f.rsa, &f.ec]);
        let jwt = f.rsa.sign(&claims(&f)).unwrap();
        let got = validate(&jwt, &keys, &expected(&f)).unwrap();
        assert_eq!(got["email"], "u1@id.example");
        // ES256 when configured so.
        let jwt = f.ec.sign(&claims(&f)).unwrap();
        let es = Expected {
            algorithm: "ES256",
            ..expected(&f)
        };
        assert!(validate(&jwt, &keys, &es).is_ok());
        // ...but not when RS256 is expected (item 7).
        assert!(matches!(
            validate(&jwt, &keys, &expected(&f)),
            Err(IdTokenError::Algorithm { .. })
        ));
        // Several audiences with azp = this client, and a tolerated clock skew.
        let jwt = with(&f, |c| {
            c.insert("aud".into(), json!(["client", "other"]));
            c.insert("azp".into(), json!("client"));
            c.insert("exp".into(), json!(f.now.timestamp() - 30));
        });
        assert!(validate(&jwt, &keys, &expected(&f)).is_ok());
    }

    #[test]
    fn each_rule_refuses() {
        let f = fixture();
        let keys = jwks(&[&f.rsa]);
        let e = expected(&f);
        let refused = |jwt: &str| validate(jwt, &keys, &e).unwrap_err();
        let now = f.now.timestamp();
        assert!(matches!(
            refused(&with(&f, |c| {
                c.insert("iss".into(), json!("https://evil.example/"));
            })),
            IdTokenError::Issuer { .. }
        ));
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("aud".into(), json!("someone-else"));
            })),
            IdTokenError::Audience
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("aud".into(), json!(["client", "other"]));
            })),
            IdTokenError::AuthorizedParty
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("azp".into(), json!("other"));
            })),
            IdTokenError::AuthorizedParty
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("exp".into(), json!(now - 61));
            })),
            IdTokenError::Expired
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.remove("exp");
            })),
            IdTokenError::MissingExpiry
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("iat".into(), json!(now + 3600));
            })),
            IdTokenError::IssuedInFuture
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("nonce".into(), json!("replayed"));
            })),
            IdTokenError::Nonce
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.remove("nonce");
            })),
            IdTokenError::Nonce
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.insert("at_hash".into(), json!("AAAA"));
            })),
            IdTokenError::AccessTokenHash
        );
        assert_eq!(
            refused(&with(&f, |c| {
                c.remove("sub");
            })),
            IdTokenError::Subject
        );
        // Signed by another key with the same kid: the signature fails.
        let forged = f.other.sign(&claims(&f)).unwrap();
        assert_eq!(refused(&forged), IdTokenError::Signature);
        // A tampered payload.
        let jwt = f.rsa.sign(&claims(&f)).unwrap();
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"iss": "https://id.example/", "sub": "admin"})).unwrap(),
        );
        parts[1] = &payload;
        assert_eq!(refused(&parts.join(".")), IdTokenError::Signature);
        // An unknown kid, garbage, an encrypted token, `alg: none`.
        let ec = f.ec.sign(&claims(&f)).unwrap();
        let es_expected = Expected {
            algorithm: "ES256",
            ..expected(&f)
        };
        assert_eq!(
            validate(&ec, &keys, &es_expected).unwrap_err(),
            IdTokenError::UnknownKey(Some("e1".into()))
        );
        assert_eq!(refused("garbage"), IdTokenError::Malformed);
        assert_eq!(refused("a.b.c.d.e"), IdTokenError::Encrypted);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&f)).unwrap())
        );
        assert!(validate(&none, &keys, &e).is_err());
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims(&f),
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let hs_expected = Expected {
            algorithm: "HS256",
            ..expected(&f)
        };
        assert!(matches!(
            validate(&hs, &keys, &hs_expected).unwrap_err(),
            IdTokenError::Algorithm { .. }
        ));
    }

    #[test]
    fn key_selection() {
        let f = fixture();
        let jwt = f.rsa.sign(&claims(&f)).unwrap();
        assert_eq!(header(&jwt).unwrap().kid.as_deref(), Some("r1"));
        assert!(has_key(&jwks(&[&f.rsa]), &jwt, "RS256"));
        assert!(!has_key(&jwks(&[&f.ec]), &jwt, "RS256"));
        // A key marked for encryption is not used.
        let mut enc = jwks(&[&f.rsa]);
        enc[0].common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(!has_key(&enc, &jwt, "RS256"));

        // Without a kid: fine with one fitting key, refused with two (OIDC Core §10.1).
        let unnamed = |keys: &[&SigningKey]| -> Vec<Jwk> {
            jwks(keys)
                .into_iter()
                .map(|mut j| {
                    j.common.key_id = None;
                    j
                })
                .collect()
        };
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(f.rsa.key.to_pkcs8_pem().unwrap().as_bytes())
                .unwrap();
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &claims(&f),
            &key,
        )
        .unwrap();
        assert_eq!(header(&jwt).unwrap().kid, None);
        assert!(validate(&jwt, &unnamed(&[&f.rsa, &f.ec]), &expected(&f)).is_ok());
        assert_eq!(
            validate(&jwt, &unnamed(&[&f.rsa, &f.other]), &expected(&f)).unwrap_err(),
            IdTokenError::UnknownKey(None)
        );
    }
}
