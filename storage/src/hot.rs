//! Repositories kept for the hot read paths (introspection, client lookups), without the pool's
//! pings.
//!
//! sqlx 0.8 pings a pooled connection when it is acquired (`test_before_acquire`) and again when
//! it goes back (`PoolConnection::return_to_pool`, unconditionally): a read of one statement
//! costs three round trips to the database, each a send and a wake-up on both sides, and every
//! new repository seeds its random generator from the system. A repository here holds one of
//! the pool's connections (so `database.max_connections` still bounds them all), taken from it
//! once and then kept, between uses, in a small stack: a use costs its statements and nothing
//! else. At most half of `database.max_connections` are kept (none with one connection); beyond
//! that, or when a kept connection fails (e.g. the server restarted), the caller reads on an
//! ordinary pooled connection ([`Storage::reader`]).
//!
//! Nothing read is kept: every use queries the database, so a revocation is seen at once by
//! every replica.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc, Mutex,
};

use crate::{BoxRepository, Held, Pool, Storage};

/// The kept repositories of a [`Storage`].
pub(crate) struct HotRepositories {
    idle: Mutex<Vec<BoxRepository>>,
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

/// A repository on a kept connection (see the module), from [`Storage::hot_reader`]: use it
/// through [`HotReader::repo`], each statement committing on its own; dropping it keeps it for
/// the next read. After an error, [`HotReader::discard`] it instead.
pub struct HotReader {
    repo: Option<BoxRepository>,
    home: Arc<HotRepositories>,
}

impl std::fmt::Debug for HotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotReader").finish_non_exhaustive()
    }
}

impl HotReader {
    pub fn repo(&mut self) -> &mut BoxRepository {
        self.repo
            .as_mut()
            .expect("a hot reader holds its repository until dropped")
    }

    /// Gives the connection back to the pool instead of keeping it (a use of it failed: it may
    /// be broken; the pool closes it if it is).
    pub fn discard(mut self) {
        if self.repo.take().is_some() {
            self.home.kept.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for HotReader {
    fn drop(&mut self) {
        let Some(repo) = self.repo.take() else { return };
        if !self.home.closed.load(Ordering::Acquire) {
            if let Ok(mut idle) = self.home.idle.lock() {
                idle.push(repo);
                return;
            }
        }
        self.home.kept.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Storage {
    /// A repository on a kept connection, for a hot read path: no pool pings around its
    /// statements (see the module). `None` when every kept one is in use (or none may be kept)
    /// or no connection can be had: use [`Storage::reader`] then. A read that fails on it should
    /// [`HotReader::discard`] it and run again on [`Storage::reader`]: a kept connection may have
    /// been cut by a database restart since its last use.
    pub async fn hot_reader(&self) -> Option<HotReader> {
        let home = &self.hot;
        if home.closed.load(Ordering::Acquire) {
            return None;
        }
        let idle = home.idle.lock().ok().and_then(|mut idle| idle.pop());
        let repo = match idle {
            Some(repo) => repo,
            None => {
                home.kept
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < home.limit).then_some(n + 1)
                    })
                    .ok()?;
                let acquired: Result<BoxRepository, sqlx::Error> = match &self.pool {
                    Pool::Postgres(pool) => pool
                        .acquire()
                        .await
                        .map(|c| Box::new(self.repository(Held::Conn(c))) as BoxRepository),
                    Pool::Sqlite(pool) => pool
                        .acquire()
                        .await
                        .map(|c| Box::new(self.repository(Held::Conn(c))) as BoxRepository),
                };
                match acquired {
                    Ok(repo) => repo,
                    Err(_) => {
                        home.kept.fetch_sub(1, Ordering::AcqRel);
                        return None;
                    }
                }
            }
        };
        Some(HotReader {
            repo: Some(repo),
            home: home.clone(),
        })
    }
}
