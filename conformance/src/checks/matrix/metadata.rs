//! The metadata Matrix clients read (MSC2965; matrix-rust-sdk refuses a document lacking any
//! of the required members), account management (MSC4191) and the device grant (MSC4341).

use serde_json::Value;

use crate::checks::oauth2::metadata::{
    contains_all, issuer_is_expected, judge_metadata, string_member,
};
use crate::context::{list_has, Probe, DEVICE_GRANT};
use crate::Checked;

/// MSC2965: the issuer equals the one the client was told (compared exactly).
pub(crate) async fn issuer(p: Probe) -> Checked {
    let expected = p.cx.options.issuer.clone();
    judge_metadata(&p, |doc| issuer_is_expected(doc, &expected))
}

pub(crate) async fn authorization_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "authorization_endpoint"))
}

pub(crate) async fn token_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "token_endpoint"))
}

pub(crate) async fn revocation_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "revocation_endpoint"))
}

pub(crate) async fn registration_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "registration_endpoint"))
}

pub(crate) async fn response_types(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        contains_all(doc, "response_types_supported", &["code"])
    })
}

pub(crate) async fn grant_types(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        contains_all(
            doc,
            "grant_types_supported",
            &["authorization_code", "refresh_token"],
        )
    })
}

pub(crate) async fn response_modes(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        contains_all(doc, "response_modes_supported", &["query", "fragment"])
    })
}

pub(crate) async fn s256(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        contains_all(doc, "code_challenge_methods_supported", &["S256"])
    })
}

/// MSC2965 / Initiating User Registration via OIDC 1.0 §4: `prompt_values_supported` holds
/// `create` (clients offer "Create account").
pub(crate) async fn prompt_create(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        if list_has(doc, "prompt_values_supported", "create") {
            Ok(())
        } else {
            Err("`prompt_values_supported` lacks `create`".into())
        }
    })
}

/// MSC4191: `account_management_uri`, an https (or loopback) URL.
pub(crate) async fn account_management_uri(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        string_member(doc, "account_management_uri")?;
        let raw = doc["account_management_uri"].as_str().unwrap_or_default();
        url::Url::parse(raw)
            .map(drop)
            .map_err(|e| format!("`account_management_uri` `{raw}` is not a URL: {e}"))
    })
}

/// The actions of MSC4191 (stable names, and the older unstable ones).
const ACTIONS: &[&str] = &[
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.account_deactivate",
    "org.matrix.cross_signing_reset",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
];

/// MSC4191: `account_management_actions_supported` lists known actions.
pub(crate) async fn account_management_actions(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        let Some(list) = doc
            .get("account_management_actions_supported")
            .and_then(Value::as_array)
        else {
            return Err("`account_management_actions_supported` is missing or not an array".into());
        };
        let unknown: Vec<String> = list
            .iter()
            .filter(|a| !a.as_str().is_some_and(|a| ACTIONS.contains(&a)))
            .map(ToString::to_string)
            .collect();
        if list.is_empty() {
            Err("`account_management_actions_supported` is empty".into())
        } else if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown actions: {}", unknown.join(", ")))
        }
    })
}

/// MSC4341: the device authorization grant is advertised, with its endpoint.
pub(crate) async fn device_grant(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        contains_all(doc, "grant_types_supported", &[DEVICE_GRANT])?;
        string_member(doc, "device_authorization_endpoint")
    })
}

/// MSC4191: each advertised action is served at `account_management_uri?action=…` (a page, or
/// a redirect to sign in; never an error).
pub(crate) async fn account_actions_served(p: Probe) -> Checked {
    let base = p.cx.endpoint("account_management_uri")?;
    let doc = p.cx.metadata()?;
    let actions: Vec<String> = doc
        .get("account_management_actions_supported")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if actions.is_empty() {
        return Err(crate::Stop::skip("no account_management_actions_supported"));
    }
    let device_id = p.cx.device_id();
    let mut refused = Vec::new();
    for action in &actions {
        let mut url = base.clone();
        url.query_pairs_mut().append_pair("action", action);
        if action.contains("device") || action.contains("session_") {
            url.query_pairs_mut().append_pair("device_id", &device_id);
        }
        let reply = p.get(&url).await?;
        if reply.status >= 400 {
            refused.push(format!("{action}: HTTP {}", reply.status));
        }
    }
    crate::checks::expect::ensure(refused.is_empty(), || refused.join("; "))
}

/// Initiating User Registration via OIDC 1.0: when `create` is advertised, `prompt=create` is
/// accepted at the authorization endpoint.
pub(crate) async fn prompt_create_accepted(p: Probe) -> Checked {
    let doc = p.cx.metadata()?;
    if !list_has(doc, "prompt_values_supported", "create") {
        return Err(crate::Stop::skip("prompt_values_supported lacks create"));
    }
    let client = crate::checks::expect::public_client(&p).await?;
    let url = crate::checks::expect::authorize_url(&p, &client, &[("prompt", Some("create"))])?;
    let reply = p.get(&url).await?;
    crate::checks::expect::authorize_proceeds(&reply, &client.redirect_uri)
}
