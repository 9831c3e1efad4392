//! `POST /oauth2/registration`: dynamic client registration (RFC 7591 §3, with the Matrix rules
//! of MSC2966).
//!
//! The metadata is judged by [`client_registration::validate`]; this module is the HTTP edge:
//! - The body must be JSON (`Content-Type: application/json`, RFC 7591 §3.1) of at most
//!   [`MAX_BODY_BYTES`] (the edge, [`crate::http::kit::edge`], refuses a larger one with 413 in
//!   the same shape). Anything else is answered in the RFC 7591 §3.2.2 error shape, never with
//!   the framework's plain-text rejections.
//! - Success (RFC 7591 §3.2.1) is **201** with the `client_id` (a ULID from the injected clock
//!   and RNG), `client_id_issued_at`, the client secret once (for `client_secret_basic` and
//!   `client_secret_post`, with `client_secret_expires_at: 0`, "will not expire") and every
//!   registered metadata member. The secret is stored encrypted with the configured key, never
//!   in plain text.
//! - Registration is open (no initial access token, RFC 7591 §3): Matrix clients register
//!   themselves before any user is involved (MSC2966). Browser clients (Element Web) register
//!   cross-origin, so the router gives the endpoint CORS for any origin ([`crate::app`]); it
//!   uses no cookies.
//!
//! Both answers carry `Cache-Control: no-store` (RFC 6749 §5.1 / §5.2: the success holds a
//! secret).

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use rand::{distributions::Alphanumeric, Rng as _};
use serde_json::{json, Value};
use ulid::Ulid;

use super::api::no_store;
use crate::{
    crypto::Encrypter,
    domain::{
        client_registration::{self, RegistrationError},
        protocol::ErrorCode,
    },
    http::AppState,
    storage::StorageError,
};

/// The largest registration request accepted (the edge's limit on this route). Real metadata is
/// a few hundred bytes; 64 KiB leaves room for many localized variants and an inline JWK Set
/// with several RSA keys.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Length of a generated client secret: 43 alphanumeric characters, about 256 bits.
const SECRET_LEN: usize = 43;

/// Why a registration request failed, mapped once to its wire form.
#[derive(Debug)]
enum Failure {
    /// The metadata broke a rule (400, RFC 7591 §3.2.2).
    Rejected(RegistrationError),
    /// The body is not a JSON document (400 `invalid_client_metadata`).
    NotJson(String),
    /// Storage failed; logged with its cause, answered without it (500 `server_error`).
    Internal(StorageError),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            Self::Rejected(e) => (
                StatusCode::BAD_REQUEST,
                e.code(),
                e.description().to_owned(),
            ),
            Self::NotJson(description) => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidClientMetadata,
                description,
            ),
            Self::Internal(e) => {
                tracing::error!(error = %e, "registration: can't store the client");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::ServerError,
                    "the client could not be registered; try again later".to_owned(),
                )
            }
        };
        json_no_store(
            status,
            json!({ "error": error, "error_description": description }),
        )
    }
}

/// A JSON response that no cache keeps (RFC 6749 §5.1).
fn json_no_store(status: StatusCode, body: Value) -> Response {
    no_store((status, Json(body)).into_response())
}

/// RFC 7591 §3.1: the request is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /oauth2/registration`.
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match try_register(&state, &headers, body).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn try_register(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    if !is_json(headers) {
        return Err(Failure::NotJson(
            "the registration request must be a JSON document sent with \
             Content-Type: application/json (RFC 7591 §3.1)"
                .into(),
        ));
    }
    // The edge has read the body already (and refused one over [`MAX_BODY_BYTES`]).
    let body = body.map_err(|_| Failure::NotJson("the request body could not be read".into()))?;
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        Failure::NotJson(format!(
            "the request body is not valid JSON ({e}) (RFC 7591 §3.1)"
        ))
    })?;
    let metadata = client_registration::validate(&request).map_err(Failure::Rejected)?;

    let entropy = state.storage.entropy();
    let mut rng = entropy.rng.rng();
    let issued_at = entropy.clock.now();
    // RFC 7591 §3.2.1: a client_id unique at this server; a ULID from the injected clock and RNG.
    let millis = u64::try_from(issued_at.timestamp_millis()).unwrap_or(0);
    let client_id = Ulid::from_parts(millis, rng.gen::<u128>()).to_string();
    // RFC 7591 §3.2.1: a secret only for the methods that use one; stored encrypted.
    let secret: Option<String> = metadata.token_endpoint_auth_method.uses_secret().then(|| {
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(SECRET_LEN)
            .map(char::from)
            .collect()
    });
    let encrypted = secret
        .as_deref()
        .map(|s| Encrypter::new(&state.settings.encryption_key).encrypt(&mut rng, s));

    let registered = Value::Object(metadata.to_json());
    let mut repo = state.storage.begin().await.map_err(Failure::Internal)?;
    repo.clients()
        .add(
            &client_id,
            false,
            encrypted.as_deref(),
            metadata.token_endpoint_auth_method,
            &registered,
        )
        .await
        .map_err(Failure::Internal)?;
    repo.commit().await.map_err(Failure::Internal)?;
    tracing::info!(
        client_id,
        application_type = metadata.application_type.as_str(),
        auth_method = metadata.token_endpoint_auth_method.as_str(),
        "client registered"
    );

    // RFC 7591 §3.2.1: the client information response.
    let mut response = metadata.to_json();
    response.insert("client_id".into(), client_id.into());
    response.insert("client_id_issued_at".into(), issued_at.timestamp().into());
    if let Some(secret) = secret {
        response.insert("client_secret".into(), secret.into());
        // "0 if it will not expire"
        response.insert("client_secret_expires_at".into(), 0.into());
    }
    Ok(json_no_store(StatusCode::CREATED, Value::Object(response)))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        h
    }

    #[test]
    fn only_json_bodies() {
        assert!(is_json(&headers(Some("application/json"))));
        assert!(is_json(&headers(Some("application/json; charset=utf-8"))));
        assert!(is_json(&headers(Some("Application/JSON"))));
        assert!(!is_json(&headers(None)));
        assert!(!is_json(&headers(Some("text/plain"))));
        assert!(!is_json(&headers(Some(
            "application/x-www-form-urlencoded"
        ))));
        assert!(!is_json(&headers(Some("application/jsonx"))));
    }
}
