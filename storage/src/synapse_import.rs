//! The import of a Synapse homeserver's accounts (`provider syn2mas migrate`): bulk inserts that
//! keep what Synapse had, each keyed by its natural key so that a second run, or a run again
//! after an interruption, inserts nothing twice.
//!
//! - an **account** by its username (the Synapse localpart), with its bcrypt hash as a password
//!   of the caller's scheme version, the admin flag as `can_request_admin`, its lock and
//!   deactivation and its creation time;
//! - a confirmed **e-mail address** by (user, address);
//! - an **upstream link** by (upstream provider, subject);
//! - a **compat session** by (user, device ID), whatever its state, with its access and refresh
//!   tokens by their hashes ([`TokenHash`]: Synapse's token values are never stored).
//!
//! Each call writes many rows with a few multi-row statements (`INSERT … VALUES (…), (…)`, up to
//! [`ROWS_PER_STATEMENT`] rows each), and finds each row's user by username inside the statement
//! (`WITH v (…) AS (VALUES …) INSERT … SELECT … FROM v JOIN users …`), so a batch needs no prior
//! read; `RETURNING id` tells which rows were new. The caller groups rows in batches, one
//! transaction each ([`crate::Storage::begin`]).
//!
//! An import is recorded in `synapse_imports` ([`SynapseImport`]): started before the first
//! batch, finished after the last.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    for_each_backend,
    types::{DbId, Ts},
    StorageError, TokenHash,
};

/// One import of a Synapse database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseImport {
    pub id: Ulid,
    /// Synapse's `server_name`.
    pub server_name: String,
    pub started_at: DateTime<Utc>,
    /// `None` while it is under way (or was interrupted).
    pub finished_at: Option<DateTime<Utc>>,
}

/// An account as Synapse had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUser {
    /// The localpart of the Synapse user ID.
    pub username: String,
    pub created_at: DateTime<Utc>,
    /// Synapse's `admin`: may be granted `urn:synapse:admin:*`.
    pub can_request_admin: bool,
    pub locked_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// `(scheme version, hash)`: Synapse's bcrypt hash, kept as it is.
    pub password: Option<(i32, String)>,
}

/// A confirmed e-mail address of an imported account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedEmail {
    pub username: String,
    pub email: String,
    /// Synapse's `added_at`: when it was added, and confirmed.
    pub added_at: DateTime<Utc>,
}

/// One of a session's imported access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedAccessToken {
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One of a session's imported refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRefreshToken {
    pub token_hash: TokenHash,
    /// The access token issued with it, when it is among the session's.
    pub access_token_hash: Option<TokenHash>,
    pub created_at: DateTime<Utc>,
}

/// A Synapse device and its tokens, as a compat session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCompatSession {
    pub username: String,
    pub device_id: String,
    pub human_name: Option<String>,
    pub is_synapse_admin: bool,
    pub created_at: DateTime<Utc>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
    pub access_tokens: Vec<ImportedAccessToken>,
    pub refresh_tokens: Vec<ImportedRefreshToken>,
}

/// What one import statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The row is new.
    Inserted,
    /// A row with the same natural key was there already (a previous run): nothing changed.
    AlreadyThere,
    /// The account it belongs to is not in the database (not imported): nothing changed.
    NoUser,
}

/// The import's repository.
#[async_trait]
pub trait SynapseImportRepository: Send {
    /// The latest import, finished or not.
    async fn last(&mut self) -> Result<Option<SynapseImport>, StorageError>;
    /// Records the start of an import.
    async fn start(&mut self, server_name: &str) -> Result<SynapseImport, StorageError>;
    /// Records its end.
    async fn finish(&mut self, id: Ulid) -> Result<(), StorageError>;

    /// Accounts and their passwords, each unless its username is taken; one outcome per
    /// account, in order ([`Imported::Inserted`] or [`Imported::AlreadyThere`]).
    async fn import_users(&mut self, users: &[ImportedUser])
        -> Result<Vec<Imported>, StorageError>;
    /// Confirmed e-mail addresses of their users; one outcome per address, in order.
    async fn import_emails(
        &mut self,
        emails: &[ImportedEmail],
    ) -> Result<Vec<Imported>, StorageError>;
    /// A link of the user `username` to `subject` at an upstream provider (which must exist).
    async fn import_upstream_link(
        &mut self,
        username: &str,
        provider_id: Ulid,
        subject: &str,
    ) -> Result<Imported, StorageError>;
    /// Compat sessions and their tokens, each unless its user already has a session with this
    /// device (then nothing of it is written, tokens included); one outcome per session, in
    /// order.
    async fn import_compat_sessions(
        &mut self,
        sessions: &[ImportedCompatSession],
    ) -> Result<Vec<Imported>, StorageError>;
}

/// Rows per statement: the largest (a compat session, 8 values) stays under SQLite's 32,766
/// bound parameters and PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 500;

/// `($1, $2), ($3, $4)`: `rows` tuples of `columns` placeholders.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(row * columns + column + 1).to_string());
        }
        out.push(')');
    }
    out
}

#[derive(sqlx::FromRow)]
struct ImportRow {
    id: DbId,
    server_name: String,
    started_at: Ts,
    finished_at: Option<Ts>,
}

impl From<ImportRow> for SynapseImport {
    fn from(r: ImportRow) -> Self {
        Self {
            id: r.id.0,
            server_name: r.server_name,
            started_at: r.started_at.0,
            finished_at: r.finished_at.map(Into::into),
        }
    }
}

macro_rules! implementation {
    ($repo:ty) => {
        impl $repo {
            /// Which of `usernames` have an account.
            async fn existing_users(
                &mut self,
                usernames: &[&str],
            ) -> Result<std::collections::HashSet<String>, StorageError> {
                let mut found = std::collections::HashSet::new();
                for chunk in usernames.chunks(ROWS_PER_STATEMENT) {
                    let list = (1..=chunk.len())
                        .map(|n| format!("${n}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!("SELECT username FROM users WHERE username IN ({list})");
                    let mut query = sqlx::query_scalar::<_, String>(&sql);
                    for name in chunk {
                        query = query.bind(*name);
                    }
                    found.extend(query.fetch_all(self.conn()).await?);
                }
                Ok(found)
            }

            /// The outcome of each row keyed by `ids`: inserted when its id came back, else
            /// already there or without its user.
            async fn outcomes(
                &mut self,
                ids: &[Ulid],
                usernames: &[&str],
                inserted: &std::collections::HashSet<Ulid>,
            ) -> Result<Vec<Imported>, StorageError> {
                let missing: Vec<&str> = ids
                    .iter()
                    .zip(usernames)
                    .filter(|(id, _)| !inserted.contains(*id))
                    .map(|(_, name)| *name)
                    .collect();
                let existing = if missing.is_empty() {
                    Default::default()
                } else {
                    self.existing_users(&missing).await?
                };
                Ok(ids
                    .iter()
                    .zip(usernames)
                    .map(|(id, name)| {
                        if inserted.contains(id) {
                            Imported::Inserted
                        } else if existing.contains(*name) {
                            Imported::AlreadyThere
                        } else {
                            Imported::NoUser
                        }
                    })
                    .collect())
            }
        }

        #[async_trait]
        impl SynapseImportRepository for $repo {
            async fn last(&mut self) -> Result<Option<SynapseImport>, StorageError> {
                let row: Option<ImportRow> = sqlx::query_as(
                    "SELECT id, server_name, started_at, finished_at FROM synapse_imports \
                     ORDER BY started_at DESC, id DESC LIMIT 1",
                )
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn start(&mut self, server_name: &str) -> Result<SynapseImport, StorageError> {
                let import = SynapseImport {
                    id: self.new_id(),
                    server_name: server_name.to_owned(),
                    started_at: self.now(),
                    finished_at: None,
                };
                sqlx::query(
                    "INSERT INTO synapse_imports (id, server_name, started_at) VALUES ($1, $2, $3)",
                )
                .bind(DbId(import.id))
                .bind(&import.server_name)
                .bind(Ts(import.started_at))
                .execute(self.conn())
                .await?;
                Ok(import)
            }

            async fn finish(&mut self, id: Ulid) -> Result<(), StorageError> {
                let now = self.now();
                let done = sqlx::query("UPDATE synapse_imports SET finished_at = $2 WHERE id = $1")
                    .bind(DbId(id))
                    .bind(Ts(now))
                    .execute(self.conn())
                    .await?;
                StorageError::found(done, "Synapse import")
            }

            async fn import_users(
                &mut self,
                users: &[ImportedUser],
            ) -> Result<Vec<Imported>, StorageError> {
                let mut out = Vec::with_capacity(users.len());
                for chunk in users.chunks(ROWS_PER_STATEMENT) {
                    let ids: Vec<Ulid> = chunk.iter().map(|_| self.new_id()).collect();
                    let sql = format!(
                        "INSERT INTO users \
                         (id, username, created_at, locked_at, deactivated_at, can_request_admin) \
                         VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                        placeholders(chunk.len(), 6)
                    );
                    let mut query = sqlx::query_scalar::<_, DbId>(&sql);
                    for (id, user) in ids.iter().zip(chunk) {
                        query = query
                            .bind(DbId(*id))
                            .bind(&user.username)
                            .bind(Ts(user.created_at))
                            .bind(user.locked_at.map(Ts))
                            .bind(user.deactivated_at.map(Ts))
                            .bind(user.can_request_admin);
                    }
                    let inserted: std::collections::HashSet<Ulid> =
                        query.fetch_all(self.conn()).await?.into_iter().map(|d| d.0).collect();
                    let passwords: Vec<(Ulid, &ImportedUser, i32, &String)> = ids
                        .iter()
                        .zip(chunk)
                        .filter(|(id, _)| inserted.contains(*id))
                        .filter_map(|(id, u)| {
                            u.password.as_ref().map(|(version, hash)| (*id, u, *version, hash))
                        })
                        .collect();
                    if !passwords.is_empty() {
                        let sql = format!(
                            "INSERT INTO user_passwords \
                             (id, user_id, hashed_password, version, created_at) VALUES {}",
                            placeholders(passwords.len(), 5)
                        );
                        let mut query = sqlx::query(&sql);
                        for (user_id, user, version, hash) in passwords {
                            query = query
                                .bind(DbId(self.new_id()))
                                .bind(DbId(user_id))
                                .bind(hash)
                                .bind(version)
                                .bind(Ts(user.created_at));
                        }
                        query.execute(self.conn()).await?;
                    }
                    out.extend(ids.iter().map(|id| {
                        if inserted.contains(id) {
                            Imported::Inserted
                        } else {
                            Imported::AlreadyThere
                        }
                    }));
                }
                Ok(out)
            }

            async fn import_emails(
                &mut self,
                emails: &[ImportedEmail],
            ) -> Result<Vec<Imported>, StorageError> {
                let mut out = Vec::with_capacity(emails.len());
                for chunk in emails.chunks(ROWS_PER_STATEMENT) {
                    let ids: Vec<Ulid> = chunk.iter().map(|_| self.new_id()).collect();
                    // `WHERE TRUE`: SQLite's upsert after a SELECT needs a WHERE (its parser
                    // would read `ON` as a join's).
                    let sql = format!(
                        "WITH v (id, username, email, at) AS (VALUES {}) \
                         INSERT INTO user_emails (id, user_id, email, created_at, confirmed_at) \
                         SELECT v.id, u.id, v.email, v.at, v.at \
                         FROM v JOIN users u ON u.username = v.username WHERE TRUE \
                         ON CONFLICT DO NOTHING RETURNING id",
                        placeholders(chunk.len(), 4)
                    );
                    let mut query = sqlx::query_scalar::<_, DbId>(&sql);
                    for (id, e) in ids.iter().zip(chunk) {
                        query = query
                            .bind(DbId(*id))
                            .bind(&e.username)
                            .bind(&e.email)
                            .bind(Ts(e.added_at));
                    }
                    let inserted = query.fetch_all(self.conn()).await?.into_iter().map(|d| d.0).collect();
                    let names: Vec<&str> = chunk.iter().map(|e| e.username.as_str()).collect();
                    out.extend(self.outcomes(&ids, &names, &inserted).await?);
                }
                Ok(out)
            }

            async fn import_upstream_link(
                &mut self,
                username: &str,
                provider_id: Ulid,
                subject: &str,
            ) -> Result<Imported, StorageError> {
                let id = self.new_id();
                let now = self.now();
                let done = sqlx::query(
                    "INSERT INTO upstream_oauth_links \
                     (id, provider_id, user_id, subject, created_at) \
                     SELECT $1, $2, id, $4, $5 FROM users WHERE username = $3 \
                     AND EXISTS (SELECT 1 FROM upstream_oauth_providers WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(id))
                .bind(DbId(provider_id))
                .bind(username)
                .bind(subject)
                .bind(Ts(now))
                .execute(self.conn())
                .await?;
                if done.rows_affected() > 0 {
                    return Ok(Imported::Inserted);
                }
                if !crate::row_exists!(self, "upstream_oauth_providers", provider_id) {
                    return Err(StorageError::NotFound("upstream provider"));
                }
                let inserted = Default::default();
                Ok(self.outcomes(&[id], &[username], &inserted).await?[0])
            }

            async fn import_compat_sessions(
                &mut self,
                sessions: &[ImportedCompatSession],
            ) -> Result<Vec<Imported>, StorageError> {
                let mut out = Vec::with_capacity(sessions.len());
                for chunk in sessions.chunks(ROWS_PER_STATEMENT) {
                    let ids: Vec<Ulid> = chunk.iter().map(|_| self.new_id()).collect();
                    // Any session of this device, finished or not, counts as imported already: a
                    // device logged out since the import must not come back.
                    let sql = format!(
                        "WITH v (id, username, device_id, human_name, is_synapse_admin, \
                           created_at, last_active_at, user_agent) AS (VALUES {}) \
                         INSERT INTO compat_sessions \
                         (id, user_id, device_id, human_name, is_synapse_admin, created_at, \
                          last_active_at, user_agent) \
                         SELECT v.id, u.id, v.device_id, v.human_name, v.is_synapse_admin, \
                           v.created_at, v.last_active_at, v.user_agent \
                         FROM v JOIN users u ON u.username = v.username \
                         WHERE NOT EXISTS (SELECT 1 FROM compat_sessions c \
                           WHERE c.user_id = u.id AND c.device_id = v.device_id) \
                         ON CONFLICT DO NOTHING RETURNING id",
                        placeholders(chunk.len(), 8)
                    );
                    let mut query = sqlx::query_scalar::<_, DbId>(&sql);
                    for (id, s) in ids.iter().zip(chunk) {
                        query = query
                            .bind(DbId(*id))
                            .bind(&s.username)
                            .bind(&s.device_id)
                            .bind(&s.human_name)
                            .bind(s.is_synapse_admin)
                            .bind(Ts(s.created_at))
                            .bind(s.last_active_at.map(Ts))
                            .bind(&s.user_agent);
                    }
                    let inserted: std::collections::HashSet<Ulid> =
                        query.fetch_all(self.conn()).await?.into_iter().map(|d| d.0).collect();

                    // The inserted sessions' access tokens. A token hash is unique: one Synapse
                    // token can't belong to two devices.
                    let mut access: Vec<(Ulid, Ulid, &ImportedAccessToken)> = Vec::new();
                    for (session_id, s) in ids.iter().zip(chunk) {
                        if inserted.contains(session_id) {
                            for token in &s.access_tokens {
                                access.push((self.new_id(), *session_id, token));
                            }
                        }
                    }
                    let mut access_ids: std::collections::HashMap<(Ulid, TokenHash), Ulid> =
                        Default::default();
                    for part in access.chunks(ROWS_PER_STATEMENT) {
                        let sql = format!(
                            "INSERT INTO compat_access_tokens \
                             (id, session_id, token_hash, created_at, expires_at) \
                             VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                            placeholders(part.len(), 5)
                        );
                        let mut query = sqlx::query_scalar::<_, DbId>(&sql);
                        for (id, session_id, token) in part {
                            query = query
                                .bind(DbId(*id))
                                .bind(DbId(*session_id))
                                .bind(&token.token_hash[..])
                                .bind(Ts(token.created_at))
                                .bind(token.expires_at.map(Ts));
                        }
                        let kept: std::collections::HashSet<Ulid> =
                            query.fetch_all(self.conn()).await?.into_iter().map(|d| d.0).collect();
                        for (id, session_id, token) in part {
                            if kept.contains(id) {
                                access_ids.insert((*session_id, token.token_hash), *id);
                            }
                        }
                    }

                    let mut refresh: Vec<(Ulid, Ulid, Option<Ulid>, &ImportedRefreshToken)> =
                        Vec::new();
                    for (session_id, s) in ids.iter().zip(chunk) {
                        if inserted.contains(session_id) {
                            for token in &s.refresh_tokens {
                                let access_token_id = token.access_token_hash.and_then(|hash| {
                                    access_ids.get(&(*session_id, hash)).copied()
                                });
                                refresh.push((self.new_id(), *session_id, access_token_id, token));
                            }
                        }
                    }
                    for part in refresh.chunks(ROWS_PER_STATEMENT) {
                        let sql = format!(
                            "INSERT INTO compat_refresh_tokens \
                             (id, session_id, token_hash, access_token_id, created_at) \
                             VALUES {} ON CONFLICT DO NOTHING",
                            placeholders(part.len(), 5)
                        );
                        let mut query = sqlx::query(&sql);
                        for (id, session_id, access_token_id, token) in part {
                            query = query
                                .bind(DbId(*id))
                                .bind(DbId(*session_id))
                                .bind(&token.token_hash[..])
                                .bind(access_token_id.map(DbId))
                                .bind(Ts(token.created_at));
                        }
                        query.execute(self.conn()).await?;
                    }

                    let names: Vec<&str> = chunk.iter().map(|s| s.username.as_str()).collect();
                    out.extend(self.outcomes(&ids, &names, &inserted).await?);
                }
                Ok(out)
            }
        }
    };
}

for_each_backend!(implementation);
