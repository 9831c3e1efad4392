//! `GET|POST /_matrix/client/{r0,v3}/login` (client-server API §"Login"; MSC3824).
//!
//! - `GET`: the login flows: `m.login.password`, `m.login.sso` marked as delegated to an
//!   OAuth 2.0 provider (MSC3824), `m.login.token` (to finish `m.login.sso`).
//! - `POST` `m.login.password`: the provider's own password check (the login page's, see
//!   [`crate::core::sign_in::check_password`]), behind the same rate limits (see
//!   [`crate::core::sign_in::attempt_sign_in`]): over one, 429 `M_LIMIT_EXCEEDED` with
//!   `retry_after_ms` (client-server API §"Rate limiting").
//! - `POST` `m.login.token`: the `loginToken` an `m.login.sso` login sent the client back with
//!   (see [`super::sso`]), once, within [`LOGIN_TOKEN_LIFETIME_MINUTES`] of its issue.
//!
//! A successful login is one transaction: the compat session (replacing the device's previous
//! one), its tokens, the device upserted on the homeserver before the commit.

use axum::{
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    display_name, error::from_value, is_valid_device_id, issue_tokens, json_no_store,
    matrix_user_id, IssuedTokens, MatrixError,
};
use crate::core::sessions::{abandon_device, end_compat_session, start_compat_session};
use crate::http::kit;
use crate::{
    core::{
        matrix::provisioning::{self, ensure_device, AfterCommit},
        rate_limit::ClientIp,
        sign_in::{attempt_sign_in, AttemptError, Refusal},
    },
    crypto::sha256,
    http::AppState,
    storage::{BoxRepository, CompatSession, CompatSsoLogin, StorageError, User},
};

/// How long after the SSO login was completed its `loginToken` may be exchanged: the client
/// gets it at once, in the redirect (Synapse also allows two minutes).
pub const LOGIN_TOKEN_LIFETIME_MINUTES: i64 = 2;

/// The length of the `loginToken`s [`super::sso`] issues (base62: about 190 bits).
pub const LOGIN_TOKEN_LEN: usize = 32;

/// The login flows (client-server API §"GET /login"; MSC3824: `m.login.sso` is the way to the
/// OAuth 2.0 provider, and clients that know OAuth 2.0 should use it directly instead:
/// `oauth_aware_preferred`, with the unstable `delegated_oidc_compatibility` flag older clients
/// read). `m.login.password` is listed when the provider has passwords (always, today).
pub fn flows_document(passwords: bool) -> Value {
    let mut flows = Vec::new();
    if passwords {
        flows.push(json!({ "type": "m.login.password" }));
    }
    flows.push(json!({
        "type": "m.login.sso",
        "identity_providers": [],
        "oauth_aware_preferred": true,
        "org.matrix.msc3824.delegated_oidc_compatibility": true,
    }));
    flows.push(json!({ "type": "m.login.token" }));
    json!({ "flows": flows })
}

/// `GET /login`.
pub async fn flows() -> Response {
    axum::Json(flows_document(true)).into_response()
}

/// The device part of a login request, as every login type has it.
#[derive(Debug, Default, Deserialize)]
struct RawDevice {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    initial_device_display_name: Option<String>,
    /// Client-server API §"Refreshing access tokens": the client supports refresh tokens.
    #[serde(default)]
    refresh_token: Option<bool>,
}

/// An `m.login.password` request as sent.
#[derive(Debug, Deserialize)]
struct RawPasswordLogin {
    #[serde(default)]
    identifier: Option<RawIdentifier>,
    /// Deprecated (client-server API §"Password-based"): the user without an identifier.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(flatten)]
    device: RawDevice,
}

/// A user identifier (client-server API §"Identifier types").
#[derive(Debug, Deserialize)]
struct RawIdentifier {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<String>,
}

/// An `m.login.token` request as sent.
#[derive(Debug, Deserialize)]
struct RawTokenLogin {
    #[serde(default)]
    token: Option<String>,
    #[serde(flatten)]
    device: RawDevice,
}

/// The device a login asks for, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRequest {
    /// The device ID the client chose (valid, see [`is_valid_device_id`]), if any.
    pub device_id: Option<String>,
    pub display_name: Option<String>,
    pub refresh_token: bool,
}

/// A login request, parsed and checked before any query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRequest {
    Password {
        /// The localpart (a Matrix ID of this server was reduced to it).
        username: String,
        password: String,
        device: DeviceRequest,
    },
    Token {
        token: String,
        device: DeviceRequest,
    },
}

impl DeviceRequest {
    fn check(raw: RawDevice) -> Result<Self, MatrixError> {
        if let Some(id) = &raw.device_id {
            // Unreserved characters only (RFC 3986 §2.3): the ID goes into a device scope
            // (MSC2967) and the homeserver's URLs.
            if !is_valid_device_id(id) {
                return Err(MatrixError::InvalidParam(
                    "the device_id must be 1 to 255 characters among A-Z a-z 0-9 - . _ ~",
                ));
            }
        }
        Ok(Self {
            device_id: raw.device_id,
            display_name: display_name(raw.initial_device_display_name),
            refresh_token: raw.refresh_token.unwrap_or(false),
        })
    }
}

/// The localpart a password login names: `alice`, or `@alice:<this server>`. Another server's
/// user can't log in here: `M_FORBIDDEN` (as Synapse answers).
fn localpart(user: &str, server_name: &str) -> Result<String, MatrixError> {
    match user.strip_prefix('@') {
        Some(mxid) => match mxid.split_once(':') {
            Some((localpart, server)) if server == server_name => Ok(localpart.to_owned()),
            _ => Err(MatrixError::Forbidden(
                "this user is not on this homeserver",
            )),
        },
        None => Ok(user.to_owned()),
    }
}

/// Parses a `POST /login` body (client-server API §"POST /login"): not JSON → `M_NOT_JSON`;
/// another shape → `M_BAD_JSON`; `m.login.application_service` →
/// `M_APPSERVICE_LOGIN_UNSUPPORTED` (MSC4190); another type → 400 `M_UNKNOWN` "Unknown login
/// type" (as Synapse answers).
pub fn parse_login(body: &[u8], server_name: &str) -> Result<LoginRequest, MatrixError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| MatrixError::NotJson)?;
    if !value.is_object() {
        return Err(MatrixError::BadJson(
            "the request body must be a JSON object".into(),
        ));
    }
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(MatrixError::BadJson(
                "the login `type` must be a string".into(),
            ))
        }
        None => return Err(MatrixError::MissingParam("the login `type` is missing")),
    };
    match kind.as_str() {
        "m.login.password" => {
            let raw: RawPasswordLogin = from_value(value)?;
            let user = match (raw.identifier, raw.user) {
                (Some(identifier), _) => {
                    // §"Identifier types": only Matrix user IDs; third-party IDs (email,
                    // phone) are not offered.
                    if identifier.kind != "m.id.user" {
                        return Err(MatrixError::BadRequest(
                            "unknown login identifier type: only m.id.user is supported",
                        ));
                    }
                    identifier
                        .user
                        .ok_or(MatrixError::MissingParam("the identifier has no `user`"))?
                }
                (None, Some(user)) => user,
                (None, None) => {
                    return Err(MatrixError::MissingParam(
                        "the user to log in is missing (`identifier`)",
                    ))
                }
            };
            let password = raw
                .password
                .ok_or(MatrixError::MissingParam("the `password` is missing"))?;
            Ok(LoginRequest::Password {
                username: localpart(&user, server_name)?,
                password,
                device: DeviceRequest::check(raw.device)?,
            })
        }
        "m.login.token" => {
            let raw: RawTokenLogin = from_value(value)?;
            let token = raw
                .token
                .ok_or(MatrixError::MissingParam("the `token` is missing"))?;
            Ok(LoginRequest::Token {
                token,
                device: DeviceRequest::check(raw.device)?,
            })
        }
        // MSC4190: application services create their devices through the homeserver.
        "m.login.application_service" => Err(MatrixError::AppserviceLoginUnsupported),
        _ => Err(MatrixError::BadRequest("Unknown login type")),
    }
}

/// The answer to a successful login (client-server API §"POST /login", 200).
#[derive(Debug, Serialize)]
pub struct LoginResponse {
    user_id: String,
    access_token: String,
    device_id: String,
    /// Deprecated, still read by old clients.
    home_server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<i64>,
}

impl LoginResponse {
    fn new(state: &AppState, user: &User, device_id: String, tokens: IssuedTokens) -> Self {
        Self {
            user_id: matrix_user_id(state, &user.username),
            access_token: tokens.access_token,
            device_id,
            home_server: state.settings.matrix.homeserver.clone(),
            refresh_token: tokens.refresh_token,
            expires_in_ms: tokens.expires_in_ms,
        }
    }
}

/// `POST /login`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match login(&state, &client_ip, &headers, &body).await {
        Ok(answer) => json_no_store(answer),
        Err(error) => error.into_response(),
    }
}

async fn login(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<LoginResponse, MatrixError> {
    let request = parse_login(body, &state.settings.matrix.homeserver)?;
    let user_agent = kit::user_agent(headers);
    match request {
        LoginRequest::Password {
            username,
            password,
            device,
        } => {
            password_login(
                state,
                client_ip,
                &username,
                password,
                device,
                user_agent.as_deref(),
            )
            .await
        }
        LoginRequest::Token { token, device } => {
            token_login(state, &token, device, user_agent.as_deref()).await
        }
    }
}

/// `m.login.password` (client-server API §"Password-based").
async fn password_login(
    state: &AppState,
    client_ip: &ClientIp,
    username: &str,
    password: String,
    device: DeviceRequest,
    user_agent: Option<&str>,
) -> Result<LoginResponse, MatrixError> {
    // The provider's one password check: constant work for unknown users, the account's state
    // told only after the right password; rate limited like the login page. (`m.login.token`
    // is not: its tokens can't be guessed, and the sign-in that issued one was limited.)
    let checked = attempt_sign_in(state, client_ip, username, password)
        .await
        .map_err(|e| match e {
            // §"Rate limiting": 429 M_LIMIT_EXCEEDED, retry_after_ms.
            AttemptError::Limited { retry_after } => MatrixError::LimitExceeded {
                retry_after_ms: Some(
                    u64::try_from(retry_after.as_micros().div_ceil(1000)).unwrap_or(u64::MAX),
                ),
            },
            AttemptError::Check(e) => MatrixError::from(e),
        })?;
    let matched = match checked {
        Ok(matched) => matched,
        Err(Refusal::WrongCredentials) => {
            return Err(MatrixError::Forbidden("Invalid username or password"))
        }
        // MSC3939 (spec v1.10): 401 M_USER_LOCKED.
        Err(Refusal::Locked) => return Err(MatrixError::UserLocked { soft_logout: None }),
        Err(Refusal::Deactivated) => return Err(MatrixError::UserDeactivated),
    };
    let user = &matched.user;
    let mut rng = state.storage.entropy().rng.rng();
    let now = state.storage.entropy().clock.now();
    // §"Login": without a device_id the server generates one.
    let device_id = device
        .device_id
        .unwrap_or_else(|| super::generate_device_id(&mut rng));
    let display_name = device.display_name.as_deref();

    // The device must exist on the homeserver before the client uses the token. Made first,
    // with no transaction open or connection held (no transaction across a call to another
    // server: a paused homeserver must not hold up the database); if it can't be made,
    // nothing was logged in. A login that fails after it gives the device up
    // ([`abandon_device`], the one rule of every compat login). Marked as being provisioned
    // first, so a deletion of the same device ID queued by an earlier logout can't remove it
    // (`provisioning`, "The device deletion race"); the session's transaction clears the mark.
    provisioning::provision_new_device(state, user, &device_id, display_name).await?;
    let started = async {
        let mut repo = state.storage.begin().await?;
        matched.store_upgrade(&mut repo).await?;
        // Password logins never act as Synapse administrators, whatever `can_request_admin`
        // says: administration is asked for explicitly (`urn:synapse:admin:*`, through OAuth
        // 2.0).
        let (session, claimed) = start_compat_session(
            &mut repo,
            user.id,
            &device_id,
            display_name,
            false,
            user_agent,
            now,
        )
        .await?;
        let tokens =
            issue_tokens(&mut repo, session.id, device.refresh_token, now, &mut rng).await?;
        repo.commit().await?;
        Ok::<_, StorageError>((tokens, claimed))
    }
    .await;
    let (tokens, claimed) = match started {
        Ok(started) => started,
        Err(e) => {
            abandon_device(state, user.id, &device_id).await;
            return Err(e.into());
        }
    };
    // The device deletions of the sessions it replaced, before the client gets its token.
    claimed.run(state).await;
    Ok(LoginResponse::new(state, user, device_id, tokens))
}

/// The answer to a `loginToken` that logs nothing in (unknown, used, expired, or its session
/// ended).
const INVALID: MatrixError = MatrixError::Forbidden("Invalid login token");

/// Is this shaped like a `loginToken` of ours? (Checked before any query.)
fn is_login_token_shaped(token: &str) -> bool {
    token.len() == LOGIN_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `m.login.token` (client-server API §"Token-based"): the `loginToken` of a completed
/// `m.login.sso` login, exchanged once. The compat session created when the user completed it
/// is the one logged in; a client that names another device (re-logging in an existing device
/// after a soft logout, §"Soft logout") gets that device instead, since §"Login" says the
/// response's `device_id` is the request's.
async fn token_login(
    state: &AppState,
    token: &str,
    device: DeviceRequest,
    user_agent: Option<&str>,
) -> Result<LoginResponse, MatrixError> {
    if !is_login_token_shaped(token) {
        return Err(INVALID);
    }
    let display_name = device.display_name.as_deref();

    // What the token logs in, read on a connection given back before the homeserver call.
    let found = {
        let mut repo = state.storage.reader().await?;
        login_of_token(&mut repo, token).await?
    };
    let Some((login, session, user)) = found else {
        return Err(INVALID);
    };
    if user.deactivated_at.is_some() {
        return Err(MatrixError::UserDeactivated);
    }
    if user.locked_at.is_some() {
        return Err(MatrixError::UserLocked { soft_logout: None });
    }
    // The device the client gets: the login's, or the one it names (see above).
    let replaced = device
        .device_id
        .as_deref()
        .is_some_and(|requested| requested != session.device_id);
    let device_id = device
        .device_id
        .clone()
        .unwrap_or_else(|| session.device_id.clone());
    // Upserted when the login was completed; again here, since this is when the client gets
    // its token (and with the display name it gives now). With no transaction open: if the
    // homeserver fails, the token was not used and may be tried again. The login's own device
    // is held by its live session, which every deletion job reads; a device the client names
    // instead is new to this login, so it is marked as being provisioned first, as the
    // password login's (`provisioning`, "The device deletion race"), and the new session's
    // transaction (`start_compat_session`) clears the mark.
    if replaced {
        provisioning::provision_new_device(state, &user, &device_id, display_name).await?;
    } else {
        let name = display_name.or(session.human_name.as_deref());
        ensure_device(state, &user, &device_id, name).await?;
    }
    let exchanged = exchange_login(
        state, &login, &session, &user, &device_id, &device, user_agent,
    )
    .await;
    match exchanged {
        Ok(tokens) => Ok(LoginResponse::new(state, &user, device_id, tokens)),
        Err(e) => {
            // The one rule of every compat login: a device upserted for nothing is given up
            // (kept when a live session holds it: the login's own, when it still lives).
            abandon_device(state, user.id, &device_id).await;
            Err(e)
        }
    }
}

/// The transaction of [`token_login`], once the homeserver has `device_id`: the login
/// exchanged, the session logged in (the login's, or a new one for the device the client
/// names), its tokens; then the homeserver jobs of the sessions it ended.
async fn exchange_login(
    state: &AppState,
    login: &CompatSsoLogin,
    session: &CompatSession,
    user: &User,
    device_id: &str,
    device: &DeviceRequest,
    user_agent: Option<&str>,
) -> Result<IssuedTokens, MatrixError> {
    let mut rng = state.storage.entropy().rng.rng();
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    // Single use, and only shortly after it was issued (compare-and-set in the database).
    let lifetime = Duration::minutes(LOGIN_TOKEN_LIFETIME_MINUTES);
    if !repo
        .compat_sso_logins()
        .exchange(login.id, lifetime)
        .await?
    {
        return Err(INVALID);
    }
    // Still live now that the login is ours (logged out meanwhile: nothing to log in).
    let Some(session) = repo
        .compat_sessions()
        .lookup(session.id)
        .await?
        .filter(|s| s.is_active())
    else {
        return Err(INVALID);
    };
    let mut jobs = Vec::new();
    let mut claimed = AfterCommit::default();
    let session = if session.device_id != device_id {
        // The device made when the login was completed is not wanted: end it (and delete it on
        // the homeserver), and log in the requested one.
        jobs.push(end_compat_session(&mut repo, &session, now).await?);
        let (session, replaced) = start_compat_session(
            &mut repo,
            user.id,
            device_id,
            device.display_name.as_deref(),
            false,
            user_agent,
            now,
        )
        .await?;
        claimed = replaced;
        session
    } else {
        session
    };
    let tokens = issue_tokens(&mut repo, session.id, device.refresh_token, now, &mut rng).await?;
    repo.commit().await?;
    provisioning::run_now(state, &jobs).await;
    claimed.run(state).await;
    Ok(tokens)
}

/// The login of a `loginToken`, its live compat session and its user, if the token is one of
/// ours and still exchangeable (single use and the token's lifetime are checked again, by
/// compare-and-set, when it is exchanged).
async fn login_of_token(
    repo: &mut BoxRepository,
    token: &str,
) -> Result<Option<(CompatSsoLogin, CompatSession, User)>, StorageError> {
    let Some(login) = repo
        .compat_sso_logins()
        .find_by_token_hash(&sha256(token))
        .await?
        .filter(CompatSsoLogin::is_exchangeable)
    else {
        return Ok(None);
    };
    let Some(session_id) = login.session_id else {
        return Ok(None);
    };
    let Some(session) = repo
        .compat_sessions()
        .lookup(session_id)
        .await?
        .filter(|s| s.is_active())
    else {
        return Ok(None);
    };
    let Some(user) = repo.users().lookup(session.user_id).await? else {
        return Ok(None);
    };
    Ok(Some((login, session, user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "example.org";

    fn parse(body: &str) -> Result<LoginRequest, MatrixError> {
        parse_login(body.as_bytes(), SERVER)
    }

    fn password(username: &str, device: DeviceRequest) -> LoginRequest {
        LoginRequest::Password {
            username: username.into(),
            password: "pw".into(),
            device,
        }
    }

    fn code(result: Result<LoginRequest, MatrixError>) -> &'static str {
        result.unwrap_err().errcode()
    }

    #[test]
    fn the_flows_document() {
        assert_eq!(
            flows_document(true),
            json!({"flows": [
                {"type": "m.login.password"},
                {
                    "type": "m.login.sso",
                    "identity_providers": [],
                    "oauth_aware_preferred": true,
                    "org.matrix.msc3824.delegated_oidc_compatibility": true,
                },
                {"type": "m.login.token"},
            ]})
        );
        let without = flows_document(false);
        assert_eq!(without["flows"].as_array().unwrap().len(), 2);
        assert_eq!(without["flows"][0]["type"], "m.login.sso");
    }

    #[test]
    fn password_logins_name_the_user_three_ways() {
        let expected = password("alice", DeviceRequest::default());
        for body in [
            r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}"#,
            r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@alice:example.org"},"password":"pw"}"#,
            r#"{"type":"m.login.password","user":"alice","password":"pw"}"#,
            r#"{"type":"m.login.password","user":"@alice:example.org","password":"pw"}"#,
        ] {
            assert_eq!(parse(body).unwrap(), expected, "{body}");
        }
        // The identifier wins over the legacy member.
        assert_eq!(
            parse(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"user":"bob","password":"pw"}"#)
                .unwrap(),
            expected
        );
        // A server name with a port.
        assert_eq!(
            parse_login(
                br#"{"type":"m.login.password","user":"@alice:example.org:8448","password":"pw"}"#,
                "example.org:8448"
            )
            .unwrap(),
            expected
        );
    }

    #[test]
    fn device_fields() {
        let body = r#"{"type":"m.login.password","user":"alice","password":"pw",
            "device_id":"MY-PHONE_1","initial_device_display_name":"Phone","refresh_token":true}"#;
        assert_eq!(
            parse(body).unwrap(),
            password(
                "alice",
                DeviceRequest {
                    device_id: Some("MY-PHONE_1".into()),
                    display_name: Some("Phone".into()),
                    refresh_token: true,
                }
            )
        );
        let body = r#"{"type":"m.login.password","user":"alice","password":"pw","refresh_token":false,"device_id":null}"#;
        assert_eq!(
            parse(body).unwrap(),
            password("alice", DeviceRequest::default())
        );
        for bad in ["", "a b", "a/b", &"D".repeat(256)] {
            let body = json!({"type": "m.login.password", "user": "alice", "password": "pw", "device_id": bad});
            assert_eq!(code(parse(&body.to_string())), "M_INVALID_PARAM", "{bad}");
        }
        let body = r#"{"type":"m.login.token","token":"t","device_id":"ABC","refresh_token":true}"#;
        assert_eq!(
            parse(body).unwrap(),
            LoginRequest::Token {
                token: "t".into(),
                device: DeviceRequest {
                    device_id: Some("ABC".into()),
                    display_name: None,
                    refresh_token: true,
                },
            }
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(code(parse("not json")), "M_NOT_JSON");
        assert_eq!(code(parse("")), "M_NOT_JSON");
        assert_eq!(code(parse("[]")), "M_BAD_JSON");
        assert_eq!(code(parse("{}")), "M_MISSING_PARAM");
        assert_eq!(code(parse(r#"{"type": 3}"#)), "M_BAD_JSON");
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.password","user":"alice","password":5}"#
            )),
            "M_BAD_JSON"
        );
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.password","user":"alice","password":"pw","refresh_token":"yes"}"#
            )),
            "M_BAD_JSON"
        );
        assert_eq!(
            code(parse(r#"{"type":"m.login.password","password":"pw"}"#)),
            "M_MISSING_PARAM"
        );
        assert_eq!(
            code(parse(r#"{"type":"m.login.password","user":"alice"}"#)),
            "M_MISSING_PARAM"
        );
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.password","identifier":{"type":"m.id.user"},"password":"pw"}"#
            )),
            "M_MISSING_PARAM"
        );
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.password","identifier":{"type":"m.id.thirdparty","medium":"email","address":"a@example.org"},"password":"pw"}"#
            )),
            "M_UNKNOWN"
        );
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.password","user":"@alice:elsewhere.org","password":"pw"}"#
            )),
            "M_FORBIDDEN"
        );
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.password","user":"@alice","password":"pw"}"#
            )),
            "M_FORBIDDEN"
        );
        assert_eq!(
            code(parse(r#"{"type":"m.login.token"}"#)),
            "M_MISSING_PARAM"
        );
        assert_eq!(
            code(parse(
                r#"{"type":"m.login.application_service","identifier":{"type":"m.id.user","user":"bot"}}"#
            )),
            "M_APPSERVICE_LOGIN_UNSUPPORTED"
        );
        let unknown = parse(r#"{"type":"m.login.dummy"}"#).unwrap_err();
        assert_eq!(
            (unknown.errcode(), unknown.to_string().as_str()),
            ("M_UNKNOWN", "Unknown login type")
        );
        assert_eq!(unknown.status(), 400);
    }

    #[test]
    fn login_token_shape() {
        assert!(is_login_token_shaped(&"a".repeat(LOGIN_TOKEN_LEN)));
        assert!(!is_login_token_shaped(&"a".repeat(LOGIN_TOKEN_LEN - 1)));
        assert!(!is_login_token_shaped(&format!(
            "{}-",
            "a".repeat(LOGIN_TOKEN_LEN - 1)
        )));
        assert!(!is_login_token_shaped(""));
    }
}
