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
//! # Spends of concurrent requests: one transaction
//!
//! The requests' spends go through [`Storage::spend`], which queues them for a group-commit
//! writer (`token_writer`): a batch of spends is one transaction of two statements whatever its
//! size ([`RateLimitRepository::spend_many`]), instead of one statement and one transaction per
//! request (a batch smaller than that is worth runs each spend as the lone statement). The first statement locks every bucket of the batch (an upsert that creates a
//! missing bucket full, `tat` = now, and returns each `tat`; in key order, so two batches never
//! wait for each other in a cycle); the units are then spent one after the other, in the
//! batch's order, by [`Quota::spend`] itself; the second statement writes the new `tat`s, and
//! the commit releases the locks. So each unit is spent exactly as a lone spend at that moment
//! would have spent it, and concurrent batches (other writers, other replicas) wait for the
//! locks as lone spends do.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;

use super::{
    delete_batch, for_each_backend, token_writer::in_own_transaction, Storage, StorageError,
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
    /// [`RateLimitRepository::spend`] would one after the other at the clock's current time, in
    /// a transaction of its own of two statements (see the module): call it on a plain
    /// connection ([`Storage::reader`], [`Storage::hot_read`]), never inside a transaction.
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
    /// Spends one unit of the bucket `key` (see [`RateLimitRepository::spend`]), committed in a
    /// transaction shared with the spends of the other requests of the moment (group commit:
    /// see the module). What the request gets is its own unit's outcome.
    pub async fn spend(&self, key: String, quota: Quota) -> Result<Spend, StorageError> {
        self.group_commit(
            |writers| &writers.spends,
            BatchedSpend { key, quota },
            |storage, items| Box::pin(spend_batch(storage, items)),
        )
        .await
    }
}

/// Below this many spends a batch runs them as the lone statement each (one round trip
/// apiece); from it on, the batch's own transaction costs less (`BEGIN`, two statements,
/// `COMMIT`: four round trips, whatever the batch's size).
const SPENDS_WORTH_A_TRANSACTION: usize = 4;

/// A batch of spends, on a kept connection ([`Storage::hot_read`]: no pool pings): the lone
/// statement per spend for a small batch (an idle server pays what it paid before), else
/// [`RateLimitRepository::spend_many`]. Spends may run twice when a kept connection fails
/// (see `hot_read`): a unit spent twice only makes the limit a little stricter.
async fn spend_batch(
    storage: &Storage,
    items: &[BatchedSpend],
) -> Result<Vec<Spend>, StorageError> {
    if items.len() < SPENDS_WORTH_A_TRANSACTION {
        let mut spent = Vec::with_capacity(items.len());
        for item in items {
            spent.push(
                storage
                    .hot_read(item, |repo, item| {
                        repo.rate_limits().spend(&item.key, item.quota)
                    })
                    .await?,
            );
        }
        return Ok(spent);
    }
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
                in_own_transaction!(self, {
                    let now = micros(self.entropy.clock.now());
                    let mut keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
                    keys.sort_unstable();
                    keys.dedup();
                    // Locks each bucket (in key order) and reads its TAT; a missing bucket is made
                    // full (`tat` = now: [`Quota::spend`] treats it as no bucket). `DO UPDATE`, not
                    // `DO NOTHING`: only an update locks an existing row and returns it.
                    let mut lock = sqlx::QueryBuilder::new("INSERT INTO rate_limits (key, tat) ");
                    lock.push_values(&keys, |mut row, key| {
                        row.push_bind(*key).push_bind(now);
                    });
                    lock.push(" ON CONFLICT (key) DO UPDATE SET tat = rate_limits.tat RETURNING key, tat");
                    let locked: Vec<(String, i64)> =
                        lock.build_query_as().fetch_all(self.conn()).await?;
                    let mut tats: HashMap<String, (i64, bool)> = locked
                        .into_iter()
                        .map(|(key, tat)| (key, (tat, false)))
                        .collect();
                    // Each unit in turn, by the pure function (the same arithmetic as the lone
                    // statement of `spend`).
                    let mut spent = Vec::with_capacity(items.len());
                    for item in items {
                        let (tat, changed) = tats
                            .get_mut(&item.key)
                            .ok_or(StorageError::NotFound("rate-limit bucket"))?;
                        spent.push(match item.quota.spend(Some(*tat), now) {
                            Ok(new_tat) => {
                                *tat = new_tat;
                                *changed = true;
                                Spend::Granted
                            }
                            Err(wait) => Spend::Refused {
                                retry_after: Duration::from_micros(wait),
                            },
                        });
                    }
                    let changed: Vec<(&String, i64)> = tats
                        .iter()
                        .filter(|(_, (_, changed))| *changed)
                        .map(|(key, (tat, _))| (key, *tat))
                        .collect();
                    if !changed.is_empty() {
                        let mut write = sqlx::QueryBuilder::new("INSERT INTO rate_limits (key, tat) ");
                        write.push_values(&changed, |mut row, (key, tat)| {
                            row.push_bind(key.as_str()).push_bind(*tat);
                        });
                        write.push(" ON CONFLICT (key) DO UPDATE SET tat = excluded.tat");
                        write.build().execute(self.conn()).await?;
                    }
                    Ok(spent)
                })
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
