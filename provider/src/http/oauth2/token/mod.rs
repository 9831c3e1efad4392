//! `POST /oauth2/token` (RFC 6749 §3.2): client authentication, then one module per grant.
//!
//! Responses carry `Cache-Control: no-store` (RFC 6749 §5.1); errors are the JSON of RFC 6749
//! §5.2, with `WWW-Authenticate` when the client tried HTTP Basic and failed.
//!
//! Rate limited ([`Limit::Token`]) per authenticated client, after its authentication; public
//! clients (`none`), which every user of an app shares, per client IP instead. Over the limit:
//! see [`TokenError::too_many`]. Every request spends its unit ([`TokenUnit`]); the grants that
//! issue through a group-committed write spend it in that write.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
mod id_token;
pub mod refresh_token;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;
use ulid::Ulid;

use super::{
    api::{form_params, no_store, TokenError},
    client_auth::{self, AuthenticatedClient},
};
use crate::http::kit::params::Params;
use crate::{
    core::rate_limit::{ClientIp, Limit, RateLimitError},
    crypto::sha256,
    domain::{
        protocol::{ClientAuthMethod, ErrorCode, GrantType},
        token::TokenKind,
    },
    http::AppState,
    storage::{AccessToken, BatchedSpend, BoxRepository, RefreshToken, StorageError, TokenRead},
};

/// Access tokens live 5 minutes (DESIGN.md); clients refresh them.
pub const ACCESS_TOKEN_LIFETIME_SECONDS: i64 = 300;
/// ID tokens are valid for an hour (they are read once, at sign-in).
pub const ID_TOKEN_LIFETIME_SECONDS: i64 = 3600;

/// The grant types this endpoint serves: every [`GrantType`] (RFC 6749 §4.1.3, §6, §4.4;
/// RFC 8628 §3.4, MSC4341).
pub const GRANT_TYPES: &[GrantType] = GrantType::ALL;
/// The client authentication methods it accepts: every [`ClientAuthMethod`] (RFC 6749 §2.3.1,
/// RFC 7523 §2.2, OIDC Core §9).
pub const AUTH_METHODS: &[ClientAuthMethod] = ClientAuthMethod::ALL;

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl TokenResponse {
    /// The answer for a fresh pair: a bearer access token valid for
    /// [`ACCESS_TOKEN_LIFETIME_SECONDS`] and its refresh token (every grant for a user gets one:
    /// Matrix clients never ask for `offline_access`, and MSC4341 requires it for devices).
    pub(crate) fn with_pair(pair: IssuedPair, scope: String, id_token: Option<String>) -> Self {
        Self {
            access_token: pair.access_token,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_LIFETIME_SECONDS,
            refresh_token: Some(pair.refresh_token),
            scope,
            id_token,
        }
    }
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        no_store(Json(self).into_response())
    }
}

/// A fresh access and refresh token pair for a session, stored as hashes.
pub(crate) struct IssuedPair {
    pub access_token: String,
    pub refresh_token: String,
    pub refresh: RefreshToken,
}

/// A fresh access token for a session, valid for [`ACCESS_TOKEN_LIFETIME_SECONDS`] from `now`,
/// stored as its hash: the token and its stored row.
pub(crate) async fn issue_access_token(
    repo: &mut BoxRepository,
    rng: &mut impl RngCore,
    session_id: Ulid,
    now: DateTime<Utc>,
) -> Result<(String, AccessToken), StorageError> {
    let access_token = TokenKind::AccessToken.generate(rng);
    let access = repo
        .access_tokens()
        .add(
            session_id,
            &sha256(&access_token),
            Some(now + Duration::seconds(ACCESS_TOKEN_LIFETIME_SECONDS)),
        )
        .await?;
    Ok((access_token, access))
}

/// A fresh access and refresh token pair for a session, valid from `now`, stored as hashes.
pub(crate) async fn issue_pair(
    repo: &mut BoxRepository,
    rng: &mut impl RngCore,
    session_id: Ulid,
    now: DateTime<Utc>,
) -> Result<IssuedPair, StorageError> {
    let (access_token, access) = issue_access_token(repo, rng, session_id, now).await?;
    let refresh_token = TokenKind::RefreshToken.generate(rng);
    let refresh = repo
        .refresh_tokens()
        .add(session_id, &sha256(&refresh_token), Some(access.id))
        .await?;
    Ok(IssuedPair {
        access_token,
        refresh_token,
        refresh,
    })
}

/// `POST /oauth2/token`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, &client_ip, &headers, &body).await {
        Ok(tokens) => tokens.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, TokenError> {
    let params = form_params(headers, body)?;
    // Read once; a refusal is answered after client authentication, as every other refusal of
    // the request is.
    let grant_type = grant_type(&params);
    // The refresh grant's presented token is read in the statement that reads the client
    // (issue 16: one statement and one round trip fewer per refresh); it is used only once the
    // client is authenticated and allowed the grant (below, then `refresh_token::refresh`).
    let presented = match grant_type {
        Ok(GrantType::RefreshToken) => {
            refresh_token::presented_hash(&params).map(TokenRead::Refresh)
        }
        _ => None,
    };
    let (client, read) =
        client_auth::authenticate_reading(state, client_ip, headers, &params, presented).await?;
    // After authentication, so nobody can spend a confidential client's quota by naming it.
    let mut unit = TokenUnit(if client.client.token_endpoint_auth_method.is_public() {
        state.limiter.unit_ip(Limit::Token, client_ip)
    } else {
        state.limiter.unit(Limit::Token, &client.client.client_id)
    });
    let granted = match grant_type {
        Ok(grant_type) => grant(state, &client, grant_type, &params, read, &mut unit).await,
        Err(refused) => Err(refused),
    };
    if granted.is_err() {
        // Refused before its unit was spent: spent now, as every token request's is (and an
        // empty bucket answers 429 rather than the request's own error, as when the unit was
        // spent first).
        unit.spend_now(state).await?;
    }
    debug_assert!(
        unit.0.is_none(),
        "a grant issued tokens without spending its unit"
    );
    granted
}

/// The grant the request asks for (RFC 6749 §4, §6; RFC 8628 §3.4): `grant_type` is required
/// (`invalid_request`), and one we don't offer is `unsupported_grant_type` (RFC 6749 §5.2).
fn grant_type(params: &Params) -> Result<GrantType, TokenError> {
    let raw = params
        .get("grant_type")
        .ok_or_else(|| TokenError::invalid_request("grant_type is required"))?;
    raw.parse().map_err(|_| {
        TokenError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            &format!("grant_type `{raw}` is not supported"),
        )
    })
}

/// The grant the request asks for, for an authenticated client.
async fn grant(
    state: &AppState,
    client: &AuthenticatedClient,
    grant_type: GrantType,
    params: &Params,
    read: Option<client_auth::ReadAlong>,
    unit: &mut TokenUnit,
) -> Result<TokenResponse, TokenError> {
    // RFC 6749 §5.2 unauthorized_client: the client must be registered for the grant.
    if !client.metadata.allows_grant(grant_type) {
        return Err(TokenError::unauthorized_client(&format!(
            "this client is not registered for the {grant_type} grant"
        )));
    }
    Ok(match grant_type {
        GrantType::AuthorizationCode => {
            unit.spend_now(state).await?;
            authorization_code::exchange(state, client, params).await?
        }
        GrantType::DeviceCode => {
            unit.spend_now(state).await?;
            device_code::exchange(state, client, params).await?
        }
        GrantType::ClientCredentials => {
            client_credentials::grant(state, client, params, unit).await?
        }
        GrantType::RefreshToken => {
            let presented = read.map(|read| read.refresh);
            refresh_token::refresh(state, client, params, presented, unit).await?
        }
    })
}

/// The unit of the per-client token limit ([`Limit::Token`]) a token request spends once its
/// client is authenticated. The grants that issue through a group-committed write (client
/// credentials, the refresh rotation) hand it to that write, which spends it with its batch's
/// other units before writing (issue 16: one writer's queue per token instead of two); the
/// other paths spend it on their own before they write anything; a request refused before
/// either spends it at the end ([`handle`]). `None` inside: the limit is off (or the address
/// unknown), or the unit is spent.
pub struct TokenUnit(Option<BatchedSpend>);

impl TokenUnit {
    /// For the write that spends it (`Storage::add_session_with_token`,
    /// `Storage::rotate_refresh_token`); a refusal comes back as `Spent::Refused`
    /// ([`TokenUnit::refused`]).
    pub fn for_write(&mut self) -> Option<BatchedSpend> {
        self.0.take()
    }

    /// Spends the unit now, before anything is written: 429 when the bucket is empty.
    pub async fn spend_now(&mut self, state: &AppState) -> Result<(), TokenError> {
        match self.0.take() {
            Some(unit) => state
                .limiter
                .spend_unit(Limit::Token, unit)
                .await
                .map_err(token_limited),
            None => Ok(()),
        }
    }

    /// The 429 of a unit the write refused (nothing was written).
    pub fn refused(state: &AppState, retry_after: std::time::Duration) -> TokenError {
        token_limited(state.limiter.refused(Limit::Token, retry_after))
    }
}

/// The per-client token limit's answer ([`TokenError::too_many`]).
fn token_limited(error: RateLimitError) -> TokenError {
    TokenError::limited("token requests from this client", error)
}
