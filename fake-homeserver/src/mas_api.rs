//! `/_synapse/mas/*`: the API the provider uses to keep the homeserver's users and devices in
//! step (homeserver contract, "Provider → Synapse"; Synapse ≥ 1.136). Every route sits behind
//! the shared-secret check ([`crate::secret::require_secret`]).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::MatrixError;
use crate::ids::{check_localpart, user_id};
use crate::json_body::{required_query_param, JsonObject};
use crate::store::{UserEntry, UserRecord, Users};
use crate::AppState;

type Answer = Result<(StatusCode, Json<Value>), MatrixError>;

fn ok() -> Answer {
    Ok((StatusCode::OK, Json(json!({}))))
}

fn created_or_ok(created: bool) -> Answer {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({}))))
}

/// Runs `f` on an existing user; 404 `M_NOT_FOUND` "User not found" otherwise (every call in
/// the contract that names a user requires it to exist).
fn with_user<R>(
    state: &AppState,
    localpart: &str,
    f: impl FnOnce(&mut UserEntry) -> Result<R, MatrixError>,
) -> Result<R, MatrixError> {
    state.store().with(|users: &mut Users| {
        users
            .get_mut(localpart)
            .ok_or_else(MatrixError::user_not_found)
            .and_then(f)
    })
}

/// An empty device ID cannot name a device.
fn check_device_id(device_id: &str) -> Result<(), MatrixError> {
    if device_id.is_empty() {
        return Err(MatrixError::invalid_param("device_id must not be empty"));
    }
    Ok(())
}

/// `GET /_synapse/mas/query_user?localpart=` → the user's profile and status; 404 unknown.
pub(crate) async fn query_user(State(state): State<AppState>, RawQuery(query): RawQuery) -> Answer {
    let localpart = required_query_param(query.as_deref(), "localpart")?;
    let user = state
        .store()
        .user(&localpart)
        .ok_or_else(MatrixError::user_not_found)?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "user_id": user_id(&localpart, state.server_name()),
            "display_name": user.displayname,
            "avatar_url": user.avatar_url,
            "is_suspended": user.suspended,
            "is_deactivated": user.deactivated,
        })),
    ))
}

/// `GET /_synapse/mas/is_localpart_available?localpart=` → 200 `{}` when free; 400
/// `M_INVALID_USERNAME` when malformed; 400 `M_USER_IN_USE` when taken (Synapse's
/// `check_username`).
pub(crate) async fn is_localpart_available(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Answer {
    let localpart = required_query_param(query.as_deref(), "localpart")?;
    check_available(&state, &localpart)?;
    ok()
}

/// Synapse's `check_username`: valid, then not taken.
pub(crate) fn check_available(state: &AppState, localpart: &str) -> Result<(), MatrixError> {
    check_localpart(localpart, state.server_name())?;
    if state.store().user(localpart).is_some() {
        return Err(MatrixError::user_in_use());
    }
    Ok(())
}

/// Replaces an email list, keeping first occurrences in order.
fn dedup_emails(emails: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(emails.len());
    for email in emails {
        if !out.contains(&email) {
            out.push(email);
        }
    }
    out
}

/// `POST /_synapse/mas/provision_user` → 201 `{}` created, 200 `{}` updated.
/// Each `set_X` / `unset_X` pair is exclusive: both keys present → 400 `M_INVALID_PARAM` (Synapse
/// checks key presence, not values). A new user gets `set_displayname`, or else its localpart as
/// display name, as Synapse's registration does; the localpart must be valid
/// (`M_INVALID_USERNAME`).
pub(crate) async fn provision_user(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    for (set, unset) in [
        ("set_displayname", "unset_displayname"),
        ("set_avatar_url", "unset_avatar_url"),
        ("set_emails", "unset_emails"),
    ] {
        if body.has(set) && body.has(unset) {
            return Err(MatrixError::invalid_param(format!(
                "Cannot specify both {unset} and {set}"
            )));
        }
    }
    let set_displayname = body.opt_str("set_displayname")?;
    let unset_displayname = body.opt_bool("unset_displayname")?.unwrap_or(false);
    let set_avatar_url = body.opt_str("set_avatar_url")?;
    let unset_avatar_url = body.opt_bool("unset_avatar_url")?.unwrap_or(false);
    let set_emails = body.opt_str_list("set_emails")?;
    let unset_emails = body.opt_bool("unset_emails")?.unwrap_or(false);
    let locked = body.opt_bool("locked")?;

    let server_name = state.server_name().to_owned();
    let created = state.store().with(|users| {
        if let Some(entry) = users.get_mut(&localpart) {
            let user = &mut entry.record;
            if unset_displayname {
                user.displayname = None;
            } else if let Some(name) = set_displayname {
                // Synapse stores an empty display name as none.
                user.displayname = Some(name).filter(|n| !n.is_empty());
            }
            if unset_avatar_url {
                user.avatar_url = None;
            } else if let Some(url) = set_avatar_url {
                user.avatar_url = Some(url).filter(|u| !u.is_empty());
            }
            if unset_emails {
                user.emails.clear();
            } else if let Some(emails) = set_emails {
                user.emails = dedup_emails(emails);
            }
            if let Some(locked) = locked {
                user.locked = locked;
            }
            return Ok(false);
        }
        check_localpart(&localpart, &server_name)?;
        let record = UserRecord {
            displayname: Some(set_displayname.unwrap_or_else(|| localpart.clone()))
                .filter(|n| !n.is_empty()),
            avatar_url: set_avatar_url.filter(|u| !u.is_empty()),
            emails: dedup_emails(set_emails.unwrap_or_default()),
            locked: locked.unwrap_or(false),
            ..UserRecord::new(localpart.clone())
        };
        users.insert(
            localpart.clone(),
            UserEntry {
                record,
                devices: Default::default(),
            },
        );
        Ok(true)
    })?;
    created_or_ok(created)
}

/// `POST /_synapse/mas/delete_user {localpart, erase}` → 200 `{}`: deactivates (devices and
/// emails removed); `erase` also clears the profile. 404 unknown.
pub(crate) async fn delete_user(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    let erase = body.req_bool("erase")?;
    with_user(&state, &localpart, |entry| {
        entry.deactivate(erase);
        Ok(())
    })?;
    ok()
}

/// `POST /_synapse/mas/reactivate_user {localpart}` → 200 `{}`; 404 unknown.
pub(crate) async fn reactivate_user(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    with_user(&state, &localpart, |entry| {
        entry.reactivate();
        Ok(())
    })?;
    ok()
}

/// `POST /_synapse/mas/set_displayname {localpart, displayname}` → 200 `{}`; 404 unknown.
pub(crate) async fn set_displayname(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    let displayname = body.req_str("displayname")?;
    with_user(&state, &localpart, |entry| {
        entry.record.displayname = Some(displayname).filter(|n| !n.is_empty());
        Ok(())
    })?;
    ok()
}

/// `POST /_synapse/mas/unset_displayname {localpart}` → 200 `{}`; 404 unknown.
pub(crate) async fn unset_displayname(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    with_user(&state, &localpart, |entry| {
        entry.record.displayname = None;
        Ok(())
    })?;
    ok()
}

/// `POST /_synapse/mas/upsert_device {localpart, device_id, display_name?}` → 201 `{}` created,
/// 200 `{}` when it existed (display name updated when given); 404 unknown user.
pub(crate) async fn upsert_device(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    let device_id = body.req_str("device_id")?;
    let display_name = body.opt_str("display_name")?;
    check_device_id(&device_id)?;
    let created = with_user(&state, &localpart, |entry| {
        Ok(entry.upsert_device(&device_id, display_name))
    })?;
    created_or_ok(created)
}

/// `POST /_synapse/mas/update_device_display_name {localpart, device_id, display_name}` → 200
/// `{}`; 404 when the user or the device is unknown.
pub(crate) async fn update_device_display_name(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    let device_id = body.req_str("device_id")?;
    let display_name = body.req_str("display_name")?;
    with_user(&state, &localpart, |entry| {
        let device = entry
            .devices
            .get_mut(&device_id)
            .ok_or_else(MatrixError::device_not_found)?;
        device.display_name = Some(display_name);
        Ok(())
    })?;
    ok()
}

/// `POST /_synapse/mas/delete_device {localpart, device_id}` → 204 without a body, also when the
/// device is already gone (idempotent); 404 unknown user (`synapse/rest/synapse/mas/devices.py`
/// answers `HTTPStatus.NO_CONTENT`).
pub(crate) async fn delete_device(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, MatrixError> {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    let device_id = body.req_str("device_id")?;
    with_user(&state, &localpart, |entry| {
        entry.devices.remove(&device_id);
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /_synapse/mas/sync_devices {localpart, devices}` → 200 `{}`: afterwards the user's
/// devices are exactly that set; devices kept keep their display names, new ones have none.
/// 404 unknown user.
pub(crate) async fn sync_devices(State(state): State<AppState>, body: Bytes) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    let wanted = body.req_str_list("devices")?;
    for device_id in &wanted {
        check_device_id(device_id)?;
    }
    with_user(&state, &localpart, |entry| {
        entry.devices.retain(|id, _| wanted.contains(id));
        for device_id in &wanted {
            entry.upsert_device(device_id, None);
        }
        Ok(())
    })?;
    ok()
}

/// `POST /_synapse/mas/allow_cross_signing_reset {localpart}` → 200 `{}`; 404 unknown.
pub(crate) async fn allow_cross_signing_reset(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer {
    let body = JsonObject::parse(&body)?;
    let localpart = body.req_str("localpart")?;
    with_user(&state, &localpart, |entry| {
        entry.record.cross_signing_reset_allowed = true;
        Ok(())
    })?;
    ok()
}
