//! The legacy Synapse admin API, which providers written for older Synapse versions use instead
//! of `/_synapse/mas/*` (homeserver contract, "Legacy admin-API path"). The shared secret acts
//! as the admin token. `{mxid}` path parameters arrive percent-encoded (`%40alice%3Ahs`) and are
//! decoded by the router; IDs of other servers are 400 `M_INVALID_PARAM`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::MatrixError;
use crate::ids::{check_localpart, local_localpart, user_id};
use crate::json_body::{required_query_param, JsonObject};
use crate::mas_api::check_available;
use crate::store::{UserEntry, UserRecord};
use crate::AppState;

type Answer = Result<(StatusCode, Json<Value>), MatrixError>;

fn empty(status: StatusCode) -> Answer {
    Ok((status, Json(json!({}))))
}

/// The user as `GET /_synapse/admin/v2/users/{mxid}` shows it.
fn user_json(record: &UserRecord, server_name: &str) -> Value {
    let threepids: Vec<Value> = record
        .emails
        .iter()
        .map(|address| json!({ "medium": "email", "address": address }))
        .collect();
    json!({
        "name": user_id(&record.localpart, server_name),
        "displayname": record.displayname,
        "avatar_url": record.avatar_url,
        "deactivated": record.deactivated,
        "erased": record.erased,
        "locked": record.locked,
        "suspended": record.suspended,
        "admin": record.admin,
        "is_guest": false,
        "shadow_banned": false,
        "user_type": null,
        "threepids": threepids,
        "external_ids": [],
    })
}

/// Runs `f` on an existing local user; 404 `M_NOT_FOUND` otherwise.
fn with_user<R>(
    state: &AppState,
    mxid: &str,
    f: impl FnOnce(&mut UserEntry) -> Result<R, MatrixError>,
) -> Result<R, MatrixError> {
    let localpart = local_localpart(mxid, state.server_name())?;
    state.store().with(|users| {
        users
            .get_mut(&localpart)
            .ok_or_else(MatrixError::user_not_found)
            .and_then(f)
    })
}

/// `GET /_synapse/admin/v2/users/{mxid}` → the user; 404 unknown.
pub(crate) async fn get_user(State(state): State<AppState>, Path(mxid): Path<String>) -> Answer {
    let record = with_user(&state, &mxid, |entry| Ok(entry.record.clone()))?;
    Ok((
        StatusCode::OK,
        Json(user_json(&record, state.server_name())),
    ))
}

/// A string-or-null field: absent → `None`; present → `Some(value)` with `null` or `""` meaning
/// "clear".
fn nullable_str(body: &JsonObject, key: &str) -> Result<Option<Option<String>>, MatrixError> {
    if !body.has(key) {
        return Ok(None);
    }
    Ok(Some(body.opt_str(key)?.filter(|s| !s.is_empty())))
}

/// `threepids: [{medium, address}]`; only `email` is kept by this homeserver, so other media are
/// 400 `M_INVALID_PARAM`.
fn email_threepids(body: &JsonObject) -> Result<Option<Vec<String>>, MatrixError> {
    let Some(threepids) = body.opt_object_list("threepids")? else {
        return Ok(None);
    };
    let mut emails = Vec::new();
    for threepid in threepids {
        let medium = threepid.req_str("medium")?;
        let address = threepid.req_str("address")?;
        if medium != "email" {
            return Err(MatrixError::invalid_param(format!(
                "Unsupported threepid medium: {medium}"
            )));
        }
        if !emails.contains(&address) {
            emails.push(address);
        }
    }
    Ok(Some(emails))
}

/// `PUT /_synapse/admin/v2/users/{mxid}` → 201 with the user when created, 200 when updated.
/// Fields: `displayname`, `avatar_url`, `threepids` (replace the list), `locked`, `deactivated`
/// (true deactivates as `delete_user` without erase; false reactivates), `admin`. A new user's
/// display name defaults to its localpart (Synapse registration); its localpart must be valid.
pub(crate) async fn put_user(
    State(state): State<AppState>,
    Path(mxid): Path<String>,
    body: Bytes,
) -> Answer {
    let localpart = local_localpart(&mxid, state.server_name())?;
    let body = JsonObject::parse(&body)?;
    let displayname = nullable_str(&body, "displayname")?;
    let avatar_url = nullable_str(&body, "avatar_url")?;
    let emails = email_threepids(&body)?;
    let locked = body.opt_bool("locked")?;
    let deactivated = body.opt_bool("deactivated")?;
    let admin = body.opt_bool("admin")?;

    let server_name = state.server_name().to_owned();
    let (created, record) = state.store().with(|users| {
        let created = !users.contains_key(&localpart);
        if created {
            check_localpart(&localpart, &server_name)?;
            let mut record = UserRecord::new(localpart.clone());
            record.displayname = Some(localpart.clone());
            users.insert(
                localpart.clone(),
                UserEntry {
                    record,
                    devices: Default::default(),
                },
            );
        }
        let entry = users
            .get_mut(&localpart)
            .ok_or_else(MatrixError::user_not_found)?;
        if let Some(name) = displayname {
            entry.record.displayname = name;
        }
        if let Some(url) = avatar_url {
            entry.record.avatar_url = url;
        }
        if let Some(emails) = emails {
            entry.record.emails = emails;
        }
        if let Some(locked) = locked {
            entry.record.locked = locked;
        }
        if let Some(admin) = admin {
            entry.record.admin = admin;
        }
        match deactivated {
            Some(true) if !entry.record.deactivated => entry.deactivate(false),
            Some(false) if entry.record.deactivated => entry.reactivate(),
            _ => {}
        }
        Ok::<_, MatrixError>((created, entry.record.clone()))
    })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user_json(&record, state.server_name()))))
}

/// `GET /_synapse/admin/v2/users/{mxid}/devices` → `{devices: [...], total}`; 404 unknown user.
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    Path(mxid): Path<String>,
) -> Answer {
    let devices: Vec<Value> = with_user(&state, &mxid, |entry| {
        Ok(entry
            .devices
            .values()
            .map(|device| {
                json!({
                    "device_id": device.device_id,
                    "display_name": device.display_name,
                    "user_id": user_id(&entry.record.localpart, state.server_name()),
                    "last_seen_ip": null,
                    "last_seen_ts": null,
                })
            })
            .collect())
    })?;
    let total = devices.len();
    Ok((
        StatusCode::OK,
        Json(json!({ "devices": devices, "total": total })),
    ))
}

/// `POST /_synapse/admin/v2/users/{mxid}/devices {device_id}` → 201 `{}`, also when the device
/// already exists (then nothing changes); 404 unknown user.
pub(crate) async fn create_device(
    State(state): State<AppState>,
    Path(mxid): Path<String>,
    body: Bytes,
) -> Answer {
    let body = JsonObject::parse(&body)?;
    let device_id = body.req_str("device_id")?;
    if device_id.is_empty() {
        return Err(MatrixError::invalid_param("device_id must not be empty"));
    }
    with_user(&state, &mxid, |entry| {
        entry.upsert_device(&device_id, None);
        Ok(())
    })?;
    empty(StatusCode::CREATED)
}

/// `GET /_synapse/admin/v2/users/{mxid}/devices/{device_id}`; 404 unknown user or device.
pub(crate) async fn get_device(
    State(state): State<AppState>,
    Path((mxid, device_id)): Path<(String, String)>,
) -> Answer {
    let device = with_user(&state, &mxid, |entry| {
        entry
            .devices
            .get(&device_id)
            .cloned()
            .ok_or_else(MatrixError::device_not_found)
    })?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "device_id": device.device_id,
            "display_name": device.display_name,
            "user_id": mxid,
            "last_seen_ip": null,
            "last_seen_ts": null,
        })),
    ))
}

/// `PUT /_synapse/admin/v2/users/{mxid}/devices/{device_id} {display_name}` → 200 `{}`; 404
/// unknown user or device (as Synapse's `update_device`). An empty body changes nothing.
pub(crate) async fn update_device(
    State(state): State<AppState>,
    Path((mxid, device_id)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let body = JsonObject::parse_allow_empty(&body)?;
    let display_name = body.opt_str("display_name")?;
    with_user(&state, &mxid, |entry| {
        let device = entry
            .devices
            .get_mut(&device_id)
            .ok_or_else(MatrixError::device_not_found)?;
        if display_name.is_some() {
            device.display_name = display_name;
        }
        Ok(())
    })?;
    empty(StatusCode::OK)
}

/// `DELETE /_synapse/admin/v2/users/{mxid}/devices/{device_id}` → 200 `{}`, idempotent; 404
/// unknown user.
pub(crate) async fn delete_device(
    State(state): State<AppState>,
    Path((mxid, device_id)): Path<(String, String)>,
) -> Answer {
    with_user(&state, &mxid, |entry| {
        entry.devices.remove(&device_id);
        Ok(())
    })?;
    empty(StatusCode::OK)
}

/// `POST /_synapse/admin/v2/users/{mxid}/delete_devices {devices}` → 200 `{}`; 404 unknown user.
pub(crate) async fn delete_devices(
    State(state): State<AppState>,
    Path(mxid): Path<String>,
    body: Bytes,
) -> Answer {
    let body = JsonObject::parse(&body)?;
    let devices = body.req_str_list("devices")?;
    with_user(&state, &mxid, |entry| {
        for device_id in &devices {
            entry.devices.remove(device_id);
        }
        Ok(())
    })?;
    empty(StatusCode::OK)
}

/// `GET /_synapse/admin/v1/username_available?username=` → 200 `{"available": true}`, or 400
/// `M_USER_IN_USE` / `M_INVALID_USERNAME`.
pub(crate) async fn username_available(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Answer {
    let username = required_query_param(query.as_deref(), "username")?;
    check_available(&state, &username)?;
    Ok((StatusCode::OK, Json(json!({ "available": true }))))
}

/// `POST /_synapse/admin/v1/deactivate/{mxid} {erase?}` → 200
/// `{"id_server_unbind_result": "success"}`; an empty body means `erase: false`; 404 unknown.
pub(crate) async fn deactivate(
    State(state): State<AppState>,
    Path(mxid): Path<String>,
    body: Bytes,
) -> Answer {
    let body = JsonObject::parse_allow_empty(&body)?;
    let erase = body.opt_bool("erase")?.unwrap_or(false);
    with_user(&state, &mxid, |entry| {
        entry.deactivate(erase);
        Ok(())
    })?;
    Ok((
        StatusCode::OK,
        Json(json!({ "id_server_unbind_result": "success" })),
    ))
}
