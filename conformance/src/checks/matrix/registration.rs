//! MSC2966 client registration rules (on top of RFC 7591).

use serde_json::{json, Value};

use crate::checks::oauth2::registration::{
    refused, register, registered, web_client, METADATA_ERRORS, REDIRECT_ERRORS,
};
use crate::context::{native_client, Probe, DEVICE_GRANT, LOOPBACK_REDIRECT};
use crate::Checked;

const FOREIGN: &str = "https://attacker.example.net/";

/// `base` with `member` set (or removed with `Value::Null`).
fn with(mut base: Value, member: &str, value: Value) -> Value {
    if let Some(map) = base.as_object_mut() {
        if value.is_null() {
            map.remove(member);
        } else {
            map.insert(member.to_owned(), value);
        }
    }
    base
}

async fn must_refuse(p: Probe, body: Value, errors: &[&str]) -> Checked {
    let reply = register(&p, &body).await?;
    refused(&reply, errors)
}

async fn must_accept(p: Probe, body: Value) -> Checked {
    let reply = register(&p, &body).await?;
    registered(&reply).map(drop)
}

/// MSC2966: `client_uri` is required.
pub(crate) async fn client_uri_required(p: Probe) -> Checked {
    must_refuse(
        p,
        with(web_client(), "client_uri", Value::Null),
        METADATA_ERRORS,
    )
    .await
}

/// MSC2966: `client_uri` uses https.
pub(crate) async fn client_uri_https(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "client_uri",
        json!("http://conformance.example.org/"),
    );
    must_refuse(p, body, METADATA_ERRORS).await
}

/// MSC2966: no user or password in `client_uri`.
pub(crate) async fn client_uri_userinfo(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "client_uri",
        json!("https://user:secret@conformance.example.org/"),
    );
    must_refuse(p, body, METADATA_ERRORS).await
}

/// MSC2966: `logo_uri` on the `client_uri` host (or a subdomain).
pub(crate) async fn logo_uri_host(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "logo_uri",
        json!(format!("{FOREIGN}logo.png")),
    );
    must_refuse(p, body, METADATA_ERRORS).await
}

/// MSC2966: `tos_uri` on the `client_uri` host.
pub(crate) async fn tos_uri_host(p: Probe) -> Checked {
    let body = with(web_client(), "tos_uri", json!(format!("{FOREIGN}terms")));
    must_refuse(p, body, METADATA_ERRORS).await
}

/// MSC2966: `policy_uri` on the `client_uri` host.
pub(crate) async fn policy_uri_host(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "policy_uri",
        json!(format!("{FOREIGN}privacy")),
    );
    must_refuse(p, body, METADATA_ERRORS).await
}

/// MSC2966: a subdomain of the `client_uri` host is fine for those URIs.
pub(crate) async fn subdomain_accepted(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "logo_uri",
        json!("https://cdn.conformance.example.org/logo.png"),
    );
    let body = with(
        body,
        "policy_uri",
        json!("https://conformance.example.org/privacy"),
    );
    must_accept(p, body).await
}

/// MSC2966: web redirect URIs use https (loopback http is for native clients).
pub(crate) async fn web_redirect_https(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "redirect_uris",
        json!(["http://conformance.example.org/callback"]),
    );
    must_refuse(p, body, REDIRECT_ERRORS).await
}

/// MSC2966: web redirect URIs are on the `client_uri` host.
pub(crate) async fn web_redirect_host(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "redirect_uris",
        json!([format!("{FOREIGN}callback")]),
    );
    must_refuse(p, body, REDIRECT_ERRORS).await
}

/// MSC2966 / RFC 8252 §7.1: a private-use scheme is the reversed `client_uri` host.
pub(crate) async fn native_scheme_reversed(p: Probe) -> Checked {
    must_refuse(
        p,
        native_client(&["net.example.attacker:/callback"]),
        REDIRECT_ERRORS,
    )
    .await
}

/// MSC2966: the reversed `client_uri` host as scheme is accepted.
pub(crate) async fn native_scheme_accepted(p: Probe) -> Checked {
    must_accept(p, native_client(&["org.example.conformance:/callback"])).await
}

/// MSC2966 / RFC 8252 §7.1: a private-use URI has no authority (`scheme:/path`).
pub(crate) async fn native_no_authority(p: Probe) -> Checked {
    must_refuse(
        p,
        native_client(&["org.example.conformance://callback"]),
        REDIRECT_ERRORS,
    )
    .await
}

/// MSC2966 / RFC 8252 §7.3: loopback redirects (`127.0.0.1`, `[::1]`, `localhost`) without a
/// port are accepted for native clients.
pub(crate) async fn loopback_accepted(p: Probe) -> Checked {
    must_accept(
        p,
        native_client(&[
            LOOPBACK_REDIRECT,
            "http://[::1]/callback",
            "http://localhost/callback",
        ]),
    )
    .await
}

/// MSC2966 / MSC4341: a device-flow-only client registers with no redirect URIs and
/// `response_types: []`.
pub(crate) async fn device_only(p: Probe) -> Checked {
    let body = json!({
        "client_name": "Conformance suite (device)",
        "client_uri": crate::context::CLIENT_URI,
        "application_type": "native",
        "grant_types": [DEVICE_GRANT, "refresh_token"],
        "response_types": [],
        "token_endpoint_auth_method": "none",
    });
    must_accept(p, body).await
}

/// MSC2966: grant types the server does not know are ignored, not an error.
pub(crate) async fn unknown_grant_ignored(p: Probe) -> Checked {
    let mut body = native_client(&[LOOPBACK_REDIRECT]);
    body["grant_types"] = json!([
        "authorization_code",
        "refresh_token",
        "urn:example:conformance:unknown-grant"
    ]);
    must_accept(p, body).await
}

/// MSC2966: `token_endpoint_auth_method: none` works (no secret is issued).
pub(crate) async fn none_auth(p: Probe) -> Checked {
    let reply = register(&p, &native_client(&[LOOPBACK_REDIRECT])).await?;
    let answer = registered(&reply)?;
    crate::checks::expect::ensure(
        answer
            .get("client_secret")
            .is_none_or(|s| s.is_null() || s.as_str() == Some("")),
        || "a client_secret was issued to a public (`none`) client".into(),
    )
}

/// RFC 7591 §2.2 (MSC2966 clients send them): localized `client_name#fr` is accepted.
pub(crate) async fn localized_name(p: Probe) -> Checked {
    let body = with(
        native_client(&[LOOPBACK_REDIRECT]),
        "client_name#fr",
        json!("Suite de conformité"),
    );
    must_accept(p, body).await
}

/// MSC2966 (OIDC Registration §2): `application_type` defaults to `web`, so a loopback http
/// redirect without it is refused.
pub(crate) async fn default_web(p: Probe) -> Checked {
    let body = with(
        native_client(&[LOOPBACK_REDIRECT]),
        "application_type",
        Value::Null,
    );
    must_refuse(p, body, REDIRECT_ERRORS).await
}

/// MSC2966 / RFC 8252 §7.2: a native client may use a claimed https redirect on its host.
pub(crate) async fn native_https_accepted(p: Probe) -> Checked {
    must_accept(
        p,
        native_client(&["https://conformance.example.org/native-callback"]),
    )
    .await
}

/// MSC2966: response types the server does not know are ignored, not an error.
pub(crate) async fn unknown_response_type_ignored(p: Probe) -> Checked {
    let mut body = native_client(&[LOOPBACK_REDIRECT]);
    body["response_types"] = json!(["code", "urn:example:conformance:unknown-response"]);
    must_accept(p, body).await
}

/// MSC2966: loopback `post_logout_redirect_uris` follow the loopback redirect rules: accepted.
pub(crate) async fn post_logout_loopback(p: Probe) -> Checked {
    let body = with(
        native_client(&[LOOPBACK_REDIRECT]),
        "post_logout_redirect_uris",
        json!(["http://127.0.0.1/logged-out"]),
    );
    must_accept(p, body).await
}

/// MSC2966: a web client's `post_logout_redirect_uris` on a foreign host are refused.
pub(crate) async fn post_logout_foreign_refused(p: Probe) -> Checked {
    let body = with(
        web_client(),
        "post_logout_redirect_uris",
        json!([format!("{FOREIGN}logged-out")]),
    );
    must_refuse(p, body, REDIRECT_ERRORS).await
}
