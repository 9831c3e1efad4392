//! The device authorization grant (RFC 8628, MSC4341): a device without a browser (a TV, a CLI)
//! shows a code; a person approves it elsewhere; the device polls for its tokens.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::{random_device_id, required_str, whoami, Checks, SharedRng};
use crate::{
    discovery,
    http::Http,
    oauth::{self, DEFAULT_CLIENT_URI},
    pages::{self, Account},
    transcript::Transcript,
    Error,
};

/// The grant type of the device flow (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 8628 §3.2: the polling interval when the server names none.
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 §3.5: how much `slow_down` adds to the interval.
const SLOW_DOWN_STEP: u64 = 5;

type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How the journey waits between polls: `tokio::time::sleep` by default. Tests whose provider
/// runs on a mock clock pass one that moves that clock instead, so the server still sees every
/// interval pass.
#[derive(Clone)]
pub struct Sleeper(Arc<dyn Fn(Duration) -> SleepFuture + Send + Sync>);

impl std::fmt::Debug for Sleeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sleeper")
    }
}

impl Default for Sleeper {
    fn default() -> Self {
        Self::new(tokio::time::sleep)
    }
}

impl Sleeper {
    pub fn new<F, Fut>(sleep: F) -> Self
    where
        F: Fn(Duration) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self(Arc::new(move |duration| Box::pin(sleep(duration))))
    }

    pub async fn sleep(&self, duration: Duration) {
        (self.0)(duration).await;
    }
}

/// What the device journey needs.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    pub homeserver: Url,
    /// Who approves the request in a browser; `None`: someone else does, with the code shown
    /// in the transcript, while the journey polls.
    pub account: Option<Account>,
    /// The device ID to ask for (MSC2967); ten random upper-case letters when `None`.
    pub device_id: Option<String>,
    pub client_uri: Url,
    pub client_name: String,
    pub rng: SharedRng,
    pub sleep: Sleeper,
}

impl DeviceOptions {
    pub fn new(homeserver: Url, account: Option<Account>, rng: SharedRng) -> Self {
        Self {
            homeserver,
            account,
            device_id: None,
            client_uri: Url::parse(DEFAULT_CLIENT_URI).expect("a valid default client_uri"),
            client_name: "test-clients device".to_owned(),
            rng,
            sleep: Sleeper::default(),
        }
    }
}

/// What the device journey did.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub user_id: String,
    pub device_id: String,
    pub client_id: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    /// Whether the journey approved the request itself (credentials were given).
    pub approved_here: bool,
    /// Token requests made, the first one included.
    pub polls: u32,
    pub checks: Vec<String>,
}

/// How one poll ended.
enum Poll {
    Tokens(Value),
    Pending,
    SlowDown,
}

async fn poll(
    http: &Http,
    token_endpoint: &Url,
    client_id: &str,
    device_code: &str,
) -> Result<Poll, Error> {
    // RFC 8628 §3.4.
    let reply = http
        .post_form(
            token_endpoint.as_str(),
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
            None,
        )
        .await?;
    if reply.status == 200 {
        return oauth::check_token_response(reply, "device token request (RFC 8628 §3.5)")
            .map(Poll::Tokens);
    }
    let reply = reply.expect("device token request (RFC 8628 §3.5): 200 or 400", 400)?;
    let body = reply.json()?;
    // RFC 8628 §3.5.
    match body["error"].as_str() {
        Some("authorization_pending") => Ok(Poll::Pending),
        Some("slow_down") => Ok(Poll::SlowDown),
        Some("access_denied") => Err(Error::protocol(
            "the request was denied (access_denied, RFC 8628 §3.5)",
        )),
        Some("expired_token") => Err(Error::protocol(
            "the device code expired before it was approved (expired_token, RFC 8628 §3.5)",
        )),
        _ => Err(Error::Protocol(format!(
            "device token request: unexpected error {} (RFC 8628 §3.5)",
            body["error"]
        ))),
    }
}

/// Discovery → registration of a device-flow client → device authorization request (the user
/// code is noted) → first poll (`authorization_pending`) → approval in a browser when
/// credentials were given → polling at the server's `interval` (honouring `slow_down`) → tokens
/// → whoami on the device.
pub async fn device(opts: &DeviceOptions, transcript: &Transcript) -> Result<DeviceReport, Error> {
    let http = Http::new(transcript.clone());
    let mut checks = Checks::new(transcript);
    let hs = &opts.homeserver;

    let discovered = discovery::from_homeserver(&http, hs).await?;
    let metadata = &discovered.metadata;
    checks.pass(format!(
        "discovered the issuer {} via {}",
        discovered.issuer, discovered.via
    ));
    // RFC 8628 §4; MSC4341: the endpoint and the grant are advertised.
    let device_endpoint = oauth::endpoint(metadata, "device_authorization_endpoint")
        .map_err(|e| Error::Protocol(format!("{e} (RFC 8628 §4, MSC4341)")))?;
    let advertised = metadata["grant_types_supported"]
        .as_array()
        .is_some_and(|g| g.contains(&json!(DEVICE_CODE_GRANT)));
    if !advertised {
        return Err(Error::Protocol(format!(
            "grant_types_supported lacks {DEVICE_CODE_GRANT} (RFC 8628 §4, MSC4341)"
        )));
    }
    let token_endpoint = oauth::endpoint(metadata, "token_endpoint")?;

    // RFC 7591, MSC2966: a device-flow-only public client: no redirect URIs, no response types.
    transcript.note("client registration (RFC 7591 §3.1, MSC2966): a device-flow client");
    let registered = oauth::register(
        &http,
        metadata,
        &json!({
            "client_name": opts.client_name,
            "client_uri": opts.client_uri.as_str(),
            "application_type": "native",
            "grant_types": [DEVICE_CODE_GRANT, "refresh_token"],
            "response_types": [],
            "token_endpoint_auth_method": "none",
        }),
    )
    .await?;
    let client_id = required_str(&registered, "client_id", "the registration response")?;
    checks.pass(format!(
        "registered the device-flow client {client_id} (201)"
    ));

    // RFC 8628 §3.1 with the MSC2967 scopes.
    let device_id = match &opts.device_id {
        Some(id) => id.clone(),
        None => opts.rng.with(random_device_id),
    };
    let scope = format!("openid urn:matrix:client:api:* urn:matrix:client:device:{device_id}");
    transcript.note(format!(
        "device authorization request (RFC 8628 §3.1) for device {device_id}"
    ));
    let started = http
        .post_form(
            device_endpoint.as_str(),
            &[("client_id", client_id.as_str()), ("scope", scope.as_str())],
            None,
        )
        .await?
        .expect("device authorization request (RFC 8628 §3.2)", 200)?
        .json()?;
    // RFC 8628 §3.2: the answer's members.
    let what = "the device authorization response (RFC 8628 §3.2)";
    let device_code = required_str(&started, "device_code", what)?;
    let user_code = required_str(&started, "user_code", what)?;
    let verification_uri = required_str(&started, "verification_uri", what)?;
    let complete = started["verification_uri_complete"]
        .as_str()
        .map(str::to_owned);
    let expires_in = started["expires_in"]
        .as_u64()
        .filter(|e| *e > 0)
        .ok_or_else(|| Error::Protocol(format!("{what} has no positive expires_in")))?;
    let mut interval = started["interval"]
        .as_u64()
        .unwrap_or(DEFAULT_INTERVAL)
        .max(1);
    let open = complete.as_deref().unwrap_or(&verification_uri);
    transcript.note(format!(
        "user code: {user_code} — open {open} (or {verification_uri} and enter the code); it expires in {expires_in} s"
    ));
    checks.pass(format!(
        "device authorization: user code {user_code}, polling every {interval} s"
    ));

    // RFC 8628 §3.4/§3.5: nobody has answered yet.
    transcript.note("first token request: nobody has approved yet (RFC 8628 §3.5)");
    let mut polls = 1;
    match poll(&http, &token_endpoint, &client_id, &device_code).await? {
        Poll::Pending => checks.pass("before any approval, the token endpoint answers authorization_pending"),
        Poll::SlowDown => {
            return Err(Error::protocol(
                "the first token request was answered slow_down (RFC 8628 §3.5: only polling faster than the interval is)",
            ))
        }
        Poll::Tokens(_) => {
            return Err(Error::protocol(
                "tokens were issued before anyone approved the request (RFC 8628 §3.5)",
            ))
        }
    }

    // RFC 8628 §3.3: the person approves on another device (here: a browser of our own).
    let approved_here = match &opts.account {
        Some(account) => {
            let browser = Http::browser(transcript.clone());
            let start = Url::parse(open).map_err(|e| {
                Error::Protocol(format!("the verification URI is not a URL ({e}): {open}"))
            })?;
            transcript.note(format!(
                "approval in a browser (RFC 8628 §3.3) as {}",
                account.username()
            ));
            pages::approve_device(&browser, &start, &user_code, account).await?;
            checks.pass("approved the request on the verification pages");
            true
        }
        None => {
            transcript.note(format!("waiting for the approval at {open}"));
            false
        }
    };

    // RFC 8628 §3.5: poll no faster than `interval`; `slow_down` adds 5 s for good.
    let mut waited = 0;
    let tokens = loop {
        if waited >= expires_in {
            return Err(Error::Protocol(format!(
                "the request was not approved within its {expires_in} s (RFC 8628 §3.2 expires_in)"
            )));
        }
        opts.sleep.sleep(Duration::from_secs(interval)).await;
        waited += interval;
        polls += 1;
        transcript.note(format!("token request after {interval} s (RFC 8628 §3.4)"));
        match poll(&http, &token_endpoint, &client_id, &device_code).await? {
            Poll::Tokens(tokens) => break tokens,
            Poll::Pending => {}
            Poll::SlowDown => {
                interval += SLOW_DOWN_STEP;
                transcript.note(format!("slow_down: polling every {interval} s from now on"));
            }
        }
    };
    let access = required_str(&tokens, "access_token", "the token response")?;
    // MSC4341: refresh tokens must be issued.
    required_str(&tokens, "refresh_token", "the token response")
        .map_err(|e| Error::Protocol(format!("{e} (MSC4341)")))?;
    checks.pass(format!(
        "tokens after {polls} token requests, with a refresh token (MSC4341)"
    ));

    transcript.note("whoami on the homeserver");
    let me = whoami(&http, hs, &access, "with the device flow's token").await?;
    if me.device_id.as_deref() != Some(device_id.as_str()) {
        return Err(Error::Protocol(format!(
            "whoami names the device {:?}, not {device_id} of the device scope (MSC2967)",
            me.device_id
        )));
    }
    checks.pass(format!("whoami: {} on device {device_id}", me.user_id));

    Ok(DeviceReport {
        user_id: me.user_id,
        device_id,
        client_id,
        user_code,
        verification_uri,
        verification_uri_complete: complete,
        approved_here,
        polls,
        checks: checks.into_vec(),
    })
}
