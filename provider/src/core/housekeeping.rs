//! Housekeeping: deletes the rows nothing needs any longer, so short-lived tables stay small.
//!
//! Every [`INTERVAL`] `provider serve` (and the playground) runs [`run_once`]: full rate-limit
//! buckets (the same as no row, see [`crate::core::rate_limit`]), expired email verification codes,
//! expired recovery tickets, expired pending registrations, the `jti`s of expired client
//! assertions (an expired assertion is refused for its `exp` anyway, RFC 7523 §3 item 4), and,
//! a [`GRACE`] after they ended or began, device code grants and upstream authorization
//! sessions (consumed, or abandoned halfway through the upstream's pages), and the marks of
//! devices being provisioned that an exchange left behind when it died or its homeserver call
//! failed (a mark counts for a day at most, `provisioning_window`; [`GRACE`] is as long).
//!
//! What anyone may create without signing in and then abandon goes too, so nobody can grow the
//! database by starting flows they never finish:
//! - authorization grants whose code was never exchanged, a [`GRACE`] after `/authorize`
//!   stored them (a code is valid for 10 minutes; the login page may sit open a while longer);
//! - legacy SSO logins never exchanged, a [`GRACE`] after the redirect stored them (the page
//!   is valid for 10 minutes, the login token for less);
//! - dynamically registered clients that never got a session, [`UNUSED_CLIENT_AGE`] after
//!   they registered (a client registers just before its first sign-in; one that comes back
//!   later registers again, as MSC2966 clients do for an unknown `client_id`), once no grant
//!   or device code of theirs is left (someone may be signing in with it right now).
//!
//! An abandoned grant or SSO login may have started a session that never got a token: the
//! user approved but the code was never exchanged, or an exchange claimed it, upserted the
//! device on the homeserver and died before completing; a legacy SSO login was completed (its
//! device upserted) but its `loginToken` never exchanged. Such a session can't get a token
//! any more (the code, the login token, are long expired), yet it is live and holds a device
//! ID, so the homeserver would keep its device. Those sessions are ended first, through the
//! one function that ends a session ([`sessions::end_oauth2_session`],
//! [`sessions::end_compat_session`]), which queues the device's deletion for the job worker;
//! the rows go after them (storage keeps the rows of a live session, so a row is never deleted
//! under a session that still lives).
//!
//! The work of a run is bounded: each table gets at most [`BATCHES_PER_RUN`] deletes of
//! [`BATCH`] rows, each in its own short transaction, so a backlog is worked off over a few runs
//! without long locks. Every replica may run it: the deletes are idempotent. Time comes from the
//! storage's injected clock, so tests move a mock clock instead of sleeping.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{
    core::sessions,
    storage::{BoxRepository, Storage, StorageError},
};

/// How many rows one delete removes at most.
pub const BATCH: u32 = 1000;
/// How many deletes one run makes per table at most.
pub const BATCHES_PER_RUN: u32 = 5;
/// How often `provider serve` runs [`run_once`].
pub const INTERVAL: Duration = Duration::from_secs(60);
/// How long finished device code grants and started upstream authorization sessions are
/// kept: a late poll still gets `expired_token` (RFC 8628 §3.5), and a recent sign-in can be
/// traced.
pub const GRACE: chrono::Duration = chrono::Duration::days(1);

/// How long a dynamically registered client that never got a session is kept.
pub const UNUSED_CLIENT_AGE: chrono::Duration = chrono::Duration::days(7);

/// How many rows of each table a run deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub rate_limit_buckets: u64,
    pub email_verifications: u64,
    pub pending_registrations: u64,
    pub recovery_tickets: u64,
    pub client_assertion_jtis: u64,
    pub device_code_grants: u64,
    pub upstream_sessions: u64,
    pub abandoned_authorization_grants: u64,
    pub abandoned_compat_sso_logins: u64,
    pub unused_clients: u64,
    pub stale_device_provisioning_marks: u64,
}

impl Deleted {
    pub fn total(&self) -> u64 {
        self.rate_limit_buckets
            + self.email_verifications
            + self.pending_registrations
            + self.recovery_tickets
            + self.client_assertion_jtis
            + self.device_code_grants
            + self.upstream_sessions
            + self.abandoned_authorization_grants
            + self.abandoned_compat_sso_logins
            + self.unused_clients
            + self.stale_device_provisioning_marks
    }
}

/// The tables cleaned up.
#[derive(Debug, Clone, Copy)]
enum Table {
    RateLimitBuckets,
    EmailVerifications,
    PendingRegistrations,
    RecoveryTickets,
    ClientAssertionJtis,
    DeviceCodeGrants,
    UpstreamSessions,
    AuthorizationGrants,
    CompatSsoLogins,
    UnusedClients,
    DeviceProvisioningMarks,
}

impl Table {
    const ALL: [Table; 11] = [
        Table::RateLimitBuckets,
        Table::EmailVerifications,
        Table::PendingRegistrations,
        Table::RecoveryTickets,
        Table::ClientAssertionJtis,
        Table::DeviceCodeGrants,
        Table::UpstreamSessions,
        Table::AuthorizationGrants,
        Table::CompatSsoLogins,
        Table::UnusedClients,
        Table::DeviceProvisioningMarks,
    ];

    /// Deletes one batch of the table's dead rows, as of `now`.
    async fn delete_batch(
        self,
        repo: &mut BoxRepository,
        now: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        match self {
            // Full as of the storage clock's now.
            Table::RateLimitBuckets => repo.rate_limits().delete_full(BATCH).await,
            Table::EmailVerifications => {
                repo.user_email_verifications()
                    .delete_expired(now, BATCH)
                    .await
            }
            Table::PendingRegistrations => {
                repo.pending_registrations()
                    .delete_expired(now, BATCH)
                    .await
            }
            Table::RecoveryTickets => repo.recovery_tickets().delete_expired(now, BATCH).await,
            Table::ClientAssertionJtis => repo.client_assertions().delete_expired(now, BATCH).await,
            Table::DeviceCodeGrants => {
                repo.device_code_grants()
                    .delete_expired(now - GRACE, BATCH)
                    .await
            }
            Table::UpstreamSessions => {
                repo.upstream_sessions()
                    .delete_expired(now - GRACE, BATCH)
                    .await
            }
            Table::AuthorizationGrants => {
                let before = now - GRACE;
                let live = repo
                    .authorization_grants()
                    .live_sessions_of_abandoned(before, BATCH)
                    .await?;
                for session_id in live {
                    tracing::info!(session = %session_id, "housekeeping: a session whose code was never exchanged ends");
                    // The device's deletion is queued: the job worker runs it.
                    let _queued = sessions::end_oauth2_session(repo, session_id, now).await?;
                }
                repo.authorization_grants()
                    .delete_abandoned(before, BATCH)
                    .await
            }
            Table::CompatSsoLogins => {
                let before = now - GRACE;
                let live = repo
                    .compat_sso_logins()
                    .live_sessions_of_abandoned(before, BATCH)
                    .await?;
                for session_id in live {
                    if let Some(session) = repo.compat_sessions().lookup(session_id).await? {
                        tracing::info!(session = %session_id, "housekeeping: a legacy SSO session whose login token was never exchanged ends");
                        // The device's deletion is queued: the job worker runs it.
                        sessions::end_compat_session(repo, &session, now).await?;
                    }
                }
                repo.compat_sso_logins()
                    .delete_abandoned(before, BATCH)
                    .await
            }
            Table::UnusedClients => {
                repo.clients()
                    .delete_unused_dynamic(now - UNUSED_CLIENT_AGE, BATCH)
                    .await
            }
            // Older than any provisioning window (capped at a day): they no longer count.
            Table::DeviceProvisioningMarks => {
                repo.jobs()
                    .delete_stale_device_provisioning(now - GRACE, BATCH)
                    .await
            }
        }
    }

    fn count(self, deleted: &mut Deleted) -> &mut u64 {
        match self {
            Table::RateLimitBuckets => &mut deleted.rate_limit_buckets,
            Table::EmailVerifications => &mut deleted.email_verifications,
            Table::PendingRegistrations => &mut deleted.pending_registrations,
            Table::RecoveryTickets => &mut deleted.recovery_tickets,
            Table::ClientAssertionJtis => &mut deleted.client_assertion_jtis,
            Table::DeviceCodeGrants => &mut deleted.device_code_grants,
            Table::UpstreamSessions => &mut deleted.upstream_sessions,
            Table::AuthorizationGrants => &mut deleted.abandoned_authorization_grants,
            Table::CompatSsoLogins => &mut deleted.abandoned_compat_sso_logins,
            Table::UnusedClients => &mut deleted.unused_clients,
            Table::DeviceProvisioningMarks => &mut deleted.stale_device_provisioning_marks,
        }
    }
}

/// One run: for each table, deletes in batches of [`BATCH`] (each its own transaction) until
/// a batch comes back short or [`BATCHES_PER_RUN`] were made. Returns what it deleted.
pub async fn run_once(storage: &Storage) -> Result<Deleted, StorageError> {
    let mut deleted = Deleted::default();
    for table in Table::ALL {
        for _ in 0..BATCHES_PER_RUN {
            let now = storage.entropy().clock.now();
            let mut repo = storage.begin().await?;
            let n = table.delete_batch(&mut repo, now).await?;
            repo.commit().await?;
            *table.count(&mut deleted) += n;
            if n < u64::from(BATCH) {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Runs [`run_once`] every [`INTERVAL`] until `shutdown` resolves; a failed run is logged and
/// the next one tries again.
pub async fn run(storage: Storage, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        match run_once(&storage).await {
            Ok(deleted) if deleted.total() == 0 => {}
            Ok(d) => tracing::info!(
                rate_limit_buckets = d.rate_limit_buckets,
                email_verifications = d.email_verifications,
                pending_registrations = d.pending_registrations,
                recovery_tickets = d.recovery_tickets,
                client_assertion_jtis = d.client_assertion_jtis,
                device_code_grants = d.device_code_grants,
                upstream_sessions = d.upstream_sessions,
                abandoned_authorization_grants = d.abandoned_authorization_grants,
                abandoned_compat_sso_logins = d.abandoned_compat_sso_logins,
                unused_clients = d.unused_clients,
                "housekeeping: deleted expired rows"
            ),
            Err(e) => tracing::warn!(error = %e, "housekeeping: can't delete expired rows"),
        }
    }
}
