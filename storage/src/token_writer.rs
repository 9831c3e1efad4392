//! Group commit for token issuance: the tokens of concurrent requests share one transaction.
//!
//! Every token is committed before it is handed out (DESIGN.md "Storage"), and a commit waits for
//! the database to flush its log: one commit per request caps issuance at the database's commit
//! rate (`pgbench -N`). Here a request queues its new session and token
//! ([`NewSessionToken`]) and waits; a writer task takes everything queued (up to
//! [`MAX_BATCH`]), writes it with two multi-row INSERTs in one transaction, commits, and only
//! then answers each request. While one batch commits the next one fills, so the batch grows
//! with the load and the commit rate stops being the limit. Durability is unchanged: the
//! database's settings are not touched (`synchronous_commit` stays on) and no request is answered
//! before its commit.
//!
//! A batch that fails is written again one item per transaction, so each request gets its own
//! outcome (a client deleted meanwhile fails only its own request); when the database is down
//! every request of the batch gets the error. Nothing is dropped silently: a request whose
//! writer went away gets [`sqlx::Error::WorkerCrashed`]; a request sent while no writer can run
//! is written directly.
//!
//! The writers hold no reference to the queue, so they stop when the last [`Storage`] handle is
//! dropped; they hold a pooled connection only while writing.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{AccessToken, NewSessionToken, OAuth2Session, Storage, StorageError};

/// The most items one transaction carries (each binds 11 values: far below both backends'
/// limits on bound parameters).
pub const MAX_BATCH: usize = 64;

/// Writers taking turns: while one commits, the next gathers and writes its batch.
const WRITERS: usize = 2;

/// Requests that may wait in the queue before senders wait for room.
const QUEUE: usize = 1024;

type Written = Result<(OAuth2Session, AccessToken), StorageError>;

struct Job {
    item: NewSessionToken,
    reply: oneshot::Sender<Written>,
}

/// The queue's sending end, made on first use (a writer is a task of the runtime that first
/// issues a token).
#[derive(Debug, Default)]
pub(crate) struct Queue(OnceLock<mpsc::Sender<Job>>);

impl Storage {
    /// Starts a session with one access token and returns both once they are committed, in a
    /// transaction shared with the other requests waiting at that moment (group commit, see
    /// the module's documentation). The outcome is this item's own: an error means nothing of
    /// it was written.
    pub async fn add_session_with_token(&self, item: NewSessionToken) -> Written {
        let queue = self.writer.0.get_or_init(|| self.spawn_writers());
        let (reply, answer) = oneshot::channel();
        match queue.send(Job { item, reply }).await {
            Ok(()) => answer
                .await
                .unwrap_or(Err(StorageError::Database(sqlx::Error::WorkerCrashed))),
            // The writers are gone (their runtime shut down): write it here, alone.
            Err(mpsc::error::SendError(job)) => write_one(self, job.item).await,
        }
    }

    fn spawn_writers(&self) -> mpsc::Sender<Job> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        // The writers' handle has a queue of its own (never used), so they don't keep this one
        // open.
        let storage = Storage {
            pool: self.pool.clone(),
            entropy: self.entropy.clone(),
            writer: Arc::default(),
            hot: self.hot.clone(),
        };
        for _ in 0..WRITERS {
            tokio::spawn(run(storage.clone(), receiver.clone()));
        }
        sender
    }
}

/// One writer: gathers what is queued, writes it, answers; until the queue closes.
async fn run(storage: Storage, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        // The lock is held only while gathering, so the other writer gathers while this one
        // writes.
        if queue.lock().await.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        write_batch(&storage, std::mem::take(&mut jobs)).await;
    }
}

async fn write_batch(storage: &Storage, jobs: Vec<Job>) {
    let items: Vec<NewSessionToken> = jobs.iter().map(|j| j.item.clone()).collect();
    match write_all(storage, &items).await {
        Ok(rows) => {
            for (job, row) in jobs.into_iter().zip(rows) {
                // A request that went away meanwhile has its token written and never told:
                // as if its answer was lost on the way.
                let _ = job.reply.send(Ok(row));
            }
        }
        Err(error) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
        }
        Err(_) => {
            for job in jobs {
                let _ = job.reply.send(write_one(storage, job.item).await);
            }
        }
    }
}

/// The batch in one transaction.
async fn write_all(
    storage: &Storage,
    items: &[NewSessionToken],
) -> Result<Vec<(OAuth2Session, AccessToken)>, StorageError> {
    let mut repo = storage.begin().await?;
    let rows = repo.oauth2_sessions().add_with_access_tokens(items).await?;
    repo.commit().await?;
    Ok(rows)
}

/// One item in a transaction of its own.
async fn write_one(storage: &Storage, item: NewSessionToken) -> Written {
    write_all(storage, std::slice::from_ref(&item))
        .await?
        .pop()
        .ok_or(StorageError::NotFound("written session"))
}
