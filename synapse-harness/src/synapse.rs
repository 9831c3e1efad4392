//! A real Synapse in `matrix_authentication_service` mode, in a temporary directory.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use url::Url;

use crate::process::{free_port, kill, log_tails, wait_until_answering};
use crate::{Error, Tools};

/// How long Synapse may take to answer `/_matrix/client/versions` after its start (a cold start
/// with a fresh SQLite database takes a few seconds; 60 s leaves room for a busy machine).
const START_LIMIT: Duration = Duration::from_secs(60);

/// How a Synapse is set up.
#[derive(Clone)]
pub struct SynapseOptions {
    /// The Matrix server name (`@user:<server_name>`).
    pub server_name: String,
    /// `matrix_authentication_service.endpoint`: the provider's base URL. Synapse fetches
    /// `{endpoint}/.well-known/openid-configuration` and posts to `{endpoint}/oauth2/introspect`
    /// (`synapse/api/auth/mas.py`).
    pub mas_endpoint: Url,
    /// `matrix_authentication_service.secret`, used both ways.
    pub mas_secret: String,
    /// Extra top-level `homeserver.yaml` settings, merged over the generated ones.
    pub extra_config: serde_json::Map<String, serde_json::Value>,
}

impl SynapseOptions {
    pub fn new(server_name: &str, mas_endpoint: Url, mas_secret: &str) -> Self {
        Self {
            server_name: server_name.to_owned(),
            mas_endpoint,
            mas_secret: mas_secret.to_owned(),
            extra_config: serde_json::Map::new(),
        }
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

impl std::fmt::Debug for SynapseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynapseOptions")
            .field("server_name", &self.server_name)
            .field("mas_endpoint", &self.mas_endpoint.as_str())
            .field("mas_secret", &"<redacted>")
            .field("extra_config", &self.extra_config)
            .finish()
    }
}

/// A running Synapse. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Synapse {
    // Field order matters: the child is killed before the directory goes.
    child: Option<Child>,
    url: Url,
    server_name: String,
    secret: String,
    startup: Duration,
    dir: TempDir,
}

impl Synapse {
    /// Writes `homeserver.yaml`, a log config and a signing key into a new temporary directory,
    /// starts `python -m synapse.app.homeserver -c homeserver.yaml` and waits until
    /// `GET /_matrix/client/versions` answers 200 (at most [`START_LIMIT`]). A failure carries
    /// the last lines of Synapse's logs.
    pub async fn start(tools: &Tools, options: SynapseOptions) -> Result<Self, Error> {
        if options.mas_secret.is_empty() {
            return Err(Error::Options("the shared secret must not be empty".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("synapse-")
            .tempdir()
            .map_err(Error::io("creating Synapse's directory"))?;
        let port = free_port()?;
        write_files(dir.path(), port, &options)?;

        let console = std::fs::File::create(dir.path().join("console.log"))
            .map_err(Error::io("creating console.log"))?;
        let console_err = console
            .try_clone()
            .map_err(Error::io("creating console.log"))?;
        let started = Instant::now();
        let mut child = Command::new(&tools.python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
            .current_dir(dir.path())
            // Loopback only: never route the calls to the provider through a proxy.
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
                what: "Synapse",
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
        tracing::info!(%url, ?startup, "Synapse is up");
        Ok(Self {
            child: Some(child),
            url,
            server_name: options.server_name,
            secret: options.mas_secret,
            startup,
            dir,
        })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The secret shared with the provider.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// How long the start took, from spawning the process to the first 200 on `versions`.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The directory holding `homeserver.yaml` and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of Synapse's log (for test failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        log_tails(
            &[
                &self.dir.path().join("console.log"),
                &self.dir.path().join("homeserver.log"),
            ],
            n,
        )
    }

    /// Kills Synapse and waits for it to exit.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child).await;
        }
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

/// 32 random bytes from the kernel.
fn random_bytes() -> Result<[u8; 32], Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("reading /dev/urandom"))?;
    Ok(bytes)
}

/// `homeserver.yaml`, `log.yaml` and the signing key.
fn write_files(dir: &Path, port: u16, options: &SynapseOptions) -> Result<(), Error> {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    // Synapse's signing key file: `ed25519 <version> <unpadded base64 of the 32-byte seed>`
    // (`synapse/config/key.py`, read with signedjson).
    let signing_key = format!("ed25519 a_harness {}\n", b64.encode(random_bytes()?));
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
    write(dir, "homeserver.yaml", &serde_yaml_ng::to_string(&config)?)
}

/// The generated `homeserver.yaml`.
fn homeserver_config(
    dir: &Path,
    port: u16,
    options: &SynapseOptions,
    macaroon_secret: &str,
) -> serde_json::Value {
    // Rate limits raised far above what a test does in a second, so a test running many calls
    // (provisioning, devices, messages) is never answered 429 (`synapse/config/ratelimiting.py`).
    let generous = json!({"per_second": 1000, "burst_count": 1000});
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
            // (`synapse/rest/synapse/client/__init__.py`).
            "resources": [{"names": ["client"], "compress": false}],
        }],
        "database": {"name": "sqlite3", "args": {"database": dir.join("homeserver.db")}},
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
        // MAS mode (`synapse/config/mas.py`): it refuses to start with Synapse's own
        // registration, password login, SSO or refreshable tokens enabled.
        "enable_registration": false,
        "password_config": {"enabled": false},
        "matrix_authentication_service": {
            "enabled": true,
            "endpoint": options.mas_endpoint.as_str(),
            "secret": options.mas_secret,
        },
        "rc_message": generous,
        "rc_joins": {"local": generous, "remote": generous},
        "rc_invites": {"per_room": generous, "per_user": generous, "per_issuer": generous},
        "rc_presence": {"per_user": generous},
        "rc_delayed_event_mgmt": generous,
    });
    if let Some(map) = config.as_object_mut() {
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
}
