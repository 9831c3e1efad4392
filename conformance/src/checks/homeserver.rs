//! The `matrix-homeserver` profile: a homeserver delegating to the issuer (MSC3861): discovery
//! for clients (MSC2965), token enforcement through introspection, logout taking effect at
//! once, and the capabilities the provider takes over.

use serde_json::Value;
use test_clients::http::Reply;
use url::Url;

use crate::checks::expect::{ensure, fail, json, matrix_error, short, skip};
use crate::context::{join, matrix_scope, Probe, Session};
use crate::{Checked, Stop};

fn homeserver(p: &Probe) -> Result<Url, Stop> {
    p.cx.options
        .homeserver
        .clone()
        .ok_or_else(|| skip("no --homeserver"))
}

fn at(p: &Probe, path: &str) -> Result<Url, Stop> {
    Ok(join(&homeserver(p)?, path))
}

async fn get_json(p: &Probe, path: &str) -> Result<Value, Stop> {
    let url = at(p, path)?;
    let reply = p.get(&url).await?;
    ensure(reply.status == 200, || {
        format!(
            "GET {url} answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    json(&reply, path)
}

/// Matrix v1.15: `/versions` lists v1.15 or later (OAuth-aware clients check it first).
pub(crate) async fn versions(p: Probe) -> Checked {
    let body = get_json(&p, "_matrix/client/versions").await?;
    let versions: Vec<&str> = body
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let recent = versions.iter().any(|v| {
        v.strip_prefix("v1.")
            .and_then(|minor| minor.parse::<u32>().ok())
            .is_some_and(|minor| minor >= 15)
    });
    ensure(recent, || {
        format!("`versions` {versions:?} lists nothing from v1.15 on")
    })
}

/// MSC2965 (Matrix v1.15 `GET /auth_metadata`): the provider's metadata, unchanged.
pub(crate) async fn auth_metadata(p: Probe) -> Checked {
    let served = get_json(&p, "_matrix/client/v1/auth_metadata").await?;
    let provider = p.cx.metadata()?;
    ensure(&served == provider, || {
        "the homeserver's auth_metadata differs from the issuer's metadata".into()
    })
}

/// MSC2965: clients compare the `issuer` of `auth_metadata` exactly.
pub(crate) async fn auth_metadata_issuer(p: Probe) -> Checked {
    let served = get_json(&p, "_matrix/client/v1/auth_metadata").await?;
    let expected = p.cx.options.issuer.clone();
    crate::checks::oauth2::metadata::issuer_is_expected(&served, &expected).map_err(fail)
}

/// An unstable MSC2965 discovery endpoint. Matrix v1.15 (MSC2965 merged) made
/// `GET /_matrix/client/v1/auth_metadata` the requirement (`homeserver.auth_metadata`); the
/// unstable endpoints are optional now (Synapse 1.163 no longer serves `auth_issuer`). Not
/// served (404, or `M_UNRECOGNIZED`: C-S API §API standards, unknown endpoints) is a skip;
/// served, the answer is its JSON body, and anything else a failure (of a MAY).
async fn served_unstable(p: &Probe, path: &str) -> Result<Value, Stop> {
    let url = at(p, path)?;
    let reply = p.get(&url).await?;
    let errcode = reply
        .json()
        .ok()
        .and_then(|b| b.get("errcode").and_then(Value::as_str).map(str::to_owned));
    if reply.status == 404 || errcode.as_deref() == Some("M_UNRECOGNIZED") {
        return Err(skip(format!(
            "not served (HTTP {}{}): optional since Matrix v1.15, where clients use \
             GET /_matrix/client/v1/auth_metadata (homeserver.auth_metadata)",
            reply.status,
            errcode.map(|e| format!(" {e}")).unwrap_or_default()
        )));
    }
    ensure(reply.status == 200, || {
        format!(
            "GET {url} answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    json(&reply, path)
}

/// MSC2965 (unstable path, a MAY since Matrix v1.15): when served, the same document as
/// the issuer's metadata (older clients).
pub(crate) async fn unstable_auth_metadata(p: Probe) -> Checked {
    let served = served_unstable(
        &p,
        "_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    )
    .await?;
    let provider = p.cx.metadata()?;
    ensure(&served == provider, || {
        "the unstable auth_metadata differs from the issuer's metadata".into()
    })
}

/// MSC2965 (older, unstable form; a MAY since Matrix v1.15): when served, `auth_issuer`
/// names the issuer.
pub(crate) async fn auth_issuer(p: Probe) -> Checked {
    let served =
        served_unstable(&p, "_matrix/client/unstable/org.matrix.msc2965/auth_issuer").await?;
    let expected =
        p.cx.metadata()?
            .get("issuer")
            .cloned()
            .unwrap_or(Value::Null);
    ensure(served.get("issuer") == Some(&expected), || {
        format!(
            "auth_issuer says {}, the issuer is {expected}",
            served.get("issuer").unwrap_or(&Value::Null)
        )
    })
}

/// MSC2965: `/.well-known/matrix/client` has `org.matrix.msc2965.authentication` with the
/// issuer (and the account page when the provider has one).
pub(crate) async fn well_known(p: Probe) -> Checked {
    let body = get_json(&p, ".well-known/matrix/client").await?;
    let block = body
        .get("org.matrix.msc2965.authentication")
        .ok_or_else(|| fail("no org.matrix.msc2965.authentication block"))?;
    let doc = p.cx.metadata()?;
    ensure(block.get("issuer") == doc.get("issuer"), || {
        format!(
            "the block's issuer is {}",
            block.get("issuer").unwrap_or(&Value::Null)
        )
    })?;
    if let Some(account) = doc.get("account_management_uri") {
        ensure(block.get("account") == Some(account), || {
            format!(
                "the block's account is {}, the metadata's {account}",
                block.get("account").unwrap_or(&Value::Null)
            )
        })?;
    }
    Ok(())
}

async fn whoami(p: &Probe, token: Option<&str>) -> Result<Reply, Stop> {
    let url = at(p, "_matrix/client/v3/account/whoami")?;
    match token {
        Some(token) => p.get_bearer(&url, token).await,
        None => p.get(&url).await,
    }
}

async fn matrix_user(p: &Probe) -> Result<&Session, Stop> {
    p.cx.matrix_user()
        .await
        .map_err(|e| e.skip("a Matrix sign-in"))
}

fn whoami_is(reply: &Reply, session: &Session) -> Checked {
    ensure(reply.status == 200, || {
        format!(
            "whoami answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    let body = json(reply, "whoami")?;
    ensure(body.get("user_id").is_some_and(Value::is_string), || {
        "whoami has no user_id".into()
    })?;
    ensure(
        body.get("device_id").and_then(Value::as_str) == session.device_id.as_deref(),
        || {
            format!(
                "whoami's device_id is {}, the token's device is {:?}",
                body.get("device_id").unwrap_or(&Value::Null),
                session.device_id
            )
        },
    )
}

/// MSC3861: a token of a Matrix grant is accepted, as its user and device.
pub(crate) async fn whoami_token(p: Probe) -> Checked {
    let session = matrix_user(&p).await?;
    let token = session.access_token().unwrap_or_default().to_owned();
    let reply = whoami(&p, Some(&token)).await?;
    whoami_is(&reply, session)?;
    let body = json(&reply, "whoami")?;
    let username = &p.cx.credentials()?.username;
    let user_id = body["user_id"].as_str().unwrap_or_default();
    ensure(user_id.starts_with(&format!("@{username}:")), || {
        format!("whoami's user_id is `{user_id}`, the account is `{username}`")
    })
}

/// Client-server API §"Using access tokens": no token is 401 `M_MISSING_TOKEN`.
pub(crate) async fn missing_token(p: Probe) -> Checked {
    let reply = whoami(&p, None).await?;
    matrix_error(&reply, &[401], &["M_MISSING_TOKEN"])
}

/// Client-server API §"Using access tokens": an unknown token is 401 `M_UNKNOWN_TOKEN`.
pub(crate) async fn unknown_token(p: Probe) -> Checked {
    let reply = whoami(&p, Some("conformance-not-a-token")).await?;
    matrix_error(&reply, &[401], &["M_UNKNOWN_TOKEN"])
}

/// MSC2967: a token without the C-S API scope does not open the API.
pub(crate) async fn no_api_scope(p: Probe) -> Checked {
    let session =
        p.cx.user()
            .await
            .map_err(|e| e.skip("an `openid`-only sign-in"))?;
    let token = session.access_token().unwrap_or_default().to_owned();
    let reply = whoami(&p, Some(&token)).await?;
    ensure(reply.status != 200, || {
        "a token with scope `openid` only is accepted by whoami".into()
    })?;
    matrix_error(&reply, &[401, 403], &["M_UNKNOWN_TOKEN", "M_FORBIDDEN"])
}

/// RFC 7009 (MSC4254) with the homeserver contract: revoking a token at the provider ends it
/// at the homeserver at once, though the homeserver caches introspection (the device is
/// deleted).
pub(crate) async fn revocation_immediate(p: Probe) -> Checked {
    let revocation = p.cx.endpoint("revocation_endpoint")?;
    let device_id = p.cx.device_id();
    let session = p.sign_in(&matrix_scope(&device_id)).await?;
    let session = Session {
        device_id: Some(device_id),
        ..session
    };
    let token = session.access_token().unwrap_or_default().to_owned();
    p.step("whoami (the homeserver caches the introspection)");
    let reply = whoami(&p, Some(&token)).await?;
    whoami_is(&reply, &session).map_err(|e| match e {
        Stop::Fail { reason, .. } => skip(format!(
            "the fresh token does not work to begin with: {reason}"
        )),
        other => other,
    })?;
    p.step("revoke the access token at the provider");
    let revoked = p
        .post_form(
            &revocation,
            &[("token", &token), ("client_id", &session.client.client_id)],
            None,
        )
        .await?;
    ensure(revoked.status == 200, || {
        format!("the revocation answered HTTP {}", revoked.status)
    })?;
    p.step("whoami again");
    let reply = whoami(&p, Some(&token)).await?;
    ensure(reply.status == 401, || {
        format!(
            "the revoked token still works at the homeserver (HTTP {})",
            reply.status
        )
    })
}

/// RFC 6749 §6 with MSC3861: a refreshed access token works at the homeserver.
pub(crate) async fn refreshed_token(p: Probe) -> Checked {
    let device_id = p.cx.device_id();
    let session = p.sign_in(&matrix_scope(&device_id)).await?;
    let session = Session {
        device_id: Some(device_id),
        ..session
    };
    let refresh_token = session
        .refresh_token()
        .ok_or_else(|| skip("the sign-in issued no refresh token"))?
        .to_owned();
    p.step("refresh");
    let reply =
        crate::checks::oauth2::token::refresh(&p, &session.client.client_id, &refresh_token)
            .await?;
    let tokens = crate::checks::oauth2::token::tokens(&reply, "the refresh")?;
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    p.step("whoami with the new access token");
    let reply = whoami(&p, Some(&access)).await?;
    whoami_is(&reply, &session)
}

/// MSC3861: passwords belong to the provider, so `m.change_password` is disabled.
pub(crate) async fn change_password_disabled(p: Probe) -> Checked {
    let session = matrix_user(&p).await?;
    let token = session.access_token().unwrap_or_default().to_owned();
    let url = at(&p, "_matrix/client/v3/capabilities")?;
    let reply = p.get_bearer(&url, &token).await?;
    ensure(reply.status == 200, || {
        format!("capabilities answered HTTP {}", reply.status)
    })?;
    let body = json(&reply, "capabilities")?;
    let enabled = body
        .pointer("/capabilities/m.change_password/enabled")
        .and_then(Value::as_bool);
    ensure(enabled == Some(false), || {
        format!("m.change_password.enabled is {enabled:?}, not false")
    })
}

/// MSC3861: the device of a Matrix grant is on the homeserver (the provider provisioned it).
pub(crate) async fn device_listed(p: Probe) -> Checked {
    let session = matrix_user(&p).await?;
    let token = session.access_token().unwrap_or_default().to_owned();
    let url = at(&p, "_matrix/client/v3/devices")?;
    let reply = p.get_bearer(&url, &token).await?;
    ensure(reply.status == 200, || {
        format!("devices answered HTTP {}", reply.status)
    })?;
    let body = json(&reply, "devices")?;
    let device = session.device_id.clone().unwrap_or_default();
    let listed = body
        .get("devices")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .any(|d| d.get("device_id").and_then(Value::as_str) == Some(&device))
        });
    ensure(listed, || format!("device {device} is not listed"))
}

/// MSC3824: the homeserver's `/login` (proxied to the provider) offers the delegated SSO flow.
pub(crate) async fn login_delegated(p: Probe) -> Checked {
    let body = get_json(&p, "_matrix/client/v3/login").await?;
    let delegated = body
        .get("flows")
        .and_then(Value::as_array)
        .is_some_and(|flows| {
            flows.iter().any(|f| {
                f.get("type").and_then(Value::as_str) == Some("m.login.sso")
                    && f.get("org.matrix.msc3824.delegated_oidc_compatibility")
                        == Some(&Value::Bool(true))
            })
        });
    ensure(delegated, || {
        format!("the login flows have no delegated m.login.sso: {body}")
    })
}
