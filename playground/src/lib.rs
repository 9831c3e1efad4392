//! The playground: a whole MSC3861 deployment on localhost from one command.
//!
//! One process runs the provider (SQLite in the data directory by default), the fake homeserver
//! wired to it both ways with a shared secret (it introspects tokens at the provider, proxies the
//! legacy login API to it, and the provider provisions users and devices on it), and a
//! dashboard: the deployment's documents, a browser OIDC client, a device-flow panel, a legacy
//! login panel, a live log of every HTTP exchange, and a mailbox showing every mail the provider
//! sent (its mail is captured in memory, never sent anywhere).
//!
//! The configuration (signing keys, secrets, the demo client), the seeded accounts' passwords
//! and the TLS certificate are made once into the data directory and kept, so clients that
//! cached keys, registrations or certificates keep working across runs. Addresses and the
//! database come from the command line each time, applied through the same `PROVIDER__…`
//! overrides an operator would use.
//!
//! With `homeserver: HomeserverChoice::Synapse` (`--homeserver synapse`), a real Synapse (PyPI
//! `matrix-synapse`, pinned by `synapse-harness`) runs in place of the fake, with Debian's nginx
//! in front of it on the homeserver's port, routing per `deploy/nginx/matrix.conf`: client
//! authors try their client against the real thing. Its virtualenv is made on first use.
//!
//! With TLS, clients reach the provider and the homeserver over HTTPS; the two servers reach
//! each other over plain HTTP on loopback-only ports (as a homeserver reaches its provider at an
//! internal endpoint in a real deployment), since their HTTP clients trust only the public
//! certificate authorities.

mod accounts;
mod dashboard;
mod data;
mod error;
pub mod exchange;
mod synapse;
mod tls;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use axum::Router;
use provider::{
    clock::Entropy,
    config::{self, Settings},
    core::matrix::provisioning::Worker,
    http::AppState,
    server::{self, ServeError},
    storage::Storage,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use url::Url;

pub use accounts::Account;
pub use data::{config_path, ACCOUNTS_FILE, CONFIG_FILE, DATABASE_FILE, DEMO_CLIENT_ID};
pub use error::Error;
pub use exchange::{Entry, ExchangeLog};
pub use synapse::RealSynapse;
pub use tls::{Tls, CERT_FILE, KEY_FILE};

/// How long stopping waits for requests in flight before it cuts them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to start the playground.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the configuration, the SQLite database, the accounts and the certificate live.
    pub data_dir: PathBuf,
    /// Start over: new keys, accounts and database (the certificate is kept).
    pub fresh: bool,
    /// The address every server listens on.
    pub host: IpAddr,
    /// The provider's port; 0 picks a free one (as do the other two).
    pub port: u16,
    pub homeserver_port: u16,
    pub dashboard_port: u16,
    /// The Matrix server name: user IDs are `@alice:<server_name>`.
    pub server_name: String,
    /// Use this database instead of the SQLite file in the data directory.
    pub database_url: Option<String>,
    /// Serve HTTPS with a self-signed certificate kept in the data directory.
    pub tls: bool,
    /// Which homeserver runs: the fake (default) or a real Synapse behind nginx.
    pub homeserver: HomeserverChoice,
}

/// Which homeserver the playground runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HomeserverChoice {
    /// The `fake-homeserver` crate, in this process.
    #[default]
    Fake,
    /// A real Synapse (child process) with nginx in front of it.
    Synapse,
}

/// The homeserver that runs.
#[derive(Debug)]
pub enum Homeserver {
    /// The fake homeserver's state (its users, devices and journal).
    Fake(fake_homeserver::AppState),
    /// A real Synapse and the nginx in front of it (boxed: it is large, and there is one).
    Synapse(Box<RealSynapse>),
}

impl Homeserver {
    /// The Matrix server name.
    pub fn server_name(&self) -> &str {
        match self {
            Self::Fake(fake) => fake.server_name(),
            Self::Synapse(real) => real.server_name(),
        }
    }

    /// The fake homeserver's state, when it is the fake that runs.
    pub fn fake(&self) -> Option<&fake_homeserver::AppState> {
        match self {
            Self::Fake(fake) => Some(fake),
            Self::Synapse(_) => None,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("playground-data"),
            fresh: false,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            homeserver_port: 8008,
            dashboard_port: 8090,
            server_name: "localhost".to_owned(),
            database_url: None,
            tls: false,
            homeserver: HomeserverChoice::Fake,
        }
    }
}

/// Where clients reach each part, each ending with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// The provider's issuer (and public base).
    pub issuer: Url,
    /// The homeserver: what a Matrix client is pointed at.
    pub homeserver: Url,
    pub dashboard: Url,
}

impl Urls {
    /// The dashboard page the browser client comes back to (the demo client's redirect URI).
    pub fn callback(&self) -> String {
        format!("{}callback", self.dashboard)
    }

    /// The browser client's page (the demo client's post-logout redirect URI).
    pub fn client_page(&self) -> String {
        format!("{}client", self.dashboard)
    }
}

/// A started playground: every server is serving; [`Playground::run`] serves until told to stop.
/// Dropping it stops everything at once.
pub struct Playground {
    pub urls: Urls,
    pub settings: Settings,
    pub storage: Storage,
    /// The provider's application state.
    pub provider: AppState,
    /// The homeserver: the fake's state, or the real Synapse and its nginx.
    pub homeserver: Homeserver,
    pub accounts: Vec<Account>,
    pub tls: Option<Tls>,
    /// Every HTTP exchange with the provider and the homeserver.
    pub log: ExchangeLog,
    pub provider_addr: SocketAddr,
    pub homeserver_addr: SocketAddr,
    pub dashboard_addr: SocketAddr,
    running: Running,
}

impl std::fmt::Debug for Playground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playground")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Playground {
    /// Prepares the data directory and the database, starts every server, seeds the accounts.
    /// `entropy` is the clock and randomness everything runs on.
    pub async fn start(options: &Options, entropy: Entropy) -> Result<Self, Error> {
        if options.tls && options.homeserver == HomeserverChoice::Synapse {
            return Err(Error::Unsupported(
                "--tls with --homeserver synapse is not supported: nginx in front of Synapse serves plain HTTP on loopback",
            ));
        }
        if options.fresh {
            data::wipe(&options.data_dir)?;
            if options.database_url.is_some() {
                tracing::warn!("--fresh starts over with new keys and passwords, but leaves the database given by --database-url as it is");
            }
        }
        let config_text = data::prepare_config(&options.data_dir, &entropy)?;
        let accounts = accounts::load_or_create(&options.data_dir, &entropy)?;
        let tls = if options.tls {
            Some(Tls::load_or_create(
                &options.data_dir,
                options.host,
                &entropy,
            )?)
        } else {
            None
        };

        // Bind everything first: each server's configuration names the others' addresses.
        let host = options.host;
        let provider_listener = bind("the provider", host, options.port).await?;
        let homeserver_listener = bind("the homeserver", host, options.homeserver_port).await?;
        let dashboard_listener = bind("the dashboard", host, options.dashboard_port).await?;
        let internal = match &tls {
            Some(_) => {
                let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
                Some((
                    bind("the provider (internal)", loopback, 0).await?,
                    bind("the homeserver (internal)", loopback, 0).await?,
                ))
            }
            None => None,
        };
        let local = |l: &TcpListener, what| {
            l.local_addr().map_err(|cause| Error::Bind {
                what,
                addr: SocketAddr::new(host, 0),
                cause,
            })
        };
        let provider_addr = local(&provider_listener, "the provider")?;
        let homeserver_addr = local(&homeserver_listener, "the homeserver")?;
        let dashboard_addr = local(&dashboard_listener, "the dashboard")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let name = advertised_host(host, tls.is_some());
        let urls = Urls {
            issuer: base_url(scheme, &name, provider_addr.port()),
            homeserver: base_url(scheme, &name, homeserver_addr.port()),
            dashboard: base_url(scheme, &name, dashboard_addr.port()),
        };
        // Where the two servers reach each other.
        let (provider_endpoint, homeserver_endpoint) = match &internal {
            Some((provider, homeserver)) => (
                base_url(
                    "http",
                    "127.0.0.1",
                    local(provider, "the provider (internal)")?.port(),
                ),
                base_url(
                    "http",
                    "127.0.0.1",
                    local(homeserver, "the homeserver (internal)")?.port(),
                ),
            ),
            None => (urls.issuer.clone(), urls.homeserver.clone()),
        };

        let mut settings = configure(
            options,
            &config_text,
            &urls,
            &homeserver_endpoint,
            provider_addr,
        )?;
        // A real Synapse: started now that the shared secret is known; the provider reaches it
        // at its own listener (for `/_synapse/mas/*`), clients through nginx on the homeserver's
        // port, which is set free for nginx.
        let real_synapse = match options.homeserver {
            HomeserverChoice::Fake => None,
            HomeserverChoice::Synapse => {
                let real = RealSynapse::start(
                    &options.server_name,
                    &provider_endpoint,
                    &settings.matrix.secret,
                    &urls.homeserver,
                )
                .await?;
                settings.matrix.endpoint = real.synapse_url().clone();
                Some(real)
            }
        };
        let storage = server::open_storage(&settings, entropy.clone()).await?;
        server::prepare(&storage, &settings, true).await?;
        let provider =
            AppState::new(settings.clone(), storage.clone()).map_err(ServeError::Passwords)?;
        let mut homeserver = match real_synapse {
            Some(real) => Homeserver::Synapse(Box::new(real)),
            None => Homeserver::Fake(fake_homeserver::AppState::new(
                fake_homeserver::Config {
                    server_name: options.server_name.clone(),
                    provider_endpoint: provider_endpoint.clone(),
                    secret: settings.matrix.secret.clone(),
                    proxy_login: true,
                    public_base: Some(urls.homeserver.clone()),
                },
                urls.homeserver.clone(),
            )?),
        };

        let log = ExchangeLog::new(entropy.clock.clone(), exchange::CAPACITY);
        let provider_router = exchange::tap(
            provider::app::router(provider.clone()),
            log.clone(),
            exchange::Server::Provider,
        );
        let mut running = Running::new();
        running.serve(
            "provider",
            provider_listener,
            provider_router.clone(),
            tls.as_ref(),
        )?;
        match &mut homeserver {
            Homeserver::Fake(fake) => {
                let homeserver_router = exchange::tap(
                    fake_homeserver::router(fake.clone()),
                    log.clone(),
                    exchange::Server::Homeserver,
                );
                running.serve(
                    "homeserver",
                    homeserver_listener,
                    homeserver_router.clone(),
                    tls.as_ref(),
                )?;
                if let Some((provider_internal, homeserver_internal)) = internal {
                    running.serve(
                        "provider (internal)",
                        provider_internal,
                        provider_router,
                        None,
                    )?;
                    running.serve(
                        "homeserver (internal)",
                        homeserver_internal,
                        homeserver_router,
                        None,
                    )?;
                }
            }
            Homeserver::Synapse(real) => {
                // nginx binds the homeserver's port itself (a short window in which another
                // process could take it; nginx then fails to start, saying so).
                drop(homeserver_listener);
                real.start_proxy(homeserver_addr, &provider_endpoint)
                    .await?;
            }
        }
        running.worker(Worker::new(provider.core.clone()));
        running.housekeeping(provider.storage.clone());

        accounts::seed(&provider, &accounts).await?;
        accounts::sync_homeserver(&provider).await?;

        let dashboard = dashboard::router(dashboard::Setup {
            urls: urls.clone(),
            server_name: options.server_name.clone(),
            database: provider::storage::redact_url(&settings.database_url),
            accounts: accounts.clone(),
            provider: provider.clone(),
            tls: tls.clone(),
            log: log.clone(),
            entropy,
            stop: running.stop.subscribe(),
        })?;
        running.serve("dashboard", dashboard_listener, dashboard, tls.as_ref())?;

        Ok(Self {
            urls,
            settings,
            storage,
            provider,
            homeserver,
            accounts,
            tls,
            log,
            provider_addr,
            homeserver_addr,
            dashboard_addr,
            running,
        })
    }

    /// What is where: the first lines a user reads.
    pub fn summary(&self) -> String {
        let Urls {
            issuer,
            homeserver,
            dashboard,
        } = &self.urls;
        let width = self
            .accounts
            .iter()
            .map(|a| a.username.len())
            .max()
            .unwrap_or(0);
        let accounts: Vec<String> = self
            .accounts
            .iter()
            .map(|a| {
                format!(
                    "{:width$}  password {}{}",
                    a.username,
                    a.password,
                    if a.admin { "  (admin)" } else { "" }
                )
            })
            .collect();
        let mut lines = vec![
            "The playground is running.".to_owned(),
            format!("  Dashboard           {dashboard}"),
            format!(
                "  Homeserver          {homeserver}  (server name {}; point Matrix clients here)",
                self.homeserver.server_name()
            ),
            format!("  Provider (issuer)   {issuer}"),
            match &self.homeserver {
                Homeserver::Fake(_) => "  Homeserver kind     the fake homeserver (in this process)".to_owned(),
                Homeserver::Synapse(real) => format!(
                    "  Homeserver kind     real Synapse {} at {} behind nginx (deploy/nginx/matrix.conf); its files in {}",
                    synapse_harness::SYNAPSE_VERSION,
                    real.synapse_url(),
                    real.synapse_dir().display()
                ),
            },
            format!("  Discovery           {homeserver}_matrix/client/v1/auth_metadata"),
            format!("                      {issuer}.well-known/openid-configuration"),
            format!("  Signing keys        {issuer}oauth2/keys.json"),
        ];
        for (i, account) in accounts.iter().enumerate() {
            let label = if i == 0 { "Accounts" } else { "" };
            lines.push(format!("  {label:18}  {account}"));
        }
        lines.push(format!("  Create an account   {issuer}register"));
        lines.push(format!(
            "  Mailbox             {dashboard}mailbox  (the mail the provider sent)"
        ));
        lines.push(format!(
            "  Demo client         {DEMO_CLIENT_ID}  (public; redirect URI {})",
            self.urls.callback()
        ));
        lines.push(format!(
            "  Database            {}",
            provider::storage::redact_url(&self.settings.database_url)
        ));
        if let Some(tls) = &self.tls {
            lines.push(format!(
                "  TLS certificate     {}{}",
                tls.cert_path.display(),
                if tls.created {
                    "  (new: clients must trust it)"
                } else {
                    ""
                }
            ));
            lines.push(format!("  SHA-256             {}", tls.fingerprint));
        }
        lines.push("Press Ctrl-C to stop.".to_owned());
        lines.join("\n")
    }

    /// Serves until `shutdown` completes (or a server fails), then stops everything, letting
    /// requests in flight finish for a few seconds.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let failure = tokio::select! {
            () = shutdown => None,
            Some(joined) = self.running.tasks.join_next() => Some(match joined {
                Ok((name, Ok(()))) => Error::Stopped(name, "it ended".into()),
                Ok((name, Err(e))) => Error::Stopped(name, e.to_string()),
                Err(e) => Error::Stopped("playground", e.to_string()),
            }),
        };
        let _ = self.running.stop.send(true);
        let tasks = &mut self.running.tasks;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok((name, Err(error))) = joined {
                    tracing::warn!(server = name, %error, "stopped with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}: cutting them off");
            tasks.shutdown().await;
        }
        self.storage.close().await;
        if let Homeserver::Synapse(real) = self.homeserver {
            (*real).stop().await;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Stops at once (letting requests in flight finish).
    pub async fn stop(self) -> Result<(), Error> {
        self.run(async {}).await
    }
}

/// The servers' tasks and the signal that stops them. Dropping it aborts them.
struct Running {
    stop: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, std::io::Result<()>)>,
}

impl Running {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
        }
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    fn serve(
        &mut self,
        name: &'static str,
        listener: TcpListener,
        router: Router,
        tls: Option<&Tls>,
    ) -> Result<(), Error> {
        let stopped = self.stopped();
        match tls {
            None => {
                self.tasks.spawn(async move {
                    let served = axum::serve(
                        listener,
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(stopped)
                    .await;
                    (name, served)
                });
            }
            Some(tls) => {
                let listener = tls
                    .listener(listener)
                    .map_err(|e| Error::Tls(format!("can't serve {name}: {e}")))?;
                self.tasks.spawn(async move {
                    // The peer address for the provider's per-IP rate limits: axum gives it
                    // for any listener once tapped (a no-op tap here).
                    let served = axum::serve(
                        axum::serve::ListenerExt::tap_io(listener, |_| {}),
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(stopped)
                    .await;
                    (name, served)
                });
            }
        }
        Ok(())
    }

    /// The provider's homeserver job worker (retries what the homeserver refused).
    fn worker(&mut self, worker: Worker) {
        let stopped = self.stopped();
        self.tasks.spawn(async move {
            worker.run(stopped).await;
            ("worker", Ok(()))
        });
    }

    /// The provider's housekeeping of expired rows, as `provider serve` runs it.
    fn housekeeping(&mut self, storage: provider::storage::Storage) {
        let stopped = self.stopped();
        self.tasks.spawn(async move {
            provider::core::housekeeping::run(storage, stopped).await;
            ("housekeeping", Ok(()))
        });
    }
}

async fn bind(what: &'static str, host: IpAddr, port: u16) -> Result<TcpListener, Error> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr)
        .await
        .map_err(|cause| Error::Bind { what, addr, cause })
}

/// The host name in the URLs clients are given: `localhost` with TLS (the certificate's name),
/// loopback for a wildcard address (not one clients can dial), else the address itself.
fn advertised_host(host: IpAddr, tls: bool) -> String {
    if tls && (host.is_loopback() || host.is_unspecified()) {
        return "localhost".to_owned();
    }
    match host {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

fn base_url(scheme: &str, host: &str, port: u16) -> Url {
    Url::parse(&format!("{scheme}://{host}:{port}/"))
        .expect("a scheme, a host name or address and a port make a URL")
}

/// The provider's settings: the kept configuration with this run's addresses and database.
fn configure(
    options: &Options,
    text: &str,
    urls: &Urls,
    homeserver_endpoint: &Url,
    listen: SocketAddr,
) -> Result<Settings, Error> {
    let database_url = options.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            options.data_dir.join(DATABASE_FILE).display()
        )
    });
    let mut overrides: Vec<(String, String)> = [
        ("PROVIDER__HTTP__ISSUER", urls.issuer.to_string()),
        ("PROVIDER__HTTP__PUBLIC_BASE", urls.issuer.to_string()),
        ("PROVIDER__HTTP__LISTEN", listen.to_string()),
        ("PROVIDER__DATABASE__URL", database_url),
        // Client authors need accounts to try the flows: let them create some.
        ("PROVIDER__ACCOUNT__REGISTRATION", "true".to_owned()),
        // Everything comes from this machine, and the conformance page's run signs in some 30
        // times in a few seconds: more than the per-IP sign-in limit lets through. The other
        // limits stay at their defaults, so clients meet real 429 answers here too.
        (
            "PROVIDER__RATE_LIMITING__LOGIN__PER_IP__BURST",
            "200".to_owned(),
        ),
        // Mail stays in memory and shows on the dashboard's mailbox page; with it, "Forgot
        // password?" works too.
        ("PROVIDER__EMAIL__TRANSPORT", "capture".to_owned()),
        (
            "PROVIDER__ACCOUNT__PASSWORD_RECOVERY_ENABLED",
            "true".to_owned(),
        ),
        ("PROVIDER__MATRIX__HOMESERVER", options.server_name.clone()),
        (
            "PROVIDER__MATRIX__ENDPOINT",
            homeserver_endpoint.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let path = config_path(&options.data_dir);
    let invalid = |problems: Vec<config::Problem>| Error::Config {
        path: path.clone(),
        problems: problems.iter().map(ToString::to_string).collect(),
    };
    let (config, _) = config::parse(text, overrides.clone(), &options.data_dir).map_err(invalid)?;
    if config.clients.first().map(|c| c.client_id.as_str()) != Some(DEMO_CLIENT_ID) {
        return Err(Error::Corrupt {
            path,
            reason: format!("its first client is not `{DEMO_CLIENT_ID}`"),
        });
    }
    overrides.push((
        "PROVIDER__CLIENTS__0__REDIRECT_URIS__0".to_owned(),
        urls.callback(),
    ));
    overrides.push((
        "PROVIDER__CLIENTS__0__POST_LOGOUT_REDIRECT_URIS__0".to_owned(),
        urls.client_page(),
    ));
    let (_, settings) = config::parse(text, overrides, &options.data_dir).map_err(invalid)?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_given_addresses_they_can_dial() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(advertised_host(v4("127.0.0.1"), false), "127.0.0.1");
        assert_eq!(advertised_host(v4("0.0.0.0"), false), "127.0.0.1");
        assert_eq!(advertised_host(v4("::"), false), "[::1]");
        assert_eq!(advertised_host(v4("::1"), false), "[::1]");
        assert_eq!(advertised_host(v4("192.0.2.7"), false), "192.0.2.7");
        assert_eq!(advertised_host(v4("127.0.0.1"), true), "localhost");
        assert_eq!(advertised_host(v4("0.0.0.0"), true), "localhost");
        assert_eq!(advertised_host(v4("192.0.2.7"), true), "192.0.2.7");
        assert_eq!(
            base_url("https", "localhost", 8080).as_str(),
            "https://localhost:8080/"
        );
    }
}
