//! `POST /_matrix/client/{r0,v3}/refresh` (client-server API §"Refreshing access tokens").
//!
//! A compat refresh token (`mcr_…`) is single use: it is exchanged for a new pair, and the
//! access token issued with it is revoked. The spec keeps the old refresh token valid until the
//! new access token or the new refresh token is used, so a client whose response was lost may
//! present it again before using either, within `tokens.refresh_grace_seconds`: the unused pair
//! is then replaced. Any other presentation of a used token, and any presentation of a token
//! such a retry replaced, means two parties hold the session's tokens: the session ends (its
//! device is deleted) and both are logged out (RFC 9700 §4.14.2, refresh token rotation with
//! reuse detection).

use axum::{
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::{error::parse_json, issue_tokens, json_no_store, IssuedTokens, MatrixError};
use crate::{
    core::{
        matrix::provisioning,
        sessions::{consumed_refresh, end_compat_session, ConsumedRefresh, RefreshSuccessor},
    },
    crypto::sha256,
    domain::token::{SynapseTokenFormat, TokenKind},
    http::AppState,
    storage::{BoxRepository, CompatRefreshToken, CompatSession, StorageError},
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
        // The session goes on, so a retry of the previous token revoked this one (the
        // session's end revokes every token and finishes it): two parties hold the session's
        // tokens (RFC 9700 §4.14.2).
        return Err(replay(
            state,
            repo,
            &session,
            "a compat refresh token revoked by a retry was presented",
        )
        .await?);
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
    if let Some(consumed_at) = refresh.consumed_at {
        return retry(state, repo, &session, &refresh, consumed_at, now).await;
    }
    let tokens = issue_tokens(&mut repo, session.id, true, now, &mut rng).await?;
    let Some(next) = tokens.refresh_id else {
        return Err(no_refresh_token());
    };
    // Consumed by a concurrent request between our read and our write: that one won.
    if !repo
        .compat_tokens()
        .consume_refresh(refresh.id, next)
        .await?
    {
        return Err(UNKNOWN);
    }
    if let Some(previous) = refresh.access_token_id {
        match repo.compat_tokens().revoke_access(previous).await {
            Ok(_) | Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    repo.compat_sessions().touch(session.id).await?;
    repo.commit().await?;
    answer(tokens)
}

/// `issue_tokens` with a refresh token returns both; this is the error if it ever didn't.
fn no_refresh_token() -> MatrixError {
    MatrixError::internal(StorageError::Invalid(
        "a refresh without a refresh token".into(),
    ))
}

/// A consumed refresh token presented again: a retry after a lost response (neither token the
/// refresh issued was used, within `tokens.refresh_grace_seconds`) gets a new pair in place of
/// the unused one; anything else is a replay and ends the session.
async fn retry(
    state: &AppState,
    mut repo: BoxRepository,
    session: &CompatSession,
    refresh: &CompatRefreshToken,
    consumed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<RefreshResponse, MatrixError> {
    let successor = match refresh.next_refresh_token_id {
        Some(id) => match repo.compat_tokens().lookup_refresh(id).await? {
            Some(next) => Some(RefreshSuccessor {
                id: next.id,
                access_token_id: next.access_token_id,
                usable: next.is_valid(),
                // Read only where it can decide.
                access_unused: match next.access_token_id {
                    Some(access) if next.is_valid() => repo
                        .compat_tokens()
                        .lookup_access(access)
                        .await?
                        .is_some_and(|a| a.first_used_at.is_none() && a.revoked_at.is_none()),
                    _ => false,
                },
            }),
            None => None,
        },
        None => None,
    };
    let grace = state.settings.refresh_grace_seconds;
    let ConsumedRefresh::Retry(successor) = consumed_refresh(consumed_at, successor, grace, now)
    else {
        return Err(replay(
            state,
            repo,
            session,
            "a used compat refresh token was presented again",
        )
        .await?);
    };
    if let Some(access) = successor.access_token_id {
        // Compare-and-set against the token's first use: used since we looked, no retry.
        if !repo.compat_tokens().revoke_access_unused(access).await? {
            return Err(UNKNOWN);
        }
    }
    repo.compat_tokens().revoke_refresh(successor.id).await?;
    let mut rng = state.storage.entropy().rng.rng();
    let tokens = issue_tokens(&mut repo, session.id, true, now, &mut rng).await?;
    let Some(next) = tokens.refresh_id else {
        return Err(no_refresh_token());
    };
    if !repo
        .compat_tokens()
        .repoint_refresh_next(refresh.id, successor.id, next)
        .await?
    {
        return Err(UNKNOWN);
    }
    repo.commit().await?;
    tracing::info!(session = %session.id, "compat refresh retried within the grace: the unused pair was replaced");
    answer(tokens)
}

/// RFC 9700 §4.14.2: a refresh token presented by two parties ends the session (tokens
/// revoked, device deleted so the homeserver stops accepting them at once).
async fn replay(
    state: &AppState,
    mut repo: BoxRepository,
    session: &CompatSession,
    what: &str,
) -> Result<MatrixError, MatrixError> {
    let now = state.storage.entropy().clock.now();
    let job = end_compat_session(&mut repo, session, now).await?;
    repo.commit().await?;
    provisioning::run_now(state, &[job]).await;
    tracing::warn!(session = %session.id, "{what}: the session was ended");
    Ok(MatrixError::UnknownToken(
        "this refresh token was already used; the session has ended",
    ))
}

fn answer(tokens: IssuedTokens) -> Result<RefreshResponse, MatrixError> {
    let (Some(refresh_token), Some(expires_in_ms)) = (tokens.refresh_token, tokens.expires_in_ms)
    else {
        return Err(no_refresh_token());
    };
    Ok(RefreshResponse {
        access_token: tokens.access_token,
        refresh_token,
        expires_in_ms,
    })
}
