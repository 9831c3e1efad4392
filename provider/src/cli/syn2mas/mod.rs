//! `provider syn2mas …`: moves an existing Synapse onto the provider.
//!
//! - `check` reads provider.yaml, Synapse's homeserver.yaml and Synapse's database, and prints
//!   one line per finding (`error: …` / `warning: …`, each with its fix) on stdout. Exit status
//!   1 on any error, or on any warning with `--strict`.
//! - `migrate [--dry-run]` runs the same checks (and stops where `check` would fail), then
//!   copies the accounts, e-mail addresses, upstream links and devices with their tokens
//!   ([`migrate`]), with a progress bar per table on a terminal's stderr (plain lines on stderr
//!   otherwise) and a summary on stdout: one line per table (`<table>\tread N\timported N\t
//!   unchanged N\tskipped N`), one per skip reason, and a last line saying what happened.
//!
//! Synapse's database comes from homeserver.yaml's `database` section, or
//! `--synapse-database-url`; it is opened read-only.

pub mod check;
pub mod migrate;
pub mod synapse;

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use self::{
    check::Level,
    migrate::{format_date, Options, Progress, Report},
    synapse::{SynapseConfig, SynapseDb},
};
use crate::{clock::Entropy, config::Settings, server, storage::redact_url};

/// Where Synapse is.
#[derive(Debug, Clone, Args)]
pub struct SynapseSource {
    /// Synapse's configuration (homeserver.yaml): server name, database, password pepper, SSO
    /// providers.
    #[arg(long, value_name = "FILE")]
    pub synapse_config: PathBuf,
    /// Synapse's database instead of homeserver.yaml's (postgres://… or sqlite://…).
    #[arg(long, value_name = "URL")]
    pub synapse_database_url: Option<String>,
    /// Make warnings block like errors.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Subcommand)]
pub enum Syn2masCommand {
    /// Check both configurations and Synapse's database; write nothing. One line per finding
    /// with its fix; exit status 1 on errors (and on warnings with --strict).
    #[command(after_help = "Example:\n  \
        provider syn2mas check -c provider.yaml --synapse-config /etc/synapse/homeserver.yaml")]
    Check {
        #[command(flatten)]
        file: crate::cli::manage::ConfigFile,
        #[command(flatten)]
        synapse: SynapseSource,
    },
    /// Copy Synapse's users, passwords, e-mail addresses, upstream links and devices (with
    /// their tokens) into the provider's database, made if new. Stop Synapse first.
    #[command(after_help = "Examples:\n  \
        provider syn2mas migrate -c provider.yaml --synapse-config homeserver.yaml --dry-run\n  \
        provider syn2mas migrate -c provider.yaml --synapse-config homeserver.yaml")]
    Migrate {
        #[command(flatten)]
        file: crate::cli::manage::ConfigFile,
        #[command(flatten)]
        synapse: SynapseSource,
        /// Do everything in one transaction and roll it back: the report is exact, nothing is
        /// kept (except the provider's schema, when the database was new).
        #[arg(long)]
        dry_run: bool,
        /// Rows per transaction.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
    },
}

impl Syn2masCommand {
    pub fn config_path(&self) -> &std::path::Path {
        match self {
            Self::Check { file, .. } | Self::Migrate { file, .. } => &file.config,
        }
    }
}

/// Exit status 1: errors found, or the migration failed.
const FAILURE: u8 = 1;

/// Runs a `syn2mas` command with the loaded provider configuration.
pub async fn run(command: Syn2masCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let (source, migrate) = match &command {
        Syn2masCommand::Check { synapse, .. } => (synapse, None),
        Syn2masCommand::Migrate {
            synapse,
            dry_run,
            batch_size,
            ..
        } => (
            synapse,
            Some(Options {
                dry_run: *dry_run,
                batch_size: *batch_size as usize,
            }),
        ),
    };
    let synapse_config = SynapseConfig::load(&source.synapse_config)?;
    let url = source
        .synapse_database_url
        .clone()
        .or_else(|| synapse_config.database_url.clone())
        .context("homeserver.yaml has no `database` section: give --synapse-database-url")?;
    let db = SynapseDb::open(&url).await?;
    let outcome = run_with(&synapse_config, &db, &settings, source.strict, migrate).await;
    db.close().await;
    outcome
}

async fn run_with(
    synapse: &SynapseConfig,
    db: &SynapseDb,
    settings: &Settings,
    strict: bool,
    migrate: Option<Options>,
) -> anyhow::Result<ExitCode> {
    let findings = check::findings(synapse, db, settings).await?;
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    let blocking = errors + if strict { warnings } else { 0 };
    let mut out = std::io::stdout().lock();
    for f in &findings {
        writeln!(out, "{f}")?;
    }
    let summary = format!(
        "{errors} error{}, {warnings} warning{}{}",
        plural(errors),
        plural(warnings),
        if strict && warnings > 0 {
            " (--strict: warnings block)"
        } else {
            ""
        }
    );
    let Some(options) = migrate else {
        writeln!(out, "check: {summary}")?;
        return Ok(if blocking > 0 {
            ExitCode::from(FAILURE)
        } else {
            ExitCode::SUCCESS
        });
    };
    if blocking > 0 {
        writeln!(out, "migrate: not started: {summary}")?;
        return Ok(ExitCode::from(FAILURE));
    }
    drop(out);

    let storage = server::open_storage(settings, Entropy::system()).await?;
    let mut progress = Bars::new();
    let outcome = migrate::run(synapse, db, settings, &storage, &mut progress, options).await;
    storage.close().await;
    let report = outcome.with_context(|| {
        format!(
            "the migration into {} stopped; what was committed stays, and running it again \
             carries on",
            redact_url(&settings.database_url)
        )
    })?;
    print_report(&report)?;
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn print_report(report: &Report) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if report.schema_migrations > 0 {
        writeln!(
            out,
            "schema\t{} migration{} applied",
            report.schema_migrations,
            plural(report.schema_migrations)
        )?;
    }
    let sync = &report.sync;
    writeln!(
        out,
        "config\tclients: {} created, {} updated, {} unchanged; upstream providers: {} created, {} updated, {} unchanged",
        sync.created.len(),
        sync.updated.len(),
        sync.unchanged.len(),
        sync.upstream.created.len(),
        sync.upstream.updated.len(),
        sync.upstream.unchanged.len(),
    )?;
    for (table, t) in &report.tables {
        writeln!(
            out,
            "{table}\tread {}\timported {}\tunchanged {}\tskipped {}",
            t.read,
            t.imported,
            t.already,
            t.skipped_total()
        )?;
    }
    for (table, t) in &report.tables {
        for (reason, (n, examples)) in &t.skipped {
            let more = if *n as usize > examples.len() {
                ", …"
            } else {
                ""
            };
            writeln!(
                out,
                "skipped\t{table}\t{n}\t{reason}\t(e.g. {}{more})",
                examples.join(", ")
            )?;
        }
    }
    let verdict = match (&report.previous, report.changed_anything(), report.dry_run) {
        (_, _, true) => "dry run: rolled back, nothing was written".to_owned(),
        (Some(p), false, false) if p.finished_at.is_some() => format!(
            "nothing changed: everything was imported already (import finished {})",
            p.finished_at.map(format_date).unwrap_or_default()
        ),
        (Some(p), true, false) if p.finished_at.is_none() => format!(
            "done: the interrupted import started {} is complete",
            format_date(p.started_at)
        ),
        (_, _, false) => "done: the provider's database holds Synapse's accounts".to_owned(),
    };
    writeln!(out, "{verdict}")
}

/// A progress bar per table on a terminal's stderr; plain lines on stderr otherwise.
struct Bars {
    terminal: bool,
    table: &'static str,
    total: usize,
}

impl Bars {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            table: "",
            total: 0,
        }
    }
}

impl Progress for Bars {
    fn start(&mut self, table: &'static str, total: usize) {
        self.table = table;
        self.total = total;
        self.advance(0);
    }

    fn advance(&mut self, done: usize) {
        const WIDTH: usize = 30;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
            let _ = write!(
                err,
                "\r{:<18} [{}{}] {done}/{}",
                self.table,
                "#".repeat(filled),
                " ".repeat(WIDTH - filled),
                self.total
            );
        } else if done > 0 || self.total == 0 {
            let _ = writeln!(err, "progress\t{}\t{done}/{}", self.table, self.total);
        }
    }

    fn finish(&mut self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
