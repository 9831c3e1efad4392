//! `POST /oauth2/device`: the device authorization endpoint (RFC 8628 §3.1, §3.2; MSC4341).
//!
//! The client authenticates as at the token endpoint (RFC 8628 §3.1 → RFC 6749 §3.2.1: public
//! clients send their `client_id`), the request runs the checks [`CHECKS`] lists for
//! [`Endpoint::DeviceAuthorization`], and a grant is stored with the SHA-256 of a fresh device
//! code and a fresh user code. The user types (or follows a link with) the user code on the
//! verification page ([`crate::http::web::link`]); the device polls the token endpoint
//! ([`super::token::device_code`]).
//!
//! Answers are JSON with `Cache-Control: no-store` (the success holds a secret, RFC 8628 §3.2);
//! errors have the shape of RFC 6749 §5.2 (RFC 8628 §3.2).
//!
//! [`CHECKS`]: super::authorize::CHECKS

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::Duration;
use serde::Serialize;

use super::{
    api::{form_params, no_store, TokenError},
    authorize::{respond::OAuthError, run_checks, Endpoint},
    client_auth,
};
use crate::http::kit;
use crate::{
    core::rate_limit::ClientIp,
    crypto::sha256,
    domain::{
        scope::Scope,
        token::{random_code, user_code},
    },
    endpoints,
    http::AppState,
    storage::{NewDeviceCodeGrant, StorageError},
};

/// How long a device code and its user code are valid (RFC 8628 §3.2 `expires_in`; the lifetime
/// is the server's choice). Ten minutes: time for the user to pick up another device, sign in
/// and approve; as short as that allows, because the user code is short (20^8 ≈ 2^34.6 codes)
/// and its lifetime is what bounds guessing it (RFC 8628 §5.1), and a pending request is what a
/// remote phishing attempt has to get approved (§5.4). It is also the authorization code's
/// lifetime (RFC 6749 §4.1.2's recommended maximum).
pub const EXPIRES_IN_SECONDS: i64 = 600;

/// The minimum time between two polls (RFC 8628 §3.2 `interval`; 5 seconds is its default).
pub const INTERVAL_SECONDS: i64 = 5;

/// Device codes: 32 base62 characters, about 190 bits, never shown to a person (RFC 8628 §5.2:
/// unguessable, like an authorization code, RFC 6749 §10.10).
const DEVICE_CODE_LEN: usize = 32;

/// How many fresh user codes to try when one is taken (RFC 8628 §6.1: collisions are possible in
/// a small code space; among 20^8 codes, even one retry is rare).
const USER_CODE_ATTEMPTS: usize = 5;

/// The answer of RFC 8628 §3.2.
#[derive(Debug, Serialize)]
struct DeviceAuthorizationResponse {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: i64,
    interval: i64,
}

/// The verification page's address with the user code in it (RFC 8628 §3.3.1).
pub fn verification_uri_complete(state: &AppState, user_code: &str) -> String {
    let mut url = endpoints::url(&state.settings.public_base, endpoints::LINK);
    url.query_pairs_mut().append_pair("code", user_code);
    url.to_string()
}

/// A failed check, in the token endpoint's error shape (RFC 8628 §3.2 → RFC 6749 §5.2).
fn refused(error: OAuthError) -> TokenError {
    TokenError {
        status: StatusCode::BAD_REQUEST,
        error: error.error,
        description: error.description,
        basic_challenge: false,
        retry_after: None,
    }
}

/// `POST /oauth2/device`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, &client_ip, &headers, &body).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DeviceAuthorizationResponse, TokenError> {
    // RFC 8628 §3.1: application/x-www-form-urlencoded parameters, each once (RFC 6749 §3.1).
    let params = form_params(headers, body)?;
    // RFC 8628 §3.1: client authentication as at the token endpoint (RFC 6749 §3.2.1).
    let client = client_auth::authenticate(state, client_ip, headers, &params).await?;
    // The shared checks (authorize::CHECKS): parameters once (RFC 6749 §3.1), the client is
    // registered for the device grant (RFC 8628 §3.2 / RFC 6749 §5.2 unauthorized_client), a
    // well-formed scope (RFC 6749 §3.3).
    run_checks(&params, &client.metadata, Endpoint::DeviceAuthorization).map_err(refused)?;
    let scope = params
        .get("scope")
        .and_then(|s| Scope::parse(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let user_agent = kit::user_agent(headers);

    let now = state.storage.entropy().clock.now();
    let mut rng = state.storage.entropy().rng.rng();
    let mut repo = state.storage.begin().await?;
    let mut stored: Option<(String, String)> = None;
    for _ in 0..USER_CODE_ATTEMPTS {
        let device_code = random_code(&mut rng, DEVICE_CODE_LEN);
        // RFC 8628 §6.1: 8 characters without vowels or look-alikes, shown `XXXX-XXXX`.
        let user_code = user_code(&mut rng);
        let added = repo
            .device_code_grants()
            .add(NewDeviceCodeGrant {
                client_id: client.client.id,
                scope: &scope,
                // RFC 8628 §5.2: only the hash of the device code is kept.
                device_code_hash: sha256(&device_code),
                user_code: &user_code,
                expires_at: now + Duration::seconds(EXPIRES_IN_SECONDS),
                ip_address: None,
                user_agent: user_agent.as_deref(),
            })
            .await;
        match added {
            Ok(_) => {
                stored = Some((device_code, user_code));
                break;
            }
            // The user code is taken (by any stored grant: the index is on every row): draw
            // another.
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let (device_code, user_code) =
        stored.ok_or_else(|| TokenError::server("no free user code after several attempts"))?;
    repo.commit().await?;

    Ok(DeviceAuthorizationResponse {
        device_code,
        verification_uri: endpoints::url(&state.settings.public_base, endpoints::LINK).to_string(),
        // RFC 8628 §3.3.1 (recommended by MSC4341): the page with the code filled in.
        verification_uri_complete: verification_uri_complete(state, &user_code),
        user_code,
        expires_in: EXPIRES_IN_SECONDS,
        interval: INTERVAL_SECONDS,
    })
}
