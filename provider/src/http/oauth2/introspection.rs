//! `POST /oauth2/introspect` (RFC 7662): is a token active, and what does it stand for.
//!
//! Two kinds of callers (RFC 7662 §2.1: "the endpoint MUST also require some form of
//! authorization"):
//! - the homeserver, with `Authorization: Bearer <matrix shared secret>` (the homeserver
//!   contract of SPEC-NOTES.md; Synapse's `matrix_authentication_service` mode);
//! - a confidential client, authenticated as at the token endpoint ([`client_auth`]). Public
//!   clients (`none`) have no credentials and may not introspect.
//!
//! What each may see ([`Caller::may_see`], RFC 7662 §4: the server "SHOULD [...] determine
//! whether the protected resource is allowed to know about the token"; a client without
//! business with a token must not learn whose it is): the homeserver, every token (it serves
//! them all); a client, the tokens issued to it; a client listed in `admin.clients`, every token
//! (it may already read every user, session and client through the admin API). Anyone else is
//! answered `{"active": false}`, as for a token that doesn't exist: registering a client
//! anonymously (RFC 7591) must not make every user's token readable.
//!
//! Every token that is not active, whatever the reason (unknown, malformed, expired, revoked,
//! finished session, locked or deactivated user, not the caller's to see), is answered exactly
//! `{"active": false}` (§2.2). Answers are never cached (`Cache-Control: no-store`).
//!
//! Cost of the hot path (the homeserver introspecting an OAuth 2.0 access token): one prepared
//! statement, one round trip to the database: the token, its session, its client and its user
//! joined (unique hash index, then primary keys), expiry, revocation, the session's end and the
//! user's lock checked in SQL; no transaction, and no pool pings around it (a kept connection,
//! `Storage::hot_read`), shared with the other introspections of that moment: concurrent
//! lookups are batched into one statement (`Storage::find_active_access_token`), so under load
//! one round trip answers many requests. Nothing is cached: every read starts after its request
//! arrived, so a revocation is seen at once by every replica. A client caller's access token is
//! read in the statement that reads the client and the peek at its address's failures
//! (`Storage::find_client_with_bucket`), batched the same way: one round trip too.
//!
//! The lookup only reads. The homeserver introspecting a token is the token being used (its
//! client is calling the homeserver with it): its first use is then recorded, one conditional
//! write (`first_used_at`, written only while NULL), which closes the retry grace of the refresh
//! that issued it (client-server API "Refreshing access tokens"; `core::tokens`); later uses
//! only read. A client introspecting a token records nothing: asking about a token is not
//! using it, and a client without business with a token must not change it (RFC 7662 §4).

use axum::{
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use super::{
    api::{form_params, no_store, token_param, BearerError, TokenError},
    client_auth::{self, AuthenticatedClient},
};
use crate::http::kit::params::{authorization, Authorization, Params};
use crate::{
    core::{
        rate_limit::ClientIp,
        tokens::{find_active_access_token, record_first_use, UnusedToken},
    },
    crypto::sha256,
    domain::{
        protocol::{ClientAuthMethod, TokenTypeHint},
        scope::{self, Scope, API_SCOPE, DEVICE_SCOPE_PREFIX, SYNAPSE_ADMIN_SCOPE},
        token::{SynapseTokenFormat, TokenKind},
    },
    http::AppState,
    storage::{ActiveAccessToken, BoxRepository, StorageError, TokenHash, TokenRead, User},
};

/// How clients authenticate here: as at the token endpoint, but never `none` (a public client
/// may not introspect, RFC 7662 §2.1).
pub const CLIENT_AUTH_METHODS: &[ClientAuthMethod] = &[
    ClientAuthMethod::ClientSecretBasic,
    ClientAuthMethod::ClientSecretPost,
    ClientAuthMethod::ClientSecretJwt,
    ClientAuthMethod::PrivateKeyJwt,
];

/// How the homeserver authenticates here: its shared secret as a bearer token (RFC 6750 §2.1).
pub const BEARER: &str = "Bearer";

/// How callers authenticate here (RFC 8414 §2 `introspection_endpoint_auth_methods_supported`:
/// token endpoint authentication methods, or access token types such as `Bearer`).
pub fn auth_methods() -> Vec<&'static str> {
    CLIENT_AUTH_METHODS
        .iter()
        .map(|m| m.as_str())
        .chain([BEARER])
        .collect()
}

/// Sent by Synapse (MAS 0.15+ contract): it reads the device from `device_id` rather than from
/// the scope.
pub const SUPPORTS_DEVICE_ID_HEADER: &str = "x-mas-supports-device-id";

/// RFC 7662 §2.2 members. An inactive token has `active: false` and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The public `client_id` the token was issued to (none for compat tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The Matrix localpart (our `users.username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The RFC 7009 §4.1.2 token type hint value: `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<TokenTypeHint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The user's ULID, as in the ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Seconds until `exp` (Synapse caches no longer than this); absent when it never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// The Matrix device, for callers that sent `X-MAS-Supports-Device-Id: 1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl Introspection {
    /// RFC 7662 §2.2: "the authorization server MUST return an introspection response with the
    /// "active" field set to false" and SHOULD NOT say more.
    pub fn inactive() -> Self {
        Self::default()
    }
}

/// Who is asking.
#[derive(Debug)]
enum Caller {
    /// The homeserver, with the shared secret.
    Homeserver,
    /// A confidential client.
    Client(Box<AuthenticatedClient>),
}

impl Caller {
    /// May this caller learn about a token issued to `client_id` (`None`: a compat token, issued
    /// to no OAuth 2.0 client)? See the module docs (RFC 7662 §4).
    fn may_see(&self, client_id: Option<&str>, admin_clients: &[String]) -> bool {
        match self {
            Self::Homeserver => true,
            Self::Client(caller) => {
                let caller = caller.client.client_id.as_str();
                client_id == Some(caller) || admin_clients.iter().any(|a| a == caller)
            }
        }
    }
}

/// Why a request was refused before any token was looked at.
#[derive(Debug)]
enum IntrospectionError {
    /// RFC 7662 §2.3: a client's credentials are refused as in RFC 6749 §5.2; so are malformed
    /// requests.
    Client(TokenError),
    /// RFC 7662 §2.3: a bearer credential that is invalid is refused as in RFC 6750 §3.
    Bearer(BearerError),
}

impl From<TokenError> for IntrospectionError {
    fn from(e: TokenError) -> Self {
        Self::Client(e)
    }
}

impl IntoResponse for IntrospectionError {
    fn into_response(self) -> Response {
        match self {
            Self::Client(e) => e.into_response(),
            Self::Bearer(e) => e.into_response(),
        }
    }
}

/// Does `given` equal the configured shared secret? Compared in constant time over SHA-256
/// digests, so neither the content nor the length of the secret leaks through timing. An empty
/// secret matches nothing.
fn is_shared_secret(given: &str, secret: &str) -> bool {
    !secret.is_empty() && bool::from(sha256(given).ct_eq(&sha256(secret)))
}

/// Who is asking, and, for a client asked to read it along (`access`: an OAuth 2.0 access
/// token), the token read with the client's row (`None`: not read, see
/// [`client_auth::authenticate_reading`]).
async fn authenticate(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    params: &Params,
    access: Option<TokenRead>,
) -> Result<(Caller, Option<Option<ActiveAccessToken>>), IntrospectionError> {
    match authorization(headers) {
        Authorization::Bearer(token) => {
            if is_shared_secret(token, &state.settings.matrix.secret) {
                Ok((Caller::Homeserver, None))
            } else {
                Err(IntrospectionError::Bearer(BearerError::InvalidToken(
                    "the bearer token is not the homeserver's shared secret",
                )))
            }
        }
        Authorization::Malformed => Err(IntrospectionError::Bearer(BearerError::InvalidRequest(
            "the Authorization header is malformed",
        ))),
        // HTTP Basic, client_secret_post or nothing: client authentication decides.
        Authorization::Absent | Authorization::Basic(_) | Authorization::Other => {
            let (client, read) =
                client_auth::authenticate_reading(state, client_ip, headers, params, access)
                    .await?;
            // RFC 7662 §2.1 requires authorization; a public client proves nothing.
            if client.client.token_endpoint_auth_method.is_public() {
                return Err(TokenError::invalid_client(
                    "public clients may not introspect tokens",
                    false,
                )
                .into());
            }
            Ok((
                Caller::Client(Box::new(client)),
                read.map(|read| read.access),
            ))
        }
    }
}

/// `POST /oauth2/introspect`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, &client_ip, &headers, &body).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Introspection, IntrospectionError> {
    let params = form_params(headers, body)?;
    let now = state.storage.entropy().clock.now();
    // An OAuth 2.0 access token (the hot path) asked by a client is read in the statement that
    // reads the client and its address's failures (issue 16: one round trip, and one statement
    // for the database, instead of two). The read is used only once the caller is
    // authenticated (RFC 7662 §2.1). Any other token, or a caller whose authentication reads
    // no client row first, is looked up once the caller is known.
    let token = token_param(&params);
    let access = token
        .as_ref()
        .ok()
        .filter(|token| TokenKind::parse(token) == Ok(TokenKind::AccessToken))
        .map(|token| TokenRead::Access(sha256(token), now));
    let (caller, read) = authenticate(state, client_ip, headers, &params, access).await?;
    let token = token?;
    let supports_device_id = headers
        .get(SUPPORTS_DEVICE_ID_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    let found = match read {
        Some(read) => Found::Token(read.map(oauth2_access_token)),
        None => lookup(state, token, now)
            .await
            .map_err(TokenError::server)?,
    };
    let found = match found {
        Found::Token(found) => found,
        Found::RefreshToken => refresh_token(state, &caller, token)
            .await
            .map_err(TokenError::server)?,
    };
    let admin_clients = &state.settings.admin_clients;
    // RFC 7662 §4: only to a caller with business with the token.
    let Some(active) =
        found.filter(|active| caller.may_see(active.client_id.as_deref(), admin_clients))
    else {
        return Ok(Introspection::inactive());
    };
    let unused = active.unused;
    let Some(answer) = active.answer(supports_device_id, now) else {
        return Ok(Introspection::inactive());
    };
    // The homeserver asks because the token is being used against it: its first use (see the
    // module). Only once the token is active for it; never for a client's question.
    if let (Caller::Homeserver, Some(unused)) = (&caller, unused) {
        record_first_use(&state.storage, unused).await;
    }
    Ok(answer)
}

/// An active token, whatever its kind, before it is put in the caller's terms.
#[derive(Debug)]
struct ActiveToken {
    token_type: TokenTypeHint,
    scope: String,
    client_id: Option<String>,
    user: Option<User>,
    /// The session's Matrix device, when it records one.
    device_id: Option<String>,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    /// The access token, when its first use is not recorded yet.
    unused: Option<UnusedToken>,
}

impl ActiveToken {
    /// The introspection response; `None` when the device can't be told to this caller.
    fn answer(self, supports_device_id: bool, now: DateTime<Utc>) -> Option<Introspection> {
        let device_id = self
            .device_id
            .or_else(|| device_in_scope(&self.scope).map(str::to_owned));
        let scope = if supports_device_id {
            self.scope
        } else {
            // The homeserver contract: a caller without the header reads the device from the
            // scope, so it must be there. A device ID that can't be a scope token (RFC 6749
            // §3.3) can't be told that way: the token is inactive for this caller.
            scope_with_device(&self.scope, device_id.as_deref())?
        };
        Some(Introspection {
            active: true,
            scope: Some(with_both_forms(&scope)),
            client_id: self.client_id,
            username: self.user.as_ref().map(|u| u.username.clone()),
            token_type: Some(self.token_type),
            exp: self.expires_at.map(|e| e.timestamp()),
            iat: Some(self.issued_at.timestamp()),
            sub: self.user.as_ref().map(|u| u.id.to_string()),
            // Rounded down: Synapse counts the token as expired after `expires_in` seconds.
            expires_in: self.expires_at.map(|e| (e - now).num_seconds().max(0)),
            device_id: device_id.filter(|_| supports_device_id),
        })
    }
}

/// The ID of the one device scope (MSC2967, stable or unstable form) of a scope, if it has
/// exactly one device.
fn device_in_scope(scope: &str) -> Option<&str> {
    let mut devices = scope.split(' ').filter_map(scope::device_id);
    let first = devices.next()?;
    devices.all(|d| d == first).then_some(first)
}

/// `scope`, with the device scope of `device_id` added when the scope names no device. `None`
/// when the device ID can't be written as a scope token.
fn scope_with_device(scope: &str, device_id: Option<&str>) -> Option<String> {
    match device_id {
        Some(device) if device_in_scope(scope).is_none() => {
            let token = device_scope(device)?;
            Some(if scope.is_empty() {
                token
            } else {
                format!("{scope} {token}")
            })
        }
        _ => Some(scope.to_owned()),
    }
}

/// The scope with every MSC2967 token in both spellings (stable and unstable), whichever the
/// client asked for: a homeserver that knows only one of them still finds the API scope and
/// the device (SPEC-NOTES.md, the homeserver contract).
fn with_both_forms(scope: &str) -> String {
    let tokens: Vec<&str> = scope.split(' ').filter(|t| !t.is_empty()).collect();
    let mut out: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    for token in &tokens {
        if let Some(other) = scope::other_form(token) {
            if !out.contains(&other) {
                out.push(other);
            }
        }
    }
    out.join(" ")
}

/// `urn:matrix:client:device:<id>`, if that is one valid scope token (RFC 6749 §3.3).
fn device_scope(device_id: &str) -> Option<String> {
    let token = format!("{DEVICE_SCOPE_PREFIX}{device_id}");
    let parsed = Scope::parse(&token).ok()?;
    (parsed.iter().count() == 1 && parsed.contains(&token)).then_some(token)
}

/// The scope a compat session (legacy login, MSC3824) acts with: the whole client API, its
/// device, and Synapse administration when it was granted.
fn compat_scope(device_id: &str, is_synapse_admin: bool) -> Option<String> {
    let mut scope = format!("{API_SCOPE} {}", device_scope(device_id)?);
    if is_synapse_admin {
        scope.push(' ');
        scope.push_str(SYNAPSE_ADMIN_SCOPE);
    }
    Some(scope)
}

/// The user, when they may still use their tokens (`User::is_active`).
async fn active_user(
    repo: &mut BoxRepository,
    id: ulid::Ulid,
) -> Result<Option<User>, StorageError> {
    Ok(repo.users().lookup(id).await?.filter(User::is_active))
}

/// What [`lookup`] found without knowing the caller.
// A return value moved once per request: boxing the large variant would only add an
// allocation to the hot path.
#[allow(clippy::large_enum_variant)]
enum Found {
    Token(Option<ActiveToken>),
    /// A refresh token: whether it is active depends on who asks ([`refresh_token`]).
    RefreshToken,
}

/// Looks the token up by its kind (the prefix, checked by the checksum first). An OAuth 2.0
/// access token, the hot path, is read in one statement shared with the other requests of that
/// moment (`Storage::find_active_access_token`); the other kinds on a kept connection
/// (`Storage::hot_read`: no pool pings around the statements, or a pooled connection when none
/// is free or the kept one failed; they only read, so running them twice is harmless).
async fn lookup(state: &AppState, token: &str, now: DateTime<Utc>) -> Result<Found, StorageError> {
    let storage = &state.storage;
    // RFC 7662 §2.2: a malformed token "does not exist on this server": no query at all.
    let Ok(kind) = TokenKind::parse(token) else {
        // A token Synapse issued before the switch (`syt_…`, a macaroon), imported by
        // `provider syn2mas` into a compat session: looked up by its hash like ours.
        return match SynapseTokenFormat::of(token) {
            Some(format) if format.is_access() => {
                let hash = sha256(token);
                storage
                    .hot_read(&hash, |repo, hash| {
                        Box::pin(compat_access_token(repo, hash, now))
                    })
                    .await
                    .map(Found::Token)
            }
            _ => Ok(Found::Token(None)),
        };
    };
    match kind {
        TokenKind::AccessToken => Ok(Found::Token(
            find_active_access_token(storage, token, now)
                .await?
                .map(oauth2_access_token),
        )),
        TokenKind::RefreshToken => Ok(Found::RefreshToken),
        TokenKind::CompatAccessToken => {
            let hash = sha256(token);
            storage
                .hot_read(&hash, |repo, hash| {
                    Box::pin(compat_access_token(repo, hash, now))
                })
                .await
                .map(Found::Token)
        }
        // Compat refresh tokens belong to no OAuth 2.0 client; personal tokens are not issued.
        TokenKind::CompatRefreshToken | TokenKind::PersonalAccessToken => Ok(Found::Token(None)),
    }
}

/// A refresh token, for the caller. Refresh tokens only ever travel between a client and this
/// server: a client may introspect its own; the homeserver never sees one (RFC 7662 §2.2: "not
/// allowed to introspect this particular token").
async fn refresh_token(
    state: &AppState,
    caller: &Caller,
    token: &str,
) -> Result<Option<ActiveToken>, StorageError> {
    let storage = &state.storage;
    match caller {
        Caller::Client(client) => {
            let hash = sha256(token);
            storage
                .hot_read(&(client, hash), |repo, (client, hash)| {
                    Box::pin(oauth2_refresh_token(repo, client, hash))
                })
                .await
        }
        Caller::Homeserver => Ok(None),
    }
}

fn oauth2_access_token(active: ActiveAccessToken) -> ActiveToken {
    let unused = UnusedToken::oauth2(&active);
    ActiveToken {
        token_type: TokenTypeHint::AccessToken,
        scope: active.session.scope,
        client_id: Some(active.client_id),
        user: active.user,
        device_id: active.session.device_id,
        issued_at: active.token.created_at,
        expires_at: active.token.expires_at,
        unused,
    }
}

async fn oauth2_refresh_token(
    repo: &mut BoxRepository,
    client: &AuthenticatedClient,
    hash: &TokenHash,
) -> Result<Option<ActiveToken>, StorageError> {
    // Active while it may be exchanged: not consumed (rotated), not revoked, session going on.
    let Some(refresh) = repo
        .refresh_tokens()
        .find_by_hash(hash)
        .await?
        .filter(|t| t.is_usable())
    else {
        return Ok(None);
    };
    let Some(session) = repo
        .oauth2_sessions()
        .lookup(refresh.session_id)
        .await?
        .filter(|s| s.is_active() && s.client_id == client.client.id)
    else {
        return Ok(None);
    };
    let user = match session.user_id {
        Some(id) => match active_user(repo, id).await? {
            Some(user) => Some(user),
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some(ActiveToken {
        token_type: TokenTypeHint::RefreshToken,
        scope: session.scope,
        client_id: Some(client.client.client_id.clone()),
        user,
        device_id: session.device_id,
        issued_at: refresh.created_at,
        expires_at: None,
        unused: None,
    }))
}

async fn compat_access_token(
    repo: &mut BoxRepository,
    hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<Option<ActiveToken>, StorageError> {
    // The same hot path as OAuth 2.0 access tokens: token and session in one query.
    let Some((token, session)) = repo
        .compat_tokens()
        .find_active_access_by_hash_with_session(hash, now)
        .await?
    else {
        return Ok(None);
    };
    let Some(user) = active_user(repo, session.user_id).await? else {
        return Ok(None);
    };
    // A device ID that can't be a scope token leaves only the `device_id` member to carry it.
    let scope = compat_scope(&session.device_id, session.is_synapse_admin)
        .unwrap_or_else(|| API_SCOPE.to_owned());
    Ok(Some(ActiveToken {
        token_type: TokenTypeHint::AccessToken,
        scope,
        client_id: None,
        user: Some(user),
        device_id: Some(session.device_id),
        issued_at: token.created_at,
        expires_at: token.expires_at,
        // As for OAuth 2.0 access tokens: the first use closes the refresh retry grace.
        unused: token
            .first_used_at
            .is_none()
            .then_some(UnusedToken::Compat(token.id)),
    }))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn user() -> User {
        User {
            id: ulid::Ulid::from_parts(1, 2),
            username: "alice".into(),
            created_at: at(0),
            locked_at: None,
            deactivated_at: None,
            can_request_admin: false,
            display_name: None,
        }
    }

    fn token(scope: &str, device: Option<&str>) -> ActiveToken {
        ActiveToken {
            token_type: TokenTypeHint::AccessToken,
            scope: scope.into(),
            client_id: Some("client".into()),
            user: Some(user()),
            device_id: device.map(Into::into),
            issued_at: at(0),
            expires_at: Some(at(300)),
            unused: None,
        }
    }

    #[test]
    fn inactive_is_exactly_active_false() {
        assert_eq!(
            serde_json::to_value(Introspection::inactive()).unwrap(),
            serde_json::json!({ "active": false })
        );
    }

    #[test]
    fn active_answers() {
        let scope = "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ";
        // Every MSC2967 token in both forms, so a homeserver knowing either understands it.
        let both = "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ \
                    urn:matrix:org.matrix.msc2967.client:api:* \
                    urn:matrix:org.matrix.msc2967.client:device:ABCDEFGHIJ";
        let with_header = token(scope, None).answer(true, at(100)).unwrap();
        assert_eq!(
            serde_json::to_value(&with_header).unwrap(),
            serde_json::json!({
                "active": true,
                "scope": both,
                "client_id": "client",
                "username": "alice",
                "token_type": "access_token",
                "exp": 1_700_000_300,
                "iat": 1_700_000_000,
                "sub": user().id.to_string(),
                "expires_in": 200,
                "device_id": "ABCDEFGHIJ",
            })
        );
        // Without the header: no device_id member; the device is in the scope already.
        let without = token(scope, None).answer(false, at(100)).unwrap();
        assert_eq!(without.device_id, None);
        assert_eq!(without.scope.as_deref(), Some(both));
        // The unstable form asked for: the stable one is added.
        let unstable = token(
            "urn:matrix:org.matrix.msc2967.client:api:* urn:synapse:admin:*",
            None,
        )
        .answer(true, at(100))
        .unwrap();
        assert_eq!(
            unstable.scope.as_deref(),
            Some(
                "urn:matrix:org.matrix.msc2967.client:api:* urn:synapse:admin:* \
                 urn:matrix:client:api:*"
            )
        );
        // A session device missing from the scope is added to it.
        let added = token("urn:matrix:client:api:*", Some("DEV"))
            .answer(false, at(100))
            .unwrap();
        assert_eq!(
            added.scope.as_deref(),
            Some(
                "urn:matrix:client:api:* urn:matrix:client:device:DEV \
                 urn:matrix:org.matrix.msc2967.client:api:* \
                 urn:matrix:org.matrix.msc2967.client:device:DEV"
            )
        );
        // A device that can't be a scope token: only with the header.
        assert!(token("urn:matrix:client:api:*", Some("a b"))
            .answer(false, at(100))
            .is_none());
        let explicit = token("urn:matrix:client:api:*", Some("a b"))
            .answer(true, at(100))
            .unwrap();
        assert_eq!(explicit.device_id.as_deref(), Some("a b"));
        // expires_in is rounded down and never negative.
        let late = token("openid", None)
            .answer(true, at(300) - Duration::milliseconds(1))
            .unwrap();
        assert_eq!(late.expires_in, Some(0));
    }

    #[test]
    fn devices_in_scopes() {
        assert_eq!(
            device_in_scope("openid urn:matrix:client:device:ABC"),
            Some("ABC")
        );
        assert_eq!(
            device_in_scope("urn:matrix:org.matrix.msc2967.client:device:ABC"),
            Some("ABC")
        );
        assert_eq!(
            device_in_scope(
                "urn:matrix:client:device:ABC urn:matrix:org.matrix.msc2967.client:device:ABC"
            ),
            Some("ABC")
        );
        assert_eq!(
            device_in_scope("urn:matrix:client:device:A urn:matrix:client:device:B"),
            None
        );
        assert_eq!(device_in_scope("urn:matrix:client:device:"), None);
        assert_eq!(device_in_scope("openid"), None);
        assert_eq!(
            scope_with_device("", Some("D")).as_deref(),
            Some("urn:matrix:client:device:D")
        );
        assert_eq!(scope_with_device("openid", None).as_deref(), Some("openid"));
    }

    #[test]
    fn compat_scopes() {
        assert_eq!(
            compat_scope("DEV", false).as_deref(),
            Some("urn:matrix:client:api:* urn:matrix:client:device:DEV")
        );
        assert_eq!(
            compat_scope("DEV", true).as_deref(),
            Some("urn:matrix:client:api:* urn:matrix:client:device:DEV urn:synapse:admin:*")
        );
        assert_eq!(compat_scope("a\"b", false), None);
        assert_eq!(compat_scope("a b", true), None);
    }

    fn client_caller(client_id: &str) -> Caller {
        let client = crate::storage::Client {
            id: ulid::Ulid::from_parts(1, 3),
            client_id: client_id.into(),
            is_static: false,
            encrypted_client_secret: None,
            token_endpoint_auth_method:
                crate::domain::protocol::ClientAuthMethod::ClientSecretBasic,
            metadata: serde_json::json!({}),
            created_at: at(0),
            updated_at: at(0),
        };
        let metadata =
            crate::domain::client_metadata::RegisteredMetadata::from_json(&client.metadata);
        Caller::Client(Box::new(AuthenticatedClient { client, metadata }))
    }

    #[test]
    fn who_may_see_a_token() {
        let admins = vec!["robot".to_owned()];
        // The homeserver sees every token, compat ones included.
        assert!(Caller::Homeserver.may_see(Some("app"), &[]));
        assert!(Caller::Homeserver.may_see(None, &[]));
        // A client sees its own tokens only (RFC 7662 §4).
        assert!(client_caller("app").may_see(Some("app"), &admins));
        assert!(!client_caller("other").may_see(Some("app"), &admins));
        assert!(!client_caller("other").may_see(None, &admins));
        assert!(!client_caller("ap").may_see(Some("app"), &admins));
        // An admin client sees every token.
        assert!(client_caller("robot").may_see(Some("app"), &admins));
        assert!(client_caller("robot").may_see(None, &admins));
    }

    #[test]
    fn shared_secret() {
        assert!(is_shared_secret("s3cret", "s3cret"));
        assert!(!is_shared_secret("s3cre", "s3cret"));
        assert!(!is_shared_secret("s3cret ", "s3cret"));
        assert!(!is_shared_secret("", ""));
    }

    proptest! {
        #[test]
        fn scope_helpers_never_panic(scope in "\\PC{0,60}", device in "\\PC{0,12}") {
            let _ = device_in_scope(&scope);
            let _ = scope_with_device(&scope, Some(&device));
            let _ = compat_scope(&device, true);
        }
    }
}
