//! The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.5, OIDC Core §3.1.3).

use chrono::Duration;

use super::{redeem, Approval, Redemption, TokenError, TokenResponse};
use crate::{
    core::sessions::end_oauth2_session,
    crypto::sha256,
    domain::pkce,
    http::{
        oauth2::{authorize::Params, client_auth::AuthenticatedClient},
        AppState,
    },
    storage::User,
};

/// A code must be redeemed within 10 minutes of its issue (RFC 6749 §4.1.2: "a maximum
/// authorization code lifetime of 10 minutes is RECOMMENDED").
pub const CODE_LIFETIME_MINUTES: i64 = 10;

/// `grant_type=authorization_code`: the code is checked read-only (a replayed code revokes what
/// it issued), then [`redeem`]ed: the homeserver gets the grant's device with no transaction
/// or connection held (issue 14, finding 2), and one transaction marks the code exchanged
/// (compare-and-set: single use, RFC 6749 §4.1.2) and issues the tokens.
pub async fn exchange(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
) -> Result<TokenResponse, TokenError> {
    let code = params
        .get("code")
        .ok_or_else(|| TokenError::invalid_request("code is required"))?;
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let grant = repo
        .authorization_grants()
        .find_by_code_hash(&sha256(code))
        .await?
        .ok_or_else(|| TokenError::invalid_grant("unknown authorization code"))?;
    // RFC 6749 §4.1.3: the code was issued to this client.
    if grant.client_id != client.client.id {
        return Err(TokenError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if grant.exchanged_at.is_some() {
        // RFC 6749 §4.1.2: a code used twice revokes what it issued.
        let jobs = match grant.session_id {
            Some(session_id) => end_oauth2_session(&mut repo, session_id, now).await?,
            None => Default::default(),
        };
        repo.commit().await?;
        jobs.run(state).await;
        return Err(TokenError::invalid_grant(
            "the code was already used; the tokens it issued are revoked",
        ));
    }
    let (Some(fulfilled_at), Some(session_id), Some(browser_session_id)) = (
        grant.fulfilled_at,
        grant.session_id,
        grant.browser_session_id,
    ) else {
        return Err(TokenError::invalid_grant("the code was not approved"));
    };
    if fulfilled_at + Duration::minutes(CODE_LIFETIME_MINUTES) < now {
        return Err(TokenError::invalid_grant("the code has expired"));
    }
    // RFC 6749 §4.1.3: the same redirect_uri as in the authorization request.
    if params.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err(TokenError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    // RFC 7636 §4.6: the verifier matches the challenge.
    let verifier = params
        .get("code_verifier")
        .ok_or_else(|| TokenError::invalid_grant("code_verifier is required (PKCE)"))?;
    let challenge = grant.code_challenge.as_deref().unwrap_or_default();
    if !pkce::verify_s256(challenge, verifier) {
        return Err(TokenError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let session = repo
        .oauth2_sessions()
        .lookup(session_id)
        .await?
        .filter(|s| s.finished_at.is_none())
        .ok_or_else(|| TokenError::invalid_grant("the session of this code has ended"))?;
    // Locked or deactivated since consenting: no tokens (as the refresh and device grants).
    let user_id = session
        .user_id
        .ok_or_else(|| TokenError::server("an authorization code session without a user"))?;
    let user = repo
        .users()
        .lookup(user_id)
        .await?
        .filter(User::is_active)
        .ok_or_else(|| TokenError::invalid_grant("the account is locked or deactivated"))?;

    // Read-only so far: nothing to commit, and no connection may be held across the
    // homeserver call.
    drop(repo);
    let approval = Approval {
        browser_session_id,
        code: Some(code),
        nonce: grant.nonce.as_deref(),
    };
    let redemption = Redemption::AuthorizationCode {
        grant_id: grant.id,
        session_id,
    };
    let device_id = session.device_id.as_deref();
    redeem(
        state,
        &client.client,
        &user,
        device_id,
        redemption,
        approval,
    )
    .await
}
