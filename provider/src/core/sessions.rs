//! The end of a session, OAuth 2.0 or compat, written once for every way a session ends early
//! (whatever the door: revocation, logout, refresh reuse, the account page, the admin API).

use chrono::{DateTime, Utc};
use ulid::Ulid;

use crate::{
    core::matrix::provisioning::{self, AfterCommit, Task},
    storage::{BoxRepository, CompatSession, StorageError},
};

/// Ends an OAuth 2.0 session: revokes all its access and refresh tokens and finishes it, in the
/// caller's transaction (which commits). A session finished already stays as it was; its
/// remaining tokens are revoked all the same. When this call ends a session with a Matrix
/// device, the device's deletion on the homeserver is enqueued in the same transaction: run the
/// returned jobs after the commit.
///
/// The one place a session is ended from, whatever ends it:
/// - the reuse of a rotated refresh token ([`super::token::refresh_token`], RFC 9700 §4.14.2);
/// - the replay of an authorization code ([`super::token::authorization_code`], RFC 6749
///   §4.1.2: revoke what the code issued);
/// - the revocation of a token ([`super::revocation`], RFC 7009 §2.1, MSC4254);
/// - the end of the browser session it was approved from (RP-initiated logout).
///
/// The homeserver caches introspection answers; deleting the device is what makes the session's
/// tokens stop working there at once.
pub async fn end_oauth2_session(
    repo: &mut BoxRepository,
    session_id: Ulid,
    now: DateTime<Utc>,
) -> Result<AfterCommit, StorageError> {
    repo.access_tokens()
        .revoke_all_for_session(session_id)
        .await?;
    repo.refresh_tokens()
        .revoke_all_for_session(session_id)
        .await?;
    let mut jobs = AfterCommit::default();
    if repo.oauth2_sessions().finish(session_id).await? {
        let session = repo.oauth2_sessions().lookup(session_id).await?;
        if let Some((user_id, device_id)) = session.and_then(|s| Some((s.user_id?, s.device_id?))) {
            let task = Task::DeleteDevice { user_id, device_id };
            jobs.push(provisioning::enqueue(repo, &task, now).await?);
        }
    }
    Ok(jobs)
}

/// Ends a compat (legacy login) session in the caller's transaction: finished, every token revoked, and its device's
/// deletion queued (the homeserver caches introspection, so deleting the device is what makes a
/// logout take effect at once). Returns the job, for [`provisioning::run_now`] after the commit.
pub async fn end_compat_session(
    repo: &mut BoxRepository,
    session: &CompatSession,
    now: DateTime<Utc>,
) -> Result<Ulid, StorageError> {
    repo.compat_sessions().finish(session.id).await?;
    repo.compat_tokens()
        .revoke_all_for_session(session.id)
        .await?;
    provisioning::enqueue(
        repo,
        &Task::DeleteDevice {
            user_id: session.user_id,
            device_id: session.device_id.clone(),
        },
        now,
    )
    .await
}
