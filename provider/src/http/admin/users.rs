//! `/users`: list (filtered, paged), get, create, set password, lock/unlock,
//! deactivate/reactivate, set admin, end sessions. Each change goes through
//! [`crate::core::accounts`], in one transaction, and its homeserver jobs run after the commit.

use axum::{extract::Path, extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{Body, Params},
    parse_bool_param, parse_id, Admin, ApiError, Page, PageParams, Paging, Problem,
};
use crate::{
    core::accounts::{self, NewEmail, NewUser},
    http::AppState,
    storage::{BoxRepository, User, UserFilter, UserStatus},
};

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    /// The Matrix localpart.
    pub username: String,
    /// `active`, `locked` or `deactivated`.
    pub status: &'static str,
    /// May be granted the admin scopes (`urn:synapse:admin:*`, `urn:mas:admin`).
    pub admin: bool,
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub locked_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        let status = if u.deactivated_at.is_some() {
            "deactivated"
        } else if u.locked_at.is_some() {
            "locked"
        } else {
            "active"
        };
        Self {
            id: u.id,
            username: u.username,
            status,
            admin: u.can_request_admin,
            display_name: u.display_name,
            created_at: u.created_at,
            locked_at: u.locked_at,
            deactivated_at: u.deactivated_at,
        }
    }
}

/// The user `id` (as it appears in a path).
pub(super) async fn find_user(repo: &mut BoxRepository, raw_id: &str) -> Result<User, ApiError> {
    let id = parse_id("user", raw_id)?;
    repo.users()
        .lookup(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user `{raw_id}`")))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `active`, `locked` or `deactivated`.
    #[serde(rename = "filter[status]")]
    #[param(rename = "filter[status]", value_type = Option<String>)]
    status: Option<String>,
    /// `true`: only users who may administer; `false`: only those who may not.
    #[serde(rename = "filter[admin]")]
    #[param(rename = "filter[admin]", value_type = Option<bool>)]
    admin: Option<String>,
    /// Only usernames starting with this (exactly, case and all).
    #[serde(rename = "filter[search]")]
    #[param(rename = "filter[search]")]
    search: Option<String>,
}

/// List users, in ID (creation) order.
#[utoipa::path(
    get, path = "/users", tag = "users", operation_id = "listUsers",
    params(PageParams, ListParams),
    responses(
        (status = 200, description = "A page of users", body = Page<UserView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let status = match params.status.as_deref() {
        None => None,
        Some("active") => Some(UserStatus::Active),
        Some("locked") => Some(UserStatus::Locked),
        Some("deactivated") => Some(UserStatus::Deactivated),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "filter[status] must be `active`, `locked` or `deactivated`, not `{other}`"
            )))
        }
    };
    let filter = UserFilter {
        status,
        can_request_admin: parse_bool_param("filter[admin]", params.admin.as_deref())?,
        username_prefix: params.search.filter(|s| !s.is_empty()),
    };
    let users = state
        .storage
        .reader()
        .await?
        .users()
        .list_filtered(&filter, paging.after, paging.fetch())
        .await?;
    Ok(Json(Page::of(
        users,
        paging.limit,
        |u| u.id,
        UserView::from,
    )))
}

/// Get a user.
#[utoipa::path(
    get, path = "/users/{id}", tag = "users", operation_id = "getUser",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let mut repo = state.storage.reader().await?;
    Ok(Json(find_user(&mut repo, &id).await?.into()))
}

/// Get a user by username (Matrix localpart).
#[utoipa::path(
    get, path = "/users/by-username/{username}", tag = "users", operation_id = "getUserByUsername",
    params(("username" = String, Path, description = "The Matrix localpart")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn by_username(
    _: Admin,
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user = state
        .storage
        .reader()
        .await?
        .users()
        .find_by_username(&username)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user `{username}`")))?;
    Ok(Json(user.into()))
}

/// An address for a new user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewEmailBody {
    pub email: String,
    /// Store it as verified (no mail is sent either way).
    #[serde(default)]
    pub verified: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The Matrix localpart: lower-case letters, digits and `. _ = - / +`.
    pub username: String,
    /// None: the account has no password (upstream sign-in only, or set later).
    #[serde(default)]
    pub password: Option<String>,
    /// Accept a password the policy refuses (too short).
    #[serde(default)]
    pub skip_password_check: bool,
    #[serde(default)]
    pub emails: Vec<NewEmailBody>,
    /// May be granted the admin scopes.
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Create a user. The homeserver is asked whether the username is free first, and provisions
/// the user once created.
#[utoipa::path(
    post, path = "/users", tag = "users", operation_id = "createUser",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The new user", body = UserView),
        (status = 400, description = "An invalid username, password, address or name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The homeserver can't be asked about the username", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    admin: Admin,
    State(state): State<AppState>,
    Body(body): Body<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    accounts::check_new_username(&state, &body.username).await?;
    let password = match &body.password {
        Some(p) => Some(accounts::hash_password(&state, p, !body.skip_password_check).await?),
        None => None,
    };
    let new = NewUser {
        username: body.username.clone(),
        password,
        emails: body
            .emails
            .into_iter()
            .map(|e| NewEmail {
                address: e.email,
                verified: e.verified,
            })
            .collect(),
        admin: body.admin,
        display_name: body.display_name,
    };
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let (user, jobs) = accounts::create_user(&mut repo, &new, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, "admin: user created");
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
    /// Accept a password the policy refuses (too short).
    #[serde(default)]
    pub skip_password_check: bool,
}

/// Set a user's password. Their browser sessions end; Matrix devices stay (see `end-sessions`).
#[utoipa::path(
    post, path = "/users/{id}/set-password", tag = "users", operation_id = "setUserPassword",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    request_body = SetPassword,
    responses(
        (status = 204, description = "The password is set"),
        (status = 400, description = "The password breaks the policy", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_password(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SetPassword>,
) -> Result<StatusCode, ApiError> {
    let user = find_user(&mut state.storage.reader().await?, &id).await?;
    let hashed = accounts::hash_password(&state, &body.password, !body.skip_password_check).await?;
    let mut repo = state.storage.begin().await?;
    let signed_out = accounts::reset_password(&mut repo, &user, &hashed).await?;
    repo.commit().await?;
    tracing::info!(actor = %admin.actor, user = %user.username, signed_out, "admin: password set");
    Ok(StatusCode::NO_CONTENT)
}

/// Lock a user: they can't sign in and their tokens are inactive while it lasts; sessions
/// stay. The homeserver is told. Locking a locked user changes nothing.
#[utoipa::path(
    post, path = "/users/{id}/lock", tag = "users", operation_id = "lockUser",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    responses(
        (status = 200, description = "The user, locked", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn lock(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    set_locked(admin, state, id, true).await
}

/// Unlock a user: their sessions work again. Unlocking an unlocked user changes nothing.
#[utoipa::path(
    post, path = "/users/{id}/unlock", tag = "users", operation_id = "unlockUser",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    responses(
        (status = 200, description = "The user, unlocked", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unlock(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    set_locked(admin, state, id, false).await
}

async fn set_locked(
    admin: Admin,
    state: AppState,
    id: String,
    locked: bool,
) -> Result<Json<UserView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let user = find_user(&mut repo, &id).await?;
    if user.locked_at.is_some() == locked {
        return Ok(Json(user.into()));
    }
    let (user, jobs) = accounts::set_locked(&mut repo, &user, locked, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, locked, "admin: lock changed");
    Ok(Json(user.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deactivate {
    /// Also have the homeserver erase the user's data (GDPR erasure).
    #[serde(default)]
    pub erase: bool,
}

/// Deactivate a user: every session ends (devices deleted), the homeserver deactivates them;
/// the username stays taken. Deactivating a deactivated user changes nothing.
#[utoipa::path(
    post, path = "/users/{id}/deactivate", tag = "users", operation_id = "deactivateUser",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    request_body(content = Option<Deactivate>, description = "Optional: `{\"erase\": true}`"),
    responses(
        (status = 200, description = "The user, deactivated", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn deactivate(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<UserView>, ApiError> {
    let erase = super::error::optional_body::<Deactivate>(&body)?.erase;
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let user = find_user(&mut repo, &id).await?;
    if user.deactivated_at.is_some() {
        return Ok(Json(user.into()));
    }
    let jobs = accounts::deactivate(&mut repo, &user, erase, now).await?;
    let user = find_user(&mut repo, &id).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, erase, "admin: user deactivated");
    Ok(Json(user.into()))
}

/// Reactivate a deactivated user (the homeserver reactivates them too). Their old sessions
/// stay ended.
#[utoipa::path(
    post, path = "/users/{id}/reactivate", tag = "users", operation_id = "reactivateUser",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    responses(
        (status = 200, description = "The user, reactivated", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reactivate(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let user = find_user(&mut repo, &id).await?;
    if user.deactivated_at.is_none() {
        return Ok(Json(user.into()));
    }
    let (user, jobs) = accounts::reactivate(&mut repo, &user, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, "admin: user reactivated");
    Ok(Json(user.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAdmin {
    /// `true`: may be granted the admin scopes; `false`: may not, and sessions holding them end.
    pub admin: bool,
}

/// Allow or stop a user administering (being granted `urn:synapse:admin:*` and
/// `urn:mas:admin`). Demoting ends the sessions that hold an admin scope.
#[utoipa::path(
    post, path = "/users/{id}/set-admin", tag = "users", operation_id = "setUserAdmin",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    request_body = SetAdmin,
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_admin(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SetAdmin>,
) -> Result<Json<UserView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let user = find_user(&mut repo, &id).await?;
    let (user, jobs) = accounts::set_admin(&mut repo, &user, body.admin, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, admin = body.admin, "admin: admin flag set");
    Ok(Json(user.into()))
}

/// End every session of a user: OAuth 2.0, compat (their devices are deleted on the
/// homeserver) and browser sessions.
#[utoipa::path(
    post, path = "/users/{id}/end-sessions", tag = "users", operation_id = "endUserSessions",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    responses(
        (status = 204, description = "Every session ended"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn end_sessions(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let user = find_user(&mut repo, &id).await?;
    let jobs = accounts::end_all_sessions(&mut repo, user.id, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, "admin: sessions ended");
    Ok(StatusCode::NO_CONTENT)
}
