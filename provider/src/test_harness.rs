//! The test-database harness shared by every crate's tests.
//!
//! - SQLite cases always run, each on a fresh database file in its own temporary directory.
//! - PostgreSQL cases use `DATABASE_URL` when it is set: each test gets its own fresh database,
//!   created on that server and dropped when the test ends. Else, when Docker is reachable, one
//!   PostgreSQL container is started per test process (testcontainers) and used the same way.
//!   Else the PostgreSQL cases print one line saying they were skipped, and pass.
//!
//! [`backend_tests!`](crate::backend_tests) turns `async fn name(db: TestDb)` functions into a
//! `name::sqlite` and a `name::postgres` test.

use std::{io::Write as _, path::PathBuf, sync::Arc};

use tokio::sync::OnceCell;

use crate::{
    clock::{Entropy, MockClock},
    storage::{PoolSettings, Storage},
};

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub storage: Storage,
    /// The clock the storage runs on; move it to test expiry.
    pub clock: Arc<MockClock>,
    /// The connection URL, for starting a server on the same database.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The directory holding the SQLite file, removed on drop.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    /// The PostgreSQL database to drop, and the server URL to drop it from.
    Postgres { admin_url: String, name: String },
}

/// Test pools stay small: many tests run in parallel against one PostgreSQL server.
fn pool_settings() -> PoolSettings {
    PoolSettings {
        max_connections: 4,
        ..PoolSettings::default()
    }
}

impl TestDb {
    /// A fresh SQLite database (always available).
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path: PathBuf = dir.path().join("provider.db");
        let url = format!("sqlite://{}", path.display());
        let (entropy, clock) = Entropy::test(42);
        let storage = Storage::connect(&url, &pool_settings(), entropy)
            .await
            .expect("open the SQLite test database");
        storage
            .migrate()
            .await
            .expect("migrate the SQLite test database");
        Self {
            storage,
            clock,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (after saying so once) when no server is available.
    ///
    /// Under CI (the `CI` variable set, as `.ci/run` runs) a missing server is a failure, not a
    /// skip: a green CI always means both databases ran.
    pub async fn postgres() -> Option<Self> {
        let Some(server) = postgres_server().await else {
            skip_once();
            return None;
        };
        // Unique across test processes sharing one server: wall clock and OS randomness.
        #[allow(clippy::disallowed_methods)]
        let name = format!(
            "provider_test_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let admin = Storage::connect(server, &pool_settings(), Entropy::system())
            .await
            .expect("connect to the PostgreSQL test server");
        admin
            .execute_admin(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a PostgreSQL test database");
        admin.close().await;

        let mut url = url::Url::parse(server).expect("a valid PostgreSQL URL");
        url.set_path(&name);
        let url = url.to_string();
        let (entropy, clock) = Entropy::test(42);
        let storage = Storage::connect(&url, &pool_settings(), entropy)
            .await
            .expect("connect to the PostgreSQL test database");
        storage
            .migrate()
            .await
            .expect("migrate the PostgreSQL test database");
        Some(Self {
            storage,
            clock,
            url,
            cleanup: Cleanup::Postgres {
                admin_url: server.to_owned(),
                name,
            },
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            // Drop runs outside any async context we can rely on: drop the database from a
            // thread with its own small runtime, and wait for it.
            let (admin_url, name) = (admin_url.clone(), name.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let admin = Storage::connect(&admin_url, &pool_settings(), Entropy::system())
                        .await
                        .ok()?;
                    let _ = admin
                        .execute_admin(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                    admin.close().await;
                    Some(())
                })
            })
            .join();
        }
    }
}

/// The PostgreSQL server URL for tests: `DATABASE_URL`, else a container when Docker is reachable.
async fn postgres_server() -> Option<&'static str> {
    static SERVER: OnceCell<Option<String>> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let server = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => Some(url),
                _ => container::start().await,
            };
            if let Some(url) = &server {
                // Straight to stderr (not captured): the test log shows the PostgreSQL cases ran.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL test cases run on {} (a fresh database per test)",
                    crate::storage::redact_url(url)
                );
            }
            server
        })
        .await
        .as_deref()
}

fn skip_once() {
    skip_or_fail(
        "PostgreSQL test cases skipped: DATABASE_URL is not set and Docker is not reachable",
    );
}

/// Is this run under CI (`CI` set to anything but empty, `0` or `false`)?
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A test that can't run here: one line saying why (written straight to stderr, which the test
/// harness does not capture, so it shows in the log), or, under CI, a failure: what CI skips it
/// has not tested.
pub fn skip_or_fail(why: &str) {
    if under_ci() {
        panic!("{why} — under CI every test must run (set up what it needs, see .ci/run)");
    }
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|s| s == why) {
        let _ = writeln!(std::io::stderr(), "{why}");
        said.push(why.to_owned());
    }
}

mod container {
    use std::sync::OnceLock;

    use testcontainers::{
        core::{IntoContainerPort, WaitFor},
        runners::AsyncRunner,
        ContainerAsync, GenericImage, ImageExt,
    };

    /// Is a Docker engine there to talk to?
    fn docker_reachable() -> bool {
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            return !host.is_empty();
        }
        std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
    }

    /// Starts one PostgreSQL container for this test process and returns its URL.
    pub(super) async fn start() -> Option<String> {
        // Kept for the life of the process; testcontainers' reaper removes it afterwards.
        static CONTAINER: OnceLock<ContainerAsync<GenericImage>> = OnceLock::new();
        if !docker_reachable() {
            return None;
        }
        let container = GenericImage::new("postgres", "16-alpine")
            .with_exposed_port(5432.tcp())
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
            .start()
            .await
            .ok()?;
        let port = container.get_host_port_ipv4(5432).await.ok()?;
        let _ = CONTAINER.set(container);
        Some(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
    }
}

/// Turns `async fn name(db: TestDb)` functions into `name::sqlite` and `name::postgres` tests.
///
/// ```text
/// async fn users_roundtrip(db: TestDb) { /* ... */ }
/// provider::backend_tests!(users_roundtrip);
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::test_harness::TestDb::sqlite().await).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(db) = $crate::test_harness::TestDb::postgres().await {
                        super::$name(db).await;
                    }
                }
            }
        )+
    };
}

/// A provider served in-process on an ephemeral port, on a test database, with a fake
/// homeserver (the `fake-homeserver` crate, over HTTP) as its Matrix homeserver, and the
/// homeserver job worker running.
pub struct TestProvider {
    /// The issuer and base URL, `http://127.0.0.1:<port>/`.
    pub base_url: url::Url,
    pub settings: crate::config::Settings,
    /// The homeserver the provider provisions users and devices on, and which introspects
    /// tokens at the provider.
    pub homeserver: fake_homeserver::FakeHomeserver,
    /// The application state the server runs on (its storage, homeserver connection…).
    pub state: crate::http::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProvider {
    /// Generates a configuration (fixed seed) for `db`, syncs it and serves it.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, &[]).await
    }

    /// [`TestProvider::start`] with `PROVIDER__…` overrides applied to the configuration, as the
    /// environment would (e.g. `("PROVIDER__ACCOUNT__REGISTRATION", "true")`). The fake
    /// homeserver is configured to match unless `PROVIDER__MATRIX__ENDPOINT` is overridden
    /// (e.g. to point at a wiremock server).
    pub async fn start_with(db: &TestDb, overrides: &[(&str, &str)]) -> Self {
        Self::start_wrapping_homeserver(db, overrides, |homeserver| homeserver).await
    }

    /// [`TestProvider::start_with`], with the provider's connection to the fake homeserver
    /// passed through `wrap` (a test that holds or reorders some homeserver calls wraps it in a
    /// [`crate::core::matrix::HomeserverConnection`] of its own). The server and its job
    /// worker use the wrapped connection.
    pub async fn start_wrapping_homeserver(
        db: &TestDb,
        overrides: &[(&str, &str)],
        wrap: impl FnOnce(crate::core::matrix::Homeserver) -> crate::core::matrix::Homeserver,
    ) -> Self {
        use rand::SeedableRng as _;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("the bound address");
        let homeserver_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port for the homeserver");
        let homeserver_addr = homeserver_listener
            .local_addr()
            .expect("the homeserver's address");
        let options = crate::config::GenerateOptions {
            issuer: format!("http://{addr}/"),
            listen: addr.to_string(),
            database_url: db.url.clone(),
            homeserver: "localhost".to_owned(),
            homeserver_endpoint: format!("http://{homeserver_addr}/"),
        };
        let text = crate::config::generate(
            &mut rand::rngs::StdRng::seed_from_u64(7),
            db.clock.as_ref(),
            &options,
        )
        .expect("generate a configuration");
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let (_, settings) = crate::config::parse(&text, overrides, std::path::Path::new("."))
            .expect("the generated configuration is valid");
        let homeserver = fake_homeserver::FakeHomeserver::start(
            fake_homeserver::Config {
                server_name: settings.matrix.homeserver.clone(),
                provider_endpoint: settings.public_base.clone(),
                secret: settings.matrix.secret.clone(),
                proxy_login: true,
                public_base: None,
            },
            homeserver_listener,
        )
        .await
        .expect("start the fake homeserver");
        crate::server::prepare(&db.storage, &settings, false)
            .await
            .expect("sync the static clients");
        let mut core = crate::core::Core::new(settings.clone(), db.storage.clone())
            .expect("the default password settings are valid");
        core.homeserver = wrap(core.homeserver.clone());
        let state = crate::http::AppState::from_core(core);
        let router = crate::app::router(state.clone());
        let worker = crate::core::matrix::provisioning::Worker::new(state.core.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
            let worker = tokio::spawn(worker.run(async {
                let _ = worker_stopped.await;
            }));
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
            let _ = stop_worker.send(());
            let _ = worker.await;
        });
        Self {
            base_url: settings.public_base.clone(),
            settings,
            homeserver,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// An absolute URL on this provider.
    pub fn url(&self, path: &str) -> String {
        crate::endpoints::url(&self.base_url, path).to_string()
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A provider served in-process on an ephemeral port, on a test database, in front of a real
/// Synapse (PyPI `matrix-synapse`, [`synapse_harness::SYNAPSE_VERSION`], in
/// `matrix_authentication_service` mode) with Debian's nginx before both, routing as the
/// operators' example `deploy/nginx/matrix.conf` says: the legacy login API to the provider, the
/// rest to Synapse. The homeserver job worker runs.
///
/// Wiring (MSC3861): the provider's `matrix.endpoint` and shared secret point at Synapse's own
/// listener (it calls `/_synapse/mas/*` there); Synapse's `matrix_authentication_service.endpoint`
/// points at the provider (it fetches the metadata and introspects there); clients are given
/// [`SynapseTestProvider::homeserver_url`], the nginx in front.
pub struct SynapseTestProvider {
    /// The issuer and base URL, `http://127.0.0.1:<port>/`.
    pub base_url: url::Url,
    pub settings: crate::config::Settings,
    /// The application state the server runs on.
    pub state: crate::http::AppState,
    // Field order matters: nginx goes before Synapse. Both are `Some` until `stop`.
    proxy: Option<synapse_harness::ReverseProxy>,
    synapse: Option<synapse_harness::Synapse>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SynapseTestProvider {
    /// [`SynapseTestProvider::start_with`] without overrides.
    pub async fn start(db: &TestDb) -> Option<Self> {
        Self::start_with(db, &[]).await
    }

    /// Generates a configuration (fixed seed) for `db` with `PROVIDER__…` overrides applied,
    /// starts Synapse and nginx, and serves the provider. `None` (after one line on stderr saying
    /// why) when python3 or nginx is missing; with `CI` set that is a panic instead, as is any
    /// failure to start (its message carries the last log lines).
    ///
    /// The provider's port is bound first, so Synapse is told the provider's URL before the
    /// provider's configuration names Synapse's (Synapse only calls the provider once a
    /// client shows it a token, by which time both serve).
    pub async fn start_with(db: &TestDb, overrides: &[(&str, &str)]) -> Option<Self> {
        use rand::SeedableRng as _;

        let tools = match synapse_harness::prepare()
            .await
            .expect("the real Synapse's prerequisites (CI is set)")
        {
            synapse_harness::Availability::Ready(tools) => tools,
            synapse_harness::Availability::Skip(reason) => {
                synapse_skip_once(&reason);
                return None;
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("the bound address");
        let options = crate::config::GenerateOptions {
            issuer: format!("http://{addr}/"),
            listen: addr.to_string(),
            database_url: db.url.clone(),
            homeserver: "localhost".to_owned(),
            // Replaced below by Synapse's address, once it listens.
            homeserver_endpoint: "http://127.0.0.1:9/".to_owned(),
        };
        let text = crate::config::generate(
            &mut rand::rngs::StdRng::seed_from_u64(7),
            db.clock.as_ref(),
            &options,
        )
        .expect("generate a configuration");
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let (_, mut settings) = crate::config::parse(&text, overrides, std::path::Path::new("."))
            .expect("the generated configuration is valid");

        // nginx's address is chosen first: it is Synapse's `public_baseurl`, the homeserver URL
        // its `.well-known/matrix/client` names (as the MAS setup guide configures it).
        let front = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for nginx");
        let front_url = url::Url::parse(&format!("http://{front}/")).expect("nginx's URL");
        let synapse = synapse_harness::Synapse::start(
            &tools,
            synapse_harness::SynapseOptions::new(
                &settings.matrix.homeserver,
                settings.public_base.clone(),
                &settings.matrix.secret,
            )
            .with_public_baseurl(&front_url),
        )
        .await
        .unwrap_or_else(|e| panic!("start Synapse: {e}"));
        settings.matrix.endpoint = synapse.url().clone();
        let proxy = synapse_harness::ReverseProxy::start_on(
            &tools,
            front,
            synapse.url(),
            &settings.public_base,
        )
        .await
        .unwrap_or_else(|e| panic!("start nginx: {e}"));

        crate::server::prepare(&db.storage, &settings, false)
            .await
            .expect("sync the static clients");
        let state = crate::http::AppState::new(settings.clone(), db.storage.clone())
            .expect("the default password settings are valid");
        let (shutdown, task) = serve_with_worker(listener, state.clone());
        Some(Self {
            base_url: settings.public_base.clone(),
            settings,
            state,
            proxy: Some(proxy),
            synapse: Some(synapse),
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The homeserver URL clients are given: nginx, in front of Synapse and the provider.
    pub fn homeserver_url(&self) -> &url::Url {
        self.proxy().url()
    }

    /// The real Synapse (its own listener, its directory and logs).
    pub fn synapse(&self) -> &synapse_harness::Synapse {
        self.synapse.as_ref().expect("running until stop")
    }

    /// The nginx in front.
    pub fn proxy(&self) -> &synapse_harness::ReverseProxy {
        self.proxy.as_ref().expect("running until stop")
    }

    /// An absolute URL on this provider.
    pub fn url(&self, path: &str) -> String {
        crate::endpoints::url(&self.base_url, path).to_string()
    }

    /// The last `n` lines of Synapse's and nginx's logs, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        format!(
            "--- Synapse ---\n{}\n--- nginx ---\n{}",
            self.synapse().log_tail(n),
            self.proxy().log_tail(n)
        )
    }

    /// Stops serving, then nginx and Synapse.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.stop().await;
        }
        if let Some(synapse) = self.synapse.take() {
            synapse.stop().await;
        }
    }
}

impl Drop for SynapseTestProvider {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serves `state` on `listener` with the homeserver job worker beside it, until the sender is
/// used (or dropped).
fn serve_with_worker(
    listener: tokio::net::TcpListener,
    state: crate::http::AppState,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let router = crate::app::router(state.clone());
    let worker = crate::core::matrix::provisioning::Worker::new(state.core.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(worker.run(async {
            let _ = worker_stopped.await;
        }));
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await;
        let _ = stop_worker.send(());
        let _ = worker.await;
    });
    (tx, task)
}

/// The one line saying the real-Synapse cases were skipped, and why (a failure under CI).
fn synapse_skip_once(reason: &str) {
    skip_or_fail(&format!("real Synapse test cases skipped: {reason}"));
}
