//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).
//!
//! Every refresh consumes the token and returns a new pair. If the response is lost, the client
//! may replay the token it just used while the new one has not been used yet: it then gets
//! another new pair, and the unused one is revoked. Any other reuse of a consumed token means the
//! token leaked: the whole session ends.

use super::{issue_pair, TokenError, TokenResponse};
use crate::{
    core::sessions::end_oauth2_session,
    crypto::sha256,
    domain::{scope::Scope, token::TokenKind},
    http::{
        oauth2::{authorize::Params, client_auth::AuthenticatedClient},
        AppState,
    },
};

pub async fn refresh(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
) -> Result<TokenResponse, TokenError> {
    let token = params
        .get("refresh_token")
        .ok_or_else(|| TokenError::invalid_request("refresh_token is required"))?;
    // The checksum rejects garbage before any query.
    if TokenKind::parse(token) != Ok(TokenKind::RefreshToken) {
        return Err(TokenError::invalid_grant(
            "not a refresh token of this server",
        ));
    }
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let stored = repo
        .refresh_tokens()
        .find_by_hash(&sha256(token))
        .await?
        .ok_or_else(|| TokenError::invalid_grant("unknown refresh token"))?;
    let session = repo
        .oauth2_sessions()
        .lookup(stored.session_id)
        .await?
        .ok_or_else(|| TokenError::invalid_grant("unknown refresh token"))?;
    if session.client_id != client.client.id {
        return Err(TokenError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if session.finished_at.is_some() || stored.revoked_at.is_some() {
        return Err(TokenError::invalid_grant("the session has ended"));
    }
    if let Some(user_id) = session.user_id {
        let active = repo
            .users()
            .lookup(user_id)
            .await?
            .is_some_and(|u| u.is_active());
        if !active {
            return Err(TokenError::invalid_grant(
                "the account is locked or deactivated",
            ));
        }
    }
    // RFC 6749 §6: a requested scope may not exceed the original; narrowing per token is not
    // offered, so it must be the same set.
    if let Some(raw) = params.get("scope") {
        let requested = Scope::parse(raw).map_err(|e| TokenError::invalid_scope(&e.to_string()))?;
        let granted = Scope::parse(&session.scope).unwrap_or_default();
        if requested != granted {
            return Err(TokenError::invalid_scope(
                "a refresh keeps the granted scope; leave `scope` out or send it unchanged",
            ));
        }
    }

    let mut rng = state.storage.entropy().rng.rng();
    if stored.consumed_at.is_some() {
        let successor = match stored.next_refresh_token_id {
            Some(id) => repo.refresh_tokens().lookup(id).await?,
            None => None,
        };
        let unused = successor
            .as_ref()
            .filter(|s| s.consumed_at.is_none() && s.revoked_at.is_none());
        let Some(unused) = unused else {
            // RFC 9700 §4.14.2: reuse of a rotated token: end the session.
            let jobs = end_oauth2_session(&mut repo, session.id, now).await?;
            repo.commit().await?;
            jobs.run(state).await;
            tracing::warn!(session = %session.id, "refresh token reuse: session ended");
            return Err(TokenError::invalid_grant(
                "the refresh token was already used; the session has ended",
            ));
        };
        // The grace: the response to the previous refresh was lost.
        repo.refresh_tokens().revoke(unused.id).await?;
        if let Some(access) = unused.access_token_id {
            repo.access_tokens().revoke(access).await?;
        }
        let pair = issue_pair(&mut repo, &mut rng, session.id, now).await?;
        if !repo
            .refresh_tokens()
            .repoint_next(stored.id, unused.id, pair.refresh.id)
            .await?
        {
            return Err(TokenError::invalid_grant(
                "the refresh token was used concurrently",
            ));
        }
        repo.commit().await?;
        return Ok(TokenResponse::with_pair(pair, session.scope, None));
    }

    let pair = issue_pair(&mut repo, &mut rng, session.id, now).await?;
    if !repo
        .refresh_tokens()
        .consume(stored.id, pair.refresh.id)
        .await?
    {
        // Another request consumed it between our read and our write.
        return Err(TokenError::invalid_grant(
            "the refresh token was used concurrently",
        ));
    }
    repo.oauth2_sessions().touch(session.id).await?;
    repo.commit().await?;
    Ok(TokenResponse::with_pair(pair, session.scope, None))
}
