//! The durable job queue (homeserver provisioning, mail, cleanup), retried with backoff.
//!
//! # State machine
//!
//! ```text
//! enqueue ──► pending ──── claim ───► held ──── complete ─────────► completed
//!              ▲   ▲                  │ │ │
//!              │   └─ fail (retry) ───┘ │ └─── fail (last attempt) ──► failed
//!              └──── lock expires ──────┘
//! ```
//!
//! - **pending**: `completed_at` and `failed_at` are NULL and no worker holds it (`locked_until`
//!   is NULL or in the past). It is *due* once `run_at` ≤ now.
//! - **held**: [`JobRepository::claim`] gave it to a worker: `locked_by` is that worker,
//!   `locked_until` the end of its lock. Claims never return a job held by a lock that has not
//!   expired; once the lock expires (the worker died or hangs) the job may be claimed again, by
//!   any worker. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so concurrent workers never
//!   get the same job; SQLite serialises claims through its single writer.
//! - **completed** ([`JobRepository::complete`]) and **failed** ([`JobRepository::fail`] on the
//!   last attempt) are final.
//!
//! `attempts` counts failed runs: [`JobRepository::fail`] increments it, records `last_error`
//! and either reschedules the job to the `retry_at` the caller computed (its backoff) or, when
//! `attempts` reaches `max_attempts`, marks it failed. A run whose lock expired without
//! `complete` or `fail` (a crashed worker) does not count as an attempt. Only the worker holding
//! a job (the last one that claimed it) may complete or fail it; that stays true after its lock
//! expires, until another worker claims the job. `locked_by` keeps the last worker after the
//! job ends, for the record.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sqlx::types::Json;
use ulid::Ulid;

use super::{
    compare_and_set, delete_batch, for_each_backend, row_exists,
    types::{db_precision, DbId, Ts},
    Dialect, StorageError,
};

/// A job of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: Ulid,
    /// Which queue (kind of work) it belongs to, e.g. `provision-user`.
    pub queue: String,
    /// What to do, as JSON.
    pub payload: serde_json::Value,
    /// Failed runs so far.
    pub attempts: i32,
    /// After this many failed runs the job is failed for good.
    pub max_attempts: i32,
    /// Not to be run before.
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The worker that claimed it last.
    pub locked_by: Option<String>,
    /// While this is in the future the worker in `locked_by` holds the job.
    pub locked_until: Option<DateTime<Utc>>,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Where a job stands at some instant (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for `run_at` or for a worker.
    Pending,
    /// A worker holds it (its lock has not expired).
    Held,
    Completed,
    Failed,
}

impl Job {
    /// The job's state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> JobState {
        if self.completed_at.is_some() {
            JobState::Completed
        } else if self.failed_at.is_some() {
            JobState::Failed
        } else if self.locked_until.is_some_and(|until| until > now) {
            JobState::Held
        } else {
            JobState::Pending
        }
    }
}

#[async_trait]
pub trait JobRepository: Send {
    /// Adds a pending job to `queue`, due at `run_at` (stored at millisecond precision).
    /// [`StorageError::Invalid`] when `max_attempts` is below 1.
    async fn enqueue(
        &mut self,
        queue: &str,
        payload: &serde_json::Value,
        max_attempts: i32,
        run_at: DateTime<Utc>,
    ) -> Result<Job, StorageError>;

    /// A job by id, whatever its state.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<Job>, StorageError>;

    /// Gives `worker` up to `limit` due jobs of the given queues (pending, `run_at` ≤ now, not
    /// held by an unexpired lock), held until now + `lock_for`. Earliest `run_at` first (then by
    /// id). Concurrent callers never get the same job.
    async fn claim(
        &mut self,
        worker: &str,
        queues: &[&str],
        limit: u32,
        lock_for: Duration,
    ) -> Result<Vec<Job>, StorageError>;

    /// Gives `worker` this one job, held until now + `lock_for`, when it is pending (not
    /// ended, not held by an unexpired lock), whether or not it is due yet: for running a job
    /// right after the transaction that enqueued it commits. `None` when it is not pending.
    async fn claim_one(
        &mut self,
        id: Ulid,
        worker: &str,
        lock_for: Duration,
    ) -> Result<Option<Job>, StorageError>;

    /// Marks a job done (compare-and-set): `true` when `worker` held it and it is now
    /// completed, `false` when `worker` does not hold it (another worker claimed it since, or
    /// it already ended); [`StorageError::NotFound`] when there is no such job.
    async fn complete(&mut self, id: Ulid, worker: &str) -> Result<bool, StorageError>;

    /// Records a failed run by `worker` (compare-and-set, like [`JobRepository::complete`]):
    /// increments `attempts`, sets `last_error` and releases the lock; then, when `attempts`
    /// reached `max_attempts`, marks the job failed, else reschedules it to `retry_at` (stored
    /// at millisecond precision). Returns the job as it is now, or `None` when `worker` does not
    /// hold it; [`StorageError::NotFound`] when there is no such job.
    async fn fail(
        &mut self,
        id: Ulid,
        worker: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<Option<Job>, StorageError>;

    /// How many jobs are neither completed nor failed (due, scheduled later or held), in one
    /// queue or in all (`None`).
    async fn count_pending(&mut self, queue: Option<&str>) -> Result<u64, StorageError>;

    /// Records, as of now, that the user's device is being upserted on the homeserver (a token
    /// exchange, before its call): the homeserver jobs that delete devices leave it alone while
    /// the mark is fresh ([`Self::devices_in_provisioning`]). Commit it before the call. Marking
    /// a marked device again moves its time to now.
    async fn mark_device_provisioning(
        &mut self,
        user_id: Ulid,
        device_id: &str,
    ) -> Result<(), StorageError>;

    /// Removes the mark of [`Self::mark_device_provisioning`], in the transaction that gives the
    /// device its session. `true` when there was one.
    async fn clear_device_provisioning(
        &mut self,
        user_id: Ulid,
        device_id: &str,
    ) -> Result<bool, StorageError>;

    /// The user's devices marked by [`Self::mark_device_provisioning`] at or after `since`.
    async fn devices_in_provisioning(
        &mut self,
        user_id: Ulid,
        since: DateTime<Utc>,
    ) -> Result<BTreeSet<String>, StorageError>;

    /// Deletes up to `limit` marks made before `before` (left by exchanges that died or gave
    /// up; too old to count) and returns how many.
    async fn delete_stale_device_provisioning(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: DbId,
    queue: String,
    payload: Json<serde_json::Value>,
    attempts: i32,
    max_attempts: i32,
    run_at: Ts,
    created_at: Ts,
    locked_by: Option<String>,
    locked_until: Option<Ts>,
    last_error: Option<String>,
    completed_at: Option<Ts>,
    failed_at: Option<Ts>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Self {
            id: r.id.0,
            queue: r.queue,
            payload: r.payload.0,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_at: r.run_at.0,
            created_at: r.created_at.0,
            locked_by: r.locked_by,
            locked_until: r.locked_until.map(Into::into),
            last_error: r.last_error,
            completed_at: r.completed_at.map(Into::into),
            failed_at: r.failed_at.map(Into::into),
        }
    }
}

macro_rules! job_columns {
    () => {
        "id, queue, payload, attempts, max_attempts, run_at, created_at, locked_by, \
         locked_until, last_error, completed_at, failed_at"
    };
}

/// The condition "`$2` holds the job `$1`": the last to claim it, and it has not ended.
macro_rules! held_by_worker {
    () => {
        "id = $1 AND locked_by = $2 AND locked_until IS NOT NULL \
         AND completed_at IS NULL AND failed_at IS NULL"
    };
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl JobRepository for $repo {
            async fn enqueue(
                &mut self,
                queue: &str,
                payload: &serde_json::Value,
                max_attempts: i32,
                run_at: DateTime<Utc>,
            ) -> Result<Job, StorageError> {
                if max_attempts < 1 {
                    return Err(StorageError::Invalid(format!(
                        "a job needs max_attempts ≥ 1, got {max_attempts}"
                    )));
                }
                let job = Job {
                    id: self.new_id(),
                    queue: queue.to_owned(),
                    payload: payload.clone(),
                    attempts: 0,
                    max_attempts,
                    run_at: db_precision(run_at),
                    created_at: self.now(),
                    locked_by: None,
                    locked_until: None,
                    last_error: None,
                    completed_at: None,
                    failed_at: None,
                };
                sqlx::query(
                    "INSERT INTO jobs (id, queue, payload, attempts, max_attempts, run_at, \
                       created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(DbId(job.id))
                .bind(&job.queue)
                .bind(Json(payload))
                .bind(job.attempts)
                .bind(max_attempts)
                .bind(Ts(job.run_at))
                .bind(Ts(job.created_at))
                .execute(self.conn())
                .await?;
                Ok(job)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<Job>, StorageError> {
                let row: Option<JobRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn claim(
                &mut self,
                worker: &str,
                queues: &[&str],
                limit: u32,
                lock_for: Duration,
            ) -> Result<Vec<Job>, StorageError> {
                if queues.is_empty() || limit == 0 {
                    return Ok(Vec::new());
                }
                let now = self.now();
                let locked_until = db_precision(now + lock_for);
                // One placeholder per queue name, after the four fixed parameters.
                let queue_params = (0..queues.len())
                    .map(|i| format!("${}", i + 5))
                    .collect::<Vec<_>>()
                    .join(", ");
                // The subquery picks (and, on PostgreSQL, row-locks, skipping rows another
                // transaction is claiming) the due jobs; the UPDATE takes them.
                let sql = format!(
                    concat!(
                        "UPDATE jobs SET locked_by = $1, locked_until = $2 WHERE id IN (\
                           SELECT id FROM jobs \
                           WHERE completed_at IS NULL AND failed_at IS NULL \
                             AND run_at <= $3 \
                             AND (locked_until IS NULL OR locked_until <= $3) \
                             AND queue IN ({queues}) \
                           ORDER BY run_at, id LIMIT $4 {lock}\
                         ) RETURNING ",
                        job_columns!()
                    ),
                    queues = queue_params,
                    lock = <$repo as Dialect>::LOCK_SKIP_LOCKED,
                );
                let mut query = sqlx::query_as::<_, JobRow>(&sql)
                    .bind(worker)
                    .bind(Ts(locked_until))
                    .bind(Ts(now))
                    .bind(i64::from(limit));
                for queue in queues {
                    query = query.bind(*queue);
                }
                let rows = query.fetch_all(self.conn()).await?;
                let mut jobs: Vec<Job> = rows.into_iter().map(Into::into).collect();
                // RETURNING gives no order.
                jobs.sort_by(|a, b| (a.run_at, a.id).cmp(&(b.run_at, b.id)));
                Ok(jobs)
            }

            async fn claim_one(
                &mut self,
                id: Ulid,
                worker: &str,
                lock_for: Duration,
            ) -> Result<Option<Job>, StorageError> {
                let now = self.now();
                let row: Option<JobRow> = sqlx::query_as(concat!(
                    "UPDATE jobs SET locked_by = $2, locked_until = $3 \
                     WHERE id = $1 AND completed_at IS NULL AND failed_at IS NULL \
                       AND (locked_until IS NULL OR locked_until <= $4) \
                     RETURNING ",
                    job_columns!()
                ))
                .bind(DbId(id))
                .bind(worker)
                .bind(Ts(db_precision(now + lock_for)))
                .bind(Ts(now))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn complete(&mut self, id: Ulid, worker: &str) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(concat!(
                    "UPDATE jobs SET completed_at = $3, locked_until = NULL WHERE ",
                    held_by_worker!()
                ))
                .bind(DbId(id))
                .bind(worker)
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "jobs", id, "job")
            }

            async fn fail(
                &mut self,
                id: Ulid,
                worker: &str,
                error: &str,
                retry_at: DateTime<Utc>,
            ) -> Result<Option<Job>, StorageError> {
                let now = Ts(self.now());
                // Every right-hand side reads the row as it was before the update.
                let row: Option<JobRow> = sqlx::query_as(concat!(
                    "UPDATE jobs SET attempts = attempts + 1, last_error = $3, \
                       locked_until = NULL, \
                       run_at = CASE WHEN attempts + 1 >= max_attempts THEN run_at ELSE $4 END, \
                       failed_at = CASE WHEN attempts + 1 >= max_attempts THEN $5 ELSE NULL END \
                     WHERE ",
                    held_by_worker!(),
                    " RETURNING ",
                    job_columns!()
                ))
                .bind(DbId(id))
                .bind(worker)
                .bind(error)
                .bind(Ts(db_precision(retry_at)))
                .bind(now)
                .fetch_optional(self.conn())
                .await?;
                if let Some(row) = row {
                    return Ok(Some(row.into()));
                }
                // Not held by `worker` (the compare-and-set lost), or no such job.
                if row_exists!(self, "jobs", id) {
                    Ok(None)
                } else {
                    Err(StorageError::NotFound("job"))
                }
            }

            async fn count_pending(&mut self, queue: Option<&str>) -> Result<u64, StorageError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs \
                     WHERE completed_at IS NULL AND failed_at IS NULL \
                       AND ($1 IS NULL OR queue = $1)",
                )
                .bind(queue)
                .fetch_one(self.conn())
                .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn mark_device_provisioning(
                &mut self,
                user_id: Ulid,
                device_id: &str,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO devices_in_provisioning (user_id, device_id, started_at) \
                     VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET started_at = $3",
                )
                .bind(DbId(user_id))
                .bind(device_id)
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(())
            }

            async fn clear_device_provisioning(
                &mut self,
                user_id: Ulid,
                device_id: &str,
            ) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "DELETE FROM devices_in_provisioning WHERE user_id = $1 AND device_id = $2",
                )
                .bind(DbId(user_id))
                .bind(device_id)
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn devices_in_provisioning(
                &mut self,
                user_id: Ulid,
                since: DateTime<Utc>,
            ) -> Result<BTreeSet<String>, StorageError> {
                let devices: Vec<String> = sqlx::query_scalar(
                    "SELECT device_id FROM devices_in_provisioning \
                     WHERE user_id = $1 AND started_at >= $2",
                )
                .bind(DbId(user_id))
                .bind(Ts(since))
                .fetch_all(self.conn())
                .await?;
                Ok(devices.into_iter().collect())
            }

            async fn delete_stale_device_provisioning(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "devices_in_provisioning",
                    "user_id, device_id",
                    "started_at < $1",
                    Ts(before),
                    limit
                )
            }
        }
    };
}

for_each_backend!(implementation);
