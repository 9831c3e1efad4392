//! `cargo run -p playground`: the whole deployment on localhost, no setup.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use playground::{HomeserverChoice, Options, Playground};
use provider::{
    clock::Entropy,
    telemetry::{self, LogFormat},
};

#[derive(Debug, Parser)]
#[command(
    name = "playground",
    about = "Start an MSC3861 deployment on localhost (provider, homeserver, dashboard) to try \
             Matrix OAuth 2.0 flows",
    after_help = "Examples:\n  cargo run -p playground\n  cargo run -p playground -- --tls --fresh\n  \
                  cargo run -p playground -- --homeserver synapse\n  \
                  cargo run -p playground -- --database-url postgres://postgres@127.0.0.1/playground"
)]
struct Cli {
    /// Where the configuration, the SQLite database, the seeded accounts and the TLS
    /// certificate are kept between runs.
    #[arg(long, default_value = "playground-data")]
    data_dir: PathBuf,
    /// Start over: new keys, new account passwords, an empty SQLite database (the TLS
    /// certificate is kept, so clients that trust it keep trusting it).
    #[arg(long)]
    fresh: bool,
    /// The address every server listens on. The dashboard shows the seeded accounts'
    /// passwords: keep it on loopback unless you mean to share them.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The provider's port (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The homeserver's port.
    #[arg(long, default_value_t = 8008)]
    homeserver_port: u16,
    /// The dashboard's port.
    #[arg(long, default_value_t = 8090)]
    dashboard_port: u16,
    /// The Matrix server name (user IDs are @alice:<server-name>).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Use this database (e.g. postgres://postgres@127.0.0.1/playground) instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Serve the provider, the homeserver and the dashboard over https with a self-signed
    /// certificate made at first start and kept in the data directory.
    #[arg(long)]
    tls: bool,
    /// The homeserver: the fake in this process, or a real Synapse (PyPI matrix-synapse, its
    /// virtualenv made on first use) with nginx in front of it on the homeserver's port, routing
    /// as deploy/nginx/matrix.conf says. Needs python3 and nginx; not with --tls.
    #[arg(long, value_enum, default_value = "fake")]
    homeserver: HomeserverArg,
    /// How logs (on stderr) are written.
    #[arg(long, value_enum, default_value = "auto")]
    log_format: LogFormat,
}

/// `--homeserver`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HomeserverArg {
    Fake,
    Synapse,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let options = Options {
        data_dir: cli.data_dir,
        fresh: cli.fresh,
        host: cli.host,
        port: cli.port,
        homeserver_port: cli.homeserver_port,
        dashboard_port: cli.dashboard_port,
        server_name: cli.server_name,
        database_url: cli.database_url,
        tls: cli.tls,
        homeserver: match cli.homeserver {
            HomeserverArg::Fake => HomeserverChoice::Fake,
            HomeserverArg::Synapse => HomeserverChoice::Synapse,
        },
    };
    let result: anyhow::Result<()> = async {
        let playground = Playground::start(&options, Entropy::system()).await?;
        println!("{}", playground.summary());
        playground.run(provider::server::shutdown_signal()).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
