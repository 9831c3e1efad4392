//! Registration tokens (what a visitor presents to register when the operator requires one):
//! list, get, issue, revoke, unrevoke. A token's value is shown once, when it is issued; only
//! its SHA-256 is stored.

use axum::{extract::Path, extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::{
    error::Params, parse_bool_param, parse_id, Admin, ApiError, Page, PageParams, Paging, Problem,
};
use crate::{
    core::accounts::{self, MAX_REGISTRATION_TOKEN_LEN},
    http::AppState,
    storage::{generate_registration_token, RegistrationToken, StorageError},
};

/// A registration token (without its value).
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationTokenView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    /// How many registrations it allows; `null`: no limit.
    pub usage_limit: Option<u32>,
    pub times_used: u32,
    /// May it be used now (not revoked, not expired, under its limit)?
    pub valid: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl RegistrationTokenView {
    fn new(t: RegistrationToken, now: DateTime<Utc>) -> Self {
        Self {
            valid: t.is_valid(now),
            id: t.id,
            usage_limit: t.usage_limit,
            times_used: t.times_used,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token just issued, with its value (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedRegistrationToken {
    #[serde(flatten)]
    pub token: RegistrationTokenView,
    /// The value to hand to whoever may register.
    #[serde(rename = "token")]
    pub value: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `true`: only tokens usable now; `false`: only revoked, expired or used-up ones.
    #[serde(rename = "filter[valid]")]
    #[param(rename = "filter[valid]", value_type = Option<bool>)]
    valid: Option<String>,
}

/// List registration tokens, in ID (creation) order.
#[utoipa::path(
    get, path = "/registration-tokens", tag = "registration-tokens", operation_id = "listRegistrationTokens",
    params(PageParams, ListParams),
    responses(
        (status = 200, description = "A page of tokens", body = Page<RegistrationTokenView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
    Params(p): Params<ListParams>,
) -> Result<Json<Page<RegistrationTokenView>>, ApiError> {
    let valid = parse_bool_param("filter[valid]", p.valid.as_deref())?;
    let now = state.storage.entropy().clock.now();
    let tokens = state
        .storage
        .reader()
        .await?
        .registration_tokens()
        .list_page(paging.after, paging.fetch(), valid)
        .await?;
    Ok(Json(Page::of(
        tokens,
        paging.limit,
        |t| t.id,
        |t| RegistrationTokenView::new(t, now),
    )))
}

/// Get a registration token.
#[utoipa::path(
    get, path = "/registration-tokens/{id}", tag = "registration-tokens", operation_id = "getRegistrationToken",
    params(("id" = String, Path, description = "The token's ID (ULID)")),
    responses(
        (status = 200, description = "The token", body = RegistrationTokenView),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RegistrationTokenView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let token = state
        .storage
        .reader()
        .await?
        .registration_tokens()
        .lookup(parse_id("registration token", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no registration token `{id}`")))?;
    Ok(Json(RegistrationTokenView::new(token, now)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// How many registrations it allows; absent: no limit.
    #[serde(default)]
    pub usage_limit: Option<u32>,
    /// When it stops working; absent: never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The value, when the operator chooses it (1 to 64 of `A-Z a-z 0-9 - . _ ~`); absent: a
    /// random one.
    #[serde(default)]
    pub token: Option<String>,
}

/// Issue a registration token. Its value is in this answer only.
#[utoipa::path(
    post, path = "/registration-tokens", tag = "registration-tokens", operation_id = "issueRegistrationToken",
    request_body(content = Option<IssueToken>, description = "Optional limits; `{}` or no body for an unlimited random token"),
    responses(
        (status = 201, description = "The token, with its value", body = IssuedRegistrationToken),
        (status = 400, description = "An invalid limit, expiry or value", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A token with this value exists", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    admin: Admin,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<IssuedRegistrationToken>), ApiError> {
    let body: IssueToken = super::error::optional_body(&body)?;
    let now = state.storage.entropy().clock.now();
    if body.usage_limit == Some(0) {
        return Err(ApiError::bad_request("usage_limit must be at least 1"));
    }
    if body.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::bad_request("expires_at must be in the future"));
    }
    let value = match body.token {
        Some(value) if accounts::is_valid_registration_token(&value) => value,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "token must be 1 to {MAX_REGISTRATION_TOKEN_LEN} of A-Z a-z 0-9 - . _ ~"
            )))
        }
        None => generate_registration_token(&mut state.storage.entropy().rng.rng()),
    };
    let mut repo = state.storage.begin().await?;
    let token = match repo
        .registration_tokens()
        .add(&value, body.usage_limit, body.expires_at)
        .await
    {
        Ok(token) => token,
        Err(StorageError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "a registration token with this value exists",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    repo.commit().await?;
    tracing::info!(actor = %admin.actor, token = %token.id, "admin: registration token issued");
    Ok((
        StatusCode::CREATED,
        Json(IssuedRegistrationToken {
            token: RegistrationTokenView::new(token, now),
            value,
        }),
    ))
}

/// Revoke a registration token: it can't be used any longer (until unrevoked).
#[utoipa::path(
    post, path = "/registration-tokens/{id}/revoke", tag = "registration-tokens", operation_id = "revokeRegistrationToken",
    params(("id" = String, Path, description = "The token's ID (ULID)")),
    responses(
        (status = 200, description = "The token, revoked", body = RegistrationTokenView),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RegistrationTokenView>, ApiError> {
    set_revoked(admin, state, id, true).await
}

/// Take a revocation back.
#[utoipa::path(
    post, path = "/registration-tokens/{id}/unrevoke", tag = "registration-tokens", operation_id = "unrevokeRegistrationToken",
    params(("id" = String, Path, description = "The token's ID (ULID)")),
    responses(
        (status = 200, description = "The token", body = RegistrationTokenView),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unrevoke(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RegistrationTokenView>, ApiError> {
    set_revoked(admin, state, id, false).await
}

async fn set_revoked(
    admin: Admin,
    state: AppState,
    id: String,
    revoked: bool,
) -> Result<Json<RegistrationTokenView>, ApiError> {
    let token_id = parse_id("registration token", &id)?;
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let changed = if revoked {
        repo.registration_tokens().revoke(token_id).await
    } else {
        repo.registration_tokens().unrevoke(token_id).await
    };
    let token = match changed {
        Ok(token) => token,
        Err(StorageError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("no registration token `{id}`")))
        }
        Err(e) => return Err(e.into()),
    };
    repo.commit().await?;
    tracing::info!(actor = %admin.actor, token = %token.id, revoked, "admin: registration token changed");
    Ok(Json(RegistrationTokenView::new(token, now)))
}
