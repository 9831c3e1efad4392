//! The playground: a whole deployment on localhost from one command, on SQLite by default.
//!
//! The configuration (signing keys, secrets, a demo client) is generated once into the data
//! directory and kept, so clients that cached keys or registrations keep working across runs;
//! the address and the database come from the command line each time, applied through the same
//! `PROVIDER__…` overrides an operator would use.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use provider::{
    clock::Entropy,
    config::{self, GenerateOptions, Settings},
    server::{self, Server},
    storage::Storage,
};
use tokio::net::TcpListener;

/// How to start the playground.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the configuration and the SQLite database live.
    pub data_dir: PathBuf,
    /// Start over: delete the data directory's configuration and database first.
    pub fresh: bool,
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// Use this database instead of the SQLite file in the data directory.
    pub database_url: Option<String>,
}

/// The configuration file in a data directory.
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("provider.yaml")
}

/// Makes sure the data directory holds a configuration, generating it on first start (or when
/// `fresh`), and returns its text.
pub fn prepare_data_dir(data_dir: &Path, fresh: bool) -> anyhow::Result<String> {
    if fresh && data_dir.exists() {
        for name in [
            "provider.yaml",
            "provider.db",
            "provider.db-wal",
            "provider.db-shm",
        ] {
            let path = data_dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("can't remove {}", path.display()))?;
            }
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("can't create {}", data_dir.display()))?;
    let path = config_path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text);
    }
    let entropy = Entropy::system();
    let text = config::generate(
        &mut entropy.rng.rng(),
        entropy.clock.as_ref(),
        &GenerateOptions::default(),
    )?;
    std::fs::write(&path, &text).with_context(|| format!("can't write {}", path.display()))?;
    Ok(text)
}

/// A started playground, serving until [`Playground::run`]'s shutdown future completes.
pub struct Playground {
    pub settings: Settings,
    pub storage: Storage,
    pub local_addr: SocketAddr,
    server: Server,
}

impl Playground {
    /// Prepares the data directory and database and binds the server.
    pub async fn start(options: &Options) -> anyhow::Result<Self> {
        let text = prepare_data_dir(&options.data_dir, options.fresh)?;
        let listener = TcpListener::bind((options.host, options.port))
            .await
            .with_context(|| format!("can't listen on {}:{}", options.host, options.port))?;
        let local_addr = listener.local_addr()?;
        let base = format!("http://{local_addr}/");
        let database_url = match &options.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                options.data_dir.join("provider.db").display()
            ),
        };
        let overrides = [
            ("PROVIDER__HTTP__ISSUER", base.clone()),
            ("PROVIDER__HTTP__PUBLIC_BASE", base),
            ("PROVIDER__HTTP__LISTEN", local_addr.to_string()),
            ("PROVIDER__DATABASE__URL", database_url),
            // Client authors need an account to try the flows: let them create one.
            ("PROVIDER__ACCOUNT__REGISTRATION", "true".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        let (_, settings) =
            config::parse(&text, overrides, &options.data_dir).map_err(|problems| {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                anyhow::anyhow!(
                    "{} is invalid (delete it or run with --fresh):\n  {}",
                    config_path(&options.data_dir).display(),
                    list.join("\n  ")
                )
            })?;
        let storage = server::open_storage(&settings, Entropy::system()).await?;
        server::prepare(&storage, &settings, true).await?;
        let server = Server::from_listener(listener, settings.clone(), storage.clone())?;
        Ok(Self {
            settings,
            storage,
            local_addr,
            server,
        })
    }

    /// What is where, for the first lines a user reads.
    pub fn summary(&self) -> String {
        let issuer = &self.settings.issuer;
        format!(
            "The playground is running.\n\
             \x20 Provider (issuer)  {issuer}\n\
             \x20 Discovery          {issuer}.well-known/openid-configuration\n\
             \x20 Signing keys       {issuer}oauth2/keys.json\n\
             \x20 Create an account  {issuer}register\n\
             \x20 Sign in            {issuer}login\n\
             \x20 Database           {}\n\
             Press Ctrl-C to stop.",
            provider::storage::redact_url(&self.settings.database_url),
        )
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.server.run(shutdown).await?;
        self.storage.close().await;
        Ok(())
    }
}
