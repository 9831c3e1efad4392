//! The OIDC-aware client: a client of the legacy login API that logs in through `m.login.sso`
//! and the provider's pages (MSC3824; Matrix spec §"Client login via SSO").

use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::{client_api, expect_unknown_token, required_str, whoami, Checks};
use crate::{
    http::Http,
    pages::{self, Account},
    transcript::Transcript,
    Error,
};

/// The `redirectUrl` of the SSO login: the browser is sent back there with `loginToken`.
pub const SSO_REDIRECT: &str = "http://127.0.0.1/sso-callback";

/// What the OIDC-aware journey needs.
#[derive(Debug, Clone)]
pub struct AwareOptions {
    pub homeserver: Url,
    /// Who signs in (`action=login`) or registers (`action=register`).
    pub account: Account,
    /// A device ID for `m.login.token` (the server makes one up otherwise).
    pub device_id: Option<String>,
}

impl AwareOptions {
    pub fn new(homeserver: Url, account: Account) -> Self {
        Self {
            homeserver,
            account,
            device_id: None,
        }
    }
}

/// What the OIDC-aware journey did.
#[derive(Debug, Clone, Serialize)]
pub struct AwareReport {
    pub user_id: String,
    pub device_id: String,
    pub checks: Vec<String>,
}

/// The flows of `GET /login` must include these (with `oauth_aware_preferred` on `m.login.sso`).
fn check_sso_flows(flows: &Value) -> Result<(), Error> {
    let list = flows["flows"].as_array().cloned().unwrap_or_default();
    let sso = list
        .iter()
        .find(|f| f["type"] == "m.login.sso")
        .ok_or_else(|| Error::protocol("GET /login lists no m.login.sso flow (MSC3824)"))?;
    if sso["oauth_aware_preferred"] != json!(true) {
        return Err(Error::protocol(
            "the m.login.sso flow lacks \"oauth_aware_preferred\": true (MSC3824)",
        ));
    }
    if !list.iter().any(|f| f["type"] == "m.login.token") {
        return Err(Error::protocol(
            "GET /login lists no m.login.token flow, needed to finish an SSO login",
        ));
    }
    Ok(())
}

/// `GET /login` (flows) → `GET /login/sso/redirect?redirectUrl=…&action=login|register` → the
/// provider's pages → back with `loginToken` → `POST /login` `m.login.token` → whoami →
/// `POST /logout` → the token is refused.
pub async fn oidc_aware(
    opts: &AwareOptions,
    transcript: &Transcript,
) -> Result<AwareReport, Error> {
    let http = Http::new(transcript.clone());
    let browser = Http::browser(transcript.clone());
    let mut checks = Checks::new(transcript);
    let hs = &opts.homeserver;
    let login = client_api(hs, "/login");

    // Matrix spec §"GET /_matrix/client/v3/login"; MSC3824.
    transcript.note("login flows (Matrix spec §Login, MSC3824)");
    let flows = http
        .get(login.as_str())
        .await?
        .expect("GET /_matrix/client/v3/login", 200)?
        .json()?;
    check_sso_flows(&flows)?;
    checks.pass("GET /login offers m.login.sso with oauth_aware_preferred, and m.login.token");

    // Matrix spec §"GET /_matrix/client/v3/login/sso/redirect"; MSC3824 `action`.
    let action = if opts.account.is_register() {
        "register"
    } else {
        "login"
    };
    let mut start = client_api(hs, "/login/sso/redirect");
    start
        .query_pairs_mut()
        .append_pair("redirectUrl", SSO_REDIRECT)
        .append_pair("action", action);
    transcript.note(format!(
        "SSO login (Matrix spec §Client login via SSO, MSC3824 action={action}) through the provider's pages"
    ));
    let back = pages::walk(&browser, &start, SSO_REDIRECT, &opts.account).await?;
    let login_token = back
        .query_pairs()
        .find(|(n, _)| n == "loginToken")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::protocol("the browser came back to the redirectUrl without a loginToken")
        })?;
    checks.pass(format!(
        "back at the redirectUrl with a loginToken (action={action})"
    ));

    // Matrix spec §"POST /_matrix/client/v3/login", m.login.token.
    transcript.note("m.login.token (Matrix spec §Token-based login)");
    let mut body = json!({
        "type": "m.login.token",
        "token": login_token,
        "initial_device_display_name": "test-clients oidc-aware",
    });
    if let Some(device_id) = &opts.device_id {
        body["device_id"] = json!(device_id);
    }
    let answer = http
        .post_json(login.as_str(), &body, None)
        .await?
        .expect("POST /login m.login.token", 200)?
        .json()?;
    let user_id = required_str(&answer, "user_id", "the login answer")?;
    let access = required_str(&answer, "access_token", "the login answer")?;
    let device_id = required_str(&answer, "device_id", "the login answer")?;
    if let Some(wanted) = &opts.device_id {
        if *wanted != device_id {
            return Err(Error::Protocol(format!(
                "the login answer names the device {device_id}, not the one asked for ({wanted})"
            )));
        }
    }
    checks.pass(format!("m.login.token: {user_id} on device {device_id}"));

    transcript.note("the login token is single-use");
    let again = http.post_json(login.as_str(), &body, None).await?;
    if again.status == 200 {
        return Err(Error::protocol(
            "the same loginToken logged in twice (Matrix spec §Token-based login: single use)",
        ));
    }
    checks.pass(format!(
        "a second m.login.token with the same token is refused (HTTP {})",
        again.status
    ));

    transcript.note("whoami on the homeserver");
    let me = whoami(&http, hs, &access, "with the SSO login's token").await?;
    if me.user_id != user_id || me.device_id.as_deref() != Some(device_id.as_str()) {
        return Err(Error::Protocol(format!(
            "whoami names {} on {:?}, not {user_id} on {device_id}",
            me.user_id, me.device_id
        )));
    }
    checks.pass("whoami: the same user and device");

    // Matrix spec §"POST /_matrix/client/v3/logout".
    transcript.note("logout (Matrix spec §POST /logout)");
    http.post_json(
        client_api(hs, "/logout").as_str(),
        &json!({}),
        Some(&access),
    )
    .await?
    .expect("POST /logout", 200)?;
    expect_unknown_token(&http, hs, &access, "after the logout").await?;
    checks.pass("after the logout, whoami answers 401 M_UNKNOWN_TOKEN");

    Ok(AwareReport {
        user_id,
        device_id,
        checks: checks.into_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows() {
        let good = json!({"flows": [
            {"type": "m.login.password"},
            {"type": "m.login.sso", "oauth_aware_preferred": true},
            {"type": "m.login.token"},
        ]});
        assert!(check_sso_flows(&good).is_ok());
        let no_pref = json!({"flows": [{"type": "m.login.sso"}, {"type": "m.login.token"}]});
        assert!(check_sso_flows(&no_pref)
            .unwrap_err()
            .to_string()
            .contains("oauth_aware_preferred"));
        assert!(check_sso_flows(&json!({"flows": []})).is_err());
    }
}
