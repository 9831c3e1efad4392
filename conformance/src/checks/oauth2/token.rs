//! The token endpoint (RFC 6749 §3.2, §4.1.3, §5, §6; RFC 7636 §4.5-4.6; RFC 9700 §4.14).

use serde_json::Value;
use test_clients::http::Reply;
use url::Url;

use crate::checks::expect::{ensure, fail, header, json, oauth_error, public_client, skip};
use crate::context::{exchange, Client, Code, Probe, Stop};
use crate::Checked;

/// Another valid verifier (RFC 7636 §4.1), not the one of the request.
const OTHER_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A code exchange with some parameters replaced (`Some`) or left out (`None`).
pub(crate) async fn exchange_with(
    p: &Probe,
    code: &Code,
    overrides: &[(&str, Option<&str>)],
) -> Result<Reply, Stop> {
    let token = p.cx.endpoint("token_endpoint")?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", &code.code),
        ("redirect_uri", &code.client.redirect_uri),
        ("code_verifier", &code.verifier),
        ("client_id", &code.client.client_id),
    ];
    for (name, value) in overrides {
        let at = form.iter().position(|(k, _)| k == name);
        match (at, value) {
            (Some(i), Some(v)) => form[i].1 = v,
            (Some(i), None) => {
                form.remove(i);
            }
            (None, Some(v)) => form.push((name, v)),
            (None, None) => {}
        }
    }
    p.post_form(&token, &form, None).await
}

/// A successful token response, or a failure saying what came instead.
pub(crate) fn tokens(reply: &Reply, what: &str) -> Result<Value, Stop> {
    if reply.status != 200 {
        return Err(fail(format!(
            "{what} answered HTTP {}: {}",
            reply.status,
            crate::checks::expect::short(&reply.body)
        )));
    }
    let tokens = json(reply, what)?;
    ensure(
        tokens.get("access_token").is_some_and(Value::is_string),
        || format!("{what}: no access_token in the answer"),
    )?;
    Ok(tokens)
}

/// A fresh code for the suite's public client.
pub(crate) async fn fresh_code(p: &Probe) -> Result<Code, Stop> {
    let client = public_client(p).await?;
    p.code(&client, "openid", &[]).await
}

/// RFC 6749 §6: a refresh by a public client.
pub(crate) async fn refresh(
    p: &Probe,
    client_id: &str,
    refresh_token: &str,
) -> Result<Reply, Stop> {
    let token = p.cx.endpoint("token_endpoint")?;
    p.post_form(
        &token,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
        None,
    )
    .await
}

/// Whether an access token is accepted at the UserInfo endpoint: `None` when there is none.
pub(crate) async fn accepted_at_userinfo(
    p: &Probe,
    access_token: &str,
) -> Result<Option<bool>, Stop> {
    let Ok(userinfo) = p.cx.endpoint("userinfo_endpoint") else {
        return Ok(None);
    };
    let reply = p.get_bearer(&userinfo, access_token).await?;
    match reply.status {
        200 => Ok(Some(true)),
        401 | 403 => Ok(Some(false)),
        other => Err(fail(format!(
            "the UserInfo endpoint answered HTTP {other} to a bearer token"
        ))),
    }
}

/// RFC 6749 §4.1 / §5.1: the code flow gives a bearer access token (the suite's shared
/// sign-in, registering its account with `prompt=create` when needed).
pub(crate) async fn code_flow(p: Probe) -> Checked {
    let session = p.cx.user().await.map_err(|e| e.judge("the sign-in"))?;
    let with_evidence = |reason: String| Stop::Fail {
        reason,
        evidence: session.evidence.clone(),
    };
    let token_type = session.tokens.get("token_type").and_then(Value::as_str);
    match token_type {
        Some(t) if t.eq_ignore_ascii_case("bearer") => Ok(()),
        Some(t) => Err(with_evidence(format!("token_type is `{t}`, not Bearer"))),
        None => Err(with_evidence("the token response has no token_type".into())),
    }
}

/// RFC 6749 §5.1: the token response carries `Cache-Control: no-store`.
pub(crate) async fn no_store(p: Probe) -> Checked {
    let session =
        p.cx.user()
            .await
            .map_err(|e| e.skip("the shared sign-in"))?;
    let reply = session
        .token_reply
        .as_ref()
        .ok_or_else(|| skip("the token response was not recorded"))?;
    let cache = header(reply, "cache-control").unwrap_or("");
    if cache
        .split(',')
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
    {
        Ok(())
    } else {
        let token = p.cx.endpoint("token_endpoint")?;
        Err(Stop::Fail {
            reason: format!("Cache-Control is `{cache}`, without no-store"),
            evidence: session
                .evidence
                .iter()
                .filter(|e| e.url == token.as_str())
                .cloned()
                .collect(),
        })
    }
}

/// RFC 6749 §5.1: `expires_in` RECOMMENDED, a number of seconds.
pub(crate) async fn expires_in(p: Probe) -> Checked {
    let session =
        p.cx.user()
            .await
            .map_err(|e| e.skip("the shared sign-in"))?;
    match session.tokens.get("expires_in") {
        Some(v) if v.as_u64().is_some() => Ok(()),
        Some(v) => Err(fail(format!("expires_in is {v}, not a number of seconds"))),
        None => Err(fail("the token response has no expires_in")),
    }
}

/// RFC 7636 §4.6: a wrong `code_verifier` is refused with `invalid_grant`.
pub(crate) async fn wrong_verifier(p: Probe) -> Checked {
    let code = fresh_code(&p).await?;
    let reply = exchange_with(&p, &code, &[("code_verifier", Some(OTHER_VERIFIER))]).await?;
    oauth_error(&reply, &[400], &["invalid_grant"])
}

/// RFC 7636 §4.6 (and RFC 9700 §2.1.1): a code whose request had a challenge can't be
/// exchanged without a verifier.
pub(crate) async fn missing_verifier(p: Probe) -> Checked {
    let code = fresh_code(&p).await?;
    let reply = exchange_with(&p, &code, &[("code_verifier", None)]).await?;
    oauth_error(&reply, &[400], &["invalid_grant", "invalid_request"])
}

/// RFC 6749 §4.1.3: the `redirect_uri` must be the authorization request's.
pub(crate) async fn redirect_mismatch(p: Probe) -> Checked {
    let code = fresh_code(&p).await?;
    let other = format!("{}/other", code.client.redirect_uri);
    let reply = exchange_with(&p, &code, &[("redirect_uri", Some(&other))]).await?;
    oauth_error(&reply, &[400], &["invalid_grant"])
}

/// RFC 6749 §4.1.2: a code is used once; a second exchange is refused.
pub(crate) async fn code_replay(p: Probe) -> Checked {
    let code = fresh_code(&p).await?;
    let first = exchange_with(&p, &code, &[]).await?;
    tokens(&first, "the first exchange").map_err(|e| match e {
        Stop::Fail { reason, .. } => skip(format!("the first exchange failed: {reason}")),
        other => other,
    })?;
    let second = exchange_with(&p, &code, &[]).await?;
    oauth_error(&second, &[400], &["invalid_grant"])
}

/// RFC 6749 §4.1.2: a replayed code SHOULD revoke the tokens it issued.
pub(crate) async fn code_replay_revokes(p: Probe) -> Checked {
    let code = fresh_code(&p).await?;
    let first = exchange_with(&p, &code, &[]).await?;
    let issued = tokens(&first, "the first exchange").map_err(|e| match e {
        Stop::Fail { reason, .. } => skip(format!("the first exchange failed: {reason}")),
        other => other,
    })?;
    p.step("replay the code");
    let _ = exchange_with(&p, &code, &[]).await?;
    p.step("use what the first exchange issued");
    if let Some(refresh_token) = issued.get("refresh_token").and_then(Value::as_str) {
        let reply = refresh(&p, &code.client.client_id, refresh_token).await?;
        return oauth_error(&reply, &[400], &["invalid_grant"]).map_err(|_| {
            fail(format!(
                "the refresh token of the first exchange still works (HTTP {})",
                reply.status
            ))
        });
    }
    let access = issued["access_token"].as_str().unwrap_or_default();
    match accepted_at_userinfo(&p, access).await? {
        Some(true) => Err(fail(
            "the access token of the first exchange still works at the UserInfo endpoint",
        )),
        Some(false) => Ok(()),
        None => Err(skip(
            "no refresh token and no UserInfo endpoint to tell whether the tokens were revoked",
        )),
    }
}

/// RFC 6749 §4.1.3: a code is bound to the client it was issued to.
pub(crate) async fn code_bound_to_client(p: Probe) -> Checked {
    let code = fresh_code(&p).await?;
    let registration = p.cx.endpoint("registration_endpoint")?;
    p.step("register another client");
    let body = crate::context::native_client(&[crate::context::LOOPBACK_REDIRECT]);
    let reply = p.post_json(&registration, &body, None).await?;
    let other = reply
        .json()
        .ok()
        .and_then(|v| {
            v.get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .ok_or_else(|| skip("could not register a second client"))?;
    p.step("exchange the code as the other client");
    let reply = exchange_with(&p, &code, &[("client_id", Some(&other))]).await?;
    oauth_error(
        &reply,
        &[400, 401],
        &["invalid_grant", "invalid_client", "unauthorized_client"],
    )
}

/// RFC 6749 §5.2: an unknown code is `invalid_grant`, as JSON.
pub(crate) async fn invalid_code(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    let reply = p
        .post_form(
            &token,
            &[
                ("grant_type", "authorization_code"),
                ("code", "conformance-not-a-code"),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", OTHER_VERIFIER),
                ("client_id", &client.client_id),
            ],
            None,
        )
        .await?;
    oauth_error(&reply, &[400], &["invalid_grant"])
}

/// RFC 6749 §5.2: error answers are `application/json`.
pub(crate) async fn error_json(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    let reply = p
        .post_form(
            &token,
            &[
                ("grant_type", "authorization_code"),
                ("code", "conformance-not-a-code"),
                ("client_id", &client.client_id),
            ],
            None,
        )
        .await?;
    if reply.status / 100 == 2 {
        return Err(skip(
            "the request was not refused, so there is no error answer to judge (see oauth2.token.invalid_code)",
        ));
    }
    let ct = header(&reply, "content-type").unwrap_or("");
    ensure(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json"),
        || format!("the error answer's Content-Type is `{ct}`"),
    )?;
    ensure(
        json(&reply, "the error")?
            .get("error")
            .is_some_and(Value::is_string),
        || "the error answer has no `error` member".into(),
    )
}

/// RFC 6749 §5.2: an unknown grant type is `unsupported_grant_type`.
pub(crate) async fn unsupported_grant_type(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    let reply = p
        .post_form(
            &token,
            &[
                ("grant_type", "urn:example:conformance:unknown"),
                ("client_id", &client.client_id),
            ],
            None,
        )
        .await?;
    oauth_error(&reply, &[400], &["unsupported_grant_type"])
}

/// RFC 6749 §5.2: an unknown client is `invalid_client`.
pub(crate) async fn unknown_client(p: Probe) -> Checked {
    let token = p.cx.endpoint("token_endpoint")?;
    let client_id = format!("conformance-unknown-{}", p.cx.random(10));
    let reply = p
        .post_form(
            &token,
            &[
                ("grant_type", "authorization_code"),
                ("code", "conformance-not-a-code"),
                ("redirect_uri", crate::context::LOOPBACK_REDIRECT),
                ("code_verifier", OTHER_VERIFIER),
                ("client_id", &client_id),
            ],
            None,
        )
        .await?;
    oauth_error(&reply, &[400, 401], &["invalid_client"])
}

/// RFC 6749 §5.2: a wrong client secret over HTTP Basic is `invalid_client`, 401, with
/// `WWW-Authenticate`.
pub(crate) async fn wrong_secret(p: Probe) -> Checked {
    let client = confidential(&p).await?;
    let reply = wrong_secret_request(&p, &client).await?;
    oauth_error(&reply, &[401], &["invalid_client"])
}

/// RFC 6749 §5.2: ... "MUST include the WWW-Authenticate response header field".
pub(crate) async fn wrong_secret_challenge(p: Probe) -> Checked {
    let client = confidential(&p).await?;
    let reply = wrong_secret_request(&p, &client).await?;
    ensure(reply.status == 401, || {
        format!("HTTP {} instead of 401", reply.status)
    })?;
    ensure(header(&reply, "www-authenticate").is_some(), || {
        "no WWW-Authenticate header on the 401".into()
    })
}

pub(crate) async fn confidential(p: &Probe) -> Result<Client, Stop> {
    p.cx.confidential_client()
        .await
        .cloned()
        .map_err(|e| e.skip("a confidential client"))
}

async fn wrong_secret_request(p: &Probe, client: &Client) -> Result<Reply, Stop> {
    let token = p.cx.endpoint("token_endpoint")?;
    p.post_form(
        &token,
        &[
            ("grant_type", "authorization_code"),
            ("code", "conformance-not-a-code"),
            ("redirect_uri", &client.redirect_uri),
            ("code_verifier", OTHER_VERIFIER),
        ],
        Some((&client.client_id, "not-the-secret")),
    )
    .await
}

/// A fresh sign-in with a refresh token, or skipped.
async fn with_refresh(p: &Probe) -> Result<(String, String, Url), Stop> {
    let session = p.sign_in("openid").await?;
    let refresh_token = session
        .refresh_token()
        .ok_or_else(|| skip("the sign-in issued no refresh token"))?
        .to_owned();
    let token = p.cx.endpoint("token_endpoint")?;
    Ok((session.client.client_id, refresh_token, token))
}

/// RFC 9700 §4.14.2: refresh tokens of public clients are rotated (a new one on every use).
pub(crate) async fn refresh_rotation(p: Probe) -> Checked {
    let (client_id, r0, _) = with_refresh(&p).await?;
    let reply = refresh(&p, &client_id, &r0).await?;
    let answer = tokens(&reply, "the refresh")?;
    match answer.get("refresh_token").and_then(Value::as_str) {
        Some(r1) if r1 != r0 => Ok(()),
        Some(_) => Err(fail(
            "the refresh returned the same refresh token (no rotation)",
        )),
        None => Err(fail(
            "the refresh returned no new refresh token (no rotation)",
        )),
    }
}

/// Refreshes twice (R0 → R1 → R2); returns the client, R0 and R2.
async fn rotate_twice(p: &Probe) -> Result<(String, String, String), Stop> {
    let (client_id, r0, _) = with_refresh(p).await?;
    let mut current = r0.clone();
    for round in 1..=2 {
        p.step(&format!("refresh #{round}"));
        let reply = refresh(p, &client_id, &current).await?;
        let answer = tokens(&reply, "a refresh").map_err(|e| match e {
            Stop::Fail { reason, .. } => skip(format!("refreshing failed: {reason}")),
            other => other,
        })?;
        current = answer
            .get("refresh_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                skip("refresh tokens are not rotated (see oauth2.token.refresh_rotation)")
            })?
            .to_owned();
    }
    Ok((client_id, r0, current))
}

/// RFC 9700 §4.14.2: a rotated-out refresh token, used again after its successor was used, is
/// refused.
pub(crate) async fn refresh_reuse_refused(p: Probe) -> Checked {
    let (client_id, r0, _) = rotate_twice(&p).await?;
    p.step("reuse the first refresh token");
    let reply = refresh(&p, &client_id, &r0).await?;
    oauth_error(&reply, &[400], &["invalid_grant"])
}

/// RFC 9700 §4.14.2: that reuse ends the session: the newest refresh token stops working too.
pub(crate) async fn refresh_reuse_ends_session(p: Probe) -> Checked {
    let (client_id, r0, r2) = rotate_twice(&p).await?;
    p.step("reuse the first refresh token");
    let _ = refresh(&p, &client_id, &r0).await?;
    p.step("use the newest refresh token");
    let reply = refresh(&p, &client_id, &r2).await?;
    oauth_error(&reply, &[400], &["invalid_grant"]).map_err(|_| {
        fail(format!(
            "after the reuse, the newest refresh token still works (HTTP {})",
            reply.status
        ))
    })
}

/// The exchange of a code by the confidential client (HTTP Basic).
pub(crate) async fn confidential_tokens(p: &Probe) -> Result<(Client, Value), Stop> {
    let client = confidential(p).await?;
    let code = p.code(&client, "openid", &[]).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    p.step("exchange the code (client_secret_basic)");
    let reply = p
        .through(|| exchange(&p.http, &token, &code, client.basic()))
        .await?
        .map_err(|e| fail(format!("the request failed: {e}")))?;
    let tokens = tokens(&reply, "the confidential client's exchange")?;
    Ok((client, tokens))
}

/// MSC2964: a refresh whose answer was lost may be retried with the same refresh token while
/// its successor is unused; the retry gets a working pair.
pub(crate) async fn refresh_retry_grace(p: Probe) -> Checked {
    let (client_id, r0, _) = with_refresh(&p).await?;
    p.step("refresh (the answer is \"lost\")");
    let first = refresh(&p, &client_id, &r0).await?;
    tokens(&first, "the first refresh").map_err(|e| match e {
        Stop::Fail { reason, .. } => skip(format!("refreshing failed: {reason}")),
        other => other,
    })?;
    p.step("retry with the same refresh token");
    let retry = refresh(&p, &client_id, &r0).await?;
    let answer = tokens(&retry, "the retried refresh")?;
    let r1 = answer
        .get("refresh_token")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("the retried refresh answered no refresh token"))?
        .to_owned();
    p.step("use the refresh token of the retry");
    let next = refresh(&p, &client_id, &r1).await?;
    tokens(&next, "a refresh with the retry's token").map(drop)
}
