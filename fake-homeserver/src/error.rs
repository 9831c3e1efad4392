//! Errors: the library's own [`Error`] (starting a server) and [`MatrixError`], the one wire
//! form every refusal takes (`{"errcode", "error"}`, Matrix client-server API "Standard error
//! response").

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Why a [`crate::FakeHomeserver`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`crate::Config`] cannot work (empty secret, odd server name, provider URL that is
    /// not http(s)…).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding or inspecting the listening socket failed.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client used to reach the provider could not be built.
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// A Matrix error answer: status code, `errcode`, human-readable `error`, and for token errors
/// the `soft_logout` flag (Matrix client-server API, "Soft logout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    status: StatusCode,
    errcode: &'static str,
    message: Cow<'static, str>,
    soft_logout: Option<bool>,
}

impl MatrixError {
    fn new(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            soft_logout: None,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The Matrix `errcode`.
    pub fn errcode(&self) -> &'static str {
        self.errcode
    }

    /// 404 `M_UNRECOGNIZED` "Unrecognized request": what Synapse answers for paths it does not
    /// serve, including the endpoints delegated to the provider in MAS mode.
    pub(crate) fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// 405 `M_UNRECOGNIZED` (Matrix client-server API: known path, wrong method).
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    pub(crate) fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub(crate) fn user_not_found() -> Self {
        Self::not_found("User not found")
    }

    pub(crate) fn device_not_found() -> Self {
        Self::not_found("Unknown device")
    }

    /// 401 `M_MISSING_TOKEN`.
    pub(crate) fn missing_token(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", message)
    }

    /// 401 `M_UNKNOWN_TOKEN` with `soft_logout: false`: the client must log in again.
    pub(crate) fn unknown_token(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            soft_logout: Some(false),
            ..Self::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", message)
        }
    }

    /// 403 `M_FORBIDDEN`.
    pub(crate) fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    /// 403 `M_UNKNOWN`: Synapse's bare `SynapseError(403, …)`, as `/_synapse/mas/*` answers a
    /// token that is not the shared secret (`synapse/rest/synapse/mas/_base.py`).
    pub(crate) fn forbidden_unknown(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_UNKNOWN", message)
    }

    /// 500 `M_FORBIDDEN`: Synapse's `AuthError(500, …)` (whose default errcode is
    /// `M_FORBIDDEN`), raised by `synapse/api/auth/mas.py` when the provider's introspection
    /// answer is unusable (no username, unknown user, several device scopes, bad device ID).
    pub(crate) fn provider_fault(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_FORBIDDEN", message)
    }

    /// 403 `M_USER_DEACTIVATED`.
    pub(crate) fn user_deactivated() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "M_USER_DEACTIVATED",
            "User account has been deactivated",
        )
    }

    /// 401 `M_USER_LOCKED` with `soft_logout: true` (Matrix spec v1.8, account locking).
    pub(crate) fn user_locked() -> Self {
        Self {
            soft_logout: Some(true),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "M_USER_LOCKED",
                "User account has been locked",
            )
        }
    }

    pub(crate) fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    pub(crate) fn missing_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }

    pub(crate) fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    pub(crate) fn user_in_use() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
            "User ID already taken.",
        )
    }

    pub(crate) fn invalid_username(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", message)
    }

    pub(crate) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "Request body too large",
        )
    }

    /// 503 `M_UNKNOWN`: the provider could not be asked (Synapse answers 503 "Unable to
    /// introspect the access token" the same way).
    pub(crate) fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", message)
    }

    /// 502 `M_UNKNOWN`: the proxied request did not reach the provider.
    pub(crate) fn bad_gateway(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

impl std::error::Error for MatrixError {}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let mut body = json!({ "errcode": self.errcode, "error": self.message });
        if let (Some(soft_logout), Some(map)) = (self.soft_logout, body.as_object_mut()) {
            map.insert("soft_logout".into(), soft_logout.into());
        }
        // `Json` sets `Content-Type: application/json`.
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn render(error: MatrixError) -> (StatusCode, String, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = to_bytes(response.into_body(), 1024).await.unwrap();
        (status, content_type, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn errors_are_matrix_json() {
        let (status, content_type, body) = render(MatrixError::unrecognized()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            body,
            json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
        );
    }

    #[tokio::test]
    async fn token_errors_carry_soft_logout() {
        let (status, _, body) = render(MatrixError::unknown_token("gone")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["soft_logout"], json!(false));
        let (status, _, body) = render(MatrixError::user_locked()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["errcode"], "M_USER_LOCKED");
        assert_eq!(body["soft_logout"], json!(true));
    }
}
