//! A real Synapse in a temporary directory, in one of its two modes ([`SynapseMode`]):
//! `matrix_authentication_service` mode (MSC3861), delegating to the provider, or plain mode
//! (its own password login and the shared-secret registration API), the homeserver an operator
//! runs before `provider syn2mas`. Its database is a SQLite file in its directory, or the
//! caller's ([`SynapseDatabase`]), which then outlives the process: the caller can stop a plain
//! Synapse, migrate its database, and start Synapse again on it in the other mode.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use url::Url;

use crate::process::{
    free_port, kill, log_tails, on_a_free_port, poll_child, probe_client, wait_until_answering,
    ANOTHER_SERVER_ANSWERED,
};
use crate::{Error, Tools};

/// How long Synapse may take to answer `/_matrix/client/versions` after its start (a cold start
/// with a fresh database takes a few seconds, more on PostgreSQL; 90 s leaves room for a busy
/// machine).
const START_LIMIT: Duration = Duration::from_secs(90);

/// How Synapse signs users in.
#[derive(Clone)]
pub enum SynapseMode {
    /// `matrix_authentication_service` (`synapse/config/mas.py`): Synapse fetches
    /// `{endpoint}/.well-known/openid-configuration` and posts to `{endpoint}/oauth2/introspect`
    /// (`synapse/api/auth/mas.py`), with `secret` both ways.
    Delegated { endpoint: Url, secret: String },
    /// Synapse's own accounts: password login on (with `password_config.pepper` appended to
    /// each password before bcrypt, when given), open registration off, the admin registration
    /// API on with `registration_shared_secret` (`synapse/rest/admin/users.py`).
    Plain {
        registration_shared_secret: String,
        pepper: Option<String>,
    },
}

impl std::fmt::Debug for SynapseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delegated { endpoint, .. } => f
                .debug_struct("Delegated")
                .field("endpoint", &endpoint.as_str())
                .field("secret", &"<redacted>")
                .finish(),
            Self::Plain { pepper, .. } => f
                .debug_struct("Plain")
                .field("registration_shared_secret", &"<redacted>")
                .field("pepper", &pepper.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// Synapse's database, as its `database` section names it (`synapse/config/database.py`).
#[derive(Debug, Clone)]
pub enum SynapseDatabase {
    /// `name: sqlite3`, `args.database`: the file (made on the first start).
    Sqlite(PathBuf),
    /// `name: psycopg2`, with libpq's connection arguments. The database must exist, with
    /// `ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'` (Synapse refuses another collation;
    /// `docs/postgres.md`). The virtualenv has `psycopg2` ([`crate::PSYCOPG2_VERSION`]).
    Postgres {
        host: String,
        port: u16,
        user: String,
        password: Option<String>,
        database: String,
    },
}

impl SynapseDatabase {
    /// The `database` section of `homeserver.yaml`.
    pub fn config(&self) -> serde_json::Value {
        match self {
            Self::Sqlite(path) => json!({"name": "sqlite3", "args": {"database": path}}),
            Self::Postgres {
                host,
                port,
                user,
                password,
                database,
            } => {
                let mut args = json!({
                    "host": host,
                    "port": port,
                    "user": user,
                    "database": database,
                    "cp_min": 1,
                    "cp_max": 5,
                });
                if let Some(password) = password {
                    args["password"] = json!(password);
                }
                json!({"name": "psycopg2", "args": args})
            }
        }
    }
}

/// How a Synapse is set up.
#[derive(Clone, Debug)]
pub struct SynapseOptions {
    /// The Matrix server name (`@user:<server_name>`).
    pub server_name: String,
    pub mode: SynapseMode,
    /// `None`: a SQLite file in Synapse's temporary directory, gone with it.
    pub database: Option<SynapseDatabase>,
    /// Extra top-level `homeserver.yaml` settings, merged over the generated ones.
    pub extra_config: serde_json::Map<String, serde_json::Value>,
}

impl SynapseOptions {
    /// [`SynapseMode::Delegated`] to the provider at `mas_endpoint`.
    pub fn new(server_name: &str, mas_endpoint: Url, mas_secret: &str) -> Self {
        Self::with_mode(
            server_name,
            SynapseMode::Delegated {
                endpoint: mas_endpoint,
                secret: mas_secret.to_owned(),
            },
        )
    }

    /// [`SynapseMode::Plain`] on the caller's `database`.
    pub fn plain(
        server_name: &str,
        database: SynapseDatabase,
        shared_secret: &str,
        pepper: Option<&str>,
    ) -> Self {
        Self::with_mode(
            server_name,
            SynapseMode::Plain {
                registration_shared_secret: shared_secret.to_owned(),
                pepper: pepper.map(str::to_owned),
            },
        )
        .with_database(database)
    }

    fn with_mode(server_name: &str, mode: SynapseMode) -> Self {
        Self {
            server_name: server_name.to_owned(),
            mode,
            database: None,
            extra_config: serde_json::Map::new(),
        }
    }

    /// Synapse keeps its data in `database` (the caller's), not in its directory.
    pub fn with_database(mut self, database: SynapseDatabase) -> Self {
        self.database = Some(database);
        self
    }

    /// Sets `public_baseurl` (`synapse/config/server.py`): the URL clients are given, i.e. the
    /// reverse proxy in front. Synapse then serves `/.well-known/matrix/client` with it (and,
    /// in MAS mode, the provider's issuer and account URL, MSC2965); without it Synapse serves
    /// no client well-known at all and assumes `https://<server_name>/`. The MAS setup guide
    /// sets it, and so should every deployment.
    pub fn with_public_baseurl(mut self, url: &Url) -> Self {
        self.extra_config
            .insert("public_baseurl".into(), url.as_str().into());
        self
    }
}

/// A running Synapse. Dropping it kills the process and removes its directory (not a database
/// the caller gave).
#[derive(Debug)]
pub struct Synapse {
    // Field order matters: the child is killed before the directory goes.
    child: Option<Child>,
    url: Url,
    python: PathBuf,
    options: SynapseOptions,
    startup: Duration,
    /// `Some` until [`Synapse::stop`] hands it over.
    dir: Option<TempDir>,
}

impl Synapse {
    /// Writes `homeserver.yaml`, a log config and a signing key into a new temporary directory,
    /// starts `python -m synapse.app.homeserver -c homeserver.yaml` and waits until
    /// `GET /_matrix/client/versions` answers 200 (at most [`START_LIMIT`]) and the server
    /// answering publishes this instance's signing key. A failure carries the last lines of
    /// Synapse's logs. A port taken by another process between [`free_port`] and Synapse's bind
    /// is not a failure: Synapse starts again on another port (three tries).
    pub async fn start(tools: &Tools, options: SynapseOptions) -> Result<Self, Error> {
        on_a_free_port("Synapse", || Self::start_once(tools, options.clone())).await
    }

    async fn start_once(tools: &Tools, options: SynapseOptions) -> Result<Self, Error> {
        let (what, secret) = match &options.mode {
            SynapseMode::Delegated { secret, .. } => ("Synapse", secret),
            SynapseMode::Plain {
                registration_shared_secret,
                ..
            } => ("Synapse (plain mode)", registration_shared_secret),
        };
        if secret.is_empty() {
            return Err(Error::Options("the shared secret must not be empty".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("synapse-")
            .tempdir()
            .map_err(Error::io("creating Synapse's directory"))?;
        let port = free_port()?;
        let key_id = write_files(dir.path(), port, &options)?;

        let console = std::fs::File::create(dir.path().join("console.log"))
            .map_err(Error::io("creating console.log"))?;
        let console_err = console
            .try_clone()
            .map_err(Error::io("creating console.log"))?;
        let started = Instant::now();
        let mut child = loopback_only(Command::new(&tools.python))
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("starting {}", tools.python.display())))?;

        let url = Url::parse(&format!("http://127.0.0.1:{port}/"))
            .map_err(|e| Error::Options(e.to_string()))?;
        let versions = url
            .join("_matrix/client/versions")
            .map_err(|e| Error::Options(e.to_string()))?;
        let answering =
            match wait_until_answering(&mut child, &versions, Some(200), START_LIMIT).await {
                Ok(()) => wait_until_it_is_ours(&mut child, &url, &key_id, started).await,
                Err(reason) => Err(reason),
            };
        if let Err(reason) = answering {
            kill(&mut child).await;
            return Err(Error::Start {
                what,
                reason,
                log_tail: log_tails(
                    &[
                        &dir.path().join("console.log"),
                        &dir.path().join("homeserver.log"),
                    ],
                    30,
                ),
            });
        }
        let startup = started.elapsed();
        tracing::info!(%url, ?startup, mode = ?options.mode, "Synapse is up");
        Ok(Self {
            child: Some(child),
            url,
            python: tools.python.clone(),
            options,
            startup,
            dir: Some(dir),
        })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn server_name(&self) -> &str {
        &self.options.server_name
    }

    /// How long the start took, from spawning the process to the first 200 on `versions`.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The directory holding `homeserver.yaml` and the logs.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory is kept until stop")
            .path()
    }

    /// `homeserver.yaml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("homeserver.yaml")
    }

    /// The last `n` lines of Synapse's logs (for test failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let dir = self.dir();
        log_tails(&[&dir.join("console.log"), &dir.join("homeserver.log")], n)
    }

    /// Registers `localpart` through the shared-secret registration API of a plain Synapse
    /// (`/_synapse/admin/v1/register`: a nonce, then an HMAC-SHA1 of nonce, user, password and
    /// admin flag with `registration_shared_secret`), with Synapse's own client for it,
    /// `register_new_matrix_user`.
    pub async fn register_user(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<(), Error> {
        let SynapseMode::Plain {
            registration_shared_secret,
            ..
        } = &self.options.mode
        else {
            return Err(Error::Options(
                "users are registered on a plain Synapse only (MAS mode delegates accounts)".into(),
            ));
        };
        let output = loopback_only(Command::new(&self.python))
            .args(["-m", "synapse._scripts.register_new_matrix_user"])
            .args(["-u", localpart, "-p", password])
            .arg(if admin { "--admin" } else { "--no-admin" })
            .args(["-k", registration_shared_secret])
            .arg(self.url.as_str())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(Error::io("running register_new_matrix_user"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Options(format!(
                "register_new_matrix_user {localpart} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Kills Synapse and waits for it to exit; returns its directory (`homeserver.yaml`, logs,
    /// and the SQLite database unless the caller gave one), removed when dropped.
    pub async fn stop(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            kill(&mut child).await;
        }
        self.dir.take().expect("the directory is kept until stop")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGKILL now; tokio reaps the process in the background.
            let _ = child.start_kill();
        }
    }
}

/// Loopback only: never route Synapse's calls (to the provider, to itself) through a proxy.
fn loopback_only(mut command: Command) -> Command {
    command
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env("no_proxy", "127.0.0.1,localhost");
    command
}

/// 32 random bytes from the kernel.
fn random_bytes() -> Result<[u8; 32], Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("reading /dev/urandom"))?;
    Ok(bytes)
}

/// Polls ([`poll_child`]) Synapse's published keys (`GET /_matrix/key/v2/server`,
/// server-server API "Publishing Keys") until they hold `key_id`, this instance's own: the
/// server answering on the port is this Synapse, not a process that took the port it was given
/// (see [`free_port`]), which answers until this one gives up. Within what is left of the
/// start's limit.
async fn wait_until_it_is_ours(
    child: &mut Child,
    url: &Url,
    key_id: &str,
    started: Instant,
) -> Result<(), String> {
    let keys = &url
        .join("_matrix/key/v2/server")
        .map_err(|e| e.to_string())?;
    let http = &probe_client()?;
    poll_child(
        child,
        START_LIMIT.saturating_sub(started.elapsed()),
        || async move {
            let body: serde_json::Value = http
                .get(keys.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match body["verify_keys"].get(key_id) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "{ANOTHER_SERVER_ANSWERED}: {keys} does not publish the key {key_id}"
                )),
            }
        },
    )
    .await
}

/// `homeserver.yaml`, `log.yaml` and the signing key; returns the key's id (`ed25519:<version>`,
/// a version of this instance's own, which tells this Synapse from any other).
fn write_files(dir: &Path, port: u16, options: &SynapseOptions) -> Result<String, Error> {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    // Synapse's signing key file: `ed25519 <version> <unpadded base64 of the 32-byte seed>`
    // (`synapse/config/key.py`, read with signedjson); a version is `[a-zA-Z0-9_]+`.
    let version: String = random_bytes()?[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let version = format!("h{version}");
    let signing_key = format!("ed25519 {version} {}\n", b64.encode(random_bytes()?));
    write(dir, "signing.key", &signing_key)?;

    let log_file = dir.join("homeserver.log");
    let log_config = json!({
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": {
            "class": "logging.FileHandler",
            "formatter": "plain",
            "filename": log_file,
            "encoding": "utf8",
        }},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": false,
    });
    write(dir, "log.yaml", &serde_yaml_ng::to_string(&log_config)?)?;

    let config = homeserver_config(dir, port, options, &b64.encode(random_bytes()?));
    write(dir, "homeserver.yaml", &serde_yaml_ng::to_string(&config)?)?;
    Ok(format!("ed25519:{version}"))
}

/// The generated `homeserver.yaml`.
fn homeserver_config(
    dir: &Path,
    port: u16,
    options: &SynapseOptions,
    macaroon_secret: &str,
) -> serde_json::Value {
    // Rate limits raised far above what a test does in a second, so a test running many calls
    // (logins, registrations, provisioning, devices, messages) is never answered 429
    // (`synapse/config/ratelimiting.py`).
    let generous = json!({"per_second": 1000, "burst_count": 1000});
    let database = options
        .database
        .clone()
        .unwrap_or_else(|| SynapseDatabase::Sqlite(dir.join("homeserver.db")));
    let mut config = json!({
        "server_name": options.server_name,
        "pid_file": dir.join("homeserver.pid"),
        "report_stats": false,
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            // The nginx in front sets X-Forwarded-For / -Proto.
            "x_forwarded": true,
            // `client` carries /_matrix/client and /_synapse/mas
            // (`synapse/rest/synapse/client/__init__.py`); `keys`, /_matrix/key/v2, the
            // instance's own signing key, by which the harness knows it is this Synapse that
            // answers on the port.
            "resources": [{"names": ["client", "keys"], "compress": false}],
        }],
        "database": database.config(),
        "log_config": dir.join("log.yaml"),
        "media_store_path": dir.join("media_store"),
        "signing_key_path": dir.join("signing.key"),
        "macaroon_secret_key": macaroon_secret,
        // No federation at all: no key servers, no remote homeserver allowed.
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "federation_domain_whitelist": [],
        "url_preview_enabled": false,
        "enable_metrics": false,
        "enable_registration": false,
        "rc_message": generous,
        "rc_joins": {"local": generous, "remote": generous},
        "rc_invites": {"per_room": generous, "per_user": generous, "per_issuer": generous},
        "rc_presence": {"per_user": generous},
        "rc_delayed_event_mgmt": generous,
        "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
        "rc_registration": generous,
        "rc_admin_redaction": generous,
    });
    let mode = match &options.mode {
        // MAS mode (`synapse/config/mas.py`): it refuses to start with Synapse's own
        // registration, password login, SSO or refreshable tokens enabled.
        SynapseMode::Delegated { endpoint, secret } => json!({
            "password_config": {"enabled": false},
            "matrix_authentication_service": {
                "enabled": true,
                "endpoint": endpoint.as_str(),
                "secret": secret,
            },
        }),
        SynapseMode::Plain {
            registration_shared_secret,
            pepper,
        } => {
            let mut password_config = json!({"enabled": true});
            if let Some(pepper) = pepper {
                password_config["pepper"] = json!(pepper);
            }
            json!({
                "password_config": password_config,
                "registration_shared_secret": registration_shared_secret,
            })
        }
    };
    if let (Some(map), Some(mode)) = (config.as_object_mut(), mode.as_object()) {
        map.extend(mode.clone());
        for (key, value) in &options.extra_config {
            map.insert(key.clone(), value.clone());
        }
    }
    config
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), Error> {
    std::fs::write(dir.join(name), contents).map_err(Error::io(format!("writing {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_mas_mode_without_synapse_logins() {
        let options = SynapseOptions::new(
            "hs.test",
            Url::parse("http://127.0.0.1:9/").unwrap(),
            "s3cret",
        );
        let config = homeserver_config(Path::new("/tmp/x"), 1234, &options, "m");
        assert_eq!(config["matrix_authentication_service"]["enabled"], true);
        assert_eq!(
            config["matrix_authentication_service"]["endpoint"],
            "http://127.0.0.1:9/"
        );
        assert_eq!(config["enable_registration"], false);
        assert_eq!(config["password_config"]["enabled"], false);
        assert!(config.get("registration_shared_secret").is_none());
        assert_eq!(config["trusted_key_servers"], json!([]));
        assert_eq!(config["listeners"][0]["port"], 1234);
        assert_eq!(
            config["database"]["args"]["database"],
            "/tmp/x/homeserver.db"
        );
        assert!(!format!("{options:?}").contains("s3cret"));
        // No public_baseurl unless asked: Synapse then serves no client well-known.
        assert!(config.get("public_baseurl").is_none());
    }

    #[test]
    fn the_public_baseurl_is_the_front() {
        let options = SynapseOptions::new(
            "hs.test",
            Url::parse("http://127.0.0.1:9/").unwrap(),
            "s3cret",
        )
        .with_public_baseurl(&Url::parse("http://127.0.0.1:8448/").unwrap());
        let config = homeserver_config(Path::new("/tmp/x"), 1234, &options, "m");
        assert_eq!(config["public_baseurl"], "http://127.0.0.1:8448/");
    }

    #[test]
    fn the_config_is_plain_mode_with_the_shared_secret() {
        let options = SynapseOptions::plain(
            "hs.test",
            SynapseDatabase::Postgres {
                host: "127.0.0.1".into(),
                port: 5432,
                user: "postgres".into(),
                password: None,
                database: "synapse".into(),
            },
            "s3cret",
            Some("pepp"),
        );
        let config = homeserver_config(Path::new("/tmp/x"), 1234, &options, "m");
        assert!(config.get("matrix_authentication_service").is_none());
        assert_eq!(config["enable_registration"], false);
        assert_eq!(config["password_config"]["enabled"], true);
        assert_eq!(config["password_config"]["pepper"], "pepp");
        assert_eq!(config["registration_shared_secret"], "s3cret");
        assert_eq!(config["database"]["name"], "psycopg2");
        assert_eq!(config["database"]["args"]["database"], "synapse");
        assert_eq!(config["database"]["args"]["port"], 5432);
        let debug = format!("{options:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pepp\""),
            "{debug}"
        );
        let sqlite = SynapseDatabase::Sqlite("/tmp/x/h.db".into()).config();
        assert_eq!(
            sqlite,
            json!({"name": "sqlite3", "args": {"database": "/tmp/x/h.db"}})
        );
    }

    /// The database the caller gives, in either mode, is the one Synapse uses.
    #[test]
    fn a_given_database_replaces_the_file_in_the_directory() {
        let options = SynapseOptions::new(
            "hs.test",
            Url::parse("http://127.0.0.1:9/").unwrap(),
            "s3cret",
        )
        .with_database(SynapseDatabase::Sqlite("/elsewhere/h.db".into()));
        let config = homeserver_config(Path::new("/tmp/x"), 1234, &options, "m");
        assert_eq!(config["database"]["args"]["database"], "/elsewhere/h.db");
        assert_eq!(config["matrix_authentication_service"]["enabled"], true);
    }
}
