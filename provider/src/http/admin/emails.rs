//! Email addresses: a user's list, add (verified or not, without any mail), get, verify,
//! remove. Confirmed addresses are pushed to the homeserver.

use axum::{extract::Path, extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

use super::{error::Body, parse_id, users::find_user, Admin, ApiError, Problem};
use crate::{
    core::accounts,
    http::AppState,
    storage::{BoxRepository, UserEmail},
};

/// An email address of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailView {
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    #[schema(value_type = String, format = "ulid")]
    pub user_id: Ulid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// When it was confirmed; `null` while unverified.
    pub verified_at: Option<DateTime<Utc>>,
}

impl From<UserEmail> for EmailView {
    fn from(e: UserEmail) -> Self {
        Self {
            id: e.id,
            user_id: e.user_id,
            email: e.email,
            created_at: e.created_at,
            verified_at: e.confirmed_at,
        }
    }
}

async fn find_email(repo: &mut BoxRepository, raw_id: &str) -> Result<UserEmail, ApiError> {
    let id = parse_id("email address", raw_id)?;
    repo.user_emails()
        .lookup(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no email address `{raw_id}`")))
}

/// A user's addresses, oldest first (a user has few: not paged).
#[utoipa::path(
    get, path = "/users/{id}/emails", tag = "emails", operation_id = "listUserEmails",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    responses(
        (status = 200, description = "The user's addresses", body = Vec<EmailView>),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EmailView>>, ApiError> {
    let mut repo = state.storage.reader().await?;
    let user = find_user(&mut repo, &id).await?;
    let emails = repo.user_emails().list_for_user(user.id).await?;
    Ok(Json(emails.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddEmail {
    pub email: String,
    /// Store it as verified; no mail is sent either way.
    #[serde(default)]
    pub verified: bool,
}

/// Add an address to a user, without any mail.
#[utoipa::path(
    post, path = "/users/{id}/emails", tag = "emails", operation_id = "addUserEmail",
    params(("id" = String, Path, description = "The user's ID (ULID)")),
    request_body = AddEmail,
    responses(
        (status = 201, description = "The new address", body = EmailView),
        (status = 400, description = "Not an email address", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user has this address already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<AddEmail>,
) -> Result<(StatusCode, Json<EmailView>), ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let user = find_user(&mut repo, &id).await?;
    let (email, jobs) =
        accounts::add_email(&mut repo, &user, body.email.trim(), body.verified, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, user = %user.username, verified = body.verified, "admin: email added");
    Ok((StatusCode::CREATED, Json(email.into())))
}

/// Get an address.
#[utoipa::path(
    get, path = "/user-emails/{id}", tag = "emails", operation_id = "getUserEmail",
    params(("id" = String, Path, description = "The address's ID (ULID)")),
    responses(
        (status = 200, description = "The address", body = EmailView),
        (status = 404, description = "No such address", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EmailView>, ApiError> {
    let mut repo = state.storage.reader().await?;
    Ok(Json(find_email(&mut repo, &id).await?.into()))
}

/// Mark an address verified.
#[utoipa::path(
    post, path = "/user-emails/{id}/verify", tag = "emails", operation_id = "verifyUserEmail",
    params(("id" = String, Path, description = "The address's ID (ULID)")),
    responses(
        (status = 200, description = "The address, verified", body = EmailView),
        (status = 404, description = "No such address", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EmailView>, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let email = find_email(&mut repo, &id).await?;
    let (email, jobs) = accounts::verify_email(&mut repo, &email, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, email = %email.id, "admin: email verified");
    Ok(Json(email.into()))
}

/// Remove an address.
#[utoipa::path(
    delete, path = "/user-emails/{id}", tag = "emails", operation_id = "removeUserEmail",
    params(("id" = String, Path, description = "The address's ID (ULID)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such address", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let email = find_email(&mut repo, &id).await?;
    let (_, jobs) = accounts::remove_email(&mut repo, &email, now).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, email = %email.id, "admin: email removed");
    Ok(StatusCode::NO_CONTENT)
}
