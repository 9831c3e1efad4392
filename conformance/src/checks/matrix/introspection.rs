//! The homeserver's side of introspection (the MSC3861 homeserver contract, as Synapse reads
//! it): the shared secret as a bearer credential, and the fields Synapse needs.

use serde_json::Value;

use crate::checks::expect::{ensure, json, short, skip};
use crate::checks::oauth2::introspection::refused_or_inactive;
use crate::context::{Probe, Session, API_SCOPE, DEVICE_SCOPE};
use crate::{Checked, Stop};

/// Where the homeserver introspects: Synapse posts to `{endpoint}/oauth2/introspect` whatever
/// the metadata says; the advertised endpoint is used when there is one.
fn introspection_endpoint(p: &Probe) -> Result<url::Url, Stop> {
    match p.cx.endpoint("introspection_endpoint") {
        Ok(url) => Ok(url),
        Err(_) => {
            p.cx.metadata()?;
            p.note("no introspection_endpoint advertised: using {issuer}oauth2/introspect, where Synapse posts");
            Ok(crate::context::join(
                &p.cx.options.issuer,
                "oauth2/introspect",
            ))
        }
    }
}

/// RFC 7662 §2.1 / §2.3: a wrong bearer credential is refused.
pub(crate) async fn wrong_secret(p: Probe) -> Checked {
    let endpoint = introspection_endpoint(&p)?;
    let token = match p.cx.user().await {
        Ok(s) => s.access_token().unwrap_or("x").to_owned(),
        Err(_) => "conformance-not-a-token".to_owned(),
    };
    let request = p
        .request(reqwest::Method::POST, &endpoint)
        .bearer_auth("conformance-not-the-secret")
        .form(&[
            ("token", token.as_str()),
            ("token_type_hint", "access_token"),
        ]);
    let reply = p.send(request).await?;
    refused_or_inactive(&p, &reply)
}

async fn introspect(p: &Probe, with_device_header: bool) -> Result<(Value, &Session), Stop> {
    let secret =
        p.cx.options
            .homeserver_secret
            .clone()
            .ok_or_else(|| skip("no --homeserver-secret"))?;
    let endpoint = introspection_endpoint(p)?;
    let session =
        p.cx.matrix_user()
            .await
            .map_err(|e| e.skip("a Matrix sign-in"))?;
    let token = session.access_token().unwrap_or_default();
    let mut request = p
        .request(reqwest::Method::POST, &endpoint)
        .bearer_auth(secret)
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    if with_device_header {
        request = request.header("X-MAS-Supports-Device-Id", "1");
    }
    let reply = p.send(request).await?;
    ensure(reply.status == 200, || {
        format!(
            "the introspection answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    Ok((json(&reply, "the introspection")?, session))
}

/// Homeserver contract: `active`, the API scope, `username` (the localpart), `device_id` (with
/// `X-MAS-Supports-Device-Id: 1`), `sub`, and an expiry.
pub(crate) async fn homeserver_fields(p: Probe) -> Checked {
    let (body, session) = introspect(&p, true).await?;
    let credentials = p.cx.credentials()?;
    let mut wrong = Vec::new();
    if body.get("active") != Some(&Value::Bool(true)) {
        wrong.push("not active".to_owned());
    }
    let scope = body
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !scope.split(' ').any(|s| s == API_SCOPE) {
        wrong.push(format!("scope `{scope}` lacks {API_SCOPE}"));
    }
    if body.get("username").and_then(Value::as_str) != Some(credentials.username.as_str()) {
        wrong.push(format!(
            "username is {}, expected {}",
            body.get("username").unwrap_or(&Value::Null),
            credentials.username
        ));
    }
    if body.get("device_id").and_then(Value::as_str) != session.device_id.as_deref() {
        wrong.push(format!(
            "device_id is {}",
            body.get("device_id").unwrap_or(&Value::Null)
        ));
    }
    if !body.get("sub").is_some_and(Value::is_string) {
        wrong.push("no sub".to_owned());
    }
    if body.get("exp").is_none() && body.get("expires_in").is_none() {
        wrong.push("neither exp nor expires_in".to_owned());
    }
    ensure(wrong.is_empty(), || wrong.join("; "))
}

/// Homeserver contract: without `X-MAS-Supports-Device-Id`, the device is in the scope.
pub(crate) async fn device_in_scope(p: Probe) -> Checked {
    let (body, session) = introspect(&p, false).await?;
    let device = format!(
        "{DEVICE_SCOPE}{}",
        session.device_id.as_deref().unwrap_or_default()
    );
    let scope = body
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure(scope.split(' ').any(|s| s == device), || {
        format!("scope `{scope}` lacks `{device}`")
    })
}

/// Homeserver contract: the answer also carries `sub`, `client_id`, `token_type`, `exp`, `iat`.
pub(crate) async fn extra_fields(p: Probe) -> Checked {
    let (body, _) = introspect(&p, true).await?;
    let missing: Vec<&str> = ["sub", "client_id", "token_type", "exp", "iat"]
        .into_iter()
        .filter(|m| body.get(*m).is_none())
        .collect();
    ensure(missing.is_empty(), || {
        format!("the answer lacks {}", missing.join(", "))
    })
}
