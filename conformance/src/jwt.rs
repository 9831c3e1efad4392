//! ID token signatures (OIDC Core §3.1.3.7): the JWS header's algorithm and key, checked
//! against the issuer's JWK Set.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// The JOSE header of a compact JWS, unverified.
pub(crate) fn header(token: &str) -> Result<Value, String> {
    part(token, 0, "header")
}

/// The claims of a compact JWS, unverified.
pub(crate) fn claims(token: &str) -> Result<Value, String> {
    part(token, 1, "payload")
}

fn part(token: &str, index: usize, what: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!(
            "not a compact JWS: {} parts instead of 3",
            parts.len()
        ));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[index])
        .map_err(|e| format!("the {what} is not base64url: {e}"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the {what} is not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(format!("the {what} is not a JSON object"))
    }
}

/// Verifies the signature of `token` with a key of `jwks` (chosen by `kid` when the header has
/// one). Only the signature: the claims are judged by the checks.
pub(crate) fn verify(token: &str, jwks: &Value) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWS header: {e}"))?;
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(format!(
            "signed with {:?}, a symmetric algorithm: a public client has no secret to check it \
             (OIDC Core §10.1)",
            header.alg
        ));
    }
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWK Set has no `keys` array")?;
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| match &header.kid {
            Some(kid) => k.get("kid").and_then(Value::as_str) == Some(kid.as_str()),
            None => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(format!(
            "no key in the JWK Set has the header's kid {:?}",
            header.kid.unwrap_or_default()
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut errors = Vec::new();
    for key in candidates {
        let jwk: Jwk = match serde_json::from_value(key.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                errors.push(format!("unreadable key: {e}"));
                continue;
            }
        };
        let decoding = match DecodingKey::from_jwk(&jwk) {
            Ok(k) => k,
            Err(e) => {
                errors.push(format!("unusable key: {e}"));
                continue;
            }
        };
        match jsonwebtoken::decode::<Value>(token, &decoding, &validation) {
            Ok(_) => return Ok(()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(format!(
        "no key of the JWK Set verifies the signature ({})",
        errors.join("; ")
    ))
}

/// OIDC Core §3.1.3.6: the left half of the hash of `value` (hash of the JWS algorithm), in
/// base64url. `None` for an algorithm without a defined hash.
pub(crate) fn half_hash(alg: &str, value: &str) -> Option<String> {
    let digest: Vec<u8> = match alg.get(2..) {
        Some("256") => Sha256::digest(value.as_bytes()).to_vec(),
        Some("384") => Sha384::digest(value.as_bytes()).to_vec(),
        Some("512") => Sha512::digest(value.as_bytes()).to_vec(),
        _ if alg == "EdDSA" => return None,
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_of_oidc_core_example() {
        // OIDC Core Appendix A.3's access token and at_hash.
        assert_eq!(
            half_hash("RS256", "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y").as_deref(),
            Some("77QmUPtjPfzWtF2AnpK9RQ")
        );
    }

    #[test]
    fn parts_must_be_json_objects() {
        assert!(header("a.b").is_err());
        assert!(claims("e30.e30.x").is_ok());
        assert!(claims("e30.WzFd.x").is_err());
    }
}
