//! Upstream OpenID Connect providers (read-only here: they come from the config) and the links
//! between their identities and local users: list, get, delete (a deleted link lets the
//! identity be linked again, to whichever account signs in with it next).

use axum::{extract::Path, extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::{
    error::Params, parse_id, parse_id_param, Admin, ApiError, Page, PageParams, Paging, Problem,
};
use crate::{
    http::AppState,
    storage::{UpstreamLink, UpstreamProvider},
};

/// An upstream provider (its secret never leaves the server).
#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamProviderView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    pub issuer: Option<String>,
    pub human_name: Option<String>,
    pub brand_name: Option<String>,
    /// Our client ID at the provider.
    pub client_id: String,
    pub token_endpoint_auth_method: String,
    pub scope: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<UpstreamProvider> for UpstreamProviderView {
    fn from(p: UpstreamProvider) -> Self {
        Self {
            enabled: p.is_enabled(),
            id: p.id,
            issuer: p.issuer,
            human_name: p.human_name,
            brand_name: p.brand_name,
            client_id: p.client_id,
            token_endpoint_auth_method: p.token_endpoint_auth_method.to_string(),
            scope: p.scope,
            created_at: p.created_at,
            disabled_at: p.disabled_at,
        }
    }
}

/// An upstream identity, and the local user it is linked to.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamLinkView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    #[schema(value_type = String, format = "ulid")]
    pub provider_id: Ulid,
    /// `null` until the identity is linked to an account.
    #[schema(value_type = Option<String>, format = "ulid")]
    pub user_id: Option<Ulid>,
    /// The upstream `sub`.
    pub subject: String,
    pub human_account_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<UpstreamLink> for UpstreamLinkView {
    fn from(l: UpstreamLink) -> Self {
        Self {
            id: l.id,
            provider_id: l.provider_id,
            user_id: l.user_id,
            subject: l.subject,
            human_account_name: l.human_account_name,
            created_at: l.created_at,
        }
    }
}

/// The enabled upstream providers, oldest first (few: not paged).
#[utoipa::path(
    get, path = "/upstream-providers", tag = "upstream", operation_id = "listUpstreamProviders",
    responses((status = 200, description = "The enabled providers", body = Vec<UpstreamProviderView>))
)]
pub async fn list_providers(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<UpstreamProviderView>>, ApiError> {
    let providers = state
        .storage
        .reader()
        .await?
        .upstream_providers()
        .list_enabled()
        .await?;
    Ok(Json(providers.into_iter().map(Into::into).collect()))
}

/// Get an upstream provider, enabled or not.
#[utoipa::path(
    get, path = "/upstream-providers/{id}", tag = "upstream", operation_id = "getUpstreamProvider",
    params(("id" = String, Path, description = "The provider's ID (ULID)")),
    responses(
        (status = 200, description = "The provider", body = UpstreamProviderView),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_provider(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UpstreamProviderView>, ApiError> {
    let provider = state
        .storage
        .reader()
        .await?
        .upstream_providers()
        .lookup(parse_id("upstream provider", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no upstream provider `{id}`")))?;
    Ok(Json(provider.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkParams {
    /// Only the links of this user (ID).
    #[serde(rename = "filter[user]")]
    #[param(rename = "filter[user]", value_type = Option<String>)]
    user: Option<String>,
    /// Only the links to this provider (ID).
    #[serde(rename = "filter[provider]")]
    #[param(rename = "filter[provider]", value_type = Option<String>)]
    provider: Option<String>,
}

/// List upstream links, in ID (creation) order.
#[utoipa::path(
    get, path = "/upstream-links", tag = "upstream", operation_id = "listUpstreamLinks",
    params(PageParams, LinkParams),
    responses(
        (status = 200, description = "A page of links", body = Page<UpstreamLinkView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_links(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
    Params(p): Params<LinkParams>,
) -> Result<Json<Page<UpstreamLinkView>>, ApiError> {
    let user = parse_id_param("filter[user]", p.user.as_deref())?;
    let provider = parse_id_param("filter[provider]", p.provider.as_deref())?;
    let links = state
        .storage
        .reader()
        .await?
        .upstream_links()
        .list_page(user, provider, paging.after, paging.fetch())
        .await?;
    Ok(Json(Page::of(links, paging.limit, |l| l.id, Into::into)))
}

/// Get an upstream link.
#[utoipa::path(
    get, path = "/upstream-links/{id}", tag = "upstream", operation_id = "getUpstreamLink",
    params(("id" = String, Path, description = "The link's ID (ULID)")),
    responses(
        (status = 200, description = "The link", body = UpstreamLinkView),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_link(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UpstreamLinkView>, ApiError> {
    let link = state
        .storage
        .reader()
        .await?
        .upstream_links()
        .lookup(parse_id("upstream link", &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no upstream link `{id}`")))?;
    Ok(Json(link.into()))
}

/// Delete an upstream link: the account can no longer be signed in to with that identity.
#[utoipa::path(
    delete, path = "/upstream-links/{id}", tag = "upstream", operation_id = "deleteUpstreamLink",
    params(("id" = String, Path, description = "The link's ID (ULID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove_link(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let link_id = parse_id("upstream link", &id)?;
    let mut repo = state.storage.begin().await?;
    if !repo.upstream_links().remove(link_id).await? {
        return Err(ApiError::not_found(format!("no upstream link `{id}`")));
    }
    repo.commit().await?;
    tracing::info!(actor = %admin.actor, link = %link_id, "admin: upstream link deleted");
    Ok(StatusCode::NO_CONTENT)
}
