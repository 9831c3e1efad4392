//! Runs the selected checks: a few at a time, each with its own transcript and a time limit,
//! reported in registry order. A check that panics or runs out of time fails (time spent
//! waiting for the server's rate limits does not count against it).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use rand::{rngs::StdRng, SeedableRng as _};
use test_clients::transcript::Transcript;
use tokio::sync::Semaphore;

use crate::{
    context::{system_clock, Clock, Context, Probe, Stop},
    rate_limit::{seconds, system_sleep, Sleep, CURRENT_CHECK},
    Check, Finding, Options, Outcome, Profile, Report, CHECKS,
};

/// Whether `check` is picked by an `--only` selector: its exact id, or an id prefix at a `.`.
fn matches(selector: &str, id: &str) -> bool {
    let selector = selector.trim_end_matches('.');
    id == selector
        || id
            .strip_prefix(selector)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The checks `options` selects, in registry order.
pub fn select(options: &Options) -> Vec<&'static Check> {
    CHECKS
        .iter()
        .filter(|c| options.profiles.contains(&c.profile))
        .filter(|c| options.only.is_empty() || options.only.iter().any(|s| matches(s, c.id)))
        .collect()
}

/// The `only` selectors that match no check at all (a usage error).
pub fn unknown_selectors(options: &Options) -> Vec<String> {
    options
        .only
        .iter()
        .filter(|s| !CHECKS.iter().any(|c| matches(s, c.id)))
        .cloned()
        .collect()
}

/// Runs the checks `options` selects against the issuer, with the system clock and an
/// OS-seeded RNG.
pub async fn run(options: &Options) -> Report {
    run_with(options, system_clock, StdRng::from_entropy()).await
}

/// [`run`] with the clock and the RNG given.
pub async fn run_with(options: &Options, clock: Clock, rng: StdRng) -> Report {
    let selected: Vec<Check> = select(options).into_iter().copied().collect();
    run_checks(options, &selected, clock, rng).await
}

/// Runs `checks` (in this order, whatever `options.profiles` and `options.only` say) against
/// the issuer of `options`.
pub async fn run_checks(options: &Options, checks: &[Check], clock: Clock, rng: StdRng) -> Report {
    run_checks_in(options, checks, clock, system_sleep, rng).await
}

/// [`run_checks`] with the way of waiting for rate limits given too (tests don't sleep).
pub async fn run_checks_in(
    options: &Options,
    checks: &[Check],
    clock: Clock,
    sleep: Sleep,
    rng: StdRng,
) -> Report {
    let cx = Arc::new(Context::new(options.clone(), clock, sleep, rng).await);
    // A metadata fetch the server's rate limit stopped is not an unreachable issuer.
    let unreachable = match &cx.discovery.reply {
        None if !cx.discovery.rate_limited => cx.discovery.error.clone(),
        _ => None,
    };
    let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tasks: Vec<_> = checks
        .iter()
        .map(|&check| {
            let cx = cx.clone();
            let limit = limit.clone();
            let timeout = options.timeout;
            let notes = Arc::new(Mutex::new(Vec::new()));
            let transcript = Transcript::new();
            let handle = {
                let notes = notes.clone();
                let transcript = transcript.clone();
                tokio::spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let started = Instant::now();
                    let outcome = if check.profile == Profile::MatrixHomeserver
                        && cx.options.homeserver.is_none()
                    {
                        Err(Stop::skip("no --homeserver"))
                    } else {
                        let probe = Probe::new(cx.clone(), transcript, notes);
                        let run = CURRENT_CHECK.scope(check.id, (check.run)(probe));
                        within(timeout, &cx, run).await
                    };
                    (outcome, started.elapsed())
                })
            };
            (check, handle, transcript, notes)
        })
        .collect();

    let mut findings = Vec::with_capacity(tasks.len());
    for (check, handle, transcript, notes) in tasks {
        let (result, elapsed) = match handle.await {
            Ok(done) => done,
            Err(e) => {
                let reason = if e.is_panic() {
                    format!("the check panicked: {}", panic_message(e.into_panic()))
                } else {
                    format!("the check was cancelled: {e}")
                };
                (Err(Stop::fail(reason)), Default::default())
            }
        };
        let outcome = match result {
            Ok(()) => Outcome::Pass,
            Err(Stop::Skip(reason)) => Outcome::Skipped(reason),
            Err(Stop::Fail {
                reason,
                mut evidence,
            }) => {
                evidence.extend(transcript.entries());
                Outcome::Fail { reason, evidence }
            }
        };
        let mut notes = notes.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let limits = cx.limits.report();
        let (limited, waited) = limits.of_check(check.id);
        if limited > 0 {
            notes.push(format!(
                "slowed down by rate limits: {limited} answer{} 429, waited {}",
                if limited == 1 { "" } else { "s" },
                seconds(waited)
            ));
        }
        findings.push(Finding {
            notes,
            millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            ..Finding::new(&check, outcome)
        });
    }
    Report {
        issuer: options.issuer.to_string(),
        homeserver: options.homeserver.as_ref().map(ToString::to_string),
        profiles: options.profiles.clone(),
        findings,
        unreachable,
        rate_limits: cx.limits.report(),
    }
}

/// Runs a check within `timeout`, plus however long the run waited for rate limits meanwhile
/// (the waits of a fixture the check shares count too).
async fn within(
    timeout: std::time::Duration,
    cx: &Context,
    run: impl std::future::Future<Output = Result<(), Stop>>,
) -> Result<(), Stop> {
    let started = tokio::time::Instant::now();
    let waited_before = cx.limits.waited();
    tokio::pin!(run);
    loop {
        let allowed = timeout + cx.limits.waited().saturating_sub(waited_before);
        match tokio::time::timeout_at(started + allowed, &mut run).await {
            Ok(result) => return result,
            Err(_) if cx.limits.waited().saturating_sub(waited_before) + timeout > allowed => {}
            Err(_) => return Err(Stop::fail(format!("timed out after {timeout:?}"))),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_ids_and_prefixes() {
        assert!(matches("oauth2.token", "oauth2.token.wrong_verifier"));
        assert!(matches("oauth2.token.", "oauth2.token.wrong_verifier"));
        assert!(matches(
            "oauth2.token.wrong_verifier",
            "oauth2.token.wrong_verifier"
        ));
        assert!(!matches("oauth2.tok", "oauth2.token.wrong_verifier"));
        assert!(!matches(
            "oauth2.token.wrong",
            "oauth2.token.wrong_verifier"
        ));
    }
}
