//! Dynamic client registration (RFC 7591); the Matrix rules (MSC2966) are in
//! `matrix::registration`.

use serde_json::{json, Value};
use test_clients::http::Reply;

use crate::checks::expect::{ensure, fail, json, oauth_error, short};
use crate::context::{native_client, Probe, CLIENT_URI, LOOPBACK_REDIRECT};
use crate::{Checked, Stop};

/// Posts a registration request.
pub(crate) async fn register(p: &Probe, body: &Value) -> Result<Reply, Stop> {
    let endpoint = p.cx.endpoint("registration_endpoint")?;
    p.post_json(&endpoint, body, None).await
}

/// RFC 7591 §3.2.1: 201 with a `client_id`; returns the answer.
pub(crate) fn registered(reply: &Reply) -> Result<Value, Stop> {
    ensure(reply.status == 201, || {
        format!(
            "the registration answered HTTP {} instead of 201: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    let answer = json(reply, "the registration")?;
    ensure(
        answer.get("client_id").is_some_and(Value::is_string),
        || "the registration answered no client_id".into(),
    )?;
    Ok(answer)
}

/// RFC 7591 §3.2.2: refused with 400 and one of `errors`.
pub(crate) fn refused(reply: &Reply, errors: &[&str]) -> Checked {
    oauth_error(reply, &[400], errors)
}

/// Redirect URI problems: `invalid_redirect_uri` (RFC 7591 §3.2.2), or the general code.
pub(crate) const REDIRECT_ERRORS: &[&str] = &["invalid_redirect_uri", "invalid_client_metadata"];
/// Other metadata problems.
pub(crate) const METADATA_ERRORS: &[&str] = &["invalid_client_metadata"];

/// A web client registration on the suite's client URI.
pub(crate) fn web_client() -> Value {
    json!({
        "client_name": "Conformance suite (web)",
        "client_uri": CLIENT_URI,
        "application_type": "web",
        "redirect_uris": [crate::context::WEB_REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// RFC 7591 §3.2.1: a valid registration is answered 201 with a `client_id`.
pub(crate) async fn created(p: Probe) -> Checked {
    let reply = register(&p, &native_client(&[LOOPBACK_REDIRECT])).await?;
    registered(&reply).map(drop)
}

/// RFC 7591 §3.2.1: the answer holds the registered metadata.
pub(crate) async fn echoes_metadata(p: Probe) -> Checked {
    let body = native_client(&[LOOPBACK_REDIRECT]);
    let reply = register(&p, &body).await?;
    let answer = registered(&reply)?;
    let mut missing = Vec::new();
    for member in ["redirect_uris", "client_uri", "token_endpoint_auth_method"] {
        if answer.get(member) != body.get(member) {
            missing.push(format!(
                "`{member}` is {} (sent {})",
                answer.get(member).unwrap_or(&Value::Null),
                body[member]
            ));
        }
    }
    ensure(missing.is_empty(), || missing.join("; "))
}

/// RFC 6749 §3.1.2 / RFC 7591 §2: a redirect URI with a fragment is refused.
pub(crate) async fn redirect_fragment(p: Probe) -> Checked {
    let mut body = web_client();
    body["redirect_uris"] = json!(["https://conformance.example.org/callback#fragment"]);
    let reply = register(&p, &body).await?;
    refused(&reply, REDIRECT_ERRORS)
}

/// RFC 7591 §3.2.1: a client registered for `client_secret_basic` is given its secret.
pub(crate) async fn secret_issued(p: Probe) -> Checked {
    let doc = p.cx.metadata()?;
    let offered = doc.get("token_endpoint_auth_methods_supported").is_none()
        || crate::context::list_has(
            doc,
            "token_endpoint_auth_methods_supported",
            "client_secret_basic",
        );
    if !offered {
        return Err(Stop::skip("the issuer does not offer client_secret_basic"));
    }
    let mut body = web_client();
    body["token_endpoint_auth_method"] = json!("client_secret_basic");
    let reply = register(&p, &body).await?;
    let answer = registered(&reply)?;
    match answer.get("client_secret").and_then(Value::as_str) {
        Some(secret) if !secret.is_empty() => Ok(()),
        _ => Err(fail("no client_secret for a client_secret_basic client")),
    }
}

/// RFC 7591 §3.1: the request is JSON; anything else is refused.
pub(crate) async fn not_json(p: Probe) -> Checked {
    let endpoint = p.cx.endpoint("registration_endpoint")?;
    let request = p
        .request(reqwest::Method::POST, &endpoint)
        .header("content-type", "application/json")
        .body("{\"redirect_uris\": [");
    let reply = p.send(request).await?;
    ensure(reply.status == 400, || {
        format!(
            "a body that is not JSON answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })
}
