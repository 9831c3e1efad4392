//! The verification pages of the device authorization grant (RFC 8628 §3.3): the user types the
//! code a device shows (or follows its `verification_uri_complete`), sees which application
//! asks for what, and allows or denies it.
//!
//! - `GET /link[?code=…]`: the form to enter the user code, pre-filled from `code` (RFC 8628
//!   §3.3.1: the user still confirms it). Signed-out users go to the login page first and come
//!   back here (see [`return_target`]).
//! - `POST /link` (CSRF): the approval page for a pending request with that code: the client's
//!   name, the user code to compare with the device's (§5.4 remote phishing), the scopes in
//!   words. Codes are compared normalised (§6.1: case-insensitive, dashes and spaces ignored).
//! - `POST /link/approve` (CSRF): allow → the grant is fulfilled; deny → rejected. The device
//!   learns the answer at its next poll.
//!
//! Every device request is asked about: a remembered consent does not skip the question (the
//! request comes from a device the user must recognise, §5.4), and the answer is not remembered
//! as a consent for other flows.

use axum::{
    extract::{Form, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use crate::{
    app::AppState,
    domain::{scope, token::normalize_user_code},
    endpoints,
    storage::{BrowserSession, Client, DeviceCodeGrant, DeviceCodeGrantState, StorageError, User},
    web::{
        self,
        consent::{describe_scopes, signed_in},
        session::BrowserCookie,
    },
};

/// Where the code entry page is served (`verification_uri`, RFC 8628 §3.2).
pub const PATH: &str = endpoints::LINK;

/// The longest normalised code carried back through the login page: ours have 8 characters, so
/// this only keeps arbitrary input out of links.
const MAX_CARRIED_CODE: usize = 16;

/// A normalised user code as people read it: `XXXX-XXXX` (RFC 8628 §6.1); other lengths as
/// they are.
pub fn display_code(normalized: &str) -> String {
    if normalized.len() == 8 && normalized.is_ascii() {
        format!("{}-{}", &normalized[..4], &normalized[4..])
    } else {
        normalized.to_owned()
    }
}

/// The link page's local path, with a user code when there is one.
fn link_path(code: Option<&str>) -> String {
    let code = code
        .map(normalize_user_code)
        .filter(|c| !c.is_empty() && c.len() <= MAX_CARRIED_CODE);
    match code {
        // Normalised: only ASCII letters and digits, and the dash, so nothing to escape.
        Some(code) => format!("{PATH}?code={}", display_code(&code)),
        None => PATH.to_owned(),
    }
}

/// Where the login page may send the browser back to, from its `next` parameter: only this page,
/// `/link` or `/link?code=…`, and the result is rebuilt from the normalised code, never passed
/// through, so `next` can't redirect anywhere else (no open redirect, RFC 9700 §4.11).
pub fn return_target(next: &str) -> Option<String> {
    let query = match next.strip_prefix(PATH)? {
        "" => "",
        rest => rest.strip_prefix('?')?,
    };
    let code = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned());
    Some(link_path(code.as_deref()))
}

/// The login page, to come back to the link page (with the code) afterwards.
fn sign_in_first(code: Option<&str>) -> Response {
    let next: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", &link_path(code))
        .finish();
    Redirect::to(&format!("{}?{next}", web::login::PATH)).into_response()
}

/// The page for a storage failure of this flow.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    web::unavailable(state, "device link", error)
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
    web::page(
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
    web::error_page(
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
    web::page(
        state,
        StatusCode::OK,
        "pages/link_approve.html",
        minijinja::context! {
            client_name => web::client_name(client),
            client_uri => web::client_uri(client),
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
    let cookie = web::load_cookie(&state, jar);
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
        Ok(None) => sign_in_first(query.code.as_deref()),
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
    jar: PrivateCookieJar,
    Form(form): Form<LinkForm>,
) -> Response {
    let cookie = web::load_cookie(&state, jar);
    let response = entered(&state, &cookie, &form).await;
    (cookie.into_jar(), response).into_response()
}

async fn entered(state: &AppState, cookie: &BrowserCookie, form: &LinkForm) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return web::csrf_refused(state, &e);
    }
    let user = match signed_in(state, cookie).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return sign_in_first(Some(&form.code)),
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
    let cookie = web::load_cookie(&state, jar);
    let response = answered(&state, &cookie, &form).await;
    (cookie.into_jar(), response).into_response()
}

async fn answered(state: &AppState, cookie: &BrowserCookie, form: &ApproveForm) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return web::csrf_refused(state, &e);
    }
    let (session, user) = match signed_in(state, cookie).await {
        Ok(Some(found)) => found,
        Ok(None) => return sign_in_first(None),
        Err(e) => return unavailable(state, &e),
    };
    let allow = match form.action.as_str() {
        "allow" => true,
        "deny" => false,
        _ => return web::invalid_answer(state),
    };
    let result = decide(state, &form.grant, &session, &user, allow).await;
    match result {
        Ok(Decided::NotAllowed) => web::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::FORBIDDEN,
            "This account can't approve this request",
            "The device asked to administer the Matrix server, which this account may not do. \
             The request was denied.",
            None,
        ),
        Ok(Decided::Answered(client)) => web::page(
            state,
            StatusCode::OK,
            "pages/link.html",
            minijinja::context! {
                username => user.username,
                client_name => web::client_name(&client),
                outcome => if allow { "approved" } else { "denied" },
            },
        ),
        Ok(Decided::Closed(grant_state)) => closed(state, grant_state),
        Ok(Decided::Unknown) => web::error_page(
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

    #[test]
    fn the_return_target_is_only_ever_the_link_page() {
        assert_eq!(return_target("/link").as_deref(), Some("/link"));
        assert_eq!(
            return_target("/link?code=bcdf-ghjk").as_deref(),
            Some("/link?code=BCDF-GHJK")
        );
        assert_eq!(
            return_target("/link?x=1&code=bc%20df%22ghjk").as_deref(),
            Some("/link?code=BCDF-GHJK")
        );
        // Anything else in the query is dropped; the code is rebuilt from letters and digits.
        assert_eq!(
            return_target("/link?code=%2F%2Fevil.example").as_deref(),
            Some("/link?code=EVILEXAMPLE")
        );
        assert_eq!(return_target("/link?code=").as_deref(), Some("/link"));
        assert_eq!(
            return_target(&format!("/link?code={}", "B".repeat(40))).as_deref(),
            Some("/link")
        );
        for refused in [
            "",
            "/",
            "/links",
            "/link/approve",
            "/link#x",
            "//evil.example/link",
            "https://evil.example/link",
            "/consent/01H",
            "link",
            "/LINK",
        ] {
            assert_eq!(return_target(refused), None, "{refused}");
        }
    }
}
