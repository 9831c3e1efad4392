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
    core::{
        matrix::provisioning::AfterCommit,
        sessions::{self, end_compat_session, end_oauth2_session},
    },
    http::AppState,
    storage::{
        BoxRepository, BrowserSession, CompatSession, OAuth2Session, OAuth2SessionFilter,
        StorageError,
    },
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

/// What the three kinds of session share here: found by ID, active until finished, and ended
/// the one way each kind ends.
trait Session: Sized {
    /// How the kind is named in problems and logs.
    const WHAT: &'static str;

    async fn lookup(repo: &mut BoxRepository, id: Ulid) -> Result<Option<Self>, StorageError>;

    fn active(&self) -> bool;

    /// Ends the session in the caller's transaction; the homeserver jobs to run after it.
    async fn end(
        &self,
        repo: &mut BoxRepository,
        now: DateTime<Utc>,
    ) -> Result<AfterCommit, StorageError>;
}

impl Session for OAuth2Session {
    const WHAT: &'static str = "OAuth 2.0 session";

    async fn lookup(repo: &mut BoxRepository, id: Ulid) -> Result<Option<Self>, StorageError> {
        repo.oauth2_sessions().lookup(id).await
    }

    fn active(&self) -> bool {
        self.is_active()
    }

    async fn end(
        &self,
        repo: &mut BoxRepository,
        now: DateTime<Utc>,
    ) -> Result<AfterCommit, StorageError> {
        end_oauth2_session(repo, self.id, now).await
    }
}

impl Session for CompatSession {
    const WHAT: &'static str = "compat session";

    async fn lookup(repo: &mut BoxRepository, id: Ulid) -> Result<Option<Self>, StorageError> {
        repo.compat_sessions().lookup(id).await
    }

    fn active(&self) -> bool {
        self.is_active()
    }

    async fn end(
        &self,
        repo: &mut BoxRepository,
        now: DateTime<Utc>,
    ) -> Result<AfterCommit, StorageError> {
        let mut jobs = AfterCommit::default();
        jobs.push(end_compat_session(repo, self, now).await?);
        Ok(jobs)
    }
}

impl Session for BrowserSession {
    const WHAT: &'static str = "browser session";

    async fn lookup(repo: &mut BoxRepository, id: Ulid) -> Result<Option<Self>, StorageError> {
        repo.browser_sessions().lookup(id).await
    }

    fn active(&self) -> bool {
        self.is_active()
    }

    /// As a logout: the OAuth 2.0 sessions approved from it end too.
    async fn end(
        &self,
        repo: &mut BoxRepository,
        now: DateTime<Utc>,
    ) -> Result<AfterCommit, StorageError> {
        let (_, jobs) = sessions::end_browser_session(repo, self.id, self.user_id, now).await?;
        Ok(jobs)
    }
}

/// The session `raw_id` (as it appears in a path).
async fn find<S: Session>(repo: &mut BoxRepository, raw_id: &str) -> Result<S, ApiError> {
    S::lookup(repo, parse_id(S::WHAT, raw_id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {} `{raw_id}`", S::WHAT)))
}

/// `GET …/{id}` of any kind.
async fn get<S: Session>(state: &AppState, raw_id: &str) -> Result<S, ApiError> {
    find(&mut state.storage.reader().await?, raw_id).await
}

/// `POST …/{id}/finish` of any kind: 409 when it is finished already; the session as it is
/// now.
async fn finish<S: Session>(admin: &Admin, state: &AppState, raw_id: &str) -> Result<S, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let session: S = find(&mut repo, raw_id).await?;
    if !session.active() {
        return Err(ApiError::conflict(format!(
            "the {} `{raw_id}` is finished already",
            S::WHAT
        )));
    }
    let jobs = session.end(&mut repo, now).await?;
    // Read again, for the `finished_at` the end stored.
    let session: S = find(&mut repo, raw_id).await?;
    repo.commit().await?;
    jobs.run(state).await;
    tracing::info!(actor = %admin.actor, kind = S::WHAT, session = raw_id, "admin: session finished");
    Ok(session)
}

/// The user and status filters every session list takes.
fn user_and_status(
    user: Option<&str>,
    status: Option<&str>,
) -> Result<(Option<Ulid>, Option<bool>), ApiError> {
    Ok((
        parse_id_param("filter[user]", user)?,
        parse_session_status(status)?,
    ))
}

/// List OAuth 2.0 sessions, in ID (creation) order.
#[utoipa::path(
    get, path = "/oauth2-sessions", tag = "sessions", operation_id = "listOAuth2Sessions",
    params(PageParams, OAuth2ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<OAuth2SessionView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_oauth2(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
    Params(p): Params<OAuth2ListParams>,
) -> Result<Json<Page<OAuth2SessionView>>, ApiError> {
    let (user_id, active) = user_and_status(p.user.as_deref(), p.status.as_deref())?;
    let filter = OAuth2SessionFilter {
        user_id,
        client_id: parse_id_param("filter[client]", p.client.as_deref())?,
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
    Ok(Json(get::<OAuth2Session>(&state, &id).await?.into()))
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
    Ok(Json(
        finish::<OAuth2Session>(&admin, &state, &id).await?.into(),
    ))
}

/// List compat sessions, in ID (creation) order.
#[utoipa::path(
    get, path = "/compat-sessions", tag = "sessions", operation_id = "listCompatSessions",
    params(PageParams, ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<CompatSessionView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_compat(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
    Params(p): Params<ListParams>,
) -> Result<Json<Page<CompatSessionView>>, ApiError> {
    let (user_id, active) = user_and_status(p.user.as_deref(), p.status.as_deref())?;
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
    Ok(Json(get::<CompatSession>(&state, &id).await?.into()))
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
    Ok(Json(
        finish::<CompatSession>(&admin, &state, &id).await?.into(),
    ))
}

/// List browser sessions, in ID (creation) order.
#[utoipa::path(
    get, path = "/browser-sessions", tag = "sessions", operation_id = "listBrowserSessions",
    params(PageParams, ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<BrowserSessionView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_browser(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
    Params(p): Params<ListParams>,
) -> Result<Json<Page<BrowserSessionView>>, ApiError> {
    let (user_id, active) = user_and_status(p.user.as_deref(), p.status.as_deref())?;
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
    Ok(Json(get::<BrowserSession>(&state, &id).await?.into()))
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
    Ok(Json(
        finish::<BrowserSession>(&admin, &state, &id).await?.into(),
    ))
}
