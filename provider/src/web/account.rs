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
//! An unknown action shows the profile with a notice (MSC4191: "the server SHOULD fall back to
//! the main account management page"). A signed-out browser goes to the login page first and
//! comes back to the same URL (see [`return_target`]).
//!
//! `POST /account` (CSRF, like every form: the synchroniser token pattern of
//! [`super::session`]) does the changes, each in one transaction; the homeserver jobs it
//! enqueues (device deletions, deactivation) run right after the commit, so the homeserver
//! knows before the page answers.

use std::collections::HashMap;

use axum::{
    extract::{Form, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    accounts,
    app::AppState,
    domain::scope::is_valid_device_id,
    endpoints,
    matrix::{
        compat,
        provisioning::AfterCommit,
    },
    oauth2::sessions::end_oauth2_session,
    storage::{StorageError, User},
    web::{
        self,
        consent::signed_in,
        login::{check_password, Refusal},
        session::BrowserCookie,
    },
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

/// Where the account page is served (MSC4191 `account_management_uri`).
pub const PATH: &str = endpoints::ACCOUNT;

/// The longest unknown action or device ID repeated in a page, in characters.
const MAX_SHOWN_CHARS: usize = 100;

/// What a page of `/account` shows: an MSC4191 action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Profile,
    DevicesList,
    DeviceView,
    DeviceDelete,
    AccountDeactivate,
    CrossSigningReset,
}

impl Action {
    /// An MSC4191 action name, the stable ones and the older unstable aliases alike.
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "org.matrix.profile" => Self::Profile,
            "org.matrix.devices_list" | "org.matrix.sessions_list" => Self::DevicesList,
            "org.matrix.device_view" | "org.matrix.session_view" => Self::DeviceView,
            "org.matrix.device_delete" | "org.matrix.session_end" => Self::DeviceDelete,
            "org.matrix.account_deactivate" => Self::AccountDeactivate,
            "org.matrix.cross_signing_reset" => Self::CrossSigningReset,
            _ => return None,
        })
    }

    /// The stable name, for our own links.
    fn name(self) -> &'static str {
        match self {
            Self::Profile => "org.matrix.profile",
            Self::DevicesList => "org.matrix.devices_list",
            Self::DeviceView => "org.matrix.device_view",
            Self::DeviceDelete => "org.matrix.device_delete",
            Self::AccountDeactivate => "org.matrix.account_deactivate",
            Self::CrossSigningReset => "org.matrix.cross_signing_reset",
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
}

impl AccountQuery {
    fn parse(query: &str) -> Self {
        let mut parsed = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "action" => &mut parsed.action,
                "device_id" => &mut parsed.device_id,
                "signed_out" => &mut parsed.signed_out,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        parsed
    }

    /// The same page, rebuilt from what we understand: a known action (MSC4191 names only) and
    /// a device ID of RFC 3986 unreserved characters (MSC2967); nothing else is carried.
    fn rebuilt(&self) -> String {
        let action = self
            .action
            .as_deref()
            .filter(|action| ACTIONS.contains(action));
        let device_id = self.device_id.as_deref().filter(|d| is_valid_device_id(d));
        account_path(action, device_id)
    }
}

/// `/account` with these parameters.
fn account_path(action: Option<&str>, device_id: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(action) = action {
        query.append_pair("action", action);
    }
    if let Some(device_id) = device_id {
        query.append_pair("device_id", device_id);
    }
    let query = query.finish();
    if query.is_empty() {
        PATH.to_owned()
    } else {
        format!("{PATH}?{query}")
    }
}

/// Where the login page may send the browser back to, from its `next` parameter: only this
/// page, `/account` with its query rebuilt from a known `action` and a valid `device_id`
/// (anything else dropped), so `next` can't redirect anywhere else (no open redirect,
/// RFC 9700 §4.11).
pub fn return_target(next: &str) -> Option<String> {
    let query = match next.strip_prefix(PATH)? {
        "" => "",
        rest => rest.strip_prefix('?')?,
    };
    Some(AccountQuery::parse(query).rebuilt())
}

/// The login page, to come back to `back` (an account page) afterwards.
fn sign_in_first(back: &str) -> Response {
    let next: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", back)
        .finish();
    Redirect::to(&format!("{}?{next}", web::login::PATH)).into_response()
}

/// The page for a storage failure on these pages.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    web::unavailable(state, "account", error)
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

/// The navigation between the account pages, `current` marked.
fn nav(current: Action) -> Vec<NavItem> {
    let current = match current {
        Action::DeviceView | Action::DeviceDelete => Action::DevicesList,
        other => other,
    };
    [
        (Action::Profile, "Profile"),
        (Action::DevicesList, "Devices"),
        (Action::CrossSigningReset, "Reset cross-signing"),
        (Action::AccountDeactivate, "Deactivate account"),
    ]
    .into_iter()
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
    web::page(
        state,
        status,
        template,
        minijinja::context! {
            nav => nav(current),
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
                    .map_or_else(|| "An application".to_owned(), |c| web::client_name(&c));
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
    let cookie = web::load_cookie(&state, jar);
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
    let Some(action) = action else {
        return profile(state, user, None).await;
    };
    let Some(parsed) = Action::parse(action) else {
        // MSC4191: an action the server doesn't support falls back to the main page.
        let shown: String = action.chars().take(MAX_SHOWN_CHARS).collect();
        let notice = format!("This page doesn't know the action “{shown}”: here is your profile.");
        return profile(state, user, Some(notice)).await;
    };
    match (parsed, device_id) {
        (Action::Profile, _) => profile(state, user, None).await,
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
            deactivate_page(state, cookie, user, StatusCode::OK, None).await
        }
    }
}

/// An email address as the profile shows it.
#[derive(Debug, Serialize)]
struct EmailView {
    email: String,
    confirmed: bool,
}

/// The profile (MSC4191 `org.matrix.profile`, and the main page).
async fn profile(state: &AppState, user: &User, notice: Option<String>) -> Response {
    let emails = async {
        let mut repo = state.storage.reader().await?;
        repo.user_emails().list_for_user(user.id).await
    }
    .await;
    let emails: Vec<EmailView> = match emails {
        Ok(emails) => emails
            .into_iter()
            .map(|e| EmailView {
                email: e.email,
                confirmed: e.confirmed_at.is_some(),
            })
            .collect(),
        Err(e) => return unavailable(state, &e),
    };
    account_page(
        state,
        StatusCode::OK,
        "pages/account.html",
        Action::Profile,
        user,
        notice,
        minijinja::context! {
            matrix_id => format!("@{}:{}", user.username, state.settings.matrix.homeserver),
            emails => emails,
            created_at => user.created_at.format("%Y-%m-%d").to_string(),
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
    web::error_page(
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

/// The deactivation page (MSC4191 `org.matrix.account_deactivate`), with an error after a
/// refused attempt.
async fn deactivate_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
    status: StatusCode,
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
    account_page(
        state,
        status,
        "pages/account_deactivate.html",
        Action::AccountDeactivate,
        user,
        None,
        minijinja::context! {
            has_password => has_password,
            csrf => cookie.csrf_token(),
            action => PATH,
            error => error,
        },
    )
}

/// The form of `POST /account`.
#[derive(Default, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    /// `end_device`, `allow_cross_signing_reset` or `deactivate`.
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
}

/// `POST /account`: sign out a device, allow a cross-signing reset, deactivate the account.
pub async fn post(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Form(form): Form<AccountForm>,
) -> Response {
    let mut cookie = web::load_cookie(&state, jar);
    let response = submitted(&state, &mut cookie, form).await;
    (cookie.into_jar(), response).into_response()
}

async fn submitted(state: &AppState, cookie: &mut BrowserCookie, form: AccountForm) -> Response {
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        return web::csrf_refused(state, &e);
    }
    let device_id = form
        .device_id
        .clone()
        .filter(|d| !d.is_empty() && d.len() <= 255);
    let user = match signed_in(state, cookie).await {
        Ok(Some((_, user))) => user,
        Ok(None) => {
            // Signed out meanwhile: sign in, then back to the page the form was on.
            let back = match form.action.as_str() {
                "end_device" => Action::DeviceDelete
                    .path(device_id.as_deref().filter(|d| is_valid_device_id(d))),
                "allow_cross_signing_reset" => Action::CrossSigningReset.path(None),
                "deactivate" => Action::AccountDeactivate.path(None),
                _ => PATH.to_owned(),
            };
            return sign_in_first(&back);
        }
        Err(e) => return unavailable(state, &e),
    };
    match form.action.as_str() {
        "end_device" => match device_id {
            Some(device_id) => end_device(state, &user, &device_id).await,
            None => web::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::BAD_REQUEST,
                "No device chosen",
                "Choose the device to sign out from your list of devices.",
                None,
            ),
        },
        "allow_cross_signing_reset" => allow_cross_signing_reset(state, &user).await,
        "deactivate" => deactivate(state, cookie, &user, form).await,
        _ => web::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::BAD_REQUEST,
            "Unknown request",
            "This page can't do what the form asked. Go back, reload the page and try again.",
            None,
        ),
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
                jobs.push(compat::end_session(&mut repo, &session, now).await?);
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
            web::error_page(
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
/// page does, [`check_password`]) and the confirmation, in one transaction: the user is
/// deactivated, every OAuth 2.0 and legacy session ends (their devices are deleted), every
/// browser session ends, and the deactivation on the homeserver is enqueued (without erasure);
/// the jobs run right after the commit. The browser is signed out.
async fn deactivate(
    state: &AppState,
    cookie: &mut BrowserCookie,
    user: &User,
    form: AccountForm,
) -> Response {
    let password = form.password.unwrap_or_default();
    if password.is_empty() {
        return deactivate_page(
            state,
            cookie,
            user,
            StatusCode::BAD_REQUEST,
            Some("Enter your current password."),
        )
        .await;
    }
    if form.confirm.as_deref().unwrap_or_default().is_empty() {
        return deactivate_page(
            state,
            cookie,
            user,
            StatusCode::BAD_REQUEST,
            Some("Tick the box to confirm that you want to deactivate your account."),
        )
        .await;
    }
    match check_password(state, &user.username, password).await {
        Ok(Ok(_)) => {}
        Ok(Err(refusal)) => {
            let error = match refusal {
                Refusal::WrongCredentials => "Wrong password.",
                // Not reached: only active users are signed in here.
                Refusal::Locked | Refusal::Deactivated => {
                    "This account can't be changed: it is locked or deactivated."
                }
            };
            return deactivate_page(state, cookie, user, StatusCode::FORBIDDEN, Some(error)).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "account: can't check the password");
            return web::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Your account can't be deactivated right now. Try again in a moment.",
                None,
            );
        }
    }
    let done = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let jobs = accounts::deactivate(&mut repo, &user, false, now).await?;
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
    web::page(
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
        assert_eq!(
            Action::parse("org.matrix.session_end"),
            Some(Action::DeviceDelete)
        );
        assert_eq!(Action::parse("org.matrix.unknown"), None);
    }

    #[test]
    fn the_return_target_is_only_ever_an_account_page() {
        assert_eq!(return_target("/account").as_deref(), Some("/account"));
        assert_eq!(
            return_target("/account?action=org.matrix.device_view&device_id=ABCDEF").as_deref(),
            Some("/account?action=org.matrix.device_view&device_id=ABCDEF")
        );
        // Unknown parameters, unknown actions, invalid device IDs are dropped; the first of a
        // repeated parameter counts.
        assert_eq!(
            return_target(
                "/account?x=https://evil.example&device_id=A%2FB&action=org.matrix.sessions_list&action=evil"
            )
            .as_deref(),
            Some("/account?action=org.matrix.sessions_list")
        );
        assert_eq!(
            return_target("/account?action=%2F%2Fevil.example").as_deref(),
            Some("/account")
        );
        for refused in [
            "",
            "/",
            "/accounts",
            "/account/x",
            "/account#x",
            "//evil.example/account",
            "https://evil.example/account",
            "account",
            "/ACCOUNT",
        ] {
            assert_eq!(return_target(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_navigation_marks_the_current_page() {
        let items = nav(Action::DeviceDelete);
        let current: Vec<&str> = items
            .iter()
            .filter(|i| i.current)
            .map(|i| i.label)
            .collect();
        assert_eq!(current, ["Devices"]);
        assert_eq!(items[0].href, "/account");
        assert_eq!(items[1].href, "/account?action=org.matrix.devices_list");
    }

    #[test]
    fn every_account_template_renders() {
        let t = web::Templates::new();
        let base = minijinja::context! {
            site_name => "S",
            stylesheet => "/s.css",
            nav => nav(Action::Profile),
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
                    ..base.clone()
                },
            )
            .unwrap();
        assert!(html.contains("@alice:example.org"), "{html}");
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
                    ..base.clone()
                },
            );
            assert!(html.is_some(), "{name}");
        }
    }
}
