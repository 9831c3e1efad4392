//! `POST /_matrix/client/{r0,v3}/refresh` (client-server API §"Refreshing access tokens").
//!
//! A compat refresh token (`mcr_…`) is single use: it is exchanged for a new pair, and the
//! access token issued with it is revoked. One presented again after its use means two parties
//! hold it: the session ends (its device is deleted) and both are logged out (RFC 9700
//! §4.14.2, refresh token rotation with reuse detection).

use axum::{
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{error::parse_json, issue_tokens, json_no_store, MatrixError};
use crate::core::sessions::end_compat_session;
use crate::{
    core::matrix::provisioning,
    crypto::sha256,
    domain::token::{SynapseTokenFormat, TokenKind},
    http::AppState,
    storage::StorageError,
};

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The answer (client-server API §"POST /refresh", 200).
#[derive(Debug, Serialize)]
struct RefreshResponse {
    access_token: String,
    refresh_token: String,
    expires_in_ms: i64,
}

/// §"POST /refresh": 401 `M_UNKNOWN_TOKEN` with `soft_logout: false` for a token that isn't
/// (or is no longer) valid.
const UNKNOWN: MatrixError = MatrixError::UnknownToken("unknown or expired refresh token");

/// `POST /refresh`.
pub async fn post(State(state): State<AppState>, body: Bytes) -> Response {
    match refresh(&state, &body).await {
        Ok(answer) => json_no_store(answer),
        Err(error) => error.into_response(),
    }
}

async fn refresh(state: &AppState, body: &[u8]) -> Result<RefreshResponse, MatrixError> {
    let request: RefreshRequest = parse_json(body)?;
    let token = request
        .refresh_token
        .ok_or(MatrixError::MissingParam("the `refresh_token` is missing"))?;
    // The checksum refuses garbage (and other kinds of token) before any query.
    // Synapse's `syr_…` refresh tokens, imported by `provider syn2mas`, are compat ones too.
    if TokenKind::parse(&token) != Ok(TokenKind::CompatRefreshToken)
        && SynapseTokenFormat::of(&token) != Some(SynapseTokenFormat::Refresh)
    {
        return Err(UNKNOWN);
    }
    let mut rng = state.storage.entropy().rng.rng();
    let now = state.storage.entropy().clock.now();

    let mut repo = state.storage.begin().await?;
    let Some(refresh) = repo
        .compat_tokens()
        .find_refresh_by_hash(&sha256(&token))
        .await?
    else {
        return Err(UNKNOWN);
    };
    let Some(session) = repo
        .compat_sessions()
        .lookup(refresh.session_id)
        .await?
        .filter(|s| s.is_active())
    else {
        return Err(UNKNOWN);
    };
    if refresh.revoked_at.is_some() {
        return Err(UNKNOWN);
    }
    let Some(user) = repo.users().lookup(session.user_id).await? else {
        return Err(UNKNOWN);
    };
    if user.deactivated_at.is_some() {
        return Err(UNKNOWN);
    }
    // MSC3939: a locked account's client keeps its data and logs in again once unlocked.
    if user.locked_at.is_some() {
        return Err(MatrixError::UserLocked {
            soft_logout: Some(true),
        });
    }
    // Used before (or by a concurrent request just now: the compare-and-set decides): reuse.
    if refresh.consumed_at.is_some() || !repo.compat_tokens().consume_refresh(refresh.id).await? {
        let job = end_compat_session(&mut repo, &session, now).await?;
        repo.commit().await?;
        provisioning::run_now(state, &[job]).await;
        tracing::warn!(
            session = %session.id,
            "a used compat refresh token was presented again: the session was ended"
        );
        return Err(MatrixError::UnknownToken(
            "this refresh token was already used; the session has ended",
        ));
    }
    if let Some(previous) = refresh.access_token_id {
        match repo.compat_tokens().revoke_access(previous).await {
            Ok(_) | Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let tokens = issue_tokens(&mut repo, session.id, true, now, &mut rng).await?;
    repo.compat_sessions().touch(session.id).await?;
    repo.commit().await?;
    let (Some(refresh_token), Some(expires_in_ms)) = (tokens.refresh_token, tokens.expires_in_ms)
    else {
        // `issue_tokens` with a refresh token returns both.
        return Err(MatrixError::internal(StorageError::Invalid(
            "a refresh without a refresh token".into(),
        )));
    };
    Ok(RefreshResponse {
        access_token: tokens.access_token,
        refresh_token,
        expires_in_ms,
    })
}
