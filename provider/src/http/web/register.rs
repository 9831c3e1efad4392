//! `GET|POST /register`: self-service account creation (Initiating User Registration via OIDC
//! 1.0: `prompt=create` opens it), when the configuration allows it (`account.registration`).
//!
//! A username is never issued twice, not even after deactivation (the users table keeps every
//! name). The new account is signed in at once.

use axum::{
    extract::{Form, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use crate::core::sign_in;
use crate::domain::after_sign_in::{self, AfterSignIn};
use crate::endpoints;
use crate::http::kit;
use crate::{
    core::{
        accounts::{self, AccountError},
        rate_limit::{self, ClientIp, Limit, RateLimitError},
    },
    http::{
        kit::session::BrowserCookie,
        web::{login, register_controls},
        AppState,
    },
    storage::StorageError,
};

/// Where the registration page is served.
pub const PATH: &str = endpoints::REGISTER;

#[derive(Debug, Default, Deserialize)]
pub struct RegisterQuery {
    #[serde(default)]
    grant: Option<String>,
    /// A page to return to afterwards, other than a grant (see [`login::valid_next`]).
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegisterForm {
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
    #[serde(default)]
    password_confirm: String,
    /// The address the code is mailed to, when registration asks for one.
    #[serde(default)]
    email: String,
    /// Registration token, terms of service, captcha (see [`register_controls`]).
    #[serde(flatten)]
    controls: register_controls::ControlsForm,
}

fn closed(state: &AppState) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::FORBIDDEN,
        "Registration is closed",
        "This server doesn't let people create accounts themselves. Ask its administrators for one.",
        None,
    )
}

async fn page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    after: Option<&AfterSignIn>,
    username: &str,
    error: Option<&str>,
) -> Response {
    page_with_controls(state, cookie, status, after, username, error, None).await
}

/// [`page`], with the registration controls (token, terms box) refilled from a form that
/// came back.
#[allow(clippy::too_many_arguments)]
async fn page_with_controls(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    after: Option<&AfterSignIn>,
    username: &str,
    error: Option<&str>,
    controls: Option<&register_controls::ControlsForm>,
) -> Response {
    let typed = Typed {
        username,
        email: "",
    };
    register_page(state, cookie, status, after, typed, error, controls).await
}

/// What the form keeps of what was typed when it comes back.
#[derive(Debug, Clone, Copy)]
struct Typed<'a> {
    username: &'a str,
    /// The address, when registration asks for one
    /// (`account.password_registration_email_required`).
    email: &'a str,
}

/// [`page_with_controls`], keeping the address typed too.
#[allow(clippy::too_many_arguments)]
async fn register_page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    after: Option<&AfterSignIn>,
    typed: Typed<'_>,
    error: Option<&str>,
    controls: Option<&register_controls::ControlsForm>,
) -> Response {
    let username = typed.username;
    let login = after_sign_in::sign_in_link(login::PATH, after);
    let pending = sign_in::pending_request(state, after).await;
    let csp = kit::csp_redirecting_to(pending.redirect_uri.as_ref());
    kit::page_with_csp(
        state,
        status,
        "pages/register.html",
        minijinja::context! {
            client_name => pending.client_name,
            csrf => cookie.csrf_token(),
            action => PATH,
            grant => after.and_then(|a| a.fields().0),
            next => after.and_then(|a| a.fields().1),
            username => username,
            error => error,
            server_name => state.settings.matrix.homeserver,
            min_length => state.passwords.policy().min_length,
            login => login,
            controls => register_controls::page_controls(state, controls),
            email_required => state.settings.account.password_registration_email_required,
            email => typed.email,
        },
        &register_controls::page_csp(state, &csp),
    )
}

/// `GET /register`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(query): Query<RegisterQuery>,
) -> Response {
    if !state.settings.registration {
        return closed(&state);
    }
    let cookie = kit::load_cookie(&state, jar);
    let after = AfterSignIn::from_params(query.grant.as_deref(), query.next.as_deref());
    let response = page(&state, &cookie, StatusCode::OK, after.as_ref(), "", None).await;
    (cookie.into_jar(), response).into_response()
}

/// Creates the account ([`accounts::create_user`]) and its first browser session, in one
/// transaction with the registration controls; `Err` carries what to tell the user.
async fn create(
    state: &AppState,
    form: &RegisterForm,
    passed: &register_controls::Passed,
    user_agent: Option<&str>,
) -> Result<Result<Ulid, String>, StorageError> {
    if let Err(message) = check_form(state, form).await {
        return Ok(Err(message));
    }
    // The policy was checked with the form.
    let password = match accounts::hash_password(state, &form.password, false).await {
        Ok(hashed) => hashed,
        Err(e) => return refusal(e).map(Err),
    };
    let new = accounts::NewUser {
        username: form.username.trim().to_owned(),
        password: Some(password),
        ..Default::default()
    };
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let (user, jobs) = match accounts::create_user(&mut repo, &new, now).await {
        Ok(created) => created,
        Err(e) => return refusal(e).map(Err),
    };
    // The registration token's use counts in this transaction: refused (the token was used up
    // meanwhile), dropping `repo` rolls the new account back.
    if let Err(message) = passed.apply(&mut repo, user.id, now).await? {
        return Ok(Err(message));
    }
    let session = sign_in::open_password_session(&mut repo, user.id, user_agent).await?;
    repo.commit().await?;
    tracing::info!(username = %user.username, "account created");
    // The homeserver learns of the account through the job queue: at once here, or later by
    // the worker if the homeserver is down meanwhile.
    jobs.run(state).await;
    Ok(Ok(session))
}

/// Checks the form's username and passwords, then asks the homeserver whether the username is
/// free; `Err` is what to tell the user.
async fn check_form(state: &AppState, form: &RegisterForm) -> Result<(), String> {
    let name = form.username.trim();
    let checked = async {
        accounts::check_username(state, name)?;
        state.passwords.check_policy(&form.password)?;
        if form.password != form.password_confirm {
            return Ok(Err("The two passwords differ.".to_owned()));
        }
        accounts::check_localpart_available(state, name).await?;
        Ok::<_, AccountError>(Ok(()))
    }
    .await;
    match checked {
        Ok(answer) => answer,
        // No storage is touched by these checks.
        Err(e) => Err(refusal(e).unwrap_or_else(|e| unavailable_message(&e))),
    }
}

/// What to tell the user when [`accounts`] refuses a new account (the form shows it); `Err`
/// when it is the storage's fault, not the form's.
pub(crate) fn refusal(error: AccountError) -> Result<String, StorageError> {
    Ok(match error {
        AccountError::InvalidUsername(e) => format!("Username: {e}."),
        AccountError::UsernameTaken(_) => "This username is taken.".into(),
        AccountError::Homeserver(e) => {
            tracing::error!(error = %e, "registration: can't ask the homeserver about a username");
            "The Matrix server can't be reached to check this username. Try again shortly.".into()
        }
        AccountError::PasswordPolicy(e) => format!("Password: {e}."),
        AccountError::Password(e) => format!("Password: {e}."),
        AccountError::Storage(e) => return Err(e),
        // Not asked of a registration (no addresses or display name given here).
        e @ (AccountError::InvalidEmail(_)
        | AccountError::EmailTaken(_)
        | AccountError::InvalidDisplayName) => format!("{e}."),
    })
}

/// The form's message when the storage fails during a check.
fn unavailable_message(error: &StorageError) -> String {
    tracing::error!(error = %error, "registration failed");
    "Creating accounts is not possible right now. Try again in a moment.".into()
}

/// `POST /register`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(form): Form<RegisterForm>,
) -> Response {
    if !state.settings.registration {
        return closed(&state);
    }
    let mut cookie = kit::load_cookie(&state, jar);
    let after = AfterSignIn::from_params(form.grant.as_deref(), form.next.as_deref());
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let response = page(
            &state,
            &cookie,
            StatusCode::FORBIDDEN,
            after.as_ref(),
            &form.username,
            Some(&e.to_string()),
        )
        .await;
        return (cookie.into_jar(), response).into_response();
    }
    if let Some(refused) =
        over_rate_limit(&state, &cookie, &client_ip, after.as_ref(), &form.username).await
    {
        return (cookie.into_jar(), refused).into_response();
    }
    let passed = match check_controls(&state, &cookie, &client_ip, after.as_ref(), &form).await {
        Ok(passed) => passed,
        Err(refused) => return (cookie.into_jar(), refused).into_response(),
    };
    if state.settings.account.password_registration_email_required {
        // The account waits for the code mailed to its address (see [`email_first`]).
        let response = email_first(&state, &cookie, after.as_ref(), &form, &passed).await;
        return (cookie.into_jar(), response).into_response();
    }
    let user_agent = kit::user_agent(&headers);
    let response = match create(&state, &form, &passed, user_agent.as_deref()).await {
        Ok(Ok(session)) => {
            let mut rng = state.storage.entropy().rng.rng();
            cookie.set_session(
                Some(session),
                after.as_ref().and_then(AfterSignIn::grant),
                &mut rng,
            );
            kit::go_on(after.as_ref())
        }
        Ok(Err(message)) => {
            page_with_controls(
                &state,
                &cookie,
                StatusCode::BAD_REQUEST,
                after.as_ref(),
                &form.username,
                Some(&message),
                Some(&form.controls),
            )
            .await
        }
        Err(e) => {
            tracing::error!(error = %e, "registration failed");
            kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Creating accounts is not possible right now. Try again in a moment.",
                None,
            )
        }
    };
    (cookie.into_jar(), response).into_response()
}

/// Spends one unit of [`Limit::Registration`] for the client's address: every attempt counts,
/// before any work (one with a taken username too, so this also bounds probing for
/// usernames). The answer when over it: the form again with 429 and `Retry-After` (RFC 6585
/// §4), saying when to try again.
async fn over_rate_limit(
    state: &AppState,
    cookie: &BrowserCookie,
    client_ip: &ClientIp,
    after: Option<&AfterSignIn>,
    username: &str,
) -> Option<Response> {
    match state.limiter.check_ip(Limit::Registration, client_ip).await {
        Ok(()) => None,
        Err(RateLimitError::Limited { retry_after }) => {
            let message = format!(
                "Too many accounts were asked for from your network. Try again {}.",
                rate_limit::wait_in_words(retry_after)
            );
            let response = page(
                state,
                cookie,
                StatusCode::TOO_MANY_REQUESTS,
                after,
                username,
                Some(&message),
            )
            .await;
            Some(kit::with_retry_after(response, retry_after))
        }
        Err(RateLimitError::Storage(e)) => {
            tracing::error!(error = %e, "registration: can't check the rate limit");
            Some(kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Creating accounts is not possible right now. Try again in a moment.",
                None,
            ))
        }
    }
}

/// The registration controls ([`register_controls::check`]): `Err` is the answer when they
/// refuse (the form again, with what to fix, keeping what was typed).
async fn check_controls(
    state: &AppState,
    cookie: &BrowserCookie,
    client_ip: &ClientIp,
    after: Option<&AfterSignIn>,
    form: &RegisterForm,
) -> Result<register_controls::Passed, Response> {
    match register_controls::check(state, &form.controls, client_ip.0).await {
        Ok(Ok(passed)) => Ok(passed),
        Ok(Err(message)) => Err(page_with_controls(
            state,
            cookie,
            StatusCode::BAD_REQUEST,
            after,
            &form.username,
            Some(&message),
            Some(&form.controls),
        )
        .await),
        Err(e) => {
            tracing::error!(error = %e, "registration: can't check the registration token");
            Err(kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Creating accounts is not possible right now. Try again in a moment.",
                None,
            ))
        }
    }
}

/// Registration that asks for an email address (`account.password_registration_email_required`):
/// the checked form waits for the code mailed to the address, and the account is created when
/// it is entered (see [`super::register_verify`]). `Err` messages come back on the form.
async fn email_first(
    state: &AppState,
    cookie: &BrowserCookie,
    after: Option<&AfterSignIn>,
    form: &RegisterForm,
    passed: &register_controls::Passed,
) -> Response {
    let checked = match check_form(state, form).await {
        Ok(()) => {
            let start = super::register_verify::Start {
                username: form.username.trim(),
                email: &form.email,
                password: &form.password,
                passed,
                after,
            };
            super::register_verify::start(state, start).await
        }
        Err(message) => Err(message),
    };
    match checked {
        Ok(response) => response,
        Err(message) => {
            let typed = Typed {
                username: &form.username,
                email: form.email.trim(),
            };
            register_page(
                state,
                cookie,
                StatusCode::BAD_REQUEST,
                after,
                typed,
                Some(&message),
                Some(&form.controls),
            )
            .await
        }
    }
}
