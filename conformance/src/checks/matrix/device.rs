//! MSC4341: the device authorization grant for Matrix clients (QR login's basis).

use std::time::{Duration, Instant};

use serde_json::Value;
use test_clients::{http::Http, transcript::Transcript};

use crate::checks::expect::{ensure, fail, skip};
use crate::checks::oauth2::device::{poll, started};
use crate::context::{matrix_scope, Probe, API_SCOPE, DEVICE_SCOPE};
use crate::Checked;

/// How long the suite waits for the approval to show at the token endpoint.
const WAIT: Duration = Duration::from_secs(20);

/// MSC4341: a Matrix device grant, approved on the verification page, gets an access token and
/// a refresh token, with the Matrix scopes granted.
pub(crate) async fn grant(p: Probe) -> Checked {
    let account = p.cx.account().await?;
    let device_id = p.cx.device_id();
    let (answer, client_id) = started(&p, &matrix_scope(&device_id)).await?;
    let device_code = answer
        .get("device_code")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("the device authorization answered no device_code"))?
        .to_owned();
    let page = answer
        .get("verification_uri_complete")
        .or_else(|| answer.get("verification_uri"))
        .and_then(Value::as_str)
        .and_then(|u| url::Url::parse(u).ok())
        .ok_or_else(|| fail("no usable verification URI"))?;
    let interval = answer
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .max(1);

    // The approval happens in a browser: not evidence. Its end is a page, not a redirect, so
    // the walk's answer only matters if no tokens come.
    let browser = Http::browser(Transcript::new());
    let walked =
        p.cx.walk(&browser, &page, "conformance:never", &account)
            .await
            .map_err(|gave_up| skip(gave_up.0))?;

    let started_at = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        p.step("poll");
        let reply = poll(&p, &client_id, &device_code).await?;
        if reply.status == 200 {
            let tokens = crate::checks::oauth2::token::tokens(&reply, "the device grant")?;
            ensure(
                tokens.get("refresh_token").is_some_and(Value::is_string),
                || "no refresh_token: MSC4341 requires one".into(),
            )?;
            let scope = tokens
                .get("scope")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let device_scope = format!("{DEVICE_SCOPE}{device_id}");
            if !(scope.split(' ').any(|s| s == API_SCOPE)
                && scope.split(' ').any(|s| s == device_scope))
            {
                p.note(format!(
                    "the token response's scope `{scope}` does not list the Matrix scopes"
                ));
            }
            return Ok(());
        }
        let error = reply
            .json()
            .ok()
            .and_then(|b| b.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        match error.as_str() {
            "authorization_pending" | "slow_down" if started_at.elapsed() < WAIT => continue,
            "authorization_pending" | "slow_down" => {
                return Err(skip(format!(
                    "the grant was not approved in time (the suite could not approve it on the \
                     verification page: {})",
                    walked
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "no error".into())
                )))
            }
            other => {
                return Err(fail(format!(
                    "polling answered HTTP {} `{other}` after the approval",
                    reply.status
                )))
            }
        }
    }
}
