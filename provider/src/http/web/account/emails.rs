//! Our own `emails` page (outside MSC4191): the user's addresses, and the forms to add one,
//! confirm it with the code mailed to it, send a new code and remove one.

use axum::{http::StatusCode, response::Response};
use serde::Serialize;
use ulid::Ulid;

use super::{account_page, done_redirect, unavailable, AccountForm, Done, PATH};
use crate::core::{
    accounts::{
        self,
        emails::{self as account_emails, AddRefusal, CodeCheck},
    },
    email::messages::{self, CodePurpose},
    rate_limit::{self, Limit, RateLimitError},
};
use crate::domain::account_management::Action;
use crate::http::{
    kit::{self, session::BrowserCookie},
    AppState,
};
use crate::storage::{StorageError, User, UserEmail};

/// The user's addresses, oldest first.
pub(super) async fn load_emails(
    state: &AppState,
    user: &User,
) -> Result<Vec<UserEmail>, StorageError> {
    let mut repo = state.storage.reader().await?;
    repo.user_emails().list_for_user(user.id).await
}

/// An address as the emails page shows it.
#[derive(Debug, Serialize)]
struct EmailItem {
    id: String,
    email: String,
    confirmed: bool,
}

/// What the emails page shows besides the addresses.
#[derive(Debug)]
struct EmailsPage<'a> {
    status: StatusCode,
    /// What a form just did, and the address it was about.
    done: Option<(Done, Option<Ulid>)>,
    /// A refusal or an error to show.
    error: Option<&'a str>,
    /// The address typed into the add form, kept when it comes back.
    typed: &'a str,
}

impl Default for EmailsPage<'_> {
    fn default() -> Self {
        Self {
            status: StatusCode::OK,
            done: None,
            error: None,
            typed: "",
        }
    }
}

/// The page (`GET`), with what a form just did (`done`: the notice, about the address with
/// this ID when there is one).
pub(super) async fn emails_get(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    done: Option<(Done, Option<Ulid>)>,
) -> Response {
    let page = EmailsPage {
        done,
        ..EmailsPage::default()
    };
    emails_page(state, cookie, user, page).await
}

/// The emails page: the user's addresses (confirm one with its code, send a new code, remove
/// one) and the form to add one.
async fn emails_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    page: EmailsPage<'_>,
) -> Response {
    let emails = match load_emails(state, user).await {
        Ok(emails) => emails,
        Err(e) => return unavailable(state, &e),
    };
    let notice = page.done.map(|(done, id)| {
        let address = id.and_then(|id| emails.iter().find(|e| e.id == id));
        done.notice(address.map(|e| e.email.as_str()))
    });
    let items: Vec<EmailItem> = emails
        .into_iter()
        .map(|e| EmailItem {
            id: e.id.to_string(),
            email: e.email,
            confirmed: e.confirmed_at.is_some(),
        })
        .collect();
    account_page(
        state,
        page.status,
        "pages/account_emails.html",
        Action::Emails,
        user,
        notice,
        minijinja::context! {
            emails => items,
            error => page.error,
            email_value => page.typed,
            delivers => state.mailer.delivers(),
            csrf => cookie.csrf_token(),
            action => PATH,
        },
    )
}

/// The emails page with an error (the add form keeps what was typed).
async fn emails_error(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    status: StatusCode,
    error: &str,
    typed: &str,
) -> Response {
    let page = EmailsPage {
        status,
        error: Some(error),
        typed,
        ..EmailsPage::default()
    };
    emails_page(state, cookie, user, page).await
}

/// Spends the mail rate limits of a code mailed to `address` for `user`: per address
/// ([`Limit::EmailSend`], nobody's inbox is flooded) and per user ([`Limit::EmailSendPerUser`],
/// one account can't mail many people). `Some` is the answer when over one: the page again,
/// 429 with `Retry-After` (RFC 6585 §4).
async fn over_mail_limits(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    address: &str,
    typed: &str,
) -> Option<Response> {
    let checks = [
        (Limit::EmailSend, address.to_owned(), "to this address"),
        (
            Limit::EmailSendPerUser,
            user.id.to_string(),
            "for your account",
        ),
    ];
    for (limit, key, whom) in checks {
        match state.limiter.check(limit, &key).await {
            Ok(()) => {}
            Err(RateLimitError::Limited { retry_after }) => {
                let message = format!(
                    "Too many mails were sent {whom}. Try again {}.",
                    rate_limit::wait_in_words(retry_after)
                );
                let page = emails_error(
                    state,
                    cookie,
                    user,
                    StatusCode::TOO_MANY_REQUESTS,
                    &message,
                    typed,
                )
                .await;
                return Some(kit::with_retry_after(page, retry_after));
            }
            Err(RateLimitError::Storage(e)) => return Some(unavailable(state, &e)),
        }
    }
    None
}

/// Mails the code just stored for an address of the user, then back to the emails page, which
/// asks for the code or (the mail failed: logged) says to send a new one.
async fn mail_code(state: &AppState, user: &User, email: &UserEmail, code: &str) -> Response {
    let sent = messages::send_code(
        state,
        &email.email,
        &user.username,
        code,
        CodePurpose::AddEmail,
    )
    .await;
    let done = if sent {
        Done::CodeSent
    } else {
        Done::MailFailed
    };
    done_redirect(Action::Emails, done, Some(email.id))
}

/// Adds an address (unconfirmed) with a code, then mails the code: the page then asks for it.
pub(super) async fn add_email(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    form: AccountForm,
) -> Response {
    let typed = form.email.unwrap_or_default();
    let Ok(address) = account_emails::checked_address(&typed) else {
        return emails_error(
            state,
            cookie,
            user,
            StatusCode::BAD_REQUEST,
            "Enter a valid email address, like name@example.org.",
            &typed,
        )
        .await;
    };
    if let Some(limited) = over_mail_limits(state, cookie, user, &address, &typed).await {
        return limited;
    }
    let added = async {
        let now = state.storage.entropy().clock.now();
        let mut rng = state.storage.entropy().rng.rng();
        let mut repo = state.storage.begin().await?;
        let added = account_emails::start_adding(&mut repo, user, &address, now, &mut rng).await?;
        if added.is_ok() {
            repo.commit().await?;
        }
        Ok::<_, StorageError>(added)
    }
    .await;
    let (email, code) = match added {
        Ok(Ok(added)) => added,
        Ok(Err(refusal)) => {
            let message = match refusal {
                AddRefusal::AlreadyAdded => "This address is on your account already.".to_owned(),
                AddRefusal::TooMany => format!(
                    "An account has at most {} addresses: remove one first.",
                    account_emails::MAX_EMAILS_PER_USER
                ),
            };
            return emails_error(
                state,
                cookie,
                user,
                StatusCode::BAD_REQUEST,
                &message,
                &typed,
            )
            .await;
        }
        Err(e) => return unavailable(state, &e),
    };
    mail_code(state, user, &email, &code).await
}

/// The user's own address a form names, read in the form's transaction; `None` for an
/// address that isn't theirs (or is gone).
async fn own_email(
    repo: &mut crate::storage::BoxRepository,
    user: &User,
    email_id: Option<&str>,
) -> Result<Option<UserEmail>, StorageError> {
    let Some(id) = email_id.and_then(|id| Ulid::from_string(id).ok()) else {
        return Ok(None);
    };
    Ok(repo
        .user_emails()
        .lookup(id)
        .await?
        .filter(|e| e.user_id == user.id))
}

/// The page for a form about an address the user doesn't have (removed meanwhile).
fn unknown_email(state: &AppState) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::NOT_FOUND,
        "Unknown address",
        "This address is not on your account (any more). Your account page lists the addresses it has now.",
        None,
    )
}

/// Confirms an address with the code mailed to it. The attempt counts whatever the outcome
/// (see [`account_emails::confirm_with_code`]).
pub(super) async fn verify_email(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    form: AccountForm,
) -> Response {
    let typed = form.code.unwrap_or_default();
    let checked = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let Some(email) = own_email(&mut repo, user, form.email_id.as_deref()).await? else {
            return Ok(None);
        };
        let outcome = account_emails::confirm_with_code(&mut repo, &email, &typed, now).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(Some((email, outcome)))
    }
    .await;
    let (email, outcome) = match checked {
        Ok(Some(checked)) => checked,
        Ok(None) => return unknown_email(state),
        Err(e) => return unavailable(state, &e),
    };
    let error = match outcome {
        CodeCheck::Confirmed(_, jobs) => {
            jobs.run(state).await;
            return done_redirect(Action::Emails, Done::Verified, Some(email.id));
        }
        CodeCheck::AlreadyConfirmed => {
            return done_redirect(Action::Emails, Done::Verified, Some(email.id))
        }
        CodeCheck::Wrong { attempts_left } if attempts_left > 0 => format!(
            "Wrong code for {}. {attempts_left} {} left with this code.",
            email.email,
            if attempts_left == 1 { "try" } else { "tries" }
        ),
        CodeCheck::Wrong { .. } | CodeCheck::TooManyAttempts => format!(
            "Too many wrong codes for {}: send a new code and enter that one.",
            email.email
        ),
        CodeCheck::Expired => format!("The code for {} has expired: send a new code.", email.email),
        CodeCheck::NoCode => format!("No code is waiting for {}: send a new code.", email.email),
    };
    emails_error(state, cookie, user, StatusCode::BAD_REQUEST, &error, "").await
}

/// Mails a new code to an unconfirmed address (the earlier codes stop counting).
pub(super) async fn resend_code(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    form: AccountForm,
) -> Response {
    let found = async {
        let mut repo = state.storage.reader().await?;
        own_email(&mut repo, user, form.email_id.as_deref()).await
    }
    .await;
    let email = match found {
        Ok(Some(email)) => email,
        Ok(None) => return unknown_email(state),
        Err(e) => return unavailable(state, &e),
    };
    if email.confirmed_at.is_some() {
        return done_redirect(Action::Emails, Done::Verified, Some(email.id));
    }
    if let Some(limited) = over_mail_limits(state, cookie, user, &email.email, "").await {
        return limited;
    }
    let code = async {
        let now = state.storage.entropy().clock.now();
        let mut rng = state.storage.entropy().rng.rng();
        let mut repo = state.storage.begin().await?;
        let code = account_emails::new_code(&mut repo, email.id, now, &mut rng).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(code)
    }
    .await;
    let code = match code {
        Ok(code) => code,
        Err(StorageError::NotFound(_)) => return unknown_email(state),
        Err(e) => return unavailable(state, &e),
    };
    mail_code(state, user, &email, &code).await
}

/// Removes an address; the homeserver gets the new list when it was a confirmed one.
pub(super) async fn remove_email(state: &AppState, user: &User, form: AccountForm) -> Response {
    let removed = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let Some(email) = own_email(&mut repo, user, form.email_id.as_deref()).await? else {
            return Ok(None);
        };
        let (_, jobs) = accounts::remove_email(&mut repo, &email, now).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(Some(jobs))
    }
    .await;
    match removed {
        Ok(Some(jobs)) => {
            jobs.run(state).await;
            done_redirect(Action::Emails, Done::Removed, None)
        }
        Ok(None) => unknown_email(state),
        Err(e) => unavailable(state, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::web::account::tests::page_context;

    #[test]
    fn the_emails_template_renders() {
        let t = crate::core::templates::Templates::new();
        let html = t.render(
            "pages/account_emails.html",
            minijinja::context! {
                emails => vec![EmailItem { id: "01H".into(), email: "a@example.org".into(), confirmed: false }],
                ..page_context()
            },
        );
        assert!(html.is_some());
    }
}
