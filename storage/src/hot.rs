//! Connections kept for the hot read paths (introspection, client lookups, rate-limit buckets),
//! without the pool's pings: [`Storage::hot_read`].
//!
//! sqlx 0.8 pings a pooled connection when it is acquired (`test_before_acquire`) and again when
//! it goes back (`PoolConnection::return_to_pool`, unconditionally): a read of one statement
//! costs three round trips to the database, each a send and a wake-up on both sides, and every
//! new repository seeds its random generator from the system. A repository here holds one of
//! the pool's connections (so `database.max_connections` still bounds them all), taken from it
//! once and then kept, between uses, in a small stack: a use costs its statements and nothing
//! else. At most half of `database.max_connections` are kept (none with one connection).
//!
//! A connection is kept again only after its read returned `Ok`. When the read failed (the
//! connection may be broken, e.g. the server restarted) or was cancelled (its future dropped
//! mid-query: the statement may still be running on the server, and the next use would first
//! wait for it), the connection goes back to the pool, which checks it or closes it, and the
//! read runs again on an ordinary pooled connection ([`Storage::reader`]).
//!
//! Taking a connection never waits: a kept one that is idle, else one the pool has idle
//! (`try_acquire`, no ping), else none and the caller reads through [`Storage::reader`] (which
//! waits, once, as every pooled read does).
//!
//! Nothing read is kept: every use queries the database, so a revocation is seen at once by
//! every replica.
//!
//! Plans: PostgreSQL plans a prepared statement once for every later execution on its
//! connection, from what it knew of the tables then. The pool renews its connections every
//! [`REPLAN_EVERY`] (`max_lifetime`, see `Storage::connect`); a kept connection, which never
//! goes back to the pool, would keep its plans for as long as the process runs, and a plan made
//! on a table of ten rows reads the whole table for each key once the table holds a million
//! (see `batch::ACTIVE_ACCESS_TOKENS_SQL`). So a kept connection forgets its statements every
//! [`REPLAN_EVERY`] after it was taken from the pool (by the injected clock), before its next read,
//! which plans them again from the tables of the day: a few prepares a minute.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use chrono::{DateTime, Duration, Utc};

use crate::{BoxRepository, Held, Pool, Storage, StorageError};

/// How long a kept connection uses the plans of its statements before planning them again
/// (see the module, "Plans").
pub const REPLAN_EVERY: Duration = Duration::seconds(60);

/// A kept repository and when its statements were last planned (prepared afresh).
type Kept = (BoxRepository, DateTime<Utc>);

/// A boxed `Send` future borrowing for `'a`: what a [`Storage::hot_read`] closure returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The kept repositories of a [`Storage`].
pub(crate) struct HotRepositories {
    idle: Mutex<Vec<Kept>>,
    /// Kept repositories, idle or lent.
    kept: AtomicUsize,
    limit: usize,
    /// Set by [`HotRepositories::close`]: nothing more is kept.
    closed: AtomicBool,
}

impl std::fmt::Debug for HotRepositories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotRepositories")
            .field("kept", &self.kept.load(Ordering::Relaxed))
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl HotRepositories {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::with_capacity(limit)),
            kept: AtomicUsize::new(0),
            limit,
            closed: AtomicBool::new(false),
        }
    }

    /// Gives every kept connection back to the pool and keeps no more ([`Storage::close`]
    /// waits for the pool's connections to come back).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = self.idle.lock().map(|mut idle| std::mem::take(&mut *idle));
        if let Ok(idle) = idle {
            self.kept.fetch_sub(idle.len(), Ordering::AcqRel);
        }
    }
}

/// A kept repository lent to one read. Dropped, it is given back to the pool (the read failed
/// or was cancelled: see the module); [`Lent::keep`] keeps it for the next read.
struct Lent {
    repo: Option<BoxRepository>,
    /// When its statements were last forgotten; for a connection new to the kept ones, when
    /// it was taken from the pool, whose connections live [`REPLAN_EVERY`].
    planned_at: DateTime<Utc>,
    home: Arc<HotRepositories>,
}

impl Lent {
    fn repo(&mut self) -> &mut BoxRepository {
        self.repo
            .as_mut()
            .expect("a lent repository holds its connection until kept or dropped")
    }

    /// Keeps the connection for the next read: its read returned `Ok`, so nothing is left
    /// running on it.
    fn keep(mut self) {
        let Some(repo) = self.repo.take() else { return };
        if !self.home.closed.load(Ordering::Acquire) {
            if let Ok(mut idle) = self.home.idle.lock() {
                idle.push((repo, self.planned_at));
                return;
            }
        }
        self.home.kept.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Not kept: the connection goes back to the pool with the repository.
        if self.repo.take().is_some() {
            self.home.kept.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Storage {
    /// Runs `read` on a kept connection (see the module: its statements and no pool pings
    /// around them), or on an ordinary pooled one when none is free at once, or again on a
    /// pooled one when the kept one failed (it may have been cut by a database restart since
    /// its last use). `read` may thus run twice: give it reads, or writes that may be repeated.
    /// Each statement commits on its own. `context` is lent to `read` (whatever it borrows
    /// from the caller), which returns a boxed future:
    ///
    /// ```ignore
    /// storage.hot_read(client_id, |repo, id| repo.clients().find_by_client_id(id)).await
    /// ```
    pub async fn hot_read<C, T, F>(&self, context: &C, mut read: F) -> Result<T, StorageError>
    where
        C: ?Sized + Sync,
        F: for<'r> FnMut(&'r mut BoxRepository, &'r C) -> BoxFuture<'r, Result<T, StorageError>>,
    {
        if let Some(mut lent) = self.lend_hot() {
            let now = self.entropy.clock.now();
            let replanned = if now - lent.planned_at >= REPLAN_EVERY {
                lent.planned_at = now;
                lent.repo().forget_statements().await
            } else {
                Ok(())
            };
            if replanned.is_ok() {
                if let Ok(value) = read(lent.repo(), context).await {
                    lent.keep();
                    return Ok(value);
                }
            }
            // Dropped: the connection goes back to the pool, which checks it.
        }
        read(&mut self.reader().await?, context).await
    }

    /// A kept repository, without waiting: an idle kept one, else a new one on a connection
    /// the pool has idle (while fewer than the limit are kept); `None` otherwise.
    fn lend_hot(&self) -> Option<Lent> {
        let home = &self.hot;
        if home.closed.load(Ordering::Acquire) {
            return None;
        }
        let idle = home.idle.lock().ok().and_then(|mut idle| idle.pop());
        let (repo, planned_at) = match idle {
            Some(kept) => kept,
            None => {
                home.kept
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < home.limit).then_some(n + 1)
                    })
                    .ok()?;
                // `try_acquire`: an idle connection of the pool or nothing, at once and without
                // the acquire ping (`acquire` may wait for the pool's acquire timeout).
                let acquired: Option<BoxRepository> = match &self.pool {
                    Pool::Postgres(pool) => pool
                        .try_acquire()
                        .map(|c| Box::new(self.repository(Held::Conn(c))) as BoxRepository),
                    Pool::Sqlite(pool) => pool
                        .try_acquire()
                        .map(|c| Box::new(self.repository(Held::Conn(c))) as BoxRepository),
                };
                match acquired {
                    Some(repo) => (repo, self.entropy.clock.now()),
                    None => {
                        home.kept.fetch_sub(1, Ordering::AcqRel);
                        return None;
                    }
                }
            }
        };
        Some(Lent {
            repo: Some(repo),
            planned_at,
            home: home.clone(),
        })
    }
}
