//! ID token claims (OIDC Core §2) and the token hashes they carry.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// OIDC Core §3.1.3.6 (`at_hash`) and §3.3.2.11 (`c_hash`): the base64url of the left-most half
/// of the hash of the token's ASCII octets, with the hash of the ID token's `alg`. RS256 and
/// ES256 (the algorithms this server signs with) both use SHA-256.
pub fn left_half_sha256(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// The claims of an ID token. Times are seconds since the epoch (OIDC Core §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdTokenClaims {
    /// REQUIRED: the issuer identifier, exactly as in discovery.
    pub iss: String,
    /// REQUIRED: the subject, stable and never reassigned.
    pub sub: String,
    /// REQUIRED: the client the token is for.
    pub aud: String,
    /// REQUIRED: expiry.
    pub exp: i64,
    /// REQUIRED: issue time.
    pub iat: i64,
    /// When the user authenticated (REQUIRED when `max_age` was requested, OIDC Core §3.1.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The request's `nonce`, echoed unchanged (OIDC Core §3.1.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_hash: Option<String>,
    /// The session ID, for logout (OIDC Front-/Back-Channel Logout §2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// With the `email` scope (OIDC Core §5.4): the user's confirmed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl IdTokenClaims {
    /// Claims issued at `now`, valid for `lifetime`.
    pub fn new(
        issuer: &str,
        subject: &str,
        client_id: &str,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> Self {
        Self {
            iss: issuer.to_owned(),
            sub: subject.to_owned(),
            aud: client_id.to_owned(),
            exp: (now + lifetime).timestamp(),
            iat: now.timestamp(),
            auth_time: None,
            nonce: None,
            at_hash: None,
            c_hash: None,
            sid: None,
            email: None,
            email_verified: None,
        }
    }

    /// Binds the ID token to the access token issued with it.
    pub fn with_access_token(mut self, access_token: &str) -> Self {
        self.at_hash = Some(left_half_sha256(access_token));
        self
    }

    /// Binds the ID token to the authorization code it was exchanged for.
    pub fn with_code(mut self, code: &str) -> Self {
        self.c_hash = Some(left_half_sha256(code));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_core_at_hash_example() {
        // OIDC Core Appendix A.3: the access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
        // has at_hash "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(
            left_half_sha256("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn claims_serialise_without_absent_members() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let claims = IdTokenClaims::new("https://a/", "01H", "c", now, Duration::minutes(5));
        let json = serde_json::to_value(&claims).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"iss": "https://a/", "sub": "01H", "aud": "c", "exp": 1_700_000_300, "iat": 1_700_000_000})
        );
    }
}
