//! Storage: repository traits per aggregate, implemented for PostgreSQL and SQLite.
//!
//! [`Storage`] is the pool. [`Storage::begin`] opens a write transaction and hands out a
//! [`Repository`], from which each aggregate's repository is reached (`repo.users()`,
//! `repo.clients()`, ...); everything done through it lands together on [`Repository::commit`] or
//! not at all (dropping it rolls back). [`Storage::reader`] gives the same interface on a plain
//! connection for read-only hot paths (one statement, no `BEGIN`/`COMMIT` round trips).
//!
//! Each aggregate module holds its trait and one implementation body written once as a macro,
//! instantiated for [`PgRepository`] and [`SqliteRepository`]: the SQL is shared (both dialects
//! accept `$1` placeholders, `RETURNING` and `ON CONFLICT`), and where the dialects differ the
//! body reads a per-backend constant from [`Dialect`]. Clock and randomness (new IDs, "now") come
//! from the [`Entropy`] the storage was built with, so tests are exact. What the bodies share
//! lives here or in [`types`]: the outcome checks of statements that may change nothing
//! (`StorageError::inserted`, `StorageError::found`, and the `row_exists!`,
//! `compare_and_set!` and `inserted_under!` macros), and the stored forms of values.

pub mod types;

mod batch;
mod browser_sessions;
mod client_assertions;
mod clients;
mod compat;
mod email_verifications;
mod grants;
mod hot;
mod jobs;
mod oauth2_sessions;
mod rate_limits;
mod recovery_tickets;
mod registration_tokens;
mod synapse_import;
mod token_writer;
mod upstream;
mod user_terms;
mod users;

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::{rngs::StdRng, RngCore};
use sqlx::{
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Database, PgPool, Postgres, Sqlite, SqlitePool, Transaction,
};
use ulid::Ulid;

pub use self::{
    batch::{
        BatchReadRepository, ClientWithBucket, ClientWithBucketKey, TokenRead,
        ACTIVE_ACCESS_TOKENS_SQL, CLIENTS_SQL, CLIENTS_WITH_BUCKETS_SQL,
        CLIENTS_WITH_REFRESH_TOKENS_SQL, MAX_BATCH as MAX_READ_BATCH, RATE_LIMITS_SQL,
    },
    browser_sessions::*,
    client_assertions::*,
    clients::*,
    compat::*,
    email_verifications::*,
    grants::*,
    hot::BoxFuture,
    jobs::*,
    oauth2_sessions::*,
    rate_limits::*,
    recovery_tickets::*,
    registration_tokens::*,
    synapse_import::*,
    token_writer::MAX_BATCH as MAX_TOKEN_BATCH,
    upstream::*,
    user_terms::*,
    users::*,
};
use domain::clock::Entropy;

/// The SHA-256 of a token or code: how every secret value is stored and looked up.
pub type TokenHash = [u8; 32];

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported database URL `{0}`: expected postgres://… or sqlite:…")]
    UnsupportedUrl(String),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("stored data is invalid: {0}")]
    Invalid(String),
    // The two wrappers below carry their cause in the message and don't chain it as a
    // `source`, so an error report prints it once.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

impl StorageError {
    /// Checks the result of an `INSERT … ON CONFLICT DO NOTHING`: no row means a unique key was
    /// taken. (Inserts that may conflict are written that way because a failed statement aborts
    /// a PostgreSQL transaction but not a SQLite one; this way both keep the transaction usable.)
    pub(crate) fn inserted(
        done: impl Into<RowsAffected>,
        what: &'static str,
    ) -> Result<(), StorageError> {
        done.into().or(StorageError::Conflict(what))
    }

    /// Checks the result of a statement that must change one row: an `UPDATE … WHERE id = $1`,
    /// or an `INSERT … SELECT … WHERE EXISTS (<parent row>)` (guarded so that a missing parent
    /// inserts nothing instead of failing on the foreign key, which would abort a PostgreSQL
    /// transaction). No row means [`StorageError::NotFound`]`(what)`.
    pub(crate) fn found(
        done: impl Into<RowsAffected>,
        what: &'static str,
    ) -> Result<(), StorageError> {
        done.into().or(StorageError::NotFound(what))
    }
}

/// The row count of a statement, whatever the backend.
pub(crate) struct RowsAffected(pub u64);

impl RowsAffected {
    /// `Ok(())` when the statement changed a row, else `Err(error)`.
    fn or(self, error: StorageError) -> Result<(), StorageError> {
        if self.0 == 0 {
            Err(error)
        } else {
            Ok(())
        }
    }
}

impl From<sqlx::postgres::PgQueryResult> for RowsAffected {
    fn from(r: sqlx::postgres::PgQueryResult) -> Self {
        Self(r.rows_affected())
    }
}

impl From<sqlx::sqlite::SqliteQueryResult> for RowsAffected {
    fn from(r: sqlx::sqlite::SqliteQueryResult) -> Self {
        Self(r.rows_affected())
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StorageError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

/// Which database engine a [`Storage`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    Sqlite,
}

impl DatabaseKind {
    /// The engine a connection URL names: `postgres://`/`postgresql://`, or `sqlite:`.
    pub fn of_url(url: &str) -> Result<Self, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(StorageError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }
}

/// A connection URL without its password, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The database: a pool of connections to PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: Pool,
    entropy: Entropy,
    /// The group-committed writes: token issuance ([`Storage::add_session_with_token`]),
    /// rate-limit spends ([`Storage::spend`]), refresh rotations ([`Storage::rotate_refresh_token`]).
    writer: std::sync::Arc<token_writer::Writers>,
    /// Repositories kept for hot reads ([`Storage::hot_read`]).
    hot: std::sync::Arc<hot::HotRepositories>,
    /// The queues of the batched reads, which run on the kept repositories (`batch`).
    reads: std::sync::Arc<batch::Reads>,
}

/// A migration that [`Storage::migrate`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl Storage {
    /// Connects to the database a URL names. SQLite files are created when missing and run in
    /// WAL mode with foreign keys enforced.
    ///
    /// One connection is opened directly first, so an unreachable server or a wrong password
    /// fails at once with its real cause (the pool alone retries until its timeout and then
    /// reports only that it timed out).
    pub async fn connect(
        url: &str,
        settings: &PoolSettings,
        entropy: Entropy,
    ) -> Result<Self, StorageError> {
        let pool = match DatabaseKind::of_url(url)? {
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                sqlx::Connection::close(
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?,
                )
                .await?;
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(settings.max_connections)
                        .acquire_timeout(settings.connect_timeout)
                        // A connection keeps the plans of its prepared statements, made from
                        // the tables of the moment they were planned; with statistics that lag
                        // (autovacuum off or behind), a plan made on small tables scans them
                        // once they are large (measured: refresh rotations 1,777/s on a new
                        // database, 642/s after 80,000 more sessions, 1,655/s again with new
                        // connections). A pooled connection lives a minute, so its plans are
                        // never older; the kept ones forget theirs as often (`hot`, "Plans").
                        .max_lifetime(std::time::Duration::from_secs(
                            hot::REPLAN_EVERY.num_seconds().unsigned_abs(),
                        ))
                        .connect_with(options)
                        .await?,
                )
            }
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                sqlx::Connection::close(
                    <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await?,
                )
                .await?;
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(settings.max_connections)
                        .acquire_timeout(settings.connect_timeout)
                        .connect_with(options)
                        .await?,
                )
            }
        };
        // Half the pool at most, so ordinary requests always find connections.
        let hot = hot::HotRepositories::new(settings.max_connections as usize / 2);
        Ok(Self {
            pool,
            entropy,
            writer: std::sync::Arc::default(),
            hot: std::sync::Arc::new(hot),
            reads: std::sync::Arc::default(),
        })
    }

    pub fn kind(&self) -> DatabaseKind {
        match self.pool {
            Pool::Postgres(_) => DatabaseKind::Postgres,
            Pool::Sqlite(_) => DatabaseKind::Sqlite,
        }
    }

    pub fn entropy(&self) -> &Entropy {
        &self.entropy
    }

    /// Applies the embedded migrations that are not applied yet, and returns them. Safe to run
    /// from several replicas at once (PostgreSQL takes an advisory lock).
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>, StorageError> {
        use sqlx::migrate::Migrate;
        async fn pending<C: Migrate>(
            conn: &mut C,
            migrator: &sqlx::migrate::Migrator,
        ) -> Result<Vec<AppliedMigration>, StorageError> {
            conn.ensure_migrations_table().await?;
            let applied = conn.list_applied_migrations().await?;
            Ok(migrator
                .iter()
                .filter(|m| !applied.iter().any(|a| a.version == m.version))
                .map(|m| AppliedMigration {
                    version: m.version,
                    description: m.description.to_string(),
                })
                .collect())
        }
        match &self.pool {
            Pool::Postgres(pool) => {
                let todo = pending(&mut *pool.acquire().await?, &PG_MIGRATOR).await?;
                PG_MIGRATOR.run(pool).await?;
                Ok(todo)
            }
            Pool::Sqlite(pool) => {
                let todo = pending(&mut *pool.acquire().await?, &SQLITE_MIGRATOR).await?;
                SQLITE_MIGRATOR.run(pool).await?;
                Ok(todo)
            }
        }
    }

    /// A handle on the same pool and entropy with `hot` for its kept repositories and queues of
    /// its own (empty, never started): what the batch readers and the group-commit writers run
    /// on, so that they keep neither this handle's queues nor, through them, themselves alive.
    pub(crate) fn detached(&self, hot: std::sync::Arc<hot::HotRepositories>) -> Self {
        Self {
            pool: self.pool.clone(),
            entropy: self.entropy.clone(),
            writer: std::sync::Arc::default(),
            hot,
            reads: std::sync::Arc::default(),
        }
    }

    /// Is PostgreSQL's autovacuum off? Without it the tables' statistics are never refreshed and
    /// deleted rows never reclaimed (rate-limit buckets and tokens churn); the provider then
    /// relies on re-planning its statements ([`crate::hot`], "Plans") and on the operator's own
    /// `VACUUM ANALYZE`. Always `false` on SQLite.
    pub async fn autovacuum_off(&self) -> Result<bool, StorageError> {
        match &self.pool {
            Pool::Postgres(pool) => {
                let (off,): (bool,) =
                    sqlx::query_as("SELECT current_setting('autovacuum') = 'off'")
                        .fetch_one(pool)
                        .await?;
                Ok(off)
            }
            Pool::Sqlite(_) => Ok(false),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Pool::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Runs one administrative statement outside any transaction (`CREATE DATABASE`, ...).
    /// Never pass it anything that came from a request.
    pub async fn execute_admin(&self, sql: &str) -> Result<(), StorageError> {
        match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::raw_sql(sql).execute(pool).await?;
            }
            Pool::Sqlite(pool) => {
                sqlx::raw_sql(sql).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Opens a write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`), so a
    /// transaction that reads before it writes never fails to upgrade its lock.
    pub async fn begin(&self) -> Result<BoxRepository, StorageError> {
        Ok(match &self.pool {
            Pool::Postgres(pool) => Box::new(self.repository(Held::Tx(pool.begin().await?))),
            Pool::Sqlite(pool) => {
                Box::new(self.repository(Held::Tx(pool.begin_with("BEGIN IMMEDIATE").await?)))
            }
        })
    }

    /// A repository on a plain connection: each statement commits on its own. For reads.
    pub async fn reader(&self) -> Result<BoxRepository, StorageError> {
        Ok(match &self.pool {
            Pool::Postgres(pool) => Box::new(self.repository(Held::Conn(pool.acquire().await?))),
            Pool::Sqlite(pool) => Box::new(self.repository(Held::Conn(pool.acquire().await?))),
        })
    }

    fn repository<DB: Database>(&self, conn: Held<DB>) -> SqlRepository<DB> {
        SqlRepository {
            conn,
            entropy: self.entropy.clone(),
            rng: self.entropy.rng.rng(),
        }
    }

    /// Closes every connection (waits for those in use to be returned).
    pub async fn close(&self) {
        self.hot.close();
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

enum Held<DB: Database> {
    Tx(Transaction<'static, DB>),
    Conn(PoolConnection<DB>),
}

/// The repository over one connection of a backend. Use it through [`Repository`].
pub struct SqlRepository<DB: Database> {
    conn: Held<DB>,
    entropy: Entropy,
    rng: StdRng,
}

/// The PostgreSQL implementation of every repository trait.
pub type PgRepository = SqlRepository<Postgres>;
/// The SQLite implementation of every repository trait.
pub type SqliteRepository = SqlRepository<Sqlite>;

impl<DB: Database> SqlRepository<DB> {
    fn conn(&mut self) -> &mut DB::Connection {
        match &mut self.conn {
            Held::Tx(tx) => tx,
            Held::Conn(conn) => conn,
        }
    }

    /// A new ULID at the injected clock's time with injected randomness.
    fn new_id(&mut self) -> Ulid {
        let now = self.entropy.clock.now();
        let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let random = (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64());
        Ulid::from_parts(millis, random)
    }

    /// The injected clock's time, truncated to what both backends store.
    fn now(&self) -> DateTime<Utc> {
        types::db_precision(self.entropy.clock.now())
    }
}

/// Per-backend SQL where the two dialects differ.
pub(crate) trait Dialect {
    /// Row lock for "claim one pending job": PostgreSQL skips rows other workers hold; SQLite
    /// has a single writer, so the `BEGIN IMMEDIATE` transaction already serialises claims.
    const LOCK_SKIP_LOCKED: &'static str;
    /// Row lock for a row read before it is written: PostgreSQL locks the row until the
    /// transaction ends; SQLite's `BEGIN IMMEDIATE` transaction already holds the database's
    /// single write lock.
    const FOR_UPDATE: &'static str;
}

impl Dialect for PgRepository {
    const LOCK_SKIP_LOCKED: &'static str = "FOR UPDATE SKIP LOCKED";
    const FOR_UPDATE: &'static str = "FOR UPDATE";
}

impl Dialect for SqliteRepository {
    const LOCK_SKIP_LOCKED: &'static str = "";
    const FOR_UPDATE: &'static str = "";
}

// Helpers for the implementation bodies. Each takes the repository (`self`) to query through
// and expands to code that `?`s a [`StorageError`]; table names are literals, so the SQL stays
// static.

/// Does a row with this id exist in `$table`? Tells "no such row" from "not in the right state"
/// or "a unique key was taken" after a statement changed nothing.
macro_rules! row_exists {
    ($self:ident, $table:literal, $id:expr) => {{
        let n: i64 =
            ::sqlx::query_scalar(concat!("SELECT COUNT(*) FROM ", $table, " WHERE id = $1"))
                .bind($crate::types::DbId($id))
                .fetch_one($self.conn())
                .await?;
        n > 0
    }};
}
pub(crate) use row_exists;

/// The outcome of a compare-and-set `UPDATE … WHERE id = $1 AND <state>` (its result `$done`),
/// as a `Result<bool, StorageError>`: `Ok(true)` when it changed the row, `Ok(false)` when the
/// row is there but was not in that state, [`StorageError::NotFound`]`($what)` when there is no
/// row `$id` in `$table`.
///
/// With `requires $table2, $id2, $what2`, the update's condition also required that other row
/// to exist (`AND EXISTS (SELECT 1 FROM $table2 WHERE id = $2)`): when nothing changed and the
/// row itself is there but that one is not, [`StorageError::NotFound`]`($what2)`.
macro_rules! compare_and_set {
    ($self:ident, $done:expr, $table:literal, $id:expr, $what:literal) => {{
        if $done.rows_affected() > 0 {
            Ok(true)
        } else if $crate::row_exists!($self, $table, $id) {
            Ok(false)
        } else {
            Err($crate::StorageError::NotFound($what))
        }
    }};
    (
        $self:ident, $done:expr, $table:literal, $id:expr, $what:literal,
        requires $other_table:literal, $other_id:expr, $other_what:literal
    ) => {{
        if $done.rows_affected() > 0 {
            Ok(true)
        } else if !$crate::row_exists!($self, $table, $id) {
            Err($crate::StorageError::NotFound($what))
        } else if !$crate::row_exists!($self, $other_table, $other_id) {
            Err($crate::StorageError::NotFound($other_what))
        } else {
            Ok(false)
        }
    }};
}
pub(crate) use compare_and_set;

/// The outcome of an `INSERT … SELECT … WHERE EXISTS (SELECT 1 FROM $parent_table WHERE id = …)
/// ON CONFLICT DO NOTHING` (its result `$done`), as a `Result<(), StorageError>`: `Ok(())` when
/// it inserted the row, [`StorageError::NotFound`]`($parent_what)` when the parent row
/// `$parent_id` is missing, else [`StorageError::Conflict`]`($what)` (a unique key was taken).
/// See [`StorageError::inserted`] for why conflicts are not left to fail.
macro_rules! inserted_under {
    (
        $self:ident, $done:expr, $what:literal,
        requires $parent_table:literal, $parent_id:expr, $parent_what:literal
    ) => {{
        if $done.rows_affected() > 0 {
            Ok(())
        } else if $crate::row_exists!($self, $parent_table, $parent_id) {
            Err($crate::StorageError::Conflict($what))
        } else {
            Err($crate::StorageError::NotFound($parent_what))
        }
    }};
}
pub(crate) use inserted_under;

/// Deletes one bounded batch of dead rows of `$table` and returns how many (housekeeping, see
/// `provider::core::housekeeping`): at most `$limit` rows matching `$condition`, whose `$1` is bound to
/// `$before`. PostgreSQL has no `DELETE … LIMIT`, so the rows are picked by a limited
/// sub-select over `$key` (the primary key's columns); the outer `$condition` is checked again
/// on each row's latest version before it goes (PostgreSQL re-evaluates a `DELETE`'s own
/// condition on a row updated since its snapshot), so a row brought back to life meanwhile stays.
macro_rules! delete_batch {
    ($self:ident, $table:literal, $key:literal, $condition:literal, $before:expr, $limit:expr) => {{
        let done = ::sqlx::query(concat!(
            "DELETE FROM ",
            $table,
            " WHERE ",
            $condition,
            " AND (",
            $key,
            ") IN (SELECT ",
            $key,
            " FROM ",
            $table,
            " WHERE ",
            $condition,
            " LIMIT $2)"
        ))
        .bind($before)
        .bind(i64::from($limit))
        .execute($self.conn())
        .await?;
        Ok(done.rows_affected())
    }};
}
pub(crate) use delete_batch;

/// Instantiates an implementation body (a `macro_rules!` taking the repository type) for both
/// backends.
macro_rules! for_each_backend {
    ($body:ident) => {
        $body!($crate::PgRepository);
        $body!($crate::SqliteRepository);
    };
}
pub(crate) use for_each_backend;

/// Access to every aggregate's repository over one connection or transaction.
#[async_trait]
pub trait Repository: Send {
    fn users(&mut self) -> &mut dyn UserRepository;
    fn user_passwords(&mut self) -> &mut dyn UserPasswordRepository;
    fn user_emails(&mut self) -> &mut dyn UserEmailRepository;
    fn clients(&mut self) -> &mut dyn ClientRepository;
    fn client_assertions(&mut self) -> &mut dyn ClientAssertionRepository;
    fn browser_sessions(&mut self) -> &mut dyn BrowserSessionRepository;
    fn oauth2_sessions(&mut self) -> &mut dyn OAuth2SessionRepository;
    fn access_tokens(&mut self) -> &mut dyn AccessTokenRepository;
    fn refresh_tokens(&mut self) -> &mut dyn RefreshTokenRepository;
    fn authorization_grants(&mut self) -> &mut dyn AuthorizationGrantRepository;
    fn consents(&mut self) -> &mut dyn ConsentRepository;
    fn device_code_grants(&mut self) -> &mut dyn DeviceCodeGrantRepository;
    fn compat_sessions(&mut self) -> &mut dyn CompatSessionRepository;
    fn compat_tokens(&mut self) -> &mut dyn CompatTokenRepository;
    fn compat_sso_logins(&mut self) -> &mut dyn CompatSsoLoginRepository;
    fn upstream_providers(&mut self) -> &mut dyn UpstreamProviderRepository;
    fn upstream_links(&mut self) -> &mut dyn UpstreamLinkRepository;
    fn upstream_sessions(&mut self) -> &mut dyn UpstreamSessionRepository;
    fn jobs(&mut self) -> &mut dyn JobRepository;
    fn user_email_verifications(&mut self) -> &mut dyn UserEmailVerificationRepository;
    fn pending_registrations(&mut self) -> &mut dyn PendingRegistrationRepository;
    fn recovery_tickets(&mut self) -> &mut dyn RecoveryTicketRepository;
    fn rate_limits(&mut self) -> &mut dyn RateLimitRepository;
    fn registration_tokens(&mut self) -> &mut dyn RegistrationTokenRepository;
    fn user_terms(&mut self) -> &mut dyn UserTermsRepository;
    fn synapse_import(&mut self) -> &mut dyn SynapseImportRepository;
    /// The batched reads of the hot paths (`Storage::find_active_access_token`, ...).
    fn batch_reads(&mut self) -> &mut dyn BatchReadRepository;

    /// Forgets the statements prepared on this repository's connection (PostgreSQL keeps each
    /// one's plan): the next use of each prepares and plans it again, from what the database
    /// knows of the tables now. See [`crate::hot`] ("Plans").
    async fn forget_statements(&mut self) -> Result<(), StorageError>;

    /// Makes every change done through this repository durable. Dropping the repository
    /// without committing rolls them back.
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
}

pub type BoxRepository = Box<dyn Repository>;

#[async_trait]
impl<DB: Database + sqlx::database::HasStatementCache> Repository for SqlRepository<DB>
where
    Self: UserRepository
        + UserPasswordRepository
        + UserEmailRepository
        + ClientRepository
        + ClientAssertionRepository
        + BrowserSessionRepository
        + OAuth2SessionRepository
        + AccessTokenRepository
        + RefreshTokenRepository
        + AuthorizationGrantRepository
        + ConsentRepository
        + DeviceCodeGrantRepository
        + CompatSessionRepository
        + CompatTokenRepository
        + CompatSsoLoginRepository
        + UpstreamProviderRepository
        + UpstreamLinkRepository
        + UpstreamSessionRepository
        + JobRepository
        + UserEmailVerificationRepository
        + PendingRegistrationRepository
        + RecoveryTicketRepository
        + RateLimitRepository
        + RegistrationTokenRepository
        + UserTermsRepository
        + SynapseImportRepository
        + BatchReadRepository,
{
    fn users(&mut self) -> &mut dyn UserRepository {
        self
    }
    fn user_passwords(&mut self) -> &mut dyn UserPasswordRepository {
        self
    }
    fn user_emails(&mut self) -> &mut dyn UserEmailRepository {
        self
    }
    fn clients(&mut self) -> &mut dyn ClientRepository {
        self
    }
    fn client_assertions(&mut self) -> &mut dyn ClientAssertionRepository {
        self
    }
    fn browser_sessions(&mut self) -> &mut dyn BrowserSessionRepository {
        self
    }
    fn oauth2_sessions(&mut self) -> &mut dyn OAuth2SessionRepository {
        self
    }
    fn access_tokens(&mut self) -> &mut dyn AccessTokenRepository {
        self
    }
    fn refresh_tokens(&mut self) -> &mut dyn RefreshTokenRepository {
        self
    }
    fn authorization_grants(&mut self) -> &mut dyn AuthorizationGrantRepository {
        self
    }
    fn consents(&mut self) -> &mut dyn ConsentRepository {
        self
    }
    fn device_code_grants(&mut self) -> &mut dyn DeviceCodeGrantRepository {
        self
    }
    fn compat_sessions(&mut self) -> &mut dyn CompatSessionRepository {
        self
    }
    fn compat_tokens(&mut self) -> &mut dyn CompatTokenRepository {
        self
    }
    fn compat_sso_logins(&mut self) -> &mut dyn CompatSsoLoginRepository {
        self
    }
    fn upstream_providers(&mut self) -> &mut dyn UpstreamProviderRepository {
        self
    }
    fn upstream_links(&mut self) -> &mut dyn UpstreamLinkRepository {
        self
    }
    fn upstream_sessions(&mut self) -> &mut dyn UpstreamSessionRepository {
        self
    }
    fn jobs(&mut self) -> &mut dyn JobRepository {
        self
    }
    fn user_email_verifications(&mut self) -> &mut dyn UserEmailVerificationRepository {
        self
    }
    fn pending_registrations(&mut self) -> &mut dyn PendingRegistrationRepository {
        self
    }
    fn recovery_tickets(&mut self) -> &mut dyn RecoveryTicketRepository {
        self
    }
    fn rate_limits(&mut self) -> &mut dyn RateLimitRepository {
        self
    }
    fn registration_tokens(&mut self) -> &mut dyn RegistrationTokenRepository {
        self
    }
    fn user_terms(&mut self) -> &mut dyn UserTermsRepository {
        self
    }
    fn synapse_import(&mut self) -> &mut dyn SynapseImportRepository {
        self
    }

    async fn forget_statements(&mut self) -> Result<(), StorageError> {
        sqlx::Connection::clear_cached_statements(self.conn()).await?;
        Ok(())
    }
    fn batch_reads(&mut self) -> &mut dyn BatchReadRepository {
        self
    }

    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        if let Held::Tx(tx) = self.conn {
            tx.commit().await?;
        }
        Ok(())
    }
}
