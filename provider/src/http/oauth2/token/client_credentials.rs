//! The client credentials grant (RFC 6749 §4.4): a confidential client acting on its own behalf.
//!
//! - Only confidential clients (RFC 6749 §4.4: "MUST only be used by confidential clients").
//! - No user is involved, so neither `openid` nor the Matrix scopes (which grant access to a
//!   user's account, MSC2967) can be requested.
//! - No refresh token (RFC 6749 §4.4.3: "SHOULD NOT be included"): the client simply asks again.
//!
//! The session and its token are committed before the answer leaves, in a transaction shared
//! with the other token requests of the moment (group commit:
//! [`crate::storage::Storage::add_session_with_token`]), so issuance is not held to one database
//! commit per request.

use chrono::Duration;

use super::{TokenResponse, TokenUnit, ACCESS_TOKEN_LIFETIME_SECONDS};
use crate::http::kit::params::Params;
use crate::http::oauth2::api::TokenError;
use crate::{
    crypto::sha256,
    domain::{
        scope::{self, Scope, MAS_ADMIN_SCOPE},
        token::TokenKind,
    },
    http::{oauth2::client_auth::AuthenticatedClient, AppState},
    storage::{NewSessionToken, Spent},
};

/// Is the client one the config lists in `admin.clients`?
fn is_admin_client(state: &AppState, client: &AuthenticatedClient) -> bool {
    state
        .settings
        .admin_clients
        .contains(&client.client.client_id)
}

/// Scope tokens that only make sense with a user.
fn needs_a_user(token: &str) -> bool {
    // MSC2967 scopes only on interactive grants: they act as a user.
    token == "openid" || token == "email" || scope::is_matrix_token(token)
}

pub async fn grant(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
    unit: &mut TokenUnit,
) -> Result<TokenResponse, TokenError> {
    // RFC 6749 §4.4: "MUST only be used by confidential clients".
    if client.client.token_endpoint_auth_method.is_public() {
        return Err(TokenError::unauthorized_client(
            "public clients can't use the client_credentials grant",
        ));
    }
    let scope = match params.get("scope") {
        Some(raw) => {
            let scope = Scope::parse(raw).map_err(|e| TokenError::invalid_scope(&e.to_string()))?;
            if let Some(token) = scope.iter().find(|t| needs_a_user(t)) {
                return Err(TokenError::invalid_scope(&format!(
                    "`{token}` needs a user; the client_credentials grant has none"
                )));
            }
            // The admin API's scope only for the clients the operator listed (`admin.clients`).
            if scope.contains(MAS_ADMIN_SCOPE) && !is_admin_client(state, client) {
                return Err(TokenError::invalid_scope(&format!(
                    "this client may not be granted {MAS_ADMIN_SCOPE}: it is not one of the \
                     configured admin clients (admin.clients)"
                )));
            }
            scope.to_string()
        }
        None => String::new(),
    };
    let now = state.storage.entropy().clock.now();
    let access_token = TokenKind::AccessToken.generate(&mut state.storage.entropy().rng.rng());
    // The token limit's unit is spent by the writer, with the other units of its batch.
    let written = state
        .storage
        .add_session_with_token(
            NewSessionToken {
                user_id: None,
                client_id: client.client.id,
                scope: scope.clone(),
                device_id: None,
                token_hash: sha256(&access_token),
                expires_at: Some(now + Duration::seconds(ACCESS_TOKEN_LIFETIME_SECONDS)),
            },
            unit.for_write(),
        )
        .await?;
    if let Spent::Refused { retry_after } = written {
        return Err(TokenUnit::refused(state, retry_after));
    }
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_LIFETIME_SECONDS,
        refresh_token: None,
        scope,
        id_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_scopes_are_refused() {
        for token in [
            "openid",
            "email",
            "urn:matrix:client:api:*",
            "urn:matrix:client:device:ABC",
            "urn:synapse:admin:*",
        ] {
            assert!(needs_a_user(token), "{token}");
        }
        assert!(!needs_a_user("urn:mas:admin"));
        assert!(!needs_a_user("read"));
    }
}
