//! MSC2967 scopes: one device per grant, with the API scope, in one spelling, with a valid
//! device ID; both spellings accepted; the granted scope told back.

use serde_json::Value;

use crate::checks::expect::{
    authorize_proceeds, authorize_refused, authorize_url, ensure, fail, oauth_error, public_client,
};
use crate::checks::oauth2::device::start;
use crate::context::{Probe, API_SCOPE, DEVICE_SCOPE};
use crate::{Checked, Stop};

const UNSTABLE_API: &str = "urn:matrix:org.matrix.msc2967.client:api:*";
const UNSTABLE_DEVICE: &str = "urn:matrix:org.matrix.msc2967.client:device:";

async fn authorize_scope(
    p: &Probe,
    scope: &str,
) -> Result<(test_clients::http::Reply, String), Stop> {
    let client = public_client(p).await?;
    let url = authorize_url(p, &client, &[("scope", Some(scope))])?;
    Ok((p.get(&url).await?, client.redirect_uri))
}

async fn refused(p: Probe, scope: String) -> Checked {
    let (reply, redirect) = authorize_scope(&p, &scope).await?;
    authorize_refused(&reply, &redirect, &["invalid_scope"]).map(drop)
}

/// MSC2967: exactly one device scope per grant.
pub(crate) async fn two_devices_refused(p: Probe) -> Checked {
    let (a, b) = (p.cx.device_id(), p.cx.device_id());
    refused(
        p,
        format!("openid {API_SCOPE} {DEVICE_SCOPE}{a} {DEVICE_SCOPE}{b}"),
    )
    .await
}

/// MSC2967: a device scope needs the C-S API scope.
pub(crate) async fn device_needs_api(p: Probe) -> Checked {
    let a = p.cx.device_id();
    refused(p, format!("openid {DEVICE_SCOPE}{a}")).await
}

/// MSC2967: the stable and unstable spellings are not mixed in one request.
pub(crate) async fn mixed_forms_refused(p: Probe) -> Checked {
    let a = p.cx.device_id();
    refused(p, format!("openid {API_SCOPE} {UNSTABLE_DEVICE}{a}")).await
}

/// MSC2967: a device ID is made of RFC 3986 unreserved characters (and is not empty).
pub(crate) async fn invalid_device_id_refused(p: Probe) -> Checked {
    for bad in ["CONF/BAD:ID", ""] {
        p.step(&format!("device ID {bad:?}"));
        let (reply, redirect) =
            authorize_scope(&p, &format!("openid {API_SCOPE} {DEVICE_SCOPE}{bad}")).await?;
        authorize_refused(&reply, &redirect, &["invalid_scope"]).map_err(|e| match e {
            Stop::Fail { reason, evidence } => Stop::Fail {
                reason: format!("device ID {bad:?}: {reason}"),
                evidence,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// MSC2967 (Matrix v1.15): the stable scopes are accepted.
pub(crate) async fn stable_accepted(p: Probe) -> Checked {
    let a = p.cx.device_id();
    let (reply, redirect) =
        authorize_scope(&p, &format!("openid {API_SCOPE} {DEVICE_SCOPE}{a}")).await?;
    authorize_proceeds(&reply, &redirect)
}

/// MSC2967: the unstable scopes (still sent by matrix-rust-sdk) are accepted.
pub(crate) async fn unstable_accepted(p: Probe) -> Checked {
    let a = p.cx.device_id();
    let (reply, redirect) =
        authorize_scope(&p, &format!("openid {UNSTABLE_API} {UNSTABLE_DEVICE}{a}")).await?;
    authorize_proceeds(&reply, &redirect)
}

/// MSC2967 at the device authorization endpoint: two devices are refused there too.
pub(crate) async fn device_endpoint_two_devices(p: Probe) -> Checked {
    let (a, b) = (p.cx.device_id(), p.cx.device_id());
    let (reply, _) = start(
        &p,
        &format!("openid {API_SCOPE} {DEVICE_SCOPE}{a} {DEVICE_SCOPE}{b}"),
    )
    .await?;
    oauth_error(&reply, &[400], &["invalid_scope"])
}

async fn matrix_user(p: &Probe) -> Result<&crate::context::Session, Stop> {
    p.cx.matrix_user()
        .await
        .map_err(|e| e.skip("a Matrix sign-in"))
}

/// MSC2967: a Matrix grant (API and device scopes) completes.
pub(crate) async fn matrix_sign_in(p: Probe) -> Checked {
    p.cx.matrix_user()
        .await
        .map(drop)
        .map_err(|e| e.judge("the Matrix sign-in"))
}

/// MSC2967 / RFC 6749 §5.1: the token response's `scope` lists the Matrix scopes granted.
pub(crate) async fn token_response_scope(p: Probe) -> Checked {
    let session = matrix_user(&p).await?;
    let device = session.device_id.clone().unwrap_or_default();
    let Some(scope) = session.tokens.get("scope").and_then(Value::as_str) else {
        return Err(fail("the token response has no `scope`"));
    };
    let granted: Vec<&str> = scope.split(' ').collect();
    let wanted = [API_SCOPE.to_owned(), format!("{DEVICE_SCOPE}{device}")];
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !granted.contains(&w.as_str()))
        .collect();
    ensure(missing.is_empty(), || {
        format!("`scope` is `{scope}`, lacking {missing:?}")
    })
}

/// MSC2964 (Matrix clients never ask for `offline_access`): a Matrix grant gets a refresh
/// token anyway.
pub(crate) async fn refresh_without_offline_access(p: Probe) -> Checked {
    let session = matrix_user(&p).await?;
    if session
        .tokens
        .get("refresh_token")
        .and_then(Value::as_str)
        .is_some()
    {
        Ok(())
    } else {
        Err(fail(
            "no refresh_token for a Matrix grant without offline_access",
        ))
    }
}

/// MSC2967 with Synapse: `urn:synapse:admin:*` only for users allowed to be admins: the suite's own fresh
/// account is refused it (an error, or a grant without it).
pub(crate) async fn admin_not_granted(p: Probe) -> Checked {
    if !p.cx.credentials()?.register {
        return Err(crate::checks::expect::skip(
            "the account was given (--username): it may be an admin",
        ));
    }
    let account = p.cx.account().await?;
    let client = public_client(&p).await?;
    let device = p.cx.device_id();
    let scope = format!("openid {API_SCOPE} urn:synapse:admin:* {DEVICE_SCOPE}{device}");
    let transcript = test_clients::transcript::Transcript::new();
    let (params, verifier) =
        p.cx.authorization_response(&transcript, &client, &scope, &[], &account)
            .await
            .map_err(|e| e.judge("the authorization request"))?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if get("error").is_some() {
        return Ok(());
    }
    let code =
        get("code").ok_or_else(|| fail("the authorization response has neither error nor code"))?;
    let code = crate::context::Code {
        code,
        verifier,
        client,
    };
    p.step("exchange the code");
    let reply = crate::checks::oauth2::token::exchange_with(&p, &code, &[]).await?;
    if reply.status != 200 {
        return Ok(());
    }
    let tokens = crate::checks::expect::json(&reply, "the exchange")?;
    let granted = tokens
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure(
        !granted.split(' ').any(|s| s == "urn:synapse:admin:*"),
        || format!("a fresh, non-admin account was granted `{granted}`"),
    )
}
