//! Honouring the server's rate limits. A `429 Too Many Requests` (RFC 6585 §4) says nothing
//! about the requirement a check judges: the suite waits as long as the server asks (within
//! bounds) and repeats the request. Every request of the run goes through
//! [`RateLimiter::through`]; when the bounds don't allow the wait, the check is skipped
//! ("rate limited by the server: …"), never failed, and the report says how much rate limits
//! slowed the run down.
//!
//! How long to wait, in this order:
//! - `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date (RFC 9110 §5.6.7:
//!   IMF-fixdate, and the obsolete RFC 850 and asctime forms recipients must accept);
//! - the Matrix error body's `retry_after_ms` (C-S API §Rate limiting, `M_LIMIT_EXCEEDED`);
//! - neither: 1 s, doubling with each repeat of the same request.
//!
//! Repeats take turns, first limited first served: a check answered `429` queues, and once its
//! wait is over it repeats its request only when no check that was limited before it is still
//! waiting. Without the queue, checks limited by one bucket (the provider's sign-ins per
//! address, 1 per 5 s once its burst is spent, shared by the login page and the Matrix login)
//! raced for each unit as it came back, and with four checks at once one of them could lose
//! ten races in a row and be skipped ("still 429 after 10 repeats"); in the queue a check
//! repeats at most about as often as checks run at once.

use std::{
    collections::BTreeSet,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, PoisonError,
    },
    time::{Duration, SystemTime},
};

use serde::Serialize;
use serde_json::Value;
use test_clients::transcript::{Exchange, Transcript};

use crate::{BoxFuture, Clock};

/// How long a wait may be, at most, by default (`--rate-limit-wait`).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
/// How long the run may be held up by rate limits in all, by default (`--rate-limit-budget`):
/// the time during which at least one check waits.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(300);
/// How often one request is repeated at most (the budget bounds the run anyway).
const MAX_REPEATS: u32 = 10;
/// The shortest wait: `Retry-After: 0` must not make the suite spin.
const MIN_WAIT: Duration = Duration::from_millis(100);
/// The first wait when the server does not say how long.
const BACKOFF: Duration = Duration::from_secs(1);

/// How the suite waits (injected; see [`crate::runner::run_checks_in`]).
pub type Sleep = fn(Duration) -> BoxFuture<'static, ()>;

/// The real sleep: the one place the suite waits for a rate limit.
pub fn system_sleep(duration: Duration) -> BoxFuture<'static, ()> {
    Box::pin(tokio::time::sleep(duration))
}

tokio::task_local! {
    /// The check whose task is running (set by the runner): rate limits are reported per check.
    pub(crate) static CURRENT_CHECK: &'static str;
}

/// One `429` answer and what the suite did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitEvent {
    /// The check that made the request (`None`: fetching the metadata, before the checks).
    pub check: Option<&'static str>,
    /// When, in milliseconds since the run started (by the run's clock).
    pub at_millis: u64,
    /// `METHOD url` (without query).
    pub request: String,
    /// What the server asked for: `Retry-After: 2`, `retry_after_ms: 1500`, or nothing.
    pub asked: String,
    /// How long the suite waited before repeating the request.
    pub waited_millis: u64,
    /// Set when the suite did not wait (the bounds don't allow it): why.
    pub gave_up: Option<String>,
}

/// How much rate limits slowed the run down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateLimits {
    /// How many answers were `429`.
    pub responses: u32,
    /// How long the run was held up by them: the time during which at least one check was
    /// waiting (waits of checks running at once overlap, and count once).
    pub waited_millis: u64,
    /// The bound of one wait.
    pub max_wait_millis: u64,
    /// The bound of all waits of the run.
    pub budget_millis: u64,
    /// Each `429`, in order.
    pub events: Vec<RateLimitEvent>,
}

impl RateLimits {
    /// No `429` at all.
    pub fn is_empty(&self) -> bool {
        self.responses == 0
    }

    /// The checks that met a rate limit, in the order they first did.
    pub fn checks(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = Vec::new();
        for id in self.events.iter().filter_map(|e| e.check) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The `429`s a check met and how long it waited for them.
    pub fn of_check(&self, id: &str) -> (u32, u64) {
        self.events
            .iter()
            .filter(|e| e.check == Some(id))
            .fold((0, 0), |(n, ms), e| (n + 1, ms + e.waited_millis))
    }

    /// One line: "the server answered 429 3 times; the suite waited 4.0 s in all (at most 30 s
    /// per wait, 300 s per run)".
    pub fn line(&self) -> String {
        format!(
            "the server answered 429 {} time{}; the suite waited {} in all (at most {} per wait, {} per run)",
            self.responses,
            if self.responses == 1 { "" } else { "s" },
            seconds(self.waited_millis),
            seconds(self.max_wait_millis),
            seconds(self.budget_millis),
        )
    }
}

/// "1.5 s", "2 s": to the tenth of a second.
pub(crate) fn seconds(millis: u64) -> String {
    let tenths = millis.saturating_add(50) / 100;
    if tenths % 10 == 0 {
        format!("{} s", tenths / 10)
    } else {
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The run's waiting for rate limits: its bounds, the injected clock and sleep, and the record.
pub(crate) struct RateLimiter {
    max_wait: Duration,
    budget: Duration,
    clock: Clock,
    sleep: Sleep,
    started: SystemTime,
    state: Mutex<State>,
    /// The turns of the checks limited and waiting, by ticket: the smallest goes first.
    turns: tokio::sync::watch::Sender<BTreeSet<u64>>,
    next_ticket: AtomicU64,
}

/// A place in the queue of repeats; leaving it (dropped) lets the next one go.
struct Turn<'a> {
    limiter: &'a RateLimiter,
    ticket: u64,
}

impl Turn<'_> {
    /// Until every check limited before this one has repeated its request (or given up).
    async fn come(&self) {
        let mut turns = self.limiter.turns.subscribe();
        loop {
            if turns.borrow_and_update().first() == Some(&self.ticket) {
                return;
            }
            // The sender lives as long as the limiter this turn borrows.
            if turns.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.limiter.turns.send_modify(|turns| {
            turns.remove(&self.ticket);
        });
    }
}

#[derive(Default)]
struct State {
    /// Promised to waits so far, summed over the checks (reserved before sleeping): what a
    /// running check's time limit is extended by ([`RateLimiter::waited`]).
    waited: Duration,
    /// Every wait promised, as a span of time (reserved before sleeping, so concurrent checks
    /// can't overdraw): the budget bounds the length of their union, the time the run is held
    /// up. Dozens at most.
    spans: Vec<(SystemTime, SystemTime)>,
    /// Where each check's (or the run's own, `None`) last wait ends: its next wait starts there
    /// at the earliest, so one check's repeated waits add up even on a clock that doesn't move.
    cursors: Vec<(Option<&'static str>, SystemTime)>,
    events: Vec<RateLimitEvent>,
}

impl State {
    /// The span a wait of `check` starting `now` takes, after its previous one.
    fn span(
        &self,
        check: Option<&'static str>,
        now: SystemTime,
        wait: Duration,
    ) -> (SystemTime, SystemTime) {
        let start = self
            .cursors
            .iter()
            .find(|(c, _)| *c == check)
            .map_or(now, |(_, end)| (*end).max(now));
        (start, start + wait)
    }

    /// The length of the union of the spans, with `extra` added.
    fn held_up(&self, extra: Option<(SystemTime, SystemTime)>) -> Duration {
        let mut spans: Vec<(SystemTime, SystemTime)> =
            self.spans.iter().copied().chain(extra).collect();
        spans.sort();
        let mut total = Duration::ZERO;
        let mut reach: Option<SystemTime> = None;
        for (start, end) in spans {
            let from = reach.map_or(start, |r| r.max(start));
            if end > from {
                total += end.duration_since(from).unwrap_or_default();
            }
            reach = Some(reach.map_or(end, |r| r.max(end)));
        }
        total
    }
}

/// The bounds did not allow the wait: the check is skipped with this reason.
#[derive(Debug, Clone)]
pub(crate) struct GaveUp(pub String);

impl RateLimiter {
    pub(crate) fn new(max_wait: Duration, budget: Duration, clock: Clock, sleep: Sleep) -> Self {
        Self {
            max_wait,
            budget,
            clock,
            sleep,
            started: clock(),
            state: Mutex::new(State::default()),
            turns: tokio::sync::watch::Sender::new(BTreeSet::new()),
            next_ticket: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long the checks have waited so far, summed (for extending a check's time limit).
    pub(crate) fn waited(&self) -> Duration {
        self.state().waited
    }

    /// The record, for the report.
    pub(crate) fn report(&self) -> RateLimits {
        let state = self.state();
        RateLimits {
            responses: u32::try_from(state.events.len()).unwrap_or(u32::MAX),
            waited_millis: millis(state.held_up(None)),
            max_wait_millis: millis(self.max_wait),
            budget_millis: millis(self.budget),
            events: state.events.clone(),
        }
    }

    /// The one door of the suite's HTTP: runs `attempt` (one request, or one of the
    /// test-clients helpers that make several, like a walk through the provider's pages) and,
    /// while the last exchange it recorded in `transcript` is a `429`, waits as the server asks
    /// and runs it again, in its turn (see the module). `Err` when the bounds don't allow the
    /// wait. `attempt` makes its requests directly (test-clients' helpers), never through the
    /// limiter again: a request limited inside a turn would wait for that turn, its own.
    pub(crate) async fn through<T, Fut>(
        &self,
        transcript: &Transcript,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, GaveUp>
    where
        Fut: Future<Output = T>,
    {
        let mut repeats = 0;
        let mut turn: Option<Turn<'_>> = None;
        loop {
            let before = transcript.entries().len();
            let result = attempt().await;
            let limited = transcript
                .entries()
                .into_iter()
                .skip(before)
                .last()
                .filter(|e| e.status == 429);
            let Some(limited) = limited else {
                return Ok(result);
            };
            let wait = self.admit(&limited, repeats)?;
            if turn.is_none() {
                let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                self.turns.send_modify(|turns| {
                    turns.insert(ticket);
                });
                turn = Some(Turn {
                    limiter: self,
                    ticket,
                });
            }
            (self.sleep)(wait).await;
            if let Some(turn) = &turn {
                turn.come().await;
            }
            repeats += 1;
        }
    }

    /// Records a `429` and decides: the wait to make, or why not.
    fn admit(&self, limited: &Exchange, repeats: u32) -> Result<Duration, GaveUp> {
        let now = (self.clock)();
        let (asked, wait) = match asked_wait(limited, now) {
            Some((asked, wait)) => (asked, wait.max(MIN_WAIT)),
            None => (
                "nothing (no Retry-After, no retry_after_ms)".to_owned(),
                BACKOFF.saturating_mul(1 << repeats.min(8)),
            ),
        };
        let request = format!(
            "{} {}",
            limited.method,
            limited.url.split(['?', '#']).next().unwrap_or_default()
        );
        let check = CURRENT_CHECK.try_with(|id| *id).ok();
        let mut state = self.state();
        let span = state.span(check, now, wait);
        let held_up = state.held_up(None);
        let gave_up = if repeats >= MAX_REPEATS {
            Some(format!("still 429 after {MAX_REPEATS} repeats"))
        } else if wait > self.max_wait {
            Some(format!(
                "it asks for {}, more than the {} the suite waits at once (--rate-limit-wait)",
                seconds(millis(wait)),
                seconds(millis(self.max_wait))
            ))
        } else if state.held_up(Some(span)) > self.budget {
            Some(format!(
                "waiting {} more would exceed the {} the run may wait in all (--rate-limit-budget; {} spent)",
                seconds(millis(wait)),
                seconds(millis(self.budget)),
                seconds(millis(held_up))
            ))
        } else {
            None
        };
        if gave_up.is_none() {
            state.waited += wait;
            state.spans.push(span);
            match state.cursors.iter_mut().find(|(c, _)| *c == check) {
                Some(cursor) => cursor.1 = span.1,
                None => state.cursors.push((check, span.1)),
            }
        }
        state.events.push(RateLimitEvent {
            check,
            at_millis: millis(now.duration_since(self.started).unwrap_or_default()),
            request: request.clone(),
            asked: asked.clone(),
            waited_millis: if gave_up.is_some() { 0 } else { millis(wait) },
            gave_up: gave_up.clone(),
        });
        match gave_up {
            None => Ok(wait),
            Some(why) => Err(GaveUp(format!(
                "rate limited by the server: {request} answered 429 (asking for {asked}); {why}"
            ))),
        }
    }
}

/// What the `429` asks for, and as a wait: `Retry-After` first (RFC 9110 §10.2.3), then the
/// Matrix body's `retry_after_ms` (C-S API §Rate limiting; deprecated for the header since
/// v1.10, still what Synapse's clients read).
fn asked_wait(limited: &Exchange, now: SystemTime) -> Option<(String, Duration)> {
    let header = limited
        .response_headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .map(|(_, value)| value.trim());
    if let Some(wait) = header.and_then(|value| retry_after(value, now)) {
        return Some((format!("Retry-After: {}", header.unwrap_or_default()), wait));
    }
    let body: Value = serde_json::from_str(&limited.response_body).ok()?;
    let ms = body.get("retry_after_ms").and_then(Value::as_u64)?;
    Some((format!("retry_after_ms: {ms}"), Duration::from_millis(ms)))
}

/// RFC 9110 §10.2.3: `Retry-After = HTTP-date / delay-seconds`. A date in the past is no wait.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // delay-seconds = 1*DIGIT; a huge one saturates (and is beyond any bound).
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// RFC 9110 §5.6.7: an HTTP-date in any of its three forms (recipients MUST accept all):
/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate), `Sunday, 06-Nov-94 08:49:37 GMT` (RFC 850),
/// `Sun Nov  6 08:49:37 1994` (asctime).
pub(crate) fn http_date(value: &str) -> Option<SystemTime> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        // IMF-fixdate
        [_, day, month, year, time, "GMT"] => (*day, *month, year.parse().ok()?, *time),
        // RFC 850: a two-digit year. RFC 9110 §5.6.7 reads one more than 50 years ahead as
        // the past century; a fixed pivot at 70 does that for dates of this century's first half.
        [_, date, time, "GMT"] => {
            let mut parts = date.split('-');
            let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
            let yy: i64 = yy.parse().ok()?;
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (day, month, year, *time)
        }
        // asctime
        [_, month, day, time, year] => (*day, *month, year.parse().ok()?, *time),
        _ => return None,
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as i64
        + 1;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(http_date(date), Some(now), "{date}");
        }
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: no wait.
        assert_eq!(
            retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("1.5", now), None);
        assert_eq!(http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(
            http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(
            http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(at(1_835_438_400))
        );
    }

    fn limited(headers: &[(&str, &str)], body: &str) -> Exchange {
        Exchange {
            step: None,
            method: "POST".into(),
            url: "https://hs.test/_matrix/client/v3/login?x=1".into(),
            request_headers: Vec::new(),
            request_body: None,
            status: 429,
            response_headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            response_body: body.into(),
        }
    }

    #[test]
    fn the_header_comes_before_the_matrix_body() {
        let now = at(0);
        let body = r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#;
        assert_eq!(
            asked_wait(&limited(&[], body), now),
            Some(("retry_after_ms: 1500".into(), Duration::from_millis(1500)))
        );
        assert_eq!(
            asked_wait(&limited(&[("Retry-After", "2")], body), now),
            Some(("Retry-After: 2".into(), Duration::from_secs(2)))
        );
        assert_eq!(asked_wait(&limited(&[], "<html>"), now), None);
    }

    fn no_sleep(_: Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    fn epoch() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn bounds_per_wait_per_run_and_per_request() {
        let limiter = RateLimiter::new(
            Duration::from_secs(5),
            Duration::from_secs(8),
            epoch,
            no_sleep,
        );
        let e = limited(&[("retry-after", "3")], "");
        assert_eq!(limiter.admit(&e, 0).unwrap(), Duration::from_secs(3));
        assert_eq!(limiter.admit(&e, 1).unwrap(), Duration::from_secs(3));
        // 6 s spent: 3 more would pass the 8 s budget.
        let GaveUp(why) = limiter.admit(&e, 2).unwrap_err();
        assert!(why.starts_with("rate limited by the server: POST https://hs.test/_matrix/client/v3/login answered 429 (asking for Retry-After: 3)"), "{why}");
        assert!(why.contains("--rate-limit-budget"), "{why}");
        let GaveUp(why) = limiter
            .admit(&limited(&[("retry-after", "60")], ""), 0)
            .unwrap_err();
        assert!(why.contains("more than the 5 s"), "{why}");
        // No hint: 1 s, then doubling.
        let none = limited(&[], "");
        let fresh = RateLimiter::new(
            Duration::from_secs(30),
            Duration::from_secs(300),
            epoch,
            no_sleep,
        );
        assert_eq!(fresh.admit(&none, 0).unwrap(), Duration::from_secs(1));
        assert_eq!(fresh.admit(&none, 2).unwrap(), Duration::from_secs(4));
        assert!(fresh.admit(&none, MAX_REPEATS).is_err());
        // Retry-After: 0 does not spin.
        assert_eq!(
            fresh
                .admit(&limited(&[("retry-after", "0")], ""), 0)
                .unwrap(),
            MIN_WAIT
        );
        let report = limiter.report();
        assert_eq!(report.responses, 4);
        assert_eq!(report.waited_millis, 6000);
        assert_eq!(report.events[2].waited_millis, 0);
        assert!(report.events[2].gave_up.is_some());
    }

    /// Checks waiting at the same time hold the run up once; one check's waits add up.
    #[tokio::test]
    async fn concurrent_waits_count_once_against_the_budget() {
        let limiter = RateLimiter::new(
            Duration::from_secs(30),
            Duration::from_secs(10),
            epoch,
            no_sleep,
        );
        let e = limited(&[("retry-after", "4")], "");
        for id in ["a", "b", "c", "d"] {
            CURRENT_CHECK
                .scope(id, async { assert!(limiter.admit(&e, 0).is_ok(), "{id}") })
                .await;
        }
        // Four checks waiting 4 s from the same instant: the run is held up 4 s, not 16 s
        // (their time limits are extended by the sum all the same).
        assert_eq!(limiter.report().waited_millis, 4000);
        assert_eq!(limiter.waited(), Duration::from_secs(16));
        // Check `a` waits again, after its first wait (8 s); once more would make 12 s.
        CURRENT_CHECK
            .scope("a", async {
                assert!(limiter.admit(&e, 1).is_ok());
                let GaveUp(why) = limiter.admit(&e, 2).unwrap_err();
                assert!(why.contains("(--rate-limit-budget; 8 s spent)"), "{why}");
            })
            .await;
        assert_eq!(limiter.report().waited_millis, 8000);
    }

    /// Units of the simulated server's bucket (`repeats_take_turns`).
    static UNITS: AtomicU64 = AtomicU64::new(0);

    /// Check `a` sleeps long (its task yields many times); check `b` at once, and while it
    /// sleeps the server gives a unit back.
    fn uneven_sleep(_: Duration) -> BoxFuture<'static, ()> {
        let slow = CURRENT_CHECK.try_with(|c| *c == "a").unwrap_or(false);
        if !slow {
            UNITS.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async move {
            if slow {
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
            }
        })
    }

    /// The check limited first repeats first: `a` was answered 429 before `b`, and although
    /// `b`'s wait ends long before `a`'s, the one unit the server gives back goes to `a`.
    #[tokio::test]
    async fn repeats_take_turns() {
        let limiter = RateLimiter::new(
            Duration::from_secs(30),
            Duration::from_secs(300),
            epoch,
            uneven_sleep,
        );
        // One request: a unit if there is one, else a 429 on the transcript.
        let request = |transcript: &Transcript| {
            let ok = UNITS
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !ok {
                transcript.record(limited(&[("retry-after", "1")], ""));
            }
            ok
        };
        let (a, b) = (Transcript::new(), Transcript::new());
        let mut a_tries = 0;
        let first_a = CURRENT_CHECK.scope(
            "a",
            limiter.through(&a, || {
                a_tries += 1;
                std::future::ready(request(&a))
            }),
        );
        let second_b = CURRENT_CHECK.scope("b", async {
            // Limited after `a`.
            tokio::task::yield_now().await;
            let mut b_tries = 0;
            // The unit given back during `b`'s first wait, while `a` still sleeps: `b` could
            // repeat at once and take it, but it is `a`'s turn. Without turns, `a` would find
            // the bucket empty on each of its repeats and give up.
            let done = limiter
                .through(&b, || {
                    b_tries += 1;
                    std::future::ready(request(&b))
                })
                .await;
            (done, b_tries)
        });
        let (a_done, (b_done, b_tries)) = tokio::join!(first_a, second_b);
        assert_eq!(a_done.ok(), Some(true));
        assert_eq!(a_tries, 2, "a repeated once: the unit was kept for it");
        assert_eq!(b_done.ok(), Some(true));
        assert_eq!(
            b_tries, 3,
            "b was limited, then found `a` had taken the unit, then got one"
        );
    }
}
