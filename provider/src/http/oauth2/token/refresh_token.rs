//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).
//!
//! Every refresh consumes the token and returns a new pair. The Matrix client-server API
//! ("Refreshing access tokens") keeps the consumed token valid only until the new access token
//! or the new refresh token is used: if the response was lost, the client may present the
//! consumed token again, before using either, within `tokens.refresh_grace_seconds`; it then
//! gets another new pair, and the unused one is revoked. Any other presentation of a consumed
//! token, and any presentation of a successor such a retry revoked, means two parties hold the
//! session's tokens: the whole session ends ([`end_oauth2_session`]: tokens revoked, device
//! deleted), since the server can't tell which of them is the legitimate client.

use chrono::Duration;

use super::{issue_pair, IssuedPair, TokenResponse, TokenUnit, ACCESS_TOKEN_LIFETIME_SECONDS};
use crate::http::kit::params::Params;
use crate::http::oauth2::api::TokenError;
use crate::{
    core::sessions::{consumed_refresh, end_oauth2_session, ConsumedRefresh, RefreshSuccessor},
    crypto::sha256,
    domain::{scope::Scope, token::TokenKind},
    http::{oauth2::client_auth::AuthenticatedClient, AppState},
    storage::{
        BoxRepository, OAuth2Session, PresentedRefreshToken, Rotated, Rotation, Spent, TokenHash,
    },
};

/// The hash of the request's refresh token, when it has one that can be this server's (the
/// checksum rejects garbage before any query): what the token endpoint reads with the client
/// (`client_auth::authenticate_reading`) when the request asks for the refresh grant.
pub fn presented_hash(params: &Params) -> Option<TokenHash> {
    let token = params.get("refresh_token")?;
    (TokenKind::parse(token) == Ok(TokenKind::RefreshToken)).then(|| sha256(token))
}

/// The refresh grant. `presented`: the presented token as read with the client, by the hash
/// [`presented_hash`] gave (so its checksum passed); `None`: not read yet, it is read here.
pub async fn refresh(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
    presented: Option<Option<PresentedRefreshToken>>,
    unit: &mut TokenUnit,
) -> Result<TokenResponse, TokenError> {
    if params.get("refresh_token").is_none() {
        return Err(TokenError::invalid_request("refresh_token is required"));
    }
    let now = state.storage.entropy().clock.now();
    // Outside any transaction: the read locks nothing (READ COMMITTED), and every write below
    // is a compare-and-set that decides again.
    let presented = match presented {
        Some(read) => read,
        None => {
            // The checksum rejects garbage before any query.
            let Some(hash) = presented_hash(params) else {
                return Err(TokenError::invalid_grant(
                    "not a refresh token of this server",
                ));
            };
            state
                .storage
                .hot_read(&hash, |repo, hash| {
                    repo.refresh_tokens().find_presented(hash)
                })
                .await?
        }
    };
    let PresentedRefreshToken {
        token: stored,
        session,
        user_active,
    } = presented.ok_or_else(|| TokenError::invalid_grant("unknown refresh token"))?;
    if session.client_id != client.client.id {
        return Err(TokenError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if session.finished_at.is_some() {
        return Err(TokenError::invalid_grant("the session has ended"));
    }
    if stored.revoked_at.is_some() {
        // The session goes on, so a retry of the previous token revoked this one (revocation
        // and the session's end revoke every token and finish the session): the party that
        // retried and the one holding this token are two (RFC 9700 §4.14.2).
        return Err(replay(
            state,
            state.storage.begin().await?,
            &session,
            "a refresh token revoked by a retry was presented",
        )
        .await?);
    }
    if !user_active {
        return Err(TokenError::invalid_grant(
            "the account is locked or deactivated",
        ));
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
    if let Some(consumed_at) = stored.consumed_at {
        // Spent before anything below is decided or written.
        unit.spend_now(state).await?;
        let mut repo = state.storage.begin().await?;
        let successor = match stored.next_refresh_token_id {
            Some(id) => match repo.refresh_tokens().lookup(id).await? {
                Some(next) => Some(RefreshSuccessor {
                    id: next.id,
                    access_token_id: next.access_token_id,
                    usable: next.is_usable(),
                    // Read only where it can decide.
                    access_unused: match next.access_token_id {
                        Some(access) if next.is_usable() => {
                            repo.access_tokens().lookup(access).await?.is_some_and(|a| {
                                a.first_used_at.is_none() && a.revoked_at.is_none()
                            })
                        }
                        _ => false,
                    },
                }),
                None => None,
            },
            None => None,
        };
        let grace = state.settings.refresh_grace_seconds;
        let ConsumedRefresh::Retry(successor) =
            consumed_refresh(consumed_at, successor, grace, now)
        else {
            return Err(replay(
                state,
                repo,
                &session,
                "a consumed refresh token was presented again",
            )
            .await?);
        };
        // The retry: the response to the previous refresh was lost. Its tokens were never
        // used; revoke them (compare-and-set against their first use) and issue new ones.
        if let Some(access) = successor.access_token_id {
            if !repo.access_tokens().revoke_unused(access).await? {
                // Used (or revoked) since we looked: the retry's window has closed.
                return Err(TokenError::invalid_grant(
                    "the refresh token was used concurrently",
                ));
            }
        }
        repo.refresh_tokens().revoke(successor.id).await?;
        let pair = issue_pair(&mut repo, &mut rng, session.id, now).await?;
        if !repo
            .refresh_tokens()
            .repoint_next(stored.id, successor.id, pair.refresh.id)
            .await?
        {
            return Err(TokenError::invalid_grant(
                "the refresh token was used concurrently",
            ));
        }
        repo.commit().await?;
        tracing::info!(session = %session.id, "refresh retried within the grace: the unused pair was replaced");
        return Ok(TokenResponse::with_pair(pair, session.scope, None));
    }

    // The rotation (RFC 6749 §6), committed in a transaction shared with the other rotations
    // of the moment (group commit): its compare-and-set consume decides as it would alone.
    let access_token = TokenKind::AccessToken.generate(&mut rng);
    let refresh_token = TokenKind::RefreshToken.generate(&mut rng);
    let rotation = Rotation {
        refresh_token_id: stored.id,
        session_id: session.id,
        access_token_hash: sha256(&access_token),
        access_expires_at: Some(now + Duration::seconds(ACCESS_TOKEN_LIFETIME_SECONDS)),
        refresh_token_hash: sha256(&refresh_token),
    };
    // The token limit's unit is spent by the writer, with the other units of its batch.
    match state
        .storage
        .rotate_refresh_token(rotation, unit.for_write())
        .await?
    {
        Spent::Refused { retry_after } => Err(TokenUnit::refused(state, retry_after)),
        Spent::Done(Rotated::Issued { refresh, .. }) => Ok(TokenResponse::with_pair(
            IssuedPair {
                access_token,
                refresh_token,
                refresh,
            },
            session.scope,
            None,
        )),
        // Another request consumed it between our read and our write.
        Spent::Done(Rotated::Lost) => Err(TokenError::invalid_grant(
            "the refresh token was used concurrently",
        )),
    }
}

/// RFC 9700 §4.14.2: a refresh token presented by two parties ends the session (its tokens
/// revoked, its device deleted so the homeserver stops accepting them at once); the answer is
/// `invalid_grant`.
async fn replay(
    state: &AppState,
    mut repo: BoxRepository,
    session: &OAuth2Session,
    what: &str,
) -> Result<TokenError, TokenError> {
    let now = state.storage.entropy().clock.now();
    let jobs = end_oauth2_session(&mut repo, session.id, now).await?;
    repo.commit().await?;
    jobs.run(state).await;
    tracing::warn!(session = %session.id, "{what}: the session was ended");
    Ok(TokenError::invalid_grant(
        "the refresh token was already used; the session has ended",
    ))
}
