//! Rate-limit arithmetic: what is limited, quotas, and GCRA (the generic cell rate algorithm)
//! as a pure function. The limiter that keeps the buckets in the database is
//! `provider::core::rate_limit`; the algorithm and its reasons are described there.

use std::{fmt, time::Duration};

/// What is limited, each with its own quota (`rate_limiting.<section>.<name>` in the
/// configuration, see [`Limit::config_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Sign-in attempts (login page, legacy `m.login.password`) per client IP, counted before
    /// the password is checked.
    LoginPerIp,
    /// Failed sign-in attempts per account (username) from one client address (IPv6 by its
    /// /64). When the bucket is empty, sign-ins to the account from that address are refused
    /// without checking the password; other addresses are not affected, so a stranger can't
    /// lock the owner out (README "Rate limits").
    LoginPerAccount,
    /// Failed sign-in attempts per account from any address: a much larger bucket that bounds
    /// guessing from many addresses at once. When it is empty, only addresses where the
    /// account signed in recently still get their password checked.
    LoginPerAccountGlobal,
    /// Registration attempts per client IP.
    Registration,
    /// Emails sent to one address.
    EmailSend,
    /// Emails sent on behalf of one user (key: the user's ID).
    EmailSendPerUser,
    /// Account recovery requests per email address.
    Recovery,
    /// Account recovery requests per client IP.
    RecoveryPerIp,
    /// Token requests per authenticated client (per IP for public clients).
    Token,
    /// Dynamic client registrations (`/oauth2/registration`, RFC 7591) per client IP.
    ClientRegistration,
    /// Device authorization requests (`/oauth2/device`, RFC 8628 §3.1) per client IP.
    DeviceAuthorization,
    /// Authorization requests (`/authorize`, each stores a grant) per client IP.
    Authorize,
    /// Legacy SSO redirects (`/login/sso/redirect`, each stores a login) per client IP.
    CompatSsoRedirect,
    /// User codes entered on the device verification page per client IP (RFC 8628 §5.1).
    UserCodePerIp,
    /// User codes entered on the device verification page per browser session (RFC 8628 §5.1).
    UserCodePerSession,
    /// Failed client authentications (RFC 6749 §2.3) per client IP. Never per `client_id`:
    /// whoever names a client would spend its bucket and keep it out.
    ClientAuthPerIp,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 16] = [
        Limit::LoginPerIp,
        Limit::LoginPerAccount,
        Limit::LoginPerAccountGlobal,
        Limit::Registration,
        Limit::EmailSend,
        Limit::EmailSendPerUser,
        Limit::Recovery,
        Limit::RecoveryPerIp,
        Limit::Token,
        Limit::ClientRegistration,
        Limit::DeviceAuthorization,
        Limit::Authorize,
        Limit::CompatSsoRedirect,
        Limit::UserCodePerIp,
        Limit::UserCodePerSession,
        Limit::ClientAuthPerIp,
    ];

    /// Its name in logs and in stored bucket keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::LoginPerIp => "login_per_ip",
            Self::LoginPerAccount => "login_per_account",
            Self::LoginPerAccountGlobal => "login_per_account_global",
            Self::Registration => "registration_per_ip",
            Self::EmailSend => "email_per_address",
            Self::EmailSendPerUser => "email_per_user",
            Self::Recovery => "recovery_per_address",
            Self::RecoveryPerIp => "recovery_per_ip",
            Self::Token => "token_per_client",
            Self::ClientRegistration => "client_registration_per_ip",
            Self::DeviceAuthorization => "device_authorization_per_ip",
            Self::Authorize => "authorize_per_ip",
            Self::CompatSsoRedirect => "compat_sso_per_ip",
            Self::UserCodePerIp => "user_code_per_ip",
            Self::UserCodePerSession => "user_code_per_session",
            Self::ClientAuthPerIp => "client_auth_failures_per_ip",
        }
    }

    /// Where its quota is configured, under `rate_limiting`.
    pub fn config_path(self) -> (&'static str, &'static str) {
        match self {
            Self::LoginPerIp => ("login", "per_ip"),
            Self::LoginPerAccount => ("login", "per_account"),
            Self::LoginPerAccountGlobal => ("login", "per_account_global"),
            Self::Registration => ("registration", "per_ip"),
            Self::EmailSend => ("email", "per_address"),
            Self::EmailSendPerUser => ("email", "per_user"),
            Self::Recovery => ("recovery", "per_address"),
            Self::RecoveryPerIp => ("recovery", "per_ip"),
            Self::Token => ("token", "per_client"),
            Self::ClientRegistration => ("client_registration", "per_ip"),
            Self::DeviceAuthorization => ("device_authorization", "per_ip"),
            Self::Authorize => ("authorize", "per_ip"),
            Self::CompatSsoRedirect => ("compat_sso", "per_ip"),
            Self::UserCodePerIp => ("user_code", "per_ip"),
            Self::UserCodePerSession => ("user_code", "per_session"),
            Self::ClientAuthPerIp => ("client_auth", "failures_per_ip"),
        }
    }

    /// The production default `(burst, per_second)`; README "Rate limits" says why each. The
    /// rates are short decimals, so that a generated configuration file shows them exactly.
    pub fn default_rate(self) -> (u32, f64) {
        match self {
            // One office behind one NAT address signs in 20 people at once, then one every
            // 5 seconds (720 an hour); a password guesser from one address gets the same.
            Self::LoginPerIp => (20, 0.2),
            // 5 wrong passwords in a row from one address, then about one a minute: some 1,450
            // guesses a day against one account from one address (IPv6: one /64).
            Self::LoginPerAccount => (5, 0.0167),
            // 100 wrong passwords from any number of addresses, then one every 30 seconds:
            // about 3,000 guesses a day at most against one account from a whole botnet.
            Self::LoginPerAccountGlobal => (100, 0.0333),
            // 10 accounts at once from one address, then about one every 5 minutes. Every
            // attempt counts (one with a taken username too): it also bounds username probing.
            Self::Registration => (10, 0.0033),
            // 3 mails to one address, then about one every 10 minutes: no inbox is flooded.
            Self::EmailSend => (3, 0.0017),
            // 10 mails for one user, then about one a minute: one account can't mail many.
            Self::EmailSendPerUser => (10, 0.0167),
            // 3 recovery mails to one address, then about one an hour.
            Self::Recovery => (3, 0.0003),
            // 5 recovery requests from one address, then about one every 5 minutes.
            Self::RecoveryPerIp => (5, 0.0033),
            // A client refreshing the tokens of 30,000 active users (5-minute access tokens)
            // needs 100 a second: this stops a runaway client, not a working one.
            Self::Token => (600, 100.0),
            // A conference hall installing apps behind one NAT address registers 100 clients at
            // once, then one every 10 seconds (a conformance run from one machine registers
            // about 50): each registration is a stored row, and unused ones are deleted after
            // a week, so one address keeps at most some 60,000 rows.
            Self::ClientRegistration => (100, 0.1),
            // 20 device requests (TVs, QR logins) at once, then one every 30 seconds.
            Self::DeviceAuthorization => (20, 0.0333),
            // Each stores a grant: 60 sign-ins at once from one address, then one every 5
            // seconds (an office's morning, as `login.per_ip`).
            Self::Authorize => (60, 0.2),
            // Each stores a login: 30 at once, then one every 10 seconds.
            Self::CompatSsoRedirect => (30, 0.1),
            // RFC 8628 §5.1: 10 codes typed from one address, then one a minute: against
            // 20^8 codes that is hopeless guessing.
            Self::UserCodePerIp => (10, 0.0167),
            // 5 codes typed in one browser session, then one a minute.
            Self::UserCodePerSession => (5, 0.0167),
            // 20 wrong client credentials from one address, then one every 10 seconds.
            Self::ClientAuthPerIp => (20, 0.1),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest burst a quota may have.
pub const MAX_BURST: u32 = 100_000;
/// The slowest refill: one unit in about 11.6 days (intervals are whole microseconds, at most
/// 10¹², so `burst × interval` stays far from overflowing).
pub const MIN_PER_SECOND: f64 = 1e-6;
/// The fastest refill: one unit a microsecond.
pub const MAX_PER_SECOND: f64 = 1e6;

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    burst: u32,
    /// Microseconds to refill one unit (≥ 1).
    interval: i64,
}

impl Quota {
    /// `burst` units (1 to [`MAX_BURST`]) refilled at `per_second` ([`MIN_PER_SECOND`] to
    /// [`MAX_PER_SECOND`]); `Err` says what is wrong.
    pub fn new(burst: u32, per_second: f64) -> Result<Self, String> {
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(format!("the burst must be 1 to {MAX_BURST}, not {burst}"));
        }
        if !per_second.is_finite() || !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&per_second) {
            return Err(format!(
                "per_second must be a number from {MIN_PER_SECOND} to {MAX_PER_SECOND}, not {per_second}"
            ));
        }
        // In range: 1e6 / per_second is within [1, 1e12], so the cast is exact enough.
        #[allow(clippy::cast_possible_truncation)]
        let interval = (1e6 / per_second).round().max(1.0) as i64;
        Ok(Self { burst, interval })
    }

    pub fn burst(self) -> u32 {
        self.burst
    }

    /// The time to refill one unit.
    pub fn interval(self) -> Duration {
        Duration::from_micros(u64::try_from(self.interval).unwrap_or(1))
    }

    /// The time to refill one unit, in microseconds (as the storage computes).
    pub fn interval_micros(self) -> i64 {
        self.interval
    }

    /// How far ahead of now a bucket's TAT may run: `burst × interval`, in microseconds.
    pub fn tolerance_micros(self) -> i64 {
        i64::from(self.burst).saturating_mul(self.interval)
    }

    /// GCRA: spends one unit at `now` of a bucket whose TAT is `tat` (`None`: no bucket yet,
    /// i.e. full). `Ok(new TAT)` when granted; `Err(microseconds to wait)` when the bucket is
    /// empty (and then the bucket is unchanged). Times are microseconds since the Unix epoch.
    /// The storage computes exactly this in SQL.
    pub fn spend(self, tat: Option<i64>, now: i64) -> Result<i64, u64> {
        let base = match tat {
            Some(tat) if tat > now => tat,
            _ => now,
        };
        let new_tat = base.saturating_add(self.interval);
        let ahead = new_tat.saturating_sub(now);
        let tolerance = self.tolerance_micros();
        if ahead <= tolerance {
            Ok(new_tat)
        } else {
            Err(u64::try_from(ahead - tolerance).unwrap_or(u64::MAX))
        }
    }
}

/// The quota of each limit; `None` where a limit is turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    quotas: [Option<Quota>; Limit::ALL.len()],
}

impl RateLimits {
    /// Every limit at its production default ([`Limit::default_rate`]).
    pub fn defaults() -> Self {
        let mut limits = Self::off();
        for limit in Limit::ALL {
            let (burst, per_second) = limit.default_rate();
            limits.set(limit, Quota::new(burst, per_second).ok());
        }
        limits
    }

    /// Every limit turned off.
    pub fn off() -> Self {
        Self {
            quotas: [None; Limit::ALL.len()],
        }
    }

    pub fn quota(&self, limit: Limit) -> Option<Quota> {
        self.quotas[limit as usize]
    }

    pub fn set(&mut self, limit: Limit, quota: Option<Quota>) {
        self.quotas[limit as usize] = quota;
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::defaults()
    }
}

/// How a bucket is stored: the limit's name, and the SHA-256 of the key (which came from a
/// request: bounded in length, and the table holds no usernames, addresses or IPs).
pub fn bucket_key(limit: Limit, key: &str) -> String {
    format!(
        "{}:{}",
        limit.name(),
        hex::encode(crate::crypto::sha256(key))
    )
}

/// The `Retry-After` value for a wait (RFC 9110 §10.2.3: whole seconds), rounded up and at
/// least 1: a client told 0 would retry at once and be refused again.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1_000_000).max(1) as u64
}

/// A wait in words, for pages: "in 1 second", "in 40 seconds", "in 5 minutes", "in 2 hours"
/// (rounded up).
pub fn wait_in_words(wait: Duration) -> String {
    let seconds = retry_after_seconds(wait);
    let (n, unit) = if seconds < 60 {
        (seconds, "second")
    } else if seconds < 3600 {
        (seconds.div_ceil(60), "minute")
    } else {
        (seconds.div_ceil(3600), "hour")
    };
    if n == 1 {
        format!("in 1 {unit}")
    } else {
        format!("in {n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn a_full_bucket_grants_its_burst_at_once_then_refills_at_its_rate() {
        let quota = Quota::new(3, 0.5).unwrap();
        assert_eq!(quota.interval(), Duration::from_secs(2));
        let now = 1_000 * S;
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(quota.spend(tat, now).unwrap());
        }
        // Empty: the next unit is back in one interval.
        assert_eq!(quota.spend(tat, now), Err(2 * S as u64));
        assert_eq!(quota.spend(tat, now + S), Err(S as u64));
        let refilled = quota.spend(tat, now + 2 * S).unwrap();
        assert_eq!(quota.spend(Some(refilled), now + 2 * S), Err(2 * S as u64));
        // Long idle: full again, never more than the burst.
        let mut tat = Some(refilled);
        let later = now + 3600 * S;
        for _ in 0..3 {
            tat = Some(quota.spend(tat, later).unwrap());
        }
        assert!(quota.spend(tat, later).is_err());
    }

    #[test]
    fn quotas_are_checked() {
        assert!(Quota::new(0, 1.0).is_err());
        assert!(Quota::new(MAX_BURST + 1, 1.0).is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-7, 2e6] {
            assert!(Quota::new(1, bad).is_err(), "{bad}");
        }
        assert_eq!(Quota::new(1, 1e6).unwrap().interval_micros(), 1);
        assert_eq!(
            Quota::new(1, 1e-6).unwrap().interval_micros(),
            1_000_000_000_000
        );
        for limit in Limit::ALL {
            assert!(RateLimits::defaults().quota(limit).is_some(), "{limit}");
            assert_eq!(RateLimits::off().quota(limit), None);
        }
    }

    #[test]
    fn waits_in_words_and_headers() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(wait_in_words(Duration::from_millis(10)), "in 1 second");
        assert_eq!(wait_in_words(Duration::from_secs(40)), "in 40 seconds");
        assert_eq!(wait_in_words(Duration::from_secs(61)), "in 2 minutes");
        assert_eq!(wait_in_words(Duration::from_secs(3600)), "in 1 hour");
        assert_eq!(wait_in_words(Duration::from_secs(3601)), "in 2 hours");
    }

    #[test]
    fn bucket_keys_are_bounded_and_hide_the_key() {
        let key = bucket_key(Limit::LoginPerAccount, &"alice".repeat(1000));
        assert!(key.starts_with("login_per_account:"));
        assert_eq!(key.len(), "login_per_account:".len() + 64);
        assert!(!bucket_key(Limit::EmailSend, "alice@example.org").contains("alice"));
        assert_ne!(
            bucket_key(Limit::LoginPerIp, "a"),
            bucket_key(Limit::Registration, "a")
        );
    }

    proptest! {
        /// Over any window of time, GCRA grants at most `burst + window × rate` spends; a
        /// refused spend is granted once its wait is over; and a full bucket grants its whole
        /// burst at once.
        #[test]
        fn never_more_than_burst_plus_refill(
            burst in 1u32..20,
            per_second in prop_oneof![0.01f64..1.0, 1.0f64..1000.0],
            steps in proptest::collection::vec(0i64..3 * S, 1..150),
        ) {
            let quota = Quota::new(burst, per_second).unwrap();
            let interval = quota.interval_micros();
            let mut now = 1_700_000_000 * S;
            let mut tat = None;
            let mut granted = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                // Bursts: every other step comes at the same instant as the previous one.
                if i % 2 == 1 {
                    now += step;
                }
                match quota.spend(tat, now) {
                    Ok(new_tat) => {
                        prop_assert!(new_tat > now);
                        tat = Some(new_tat);
                        granted.push(now);
                    }
                    Err(wait) => {
                        let wait = i64::try_from(wait).unwrap();
                        prop_assert!(wait > 0);
                        prop_assert!(quota.spend(tat, now + wait).is_ok());
                        prop_assert!(wait == 1 || quota.spend(tat, now + wait - 1).is_err());
                    }
                }
            }
            for (a, start) in granted.iter().enumerate() {
                for (b, end) in granted.iter().enumerate().skip(a) {
                    let count = i64::try_from(b - a + 1).unwrap();
                    // count ≤ burst + (end - start) / interval, without rounding.
                    prop_assert!(
                        (count - i64::from(burst)) * interval <= end - start,
                        "{count} spends granted between {start} and {end}"
                    );
                }
            }
            let mut full = None;
            for _ in 0..burst {
                full = Some(quota.spend(full, now).unwrap());
            }
            prop_assert!(quota.spend(full, now).is_err());
        }
    }
}
