//! What can happen to an account, written once for every door it comes through: the account
//! pages, the admin API, the `provider manage` CLI, registration and upstream login.
//!
//! Each operation works inside the caller's transaction (a [`BoxRepository`]) and returns the
//! homeserver jobs it enqueued ([`AfterCommit`]), which the caller runs once it has committed,
//! so a change and the homeserver's copy of it never drift apart: the job is durable with the
//! change and retried by the worker when the homeserver is down.

use chrono::{DateTime, Utc};
use ulid::Ulid;

use crate::{
    matrix::{
        compat,
        provisioning::{self, AfterCommit, Task},
    },
    oauth2::sessions::end_oauth2_session,
    storage::{BoxRepository, StorageError, User},
};

/// Ends every session of a user: their OAuth 2.0 sessions and legacy (compat) logins, whose
/// devices the homeserver deletes (jobs returned), and their browser sessions, so no page and
/// no token of theirs works any longer.
pub async fn end_all_sessions(
    repo: &mut BoxRepository,
    user_id: Ulid,
    now: DateTime<Utc>,
) -> Result<AfterCommit, StorageError> {
    let mut jobs = AfterCommit::default();
    for session in repo.oauth2_sessions().list_active_for_user(user_id).await? {
        jobs.add(end_oauth2_session(repo, session.id, now).await?);
    }
    for session in repo.compat_sessions().list_active_for_user(user_id).await? {
        jobs.push(compat::end_session(repo, &session, now).await?);
    }
    repo.browser_sessions().finish_all_for_user(user_id).await?;
    Ok(jobs)
}

/// Deactivates an account: marks it deactivated (its username stays taken for ever, so it is
/// never issued to someone else), ends every session, and has the homeserver deactivate the
/// user (`erase` asks it to erase their data too).
pub async fn deactivate(
    repo: &mut BoxRepository,
    user: &User,
    erase: bool,
    now: DateTime<Utc>,
) -> Result<AfterCommit, StorageError> {
    repo.users().set_deactivated(user.id, true).await?;
    let mut jobs = end_all_sessions(repo, user.id, now).await?;
    let task = Task::DeactivateUser {
        user_id: user.id,
        erase,
    };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok(jobs)
}
