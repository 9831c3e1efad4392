//! The Matrix client-server API this homeserver serves itself: discovery (MSC2965) and the few
//! authenticated endpoints a client needs to see who it is.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::auth::Requester;
use crate::error::MatrixError;
use crate::upstream::Metadata;
use crate::AppState;

async fn metadata(state: &AppState) -> Result<Metadata, MatrixError> {
    state.upstream().metadata().await.map_err(|error| {
        tracing::warn!(%error, "fetching the provider metadata failed");
        MatrixError::unavailable("Unable to fetch the authorization server metadata")
    })
}

/// `GET /.well-known/matrix/client` (Matrix client-server API "Server Discovery"; the
/// `org.matrix.msc2965.authentication` block for older OIDC-aware clients, MSC2965). When the
/// provider cannot be reached the block is left out rather than failing the whole document, so
/// clients can still find the homeserver.
pub(crate) async fn well_known(State(state): State<AppState>) -> Json<Value> {
    let document = match metadata(&state).await {
        Ok(m) => crate::client_well_known(
            state.public_base(),
            &m.issuer,
            m.account_management_uri.as_deref(),
        ),
        Err(_) => json!({ "m.homeserver": { "base_url": state.public_base().as_str() } }),
    };
    Json(document)
}

/// `GET /_matrix/client/versions`: lists v1.15 so OAuth-aware clients look for `auth_metadata`.
pub(crate) async fn versions() -> Json<Value> {
    Json(crate::versions())
}

/// `GET /_matrix/client/v1/auth_metadata` and the MSC2965 unstable path: the provider's
/// metadata, byte for byte (clients compare `issuer` exactly). Provider unreachable → 503
/// `M_UNKNOWN`.
pub(crate) async fn auth_metadata(State(state): State<AppState>) -> Result<Response, MatrixError> {
    let metadata = metadata(&state).await?;
    Ok(([(CONTENT_TYPE, "application/json")], metadata.raw).into_response())
}

/// `GET /_matrix/client/{r0,v3}/capabilities`: authenticated as in Synapse. In MAS mode
/// passwords and threepids are managed by the provider, so both changes are disabled.
pub(crate) async fn capabilities(_requester: Requester) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": false },
            "m.3pid_changes": { "enabled": false },
            "m.room_versions": {
                "default": "10",
                "available": { "10": "stable", "11": "stable" },
            },
        }
    }))
}

/// `GET /_matrix/client/{r0,v3}/account/whoami` (Matrix client-server API; `device_id` only
/// when the token has one).
pub(crate) async fn whoami(requester: Requester) -> Json<Value> {
    let mut body = json!({ "user_id": requester.user_id, "is_guest": false });
    if let (Some(device_id), Some(map)) = (requester.device_id, body.as_object_mut()) {
        map.insert("device_id".into(), device_id.into());
    }
    Json(body)
}

fn device_json(device: &crate::store::DeviceRecord) -> Value {
    json!({
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": null,
        "last_seen_ts": null,
    })
}

/// `GET /_matrix/client/{r0,v3}/devices`.
pub(crate) async fn devices(requester: Requester, State(state): State<AppState>) -> Json<Value> {
    let devices: Vec<Value> = state
        .store()
        .devices(&requester.localpart)
        .iter()
        .map(device_json)
        .collect();
    Json(json!({ "devices": devices }))
}

/// `GET /_matrix/client/{r0,v3}/devices/{deviceId}`; 404 `M_NOT_FOUND` when unknown.
pub(crate) async fn device(
    requester: Requester,
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Json<Value>, MatrixError> {
    state
        .store()
        .devices(&requester.localpart)
        .iter()
        .find(|d| d.device_id == device_id)
        .map(|d| Json(device_json(d)))
        .ok_or_else(MatrixError::device_not_found)
}

/// `GET /_matrix/client/{r0,v3}/profile/{userId}`: `displayname` and `avatar_url`, nulls left
/// out; 404 `M_NOT_FOUND` for unknown (or remote) users. Like Synapse's default
/// (`require_auth_for_profile_requests: false`), no token is needed.
pub(crate) async fn profile(
    State(state): State<AppState>,
    Path(requested): Path<String>,
) -> Result<Json<Value>, MatrixError> {
    let not_found = || MatrixError::not_found("Profile was not found");
    let localpart =
        crate::ids::local_localpart(&requested, state.server_name()).map_err(|_| not_found())?;
    let user = state.store().user(&localpart).ok_or_else(not_found)?;
    let mut body = Map::new();
    if let Some(name) = user.displayname {
        body.insert("displayname".into(), name.into());
    }
    if let Some(avatar) = user.avatar_url {
        body.insert("avatar_url".into(), avatar.into());
    }
    Ok(Json(Value::Object(body)))
}

/// Every path this homeserver does not serve, including the ones Synapse leaves to the provider
/// in MAS mode (`/register`, `/account/password`, `/account/3pid/*`, `/account/deactivate`, and
/// `/login`, `/logout`, `/refresh` when not proxied): 404 `M_UNRECOGNIZED`.
pub(crate) async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized()
}

/// A known path with the wrong method: 405 `M_UNRECOGNIZED`.
pub(crate) async fn method_not_allowed() -> MatrixError {
    MatrixError::method_not_allowed()
}
