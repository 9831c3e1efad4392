//! Who may call the admin API: the bearer of an active OAuth 2.0 access token (RFC 6750 §2.1)
//! whose scope holds `urn:mas:admin`, and whose holder may still have it: a user who may
//! administer (`can_request_admin`), or a client listed in `admin.clients` (a demoted user's or
//! an unlisted client's remaining tokens stop working here at once).
//!
//! The token is found as introspection finds it: its checksum first (garbage costs no query),
//! then one indexed query for the token, its session, its client and its user, expiry,
//! revocation, the session's end and the user's lock and deactivation all checked in SQL.

use axum::{extract::FromRequestParts, http::request::Parts};

use super::ApiError;
use crate::{
    core::tokens::{find_active_access_token, record_first_use, UnusedToken},
    domain::scope::MAS_ADMIN_SCOPE,
    http::{
        kit::params::{authorization, Authorization},
        AppState,
    },
    storage::User,
};

/// On whose behalf an admin request is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An administrator, through a client they authorized.
    User(Box<User>),
    /// An admin client acting on its own (client credentials): its public `client_id`.
    Client(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(user) => write!(f, "user {}", user.username),
            Self::Client(client_id) => write!(f, "client {client_id}"),
        }
    }
}

/// An authorized admin request: extracting it is the authorization check.
#[derive(Debug, Clone)]
pub struct Admin {
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match authorization(&parts.headers) {
            Authorization::Bearer(token) => token,
            Authorization::Absent | Authorization::Basic(_) | Authorization::Other => {
                return Err(ApiError::Unauthorized {
                    detail: "an access token with the scope urn:mas:admin is required \
                             (Authorization: Bearer …)"
                        .into(),
                    token_sent: false,
                })
            }
            Authorization::Malformed => {
                return Err(ApiError::Unauthorized {
                    detail: "the Authorization header is malformed".into(),
                    token_sent: true,
                })
            }
        };
        let now = state.storage.entropy().clock.now();
        let Some(active) = find_active_access_token(&state.storage, token, now).await? else {
            return Err(ApiError::Unauthorized {
                detail: "the access token is not active (unknown, expired, revoked, or its \
                         session or account ended)"
                    .into(),
                token_sent: true,
            });
        };
        // Its holder presents it: a use, which closes the retry grace of the refresh that
        // issued it (client-server API "Refreshing access tokens"; `core::tokens`).
        if let Some(unused) = UnusedToken::oauth2(&active) {
            record_first_use(&state.storage, unused).await;
        }
        if !active
            .session
            .scope
            .split(' ')
            .any(|t| t == MAS_ADMIN_SCOPE)
        {
            return Err(ApiError::Forbidden(format!(
                "the access token lacks the scope {MAS_ADMIN_SCOPE}"
            )));
        }
        let actor = match active.user {
            Some(user) if user.can_request_admin => Actor::User(Box::new(user)),
            Some(user) => {
                return Err(ApiError::Forbidden(format!(
                    "{} may no longer administer this server",
                    user.username
                )))
            }
            None if state.settings.admin_clients.contains(&active.client_id) => {
                Actor::Client(active.client_id)
            }
            None => {
                return Err(ApiError::Forbidden(format!(
                    "the client {} is not an admin client (admin.clients)",
                    active.client_id
                )))
            }
        };
        Ok(Self { actor })
    }
}
