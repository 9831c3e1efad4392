//! The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.5, OIDC Core §3.1.3).

use chrono::Duration;
use ulid::Ulid;

use super::{issue_for_user, new_claim, provision_device, Approval, TokenError, TokenResponse};
use crate::{
    core::sessions::end_oauth2_session,
    crypto::sha256,
    domain::{pkce, protocol::ErrorCode},
    http::{
        oauth2::{authorize::Params, client_auth::AuthenticatedClient},
        AppState,
    },
    storage::User,
};

/// A code must be redeemed within 10 minutes of its issue (RFC 6749 §4.1.2: "a maximum
/// authorization code lifetime of 10 minutes is RECOMMENDED").
pub const CODE_LIFETIME_MINUTES: i64 = 10;

/// `grant_type=authorization_code`, in three steps so that no transaction or pooled connection
/// is held across the homeserver call (issue 14, finding 2): check and claim the code (commit),
/// have the homeserver create the grant's device, then complete the claim and issue the tokens
/// (commit). See [`super::provision_device`].
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

    // Step 1: claim the code and commit. No transaction is held across the homeserver call
    // (issue 14, finding 2), so the claim is what keeps the code single use meanwhile
    // (RFC 6749 §4.1.2): a later redemption takes the claim over (a retry is never locked out
    // by an exchange that died half-way), and only the latest claim completes, once; the
    // others are refused. Only a client holding the PKCE verifier gets this far.
    let claim = new_claim(state, now);
    if !repo
        .authorization_grants()
        .claim_exchange(grant.id, claim)
        .await?
    {
        return Err(TokenError::invalid_grant("the code was already used"));
    }
    repo.commit().await?;

    // Step 2: the homeserver gets the device, with no connection held. On failure the claim
    // is given up: the code stays usable and the client may retry (503, Retry-After).
    if let Some(device_id) = &session.device_id {
        if let Err(e) = provision_device(state, &client.client, &user, device_id).await {
            release(state, grant.id, claim).await;
            return Err(e);
        }
    }

    // Step 3: the tokens, if the claim still holds (no later redemption took it over).
    let approval = Approval {
        browser_session_id,
        code: Some(code),
        nonce: grant.nonce.as_deref(),
    };
    let issued = async {
        let mut repo = state.storage.begin().await?;
        if !repo
            .authorization_grants()
            .complete_exchange(grant.id, claim)
            .await?
        {
            return Err(TokenError::invalid_grant("the code was already used"));
        }
        // Ended meanwhile (revoked from the account page, the user signed out everywhere):
        // no tokens for it.
        let session = repo
            .oauth2_sessions()
            .lookup(session_id)
            .await?
            .filter(|s| s.finished_at.is_none())
            .ok_or_else(|| TokenError::invalid_grant("the session of this code has ended"))?;
        issue_for_user(state, repo, &client.client, session, now, approval).await
    }
    .await;
    if issued
        .as_ref()
        .is_err_and(|e| e.error == ErrorCode::ServerError)
    {
        // The transaction rolled back: give the code back (a retry would take it over anyway).
        release(state, grant.id, claim).await;
    }
    issued
}

/// Gives up the claim on a code (the homeserver failed, or the tokens could not be stored):
/// the client may present it again. Logged, never fatal: a retry takes an unreleased claim
/// over.
async fn release(state: &AppState, grant_id: Ulid, claim: Ulid) {
    let released = async {
        let mut repo = state.storage.begin().await?;
        repo.authorization_grants()
            .release_exchange(grant_id, claim)
            .await?;
        repo.commit().await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(grant = %grant_id, error = %e, "token endpoint: can't release a code's claim; a retry takes it over");
    }
}
