//! The verification pages of the device authorization grant (RFC 8628 §3.3): the user types the
//! code a device shows (or follows its `verification_uri_complete`), sees which application
//! asks for what, and allows or denies it.
//!
//! - `GET /link[?code=…]`: the form to enter the user code, pre-filled from `code` (RFC 8628
//!   §3.3.1: the user still confirms it). Signed-out users go to the login page first and come
//!   back here (the typed continuation, [`AfterSignIn::DeviceLink`]).
//! - `POST /link` (CSRF): the approval page for a pending request with that code: the client's
//!   name, the user code to compare with the device's (§5.4 remote phishing), the scopes in
//!   words. Codes are compared normalised (§6.1: case-insensitive, dashes and spaces ignored).
//!   Guessing is bounded (RFC 8628 §5.1): each code typed spends one unit per client IP
//!   ([`Limit::UserCodePerIp`]) and per browser session ([`Limit::UserCodePerSession`]);
//!   over either, a 429 page says when to try again, with `Retry-After`.
//! - `POST /link/approve` (CSRF): allow → the grant is fulfilled; deny → rejected. The device
//!   learns the answer at its next poll.
//!
//! Every device request is asked about: a remembered consent does not skip the question (the
//! request comes from a device the user must recognise, §5.4), and the answer is not remembered
//! as a consent for other flows.

use axum::{
    extract::{Form, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use crate::core::{
    clients,
    rate_limit::{self, ClientIp, Limit, RateLimitError},
};
use crate::domain::after_sign_in::{display_code, AfterSignIn, MAX_CARRIED_CODE};
use crate::http::kit;
use crate::{
    domain::{
        scope::{self, describe_scopes},
        token::normalize_user_code,
    },
    endpoints,
    http::{
        kit::{session::BrowserCookie, signed_in},
        AppState,
    },
    storage::{BrowserSession, Client, DeviceCodeGrant, DeviceCodeGrantState, StorageError, User},
};

/// Where the code entry page is served (`verification_uri`, RFC 8628 §3.2).
pub const PATH: &str = endpoints::LINK;

/// The login page, to come back to the link page (with the code) afterwards.
fn sign_in_first(state: &AppState, code: Option<&str>) -> Response {
    let after = AfterSignIn::DeviceLink {
        code: code.map(str::to_owned),
    };
    kit::sign_in_first(state, &after, false)
}

/// The page for a storage failure of this flow.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    kit::unavailable(state, "device link", error)
}

/// The code entry form, with an error when the last code was not usable.
fn entry_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    status: StatusCode,
    code: &str,
    error: Option<&str>,
) -> Response {
    kit::page(
        state,
        status,
        "pages/link.html",
        minijinja::context! {
            username => user.username,
            csrf => cookie.csrf_token(),
            action => PATH,
            code => code,
            error => error,
        },
    )
}

/// A request that can't be answered any more, said plainly.
fn closed(state: &AppState, grant_state: DeviceCodeGrantState) -> Response {
    let (title, detail) = match grant_state {
        DeviceCodeGrantState::Expired => (
            "This code has expired",
            "Codes are valid for 10 minutes. Start again on your device to get a new code.",
        ),
        DeviceCodeGrantState::Rejected => (
            "This request was denied",
            "Access was refused for this code. Start again on your device if that was a mistake.",
        ),
        DeviceCodeGrantState::Fulfilled | DeviceCodeGrantState::Exchanged => (
            "This code was already used",
            "The device already got its answer. Start again on your device if it still asks.",
        ),
        // Not reached: pending requests are not closed.
        DeviceCodeGrantState::Pending => (
            "Please try again",
            "The request changed while you were answering. Enter the code again.",
        ),
    };
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::BAD_REQUEST,
        title,
        detail,
        None,
    )
}

/// The grant with this user code, and its client.
async fn find(
    state: &AppState,
    code: &str,
) -> Result<Option<(DeviceCodeGrant, Client)>, StorageError> {
    let mut repo = state.storage.reader().await?;
    let Some(grant) = repo.device_code_grants().find_by_user_code(code).await? else {
        return Ok(None);
    };
    Ok(repo
        .clients()
        .lookup(grant.client_id)
        .await?
        .map(|client| (grant, client)))
}

fn approval_page(
    state: &AppState,
    cookie: &BrowserCookie,
    grant: &DeviceCodeGrant,
    client: &Client,
    user: &User,
) -> Response {
    kit::page(
        state,
        StatusCode::OK,
        "pages/link_approve.html",
        minijinja::context! {
            client_name => clients::client_name(client),
            client_uri => clients::client_uri(client),
            user_code => display_code(&grant.user_code),
            username => user.username,
            scopes => describe_scopes(&grant.scope),
            csrf => cookie.csrf_token(),
            grant => grant.id.to_string(),
            action => endpoints::LINK_APPROVE,
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    code: Option<String>,
}

/// `GET /link`: the code entry form (RFC 8628 §3.3), pre-filled from `?code=` (§3.3.1).
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(query): Query<LinkQuery>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let response = match signed_in(&state, &cookie).await {
        Ok(Some((_, user))) => {
            let code = query
                .code
                .as_deref()
                .map(normalize_user_code)
                .filter(|c| c.len() <= MAX_CARRIED_CODE)
                .map(|c| display_code(&c))
                .unwrap_or_default();
            entry_page(&state, &cookie, &user, StatusCode::OK, &code, None)
        }
        Ok(None) => sign_in_first(&state, query.code.as_deref()),
        Err(e) => unavailable(&state, &e),
    };
    (cookie.into_jar(), response).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// `POST /link`: the approval page for the code's pending request.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    Form(form): Form<LinkForm>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let response = entered(&state, &client_ip, &cookie, &form).await;
    (cookie.into_jar(), response).into_response()
}

/// Spends one unit of each user-code limit (RFC 8628 §5.1); the page to answer when one is
/// empty.
async fn over_guess_limit(
    state: &AppState,
    client_ip: &ClientIp,
    session: &BrowserSession,
) -> Option<Response> {
    let mut checked = state
        .limiter
        .check_ip(Limit::UserCodePerIp, client_ip)
        .await;
    if checked.is_ok() {
        checked = state
            .limiter
            .check(Limit::UserCodePerSession, &session.id.to_string())
            .await;
    }
    match checked {
        Ok(()) => None,
        Err(RateLimitError::Limited { retry_after }) => {
            let page = kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::TOO_MANY_REQUESTS,
                "Too many codes",
                &format!(
                    "Too many codes were entered. Try again {}.",
                    rate_limit::wait_in_words(retry_after)
                ),
                None,
            );
            Some(kit::with_retry_after(page, retry_after))
        }
        Err(RateLimitError::Storage(e)) => Some(unavailable(state, &e)),
    }
}

async fn entered(
    state: &AppState,
    client_ip: &ClientIp,
    cookie: &BrowserCookie,
    form: &LinkForm,
) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return kit::csrf_refused(state, &e);
    }
    let user = match signed_in(state, cookie).await {
        Ok(Some((session, user))) => {
            if let Some(page) = over_guess_limit(state, client_ip, &session).await {
                return page;
            }
            user
        }
        Ok(None) => return sign_in_first(state, Some(&form.code)),
        Err(e) => return unavailable(state, &e),
    };
    // RFC 8628 §6.1: case-insensitive, without the dashes and spaces it is shown with.
    let code = normalize_user_code(&form.code);
    if code.is_empty() {
        return entry_page(
            state,
            cookie,
            &user,
            StatusCode::BAD_REQUEST,
            "",
            Some("Enter the code your device shows."),
        );
    }
    let found = match find(state, &code).await {
        Ok(found) => found,
        Err(e) => return unavailable(state, &e),
    };
    let Some((grant, client)) = found else {
        return entry_page(
            state,
            cookie,
            &user,
            StatusCode::NOT_FOUND,
            &form.code,
            Some("No request has this code. Check the code on your device and enter it again."),
        );
    };
    let now = state.storage.entropy().clock.now();
    match grant.state(now) {
        DeviceCodeGrantState::Pending => approval_page(state, cookie, &grant, &client, &user),
        other => closed(state, other),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grant: String,
    #[serde(default)]
    action: String,
}

/// `POST /link/approve`: the user's answer (RFC 8628 §3.3).
pub async fn approve(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Form(form): Form<ApproveForm>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let response = answered(&state, &cookie, &form).await;
    (cookie.into_jar(), response).into_response()
}

async fn answered(state: &AppState, cookie: &BrowserCookie, form: &ApproveForm) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return kit::csrf_refused(state, &e);
    }
    let (session, user) = match signed_in(state, cookie).await {
        Ok(Some(found)) => found,
        Ok(None) => return sign_in_first(state, None),
        Err(e) => return unavailable(state, &e),
    };
    let allow = match form.action.as_str() {
        "allow" => true,
        "deny" => false,
        _ => return kit::invalid_answer(state),
    };
    let result = decide(state, &form.grant, &session, &user, allow).await;
    match result {
        Ok(Decided::NotAllowed) => kit::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::FORBIDDEN,
            "This account can't approve this request",
            "The device asked to administer the Matrix server, which this account may not do. \
             The request was denied.",
            None,
        ),
        Ok(Decided::Answered(client)) => kit::page(
            state,
            StatusCode::OK,
            "pages/link.html",
            minijinja::context! {
                username => user.username,
                client_name => clients::client_name(&client),
                outcome => if allow { "approved" } else { "denied" },
            },
        ),
        Ok(Decided::Closed(grant_state)) => closed(state, grant_state),
        Ok(Decided::Unknown) => kit::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::NOT_FOUND,
            "Unknown request",
            "There is no such device request. Enter the code your device shows again.",
            None,
        ),
        Err(e) => unavailable(state, &e),
    }
}

/// What became of an answer.
enum Decided {
    /// Recorded; the client it was about.
    Answered(Client),
    /// The request was not pending any more (expired, already answered).
    Closed(DeviceCodeGrantState),
    /// No such request.
    Unknown,
    /// The request asks for more than the user may have; it was denied.
    NotAllowed,
}

/// Records the answer to a pending request, in one transaction.
async fn decide(
    state: &AppState,
    grant_id: &str,
    session: &BrowserSession,
    user: &User,
    allow: bool,
) -> Result<Decided, StorageError> {
    let Ok(id) = Ulid::from_string(grant_id) else {
        return Ok(Decided::Unknown);
    };
    let mut repo = state.storage.begin().await?;
    let Some(grant) = repo.device_code_grants().lookup(id).await? else {
        return Ok(Decided::Unknown);
    };
    let Some(client) = repo.clients().lookup(grant.client_id).await? else {
        return Ok(Decided::Unknown);
    };
    // `urn:synapse:admin:*` (MSC2967, the homeserver contract) and `urn:mas:admin` only for
    // users allowed to administer the server: approving such a request denies it instead.
    let may_have = user.can_request_admin || !scope::asks_for_admin(&grant.scope);
    if allow && !may_have {
        if repo.device_code_grants().reject(id, session.id).await? {
            repo.commit().await?;
        }
        return Ok(Decided::NotAllowed);
    }
    // RFC 8628 §3.3: approve → the device's next poll gets tokens; deny → `access_denied` (§3.5).
    // Both are compare-and-set: only a pending request (approval: one not expired either).
    let won = if allow {
        repo.device_code_grants().fulfill(id, session.id).await?
    } else {
        repo.device_code_grants().reject(id, session.id).await?
    };
    if !won {
        let now = state.storage.entropy().clock.now();
        return Ok(Decided::Closed(grant.state(now)));
    }
    repo.commit().await?;
    Ok(Decided::Answered(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_shown_in_two_groups() {
        assert_eq!(display_code("BCDFGHJK"), "BCDF-GHJK");
        assert_eq!(display_code("BCD"), "BCD");
        assert_eq!(display_code(""), "");
    }
}
