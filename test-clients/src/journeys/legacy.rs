//! The legacy client: `m.login.password` through the homeserver, which hands the login API to
//! the provider's compatibility layer (MSC3861 deployments; Matrix spec §Login, §Refreshing
//! access tokens, §Logout).

use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::{client_api, expect_errcode, expect_unknown_token, required_str, whoami, Checks};
use crate::{http::Http, transcript::Transcript, Error};

/// What the legacy journey needs.
#[derive(Clone)]
pub struct LegacyOptions {
    pub homeserver: Url,
    pub username: String,
    pub password: String,
    /// The device ID of the first login (the server makes one up otherwise).
    pub device_id: Option<String>,
}

impl std::fmt::Debug for LegacyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyOptions")
            .field("homeserver", &self.homeserver.as_str())
            .field("username", &self.username)
            .field("password", &"<elided>")
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl LegacyOptions {
    pub fn new(homeserver: Url, username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            homeserver,
            username: username.into(),
            password: password.into(),
            device_id: None,
        }
    }
}

/// What the legacy journey did.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyReport {
    pub user_id: String,
    /// The device of the login without refresh token.
    pub device_id: String,
    /// The device of the login with refresh token.
    pub refresh_device_id: String,
    pub checks: Vec<String>,
}

/// One login's answer.
struct Login {
    user_id: String,
    access: String,
    device_id: String,
}

async fn password_login(
    http: &Http,
    opts: &LegacyOptions,
    refresh_token: bool,
    device_id: Option<&str>,
) -> Result<(Login, Value), Error> {
    // Matrix spec §"POST /_matrix/client/v3/login": m.login.password with an m.id.user
    // identifier; `refresh_token: true` asks for a refresh token (§Refreshing access tokens).
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": opts.username },
        "password": opts.password,
        "initial_device_display_name": "test-clients legacy",
    });
    if refresh_token {
        body["refresh_token"] = json!(true);
    }
    if let Some(device_id) = device_id {
        body["device_id"] = json!(device_id);
    }
    let answer = http
        .post_json(client_api(&opts.homeserver, "/login").as_str(), &body, None)
        .await?
        .expect("POST /login m.login.password", 200)?
        .json()?;
    let login = Login {
        user_id: required_str(&answer, "user_id", "the login answer")?,
        access: required_str(&answer, "access_token", "the login answer")?,
        device_id: required_str(&answer, "device_id", "the login answer")?,
    };
    if let Some(wanted) = device_id {
        if login.device_id != wanted {
            return Err(Error::Protocol(format!(
                "the login answer names the device {}, not the one asked for ({wanted})",
                login.device_id
            )));
        }
    }
    Ok((login, answer))
}

async fn check_whoami(http: &Http, hs: &Url, login: &Login, what: &str) -> Result<(), Error> {
    let me = whoami(http, hs, &login.access, what).await?;
    if me.user_id != login.user_id || me.device_id.as_deref() != Some(login.device_id.as_str()) {
        return Err(Error::Protocol(format!(
            "whoami {what} names {} on {:?}, not {} on {}",
            me.user_id, me.device_id, login.user_id, login.device_id
        )));
    }
    Ok(())
}

async fn logout(http: &Http, hs: &Url, token: &str) -> Result<(), Error> {
    http.post_json(client_api(hs, "/logout").as_str(), &json!({}), Some(token))
        .await?
        .expect("POST /logout (Matrix spec)", 200)?;
    Ok(())
}

/// `GET /login` (m.login.password offered) → password login without refresh token → whoami →
/// logout → refused; → password login with `refresh_token: true` → whoami → `POST /refresh` →
/// whoami with the new token → the old token is refused → logout → refused.
pub async fn legacy(opts: &LegacyOptions, transcript: &Transcript) -> Result<LegacyReport, Error> {
    let http = Http::new(transcript.clone());
    let mut checks = Checks::new(transcript);
    let hs = &opts.homeserver;

    transcript.note("login flows (Matrix spec §GET /login)");
    let flows = http
        .get(client_api(hs, "/login").as_str())
        .await?
        .expect("GET /_matrix/client/v3/login", 200)?
        .json()?;
    let offered = flows["flows"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["type"] == "m.login.password"));
    if !offered {
        return Err(Error::protocol(
            "GET /login does not offer m.login.password",
        ));
    }
    checks.pass("GET /login offers m.login.password");

    // Without refresh token: a token that does not expire.
    transcript.note("m.login.password without refresh token (Matrix spec §POST /login)");
    let (first, answer) = password_login(&http, opts, false, opts.device_id.as_deref()).await?;
    if answer.get("refresh_token").is_some() || answer.get("expires_in_ms").is_some() {
        return Err(Error::protocol(
            "a login without `refresh_token: true` got a refresh_token or expires_in_ms (Matrix spec §Refreshing access tokens)",
        ));
    }
    checks.pass(format!(
        "m.login.password: {} on device {}, no refresh token, no expiry",
        first.user_id, first.device_id
    ));
    transcript.note("whoami on the homeserver");
    check_whoami(&http, hs, &first, "with the password login's token").await?;
    checks.pass("whoami: the same user and device");
    transcript.note("logout (Matrix spec §POST /logout)");
    logout(&http, hs, &first.access).await?;
    expect_unknown_token(&http, hs, &first.access, "after the logout").await?;
    checks.pass("after the logout, whoami answers 401 M_UNKNOWN_TOKEN");

    // With refresh token (Matrix spec v1.3+ §Refreshing access tokens).
    transcript.note("m.login.password with refresh_token: true");
    let (second, answer) = password_login(&http, opts, true, None).await?;
    let refresh = required_str(
        &answer,
        "refresh_token",
        "the login answer with refresh_token: true",
    )?;
    if answer["expires_in_ms"].as_u64().unwrap_or(0) == 0 {
        return Err(Error::protocol(
            "a login with a refresh token has no positive expires_in_ms (Matrix spec §Refreshing access tokens)",
        ));
    }
    checks.pass(format!(
        "m.login.password with refresh_token: a refresh token, expires in {} ms",
        answer["expires_in_ms"]
    ));
    transcript.note("whoami on the homeserver");
    check_whoami(&http, hs, &second, "with the refreshable token").await?;

    // Matrix spec §"POST /_matrix/client/v3/refresh": a new access token (and refresh token).
    transcript.note("refresh (Matrix spec §POST /refresh)");
    let refreshed = http
        .post_json(
            client_api(hs, "/refresh").as_str(),
            &json!({ "refresh_token": refresh }),
            None,
        )
        .await?
        .expect("POST /refresh", 200)?
        .json()?;
    let access = required_str(&refreshed, "access_token", "the refresh answer")?;
    if access == second.access {
        return Err(Error::protocol(
            "POST /refresh returned the same access token",
        ));
    }
    if refreshed["refresh_token"].as_str() == Some(refresh.as_str()) {
        return Err(Error::protocol(
            "POST /refresh returned the same refresh token (it must rotate)",
        ));
    }
    checks.pass("POST /refresh: a new access token and a new refresh token");
    let old_access = second.access.clone();
    let renewed = Login { access, ..second };
    transcript.note("whoami with the new access token");
    check_whoami(&http, hs, &renewed, "with the refreshed token").await?;
    checks.pass("whoami with the refreshed token: the same user and device");

    // The old access token is revoked by the refresh. The homeserver may still have its
    // introspection cached (Synapse keeps answers 2 minutes; the device still exists), so ask
    // the login API itself: `POST /logout` with it must be refused.
    transcript.note("the old access token must be refused (POST /logout with it)");
    let old = http
        .post_json(
            client_api(hs, "/logout").as_str(),
            &json!({}),
            Some(&old_access),
        )
        .await?
        .expect(
            "POST /logout with the access token replaced by the refresh",
            401,
        )?;
    expect_errcode(
        &old.json()?,
        "M_UNKNOWN_TOKEN",
        "POST /logout with the old token",
    )?;
    checks.pass("the access token replaced by the refresh is refused (401 M_UNKNOWN_TOKEN)");
    check_whoami(&http, hs, &renewed, "with the refreshed token, still").await?;

    transcript.note("logout (Matrix spec §POST /logout)");
    logout(&http, hs, &renewed.access).await?;
    expect_unknown_token(&http, hs, &renewed.access, "after the logout").await?;
    checks.pass("after the logout, whoami answers 401 M_UNKNOWN_TOKEN");

    Ok(LegacyReport {
        user_id: renewed.user_id,
        device_id: first.device_id,
        refresh_device_id: renewed.device_id,
        checks: checks.into_vec(),
    })
}
