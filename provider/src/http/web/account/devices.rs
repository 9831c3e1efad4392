//! The devices pages: the list (MSC4191 `org.matrix.devices_list`), one device
//! (`org.matrix.device_view`), the confirmation to sign it out (`org.matrix.device_delete`),
//! and the form that signs it out.

use std::collections::HashMap;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{account_page, unavailable, ActionPage, MAX_SHOWN_CHARS, PATH};
use crate::core::{
    clients,
    matrix::provisioning::AfterCommit,
    sessions::{end_compat_session, end_oauth2_session},
};
use crate::domain::{account_management::Action, scope::is_valid_device_id};
use crate::http::{
    kit::{self, session::BrowserCookie},
    AppState,
};
use crate::storage::{StorageError, User};

/// A time as the pages show it.
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
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

/// The devices list (MSC4191 `org.matrix.devices_list`), with "Signed out …" after a device
/// was signed out here (when it is indeed gone).
pub(super) async fn devices_list(
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
pub(super) async fn device_page(
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

/// Signs a device out: every active session of the user with this device ID ends (OAuth 2.0
/// sessions through [`end_oauth2_session`], legacy logins through the compat layer's
/// `end_session`), in one transaction; the device's deletion on the homeserver runs right after
/// the commit (the homeserver caches introspection: deleting the device is what ends its access
/// at once). Then back to the devices list (303, RFC 9110 §15.4.4, so a reload doesn't post
/// again).
pub(super) async fn end_device(state: &AppState, user: &User, device_id: &str) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::web::account::tests::page_context;

    #[test]
    fn the_devices_templates_render() {
        let t = crate::core::templates::Templates::new();
        let device = DeviceView {
            device_id: "DEV".into(),
            name: "Phone".into(),
            created_at: "then".into(),
            last_active_at: None,
            sessions: vec![],
            view_url: "/v".into(),
            delete_url: "/d".into(),
        };
        for name in ["pages/account_devices.html", "pages/account_device.html"] {
            let html = t.render(
                name,
                minijinja::context! {
                    devices => vec![&device],
                    apps => Vec::<SessionView>::new(),
                    device => &device,
                    confirm => true,
                    ..page_context()
                },
            );
            assert!(html.is_some(), "{name}");
        }
    }
}
