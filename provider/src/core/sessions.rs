//! The end of a session, OAuth 2.0 or compat, written once for every way a session ends early
//! (whatever the door: revocation, logout, refresh reuse, the account page, the admin API), and
//! the lifetimes of browser sessions.
//!
//! No function here calls the homeserver: ending a session enqueues its device's deletion in
//! the caller's transaction ([`AfterCommit`]), run after the commit with no connection held
//! (issue 14, finding 2: no transaction across a call to another server).

use chrono::{DateTime, Duration, Utc};
use ulid::Ulid;

use crate::{
    config::BrowserSessionLifetimes,
    core::{
        matrix::provisioning::{self, AfterCommit, Task},
        Core,
    },
    storage::{BoxRepository, BrowserSession, CompatSession, StorageError, User},
};

/// A live browser session's last use is written at most this often (its idle lifetime is
/// counted from it), not at every page.
pub const BROWSER_TOUCH_INTERVAL_SECONDS: i64 = 60;

/// Has a browser session outlived its lifetimes at `now` (`sessions` in the configuration)?
/// Idle: `lifetimes.idle` since its last use (its opening when never touched). Absolute:
/// `lifetimes.max` since it was opened, however much it was used (OWASP Session Management
/// Cheat Sheet, "Session Expiration").
pub fn browser_session_expired(
    session: &BrowserSession,
    lifetimes: BrowserSessionLifetimes,
    now: DateTime<Utc>,
) -> bool {
    let last_used = session
        .last_active_at
        .map_or(session.created_at, |at| at.max(session.created_at));
    now >= session.created_at + lifetimes.max || now >= last_used + lifetimes.idle
}

/// Should this use of a live browser session be written down (its last write is older than
/// [`BROWSER_TOUCH_INTERVAL_SECONDS`])?
pub fn browser_session_needs_touch(session: &BrowserSession, now: DateTime<Utc>) -> bool {
    let last_used = session.last_active_at.unwrap_or(session.created_at);
    now >= last_used + Duration::seconds(BROWSER_TOUCH_INTERVAL_SECONDS)
}

/// The browser session of this ID if it is live at `now` (not finished, within its
/// lifetimes), its use recorded ([`browser_session_needs_touch`]). One that outlived its
/// lifetimes is finished here, so lists (the admin API, the account pages) show it ended; the
/// OAuth 2.0 sessions approved from it live on (they are the user's Matrix devices, with their
/// own refresh tokens; a logout or a password reset is what ends those).
pub async fn live_browser_session(
    repo: &mut BoxRepository,
    id: Ulid,
    lifetimes: BrowserSessionLifetimes,
    now: DateTime<Utc>,
) -> Result<Option<BrowserSession>, StorageError> {
    let Some(session) = repo.browser_sessions().lookup(id).await? else {
        return Ok(None);
    };
    if !session.is_active() {
        return Ok(None);
    }
    if browser_session_expired(&session, lifetimes, now) {
        repo.browser_sessions().finish(id).await?;
        tracing::info!(session = %id, "browser session expired");
        return Ok(None);
    }
    if browser_session_needs_touch(&session, now) {
        repo.browser_sessions().touch(id).await?;
    }
    Ok(Some(session))
}

/// The browser session of this ID (the one the browser's cookie names) and its user, when both
/// are still active.
pub async fn signed_in(
    core: &Core,
    session_id: Option<Ulid>,
) -> Result<Option<(BrowserSession, User)>, StorageError> {
    if session_id.is_none() {
        return Ok(None);
    }
    signed_in_on(&mut core.storage.reader().await?, core, session_id).await
}

/// [`signed_in`] on a connection the caller already holds. A session past its idle or
/// absolute lifetime (`sessions`) is nobody's ([`live_browser_session`]).
pub async fn signed_in_on(
    repo: &mut BoxRepository,
    core: &Core,
    session_id: Option<Ulid>,
) -> Result<Option<(BrowserSession, User)>, StorageError> {
    let Some(id) = session_id else {
        return Ok(None);
    };
    let now = core.storage.entropy().clock.now();
    let lifetimes = core.settings.browser_sessions;
    let Some(session) = live_browser_session(repo, id, lifetimes, now).await? else {
        return Ok(None);
    };
    match repo.users().lookup(session.user_id).await? {
        Some(user) if user.is_active() => Ok(Some((session, user))),
        _ => Ok(None),
    }
}

/// Ends one browser session, and the OAuth 2.0 sessions approved from it (as a logout does),
/// whose devices the homeserver deletes. `false` when it had ended already.
pub async fn end_browser_session(
    repo: &mut BoxRepository,
    session_id: Ulid,
    user_id: Ulid,
    now: DateTime<Utc>,
) -> Result<(bool, AfterCommit), StorageError> {
    let mut jobs = AfterCommit::default();
    for oauth in repo.oauth2_sessions().list_active_for_user(user_id).await? {
        if oauth.browser_session_id == Some(session_id) {
            jobs.add(end_oauth2_session(repo, oauth.id, now).await?);
        }
    }
    let ended = repo.browser_sessions().finish(session_id).await?;
    Ok((ended, jobs))
}

/// Ends the user's browser sessions other than `keep` (a password change: whoever knew the old
/// password is signed out of the provider's pages, the browser that changed it stays signed
/// in). Their OAuth 2.0 and compat sessions (Matrix devices) stay, as after a password change
/// on the homeserver: the user ends those on the devices page; a password reset by a recovery
/// link ends everything. Returns how many ended.
pub async fn end_other_browser_sessions(
    repo: &mut BoxRepository,
    user_id: Ulid,
    keep: Ulid,
) -> Result<u64, StorageError> {
    repo.browser_sessions()
        .finish_others_for_user(user_id, keep)
        .await
}

/// Ends an OAuth 2.0 session: revokes all its access and refresh tokens and finishes it, in the
/// caller's transaction (which commits). A session finished already stays as it was; its
/// remaining tokens are revoked all the same. When this call ends a session with a Matrix
/// device, the device's deletion on the homeserver is enqueued in the same transaction: run the
/// returned jobs after the commit.
///
/// The one place a session is ended from, whatever ends it:
/// - the reuse of a rotated refresh token (`http::oauth2::token::refresh_token`, RFC 9700 §4.14.2);
/// - the replay of an authorization code (`http::oauth2::token::authorization_code`, RFC 6749
///   §4.1.2: revoke what the code issued);
/// - the revocation of a token (`http::oauth2::revocation`, RFC 7009 §2.1, MSC4254);
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

/// A Matrix device is one session (SPEC-NOTES.md, the homeserver contract): a new session that
/// claims `device_id` for `user_id` (an OAuth 2.0 code or device code exchange, a compat login,
/// a compat SSO login) ends, in the caller's transaction, every other live session of that user
/// holding the device, OAuth 2.0 (`keep` excepted: the new session itself, when it exists
/// already) or compat: their tokens are inactive at introspection at once. Ending the session
/// that holds a device then deletes the device on the homeserver, which is what makes Synapse
/// drop its cached introspection answers (`synapse/api/auth/mas.py`).
///
/// The device itself stays for the new session (the deletion task keeps a device a live
/// session holds). So the replaced session's tokens, if the homeserver cached them, may work
/// there until the cache expires (2 minutes), as the same user and device: Synapse only drops
/// a cached answer when a request finds the device missing, so no call can cut that short
/// while the device lives on. Run the returned jobs after the commit.
pub async fn claim_device(
    repo: &mut BoxRepository,
    user_id: Ulid,
    device_id: &str,
    keep: Option<Ulid>,
    now: DateTime<Utc>,
) -> Result<AfterCommit, StorageError> {
    let mut jobs = AfterCommit::default();
    let holders = repo
        .oauth2_sessions()
        .list_active_by_device(user_id, device_id)
        .await?;
    for holder in holders.into_iter().filter(|s| Some(s.id) != keep) {
        tracing::info!(session = %holder.id, device_id, "a new session claims the device: the previous one ends");
        jobs.add(end_oauth2_session(repo, holder.id, now).await?);
    }
    if let Some(holder) = repo
        .compat_sessions()
        .find_active_by_device(user_id, device_id)
        .await?
    {
        tracing::info!(session = %holder.id, device_id, "a new session claims the device: the previous compat session ends");
        jobs.push(end_compat_session(repo, &holder, now).await?);
    }
    Ok(jobs)
}

/// Starts a compat (legacy login) session for a user's device, in the caller's transaction:
/// a password or SSO login (`http::compat`), or a token an operator issues
/// (`accounts::issue_compat_token`). A device has one session at a time (client-server API
/// §"Login": logging in with a known `device_id` replaces the device's access token): the
/// user's live session holding the device ID, compat or OAuth 2.0, ends first
/// ([`claim_device`]); the device stays for the new session, and its provisioning mark, if the
/// login made one ([`provisioning::provision_new_device`]), goes with this transaction. The
/// session acts as Synapse administrator when `synapse_admin`. Run the returned jobs after the
/// commit.
pub async fn start_compat_session(
    repo: &mut BoxRepository,
    user_id: Ulid,
    device_id: &str,
    display_name: Option<&str>,
    synapse_admin: bool,
    user_agent: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(CompatSession, AfterCommit), StorageError> {
    let jobs = claim_device(repo, user_id, device_id, None, now).await?;
    provisioning::device_provisioned(repo, user_id, device_id).await?;
    let session = repo
        .compat_sessions()
        .add(user_id, device_id, display_name, synapse_admin, user_agent)
        .await?;
    Ok((session, jobs))
}

/// The one rule for a device a compat login upserted on the homeserver (before its
/// transaction, which holds no connection across that call) when the login then stored no
/// session for it (the database failed, or another request completed the same SSO login
/// first): its deletion is queued and run at once, so no device is left that no session
/// holds. Safe whatever the device ID: the deletion task keeps a device a live session holds
/// (a client logging in again with its own device ID, a login that lost a race to another).
/// Best effort: when even this can't be written (the database is down), the next device
/// sync of the user (`sync_devices`) removes the device.
pub async fn abandon_device(core: &Core, user_id: Ulid, device_id: &str) {
    let task = Task::DeleteDevice {
        user_id,
        device_id: device_id.to_owned(),
    };
    if let Err(e) = provisioning::run_task_now(core, &task).await {
        tracing::warn!(error = %e, device_id, "can't queue the deletion of a device no session holds");
    }
}

/// The refresh token a rotation issued in place of a consumed one, as the rule for the consumed
/// one presented again needs it: the same for OAuth 2.0 and compat tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSuccessor {
    pub id: Ulid,
    /// The access token issued with it.
    pub access_token_id: Option<Ulid>,
    /// Neither consumed nor revoked.
    pub usable: bool,
    /// Its access token (when it has one) was never used (`first_used_at`) nor revoked.
    pub access_unused: bool,
}

impl RefreshSuccessor {
    /// Neither token of the rotation that issued it was used yet.
    fn unused(&self) -> bool {
        self.usable && (self.access_token_id.is_none() || self.access_unused)
    }
}

/// What a consumed refresh token, presented again, may still get (refresh rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumedRefresh {
    /// A retry after a lost response: revoke this successor's unused tokens and issue a new
    /// pair in their place.
    Retry(RefreshSuccessor),
    /// A replay: the token leaked, end the session (RFC 9700 §4.14.2).
    Replay,
}

/// The one rule, for both the OAuth 2.0 refresh grant and the compat `/refresh`, for a refresh
/// token presented after it was consumed at `consumed_at`, given the successor that
/// consumption issued (`None`: there is none). The Matrix client-server API ("Refreshing access
/// tokens") keeps the old refresh token valid until the new access token or the new refresh
/// token is used; this provider also bounds that by `grace_seconds`
/// (`tokens.refresh_grace_seconds`), since a retry follows a lost response closely. Anything
/// else is a replay (RFC 9700 §4.14.2: "the authorization server cannot determine which party
/// submitted the invalid refresh token", so it ends the session).
pub fn consumed_refresh(
    consumed_at: DateTime<Utc>,
    successor: Option<RefreshSuccessor>,
    grace_seconds: u32,
    now: DateTime<Utc>,
) -> ConsumedRefresh {
    match successor {
        Some(next)
            if next.unused() && now < consumed_at + Duration::seconds(i64::from(grace_seconds)) =>
        {
            ConsumedRefresh::Retry(next)
        }
        _ => ConsumedRefresh::Replay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn browser(created: i64, last: Option<i64>) -> BrowserSession {
        BrowserSession {
            id: Ulid::from_parts(1, 1),
            user_id: Ulid::from_parts(1, 2),
            created_at: at(created),
            finished_at: None,
            last_active_at: last.map(at),
            user_agent: None,
            ip_address: None,
        }
    }

    #[test]
    fn browser_sessions_end_when_idle_or_too_old() {
        let lifetimes = BrowserSessionLifetimes {
            idle: Duration::seconds(100),
            max: Duration::seconds(1000),
        };
        let expired = |s: &BrowserSession, now| browser_session_expired(s, lifetimes, at(now));
        let fresh = browser(0, None);
        assert!(!expired(&fresh, 99));
        assert!(expired(&fresh, 100), "idle since it was opened");
        let used = browser(0, Some(950));
        assert!(!expired(&used, 999));
        assert!(expired(&used, 1000), "absolute, however recently used");
        assert!(!expired(&browser(0, Some(500)), 599));
        assert!(expired(&browser(0, Some(500)), 600));
        // A last use before the opening (clock skew) counts from the opening.
        assert!(expired(&browser(100, Some(0)), 200));
        assert!(!expired(&browser(100, Some(0)), 199));
    }

    #[test]
    fn a_use_is_written_once_a_minute() {
        assert!(!browser_session_needs_touch(&browser(0, None), at(59)));
        assert!(browser_session_needs_touch(&browser(0, None), at(60)));
        assert!(!browser_session_needs_touch(
            &browser(0, Some(100)),
            at(159)
        ));
        assert!(browser_session_needs_touch(&browser(0, Some(100)), at(160)));
    }

    #[test]
    fn a_retry_needs_unused_successors_within_the_grace() {
        use ConsumedRefresh::{Replay, Retry};
        let unused = RefreshSuccessor {
            id: Ulid::from_parts(2, 1),
            access_token_id: Some(Ulid::from_parts(2, 2)),
            usable: true,
            access_unused: true,
        };
        assert_eq!(
            consumed_refresh(at(0), Some(unused), 60, at(0)),
            Retry(unused)
        );
        assert_eq!(
            consumed_refresh(at(0), Some(unused), 60, at(59)),
            Retry(unused)
        );
        assert_eq!(consumed_refresh(at(0), Some(unused), 60, at(60)), Replay);
        // No grace: every second presentation is a replay.
        assert_eq!(consumed_refresh(at(0), Some(unused), 0, at(0)), Replay);
        // Either token of the successor used (or revoked), or no successor: a replay.
        let used_access = RefreshSuccessor {
            access_unused: false,
            ..unused
        };
        let used_refresh = RefreshSuccessor {
            usable: false,
            ..unused
        };
        for used in [used_access, used_refresh] {
            assert_eq!(consumed_refresh(at(0), Some(used), 60, at(1)), Replay);
        }
        assert_eq!(consumed_refresh(at(0), None, 60, at(1)), Replay);
        // A successor without an access token is unused while it is usable.
        let alone = RefreshSuccessor {
            access_token_id: None,
            access_unused: false,
            ..unused
        };
        assert_eq!(
            consumed_refresh(at(0), Some(alone), 60, at(1)),
            Retry(alone)
        );
    }
}
