//! The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.5, OIDC Core §3.1.3), and the
//! redemption it shares with the device grant ([`redeem`]: the homeserver gets the device, then
//! one transaction issues the tokens).

use chrono::Duration;

use super::{
    id_token::{self, Approval, IdTokenFor},
    issue_pair, TokenResponse,
};
use crate::http::oauth2::api::TokenError;
use ulid::Ulid;

use crate::http::kit::params::Params;
use crate::{
    core::{
        matrix::provisioning,
        sessions::{self, end_oauth2_session},
    },
    crypto::sha256,
    domain::pkce,
    http::{oauth2::client_auth::AuthenticatedClient, AppState},
    storage::{Client, NewOAuth2Session, User},
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

/// What an exchange redeems, once the homeserver has the device ([`redeem`]).
pub(crate) enum Redemption<'a> {
    /// An approved authorization code (RFC 6749 §4.1.3), whose session was created at approval.
    AuthorizationCode { grant_id: Ulid, session_id: Ulid },
    /// An approved device code (RFC 8628 §3.4): its session is created with the tokens.
    DeviceCode {
        grant_id: Ulid,
        session: NewOAuth2Session<'a>,
    },
}

/// The end of every grant for a user (authorization code, device code), after the grant's
/// read-only checks, with no transaction open and no connection held:
///
/// 1. when the session has a Matrix device (MSC2967 device scope), the homeserver gets it,
///    synchronously (the client will use the token at once, and the homeserver counts a token
///    of an unknown device as inactive). The upsert is idempotent: two concurrent redemptions
///    of one code may both make it, harmlessly. No transaction or pooled connection is held
///    across the call (DESIGN.md), so a slow or paused homeserver holds up only the exchanges
///    waiting for it (issue 14, finding 2). If the homeserver can't be reached: 503
///    `temporarily_unavailable`, and nothing was written that needs undoing (the grant is
///    still usable). The device is marked as being provisioned before the call, so a device
///    deletion queued meanwhile can't remove it ([`provisioning::provision_new_device`]);
/// 2. one transaction: the grant is marked exchanged by a compare-and-set (`exchanged_at IS
///    NULL`: tokens once, RFC 6749 §4.1.2, RFC 8628 §3.5; the loser of a race gets
///    `invalid_grant`), the session must be live and the user active still (either may have
///    ended during the call), the session claims its device (the user's other live session
///    holding that device ID ends: [`sessions::claim_device`]; a Matrix device is one
///    session), the device's provisioning mark goes, and a fresh pair is issued, with the ID
///    token when the scope asks for one (OIDC Core §3.1.2.1: `openid`); commit. After the
///    commit, the ended sessions' homeserver jobs run before the answer leaves.
pub(crate) async fn redeem(
    state: &AppState,
    client: &Client,
    user: &User,
    device_id: Option<&str>,
    redemption: Redemption<'_>,
    approval: Approval<'_>,
) -> Result<TokenResponse, TokenError> {
    if let Some(device_id) = device_id {
        // The device is named after the client, as the account pages name the session.
        let display_name = crate::core::clients::client_name(client);
        provisioning::provision_new_device(state, user, device_id, Some(&display_name))
            .await
            .map_err(TokenError::homeserver)?;
    }

    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session = match redemption {
        Redemption::AuthorizationCode {
            grant_id,
            session_id,
        } => {
            // RFC 6749 §4.1.2: single use; of two concurrent redemptions one gets here.
            if !repo.authorization_grants().exchange(grant_id).await? {
                return Err(TokenError::invalid_grant("the code was already used"));
            }
            // Ended meanwhile (revoked from the account page, the user signed out
            // everywhere): no tokens for it.
            repo.oauth2_sessions()
                .lookup(session_id)
                .await?
                .filter(|s| s.finished_at.is_none())
                .ok_or_else(|| TokenError::invalid_grant("the session of this code has ended"))?
        }
        Redemption::DeviceCode { grant_id, session } => {
            let session = repo.oauth2_sessions().add(session).await?;
            // RFC 8628 §3.5: tokens once, and not after the device code expired. `false`:
            // another poll got them; dropping `repo` rolls the session back.
            if !repo
                .device_code_grants()
                .exchange(grant_id, session.id)
                .await?
            {
                return Err(TokenError::invalid_grant(
                    "the device code was already used or has expired",
                ));
            }
            session
        }
    };
    // Locked or deactivated during the homeserver call: no tokens.
    if !repo
        .users()
        .lookup(user.id)
        .await?
        .is_some_and(|u| u.is_active())
    {
        return Err(TokenError::invalid_grant(
            "the account is locked or deactivated",
        ));
    }
    let mut jobs = provisioning::AfterCommit::default();
    if let Some(device_id) = &session.device_id {
        jobs = sessions::claim_device(&mut repo, user.id, device_id, Some(session.id), now).await?;
        provisioning::device_provisioned(&mut repo, user.id, device_id).await?;
    }
    let mut rng = state.storage.entropy().rng.rng();
    let pair = issue_pair(&mut repo, &mut rng, session.id, now).await?;
    let id_token = if id_token::wanted(&session.scope) {
        let about = IdTokenFor {
            user_id: user.id,
            access_token: &pair.access_token,
            approval,
            scope: &session.scope,
        };
        Some(id_token::sign(state, &mut repo, client, now, about).await?)
    } else {
        None
    };
    repo.commit().await?;
    jobs.run(state).await;
    Ok(TokenResponse::with_pair(pair, session.scope, id_token))
}
