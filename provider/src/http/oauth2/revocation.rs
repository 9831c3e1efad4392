//! `POST /oauth2/revoke` (RFC 7009): a client tells the server it no longer needs a token.
//!
//! - The client authenticates as at the token endpoint ([`client_auth`], RFC 7009 §2.1); public
//!   clients say who they are with `client_id` (§5).
//! - Revoking an access token revokes that token. Revoking a refresh token ends the whole session
//!   (§2.1: the server "SHOULD also invalidate all access tokens based on the same authorization
//!   grant"): the session is finished and all its access and refresh tokens revoked, in one
//!   transaction.
//! - Unknown, malformed and already revoked tokens are answered 200 (§2.2: "invalid tokens do
//!   not cause an error response"); so are tokens of another client, which are left alone, so
//!   the answer does not tell whether such a token exists.
//! - `token_type_hint` is optional and ignored (§2.1: the server MUST extend its search past a
//!   wrong hint; the token's prefix already says what it is).
//! - Errors (client authentication, malformed requests) are the JSON of RFC 6749 §5.2 (§2.2.1).

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use ulid::Ulid;

use super::{
    api::{form_params, no_store, token_param, TokenError},
    client_auth::{self, AuthenticatedClient},
};
use crate::core::{rate_limit::ClientIp, sessions::end_oauth2_session};
use crate::{
    crypto::sha256,
    domain::{protocol::ClientAuthMethod, token::TokenKind},
    http::AppState,
    storage::{BoxRepository, StorageError},
};

/// RFC 8414 §2 `revocation_endpoint_auth_methods_supported`: those of the token endpoint,
/// `none` included (RFC 7009 §5: public clients may revoke their tokens).
pub const AUTH_METHODS: &[ClientAuthMethod] = super::token::AUTH_METHODS;

/// `POST /oauth2/revoke`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, &client_ip, &headers, &body).await {
        // RFC 7009 §2.2: "The content of the response body is ignored by the client".
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), TokenError> {
    let params = form_params(headers, body)?;
    // RFC 7009 §2.1: "The authorization server first validates the client credentials".
    let client = client_auth::authenticate(state, client_ip, headers, &params).await?;
    let token = token_param(&params)?;
    // §2.2: an invalid token is no error; the checksum rejects garbage before any query.
    let Ok(kind) = TokenKind::parse(token) else {
        return Ok(());
    };
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session = match kind {
        TokenKind::AccessToken => access_token_session(&mut repo, &client, token).await?,
        TokenKind::RefreshToken => refresh_token_session(&mut repo, &client, token).await?,
        // Compat tokens belong to no OAuth 2.0 client (they end with the legacy `/logout`);
        // personal tokens are not issued. Neither is this client's to revoke.
        TokenKind::CompatAccessToken
        | TokenKind::CompatRefreshToken
        | TokenKind::PersonalAccessToken => None,
    };
    let Some(session) = session else {
        return Ok(());
    };
    // MSC4254 (RFC 7009 for Matrix logout): revoking either token of a session ends the whole
    // session, and with it the Matrix device (RFC 7009 §2.1 allows revoking "other tokens
    // based on the same authorization grant").
    let jobs = end_oauth2_session(&mut repo, session, now).await?;
    repo.commit().await?;
    tracing::info!(%session, "session ended by the revocation of one of its tokens");
    jobs.run(state).await;
    Ok(())
}

/// The session of a token, when it was issued to `client` (§2.1: the server "verifies whether
/// the token was issued to the client making the revocation request").
async fn owned_session(
    repo: &mut BoxRepository,
    client: &AuthenticatedClient,
    session_id: Ulid,
) -> Result<Option<Ulid>, StorageError> {
    Ok(repo
        .oauth2_sessions()
        .lookup(session_id)
        .await?
        .filter(|s| s.client_id == client.client.id)
        .map(|s| s.id))
}

/// The session of an access token issued to `client`, if the token is one.
async fn access_token_session(
    repo: &mut BoxRepository,
    client: &AuthenticatedClient,
    token: &str,
) -> Result<Option<Ulid>, StorageError> {
    match repo.access_tokens().find_by_hash(&sha256(token)).await? {
        Some(access) => owned_session(repo, client, access.session_id).await,
        None => Ok(None),
    }
}

/// The session of a refresh token issued to `client`, if the token is one.
async fn refresh_token_session(
    repo: &mut BoxRepository,
    client: &AuthenticatedClient,
    token: &str,
) -> Result<Option<Ulid>, StorageError> {
    match repo.refresh_tokens().find_by_hash(&sha256(token)).await? {
        Some(refresh) => owned_session(repo, client, refresh.session_id).await,
        None => Ok(None),
    }
}
