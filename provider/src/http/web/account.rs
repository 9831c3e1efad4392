//! The account management page (MSC4191): what a Matrix client links to for the things the
//! homeserver delegates to the provider.
//!
//! Clients open `{account_management_uri}?action=<action>[&device_id=<id>]` (MSC4191), with one
//! of [`ACTIONS`]:
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
//! comes back to the same URL (see [`return_target`]).
//!
//! `POST /account` (CSRF, like every form: the synchroniser token pattern of
//! [`super::session`]) does the changes, each in one transaction; the homeserver jobs it
//! enqueues (device deletions, deactivation, profile and address changes) run right after the
//! commit, so the homeserver knows before the page answers, and mail (a code) is sent after the
//! commit too. A change that succeeds answers with a redirect to its page (303, RFC 9110
//! §15.4.4: a reload doesn't post again), which says what was done.

use std::collections::HashMap;

use axum::{
    extract::{Form, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::core::clients;
use crate::core::sessions::end_compat_session;
use crate::http::kit::{
    self,
    continuation::{self, account_path, AfterSignIn},
};
use crate::{
    config::AccountConfig,
    core::{
        accounts::{
            self,
            emails::{self as account_emails, AddRefusal, CodeCheck},
            profile,
        },
        email::messages::{self, CodePurpose},
        matrix::provisioning::AfterCommit,
        rate_limit::{self, ClientIp, Limit, RateLimitError},
        sessions::end_oauth2_session,
        sign_in::{attempt_sign_in, AttemptError, Refusal},
    },
    domain::scope::is_valid_device_id,
    endpoints,
    http::{
        kit::{session::BrowserCookie, signed_in},
        AppState,
    },
    storage::{StorageError, User, UserEmail},
};

/// MSC4191 `account_management_actions_supported`: the `action` values `/account` serves, with
/// the older unstable names (`org.matrix.sessions_list`, …) that clients still send.
pub const ACTIONS: &[&str] = &[
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.account_deactivate",
    "org.matrix.cross_signing_reset",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
];

/// The [`ACTIONS`] this configuration serves (MSC4191 `account_management_actions_supported`):
/// all of them, but `org.matrix.account_deactivate` only when users may deactivate their
/// account.
pub fn supported_actions(account: &AccountConfig) -> Vec<&'static str> {
    ACTIONS
        .iter()
        .copied()
        .filter(|name| Action::parse(name).is_some_and(|a| a.allowed(account).is_ok()))
        .collect()
}

/// The account pages of our own, outside MSC4191 (not advertised in
/// `account_management_actions_supported`).
pub const OWN_ACTIONS: &[&str] = &["emails", "password"];

/// Where the account page is served (MSC4191 `account_management_uri`).
pub const PATH: &str = endpoints::ACCOUNT;

/// The longest unknown action or device ID repeated in a page, in characters.
const MAX_SHOWN_CHARS: usize = 100;

use crate::domain::account_management::Action;

/// What the account pages add to an [`Action`]: whether the configuration allows it, and its
/// page.
trait ActionPage: Copy {
    fn allowed(self, account: &AccountConfig) -> Result<(), &'static str>;
    fn path(self, device_id: Option<&str>) -> String;
}

impl ActionPage for Action {
    /// Does the configuration let users do what this page does? `Err` says why not.
    fn allowed(self, account: &AccountConfig) -> Result<(), &'static str> {
        let (allowed, refusal) = match self {
            Self::Emails => (
                account.email_change_allowed,
                "Email addresses can't be added or removed on this server.",
            ),
            Self::Password => (
                account.password_change_allowed,
                "Passwords can't be changed on this server.",
            ),
            Self::AccountDeactivate => (
                account.account_deactivation_allowed,
                "Accounts can't be deactivated by their users on this server.",
            ),
            _ => (true, ""),
        };
        if allowed {
            Ok(())
        } else {
            Err(refusal)
        }
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

    /// The same page, rebuilt from what we understand: a known action (MSC4191 names and our
    /// own pages') and a device ID of RFC 3986 unreserved characters (MSC2967); nothing else is
    /// carried.
    fn rebuilt(&self) -> String {
        let action = self
            .action
            .as_deref()
            .filter(|action| Action::parse(action).is_some());
        let device_id = self.device_id.as_deref().filter(|d| is_valid_device_id(d));
        account_path(action, device_id)
    }
}

/// The login page, to come back to `back` (an account page) afterwards.
fn sign_in_first(back: &str) -> Response {
    let after = AfterSignIn::from_next(back);
    Redirect::to(&continuation::sign_in_link(
        endpoints::LOGIN,
        after.as_ref(),
    ))
    .into_response()
}

/// The page for a storage failure on these pages.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    kit::unavailable(state, "account", error)
}

/// A time as the pages show it.
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
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

/// One sign-in of the user: an OAuth 2.0 session or a legacy login.
#[derive(Debug, Serialize)]
struct SessionView {
    /// "OAuth 2.0" or "legacy login".
    kind: &'static str,
    /// The client's name (OAuth 2.0) or the device's display name (legacy login).
    name: String,
    created_at: String,
    last_active_at: Option<String>,
    user_agent: Option<String>,
}

/// A Matrix device: the sessions of the user with one device ID (one, usually).
#[derive(Debug, Serialize)]
struct DeviceView {
    device_id: String,
    /// The name of its first session.
    name: String,
    created_at: String,
    last_active_at: Option<String>,
    sessions: Vec<SessionView>,
    view_url: String,
    delete_url: String,
}

/// A session before it is shown, with its times to compare.
struct Entry {
    device_id: Option<String>,
    created_at: DateTime<Utc>,
    last_active_at: Option<DateTime<Utc>>,
    kind: &'static str,
    name: String,
    user_agent: Option<String>,
}

impl Entry {
    fn view(&self) -> SessionView {
        SessionView {
            kind: self.kind,
            name: self.name.clone(),
            created_at: when(self.created_at),
            last_active_at: self.last_active_at.map(when),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// The user's active sign-ins.
struct Devices {
    /// By device ID, oldest device first.
    devices: Vec<DeviceView>,
    /// OAuth 2.0 sessions without a device (no MSC2967 device scope).
    apps: Vec<SessionView>,
}

impl Devices {
    fn find(&self, device_id: &str) -> Option<&DeviceView> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }
}

/// Reads the user's active OAuth 2.0 and compat sessions, grouped by device.
async fn load_devices(state: &AppState, user: &User) -> Result<Devices, StorageError> {
    let mut repo = state.storage.reader().await?;
    let oauth = repo.oauth2_sessions().list_active_for_user(user.id).await?;
    let legacy = repo.compat_sessions().list_active_for_user(user.id).await?;
    let mut client_names = HashMap::new();
    let mut entries = Vec::with_capacity(oauth.len() + legacy.len());
    for session in oauth {
        let name = match client_names.get(&session.client_id) {
            Some(name) => String::clone(name),
            None => {
                let name = repo
                    .clients()
                    .lookup(session.client_id)
                    .await?
                    .map_or_else(|| "An application".to_owned(), |c| clients::client_name(&c));
                client_names.insert(session.client_id, name.clone());
                name
            }
        };
        entries.push(Entry {
            device_id: session.device_id,
            created_at: session.created_at,
            last_active_at: session.last_active_at,
            kind: "OAuth 2.0",
            name,
            user_agent: session.user_agent,
        });
    }
    for session in legacy {
        entries.push(Entry {
            device_id: Some(session.device_id),
            created_at: session.created_at,
            last_active_at: session.last_active_at,
            kind: "legacy login",
            name: session
                .human_name
                .unwrap_or_else(|| "Unnamed device".to_owned()),
            user_agent: session.user_agent,
        });
    }
    drop(repo);
    entries.sort_by_key(|e| e.created_at);

    let mut grouped: Vec<(String, Vec<Entry>)> = Vec::new();
    let mut apps = Vec::new();
    for entry in entries {
        match entry.device_id.clone() {
            None => apps.push(entry.view()),
            Some(id) => match grouped.iter_mut().find(|(d, _)| *d == id) {
                Some((_, group)) => group.push(entry),
                None => grouped.push((id, vec![entry])),
            },
        }
    }
    let devices = grouped
        .into_iter()
        .map(|(device_id, group)| DeviceView {
            name: group[0].name.clone(),
            created_at: when(group[0].created_at),
            last_active_at: group
                .iter()
                .filter_map(|e| e.last_active_at)
                .max()
                .map(when),
            sessions: group.iter().map(Entry::view).collect(),
            view_url: Action::DeviceView.path(Some(&device_id)),
            delete_url: Action::DeviceDelete.path(Some(&device_id)),
            device_id,
        })
        .collect();
    Ok(Devices { devices, apps })
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
        Ok(None) => sign_in_first(&query.rebuilt()),
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
        (Action::Emails, _) => {
            let page = EmailsPage {
                done: done.map(|d| (d, done_email)),
                ..EmailsPage::default()
            };
            emails_page(state, cookie, user, page).await
        }
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
        (Action::CrossSigningReset, _) => account_page(
            state,
            StatusCode::OK,
            "pages/account_cross_signing.html",
            Action::CrossSigningReset,
            user,
            None,
            minijinja::context! {
                csrf => cookie.csrf_token(),
                action => PATH,
                allowed => false,
            },
        ),
        (Action::AccountDeactivate, _) => {
            password_form_page(state, cookie, user, parsed, StatusCode::OK, None, None).await
        }
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

/// An email address as the profile shows it.
#[derive(Debug, Serialize)]
struct EmailView {
    email: String,
    confirmed: bool,
}

/// The user's addresses, oldest first.
async fn load_emails(state: &AppState, user: &User) -> Result<Vec<UserEmail>, StorageError> {
    let mut repo = state.storage.reader().await?;
    repo.user_emails().list_for_user(user.id).await
}

/// The profile (MSC4191 `org.matrix.profile`, and the main page), with the display name's
/// form when users may change it; `error` is a refused display name: `(message, as typed)`.
async fn profile(
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
async fn profile_with_notice(
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
            linked_accounts => crate::http::upstream::account::linked_accounts(state, user).await,
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

/// A page whose form needs the current password: the password change ([`Action::Password`],
/// with "Your password was changed." after one) or the deactivation (MSC4191
/// `org.matrix.account_deactivate`), with an error after a refused attempt. An account without
/// a password gets neither form.
async fn password_form_page(
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

/// The devices list (MSC4191 `org.matrix.devices_list`), with "Signed out …" after a device
/// was signed out here (when it is indeed gone).
async fn devices_list(
    state: &AppState,
    user: &User,
    signed_out: Option<&str>,
    notice: Option<String>,
) -> Response {
    let found = match load_devices(state, user).await {
        Ok(found) => found,
        Err(e) => return unavailable(state, &e),
    };
    let notice = notice.or_else(|| {
        signed_out
            .filter(|d| is_valid_device_id(d) && found.find(d).is_none())
            .map(|d| format!("Signed out {d}."))
    });
    account_page(
        state,
        StatusCode::OK,
        "pages/account_devices.html",
        Action::DevicesList,
        user,
        notice,
        minijinja::context! {
            devices => found.devices,
            apps => found.apps,
        },
    )
}

/// The page for a device the user has no active session with.
fn unknown_device(state: &AppState, device_id: &str) -> Response {
    let shown: String = device_id.chars().take(MAX_SHOWN_CHARS).collect();
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::NOT_FOUND,
        "Unknown device",
        &format!(
            "You have no signed-in device with the ID “{shown}”. It may have been signed out \
             already: your account page lists the devices signed in now."
        ),
        None,
    )
}

/// One device (MSC4191 `org.matrix.device_view`), or the confirmation to sign it out
/// (`org.matrix.device_delete`, `confirm`); both post the same form.
async fn device_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    device_id: &str,
    confirm: bool,
) -> Response {
    let found = match load_devices(state, user).await {
        Ok(found) => found,
        Err(e) => return unavailable(state, &e),
    };
    let Some(device) = found.find(device_id) else {
        return unknown_device(state, device_id);
    };
    account_page(
        state,
        StatusCode::OK,
        "pages/account_device.html",
        if confirm {
            Action::DeviceDelete
        } else {
            Action::DeviceView
        },
        user,
        None,
        minijinja::context! {
            device => device,
            confirm => confirm,
            csrf => cookie.csrf_token(),
            action => PATH,
        },
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
            let back = match page {
                Some(Action::DeviceDelete) => Action::DeviceDelete
                    .path(device_id.as_deref().filter(|d| is_valid_device_id(d))),
                Some(page) => page.path(None),
                None => PATH.to_owned(),
            };
            return sign_in_first(&back);
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

/// The display name's form: checked ([`profile::check_display_name`]), stored, and pushed to
/// the homeserver's profile (a provisioning job, run after the commit).
async fn set_display_name(
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
                return Some(with_retry_after(page, retry_after));
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
async fn add_email(
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
async fn verify_email(
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
async fn resend_code(
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
async fn remove_email(state: &AppState, user: &User, form: AccountForm) -> Response {
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

/// The current password posted with a change on `page` ([`Action::Password`] or
/// [`Action::AccountDeactivate`]), and what to say when it is wrong.
struct CurrentPassword {
    page: Action,
    password: String,
    wrong: &'static str,
}

/// Checks the current password posted with a change as a sign-in is, behind the same rate
/// limits ([`attempt_sign_in`]: a stolen session can't be used to guess the password). `Err` is
/// the answer: the form's page again, saying why (429 with `Retry-After` over the limits).
async fn check_current_password(
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
        Some(retry_after) => with_retry_after(page, retry_after),
        None => page,
    })
}

/// A page refusing a request over a rate limit (429), with when to try again: `Retry-After`
/// (RFC 6585 §4).
pub(crate) fn with_retry_after(mut page: Response, retry_after: std::time::Duration) -> Response {
    page.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        rate_limit::retry_after_header(retry_after),
    );
    page
}

/// Changes the password, after the current one: checked as a sign-in is, behind the same rate
/// limits ([`attempt_sign_in`]: a stolen session can't be used to guess the password).
async fn change_password(
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
    let changed = async {
        let mut repo = state.storage.begin().await?;
        profile::change_password(&mut repo, user, &hashed).await?;
        repo.commit().await
    }
    .await;
    match changed {
        Ok(()) => {
            tracing::info!(user = %user.username, "account: password changed");
            done_redirect(Action::Password, Done::Password, None)
        }
        Err(e) => unavailable(state, &e),
    }
}

/// Signs a device out: every active session of the user with this device ID ends (OAuth 2.0
/// sessions through [`end_oauth2_session`], legacy logins through the compat layer's
/// `end_session`), in one transaction; the device's deletion on the homeserver runs right after
/// the commit (the homeserver caches introspection: deleting the device is what ends its access
/// at once). Then back to the devices list (303, RFC 9110 §15.4.4, so a reload doesn't post
/// again).
async fn end_device(state: &AppState, user: &User, device_id: &str) -> Response {
    let ended = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let mut jobs = AfterCommit::default();
        let mut found = false;
        for session in repo.oauth2_sessions().list_active_for_user(user.id).await? {
            if session.device_id.as_deref() == Some(device_id) {
                found = true;
                jobs.add(end_oauth2_session(&mut repo, session.id, now).await?);
            }
        }
        for session in repo.compat_sessions().list_active_for_user(user.id).await? {
            if session.device_id == device_id {
                found = true;
                jobs.push(end_compat_session(&mut repo, &session, now).await?);
            }
        }
        if !found {
            // Nothing written: the transaction rolls back when dropped.
            return Ok(None);
        }
        repo.commit().await?;
        Ok::<_, StorageError>(Some(jobs))
    }
    .await;
    match ended {
        Ok(Some(jobs)) => {
            jobs.run(state).await;
            let mut back = url::form_urlencoded::Serializer::new(String::new());
            back.append_pair("action", Action::DevicesList.name());
            if is_valid_device_id(device_id) {
                back.append_pair("signed_out", device_id);
            }
            Redirect::to(&format!("{PATH}?{}", back.finish())).into_response()
        }
        Ok(None) => unknown_device(state, device_id),
        Err(e) => unavailable(state, &e),
    }
}

/// MSC4191 `org.matrix.cross_signing_reset`: the homeserver lets the user replace their
/// cross-signing keys without interactive authentication for a while (the homeserver
/// contract's `allow_cross_signing_reset`).
async fn allow_cross_signing_reset(state: &AppState, user: &User) -> Response {
    match state
        .homeserver
        .allow_cross_signing_reset(&user.username)
        .await
    {
        Ok(()) => account_page(
            state,
            StatusCode::OK,
            "pages/account_cross_signing.html",
            Action::CrossSigningReset,
            user,
            None,
            minijinja::context! { allowed => true },
        ),
        Err(e) => {
            tracing::error!(user = %user.username, error = %e, "account: the homeserver did not allow the cross-signing reset");
            kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Your Matrix server can't allow the reset right now. Try again in a moment.",
                None,
            )
        }
    }
}

/// MSC4191 `org.matrix.account_deactivate`: after the current password (checked as the login
/// page does, behind the same rate limits: [`attempt_sign_in`]) and the confirmation, in one transaction: the user is
/// deactivated, every OAuth 2.0 and legacy session ends (their devices are deleted), every
/// browser session ends, and the deactivation on the homeserver is enqueued (without erasure);
/// the jobs run right after the commit. The browser is signed out.
async fn deactivate(
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
    use super::*;

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

    #[test]
    fn every_account_template_renders() {
        let t = crate::core::templates::Templates::new();
        let base = minijinja::context! {
            site_name => "S",
            stylesheet => "/s.css",
            nav => nav(Action::Profile, &AccountConfig::default()),
            username => "alice",
            notice => "<b>n</b>",
            csrf => "tok",
            action => PATH,
        };
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
                    ..base.clone()
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
        for name in [
            "pages/account_devices.html",
            "pages/account_device.html",
            "pages/account_cross_signing.html",
            "pages/account_deactivate.html",
            "pages/account_deactivated.html",
            "pages/account_emails.html",
            "pages/account_password.html",
            "pages/account_refused.html",
        ] {
            let device = DeviceView {
                device_id: "DEV".into(),
                name: "Phone".into(),
                created_at: "then".into(),
                last_active_at: None,
                sessions: vec![],
                view_url: "/v".into(),
                delete_url: "/d".into(),
            };
            let html = t.render(
                name,
                minijinja::context! {
                    devices => vec![&device],
                    apps => Vec::<SessionView>::new(),
                    device => &device,
                    confirm => true,
                    has_password => true,
                    allowed => false,
                    emails => vec![EmailItem { id: "01H".into(), email: "a@example.org".into(), confirmed: false }],
                    detail => "no",
                    min_length => 8,
                    ..base.clone()
                },
            );
            assert!(html.is_some(), "{name}");
        }
    }
}
