//! Password recovery ("Forgot password?"), when the configuration offers it
//! (`account.password_recovery_enabled`, with an email transport that delivers):
//!
//! 1. `GET|POST /recover`: the user gives an email address. Every active account with that
//!    address confirmed gets a recovery link mailed to it (`/recover/{ticket}`, a long random
//!    ticket stored hashed, valid [`RECOVERY_LIFETIME_MINUTES`], once). The page answers the
//!    same whether or not an account has the address, and the mail is sent in the background so
//!    the answer takes as long either way: the page tells nobody which addresses have accounts
//!    (OWASP Forgot Password Cheat Sheet, "Return a consistent message"). Rate limited per
//!    client address and per email address.
//! 2. `GET|POST /recover/{ticket}`: the link's page sets a new password (the policy applies),
//!    uses the ticket up, voids the user's other links, and ends every session of the user
//!    ([`accounts::end_all_sessions`]): whoever knew the old
//!    password is signed out everywhere.

use axum::{
    extract::{Form, Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;

use crate::http::kit;
use crate::{
    core::{
        accounts::{
            self,
            emails::{
                self as account_emails, RecoveryToSend, TicketRefusal, RECOVERY_LIFETIME_MINUTES,
            },
            password_recovery_offered,
        },
        email::messages,
        rate_limit::{self, ClientIp, Limit, RateLimitError},
    },
    endpoints,
    http::{
        kit::session::BrowserCookie,
        web::{self},
        AppState,
    },
    storage::StorageError,
};

/// Where the "Forgot password?" page is served.
pub const PATH: &str = endpoints::RECOVER;
/// The recovery link's page.
pub const TICKET_PATH: &str = "/recover/{ticket}";

/// The longest ticket looked up (ours are 32 characters).
const MAX_TICKET_CHARS: usize = 64;

/// The page when recovery is not offered.
fn not_offered(state: &AppState) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::NOT_FOUND,
        "Password recovery is not offered",
        "This server doesn't reset passwords by mail. Ask its administrators to reset yours.",
        None,
    )
}

fn unavailable(state: &AppState, error: &impl std::fmt::Display) -> Response {
    kit::unavailable(state, "password recovery", error)
}

/// The request form, or (`sent`) the answer after it.
fn request_page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    email: &str,
    sent: bool,
    error: Option<&str>,
) -> Response {
    kit::page(
        state,
        status,
        "pages/recover.html",
        minijinja::context! {
            csrf => cookie.csrf_token(),
            action => PATH,
            login => web::login::PATH,
            email => email,
            sent => sent,
            error => error,
            minutes => RECOVERY_LIFETIME_MINUTES,
        },
    )
}

/// `GET /recover`.
pub async fn get(State(state): State<AppState>, jar: PrivateCookieJar) -> Response {
    if !password_recovery_offered(&state) {
        return not_offered(&state);
    }
    let cookie = kit::load_cookie(&state, jar);
    let page = request_page(&state, &cookie, StatusCode::OK, "", false, None);
    (cookie.into_jar(), page).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

/// `POST /recover`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    Form(form): Form<RequestForm>,
) -> Response {
    if !password_recovery_offered(&state) {
        return not_offered(&state);
    }
    let cookie = kit::load_cookie(&state, jar);
    let response = requested(&state, &cookie, &client_ip, &form).await;
    (cookie.into_jar(), response).into_response()
}

async fn requested(
    state: &AppState,
    cookie: &BrowserCookie,
    client_ip: &ClientIp,
    form: &RequestForm,
) -> Response {
    let typed = form.email.trim();
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return request_page(
            state,
            cookie,
            StatusCode::FORBIDDEN,
            typed,
            false,
            Some(&e.to_string()),
        );
    }
    let Ok(address) = account_emails::checked_address(typed) else {
        return request_page(
            state,
            cookie,
            StatusCode::BAD_REQUEST,
            typed,
            false,
            Some("Enter a valid email address, like name@example.org."),
        );
    };
    // Per client address first, then per email address: both count whatever the outcome.
    let limits = async {
        state
            .limiter
            .check_ip(Limit::RecoveryPerIp, client_ip)
            .await?;
        state.limiter.check(Limit::Recovery, &address).await
    }
    .await;
    match limits {
        Ok(()) => {}
        Err(RateLimitError::Limited { retry_after }) => {
            let message = format!(
                "Too many recovery requests. Try again {}.",
                rate_limit::wait_in_words(retry_after)
            );
            let page = request_page(
                state,
                cookie,
                StatusCode::TOO_MANY_REQUESTS,
                typed,
                false,
                Some(&message),
            );
            return kit::with_retry_after(page, retry_after);
        }
        Err(RateLimitError::Storage(e)) => return unavailable(state, &e),
    }
    let tickets = async {
        let now = state.storage.entropy().clock.now();
        let mut rng = state.storage.entropy().rng.rng();
        let mut repo = state.storage.begin().await?;
        let tickets = account_emails::start_recovery(&mut repo, &address, now, &mut rng).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(tickets)
    }
    .await;
    let tickets = match tickets {
        Ok(tickets) => tickets,
        Err(e) => return unavailable(state, &e),
    };
    if !tickets.is_empty() {
        // In the background: the answer comes as fast whether or not an account has the
        // address. A failure is logged; the user may ask again.
        let state = state.clone();
        tokio::spawn(async move { mail_links(&state, tickets).await });
    }
    request_page(state, cookie, StatusCode::OK, &address, true, None)
}

/// Mails each recovery link (a failure is logged; the user may ask again).
async fn mail_links(state: &AppState, tickets: Vec<RecoveryToSend>) {
    for sent in tickets {
        let link = endpoints::url(
            &state.settings.public_base,
            &format!("{PATH}/{}", sent.ticket),
        );
        messages::send_recovery_link(state, &sent.email, &sent.username, link.as_str()).await;
    }
}

/// The page for a link that can't set a password.
fn refused(state: &AppState, refusal: TicketRefusal) -> Response {
    let (status, title, detail) = match refusal {
        TicketRefusal::Unknown => (
            StatusCode::NOT_FOUND,
            "Unknown link",
            "This password recovery link is not valid. Ask for a new one with “Forgot password?” on the sign-in page.",
        ),
        TicketRefusal::Used => (
            StatusCode::GONE,
            "Link already used",
            "This password recovery link was used already (or a newer password replaced it). Ask for a new one with “Forgot password?” on the sign-in page if you still need to.",
        ),
        TicketRefusal::Expired => (
            StatusCode::GONE,
            "Link expired",
            "This password recovery link has expired. Ask for a new one with “Forgot password?” on the sign-in page.",
        ),
        TicketRefusal::Inactive => (
            StatusCode::FORBIDDEN,
            "Account not available",
            "This account is locked or deactivated: its password can't be reset. Ask the server's administrators.",
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

/// The ticket from the path, if it could be one of ours.
fn ticket_of(ticket: &str) -> Option<&str> {
    (!ticket.is_empty()
        && ticket.len() <= MAX_TICKET_CHARS
        && ticket.bytes().all(|b| b.is_ascii_alphanumeric()))
    .then_some(ticket)
}

/// The new password's form.
fn reset_page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    ticket: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    kit::page(
        state,
        status,
        "pages/recover_reset.html",
        minijinja::context! {
            csrf => cookie.csrf_token(),
            action => format!("{PATH}/{ticket}"),
            username => username,
            min_length => state.passwords.policy().min_length,
            error => error,
        },
    )
}

/// `GET /recover/{ticket}`.
pub async fn get_ticket(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(ticket): Path<String>,
) -> Response {
    if !password_recovery_offered(&state) {
        return not_offered(&state);
    }
    let Some(ticket) = ticket_of(&ticket) else {
        return refused(&state, TicketRefusal::Unknown);
    };
    let cookie = kit::load_cookie(&state, jar);
    let found = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.reader().await?;
        account_emails::find_recovery(&mut repo, ticket, now).await
    }
    .await;
    let response = match found {
        Ok(Ok((_, user))) => reset_page(
            &state,
            &cookie,
            StatusCode::OK,
            ticket,
            &user.username,
            None,
        ),
        Ok(Err(refusal)) => refused(&state, refusal),
        Err(e) => unavailable(&state, &e),
    };
    (cookie.into_jar(), response).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirm: String,
}

/// `POST /recover/{ticket}`.
pub async fn post_ticket(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(ticket): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    if !password_recovery_offered(&state) {
        return not_offered(&state);
    }
    let Some(ticket) = ticket_of(&ticket) else {
        return refused(&state, TicketRefusal::Unknown);
    };
    let mut cookie = kit::load_cookie(&state, jar);
    let response = reset(&state, &mut cookie, ticket, form).await;
    (cookie.into_jar(), response).into_response()
}

async fn reset(
    state: &AppState,
    cookie: &mut BrowserCookie,
    ticket: &str,
    form: ResetForm,
) -> Response {
    let found = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.reader().await?;
        account_emails::find_recovery(&mut repo, ticket, now).await
    }
    .await;
    let (found, user) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(refusal)) => return refused(state, refusal),
        Err(e) => return unavailable(state, &e),
    };
    let again = |status, message: &str| {
        reset_page(state, cookie, status, ticket, &user.username, Some(message))
    };
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return again(StatusCode::FORBIDDEN, &e.to_string());
    }
    if let Err(e) = state.passwords.check_policy(&form.new_password) {
        return again(StatusCode::BAD_REQUEST, &format!("Password: {e}."));
    }
    if form.new_password != form.new_password_confirm {
        return again(StatusCode::BAD_REQUEST, "The two passwords differ.");
    }
    let hashed = match accounts::hash_password(state, &form.new_password, false).await {
        Ok(hashed) => hashed,
        Err(e) => return again(StatusCode::BAD_REQUEST, &format!("Password: {e}.")),
    };
    let done = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let jobs = account_emails::recover_password(&mut repo, &found, &user, &hashed, now).await?;
        if jobs.is_some() {
            repo.commit().await?;
        }
        Ok::<_, StorageError>(jobs)
    }
    .await;
    match done {
        Ok(Some(jobs)) => {
            jobs.run(state).await;
            tracing::info!(user = %user.username, "password recovered: every session ended");
            // This browser's session ended with the others.
            let mut rng = state.storage.entropy().rng.rng();
            cookie.set_session(None, None, &mut rng);
            kit::page(
                state,
                StatusCode::OK,
                "pages/recover_done.html",
                minijinja::context! {
                    username => user.username,
                    login => web::login::PATH,
                },
            )
        }
        // Used or expired since the page was read (another tab won).
        Ok(None) => refused(state, TicketRefusal::Used),
        Err(e) => unavailable(state, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_tickets_are_looked_up() {
        assert_eq!(ticket_of("abcDEF123"), Some("abcDEF123"));
        for bad in ["", "a/b", "a.b", "%2e", &"a".repeat(MAX_TICKET_CHARS + 1)] {
            assert_eq!(ticket_of(bad), None, "{bad}");
        }
    }
}
