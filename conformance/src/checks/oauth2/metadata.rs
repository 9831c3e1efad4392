//! Authorization server metadata (RFC 8414), as fetched at the start of the run.

use serde_json::Value;
use url::Url;

use crate::checks::expect::{ensure, header, is_loopback, json, short};
use crate::context::{list_has, oauth_authorization_server_url, Probe, Stop, DEVICE_GRANT};
use crate::Checked;

/// A failure about the metadata document: its exchange is the evidence.
pub(crate) fn metadata_fail(p: &Probe, reason: impl Into<String>) -> Stop {
    Stop::Fail {
        reason: reason.into(),
        evidence: p.cx.discovery.evidence.clone(),
    }
}

/// Runs `judge` on the metadata document; its failures carry the document as evidence.
pub(crate) fn judge_metadata(
    p: &Probe,
    judge: impl FnOnce(&Value) -> Result<(), String>,
) -> Checked {
    let doc = p.cx.metadata()?;
    judge(doc).map_err(|reason| metadata_fail(p, reason))
}

pub(crate) fn string_member(doc: &Value, member: &str) -> Result<(), String> {
    match doc.get(member) {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(other) => Err(format!("`{member}` is {other}, not a non-empty string")),
        None => Err(format!("`{member}` is missing")),
    }
}

pub(crate) fn contains_all(doc: &Value, member: &str, wanted: &[&str]) -> Result<(), String> {
    let Some(list) = doc.get(member).and_then(Value::as_array) else {
        return Err(format!("`{member}` is missing or not an array"));
    };
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !list.iter().any(|v| v == w))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("`{member}` lacks {}", missing.join(", ")))
    }
}

/// The issuer in the document equals the one the suite was given. A host-only issuer may be
/// written with or without its trailing `/` on the command line (URLs can't tell them apart);
/// anything else must be identical, character for character.
pub(crate) fn issuer_is_expected(doc: &Value, expected: &Url) -> Result<(), String> {
    let Some(issuer) = doc.get("issuer").and_then(Value::as_str) else {
        return Err("`issuer` is missing".into());
    };
    let given = expected.as_str();
    let host_only = expected.path() == "/" && given.ends_with('/');
    if issuer == given || (host_only && issuer == given.trim_end_matches('/')) {
        Ok(())
    } else {
        Err(format!(
            "`issuer` is `{issuer}`, expected exactly `{given}` (the URL the metadata was fetched for)"
        ))
    }
}

/// RFC 8414 §3.2: a 200 answer with a JSON object.
pub(crate) async fn reachable(p: Probe) -> Checked {
    let d = &p.cx.discovery;
    match &d.metadata {
        Some(_) => Ok(()),
        // Still 429 beyond the suite's bounds: nothing to judge (RFC 6585 §4).
        None if d.rate_limited => Err(Stop::skip(d.error.clone().unwrap_or_default())),
        None => Err(metadata_fail(
            &p,
            format!(
                "GET {}: {}",
                d.url,
                d.error.as_deref().unwrap_or("no document")
            ),
        )),
    }
}

/// RFC 8414 §3.2: "using the application/json media type".
pub(crate) async fn content_type(p: Probe) -> Checked {
    p.cx.metadata()?;
    let reply =
        p.cx.discovery
            .reply
            .as_ref()
            .ok_or_else(|| Stop::skip("no answer"))?;
    let ct = header(reply, "content-type").unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(metadata_fail(
            &p,
            format!("Content-Type is `{ct}`, not application/json"),
        ))
    }
}

/// RFC 8414 §3.3: the `issuer` is identical to the issuer the metadata was fetched for.
pub(crate) async fn issuer_matches(p: Probe) -> Checked {
    let expected = p.cx.options.issuer.clone();
    judge_metadata(&p, |doc| issuer_is_expected(doc, &expected))
}

/// RFC 8414 §2: the issuer is an https URL without query or fragment.
pub(crate) async fn issuer_https(p: Probe) -> Checked {
    let doc = p.cx.metadata()?;
    let Some(raw) = doc.get("issuer").and_then(Value::as_str) else {
        return Err(metadata_fail(&p, "`issuer` is missing"));
    };
    let url = Url::parse(raw)
        .map_err(|e| metadata_fail(&p, format!("`issuer` `{raw}` is not a URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() || raw.contains(['?', '#']) {
        return Err(metadata_fail(
            &p,
            format!("`issuer` `{raw}` has a query or fragment"),
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => {
            p.note("http issuer accepted: it is on the loopback interface (a test deployment)");
            Ok(())
        }
        other => Err(metadata_fail(
            &p,
            format!("`issuer` uses the `{other}` scheme, not https"),
        )),
    }
}

/// RFC 6749 §3.1, §3.2 (TLS MUST be used): every advertised endpoint and URI is https.
pub(crate) async fn endpoints_tls(p: Probe) -> Checked {
    let doc = p.cx.metadata()?;
    let Some(members) = doc.as_object() else {
        return Err(Stop::skip("the metadata is not an object"));
    };
    let mut bad = Vec::new();
    let mut loopback = Vec::new();
    for (name, value) in members {
        if !(name.ends_with("_endpoint") || name.ends_with("_uri")) {
            continue;
        }
        let Some(raw) = value.as_str() else {
            bad.push(format!("`{name}` is not a string"));
            continue;
        };
        match Url::parse(raw) {
            Err(e) => bad.push(format!("`{name}` `{raw}` is not an absolute URL: {e}")),
            Ok(url) if url.scheme() == "https" => {}
            Ok(url) if url.scheme() == "http" && is_loopback(&url) => loopback.push(name.clone()),
            Ok(url) => bad.push(format!("`{name}` uses `{}`, not https", url.scheme())),
        }
    }
    if !loopback.is_empty() {
        p.note(format!(
            "http accepted on the loopback interface for {}",
            loopback.join(", ")
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(metadata_fail(&p, bad.join("; ")))
    }
}

/// RFC 8414 §2: `authorization_endpoint` REQUIRED (the code grant is offered).
pub(crate) async fn authorization_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "authorization_endpoint"))
}

/// RFC 8414 §2: `token_endpoint` REQUIRED unless only the implicit grant is supported.
pub(crate) async fn token_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "token_endpoint"))
}

/// RFC 8414 §2: `response_types_supported` REQUIRED.
pub(crate) async fn response_types_supported(p: Probe) -> Checked {
    judge_metadata(&p, |doc| match doc.get("response_types_supported") {
        Some(Value::Array(list)) if !list.is_empty() && list.iter().all(Value::is_string) => Ok(()),
        Some(other) => Err(format!(
            "`response_types_supported` is {other}, not a non-empty array of strings"
        )),
        None => Err("`response_types_supported` is missing".into()),
    })
}

/// RFC 9700 §2.1.1 (PKCE MUST be supported) / RFC 8414 §2 (omitted means no PKCE).
pub(crate) async fn s256(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        contains_all(doc, "code_challenge_methods_supported", &["S256"])
    })
}

/// RFC 9700 §2.1.1: the `plain` method exposes the verifier; Matrix clients use S256 only
/// (MSC2964).
pub(crate) async fn no_plain(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        if list_has(doc, "code_challenge_methods_supported", "plain") {
            Err("`code_challenge_methods_supported` offers `plain`".into())
        } else {
            Ok(())
        }
    })
}

/// RFC 8414 §3 (and §5 on `openid-configuration`): the metadata under
/// `/.well-known/oauth-authorization-server`, with the same issuer.
pub(crate) async fn oauth_well_known(p: Probe) -> Checked {
    let doc = p.cx.metadata()?;
    let url = oauth_authorization_server_url(&p.cx.options.issuer);
    let reply = p.get(&url).await?;
    ensure(reply.status == 200, || {
        format!(
            "GET {url} answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    let other = json(&reply, "the RFC 8414 metadata")?;
    ensure(other.get("issuer") == doc.get("issuer"), || {
        format!(
            "its issuer {} differs from the OpenID configuration's {}",
            other.get("issuer").unwrap_or(&Value::Null),
            doc.get("issuer").unwrap_or(&Value::Null)
        )
    })
}

/// RFC 8414 §2 / RFC 8628 §4: the advertised grant types have their endpoints.
pub(crate) async fn grant_types_consistent(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        let Some(grants) = doc.get("grant_types_supported") else {
            return Ok(());
        };
        let Some(grants) = grants.as_array() else {
            return Err("`grant_types_supported` is not an array".into());
        };
        let has = |g: &str| grants.iter().any(|v| v == g);
        let mut missing = Vec::new();
        if has(DEVICE_GRANT) && doc.get("device_authorization_endpoint").is_none() {
            missing.push("the device code grant without a device_authorization_endpoint");
        }
        if has("authorization_code") && doc.get("authorization_endpoint").is_none() {
            missing.push("the authorization code grant without an authorization_endpoint");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("advertises {}", missing.join(" and ")))
        }
    })
}
