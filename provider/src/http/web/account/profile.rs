//! The profile (MSC4191 `org.matrix.profile`, and the main page): username, Matrix ID,
//! addresses, linked accounts, when the account was created, and the display name's form.

use axum::{http::StatusCode, response::Response};
use serde::Serialize;

use super::{
    account_page, done_redirect, emails::load_emails, unavailable, AccountForm, ActionPage, Done,
    PATH,
};
use crate::core::accounts::{self, profile};
use crate::domain::account_management::Action;
use crate::http::{kit::session::BrowserCookie, AppState};
use crate::storage::{StorageError, User};

/// An email address as the profile shows it.
#[derive(Debug, Serialize)]
struct EmailView {
    email: String,
    confirmed: bool,
}

/// The profile (MSC4191 `org.matrix.profile`, and the main page), with the display name's
/// form when users may change it; `error` is a refused display name: `(message, as typed)`.
pub(super) async fn profile(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    status: StatusCode,
    done: Option<Done>,
    error: Option<(&str, &str)>,
) -> Response {
    let notice = done
        .filter(|d| *d == Done::DisplayName)
        .map(|d| d.notice(None));
    profile_page(state, cookie, user, status, notice, error).await
}

/// The profile with a notice.
pub(super) async fn profile_with_notice(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    notice: String,
) -> Response {
    profile_page(state, cookie, user, StatusCode::OK, Some(notice), None).await
}

async fn profile_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    status: StatusCode,
    notice: Option<String>,
    error: Option<(&str, &str)>,
) -> Response {
    let emails: Vec<EmailView> = match load_emails(state, user).await {
        Ok(emails) => emails
            .into_iter()
            .map(|e| EmailView {
                email: e.email,
                confirmed: e.confirmed_at.is_some(),
            })
            .collect(),
        Err(e) => return unavailable(state, &e),
    };
    let account = &state.settings.account;
    account_page(
        state,
        status,
        "pages/account.html",
        Action::Profile,
        user,
        notice,
        minijinja::context! {
            matrix_id => format!("@{}:{}", user.username, state.settings.matrix.homeserver),
            display_name => user.display_name,
            emails => emails,
            emails_url => account.email_change_allowed.then(|| Action::Emails.path(None)),
            created_at => user.created_at.format("%Y-%m-%d").to_string(),
            linked_accounts => super::linked::linked_accounts(state, user).await,
            display_name_editable => account.display_name_change_allowed,
            display_name_value => error.map_or_else(
                || user.display_name.clone().unwrap_or_default(),
                |(_, typed)| typed.to_owned(),
            ),
            max_display_name => accounts::MAX_DISPLAY_NAME_CHARS,
            error => error.map(|(message, _)| message),
            csrf => cookie.csrf_token(),
            action => PATH,
        },
    )
}

/// The display name's form: checked ([`profile::check_display_name`]), stored, and pushed to
/// the homeserver's profile (a provisioning job, run after the commit).
pub(super) async fn set_display_name(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    form: AccountForm,
) -> Response {
    let typed = form.display_name.unwrap_or_default();
    let name = match profile::check_display_name(&typed) {
        Ok(name) => name.to_owned(),
        Err(e) => {
            let message = format!("Display name: {e}.");
            return profile(
                state,
                cookie,
                user,
                StatusCode::BAD_REQUEST,
                None,
                Some((&message, &typed)),
            )
            .await;
        }
    };
    let done = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let (_, jobs) = profile::set_display_name(&mut repo, user, &name, now).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(jobs)
    }
    .await;
    match done {
        Ok(jobs) => {
            jobs.run(state).await;
            done_redirect(Action::Profile, Done::DisplayName, None)
        }
        Err(e) => unavailable(state, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::web::account::tests::page_context;

    #[test]
    fn the_profile_template_renders() {
        let t = crate::core::templates::Templates::new();
        let html = t
            .render(
                "pages/account.html",
                minijinja::context! {
                    matrix_id => "@alice:example.org",
                    emails => vec![EmailView { email: "a@example.org".into(), confirmed: false }],
                    created_at => "2022-01-16",
                    display_name => "<i>Al</i>",
                    display_name_editable => true,
                    display_name_value => "Al",
                    ..page_context()
                },
            )
            .unwrap();
        assert!(html.contains("@alice:example.org"), "{html}");
        assert!(html.contains("&lt;i&gt;Al&lt;"), "{html}");
        assert!(html.contains(r#"name="display_name""#), "{html}");
        assert!(html.contains("not confirmed"), "{html}");
        assert!(
            html.contains("&lt;b&gt;n&lt;"),
            "the notice is escaped: {html}"
        );
    }
}
