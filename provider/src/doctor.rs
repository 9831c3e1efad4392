//! `provider doctor`: checks a deployment from the outside, the way clients and the homeserver
//! see it, and says what to fix.
//!
//! Each check gives one [`Check`]: ✅ fine, ⚠️ works but worth a look, ❌ broken (the command
//! then exits 1), with a hint for anything not fine. In order:
//!
//! 1. **signing keys** (from the configuration): RSA ≥ 2048 bits, EC on P-256 (the only kinds
//!    the configuration accepts), an RS256 key (OIDC Core §15.1), and more than one key;
//! 2. **database**: reachable with the configured URL;
//! 3. **issuer**: `{issuer}/.well-known/openid-configuration` answers and names exactly the
//!    configured issuer (OIDC Discovery §4.3, RFC 8414 §3.3), over https unless on loopback;
//! 4. **public base**: `{public_base}/health` answers 200, and the metadata's endpoints are
//!    under it; the published keys (`jwks_uri`) are the configured ones;
//! 5. **homeserver well-known**: `https://<server name>/.well-known/matrix/client` (from
//!    `matrix.endpoint` when the server name is `localhost` or a loopback address, as in
//!    development) names the homeserver (`m.homeserver.base_url`) and this issuer
//!    (`org.matrix.msc2965.authentication`, MSC2965, for older clients);
//! 6. **client versions**: the homeserver's `/_matrix/client/versions` lists v1.15 or later
//!    (OAuth-aware clients only look for `auth_metadata` then);
//! 7. **auth_metadata**: `/_matrix/client/v1/auth_metadata` (and the MSC2965 unstable path) is
//!    this provider's metadata: same issuer;
//! 8. **shared secret**: the homeserver API (`/_synapse/mas/*`, or `/_synapse/admin/*` for
//!    `matrix.kind: synapse_legacy`) accepts `matrix.secret` — telling a wrong secret (401/403)
//!    from a missing API (404: wrong `matrix.kind`, or MAS mode off) from no answer;
//! 9. **legacy login**: `GET /_matrix/client/v3/login` on the homeserver answers the flows of
//!    this provider's compatibility layer (MSC3861 deployments route it to the provider);
//! 10. **clock**: the homeserver's HTTP `Date` against this machine's clock (⚠️ past 30 s,
//!     ❌ past 5 minutes: token lifetimes are minutes).
//!
//! Steps 6–10 talk to the homeserver at the base URL its well-known names (what clients use),
//! or at `matrix.endpoint` when there is none; step 8 always at `matrix.endpoint` (the
//! provider's own path to it).

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::{header, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use crate::{
    clock::{Clock, Entropy},
    config::{is_loopback_host, HomeserverKind, Settings},
    core::matrix::homeserver::HomeserverError,
    endpoints,
    keys::{Algorithm, PrivateKey},
    storage::{PoolSettings, Storage},
};

/// Any one request gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew worth a warning, and skew that breaks tokens.
const SKEW_WARN: i64 = 30;
const SKEW_FAIL: i64 = 5 * 60;
/// The localpart asked about to test the shared secret (any name does; nothing is created).
const PROBE_LOCALPART: &str = "provider-doctor-probe";
/// The first Matrix spec version with OAuth 2.0 discovery (MSC2965).
const OAUTH_SPEC_VERSION: (u32, u32) = (1, 15);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn icon(self) -> &'static str {
        match self {
            Self::Ok => "✅",
            Self::Warn => "⚠️",
            Self::Fail => "❌",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do about it (for warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            message: message.into(),
            hint: None,
        }
    }

    fn warn(name: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Every check, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Did any check fail (❌)?
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// One line per check, then a summary line. `color` adds ANSI colours (for a terminal).
    pub fn text(&self, color: bool) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let (on, off) = match (color, check.status) {
                (false, _) | (true, Status::Ok) => ("", ""),
                (true, Status::Warn) => ("\x1b[33m", "\x1b[0m"),
                (true, Status::Fail) => ("\x1b[31m", "\x1b[0m"),
            };
            out.push_str(&format!(
                "{} {on}{}: {}{off}",
                check.status.icon(),
                check.name,
                check.message
            ));
            if let Some(hint) = &check.hint {
                out.push_str(&format!(" → {hint}"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{} passed, {} warning{}, {} failed\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            if self.count(Status::Warn) == 1 {
                ""
            } else {
                "s"
            },
            self.count(Status::Fail),
        ));
        out
    }

    /// The report for machines: `{"ok": bool, "checks": [{name, status, message, hint?}]}`.
    pub fn json(&self) -> Value {
        json!({ "ok": !self.failed(), "checks": self.checks })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(false))
    }
}

/// A fetched HTTP answer: status, `Date`, body.
struct Fetched {
    status: StatusCode,
    date: Option<DateTime<Utc>>,
    /// When the request was sent and when the answer came (this machine's clock).
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
    body: String,
}

impl Fetched {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The Matrix `errcode` of an error answer.
    fn errcode(&self) -> Option<String> {
        self.json()?.get("errcode")?.as_str().map(str::to_owned)
    }
}

/// Runs the checks.
pub struct Doctor<'a> {
    settings: &'a Settings,
    clock: &'a dyn Clock,
    /// Follows a few redirects, as clients do.
    http: reqwest::Client,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("provider-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// What went wrong with a request, without its URL (messages name it already): the kind, and
/// the innermost cause (reqwest's own message is often just "error sending request").
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "can't connect"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_decode() || e.is_body() {
        "unreadable answer"
    } else {
        "request failed"
    };
    let mut innermost = None;
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{kind} ({cause})"),
        None => kind.to_owned(),
    }
}

/// A base URL with a trailing `/`, so paths join below it.
fn as_base(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// `v1.15` → `(1, 15)`; `r0.6.1` and other forms → `None`.
fn spec_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl<'a> Doctor<'a> {
    pub fn new(settings: &'a Settings, clock: &'a dyn Clock) -> Self {
        Self {
            settings,
            clock,
            http: client(),
        }
    }

    async fn get(&self, url: &Url) -> Result<Fetched, String> {
        let sent = self.clock.now();
        let response = self
            .http
            .get(url.clone())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(describe)?;
        let received = self.clock.now();
        let status = response.status();
        let date = response
            .headers()
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc));
        let body = response.text().await.map_err(describe)?;
        Ok(Fetched {
            status,
            date,
            sent,
            received,
            body,
        })
    }

    /// Runs every check.
    pub async fn run(&self) -> Report {
        let mut checks = vec![self.keys(), self.database().await];
        let (issuer, metadata) = self.issuer().await;
        checks.push(issuer);
        checks.extend(self.public_base(metadata.as_ref()).await);
        let (well_known, client_base) = self.well_known(metadata.as_ref()).await;
        checks.push(well_known);
        let (versions, date) = self.versions(&client_base).await;
        checks.push(versions);
        checks.push(self.auth_metadata(&client_base).await);
        checks.push(self.shared_secret().await);
        checks.push(self.legacy_login(&client_base).await);
        checks.push(self.clock_skew(date));
        Report { checks }
    }

    /// Step 1: the configured signing keys.
    fn keys(&self) -> Check {
        const NAME: &str = "signing keys";
        let keys = self.settings.keystore.keys();
        let described: Vec<String> = keys
            .iter()
            .map(|k| match &k.key {
                PrivateKey::Rsa(rsa) => {
                    use rsa::traits::PublicKeyParts as _;
                    format!("RSA {} bits", rsa.size() * 8)
                }
                PrivateKey::P256(_) => "EC P-256".to_owned(),
            })
            .collect();
        let list = described.join(", ");
        let weak_rsa = keys.iter().any(|k| match &k.key {
            PrivateKey::Rsa(rsa) => {
                use rsa::traits::PublicKeyParts as _;
                rsa.size() * 8 < crate::keys::MIN_RSA_BITS
            }
            PrivateKey::P256(_) => false,
        });
        if weak_rsa {
            return Check::fail(
                NAME,
                format!("{list}: an RSA key is shorter than 2048 bits"),
                "replace it: `provider config generate` writes fresh keys",
            );
        }
        if self
            .settings
            .keystore
            .for_algorithm(Algorithm::Rs256)
            .is_none()
        {
            // OIDC Core §15.1: RS256 MUST be supported.
            return Check::fail(
                NAME,
                format!("{list}: no RSA key, so no RS256"),
                "add an RSA key to secrets.keys (OIDC Core §15.1 requires RS256)",
            );
        }
        if keys.len() < 2 {
            return Check::warn(
                NAME,
                format!("{list}: a single key"),
                "add a P-256 key (ES256) too; a second key also lets you rotate without downtime",
            );
        }
        Check::ok(NAME, format!("{list}; RS256 available"))
    }

    /// Step 2: the database answers.
    async fn database(&self) -> Check {
        const NAME: &str = "database";
        let url = crate::storage::redact_url(&self.settings.database_url);
        // Connecting creates a missing SQLite file: look for it first, the doctor writes nothing.
        if let Some(file) = sqlite_file(&self.settings.database_url) {
            if !file.exists() {
                return Check::fail(
                    NAME,
                    format!("{url}: the file {} doesn't exist", file.display()),
                    "check database.url (a relative path is relative to the working directory); `provider serve` or `provider database migrate` creates it",
                );
            }
        }
        let settings = PoolSettings {
            max_connections: 1,
            connect_timeout: CONNECT_TIMEOUT,
        };
        let attempt = tokio::time::timeout(TIMEOUT, async {
            let storage =
                Storage::connect(&self.settings.database_url, &settings, Entropy::system()).await?;
            let pinged = storage.ping().await;
            // Asked only of a server that answers; a failure to ask is not the check's business.
            let autovacuum_off = pinged.is_ok() && storage.autovacuum_off().await.unwrap_or(false);
            storage.close().await;
            pinged.map(|()| autovacuum_off)
        })
        .await;
        match attempt {
            Ok(Ok(true)) => Check::warn(
                NAME,
                format!("{url} answers, but its autovacuum is off"),
                "turn autovacuum on (postgresql.conf `autovacuum = on`), or run `VACUUM ANALYZE` \
                 regularly: without it table statistics go stale and deleted rows (expired \
                 tokens, rate-limit buckets) are never reclaimed",
            ),
            Ok(Ok(false)) => Check::ok(NAME, format!("{url} answers")),
            Ok(Err(e)) => Check::fail(
                NAME,
                format!("{url}: {e}"),
                "check database.url (host, credentials, database name) and that the server runs",
            ),
            Err(_) => Check::fail(
                NAME,
                format!("{url}: no answer within {} s", TIMEOUT.as_secs()),
                "check database.url's host and port, and the firewall",
            ),
        }
    }

    /// Step 3: discovery at the issuer names the issuer.
    async fn issuer(&self) -> (Check, Option<Value>) {
        const NAME: &str = "issuer";
        let issuer = self.settings.issuer.as_str();
        let url = endpoints::url(&self.settings.issuer, endpoints::OPENID_CONFIGURATION);
        let start = "start the provider (`provider serve`) and make http.issuer reach it (DNS, reverse proxy)";
        let fetched = match self.get(&url).await {
            Ok(f) => f,
            Err(e) => return (Check::fail(NAME, format!("{url}: {e}"), start), None),
        };
        if fetched.status != StatusCode::OK {
            return (
                Check::fail(
                    NAME,
                    format!("{url} answered HTTP {}", fetched.status),
                    "the reverse proxy must pass /.well-known/openid-configuration to the provider",
                ),
                None,
            );
        }
        let Some(metadata) = fetched.json() else {
            return (
                Check::fail(
                    NAME,
                    format!("{url} is not JSON"),
                    "something else than the provider answers at the issuer URL",
                ),
                None,
            );
        };
        match metadata.get("issuer").and_then(Value::as_str) {
            // OIDC Discovery §4.3: the issuer in the document is exactly the one asked about.
            Some(found) if found == issuer => {
                let transport = if self.settings.issuer.scheme() == "https" {
                    "over https"
                } else {
                    "over plain http, on loopback: for development only"
                };
                (
                    Check::ok(NAME, format!("{url} names {issuer}, {transport}")),
                    Some(metadata),
                )
            }
            Some(found) => (
                Check::fail(
                    NAME,
                    format!("{url} names issuer {found}, the configuration says {issuer}"),
                    "another server answers there, or http.issuer changed without a restart",
                ),
                Some(metadata),
            ),
            None => (
                Check::fail(
                    NAME,
                    format!("{url} has no issuer"),
                    "something else than the provider answers at the issuer URL",
                ),
                None,
            ),
        }
    }

    /// Step 4: the public base answers, the endpoints live under it, the keys are ours.
    async fn public_base(&self, metadata: Option<&Value>) -> Vec<Check> {
        const NAME: &str = "public base";
        let base = &self.settings.public_base;
        let health = endpoints::url(base, endpoints::HEALTH);
        let mut checks = Vec::new();
        let check = match self.get(&health).await {
            Ok(f) if f.status == StatusCode::OK => {
                let outside: Vec<&str> = metadata
                    .and_then(Value::as_object)
                    .map(|m| {
                        [
                            "authorization_endpoint",
                            "token_endpoint",
                            "registration_endpoint",
                        ]
                        .into_iter()
                        .filter(|key| {
                            m.get(*key)
                                .and_then(Value::as_str)
                                .is_some_and(|u| !u.starts_with(base.as_str()))
                        })
                        .collect()
                    })
                    .unwrap_or_default();
                if outside.is_empty() {
                    Check::ok(NAME, format!("{health} answers"))
                } else {
                    Check::warn(
                        NAME,
                        format!(
                            "the metadata's {} are not under {base}",
                            outside.join(", ")
                        ),
                        "restart the provider after changing http.public_base",
                    )
                }
            }
            Ok(f) => Check::fail(
                NAME,
                format!("{health} answered HTTP {}: {}", f.status, excerpt(&f.body)),
                "the provider can't reach its database, or the reverse proxy sends /health elsewhere",
            ),
            Err(e) => Check::fail(
                NAME,
                format!("{health}: {e}"),
                "make http.public_base reach the provider (DNS, reverse proxy)",
            ),
        };
        checks.push(check);
        if let Some(jwks_uri) = metadata
            .and_then(|m| m.get("jwks_uri"))
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok())
        {
            checks.push(self.published_keys(&jwks_uri).await);
        }
        checks
    }

    /// The JWKS the running provider publishes holds the configured keys.
    async fn published_keys(&self, jwks_uri: &Url) -> Check {
        const NAME: &str = "published keys";
        let mut ours: Vec<&str> = self
            .settings
            .keystore
            .keys()
            .iter()
            .map(|k| k.kid.as_str())
            .collect();
        ours.sort_unstable();
        let fetched = match self.get(jwks_uri).await {
            Ok(f) if f.status == StatusCode::OK => f,
            Ok(f) => {
                return Check::fail(
                    NAME,
                    format!("{jwks_uri} answered HTTP {}", f.status),
                    "the reverse proxy must pass the jwks_uri to the provider",
                )
            }
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("{jwks_uri}: {e}"),
                    "make the jwks_uri reach the provider",
                )
            }
        };
        let mut published: Vec<String> = fetched
            .json()
            .and_then(|j| j.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.get("kid").and_then(Value::as_str).map(str::to_owned))
            .collect();
        published.sort_unstable();
        if published == ours {
            Check::ok(
                NAME,
                format!(
                    "{jwks_uri} publishes the {} configured key{}",
                    ours.len(),
                    if ours.len() == 1 { "" } else { "s" }
                ),
            )
        } else {
            Check::warn(
                NAME,
                format!(
                    "{jwks_uri} publishes [{}], the configuration has [{}]",
                    published.join(", "),
                    ours.join(", ")
                ),
                "restart the provider after changing secrets.keys, or check that -c names its configuration",
            )
        }
    }

    /// Where the homeserver's client well-known is: on the server name, or on `matrix.endpoint`
    /// for a loopback server name (development).
    fn well_known_url(&self) -> Option<Url> {
        let server_name = self.settings.matrix.homeserver.trim();
        let path = ".well-known/matrix/client";
        if is_loopback_host(server_name) {
            as_base(self.settings.matrix.endpoint.clone())
                .join(path)
                .ok()
        } else {
            Url::parse(&format!("https://{server_name}/{path}")).ok()
        }
    }

    /// Step 5: the homeserver's well-known; returns the client base URL for the next steps.
    async fn well_known(&self, metadata: Option<&Value>) -> (Check, Url) {
        const NAME: &str = "homeserver well-known";
        let fallback = as_base(self.settings.matrix.endpoint.clone());
        let issuer = self.settings.issuer.as_str();
        let Some(url) = self.well_known_url() else {
            return (
                Check::fail(
                    NAME,
                    format!(
                        "`{}` can't make a well-known URL",
                        self.settings.matrix.homeserver
                    ),
                    "matrix.homeserver must be the server name, like example.com",
                ),
                fallback,
            );
        };
        let serve = format!(
            "serve {{\"m.homeserver\": {{\"base_url\": …}}, \"org.matrix.msc2965.authentication\": {{\"issuer\": \"{issuer}\"}}}} at {url}"
        );
        let fetched = match self.get(&url).await {
            Ok(f) if f.status == StatusCode::OK => f,
            Ok(f) => {
                return (
                    Check::fail(NAME, format!("{url} answered HTTP {}", f.status), serve),
                    fallback,
                )
            }
            Err(e) => return (Check::fail(NAME, format!("{url}: {e}"), serve), fallback),
        };
        let Some(document) = fetched.json() else {
            return (
                Check::fail(NAME, format!("{url} is not JSON"), serve),
                fallback,
            );
        };
        let base_url = document
            .pointer("/m.homeserver/base_url")
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok())
            .map(as_base);
        let Some(base_url) = base_url else {
            return (
                Check::fail(NAME, format!("{url} has no m.homeserver.base_url"), serve),
                fallback,
            );
        };
        // MSC2965: older clients read the issuer here and compare it exactly.
        let auth = document.get("org.matrix.msc2965.authentication");
        let check = match auth.and_then(|a| a.get("issuer")).and_then(Value::as_str) {
            None => Check::warn(
                NAME,
                format!("{url} names {base_url} but no org.matrix.msc2965.authentication issuer"),
                format!("older OIDC-aware clients need it: add \"org.matrix.msc2965.authentication\": {{\"issuer\": \"{issuer}\"}}"),
            ),
            Some(found) if found != issuer => Check::fail(
                NAME,
                format!("{url} names issuer {found}, this provider is {issuer}"),
                format!("set org.matrix.msc2965.authentication.issuer to \"{issuer}\""),
            ),
            Some(_) => {
                let ours = metadata
                    .and_then(|m| m.get("account_management_uri"))
                    .and_then(Value::as_str);
                let theirs = auth.and_then(|a| a.get("account")).and_then(Value::as_str);
                match (ours, theirs) {
                    (Some(ours), Some(theirs)) if ours != theirs => Check::warn(
                        NAME,
                        format!("{url} names the account page {theirs}, this provider's is {ours}"),
                        format!("set org.matrix.msc2965.authentication.account to \"{ours}\""),
                    ),
                    _ => Check::ok(NAME, format!("{url} names {base_url} and this issuer")),
                }
            }
        };
        (check, base_url)
    }

    /// Step 6: the versions list v1.15 or later; gives the homeserver's `Date`.
    async fn versions(&self, base: &Url) -> (Check, Option<(DateTime<Utc>, DateTime<Utc>)>) {
        const NAME: &str = "client versions";
        let url = base
            .join("_matrix/client/versions")
            .unwrap_or_else(|_| base.clone());
        let fetched = match self.get(&url).await {
            Ok(f) => f,
            Err(e) => {
                return (
                    Check::fail(
                        NAME,
                        format!("the homeserver is unreachable at {url}: {e}"),
                        "start the homeserver, or fix its base URL (well-known m.homeserver.base_url, matrix.endpoint)",
                    ),
                    None,
                )
            }
        };
        // The instant this machine thinks the answer was made: halfway through the request.
        let midpoint = fetched.sent + (fetched.received - fetched.sent) / 2;
        let date = fetched.date.map(|d| (d, midpoint));
        if fetched.status != StatusCode::OK {
            return (
                Check::fail(
                    NAME,
                    format!("{url} answered HTTP {}", fetched.status),
                    "is this a Matrix homeserver? check its base URL",
                ),
                date,
            );
        }
        let versions: Vec<String> = fetched
            .json()
            .and_then(|j| j.get("versions").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let newest = versions.iter().filter_map(|v| spec_version(v)).max();
        let check = match newest {
            Some(v) if v >= OAUTH_SPEC_VERSION => {
                Check::ok(NAME, format!("{url} lists v{}.{}", v.0, v.1))
            }
            _ => Check::warn(
                NAME,
                format!("{url} lists no spec version from v1.15 on"),
                "OAuth-aware clients (matrix-rust-sdk) only look for auth_metadata on v1.15+: upgrade the homeserver",
            ),
        };
        (check, date)
    }

    /// Step 7: `auth_metadata` is ours.
    async fn auth_metadata(&self, base: &Url) -> Check {
        const NAME: &str = "auth_metadata";
        let issuer = self.settings.issuer.as_str();
        let enable = format!(
            "enable matrix_authentication_service in the homeserver with endpoint {} and the shared secret",
            self.settings.public_base
        );
        let unreachable = "start the homeserver, or fix its base URL (well-known m.homeserver.base_url, matrix.endpoint)";
        let mut found = Vec::new();
        for path in [
            "_matrix/client/v1/auth_metadata",
            "_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        ] {
            let url = base.join(path).unwrap_or_else(|_| base.clone());
            let outcome = match self.get(&url).await {
                Err(e) => Err((format!("{url}: {e}"), true)),
                Ok(f) if f.status != StatusCode::OK => Err((
                    format!(
                        "{url} answered HTTP {}{}",
                        f.status,
                        f.errcode().map(|c| format!(" {c}")).unwrap_or_default()
                    ),
                    false,
                )),
                Ok(f) => match f
                    .json()
                    .and_then(|j| j.get("issuer").and_then(Value::as_str).map(str::to_owned))
                {
                    None => Err((format!("{url} has no issuer"), false)),
                    Some(theirs) => Ok((url, theirs)),
                },
            };
            found.push(outcome);
        }
        let mut found = found.into_iter();
        let stable = found.next().unwrap_or_else(|| Err((String::new(), false)));
        let unstable = found.next().unwrap_or_else(|| Err((String::new(), false)));
        match stable {
            Err((why, true)) => Check::fail(NAME, why, unreachable),
            Err((why, false)) => Check::fail(NAME, why, enable),
            // Clients compare the issuer exactly (MSC2965).
            Ok((url, theirs)) if theirs != issuer => Check::fail(
                NAME,
                format!("{url} names issuer {theirs}, this provider is {issuer}"),
                format!(
                    "point the homeserver's matrix_authentication_service.endpoint at {}",
                    self.settings.public_base
                ),
            ),
            Ok((url, _)) => match unstable {
                Ok((_, theirs)) if theirs == issuer => {
                    Check::ok(NAME, format!("{url} (and the unstable path) name this issuer"))
                }
                Ok((unstable_url, theirs)) => Check::fail(
                    NAME,
                    format!("{unstable_url} names issuer {theirs}, this provider is {issuer}"),
                    "the homeserver serves two different metadata documents: check its configuration",
                ),
                Err((why, _)) => Check::warn(
                    NAME,
                    format!("{url} names this issuer, but {why}"),
                    "older clients read the MSC2965 unstable path: upgrade the homeserver",
                ),
            },
        }
    }

    /// Step 8: the homeserver API takes the shared secret. Asked through the provider's own
    /// homeserver connection ([`crate::core::matrix::homeserver::connect`]), so the check takes the
    /// path the provider takes: whether a name is free (any answer about the name means the
    /// secret was accepted; nothing is created).
    async fn shared_secret(&self) -> Check {
        const NAME: &str = "shared secret";
        let matrix = &self.settings.matrix;
        let base = as_base(matrix.endpoint.clone());
        // For the messages only: the connection builds the URL.
        let path = match matrix.kind {
            HomeserverKind::Synapse => "_synapse/mas/is_localpart_available",
            HomeserverKind::SynapseLegacy => "_synapse/admin/v1/username_available",
        };
        let homeserver = crate::core::matrix::homeserver::connect(matrix);
        match homeserver.is_localpart_available(PROBE_LOCALPART).await {
            Ok(_) => Check::ok(NAME, format!("{base}{path} accepts matrix.secret")),
            Err(HomeserverError::Unauthorized { status }) => Check::fail(
                NAME,
                format!("{base}{path} refused matrix.secret (HTTP {status})"),
                "make matrix.secret equal the homeserver's matrix_authentication_service.secret",
            ),
            Err(HomeserverError::Refused { status: 404, .. }) => Check::fail(
                NAME,
                format!("{base}{path} doesn't exist (HTTP 404)"),
                match matrix.kind {
                    HomeserverKind::Synapse => "enable matrix_authentication_service in Synapse (1.136 or later); for an older Synapse set matrix.kind: synapse_legacy",
                    HomeserverKind::SynapseLegacy => "this homeserver has no /_synapse/admin API at matrix.endpoint: check the endpoint (for Synapse 1.136 or later use matrix.kind: synapse)",
                },
            ),
            Err(HomeserverError::Unreachable(e)) => Check::fail(
                NAME,
                format!("the homeserver API is unreachable at {base}: {e}"),
                "start the homeserver, or fix matrix.endpoint (where the provider reaches it)",
            ),
            Err(e) => Check::fail(
                NAME,
                format!("{base}{path}: {e}"),
                "look at the homeserver's logs",
            ),
        }
    }

    /// Step 9: the homeserver's `/login` is the provider's.
    async fn legacy_login(&self, base: &Url) -> Check {
        const NAME: &str = "legacy login";
        let path = format!(
            "{}{}",
            endpoints::MATRIX_CLIENT_PREFIXES[1],
            endpoints::COMPAT_LOGIN
        );
        let ours_url = endpoints::url(&self.settings.public_base, &path);
        let theirs_url = base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| base.clone());
        let route = format!(
            "route /_matrix/client/*/login, /logout and /refresh on the homeserver's public address to {}",
            self.settings.public_base
        );
        let flows = |f: &Fetched| {
            (f.status == StatusCode::OK)
                .then(|| f.json()?.get("flows").cloned())
                .flatten()
        };
        let ours = match self.get(&ours_url).await {
            Ok(f) => match flows(&f) {
                Some(flows) => flows,
                None => {
                    return Check::fail(
                        NAME,
                        format!("{ours_url} answered HTTP {} without flows", f.status),
                        "the provider's compatibility layer doesn't answer: check the reverse proxy in front of it",
                    )
                }
            },
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("{ours_url}: {e}"),
                    "start the provider",
                )
            }
        };
        let theirs = match self.get(&theirs_url).await {
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("{theirs_url}: {e}"),
                    "start the homeserver, or fix its base URL",
                )
            }
            Ok(f) => match flows(&f) {
                Some(flows) => flows,
                None => {
                    return Check::fail(
                        NAME,
                        format!(
                            "{theirs_url} answered HTTP {}{}",
                            f.status,
                            f.errcode().map(|c| format!(" {c}")).unwrap_or_default()
                        ),
                        route,
                    )
                }
            },
        };
        if theirs == ours {
            let names: Vec<&str> = ours
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.get("type").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            Check::ok(
                NAME,
                format!(
                    "{theirs_url} answers the provider's flows ({})",
                    names.join(", ")
                ),
            )
        } else {
            Check::fail(
                NAME,
                format!("{theirs_url} answers other flows than the provider: {theirs}"),
                route,
            )
        }
    }

    /// Step 10: the homeserver's clock against ours.
    fn clock_skew(&self, date: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Check {
        const NAME: &str = "clock";
        let Some((theirs, ours)) = date else {
            return Check::warn(
                NAME,
                "not measured: no Date header from the homeserver",
                "make the homeserver reachable; its HTTP answers carry its time",
            );
        };
        let skew = (theirs - ours).num_seconds();
        // `Date` has a resolution of one second.
        let text = if skew.abs() <= 1 {
            "the homeserver's clock agrees with this machine's (within 1 s)".to_owned()
        } else {
            format!(
                "the homeserver's clock is {} s {} this machine's",
                skew.abs(),
                if skew > 0 { "ahead of" } else { "behind" }
            )
        };
        let sync = "synchronise both clocks with NTP (e.g. systemd-timesyncd, chrony)";
        if skew.abs() > SKEW_FAIL {
            Check::fail(NAME, text, sync)
        } else if skew.abs() > SKEW_WARN {
            Check::warn(NAME, text, sync)
        } else {
            Check::ok(NAME, text)
        }
    }
}

/// The file of a SQLite URL (`None` for PostgreSQL and in-memory databases).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr as _;
    if crate::storage::DatabaseKind::of_url(url).ok()? != crate::storage::DatabaseKind::Sqlite {
        return None;
    }
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty()).then(|| file.to_path_buf())
}

/// The start of a body, on one line, for messages.
fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = one_line.chars().take(120).collect();
    if cut.len() < one_line.len() {
        cut.push('…');
    }
    cut
}

/// Runs every check of `settings` on the system clock.
pub async fn run(settings: &Settings) -> Report {
    let entropy = Entropy::system();
    Doctor::new(settings, entropy.clock.as_ref()).run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_found_in_urls() {
        assert_eq!(
            sqlite_file("sqlite://data/provider.db"),
            Some(std::path::PathBuf::from("data/provider.db"))
        );
        assert_eq!(sqlite_file("postgres://db/provider"), None);
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }

    #[test]
    fn spec_versions_are_compared_by_number() {
        assert_eq!(spec_version("v1.15"), Some((1, 15)));
        assert_eq!(spec_version("r0.6.1"), None);
        assert!(spec_version("v1.9").unwrap() < OAUTH_SPEC_VERSION);
        assert!(spec_version("v1.16").unwrap() >= OAUTH_SPEC_VERSION);
    }

    #[test]
    fn the_report_is_plain_on_a_pipe() {
        let report = Report {
            checks: vec![
                Check::ok("a", "fine"),
                Check::warn("b", "meh", "do this"),
                Check::fail("c", "broken", "fix that"),
            ],
        };
        let text = report.text(false);
        assert_eq!(
            text,
            "✅ a: fine\n⚠️ b: meh → do this\n❌ c: broken → fix that\n1 passed, 1 warning, 1 failed\n"
        );
        assert!(!text.contains('\x1b'));
        assert!(report.text(true).contains("\x1b[31m"));
        assert!(report.failed());
        assert_eq!(report.json()["ok"], false);
        assert_eq!(report.json()["checks"][2]["status"], "fail");
    }
}
