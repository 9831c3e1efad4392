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

use std::time::Duration;

use async_trait::async_trait;

use super::{delete_batch, for_each_backend, StorageError};
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
