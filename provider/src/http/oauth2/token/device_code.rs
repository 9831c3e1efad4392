//! The device authorization grant at the token endpoint (RFC 8628 §3.4, §3.5): the device polls
//! with its `device_code` until the user has answered on the verification page
//! ([`crate::http::web::link`]).
//!
//! Every poll is recorded ([`DeviceCodeGrantRepository::record_poll`], which locks the grant's
//! row for the transaction), so concurrent polls of one device code are judged one after the
//! other. Polls of an approved grant then go to [`super::authorization_code::redeem`]: the homeserver gets the
//! device (no transaction is held across that call), and exactly one of them gets the tokens,
//! the one whose compare-and-set marks the grant exchanged (RFC 8628 §3.5).
//!
//! [`DeviceCodeGrantRepository::record_poll`]: crate::storage::DeviceCodeGrantRepository::record_poll

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};

use super::{
    authorization_code::{redeem, Redemption},
    id_token::Approval,
    TokenResponse,
};
use crate::http::kit::params::Params;
use crate::http::oauth2::api::TokenError;
use crate::{
    crypto::sha256,
    domain::{protocol::ErrorCode, scope},
    http::{
        oauth2::{client_auth::AuthenticatedClient, device::INTERVAL_SECONDS},
        AppState,
    },
    storage::{DeviceCodeGrant, DeviceCodeGrantState, NewOAuth2Session},
};

/// RFC 8628 §3.5: the errors of a poll that are not RFC 6749 §5.2's own. All are 400.
fn polling_error(error: ErrorCode, description: &str) -> TokenError {
    TokenError {
        status: StatusCode::BAD_REQUEST,
        error,
        description: description.to_owned(),
        basic_challenge: false,
        retry_after: None,
    }
}

/// RFC 8628 §3.5 `slow_down`: the previous poll was less than the interval ago.
///
/// The client must then add 5 seconds to its interval for this and every later request (§3.5).
/// The server keeps judging against the advertised [`INTERVAL_SECONDS`]: no per-grant interval
/// is stored, so a client that obeys (and polls ever more slowly) is never refused, and one that
/// keeps polling faster than 5 seconds gets `slow_down` each time (each poll is recorded, the
/// refused ones too).
fn too_soon(previous: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    previous.is_some_and(|at| now < at + Duration::seconds(INTERVAL_SECONDS))
}

/// The answer to a poll of a grant that can't give tokens (yet), by its state (RFC 8628 §3.5).
fn not_ready(
    grant: &DeviceCodeGrant,
    previous: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<TokenError> {
    match grant.state(now) {
        DeviceCodeGrantState::Fulfilled => None,
        // §3.5 slow_down: "a variant of authorization_pending": only while pending.
        DeviceCodeGrantState::Pending if too_soon(previous, now) => Some(polling_error(
            ErrorCode::SlowDown,
            "polled faster than the interval: add 5 seconds to it",
        )),
        // §3.5 authorization_pending: the user has not answered yet.
        DeviceCodeGrantState::Pending => Some(polling_error(
            ErrorCode::AuthorizationPending,
            "the user has not approved the request yet",
        )),
        // §3.5 access_denied: the user said no.
        DeviceCodeGrantState::Rejected => Some(polling_error(
            ErrorCode::AccessDenied,
            "the user denied the request",
        )),
        // §3.5 expired_token: start a new device authorization request.
        DeviceCodeGrantState::Expired => Some(polling_error(
            ErrorCode::ExpiredToken,
            "the device code has expired; start again",
        )),
        // RFC 8628 §3.5 / RFC 6749 §5.2: the device code is single use.
        DeviceCodeGrantState::Exchanged => Some(TokenError::invalid_grant(
            "the device code was already used",
        )),
    }
}

pub async fn exchange(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
) -> Result<TokenResponse, TokenError> {
    // RFC 8628 §3.4: device_code is REQUIRED.
    let device_code = params
        .get("device_code")
        .ok_or_else(|| TokenError::invalid_request("device_code is required"))?;
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let grant = repo
        .device_code_grants()
        .find_by_device_code_hash(&sha256(device_code))
        .await?
        .ok_or_else(|| TokenError::invalid_grant("unknown device code"))?;
    // RFC 8628 §3.4 (RFC 6749 §3.2.1): the client that started the request polls for it; another
    // client's poll is not recorded and changes nothing.
    if grant.client_id != client.client.id {
        return Err(TokenError::invalid_grant(
            "the device code was issued to another client",
        ));
    }
    let previous = repo.device_code_grants().record_poll(grant.id).await?;
    if let Some(error) = not_ready(&grant, previous, now) {
        repo.commit().await?;
        return Err(error);
    }

    // Approved (RFC 8628 §3.3): the tokens are for the user of the approving browser session.
    let browser_session_id = grant.browser_session_id.ok_or_else(|| {
        TokenError::server("approved device code grant without a browser session")
    })?;
    let browser_session = repo
        .browser_sessions()
        .lookup(browser_session_id)
        .await?
        .ok_or_else(|| TokenError::server("the approving browser session is gone"))?;
    let user = repo
        .users()
        .lookup(browser_session.user_id)
        .await?
        .filter(|u| u.is_active())
        .ok_or_else(|| TokenError::invalid_grant("the approving account is no longer active"))?;
    // The poll is recorded; nothing else is written before the homeserver call, with no
    // connection held.
    repo.commit().await?;
    let device_id = scope::granted_device(&grant.scope);
    let approval = Approval {
        browser_session_id,
        code: None,
        // RFC 8628 has no nonce: the device request carries none.
        nonce: None,
    };
    let redemption = Redemption::DeviceCode {
        grant_id: grant.id,
        session: NewOAuth2Session {
            user_id: Some(user.id),
            client_id: client.client.id,
            browser_session_id: Some(browser_session_id),
            scope: &grant.scope,
            device_id: device_id.as_deref(),
            user_agent: grant.user_agent.as_deref(),
        },
    };
    // MSC4341: refresh tokens must be issued (every grant for a user gets one).
    redeem(
        state,
        &client.client,
        &user,
        device_id.as_deref(),
        redemption,
        approval,
    )
    .await
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ulid::Ulid;

    use super::*;

    fn grant(now: DateTime<Utc>) -> DeviceCodeGrant {
        DeviceCodeGrant {
            id: Ulid::from_parts(1, 1),
            client_id: Ulid::from_parts(1, 2),
            scope: "openid".into(),
            device_code_hash: [0; 32],
            user_code: "BCDFGHJK".into(),
            created_at: now,
            expires_at: now + Duration::seconds(600),
            last_polled_at: None,
            browser_session_id: None,
            fulfilled_at: None,
            rejected_at: None,
            session_id: None,
            exchanged_at: None,
            ip_address: None,
            user_agent: None,
        }
    }

    fn error(
        grant: &DeviceCodeGrant,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<&'static str> {
        not_ready(grant, previous, now).map(|e| e.error.as_str())
    }

    #[test]
    fn each_state_gets_its_answer() {
        let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let mut g = grant(t0);
        let later = t0 + Duration::seconds(30);
        assert_eq!(error(&g, None, later), Some("authorization_pending"));
        assert_eq!(
            error(&g, Some(later - Duration::seconds(5)), later),
            Some("authorization_pending"),
            "exactly the interval is fine"
        );
        assert_eq!(
            error(&g, Some(later - Duration::seconds(4)), later),
            Some("slow_down")
        );
        assert_eq!(
            error(&g, None, t0 + Duration::seconds(600)),
            Some("expired_token")
        );
        g.fulfilled_at = Some(later);
        // Approved: a quick poll still gets the tokens.
        assert_eq!(error(&g, Some(later), later), None);
        g.exchanged_at = Some(later);
        assert_eq!(error(&g, None, later), Some("invalid_grant"));
        let mut denied = grant(t0);
        denied.rejected_at = Some(later);
        assert_eq!(error(&denied, None, later), Some("access_denied"));
        assert!(
            not_ready(&denied, None, later).is_some_and(|e| e.status == StatusCode::BAD_REQUEST)
        );
    }
}
