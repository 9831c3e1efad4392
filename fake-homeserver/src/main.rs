//! `fake-homeserver`: a stand-in Synapse in MAS mode (MSC3861), as a process.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use fake_homeserver::{Config, FakeHomeserver};
use tracing_subscriber::EnvFilter;
use url::Url;

/// A stand-in for Synapse (>= 1.136) in `matrix_authentication_service` mode (MSC3861): it
/// serves client discovery, introspects client tokens at the provider, answers the provider's
/// /_synapse/mas and legacy admin API calls, and can proxy the legacy login API.
#[derive(Debug, Parser)]
#[command(
    name = "fake-homeserver",
    version,
    after_help = "Example:\n  fake-homeserver --server-name localhost \\\n    --provider-endpoint http://127.0.0.1:8080/ --secret shared-secret \\\n    --listen 127.0.0.1:8008 --proxy-login\n\nLogs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Args {
    /// The Matrix server name (user IDs are @localpart:NAME).
    #[arg(long, env = "FAKE_HOMESERVER_SERVER_NAME")]
    server_name: String,
    /// Base URL of the provider (matrix_authentication_service.endpoint).
    #[arg(long, env = "FAKE_HOMESERVER_PROVIDER_ENDPOINT")]
    provider_endpoint: Url,
    /// The secret shared with the provider (prefer the environment variable over the command
    /// line, which other local users can read).
    #[arg(long, env = "FAKE_HOMESERVER_SECRET", hide_env_values = true)]
    secret: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8008")]
    listen: SocketAddr,
    /// Base URL advertised to clients [default: http://<listen address>/].
    #[arg(long)]
    public_base: Option<Url>,
    /// Reverse-proxy /login, /logout and /refresh to the provider.
    #[arg(long)]
    proxy_login: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let homeserver = FakeHomeserver::start_on(
        Config {
            server_name: args.server_name,
            provider_endpoint: args.provider_endpoint,
            secret: args.secret,
            proxy_login: args.proxy_login,
            public_base: args.public_base,
        },
        args.listen,
    )
    .await
    .with_context(|| format!("starting the homeserver on {}", args.listen))?;

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    homeserver.shutdown().await;
    Ok(())
}
