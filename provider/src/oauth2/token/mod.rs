//! `POST /oauth2/token` (RFC 6749 §3.2): client authentication, then one module per grant.
//!
//! Responses carry `Cache-Control: no-store` (RFC 6749 §5.1); errors are the JSON of RFC 6749
//! §5.2, with `WWW-Authenticate` when the client tried HTTP Basic and failed.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
mod id_token;
pub mod refresh_token;

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use ulid::Ulid;

use super::{authorize::Params, client_auth};
use crate::{
    app::AppState,
    crypto::sha256,
    domain::{client_registration::DEVICE_CODE, token::TokenKind},
    storage::{BoxRepository, RefreshToken, StorageError},
};

/// Access tokens live 5 minutes (DESIGN.md); clients refresh them.
pub const ACCESS_TOKEN_LIFETIME_SECONDS: i64 = 300;
/// ID tokens are valid for an hour (they are read once, at sign-in).
pub const ID_TOKEN_LIFETIME_SECONDS: i64 = 3600;

/// The grant types this endpoint serves.
pub const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    // RFC 6749 §4.4.
    "client_credentials",
    // RFC 8628 §3.4 (MSC4341).
    DEVICE_CODE,
];
/// The client authentication methods it accepts.
pub const AUTH_METHODS: &[&str] = &["none", "client_secret_basic", "client_secret_post"];

/// A token endpoint error (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// Add `WWW-Authenticate: Basic` (the client tried HTTP Basic).
    pub basic_challenge: bool,
}

impl TokenError {
    fn new(status: StatusCode, error: &'static str, description: &str) -> Self {
        Self {
            status,
            error,
            description: description.to_owned(),
            basic_challenge: false,
        }
    }

    pub fn invalid_request(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// RFC 6749 §5.2: 401, with `WWW-Authenticate` when the client used the Authorization header.
    pub fn invalid_client(description: &str, basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    pub fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn unauthorized_client(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    pub fn invalid_scope(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// A storage or signing failure: logged with its cause, answered without it.
    pub fn server(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "token endpoint: internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }
}

impl From<StorageError> for TokenError {
    fn from(e: StorageError) -> Self {
        Self::server(e)
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\""),
            );
        }
        no_store(response)
    }
}

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        no_store(Json(self).into_response())
    }
}

/// A fresh access and refresh token pair for a session, stored as hashes.
pub(crate) struct IssuedPair {
    pub access_token: String,
    pub refresh_token: String,
    pub refresh: RefreshToken,
}

pub(crate) async fn issue_pair(
    repo: &mut BoxRepository,
    rng: &mut impl RngCore,
    session_id: Ulid,
    now: DateTime<Utc>,
) -> Result<IssuedPair, StorageError> {
    let access_token = TokenKind::AccessToken.generate(rng);
    let refresh_token = TokenKind::RefreshToken.generate(rng);
    let access = repo
        .access_tokens()
        .add(
            session_id,
            &sha256(&access_token),
            Some(now + Duration::seconds(ACCESS_TOKEN_LIFETIME_SECONDS)),
        )
        .await?;
    let refresh = repo
        .refresh_tokens()
        .add(session_id, &sha256(&refresh_token), Some(access.id))
        .await?;
    Ok(IssuedPair {
        access_token,
        refresh_token,
        refresh,
    })
}

/// `POST /oauth2/token`.
pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &headers, &body).await {
        Ok(tokens) => tokens.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, TokenError> {
    // RFC 6749 §3.2: application/x-www-form-urlencoded parameters.
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(TokenError::invalid_request(
            "the request body must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| TokenError::invalid_request("the body is not UTF-8"))?;
    let params = Params::parse(text);
    if let Some(name) = params.repeated_names().first() {
        return Err(TokenError::invalid_request(&format!(
            "the `{name}` parameter is repeated (RFC 6749 §3.1)"
        )));
    }
    let client = client_auth::authenticate(state, headers, &params).await?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| TokenError::invalid_request("grant_type is required"))?;
    if !GRANT_TYPES.contains(&grant_type) {
        return Err(TokenError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type `{grant_type}` is not supported"),
        ));
    }
    // RFC 6749 §5.2 unauthorized_client: the client must be registered for the grant.
    if !client.metadata.allows_grant(grant_type) {
        return Err(TokenError::unauthorized_client(&format!(
            "this client is not registered for the {grant_type} grant"
        )));
    }
    match grant_type {
        "authorization_code" => authorization_code::exchange(state, &client, &params).await,
        DEVICE_CODE => device_code::exchange(state, &client, &params).await,
        "client_credentials" => client_credentials::grant(state, &client, &params).await,
        _ => refresh_token::refresh(state, &client, &params).await,
    }
}
