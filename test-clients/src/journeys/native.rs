//! The OAuth 2.0-native client (MSC3861 family: MSC2964, MSC2965, MSC2966, MSC2967, MSC4254).

use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::{expect_unknown_token, random_device_id, required_str, whoami, Checks, SharedRng};
use crate::{
    discovery::{self, Via},
    http::Http,
    oauth::{self, AuthRequest, DEFAULT_CLIENT_URI, LOOPBACK_REDIRECT},
    pages::{self, Account},
    pkce::PkcePair,
    transcript::Transcript,
    Error,
};

/// Where the provider sends the browser after an RP-initiated logout (registered as a loopback
/// `post_logout_redirect_uris` entry, MSC2966).
pub const POST_LOGOUT_REDIRECT: &str = "http://127.0.0.1/logged-out";

/// What the OIDC-native journey needs.
#[derive(Debug, Clone)]
pub struct NativeOptions {
    /// The homeserver's base URL (discovery starts there).
    pub homeserver: Url,
    /// Who signs in, or registers (`prompt=create`).
    pub account: Account,
    /// The device ID to ask for (MSC2967); ten random upper-case letters when `None`.
    pub device_id: Option<String>,
    /// The registered `client_uri` (MSC2966: https).
    pub client_uri: Url,
    pub client_name: String,
    pub rng: SharedRng,
}

impl NativeOptions {
    pub fn new(homeserver: Url, account: Account, rng: SharedRng) -> Self {
        Self {
            homeserver,
            account,
            device_id: None,
            client_uri: Url::parse(DEFAULT_CLIENT_URI).expect("a valid default client_uri"),
            client_name: "test-clients oidc-native".to_owned(),
            rng,
        }
    }
}

/// What the OIDC-native journey did.
#[derive(Debug, Clone, Serialize)]
pub struct NativeReport {
    pub user_id: String,
    /// The device of the first session (the one chosen or drawn).
    pub device_id: String,
    pub client_id: String,
    pub issuer: String,
    pub discovered_via: Via,
    /// Whether the RP-initiated logout was run (the metadata had an `end_session_endpoint`).
    pub logged_out: bool,
    /// The checks that passed, in order.
    pub checks: Vec<String>,
}

/// One session's tokens.
struct Session {
    access: String,
    refresh: String,
    id_token: Option<String>,
}

fn session(tokens: &Value, what: &str) -> Result<Session, Error> {
    Ok(Session {
        access: required_str(tokens, "access_token", what)?,
        // MSC2964: Matrix clients get a refresh token on every grant (no offline_access).
        refresh: required_str(tokens, "refresh_token", what).map_err(|e| {
            Error::Protocol(format!(
                "{e} (MSC2964: refresh tokens are issued to Matrix clients)"
            ))
        })?,
        id_token: tokens["id_token"].as_str().map(str::to_owned),
    })
}

/// Discovery → registration → code flow with PKCE and a device scope → token exchange →
/// whoami → refresh → whoami → revocation → the token is refused; then, when the provider has
/// an `end_session_endpoint`, a second sign-in in the same browser → RP-initiated logout → that
/// session's token is refused.
pub async fn oidc_native(
    opts: &NativeOptions,
    transcript: &Transcript,
) -> Result<NativeReport, Error> {
    let http = Http::new(transcript.clone());
    let browser = Http::browser(transcript.clone());
    let mut checks = Checks::new(transcript);
    let hs = &opts.homeserver;

    // MSC2965 / Matrix spec v1.15 §"OAuth 2.0 API": discovery through the homeserver.
    let discovered = discovery::from_homeserver(&http, hs).await?;
    let metadata = &discovered.metadata;
    let issuer = metadata["issuer"].as_str().unwrap_or_default().to_owned();
    checks.pass(format!(
        "discovered the issuer {issuer} via {}",
        discovered.via
    ));
    if opts.account.is_register() {
        // Initiating User Registration via OIDC 1.0 §4: `create` must be advertised.
        let offered = metadata["prompt_values_supported"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("create")));
        if !offered {
            return Err(Error::protocol(
                "registration was asked for, but the metadata's prompt_values_supported lacks `create` (Initiating User Registration via OIDC 1.0 §4)",
            ));
        }
    }

    // RFC 7591 §3.1, MSC2966: a public native client, loopback redirect without a port, an
    // https client_uri, and a loopback post-logout redirect.
    transcript.note("client registration (RFC 7591 §3.1, MSC2966): a public native client");
    let mut client = oauth::native_client(&opts.client_name, opts.client_uri.as_str());
    client["post_logout_redirect_uris"] = json!([POST_LOGOUT_REDIRECT]);
    let registered = oauth::register(&http, metadata, &client).await?;
    let client_id = required_str(&registered, "client_id", "the registration response")?;
    checks.pass(format!("registered the native client {client_id} (201)"));

    // RFC 6749 §4.1.1 + RFC 7636 §4.3 (S256, MSC2964) + MSC2967 scopes; `prompt=create` to
    // register (Initiating User Registration via OIDC 1.0).
    let (device_id, state, pkce) = opts.rng.with(|rng| {
        (
            opts.device_id
                .clone()
                .unwrap_or_else(|| random_device_id(rng)),
            oauth::random_state(rng),
            PkcePair::generate(rng),
        )
    });
    let scope = device_scope(&device_id);
    transcript.note(format!(
        "authorization request (RFC 6749 §4.1.1, RFC 7636 S256, MSC2967) for device {device_id}, through the provider's pages"
    ));
    let extra: &[(&str, &str)] = if opts.account.is_register() {
        &[("prompt", "create")]
    } else {
        &[]
    };
    let code = oauth::authorize(
        &browser,
        metadata,
        &AuthRequest {
            client_id: &client_id,
            redirect_uri: LOOPBACK_REDIRECT,
            scope: &scope,
            state: &state,
            challenge: &pkce.challenge,
            extra,
        },
        &opts.account,
    )
    .await?;
    checks.pass("the authorization response carries the state sent and the issuer (RFC 6749 §4.1.2, RFC 9207)");

    // RFC 6749 §4.1.3, RFC 7636 §4.5.
    transcript.note("token exchange (RFC 6749 §4.1.3, RFC 7636 §4.5)");
    let tokens = oauth::exchange_code(
        &http,
        metadata,
        &client_id,
        &code,
        LOOPBACK_REDIRECT,
        &pkce.verifier,
    )
    .await?;
    let first = session(&tokens, "the token response")?;
    if first.id_token.is_none() {
        // OIDC Core §3.1.3.3: `openid` was asked for.
        return Err(Error::protocol(
            "the token response has no id_token, though `openid` was in the scope (OIDC Core §3.1.3.3)",
        ));
    }
    checks
        .pass("token exchange: access, refresh and ID tokens (RFC 6749 §5.1, OIDC Core §3.1.3.3)");

    // MSC2967: the homeserver serves the token as the user, on the device of the scope.
    transcript.note("whoami on the homeserver (the homeserver introspects the token, MSC3861)");
    let me = whoami(&http, hs, &first.access, "with the access token").await?;
    expect_device(&me, &device_id)?;
    checks.pass(format!(
        "whoami: {} on device {device_id} (MSC2967)",
        me.user_id
    ));
    let user_id = me.user_id;

    // RFC 6749 §6; MSC2964: refresh tokens rotate.
    transcript.note("refresh (RFC 6749 §6)");
    let refreshed = oauth::refresh(&http, metadata, &client_id, &first.refresh).await?;
    let second = session(&refreshed, "the refresh response")?;
    if second.access == first.access || second.refresh == first.refresh {
        return Err(Error::protocol(
            "the refresh returned the same access or refresh token (MSC2964: tokens rotate on refresh)",
        ));
    }
    checks.pass("refresh: a new access token and a new refresh token (MSC2964 rotation)");
    transcript.note("whoami with the refreshed access token");
    let me = whoami(&http, hs, &second.access, "with the refreshed access token").await?;
    expect_device(&me, &device_id)?;
    checks.pass("whoami with the refreshed token: the same user and device");

    // RFC 7009 §2.1; MSC4254: revoking the access token ends the session (refresh token and
    // device too), at once on the homeserver.
    transcript.note("revocation of the access token (RFC 7009 §2.1, MSC4254)");
    oauth::revoke_hinted(
        &http,
        metadata,
        &client_id,
        &second.access,
        Some("access_token"),
    )
    .await?;
    transcript.note("the revoked token must be refused by the homeserver");
    expect_unknown_token(&http, hs, &second.access, "with the revoked access token").await?;
    checks.pass("after revocation, whoami answers 401 M_UNKNOWN_TOKEN");
    transcript.note("the session's refresh token must be dead too (MSC4254)");
    expect_invalid_grant(&http, metadata, &client_id, &second.refresh).await?;
    checks.pass("after revocation, the refresh token is refused (400 invalid_grant)");

    // RP-Initiated Logout 1.0: a second session from the same browser session, then the logout
    // ends it.
    let logged_out = match metadata["end_session_endpoint"].as_str() {
        Some(end_session) => {
            let end_session = Url::parse(end_session).map_err(|e| {
                Error::Protocol(format!("the end_session_endpoint is not a URL: {e}"))
            })?;
            rp_initiated_logout(
                opts,
                &http,
                &browser,
                metadata,
                &client_id,
                &end_session,
                &mut checks,
            )
            .await?;
            true
        }
        None => {
            transcript.note("no end_session_endpoint in the metadata: RP-initiated logout skipped");
            false
        }
    };

    Ok(NativeReport {
        user_id,
        device_id,
        client_id,
        issuer,
        discovered_via: discovered.via,
        logged_out,
        checks: checks.into_vec(),
    })
}

fn device_scope(device_id: &str) -> String {
    format!("openid urn:matrix:client:api:* urn:matrix:client:device:{device_id}")
}

fn expect_device(me: &super::Whoami, device_id: &str) -> Result<(), Error> {
    if me.device_id.as_deref() == Some(device_id) {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "whoami names the device {:?}, not {device_id} of the device scope (MSC2967)",
            me.device_id
        )))
    }
}

/// A refresh with this token must fail with 400 `invalid_grant` (RFC 6749 §5.2).
async fn expect_invalid_grant(
    http: &Http,
    metadata: &Value,
    client_id: &str,
    refresh_token: &str,
) -> Result<(), Error> {
    let url = oauth::endpoint(metadata, "token_endpoint")?;
    let reply = http
        .post_form(
            url.as_str(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
            None,
        )
        .await?
        .expect("refresh with a dead refresh token (RFC 6749 §5.2)", 400)?;
    let body = reply.json()?;
    if body["error"] == "invalid_grant" {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "refresh with a dead refresh token: the error is {}, not invalid_grant (RFC 6749 §5.2)",
            body["error"]
        )))
    }
}

/// A second sign-in in the signed-in browser, then RP-Initiated Logout 1.0 §2 with
/// `id_token_hint`, `post_logout_redirect_uri` and `state`, through the confirmation page, until
/// the browser is sent back (§3); the session's token must then be refused.
async fn rp_initiated_logout(
    opts: &NativeOptions,
    http: &Http,
    browser: &Http,
    metadata: &Value,
    client_id: &str,
    end_session: &Url,
    checks: &mut Checks,
) -> Result<(), Error> {
    let transcript = http.transcript();
    let hs = &opts.homeserver;
    let (device_id, state, pkce, logout_state) = opts.rng.with(|rng| {
        (
            random_device_id(rng),
            oauth::random_state(rng),
            PkcePair::generate(rng),
            oauth::random_state(rng),
        )
    });
    transcript.note(format!(
        "a second sign-in from the same browser session, device {device_id} (RFC 6749 §4.1)"
    ));
    let scope = device_scope(&device_id);
    let code = oauth::authorize(
        browser,
        metadata,
        &AuthRequest {
            client_id,
            redirect_uri: LOOPBACK_REDIRECT,
            scope: &scope,
            state: &state,
            challenge: &pkce.challenge,
            extra: &[],
        },
        &opts.account.to_sign_in(),
    )
    .await?;
    transcript.note("token exchange (RFC 6749 §4.1.3)");
    let tokens = oauth::exchange_code(
        http,
        metadata,
        client_id,
        &code,
        LOOPBACK_REDIRECT,
        &pkce.verifier,
    )
    .await?;
    let session = session(&tokens, "the token response")?;
    let id_token = session.id_token.clone().ok_or_else(|| {
        Error::protocol(
            "the token response has no id_token, though `openid` was in the scope (OIDC Core §3.1.3.3)",
        )
    })?;
    let me = whoami(http, hs, &session.access, "with the second session's token").await?;
    expect_device(&me, &device_id)?;
    checks.pass(format!("second session: whoami on device {device_id}"));

    transcript.note("RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2)");
    let mut logout = end_session.clone();
    logout
        .query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("client_id", client_id)
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_REDIRECT)
        .append_pair("state", &logout_state);
    let back = pages::walk(
        browser,
        &logout,
        POST_LOGOUT_REDIRECT,
        &opts.account.to_sign_in(),
    )
    .await?;
    // RP-Initiated Logout 1.0 §3: `state` comes back with the redirect.
    let echoed = back
        .query_pairs()
        .find(|(n, _)| n == "state")
        .map(|(_, v)| v.into_owned());
    if echoed.as_deref() != Some(logout_state.as_str()) {
        return Err(Error::Protocol(format!(
            "the post-logout redirect carries the state {echoed:?}, not the one sent (RP-Initiated Logout 1.0 §3)"
        )));
    }
    checks.pass("RP-initiated logout: back at the post_logout_redirect_uri with the state");
    transcript.note("the logged-out session's token must be refused by the homeserver");
    expect_unknown_token(http, hs, &session.access, "after the logout").await?;
    checks.pass("after the logout, whoami answers 401 M_UNKNOWN_TOKEN");
    Ok(())
}
