//! What the checks share: the issuer's metadata (fetched once), lazily created fixtures (a
//! registered public client, a confidential client, signed-in users), each created at most once
//! however many checks need it; and the [`Probe`] each check runs with: its own HTTP client
//! and transcript, so a failure carries exactly the exchanges that show it.
//!
//! All the suite's HTTP, the checks' and the fixtures', goes through the run's
//! [`RateLimiter::through`]: a `429` is waited out and the request repeated, or the check is
//! skipped ("rate limited by the server: …"); never failed.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use rand::{distributions::Alphanumeric, rngs::StdRng, Rng as _};
use serde_json::{json, Value};
use test_clients::{
    http::{Http, Reply},
    oauth,
    pages::{self, Account},
    pkce::PkcePair,
    transcript::{Exchange, Transcript},
};
use tokio::sync::OnceCell;
use url::Url;

use crate::{
    rate_limit::{GaveUp, RateLimiter, Sleep},
    Options,
};

/// What a check's function returns: `Ok(())` passes.
pub type Checked = Result<(), Stop>;

/// Why a check stopped without passing.
#[derive(Debug, Clone)]
pub enum Stop {
    /// The requirement does not hold. `evidence` adds exchanges made outside the check's own
    /// transcript (e.g. by a shared fixture); the check's own are always attached.
    Fail {
        reason: String,
        evidence: Vec<Exchange>,
    },
    /// The requirement can't be checked here.
    Skip(String),
}

impl Stop {
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::Fail {
            reason: reason.into(),
            evidence: Vec::new(),
        }
    }

    pub fn skip(reason: impl Into<String>) -> Self {
        Self::Skip(reason.into())
    }
}

pub use crate::Clock;

/// The real clock: the one place the suite reads the system time.
#[allow(clippy::disallowed_methods)]
pub fn system_clock() -> SystemTime {
    SystemTime::now()
}

/// The client URI every client the suite registers names (a reserved domain, RFC 2606).
pub(crate) const CLIENT_URI: &str = "https://conformance.example.org/";
/// The loopback redirect URI of the suite's native clients (RFC 8252 §7.3).
pub(crate) const LOOPBACK_REDIRECT: &str = "http://127.0.0.1/callback";
/// The redirect URI of the suite's web (confidential) client.
pub(crate) const WEB_REDIRECT: &str = "https://conformance.example.org/callback";
/// The device authorization grant type (RFC 8628 §3.4).
pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The Matrix C-S API scope (MSC2967).
pub(crate) const API_SCOPE: &str = "urn:matrix:client:api:*";
/// The Matrix device scope prefix (MSC2967).
pub(crate) const DEVICE_SCOPE: &str = "urn:matrix:client:device:";

/// The metadata document as fetched at the start of the run.
#[derive(Debug)]
pub(crate) struct Discovery {
    /// `{issuer}/.well-known/openid-configuration`.
    pub url: Url,
    /// The answer, when there was one.
    pub reply: Option<Reply>,
    /// The document, when it is a JSON object.
    pub metadata: Option<Value>,
    /// Why there is no document.
    pub error: Option<String>,
    /// The server kept answering 429 beyond the suite's bounds: `error` says so.
    pub rate_limited: bool,
    /// The exchange that fetched it.
    pub evidence: Vec<Exchange>,
}

impl Discovery {
    /// Fetches the OpenID Connect Discovery document (OIDC Discovery §4: the issuer with any
    /// trailing `/` removed, then `/.well-known/openid-configuration`; this is also where
    /// Synapse reads it).
    pub(crate) async fn fetch(issuer: &Url, limits: &RateLimiter) -> Self {
        let url = openid_configuration_url(issuer);
        let transcript = Transcript::new();
        let http = Http::new(transcript.clone());
        let reply = limits.through(&transcript, || http.get(url.as_str())).await;
        let evidence = transcript.entries();
        let reply = match reply {
            Ok(reply) => reply,
            // Still 429 (RFC 6585 §4): no document, and nothing to judge about it.
            Err(gave_up) => {
                return Self {
                    url,
                    reply: None,
                    metadata: None,
                    error: Some(gave_up.0),
                    rate_limited: true,
                    evidence,
                }
            }
        };
        match reply {
            Err(e) => Self {
                url,
                reply: None,
                metadata: None,
                error: Some(format!("GET {}: {e}", openid_configuration_url(issuer))),
                rate_limited: false,
                evidence,
            },
            Ok(reply) => {
                let (metadata, error) = match (reply.status, reply.json()) {
                    (200, Ok(Value::Object(doc))) => (Some(Value::Object(doc)), None),
                    (200, Ok(other)) => (
                        None,
                        Some(format!("the metadata is not a JSON object: {other}")),
                    ),
                    (200, Err(e)) => (None, Some(format!("the metadata is not JSON: {e}"))),
                    (status, _) => (None, Some(format!("GET {url} answered HTTP {status}"))),
                };
                Self {
                    url,
                    reply: Some(reply),
                    metadata,
                    error,
                    rate_limited: false,
                    evidence,
                }
            }
        }
    }
}

/// OIDC Discovery §4.1: `issuer` without its trailing `/`, then
/// `/.well-known/openid-configuration`.
pub(crate) fn openid_configuration_url(issuer: &Url) -> Url {
    let base = issuer.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/.well-known/openid-configuration"))
        .unwrap_or_else(|_| issuer.clone())
}

/// RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
pub(crate) fn oauth_authorization_server_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = issuer.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Why a shared fixture is not there.
#[derive(Debug, Clone)]
pub(crate) struct FixtureError {
    /// `true`: the server misbehaved while making it; `false`: it can't be made here
    /// (an endpoint not offered, no account…).
    pub broken: bool,
    /// The suite could not get through the provider's pages (wrong credentials, a form it
    /// can't fill…): not a protocol matter.
    pub pages: bool,
    pub reason: String,
    pub evidence: Vec<Exchange>,
}

impl FixtureError {
    fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            broken: false,
            pages: false,
            reason: reason.into(),
            evidence: Vec::new(),
        }
    }

    fn pages(reason: impl Into<String>) -> Self {
        Self {
            pages: true,
            ..Self::unavailable(reason)
        }
    }

    fn broken(reason: impl Into<String>, transcript: &Transcript) -> Self {
        Self {
            broken: true,
            pages: false,
            reason: reason.into(),
            evidence: transcript.entries(),
        }
    }

    /// For a check that only needs the fixture: skipped, saying which fixture and why.
    pub(crate) fn skip(&self, what: &str) -> Stop {
        Stop::skip(format!("{what} is not available: {}", self.reason))
    }

    /// For the check whose subject is the fixture itself: a failure when the server broke it.
    pub(crate) fn judge(&self, what: &str) -> Stop {
        if self.broken {
            Stop::Fail {
                reason: format!("{what}: {}", self.reason),
                evidence: self.evidence.clone(),
            }
        } else {
            self.skip(what)
        }
    }
}

type Fixture<T> = OnceCell<Result<T, FixtureError>>;

/// A client the suite registered.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub client_id: String,
    /// `None` for public clients.
    pub secret: Option<String>,
    pub redirect_uri: String,
}

impl Client {
    /// The HTTP Basic credentials of a confidential client (RFC 6749 §2.3.1).
    pub(crate) fn basic(&self) -> Option<(&str, &str)> {
        self.secret
            .as_deref()
            .map(|secret| (self.client_id.as_str(), secret))
    }
}

/// The tokens of a completed authorization code flow.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub client: Client,
    /// The token response.
    pub tokens: Value,
    /// The `nonce` sent in the authorization request.
    pub nonce: Option<String>,
    /// The Matrix device ID of the grant, when it had one.
    pub device_id: Option<String>,
    /// The token endpoint's answer, when the suite made the exchange itself.
    pub token_reply: Option<Reply>,
    /// The exchanges that made the session.
    pub evidence: Vec<Exchange>,
}

impl Session {
    pub(crate) fn access_token(&self) -> Option<&str> {
        self.tokens.get("access_token").and_then(Value::as_str)
    }

    pub(crate) fn refresh_token(&self) -> Option<&str> {
        self.tokens.get("refresh_token").and_then(Value::as_str)
    }

    pub(crate) fn id_token(&self) -> Option<&str> {
        self.tokens.get("id_token").and_then(Value::as_str)
    }
}

/// An authorization code, not yet exchanged.
#[derive(Debug, Clone)]
pub(crate) struct Code {
    pub code: String,
    pub verifier: String,
    pub client: Client,
}

/// Where the legacy Matrix login API answers.
#[derive(Debug, Clone)]
pub(crate) struct Compat {
    /// The base URL (`…/_matrix/client/v3/` is joined to it).
    pub base: Url,
    /// `GET /login`.
    pub flows: Value,
}

impl Compat {
    pub(crate) fn url(&self, path: &str) -> Url {
        join(&self.base, &format!("_matrix/client/v3/{path}"))
    }
}

/// `path` (relative, no leading `/`) under `base`, keeping the base's path.
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.set_query(None);
    base.join(path).unwrap_or(base)
}

/// The account the suite signs in with.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
    /// The suite made it up and registers it at the first sign-in (`prompt=create`).
    pub register: bool,
}

/// Everything the checks of one run share.
pub struct Context {
    pub(crate) options: Options,
    pub(crate) discovery: Discovery,
    /// The one door of the run's HTTP (rate limits).
    pub(crate) limits: RateLimiter,
    clock: Clock,
    rng: Mutex<StdRng>,
    credentials: Result<Credentials, String>,
    public_client: Fixture<Client>,
    confidential_client: Fixture<Client>,
    user: Fixture<Session>,
    matrix_user: Fixture<Session>,
    confidential_user: Fixture<Session>,
    compat: OnceCell<Result<Compat, String>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("issuer", &self.options.issuer.as_str())
            .field("metadata", &self.discovery.metadata.is_some())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Fetches the metadata and decides on the account.
    pub(crate) async fn new(options: Options, clock: Clock, sleep: Sleep, mut rng: StdRng) -> Self {
        let limits = RateLimiter::new(
            options.rate_limit_wait,
            options.rate_limit_budget,
            clock,
            sleep,
        );
        let discovery = Discovery::fetch(&options.issuer, &limits).await;
        let credentials = match (&options.account, &discovery.metadata) {
            (Some((username, password)), _) => Ok(Credentials {
                username: username.clone(),
                password: password.clone(),
                register: false,
            }),
            (None, Some(metadata)) if list_has(metadata, "prompt_values_supported", "create") => {
                Ok(Credentials {
                    username: format!("conformance-{}", lowercase(&mut rng, 8)),
                    password: alphanumeric(&mut rng, 24),
                    register: true,
                })
            }
            (None, Some(_)) => Err(
                "no account: the issuer does not offer registration (prompt_values_supported \
                 lacks `create`) and no --username/--password was given"
                    .to_owned(),
            ),
            (None, None) => Err("no account: the metadata is not available".to_owned()),
        };
        Self {
            options,
            discovery,
            limits,
            clock,
            rng: Mutex::new(rng),
            credentials,
            public_client: OnceCell::new(),
            confidential_client: OnceCell::new(),
            user: OnceCell::new(),
            matrix_user: OnceCell::new(),
            confidential_user: OnceCell::new(),
            compat: OnceCell::new(),
        }
    }

    pub(crate) fn metadata(&self) -> Result<&Value, Stop> {
        self.discovery.metadata.as_ref().ok_or_else(|| {
            Stop::skip(format!(
                "no metadata: {}",
                self.discovery.error.as_deref().unwrap_or("not fetched")
            ))
        })
    }

    /// An endpoint of the metadata; skipped when not advertised (another check judges that).
    pub(crate) fn endpoint(&self, member: &str) -> Result<Url, Stop> {
        let metadata = self.metadata()?;
        let raw = metadata
            .get(member)
            .and_then(Value::as_str)
            .ok_or_else(|| Stop::skip(format!("the metadata has no `{member}`")))?;
        Url::parse(raw).map_err(|e| Stop::skip(format!("`{member}` `{raw}` is not a URL: {e}")))
    }

    pub(crate) fn now_unix(&self) -> i64 {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut rng)
    }

    /// `n` random lowercase letters and digits.
    pub(crate) fn random(&self, n: usize) -> String {
        self.with_rng(|rng| alphanumeric(rng, n).to_ascii_lowercase())
    }

    /// A fresh Matrix device ID: 12 characters from RFC 3986's unreserved set (MSC2967).
    pub(crate) fn device_id(&self) -> String {
        format!("CONF{}", self.random(8).to_ascii_uppercase())
    }

    pub(crate) fn pkce(&self) -> PkcePair {
        self.with_rng(PkcePair::generate)
    }

    pub(crate) fn credentials(&self) -> Result<&Credentials, Stop> {
        self.credentials
            .as_ref()
            .map_err(|reason| Stop::skip(reason.clone()))
    }

    /// The account for sign-ins after the first: the first sign-in (the shared user) registers
    /// it when the suite made it up, and shows that it works.
    pub(crate) async fn account(&self) -> Result<Account, Stop> {
        let credentials = self.credentials()?;
        match self.user().await {
            Ok(_) => {}
            // A given account whose first sign-in failed for another reason (no client
            // registration, say) may still serve where no client is needed.
            Err(e) if credentials.register || e.pages => {
                return Err(e.skip("the suite's account"));
            }
            Err(_) => {}
        }
        Ok(Account::SignIn {
            username: credentials.username.clone(),
            password: credentials.password.clone(),
        })
    }

    /// A public native client (RFC 7591, MSC2966) with a loopback redirect URI, for the code,
    /// refresh and device grants.
    pub(crate) async fn public_client(&self) -> Result<&Client, FixtureError> {
        self.public_client
            .get_or_init(|| async {
                let body = native_client(&[LOOPBACK_REDIRECT]);
                self.register_fixture(&body, LOOPBACK_REDIRECT).await
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A confidential web client (`client_secret_basic`), when the issuer allows one.
    pub(crate) async fn confidential_client(&self) -> Result<&Client, FixtureError> {
        self.confidential_client
            .get_or_init(|| async {
                let metadata = self
                    .metadata()
                    .map_err(|_| FixtureError::unavailable("no metadata"))?;
                // RFC 8414 §2: client_secret_basic is the default when the member is absent.
                let basic = metadata
                    .get("token_endpoint_auth_methods_supported")
                    .is_none()
                    || list_has(
                        metadata,
                        "token_endpoint_auth_methods_supported",
                        "client_secret_basic",
                    );
                if !basic {
                    return Err(FixtureError::unavailable(
                        "the issuer does not offer client_secret_basic",
                    ));
                }
                let body = json!({
                    "client_name": "Conformance suite (confidential)",
                    "client_uri": CLIENT_URI,
                    "application_type": "web",
                    "redirect_uris": [WEB_REDIRECT],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                });
                self.register_fixture(&body, WEB_REDIRECT).await
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    async fn register_fixture(&self, body: &Value, redirect: &str) -> Result<Client, FixtureError> {
        let metadata = self
            .metadata()
            .map_err(|_| FixtureError::unavailable("no metadata"))?;
        if metadata.get("registration_endpoint").is_none() {
            return Err(FixtureError::unavailable(
                "the metadata has no registration_endpoint",
            ));
        }
        let transcript = Transcript::new();
        let http = Http::new(transcript.clone());
        let registered = self
            .limits
            .through(&transcript, || oauth::register(&http, metadata, body))
            .await
            .map_err(rate_limited)?
            .map_err(|e| FixtureError::broken(format!("registration failed: {e}"), &transcript))?;
        let client_id = registered
            .get("client_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                FixtureError::broken("the registration has no client_id", &transcript)
            })?;
        let wants_secret = body["token_endpoint_auth_method"] != "none";
        let secret = registered
            .get("client_secret")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if wants_secret && secret.is_none() {
            return Err(FixtureError::broken(
                "a client_secret_basic registration answered no client_secret",
                &transcript,
            ));
        }
        Ok(Client {
            client_id: client_id.to_owned(),
            secret: if wants_secret { secret } else { None },
            redirect_uri: redirect.to_owned(),
        })
    }

    /// The shared signed-in user: an authorization code flow with PKCE and a nonce for
    /// `openid`, by the public client. The first sign-in of the run: it registers the account
    /// when the suite made it up. Never revoke its tokens.
    pub(crate) async fn user(&self) -> Result<&Session, FixtureError> {
        self.user
            .get_or_init(|| async {
                let credentials = self
                    .credentials
                    .as_ref()
                    .map_err(|reason| FixtureError::unavailable(reason.clone()))?;
                let client = self.public_client().await?.clone();
                let account = if credentials.register {
                    Account::Register {
                        username: credentials.username.clone(),
                        password: credentials.password.clone(),
                    }
                } else {
                    Account::SignIn {
                        username: credentials.username.clone(),
                        password: credentials.password.clone(),
                    }
                };
                let nonce = self.random(16);
                let mut extra = vec![("nonce", nonce.as_str())];
                if credentials.register {
                    extra.push(("prompt", "create"));
                }
                let mut session = self
                    .sign_in_with(&client, "openid", &extra, &account)
                    .await?;
                session.nonce = Some(nonce);
                Ok(session)
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The code flow for `client` through the provider's pages, then the exchange (HTTP Basic
    /// for a confidential client). Only what the flow needs is judged here: the checks judge
    /// the rest (a missing `Cache-Control: no-store` does not stop the suite's sign-ins).
    async fn sign_in_with(
        &self,
        client: &Client,
        scope: &str,
        extra: &[(&str, &str)],
        account: &Account,
    ) -> Result<Session, FixtureError> {
        let transcript = Transcript::new();
        let code = self
            .code_flow(&transcript, client, scope, extra, account)
            .await?;
        let http = Http::new(transcript.clone());
        let token_endpoint = self
            .endpoint("token_endpoint")
            .map_err(|_| FixtureError::unavailable("the metadata has no token_endpoint"))?;
        let reply = self
            .limits
            .through(&transcript, || {
                exchange(&http, &token_endpoint, &code, client.basic())
            })
            .await
            .map_err(rate_limited)?
            .map_err(|e| FixtureError::broken(format!("token request failed: {e}"), &transcript))?;
        match (reply.status, reply.json()) {
            (200, Ok(tokens)) if tokens.get("access_token").is_some_and(Value::is_string) => {
                Ok(Session {
                    client: client.clone(),
                    tokens,
                    nonce: None,
                    device_id: None,
                    token_reply: Some(reply),
                    evidence: transcript.entries(),
                })
            }
            (status, _) => Err(FixtureError::broken(
                format!("the code exchange answered HTTP {status} without an access_token"),
                &transcript,
            )),
        }
    }

    /// A signed-in user with a Matrix grant: `openid`, the C-S API scope and a device scope
    /// (MSC2967). Never revoke its tokens.
    pub(crate) async fn matrix_user(&self) -> Result<&Session, FixtureError> {
        self.matrix_user
            .get_or_init(|| async {
                let device_id = self.device_id();
                let scope = matrix_scope(&device_id);
                self.fresh_sign_in(&scope).await.map(|mut session| {
                    session.device_id = Some(device_id);
                    session
                })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A user signed in by the confidential client (for introspection of its own token).
    pub(crate) async fn confidential_user(&self) -> Result<&Session, FixtureError> {
        self.confidential_user
            .get_or_init(|| async {
                let client = self.confidential_client().await?.clone();
                let account = self.account().await.map_err(unavailable)?;
                self.sign_in_with(&client, "openid", &[], &account).await
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A fresh sign-in by a freshly registered public client, for checks that consume or end
    /// what they get.
    pub(crate) async fn fresh_sign_in(&self, scope: &str) -> Result<Session, FixtureError> {
        let account = self.account().await.map_err(unavailable)?;
        let client = self
            .register_fixture(&native_client(&[LOOPBACK_REDIRECT]), LOOPBACK_REDIRECT)
            .await?;
        self.sign_in_with(&client, scope, &[], &account).await
    }

    /// Runs an authorization request for `client` through the provider's pages up to the
    /// redirect back, and returns the code (not exchanged).
    pub(crate) async fn code_flow(
        &self,
        transcript: &Transcript,
        client: &Client,
        scope: &str,
        extra: &[(&str, &str)],
        account: &Account,
    ) -> Result<Code, FixtureError> {
        let (params, verifier) = self
            .authorization_response(transcript, client, scope, extra, account)
            .await?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(error) = get("error") {
            return Err(FixtureError::broken(
                format!("the authorization request came back with error `{error}`"),
                transcript,
            ));
        }
        let code = get("code").ok_or_else(|| {
            FixtureError::broken("the authorization response has no code", transcript)
        })?;
        Ok(Code {
            code,
            verifier,
            client: client.clone(),
        })
    }

    /// An authorization request for `client` through the provider's pages: the parameters of
    /// the redirect back (after checking its `state`) and the PKCE verifier. Getting through
    /// the pages is not a protocol matter (they are the provider's own): when the suite can't,
    /// the fixture is unavailable, not broken.
    pub(crate) async fn authorization_response(
        &self,
        transcript: &Transcript,
        client: &Client,
        scope: &str,
        extra: &[(&str, &str)],
        account: &Account,
    ) -> Result<(Vec<(String, String)>, String), FixtureError> {
        let metadata = self
            .metadata()
            .map_err(|_| FixtureError::unavailable("no metadata"))?;
        let pkce = self.pkce();
        let state = self.random(12);
        let url = oauth::authorization_url(
            metadata,
            &oauth::AuthRequest {
                client_id: &client.client_id,
                redirect_uri: &client.redirect_uri,
                scope,
                state: &state,
                challenge: &pkce.challenge,
                extra,
            },
        )
        .map_err(|e| FixtureError::unavailable(format!("no authorization URL: {e}")))?;
        let browser = Http::browser(transcript.clone());
        let back = self
            .walk(&browser, &url, &client.redirect_uri, account)
            .await
            .map_err(rate_limited)?
            .map_err(|e| {
                FixtureError::pages(format!(
                    "the suite could not get through the provider's pages for `{scope}` ({}): {e}",
                    if matches!(account, Account::Register { .. }) {
                        "registering an account"
                    } else {
                        "signing in"
                    }
                ))
            })?;
        let params = response_params(&back);
        let state_back = params
            .iter()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.as_str());
        if state_back != Some(state.as_str()) {
            return Err(FixtureError::broken(
                format!(
                    "the authorization response carries state {state_back:?}, not the request's (RFC 6749 §4.1.2)"
                ),
                transcript,
            ));
        }
        Ok((params, pkce.verifier))
    }

    /// Where the legacy Matrix login API answers: the homeserver (when given) or the issuer.
    pub(crate) async fn compat(&self) -> Result<&Compat, Stop> {
        self.compat
            .get_or_init(|| async {
                let mut candidates: Vec<Url> = self.options.homeserver.iter().cloned().collect();
                candidates.push(self.options.issuer.clone());
                let transcript = Transcript::new();
                let http = Http::new(transcript.clone());
                let mut seen = Vec::new();
                for base in candidates {
                    let compat = Compat {
                        base,
                        flows: Value::Null,
                    };
                    let url = compat.url("login");
                    let reply = self
                        .limits
                        .through(&transcript, || http.get(url.as_str()))
                        .await
                        .map_err(|gave_up| gave_up.0)?;
                    match reply {
                        Ok(reply) => match reply.json() {
                            Ok(flows) if reply.status == 200 && flows["flows"].is_array() => {
                                return Ok(Compat { flows, ..compat });
                            }
                            _ => seen.push(format!("GET {url}: HTTP {}", reply.status)),
                        },
                        Err(e) => seen.push(format!("GET {url}: {e}")),
                    }
                }
                Err(format!(
                    "no Matrix login API (compatibility layer) found ({})",
                    seen.join("; ")
                ))
            })
            .await
            .as_ref()
            .map_err(|reason| Stop::skip(reason.clone()))
    }
}

impl Context {
    /// A walk through the provider's pages (see [`pages::walk`]) in the browser `http`. A 429
    /// on the way (the sign-in rate limit, typically) ends the walk: after the wait it starts
    /// again from `url` (the helper's requests can't be repeated one by one from here).
    pub(crate) async fn walk(
        &self,
        browser: &Http,
        url: &Url,
        stop_at: &str,
        account: &Account,
    ) -> Result<Result<Url, test_clients::Error>, GaveUp> {
        self.limits
            .through(browser.transcript(), || {
                pages::walk(browser, url, stop_at, account)
            })
            .await
    }
}

/// A fixture the server's rate limit kept from being made: unavailable (skipped), not broken.
fn rate_limited(gave_up: GaveUp) -> FixtureError {
    FixtureError::unavailable(gave_up.0)
}

/// The exchange of a code at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.5): public
/// clients send their `client_id`, confidential ones authenticate with HTTP Basic.
pub(crate) async fn exchange(
    http: &Http,
    token_endpoint: &Url,
    code: &Code,
    basic: Option<(&str, &str)>,
) -> Result<Reply, test_clients::Error> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.code.as_str()),
        ("redirect_uri", code.client.redirect_uri.as_str()),
        ("code_verifier", code.verifier.as_str()),
    ];
    if basic.is_none() {
        form.push(("client_id", code.client.client_id.as_str()));
    }
    http.post_form(token_endpoint.as_str(), &form, basic).await
}

/// The scope of a Matrix grant for `device_id` (MSC2967).
pub(crate) fn matrix_scope(device_id: &str) -> String {
    format!("openid {API_SCOPE} {DEVICE_SCOPE}{device_id}")
}

/// A native public client registration for these redirect URIs (MSC2966).
pub(crate) fn native_client(redirect_uris: &[&str]) -> Value {
    json!({
        "client_name": "Conformance suite",
        "client_uri": CLIENT_URI,
        "application_type": "native",
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// The parameters of an authorization response: the query, or the fragment when the query has
/// none (response_mode=fragment).
pub(crate) fn response_params(url: &Url) -> Vec<(String, String)> {
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if !query.is_empty() {
        return query;
    }
    url.fragment()
        .map(|f| {
            url::form_urlencoded::parse(f.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a metadata member is an array holding `value`.
pub(crate) fn list_has(doc: &Value, member: &str, value: &str) -> bool {
    doc.get(member)
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|v| v == value))
}

fn alphanumeric(rng: &mut StdRng, n: usize) -> String {
    rng.sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn lowercase(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect()
}

/// What one check runs with: the shared [`Context`], and its own HTTP client whose transcript
/// is the check's evidence.
pub struct Probe {
    pub(crate) cx: Arc<Context>,
    pub(crate) http: Http,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    pub(crate) fn new(
        cx: Arc<Context>,
        transcript: Transcript,
        notes: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        Self {
            cx,
            http: Http::new(transcript),
            notes,
        }
    }

    /// A remark kept with the finding.
    pub fn note(&self, text: impl Into<String>) {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text.into());
    }

    /// A step heading in the transcript.
    pub(crate) fn step(&self, text: &str) {
        self.http.transcript().note(text);
    }

    /// Every request of the check goes through here, and so through the run's rate limiting:
    /// a 429 is waited out and `attempt` repeated; a 429 the bounds don't allow waiting out
    /// skips the check (RFC 6585 §4: the answer says nothing about the requirement).
    pub(crate) async fn through<T, Fut>(&self, attempt: impl FnMut() -> Fut) -> Result<T, Stop>
    where
        Fut: std::future::Future<Output = T>,
    {
        self.cx
            .limits
            .through(self.http.transcript(), attempt)
            .await
            .map_err(|gave_up| Stop::Skip(gave_up.0))
    }

    pub(crate) async fn get(&self, url: &Url) -> Result<Reply, Stop> {
        self.through(|| self.http.get(url.as_str()))
            .await?
            .map_err(transport)
    }

    pub(crate) async fn get_bearer(&self, url: &Url, token: &str) -> Result<Reply, Stop> {
        self.through(|| self.http.get_bearer(url.as_str(), token))
            .await?
            .map_err(transport)
    }

    pub(crate) async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Reply, Stop> {
        self.through(|| self.http.post_form(url.as_str(), form, basic))
            .await?
            .map_err(transport)
    }

    pub(crate) async fn post_json(
        &self,
        url: &Url,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<Reply, Stop> {
        self.through(|| self.http.post_json(url.as_str(), body, bearer))
            .await?
            .map_err(transport)
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, Stop> {
        // A body that can't be copied (a stream; the checks send none) is sent once.
        let Some(template) = request.try_clone() else {
            return self.http.send(request).await.map_err(transport);
        };
        self.through(|| {
            let request = template.try_clone();
            async move {
                match request {
                    Some(request) => self.http.send(request).await,
                    None => Err(test_clients::Error::protocol(
                        "the request can't be repeated",
                    )),
                }
            }
        })
        .await?
        .map_err(transport)
    }

    pub(crate) fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        self.http.request(method, url.as_str())
    }

    /// An authorization code for `client` and `scope`, through the provider's pages (the
    /// sign-in is not evidence; skipped when it can't be done).
    pub(crate) async fn code(
        &self,
        client: &Client,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Result<Code, Stop> {
        let account = self.cx.account().await?;
        self.cx
            .code_flow(&Transcript::new(), client, scope, extra, &account)
            .await
            .map_err(|e| e.skip("an authorization code"))
    }

    /// A fresh sign-in (see [`Context::fresh_sign_in`]); skipped when it can't be done.
    pub(crate) async fn sign_in(&self, scope: &str) -> Result<Session, Stop> {
        self.cx
            .fresh_sign_in(scope)
            .await
            .map_err(|e| e.skip("a fresh sign-in"))
    }
}

fn unavailable(stop: Stop) -> FixtureError {
    match stop {
        Stop::Skip(reason) | Stop::Fail { reason, .. } => FixtureError::unavailable(reason),
    }
}

fn transport(e: test_clients::Error) -> Stop {
    Stop::fail(format!("the request failed: {e}"))
}
