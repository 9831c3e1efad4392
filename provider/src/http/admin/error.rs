//! The admin API's errors, mapped once to problem details (RFC 9457): a JSON object with
//! `type` (`about:blank`: the status says it all, §4.2.1), `title` (the status phrase),
//! `status` and `detail`, served as `application/problem+json`. Authorization failures also
//! carry the RFC 6750 §3 challenge. Internal errors are logged with their cause and answered
//! without it.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, Request},
    http::{header, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde::{de::DeserializeOwned, Serialize};
use utoipa::ToSchema;

use crate::{
    core::accounts::AccountError, domain::scope::MAS_ADMIN_SCOPE, http::AppState,
    storage::StorageError,
};

/// A problem detail (RFC 9457 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status code is the problem type (RFC 9457 §4.2.1).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status code's phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token, or one that isn't an active access token (RFC 6750 §3.1: no error code
    /// when the request carried no credentials, `invalid_token` otherwise).
    #[error("{detail}")]
    Unauthorized { detail: String, token_sent: bool },
    /// 403: the token lacks the admin scope, or its user or client may no longer have it
    /// (RFC 6750 §3.1 `insufficient_scope`).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource is not in a state for this (a finished session, a static client).
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the homeserver) can't be reached now; the request may be retried.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(detail.into())
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(detail.into())
    }

    /// An internal failure, logged here with its cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "admin API: internal error");
        Self::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem detail of this error (without internal causes).
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            Self::Internal(_) => "the server could not complete the request".to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
        }
    }

    /// The RFC 6750 §3 challenge of an authorization failure.
    fn challenge(&self) -> Option<String> {
        match self {
            Self::Unauthorized {
                token_sent: false, ..
            } => Some("Bearer".to_owned()),
            Self::Unauthorized { .. } => Some("Bearer error=\"invalid_token\"".to_owned()),
            Self::Forbidden(_) => Some(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{MAS_ADMIN_SCOPE}\""
            )),
            _ => None,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::internal(e)
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Storage(e) => e.into(),
            AccountError::Password(crate::core::passwords::PasswordError::Policy(_))
            | AccountError::InvalidUsername(_)
            | AccountError::PasswordPolicy(_)
            | AccountError::InvalidEmail(_)
            | AccountError::InvalidDisplayName => Self::BadRequest(e.to_string()),
            AccountError::Password(_) => Self::internal(e),
            AccountError::UsernameTaken(_) | AccountError::EmailTaken(_) => {
                Self::Conflict(e.to_string())
            }
            AccountError::Homeserver(_) => {
                tracing::warn!(error = %e, "admin API: the homeserver can't be asked");
                Self::Unavailable(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = (self.status(), axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// A path under the admin API that names no route.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("nothing is served at {}", uri.path()))
}

/// A JSON request body; a body that isn't one (or not the expected shape) is a 400 problem
/// instead of the framework's plain-text rejection.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(describe(&rejection))),
        }
    }
}

fn describe(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "the body must be JSON, sent with Content-Type: application/json".to_owned()
        }
        other => other.body_text(),
    }
}

/// Query parameters; unparseable ones are a 400 problem.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> axum::extract::FromRequestParts<AppState> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// A JSON body that may be left out (empty: the defaults).
pub fn optional_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not valid JSON of the expected shape: {e}"
        ))
    })
}
