//! `m.login.sso` through the provider (client-server API §"Client login via SSO"; MSC3824).
//!
//! 1. The client sends the browser to `GET /_matrix/client/v3/login/sso/redirect?redirectUrl=…`
//!    (on the homeserver's domain; its reverse proxy sends it here). A compat SSO login is
//!    stored with the `redirectUrl`, and the browser goes on to the provider's confirmation page
//!    `/complete-compat-sso/{id}` (absolute, on the provider's public base).
//! 2. The page asks who is not signed in to sign in (or register, for `action=register`) and
//!    come back, then asks the user to confirm: "Continue to `<host>`" (§"Security
//!    considerations" of SSO login: a link someone else made would send the user's login to
//!    them, so the user must see where it goes).
//! 3. `POST` (CSRF-protected): a new device upserted on the homeserver (no transaction open),
//!    then in one transaction a compat session holding it and the login fulfilled; then the
//!    browser goes to the
//!    `redirectUrl` with `loginToken=…` added to its query.
//! 4. The client exchanges the `loginToken` with `m.login.token` (see [`super::login`]).
//!
//! # The login token, never stored in plain text
//!
//! The repository stores a login's token *hash* when the login is created, and the plain token
//! must reach the client only at step 3. Nothing in the database may hold the plain token, and
//! the browser can't carry it either (step 1 happens on the homeserver's domain, the later
//! steps on the provider's). So a login is two rows:
//!
//! - the *request* (step 1): the `redirectUrl` and the hash of a random token that is never
//!   revealed, so it can never be exchanged. Its ID is the page's; its `created_at` bounds the
//!   page's lifetime ([`SSO_LOGIN_LIFETIME_MINUTES`]); fulfilling it (compare-and-set) is what
//!   makes a second completion fail.
//! - the *issued token* (step 3): a fresh random token, whose hash is stored in a second row
//!   with the same `redirectUrl`, fulfilled with the same session in the same transaction. This
//!   is the row `m.login.token` finds by hash and exchanges once.
//!
//! No schema change, no plain token anywhere but in the redirect to the client.

use axum::{
    extract::{Form, Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use chrono::Duration;
use serde::Deserialize;
use ulid::Ulid;
use url::Url;

use super::{generate_device_id, login::LOGIN_TOKEN_LEN, MatrixError};
use crate::domain::after_sign_in::{self, AfterSignIn};
use crate::http::kit;
use crate::{
    core::{
        matrix::provisioning::{ensure_device, EnsureDeviceError},
        sessions::{abandon_device, start_compat_session},
    },
    crypto::sha256,
    domain::token::random_code,
    endpoints,
    http::{
        kit::{redirect_to, session::BrowserCookie, signed_in},
        AppState,
    },
    storage::{CompatSsoLogin, StorageError, User},
};

/// How long the user has, from the redirect to the provider, to sign in and confirm.
pub const SSO_LOGIN_LIFETIME_MINUTES: i64 = 10;

/// The longest `redirectUrl` accepted.
pub const MAX_REDIRECT_URL_LEN: usize = 2048;

/// URL schemes a browser must never be sent to with a login token.
const REFUSED_SCHEMES: [&str; 6] = ["javascript", "data", "vbscript", "file", "blob", "about"];

/// The confirmation page of a login.
fn page_path(id: Ulid) -> String {
    format!("{}/{id}", endpoints::COMPLETE_COMPAT_SSO)
}

/// What the redirect asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoRedirect {
    pub redirect_url: Url,
    /// `action=register` (MSC3824; unstable `org.matrix.msc3824.action`): the user wants a new
    /// account, so the registration page comes first.
    pub register: bool,
}

/// Parses the redirect's query: `redirectUrl` is required (client-server API §"GET
/// /login/sso/redirect": 400 `M_MISSING_PARAM` without it) and must be an absolute URL the
/// browser may be sent to.
pub fn parse_redirect(query: Option<&str>) -> Result<SsoRedirect, MatrixError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let raw = get("redirectUrl")
        .filter(|v| !v.is_empty())
        .ok_or(MatrixError::MissingParam("the `redirectUrl` is missing"))?;
    const INVALID: MatrixError =
        MatrixError::InvalidParam("the `redirectUrl` must be an absolute URL of the client");
    if raw.len() > MAX_REDIRECT_URL_LEN {
        return Err(INVALID);
    }
    let redirect_url = Url::parse(raw).map_err(|_| INVALID)?;
    if redirect_url.cannot_be_a_base() || REFUSED_SCHEMES.contains(&redirect_url.scheme()) {
        return Err(INVALID);
    }
    let action = get("action").or_else(|| get("org.matrix.msc3824.action"));
    Ok(SsoRedirect {
        redirect_url,
        register: action == Some("register"),
    })
}

/// `GET /login/sso/redirect[/{idpId}]`: stores the login, sends the browser to the provider's
/// confirmation page. There is one identity provider (this one), so `idpId` is ignored.
pub async fn redirect(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match start(&state, query.as_deref()).await {
        Ok(page) => redirect_to(&page),
        Err(error) => error.into_response(),
    }
}

async fn start(state: &AppState, query: Option<&str>) -> Result<Url, MatrixError> {
    let request = parse_redirect(query)?;
    // Never revealed: this row can't be exchanged (see the module docs).
    let hidden = random_code(&mut state.storage.entropy().rng.rng(), LOGIN_TOKEN_LEN);
    let mut repo = state.storage.begin().await?;
    let login = repo
        .compat_sso_logins()
        .add(request.redirect_url.as_str(), &sha256(&hidden))
        .await?;
    repo.commit().await?;
    let mut page = endpoints::url(&state.settings.public_base, &page_path(login.id));
    if request.register {
        page.query_pairs_mut().append_pair("action", "register");
    }
    Ok(page)
}

/// Why a login can't be completed any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Unknown,
    Expired,
    Completed,
}

/// The error page of a login that can't be completed.
fn closed(state: &AppState, why: Closed) -> Response {
    let (status, title, detail) = match why {
        Closed::Unknown => (
            StatusCode::NOT_FOUND,
            "Unknown sign-in request",
            "There is no such sign-in request. Go back to the application and start signing in again.",
        ),
        Closed::Expired => (
            StatusCode::BAD_REQUEST,
            "This sign-in request has expired",
            "Sign-in requests are valid for 10 minutes. Go back to the application and start signing in again.",
        ),
        Closed::Completed => (
            StatusCode::BAD_REQUEST,
            "This sign-in request was already completed",
            "The application already got its answer. Go back to it; if it still asks, start signing in again.",
        ),
    };
    kit::error_page(
        &state.templates,
        &state.chrome(),
        status,
        title,
        detail,
        None,
    )
}

/// The page for a storage failure of this flow.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    kit::unavailable(state, "legacy SSO login", error)
}

/// The login of this page's ID while it may still be completed.
fn still_open(state: &AppState, login: Option<CompatSsoLogin>) -> Result<CompatSsoLogin, Closed> {
    let login = login.ok_or(Closed::Unknown)?;
    if login.fulfilled_at.is_some() {
        return Err(Closed::Completed);
    }
    let now = state.storage.entropy().clock.now();
    if login.created_at + Duration::minutes(SSO_LOGIN_LIFETIME_MINUTES) < now {
        return Err(Closed::Expired);
    }
    Ok(login)
}

async fn lookup(state: &AppState, id: Ulid) -> Result<Option<CompatSsoLogin>, StorageError> {
    state
        .storage
        .reader()
        .await?
        .compat_sso_logins()
        .lookup(id)
        .await
}

/// Where the redirect goes, as the user reads it: its host (and port), or for an app's own
/// scheme (`im.example.app:/sso`), the scheme.
pub fn display_target(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => url.scheme().to_owned(),
    }
}

fn confirm_page(
    state: &AppState,
    cookie: &BrowserCookie,
    login: &CompatSsoLogin,
    user: &User,
) -> Response {
    let Ok(target) = Url::parse(&login.redirect_uri) else {
        return closed(state, Closed::Unknown);
    };
    let path = page_path(login.id);
    kit::page_with_csp(
        state,
        StatusCode::OK,
        "pages/compat_sso.html",
        minijinja::context! {
            target => display_target(&target),
            username => user.username,
            csrf => cookie.csrf_token(),
            action => path,
            switch_user => after_sign_in::sign_in_link(
                endpoints::LOGIN,
                Some(&AfterSignIn::CompatSso(login.id)),
            ),
        },
        &kit::csp_redirecting_to(Some(&target)),
    )
}

/// `GET /complete-compat-sso/{id}`: sign-in first when needed, then the confirmation.
pub async fn page(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let register = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "action" && v == "register");
    let response = show(&state, &cookie, &id, register).await;
    (cookie.into_jar(), response).into_response()
}

async fn show(state: &AppState, cookie: &BrowserCookie, id: &str, register: bool) -> Response {
    let Ok(id) = Ulid::from_string(id) else {
        return closed(state, Closed::Unknown);
    };
    let login = match lookup(state, id).await {
        Ok(found) => match still_open(state, found) {
            Ok(login) => login,
            Err(why) => return closed(state, why),
        },
        Err(e) => return unavailable(state, &e),
    };
    match signed_in(state, cookie).await {
        Ok(Some((_, user))) => confirm_page(state, cookie, &login, &user),
        Ok(None) => kit::sign_in_first(state, &AfterSignIn::CompatSso(login.id), register),
        Err(e) => unavailable(state, &e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CompleteForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /complete-compat-sso/{id}`: the user confirmed.
pub async fn complete(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CompleteForm>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let response = confirmed(&state, &cookie, &headers, &id, &form).await;
    (cookie.into_jar(), response).into_response()
}

async fn confirmed(
    state: &AppState,
    cookie: &BrowserCookie,
    headers: &HeaderMap,
    id: &str,
    form: &CompleteForm,
) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return kit::csrf_refused(state, &e);
    }
    let Ok(id) = Ulid::from_string(id) else {
        return closed(state, Closed::Unknown);
    };
    let user = match signed_in(state, cookie).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return kit::sign_in_first(state, &AfterSignIn::CompatSso(id), false),
        Err(e) => return unavailable(state, &e),
    };
    let user_agent = kit::user_agent(headers);
    match fulfil(state, id, &user, user_agent.as_deref()).await {
        Ok(Ok((mut target, token))) => {
            // §"Client login via SSO": the client's URL, its query kept, with `loginToken`.
            target.query_pairs_mut().append_pair("loginToken", &token);
            redirect_to(&target)
        }
        Ok(Err(why)) => closed(state, why),
        Err(EnsureDeviceError::Homeserver(e)) => {
            tracing::warn!(error = %e, "legacy SSO login: the homeserver did not take the device; nothing was stored");
            kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "The homeserver can't be reached",
                "Your sign-in could not be completed because the homeserver is not answering. Try again in a moment.",
                None,
            )
        }
        Err(EnsureDeviceError::Storage(e)) => unavailable(state, &e),
    }
}

/// Completes a login for `user` (see the module docs): the device upserted on the homeserver
/// first, with no transaction open or connection held (no transaction across a call to another
/// server); then, in one transaction, a compat session holding that device, the request
/// fulfilled (compare-and-set: a second completion fails), the issued token's row fulfilled
/// with the same session. Returns the client's URL and the plain login token.
async fn fulfil(
    state: &AppState,
    id: Ulid,
    user: &User,
    user_agent: Option<&str>,
) -> Result<Result<(Url, String), Closed>, EnsureDeviceError> {
    let found = state
        .storage
        .reader()
        .await?
        .compat_sso_logins()
        .lookup(id)
        .await?;
    let request = match still_open(state, found) {
        Ok(login) => login,
        Err(why) => return Ok(Err(why)),
    };
    let Ok(target) = Url::parse(&request.redirect_uri) else {
        return Ok(Err(Closed::Unknown));
    };
    let device_id = generate_device_id(&mut state.storage.entropy().rng.rng());
    // The device must exist before the client uses its token; if the homeserver doesn't take
    // it, nothing was stored and the user may try again.
    ensure_device(state, user, &device_id, None).await?;

    let stored = store_login(state, &request, user, &device_id, user_agent).await;
    if !matches!(stored, Ok(Some(_))) {
        // Completed meanwhile by another request, or the database failed: nothing of this
        // one is kept, and the device just made is given up (the one rule of every compat
        // login, [`abandon_device`]).
        abandon_device(state, user.id, &device_id).await;
    }
    match stored? {
        Some(token) => Ok(Ok((target, token))),
        None => Ok(Err(Closed::Completed)),
    }
}

/// The transaction of [`fulfil`], once the homeserver has `device_id`: a compat session
/// holding it, the request fulfilled (compare-and-set), the issued token's row fulfilled with
/// the same session. The plain login token; `None` when another request completed the login
/// first (then nothing was stored).
async fn store_login(
    state: &AppState,
    request: &CompatSsoLogin,
    user: &User,
    device_id: &str,
    user_agent: Option<&str>,
) -> Result<Option<String>, StorageError> {
    let mut rng = state.storage.entropy().rng.rng();
    let mut repo = state.storage.begin().await?;
    let now = state.storage.entropy().clock.now();
    let (session, claimed) =
        start_compat_session(&mut repo, user.id, device_id, None, false, user_agent, now).await?;
    if !repo
        .compat_sso_logins()
        .fulfill(request.id, session.id)
        .await?
    {
        return Ok(None);
    }
    let token = random_code(&mut rng, LOGIN_TOKEN_LEN);
    let issued = repo
        .compat_sso_logins()
        .add(&request.redirect_uri, &sha256(&token))
        .await?;
    repo.compat_sso_logins()
        .fulfill(issued.id, session.id)
        .await?;
    repo.commit().await?;
    claimed.run(state).await;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(query: &str) -> &'static str {
        parse_redirect(Some(query)).unwrap_err().errcode()
    }

    #[test]
    fn redirect_queries() {
        let parsed =
            parse_redirect(Some("redirectUrl=https%3A%2F%2Fapp.example%2Fsso%3Fx%3D1")).unwrap();
        assert_eq!(parsed.redirect_url.as_str(), "https://app.example/sso?x=1");
        assert!(!parsed.register);
        let parsed =
            parse_redirect(Some("redirectUrl=im.example.app%3A%2Fsso&action=register")).unwrap();
        assert_eq!(parsed.redirect_url.as_str(), "im.example.app:/sso");
        assert!(parsed.register);
        assert!(
            parse_redirect(Some(
                "redirectUrl=https%3A%2F%2Fa.example&org.matrix.msc3824.action=register"
            ))
            .unwrap()
            .register
        );
        assert!(
            !parse_redirect(Some("redirectUrl=https%3A%2F%2Fa.example&action=login"))
                .unwrap()
                .register
        );
        assert_eq!(
            parse_redirect(None).unwrap_err().errcode(),
            "M_MISSING_PARAM"
        );
        assert_eq!(code("action=login"), "M_MISSING_PARAM");
        assert_eq!(code("redirectUrl="), "M_MISSING_PARAM");
        for bad in [
            "redirectUrl=%2Frelative",
            "redirectUrl=javascript%3Aalert(1)",
            "redirectUrl=data%3Atext%2Fhtml%2Cx",
            "redirectUrl=mailto%3Aa%40example.org",
            "redirectUrl=not%20a%20url",
        ] {
            assert_eq!(code(bad), "M_INVALID_PARAM", "{bad}");
        }
        let long = format!("redirectUrl=https://a.example/{}", "x".repeat(2100));
        assert_eq!(code(&long), "M_INVALID_PARAM");
    }

    #[test]
    fn the_confirmation_page_renders_and_escapes() {
        let html = crate::core::templates::Templates::new()
            .render(
                "pages/compat_sso.html",
                minijinja::context! {
                    site_name => "example.org",
                    stylesheet => "/s.css",
                    target => "app.example",
                    username => "<b>alice</b>",
                    csrf => "TOKEN",
                    action => "/complete-compat-sso/01H",
                    switch_user => "/login?next=%2Fcomplete-compat-sso%2F01H",
                },
            )
            .unwrap();
        assert!(html.contains("Continue to app.example?"), "{html}");
        assert!(html.contains(r#"name="csrf" value="TOKEN""#), "{html}");
        assert!(html.contains("&lt;b&gt;alice&lt;&#x2f;b&gt;"), "{html}");
        assert!(!html.contains("<b>alice"), "{html}");
    }

    #[test]
    fn targets_as_shown_and_in_the_csp() {
        let url = |s| Url::parse(s).unwrap();
        assert_eq!(
            display_target(&url("https://app.example/sso")),
            "app.example"
        );
        assert_eq!(
            display_target(&url("http://127.0.0.1:8080/cb")),
            "127.0.0.1:8080"
        );
        assert_eq!(
            display_target(&url("im.example.app:/sso")),
            "im.example.app"
        );
        assert_eq!(
            kit::form_action(&url("https://app.example/sso?x=1")),
            "'self' https://app.example"
        );
        assert_eq!(
            kit::form_action(&url("http://127.0.0.1:8080/cb")),
            "'self' http://127.0.0.1:8080"
        );
        assert_eq!(
            kit::form_action(&url("im.example.app:/sso")),
            "'self' im.example.app:"
        );
    }
}
