//! What the OAuth 2.0 API endpoints (token, device authorization, introspection, revocation,
//! userinfo) share, so that none of them reaches into another's file: their error answers,
//! the JSON error of RFC 6749 §5.2 ([`TokenError`]) and, for requests made with a bearer token,
//! that of RFC 6750 §3 ([`BearerError`]); reading a form body ([`form_params`]) and its
//! `token` parameter ([`token_param`]); and `Cache-Control: no-store` ([`no_store`]).

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::{
    core::rate_limit::{self, RateLimitError},
    domain::protocol::ErrorCode,
    http::kit::params::Params,
    storage::StorageError,
};

/// RFC 6749 §5.1 / RFC 7662 §2.2: token-bearing answers (and their errors) are not cached.
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The error of an OAuth 2.0 API endpoint, as JSON (RFC 6749 §5.2: the token endpoint, and the
/// endpoints built like it: device authorization, introspection, revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: StatusCode,
    pub error: ErrorCode,
    pub description: String,
    /// Add `WWW-Authenticate: Basic` (the client tried HTTP Basic).
    pub basic_challenge: bool,
    /// Over a rate limit: `Retry-After` (RFC 6585 §4, RFC 9110 §10.2.3).
    pub retry_after: Option<std::time::Duration>,
}

impl TokenError {
    pub fn new(status: StatusCode, error: ErrorCode, description: &str) -> Self {
        Self {
            status,
            error,
            description: description.to_owned(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    pub fn invalid_request(description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            description,
        )
    }

    /// RFC 6749 §5.2: 401, with `WWW-Authenticate` when the client used the Authorization header.
    pub fn invalid_client(description: &str, basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidClient,
                description,
            )
        }
    }

    pub fn invalid_grant(description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidGrant,
            description,
        )
    }

    pub fn unauthorized_client(description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnauthorizedClient,
            description,
        )
    }

    pub fn invalid_scope(description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidScope,
            description,
        )
    }

    /// The homeserver could not be told about the device: 503 `temporarily_unavailable` (the
    /// error code RFC 6749 §4.1.2.1 defines for a server that can't serve the request for
    /// now), with `Retry-After`. Logged with its cause.
    pub fn homeserver(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "OAuth API: can't provision the device on the homeserver");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TemporarilyUnavailable,
            "the homeserver can't be reached to set up the device; try again shortly",
        )
    }

    /// Over a rate limit: 429 with `Retry-After` (RFC 6585 §4) and an RFC 6749 §5.2 body with
    /// `temporarily_unavailable`; `what` says what there were too many of. That code is
    /// registered (RFC 6749 §4.1.2.1: "unable to handle the request due to a temporary
    /// overloading"), so generic OAuth libraries parse it and clients that only look at the
    /// status and `Retry-After` need nothing else; an unregistered `rate_limited` would be an
    /// unknown extension to every client, and `slow_down` means "poll 5 seconds slower" to a
    /// device-flow client (RFC 8628 §3.5), which is not what this says.
    pub fn too_many(what: &str, retry_after: std::time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TemporarilyUnavailable,
                &format!(
                    "too many {what}; retry after {} s",
                    rate_limit::retry_after_seconds(retry_after)
                ),
            )
        }
    }

    /// A refusal of the rate limiter ([`too_many`](Self::too_many)), or its storage failure.
    pub fn limited(what: &str, error: RateLimitError) -> Self {
        match error {
            RateLimitError::Limited { retry_after } => Self::too_many(what, retry_after),
            RateLimitError::Storage(e) => Self::server(e),
        }
    }

    /// A storage or signing failure: logged with its cause, answered without it.
    pub fn server(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "OAuth API: internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }
}

impl From<StorageError> for TokenError {
    fn from(e: StorageError) -> Self {
        Self::server(e)
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Some(wait) = self.retry_after {
            response = crate::http::kit::with_retry_after(response, wait);
        }
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\""),
            );
        }
        no_store(response)
    }
}

/// The parameters of a `POST` to the token endpoint and the endpoints built like it, read by
/// the one form reader ([`crate::http::kit::params::form`]); a refusal is `invalid_request`
/// (RFC 6749 §5.2).
pub fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, TokenError> {
    crate::http::kit::params::form(headers, body)
        .map_err(|e| TokenError::invalid_request(&e.to_string()))
}

/// RFC 7662 §2.1 / RFC 7009 §2.1: `token` is REQUIRED. `token_type_hint` is OPTIONAL and
/// ignored: the token's prefix already says what it is, and a wrong hint must not hide a token
/// ("the authorization server MUST extend its search").
pub fn token_param(params: &Params) -> Result<&str, TokenError> {
    params
        .get("token")
        .ok_or_else(|| TokenError::invalid_request("token is required"))
}

/// An error of a request made with a bearer token (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    /// RFC 6750 §3.1: the request carries no credentials: 401 with a bare challenge, "the
    /// resource server SHOULD NOT include an error code".
    Missing,
    /// `invalid_request` (400): malformed, or the token sent in more than one way (§2).
    InvalidRequest(&'static str),
    /// `invalid_token` (401): unknown, expired, revoked, or otherwise unusable.
    InvalidToken(&'static str),
    /// `insufficient_scope` (403), with the scope the request needs.
    InsufficientScope {
        scope: &'static str,
        description: &'static str,
    },
    /// A storage failure: logged with its cause, answered without it.
    Server,
}

impl From<StorageError> for BearerError {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "bearer-authenticated endpoint: internal error");
        Self::Server
    }
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let (status, error, description, scope) = match self {
            Self::Missing => (StatusCode::UNAUTHORIZED, None, "", None),
            Self::InvalidRequest(d) => (
                StatusCode::BAD_REQUEST,
                Some(ErrorCode::InvalidRequest),
                d,
                None,
            ),
            Self::InvalidToken(d) => (
                StatusCode::UNAUTHORIZED,
                Some(ErrorCode::InvalidToken),
                d,
                None,
            ),
            Self::InsufficientScope { scope, description } => (
                StatusCode::FORBIDDEN,
                Some(ErrorCode::InsufficientScope),
                description,
                Some(scope),
            ),
            Self::Server => {
                let body = json!({
                    "error": ErrorCode::ServerError,
                    "error_description": "the server could not complete the request",
                });
                return no_store((StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response());
            }
        };
        let mut response = match error {
            Some(error) => (
                status,
                Json(json!({ "error": error, "error_description": description })),
            )
                .into_response(),
            None => status.into_response(),
        };
        // RFC 6750 §3: the challenge; its attribute values never hold `"` or `\` (ours are
        // fixed strings).
        let challenge = challenge(error.map(ErrorCode::as_str), description, scope);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        no_store(response)
    }
}

/// The `WWW-Authenticate` value of RFC 6750 §3.
fn challenge(error: Option<&str>, description: &str, scope: Option<&str>) -> String {
    let Some(error) = error else {
        return "Bearer".to_owned();
    };
    let mut challenge = format!("Bearer error=\"{error}\", error_description=\"{description}\"");
    if let Some(scope) = scope {
        challenge.push_str(&format!(", scope=\"{scope}\""));
    }
    challenge
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::http::kit::params::is_form_urlencoded;

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        headers
    }

    fn refusal(headers: &HeaderMap, body: &[u8]) -> String {
        let error = form_params(headers, body).unwrap_err();
        assert_eq!(
            (error.status, error.error),
            (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
        );
        error.description
    }

    #[test]
    fn form_bodies_are_read_once_per_parameter() {
        let params = form_params(&form_headers(), b"grant_type=x&code=a%20b&empty=").unwrap();
        assert_eq!(params.get("grant_type"), Some("x"));
        assert_eq!(params.get("code"), Some("a b"));
        // RFC 6749 §3.1: a parameter without a value is as if omitted.
        assert_eq!(params.get("empty"), None);
        assert!(refusal(&form_headers(), b"code=a&code=b").contains("`code` parameter is repeated"));
        assert!(refusal(&form_headers(), b"code=\xff").contains("not UTF-8"));
        assert!(refusal(&HeaderMap::new(), b"code=a").contains("x-www-form-urlencoded"));
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_form_urlencoded(&json));
        assert!(refusal(&json, b"{}").contains("x-www-form-urlencoded"));
    }

    proptest! {
        /// Any body is either parameters or `invalid_request`, never a panic.
        #[test]
        fn any_body_is_parameters_or_invalid_request(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Err(e) = form_params(&form_headers(), &body) {
                prop_assert_eq!(e.error, ErrorCode::InvalidRequest);
            }
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(challenge(None, "", None), "Bearer");
        assert_eq!(
            challenge(Some("invalid_token"), "expired", None),
            "Bearer error=\"invalid_token\", error_description=\"expired\""
        );
        assert_eq!(
            challenge(Some("insufficient_scope"), "no", Some("openid")),
            "Bearer error=\"insufficient_scope\", error_description=\"no\", scope=\"openid\""
        );
        let response = BearerError::InvalidToken("gone").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert!(response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\""));
        let response = BearerError::Missing.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = BearerError::InsufficientScope {
            scope: "openid",
            description: "no",
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
}
