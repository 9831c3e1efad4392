//! `POST /_matrix/client/{r0,v3}/logout` and `/logout/all` (client-server API §"Logout").
//!
//! Ending a compat session finishes it, revokes its tokens and queues the deletion of its
//! device, in one transaction; the deletion runs right after the commit (the homeserver caches
//! introspection for minutes, so the device going away is what makes the logout immediate).
//!
//! Only compat access tokens (`mct_…`) are accepted. A client holding an OAuth 2.0 token
//! (`mat_…`) logs out through revocation (RFC 7009) or RP-initiated logout; here its token is
//! `M_UNKNOWN_TOKEN`.

use axum::{
    extract::{RawQuery, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{json_no_store, MatrixError};
use crate::core::sessions::end_compat_session;
use crate::{
    core::matrix::provisioning,
    crypto::sha256,
    domain::token::{SynapseTokenFormat, TokenKind},
    http::{
        kit::params::{authorization, Authorization},
        AppState,
    },
    storage::{BoxRepository, CompatSession},
};

/// §"Using access tokens": 401 `M_UNKNOWN_TOKEN` (`soft_logout: false`) for a token that is
/// not, or no longer, valid.
const UNKNOWN: MatrixError = MatrixError::UnknownToken("unknown or expired access token");

/// The access token of a request (client-server API §"Using access tokens"): the
/// `Authorization: Bearer` header (read by the kit's one parser, RFC 6750 §2.1), else the
/// deprecated `access_token` query parameter old clients still send. Neither, or a malformed
/// header (a `Bearer` without a token, several `Authorization` headers) → 401
/// `M_MISSING_TOKEN`.
pub fn access_token(headers: &HeaderMap, query: Option<&str>) -> Result<String, MatrixError> {
    let from_query = || {
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(name, _)| name == "access_token")
            .map(|(_, value)| value.into_owned())
    };
    match authorization(headers) {
        Authorization::Bearer(token) => Some(token.to_owned()),
        Authorization::Malformed => None,
        // Another scheme is no access token (§"Using access tokens": only `Bearer`).
        Authorization::Absent | Authorization::Basic(_) | Authorization::Other => from_query(),
    }
    .filter(|t| !t.is_empty())
    .ok_or(MatrixError::MissingToken)
}

/// The active compat session of an access token, in the caller's transaction.
async fn session_of(
    state: &AppState,
    repo: &mut BoxRepository,
    token: &str,
) -> Result<CompatSession, MatrixError> {
    // The checksum refuses garbage and other kinds of token before any query.
    // Synapse's own tokens, imported by `provider syn2mas`, are compat access tokens too.
    if TokenKind::parse(token) != Ok(TokenKind::CompatAccessToken)
        && !SynapseTokenFormat::of(token).is_some_and(SynapseTokenFormat::is_access)
    {
        return Err(UNKNOWN);
    }
    let now = state.storage.entropy().clock.now();
    repo.compat_tokens()
        .find_active_access_by_hash_with_session(&sha256(token), now)
        .await?
        .map(|(_, session)| session)
        .ok_or(UNKNOWN)
}

/// `POST /logout`: ends the token's session.
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match logout(&state, &headers, query.as_deref(), false).await {
        Ok(()) => json_no_store(json!({})),
        Err(error) => error.into_response(),
    }
}

/// `POST /logout/all`: ends every compat session of the token's user (OAuth 2.0 sessions are
/// theirs to end through the provider's account pages or revocation).
pub async fn post_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match logout(&state, &headers, query.as_deref(), true).await {
        Ok(()) => json_no_store(json!({})),
        Err(error) => error.into_response(),
    }
}

async fn logout(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    all: bool,
) -> Result<(), MatrixError> {
    let token = access_token(headers, query)?;
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session = session_of(state, &mut repo, &token).await?;
    let sessions = if all {
        repo.compat_sessions()
            .list_active_for_user(session.user_id)
            .await?
    } else {
        vec![session]
    };
    let mut jobs = Vec::with_capacity(sessions.len());
    for session in &sessions {
        jobs.push(end_compat_session(&mut repo, session, now).await?);
    }
    repo.commit().await?;
    provisioning::run_now(state, &jobs).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderValue};

    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn where_the_token_comes_from() {
        assert_eq!(
            access_token(&headers(Some("Bearer mct_x")), None).unwrap(),
            "mct_x"
        );
        assert_eq!(
            access_token(&headers(Some("bearer  mct_x ")), None).unwrap(),
            "mct_x"
        );
        // The header wins over the query parameter.
        assert_eq!(
            access_token(&headers(Some("Bearer a")), Some("access_token=b")).unwrap(),
            "a"
        );
        assert_eq!(
            access_token(&headers(None), Some("x=1&access_token=mct_%5F")).unwrap(),
            "mct__"
        );
        for (authorization, query) in [
            (None, None),
            (Some("Basic dXNlcjpwYXNz"), None),
            (Some("Bearer"), None),
            (Some("Bearer "), None),
            (None, Some("access_token=")),
        ] {
            assert_eq!(
                access_token(&headers(authorization), query)
                    .unwrap_err()
                    .errcode(),
                "M_MISSING_TOKEN",
                "{authorization:?} {query:?}"
            );
        }
    }
}
