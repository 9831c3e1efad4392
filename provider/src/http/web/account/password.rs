//! The password pages: our own `password` page (change it, with the current one), and the
//! form page and current-password check it shares with the deactivation
//! ([`super::deactivate`]).

use axum::{http::StatusCode, response::Response};

use super::{account_page, done_redirect, unavailable, AccountForm, Done, PATH};
use crate::core::{
    accounts::{self, profile},
    rate_limit::{self, ClientIp},
    sessions,
    sign_in::{attempt_sign_in, AttemptError, Refusal},
};
use crate::domain::account_management::Action;
use crate::http::{
    kit::{self, session::BrowserCookie},
    AppState,
};
use crate::storage::User;

/// A page whose form needs the current password: the password change ([`Action::Password`],
/// with "Your password was changed." after one) or the deactivation (MSC4191
/// `org.matrix.account_deactivate`), with an error after a refused attempt. An account without
/// a password gets neither form.
pub(super) async fn password_form_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    page: Action,
    status: StatusCode,
    done: Option<Done>,
    error: Option<&str>,
) -> Response {
    let has_password = async {
        let mut repo = state.storage.reader().await?;
        repo.user_passwords().active(user.id).await
    }
    .await;
    let has_password = match has_password {
        Ok(password) => password.is_some(),
        Err(e) => return unavailable(state, &e),
    };
    let (template, notice) = if page == Action::AccountDeactivate {
        ("pages/account_deactivate.html", None)
    } else {
        let notice = done
            .filter(|d| *d == Done::Password)
            .map(|d| d.notice(None));
        ("pages/account_password.html", notice)
    };
    account_page(
        state,
        status,
        template,
        page,
        user,
        notice,
        minijinja::context! {
            has_password => has_password,
            min_length => state.passwords.policy().min_length,
            error => error,
            csrf => cookie.csrf_token(),
            action => PATH,
        },
    )
}

/// The current password posted with a change on `page` ([`Action::Password`] or
/// [`Action::AccountDeactivate`]), and what to say when it is wrong.
pub(super) struct CurrentPassword {
    pub(super) page: Action,
    pub(super) password: String,
    pub(super) wrong: &'static str,
}

/// Checks the current password posted with a change as a sign-in is, behind the same rate
/// limits ([`attempt_sign_in`]: a stolen session can't be used to guess the password). `Err` is
/// the answer: the form's page again, saying why (429 with `Retry-After` over the limits).
pub(super) async fn check_current_password(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    client_ip: &ClientIp,
    current: CurrentPassword,
) -> Result<(), Response> {
    let (status, message, retry_after) =
        match attempt_sign_in(state, client_ip, &user.username, current.password).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(Refusal::WrongCredentials)) => {
                (StatusCode::FORBIDDEN, current.wrong.to_owned(), None)
            }
            // Not reached: only active users are signed in here.
            Ok(Err(Refusal::Locked | Refusal::Deactivated)) => (
                StatusCode::FORBIDDEN,
                "This account can't be changed: it is locked or deactivated.".to_owned(),
                None,
            ),
            Err(AttemptError::Limited { retry_after }) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many wrong passwords. Try again {}.",
                    rate_limit::wait_in_words(retry_after)
                ),
                Some(retry_after),
            ),
            Err(AttemptError::Check(e)) => return Err(kit::unavailable(state, "account", &e)),
        };
    let page = password_form_page(
        state,
        cookie,
        user,
        current.page,
        status,
        None,
        Some(&message),
    )
    .await;
    Err(match retry_after {
        Some(retry_after) => kit::with_retry_after(page, retry_after),
        None => page,
    })
}

/// Changes the password, after the current one: checked as a sign-in is, behind the same rate
/// limits ([`attempt_sign_in`]: a stolen session can't be used to guess the password). The
/// user's other browser sessions end with it; this one stays signed in.
pub(super) async fn change_password(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    client_ip: &ClientIp,
    form: AccountForm,
) -> Response {
    let current = form.current_password.unwrap_or_default();
    let new = form.new_password.unwrap_or_default();
    let refuse = |status, message: String| async move {
        password_form_page(
            state,
            cookie,
            user,
            Action::Password,
            status,
            None,
            Some(&message),
        )
        .await
    };
    if current.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Enter your current password.".into(),
        )
        .await;
    }
    if let Err(e) = state.passwords.check_policy(&new) {
        return refuse(StatusCode::BAD_REQUEST, format!("New password: {e}.")).await;
    }
    if form.new_password_confirm.as_deref() != Some(new.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The two new passwords differ.".into(),
        )
        .await;
    }
    let checked = CurrentPassword {
        page: Action::Password,
        password: current,
        wrong: "Wrong current password.",
    };
    if let Err(refused) = check_current_password(state, cookie, user, client_ip, checked).await {
        return refused;
    }
    let hashed = match accounts::hash_password(state, &new, false).await {
        Ok(hashed) => hashed,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("New password: {e}.")).await,
    };
    // Whoever knew the old password is signed out of the provider's pages: the user's other
    // browser sessions end with the change; this one stays (issue 14, finding 10). Their
    // Matrix devices stay (`core::sessions::end_other_browser_sessions`).
    let changed = async {
        let mut repo = state.storage.begin().await?;
        profile::change_password(&mut repo, user, &hashed).await?;
        let ended = match cookie.session_id() {
            Some(current) => {
                sessions::end_other_browser_sessions(&mut repo, user.id, current).await?
            }
            None => 0,
        };
        repo.commit().await?;
        Ok::<_, crate::storage::StorageError>(ended)
    }
    .await;
    match changed {
        Ok(ended) => {
            tracing::info!(user = %user.username, other_browser_sessions_ended = ended, "account: password changed");
            done_redirect(Action::Password, Done::Password, None)
        }
        Err(e) => unavailable(state, &e),
    }
}

#[cfg(test)]
mod tests {
    use crate::http::web::account::tests::page_context;

    #[test]
    fn the_password_template_renders() {
        let t = crate::core::templates::Templates::new();
        let html = t.render(
            "pages/account_password.html",
            minijinja::context! { has_password => true, min_length => 8, ..page_context() },
        );
        assert!(html.is_some());
    }
}
