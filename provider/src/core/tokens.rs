//! The one rule for "is this token active", whatever asks (introspection, userinfo, the admin
//! API): tokens are found by the SHA-256 of their value, after their checksum (DESIGN.md
//! "Tokens"), with expiry, revocation, the session's end and the user's lock checked together.
//!
//! Finding a token is a read and nothing more: who may learn about a token is the asker's
//! rule, and it comes after the lookup. A token's first use is recorded apart, by
//! [`record_first_use`], only where a use really happens.

use chrono::{DateTime, Utc};
use ulid::Ulid;

use crate::{
    crypto::sha256,
    domain::token::TokenKind,
    storage::{ActiveAccessToken, Storage, StorageError},
};

/// Finds an active OAuth 2.0 access token (`mat_…`) by its value: what introspection,
/// userinfo and the admin API ask. Read-only: nothing is recorded (see [`record_first_use`]).
/// Malformed tokens are refused by their checksum before any query; then ONE query returns the
/// token, its session, its client's ID and its user (the repository's hot path), with expiry,
/// revocation, the session's end and the user's lock all checked in SQL. The query is shared
/// with the other requests looking a token up at that moment ([`Storage::find_active_access_token`]:
/// one statement for all of them, never a cached answer, so a revocation is seen at once).
pub async fn find_active_access_token(
    storage: &Storage,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<ActiveAccessToken>, StorageError> {
    if TokenKind::parse(token) != Ok(TokenKind::AccessToken) {
        return Ok(None);
    }
    storage.find_active_access_token(sha256(token), now).await
}

/// An access token whose first use is not recorded yet, of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnusedToken {
    /// An OAuth 2.0 access token (`oauth2_access_tokens`).
    OAuth2(Ulid),
    /// A compat access token (`compat_access_tokens`, MSC3824 legacy login).
    Compat(Ulid),
}

impl UnusedToken {
    /// The OAuth 2.0 access token of `active`, when its first use is not recorded yet.
    pub fn oauth2(active: &ActiveAccessToken) -> Option<Self> {
        active
            .token
            .first_used_at
            .is_none()
            .then_some(Self::OAuth2(active.token.id))
    }
}

/// Records the first use of an access token, best-effort: a failure is logged and the request
/// goes on (at worst the refresh that issued the token keeps its retry grace a while longer).
///
/// Client-server API "Refreshing access tokens": after a refresh, the old refresh token stays
/// valid until the new access token is used; its first use is what closes that retry grace.
/// So call this only where the token's holder uses it: the homeserver introspecting it (the
/// client is using the token against the homeserver), userinfo, the admin API's bearer
/// authentication. Never where someone else merely asks about the token (a client
/// introspecting a token that isn't its own), nor before the asker is allowed to see it.
///
/// One conditional write (only while `first_used_at` is NULL and the token is not revoked),
/// on a kept connection ([`Storage::hot_read`]): callers record a token only when its lookup
/// found it unused, so this costs one statement per token, not per request.
pub async fn record_first_use(storage: &Storage, token: UnusedToken) {
    let recorded = storage
        .hot_read(&token, |repo, token| match *token {
            UnusedToken::OAuth2(id) => repo.access_tokens().mark_used(id),
            UnusedToken::Compat(id) => repo.compat_tokens().mark_access_used(id),
        })
        .await;
    if let Err(error) = recorded {
        tracing::warn!(%error, ?token, "could not record an access token's first use");
    }
}
