//! The conformance suite: spec checks that judge any OAuth 2.0 / OpenID Connect issuer (and a
//! Matrix homeserver that delegates to it, MSC3861) over HTTP only.
//!
//! A check is data ([`Check`]): an id, the spec and section it comes from, a [`Level`]
//! (RFC 2119), a [`Profile`], a human sentence, and an async function. The one registry is
//! [`CHECKS`], in report order. [`run`] runs the selected checks against an issuer and returns a
//! [`Report`] of [`Finding`]s, each with its [`Outcome`]: passed, failed with the evidence (the
//! HTTP exchanges the check made, secrets elided), or skipped with why.
//!
//! ```no_run
//! # async fn demo() {
//! let options = conformance::Options::new("https://auth.example.org/".parse().unwrap());
//! let report = conformance::run(&options).await;
//! println!("{}", report.render_markdown());
//! std::process::exit(report.exit_code());
//! # }
//! ```

mod checks;
mod context;
mod jwt;
mod rate_limit;
mod report;
mod runner;

use std::{fmt, future::Future, pin::Pin, str::FromStr, time::Duration};

use serde::Serialize;
use test_clients::transcript::Exchange;
use url::Url;

pub use checks::CHECKS;
pub use context::{system_clock, Checked, Probe, Stop};
pub use rate_limit::{
    system_sleep, RateLimitEvent, RateLimits, Sleep, DEFAULT_BUDGET, DEFAULT_MAX_WAIT,
};
pub use report::{render_exchange, Summary};
pub use runner::{run, run_checks, run_checks_in, run_with, select, unknown_selectors};

/// How strongly a spec asks for something (RFC 2119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Must,
    Should,
    May,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::Should => "SHOULD",
            Self::May => "MAY",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group of checks, selected together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Profile {
    /// RFC 6749, 7636, 8414, 7009, 7662, 8628, 7591, 8252, 9207 and RFC 9700 items.
    #[serde(rename = "oauth2")]
    OAuth2,
    /// OpenID Connect Core, Discovery, RP-Initiated Logout.
    #[serde(rename = "oidc")]
    Oidc,
    /// The provider side of Matrix: MSC2965, MSC2966, MSC2967, MSC4191, MSC4341, the compat layer.
    #[serde(rename = "matrix-provider")]
    MatrixProvider,
    /// A homeserver delegating to the issuer (needs `--homeserver`).
    #[serde(rename = "matrix-homeserver")]
    MatrixHomeserver,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Self::OAuth2,
        Self::Oidc,
        Self::MatrixProvider,
        Self::MatrixHomeserver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::Oidc => "oidc",
            Self::MatrixProvider => "matrix-provider",
            Self::MatrixHomeserver => "matrix-homeserver",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown profile `{s}`; use {}",
                    Self::ALL.map(Profile::as_str).join(", ")
                )
            })
    }
}

/// Where the time comes from (injected; see [`runner::run_with`]).
pub type Clock = fn() -> std::time::SystemTime;

/// A boxed, sendable future (what a check's function returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One requirement of a spec, and how to check it over HTTP.
#[derive(Clone, Copy)]
pub struct Check {
    /// Stable and unique: `<profile>.<area>.<what>`, e.g. `oauth2.token.wrong_verifier`.
    pub id: &'static str,
    /// The spec and section, e.g. `RFC 7636 §4.6`.
    pub spec: &'static str,
    pub level: Level,
    pub profile: Profile,
    /// What must hold, as a sentence about the server.
    pub requirement: &'static str,
    /// Runs the check with its own [`Probe`] (its HTTP client and transcript).
    pub run: fn(Probe) -> BoxFuture<'static, Checked>,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("level", &self.level)
            .field("profile", &self.profile)
            .field("requirement", &self.requirement)
            .finish_non_exhaustive()
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pass,
    /// The requirement does not hold: why, and the HTTP exchanges that show it.
    Fail {
        reason: String,
        evidence: Vec<Exchange>,
    },
    /// Not applicable or not checkable here, with why.
    Skipped(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail { .. } => "FAIL",
            Self::Skipped(_) => "SKIP",
        }
    }

    pub fn is_pass(&self) -> bool {
        matches!(self, Self::Pass)
    }

    pub fn is_fail(&self) -> bool {
        matches!(self, Self::Fail { .. })
    }

    pub fn is_skipped(&self) -> bool {
        matches!(self, Self::Skipped(_))
    }

    /// The reason of a failure or a skip.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Pass => None,
            Self::Fail { reason, .. } | Self::Skipped(reason) => Some(reason),
        }
    }
}

/// One requirement and whether it holds.
#[derive(Debug, Clone)]
pub struct Finding {
    pub id: &'static str,
    pub spec: &'static str,
    pub level: Level,
    pub profile: Profile,
    pub requirement: &'static str,
    pub outcome: Outcome,
    /// Remarks the check made on the way (e.g. "http accepted: loopback issuer").
    pub notes: Vec<String>,
    /// How long the check took, in milliseconds.
    pub millis: u64,
}

impl Finding {
    /// A finding of `check` (no notes, no duration).
    pub fn new(check: &Check, outcome: Outcome) -> Self {
        Self {
            id: check.id,
            spec: check.spec,
            level: check.level,
            profile: check.profile,
            requirement: check.requirement,
            outcome,
            notes: Vec::new(),
            millis: 0,
        }
    }

    /// A failed MUST makes the whole run fail.
    pub fn is_blocking(&self) -> bool {
        self.level == Level::Must && self.outcome.is_fail()
    }
}

/// What to check, and against what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The issuer identifier, as the metadata must state it.
    pub issuer: Url,
    /// A homeserver delegating to the issuer (the `matrix-homeserver` profile needs it).
    pub homeserver: Option<Url>,
    /// The profiles to run (all by default).
    pub profiles: Vec<Profile>,
    /// An existing account (username, password); without one, the suite registers
    /// `conformance-<8 random letters>` with `prompt=create` when the issuer offers it.
    pub account: Option<(String, String)>,
    /// The secret the homeserver introspects with (enables the homeserver-contract checks).
    pub homeserver_secret: Option<String>,
    /// Run only these checks: exact ids, or id prefixes (`oauth2.token` runs `oauth2.token.*`).
    pub only: Vec<String>,
    /// How many checks run at once.
    pub concurrency: usize,
    /// The time one check may take before it fails (time spent waiting for rate limits is
    /// added to it).
    pub timeout: Duration,
    /// The longest the suite waits for a rate limit at once (`Retry-After`, `retry_after_ms`);
    /// a longer wait asked for skips the check.
    pub rate_limit_wait: Duration,
    /// The longest the suite waits for rate limits in all, over the run (the time during which at
    /// least one check waits: checks waiting at once count once).
    pub rate_limit_budget: Duration,
}

impl Options {
    /// Every profile, 4 checks at a time, 30 s per check; rate limits waited for up to 30 s at
    /// once and 5 min in all.
    pub fn new(issuer: Url) -> Self {
        Self {
            issuer,
            homeserver: None,
            profiles: Profile::ALL.to_vec(),
            account: None,
            homeserver_secret: None,
            only: Vec::new(),
            concurrency: 4,
            timeout: Duration::from_secs(30),
            rate_limit_wait: rate_limit::DEFAULT_MAX_WAIT,
            rate_limit_budget: rate_limit::DEFAULT_BUDGET,
        }
    }
}

/// The result of a run, in registry order.
#[derive(Debug, Clone)]
pub struct Report {
    pub issuer: String,
    pub homeserver: Option<String>,
    pub profiles: Vec<Profile>,
    pub findings: Vec<Finding>,
    /// Set when the issuer's metadata could not be fetched at all (a transport error).
    pub unreachable: Option<String>,
    /// How much the server's rate limits (429) slowed the run down.
    pub rate_limits: RateLimits,
}

impl Report {
    /// No MUST failed.
    pub fn passed_all_musts(&self) -> bool {
        !self.findings.iter().any(Finding::is_blocking)
    }

    /// The process exit status: 0 when every MUST holds, 1 when one fails, 2 when the issuer
    /// could not be reached.
    pub fn exit_code(&self) -> i32 {
        if self.unreachable.is_some() {
            2
        } else if self.passed_all_musts() {
            0
        } else {
            1
        }
    }

    /// The finding of a check, by id.
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    /// The ids of the failed checks, in report order.
    pub fn failed_ids(&self) -> Vec<&'static str> {
        self.findings
            .iter()
            .filter(|f| f.outcome.is_fail())
            .map(|f| f.id)
            .collect()
    }
}
