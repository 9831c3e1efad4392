//! The errors of the legacy Matrix login API, mapped once to their wire form (client-server
//! API §"Standard error response"): `{"errcode": "M_…", "error": "…"}` with the status the spec
//! gives each code, `soft_logout` on `M_UNKNOWN_TOKEN` (§"Soft logout") and on locked accounts
//! (MSC3939), `retry_after_ms` (and `Retry-After`) on `M_LIMIT_EXCEEDED` (§"Rate limiting").
//!
//! Internal errors are logged with their cause and answered `M_UNKNOWN` without it (DESIGN.md
//! "Errors").

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{
    core::{matrix::provisioning::EnsureDeviceError, sign_in::PasswordCheckError},
    http::kit,
    storage::StorageError,
};

/// What went wrong with a request to the legacy Matrix login API.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// 403 `M_FORBIDDEN`: wrong credentials, an invalid login token, a user of another server.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 403 `M_USER_DEACTIVATED` (client-server API §"Login", error codes).
    #[error("this account has been deactivated")]
    UserDeactivated,
    /// 401 `M_USER_LOCKED` (MSC3939, in the spec since v1.10); `soft_logout` where a token was
    /// presented (the client may keep its data and log in again once unlocked).
    #[error("this account has been locked")]
    UserLocked { soft_logout: Option<bool> },
    /// 401 `M_MISSING_TOKEN`: no access token (client-server API §"Using access tokens").
    #[error("no access token was given")]
    MissingToken,
    /// 401 `M_UNKNOWN_TOKEN`: not a token this server knows, or not any more. `soft_logout:
    /// false`: the session is gone, the client must start again (§"Soft logout").
    #[error("{0}")]
    UnknownToken(&'static str),
    /// 400 `M_NOT_JSON`: the body doesn't parse as JSON.
    #[error("the request body is not JSON")]
    NotJson,
    /// 400 `M_BAD_JSON`: JSON, but not of the expected shape.
    #[error("{0}")]
    BadJson(String),
    /// 400 `M_MISSING_PARAM`.
    #[error("{0}")]
    MissingParam(&'static str),
    /// 400 `M_INVALID_PARAM`.
    #[error("{0}")]
    InvalidParam(&'static str),
    /// 400 `M_UNKNOWN`: what Synapse answers to a login type or identifier it doesn't offer.
    #[error("{0}")]
    BadRequest(&'static str),
    /// 400 `M_APPSERVICE_LOGIN_UNSUPPORTED` (MSC4190): application services create their
    /// devices through the homeserver, not by logging in.
    #[error("application services can't log in through the authentication service; create devices through the homeserver instead (MSC4190)")]
    AppserviceLoginUnsupported,
    /// 405 `M_UNRECOGNIZED`: a known path with a method it doesn't serve (§"Common error
    /// codes").
    #[error("this method is not served here")]
    MethodNotAllowed,
    /// 429 `M_LIMIT_EXCEEDED`, with the wait in milliseconds when known (§"Rate limiting"):
    /// password logins over a rate limit (see [`crate::core::rate_limit`]).
    #[error("too many requests")]
    LimitExceeded { retry_after_ms: Option<u64> },
    /// 503 `M_UNKNOWN`: the homeserver didn't take the device; nothing was stored, the client
    /// may try again. The cause is logged, not told.
    #[error("the homeserver can't be reached; try again")]
    HomeserverUnavailable(#[source] crate::core::matrix::HomeserverError),
    /// 500 `M_UNKNOWN`: storage or another internal failure; the cause is logged, not told.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The wire form (client-server API §"Standard error response").
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    errcode: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    soft_logout: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl MatrixError {
    /// The HTTP status the spec gives this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden(_) | Self::UserDeactivated => StatusCode::FORBIDDEN,
            Self::UserLocked { .. } | Self::MissingToken | Self::UnknownToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::NotJson
            | Self::BadJson(_)
            | Self::MissingParam(_)
            | Self::InvalidParam(_)
            | Self::BadRequest(_)
            | Self::AppserviceLoginUnsupported => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HomeserverUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Matrix error code.
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "M_FORBIDDEN",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserLocked { .. } => "M_USER_LOCKED",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::UnknownToken(_) => "M_UNKNOWN_TOKEN",
            Self::NotJson => "M_NOT_JSON",
            Self::BadJson(_) => "M_BAD_JSON",
            Self::MissingParam(_) => "M_MISSING_PARAM",
            Self::InvalidParam(_) => "M_INVALID_PARAM",
            Self::AppserviceLoginUnsupported => "M_APPSERVICE_LOGIN_UNSUPPORTED",
            Self::MethodNotAllowed => "M_UNRECOGNIZED",
            Self::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Self::BadRequest(_) | Self::HomeserverUnavailable(_) | Self::Internal(_) => "M_UNKNOWN",
        }
    }

    /// `soft_logout`, where the spec says to send it.
    fn soft_logout(&self) -> Option<bool> {
        match self {
            Self::UnknownToken(_) => Some(false),
            Self::UserLocked { soft_logout } => *soft_logout,
            _ => None,
        }
    }

    /// A storage failure.
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    /// The JSON error body, as sent.
    pub fn body(&self) -> Value {
        let error = self.to_string();
        let retry_after_ms = match self {
            Self::LimitExceeded { retry_after_ms } => *retry_after_ms,
            _ => None,
        };
        serde_json::to_value(ErrorBody {
            errcode: self.errcode(),
            error: &error,
            soft_logout: self.soft_logout(),
            retry_after_ms,
        })
        .unwrap_or(Value::Null)
    }
}

impl From<StorageError> for MatrixError {
    fn from(e: StorageError) -> Self {
        Self::internal(e)
    }
}

impl From<PasswordCheckError> for MatrixError {
    fn from(e: PasswordCheckError) -> Self {
        Self::internal(e)
    }
}

impl From<EnsureDeviceError> for MatrixError {
    fn from(e: EnsureDeviceError) -> Self {
        match e {
            EnsureDeviceError::Homeserver(e) => Self::HomeserverUnavailable(e),
            EnsureDeviceError::Storage(e) => Self::internal(e),
        }
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "legacy Matrix login API: internal error");
            }
            Self::HomeserverUnavailable(cause) => {
                tracing::warn!(error = %cause, "legacy Matrix login API: the homeserver did not take the device; nothing was stored");
            }
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // §"Rate limiting": the header too, for generic clients (the kit's one `Retry-After`).
        match self {
            Self::LimitExceeded {
                retry_after_ms: Some(ms),
            } => kit::with_retry_after(response, std::time::Duration::from_millis(ms)),
            _ => response,
        }
    }
}

/// A JSON request body as `T`: not JSON at all → `M_NOT_JSON`, JSON of the wrong shape →
/// `M_BAD_JSON` (client-server API §"Common error codes"). The content type is not checked:
/// Synapse doesn't either, and clients rely on it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, MatrixError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| MatrixError::NotJson)?;
    from_value(value)
}

/// A parsed JSON value as `T`, or `M_BAD_JSON` naming what is wrong.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, MatrixError> {
    if !value.is_object() {
        return Err(MatrixError::BadJson(
            "the request body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| MatrixError::BadJson(format!("the request body is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    async fn wire(error: MatrixError) -> (u16, Value, Option<String>) {
        let response = error.into_response();
        let status = response.status().as_u16();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[tokio::test]
    async fn every_error_has_its_status_and_code() {
        let cases: Vec<(MatrixError, u16, &str)> = vec![
            (MatrixError::Forbidden("no"), 403, "M_FORBIDDEN"),
            (MatrixError::UserDeactivated, 403, "M_USER_DEACTIVATED"),
            (
                MatrixError::UserLocked { soft_logout: None },
                401,
                "M_USER_LOCKED",
            ),
            (MatrixError::MissingToken, 401, "M_MISSING_TOKEN"),
            (MatrixError::UnknownToken("gone"), 401, "M_UNKNOWN_TOKEN"),
            (MatrixError::NotJson, 400, "M_NOT_JSON"),
            (MatrixError::BadJson("x".into()), 400, "M_BAD_JSON"),
            (MatrixError::MissingParam("x"), 400, "M_MISSING_PARAM"),
            (MatrixError::InvalidParam("x"), 400, "M_INVALID_PARAM"),
            (MatrixError::BadRequest("x"), 400, "M_UNKNOWN"),
            (
                MatrixError::AppserviceLoginUnsupported,
                400,
                "M_APPSERVICE_LOGIN_UNSUPPORTED",
            ),
            (MatrixError::MethodNotAllowed, 405, "M_UNRECOGNIZED"),
            (
                MatrixError::LimitExceeded {
                    retry_after_ms: None,
                },
                429,
                "M_LIMIT_EXCEEDED",
            ),
            (
                MatrixError::HomeserverUnavailable(
                    crate::core::matrix::HomeserverError::Unreachable("connection refused".into()),
                ),
                503,
                "M_UNKNOWN",
            ),
            (
                MatrixError::internal(StorageError::Invalid("secret detail".into())),
                500,
                "M_UNKNOWN",
            ),
        ];
        for (error, status, code) in cases {
            let (got_status, body, _) = wire(error).await;
            assert_eq!((got_status, body["errcode"].as_str()), (status, Some(code)));
            assert!(body["error"].is_string(), "{body}");
        }
    }

    #[tokio::test]
    async fn causes_are_not_told() {
        let (_, body, _) = wire(MatrixError::internal(StorageError::Invalid(
            "secret detail".into(),
        )))
        .await;
        assert_eq!(
            body,
            json!({ "errcode": "M_UNKNOWN", "error": "internal error" })
        );
        let (_, body, retry) = wire(MatrixError::HomeserverUnavailable(
            crate::core::matrix::HomeserverError::Unreachable("10.0.0.7:8008 refused".into()),
        ))
        .await;
        assert_eq!(
            body,
            json!({
                "errcode": "M_UNKNOWN",
                "error": "the homeserver can't be reached; try again",
            })
        );
        assert_eq!(retry, None);
    }

    #[tokio::test]
    async fn soft_logout_and_retry_after() {
        let (_, body, _) = wire(MatrixError::UnknownToken("unknown token")).await;
        assert_eq!(
            body,
            json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "unknown token", "soft_logout": false })
        );
        let (_, body, _) = wire(MatrixError::UserLocked {
            soft_logout: Some(true),
        })
        .await;
        assert_eq!(body["soft_logout"], true);
        let (_, body, _) = wire(MatrixError::UserLocked { soft_logout: None }).await;
        assert!(body.get("soft_logout").is_none());
        let (status, body, retry) = wire(MatrixError::LimitExceeded {
            retry_after_ms: Some(1500),
        })
        .await;
        assert_eq!(status, 429);
        assert_eq!(body["retry_after_ms"], 1500);
        assert_eq!(retry.as_deref(), Some("2"));
        let (_, body, retry) = wire(MatrixError::LimitExceeded {
            retry_after_ms: None,
        })
        .await;
        assert!(body.get("retry_after_ms").is_none());
        assert_eq!(retry, None);
    }

    #[test]
    fn bodies_not_json_or_of_the_wrong_shape() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        assert!(matches!(
            parse_json::<Body>(b"{nope"),
            Err(MatrixError::NotJson)
        ));
        assert!(matches!(parse_json::<Body>(b""), Err(MatrixError::NotJson)));
        assert!(matches!(
            parse_json::<Body>(b"[1]"),
            Err(MatrixError::BadJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"name": 3}"#),
            Err(MatrixError::BadJson(_))
        ));
        assert_eq!(parse_json::<Body>(br#"{"name": "a"}"#).unwrap().name, "a");
    }
}
