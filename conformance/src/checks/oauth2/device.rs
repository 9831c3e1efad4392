//! The device authorization grant (RFC 8628).

use serde_json::Value;
use test_clients::http::Reply;

use crate::checks::expect::{ensure, fail, json, oauth_error, public_client, short};
use crate::context::{Probe, DEVICE_GRANT};
use crate::{Checked, Stop};

/// RFC 8628 §3.1: a device authorization request by the suite's public client.
pub(crate) async fn start(p: &Probe, scope: &str) -> Result<(Reply, String), Stop> {
    let endpoint = p.cx.endpoint("device_authorization_endpoint")?;
    let client = public_client(p).await?;
    let reply = p
        .post_form(
            &endpoint,
            &[("client_id", &client.client_id), ("scope", scope)],
            None,
        )
        .await?;
    Ok((reply, client.client_id))
}

/// A started device authorization: the answer and the client, or a failure.
pub(crate) async fn started(p: &Probe, scope: &str) -> Result<(Value, String), Stop> {
    let (reply, client_id) = start(p, scope).await?;
    ensure(reply.status == 200, || {
        format!(
            "the device authorization request answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    Ok((json(&reply, "the device authorization")?, client_id))
}

/// RFC 8628 §3.4: one poll.
pub(crate) async fn poll(p: &Probe, client_id: &str, device_code: &str) -> Result<Reply, Stop> {
    let token = p.cx.endpoint("token_endpoint")?;
    p.post_form(
        &token,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", client_id),
        ],
        None,
    )
    .await
}

fn device_code(answer: &Value) -> Result<String, Stop> {
    answer
        .get("device_code")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Stop::skip("the device authorization answered no device_code"))
}

/// RFC 8628 §3.2: `device_code`, `user_code`, `verification_uri`, `expires_in` REQUIRED;
/// `interval` a number when present.
pub(crate) async fn response_fields(p: Probe) -> Checked {
    let (answer, _) = started(&p, "openid").await?;
    let mut wrong = Vec::new();
    for member in ["device_code", "user_code", "verification_uri"] {
        let present = answer
            .get(member)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !present {
            wrong.push(format!("`{member}` is missing or not a string"));
        }
    }
    if answer.get("expires_in").and_then(Value::as_u64).is_none() {
        wrong.push("`expires_in` is missing or not a number".to_owned());
    }
    if answer.get("interval").is_some_and(|v| v.as_u64().is_none()) {
        wrong.push("`interval` is not a number".to_owned());
    }
    ensure(wrong.is_empty(), || wrong.join("; "))
}

/// RFC 8628 §3.5: before the user answers, a poll is `authorization_pending`.
pub(crate) async fn pending(p: Probe) -> Checked {
    let (answer, client_id) = started(&p, "openid").await?;
    let reply = poll(&p, &client_id, &device_code(&answer)?).await?;
    oauth_error(&reply, &[400], &["authorization_pending"])
}

/// RFC 8628 §3.5: polling faster than the interval is answered `slow_down`.
pub(crate) async fn slow_down(p: Probe) -> Checked {
    let (answer, client_id) = started(&p, "openid").await?;
    let code = device_code(&answer)?;
    let first = poll(&p, &client_id, &code).await?;
    if oauth_error(&first, &[400], &["slow_down"]).is_ok() {
        return Ok(());
    }
    let second = poll(&p, &client_id, &code).await?;
    oauth_error(&second, &[400], &["slow_down"])
}

/// RFC 8628 §3.5 / RFC 6749 §5.2: an unknown device code is refused.
pub(crate) async fn unknown_code(p: Probe) -> Checked {
    p.cx.endpoint("device_authorization_endpoint")?;
    let client = public_client(&p).await?;
    let reply = poll(&p, &client.client_id, "conformance-not-a-device-code").await?;
    oauth_error(&reply, &[400], &["invalid_grant", "expired_token"])
}

/// RFC 8628 §3.2 (recommended by MSC4341): `verification_uri_complete`, holding the user code.
pub(crate) async fn verification_uri_complete(p: Probe) -> Checked {
    let (answer, _) = started(&p, "openid").await?;
    let user_code = answer
        .get("user_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(complete) = answer
        .get("verification_uri_complete")
        .and_then(Value::as_str)
    else {
        return Err(fail("no verification_uri_complete"));
    };
    let url = url::Url::parse(complete).map_err(|e| {
        fail(format!(
            "verification_uri_complete `{complete}` is not a URL: {e}"
        ))
    })?;
    let holds_code = url.query_pairs().any(|(_, v)| v == user_code) || complete.contains(user_code);
    ensure(holds_code, || {
        format!("verification_uri_complete `{complete}` does not hold the user code")
    })
}

/// RFC 8628 §6.1: the user code is short and easy to type.
pub(crate) async fn user_code_typeable(p: Probe) -> Checked {
    let (answer, _) = started(&p, "openid").await?;
    let user_code = answer
        .get("user_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let significant: Vec<char> = user_code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect();
    ensure(
        !significant.is_empty()
            && significant.len() <= 12
            && significant.iter().all(char::is_ascii_alphanumeric),
        || format!("user code `{user_code}` is not short ASCII letters and digits"),
    )
}

/// RFC 8628 §3.1 (client authentication as at the token endpoint): a request that names no
/// client is refused.
pub(crate) async fn requires_client(p: Probe) -> Checked {
    let endpoint = p.cx.endpoint("device_authorization_endpoint")?;
    let reply = p.post_form(&endpoint, &[("scope", "openid")], None).await?;
    oauth_error(&reply, &[400, 401], &["invalid_client", "invalid_request"])
}
