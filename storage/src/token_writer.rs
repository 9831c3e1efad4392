//! Group commit for the write hot paths: token issuance, rate-limit spends and refresh token
//! rotations; the writes of concurrent requests share one transaction.
//!
//! Every token is committed before it is handed out (DESIGN.md "Storage"), and a commit waits for
//! the database to flush its log: one commit per request caps issuance at the database's commit
//! rate (`pgbench -N`), and each transaction costs its own round trips besides. Here a request
//! queues its write (for issuance, its new session and token, [`NewSessionToken`]) and waits; a
//! writer task takes everything queued of that kind (up to [`MAX_BATCH`]), writes it in one
//! transaction (for issuance and rotations on PostgreSQL, ONE statement outside any transaction,
//! which commits by itself; on SQLite, multi-row INSERTs between `BEGIN` and `COMMIT`), and only
//! then answers each request. While one batch commits the next one fills, so the batch grows with
//! the load and the commit rate stops being the limit. Durability is unchanged: the database's
//! settings are not touched (`synchronous_commit` stays on) and no request is answered before its
//! commit.
//!
//! Each kind of write has its own [`Queue`] and writers ([`Storage::group_commit`]): issuance
//! here, spends in `rate_limits` ([`Storage::spend`]), rotations in `oauth2_sessions`
//! ([`Storage::rotate_refresh_token`]). An item's own outcome (a spend refused, a rotation that
//! lost its compare-and-set) is part of the batch's output, exactly what the item alone would
//! have given. Issuance and rotations may carry a rate limit's unit ([`SpendFirst`]): their
//! writer spends the batch's units first, in one statement, and writes only the items granted
//! theirs (`spend_then_write`).
//!
//! A batch that fails on one item's row (a constraint: a token hash taken, a client deleted
//! meanwhile) is written again one item per transaction, so each request gets its own outcome.
//! A batch that fails otherwise (the pool, the connection, a timeout: the database is down)
//! fails every request of the batch at once with that error: retrying each item alone would
//! only wait the pool's acquire timeout once per item. Nothing is dropped silently: a request whose
//! writer went away gets [`sqlx::Error::WorkerCrashed`]; a request sent while no writer can run
//! is written directly.
//!
//! The writers hold no reference to the queue, so they stop when the last [`Storage`] handle is
//! dropped; they hold a pooled connection only while writing.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
};

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{
    rate_limits::{spend_then_write, BatchedSpend, SpendFirst, Spent},
    AccessToken, BoxFuture, NewSessionToken, OAuth2Session, Rotated, Rotation, Spend, Storage,
    StorageError,
};

/// Runs `$body` (statements on `$self`, a repository on a plain connection, such as one
/// [`Storage::hot_read`] lends) in a transaction of its own: `BEGIN`, the body, `COMMIT`
/// (`ROLLBACK` when the body fails). A batch written this way on a kept connection costs its
/// statements and two round trips, where [`Storage::begin`] adds the pool's two pings (one when
/// the connection is taken, one when it goes back). The first statement of the body must write
/// (SQLite then takes its write lock at once, as `BEGIN IMMEDIATE` would). Never inside a
/// transaction.
macro_rules! in_own_transaction {
    ($self:ident, $body:block) => {{
        sqlx::query("BEGIN").execute($self.conn()).await?;
        let done: Result<_, StorageError> = async { $body }.await;
        match done {
            Ok(value) => {
                sqlx::query("COMMIT").execute($self.conn()).await?;
                Ok(value)
            }
            Err(error) => {
                // Best effort: a connection that can't roll back is broken, and the pool drops it.
                let _ = sqlx::query("ROLLBACK").execute($self.conn()).await;
                Err(error)
            }
        }
    }};
}
pub(crate) use in_own_transaction;

/// The most items one transaction carries (each binds 11 values: far below both backends'
/// limits on bound parameters).
pub const MAX_BATCH: usize = 64;

/// Writers taking turns: while one commits, the next gathers and writes its batch.
const WRITERS: usize = 2;

/// Requests that may wait in the queue before senders wait for room.
const QUEUE: usize = 1024;

type Answer<O> = Result<O, StorageError>;
type Written = Answer<Spent<(OAuth2Session, AccessToken)>>;

struct Job<I, O> {
    item: I,
    reply: oneshot::Sender<Answer<O>>,
}

/// What a batch's writer does: all the items in one transaction, committed, with one output per
/// item in their order (an item's own outcome, such as a spend refused, is an output; an `Err`
/// is the whole batch's failure).
pub(crate) type WriteBatch<I, O> =
    for<'a> fn(&'a Storage, &'a [I]) -> BoxFuture<'a, Result<Vec<O>, StorageError>>;

/// One kind of group-committed write: its queue's sending end, made on first use (a writer is a
/// task of the runtime that first sends to it).
pub(crate) struct Queue<I, O>(OnceLock<mpsc::Sender<Job<I, O>>>);

impl<I, O> Default for Queue<I, O> {
    fn default() -> Self {
        Self(OnceLock::new())
    }
}

impl<I, O> std::fmt::Debug for Queue<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Queue")
            .field(&self.0.get().is_some())
            .finish()
    }
}

/// The group-committed writes of a [`Storage`]: token issuance, rate-limit spends and refresh
/// token rotations, each with its own queue and writers.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    tokens: Queue<SpendFirst<NewSessionToken>, Written>,
    pub(crate) spends: Queue<BatchedSpend, Spend>,
    pub(crate) rotations: Queue<SpendFirst<Rotation>, Answer<Spent<Rotated>>>,
}

impl Storage {
    /// Starts a session with one access token and returns both once they are committed, in a
    /// transaction shared with the other requests waiting at that moment (group commit, see
    /// the module's documentation). The outcome is this item's own: an error means nothing of
    /// it was written. `spend`, when given, is a unit of a rate limit spent first by the same
    /// writer, with the spends of its batch (`spend_then_write`): when it is refused nothing
    /// is written.
    pub async fn add_session_with_token(
        &self,
        item: NewSessionToken,
        spend: Option<BatchedSpend>,
    ) -> Written {
        self.group_commit(
            |w| &w.tokens,
            SpendFirst { item, spend },
            |storage, items| {
                Box::pin(spend_then_write(storage, items, |storage, items| {
                    Box::pin(write_tokens(storage, items))
                }))
            },
        )
        .await?
    }

    /// Queues `item` for the writers of `queue` (started on first use, each running `write`
    /// over the batches it gathers) and waits for its own outcome, which comes after its batch
    /// is committed.
    pub(crate) async fn group_commit<I, O>(
        &self,
        queue: fn(&Writers) -> &Queue<I, O>,
        item: I,
        write: WriteBatch<I, O>,
    ) -> Answer<O>
    where
        I: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        let sender = queue(&self.writer)
            .0
            .get_or_init(|| self.spawn_writers(write));
        let (reply, answer) = oneshot::channel();
        match sender.send(Job { item, reply }).await {
            Ok(()) => answer
                .await
                .unwrap_or(Err(StorageError::Database(sqlx::Error::WorkerCrashed))),
            // The writers are gone (their runtime shut down): write it here, alone.
            Err(mpsc::error::SendError(job)) => write_one(self, &job.item, write).await,
        }
    }

    fn spawn_writers<I, O>(&self, write: WriteBatch<I, O>) -> mpsc::Sender<Job<I, O>>
    where
        I: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        // The writers' handle has queues of its own (never used), so they don't keep this one
        // open.
        let storage = self.detached(self.hot.clone());
        for _ in 0..WRITERS {
            let storage = storage.clone();
            let write = move |items: Vec<I>| {
                let storage = storage.clone();
                async move { write(&storage, &items).await }
            };
            tokio::spawn(run(receiver.clone(), write, MAX_BATCH));
        }
        sender
    }
}

/// One writer: gathers what is queued (at most `max_batch` jobs), writes it with `write`,
/// answers; until the queue closes.
async fn run<I, O, W, F>(queue: Arc<Mutex<mpsc::Receiver<Job<I, O>>>>, write: W, max_batch: usize)
where
    I: Clone,
    W: Fn(Vec<I>) -> F,
    F: Future<Output = Result<Vec<O>, StorageError>>,
{
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        // The lock is held only while gathering, so the other writer gathers while this one
        // writes.
        if queue.lock().await.recv_many(&mut jobs, max_batch).await == 0 {
            return;
        }
        write_batch(std::mem::take(&mut jobs), &write).await;
    }
}

async fn write_batch<I, O, W, F>(jobs: Vec<Job<I, O>>, write: &W)
where
    I: Clone,
    W: Fn(Vec<I>) -> F,
    F: Future<Output = Result<Vec<O>, StorageError>>,
{
    let items: Vec<I> = jobs.iter().map(|j| j.item.clone()).collect();
    match write(items).await {
        Ok(rows) => {
            for (job, row) in jobs.into_iter().zip(rows) {
                // A request that went away meanwhile has its write committed and never told:
                // as if its answer was lost on the way.
                let _ = job.reply.send(Ok(row));
            }
        }
        // One row broke a constraint: each item alone, so only its own request fails.
        Err(error) if jobs.len() > 1 && is_per_item(&error) => {
            for job in jobs {
                let written = write(vec![job.item])
                    .await
                    .and_then(|mut rows| rows.pop().ok_or(StorageError::NotFound("written row")));
                let _ = job.reply.send(written);
            }
        }
        // The database itself failed: every request gets the error now.
        Err(error) => {
            for job in jobs {
                let _ = job.reply.send(Err(same_error(&error)));
            }
        }
    }
}

/// Is this failure of a batch one of its items' own (a row breaking a constraint: a taken
/// token hash, a client deleted meanwhile), so that writing each item alone gives the others
/// their tokens? A failure of the pool, the connection or a timeout is not: it would only
/// fail again, item after item.
pub(crate) fn is_per_item(error: &StorageError) -> bool {
    use sqlx::error::ErrorKind;
    match error {
        StorageError::Conflict(_) | StorageError::NotFound(_) | StorageError::Invalid(_) => true,
        StorageError::Database(sqlx::Error::Database(e)) => matches!(
            e.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        ),
        _ => false,
    }
}

/// The error of a failed batch, for each of its requests (`sqlx::Error` can't be cloned): the
/// same variant where it carries no more than a message, else the message as an I/O error.
pub(crate) fn same_error(error: &StorageError) -> StorageError {
    match error {
        StorageError::Conflict(what) => StorageError::Conflict(what),
        StorageError::NotFound(what) => StorageError::NotFound(what),
        StorageError::Invalid(why) => StorageError::Invalid(why.clone()),
        StorageError::Database(sqlx::Error::PoolTimedOut) => {
            StorageError::Database(sqlx::Error::PoolTimedOut)
        }
        StorageError::Database(sqlx::Error::PoolClosed) => {
            StorageError::Database(sqlx::Error::PoolClosed)
        }
        StorageError::Database(sqlx::Error::WorkerCrashed) => {
            StorageError::Database(sqlx::Error::WorkerCrashed)
        }
        StorageError::Database(sqlx::Error::Io(e)) => StorageError::Database(sqlx::Error::Io(
            std::io::Error::new(e.kind(), e.to_string()),
        )),
        StorageError::Database(e) => {
            StorageError::Database(sqlx::Error::Io(std::io::Error::other(e.to_string())))
        }
        other => StorageError::Database(sqlx::Error::Io(std::io::Error::other(other.to_string()))),
    }
}

/// A batch of new sessions with their tokens, committed together.
async fn write_tokens(
    storage: &Storage,
    items: &[NewSessionToken],
) -> Result<Vec<(OAuth2Session, AccessToken)>, StorageError> {
    // On a kept connection, as one statement (PostgreSQL) or in a transaction of its own
    // (SQLite: `BEGIN`, the two multi-row `INSERT`s, `COMMIT`): without the pool's two pings,
    // which a pooled transaction adds (issue 16). Should the connection fail, `hot_read` runs
    // the batch again on another; if the first run had committed, the second finds its token
    // hashes taken and the batch fails (`StorageError::Conflict`): those requests get an
    // error, and the tokens they never received are never used.
    storage
        .hot_read(items, |repo, items| {
            repo.oauth2_sessions().add_with_access_tokens(items)
        })
        .await
}

/// One item in a transaction of its own.
pub(crate) async fn write_one<I, O>(
    storage: &Storage,
    item: &I,
    write: WriteBatch<I, O>,
) -> Answer<O> {
    write(storage, std::slice::from_ref(item))
        .await?
        .pop()
        .ok_or(StorageError::NotFound("written row"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use chrono::{DateTime, Utc};
    use ulid::Ulid;

    use super::*;

    type Rows = Vec<(OAuth2Session, AccessToken)>;
    /// The writer loop's answer to a request (the queue's own, without a unit spent first).
    type Written = Answer<(OAuth2Session, AccessToken)>;

    fn item(n: u8) -> NewSessionToken {
        NewSessionToken {
            user_id: None,
            client_id: Ulid::from_parts(1, 1),
            scope: format!("scope-{n}"),
            device_id: None,
            token_hash: [n; 32],
            expires_at: None,
        }
    }

    /// The rows a database would return for `items`.
    fn rows(items: &[NewSessionToken]) -> Rows {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        items
            .iter()
            .map(|item| {
                let id = Ulid::from_parts(2, u128::from(item.token_hash[0]));
                let session = OAuth2Session {
                    id,
                    user_id: None,
                    client_id: item.client_id,
                    browser_session_id: None,
                    scope: item.scope.clone(),
                    device_id: None,
                    created_at: at,
                    finished_at: None,
                    last_active_at: None,
                    user_agent: None,
                };
                let token = AccessToken {
                    id,
                    session_id: id,
                    token_hash: item.token_hash,
                    created_at: at,
                    expires_at: None,
                    revoked_at: None,
                    first_used_at: None,
                };
                (session, token)
            })
            .collect()
    }

    /// Queues `items`, runs one writer over them with `write` and `max_batch` until the queue
    /// is empty, and returns each request's answer, in order.
    async fn written<W, F>(items: Vec<NewSessionToken>, write: W, max_batch: usize) -> Vec<Written>
    where
        W: Fn(Vec<NewSessionToken>) -> F,
        F: Future<Output = Result<Rows, StorageError>>,
    {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let mut answers = Vec::new();
        for item in items {
            let (reply, answer) = oneshot::channel();
            sender.send(Job { item, reply }).await.unwrap();
            answers.push(answer);
        }
        drop(sender);
        run(Arc::new(Mutex::new(receiver)), write, max_batch).await;
        let mut out = Vec::new();
        for answer in answers {
            out.push(answer.await.expect("every request is answered"));
        }
        out
    }

    /// The batches a fake database was given (their items' first hash byte).
    type Calls = Arc<StdMutex<Vec<Vec<u8>>>>;

    fn record(calls: &Calls, items: &[NewSessionToken]) {
        calls
            .lock()
            .unwrap()
            .push(items.iter().map(|i| i.token_hash[0]).collect());
    }

    #[tokio::test]
    async fn requests_are_written_in_batches_of_at_most_max_batch() {
        let calls = Calls::default();
        let write = |items: Vec<NewSessionToken>| {
            record(&calls, &items);
            async move { Ok(rows(&items)) }
        };
        let answers = written((0..10).map(item).collect(), write, 4).await;
        assert_eq!(
            *calls.lock().unwrap(),
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        for (n, answer) in answers.into_iter().enumerate() {
            let (session, token) = answer.unwrap();
            assert_eq!(
                session.scope,
                format!("scope-{n}"),
                "each request gets its own row"
            );
            assert_eq!(usize::from(token.token_hash[0]), n);
        }
    }

    #[tokio::test]
    async fn a_constraint_error_fails_only_its_item() {
        let calls = Calls::default();
        // Item 3's hash is taken.
        let write = |items: Vec<NewSessionToken>| {
            record(&calls, &items);
            let taken = items.iter().any(|i| i.token_hash[0] == 3);
            async move {
                if taken {
                    Err(StorageError::Conflict("access token"))
                } else {
                    Ok(rows(&items))
                }
            }
        };
        let answers = written((0..5).map(item).collect(), write, MAX_BATCH).await;
        assert_eq!(
            *calls.lock().unwrap(),
            [
                vec![0, 1, 2, 3, 4],
                vec![0],
                vec![1],
                vec![2],
                vec![3],
                vec![4]
            ],
            "the batch, then each item alone"
        );
        for (n, answer) in answers.into_iter().enumerate() {
            if n == 3 {
                assert!(
                    matches!(answer, Err(StorageError::Conflict(_))),
                    "{answer:?}"
                );
            } else {
                assert_eq!(answer.unwrap().0.scope, format!("scope-{n}"));
            }
        }
    }

    #[tokio::test]
    async fn a_database_failure_fails_the_whole_batch_at_once() {
        for failure in [
            || sqlx::Error::PoolTimedOut,
            || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            let calls = Calls::default();
            let write = |items: Vec<NewSessionToken>| {
                record(&calls, &items);
                async move { Err(StorageError::Database(failure())) }
            };
            let answers = written((0..5).map(item).collect(), write, MAX_BATCH).await;
            assert_eq!(
                calls.lock().unwrap().len(),
                1,
                "no retry item by item: each would wait for the database again"
            );
            for answer in answers {
                let error = answer.unwrap_err();
                assert_eq!(
                    error.to_string(),
                    StorageError::Database(failure()).to_string()
                );
            }
        }
    }

    #[test]
    fn which_failures_are_an_items_own() {
        assert!(is_per_item(&StorageError::Conflict("access token")));
        assert!(!is_per_item(&StorageError::Database(
            sqlx::Error::PoolTimedOut
        )));
        assert!(!is_per_item(&StorageError::Database(
            sqlx::Error::PoolClosed
        )));
        assert!(!is_per_item(&StorageError::Database(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::BrokenPipe)
        ))));
    }
}
