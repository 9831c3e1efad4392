//! Sessions of the three kinds: OAuth 2.0 (a grant to a client), compat (a legacy login, one
//! Matrix device) and browser (the sign-in cookie). List (by user, client, status; paged), get,
//! finish. Finishing a session with a device has the homeserver delete the device; finishing a
//! browser session ends the OAuth 2.0 sessions approved from it, as a logout does.

use axum::{extract::Path, extract::State, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::{
    error::Params, parse_id, parse_id_param, parse_session_status, Admin, ApiError, Page,
    PageParams, Paging, Problem,
};
use crate::{
    accounts,
    app::AppState,
    matrix::{compat, provisioning::AfterCommit},
    oauth2::sessions::end_oauth2_session,
    storage::{BrowserSession, CompatSession, OAuth2Session, OAuth2SessionFilter},
};

/// An OAuth 2.0 session: what one client was granted, for a user or (client credentials) for
/// itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuth2SessionView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    /// `null` for client credentials sessions.
    #[schema(value_type = Option<String>, format = "ulid")]
    pub user_id: Option<Ulid>,
    /// The client's ID (ULID; see `/clients/{id}`).
    #[schema(value_type = String, format = "ulid")]
    pub client_id: Ulid,
    #[schema(value_type = Option<String>, format = "ulid")]
    pub browser_session_id: Option<Ulid>,
    /// The granted scope, space-separated.
    pub scope: String,
    /// The Matrix device, if the scope names one.
    pub device_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
}

impl From<OAuth2Session> for OAuth2SessionView {
    fn from(s: OAuth2Session) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            client_id: s.client_id,
            browser_session_id: s.browser_session_id,
            scope: s.scope,
            device_id: s.device_id,
            created_at: s.created_at,
            finished_at: s.finished_at,
            last_active_at: s.last_active_at,
            user_agent: s.user_agent,
        }
    }
}

/// A compat session: one Matrix device logged in through the legacy login API.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompatSessionView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    #[schema(value_type = String, format = "ulid")]
    pub user_id: Ulid,
    pub device_id: String,
    pub human_name: Option<String>,
    /// Acts as a Synapse administrator.
    pub synapse_admin: bool,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
}

impl From<CompatSession> for CompatSessionView {
    fn from(s: CompatSession) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            device_id: s.device_id,
            human_name: s.human_name,
            synapse_admin: s.is_synapse_admin,
            created_at: s.created_at,
            finished_at: s.finished_at,
            last_active_at: s.last_active_at,
            user_agent: s.user_agent,
        }
    }
}

/// A browser session: a user signed in in one browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserSessionView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    #[schema(value_type = String, format = "ulid")]
    pub user_id: Ulid,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

impl From<BrowserSession> for BrowserSessionView {
    fn from(s: BrowserSession) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            created_at: s.created_at,
            finished_at: s.finished_at,
            last_active_at: s.last_active_at,
            user_agent: s.user_agent,
            ip_address: s.ip_address,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items after this ID (the `next_cursor` of the previous page).
    #[serde(rename = "page[after]")]
    #[param(rename = "page[after]", value_type = Option<String>)]
    after: Option<String>,
    /// Page size, 1 to 100 (default 10).
    #[serde(rename = "page[first]")]
    #[param(rename = "page[first]", value_type = Option<u32>, minimum = 1, maximum = 100)]
    first: Option<String>,
    /// Only the sessions of this user (ID).
    #[serde(rename = "filter[user]")]
    #[param(rename = "filter[user]", value_type = Option<String>)]
    user: Option<String>,
    /// `active` or `finished`.
    #[serde(rename = "filter[status]")]
    #[param(rename = "filter[status]", value_type = Option<String>)]
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OAuth2ListParams {
    /// Items after this ID (the `next_cursor` of the previous page).
    #[serde(rename = "page[after]")]
    #[param(rename = "page[after]", value_type = Option<String>)]
    after: Option<String>,
    /// Page size, 1 to 100 (default 10).
    #[serde(rename = "page[first]")]
    #[param(rename = "page[first]", value_type = Option<u32>, minimum = 1, maximum = 100)]
    first: Option<String>,
    /// Only the sessions of this user (ID).
    #[serde(rename = "filter[user]")]
    #[param(rename = "filter[user]", value_type = Option<String>)]
    user: Option<String>,
    /// Only the sessions of this client (its ID, a ULID).
    #[serde(rename = "filter[client]")]
    #[param(rename = "filter[client]", value_type = Option<String>)]
    client: Option<String>,
    /// `active` or `finished`.
    #[serde(rename = "filter[status]")]
    #[param(rename = "filter[status]", value_type = Option<String>)]
    status: Option<String>,
}

/// The common filters: paging, user, status.
fn common(
    after: Option<String>,
    first: Option<String>,
    user: Option<&str>,
    status: Option<&str>,
) -> Result<(Paging, Option<Ulid>, Option<bool>), ApiError> {
    let paging = Paging::parse(&PageParams { after, first })?;
    let user = user
        .map(|raw| parse_id_param("filter[user]", raw))
        .transpose()?;
    Ok((paging, user, parse_session_status(status)?))
}

/// List OAuth 2.0 sessions, in ID (creation) order.
#[utoipa::path(
    get, path = "/oauth2-sessions", tag = "sessions", operation_id = "listOAuth2Sessions",
    params(OAuth2ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<OAuth2SessionView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_oauth2(
    _: Admin,
    State(state): State<AppState>,
    Params(p): Params<OAuth2ListParams>,
) -> Result<Json<Page<OAuth2SessionView>>, ApiError> {
    let (paging, user_id, active) =
        common(p.after, p.first, p.user.as_deref(), p.status.as_deref())?;
    let client_id = p
        .client
        .as_deref()
        .map(|raw| parse_id_param("filter[client]", raw))
        .transpose()?;
    let filter = OAuth2SessionFilter {
        user_id,
        client_id,
        active,
    };
    let sessions = state
        .storage
        .reader()
        .await?
        .oauth2_sessions()
        .list_page(&filter, paging.after, paging.fetch())
        .await?;
    Ok(Json(Page::of(sessions, paging.limit, |s| s.id, Into::into)))
}

/// Get an OAuth 2.0 session.
#[utoipa::path(
    get, path = "/oauth2-sessions/{id}", tag = "sessions", operation_id = "getOAuth2Session",
    params(("id" = String, Path, description = "The session's ID (ULID)")),
    responses(
        (status = 200, description = "The session", body = OAuth2SessionView),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_oauth2(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OAuth2SessionView>, ApiError> {
    let session = state
        .storage
        .reader()
        .await?
        .oauth2_sessions()
        .lookup(parse_id("OAuth 2.0 session", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no OAuth 2.0 session `{id}`")))?;
    Ok(Json(session.into()))
}

/// Finish an OAuth 2.0 session: its tokens stop working, its device is deleted on the
/// homeserver.
#[utoipa::path(
    post, path = "/oauth2-sessions/{id}/finish", tag = "sessions", operation_id = "finishOAuth2Session",
    params(("id" = String, Path, description = "The session's ID (ULID)")),
    responses(
        (status = 200, description = "The session, finished", body = OAuth2SessionView),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session is finished already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn finish_oauth2(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OAuth2SessionView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session = repo
        .oauth2_sessions()
        .lookup(parse_id("OAuth 2.0 session", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no OAuth 2.0 session `{id}`")))?;
    if !session.is_active() {
        return Err(ApiError::conflict(format!(
            "the OAuth 2.0 session `{id}` is finished already"
        )));
    }
    let jobs = end_oauth2_session(&mut repo, session.id, now).await?;
    let session = repo
        .oauth2_sessions()
        .lookup(session.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no OAuth 2.0 session `{id}`")))?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, session = %session.id, "admin: OAuth 2.0 session finished");
    Ok(Json(session.into()))
}

/// List compat sessions, in ID (creation) order.
#[utoipa::path(
    get, path = "/compat-sessions", tag = "sessions", operation_id = "listCompatSessions",
    params(ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<CompatSessionView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_compat(
    _: Admin,
    State(state): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Json<Page<CompatSessionView>>, ApiError> {
    let (paging, user_id, active) =
        common(p.after, p.first, p.user.as_deref(), p.status.as_deref())?;
    let sessions = state
        .storage
        .reader()
        .await?
        .compat_sessions()
        .list_page(user_id, active, paging.after, paging.fetch())
        .await?;
    Ok(Json(Page::of(sessions, paging.limit, |s| s.id, Into::into)))
}

/// Get a compat session.
#[utoipa::path(
    get, path = "/compat-sessions/{id}", tag = "sessions", operation_id = "getCompatSession",
    params(("id" = String, Path, description = "The session's ID (ULID)")),
    responses(
        (status = 200, description = "The session", body = CompatSessionView),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_compat(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CompatSessionView>, ApiError> {
    let session = state
        .storage
        .reader()
        .await?
        .compat_sessions()
        .lookup(parse_id("compat session", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no compat session `{id}`")))?;
    Ok(Json(session.into()))
}

/// Finish a compat session: its tokens stop working, its device is deleted on the homeserver.
#[utoipa::path(
    post, path = "/compat-sessions/{id}/finish", tag = "sessions", operation_id = "finishCompatSession",
    params(("id" = String, Path, description = "The session's ID (ULID)")),
    responses(
        (status = 200, description = "The session, finished", body = CompatSessionView),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session is finished already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn finish_compat(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CompatSessionView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session = repo
        .compat_sessions()
        .lookup(parse_id("compat session", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no compat session `{id}`")))?;
    if !session.is_active() {
        return Err(ApiError::conflict(format!(
            "the compat session `{id}` is finished already"
        )));
    }
    let mut jobs = AfterCommit::default();
    jobs.push(compat::end_session(&mut repo, &session, now).await?);
    let session = repo
        .compat_sessions()
        .lookup(session.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no compat session `{id}`")))?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, session = %session.id, "admin: compat session finished");
    Ok(Json(session.into()))
}

/// List browser sessions, in ID (creation) order.
#[utoipa::path(
    get, path = "/browser-sessions", tag = "sessions", operation_id = "listBrowserSessions",
    params(ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<BrowserSessionView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_browser(
    _: Admin,
    State(state): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Json<Page<BrowserSessionView>>, ApiError> {
    let (paging, user_id, active) =
        common(p.after, p.first, p.user.as_deref(), p.status.as_deref())?;
    let sessions = state
        .storage
        .reader()
        .await?
        .browser_sessions()
        .list_page(user_id, active, paging.after, paging.fetch())
        .await?;
    Ok(Json(Page::of(sessions, paging.limit, |s| s.id, Into::into)))
}

/// Get a browser session.
#[utoipa::path(
    get, path = "/browser-sessions/{id}", tag = "sessions", operation_id = "getBrowserSession",
    params(("id" = String, Path, description = "The session's ID (ULID)")),
    responses(
        (status = 200, description = "The session", body = BrowserSessionView),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_browser(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BrowserSessionView>, ApiError> {
    let session = state
        .storage
        .reader()
        .await?
        .browser_sessions()
        .lookup(parse_id("browser session", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no browser session `{id}`")))?;
    Ok(Json(session.into()))
}

/// Finish a browser session (sign the browser out), and the OAuth 2.0 sessions approved from
/// it.
#[utoipa::path(
    post, path = "/browser-sessions/{id}/finish", tag = "sessions", operation_id = "finishBrowserSession",
    params(("id" = String, Path, description = "The session's ID (ULID)")),
    responses(
        (status = 200, description = "The session, finished", body = BrowserSessionView),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session is finished already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn finish_browser(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BrowserSessionView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session = repo
        .browser_sessions()
        .lookup(parse_id("browser session", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no browser session `{id}`")))?;
    if !session.is_active() {
        return Err(ApiError::conflict(format!(
            "the browser session `{id}` is finished already"
        )));
    }
    let (_, jobs) =
        accounts::end_browser_session(&mut repo, session.id, session.user_id, now).await?;
    let session = repo
        .browser_sessions()
        .lookup(session.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no browser session `{id}`")))?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, session = %session.id, "admin: browser session finished");
    Ok(Json(session.into()))
}
