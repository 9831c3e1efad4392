//! PKCE (RFC 7636) as the server enforces it. Matrix requires `S256` on every authorization
//! request (MSC2964) and this server offers nothing else: `plain` is refused (RFC 9700 §2.1.1).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use sha2::{Digest as _, Sha256};

/// The only method offered.
pub const S256: &str = "S256";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is required (PKCE with S256, RFC 7636 §4.3)")]
    MissingChallenge,
    #[error("code_challenge_method `plain` is not allowed: use S256 (RFC 9700 §2.1.1)")]
    PlainRefused,
    #[error("code_challenge_method `{0}` is not supported: use S256")]
    UnsupportedMethod(String),
    #[error("code_challenge must be 43 base64url characters (the SHA-256 of the verifier, RFC 7636 §4.2)")]
    MalformedChallenge,
}

fn is_base64url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Checks an authorization request's PKCE parameters. RFC 7636 §4.3 makes `plain` the default
/// method when none is given; since `plain` is refused, the method must be given as `S256`.
pub fn check_challenge(method: Option<&str>, challenge: Option<&str>) -> Result<(), PkceError> {
    let challenge = challenge.ok_or(PkceError::MissingChallenge)?;
    match method {
        Some(S256) => {}
        Some("plain") | None => return Err(PkceError::PlainRefused),
        Some(other) => return Err(PkceError::UnsupportedMethod(other.to_owned())),
    }
    if challenge.len() != 43 || !challenge.bytes().all(is_base64url_char) {
        return Err(PkceError::MalformedChallenge);
    }
    Ok(())
}

/// RFC 7636 §4.1: a verifier is 43 to 128 characters from `[A-Za-z0-9-._~]`.
pub fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// RFC 7636 §4.6: does `BASE64URL(SHA256(verifier))` equal the challenge?
pub fn verify_s256(challenge: &str, verifier: &str) -> bool {
    is_valid_verifier(verifier)
        && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        assert!(verify_s256(CHALLENGE, VERIFIER));
        assert!(!verify_s256(CHALLENGE, &VERIFIER.replace('d', "e")));
        assert_eq!(check_challenge(Some("S256"), Some(CHALLENGE)), Ok(()));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            check_challenge(Some("S256"), None),
            Err(PkceError::MissingChallenge)
        );
        assert_eq!(
            check_challenge(None, Some(CHALLENGE)),
            Err(PkceError::PlainRefused)
        );
        assert_eq!(
            check_challenge(Some("plain"), Some(CHALLENGE)),
            Err(PkceError::PlainRefused)
        );
        assert_eq!(
            check_challenge(Some("S512"), Some(CHALLENGE)),
            Err(PkceError::UnsupportedMethod("S512".into()))
        );
        assert_eq!(
            check_challenge(Some("S256"), Some("short")),
            Err(PkceError::MalformedChallenge)
        );
        assert_eq!(
            check_challenge(Some("S256"), Some(&CHALLENGE.replace('E', "+"))),
            Err(PkceError::MalformedChallenge)
        );
    }

    proptest! {
        #[test]
        fn a_verifier_matches_its_own_challenge_only(v in "[A-Za-z0-9._~-]{43,128}", w in "[A-Za-z0-9._~-]{43,128}") {
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
            prop_assert_eq!(check_challenge(Some("S256"), Some(&challenge)), Ok(()));
            prop_assert!(verify_s256(&challenge, &v));
            prop_assert_eq!(verify_s256(&challenge, &w), v == w);
        }

        #[test]
        fn never_panics(method in proptest::option::of("\\PC{0,10}"), challenge in proptest::option::of("\\PC{0,80}")) {
            let _ = check_challenge(method.as_deref(), challenge.as_deref());
        }
    }
}
