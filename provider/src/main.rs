//! The `provider` command: configuration, database and server.

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use provider::{
    clock::Entropy,
    config::{self, GenerateOptions, Settings},
    core::{
        matrix::provisioning::{self, Outcome, Task},
        sync,
    },
    http::AppState,
    server::{self, Server},
    storage::redact_url,
    telemetry::{self, LogFormat},
};

#[derive(Debug, Parser)]
#[command(
    name = "provider",
    version,
    about = "An OAuth 2.0 / OpenID Connect provider for Matrix homeservers (MSC3861)",
    after_help = "Example, from nothing to a running server:\n  \
        provider config generate > provider.yaml\n  \
        provider config check provider.yaml\n  \
        provider serve -c provider.yaml\n\n\
        Settings can be overridden by environment variables PROVIDER__<SECTION>__<KEY>, \
        e.g. PROVIDER__DATABASE__URL=postgres://postgres@127.0.0.1/provider."
)]
struct Cli {
    /// How logs (on stderr) are written.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "PROVIDER_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigFile {
    /// The configuration file.
    #[arg(
        short,
        long = "config",
        env = "PROVIDER_CONFIG",
        default_value = "provider.yaml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write, check and apply the configuration.
    #[command(
        subcommand,
        after_help = "Example:\n  provider config generate > provider.yaml && provider config check provider.yaml"
    )]
    Config(ConfigCommand),
    /// Manage the database.
    #[command(
        subcommand,
        after_help = "Example:\n  provider database migrate -c provider.yaml"
    )]
    Database(DatabaseCommand),
    /// Keep the homeserver in step with the provider.
    #[command(
        subcommand,
        after_help = "Example:\n  provider homeserver sync-devices -c provider.yaml --user alice"
    )]
    Homeserver(HomeserverCommand),
    /// Check the deployment from the outside: issuer, public base, the homeserver's well-known,
    /// auth_metadata, shared secret and legacy login routing, clock skew, key strength. One
    /// line per check (✅/⚠️/❌, with a hint to fix); exit status 1 if any failed.
    #[command(
        after_help = "Examples:\n  provider doctor -c provider.yaml\n  provider doctor -c provider.yaml --json | jq '.checks[] | select(.status != \"ok\")'"
    )]
    Doctor {
        #[command(flatten)]
        file: ConfigFile,
        /// Print the report as JSON: {"ok": bool, "checks": [{name, status, message, hint}]}.
        #[arg(long)]
        json: bool,
    },
    /// Manage accounts: create users, passwords, email addresses, admin rights, locks,
    /// sessions; issue compatibility and registration tokens; provision every user.
    #[command(
        subcommand,
        after_help = "Example:\n  provider manage register-user -c provider.yaml alice --email alice@example.com"
    )]
    Manage(provider::cli::manage::ManageCommand),
    /// Move an existing Synapse onto the provider: check, then migrate its users, passwords,
    /// e-mail addresses, upstream links and logged-in devices (Synapse's database is only read).
    #[command(
        subcommand,
        after_help = "Example:\n  provider syn2mas check -c provider.yaml --synapse-config homeserver.yaml\n  \
            provider syn2mas migrate -c provider.yaml --synapse-config homeserver.yaml --dry-run"
    )]
    Syn2mas(provider::cli::syn2mas::Syn2masCommand),
    /// Apply migrations, sync the configured clients, and serve.
    #[command(after_help = "Example:\n  provider serve -c provider.yaml")]
    Serve {
        #[command(flatten)]
        file: ConfigFile,
        /// Don't apply pending migrations at start-up.
        #[arg(long)]
        no_migrate: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented configuration with fresh keys and secrets.
    #[command(
        after_help = "Example:\n  provider config generate --issuer https://auth.example.com/ \\\n    --database-url postgres://provider@db/provider > provider.yaml"
    )]
    Generate {
        /// The issuer identifier (https, ending with `/`; http only on localhost).
        #[arg(long, default_value = "http://localhost:8080/")]
        issuer: String,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The database URL (postgres://… or sqlite://…).
        #[arg(long, default_value = "sqlite://provider.db")]
        database_url: String,
        /// The homeserver's server name.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// Where the provider reaches the homeserver.
        #[arg(long, default_value = "http://localhost:8008/")]
        homeserver_endpoint: String,
    },
    /// Check a configuration file and list every problem, with its path. Exit status 1 if any.
    #[command(after_help = "Example:\n  provider config check provider.yaml && echo fine")]
    Check {
        /// The file to check (default: --config, $PROVIDER_CONFIG or provider.yaml).
        file: Option<PathBuf>,
        #[command(flatten)]
        file_option: ConfigFile,
    },
    /// Write the configured static clients to the database, and report what changed.
    #[command(after_help = "Example:\n  provider config sync -c provider.yaml --prune --dry-run")]
    Sync {
        #[command(flatten)]
        file: ConfigFile,
        /// Delete static clients the configuration no longer lists.
        #[arg(long)]
        prune: bool,
        /// Report what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum HomeserverCommand {
    /// Make each user's devices on the homeserver exactly the devices of their active sessions
    /// (creating missing ones, deleting stale ones), and provision users the homeserver lacks.
    /// Prints one line per user: `synced` or `queued` (left to the server's job worker, with
    /// the homeserver's error). Exit status 1 if any was queued.
    #[command(
        after_help = "Examples:\n  provider homeserver sync-devices -c provider.yaml --user alice --user bob\n  \
            provider homeserver sync-devices -c provider.yaml --all"
    )]
    SyncDevices {
        #[command(flatten)]
        file: ConfigFile,
        /// A user (localpart) to reconcile; repeat for several.
        #[arg(
            long = "user",
            value_name = "LOCALPART",
            required_unless_present = "all"
        )]
        users: Vec<String>,
        /// Reconcile every user.
        #[arg(long, conflicts_with = "users")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DatabaseCommand {
    /// Apply the migrations that are not applied yet.
    #[command(after_help = "Example:\n  provider database migrate -c provider.yaml")]
    Migrate {
        #[command(flatten)]
        file: ConfigFile,
    },
}

/// Exit status 1: the command ran and found problems (invalid config, failed operation).
const FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: can't start the async runtime: {e}");
            return ExitCode::from(FAILURE);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(FAILURE)
        }
    }
}

/// Loads and validates the config, printing every problem. `None` when it is invalid.
fn load_config(path: &Path) -> Option<Settings> {
    match config::load(path, std::env::vars()) {
        Ok((_, settings)) => Some(settings),
        Err(problems) => {
            let mut err = std::io::stderr().lock();
            for p in &problems {
                let _ = writeln!(err, "{}: {p}", path.display());
            }
            let _ = writeln!(
                err,
                "{}: {} problem{} found",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config(ConfigCommand::Generate {
            issuer,
            listen,
            database_url,
            server_name,
            homeserver_endpoint,
        }) => {
            let options = GenerateOptions {
                issuer,
                listen,
                database_url,
                homeserver: server_name,
                homeserver_endpoint,
            };
            if std::io::stderr().is_terminal() {
                eprintln!("Generating an RSA 2048 key and a P-256 key…");
            }
            let entropy = Entropy::system();
            let mut rng = entropy.rng.rng();
            let text = config::generate(&mut rng, entropy.clock.as_ref(), &options)
                .context("can't generate keys")?;
            // The flags end up in the file: check it as `config check` would, and print nothing
            // rather than a file that would be refused.
            if let Err(problems) = config::parse(&text, Vec::new(), Path::new(".")) {
                let mut err = std::io::stderr().lock();
                for p in &problems {
                    let _ = writeln!(err, "error: the options make an invalid config: {p}");
                }
                return Ok(ExitCode::from(FAILURE));
            }
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file, file_option }) => {
            let path = file.unwrap_or(file_option.config);
            Ok(match load_config(&path) {
                Some(settings) => {
                    println!(
                        "{}: OK (issuer {}, database {}, {} signing key{}, {} static client{})",
                        path.display(),
                        settings.issuer,
                        redact_url(&settings.database_url),
                        settings.keystore.keys().len(),
                        plural(settings.keystore.keys().len()),
                        settings.clients.len(),
                        plural(settings.clients.len()),
                    );
                    ExitCode::SUCCESS
                }
                None => ExitCode::from(FAILURE),
            })
        }
        Command::Config(ConfigCommand::Sync {
            file,
            prune,
            dry_run,
        }) => {
            let Some(settings) = load_config(&file.config) else {
                return Ok(ExitCode::from(FAILURE));
            };
            let storage = server::open_storage(&settings, Entropy::system()).await?;
            let report = sync::sync_clients(&storage, &settings, prune, dry_run).await?;
            let prefix = if dry_run { "would be " } else { "" };
            for (what, ids) in [
                ("created", &report.created),
                ("updated", &report.updated),
                ("unchanged", &report.unchanged),
                ("deleted", &report.deleted),
            ] {
                for id in ids {
                    let verb = if what == "unchanged" {
                        what.to_owned()
                    } else {
                        format!("{prefix}{what}")
                    };
                    println!("{verb}\t{id}");
                }
            }
            for id in &report.kept {
                println!("kept\t{id}\t(not in the config; --prune deletes it)");
            }
            let upstream = &report.upstream;
            for (what, ids) in [
                ("created", &upstream.created),
                ("updated", &upstream.updated),
                ("unchanged", &upstream.unchanged),
                ("disabled", &upstream.disabled),
            ] {
                for id in ids {
                    let verb = if what == "unchanged" {
                        what.to_owned()
                    } else {
                        format!("{prefix}{what}")
                    };
                    println!("{verb}\tupstream provider {id}");
                }
            }
            storage.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Database(DatabaseCommand::Migrate { file }) => {
            let Some(settings) = load_config(&file.config) else {
                return Ok(ExitCode::from(FAILURE));
            };
            let storage = server::open_storage(&settings, Entropy::system()).await?;
            let applied = storage.migrate().await.context("migration failed")?;
            if applied.is_empty() {
                println!("the database is up to date");
            }
            for m in applied {
                println!("applied\t{}\t{}", m.version, m.description);
            }
            storage.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Homeserver(HomeserverCommand::SyncDevices { file, users, all }) => {
            let Some(settings) = load_config(&file.config) else {
                return Ok(ExitCode::from(FAILURE));
            };
            let storage = server::open_storage(&settings, Entropy::system()).await?;
            let state = AppState::new(settings, storage.clone())?;
            let code = sync_devices(&state, &users, all).await?;
            storage.close().await;
            Ok(code)
        }
        Command::Doctor { file, json } => {
            let Some(settings) = load_config(&file.config) else {
                return Ok(ExitCode::from(FAILURE));
            };
            let report = provider::doctor::run(&settings).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json())?);
            } else {
                let color =
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                print!("{}", report.text(color));
            }
            Ok(if report.failed() {
                ExitCode::from(FAILURE)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Manage(command) => {
            let Some(settings) = load_config(command.config()) else {
                return Ok(ExitCode::from(FAILURE));
            };
            provider::cli::manage::run(command, settings).await
        }
        Command::Syn2mas(command) => {
            let Some(settings) = load_config(command.config_path()) else {
                return Ok(ExitCode::from(FAILURE));
            };
            provider::cli::syn2mas::run(command, settings).await
        }
        Command::Serve { file, no_migrate } => {
            let Some(settings) = load_config(&file.config) else {
                return Ok(ExitCode::from(FAILURE));
            };
            // Bind first: a busy port must fail before the database is touched.
            let listener = server::bind(settings.listen).await?;
            let storage = server::open_storage(&settings, Entropy::system()).await?;
            server::prepare(&storage, &settings, !no_migrate).await?;
            let issuer = settings.issuer.clone();
            let server = Server::from_listener(listener, settings, storage.clone())?;
            tracing::info!(address = %server.local_addr()?, %issuer, "listening");
            server.run(server::shutdown_signal()).await?;
            storage.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `provider homeserver sync-devices`: one line per user on stdout, progress on a terminal's
/// stderr for `--all`.
async fn sync_devices(state: &AppState, names: &[String], all: bool) -> anyhow::Result<ExitCode> {
    const PAGE: u32 = 200;
    let mut queued = 0_usize;
    let mut done = 0_usize;
    let progress = all && std::io::stderr().is_terminal();
    let mut report = |user: &str, outcome: Outcome| {
        match outcome {
            Outcome::Done => println!("synced\t{user}"),
            Outcome::Queued(error) => {
                queued += 1;
                println!("queued\t{user}\t{error}");
            }
        }
        done += 1;
        if progress {
            eprint!("\r{done} users reconciled");
        }
    };
    if all {
        let mut after = None;
        loop {
            let page = state
                .storage
                .reader()
                .await?
                .users()
                .list_page(after, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for user in page {
                let task = Task::SyncDevices { user_id: user.id };
                report(
                    &user.username,
                    provisioning::run_task_now(state, &task).await?,
                );
            }
        }
        if progress {
            eprintln!();
        }
    } else {
        let mut unknown = Vec::new();
        for name in names {
            let found = state
                .storage
                .reader()
                .await?
                .users()
                .find_by_username(name)
                .await?;
            match found {
                Some(user) => {
                    let task = Task::SyncDevices { user_id: user.id };
                    report(
                        &user.username,
                        provisioning::run_task_now(state, &task).await?,
                    );
                }
                None => unknown.push(name),
            }
        }
        for name in &unknown {
            eprintln!("error: no user `{name}`");
        }
        if !unknown.is_empty() {
            return Ok(ExitCode::from(FAILURE));
        }
    }
    Ok(if queued == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILURE)
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
