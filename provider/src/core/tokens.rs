//! The one rule for "is this token active", whatever asks (introspection, userinfo, the admin
//! API): tokens are found by the SHA-256 of their value, after their checksum (DESIGN.md
//! "Tokens"), with expiry, revocation, the session's end and the user's lock checked together.

use chrono::{DateTime, Utc};

use crate::{
    crypto::sha256,
    domain::token::TokenKind,
    storage::{ActiveAccessToken, BoxRepository, StorageError},
};

/// Finds an active OAuth 2.0 access token (`mat_…`) by its value: what introspection,
/// userinfo and the admin API ask; its first use is recorded. Malformed tokens are refused by their checksum before any query; then ONE
/// query returns the token, its session, its client's ID and its user (the repository's hot
/// path), with expiry, revocation, the session's end and the user's lock all checked in SQL.
pub async fn find_active_access_token(
    repo: &mut BoxRepository,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<ActiveAccessToken>, StorageError> {
    if TokenKind::parse(token) != Ok(TokenKind::AccessToken) {
        return Ok(None);
    }
    let found = repo
        .access_tokens()
        .find_active_by_hash(&sha256(token), now)
        .await?;
    if let Some(active) = &found {
        // Its first use closes the retry grace of the refresh that issued it (client-server
        // API "Refreshing access tokens"): one conditional write per token, not per request.
        if active.token.first_used_at.is_none() {
            repo.access_tokens().mark_used(active.token.id).await?;
        }
    }
    Ok(found)
}
