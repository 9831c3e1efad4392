//! The legacy Matrix login API served by the provider (client-server API §"Login",
//! §"Refreshing access tokens", §"Logout"; MSC3824; MSC4190).

use serde_json::{json, Value};
use test_clients::http::Reply;

use crate::checks::expect::{ensure, fail, json, matrix_error, short, skip};
use crate::context::{Compat, Probe};
use crate::{Checked, Stop};

fn flow<'a>(compat: &'a Compat, kind: &str) -> Option<&'a Value> {
    compat.flows["flows"]
        .as_array()?
        .iter()
        .find(|f| f.get("type").and_then(Value::as_str) == Some(kind))
}

async fn sso_flow(p: &Probe) -> Result<Value, Stop> {
    let compat = p.cx.compat().await?;
    flow(compat, "m.login.sso").cloned().ok_or_else(|| {
        fail(format!(
            "GET /login lists no m.login.sso flow: {}",
            compat.flows
        ))
    })
}

/// MSC3824: the `m.login.sso` flow says it is delegated to the OAuth 2.0 provider.
pub(crate) async fn sso_delegated(p: Probe) -> Checked {
    let sso = sso_flow(&p).await?;
    ensure(
        sso.get("org.matrix.msc3824.delegated_oidc_compatibility") == Some(&Value::Bool(true)),
        || {
            format!("the m.login.sso flow lacks \"org.matrix.msc3824.delegated_oidc_compatibility\": true: {sso}")
        },
    )
}

/// Matrix v1.15 (MSC3824): `oauth_aware_preferred: true` steers OAuth-aware clients away.
pub(crate) async fn oauth_aware_preferred(p: Probe) -> Checked {
    let sso = sso_flow(&p).await?;
    ensure(
        sso.get("oauth_aware_preferred") == Some(&Value::Bool(true)),
        || format!("the m.login.sso flow lacks \"oauth_aware_preferred\": true: {sso}"),
    )
}

/// Client-server API §"Token-based": `m.login.token` accompanies `m.login.sso`.
pub(crate) async fn token_flow(p: Probe) -> Checked {
    let compat = p.cx.compat().await?;
    ensure(flow(compat, "m.login.token").is_some(), || {
        format!("GET /login lists no m.login.token flow: {}", compat.flows)
    })
}

async fn login(p: &Probe, body: &Value) -> Result<Reply, Stop> {
    let compat = p.cx.compat().await?;
    p.post_json(&compat.url("login"), body, None).await
}

/// A password login of the suite's account (skipped when the flow or the account is missing).
async fn password_login(p: &Probe, extra: Value) -> Result<(Reply, String), Stop> {
    let compat = p.cx.compat().await?;
    if flow(compat, "m.login.password").is_none() {
        return Err(skip("GET /login lists no m.login.password flow"));
    }
    p.cx.account().await?;
    let credentials = p.cx.credentials()?;
    let device_id = p.cx.device_id();
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": credentials.username },
        "password": credentials.password,
        "device_id": device_id,
        "initial_device_display_name": "Conformance suite",
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    Ok((login(p, &body).await?, device_id))
}

fn logged_in(reply: &Reply) -> Result<Value, Stop> {
    ensure(reply.status == 200, || {
        format!(
            "the login answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    json(reply, "the login")
}

/// Client-server API §"Login": a password login answers `user_id`, `access_token`,
/// `device_id`.
pub(crate) async fn password(p: Probe) -> Checked {
    let (reply, _) = password_login(&p, json!({})).await?;
    let answer = logged_in(&reply)?;
    let missing: Vec<&str> = ["user_id", "access_token", "device_id"]
        .into_iter()
        .filter(|m| !answer.get(*m).is_some_and(Value::is_string))
        .collect();
    ensure(missing.is_empty(), || {
        format!("the login answer lacks {}", missing.join(", "))
    })
}

/// Client-server API §"Login": the `device_id` the client chose is the one used.
pub(crate) async fn device_id_kept(p: Probe) -> Checked {
    let (reply, device_id) = password_login(&p, json!({})).await?;
    let answer = logged_in(&reply)?;
    ensure(
        answer.get("device_id").and_then(Value::as_str) == Some(&device_id),
        || {
            format!(
                "device_id is {}, asked for {device_id}",
                answer.get("device_id").unwrap_or(&Value::Null)
            )
        },
    )
}

/// Client-server API §"Login": wrong credentials are 403 `M_FORBIDDEN`.
pub(crate) async fn wrong_password(p: Probe) -> Checked {
    p.cx.compat().await?;
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": format!("conformance-nobody-{}", p.cx.random(8)) },
        "password": "not the password",
    });
    let reply = login(&p, &body).await?;
    matrix_error(&reply, &[403], &["M_FORBIDDEN"])
}

/// MSC4190: `m.login.application_service` is answered `M_APPSERVICE_LOGIN_UNSUPPORTED`.
pub(crate) async fn appservice_unsupported(p: Probe) -> Checked {
    p.cx.compat().await?;
    let body = json!({
        "type": "m.login.application_service",
        "identifier": { "type": "m.id.user", "user": "conformance-bridge" },
    });
    let reply = login(&p, &body).await?;
    matrix_error(
        &reply,
        &[400, 401, 403],
        &["M_APPSERVICE_LOGIN_UNSUPPORTED"],
    )
}

/// Client-server API §"Common error codes": a body that is not JSON is `M_NOT_JSON`.
pub(crate) async fn not_json(p: Probe) -> Checked {
    let compat = p.cx.compat().await?;
    let request = p
        .request(reqwest::Method::POST, &compat.url("login"))
        .header("content-type", "application/json")
        .body("{\"type\": ");
    let reply = p.send(request).await?;
    matrix_error(&reply, &[400], &["M_NOT_JSON", "M_BAD_JSON"])
}

/// Client-server API §"Refreshing access tokens": with `refresh_token: true` the login answers
/// `refresh_token` and `expires_in_ms` (when the server supports refresh, as a provider does).
pub(crate) async fn refresh_token_issued(p: Probe) -> Checked {
    let (reply, _) = password_login(&p, json!({ "refresh_token": true })).await?;
    let answer = logged_in(&reply)?;
    ensure(
        answer.get("refresh_token").is_some_and(Value::is_string),
        || "no refresh_token".into(),
    )?;
    ensure(
        answer
            .get("expires_in_ms")
            .is_some_and(|v| v.as_u64().is_some()),
        || "no numeric expires_in_ms".into(),
    )
}

/// Client-server API §"POST /refresh": a refresh answers a new access token.
pub(crate) async fn refresh_works(p: Probe) -> Checked {
    let (reply, _) = password_login(&p, json!({ "refresh_token": true })).await?;
    let answer = logged_in(&reply)?;
    let refresh_token = answer
        .get("refresh_token")
        .and_then(Value::as_str)
        .ok_or_else(|| skip("the login issued no refresh token"))?
        .to_owned();
    let old_access = answer["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let compat = p.cx.compat().await?;
    p.step("refresh");
    let reply = p
        .post_json(
            &compat.url("refresh"),
            &json!({ "refresh_token": refresh_token }),
            None,
        )
        .await?;
    ensure(reply.status == 200, || {
        format!(
            "the refresh answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    let refreshed = json(&reply, "the refresh")?;
    match refreshed.get("access_token").and_then(Value::as_str) {
        Some(new) if new != old_access => Ok(()),
        Some(_) => Err(fail("the refresh answered the same access token")),
        None => Err(fail("the refresh answered no access_token")),
    }
}

/// Client-server API §"POST /logout": the token stops working at once.
pub(crate) async fn logout(p: Probe) -> Checked {
    let (reply, _) = password_login(&p, json!({})).await?;
    let answer = logged_in(&reply)?;
    let token = answer["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let compat = p.cx.compat().await?;
    p.step("log out");
    let reply = p
        .post_json(&compat.url("logout"), &json!({}), Some(&token))
        .await?;
    ensure(reply.status == 200, || {
        format!(
            "the logout answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    p.step("log out again with the same token");
    let again = p
        .post_json(&compat.url("logout"), &json!({}), Some(&token))
        .await?;
    matrix_error(&again, &[401], &["M_UNKNOWN_TOKEN"])
}

/// Client-server API §"Using access tokens": no token is 401 `M_MISSING_TOKEN`.
pub(crate) async fn logout_missing_token(p: Probe) -> Checked {
    let compat = p.cx.compat().await?;
    let reply = p.post_json(&compat.url("logout"), &json!({}), None).await?;
    matrix_error(&reply, &[401], &["M_MISSING_TOKEN"])
}

/// Client-server API §"Password-based" (deprecated `user`, still accepted).
pub(crate) async fn legacy_user_field(p: Probe) -> Checked {
    let compat = p.cx.compat().await?;
    if flow(compat, "m.login.password").is_none() {
        return Err(skip("GET /login lists no m.login.password flow"));
    }
    p.cx.account().await?;
    let credentials = p.cx.credentials()?;
    let body = json!({
        "type": "m.login.password",
        "user": credentials.username,
        "password": credentials.password,
    });
    let reply = login(&p, &body).await?;
    let answer = logged_in(&reply)?;
    ensure(
        answer.get("access_token").is_some_and(Value::is_string),
        || "no access_token".into(),
    )
}

/// Client-server API §"Client login via SSO" (MSC3824): `m.login.sso` through the provider's
/// pages brings a `loginToken` back, which `m.login.token` exchanges. Skipped only when the
/// server lists no `m.login.sso` flow (§"Login": the flows it offers; `sso_delegated` judges
/// that) or a rate limit can't be waited out; a walk that breaks down on the way fails, with the
/// browser's exchanges as evidence.
pub(crate) async fn sso_login(p: Probe) -> Checked {
    let compat = p.cx.compat().await?.clone();
    if flow(&compat, "m.login.sso").is_none() {
        return Err(skip(format!(
            "GET /login lists no m.login.sso flow: {}",
            compat.flows
        )));
    }
    let account = p.cx.account().await?;
    let back = "http://127.0.0.1/sso-done";
    let mut url = compat.url("login/sso/redirect");
    url.query_pairs_mut().append_pair("redirectUrl", back);
    let transcript = test_clients::transcript::Transcript::new();
    let browser = test_clients::http::Http::browser(transcript.clone());
    p.step("m.login.sso through the provider's pages (the browser's exchanges are the evidence)");
    let returned =
        p.cx.walk(&browser, &url, back, &account)
            .await
            .map_err(|gave_up| skip(gave_up.0))?
            .map_err(|e| Stop::Fail {
                reason: format!("the SSO login did not come back to the client's redirectUrl: {e}"),
                evidence: transcript.entries(),
            })?;
    let token = returned
        .query_pairs()
        .find(|(k, _)| k == "loginToken")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| {
            fail(format!(
                "the SSO login came back without loginToken: {returned}"
            ))
        })?;
    p.step("m.login.token");
    let reply = login(&p, &json!({ "type": "m.login.token", "token": token })).await?;
    let answer = logged_in(&reply)?;
    ensure(
        answer.get("access_token").is_some_and(Value::is_string),
        || "no access_token".into(),
    )
}

/// Client-server API §"POST /logout/all": every token of the user stops working.
pub(crate) async fn logout_all(p: Probe) -> Checked {
    let (first, _) = password_login(&p, json!({})).await?;
    let first = logged_in(&first)?;
    let (second, _) = password_login(&p, json!({})).await?;
    let second = logged_in(&second)?;
    let compat = p.cx.compat().await?;
    let token_of = |v: &Value| v["access_token"].as_str().unwrap_or_default().to_owned();
    p.step("log out everywhere with the first token");
    let reply = p
        .post_json(
            &compat.url("logout/all"),
            &json!({}),
            Some(&token_of(&first)),
        )
        .await?;
    ensure(reply.status == 200, || {
        format!(
            "logout/all answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    p.step("use the second token");
    let again = p
        .post_json(&compat.url("logout"), &json!({}), Some(&token_of(&second)))
        .await?;
    matrix_error(&again, &[401], &["M_UNKNOWN_TOKEN"])
}

/// Client-server API §"API standards": a known path with a method it does not serve is
/// `M_UNRECOGNIZED` (405).
pub(crate) async fn unrecognized_method(p: Probe) -> Checked {
    let compat = p.cx.compat().await?;
    let request = p
        .request(reqwest::Method::PUT, &compat.url("login"))
        .header("content-type", "application/json")
        .body("{}");
    let reply = p.send(request).await?;
    matrix_error(&reply, &[404, 405], &["M_UNRECOGNIZED"])
}
