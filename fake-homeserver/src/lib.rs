//! A stand-in for Synapse (≥ 1.136) in `matrix_authentication_service` mode (MSC3861): it
//! advertises the provider to clients and delegates every authentication decision to it. It
//! talks to the provider over HTTP only and never links the provider crate.
//!
//! What it serves:
//! - discovery for clients (MSC2965): `/.well-known/matrix/client`, `/_matrix/client/versions`,
//!   `auth_metadata` (the provider's metadata, unchanged and cached); not the unstable
//!   `auth_issuer`, which Synapse 1.163 no longer serves;
//! - a few client endpoints (`whoami`, `devices`, `profile`, `capabilities`), each request
//!   authenticated by introspecting its bearer token at the provider (cached like Synapse);
//! - the homeserver API the provider calls, `/_synapse/mas/*` and the legacy
//!   `/_synapse/admin/*`, guarded by the shared secret, every call recorded in a journal;
//! - optionally (`proxy_login`), a reverse proxy of `/login`, `/logout`, `/refresh` to the
//!   provider's compatibility layer;
//! - `404 M_UNRECOGNIZED` for everything Synapse leaves to the provider in this mode
//!   (`/register`, `/account/password`, `/account/3pid/*`, `/account/deactivate`…).
//!
//! As a library, in a test:
//! ```no_run
//! # async fn demo() -> Result<(), fake_homeserver::Error> {
//! use fake_homeserver::{Config, FakeHomeserver};
//!
//! let homeserver = FakeHomeserver::start_on(
//!     Config {
//!         server_name: "localhost".into(),
//!         provider_endpoint: "http://127.0.0.1:8080/".parse().unwrap(),
//!         secret: "shared-secret".into(),
//!         proxy_login: true,
//!         public_base: None,
//!     },
//!     "127.0.0.1:0".parse().unwrap(),
//! )
//! .await?;
//! homeserver.store().insert_device("alice", "DEVICE1");
//! // … drive the provider and clients against homeserver.base_url() …
//! assert!(homeserver.journal().iter().all(|call| call.status < 500));
//! homeserver.shutdown().await;
//! # Ok(()) }
//! ```
//! As a binary: `fake-homeserver --server-name localhost --provider-endpoint
//! http://127.0.0.1:8080/ --secret shared-secret --proxy-login` (see `--help`).

mod admin_api;
mod auth;
mod client_api;
mod error;
mod ids;
mod journal;
mod json_body;
mod mas_api;
mod proxy;
mod secret;
mod store;
mod upstream;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Method};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;
use url::Url;

pub use auth::Requester;
pub use error::{Error, MatrixError};
pub use journal::JournalEntry;
pub use store::{DeviceRecord, Store, UserRecord};

use journal::Journal;
use upstream::Upstream;

/// The Matrix spec versions this homeserver claims. OAuth-aware clients (matrix-rust-sdk) only
/// ask for `auth_metadata` when `v1.15` or later is listed (Matrix spec v1.15, MSC2965).
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
];

/// `GET /_matrix/client/versions`.
pub fn versions() -> Value {
    json!({ "versions": SPEC_VERSIONS, "unstable_features": {} })
}

/// `GET /.well-known/matrix/client`: the homeserver's base URL, and for older OIDC-aware clients
/// the provider's issuer and account page (`org.matrix.msc2965.authentication`, MSC2965). The
/// issuer is passed as the provider wrote it: clients compare it exactly, so it is never
/// re-normalised through a URL parser.
pub fn client_well_known(homeserver_base: &Url, issuer: &str, account: Option<&str>) -> Value {
    let mut auth = json!({ "issuer": issuer });
    if let (Some(account), Value::Object(map)) = (account, &mut auth) {
        map.insert("account".into(), account.into());
    }
    json!({
        "m.homeserver": { "base_url": homeserver_base.as_str() },
        "org.matrix.msc2965.authentication": auth,
    })
}

/// How to run the homeserver.
#[derive(Clone)]
pub struct Config {
    /// The Matrix server name: user IDs are `@<localpart>:<server_name>`.
    pub server_name: String,
    /// Base URL of the provider (`matrix_authentication_service.endpoint`); a missing trailing
    /// `/` is added.
    pub provider_endpoint: Url,
    /// The secret shared with the provider, both ways.
    pub secret: String,
    /// Reverse-proxy `/login`, `/logout`, `/refresh` to the provider.
    pub proxy_login: bool,
    /// The base URL clients are told (`m.homeserver.base_url`); defaults to
    /// `http://<bound address>/`.
    pub public_base: Option<Url>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server_name", &self.server_name)
            .field("provider_endpoint", &self.provider_endpoint.as_str())
            .field("secret", &"<redacted>")
            .field("proxy_login", &self.proxy_login)
            .field("public_base", &self.public_base.as_ref().map(Url::as_str))
            .finish()
    }
}

/// Appends a `/` to the path unless it ends with one, so relative joins stay below it.
fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

fn check_base_url(url: Url, what: &str) -> Result<Url, Error> {
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::Config(format!(
            "{what} must be an http(s) URL: {url}"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(format!(
            "{what} must not have a query or fragment: {url}"
        )));
    }
    Ok(with_trailing_slash(url))
}

/// The shared state of a running homeserver; cloning shares it.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    server_name: String,
    secret: String,
    proxy_login: bool,
    public_base: Url,
    store: Store,
    journal: Journal,
    upstream: Upstream,
    /// A simulated outage of the homeserver API (see [`AppState::set_unavailable`]).
    unavailable: std::sync::atomic::AtomicBool,
    /// A paused homeserver API (see [`AppState::pause`]): calls wait while it is `true`.
    paused: tokio::sync::watch::Sender<bool>,
    /// How many calls are waiting on the pause, and a signal each time that number changes.
    held: std::sync::atomic::AtomicUsize,
    held_changed: tokio::sync::Notify,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("server_name", &self.inner.server_name)
            .field(
                "provider_endpoint",
                &self.inner.upstream.endpoint().as_str(),
            )
            .field("proxy_login", &self.inner.proxy_login)
            .field("public_base", &self.inner.public_base.as_str())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Checks the configuration and builds the state; `default_public_base` is used when the
    /// configuration names none.
    pub fn new(config: Config, default_public_base: Url) -> Result<Self, Error> {
        let server_name = config.server_name;
        if server_name.is_empty()
            || server_name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '@' | '/' | '#' | '?'))
        {
            return Err(Error::Config(format!(
                "invalid server name: {server_name:?}"
            )));
        }
        if config.secret.is_empty() {
            return Err(Error::Config("the shared secret must not be empty".into()));
        }
        let endpoint = check_base_url(config.provider_endpoint, "provider endpoint")?;
        let public_base = check_base_url(
            config.public_base.unwrap_or(default_public_base),
            "public base",
        )?;
        let upstream = Upstream::new(endpoint, config.secret.clone())?;
        Ok(Self {
            inner: Arc::new(Shared {
                server_name,
                secret: config.secret,
                proxy_login: config.proxy_login,
                public_base,
                store: Store::new(),
                journal: Journal::default(),
                upstream,
                unavailable: std::sync::atomic::AtomicBool::new(false),
                paused: tokio::sync::watch::Sender::new(false),
                held: std::sync::atomic::AtomicUsize::new(0),
                held_changed: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Users and devices.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Every `/_synapse/*` call received so far, in order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.inner.journal.snapshot()
    }

    /// Simulates an outage of the homeserver API, for fault tests: while set, every
    /// `/_synapse/*` call is answered 503 `M_UNKNOWN` (and journaled), as a homeserver behind a
    /// reverse proxy answers while it restarts. Client endpoints keep working.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner
            .unavailable
            .store(unavailable, std::sync::atomic::Ordering::SeqCst);
    }

    /// Is a simulated outage on?
    pub fn is_unavailable(&self) -> bool {
        self.inner
            .unavailable
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pauses the homeserver API, for tests of a slow homeserver: until [`AppState::resume`],
    /// every `/_synapse/*` call waits before it is answered (a homeserver stuck in a long
    /// garbage collection or behind a saturated proxy). [`AppState::held`] counts the waiting
    /// calls; a caller that gives up (a client timeout) stops being counted. Client endpoints
    /// keep working.
    pub fn pause(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Ends a pause: the waiting calls go on and are answered.
    pub fn resume(&self) {
        self.inner.paused.send_replace(false);
    }

    /// How many `/_synapse/*` calls are waiting on the pause now.
    pub fn held(&self) -> usize {
        self.inner.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` calls are waiting on the pause (no timeout of its own: wrap it
    /// in one if the calls might never come).
    pub async fn wait_until_held(&self, n: usize) {
        loop {
            let changed = self.inner.held_changed.notified();
            if self.held() >= n {
                return;
            }
            changed.await;
        }
    }

    /// Waits while the API is paused, counted in [`AppState::held`].
    pub(crate) async fn wait_while_paused(&self) {
        let mut paused = self.inner.paused.subscribe();
        if !*paused.borrow_and_update() {
            return;
        }
        let _held = HeldCall::new(self);
        // `Err`: the sender is gone with the state, so nobody can resume; go on.
        let _ = paused.wait_for(|paused| !*paused).await;
    }

    /// The base URL clients are told.
    pub fn public_base(&self) -> &Url {
        &self.inner.public_base
    }

    /// The Matrix server name.
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    pub(crate) fn secret(&self) -> &str {
        &self.inner.secret
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    pub(crate) fn journal_log(&self) -> &Journal {
        &self.inner.journal
    }
}

/// A call waiting on a pause, counted while it lives (also when its future is dropped because
/// the caller hung up).
struct HeldCall<'a>(&'a AppState);

impl<'a> HeldCall<'a> {
    fn new(state: &'a AppState) -> Self {
        state
            .inner
            .held
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        state.inner.held_changed.notify_waiters();
        Self(state)
    }
}

impl Drop for HeldCall<'_> {
    fn drop(&mut self) {
        self.0
            .inner
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.inner.held_changed.notify_waiters();
    }
}

/// The whole homeserver as an axum router.
pub fn router(state: AppState) -> Router {
    use client_api as c;

    let mut client = Router::new()
        .route("/.well-known/matrix/client", get(c::well_known))
        .route("/_matrix/client/versions", get(c::versions))
        .route("/_matrix/client/v1/auth_metadata", get(c::auth_metadata))
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            get(c::auth_metadata),
        );
    // No `…/org.matrix.msc2965/auth_issuer`: Synapse 1.163 dropped it, so it falls through to
    // 404 `M_UNRECOGNIZED` like any unknown path (SPEC-NOTES.md, discovery).
    for version in ["r0", "v3"] {
        let at = |path: &str| format!("/_matrix/client/{version}{path}");
        client = client
            .route(&at("/capabilities"), get(c::capabilities))
            .route(&at("/account/whoami"), get(c::whoami))
            .route(&at("/devices"), get(c::devices))
            .route(&at("/devices/{device_id}"), get(c::device))
            .route(&at("/profile/{user_id}"), get(c::profile));
        if state.inner.proxy_login {
            // The legacy login API, answered by the provider's compatibility layer (MSC3861,
            // spec notes "legacy login through the provider").
            client = client
                .route(&at("/login"), get(proxy::forward).post(proxy::forward))
                .route(&at("/login/sso/redirect"), get(proxy::forward))
                .route(&at("/login/sso/redirect/{idp}"), get(proxy::forward))
                .route(&at("/logout"), post(proxy::forward))
                .route(&at("/logout/all"), post(proxy::forward))
                .route(&at("/refresh"), post(proxy::forward));
        }
    }

    let synapse = Router::new()
        .route("/_synapse/mas/query_user", get(mas_api::query_user))
        .route(
            "/_synapse/mas/is_localpart_available",
            get(mas_api::is_localpart_available),
        )
        .route(
            "/_synapse/mas/provision_user",
            post(mas_api::provision_user),
        )
        .route("/_synapse/mas/delete_user", post(mas_api::delete_user))
        .route(
            "/_synapse/mas/reactivate_user",
            post(mas_api::reactivate_user),
        )
        .route(
            "/_synapse/mas/set_displayname",
            post(mas_api::set_displayname),
        )
        .route(
            "/_synapse/mas/unset_displayname",
            post(mas_api::unset_displayname),
        )
        .route("/_synapse/mas/upsert_device", post(mas_api::upsert_device))
        .route(
            "/_synapse/mas/update_device_display_name",
            post(mas_api::update_device_display_name),
        )
        .route("/_synapse/mas/delete_device", post(mas_api::delete_device))
        .route("/_synapse/mas/sync_devices", post(mas_api::sync_devices))
        .route(
            "/_synapse/mas/allow_cross_signing_reset",
            post(mas_api::allow_cross_signing_reset),
        )
        .route(
            "/_synapse/admin/v2/users/{mxid}",
            get(admin_api::get_user).put(admin_api::put_user),
        )
        .route(
            "/_synapse/admin/v2/users/{mxid}/devices",
            get(admin_api::list_devices).post(admin_api::create_device),
        )
        .route(
            "/_synapse/admin/v2/users/{mxid}/devices/{device_id}",
            get(admin_api::get_device)
                .put(admin_api::update_device)
                .delete(admin_api::delete_device),
        )
        .route(
            "/_synapse/admin/v2/users/{mxid}/delete_devices",
            post(admin_api::delete_devices),
        )
        .route(
            "/_synapse/admin/v1/username_available",
            get(admin_api::username_available),
        )
        .route(
            "/_synapse/admin/v1/deactivate/{mxid}",
            post(admin_api::deactivate),
        )
        .route_layer(from_fn_with_state(state.clone(), secret::require_secret));

    // Synapse's CORS policy on the client API, so web clients can use the homeserver.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            HeaderName::from_static("content-type"),
            HeaderName::from_static("authorization"),
            HeaderName::from_static("date"),
        ]);

    client
        .merge(synapse)
        .fallback(c::unrecognized)
        .method_not_allowed_fallback(c::method_not_allowed)
        .layer(from_fn_with_state(state.clone(), journal::record))
        .layer(cors)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A homeserver serving in a tokio task. Dropping it stops the server too.
#[derive(Debug)]
pub struct FakeHomeserver {
    base_url: Url,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// How long [`FakeHomeserver::shutdown`] waits for open connections before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl FakeHomeserver {
    /// Serves on an already bound listener, in a spawned tokio task.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Self, Error> {
        let addr = listener.local_addr()?;
        // A wildcard address is not one clients can dial: advertise loopback instead.
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let base_url = Url::parse(&format!("http://{}/", SocketAddr::new(host, addr.port())))
            .map_err(|e| Error::Config(format!("cannot build the base URL: {e}")))?;
        let state = AppState::new(config, base_url.clone())?;
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // Either an explicit stop or the handle being dropped.
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the homeserver stopped with an error");
            }
        });
        tracing::info!(%base_url, server_name = state.server_name(), "fake homeserver listening");
        Ok(Self {
            base_url,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Binds `addr` (e.g. `127.0.0.1:0` for any free port) and serves on it.
    pub async fn start_on(config: Config, addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await?;
        Self::start(config, listener).await
    }

    /// Where the server listens, e.g. `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Users and devices.
    pub fn store(&self) -> &Store {
        self.state.store()
    }

    /// Every `/_synapse/*` call received so far, in order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state.journal()
    }

    /// See [`AppState::set_unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.set_unavailable(unavailable);
    }

    /// The shared state (for embedding the router elsewhere).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting connections, lets in-flight requests finish (up to a few seconds), and
    /// waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_include_the_oauth_spec_version() {
        let v = versions();
        let list = v["versions"].as_array().unwrap();
        assert!(list.iter().any(|x| x == "v1.15"));
    }

    #[test]
    fn well_known_points_at_the_provider() {
        let hs = Url::parse("http://localhost:8008/").unwrap();
        assert_eq!(
            client_well_known(
                &hs,
                "http://localhost:8080/",
                Some("http://localhost:8080/account")
            ),
            json!({
                "m.homeserver": {"base_url": "http://localhost:8008/"},
                "org.matrix.msc2965.authentication": {
                    "issuer": "http://localhost:8080/",
                    "account": "http://localhost:8080/account",
                },
            })
        );
        let bare = client_well_known(&hs, "https://auth.example.com", None);
        assert_eq!(
            bare["org.matrix.msc2965.authentication"]["issuer"], "https://auth.example.com",
            "the issuer is not normalised"
        );
        assert!(bare["org.matrix.msc2965.authentication"]
            .get("account")
            .is_none());
    }

    fn config() -> Config {
        Config {
            server_name: "hs.test".into(),
            provider_endpoint: Url::parse("http://auth.test/prefix").unwrap(),
            secret: "s".into(),
            proxy_login: false,
            public_base: None,
        }
    }

    #[test]
    fn config_is_checked_and_normalised() {
        let default_base = Url::parse("http://127.0.0.1:1/").unwrap();
        let state = AppState::new(config(), default_base.clone()).unwrap();
        assert_eq!(
            state.upstream().endpoint().as_str(),
            "http://auth.test/prefix/"
        );
        assert_eq!(state.public_base(), &default_base);
        assert!(!format!("{:?}", config()).contains("\"s\""));

        let bad = [
            Config {
                secret: String::new(),
                ..config()
            },
            Config {
                server_name: "@x".into(),
                ..config()
            },
            Config {
                provider_endpoint: Url::parse("ftp://auth.test/").unwrap(),
                ..config()
            },
            Config {
                public_base: Some(Url::parse("http://hs.test/?x=1").unwrap()),
                ..config()
            },
        ];
        for config in bad {
            assert!(matches!(
                AppState::new(config, default_base.clone()),
                Err(Error::Config(_))
            ));
        }
    }
}
