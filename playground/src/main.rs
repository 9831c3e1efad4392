//! `cargo run -p playground`: the whole deployment on localhost, no setup.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use playground::{Options, Playground};
use provider::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "playground",
    about = "Start an MSC3861 deployment on localhost to try Matrix OAuth 2.0 flows",
    after_help = "Example:\n  cargo run -p playground -- --port 9000 --fresh"
)]
struct Cli {
    /// Where the configuration and the SQLite database are kept between runs.
    #[arg(long, default_value = "playground-data")]
    data_dir: PathBuf,
    /// Start over with new keys and an empty database.
    #[arg(long)]
    fresh: bool,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The provider's port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Use this database (e.g. postgres://postgres@127.0.0.1/playground) instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// How logs (on stderr) are written.
    #[arg(long, value_enum, default_value = "auto")]
    log_format: LogFormat,
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
        database_url: cli.database_url,
    };
    let result = async {
        let playground = Playground::start(&options).await?;
        println!("{}", playground.summary());
        playground.run(provider::server::shutdown_signal()).await
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
