//! A real Synapse in plain mode: its own password login and the shared-secret registration API
//! on, no delegated auth — the homeserver an operator runs before `provider syn2mas`. Its
//! database is the caller's (a SQLite file or a PostgreSQL database), so it outlives the
//! process: the caller can stop this Synapse, migrate its database, and start it again in
//! `matrix_authentication_service` mode ([`crate::Synapse`] with [`SynapseDatabase::config`]
//! as its `database` override).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use url::Url;

use crate::process::{free_port, kill, log_tails, wait_until_answering};
use crate::{Error, Tools};

/// How long the start may take (a fresh database's schema takes a few seconds, more on
/// PostgreSQL and on a busy machine).
const START_LIMIT: Duration = Duration::from_secs(90);

/// Synapse's database, as its `database` section names it (`synapse/config/database.py`).
#[derive(Debug, Clone)]
pub enum SynapseDatabase {
    /// `name: sqlite3`, `args.database`: the file (made on the first start).
    Sqlite(PathBuf),
    /// `name: psycopg2`, with libpq's connection arguments. The database must exist, with
    /// `ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'` (Synapse refuses another collation;
    /// `docs/postgres.md`). Needs `psycopg2` in the virtualenv ([`has_psycopg2`]).
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

/// How a plain Synapse is set up.
#[derive(Clone)]
pub struct PlainOptions {
    pub server_name: String,
    pub database: SynapseDatabase,
    /// `registration_shared_secret`: what `/_synapse/admin/v1/register` checks the HMAC with.
    pub registration_shared_secret: String,
    /// `password_config.pepper`, appended to each password before bcrypt.
    pub pepper: Option<String>,
    /// Extra top-level `homeserver.yaml` settings, merged over the generated ones.
    pub extra_config: serde_json::Map<String, serde_json::Value>,
}

impl PlainOptions {
    pub fn new(server_name: &str, database: SynapseDatabase, shared_secret: &str) -> Self {
        Self {
            server_name: server_name.to_owned(),
            database,
            registration_shared_secret: shared_secret.to_owned(),
            pepper: None,
            extra_config: serde_json::Map::new(),
        }
    }
}

impl std::fmt::Debug for PlainOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainOptions")
            .field("server_name", &self.server_name)
            .field("database", &self.database)
            .field("registration_shared_secret", &"<redacted>")
            .field("pepper", &self.pepper.as_ref().map(|_| "<redacted>"))
            .field("extra_config", &self.extra_config)
            .finish()
    }
}

/// Whether the virtualenv's Python can import `psycopg2` (Synapse's PostgreSQL driver, PyPI
/// `psycopg2-binary`; `.ci/run` installs it).
pub async fn has_psycopg2(tools: &Tools) -> bool {
    Command::new(&tools.python)
        .args(["-c", "import psycopg2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// A running plain Synapse. Dropping it kills the process and removes its directory (not the
/// database, which is the caller's).
#[derive(Debug)]
pub struct PlainSynapse {
    // Field order matters: the child is killed before the directory goes.
    child: Option<Child>,
    url: Url,
    python: PathBuf,
    options: PlainOptions,
    /// `Some` until [`PlainSynapse::stop`] hands it over.
    dir: Option<TempDir>,
}

impl PlainSynapse {
    /// Writes `homeserver.yaml` (password login, the shared secret, the caller's database), a
    /// log config and a signing key into a new temporary directory, starts Synapse and waits
    /// until `GET /_matrix/client/versions` answers 200.
    pub async fn start(tools: &Tools, options: PlainOptions) -> Result<Self, Error> {
        if options.registration_shared_secret.is_empty() {
            return Err(Error::Options(
                "the registration shared secret must not be empty".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("synapse-plain-")
            .tempdir()
            .map_err(Error::io("creating Synapse's directory"))?;
        let port = free_port()?;
        write_files(dir.path(), port, &options)?;

        let console = std::fs::File::create(dir.path().join("console.log"))
            .map_err(Error::io("creating console.log"))?;
        let console_err = console
            .try_clone()
            .map_err(Error::io("creating console.log"))?;
        let mut child = Command::new(&tools.python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
            .current_dir(dir.path())
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env("no_proxy", "127.0.0.1,localhost")
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
        if let Err(reason) =
            wait_until_answering(&mut child, &versions, Some(200), START_LIMIT).await
        {
            kill(&mut child).await;
            return Err(Error::Start {
                what: "Synapse (plain mode)",
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
        Ok(Self {
            child: Some(child),
            url,
            python: tools.python.clone(),
            options,
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

    /// The last `n` lines of Synapse's logs.
    pub fn log_tail(&self, n: usize) -> String {
        let dir = self.dir();
        log_tails(&[&dir.join("console.log"), &dir.join("homeserver.log")], n)
    }

    /// Registers `localpart` through the shared-secret registration API
    /// (`/_synapse/admin/v1/register`: a nonce, then an HMAC-SHA1 of nonce, user, password and
    /// admin flag with `registration_shared_secret`), with Synapse's own client for it,
    /// `register_new_matrix_user`.
    pub async fn register_user(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<(), Error> {
        let output = Command::new(&self.python)
            .args(["-m", "synapse._scripts.register_new_matrix_user"])
            .args(["-u", localpart, "-p", password])
            .arg(if admin { "--admin" } else { "--no-admin" })
            .args(["-k", &self.options.registration_shared_secret])
            .arg(self.url.as_str())
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env("no_proxy", "127.0.0.1,localhost")
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
    /// and the SQLite database when it was put there), removed when dropped.
    pub async fn stop(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            kill(&mut child).await;
        }
        self.dir.take().expect("the directory is kept until stop")
    }
}

impl Drop for PlainSynapse {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// `homeserver.yaml`, `log.yaml` and the signing key.
fn write_files(dir: &Path, port: u16, options: &PlainOptions) -> Result<(), Error> {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut seed = [0u8; 32];
    random(&mut seed)?;
    // `ed25519 <version> <unpadded base64 of the seed>` (`synapse/config/key.py`).
    write(
        dir,
        "signing.key",
        &format!("ed25519 a_plain {}\n", b64.encode(seed)),
    )?;
    let log_config = json!({
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": {
            "class": "logging.FileHandler",
            "formatter": "plain",
            "filename": dir.join("homeserver.log"),
            "encoding": "utf8",
        }},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": false,
    });
    write(dir, "log.yaml", &serde_yaml_ng::to_string(&log_config)?)?;
    let mut macaroon = [0u8; 32];
    random(&mut macaroon)?;
    let config = plain_config(dir, port, options, &b64.encode(macaroon));
    write(dir, "homeserver.yaml", &serde_yaml_ng::to_string(&config)?)
}

/// The generated `homeserver.yaml` of a plain Synapse.
fn plain_config(
    dir: &Path,
    port: u16,
    options: &PlainOptions,
    macaroon_secret: &str,
) -> serde_json::Value {
    let generous = json!({"per_second": 1000, "burst_count": 1000});
    let mut password_config = json!({"enabled": true});
    if let Some(pepper) = &options.pepper {
        password_config["pepper"] = json!(pepper);
    }
    let mut config = json!({
        "server_name": options.server_name,
        "pid_file": dir.join("homeserver.pid"),
        "report_stats": false,
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": true,
            "resources": [{"names": ["client"], "compress": false}],
        }],
        "database": options.database.config(),
        "log_config": dir.join("log.yaml"),
        "media_store_path": dir.join("media_store"),
        "signing_key_path": dir.join("signing.key"),
        "macaroon_secret_key": macaroon_secret,
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "federation_domain_whitelist": [],
        "url_preview_enabled": false,
        "enable_metrics": false,
        // Synapse's own accounts: password login on, open registration off, the admin
        // registration API on (`synapse/rest/admin/users.py`, `UserRegisterServlet`).
        "enable_registration": false,
        "password_config": password_config,
        "registration_shared_secret": options.registration_shared_secret,
        "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
        "rc_registration": generous,
        "rc_admin_redaction": generous,
        "rc_message": generous,
    });
    if let Some(map) = config.as_object_mut() {
        for (key, value) in &options.extra_config {
            map.insert(key.clone(), value.clone());
        }
    }
    config
}

fn random(bytes: &mut [u8]) -> Result<(), Error> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .map_err(Error::io("reading /dev/urandom"))
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), Error> {
    std::fs::write(dir.join(name), contents).map_err(Error::io(format!("writing {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_plain_mode_with_the_shared_secret() {
        let mut options = PlainOptions::new(
            "hs.test",
            SynapseDatabase::Postgres {
                host: "127.0.0.1".into(),
                port: 5432,
                user: "postgres".into(),
                password: None,
                database: "synapse".into(),
            },
            "s3cret",
        );
        options.pepper = Some("pepp".into());
        let config = plain_config(Path::new("/tmp/x"), 1234, &options, "m");
        assert!(config.get("matrix_authentication_service").is_none());
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
}
