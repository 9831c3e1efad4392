//! `conformance`: checks an OAuth 2.0 / OpenID Connect issuer (and a Matrix homeserver that
//! delegates to it) against the specs, over HTTP. Exit status: 0 when every MUST holds, 1 when
//! one fails, 2 on a usage error or when the issuer can't be reached.

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use conformance::{Options, Profile, CHECKS};
use url::Url;

const EXAMPLES: &str = "\
Examples:
  conformance --issuer https://auth.example.org/ --homeserver https://matrix.example.org/
  conformance --issuer http://127.0.0.1:8080/ --profile oauth2,oidc --format junit --output report.xml
  conformance --issuer https://auth.example.org/ --username alice --password … --only oauth2.token
  conformance --list

Without --username/--password the suite registers an account `conformance-<8 letters>`
(prompt=create) when the issuer offers registration; checks that need a user are skipped
otherwise.

A 429 answer (the provider's sign-in rate limit, say) is waited out as Retry-After or
retry_after_ms asks and the request repeated, within --rate-limit-wait and
--rate-limit-budget; beyond them the check is skipped, never failed. The report says how
much rate limits slowed the run down.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
    Markdown,
}

/// Checks an OAuth 2.0 / OIDC issuer and a Matrix homeserver (MSC3861) against the specs.
#[derive(Debug, Parser)]
#[command(name = "conformance", version, after_help = EXAMPLES)]
struct Cli {
    /// The issuer identifier, exactly as the metadata states it.
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    issuer: Option<Url>,
    /// A homeserver that delegates to the issuer (enables the matrix-homeserver profile).
    #[arg(long, value_name = "URL")]
    homeserver: Option<Url>,
    /// Profiles to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "oauth2,oidc,matrix-provider,matrix-homeserver"
    )]
    profile: Vec<Profile>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// An existing account to sign in with.
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Its password.
    #[arg(
        long,
        requires = "username",
        env = "CONFORMANCE_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// The secret the homeserver introspects with (enables the homeserver-contract checks).
    #[arg(long, env = "CONFORMANCE_HOMESERVER_SECRET", hide_env_values = true)]
    homeserver_secret: Option<String>,
    /// Run only these checks: ids or id prefixes (e.g. `oauth2.token`), comma-separated or
    /// repeated.
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    only: Vec<String>,
    /// How many checks run at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds one check may take (waits for rate limits not counted).
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The longest wait, in seconds, for one rate-limited answer (429 with Retry-After or
    /// retry_after_ms); a longer one skips the check. 0: never wait.
    #[arg(long, value_name = "SECONDS", default_value_t = conformance::DEFAULT_MAX_WAIT.as_secs())]
    rate_limit_wait: u64,
    /// The longest the whole run waits for rate limits, in seconds (checks waiting at the same
    /// time count once).
    #[arg(long, value_name = "SECONDS", default_value_t = conformance::DEFAULT_BUDGET.as_secs())]
    rate_limit_budget: u64,
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
}

fn list() -> String {
    let mut out = String::new();
    for c in CHECKS {
        out.push_str(&format!(
            "{:<55} {:<17} {:<6} {}: {}\n",
            c.id, c.profile, c.level, c.spec, c.requirement
        ));
    }
    out.push_str(&format!("{} checks\n", CHECKS.len()));
    out
}

fn write(output: Option<&PathBuf>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("can't write the report to {}", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("can't write the report")
        }
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.list {
        write(None, &list())?;
        return Ok(ExitCode::SUCCESS);
    }
    let issuer = cli.issuer.context("--issuer is required")?;
    let mut options = Options::new(issuer);
    options.homeserver = cli.homeserver;
    options.profiles = cli.profile;
    options.account = cli.username.zip(cli.password);
    options.homeserver_secret = cli.homeserver_secret;
    options.only = cli.only;
    options.concurrency = cli.concurrency.max(1);
    options.timeout = Duration::from_secs(cli.timeout.max(1));
    options.rate_limit_wait = Duration::from_secs(cli.rate_limit_wait);
    options.rate_limit_budget = Duration::from_secs(cli.rate_limit_budget);
    let unknown = conformance::unknown_selectors(&options);
    if !unknown.is_empty() {
        eprintln!(
            "error: --only names no check: {} (see --list)",
            unknown.join(", ")
        );
        return Ok(ExitCode::from(2));
    }

    let report = conformance::run(&options).await;
    let text = match cli.format {
        Format::Text => report.render_text(),
        Format::Json => report.render_json(),
        Format::Junit => report.render_junit(),
        Format::Markdown => report.render_markdown(),
    };
    write(cli.output.as_ref(), &text)?;
    if let Some(why) = &report.unreachable {
        eprintln!("error: the issuer can't be reached: {why}");
    } else if cli.output.is_some() || !matches!(cli.format, Format::Text) {
        eprintln!("{}", report.summary().line());
        if !report.rate_limits.is_empty() {
            eprintln!("rate limits: {}", report.rate_limits.line());
        }
    }
    Ok(ExitCode::from(
        u8::try_from(report.exit_code()).unwrap_or(2),
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
