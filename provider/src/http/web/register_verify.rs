//! Registration that asks for an email address first (`account.password_registration_email_required`):
//! the registration form's answers wait in a *pending registration* (the password hashed, a
//! code mailed to the address, both stored hashed), and the account is created only when the
//! code is entered on `/register/verify/{id}`.
//!
//! Until then no user exists and no username is taken: a registration left half-done leaves
//! nothing anyone can sign in to, and the username stays free for whoever confirms first (the
//! users table's unique username decides, in the creating transaction; the homeserver is asked
//! again too). A code works [`CODE_LIFETIME_MINUTES`], for a few attempts
//! ([`accounts::emails`]); "Send a new code" renews it.
//!
//! What the registration controls passed (a registration token, accepted terms) is kept with
//! the pending registration and applied in the creating transaction, as a direct registration
//! does ([`register_controls::Passed::apply`]).

use axum::{
    extract::{Form, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use chrono::Duration;
use serde::Deserialize;
use ulid::Ulid;

use crate::core::sign_in;
use crate::domain::after_sign_in::{self, AfterSignIn};
use crate::http::kit;
use crate::{
    core::{
        accounts::{
            self,
            emails::{self as account_emails, RegistrationCodeCheck, CODE_LIFETIME_MINUTES},
            AccountError,
        },
        email::messages::{self, CodePurpose},
        rate_limit::{self, Limit, RateLimitError},
    },
    http::{
        kit::session::BrowserCookie,
        web::{register, register_controls},
        AppState,
    },
    storage::{NewPendingRegistration, PendingRegistration, StorageError},
};

/// Where a pending registration's code is entered.
pub const PATH: &str = "/register/verify/{id}";

/// The page of pending registration `id`, carrying the grant or the page to return to.
fn path(id: Ulid, after: Option<&AfterSignIn>) -> String {
    after_sign_in::sign_in_link(&format!("{}/verify/{id}", register::PATH), after)
}

/// What the registration form gave, checked, for [`start`].
pub(crate) struct Start<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password: &'a str,
    pub passed: &'a register_controls::Passed,
    pub after: Option<&'a AfterSignIn>,
}

/// Stores a pending registration for a checked form (username free, password within the
/// policy), mails its code, and sends the browser to the page that asks for it. `Err` is what to
/// tell the user on the registration form.
pub(crate) async fn start(state: &AppState, form: Start<'_>) -> Result<Response, String> {
    let Ok(address) = account_emails::checked_address(form.email) else {
        return Err("Enter a valid email address, like name@example.org.".into());
    };
    match state.limiter.check(Limit::EmailSend, &address).await {
        Ok(()) => {}
        Err(RateLimitError::Limited { retry_after }) => {
            return Err(format!(
                "Too many mails were sent to this address. Try again {}.",
                rate_limit::wait_in_words(retry_after)
            ))
        }
        Err(RateLimitError::Storage(e)) => {
            tracing::error!(error = %e, "registration: can't check the mail rate limit");
            return Err(
                "Creating accounts is not possible right now. Try again in a moment.".into(),
            );
        }
    }
    let hashed = accounts::hash_password(state, form.password, false)
        .await
        .map_err(|e| {
            register::refusal(e).unwrap_or_else(|e| {
                tracing::error!(error = %e, "registration: can't hash the password");
                "Creating accounts is not possible right now. Try again in a moment.".to_owned()
            })
        })?;
    let (token, terms) = form.passed.parts();
    let stored = async {
        let now = state.storage.entropy().clock.now();
        let code = account_emails::generate_code(&mut state.storage.entropy().rng.rng());
        let mut repo = state.storage.begin().await?;
        let pending = repo
            .pending_registrations()
            .add(NewPendingRegistration {
                username: form.username,
                email: &address,
                hashed_password: &hashed.hash,
                password_version: hashed.version,
                code_hash: &account_emails::code_hash(&code),
                expires_at: now + Duration::minutes(CODE_LIFETIME_MINUTES),
                registration_token_id: token,
                accepted_terms_url: terms,
            })
            .await?;
        repo.commit().await?;
        Ok::<_, StorageError>((pending, code))
    }
    .await;
    let (pending, code) = stored.map_err(|e| {
        tracing::error!(error = %e, "registration: can't store the pending registration");
        "Creating accounts is not possible right now. Try again in a moment.".to_owned()
    })?;
    let mut to = path(pending.id, form.after);
    if !mail_code(state, &pending, &code).await {
        to.push_str(if to.contains('?') { "&" } else { "?" });
        to.push_str("mail=failed");
    }
    Ok(Redirect::to(&to).into_response())
}

/// Mails the code of a pending registration; `false` when it could not be sent (the user may
/// ask for a new code).
async fn mail_code(state: &AppState, pending: &PendingRegistration, code: &str) -> bool {
    messages::send_code(
        state,
        &pending.email,
        &pending.username,
        code,
        CodePurpose::Registration,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct VerifyQuery {
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    next: Option<String>,
    /// `failed` when the code's mail could not be sent (our own redirect).
    #[serde(default)]
    mail: Option<String>,
}

/// The pages are served only while registration asks for an address.
fn offered(state: &AppState) -> bool {
    state.settings.registration && state.settings.account.password_registration_email_required
}

fn not_found(state: &AppState) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::NOT_FOUND,
        "Unknown registration",
        "There is no account waiting to be created here. Start again from the registration page.",
        None,
    )
}

fn unavailable(state: &AppState, error: &StorageError) -> Response {
    kit::unavailable(state, "registration", error)
}

/// The code's page.
#[allow(clippy::too_many_arguments)]
fn verify_page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    pending: &PendingRegistration,
    after: Option<&AfterSignIn>,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    kit::page(
        state,
        status,
        "pages/register_verify.html",
        minijinja::context! {
            csrf => cookie.csrf_token(),
            action => path(pending.id, None),
            grant => after.and_then(|a| a.fields().0),
            next => after.and_then(|a| a.fields().1),
            email => pending.email,
            username => pending.username,
            minutes => CODE_LIFETIME_MINUTES,
            notice => notice,
            error => error,
            register => after_sign_in::sign_in_link(register::PATH, after),
        },
    )
}

/// A pending registration that still waits for its code.
async fn waiting(state: &AppState, id: &str) -> Result<Option<PendingRegistration>, StorageError> {
    let Ok(id) = Ulid::from_string(id) else {
        return Ok(None);
    };
    let mut repo = state.storage.reader().await?;
    Ok(repo
        .pending_registrations()
        .lookup(id)
        .await?
        .filter(|p| p.completed_at.is_none()))
}

/// `GET /register/verify/{id}`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(id): Path<String>,
    Query(query): Query<VerifyQuery>,
) -> Response {
    if !offered(&state) {
        return not_found(&state);
    }
    let cookie = kit::load_cookie(&state, jar);
    let after = AfterSignIn::from_params(query.grant.as_deref(), query.next.as_deref());
    let notice = (query.mail.as_deref() == Some("failed")).then_some(
        "The mail with the code could not be sent right now. Try “Send a new code” in a moment.",
    );
    let response = match waiting(&state, &id).await {
        Ok(Some(pending)) => verify_page(
            &state,
            &cookie,
            StatusCode::OK,
            &pending,
            after.as_ref(),
            notice,
            None,
        ),
        Ok(None) => not_found(&state),
        Err(e) => unavailable(&state, &e),
    };
    (cookie.into_jar(), response).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    csrf: String,
    /// `verify` or `resend`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /register/verify/{id}`: the code (which creates the account), or "Send a new code".
pub async fn post(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<VerifyForm>,
) -> Response {
    if !offered(&state) {
        return not_found(&state);
    }
    let mut cookie = kit::load_cookie(&state, jar);
    let after = AfterSignIn::from_params(form.grant.as_deref(), form.next.as_deref());
    let pending = match waiting(&state, &id).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return (cookie.into_jar(), not_found(&state)).into_response(),
        Err(e) => return (cookie.into_jar(), unavailable(&state, &e)).into_response(),
    };
    let after = after.as_ref();
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let page = verify_page(
            &state,
            &cookie,
            StatusCode::FORBIDDEN,
            &pending,
            after,
            None,
            Some(&e.to_string()),
        );
        return (cookie.into_jar(), page).into_response();
    }
    let response = if form.action == "resend" {
        resend(&state, &cookie, &pending, after).await
    } else {
        let user_agent = kit::user_agent(&headers);
        verify(
            &state,
            &mut cookie,
            &pending,
            &form.code,
            after,
            user_agent.as_deref(),
        )
        .await
    };
    (cookie.into_jar(), response).into_response()
}

/// A new code for the pending registration, mailed (rate limited per address).
async fn resend(
    state: &AppState,
    cookie: &BrowserCookie,
    pending: &PendingRegistration,
    after: Option<&AfterSignIn>,
) -> Response {
    let page = |status, notice: Option<&str>, error: Option<&str>| {
        verify_page(state, cookie, status, pending, after, notice, error)
    };
    match state.limiter.check(Limit::EmailSend, &pending.email).await {
        Ok(()) => {}
        Err(RateLimitError::Limited { retry_after }) => {
            let message = format!(
                "Too many mails were sent to this address. Try again {}.",
                rate_limit::wait_in_words(retry_after)
            );
            let page = page(StatusCode::TOO_MANY_REQUESTS, None, Some(&message));
            return kit::with_retry_after(page, retry_after);
        }
        Err(RateLimitError::Storage(e)) => return unavailable(state, &e),
    }
    let renewed = async {
        let now = state.storage.entropy().clock.now();
        let code = account_emails::generate_code(&mut state.storage.entropy().rng.rng());
        let mut repo = state.storage.begin().await?;
        let renewed = repo
            .pending_registrations()
            .renew_code(
                pending.id,
                &account_emails::code_hash(&code),
                now + Duration::minutes(CODE_LIFETIME_MINUTES),
            )
            .await?;
        repo.commit().await?;
        Ok::<_, StorageError>(renewed.then_some(code))
    }
    .await;
    match renewed {
        Ok(Some(code)) => {
            if mail_code(state, pending, &code).await {
                page(StatusCode::OK, Some("We mailed you a new code."), None)
            } else {
                page(
                    StatusCode::OK,
                    Some("The mail with the code could not be sent right now. Try “Send a new code” in a moment."),
                    None,
                )
            }
        }
        Ok(None) => not_found(state),
        Err(e) => unavailable(state, &e),
    }
}

/// Why the account could not be created from a right code.
enum Creation {
    /// Created: the new browser session.
    Created(Ulid),
    /// What to tell the user (the code page shows it).
    Refused(String),
    /// The username was taken meanwhile: start over.
    Taken,
}

/// Tries the code; when it is right, creates the account in the same transaction
/// ([`accounts::create_user`]: the user with the password chosen, the address confirmed, the
/// homeserver's provisioning job, run after the commit), the registration controls applied and
/// a browser session.
async fn verify(
    state: &AppState,
    cookie: &mut BrowserCookie,
    pending: &PendingRegistration,
    typed: &str,
    after: Option<&AfterSignIn>,
    user_agent: Option<&str>,
) -> Response {
    // The homeserver has the last word on the username (outside the transaction: it's a call).
    match accounts::check_localpart_available(state, &pending.username).await {
        Ok(()) => {}
        Err(AccountError::UsernameTaken(_)) => return taken(state),
        Err(e) => {
            tracing::error!(error = %e, "registration: can't ask the homeserver about a username");
            return verify_page(
                state,
                cookie,
                StatusCode::SERVICE_UNAVAILABLE,
                pending,
                after,
                None,
                Some(
                    "The Matrix server can't be reached to check the username. Try again shortly.",
                ),
            );
        }
    }
    let created = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let check =
            account_emails::check_registration_code(&mut repo, pending.id, typed, now).await?;
        let message = match check {
            RegistrationCodeCheck::Right => None,
            RegistrationCodeCheck::Wrong { attempts_left } if attempts_left > 0 => Some(format!(
                "Wrong code. {attempts_left} {} left with this code.",
                if attempts_left == 1 { "try" } else { "tries" }
            )),
            RegistrationCodeCheck::Wrong { .. } | RegistrationCodeCheck::TooManyAttempts => {
                Some("Too many wrong codes: send a new code and enter that one.".to_owned())
            }
            RegistrationCodeCheck::Expired => {
                Some("This code has expired: send a new code.".to_owned())
            }
            RegistrationCodeCheck::Completed | RegistrationCodeCheck::Unknown => {
                Some("This registration is finished already. Sign in, or start again.".to_owned())
            }
        };
        if let Some(message) = message {
            // The attempt counts.
            repo.commit().await?;
            return Ok(Creation::Refused(message));
        }
        let new = accounts::NewUser {
            username: pending.username.clone(),
            password: Some(accounts::HashedPassword {
                version: pending.password_version,
                hash: pending.hashed_password.clone(),
            }),
            // The code mailed to it was entered: the address is the user's.
            emails: vec![accounts::NewEmail {
                address: pending.email.clone(),
                verified: true,
            }],
            ..Default::default()
        };
        let (user, jobs) = match accounts::create_user(&mut repo, &new, now).await {
            Ok(created) => created,
            // Dropped without commit: the code stays usable (but the username is gone).
            Err(AccountError::UsernameTaken(_)) => return Ok(Creation::Taken),
            Err(e) => return register::refusal(e).map(Creation::Refused),
        };
        let passed = register_controls::Passed::from_parts(
            pending.registration_token_id,
            pending.accepted_terms_url.clone(),
        );
        if let Err(message) = passed.apply(&mut repo, user.id, now).await? {
            // The token was used up meanwhile: nothing of the account stays (rolled back).
            return Ok(Creation::Refused(message));
        }
        let session = sign_in::open_password_session(&mut repo, user.id, user_agent).await?;
        repo.commit().await?;
        tracing::info!(username = %user.username, "account created (address confirmed)");
        jobs.run(state).await;
        Ok::<_, StorageError>(Creation::Created(session))
    }
    .await;
    match created {
        Ok(Creation::Created(session)) => {
            let mut rng = state.storage.entropy().rng.rng();
            cookie.set_session(Some(session), after.and_then(AfterSignIn::grant), &mut rng);
            kit::go_on(after)
        }
        Ok(Creation::Refused(message)) => verify_page(
            state,
            cookie,
            StatusCode::BAD_REQUEST,
            pending,
            after,
            None,
            Some(&message),
        ),
        Ok(Creation::Taken) => taken(state),
        Err(e) => unavailable(state, &e),
    }
}

/// The page when the username went to someone else before the code was entered.
fn taken(state: &AppState) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::CONFLICT,
        "Username taken meanwhile",
        "Someone else took this username before the code was entered. Start again from the registration page with another username.",
        None,
    )
}
