//! The upstream OpenID Connect client: discovery and keys ([`client`]), ID token validation
//! ([`id_token`], OIDC Core §3.1.3.7), claim imports ([`crate::config::upstream::claims`]), and
//! writing the configured providers to the database ([`sync`]). The pages of an upstream login are
//! `crate::http::upstream`.

pub mod client;
pub mod id_token;
pub mod sync;

use crate::storage::StorageError;

/// What can go wrong in an upstream login; shown on an HTML error page by the http layer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("there is no such upstream provider, or it is disabled")]
    UnknownProvider,
    #[error("the provider's configuration can't be used: {0}")]
    Misconfigured(String),
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("can't reach the provider's {endpoint}: {cause}")]
    Unreachable {
        endpoint: &'static str,
        cause: String,
    },
    #[error("the provider's {endpoint} answered HTTP {status}")]
    BadStatus { endpoint: &'static str, status: u16 },
    #[error("the provider's {endpoint} answered something unusable: {detail}")]
    InvalidResponse {
        endpoint: &'static str,
        detail: String,
    },
    #[error("the provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the token endpoint refused the code (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenRefused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("the token response has no ID token")]
    NoIdToken,
    #[error("the ID token is not valid: {0}")]
    IdToken(#[from] id_token::IdTokenError),
    #[error("the authorization response names another issuer (RFC 9207)")]
    IssuerMismatch,
    #[error("the callback has neither a code nor an error")]
    MissingCode,
    #[error("this sign-in attempt is unknown or was already used")]
    UnknownSession,
    #[error("this sign-in attempt has expired")]
    Expired,
    #[error("this sign-in attempt was started in another browser")]
    OtherBrowser,
    #[error(transparent)]
    Import(#[from] crate::config::upstream::claims::ImportError),
    #[error("the subject template gives no subject for this account")]
    NoSubject,
    #[error("the linked account is {}", if *deactivated { "deactivated" } else { "locked" })]
    AccountUnavailable { deactivated: bool },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}
