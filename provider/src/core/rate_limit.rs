//! Rate limits on the doors an attacker knocks on: password sign-in (per IP, and failed attempts
//! per account), registration (per IP), email sends (per address and per user), account recovery
//! (per IP and per address), the token endpoint (per client) and failed client authentications
//! (per IP). A request over a limit is
//! answered 429 with `Retry-After` (RFC 6585 §4, RFC 9110 §10.2.3): `M_LIMIT_EXCEEDED` with
//! `retry_after_ms` on the Matrix API (client-server API §"Rate limiting"), an error JSON on the
//! token endpoint, a page saying when to try again in the browser.
//!
//! # The algorithm: GCRA
//!
//! Each (limit, key) pair is a bucket of `burst` units refilled at `per_second`, kept as one
//! number, its *theoretical arrival time* (TAT): the instant the bucket is full again. Spending
//! one unit at `now` moves it to `max(tat, now) + interval` (`interval` = 1 / `per_second`), and
//! is allowed when that is at most `burst × interval` ahead of `now`; a refused spend changes
//! nothing and is told to wait until it would be allowed ([`Quota::spend`]). Over any window of
//! time, at most `burst + window × per_second` spends are granted (the property test below). One
//! number per bucket makes a check one `UPSERT` in the database, which is what lets several
//! replicas share the limits with no service besides the database (see
//! [`crate::storage::RateLimitRepository`] for why that statement is atomic on PostgreSQL).
//!
//! Each check is spent outside the request's transaction (a spend counts even when the request
//! then fails), with the spends of the requests of the moment ([`Storage::spend`]: group commit,
//! one statement on PostgreSQL, each unit spent exactly as alone); the token endpoint's unit is
//! spent by the writer that issues the token ([`RateLimiter::unit`]). Bucket keys come from
//! requests, so they are stored as `<limit>:<hex SHA-256>` ([`bucket_key`]): bounded, and
//! without the usernames, addresses and IPs themselves. Full buckets (nothing spent that is not
//! refilled) are the same as no row; [`crate::core::housekeeping`] deletes them in bounded
//! batches.
//!
//! Time comes from the storage's injected clock, so tests move a mock clock instead of sleeping.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, OnceLock},
    time::Duration,
};

pub use crate::domain::rate_limit::*;
use crate::storage::{BatchedSpend, Spend, Storage, StorageError};

/// Why a check did not let the request through.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The bucket is empty: try again after `retry_after`.
    #[error("rate limited: retry after {retry_after:?}")]
    Limited { retry_after: Duration },
    /// The bucket could not be read: the caller answers as for any storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The limits, checked against the buckets in the database. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    storage: Storage,
    limits: Arc<RateLimits>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(storage: Storage, limits: RateLimits) -> Self {
        Self {
            storage,
            limits: Arc::new(limits),
        }
    }

    /// The quota of a limit, `None` when it is turned off.
    pub fn quota(&self, limit: Limit) -> Option<Quota> {
        self.limits.quota(limit)
    }

    /// Spends one unit of `limit` for `key` (an IP, a username, an email address, a client
    /// id); [`RateLimitError::Limited`] when the bucket is empty. A limit turned off always
    /// passes, without a query. Runs outside any request's transaction, in one shared with the
    /// spends of concurrent requests ([`Storage::spend`]).
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), RateLimitError> {
        match self.unit(limit, key) {
            Some(unit) => self.spend_unit(limit, unit).await,
            None => Ok(()),
        }
    }

    /// [`RateLimiter::check`] keyed by the client's IP address (IPv6 by its /64, see
    /// [`ClientIp::bucket_key`]). Passes when the address is unknown (a server started without
    /// connection info: every server this crate starts passes it).
    pub async fn check_ip(&self, limit: Limit, ip: &ClientIp) -> Result<(), RateLimitError> {
        match self.unit_ip(limit, ip) {
            Some(unit) => self.spend_unit(limit, unit).await,
            None => Ok(()),
        }
    }

    /// The unit a [`RateLimiter::check`] of `limit` for `key` spends, for a write that spends
    /// it itself (`Storage::add_session_with_token`, `Storage::rotate_refresh_token`: one
    /// writer's queue instead of two) or for [`RateLimiter::spend_unit`] later; `None` when the
    /// limit is off.
    pub fn unit(&self, limit: Limit, key: &str) -> Option<BatchedSpend> {
        self.limits.quota(limit).map(|quota| BatchedSpend {
            key: bucket_key(limit, key),
            quota,
        })
    }

    /// [`RateLimiter::unit`] keyed by the client's IP address, as [`RateLimiter::check_ip`];
    /// `None` when the limit is off or the address unknown.
    pub fn unit_ip(&self, limit: Limit, ip: &ClientIp) -> Option<BatchedSpend> {
        self.limits.quota(limit)?;
        match ip.bucket_key() {
            Some(key) => self.unit(limit, &key),
            None => {
                warn_unknown_peer_once();
                None
            }
        }
    }

    /// Spends a unit of `limit` taken by [`RateLimiter::unit`], as [`RateLimiter::check`].
    pub async fn spend_unit(&self, limit: Limit, unit: BatchedSpend) -> Result<(), RateLimitError> {
        // Group-committed with the spends of the other requests of the moment
        // (`Storage::spend`): each unit is spent exactly as alone, the batch commits once.
        match self.storage.spend(unit.key, unit.quota).await? {
            Spend::Granted => Ok(()),
            Spend::Refused { retry_after } => Err(self.refused(limit, retry_after)),
        }
    }

    /// A unit of `limit` refused (by [`RateLimiter::spend_unit`], or by the write that spent
    /// it): logged, and the error a check answers.
    pub fn refused(&self, limit: Limit, retry_after: Duration) -> RateLimitError {
        tracing::info!(
            limit = limit.name(),
            retry_after_ms = retry_after.as_millis() as u64,
            "rate limited"
        );
        RateLimitError::Limited { retry_after }
    }

    /// Whether a [`RateLimiter::check`] of `limit` for `key` would pass now, without spending:
    /// `Err(Limited)` when the bucket is empty. For limits that count only failures, checked
    /// before an attempt and spent by [`RateLimiter::count_failure`] after a failed one: a
    /// success costs one read. Concurrent failures may overshoot the burst by as many as run
    /// at once (the check and the spend are two statements).
    pub async fn peek(&self, limit: Limit, key: &str) -> Result<(), RateLimitError> {
        let Some(key) = self.peek_key(limit, key) else {
            return Ok(());
        };
        // A read on the hot path (every client authentication): one statement shared with the
        // other requests peeking at that moment (`Storage::peek_rate_limit`).
        let tat = self.storage.peek_rate_limit(&key).await?;
        self.judge_peek(limit, tat)
    }

    /// The bucket [`RateLimiter::peek`] reads for `limit` and `key`; `None` when the limit is
    /// off (nothing to read). For callers that read the bucket together with something else
    /// (client authentication: `Storage::find_client_with_bucket`), then ask
    /// [`RateLimiter::judge_peek`].
    pub fn peek_key(&self, limit: Limit, key: &str) -> Option<String> {
        self.limits.quota(limit).map(|_| bucket_key(limit, key))
    }

    /// [`RateLimiter::peek`]'s answer for a bucket whose time (`tat`) was read already.
    pub fn judge_peek(&self, limit: Limit, tat: Option<i64>) -> Result<(), RateLimitError> {
        let Some(quota) = self.limits.quota(limit) else {
            return Ok(());
        };
        let now = self.storage.entropy().clock.now().timestamp_micros();
        match quota.spend(tat, now) {
            Ok(_) => Ok(()),
            Err(wait) => {
                tracing::info!(
                    limit = limit.name(),
                    retry_after_ms = wait / 1000,
                    "rate limited"
                );
                Err(RateLimitError::Limited {
                    retry_after: Duration::from_micros(wait),
                })
            }
        }
    }

    /// Spends one unit of `limit` for `key` after a failed attempt, whatever is left (see
    /// [`RateLimiter::peek`]).
    pub async fn count_failure(&self, limit: Limit, key: &str) -> Result<(), StorageError> {
        let Some(quota) = self.limits.quota(limit) else {
            return Ok(());
        };
        self.storage
            .spend(bucket_key(limit, key), quota)
            .await
            .map(|_| ())
    }

    /// Remembers `what` (a [`marker_key`]) for `period` from now; see
    /// [`RateLimiter::remembers`]. Stored in the buckets' table, so housekeeping forgets it
    /// once the period is over, and every replica sees it.
    pub async fn remember(&self, what: &str, period: Duration) -> Result<(), StorageError> {
        let until = self.storage.entropy().clock.now().timestamp_micros()
            + i64::try_from(period.as_micros()).unwrap_or(i64::MAX / 2);
        let mut repo = self.storage.reader().await?;
        repo.rate_limits().hold_until(what, until).await
    }

    /// Whether [`RateLimiter::remember`] stored `what` less than its period ago.
    pub async fn remembers(&self, what: &str) -> Result<bool, StorageError> {
        let now = self.storage.entropy().clock.now().timestamp_micros();
        let mut repo = self.storage.reader().await?;
        Ok(repo
            .rate_limits()
            .peek(what)
            .await?
            .is_some_and(|until| until > now))
    }

    /// Gives back the unit a [`RateLimiter::check`] of `limit` for `key` took: the attempt
    /// turned out not to count (a sign-in with the right password is not a failed attempt).
    pub async fn refund(&self, limit: Limit, key: &str) -> Result<(), StorageError> {
        let Some(quota) = self.limits.quota(limit) else {
            return Ok(());
        };
        let mut repo = self.storage.reader().await?;
        repo.rate_limits()
            .refund(&bucket_key(limit, key), quota)
            .await
    }
}

/// The stored key of a marker for [`RateLimiter::remember`]: `<what>:<hex SHA-256 of key>`,
/// bounded and without the key itself, like a bucket's ([`bucket_key`]).
pub fn marker_key(what: &str, key: &str) -> String {
    format!("{what}:{}", hex::encode(crate::crypto::sha256(key)))
}

/// A key made of several parts (an account and an address), unambiguous whatever the parts
/// hold: each is length-prefixed.
pub fn compound_key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| format!("{}:{p}", p.len()))
        .collect::<Vec<_>>()
        .join("|")
}

/// The client's IP address, as per-IP limits key it (see the module documentation); `None` when
/// the server was started without connection info (`into_make_service_with_connect_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The bucket key of the address: an IPv4 address itself; an IPv6 address by its /64
    /// network, since one subscriber gets a whole /64 and can pick any address in it.
    pub fn bucket_key(&self) -> Option<String> {
        self.0.map(|ip| match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let network = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
                format!("{network}/64")
            }
        })
    }
}

/// Says once that per-IP limits are off because the server gives no peer addresses.
pub(crate) fn warn_unknown_peer_once() {
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        tracing::warn!("per-IP rate limits are not applied: the server does not pass the peer address (serve the router with into_make_service_with_connect_info)");
    });
}

#[cfg(test)]
mod client_ip_tests {
    use std::net::IpAddr;

    use super::ClientIp;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientIp(Some(ip("2001:db8:1:2:aaaa::1")));
        let b = ClientIp(Some(ip("2001:db8:1:2:bbbb::2")));
        assert_eq!(a.bucket_key(), b.bucket_key());
        assert_eq!(a.bucket_key().as_deref(), Some("2001:db8:1:2::/64"));
        assert_ne!(
            a.bucket_key(),
            ClientIp(Some(ip("2001:db8:1:3::1"))).bucket_key()
        );
        assert_eq!(
            ClientIp(Some(ip("203.0.113.7"))).bucket_key().as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(ClientIp(None).bucket_key(), None);
    }
}
