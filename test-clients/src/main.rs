//! `test-clients`: runs one scripted Matrix client journey against a homeserver and prints its
//! transcript. Exit status: 0 the journey passed, 1 it failed (the error on stderr), 2 usage.

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::{error::ErrorKind, CommandFactory as _, Parser, ValueEnum};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};
use test_clients::{
    bench,
    journeys::{self, SharedRng},
    pages::Account,
    transcript::{render_event, Event, Transcript},
};
use url::Url;

const EXAMPLES: &str = "\
Examples:
  test-clients oidc-native --homeserver http://localhost:8008 \\
      --username alice --password secret
  test-clients oidc-native --homeserver http://localhost:8008 --register \\
      --username bob --password secret --device-id MYDEVICE01
  test-clients oidc-aware --homeserver http://localhost:8008 \\
      --username alice --password secret --json > transcript.json
  test-clients legacy --homeserver http://localhost:8008 \\
      --username alice --password secret
  test-clients device --homeserver http://localhost:8008
      (shows a user code and its link, and waits for someone to approve it)
  test-clients device --homeserver http://localhost:8008 \\
      --username alice --password secret

  test-clients bench --homeserver http://localhost:8008 \\
      --username alice --password secret --homeserver-secret S \\
      --client-id ID --client-secret CS --concurrency 16 --duration 10

The password may also come from TEST_CLIENTS_PASSWORD.
Exit status: 0 the journey passed, 1 it failed, 2 usage error.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Journey {
    /// An OAuth 2.0-native client: discovery, registration, code flow with PKCE and a device
    /// scope, whoami, refresh, revocation, RP-initiated logout.
    OidcNative,
    /// An OIDC-aware legacy client: m.login.sso (action=login|register), then m.login.token.
    OidcAware,
    /// A legacy client: m.login.password with and without refresh token, /refresh, /logout.
    Legacy,
    /// The device authorization grant: shows a user code (approves it itself with credentials).
    Device,
    /// A load generator for the hot paths (introspection, refresh, client_credentials, password
    /// login): req/s and p50/p99 for each.
    Bench,
}

impl Journey {
    fn name(self) -> &'static str {
        match self {
            Self::OidcNative => "oidc-native",
            Self::OidcAware => "oidc-aware",
            Self::Legacy => "legacy",
            Self::Device => "device",
            Self::Bench => "bench",
        }
    }
}

/// Scripted Matrix clients that run one complete journey against a homeserver (and the OAuth 2.0
/// provider it delegates to, MSC3861) and print every request and response, secrets elided.
#[derive(Debug, Parser)]
#[command(name = "test-clients", version, after_help = EXAMPLES)]
struct Cli {
    /// The journey to run.
    #[arg(value_enum)]
    journey: Journey,
    /// The homeserver's base URL.
    #[arg(long, value_name = "URL")]
    homeserver: Url,
    /// The account's username (localpart).
    #[arg(long, value_name = "U", requires = "password")]
    username: Option<String>,
    /// The account's password.
    #[arg(
        long,
        value_name = "P",
        env = "TEST_CLIENTS_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    password: Option<String>,
    /// Create the account instead of signing in (prompt=create, action=register).
    #[arg(long, requires_all = ["username", "password"])]
    register: bool,
    /// The device ID to ask for (RFC 3986 unreserved characters).
    #[arg(long, value_name = "ID")]
    device_id: Option<String>,
    /// The client_uri to register (https, MSC2966).
    #[arg(long, value_name = "URL", default_value = test_clients::oauth::DEFAULT_CLIENT_URI)]
    client_uri: Url,
    /// Print a JSON document (report, error, transcript) on stdout at the end instead of the
    /// transcript as it goes; the step headings still go to stderr as it runs.
    #[arg(long)]
    json: bool,
    /// bench: the paths to load, comma-separated (introspection, refresh, client-credentials,
    /// password-login); default: those the given credentials allow.
    #[arg(long, value_delimiter = ',', value_name = "PATHS")]
    targets: Vec<String>,
    /// bench: requests in flight at once (each worker sends one at a time).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// bench: seconds per path.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// bench: the homeserver's shared secret, to introspect as the homeserver does.
    #[arg(
        long,
        value_name = "SECRET",
        env = "TEST_CLIENTS_HOMESERVER_SECRET",
        hide_env_values = true
    )]
    homeserver_secret: Option<String>,
    /// bench: a confidential client allowed the client_credentials grant.
    #[arg(long, value_name = "ID", requires = "client_secret")]
    client_id: Option<String>,
    /// bench: that client's secret.
    #[arg(
        long,
        value_name = "SECRET",
        env = "TEST_CLIENTS_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id"
    )]
    client_secret: Option<String>,
}

/// A usage error (exit status 2).
fn usage(message: &str) -> ! {
    Cli::command()
        .error(ErrorKind::ArgumentConflict, message)
        .exit()
}

fn account(cli: &Cli) -> Option<Account> {
    let (username, password) = (cli.username.clone()?, cli.password.clone()?);
    Some(if cli.register {
        Account::Register { username, password }
    } else {
        Account::SignIn { username, password }
    })
}

/// Checks what the journey needs beyond what clap checks.
fn check_usage(cli: &Cli) {
    if let Some(id) = &cli.device_id {
        if !journeys::valid_device_id(id) {
            usage("--device-id takes RFC 3986 unreserved characters only (A-Z a-z 0-9 - . _ ~)");
        }
    }
    let has_account = cli.username.is_some() && cli.password.is_some();
    match cli.journey {
        Journey::OidcNative | Journey::OidcAware if !has_account => usage(&format!(
            "{} needs --username and --password (with --register to create the account)",
            cli.journey.name()
        )),
        Journey::Legacy if !has_account => usage("legacy needs --username and --password"),
        Journey::Bench if !has_account => {
            usage("bench needs --username and --password (with --register to create the account)")
        }
        Journey::Bench if cli.concurrency == 0 || cli.duration == 0 => {
            usage("bench needs --concurrency and --duration above 0")
        }
        Journey::Legacy if cli.register => {
            usage("legacy can't --register: the legacy API has no registration here")
        }
        _ => {}
    }
}

async fn run(cli: &Cli, transcript: &Transcript) -> anyhow::Result<Value> {
    let rng = SharedRng::new(StdRng::from_entropy());
    let account = account(cli);
    let report = match cli.journey {
        Journey::Bench => {
            let account = account.context("an account")?;
            let http = test_clients::http::Http::new(transcript.clone());
            let discovered =
                test_clients::discovery::from_homeserver(&http, &cli.homeserver).await?;
            let targets = if cli.targets.is_empty() {
                bench::Target::ALL
                    .into_iter()
                    .filter(|t| match t {
                        bench::Target::Introspection => {
                            cli.homeserver_secret.is_some() || cli.client_id.is_some()
                        }
                        bench::Target::ClientCredentials => cli.client_id.is_some(),
                        _ => true,
                    })
                    .collect()
            } else {
                cli.targets
                    .iter()
                    .map(|name| {
                        bench::Target::parse(name)
                            .ok_or_else(|| anyhow::anyhow!("unknown bench target `{name}`"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let options = bench::BenchOptions {
                issuer: discovered.issuer,
                homeserver: Some(cli.homeserver.clone()),
                concurrency: cli.concurrency,
                duration: std::time::Duration::from_secs(cli.duration),
                targets,
                account,
                homeserver_secret: cli.homeserver_secret.clone(),
                client: cli.client_id.clone().zip(cli.client_secret.clone()),
            };
            transcript.note(format!(
                "== bench: {} workers, {} s per path",
                options.concurrency, cli.duration
            ));
            let figures = bench::run(&options, transcript).await?;
            for line in &figures {
                transcript.note(line.to_string());
            }
            json!(figures
                .iter()
                .map(|f| json!({
                    "target": f.target.name(),
                    "requests_per_second": f.per_second(),
                    "ok": f.ok,
                    "errors": f.errors,
                    "p50_ms": f.p50.as_secs_f64() * 1000.0,
                    "p99_ms": f.p99.as_secs_f64() * 1000.0,
                    "max_ms": f.max.as_secs_f64() * 1000.0,
                }))
                .collect::<Vec<_>>())
        }
        Journey::OidcNative => {
            let mut opts = journeys::NativeOptions::new(
                cli.homeserver.clone(),
                account.context("an account")?,
                rng,
            );
            opts.device_id = cli.device_id.clone();
            opts.client_uri = cli.client_uri.clone();
            serde_json::to_value(journeys::oidc_native(&opts, transcript).await?)?
        }
        Journey::OidcAware => {
            let mut opts =
                journeys::AwareOptions::new(cli.homeserver.clone(), account.context("an account")?);
            opts.device_id = cli.device_id.clone();
            serde_json::to_value(journeys::oidc_aware(&opts, transcript).await?)?
        }
        Journey::Legacy => {
            let account = account.context("an account")?;
            let mut opts = journeys::LegacyOptions::new(
                cli.homeserver.clone(),
                account.username(),
                account.password(),
            );
            opts.device_id = cli.device_id.clone();
            serde_json::to_value(journeys::legacy(&opts, transcript).await?)?
        }
        Journey::Device => {
            let mut opts = journeys::DeviceOptions::new(cli.homeserver.clone(), account, rng);
            opts.device_id = cli.device_id.clone();
            opts.client_uri = cli.client_uri.clone();
            serde_json::to_value(journeys::device(&opts, transcript).await?)?
        }
    };
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    check_usage(&cli);
    let json = cli.json;
    // The transcript as it goes: on stdout, or (with --json) only the notes, on stderr, so a
    // person can still read the device flow's user code.
    let transcript = Transcript::with_sink(move |event: &Event| {
        if !json {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(render_event(event).as_bytes());
            let _ = out.flush();
        } else if let Event::Note { text } = event {
            eprintln!("== {text}");
        }
    });
    let outcome = run(&cli, &transcript)
        .await
        .with_context(|| format!("the {} journey failed", cli.journey.name()));
    if json {
        let document = json!({
            "journey": cli.journey.name(),
            "homeserver": cli.homeserver.as_str(),
            "passed": outcome.is_ok(),
            "report": outcome.as_ref().ok(),
            "error": outcome.as_ref().err().map(|e| transcript.elide_text(&format!("{e:#}"))),
            "transcript": transcript.to_json(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_else(|_| document.to_string())
        );
    }
    match outcome {
        Ok(report) => {
            if !json {
                println!("\n== {} journey passed", cli.journey.name());
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", transcript.elide_text(&format!("{error:#}")));
            ExitCode::from(1)
        }
    }
}
