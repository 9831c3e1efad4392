//! Rate-limit buckets: one row per limit and key, spent and refilled by GCRA (the arithmetic,
//! and the reasons for it, are in `provider::core::rate_limit`; [`Quota::spend`] is the pure function
//! the `UPSERT` below computes).
//!
//! # Atomicity
//!
//! A spend is one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE … RETURNING` statement run on
//! its own (autocommit), never inside a request's transaction:
//!
//! - PostgreSQL: the upsert either inserts the row or locks the existing one and evaluates the
//!   `SET` and the `WHERE` on its latest committed version, even under READ COMMITTED; a
//!   concurrent spend of the same key waits for that lock and then reads the row as the first
//!   one left it. So N replicas spending one key at once are serialised on that row and never
//!   grant more than the bucket holds. The lock is held for one statement only (the table is
//!   `UNLOGGED`, so the commit doesn't wait for a WAL flush either; see the migration).
//! - SQLite: one writer at a time; the statement runs under the database's write lock.
//!
//! A refused spend changes nothing (the `WHERE` of `DO UPDATE` is false, so no row is returned);
//! a second statement then reads the bucket to say how long to wait. That read may see a later
//! state than the refusal did: it only sizes the `Retry-After`.
//!
//! # Spends of concurrent requests: one statement
//!
//! The requests' spends go through [`Storage::spend`], which queues them for a group-commit
//! writer (`token_writer`): a batch of spends is one call of
//! [`RateLimitRepository::spend_many`] instead of one statement and one commit per request.
//! Each unit of a batch is spent exactly as a lone spend at that moment would have spent it:
//!
//! - PostgreSQL: ONE statement whatever the batch's size ([`SPEND_MANY_SQL`]): it locks each
//!   bucket of the batch (in key order, so two batches never wait for each other in a cycle),
//!   grants each key the units GCRA lets through from the TAT it locked, writes the new TATs
//!   and answers the locked TATs; the units are then told their outcome, in the batch's order,
//!   by [`Quota::spend`] itself. Concurrent batches and lone spends (other writers, other
//!   replicas) wait for the row locks as lone spends do.
//! - SQLite (one writer at a time): a small batch runs the lone statement per spend, a larger
//!   one a transaction of two statements (read every bucket, write the new TATs), the units
//!   spent by [`Quota::spend`] in between.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;

use super::{
    delete_batch, for_each_backend,
    token_writer::{in_own_transaction, is_per_item, write_one, WriteBatch},
    Storage, StorageError,
};
use domain::rate_limit::Quota;

/// The outcome of spending one unit of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Granted,
    /// The bucket is empty; one unit is back after `retry_after`.
    Refused {
        retry_after: Duration,
    },
}

#[async_trait]
pub trait RateLimitRepository: Send {
    /// Spends one unit of the bucket `key` at the clock's current time, refilled at `quota`'s
    /// rate up to its burst (GCRA, [`Quota::spend`]), in one statement. A missing bucket is a
    /// full one. `key` is stored as given: callers pass a bounded, non-identifying key
    /// (see [`domain::rate_limit::bucket_key`]).
    async fn spend(&mut self, key: &str, quota: Quota) -> Result<Spend, StorageError>;

    /// Spends one unit per item, in their order (a key may come several times), each exactly as
    /// [`RateLimitRepository::spend`] would one after the other at the clock's current time,
    /// committed together (PostgreSQL: one statement; SQLite: a transaction of its own; see
    /// the module): call it on a plain connection ([`Storage::reader`], [`Storage::hot_read`]),
    /// never inside a transaction.
    async fn spend_many(&mut self, items: &[BatchedSpend]) -> Result<Vec<Spend>, StorageError>;

    /// Gives back one unit that [`RateLimitRepository::spend`] took (an attempt that turned out
    /// not to count, such as a sign-in with the right password). Nothing when there is no
    /// bucket. The bucket never holds more than its burst afterwards: a bucket is full from
    /// `tat` ≤ now on, however far back `tat` goes.
    async fn refund(&mut self, key: &str, quota: Quota) -> Result<(), StorageError>;

    /// The bucket's TAT (microseconds since the Unix epoch), without spending: `None` when there
    /// is no bucket (a full one). [`Quota::spend`] of it tells whether a spend would pass.
    async fn peek(&mut self, key: &str) -> Result<Option<i64>, StorageError>;

    /// Keeps the row `key` until `until` (microseconds since the Unix epoch) at least: a marker
    /// rather than a bucket (such as "this account signed in from this address"), deleted with
    /// the full buckets once `until` is past. Never moves an existing row's time back.
    async fn hold_until(&mut self, key: &str, until: i64) -> Result<(), StorageError>;

    /// Deletes up to `limit` full buckets (nothing spent that has not been refilled by now:
    /// the same as no row) and returns how many.
    async fn delete_full(&mut self, limit: u32) -> Result<u64, StorageError>;
}

/// One spend of a batch: a bucket's key and its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchedSpend {
    pub key: String,
    pub quota: Quota,
}

impl Storage {
    /// Spends one unit of the bucket `key` (see [`RateLimitRepository::spend`]), committed with
    /// the spends of the other requests of the moment (group commit: one statement on
    /// PostgreSQL, see the module). What the request gets is its own unit's outcome.
    pub async fn spend(&self, key: String, quota: Quota) -> Result<Spend, StorageError> {
        self.group_commit(
            |writers| &writers.spends,
            BatchedSpend { key, quota },
            |storage, items| Box::pin(spend_batch(storage, items)),
        )
        .await
    }
}

/// An item of a group-committed write (`token_writer`) that spends a unit of a rate limit
/// first: the token endpoint's per-client limit, spent by the writer that issues the tokens
/// ([`Storage::add_session_with_token`], [`Storage::rotate_refresh_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendFirst<I> {
    pub item: I,
    /// `None`: the limit is off; the item is written without a spend.
    pub spend: Option<BatchedSpend>,
}

/// What became of a [`SpendFirst`] item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent<T> {
    /// The unit was granted (or none was asked for), and this is what the write did.
    Done(T),
    /// The bucket was empty: nothing was written; one unit is back after `retry_after`.
    Refused { retry_after: Duration },
}

/// A group-committed write whose items each spend a unit first: the batch's units are spent
/// together ([`RateLimitRepository::spend_many`]: one statement on PostgreSQL), then the items
/// granted theirs (and those that ask for none) are written by `write` as one batch, and each
/// item is answered in order. A request waits on one writer's queue instead of two (issue 16:
/// each token went through the spends' queue, then the tokens'). A unit is spent whatever the
/// write then does (a refresh token found consumed meanwhile, say), as a unit spent before
/// the write was.
///
/// Each unit is spent once: when one item's row fails the batch's write (a constraint, see
/// `token_writer`), the granted items are written again one by one here, each answered with
/// its own outcome, rather than the whole batch (units included) going back to the group
/// commit's item-by-item retry. A failure of the database itself fails the batch.
pub(crate) async fn spend_then_write<I: Clone + Sync, T>(
    storage: &Storage,
    items: &[SpendFirst<I>],
    write: WriteBatch<I, T>,
) -> Result<Vec<Result<Spent<T>, StorageError>>, StorageError> {
    let spends: Vec<BatchedSpend> = items.iter().filter_map(|i| i.spend.clone()).collect();
    let mut spent = if spends.is_empty() {
        Vec::new()
    } else {
        spend_batch(storage, &spends).await?
    }
    .into_iter();
    let refused: Vec<Option<Duration>> = items
        .iter()
        .map(|i| match i.spend {
            Some(_) => match spent.next() {
                Some(Spend::Refused { retry_after }) => Some(retry_after),
                _ => None,
            },
            None => None,
        })
        .collect();
    let granted: Vec<I> = items
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| refused.is_none())
        .map(|(i, _)| i.item.clone())
        .collect();
    let mut written: std::vec::IntoIter<Result<T, StorageError>> = if granted.is_empty() {
        Vec::new()
    } else {
        match write(storage, &granted).await {
            Ok(rows) => rows.into_iter().map(Ok).collect(),
            Err(error) if granted.len() > 1 && is_per_item(&error) => {
                let mut rows = Vec::with_capacity(granted.len());
                for item in &granted {
                    rows.push(write_one(storage, item, write).await);
                }
                rows
            }
            Err(error) => return Err(error),
        }
    }
    .into_iter();
    Ok(refused
        .into_iter()
        .map(|refused| match refused {
            Some(retry_after) => Ok(Spent::Refused { retry_after }),
            None => written
                .next()
                .unwrap_or(Err(StorageError::NotFound("written row")))
                .map(Spent::Done),
        })
        .collect())
}

/// A batch of spends, on a kept connection ([`Storage::hot_read`]: no pool pings), by
/// [`RateLimitRepository::spend_many`]: one statement on PostgreSQL whatever the batch's size.
/// Spends may run twice when a kept connection fails (see `hot_read`): a unit spent twice only
/// makes the limit a little stricter.
async fn spend_batch(
    storage: &Storage,
    items: &[BatchedSpend],
) -> Result<Vec<Spend>, StorageError> {
    storage
        .hot_read(items, |repo, items| repo.rate_limits().spend_many(items))
        .await
}

/// Microseconds since the Unix epoch: how bucket times are stored.
fn micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl RateLimitRepository for $repo {
            async fn spend(&mut self, key: &str, quota: Quota) -> Result<Spend, StorageError> {
                let now = micros(self.entropy.clock.now());
                // [`Quota::spend`] in SQL: the new TAT is max(tat, now) + interval; it is kept
                // when it runs at most `tolerance` ahead of now. A new row starts from a full
                // bucket (burst ≥ 1, so its first unit is always granted).
                let granted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO rate_limits (key, tat) VALUES ($1, $2 + $3) \
                     ON CONFLICT (key) DO UPDATE \
                       SET tat = (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END) + $3 \
                       WHERE (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END) + $3 \
                         <= $2 + $4 \
                     RETURNING tat",
                )
                .bind(key)
                .bind(now)
                .bind(quota.interval_micros())
                .bind(quota.tolerance_micros())
                .fetch_optional(self.conn())
                .await?;
                if granted.is_some() {
                    return Ok(Spend::Granted);
                }
                let tat: Option<i64> =
                    sqlx::query_scalar("SELECT tat FROM rate_limits WHERE key = $1")
                        .bind(key)
                        .fetch_optional(self.conn())
                        .await?;
                Ok(match quota.spend(tat, now) {
                    // Refilled (or cleaned up) between the two statements: a retry works now.
                    Ok(_) => Spend::Refused {
                        retry_after: Duration::ZERO,
                    },
                    Err(wait) => Spend::Refused {
                        retry_after: Duration::from_micros(wait),
                    },
                })
            }

            async fn spend_many(
                &mut self,
                items: &[BatchedSpend],
            ) -> Result<Vec<Spend>, StorageError> {
                if items.is_empty() {
                    return Ok(Vec::new());
                }
                self.spend_batch(items).await
            }

            async fn refund(&mut self, key: &str, quota: Quota) -> Result<(), StorageError> {
                sqlx::query("UPDATE rate_limits SET tat = tat - $2 WHERE key = $1")
                    .bind(key)
                    .bind(quota.interval_micros())
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn peek(&mut self, key: &str) -> Result<Option<i64>, StorageError> {
                Ok(
                    sqlx::query_scalar("SELECT tat FROM rate_limits WHERE key = $1")
                        .bind(key)
                        .fetch_optional(self.conn())
                        .await?,
                )
            }

            async fn hold_until(&mut self, key: &str, until: i64) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO rate_limits (key, tat) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE \
                       SET tat = (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END)",
                )
                .bind(key)
                .bind(until)
                .execute(self.conn())
                .await?;
                Ok(())
            }

            async fn delete_full(&mut self, limit: u32) -> Result<u64, StorageError> {
                // A bucket spent meanwhile is kept (see [`delete_batch`]).
                let now = micros(self.entropy.clock.now());
                delete_batch!(self, "rate_limits", "key", "tat <= $1", now, limit)
            }
        }
    };
}

for_each_backend!(implementation);

/// Each item's outcome, from the TATs its keys had when the batch locked them (`None`: no
/// bucket): the units in the batch's order, each spent by [`Quota::spend`] itself, exactly as
/// lone spends one after the other at `now` would. `tats` ends with each key's new TAT.
fn replay<'a>(
    items: &'a [BatchedSpend],
    tats: &mut HashMap<&'a str, Option<i64>>,
    now: i64,
) -> Vec<Spend> {
    items
        .iter()
        .map(|item| {
            let tat = tats.entry(item.key.as_str()).or_insert(None);
            match item.quota.spend(*tat, now) {
                Ok(new_tat) => {
                    *tat = Some(new_tat);
                    Spend::Granted
                }
                Err(wait) => Spend::Refused {
                    retry_after: Duration::from_micros(wait),
                },
            }
        })
        .collect()
}

/// [`RateLimitRepository::spend_many`] on PostgreSQL, as ONE statement (no `BEGIN`, no
/// `COMMIT`; issue 16: a request that spends one unit paid a statement and a commit of its own,
/// and a batch's transaction four round trips). Parameters: `$1` the batch's distinct keys in
/// key order, `$2` how many units each is asked for, `$3` its quota's interval and `$4` its
/// tolerance (microseconds), `$5` now.
///
/// - `old` locks each existing bucket (`FOR UPDATE`, in key order: two batches never wait for
///   each other in a cycle) and reads its TAT. Under READ COMMITTED a locked row is its latest
///   version, whatever the statement's snapshot: a concurrent spend is waited for, then seen.
/// - `g` grants each key the units GCRA lets through, all at once: from `base` = max(TAT, now)
///   (a missing bucket is full: `base` = now), unit `j` passes while `base + j × interval ≤ now
///   + tolerance`, so `k` = min(asked, ⌊(now + tolerance − base) / interval⌋), at least 0. One
///   unit refused means every later unit of the key is refused too (same quota, same now), so
///   these are exactly the units [`Quota::spend`] grants one after the other ([`replay`]).
/// - `up` writes `base + k × interval` for each key granted something: the row locked above,
///   or a new bucket. A bucket another transaction created after `old` looked (the only row
///   `old` could not lock) is left alone (the conflict's `WHERE` compares with the TAT `old`
///   read, NULL for no row): the key answers `written = false` and the caller spends its units
///   again, now that the bucket exists to be locked.
///
/// Each key is one index step (`LIMIT 1` lateral on the key, the upsert's arbiter index): the
/// plan can't turn into a scan of the table (see `batch.rs`, "Plans made on empty tables").
/// The answer is each key's TAT under the lock, how many units it granted, and whether it wrote.
#[doc(hidden)]
pub const SPEND_MANY_SQL: &str = "WITH q AS (\
       SELECT * FROM unnest((SELECT $1::text[]), (SELECT $2::int[]), (SELECT $3::bigint[]), \
         (SELECT $4::bigint[])) AS q(key, n, step, tolerance)), \
     old AS (\
       SELECT q.key, q.n, q.step, q.tolerance, b.tat FROM q LEFT JOIN LATERAL \
         (SELECT tat FROM rate_limits WHERE key = q.key LIMIT 1 FOR UPDATE) b ON true), \
     g AS (\
       SELECT key, tat, GREATEST(tat, $5) AS base, step, \
         GREATEST(LEAST(n, ($5 + tolerance - GREATEST(tat, $5)) / step), 0) AS k FROM old), \
     up AS (\
       INSERT INTO rate_limits (key, tat) SELECT key, base + k * step FROM g WHERE k > 0 \
       ON CONFLICT (key) DO UPDATE SET tat = excluded.tat \
         WHERE rate_limits.tat = (SELECT o.tat FROM g o WHERE o.key = excluded.key) \
       RETURNING key) \
     SELECT g.key, g.tat, g.k, EXISTS (SELECT 1 FROM up WHERE up.key = g.key) FROM g";

/// How many times the keys of a batch whose bucket another transaction created meanwhile are
/// spent again by [`SPEND_MANY_SQL`] (the second time finds the bucket and locks it); then they
/// are spent alone.
const SPEND_ATTEMPTS: usize = 3;

impl super::PgRepository {
    async fn spend_batch(&mut self, items: &[BatchedSpend]) -> Result<Vec<Spend>, StorageError> {
        use std::collections::BTreeMap;
        // Each key's quota and how many units it is asked for. A key names its limit, and a
        // limit has one quota; a batch that breaks that (nothing does) is spent unit by unit.
        let mut asked: BTreeMap<&str, (Quota, i32)> = BTreeMap::new();
        for item in items {
            let entry = asked.entry(item.key.as_str()).or_insert((item.quota, 0));
            if entry.0 != item.quota {
                return self.spend_alone(items).await;
            }
            entry.1 += 1;
        }
        let now = micros(self.entropy.clock.now());
        let mut tats: HashMap<&str, Option<i64>> = HashMap::with_capacity(asked.len());
        for _ in 0..SPEND_ATTEMPTS {
            if asked.is_empty() {
                break;
            }
            let keys: Vec<&str> = asked.keys().copied().collect();
            let counts: Vec<i32> = asked.values().map(|(_, n)| *n).collect();
            let steps: Vec<i64> = asked.values().map(|(q, _)| q.interval_micros()).collect();
            let tolerances: Vec<i64> = asked.values().map(|(q, _)| q.tolerance_micros()).collect();
            let rows: Vec<(String, Option<i64>, i64, bool)> = sqlx::query_as(SPEND_MANY_SQL)
                .bind(&keys)
                .bind(counts)
                .bind(steps)
                .bind(tolerances)
                .bind(now)
                .fetch_all(self.conn())
                .await?;
            for (key, tat, granted, written) in rows {
                let Some((&key, _)) = asked.get_key_value(key.as_str()) else {
                    continue;
                };
                if granted > 0 && !written {
                    // A bucket created meanwhile: spent again below.
                    continue;
                }
                asked.remove(key);
                tats.insert(key, tat);
            }
        }
        if !asked.is_empty() {
            // Still racing with bucket creations after every attempt: the lone statement.
            return self.spend_alone(items).await;
        }
        Ok(replay(items, &mut tats, now))
    }
}

impl super::SqliteRepository {
    /// SQLite runs one writer at a time: a small batch is the lone statement per spend, a
    /// larger one a transaction of two statements (locking nothing more than the database's
    /// write lock already does).
    async fn spend_batch(&mut self, items: &[BatchedSpend]) -> Result<Vec<Spend>, StorageError> {
        /// Below this many spends, a transaction (`BEGIN`, two statements, `COMMIT`) costs
        /// more than the lone statements.
        const SPENDS_WORTH_A_TRANSACTION: usize = 4;
        if items.len() < SPENDS_WORTH_A_TRANSACTION {
            return self.spend_alone(items).await;
        }
        in_own_transaction!(self, {
            let now = micros(self.entropy.clock.now());
            let mut keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            // Reads each bucket's TAT; a missing bucket is made full (`tat` = now:
            // [`Quota::spend`] treats it as no bucket).
            let mut lock = sqlx::QueryBuilder::new("INSERT INTO rate_limits (key, tat) ");
            lock.push_values(&keys, |mut row, key| {
                row.push_bind(*key).push_bind(now);
            });
            lock.push(" ON CONFLICT (key) DO UPDATE SET tat = rate_limits.tat RETURNING key, tat");
            let locked: Vec<(String, i64)> = lock.build_query_as().fetch_all(self.conn()).await?;
            let mut tats: HashMap<&str, Option<i64>> = locked
                .iter()
                .map(|(key, tat)| (key.as_str(), Some(*tat)))
                .collect();
            let spent = replay(items, &mut tats, now);
            // The buckets a unit was granted from: their TAT moved.
            let written: Vec<(&str, i64)> = locked
                .iter()
                .filter_map(|(key, tat)| match tats.get(key.as_str()) {
                    Some(&Some(new)) if new != *tat => Some((key.as_str(), new)),
                    _ => None,
                })
                .collect();
            if !written.is_empty() {
                let mut write = sqlx::QueryBuilder::new("INSERT INTO rate_limits (key, tat) ");
                write.push_values(&written, |mut row, (key, tat)| {
                    row.push_bind(*key).push_bind(*tat);
                });
                write.push(" ON CONFLICT (key) DO UPDATE SET tat = excluded.tat");
                write.build().execute(self.conn()).await?;
            }
            Ok(spent)
        })
    }
}

impl<DB: sqlx::Database> super::SqlRepository<DB>
where
    Self: RateLimitRepository,
{
    /// Each item as the lone statement ([`RateLimitRepository::spend`]), one after the other.
    async fn spend_alone(&mut self, items: &[BatchedSpend]) -> Result<Vec<Spend>, StorageError> {
        let mut spent = Vec::with_capacity(items.len());
        for item in items {
            spent.push(self.spend(&item.key, item.quota).await?);
        }
        Ok(spent)
    }
}
