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
//! Each call writes many rows at once and finds each row's user by username inside the
//! statement (`INSERT … SELECT … FROM <rows> JOIN users …`), so a batch needs no prior read;
//! `RETURNING id` tells which rows were new. The rows travel per backend:
//! - **PostgreSQL**: `COPY … FROM STDIN (FORMAT binary)` into a temporary table, then one
//!   `INSERT … SELECT … ON CONFLICT DO NOTHING` from it (`COPY` itself can't skip a taken key).
//!   The binary rows carry each value as sqlx encodes a bound parameter, so nothing is escaped;
//! - **SQLite**: multi-row `INSERT … VALUES (…), (…)` ([`sqlx::QueryBuilder::push_values`]),
//!   up to [`ROWS_PER_STATEMENT`] rows each.
//!
//! The caller groups rows in batches, one transaction each ([`crate::Storage::begin`]); on
//! PostgreSQL those commit asynchronously (a crash may lose the last few, which a run again
//! writes).
//!
//! An import is recorded in `synapse_imports` ([`SynapseImport`]): started before the first
//! batch, finished after the last.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    encode::IsNull, postgres::PgArgumentBuffer, query_builder::Separated, Encode, Postgres,
    QueryBuilder, Sqlite,
};
use ulid::Ulid;

use super::{
    for_each_backend,
    types::{DbId, Ts},
    PgRepository, SqliteRepository, StorageError, TokenHash,
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

/// Rows per SQLite statement: the largest (a compat session, 8 values) stays under SQLite's
/// 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

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

/// A new row of `users`, and its new id.
type UserRow<'a> = (Ulid, &'a ImportedUser);
/// A new row of `user_passwords`: (id, user id, scheme version, hash, created at).
type PasswordRow<'a> = (Ulid, Ulid, i32, &'a str, DateTime<Utc>);
/// A new row of `user_emails`, and its new id.
type EmailRow<'a> = (Ulid, &'a ImportedEmail);
/// A new row of `compat_sessions`, and its new id.
type SessionRow<'a> = (Ulid, &'a ImportedCompatSession);
/// A new row of `compat_access_tokens`: (id, session id, token).
type AccessRow<'a> = (Ulid, Ulid, &'a ImportedAccessToken);
/// A new row of `compat_refresh_tokens`: (id, session id, access token id, token).
type RefreshRow<'a> = (Ulid, Ulid, Option<Ulid>, &'a ImportedRefreshToken);

type Ids = HashSet<Ulid>;

/// The ids a `RETURNING id` gave back.
fn id_set(ids: Vec<DbId>) -> Ids {
    ids.into_iter().map(|d| d.0).collect()
}

/// Rows in PostgreSQL's binary `COPY` format (PostgreSQL manual, `COPY`, "Binary Format"): a
/// signature and two zero words, then per row its field count and per field its length (`-1`:
/// NULL) and its bytes, then `-1`. A field's bytes are a bound parameter's: sqlx's own encoder
/// writes them (the same [`DbId`] and [`Ts`] encodings as every query).
struct CopyRows {
    buf: PgArgumentBuffer,
    columns: i16,
}

impl CopyRows {
    /// The signature `PGCOPY\n\377\r\n\0`, the flags word and the header extension's length.
    const HEADER: &'static [u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

    fn new(columns: i16) -> Self {
        let mut buf = PgArgumentBuffer::default();
        buf.extend_from_slice(Self::HEADER);
        Self { buf, columns }
    }

    fn row(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&self.columns.to_be_bytes());
        self
    }

    fn field<'q, T: Encode<'q, Postgres>>(&mut self, value: T) -> Result<&mut Self, StorageError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let len = match value
            .encode_by_ref(&mut self.buf)
            .map_err(|e| StorageError::Database(sqlx::Error::Encode(e)))?
        {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(self.buf.len() - start - 4).map_err(|_| {
                StorageError::Invalid("a value longer than PostgreSQL takes".to_owned())
            })?,
        };
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(self)
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1_i16).to_be_bytes());
        std::mem::take(&mut *self.buf)
    }
}

/// PostgreSQL: each kind of row is copied into a temporary table (`ON COMMIT DROP`, and dropped
/// after its statement, so a dry run's single transaction can stage the same kind again), and
/// written from there.
impl PgRepository {
    /// The import's transactions commit without waiting for their WAL to reach the disk
    /// (PostgreSQL manual, "Asynchronous Commit"): a crash of the server may lose the last few
    /// whole transactions, never part of one, and a run again writes them (each row by its
    /// natural key). A few milliseconds less per batch. The import's last transaction
    /// ([`SynapseImportRepository::finish`], written on every run) commits synchronously, which
    /// flushes the WAL up to it: once `migrate` says done, every batch is durable.
    async fn bulk_transaction(&mut self) -> Result<(), StorageError> {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Creates the temporary table `table` (`columns`: its definition) and copies `rows` into it.
    async fn stage(
        &mut self,
        table: &str,
        columns: &str,
        rows: CopyRows,
    ) -> Result<(), StorageError> {
        let create = format!("CREATE TEMPORARY TABLE {table} ({columns}) ON COMMIT DROP");
        sqlx::query(&create)
            .persistent(false)
            .execute(self.conn())
            .await?;
        self.copy_in(table, rows).await
    }

    /// `COPY table FROM STDIN (FORMAT binary)`.
    async fn copy_in(&mut self, table: &str, rows: CopyRows) -> Result<(), StorageError> {
        let statement = format!("COPY {table} FROM STDIN (FORMAT binary)");
        let mut copy = self.conn().copy_in_raw(&statement).await?;
        copy.send(rows.finish()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// Runs `insert` (an `INSERT … SELECT … FROM table … RETURNING id`), then drops `table`.
    /// Not a prepared statement: the temporary table is a new one each time.
    async fn insert_staged(&mut self, table: &str, insert: &str) -> Result<Ids, StorageError> {
        let ids = sqlx::query_scalar::<_, DbId>(insert)
            .persistent(false)
            .fetch_all(self.conn())
            .await?;
        let drop = format!("DROP TABLE {table}");
        sqlx::query(&drop)
            .persistent(false)
            .execute(self.conn())
            .await?;
        Ok(id_set(ids))
    }

    async fn existing_users(
        &mut self,
        usernames: &[&str],
    ) -> Result<HashSet<String>, StorageError> {
        let found =
            sqlx::query_scalar::<_, String>("SELECT username FROM users WHERE username = ANY($1)")
                .bind(usernames)
                .fetch_all(self.conn())
                .await?;
        Ok(found.into_iter().collect())
    }

    async fn insert_users(&mut self, rows: &[UserRow<'_>]) -> Result<Ids, StorageError> {
        let mut copy = CopyRows::new(6);
        for (id, u) in rows {
            copy.row()
                .field(DbId(*id))?
                .field(u.username.as_str())?
                .field(Ts(u.created_at))?
                .field(u.locked_at.map(Ts))?
                .field(u.deactivated_at.map(Ts))?
                .field(u.can_request_admin)?;
        }
        self.stage(
            "syn2mas_users",
            "id UUID, username TEXT, created_at TIMESTAMPTZ, locked_at TIMESTAMPTZ, \
             deactivated_at TIMESTAMPTZ, can_request_admin BOOLEAN",
            copy,
        )
        .await?;
        self.insert_staged(
            "syn2mas_users",
            "INSERT INTO users \
             (id, username, created_at, locked_at, deactivated_at, can_request_admin) \
             SELECT id, username, created_at, locked_at, deactivated_at, can_request_admin \
             FROM syn2mas_users ON CONFLICT DO NOTHING RETURNING id",
        )
        .await
    }

    /// Straight into the table: each row is new (a new id, of a user just inserted).
    async fn insert_passwords(&mut self, rows: &[PasswordRow<'_>]) -> Result<(), StorageError> {
        let mut copy = CopyRows::new(5);
        for (id, user_id, version, hash, created_at) in rows {
            copy.row()
                .field(DbId(*id))?
                .field(DbId(*user_id))?
                .field(*hash)?
                .field(*version)?
                .field(Ts(*created_at))?;
        }
        self.copy_in(
            "user_passwords (id, user_id, hashed_password, version, created_at)",
            copy,
        )
        .await
    }

    async fn insert_emails(&mut self, rows: &[EmailRow<'_>]) -> Result<Ids, StorageError> {
        let mut copy = CopyRows::new(4);
        for (id, e) in rows {
            copy.row()
                .field(DbId(*id))?
                .field(e.username.as_str())?
                .field(e.email.as_str())?
                .field(Ts(e.added_at))?;
        }
        self.stage(
            "syn2mas_emails",
            "id UUID, username TEXT, email TEXT, at TIMESTAMPTZ",
            copy,
        )
        .await?;
        self.insert_staged(
            "syn2mas_emails",
            "INSERT INTO user_emails (id, user_id, email, created_at, confirmed_at) \
             SELECT v.id, u.id, v.email, v.at, v.at \
             FROM syn2mas_emails v JOIN users u ON u.username = v.username \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .await
    }

    async fn insert_sessions(&mut self, rows: &[SessionRow<'_>]) -> Result<Ids, StorageError> {
        let mut copy = CopyRows::new(8);
        for (id, s) in rows {
            copy.row()
                .field(DbId(*id))?
                .field(s.username.as_str())?
                .field(s.device_id.as_str())?
                .field(s.human_name.as_deref())?
                .field(s.is_synapse_admin)?
                .field(Ts(s.created_at))?
                .field(s.last_active_at.map(Ts))?
                .field(s.user_agent.as_deref())?;
        }
        self.stage(
            "syn2mas_sessions",
            "id UUID, username TEXT, device_id TEXT, human_name TEXT, is_synapse_admin BOOLEAN, \
             created_at TIMESTAMPTZ, last_active_at TIMESTAMPTZ, user_agent TEXT",
            copy,
        )
        .await?;
        self.insert_staged(
            "syn2mas_sessions",
            &format!(
                "INSERT INTO compat_sessions ({SESSION_COLUMNS}) \
                 SELECT {SESSION_VALUES} FROM syn2mas_sessions v {SESSION_JOIN} \
                 ON CONFLICT DO NOTHING RETURNING id"
            ),
        )
        .await
    }

    async fn insert_access_tokens(&mut self, rows: &[AccessRow<'_>]) -> Result<Ids, StorageError> {
        let mut copy = CopyRows::new(5);
        for (id, session_id, token) in rows {
            copy.row()
                .field(DbId(*id))?
                .field(DbId(*session_id))?
                .field(&token.token_hash[..])?
                .field(Ts(token.created_at))?
                .field(token.expires_at.map(Ts))?;
        }
        self.stage(
            "syn2mas_access_tokens",
            "id UUID, session_id UUID, token_hash BYTEA, created_at TIMESTAMPTZ, \
             expires_at TIMESTAMPTZ",
            copy,
        )
        .await?;
        self.insert_staged(
            "syn2mas_access_tokens",
            "INSERT INTO compat_access_tokens \
             (id, session_id, token_hash, created_at, expires_at) \
             SELECT id, session_id, token_hash, created_at, expires_at \
             FROM syn2mas_access_tokens ON CONFLICT DO NOTHING RETURNING id",
        )
        .await
    }

    async fn insert_refresh_tokens(&mut self, rows: &[RefreshRow<'_>]) -> Result<(), StorageError> {
        let mut copy = CopyRows::new(5);
        for (id, session_id, access_token_id, token) in rows {
            copy.row()
                .field(DbId(*id))?
                .field(DbId(*session_id))?
                .field(&token.token_hash[..])?
                .field(access_token_id.map(DbId))?
                .field(Ts(token.created_at))?;
        }
        self.stage(
            "syn2mas_refresh_tokens",
            "id UUID, session_id UUID, token_hash BYTEA, access_token_id UUID, \
             created_at TIMESTAMPTZ",
            copy,
        )
        .await?;
        self.insert_staged(
            "syn2mas_refresh_tokens",
            "INSERT INTO compat_refresh_tokens \
             (id, session_id, token_hash, access_token_id, created_at) \
             SELECT id, session_id, token_hash, access_token_id, created_at \
             FROM syn2mas_refresh_tokens ON CONFLICT DO NOTHING RETURNING id",
        )
        .await?;
        Ok(())
    }
}

/// The columns of an imported compat session, and where its values come from (`v`: the rows,
/// `u`: their user).
const SESSION_COLUMNS: &str = "id, user_id, device_id, human_name, is_synapse_admin, created_at, \
                               last_active_at, user_agent";
const SESSION_VALUES: &str = "v.id, u.id, v.device_id, v.human_name, v.is_synapse_admin, \
                              v.created_at, v.last_active_at, v.user_agent";
/// Any session of this device, finished or not, counts as imported already: a device logged out
/// since the import must not come back. (`WHERE`: SQLite's upsert after a `SELECT` needs one,
/// or its parser reads `ON CONFLICT`'s `ON` as a join's.)
const SESSION_JOIN: &str = "JOIN users u ON u.username = v.username \
                            WHERE NOT EXISTS (SELECT 1 FROM compat_sessions c \
                              WHERE c.user_id = u.id AND c.device_id = v.device_id)";

/// SQLite: multi-row statements of up to [`ROWS_PER_STATEMENT`] rows.
impl SqliteRepository {
    /// Nothing to set: SQLite's durability is the connection's (`PRAGMA synchronous`).
    #[allow(clippy::unused_async)]
    async fn bulk_transaction(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Runs the statement `head` `VALUES (…), (…)` `tail` over each chunk of `rows` (`push`
    /// binds one row's values) and gathers the ids it returns.
    async fn insert_values<T>(
        &mut self,
        rows: &[T],
        head: &str,
        tail: &str,
        mut push: impl FnMut(Separated<'_, '_, Sqlite, &'static str>, &T),
    ) -> Result<Ids, StorageError> {
        let mut ids = Ids::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(head);
            query.push_values(chunk, &mut push);
            query.push(tail);
            ids.extend(id_set(
                query
                    .build_query_scalar::<DbId>()
                    .fetch_all(self.conn())
                    .await?,
            ));
        }
        Ok(ids)
    }

    async fn existing_users(
        &mut self,
        usernames: &[&str],
    ) -> Result<HashSet<String>, StorageError> {
        let mut found = HashSet::new();
        for chunk in usernames.chunks(ROWS_PER_STATEMENT) {
            let mut query =
                QueryBuilder::<Sqlite>::new("SELECT username FROM users WHERE username IN (");
            let mut list = query.separated(", ");
            for name in chunk {
                list.push_bind(*name);
            }
            query.push(")");
            found.extend(
                query
                    .build_query_scalar::<String>()
                    .fetch_all(self.conn())
                    .await?,
            );
        }
        Ok(found)
    }

    async fn insert_users(&mut self, rows: &[UserRow<'_>]) -> Result<Ids, StorageError> {
        self.insert_values(
            rows,
            "INSERT INTO users \
             (id, username, created_at, locked_at, deactivated_at, can_request_admin) ",
            " ON CONFLICT DO NOTHING RETURNING id",
            |mut b, (id, u)| {
                b.push_bind(DbId(*id))
                    .push_bind(u.username.clone())
                    .push_bind(Ts(u.created_at))
                    .push_bind(u.locked_at.map(Ts))
                    .push_bind(u.deactivated_at.map(Ts))
                    .push_bind(u.can_request_admin);
            },
        )
        .await
    }

    async fn insert_passwords(&mut self, rows: &[PasswordRow<'_>]) -> Result<(), StorageError> {
        self.insert_values(
            rows,
            "INSERT INTO user_passwords (id, user_id, hashed_password, version, created_at) ",
            " RETURNING id",
            |mut b, (id, user_id, version, hash, created_at)| {
                b.push_bind(DbId(*id))
                    .push_bind(DbId(*user_id))
                    .push_bind(hash.to_string())
                    .push_bind(*version)
                    .push_bind(Ts(*created_at));
            },
        )
        .await?;
        Ok(())
    }

    async fn insert_emails(&mut self, rows: &[EmailRow<'_>]) -> Result<Ids, StorageError> {
        self.insert_values(
            rows,
            "WITH v (id, username, email, at) AS (",
            ") INSERT INTO user_emails (id, user_id, email, created_at, confirmed_at) \
             SELECT v.id, u.id, v.email, v.at, v.at \
             FROM v JOIN users u ON u.username = v.username WHERE TRUE \
             ON CONFLICT DO NOTHING RETURNING id",
            |mut b, (id, e)| {
                b.push_bind(DbId(*id))
                    .push_bind(e.username.clone())
                    .push_bind(e.email.clone())
                    .push_bind(Ts(e.added_at));
            },
        )
        .await
    }

    async fn insert_sessions(&mut self, rows: &[SessionRow<'_>]) -> Result<Ids, StorageError> {
        self.insert_values(
            rows,
            "WITH v (id, username, device_id, human_name, is_synapse_admin, created_at, \
             last_active_at, user_agent) AS (",
            &format!(
                ") INSERT INTO compat_sessions ({SESSION_COLUMNS}) \
                 SELECT {SESSION_VALUES} FROM v {SESSION_JOIN} \
                 ON CONFLICT DO NOTHING RETURNING id"
            ),
            |mut b, (id, s)| {
                b.push_bind(DbId(*id))
                    .push_bind(s.username.clone())
                    .push_bind(s.device_id.clone())
                    .push_bind(s.human_name.clone())
                    .push_bind(s.is_synapse_admin)
                    .push_bind(Ts(s.created_at))
                    .push_bind(s.last_active_at.map(Ts))
                    .push_bind(s.user_agent.clone());
            },
        )
        .await
    }

    async fn insert_access_tokens(&mut self, rows: &[AccessRow<'_>]) -> Result<Ids, StorageError> {
        self.insert_values(
            rows,
            "INSERT INTO compat_access_tokens \
             (id, session_id, token_hash, created_at, expires_at) ",
            " ON CONFLICT DO NOTHING RETURNING id",
            |mut b, (id, session_id, token)| {
                b.push_bind(DbId(*id))
                    .push_bind(DbId(*session_id))
                    .push_bind(token.token_hash.to_vec())
                    .push_bind(Ts(token.created_at))
                    .push_bind(token.expires_at.map(Ts));
            },
        )
        .await
    }

    async fn insert_refresh_tokens(&mut self, rows: &[RefreshRow<'_>]) -> Result<(), StorageError> {
        self.insert_values(
            rows,
            "INSERT INTO compat_refresh_tokens \
             (id, session_id, token_hash, access_token_id, created_at) ",
            " ON CONFLICT DO NOTHING RETURNING id",
            |mut b, (id, session_id, access_token_id, token)| {
                b.push_bind(DbId(*id))
                    .push_bind(DbId(*session_id))
                    .push_bind(token.token_hash.to_vec())
                    .push_bind(access_token_id.map(DbId))
                    .push_bind(Ts(token.created_at));
            },
        )
        .await?;
        Ok(())
    }
}

/// What both backends share: the import's record, the upstream links (one at a time), and how
/// the bulk writers' new ids become each row's outcome.
macro_rules! implementation {
    ($repo:ty) => {
        impl $repo {
            /// The outcome of each row keyed by `ids`: inserted when its id came back, else
            /// already there or without its user.
            async fn outcomes(
                &mut self,
                ids: &[Ulid],
                usernames: &[&str],
                inserted: &Ids,
            ) -> Result<Vec<Imported>, StorageError> {
                let missing: Vec<&str> = ids
                    .iter()
                    .zip(usernames)
                    .filter(|(id, _)| !inserted.contains(*id))
                    .map(|(_, name)| *name)
                    .collect();
                let existing = if missing.is_empty() {
                    HashSet::new()
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
                if users.is_empty() {
                    return Ok(Vec::new());
                }
                self.bulk_transaction().await?;
                let rows: Vec<UserRow<'_>> = users.iter().map(|u| (self.new_id(), u)).collect();
                let inserted = self.insert_users(&rows).await?;
                let mut passwords: Vec<PasswordRow<'_>> = Vec::new();
                for (user_id, u) in rows.iter().filter(|(id, _)| inserted.contains(id)) {
                    if let Some((version, hash)) = &u.password {
                        passwords.push((
                            self.new_id(),
                            *user_id,
                            *version,
                            hash.as_str(),
                            u.created_at,
                        ));
                    }
                }
                if !passwords.is_empty() {
                    self.insert_passwords(&passwords).await?;
                }
                Ok(rows
                    .iter()
                    .map(|(id, _)| {
                        if inserted.contains(id) {
                            Imported::Inserted
                        } else {
                            Imported::AlreadyThere
                        }
                    })
                    .collect())
            }

            async fn import_emails(
                &mut self,
                emails: &[ImportedEmail],
            ) -> Result<Vec<Imported>, StorageError> {
                if emails.is_empty() {
                    return Ok(Vec::new());
                }
                self.bulk_transaction().await?;
                let rows: Vec<EmailRow<'_>> = emails.iter().map(|e| (self.new_id(), e)).collect();
                let inserted = self.insert_emails(&rows).await?;
                let ids: Vec<Ulid> = rows.iter().map(|(id, _)| *id).collect();
                let names: Vec<&str> = emails.iter().map(|e| e.username.as_str()).collect();
                self.outcomes(&ids, &names, &inserted).await
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
                Ok(self.outcomes(&[id], &[username], &Ids::new()).await?[0])
            }

            async fn import_compat_sessions(
                &mut self,
                sessions: &[ImportedCompatSession],
            ) -> Result<Vec<Imported>, StorageError> {
                if sessions.is_empty() {
                    return Ok(Vec::new());
                }
                self.bulk_transaction().await?;
                let rows: Vec<SessionRow<'_>> =
                    sessions.iter().map(|s| (self.new_id(), s)).collect();
                let inserted = self.insert_sessions(&rows).await?;

                // The inserted sessions' access tokens. A token hash is unique: one Synapse
                // token can't belong to two devices.
                let mut access: Vec<AccessRow<'_>> = Vec::new();
                for (session_id, s) in rows.iter().filter(|(id, _)| inserted.contains(id)) {
                    for token in &s.access_tokens {
                        access.push((self.new_id(), *session_id, token));
                    }
                }
                let kept = if access.is_empty() {
                    Ids::new()
                } else {
                    self.insert_access_tokens(&access).await?
                };
                let access_ids: HashMap<(Ulid, TokenHash), Ulid> = access
                    .iter()
                    .filter(|(id, _, _)| kept.contains(id))
                    .map(|(id, session_id, token)| ((*session_id, token.token_hash), *id))
                    .collect();

                let mut refresh: Vec<RefreshRow<'_>> = Vec::new();
                for (session_id, s) in rows.iter().filter(|(id, _)| inserted.contains(id)) {
                    for token in &s.refresh_tokens {
                        let access_token_id = token
                            .access_token_hash
                            .and_then(|hash| access_ids.get(&(*session_id, hash)).copied());
                        refresh.push((self.new_id(), *session_id, access_token_id, token));
                    }
                }
                if !refresh.is_empty() {
                    self.insert_refresh_tokens(&refresh).await?;
                }

                let ids: Vec<Ulid> = rows.iter().map(|(id, _)| *id).collect();
                let names: Vec<&str> = sessions.iter().map(|s| s.username.as_str()).collect();
                self.outcomes(&ids, &names, &inserted).await
            }
        }
    };
}

for_each_backend!(implementation);
