//! Batched reads for the hot paths: the lookups of concurrent requests share one statement.
//!
//! Introspection, the client lookup of client authentication and the peek at a failed
//! authentications bucket are one short read each, and under load most of their cost is the
//! round trip itself: a message to the database, a wake-up of its backend, a message back, a
//! wake-up of the provider. Here a request queues its key and waits; a reader task takes
//! everything queued of that kind (up to [`MAX_BATCH`]), runs ONE statement for all of it on a
//! kept connection ([`Storage::hot_read`]), and answers each request with its own row. On
//! PostgreSQL the keys travel as arrays (`unnest($1) WITH ORDINALITY`), and each row comes back
//! with the position of its key, so a key asked twice is answered twice and a miss is a `None`;
//! on SQLite (in-process, no round trip to save) the reader runs the single lookup per key.
//!
//! No timer: a reader takes what is queued the moment it is free, so at low load a batch is one
//! request and costs one round trip, as before; under load, while one statement runs the next batch
//! fills, and one round trip serves many requests. Client, bucket, and client-with-bucket lookups
//! (the latter in two kinds: with an access token to introspect, or with the refresh grant's
//! presented token) have one reader each: a request waits for at most the statement running when it
//! arrived, then its own. Access tokens, the homeserver's path and the busiest, have two taking
//! turns (one gathers while the other's statement runs). A reader borrows a kept connection for
//! each batch (five are kept with the default `database.max_connections` 10, shared with the
//! group-committed writes; when none is free a batch reads on a pooled one); short `wrk` runs (2
//! cores, 16 connections) put the homeserver's introspection ahead with two token readers and the
//! client's introspection ahead with one reader for the other kinds.
//!
//! Nothing read is kept: every read starts after its request arrived, so a revocation committed
//! before the request is seen, on every replica.
//!
//! Failures: as [`Storage::hot_read`], a batch whose kept connection fails (the server
//! restarted since its last use) goes back to the pool and the whole batch runs once more on an
//! ordinary pooled connection; the reads may be repeated. When that fails too, every request of
//! the batch gets the error. A request whose reader went away gets
//! [`sqlx::Error::WorkerCrashed`]; a request sent while no reader can run (its runtime shut
//! down) is read directly.
//!
//! The readers hold the kept connections only weakly (a [`Weak`] of them, upgraded for each
//! batch) and no handle on their own queues, so they stop when the last [`Storage`] is dropped.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, FromRow, Row as _};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{
    clients::{client_columns, ClientRow},
    hot::HotRepositories,
    oauth2_sessions::{
        active_token_columns, active_token_conditions, presented_columns, PresentedRow,
        TokenWithSessionRow,
    },
    token_writer::same_error,
    AccessTokenRepository, ActiveAccessToken, BoxFuture, BoxRepository, Client, ClientRepository,
    PgRepository, PresentedRefreshToken, RateLimitRepository, RefreshTokenRepository,
    SqliteRepository, Storage, StorageError, TokenHash,
};

/// The most keys one statement carries.
pub const MAX_BATCH: usize = 64;

/// Requests that may wait in a queue before senders wait for room.
const QUEUE: usize = 1024;

/// The reads of many keys in one go, for the batched hot paths: the answer holds one entry per
/// key, in the order of the keys (`None`: nothing found for it). PostgreSQL runs one statement;
/// SQLite (in-process) runs each key's single lookup.
#[async_trait]
pub trait BatchReadRepository: Send {
    /// [`AccessTokenRepository::find_active_by_hash`] of each `(hash, now)`.
    async fn find_active_access_tokens(
        &mut self,
        keys: &[(TokenHash, DateTime<Utc>)],
    ) -> Result<Vec<Option<ActiveAccessToken>>, StorageError>;

    /// [`ClientRepository::find_by_client_id`] of each `client_id`.
    async fn find_clients(
        &mut self,
        client_ids: &[String],
    ) -> Result<Vec<Option<Client>>, StorageError>;

    /// [`RateLimitRepository::peek`] of each bucket key.
    async fn peek_rate_limits(&mut self, keys: &[String])
        -> Result<Vec<Option<i64>>, StorageError>;

    /// For each key: the client ([`Self::find_clients`]), the bucket's time
    /// ([`Self::peek_rate_limits`]) and, when the key names an access token
    /// ([`TokenRead::Access`]), that token if active ([`Self::find_active_access_tokens`]), in
    /// one statement. A key naming a refresh token reads as if it named none.
    async fn find_clients_with_buckets(
        &mut self,
        keys: &[ClientWithBucketKey],
    ) -> Result<Vec<Option<ClientWithBucket>>, StorageError>;

    /// As [`Self::find_clients_with_buckets`], with the refresh token a key names
    /// ([`TokenRead::Refresh`]) read as [`RefreshTokenRepository::find_presented`] reads it,
    /// in one statement. A key naming an access token reads as if it named none.
    async fn find_clients_with_refresh_tokens(
        &mut self,
        keys: &[ClientWithBucketKey],
    ) -> Result<Vec<Option<ClientWithBucket>>, StorageError>;
}

/// What client authentication reads before checking credentials
/// ([`Storage::find_client_with_bucket`]): a client by `client_id`, the rate-limit bucket of
/// the caller's failures, and, for an endpoint that looks a token up once the client is
/// authenticated (introspection, the refresh grant), that token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientWithBucketKey {
    pub client_id: String,
    pub bucket: String,
    pub token: Option<TokenRead>,
}

/// A token read with a client ([`ClientWithBucketKey::token`]), by the hash of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRead {
    /// An OAuth 2.0 access token, if active at that time (introspection).
    Access(TokenHash, DateTime<Utc>),
    /// A refresh token as the refresh grant decides on it, whatever its state.
    Refresh(TokenHash),
}

impl TokenRead {
    fn access(&self) -> Option<(&TokenHash, DateTime<Utc>)> {
        match self {
            Self::Access(hash, at) => Some((hash, *at)),
            Self::Refresh(_) => None,
        }
    }

    fn refresh(&self) -> Option<&TokenHash> {
        match self {
            Self::Refresh(hash) => Some(hash),
            Self::Access(..) => None,
        }
    }
}

/// The answer to a [`ClientWithBucketKey`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientWithBucket {
    /// The client, if one has that `client_id`.
    pub client: Option<Client>,
    /// The bucket's time, if it was ever spent.
    pub bucket_tat: Option<i64>,
    /// The access token, when the key named one and it is active at the key's time.
    pub token: Option<ActiveAccessToken>,
    /// The refresh token, when the key named one and it exists.
    pub refresh: Option<PresentedRefreshToken>,
}

/// A row of a batched statement, with the 1-based position of the key it answers
/// (`WITH ORDINALITY`, column `batch_index`).
struct Indexed<R> {
    index: i64,
    row: R,
}

impl<'r, R: FromRow<'r, PgRow>> FromRow<'r, PgRow> for Indexed<R> {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            index: row.try_get("batch_index")?,
            row: R::from_row(row)?,
        })
    }
}

/// A client's columns (all NULL when no client has the key's `client_id`), a bucket's time, and
/// an active token's columns (all NULL when the key named none or it is not active).
struct ClientWithBucketRow(ClientWithBucket);

impl<'r> FromRow<'r, PgRow> for ClientWithBucketRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self(ClientWithBucket {
            token: present::<TokenWithSessionRow, _>(row, "t_id")?,
            ..client_with_bucket(row)?
        }))
    }
}

/// As [`ClientWithBucketRow`], with a presented refresh token's columns instead of an access
/// token's.
struct ClientWithRefreshRow(ClientWithBucket);

impl<'r> FromRow<'r, PgRow> for ClientWithRefreshRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self(ClientWithBucket {
            refresh: present::<PresentedRow, _>(row, "r_id")?,
            ..client_with_bucket(row)?
        }))
    }
}

/// The client (its columns all NULL when there is none) and the bucket's time of a row.
fn client_with_bucket(row: &PgRow) -> Result<ClientWithBucket, sqlx::Error> {
    Ok(ClientWithBucket {
        client: present::<ClientRow, _>(row, "id")?,
        bucket_tat: row.try_get("bucket_tat")?,
        ..ClientWithBucket::default()
    })
}

/// What the columns `R` reads from `row` stand for, or `None` when its key column `key` is
/// NULL (a left join that found nothing).
fn present<'r, R, T>(row: &'r PgRow, key: &str) -> Result<Option<T>, sqlx::Error>
where
    R: FromRow<'r, PgRow> + TryInto<T, Error = StorageError>,
{
    match row.try_get::<Option<uuid::Uuid>, _>(key)? {
        Some(_) => R::from_row(row)?
            .try_into()
            .map(Some)
            .map_err(|e| sqlx::Error::Decode(e.to_string().into())),
        None => Ok(None),
    }
}

/// A bucket's time (`rate_limits.tat`).
#[derive(sqlx::FromRow)]
struct TatRow {
    tat: i64,
}

/// The rows of a batched statement put back in the order of its `n` keys.
fn by_key<R, T>(
    n: usize,
    rows: Vec<Indexed<R>>,
    convert: impl Fn(R) -> Result<T, StorageError>,
) -> Result<Vec<Option<T>>, StorageError> {
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    for Indexed { index, row } in rows {
        let slot = usize::try_from(index - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| StorageError::Invalid(format!("batch index {index} of {n} keys")))?;
        *slot = Some(convert(row)?);
    }
    Ok(out)
}

/// The active access token of the key `q(hash, at)`, with its session `s`, its client's
/// `client_id` `c` and its user `u`: one level per table, each by a unique index (see
/// [`ACTIVE_ACCESS_TOKENS_SQL`]). Shared by the statements that look a token up.
macro_rules! active_token_of_key {
    () => {
        concat!(
            "(SELECT * FROM oauth2_access_tokens WHERE token_hash = q.hash LIMIT 1) t \
             CROSS JOIN LATERAL (SELECT * FROM oauth2_sessions WHERE id = t.session_id LIMIT 1) s \
             CROSS JOIN LATERAL \
               (SELECT client_id FROM oauth2_clients WHERE id = s.client_id LIMIT 1) c \
             LEFT JOIN LATERAL (SELECT * FROM users WHERE id = s.user_id LIMIT 1) u ON true \
             WHERE ",
            active_token_conditions!("q.at")
        )
    };
}

/// The batched statements of PostgreSQL, one per kind. Each key is looked up on its own
/// (`CROSS JOIN LATERAL (… LIMIT 1)`, one level per table, each by a unique index), so the work
/// grows with the batch, never with the tables, whatever plan the database caches.
///
/// Why not plain joins: PostgreSQL plans a prepared statement once for every later execution
/// (its *generic plan*, after five executions) from what it knows of the tables at that moment.
/// A provider that starts on empty tables, on a server whose statistics lag (autovacuum off or
/// behind), keeps a plan made for tables of one row: the plain join of this lookup was then
/// planned as a nested loop of two sequential scans (tokens × sessions), and with 80,000 tokens
/// one introspection took 229 s (issue 16, measured). Laterals leave the planner one shape:
/// for each key, its token, then that token's session, client and user; and each step reads
/// at most its table (a sequential scan when the plan was made on a table of one page), never
/// the product of two. [`crate::hot`] re-plans the kept connections' statements periodically,
/// so a plan made on small tables gives way to one made on today's.
///
/// The arrays come in through sub-selects (`unnest((SELECT $1))`) so that no plan knows how
/// many keys a batch has: given the array, each execution's own plan ("custom") counts its
/// keys and looks cheaper than the plan for any count (PostgreSQL assumes 10), and PostgreSQL
/// then plans every execution anew (0.24 ms of the server's CPU per batch, measured: twice the
/// cost of the lookup itself). Both now assume 10 keys, and the plan made once is kept.
///
/// Public for the plan tests (`storage_contract::batch`).
#[doc(hidden)]
pub const ACTIVE_ACCESS_TOKENS_SQL: &str = concat!(
    "SELECT q.i AS batch_index, ",
    active_token_columns!(),
    " FROM unnest((SELECT $1::bytea[]), (SELECT $2::timestamptz[])) WITH ORDINALITY AS q(hash, at, i) \
      CROSS JOIN LATERAL ",
    active_token_of_key!()
);

/// See [`ACTIVE_ACCESS_TOKENS_SQL`].
#[doc(hidden)]
pub const CLIENTS_SQL: &str = concat!(
    "SELECT q.i AS batch_index, ",
    client_columns!(),
    " FROM unnest((SELECT $1::text[])) WITH ORDINALITY AS q(wanted, i) \
      CROSS JOIN LATERAL \
        (SELECT * FROM oauth2_clients WHERE client_id = q.wanted LIMIT 1) oauth2_clients"
);

/// The client `q.wanted` and the time of the bucket `q.bucket` of a key (`oauth2_clients`,
/// `rate_limits`), each by its own index step and NULL when missing: the part the two
/// client-with-bucket statements share.
macro_rules! client_and_bucket_of_key {
    () => {
        "LEFT JOIN LATERAL \
           (SELECT * FROM oauth2_clients WHERE client_id = q.wanted LIMIT 1) oauth2_clients ON true \
         LEFT JOIN LATERAL \
           (SELECT tat FROM rate_limits WHERE key = q.bucket LIMIT 1) rate_limits ON true"
    };
}

/// See [`ACTIVE_ACCESS_TOKENS_SQL`]. A key always has its row (its client's columns NULL when
/// there is no such client, its bucket's time NULL when the bucket was never spent, its token's
/// columns NULL when it named no token (a NULL hash finds none) or the token is not active).
#[doc(hidden)]
pub const CLIENTS_WITH_BUCKETS_SQL: &str = concat!(
    "SELECT q.i AS batch_index, rate_limits.tat AS bucket_tat, tok.*, ",
    client_columns!(),
    " FROM unnest((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::bytea[]), \
                  (SELECT $4::timestamptz[])) WITH ORDINALITY AS q(wanted, bucket, hash, at, i) ",
    client_and_bucket_of_key!(),
    " LEFT JOIN LATERAL (SELECT ",
    active_token_columns!(),
    " FROM ",
    active_token_of_key!(),
    ") tok ON true"
);

/// See [`CLIENTS_WITH_BUCKETS_SQL`]: with a presented refresh token, its session and whether
/// its user is active, each by its own index step: `PRESENTED_REFRESH_TOKEN_SQL` per key, the
/// same columns (`presented_columns!`); that one joins instead, as it runs on SQLite too, which
/// has no `LATERAL`.
#[doc(hidden)]
pub const CLIENTS_WITH_REFRESH_TOKENS_SQL: &str = concat!(
    "SELECT q.i AS batch_index, rate_limits.tat AS bucket_tat, pres.*, ",
    client_columns!(),
    " FROM unnest((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::bytea[])) \
        WITH ORDINALITY AS q(wanted, bucket, hash, i) ",
    client_and_bucket_of_key!(),
    " LEFT JOIN LATERAL (SELECT ",
    presented_columns!(),
    " FROM (SELECT * FROM oauth2_refresh_tokens WHERE token_hash = q.hash LIMIT 1) r \
        CROSS JOIN LATERAL (SELECT * FROM oauth2_sessions WHERE id = r.session_id LIMIT 1) s \
        LEFT JOIN LATERAL (SELECT * FROM users WHERE id = s.user_id LIMIT 1) u ON true) pres \
      ON true"
);

/// See [`ACTIVE_ACCESS_TOKENS_SQL`].
#[doc(hidden)]
pub const RATE_LIMITS_SQL: &str = "SELECT q.i AS batch_index, rate_limits.tat \
     FROM unnest((SELECT $1::text[])) WITH ORDINALITY AS q(wanted, i) \
     CROSS JOIN LATERAL (SELECT tat FROM rate_limits WHERE key = q.wanted LIMIT 1) rate_limits";

#[async_trait]
impl BatchReadRepository for PgRepository {
    async fn find_active_access_tokens(
        &mut self,
        keys: &[(TokenHash, DateTime<Utc>)],
    ) -> Result<Vec<Option<ActiveAccessToken>>, StorageError> {
        let hashes: Vec<&[u8]> = keys.iter().map(|(hash, _)| &hash[..]).collect();
        let times: Vec<DateTime<Utc>> = keys.iter().map(|(_, now)| *now).collect();
        let rows: Vec<Indexed<TokenWithSessionRow>> = sqlx::query_as(ACTIVE_ACCESS_TOKENS_SQL)
            .bind(hashes)
            .bind(times)
            .fetch_all(self.conn())
            .await?;
        by_key(keys.len(), rows, TryInto::try_into)
    }

    async fn find_clients(
        &mut self,
        client_ids: &[String],
    ) -> Result<Vec<Option<Client>>, StorageError> {
        let rows: Vec<Indexed<ClientRow>> = sqlx::query_as(CLIENTS_SQL)
            .bind(client_ids)
            .fetch_all(self.conn())
            .await?;
        by_key(client_ids.len(), rows, TryInto::try_into)
    }

    async fn peek_rate_limits(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Option<i64>>, StorageError> {
        let rows: Vec<Indexed<TatRow>> = sqlx::query_as(RATE_LIMITS_SQL)
            .bind(keys)
            .fetch_all(self.conn())
            .await?;
        by_key(keys.len(), rows, |row| Ok(row.tat))
    }

    async fn find_clients_with_buckets(
        &mut self,
        keys: &[ClientWithBucketKey],
    ) -> Result<Vec<Option<ClientWithBucket>>, StorageError> {
        let n = keys.len();
        let (mut client_ids, mut buckets) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut hashes, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for key in keys {
            client_ids.push(key.client_id.as_str());
            buckets.push(key.bucket.as_str());
            let access = key.token.as_ref().and_then(TokenRead::access);
            hashes.push(access.map(|(hash, _)| &hash[..]));
            times.push(access.map(|(_, at)| at));
        }
        let rows: Vec<Indexed<ClientWithBucketRow>> = sqlx::query_as(CLIENTS_WITH_BUCKETS_SQL)
            .bind(client_ids)
            .bind(buckets)
            .bind(hashes)
            .bind(times)
            .fetch_all(self.conn())
            .await?;
        by_key(keys.len(), rows, |row| Ok(row.0))
    }

    async fn find_clients_with_refresh_tokens(
        &mut self,
        keys: &[ClientWithBucketKey],
    ) -> Result<Vec<Option<ClientWithBucket>>, StorageError> {
        let n = keys.len();
        let (mut client_ids, mut buckets) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut hashes = Vec::with_capacity(n);
        for key in keys {
            client_ids.push(key.client_id.as_str());
            buckets.push(key.bucket.as_str());
            hashes.push(
                key.token
                    .as_ref()
                    .and_then(TokenRead::refresh)
                    .map(|h| &h[..]),
            );
        }
        let rows: Vec<Indexed<ClientWithRefreshRow>> =
            sqlx::query_as(CLIENTS_WITH_REFRESH_TOKENS_SQL)
                .bind(client_ids)
                .bind(buckets)
                .bind(hashes)
                .fetch_all(self.conn())
                .await?;
        by_key(n, rows, |row| Ok(row.0))
    }
}

#[async_trait]
impl BatchReadRepository for SqliteRepository {
    async fn find_active_access_tokens(
        &mut self,
        keys: &[(TokenHash, DateTime<Utc>)],
    ) -> Result<Vec<Option<ActiveAccessToken>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for (hash, now) in keys {
            out.push(AccessTokenRepository::find_active_by_hash(self, hash, *now).await?);
        }
        Ok(out)
    }

    async fn find_clients(
        &mut self,
        client_ids: &[String],
    ) -> Result<Vec<Option<Client>>, StorageError> {
        let mut out = Vec::with_capacity(client_ids.len());
        for client_id in client_ids {
            out.push(ClientRepository::find_by_client_id(self, client_id).await?);
        }
        Ok(out)
    }

    async fn peek_rate_limits(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Option<i64>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(RateLimitRepository::peek(self, key).await?);
        }
        Ok(out)
    }

    async fn find_clients_with_buckets(
        &mut self,
        keys: &[ClientWithBucketKey],
    ) -> Result<Vec<Option<ClientWithBucket>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let token = match key.token.as_ref().and_then(TokenRead::access) {
                Some((hash, at)) => {
                    AccessTokenRepository::find_active_by_hash(self, hash, at).await?
                }
                None => None,
            };
            out.push(Some(ClientWithBucket {
                token,
                ..sqlite_client_with_bucket(self, key).await?
            }));
        }
        Ok(out)
    }

    async fn find_clients_with_refresh_tokens(
        &mut self,
        keys: &[ClientWithBucketKey],
    ) -> Result<Vec<Option<ClientWithBucket>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let refresh = match key.token.as_ref().and_then(TokenRead::refresh) {
                Some(hash) => RefreshTokenRepository::find_presented(self, hash).await?,
                None => None,
            };
            out.push(Some(ClientWithBucket {
                refresh,
                ..sqlite_client_with_bucket(self, key).await?
            }));
        }
        Ok(out)
    }
}

/// The client and the bucket's time of `key`, by their single lookups (SQLite).
async fn sqlite_client_with_bucket(
    repo: &mut SqliteRepository,
    key: &ClientWithBucketKey,
) -> Result<ClientWithBucket, StorageError> {
    Ok(ClientWithBucket {
        client: ClientRepository::find_by_client_id(repo, &key.client_id).await?,
        bucket_tat: RateLimitRepository::peek(repo, &key.bucket).await?,
        ..ClientWithBucket::default()
    })
}

/// A kind of batched read: its key, what it finds, and the batched statement.
pub(crate) trait Lookup: 'static {
    type Key: Send + Sync + 'static;
    type Value: Send + 'static;
    /// Readers of this kind (see the module).
    const READERS: usize;
    fn read<'r>(
        repo: &'r mut BoxRepository,
        keys: &'r [Self::Key],
    ) -> BoxFuture<'r, Result<Vec<Option<Self::Value>>, StorageError>>;
}

/// A [`Lookup`] kind: its name, key, value, readers, and the [`BatchReadRepository`] method
/// that reads a batch of it.
macro_rules! lookup {
    ($(#[$doc:meta])* $name:ident: $key:ty => $value:ty, readers $readers:literal, $method:ident) => {
        $(#[$doc])*
        pub(crate) struct $name;
        impl Lookup for $name {
            type Key = $key;
            type Value = $value;
            const READERS: usize = $readers;
            fn read<'r>(
                repo: &'r mut BoxRepository,
                keys: &'r [Self::Key],
            ) -> BoxFuture<'r, Result<Vec<Option<Self::Value>>, StorageError>> {
                repo.batch_reads().$method(keys)
            }
        }
    };
}

lookup!(
    /// Active access tokens by hash, at a time (introspection, userinfo, the admin API).
    AccessTokens: (TokenHash, DateTime<Utc>) => ActiveAccessToken,
    readers 2,
    find_active_access_tokens
);
lookup!(
    /// Clients by `client_id`.
    Clients: String => Client,
    readers 1,
    find_clients
);
lookup!(
    /// Rate-limit buckets' times by key.
    RateLimitBuckets: String => i64,
    readers 1,
    peek_rate_limits
);
lookup!(
    /// A client by `client_id` with a bucket's time and maybe an access token (client
    /// authentication).
    ClientsWithBuckets: ClientWithBucketKey => ClientWithBucket,
    readers 1,
    find_clients_with_buckets
);
lookup!(
    /// A client by `client_id` with a bucket's time and a refresh token (client authentication
    /// at the refresh grant).
    ClientsWithRefreshTokens: ClientWithBucketKey => ClientWithBucket,
    readers 1,
    find_clients_with_refresh_tokens
);

type Answer<L> = Result<Option<<L as Lookup>::Value>, StorageError>;

struct Job<L: Lookup> {
    key: L::Key,
    reply: oneshot::Sender<Answer<L>>,
}

/// The queue of one kind of read, its readers started on first use.
pub(crate) struct Batcher<L: Lookup>(OnceLock<mpsc::Sender<Job<L>>>);

impl<L: Lookup> Default for Batcher<L> {
    fn default() -> Self {
        Self(OnceLock::new())
    }
}

/// The queues of the batched reads of a [`Storage`] (kept with its kept connections).
#[derive(Default)]
pub(crate) struct Reads {
    access_tokens: Batcher<AccessTokens>,
    clients: Batcher<Clients>,
    rate_limits: Batcher<RateLimitBuckets>,
    clients_with_buckets: Batcher<ClientsWithBuckets>,
    clients_with_refresh_tokens: Batcher<ClientsWithRefreshTokens>,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").finish_non_exhaustive()
    }
}

impl Storage {
    /// The active OAuth 2.0 access token with this hash at `now` (as
    /// [`AccessTokenRepository::find_active_by_hash`]), read in one statement with the other
    /// requests' waiting at that moment (see the module).
    pub async fn find_active_access_token(
        &self,
        hash: TokenHash,
        now: DateTime<Utc>,
    ) -> Result<Option<ActiveAccessToken>, StorageError> {
        self.batched(|reads| &reads.access_tokens, (hash, now))
            .await
    }

    /// The client with this public `client_id` (as [`ClientRepository::find_by_client_id`]),
    /// read in one statement with the other requests' (see the module).
    pub async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StorageError> {
        self.batched(|reads| &reads.clients, client_id.to_owned())
            .await
    }

    /// The time of the rate-limit bucket `key` (as [`RateLimitRepository::peek`]), read in one
    /// statement with the other requests' (see the module).
    pub async fn peek_rate_limit(&self, key: &str) -> Result<Option<i64>, StorageError> {
        self.batched(|reads| &reads.rate_limits, key.to_owned())
            .await
    }

    /// What client authentication needs before it checks credentials, in one round trip: the
    /// client of `key.client_id`, the time of the rate-limit bucket `key.bucket`, and the token
    /// `key.token` names, for an endpoint that reads one once its caller is authenticated: an
    /// active access token (as [`Storage::find_active_access_token`]: introspection) or a
    /// presented refresh token (as [`RefreshTokenRepository::find_presented`]: the refresh
    /// grant), one statement per request instead of two; read in one statement with the other
    /// requests' of that kind (see the module).
    pub async fn find_client_with_bucket(
        &self,
        key: ClientWithBucketKey,
    ) -> Result<ClientWithBucket, StorageError> {
        let found = match key.token {
            Some(TokenRead::Refresh(_)) => {
                self.batched(|reads| &reads.clients_with_refresh_tokens, key)
                    .await?
            }
            _ => {
                self.batched(|reads| &reads.clients_with_buckets, key)
                    .await?
            }
        };
        Ok(found.unwrap_or_default())
    }

    async fn batched<L: Lookup>(&self, pick: fn(&Reads) -> &Batcher<L>, key: L::Key) -> Answer<L> {
        let queue = pick(&self.reads)
            .0
            .get_or_init(|| self.spawn_readers::<L>());
        let (reply, answer) = oneshot::channel();
        match queue.send(Job { key, reply }).await {
            Ok(()) => answer
                .await
                .unwrap_or(Err(StorageError::Database(sqlx::Error::WorkerCrashed))),
            // The readers are gone (their runtime shut down): read it here, alone.
            Err(mpsc::error::SendError(job)) => {
                let keys = [job.key];
                let mut found = self.hot_read(&keys[..], L::read).await?;
                Ok(found.pop().flatten())
            }
        }
    }

    fn spawn_readers<L: Lookup>(&self) -> mpsc::Sender<Job<L>> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        // The readers' own handle: no queues and no kept connections of its own (it borrows
        // this storage's for each batch, through `home`), so it keeps neither alive.
        let base = self.detached(Arc::new(HotRepositories::new(0)));
        for _ in 0..L::READERS {
            tokio::spawn(run::<L>(
                receiver.clone(),
                Arc::downgrade(&self.hot),
                base.clone(),
            ));
        }
        sender
    }
}

/// One reader: gathers what is queued (at most [`MAX_BATCH`] keys), reads it in one statement
/// on a kept connection of `home` (once more on a pooled one if that fails), answers each
/// request; until the queue closes.
async fn run<L: Lookup>(
    queue: Arc<Mutex<mpsc::Receiver<Job<L>>>>,
    home: Weak<HotRepositories>,
    base: Storage,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        // The lock is held only while gathering, so with more than one reader the next gathers
        // while this one reads.
        if queue.lock().await.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let (keys, replies): (Vec<L::Key>, Vec<_>) =
            jobs.drain(..).map(|job| (job.key, job.reply)).unzip();
        let read = match home.upgrade() {
            Some(hot) => base.detached(hot).hot_read(&keys[..], L::read).await,
            // Every handle is gone but queued requests remain: read on the pool.
            None => base.hot_read(&keys[..], L::read).await,
        };
        answer::<L>(replies, read);
    }
}

/// Sends each request its own entry of a batch's answer, or the batch's error.
fn answer<L: Lookup>(
    replies: Vec<oneshot::Sender<Answer<L>>>,
    read: Result<Vec<Option<L::Value>>, StorageError>,
) {
    match read {
        Ok(found) if found.len() == replies.len() => {
            for (reply, found) in replies.into_iter().zip(found) {
                // A request that went away meanwhile needs no answer.
                let _ = reply.send(Ok(found));
            }
        }
        Ok(found) => {
            let error = StorageError::Invalid(format!(
                "a batched read answered {} of {} keys",
                found.len(),
                replies.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(same_error(&error)));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(same_error(&error)));
            }
        }
    }
}
