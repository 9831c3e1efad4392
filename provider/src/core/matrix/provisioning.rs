//! Keeping the homeserver in step with the provider, through the persistent job queue.
//!
//! Every change the homeserver must learn about (a user created or changed, a device whose
//! session ended, a reconciliation) is a [`Task`], enqueued in the same transaction as the
//! change itself: it commits with the change or not at all. Right after the commit the request
//! runs its tasks at once ([`run_now`]), so the homeserver usually knows before the response
//! leaves; when the homeserver is down the job stays queued and the [`Worker`] retries it with
//! exponential backoff, so an outage delays a change but never loses it.
//!
//! Tasks carry IDs, not data: a task reads the current state when it runs, so a retried task
//! never pushes stale data, and running one twice is harmless (every homeserver call is
//! idempotent).
//!
//! The exception is the device of a new grant: the token exchange upserts it synchronously
//! ([`provision_new_device`]), since the device must exist before the client uses its token,
//! after its read-only checks and before the one transaction that marks the grant exchanged
//! and issues the tokens.
//!
//! # The device deletion race
//!
//! A device deletion ([`Task::DeleteDevice`], queued when a session ends) or a device sync
//! ([`Task::SyncDevices`]) reads which devices the user's live sessions hold, drops its
//! connection, then deletes on the homeserver what no session holds. An exchange that upserts
//! the same device ID between that read and its own commit (a device code poll, or a code
//! exchange, reusing the ID of a session that just ended) would lose its device to the stale
//! read: tokens for a device the homeserver doesn't have, which it calls inactive. Two rules
//! close it, with no lock held across any homeserver call:
//! - the exchange marks the device as being provisioned, and commits the mark, *before* its
//!   upsert ([`provision_new_device`]); the transaction that gives the device its session
//!   removes the mark ([`device_provisioned`]). A job that reads a fresh mark for a device it
//!   would delete leaves it alone and retries later (`TaskError::Deferred`): by then the
//!   session holds the device (keep it) or the exchange gave up (delete it);
//! - a job that did delete re-reads, *after* its homeserver call, the marks and then the live
//!   sessions, and upserts again any device it removed that is now marked or held
//!   (`repair_devices`). Its first read came before the exchange's mark (else it would have
//!   left the device alone), so a deletion that reached the homeserver after the exchange's
//!   upsert is followed by this second read, which sees the mark (exchange not committed yet)
//!   or the session (committed; the marks are read first, and the mark goes in the same
//!   transaction as the session comes).
//!
//! No transaction or pooled connection is held across a homeserver call anywhere here: a job
//! is claimed in one short transaction, [`perform`] reads what it needs and drops its
//! connection before calling, and the outcome is recorded in another short transaction.
//!
//! The paths audited for a transaction or connection held across a call to another server
//! (issue 14, finding 2; the homeserver, an upstream provider, a mail relay):
//! - token endpoint: `authorization_code` and `device_code` claimed the grant inside their
//!   transaction and called the homeserver before the commit: fixed (read-only checks, call,
//!   then one transaction with a compare-and-set on the grant;
//!   `http::oauth2::token::redeem`); `refresh_token` calls nothing (ended
//!   sessions' jobs run after the commit); `client_credentials` has no device.
//! - compat: `login` (password and `m.login.token`) and `sso` (completing a login) upserted the
//!   device inside their transaction: fixed (upsert first, then one transaction); `refresh` and
//!   `logout` run their jobs after the commit.
//! - `core::sessions` (ending sessions, claiming devices) and `core::accounts::end_all_sessions`
//!   only enqueue jobs in the caller's transaction; every caller runs them after its commit
//!   (revocation, web logout, account devices/deactivate/profile/emails/recover, admin users,
//!   sessions, clients and emails, upstream link, `provider manage`).
//! - jobs ([`run_now`], [`Worker`]): claimed and recorded in their own short transactions;
//!   [`perform`] drops its connection before calling.
//! - usernames (`core::accounts::check_localpart_available`: registration, email-verified
//!   registration, upstream registration, admin user creation, `provider manage`): called
//!   before the transaction or after a dropped reader.
//! - upstream login (`http::upstream::{authorize, callback}`): discovery, keys, code exchange
//!   and userinfo run with no connection held (the provider and session are read on a reader
//!   dropped before), the result stored afterwards.
//! - mail (`core::email::messages`: account emails, registration codes, recovery links): sent
//!   after the commit that stored the code or ticket (recovery in a spawned task).
//! - account pages: the cross-signing reset calls the homeserver with no connection held.

use std::{collections::BTreeSet, time::Duration as StdDuration};

use chrono::{DateTime, Duration, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::homeserver::{FieldChange, HomeserverError, ProvisionUser};
use crate::{
    core::Core,
    storage::{BoxRepository, Job, JobState, StorageError, User},
};

/// The queue of homeserver tasks.
pub const QUEUE: &str = "homeserver";
/// How often a task is tried before it is failed for good: with the backoff capped at
/// [`MAX_BACKOFF_SECONDS`], about a day and a half of outage. `provider` reconciles the rest
/// with `sync_devices` on demand.
pub const MAX_ATTEMPTS: i32 = 200;
/// The first retry waits this long; each later one twice as long as the one before.
pub const FIRST_BACKOFF_SECONDS: i64 = 2;
/// No retry waits longer than this.
pub const MAX_BACKOFF_SECONDS: i64 = 600;
/// A worker holds a job this long; a homeserver call times out well before.
const LOCK_SECONDS: i64 = 60;
/// How many due jobs a worker takes at a time.
const BATCH: u32 = 16;
/// How often an idle worker looks for due jobs.
const POLL_INTERVAL: StdDuration = StdDuration::from_secs(1);

/// One thing the homeserver must learn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Create the user or bring them up to date (profile, emails, lock); a deactivated user is
    /// deactivated on the homeserver.
    ProvisionUser { user_id: Ulid },
    /// Reactivate a user the provider reactivated, then provision them.
    ReactivateUser { user_id: Ulid },
    /// Deactivate the user on the homeserver, erasing their data when asked.
    DeactivateUser { user_id: Ulid, erase: bool },
    /// Delete a device whose session ended, unless another active session of the user uses the
    /// same device ID by the time the task runs.
    DeleteDevice { user_id: Ulid, device_id: String },
    /// Make the homeserver's devices of the user exactly the devices of their active sessions.
    SyncDevices { user_id: Ulid },
}

/// Enqueues `task` in the caller's transaction, due at once. Returns the job's ID, for
/// [`run_now`] after the commit.
pub async fn enqueue(
    repo: &mut BoxRepository,
    task: &Task,
    now: DateTime<Utc>,
) -> Result<Ulid, StorageError> {
    let payload = serde_json::to_value(task).map_err(|e| StorageError::Invalid(e.to_string()))?;
    Ok(repo
        .jobs()
        .enqueue(QUEUE, &payload, MAX_ATTEMPTS, now)
        .await?
        .id)
}

/// Homeserver jobs a transaction enqueued, to run once it has committed.
#[derive(Debug, Default)]
#[must_use = "run the homeserver jobs after the commit"]
pub struct AfterCommit(Vec<Ulid>);

impl AfterCommit {
    /// Adds a job enqueued in the transaction.
    pub fn push(&mut self, job: Ulid) {
        self.0.push(job);
    }

    /// Adds the jobs of another part of the transaction.
    pub fn add(&mut self, other: AfterCommit) {
        self.0.extend(other.0);
    }

    /// Runs the jobs now, so the homeserver knows before the response leaves (failures stay
    /// queued for the worker). Call it after the commit.
    pub async fn run(self, state: &Core) {
        run_now(state, &self.0).await;
    }

    /// [`AfterCommit::run`], then where each job stands, in order: for callers that report it
    /// (`provider manage …` prints `queued` when the homeserver is down).
    pub async fn run_and_report(self, state: &Core) -> Result<Vec<Outcome>, StorageError> {
        run_now(state, &self.0).await;
        let mut outcomes = Vec::with_capacity(self.0.len());
        for &id in &self.0 {
            outcomes.push(job_outcome(settled(state, id).await?));
        }
        Ok(outcomes)
    }
}

/// How often [`settled`] looks at a job another worker holds.
const SETTLE_POLL: StdDuration = StdDuration::from_millis(50);

/// The job once no other worker holds it: a running server's worker may claim a job between
/// its enqueueing and [`run_now`] (a `provider manage` command beside a running server), and
/// that job is being run, not queued. Waited for up to its lock's length; a failed run of
/// [`run_now`]'s own releases its lock, so only another worker's run is waited for.
async fn settled(state: &Core, id: Ulid) -> Result<Option<Job>, StorageError> {
    let polls = LOCK_SECONDS * 1000 / SETTLE_POLL.as_millis() as i64;
    for _ in 0..polls {
        let job = state.storage.reader().await?.jobs().lookup(id).await?;
        let now = state.storage.entropy().clock.now();
        if !job
            .as_ref()
            .is_some_and(|job| job.state(now) == JobState::Held)
        {
            return Ok(job);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    state.storage.reader().await?.jobs().lookup(id).await
}

/// Where a job run on demand stands ([`Outcome`]).
fn job_outcome(job: Option<Job>) -> Outcome {
    match job {
        Some(job) if job.completed_at.is_some() => Outcome::Done,
        Some(job) => Outcome::Queued(job.last_error.unwrap_or_else(|| "not run yet".into())),
        None => Outcome::Queued("the job disappeared".into()),
    }
}

/// Runs jobs the caller's transaction enqueued, now that it committed, so the homeserver
/// learns of the change before the response leaves. A job that fails stays queued for the
/// worker (with its backoff); a job a worker took meanwhile is left to it. Never fails: the
/// change is durable whatever happens here.
pub async fn run_now(state: &Core, jobs: &[Ulid]) {
    if jobs.is_empty() {
        return;
    }
    let worker = worker_name(state);
    for &id in jobs {
        let claimed = async {
            let mut repo = state.storage.begin().await?;
            let job = repo
                .jobs()
                .claim_one(id, &worker, Duration::seconds(LOCK_SECONDS))
                .await?;
            repo.commit().await?;
            Ok::<_, StorageError>(job)
        }
        .await;
        match claimed {
            Ok(Some(job)) => execute(state, &worker, job).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "can't claim a homeserver job; the worker will run it")
            }
        }
    }
}

/// A unique name for a worker (or a request running its jobs), for the jobs' `locked_by`.
fn worker_name(state: &Core) -> String {
    let mut rng = state.storage.entropy().rng.rng();
    format!("worker-{:016x}", rng.gen::<u64>())
}

/// Runs one claimed job and records the outcome: complete, or failed with the next retry.
async fn execute(state: &Core, worker: &str, job: Job) {
    let outcome = match serde_json::from_value::<Task>(job.payload.clone()) {
        Ok(task) => perform(state, &task).await,
        Err(e) => Err(TaskError::Invalid(e.to_string())),
    };
    let recorded = async {
        let mut repo = state.storage.begin().await?;
        match &outcome {
            Ok(()) => {
                repo.jobs().complete(job.id, worker).await?;
            }
            Err(error) => {
                // A refusal that retrying won't cure soon (a wrong `matrix.kind`, a request the
                // homeserver rejects) waits the longest backoff: an operator may fix the
                // configuration meanwhile, and the queue isn't hammered.
                let wait = if error.is_transient() {
                    backoff(state, job.attempts)
                } else {
                    Duration::seconds(MAX_BACKOFF_SECONDS)
                };
                let retry_at = state.storage.entropy().clock.now() + wait;
                let after = repo
                    .jobs()
                    .fail(job.id, worker, &error.to_string(), retry_at)
                    .await?;
                match after {
                    Some(j) if j.failed_at.is_some() => tracing::error!(
                        job = %job.id, attempts = j.attempts, error = %error,
                        "homeserver task failed for good; `sync_devices` and re-provisioning reconcile it"
                    ),
                    Some(j) => tracing::warn!(
                        job = %job.id, attempts = j.attempts, retry_at = %j.run_at, error = %error,
                        "homeserver task failed; will retry"
                    ),
                    None => {}
                }
            }
        }
        repo.commit().await
    }
    .await;
    if let Err(e) = recorded {
        // The lock expires and another run picks the job up again: nothing is lost.
        tracing::error!(job = %job.id, error = %e, "can't record the outcome of a homeserver task");
    }
}

/// The wait before the next try after `attempts` failed runs: exponential from
/// [`FIRST_BACKOFF_SECONDS`], capped at [`MAX_BACKOFF_SECONDS`], plus up to a second of jitter
/// so replicas that failed together don't retry together.
fn backoff(state: &Core, attempts: i32) -> Duration {
    backoff_with_jitter(
        attempts,
        state.storage.entropy().rng.rng().gen_range(0..1000),
    )
}

/// [`backoff`] with the jitter given, in milliseconds.
fn backoff_with_jitter(attempts: i32, jitter_ms: i64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let seconds = FIRST_BACKOFF_SECONDS
        .saturating_mul(1_i64 << exponent)
        .min(MAX_BACKOFF_SECONDS);
    Duration::seconds(seconds) + Duration::milliseconds(jitter_ms)
}

/// Why a task did not complete.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the job's payload is not a task: {0}")]
    Invalid(String),
    /// A token exchange is upserting this device (see the module documentation, "The device
    /// deletion race"): tried again after the backoff.
    #[error("device {0} is being provisioned by a token exchange; retrying later")]
    Deferred(String),
}

impl From<EnsureDeviceError> for TaskError {
    fn from(e: EnsureDeviceError) -> Self {
        match e {
            EnsureDeviceError::Homeserver(e) => Self::Homeserver(e),
            EnsureDeviceError::Storage(e) => Self::Storage(e),
        }
    }
}

impl TaskError {
    /// Might a retry soon succeed?
    fn is_transient(&self) -> bool {
        match self {
            Self::Homeserver(e) => e.is_transient(),
            Self::Storage(_) | Self::Deferred(_) => true,
            Self::Invalid(_) => false,
        }
    }
}

impl Task {
    /// The user every task is about.
    fn user_id(&self) -> Ulid {
        match self {
            Self::ProvisionUser { user_id }
            | Self::ReactivateUser { user_id }
            | Self::DeactivateUser { user_id, .. }
            | Self::DeleteDevice { user_id, .. }
            | Self::SyncDevices { user_id } => *user_id,
        }
    }
}

/// Does what `task` asks, reading the current state. A user deleted meanwhile leaves nothing
/// to do. The database connection is released before the homeserver is called.
async fn perform(state: &Core, task: &Task) -> Result<(), TaskError> {
    let homeserver = state.homeserver.as_ref();
    let mut repo = state.storage.reader().await?;
    let Some(user) = repo.users().lookup(task.user_id()).await? else {
        return Ok(());
    };
    // "No such user" from the homeserver is success for the tasks that remove something.
    let gone_is_done = |result: Result<(), HomeserverError>| match result {
        Ok(()) | Err(HomeserverError::UserNotFound(_)) => Ok(()),
        Err(e) => Err(TaskError::from(e)),
    };
    match task {
        Task::ProvisionUser { .. } if user.deactivated_at.is_some() => {
            drop(repo);
            homeserver.delete_user(&user.username, false).await?;
        }
        Task::ProvisionUser { .. } => {
            let request = provision_request(&mut repo, &user).await?;
            drop(repo);
            homeserver.provision_user(&request).await?;
        }
        Task::ReactivateUser { .. } => {
            if user.deactivated_at.is_none() {
                let request = provision_request(&mut repo, &user).await?;
                drop(repo);
                gone_is_done(homeserver.reactivate_user(&user.username).await)?;
                homeserver.provision_user(&request).await?;
            }
        }
        Task::DeactivateUser { erase, .. } => {
            drop(repo);
            gone_is_done(homeserver.delete_user(&user.username, *erase).await)?;
        }
        Task::DeleteDevice { device_id, .. } => {
            let kept = Kept::read(state, &mut repo, user.id).await?;
            // A new session holds the device ID by now (it claimed the device, ending this
            // one: `core::sessions::claim_device`): keep the device. Deleting and re-creating
            // it would not cut the homeserver's cache of the ended session's tokens short
            // (Synapse drops a cached answer only when a request finds the device missing,
            // `synapse/api/auth/mas.py`), and would wipe the device's end-to-end keys there.
            if kept.active.contains(device_id) {
                return Ok(());
            }
            // An exchange is upserting the device (the deletion race, module documentation):
            // not now; the retry finds it held by the new session, or abandoned.
            if kept.provisioning.contains(device_id) {
                return Err(TaskError::Deferred(device_id.clone()));
            }
            drop(repo);
            gone_is_done(homeserver.delete_device(&user.username, device_id).await)?;
            repair_devices(state, &user, |d| d == device_id).await?;
        }
        Task::SyncDevices { .. } => {
            let kept = Kept::read(state, &mut repo, user.id).await?;
            // Not while an exchange upserts a device no session holds yet (the deletion race,
            // module documentation): the retry syncs with its session.
            if let Some(device_id) = kept.provisioning.difference(&kept.active).next() {
                return Err(TaskError::Deferred(device_id.clone()));
            }
            let devices = kept.active;
            let request = provision_request(&mut repo, &user).await?;
            drop(repo);
            match homeserver.sync_devices(&user.username, &devices).await {
                Err(HomeserverError::UserNotFound(_)) if user.deactivated_at.is_none() => {
                    homeserver.provision_user(&request).await?;
                    homeserver.sync_devices(&user.username, &devices).await?;
                }
                result => gone_is_done(result)?,
            }
            // The sync removed every device but `devices`: any other that is in use now
            // comes back.
            repair_devices(state, &user, |d| !devices.contains(d)).await?;
        }
    }
    Ok(())
}

/// What became of a task run on demand ([`run_task_now`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The homeserver has it.
    Done,
    /// It failed this time and stays queued for the worker, with this error.
    Queued(String),
}

/// Enqueues a task, commits, and runs it at once: for on-demand work (the CLI's
/// `homeserver sync-devices`). Tells whether it completed or stays queued.
pub async fn run_task_now(state: &Core, task: &Task) -> Result<Outcome, StorageError> {
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let id = enqueue(&mut repo, task, now).await?;
    repo.commit().await?;
    run_now(state, &[id]).await;
    let job = state.storage.reader().await?.jobs().lookup(id).await?;
    Ok(job_outcome(job))
}

/// The device IDs of a user's active sessions, OAuth 2.0 and compat alike.
pub async fn active_devices(
    repo: &mut BoxRepository,
    user_id: Ulid,
) -> Result<BTreeSet<String>, StorageError> {
    let mut devices: BTreeSet<String> = repo
        .oauth2_sessions()
        .list_active_for_user(user_id)
        .await?
        .into_iter()
        .filter_map(|s| s.device_id)
        .collect();
    devices.extend(
        repo.compat_sessions()
            .list_active_for_user(user_id)
            .await?
            .into_iter()
            .map(|s| s.device_id),
    );
    Ok(devices)
}

/// What the homeserver should know of a user: their confirmed email addresses, whether they
/// are locked, and their display name when the provider has one (set on the account page, by
/// the admin API or CLI, or imported from an upstream provider). Without one, and for avatars,
/// the homeserver keeps what users set there.
pub async fn provision_request(
    repo: &mut BoxRepository,
    user: &User,
) -> Result<ProvisionUser, StorageError> {
    let emails = repo
        .user_emails()
        .list_for_user(user.id)
        .await?
        .into_iter()
        .filter(|e| e.confirmed_at.is_some())
        .map(|e| e.email)
        .collect::<Vec<_>>();
    Ok(ProvisionUser {
        localpart: user.username.clone(),
        displayname: user
            .display_name
            .clone()
            .map_or(FieldChange::Keep, FieldChange::Set),
        avatar_url: FieldChange::Keep,
        emails: if emails.is_empty() {
            FieldChange::Unset
        } else {
            FieldChange::Set(emails)
        },
        locked: Some(user.locked_at.is_some()),
    })
}

/// Makes sure the homeserver has the device before the client gets its token (the token
/// exchange of a grant with a device scope, a compat login): upserts it, provisioning the user
/// first when the homeserver doesn't know them yet (their provisioning job may still be
/// waiting for the homeserver to come back).
///
/// Call it with no transaction open and no connection held (DESIGN.md: no database
/// transaction or pooled connection is held across a call to another server; a paused
/// homeserver would otherwise pin the pool, and on SQLite lock out every writer): the one
/// read it may need (what to provision) takes a connection and gives it back before the call.
pub async fn ensure_device(
    state: &Core,
    user: &User,
    device_id: &str,
    display_name: Option<&str>,
) -> Result<(), EnsureDeviceError> {
    let homeserver = state.homeserver.as_ref();
    match homeserver
        .upsert_device(&user.username, device_id, display_name)
        .await
    {
        Ok(()) => Ok(()),
        Err(HomeserverError::UserNotFound(_)) => {
            let request = {
                let mut repo = state.storage.reader().await?;
                provision_request(&mut repo, user).await?
            };
            homeserver.provision_user(&request).await?;
            homeserver
                .upsert_device(&user.username, device_id, display_name)
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// How long a mark of [`provision_new_device`] holds off the deletion of its device: longer
/// than the exchange can take from the mark to its commit, which is at most three homeserver
/// calls ([`ensure_device`]), each bounded by `matrix.request_timeout_seconds`, and a
/// transaction (a minute more), and never more than a day (the timeout has no upper bound). A
/// mark older than that belongs to an exchange that died or gave up (a homeserver failure
/// leaves it behind: nothing is released), and no longer counts.
pub fn provisioning_window(state: &Core) -> Duration {
    window_for(state.settings.matrix.request_timeout)
}

/// [`provisioning_window`] for a homeserver request timeout.
fn window_for(request_timeout: StdDuration) -> Duration {
    let window = request_timeout
        .saturating_mul(3)
        .saturating_add(StdDuration::from_secs(60))
        .min(StdDuration::from_secs(24 * 3600));
    Duration::from_std(window).unwrap_or_else(|_| Duration::days(1))
}

/// The device of a new session, upserted on the homeserver before the session is committed (a
/// token exchange; see the module documentation, "The device deletion race"): marks the device
/// as being provisioned and commits the mark, then [`ensure_device`], with no connection held.
/// The transaction that then gives the device its session calls [`device_provisioned`].
pub async fn provision_new_device(
    state: &Core,
    user: &User,
    device_id: &str,
    display_name: Option<&str>,
) -> Result<(), EnsureDeviceError> {
    let mut repo = state.storage.begin().await?;
    repo.jobs()
        .mark_device_provisioning(user.id, device_id)
        .await?;
    repo.commit().await?;
    ensure_device(state, user, device_id, display_name).await
}

/// The end of [`provision_new_device`], in the transaction that gives the device its session:
/// the mark goes with the commit, so a job reading after it sees the session instead.
pub async fn device_provisioned(
    repo: &mut BoxRepository,
    user_id: Ulid,
    device_id: &str,
) -> Result<(), StorageError> {
    repo.jobs()
        .clear_device_provisioning(user_id, device_id)
        .await?;
    Ok(())
}

/// The devices a deletion must keep: those marked fresh by [`provision_new_device`], then those
/// the user's live sessions hold. The marks are read first: an exchange that commits between
/// the two reads is seen by the second (its session), one that had not committed by the first
/// by the first (its mark).
struct Kept {
    provisioning: BTreeSet<String>,
    active: BTreeSet<String>,
}

impl Kept {
    async fn read(
        state: &Core,
        repo: &mut BoxRepository,
        user_id: Ulid,
    ) -> Result<Self, StorageError> {
        let since = state.storage.entropy().clock.now() - provisioning_window(state);
        let provisioning = repo.jobs().devices_in_provisioning(user_id, since).await?;
        let active = active_devices(repo, user_id).await?;
        Ok(Self {
            provisioning,
            active,
        })
    }
}

/// After a deletion reached the homeserver (see the module documentation, "The device deletion
/// race"): reads again what must be kept, and upserts every such device the deletion may have
/// `removed` (an exchange marked it, or a session took it, meanwhile).
async fn repair_devices(
    state: &Core,
    user: &User,
    removed: impl Fn(&str) -> bool,
) -> Result<(), TaskError> {
    let kept = {
        let mut repo = state.storage.reader().await?;
        Kept::read(state, &mut repo, user.id).await?
    };
    let back: Vec<&String> = kept
        .provisioning
        .union(&kept.active)
        .filter(|d| removed(d))
        .collect();
    for device_id in back {
        tracing::info!(
            device_id,
            "a device deleted from a stale read is in use again: upserting it back"
        );
        ensure_device(state, user, device_id, None).await?;
    }
    Ok(())
}

/// Why [`ensure_device`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EnsureDeviceError {
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Runs the homeserver jobs in the background: due jobs in batches, then a short sleep when
/// there are none. Several workers (replicas) may run against one database: claims are
/// exclusive.
#[derive(Debug)]
pub struct Worker {
    state: Core,
    name: String,
}

impl Worker {
    /// A worker over these services (or anything that holds them, such as the http layer's
    /// state).
    pub fn new(state: impl Into<Core>) -> Self {
        let state = state.into();
        let name = worker_name(&state);
        Self { state, name }
    }

    /// Runs every due job once (in batches of [`BATCH`]); returns how many ran. For tests and
    /// the CLI; the background loop calls it.
    pub async fn run_due(&self) -> Result<usize, StorageError> {
        let mut ran = 0;
        loop {
            let mut repo = self.state.storage.begin().await?;
            let jobs = repo
                .jobs()
                .claim(&self.name, &[QUEUE], BATCH, Duration::seconds(LOCK_SECONDS))
                .await?;
            repo.commit().await?;
            if jobs.is_empty() {
                return Ok(ran);
            }
            let count = jobs.len();
            for job in jobs {
                execute(&self.state, &self.name, job).await;
            }
            ran += count;
            if count < BATCH as usize {
                return Ok(ran);
            }
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.run_due().await {
                tracing::warn!(error = %e, "homeserver worker: can't read the job queue");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<i64> = (0..10)
            .map(|a| backoff_with_jitter(a, 0).num_seconds())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600]);
        assert_eq!(
            backoff_with_jitter(i32::MAX, 0).num_seconds(),
            MAX_BACKOFF_SECONDS
        );
        assert_eq!(
            backoff_with_jitter(-3, 0).num_seconds(),
            FIRST_BACKOFF_SECONDS
        );
        assert_eq!(
            backoff_with_jitter(0, 999),
            Duration::seconds(2) + Duration::milliseconds(999)
        );
    }

    #[test]
    fn a_provisioning_mark_holds_for_three_calls_and_a_minute_at_most_a_day() {
        assert_eq!(
            window_for(StdDuration::from_secs(10)),
            Duration::seconds(90)
        );
        assert_eq!(
            window_for(StdDuration::from_secs(3600)),
            Duration::seconds(3 * 3600 + 60)
        );
        assert_eq!(
            window_for(StdDuration::from_secs(u64::MAX)),
            Duration::days(1)
        );
    }

    #[test]
    fn tasks_serialise_with_their_name() {
        let id = Ulid::from_parts(1, 2);
        let task = Task::DeleteDevice {
            user_id: id,
            device_id: "ABCDEFGHIJ".into(),
        };
        let value = serde_json::to_value(&task).unwrap();
        assert_eq!(value["task"], "delete_device");
        assert_eq!(value["device_id"], "ABCDEFGHIJ");
        assert_eq!(serde_json::from_value::<Task>(value).unwrap(), task);
        assert!(serde_json::from_value::<Task>(serde_json::json!({"task": "nope"})).is_err());
    }
}
