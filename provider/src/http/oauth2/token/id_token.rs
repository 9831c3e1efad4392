//! The ID token a grant returns when `openid` is in scope (OIDC Core §2, §3.1.3.3), built and
//! signed in one place for every grant that issues one (authorization code, device code).

use chrono::{DateTime, Duration, Utc};
use ulid::Ulid;

use super::ID_TOKEN_LIFETIME_SECONDS;
use crate::http::oauth2::api::TokenError;
use crate::{
    core::accounts::emails::released_email,
    domain::{id_token::IdTokenClaims, scope::Scope},
    http::AppState,
    keys::Algorithm,
    storage::{BoxRepository, Client},
};

/// How the user approved a grant: what its ID token says about the approval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Approval<'a> {
    /// The browser session the user approved from: `auth_time` is its last sign-in and `sid`
    /// its ID (OIDC Core §2, Front-/Back-Channel Logout §2).
    pub browser_session_id: Ulid,
    /// The authorization code it was exchanged for (`c_hash`), when there was one.
    pub code: Option<&'a str>,
    /// The authorization request's `nonce`, echoed unchanged (OIDC Core §3.1.2.1).
    pub nonce: Option<&'a str>,
}

/// What an ID token says beyond the issuer, the client and the times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdTokenFor<'a> {
    /// The subject (OIDC Core §2 `sub`).
    pub user_id: Ulid,
    /// The access token issued with it (`at_hash`, OIDC Core §3.1.3.6).
    pub access_token: &'a str,
    /// How the user approved the grant.
    pub approval: Approval<'a>,
    /// The granted scope: `email` adds the `email` claims (OIDC Core §5.4).
    pub scope: &'a str,
}

/// Whether a granted scope asks for an ID token (OIDC Core §3.1.2.1: `openid`).
pub(crate) fn wanted(scope: &str) -> bool {
    scope.split(' ').any(|s| s == "openid")
}

/// Builds and signs the ID token for `client`, issued at `now`.
pub(crate) async fn sign(
    state: &AppState,
    repo: &mut BoxRepository,
    client: &Client,
    now: DateTime<Utc>,
    about: IdTokenFor<'_>,
) -> Result<String, TokenError> {
    let auth_time = repo
        .browser_sessions()
        .last_authentication(about.approval.browser_session_id)
        .await?
        .map(|a| a.created_at.timestamp());
    let mut claims = IdTokenClaims::new(
        state.settings.issuer.as_str(),
        &about.user_id.to_string(),
        &client.client_id,
        now,
        Duration::seconds(ID_TOKEN_LIFETIME_SECONDS),
    )
    .with_access_token(about.access_token);
    if let Some(code) = about.approval.code {
        claims = claims.with_code(code);
    }
    claims.nonce = about.approval.nonce.map(str::to_owned);
    claims.auth_time = auth_time;
    claims.sid = Some(about.approval.browser_session_id.to_string());
    // OIDC Core §5.4: the `email` scope releases `email` and `email_verified` in the ID token
    // as at the UserInfo endpoint.
    if Scope::parse(about.scope).is_ok_and(|scope| scope.contains("email")) {
        if let Some(email) = released_email(repo, about.user_id).await? {
            claims.email = Some(email);
            claims.email_verified = Some(true);
        }
    }
    // OIDC Dynamic Client Registration §2: id_token_signed_response_alg, RS256 by default.
    let alg = match client
        .metadata
        .get("id_token_signed_response_alg")
        .and_then(|v| v.as_str())
    {
        Some("ES256") => Algorithm::Es256,
        _ => Algorithm::Rs256,
    };
    state
        .settings
        .keystore
        .sign(alg, &claims)
        .or_else(|| state.settings.keystore.sign(Algorithm::Rs256, &claims))
        .ok_or_else(|| TokenError::server("no signing key"))?
        .map_err(TokenError::server)
}
