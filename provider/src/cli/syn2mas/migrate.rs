//! `provider syn2mas migrate`: copies Synapse's accounts, e-mail addresses, upstream links and
//! logged-in devices into the provider's database, table after table, one transaction per batch
//! (a dry run: one transaction for everything, rolled back, so its report is exact).
//!
//! Every row is written by its natural key ([`crate::storage::SynapseImportRepository`]), so a
//! run again after a complete one inserts nothing, and a run again after an interrupted one
//! carries on where the last committed batch ended. Synapse's database is only read.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use super::synapse::{from_millis, localpart, SynapseConfig, SynapseDb};
use crate::{
    config::Settings,
    core::{
        sync::{self, SyncReport},
        upstream::sync::sync_providers,
    },
    crypto::{sha256, Encrypter},
    storage::{
        BoxRepository, Imported, ImportedAccessToken, ImportedCompatSession, ImportedEmail,
        ImportedRefreshToken, ImportedUser, Storage, SynapseImport,
    },
};

/// The password scheme version of imported bcrypt hashes: version 0 of the provider's schemes
/// (`core::passwords::PasswordConfig::default`), verified with `secrets.password_pepper` and
/// upgraded to argon2id at the first sign-in.
const BCRYPT_VERSION: i32 = 0;

/// Why a row of a user that doesn't move doesn't move either.
const NOT_MIGRATED: &str = "its user is not migrated";

/// How many examples of each skip reason the report keeps.
const EXAMPLES: usize = 5;

/// What a run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dry_run: bool,
    /// Rows per transaction.
    pub batch_size: usize,
}

/// Told about each table's progress (a bar on a terminal, lines on a pipe).
pub trait Progress {
    fn start(&mut self, table: &'static str, total: usize);
    fn advance(&mut self, done: usize);
    fn finish(&mut self);
}

/// What happened to one table's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    pub read: u64,
    pub imported: u64,
    /// There from a previous run: unchanged.
    pub already: u64,
    /// Reason → (count, a few examples).
    pub skipped: BTreeMap<String, (u64, Vec<String>)>,
}

impl TableReport {
    fn skip(&mut self, reason: impl Into<String>, example: impl Into<String>) {
        let entry = self.skipped.entry(reason.into()).or_default();
        entry.0 += 1;
        if entry.1.len() < EXAMPLES {
            entry.1.push(example.into());
        }
    }

    fn count(&mut self, outcome: Imported, reason_if_no_user: &str, example: &str) {
        match outcome {
            Imported::Inserted => self.imported += 1,
            Imported::AlreadyThere => self.already += 1,
            Imported::NoUser => self.skip(reason_if_no_user, example),
        }
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().map(|(n, _)| n).sum()
    }
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub dry_run: bool,
    /// Schema migrations applied to the provider's database.
    pub schema_migrations: usize,
    /// Static clients and upstream providers written from provider.yaml.
    pub sync: SyncReport,
    /// The import this run continued or confirmed, if there was one.
    pub previous: Option<SynapseImport>,
    pub tables: Vec<(&'static str, TableReport)>,
}

impl Report {
    /// Did the run write (or, dry, would it write) any row?
    pub fn changed_anything(&self) -> bool {
        self.tables.iter().any(|(_, t)| t.imported > 0)
    }
}

/// One transaction per batch, or one for everything on a dry run.
struct Batches<'a> {
    storage: &'a Storage,
    dry: Option<BoxRepository>,
    dry_run: bool,
}

impl Batches<'_> {
    async fn open(&mut self) -> anyhow::Result<BoxRepository> {
        match self.dry.take() {
            Some(repo) => Ok(repo),
            None => Ok(self.storage.begin().await?),
        }
    }

    async fn close(&mut self, repo: BoxRepository) -> anyhow::Result<()> {
        if self.dry_run {
            self.dry = Some(repo);
        } else {
            repo.commit().await?;
        }
        Ok(())
    }
}

/// What the migration knows of a Synapse user that is (or would be) in the provider's database.
#[derive(Debug, Clone, Copy)]
struct Migrated {
    admin: bool,
    deactivated: bool,
}

/// Runs the migration.
pub async fn run(
    synapse: &SynapseConfig,
    db: &SynapseDb,
    settings: &Settings,
    storage: &Storage,
    progress: &mut dyn Progress,
    options: Options,
) -> anyhow::Result<Report> {
    let now = storage.entropy().clock.now();
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };

    // A new database gets its schema (even on a dry run: an empty schema changes no data).
    report.schema_migrations = storage
        .migrate()
        .await
        .context("can't migrate the provider's database")?
        .len();

    let mut batches = Batches {
        storage,
        dry: None,
        dry_run: options.dry_run,
    };
    // The configured clients and upstream providers, as `config sync` writes them: the links
    // need the providers. A dry run writes the providers in its own transaction.
    report.sync = sync::sync_clients(storage, settings, false, options.dry_run).await?;
    if options.dry_run {
        let mut repo = storage.begin().await?;
        let mut rng = storage.entropy().rng.rng();
        sync_providers(
            &mut repo,
            &settings.upstream_providers,
            &Encrypter::new(&settings.encryption_key),
            &mut rng,
        )
        .await?;
        batches.dry = Some(repo);
    }

    // Never mix an import into accounts that are not from it.
    let mut repo = batches.open().await?;
    let previous = repo.synapse_import().last().await?;
    let accounts = repo.users().count().await?;
    let import = match previous.clone() {
        None if accounts > 0 => bail!(
            "the provider's database already has {accounts} accounts that were not imported \
             from Synapse: migrate into a new database"
        ),
        None => repo.synapse_import().start(&synapse.server_name).await?,
        Some(p) if p.server_name != synapse.server_name => bail!(
            "the provider's database holds an import from the homeserver `{}`, not `{}`",
            p.server_name,
            synapse.server_name
        ),
        Some(p) => p,
    };
    batches.close(repo).await?;
    report.previous = previous;

    let server = synapse.server_name.as_str();
    let mut migrated: HashMap<String, Migrated> = HashMap::new();

    // Accounts and their passwords.
    let rows = db.users().await?;
    let mut users = TableReport::default();
    let mut passwords = TableReport::default();
    let mut todo = Vec::new();
    for row in rows {
        users.read += 1;
        let Some(local) = localpart(&row.name, server) else {
            users.skip(format!("not a user of {server}"), &row.name);
            continue;
        };
        if let Some(appservice) = &row.appservice_id {
            users.skip(
                "application-service user (its appservice keeps acting for it)",
                format!("{} ({appservice})", row.name),
            );
            continue;
        }
        if row.is_guest != 0 {
            users.skip(
                "guest account (no guest access under delegated auth)",
                &row.name,
            );
            continue;
        }
        let password = match row.password_hash.as_deref().filter(|h| !h.is_empty()) {
            None => None,
            Some(hash) => {
                passwords.read += 1;
                if hash.starts_with("$2") {
                    Some((BCRYPT_VERSION, hash.to_owned()))
                } else {
                    passwords.skip(
                        "not a bcrypt hash (the user sets a new password)",
                        &row.name,
                    );
                    None
                }
            }
        };
        let created_at = row
            .creation_ts
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or(now);
        migrated.insert(
            local.to_owned(),
            Migrated {
                admin: row.admin != 0,
                deactivated: row.deactivated != 0,
            },
        );
        todo.push(ImportedUser {
            username: local.to_owned(),
            created_at,
            can_request_admin: row.admin != 0,
            // Synapse keeps no date for these: the import's.
            locked_at: (row.locked != 0).then_some(now),
            deactivated_at: (row.deactivated != 0).then_some(now),
            password,
        });
    }
    progress.start("users", todo.len());
    let mut done = 0;
    for chunk in todo.chunks(options.batch_size) {
        let mut repo = batches.open().await?;
        let outcomes = repo.synapse_import().import_users(chunk).await?;
        for (user, outcome) in chunk.iter().zip(outcomes) {
            users.count(outcome, "account missing", &user.username);
            if user.password.is_some() {
                match outcome {
                    Imported::Inserted => passwords.imported += 1,
                    _ => passwords.already += 1,
                }
            }
        }
        batches.close(repo).await?;
        done += chunk.len();
        progress.advance(done);
    }
    progress.finish();
    report.tables.push(("users", users));
    report.tables.push(("passwords", passwords));

    // E-mail addresses: confirmed, as Synapse only keeps validated ones.
    let mut emails = TableReport::default();
    let mut todo = Vec::new();
    for row in db.threepids().await? {
        emails.read += 1;
        let example = format!("{} {}", row.user_id, row.address);
        match localpart(&row.user_id, server).filter(|l| migrated.contains_key(*l)) {
            None => emails.skip(NOT_MIGRATED, example),
            Some(_) if row.medium != "email" => {
                emails.skip(
                    format!("not an e-mail address (medium {})", row.medium),
                    example,
                );
            }
            Some(local) => todo.push(ImportedEmail {
                username: local.to_owned(),
                email: row.address,
                added_at: from_millis(row.added_at).unwrap_or(now),
            }),
        }
    }
    progress.start("e-mail addresses", todo.len());
    let mut done = 0;
    for chunk in todo.chunks(options.batch_size) {
        let mut repo = batches.open().await?;
        let outcomes = repo.synapse_import().import_emails(chunk).await?;
        for (e, outcome) in chunk.iter().zip(outcomes) {
            emails.count(
                outcome,
                NOT_MIGRATED,
                &format!("{} {}", e.username, e.email),
            );
        }
        batches.close(repo).await?;
        done += chunk.len();
        progress.advance(done);
    }
    progress.finish();
    report.tables.push(("e-mail addresses", emails));

    // Upstream links, through each upstream provider's `synapse_idp_id`.
    let mut links = TableReport::default();
    let mut todo = Vec::new();
    for row in db.external_ids().await? {
        links.read += 1;
        let example = format!("{} {} {}", row.user_id, row.auth_provider, row.external_id);
        let provider = settings
            .upstream_providers
            .iter()
            .find(|p| p.synapse_idp_id.as_deref() == Some(row.auth_provider.as_str()));
        match (
            localpart(&row.user_id, server).filter(|l| migrated.contains_key(*l)),
            provider,
        ) {
            (None, _) => links.skip(NOT_MIGRATED, example),
            (Some(_), None) => links.skip(
                format!(
                    "no upstream provider has `synapse_idp_id: {}`",
                    row.auth_provider
                ),
                example,
            ),
            (Some(local), Some(provider)) => {
                todo.push((local.to_owned(), provider.id, row.external_id))
            }
        }
    }
    progress.start("upstream links", todo.len());
    let mut done = 0;
    for chunk in todo.chunks(options.batch_size) {
        let mut repo = batches.open().await?;
        for (local, provider, subject) in chunk {
            let outcome = repo
                .synapse_import()
                .import_upstream_link(local, *provider, subject)
                .await?;
            links.count(outcome, NOT_MIGRATED, &format!("{local} {subject}"));
        }
        batches.close(repo).await?;
        done += chunk.len();
        progress.advance(done);
    }
    progress.finish();
    report.tables.push(("upstream links", links));

    // Devices with their tokens, as compat sessions.
    let mut devices = TableReport::default();
    let mut access = TableReport::default();
    let mut refresh = TableReport::default();
    let mut access_by_device: HashMap<(String, String), Vec<_>> = HashMap::new();
    for row in db.access_tokens().await? {
        access.read += 1;
        let Some(device) = row.device_id.clone() else {
            continue;
        };
        let hash = sha256(&row.token);
        let expires_at = row.valid_until_ms.and_then(from_millis);
        if expires_at.is_some_and(|e| e <= now) && row.refresh_token_id.is_none() {
            access.skip("expired", format!("{} {device}", row.user_id));
            continue;
        }
        access_by_device
            .entry((row.user_id.clone(), device))
            .or_default()
            .push((row, hash, expires_at));
    }
    let mut refresh_by_device: HashMap<(String, String), Vec<_>> = HashMap::new();
    let refresh_rows = db.refresh_tokens().await?;
    for row in refresh_rows {
        refresh.read += 1;
        refresh_by_device
            .entry((row.user_id.clone(), row.device_id.clone()))
            .or_default()
            .push(row);
    }
    let mut todo = Vec::new();
    for row in db.devices().await? {
        devices.read += 1;
        let key = (row.user_id.clone(), row.device_id.clone());
        let tokens = access_by_device.remove(&key).unwrap_or_default();
        let refreshes = refresh_by_device.remove(&key).unwrap_or_default();
        let example = format!("{} {}", row.user_id, row.device_id);
        let user = localpart(&row.user_id, server).and_then(|l| migrated.get(l).map(|m| (l, *m)));
        let reason = match user {
            None => Some(NOT_MIGRATED),
            Some((_, m)) if m.deactivated => Some("its user is deactivated"),
            _ => None,
        };
        let Some((local, user)) = user.filter(|_| reason.is_none()) else {
            let reason = reason.unwrap_or(NOT_MIGRATED);
            devices.skip(reason, &example);
            for _ in &tokens {
                access.skip(format!("its device is not migrated ({reason})"), &example);
            }
            for _ in &refreshes {
                refresh.skip(format!("its device is not migrated ({reason})"), &example);
            }
            continue;
        };
        let last_active_at = row.last_seen.and_then(from_millis);
        let created_at = tokens
            .iter()
            .filter_map(|(t, _, _)| t.last_validated.and_then(from_millis))
            .min()
            .or(last_active_at)
            .unwrap_or(now);
        let access_tokens: Vec<ImportedAccessToken> = tokens
            .iter()
            .map(|(t, hash, expires_at)| ImportedAccessToken {
                token_hash: *hash,
                created_at: t.last_validated.and_then(from_millis).unwrap_or(created_at),
                expires_at: *expires_at,
            })
            .collect();
        let refresh_tokens: Vec<ImportedRefreshToken> = refreshes
            .iter()
            .map(|r| ImportedRefreshToken {
                token_hash: sha256(&r.token),
                access_token_hash: tokens
                    .iter()
                    .find(|(t, _, _)| t.refresh_token_id == Some(r.id))
                    .map(|(_, h, _)| *h),
                created_at,
            })
            .collect();
        todo.push(ImportedCompatSession {
            username: local.to_owned(),
            device_id: row.device_id,
            human_name: row.display_name,
            // Synapse's admin flag is the user's: every session of an admin acted as one.
            is_synapse_admin: user.admin,
            created_at,
            last_active_at,
            user_agent: row.user_agent,
            access_tokens,
            refresh_tokens,
        });
    }
    // Tokens of devices that are hidden or gone.
    for ((user_id, device), tokens) in access_by_device {
        for _ in tokens {
            access.skip(
                "its device is not a session (hidden or deleted)",
                format!("{user_id} {device}"),
            );
        }
    }
    for ((user_id, device), rows) in refresh_by_device {
        for _ in rows {
            refresh.skip(
                "its device is not a session (hidden or deleted)",
                format!("{user_id} {device}"),
            );
        }
    }
    progress.start("devices", todo.len());
    let mut done = 0;
    for chunk in todo.chunks(options.batch_size) {
        let mut repo = batches.open().await?;
        let outcomes = repo.synapse_import().import_compat_sessions(chunk).await?;
        for (session, outcome) in chunk.iter().zip(outcomes) {
            let example = format!("{} {}", session.username, session.device_id);
            devices.count(outcome, NOT_MIGRATED, &example);
            for _ in &session.access_tokens {
                access.count(outcome, NOT_MIGRATED, &example);
            }
            for _ in &session.refresh_tokens {
                refresh.count(outcome, NOT_MIGRATED, &example);
            }
        }
        batches.close(repo).await?;
        done += chunk.len();
        progress.advance(done);
    }
    progress.finish();
    // Device-less and puppeting tokens were not read as rows of a device: counted by `check`.
    report.tables.push(("devices", devices));
    report.tables.push(("access tokens", access));
    report.tables.push(("refresh tokens", refresh));

    // Written on every run, even one that found nothing new: this last transaction commits
    // synchronously while the batches before it did not (on PostgreSQL they commit without
    // waiting for the WAL flush, see `SynapseImportRepository`), and its commit flushes the WAL
    // up to itself (PostgreSQL manual, "Asynchronous Commit"), so every batch is on disk before
    // `migrate` says done.
    let mut repo = batches.open().await?;
    repo.synapse_import().finish(import.id).await?;
    if options.dry_run {
        // Dropped without a commit: rolled back.
        drop(repo);
    } else {
        repo.commit().await?;
    }
    Ok(report)
}

/// `now`, for callers that print dates.
pub fn format_date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
