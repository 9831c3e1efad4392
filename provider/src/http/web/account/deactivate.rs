//! MSC4191 `org.matrix.account_deactivate`: the page asking for the current password and a
//! confirmation, and its form, which deactivates the account and signs the browser out.

use axum::{http::StatusCode, response::Response};

use super::{
    password::{check_current_password, password_form_page, CurrentPassword},
    unavailable, AccountForm,
};
use crate::core::{accounts, rate_limit::ClientIp};
use crate::domain::account_management::Action;
use crate::http::{
    kit::{self, session::BrowserCookie},
    AppState,
};
use crate::storage::{StorageError, User};

/// The page (`GET`): the form, or why there is none (an account without a password).
pub(super) async fn deactivate_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
) -> Response {
    password_form_page(
        state,
        cookie,
        user,
        Action::AccountDeactivate,
        StatusCode::OK,
        None,
        None,
    )
    .await
}

/// MSC4191 `org.matrix.account_deactivate`: after the current password (checked as the login
/// page does, behind the same rate limits:
/// [`attempt_sign_in`](crate::core::sign_in::attempt_sign_in)) and the confirmation, in one
/// transaction: the user is deactivated, every OAuth 2.0 and legacy session ends (their devices
/// are deleted), every browser session ends, and the deactivation on the homeserver is enqueued
/// (without erasure); the jobs run right after the commit. The browser is signed out.
pub(super) async fn deactivate(
    state: &AppState,
    cookie: &mut BrowserCookie,
    user: &User,
    client_ip: &ClientIp,
    form: AccountForm,
) -> Response {
    let refuse = |message| {
        password_form_page(
            state,
            cookie,
            user,
            Action::AccountDeactivate,
            StatusCode::BAD_REQUEST,
            None,
            Some(message),
        )
    };
    let password = form.password.unwrap_or_default();
    if password.is_empty() {
        return refuse("Enter your current password.").await;
    }
    if form.confirm.as_deref().unwrap_or_default().is_empty() {
        return refuse("Tick the box to confirm that you want to deactivate your account.").await;
    }
    let checked = CurrentPassword {
        page: Action::AccountDeactivate,
        password,
        wrong: "Wrong password.",
    };
    if let Err(refused) = check_current_password(state, cookie, user, client_ip, checked).await {
        return refused;
    }
    let done = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let jobs = accounts::deactivate(&mut repo, user, false, now).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(jobs)
    }
    .await;
    match done {
        Ok(jobs) => jobs.run(state).await,
        Err(e) => return unavailable(state, &e),
    }
    let mut rng = state.storage.entropy().rng.rng();
    cookie.set_session(None, None, &mut rng);
    kit::page(
        state,
        StatusCode::OK,
        "pages/account_deactivated.html",
        minijinja::context! { username => user.username },
    )
}

#[cfg(test)]
mod tests {
    use crate::http::web::account::tests::page_context;

    #[test]
    fn the_deactivation_templates_render() {
        let t = crate::core::templates::Templates::new();
        for name in [
            "pages/account_deactivate.html",
            "pages/account_deactivated.html",
        ] {
            let html = t.render(
                name,
                minijinja::context! { has_password => true, ..page_context() },
            );
            assert!(html.is_some(), "{name}");
        }
    }
}
