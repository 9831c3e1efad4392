//! `GET|POST /login`: password sign-in.
//!
//! Wrong username and wrong password get the same answer, after the same work (an unknown user is
//! checked against a dummy hash), so the page doesn't tell which usernames exist. Whether an
//! account is locked or deactivated is said only after the right password. A stored hash made
//! by an older scheme is replaced on the way (see [`crate::passwords`]).
//!
//! Rate limits ([`attempt_sign_in`], shared with the legacy Matrix login): attempts per client IP,
//! and failed attempts per account; over either, 429 with `Retry-After` and the password is not
//! checked, so a brute force learns nothing from the refused attempts.

use axum::{
    extract::{Form, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use crate::{
    app::AppState,
    passwords::Verified,
    rate_limit::{self, ClientIp, Limit, RateLimitError},
    storage::{BoxRepository, StorageError, User},
    web::{self, consent, session::BrowserCookie},
};

/// Where the login page is served.
pub const PATH: &str = "/login";

/// The method recorded for a password sign-in.
pub const METHOD_PASSWORD: &str = "password";

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    grant: Option<String>,
    /// A page to return to after signing in, other than a grant (see [`valid_next`]).
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// What the sign-in pages take from the pending authorization request they serve, read once
/// per page (one connection: the grant, then its client).
pub(crate) struct ForGrant {
    /// The client's name, to show "to continue to …".
    pub client_name: Option<String>,
    /// The username its `login_hint` suggests (OIDC Core §3.1.2.1), to pre-fill the form.
    pub login_hint: Option<String>,
    /// The page's CSP: when the consent is remembered, signing in redirects on to the client's
    /// redirect URI, and browsers check a form's redirects against `form-action`.
    pub csp: String,
}

pub(crate) async fn for_grant(state: &AppState, grant: Option<&str>) -> ForGrant {
    let found = async {
        let id = Ulid::from_string(grant?).ok()?;
        let mut repo = state.storage.reader().await.ok()?;
        let grant = repo.authorization_grants().lookup(id).await.ok()??;
        let client = repo.clients().lookup(grant.client_id).await.ok()?;
        Some((grant, client))
    }
    .await;
    let Some((grant, client)) = found else {
        return ForGrant {
            client_name: None,
            login_hint: None,
            csp: web::csp_redirecting_to(None),
        };
    };
    ForGrant {
        client_name: client.as_ref().map(web::client_name),
        login_hint: grant
            .login_hint
            .as_deref()
            .and_then(|hint| username_from_hint(hint, &state.settings.matrix.homeserver)),
        csp: web::csp_redirecting_to(url::Url::parse(&grant.redirect_uri).ok().as_ref()),
    }
}

/// Where to return after signing in when there is no grant: only pages that say they accept it,
/// rebuilt by them from what they understand (the device link page, RFC 8628 §3.3, see
/// [`super::link::return_target`]; the account page, MSC4191, see
/// [`super::account::return_target`]; the confirmation page of a legacy Matrix SSO login, see
/// [`crate::matrix::compat::sso::return_target`]), so `next` is never an open redirect
/// (RFC 9700 §4.11). The registration page accepts the same.
pub(crate) fn valid_next(next: Option<&str>) -> Option<String> {
    next.and_then(|next| {
        super::link::return_target(next)
            .or_else(|| super::account::return_target(next))
            .or_else(|| crate::matrix::compat::sso::return_target(next))
    })
}

/// A page's link to another sign-in page (login ↔ registration), carrying the grant or the
/// page to return to.
pub(crate) fn with_return(path: &str, grant: Option<&str>, next: Option<&str>) -> String {
    match (grant, next) {
        (Some(grant), _) => format!("{path}?grant={grant}"),
        (None, Some(next)) => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next)
                .finish();
            format!("{path}?{query}")
        }
        (None, None) => path.to_owned(),
    }
}

/// A grant ID as it may appear in links: only a ULID passes, so it can't redirect elsewhere.
pub(crate) fn valid_grant(grant: Option<&str>) -> Option<String> {
    grant
        .and_then(|g| Ulid::from_string(g).ok())
        .map(|g| g.to_string())
}

async fn login_page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    grant: Option<&str>,
    next: Option<&str>,
    username: Option<&str>,
    error: Option<&str>,
) -> Response {
    let for_grant = for_grant(state, grant).await;
    web::page_with_csp(
        state,
        status,
        "pages/login.html",
        minijinja::context! {
            client_name => for_grant.client_name,
            csrf => cookie.csrf_token(),
            action => PATH,
            grant => grant,
            next => next,
            username => username.or(for_grant.login_hint.as_deref()).unwrap_or_default(),
            error => error,
            upstream_buttons => crate::upstream::login_buttons(state, grant, next).await,
            register => state
                .settings
                .registration
                .then(|| with_return(super::register::PATH, grant, next)),
            recover => super::recover::enabled(state).then_some(super::recover::PATH),
        },
        &for_grant.csp,
    )
}

/// `GET /login`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(query): Query<LoginQuery>,
) -> Response {
    let cookie = web::load_cookie(&state, jar);
    let grant = valid_grant(query.grant.as_deref());
    let next = valid_next(query.next.as_deref());
    if grant.is_none() && next.is_none() {
        // Nothing to continue to: say who is signed in, if anyone.
        if let Ok(Some((_, user))) = consent::signed_in(&state, &cookie).await {
            let page = web::page(
                &state,
                StatusCode::OK,
                "pages/signed_in.html",
                minijinja::context! {
                    username => user.username,
                },
            );
            return (cookie.into_jar(), page).into_response();
        }
    }
    let page = login_page(
        &state,
        &cookie,
        StatusCode::OK,
        grant.as_deref(),
        next.as_deref(),
        None,
        None,
    )
    .await;
    (cookie.into_jar(), page).into_response()
}

/// A hint is a username, or a Matrix ID of this server (`@alice:example.org`, optionally as
/// `mxid:@alice:example.org`, the form Matrix clients send).
pub fn username_from_hint(hint: &str, server_name: &str) -> Option<String> {
    let hint = hint.strip_prefix("mxid:").unwrap_or(hint);
    let name = match hint.strip_prefix('@') {
        Some(mxid) => {
            let (localpart, server) = mxid.split_once(':')?;
            (server == server_name).then_some(localpart)?
        }
        None => hint,
    };
    crate::domain::username::check(name, server_name)
        .is_ok()
        .then(|| name.to_owned())
}

/// Why a password check refused a sign-in. Shared by the login page and the legacy Matrix
/// login (`m.login.password`), which tell it in their own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Unknown username or wrong password: one answer for both.
    WrongCredentials,
    Locked,
    Deactivated,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Self::WrongCredentials => "Wrong username or password.",
            Self::Locked => "This account is locked. Contact the server's administrators.",
            Self::Deactivated => "This account has been deactivated.",
        }
    }
}

/// A user who gave the right password, with the stronger hash of it to store when theirs was
/// made by an older scheme (see [`crate::passwords::Verified`]).
#[derive(Debug)]
pub(crate) struct PasswordMatch {
    pub(crate) user: User,
    /// `(version, hash, the stored password it replaces)`.
    upgrade: Option<(i32, String, Ulid)>,
}

impl PasswordMatch {
    /// Stores the upgraded hash, if any, in the caller's transaction (the one that opens the
    /// session): it lands with the sign-in or not at all, and the next sign-in tries again.
    pub(crate) async fn store_upgrade(&self, repo: &mut BoxRepository) -> Result<(), StorageError> {
        if let Some((version, hash, replaces)) = &self.upgrade {
            repo.user_passwords()
                .add(self.user.id, hash, *version, Some(*replaces))
                .await?;
        }
        Ok(())
    }
}

/// Checks a username and password: the one credential check of the provider, used by the
/// login page and the legacy Matrix login alike.
///
/// An unknown user (or one without a password) is checked against a dummy hash, so the answer
/// comes after the same work and timing doesn't tell which usernames exist. Whether the
/// account is locked or deactivated is said only after the right password. Nothing is written:
/// the caller stores [`PasswordMatch::store_upgrade`] with the session it opens.
pub(crate) async fn check_password(
    state: &AppState,
    username: &str,
    password: String,
) -> Result<Result<PasswordMatch, Refusal>, PasswordCheckError> {
    let mut repo = state.storage.reader().await?;
    let user = repo.users().find_by_username(username.trim()).await?;
    let stored = match &user {
        Some(user) => repo.user_passwords().active(user.id).await?,
        None => None,
    };
    drop(repo);
    let (Some(user), Some(stored)) = (user, stored) else {
        // The same work as a real check, so timing doesn't reveal unknown usernames.
        let dummy = state.dummy_password_hash().await;
        let _ = state
            .passwords
            .verify(state.passwords.current_version(), &dummy, password)
            .await;
        return Ok(Err(Refusal::WrongCredentials));
    };
    let verified = state
        .passwords
        .verify(stored.version, &stored.hashed_password, password)
        .await?;
    let Verified::Match { upgrade } = verified else {
        return Ok(Err(Refusal::WrongCredentials));
    };
    if user.deactivated_at.is_some() {
        return Ok(Err(Refusal::Deactivated));
    }
    if user.locked_at.is_some() {
        return Ok(Err(Refusal::Locked));
    }
    Ok(Ok(PasswordMatch {
        user,
        upgrade: upgrade.map(|(version, hash)| (version, hash, stored.id)),
    }))
}

/// Why a sign-in attempt got no answer about its password.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// Over a rate limit (attempts from this IP, or failed attempts on this account): the
    /// password was not checked. Try again after `retry_after`.
    #[error("too many sign-in attempts")]
    Limited { retry_after: std::time::Duration },
    /// The check itself failed.
    #[error(transparent)]
    Check(#[from] PasswordCheckError),
}

impl From<StorageError> for AttemptError {
    fn from(e: StorageError) -> Self {
        Self::Check(e.into())
    }
}

impl From<RateLimitError> for AttemptError {
    fn from(e: RateLimitError) -> Self {
        match e {
            RateLimitError::Limited { retry_after } => Self::Limited { retry_after },
            RateLimitError::Storage(e) => Self::Check(e.into()),
        }
    }
}

/// [`check_password`] behind the sign-in rate limits, for the doors where anyone may try a
/// password (the login page, the legacy Matrix login):
///
/// 1. one unit of [`Limit::LoginPerIp`] for the client's address, whatever the outcome;
/// 2. one unit of [`Limit::LoginPerAccount`] for the username, spent before the check (so
///    parallel guesses can't all slip in before the first failure counts) and given back when
///    the password was right: only failed attempts count. An empty bucket refuses the attempt
///    without checking the password, so while it is empty even the right password is refused
///    and a guesser can't tell a right guess from a wrong one.
///
/// The account key is the trimmed username, as [`check_password`] looks it up; unknown
/// usernames have buckets too, so the limits say nothing about which accounts exist.
pub(crate) async fn attempt_sign_in(
    state: &AppState,
    client_ip: &ClientIp,
    username: &str,
    password: String,
) -> Result<Result<PasswordMatch, Refusal>, AttemptError> {
    state.limiter.check_ip(Limit::LoginPerIp, client_ip).await?;
    let account = username.trim();
    state.limiter.check(Limit::LoginPerAccount, account).await?;
    let outcome = check_password(state, username, password).await?;
    if !matches!(outcome, Err(Refusal::WrongCredentials)) {
        // The right password (the account may still be locked): not a failed attempt.
        if let Err(e) = state.limiter.refund(Limit::LoginPerAccount, account).await {
            tracing::warn!(error = %e, "sign-in: can't give back the attempt's rate-limit unit");
        }
    }
    Ok(outcome)
}

/// Checks the credentials (behind the rate limits, see [`attempt_sign_in`]); on success opens a
/// browser session (storing an upgraded hash in the same transaction) and returns its ID.
async fn authenticate(
    state: &AppState,
    client_ip: &ClientIp,
    username: &str,
    password: String,
    user_agent: Option<&str>,
) -> Result<Result<Ulid, Refusal>, AttemptError> {
    let matched = match attempt_sign_in(state, client_ip, username, password).await? {
        Ok(matched) => matched,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut repo = state.storage.begin().await?;
    matched.store_upgrade(&mut repo).await?;
    let session = open_password_session(&mut repo, matched.user.id, user_agent).await?;
    repo.commit().await?;
    Ok(Ok(session))
}

/// Opens a browser session for a user who just gave their password (signing in, or creating the
/// account), recording the sign-in, in the caller's transaction; returns its ID.
pub(crate) async fn open_password_session(
    repo: &mut BoxRepository,
    user_id: Ulid,
    user_agent: Option<&str>,
) -> Result<Ulid, StorageError> {
    let session = repo
        .browser_sessions()
        .add(user_id, user_agent, None)
        .await?;
    repo.browser_sessions()
        .record_authentication(session.id, METHOD_PASSWORD)
        .await?;
    Ok(session.id)
}

/// Why a password could not be checked (not a refusal: the check itself failed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordCheckError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Password(#[from] crate::passwords::PasswordError),
}

/// `POST /login`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let mut cookie = web::load_cookie(&state, jar);
    let grant = valid_grant(form.grant.as_deref());
    let next = valid_next(form.next.as_deref());
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let page = login_page(
            &state,
            &cookie,
            StatusCode::FORBIDDEN,
            grant.as_deref(),
            next.as_deref(),
            Some(&form.username),
            Some(&e.to_string()),
        )
        .await;
        return (cookie.into_jar(), page).into_response();
    }
    let user_agent = web::user_agent(&headers);
    let outcome = authenticate(
        &state,
        &client_ip,
        &form.username,
        form.password,
        user_agent.as_deref(),
    )
    .await;
    let response = match outcome {
        Ok(Ok(session)) => {
            let mut rng = state.storage.entropy().rng.rng();
            let for_grant = grant.as_deref().and_then(|g| Ulid::from_string(g).ok());
            cookie.set_session(Some(session), for_grant, &mut rng);
            match (&grant, &next) {
                (Some(grant), _) => {
                    Redirect::to(&format!("{}/{grant}", consent::PATH)).into_response()
                }
                (None, Some(next)) => Redirect::to(next).into_response(),
                (None, None) => Redirect::to(PATH).into_response(),
            }
        }
        Ok(Err(refusal)) => {
            login_page(
                &state,
                &cookie,
                StatusCode::UNAUTHORIZED,
                grant.as_deref(),
                next.as_deref(),
                Some(&form.username),
                Some(refusal.message()),
            )
            .await
        }
        // RFC 6585 §4: 429 with Retry-After; the form again, saying when to try.
        Err(AttemptError::Limited { retry_after }) => {
            let message = format!(
                "Too many sign-in attempts. Try again {}.",
                rate_limit::wait_in_words(retry_after)
            );
            let mut page = login_page(
                &state,
                &cookie,
                StatusCode::TOO_MANY_REQUESTS,
                grant.as_deref(),
                next.as_deref(),
                Some(&form.username),
                Some(&message),
            )
            .await;
            page.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                rate_limit::retry_after_header(retry_after),
            );
            page
        }
        Err(AttemptError::Check(e)) => {
            tracing::error!(error = %e, "login failed");
            web::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Signing in is not possible right now. Try again in a moment.",
                None,
            )
        }
    };
    (cookie.into_jar(), response).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        let hint = |h| username_from_hint(h, "example.org");
        assert_eq!(hint("alice"), Some("alice".into()));
        assert_eq!(hint("@alice:example.org"), Some("alice".into()));
        assert_eq!(hint("mxid:@alice:example.org"), Some("alice".into()));
        assert_eq!(hint("@alice:elsewhere.org"), None);
        assert_eq!(hint("Not A Name"), None);
        assert_eq!(hint("@:example.org"), None);
    }

    #[test]
    fn return_targets_and_links() {
        let id = Ulid::from_parts(1, 2);
        let page = format!("/complete-compat-sso/{id}");
        assert_eq!(valid_next(Some("/link")).as_deref(), Some("/link"));
        assert_eq!(valid_next(Some(&page)).as_deref(), Some(page.as_str()));
        for refused in [
            "https://evil.example/",
            "//evil.example",
            "/consent/x",
            "/login",
        ] {
            assert_eq!(valid_next(Some(refused)), None, "{refused}");
        }
        assert_eq!(valid_next(None), None);
        assert_eq!(
            with_return("/register", Some("G"), Some("/link")),
            "/register?grant=G"
        );
        assert_eq!(
            with_return("/register", None, Some(&page)),
            format!("/register?next=%2Fcomplete-compat-sso%2F{id}")
        );
        assert_eq!(with_return("/login", None, None), "/login");
    }
}
