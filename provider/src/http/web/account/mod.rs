//! The account management page (MSC4191): what a Matrix client links to for the things the
//! homeserver delegates to the provider.
//!
//! Clients open `{account_management_uri}?action=<action>[&device_id=<id>]` (MSC4191), with one
//! of [`ACTIONS`](crate::domain::account_management::ACTIONS):
//!
//! - no action, `org.matrix.profile`: the profile (username, Matrix ID, email addresses, when
//!   the account was created);
//! - `org.matrix.devices_list` (`org.matrix.sessions_list`): the user's active devices: every
//!   OAuth 2.0 session with a device (MSC2967 device scope) and every legacy login (compat
//!   session), and the applications signed in without a device;
//! - `org.matrix.device_view` (`org.matrix.session_view`) with `device_id`: one device, with a
//!   button to sign it out;
//! - `org.matrix.device_delete` (`org.matrix.session_end`) with `device_id`: the confirmation
//!   to sign it out (a `GET` never changes anything, RFC 9110 §9.2.1: the form posts);
//! - `org.matrix.cross_signing_reset`: lets the user reset their cross-signing keys from their
//!   client without interactive authentication, for a while;
//! - `org.matrix.account_deactivate`: deactivates the account, after the current password.
//!
//! and two pages of our own, outside MSC4191: `emails` (add an address, confirm it with the
//! code mailed to it, send a new code, remove one) and `password` (change it, with the current
//! one). The profile edits the display name.
//!
//! What users may change themselves is the operator's choice (the `account` section:
//! `display_name_change_allowed`, `email_change_allowed`, `password_change_allowed`,
//! `account_deactivation_allowed`): a change that isn't allowed is left out of the pages, and a
//! form posted for it anyway gets a 403 page saying so.
//!
//! An unknown action shows the profile with a notice (MSC4191: "the server SHOULD fall back to
//! the main account management page"). A signed-out browser goes to the login page first and
//! comes back to the same URL (the typed continuation, [`AfterSignIn::Account`]).
//!
//! `POST /account` (CSRF, like every form: the synchroniser token pattern of
//! [`crate::http::kit::session`]) does the changes, each in one transaction; the homeserver jobs it
//! enqueues (device deletions, deactivation, profile and address changes) run right after the
//! commit, so the homeserver knows before the page answers, and mail (a code) is sent after the
//! commit too. A change that succeeds answers with a redirect to its page (303, RFC 9110
//! §15.4.4: a reload doesn't post again), which says what was done.
//!
//! One file per page: [`profile`] (and the display name), [`emails`], [`password`] (and the
//! current-password check the deactivation shares), [`devices`] (list, view, sign out),
//! [`cross_signing`] and [`deactivate`]; this module routes `GET /account` by action and
//! `POST /account` by form, and holds what the pages share: the query, the navigation, the
//! notices after a change ([`Done`]) and the pages for refusals and failures.

mod cross_signing;
mod deactivate;
mod devices;
mod emails;
mod linked;
mod password;
mod profile;

use axum::{
    extract::{Form, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use self::{
    cross_signing::{allow_cross_signing_reset, cross_signing_page},
    deactivate::{deactivate, deactivate_page},
    devices::{device_page, devices_list, end_device},
    emails::{add_email, emails_get, remove_email, resend_code, verify_email},
    password::{change_password, password_form_page},
    profile::{profile, profile_with_notice, set_display_name},
};
use crate::domain::account_management::Action;
use crate::domain::after_sign_in::{account_path, AfterSignIn};
use crate::http::kit;
use crate::{
    config::AccountConfig,
    core::rate_limit::ClientIp,
    domain::scope::is_valid_device_id,
    endpoints,
    http::{
        kit::{session::BrowserCookie, signed_in},
        AppState,
    },
    storage::{StorageError, User},
};

/// The account pages of our own, outside MSC4191 (not advertised in
/// `account_management_actions_supported`).
pub const OWN_ACTIONS: &[&str] = &["emails", "password"];

/// Where the account page is served (MSC4191 `account_management_uri`).
pub const PATH: &str = endpoints::ACCOUNT;

/// The longest unknown action or device ID repeated in a page, in characters.
const MAX_SHOWN_CHARS: usize = 100;

/// What the account pages add to an [`Action`]: whether the configuration allows it, and its
/// page.
trait ActionPage: Copy {
    fn allowed(self, account: &AccountConfig) -> Result<(), &'static str>;
    fn path(self, device_id: Option<&str>) -> String;
}

impl ActionPage for Action {
    /// Does the configuration let users do what this page does? `Err` says why not.
    fn allowed(self, account: &AccountConfig) -> Result<(), &'static str> {
        crate::core::accounts::action_allowed(self, account)
    }

    /// This action's page, for one device when it takes one.
    fn path(self, device_id: Option<&str>) -> String {
        match self {
            Self::Profile => PATH.to_owned(),
            _ => account_path(Some(self.name()), device_id),
        }
    }
}

/// The query of a `GET /account`: the first value of each parameter we read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct AccountQuery {
    action: Option<String>,
    device_id: Option<String>,
    /// The device just signed out, for the devices list's notice (our own redirect).
    signed_out: Option<String>,
    /// What a form just did, for the page's notice (our own redirect, see [`Done`]).
    done: Option<String>,
    /// The address that form was about (its ID), for the notice.
    email: Option<String>,
}

impl AccountQuery {
    fn parse(query: &str) -> Self {
        let mut parsed = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "action" => &mut parsed.action,
                "device_id" => &mut parsed.device_id,
                "signed_out" => &mut parsed.signed_out,
                "done" => &mut parsed.done,
                "email" => &mut parsed.email,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        parsed
    }

    /// The same page, to come back to after signing in, rebuilt from what we understand: a
    /// known action (MSC4191 names and our own pages') and a device ID of RFC 3986 unreserved
    /// characters (MSC2967); nothing else is carried.
    fn after(&self) -> AfterSignIn {
        let action = self
            .action
            .as_deref()
            .filter(|action| Action::parse(action).is_some());
        let device_id = self.device_id.as_deref().filter(|d| is_valid_device_id(d));
        AfterSignIn::Account {
            action: action.map(str::to_owned),
            device_id: device_id.map(str::to_owned),
        }
    }
}

/// The page for a storage failure on these pages.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    kit::unavailable(state, "account", error)
}

/// A link of the account pages' navigation.
#[derive(Debug, Serialize)]
struct NavItem {
    label: &'static str,
    href: String,
    current: bool,
}

/// The navigation between the account pages, `current` marked, without the pages the
/// configuration doesn't allow.
fn nav(current: Action, account: &AccountConfig) -> Vec<NavItem> {
    let current = match current {
        Action::DeviceView | Action::DeviceDelete => Action::DevicesList,
        other => other,
    };
    [
        (Action::Profile, "Profile"),
        (Action::Emails, "Emails"),
        (Action::Password, "Password"),
        (Action::DevicesList, "Devices"),
        (Action::CrossSigningReset, "Reset cross-signing"),
        (Action::AccountDeactivate, "Deactivate account"),
    ]
    .into_iter()
    .filter(|(action, _)| action.allowed(account).is_ok())
    .map(|(action, label)| NavItem {
        label,
        href: action.path(None),
        current: action == current,
    })
    .collect()
}

/// An account page: `context` with the navigation, who is signed in and a notice.
fn account_page(
    state: &AppState,
    status: StatusCode,
    template: &str,
    current: Action,
    user: &User,
    notice: Option<String>,
    context: minijinja::Value,
) -> Response {
    kit::page(
        state,
        status,
        template,
        minijinja::context! {
            nav => nav(current, &state.settings.account),
            username => user.username,
            notice => notice,
            ..context
        },
    )
}

/// `GET /account[?action=…&device_id=…]` (MSC4191).
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    RawQuery(query): RawQuery,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let query = AccountQuery::parse(query.as_deref().unwrap_or_default());
    let response = match signed_in(&state, &cookie).await {
        Ok(Some((_, user))) => show(&state, &cookie, &user, &query).await,
        Ok(None) => kit::sign_in_first(&state, &query.after(), false),
        Err(e) => unavailable(&state, &e),
    };
    (cookie.into_jar(), response).into_response()
}

async fn show(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    query: &AccountQuery,
) -> Response {
    let action = query.action.as_deref().filter(|a| !a.is_empty());
    let device_id = query.device_id.as_deref().filter(|d| !d.is_empty());
    let done = query.done.as_deref().and_then(Done::parse);
    let done_email = query
        .email
        .as_deref()
        .and_then(|e| Ulid::from_string(e).ok());
    let Some(action) = action else {
        return profile(state, cookie, user, StatusCode::OK, done, None).await;
    };
    let Some(parsed) = Action::parse(action) else {
        // MSC4191: an action the server doesn't support falls back to the main page.
        let shown: String = action.chars().take(MAX_SHOWN_CHARS).collect();
        let notice = format!("This page doesn't know the action “{shown}”: here is your profile.");
        return profile_with_notice(state, cookie, user, notice).await;
    };
    if let Err(refusal) = parsed.allowed(&state.settings.account) {
        return refused(state, user, parsed, refusal);
    }
    match (parsed, device_id) {
        (Action::Profile, _) => profile(state, cookie, user, StatusCode::OK, done, None).await,
        (Action::Emails, _) => emails_get(state, cookie, user, done.map(|d| (d, done_email))).await,
        (Action::Password, _) => {
            password_form_page(state, cookie, user, parsed, StatusCode::OK, done, None).await
        }
        (Action::DevicesList, _) => {
            devices_list(state, user, query.signed_out.as_deref(), None).await
        }
        (Action::DeviceView | Action::DeviceDelete, None) => {
            // MSC4191: these actions name a device; without one, the list to choose from.
            let notice = "Choose a device from the list.".to_owned();
            devices_list(state, user, None, Some(notice)).await
        }
        (Action::DeviceView, Some(id)) => device_page(state, cookie, user, id, false).await,
        (Action::DeviceDelete, Some(id)) => device_page(state, cookie, user, id, true).await,
        (Action::CrossSigningReset, _) => cross_signing_page(state, cookie, user),
        (Action::AccountDeactivate, _) => deactivate_page(state, cookie, user).await,
    }
}

/// What a form of these pages just did: its page says so after the redirect (`done=…`, and
/// `email=<id>` for an address). Only these names are understood, and the notice is ours: a
/// link can't make a page say anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// A code was mailed to the address.
    CodeSent,
    /// The address was added (or a new code made), but the mail could not be sent.
    MailFailed,
    Verified,
    Removed,
    DisplayName,
    Password,
}

impl Done {
    fn name(self) -> &'static str {
        match self {
            Self::CodeSent => "code_sent",
            Self::MailFailed => "mail_failed",
            Self::Verified => "verified",
            Self::Removed => "removed",
            Self::DisplayName => "display_name",
            Self::Password => "password",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::CodeSent,
            Self::MailFailed,
            Self::Verified,
            Self::Removed,
            Self::DisplayName,
            Self::Password,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }

    /// The notice, naming the address when it is one of the user's.
    fn notice(self, address: Option<&str>) -> String {
        let address = address.unwrap_or("the address");
        match self {
            Self::CodeSent => {
                format!("We mailed a code to {address}. Enter it below to confirm the address.")
            }
            Self::MailFailed => format!(
                "The mail with the code for {address} could not be sent right now. Try “Send a new code” in a moment."
            ),
            Self::Verified => format!("{address} is confirmed."),
            Self::Removed => "The address was removed.".to_owned(),
            Self::DisplayName => "Your display name was saved.".to_owned(),
            Self::Password => "Your password was changed.".to_owned(),
        }
    }
}

/// The answer to a change that succeeded: its page, saying what was done (303, RFC 9110
/// §15.4.4, so a reload doesn't post again).
fn done_redirect(page: Action, done: Done, email: Option<Ulid>) -> Response {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if page != Action::Profile {
        query.append_pair("action", page.name());
    }
    query.append_pair("done", done.name());
    if let Some(email) = email {
        query.append_pair("email", &email.to_string());
    }
    Redirect::to(&format!("{PATH}?{}", query.finish())).into_response()
}

/// The page for a change the configuration doesn't let users make (403).
fn refused(state: &AppState, user: &User, page: Action, detail: &str) -> Response {
    account_page(
        state,
        StatusCode::FORBIDDEN,
        "pages/account_refused.html",
        page,
        user,
        None,
        minijinja::context! { detail => detail },
    )
}

/// The form of `POST /account`.
#[derive(Default, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    /// `end_device`, `allow_cross_signing_reset`, `deactivate`, `set_display_name`,
    /// `add_email`, `verify_email`, `resend_code`, `remove_email` or `change_password`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    device_id: Option<String>,
    /// The current password, to deactivate.
    #[serde(default)]
    password: Option<String>,
    /// The deactivation's confirmation checkbox.
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    /// An address to add.
    #[serde(default)]
    email: Option<String>,
    /// The address a form is about (its ID).
    #[serde(default)]
    email_id: Option<String>,
    /// The code mailed to it.
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    current_password: Option<String>,
    #[serde(default)]
    new_password: Option<String>,
    #[serde(default)]
    new_password_confirm: Option<String>,
}

/// `POST /account`: sign out a device, allow a cross-signing reset, deactivate the account,
/// set the display name, add, confirm or remove an address, change the password.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    Form(form): Form<AccountForm>,
) -> Response {
    let mut cookie = kit::load_cookie(&state, jar);
    let response = submitted(&state, &mut cookie, &client_ip, form).await;
    (cookie.into_jar(), response).into_response()
}

/// The page each form is on, and the page the configuration must allow for it.
fn form_page(action: &str) -> Option<Action> {
    Some(match action {
        "end_device" => Action::DeviceDelete,
        "allow_cross_signing_reset" => Action::CrossSigningReset,
        "deactivate" => Action::AccountDeactivate,
        "set_display_name" => Action::Profile,
        "add_email" | "verify_email" | "resend_code" | "remove_email" => Action::Emails,
        "change_password" => Action::Password,
        _ => return None,
    })
}

async fn submitted(
    state: &AppState,
    cookie: &mut BrowserCookie,
    client_ip: &ClientIp,
    form: AccountForm,
) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return kit::csrf_refused(state, &e);
    }
    let device_id = form
        .device_id
        .clone()
        .filter(|d| !d.is_empty() && d.len() <= 255);
    let page = form_page(&form.action);
    let user = match signed_in(state, cookie).await {
        Ok(Some((_, user))) => user,
        Ok(None) => {
            // Signed out meanwhile: sign in, then back to the page the form was on.
            let back = AfterSignIn::Account {
                action: page.map(|page| page.name().to_owned()),
                device_id: device_id
                    .filter(|d| page == Some(Action::DeviceDelete) && is_valid_device_id(d)),
            };
            return kit::sign_in_first(state, &back, false);
        }
        Err(e) => return unavailable(state, &e),
    };
    let Some(page) = page else {
        return kit::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::BAD_REQUEST,
            "Unknown request",
            "This page can't do what the form asked. Go back, reload the page and try again.",
            None,
        );
    };
    if let Err(refusal) = page.allowed(&state.settings.account) {
        return refused(state, &user, page, refusal);
    }
    match form.action.as_str() {
        "end_device" => match device_id {
            Some(device_id) => end_device(state, &user, &device_id).await,
            None => kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::BAD_REQUEST,
                "No device chosen",
                "Choose the device to sign out from your list of devices.",
                None,
            ),
        },
        "allow_cross_signing_reset" => allow_cross_signing_reset(state, &user).await,
        "deactivate" => deactivate(state, cookie, &user, client_ip, form).await,
        "set_display_name" => {
            if !state.settings.account.display_name_change_allowed {
                return refused(
                    state,
                    &user,
                    Action::Profile,
                    "Display names can't be changed on this server.",
                );
            }
            set_display_name(state, cookie, &user, form).await
        }
        "add_email" => add_email(state, cookie, &user, form).await,
        "verify_email" => verify_email(state, cookie, &user, form).await,
        "resend_code" => resend_code(state, cookie, &user, form).await,
        "remove_email" => remove_email(state, &user, form).await,
        // `form_page` knows no other action.
        _ => change_password(state, cookie, &user, client_ip, form).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{core::accounts::supported_actions, domain::account_management::ACTIONS};

    #[test]
    fn every_advertised_action_is_served() {
        for name in ACTIONS {
            assert!(Action::parse(name).is_some(), "{name}");
        }
        for action in [
            Action::Profile,
            Action::DevicesList,
            Action::DeviceView,
            Action::DeviceDelete,
            Action::AccountDeactivate,
            Action::CrossSigningReset,
        ] {
            assert!(ACTIONS.contains(&action.name()));
            assert_eq!(Action::parse(action.name()), Some(action));
        }
        // Our own pages are served, not advertised.
        for action in [Action::Emails, Action::Password] {
            assert!(OWN_ACTIONS.contains(&action.name()));
            assert!(!ACTIONS.contains(&action.name()));
            assert_eq!(Action::parse(action.name()), Some(action));
        }
        assert_eq!(
            Action::parse("org.matrix.session_end"),
            Some(Action::DeviceDelete)
        );
        assert_eq!(Action::parse("org.matrix.unknown"), None);
    }

    #[test]
    fn the_navigation_marks_the_current_page() {
        let items = nav(Action::DeviceDelete, &AccountConfig::default());
        let current: Vec<&str> = items
            .iter()
            .filter(|i| i.current)
            .map(|i| i.label)
            .collect();
        assert_eq!(current, ["Devices"]);
        assert_eq!(items[0].href, "/account");
        assert_eq!(items[1].href, "/account?action=emails");
        assert_eq!(items[2].href, "/account?action=password");
        assert_eq!(items[3].href, "/account?action=org.matrix.devices_list");
    }

    #[test]
    fn deactivation_is_advertised_only_when_allowed() {
        assert_eq!(supported_actions(&AccountConfig::default()), ACTIONS);
        let account = AccountConfig {
            account_deactivation_allowed: false,
            ..AccountConfig::default()
        };
        let supported = supported_actions(&account);
        assert!(!supported.contains(&"org.matrix.account_deactivate"));
        assert_eq!(supported.len(), ACTIONS.len() - 1);
    }

    #[test]
    fn the_navigation_leaves_out_what_is_not_allowed() {
        let account = AccountConfig {
            email_change_allowed: false,
            password_change_allowed: false,
            account_deactivation_allowed: false,
            ..AccountConfig::default()
        };
        let labels: Vec<&str> = nav(Action::Profile, &account)
            .iter()
            .map(|i| i.label)
            .collect();
        assert_eq!(labels, ["Profile", "Devices", "Reset cross-signing"]);
        assert!(Action::Emails.allowed(&account).is_err());
        assert!(Action::Profile.allowed(&account).is_ok());
    }

    #[test]
    fn notices_come_only_from_known_names() {
        assert_eq!(Done::parse("code_sent"), Some(Done::CodeSent));
        assert_eq!(Done::parse("<script>"), None);
        assert!(Done::CodeSent
            .notice(Some("bob@example.org"))
            .contains("bob@example.org"));
        let response = done_redirect(Action::Emails, Done::Verified, Some(Ulid::from_parts(1, 2)));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with("/account?action=emails&done=verified&email="),
            "{location}"
        );
        let response = done_redirect(Action::Profile, Done::DisplayName, None);
        assert_eq!(
            response.headers()["location"].to_str().unwrap(),
            "/account?done=display_name"
        );
        assert_eq!(
            AfterSignIn::from_next("/account?action=emails&done=verified").map(|a| a.path()),
            Some("/account?action=emails".to_owned())
        );
    }

    /// What every account page's template gets: the navigation, who is signed in, a notice (to
    /// be escaped) and the form's CSRF token and target.
    pub(super) fn page_context() -> minijinja::Value {
        minijinja::context! {
            site_name => "S",
            stylesheet => "/s.css",
            nav => nav(Action::Profile, &AccountConfig::default()),
            username => "alice",
            notice => "<b>n</b>",
            csrf => "tok",
            action => PATH,
        }
    }

    #[test]
    fn the_refusal_template_renders() {
        let t = crate::core::templates::Templates::new();
        let html = t
            .render(
                "pages/account_refused.html",
                minijinja::context! { detail => "Not here.", ..page_context() },
            )
            .unwrap();
        assert!(html.contains(r#"<p id="refused">Not here.</p>"#), "{html}");
    }
}
