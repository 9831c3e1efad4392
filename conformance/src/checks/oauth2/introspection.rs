//! Token introspection (RFC 7662).

use serde_json::Value;
use test_clients::http::Reply;

use crate::checks::expect::{ensure, fail, json, public_client, short};
use crate::checks::oauth2::token::confidential_tokens;
use crate::context::Probe;
use crate::{Checked, Stop};

/// An introspection answer to a caller without (valid) authorization: refused, or at most
/// `{"active": false}` (which tells nothing).
pub(crate) fn refused_or_inactive(p: &Probe, reply: &Reply) -> Checked {
    if reply.status == 200 {
        let body = json(reply, "the introspection")?;
        if body == serde_json::json!({ "active": false }) {
            p.note("answered {\"active\": false} instead of refusing the caller");
            return Ok(());
        }
        return Err(fail(format!(
            "answered a caller without authorization: {}",
            short(&reply.body)
        )));
    }
    ensure(matches!(reply.status, 400 | 401 | 403), || {
        format!("HTTP {}: {}", reply.status, short(&reply.body))
    })
}

/// A token to ask about: the shared user's access token, else a made-up one.
async fn some_token(p: &Probe) -> String {
    match p.cx.user().await {
        Ok(session) => session.access_token().unwrap_or("x").to_owned(),
        Err(_) => "conformance-not-a-token".to_owned(),
    }
}

/// RFC 7662 §2.1: "the endpoint MUST also require some form of authorization".
pub(crate) async fn requires_auth(p: Probe) -> Checked {
    let endpoint = p.cx.endpoint("introspection_endpoint")?;
    let token = some_token(&p).await;
    let reply = p.post_form(&endpoint, &[("token", &token)], None).await?;
    refused_or_inactive(&p, &reply)
}

/// RFC 7662 §2.1: a public client (a `client_id`, no credentials) proves nothing.
pub(crate) async fn public_client_refused(p: Probe) -> Checked {
    let endpoint = p.cx.endpoint("introspection_endpoint")?;
    let client = public_client(&p).await?;
    let token = some_token(&p).await;
    let reply = p
        .post_form(
            &endpoint,
            &[("token", &token), ("client_id", &client.client_id)],
            None,
        )
        .await?;
    refused_or_inactive(&p, &reply)
}

async fn introspect_as_confidential(p: &Probe, token: &str) -> Result<Value, Stop> {
    let endpoint = p.cx.endpoint("introspection_endpoint")?;
    let client =
        p.cx.confidential_client()
            .await
            .map_err(|e| e.skip("a confidential client"))?
            .clone();
    let reply = p
        .post_form(&endpoint, &[("token", token)], client.basic())
        .await?;
    ensure(reply.status == 200, || {
        format!(
            "the introspection answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    json(&reply, "the introspection")
}

/// RFC 7662 §2.2: an active token is answered `"active": true`.
pub(crate) async fn active(p: Probe) -> Checked {
    let session =
        p.cx.confidential_user()
            .await
            .map_err(|e| e.skip("a token of the confidential client"))?;
    let token = session.access_token().unwrap_or_default().to_owned();
    let body = introspect_as_confidential(&p, &token).await?;
    ensure(body.get("active") == Some(&Value::Bool(true)), || {
        format!("a fresh token of the caller is answered {body}")
    })
}

/// RFC 7662 §2.2: the optional members of an active answer agree with the token.
pub(crate) async fn active_members(p: Probe) -> Checked {
    let session =
        p.cx.confidential_user()
            .await
            .map_err(|e| e.skip("a token of the confidential client"))?;
    let token = session.access_token().unwrap_or_default().to_owned();
    let body = introspect_as_confidential(&p, &token).await?;
    if body.get("active") != Some(&Value::Bool(true)) {
        return Err(Stop::skip(
            "the token is not answered active (see oauth2.introspection.active)",
        ));
    }
    let mut wrong = Vec::new();
    if let Some(client_id) = body.get("client_id") {
        if client_id != session.client.client_id.as_str() {
            wrong.push(format!("client_id is {client_id}"));
        }
    }
    if let Some(exp) = body.get("exp") {
        match exp.as_i64() {
            Some(exp) if exp > p.cx.now_unix() - 60 => {}
            _ => wrong.push(format!("exp {exp} is not a future time")),
        }
    }
    if let Some(scope) = body.get("scope") {
        if !scope
            .as_str()
            .is_some_and(|s| s.split(' ').any(|v| v == "openid"))
        {
            wrong.push(format!("scope {scope} lacks the granted openid"));
        }
    }
    ensure(wrong.is_empty(), || wrong.join("; "))
}

/// RFC 7662 §2.2: an unknown token is answered `"active": false`.
pub(crate) async fn garbage_inactive(p: Probe) -> Checked {
    let body = introspect_as_confidential(&p, "conformance-not-a-token").await?;
    ensure(body.get("active") == Some(&Value::Bool(false)), || {
        format!("an unknown token is answered {body}")
    })
}

/// RFC 7662 §2.2: for an inactive token the server SHOULD NOT say more than `active`.
pub(crate) async fn inactive_bare(p: Probe) -> Checked {
    let body = introspect_as_confidential(&p, "conformance-not-a-token").await?;
    ensure(body == serde_json::json!({ "active": false }), || {
        format!("an unknown token is answered {body}, not exactly {{\"active\": false}}")
    })
}

/// RFC 7662 §2.2 with RFC 7009: a revoked token is inactive.
pub(crate) async fn revoked_inactive(p: Probe) -> Checked {
    let revocation = p.cx.endpoint("revocation_endpoint")?;
    p.cx.endpoint("introspection_endpoint")?;
    let (client, tokens) = confidential_tokens(&p).await?;
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    p.step("revoke the access token");
    let reply = p
        .post_form(&revocation, &[("token", &access)], client.basic())
        .await?;
    ensure(reply.status == 200, || {
        format!("the revocation answered HTTP {}", reply.status)
    })?;
    p.step("introspect it");
    let body = introspect_as_confidential(&p, &access).await?;
    ensure(body.get("active") == Some(&Value::Bool(false)), || {
        format!("the revoked token is answered {body}")
    })
}
