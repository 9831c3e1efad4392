//! The authorization endpoint before any sign-in (RFC 6749 §4.1.1, §4.1.2.1; RFC 7636; RFC 9700;
//! RFC 8252; RFC 9207): requests a registered client makes, judged by where the browser is sent.

use serde_json::Value;

use crate::checks::expect::{
    authorize_proceeds, authorize_refused, authorize_url, ensure, not_redirected_to, param,
    public_client, skip,
};
use crate::checks::oauth2::registration::{register, registered};
use crate::context::{native_client, Client, Probe};
use crate::{Checked, Stop};

/// A verifier-shaped value (RFC 7636 §4.1) for a `plain` challenge.
const PLAIN_CHALLENGE: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

const ATTACKER: &str = "https://attacker.example.net/callback";

/// RFC 7636 §4.4.1 with MSC2964 (S256 on every request): a request without a challenge is
/// refused with `invalid_request`.
pub(crate) async fn pkce_required(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let url = authorize_url(
        &p,
        &client,
        &[("code_challenge", None), ("code_challenge_method", None)],
    )?;
    let reply = p.get(&url).await?;
    authorize_refused(&reply, &client.redirect_uri, &["invalid_request"]).map(drop)
}

/// RFC 7636 §4.4.1, RFC 9700 §2.1.1: `plain` is refused with `invalid_request`.
pub(crate) async fn plain_refused(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let url = authorize_url(
        &p,
        &client,
        &[
            ("code_challenge", Some(PLAIN_CHALLENGE)),
            ("code_challenge_method", Some("plain")),
        ],
    )?;
    let reply = p.get(&url).await?;
    authorize_refused(&reply, &client.redirect_uri, &["invalid_request"]).map(drop)
}

/// RFC 6749 §4.1.2.1: an unknown client is never redirected to.
pub(crate) async fn unknown_client_not_redirected(p: Probe) -> Checked {
    p.cx.metadata()?;
    let fake = Client {
        client_id: format!("conformance-unknown-{}", p.cx.random(10)),
        secret: None,
        redirect_uri: ATTACKER.to_owned(),
    };
    let url = authorize_url(&p, &fake, &[])?;
    let reply = p.get(&url).await?;
    not_redirected_to(&reply, ATTACKER)
}

/// RFC 6749 §4.1.2.1, RFC 9700 §4.1.3: a redirect URI the client did not register is never
/// redirected to.
pub(crate) async fn unregistered_redirect_not_redirected(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let url = authorize_url(&p, &client, &[("redirect_uri", Some(ATTACKER))])?;
    let reply = p.get(&url).await?;
    not_redirected_to(&reply, ATTACKER)
}

/// RFC 9700 §2.1 (exact string matching): a longer path than the registered one is not a match.
pub(crate) async fn redirect_exact_match(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let longer = format!("{}/extra", client.redirect_uri);
    let url = authorize_url(&p, &client, &[("redirect_uri", Some(&longer))])?;
    let reply = p.get(&url).await?;
    not_redirected_to(&reply, &longer)
}

/// RFC 8252 §7.3: loopback redirect URIs (`127.0.0.1`, `[::1]`, `localhost`) are accepted
/// on any port.
pub(crate) async fn loopback_any_port(p: Probe) -> Checked {
    const LOOPBACKS: [&str; 3] = [
        "http://127.0.0.1/callback",
        "http://[::1]/callback",
        "http://localhost/callback",
    ];
    p.step("register a native client with the three loopback forms");
    let reply = register(&p, &native_client(&LOOPBACKS)).await?;
    let client_id = registered(&reply).map_err(|e| match e {
        Stop::Fail { reason, .. } => skip(format!("could not register the client: {reason}")),
        other => other,
    })?["client_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for registered_uri in LOOPBACKS {
        let with_port = registered_uri.replacen("/callback", ":51234/callback", 1);
        let client = Client {
            client_id: client_id.clone(),
            secret: None,
            redirect_uri: with_port.clone(),
        };
        p.step(&format!("authorize with {with_port}"));
        let url = authorize_url(&p, &client, &[])?;
        let reply = p.get(&url).await?;
        authorize_proceeds(&reply, &with_port).map_err(|e| match e {
            Stop::Fail { reason, evidence } => Stop::Fail {
                reason: format!("{with_port}: {reason}"),
                evidence,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// RFC 6749 §4.1.2.1: `response_type=token` from a client registered for `code` only is
/// refused (`unsupported_response_type`; `unauthorized_client` also says it).
pub(crate) async fn response_type_token_refused(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let url = authorize_url(&p, &client, &[("response_type", Some("token"))])?;
    let reply = p.get(&url).await?;
    authorize_refused(
        &reply,
        &client.redirect_uri,
        &["unsupported_response_type", "unauthorized_client"],
    )
    .map(drop)
}

/// RFC 6749 §4.1.2.1: a request without `response_type` is refused.
pub(crate) async fn response_type_required(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let url = authorize_url(&p, &client, &[("response_type", None)])?;
    let reply = p.get(&url).await?;
    authorize_refused(
        &reply,
        &client.redirect_uri,
        &["invalid_request", "unsupported_response_type"],
    )
    .map(drop)
}

/// RFC 6749 §3.1 / §4.1.2.1: a parameter sent twice is `invalid_request`.
pub(crate) async fn repeated_parameter_refused(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let mut url = authorize_url(&p, &client, &[])?;
    url.query_pairs_mut().append_pair("scope", "openid profile");
    let reply = p.get(&url).await?;
    authorize_refused(&reply, &client.redirect_uri, &["invalid_request"]).map(drop)
}

/// RFC 6749 §4.1.2.1: an error response carries the request's `state`, unchanged.
pub(crate) async fn state_echoed(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let state = "st ate/+ü&=?#x";
    let url = authorize_url(
        &p,
        &client,
        &[
            ("state", Some(state)),
            ("code_challenge_method", Some("plain")),
        ],
    )?;
    let reply = p.get(&url).await?;
    let params = authorize_refused(
        &reply,
        &client.redirect_uri,
        &["invalid_request"],
    )
    .map_err(|_| skip("the error response (to a plain PKCE request) needed here was not given; see oauth2.authorize.plain_refused"))?;
    ensure(param(&params, "state") == Some(state), || {
        format!(
            "`state` came back as {:?}, sent {state:?}",
            param(&params, "state")
        )
    })
}

/// RFC 9207 §2: when `authorization_response_iss_parameter_supported` is true, authorization
/// responses (errors included) carry `iss`, identical to the issuer.
pub(crate) async fn iss_parameter(p: Probe) -> Checked {
    let doc = p.cx.metadata()?;
    if doc.get("authorization_response_iss_parameter_supported") != Some(&Value::Bool(true)) {
        return Err(skip(
            "authorization_response_iss_parameter_supported is not true",
        ));
    }
    let issuer = doc
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let client = public_client(&p).await?;
    let url = authorize_url(&p, &client, &[("code_challenge_method", Some("plain"))])?;
    let reply = p.get(&url).await?;
    let params =
        authorize_refused(&reply, &client.redirect_uri, &["invalid_request"]).map_err(|_| {
            skip("the error response needed here was not given; see oauth2.authorize.plain_refused")
        })?;
    ensure(param(&params, "iss") == Some(issuer), || {
        format!(
            "`iss` is {:?}, expected the issuer `{issuer}`",
            param(&params, "iss")
        )
    })
}
