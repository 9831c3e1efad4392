//! The `sessions` section: how long a browser session (the sign-in cookie of the provider's
//! own pages) lasts.
//!
//! A browser session ends when it was not used for `browser_idle_seconds`, and in any case
//! `browser_max_seconds` after it was opened (OWASP Session Management Cheat Sheet, "Session
//! Expiration": an idle and an absolute timeout). Times come from the injected clock. The
//! OAuth 2.0 and compat sessions approved from it (the Matrix devices) are not affected: they
//! live on their refresh tokens.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use super::{Config, Problem};

/// Neither lifetime may be shorter than this (a sign-in must outlive the pages it leads to).
pub const MIN_BROWSER_SESSION_SECONDS: u64 = 300;
/// Nor longer than this (a year).
pub const MAX_BROWSER_SESSION_SECONDS: u64 = 366 * 24 * 3600;

/// `sessions`: browser session lifetimes, in seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsConfig {
    /// A browser session not used for this long ends (idle timeout). Default 7 days.
    #[serde(default = "default_idle")]
    pub browser_idle_seconds: u64,
    /// A browser session ends this long after it was opened, however much it is used
    /// (absolute timeout). Default 30 days.
    #[serde(default = "default_max")]
    pub browser_max_seconds: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            browser_idle_seconds: default_idle(),
            browser_max_seconds: default_max(),
        }
    }
}

fn default_idle() -> u64 {
    7 * 24 * 3600
}

fn default_max() -> u64 {
    30 * 24 * 3600
}

/// The lifetimes a browser session is held to (`sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowserSessionLifetimes {
    /// Ends after this long without use.
    pub idle: Duration,
    /// Ends this long after it was opened.
    pub max: Duration,
}

impl Default for BrowserSessionLifetimes {
    fn default() -> Self {
        SessionsConfig::default().lifetimes()
    }
}

impl SessionsConfig {
    fn lifetimes(&self) -> BrowserSessionLifetimes {
        let seconds = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        BrowserSessionLifetimes {
            idle: seconds(self.browser_idle_seconds),
            max: seconds(self.browser_max_seconds),
        }
    }
}

/// What `config generate` writes for this section.
pub const GENERATED: &str = "\
# Browser sessions: the sign-in of the provider's own pages (login, consent, account). One
# ends after `browser_idle_seconds` without use and `browser_max_seconds` after sign-in,
# whatever its use; then the user signs in again. Matrix devices signed in from it stay.
sessions:
  browser_idle_seconds: 604800    # 7 days
  browser_max_seconds: 2592000    # 30 days
";

impl Config {
    /// `sessions`, checked against its bounds.
    pub(super) fn resolve_sessions(&self, p: &mut Vec<Problem>) -> BrowserSessionLifetimes {
        let s = &self.sessions;
        for (name, value) in [
            ("browser_idle_seconds", s.browser_idle_seconds),
            ("browser_max_seconds", s.browser_max_seconds),
        ] {
            if !(MIN_BROWSER_SESSION_SECONDS..=MAX_BROWSER_SESSION_SECONDS).contains(&value) {
                p.push(Problem::new(
                    format!("sessions.{name}"),
                    format!(
                        "must be between {MIN_BROWSER_SESSION_SECONDS} and {MAX_BROWSER_SESSION_SECONDS}"
                    ),
                ));
            }
        }
        if s.browser_idle_seconds > s.browser_max_seconds {
            p.push(Problem::new(
                "sessions.browser_idle_seconds",
                "must not exceed sessions.browser_max_seconds",
            ));
        }
        s.lifetimes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::Duration;

    use crate::config::{
        parse,
        test_support::{generated, no_env},
    };

    #[test]
    fn lifetimes_default_and_are_bounded() {
        let defaults = parse(&generated(), no_env(), Path::new(".")).unwrap().1;
        assert_eq!(defaults.browser_sessions.idle, Duration::days(7));
        assert_eq!(defaults.browser_sessions.max, Duration::days(30));
        let with = |idle: &str, max: &str| {
            let text = generated().replace(
                "browser_idle_seconds: 604800",
                &format!("browser_idle_seconds: {idle}"),
            );
            let text = text.replace(
                "browser_max_seconds: 2592000",
                &format!("browser_max_seconds: {max}"),
            );
            parse(&text, no_env(), Path::new("."))
        };
        let set = with("3600", "86400").unwrap().1.browser_sessions;
        assert_eq!((set.idle, set.max), (Duration::hours(1), Duration::days(1)));
        let paths = |idle, max| -> Vec<String> {
            with(idle, max)
                .unwrap_err()
                .into_iter()
                .map(|p| p.path)
                .collect()
        };
        assert_eq!(paths("10", "86400"), ["sessions.browser_idle_seconds"]);
        assert_eq!(paths("86400", "3600"), ["sessions.browser_idle_seconds"]);
        assert_eq!(
            paths("3600", "99999999999"),
            ["sessions.browser_max_seconds"]
        );
    }

    #[test]
    fn an_override_sets_a_lifetime() {
        let env = [(
            "PROVIDER__SESSIONS__BROWSER_IDLE_SECONDS".to_owned(),
            "900".to_owned(),
        )];
        let settings = parse(&generated(), env, Path::new(".")).unwrap().1;
        assert_eq!(settings.browser_sessions.idle, Duration::minutes(15));
    }
}
