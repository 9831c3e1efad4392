//! A server's rate limit is not a protocol failure (RFC 6585 §4): the suite waits as
//! `Retry-After` (RFC 9110 §10.2.3) or the Matrix body's `retry_after_ms` (C-S API §Rate
//! limiting) asks, repeats the request, skips the check when its bounds don't allow the wait,
//! and says in every report format how much rate limits slowed the run down. Also here: the
//! unstable MSC2965 discovery endpoints are optional since Matrix v1.15.

use std::time::{Duration, Instant, SystemTime};

use conformance::{BoxFuture, Check, Level, Options, Profile, Report};
use rand::SeedableRng as _;
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, Request, Respond, ResponseTemplate,
};

/// Waits recorded, not slept: the report says how long the suite waited.
fn no_sleep(_: Duration) -> BoxFuture<'static, ()> {
    Box::pin(std::future::ready(()))
}

/// 2027-01-15T08:00:00Z.
fn fixed_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn selected(options: &Options) -> Vec<Check> {
    conformance::select(options).into_iter().copied().collect()
}

async fn run(options: &Options, clock: conformance::Clock, sleep: conformance::Sleep) -> Report {
    let checks = selected(options);
    assert!(!checks.is_empty(), "{:?}", options.only);
    let report = conformance::run_checks_in(
        options,
        &checks,
        clock,
        sleep,
        rand::rngs::StdRng::seed_from_u64(13),
    )
    .await;
    if std::env::var_os("SHOW_REPORT").is_some() {
        eprintln!("{}", report.render_text());
    }
    report
}

/// An issuer whose metadata is fine (its issuer is the URL it is served for).
fn metadata(base: &str) -> Value {
    json!({
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_modes_supported": ["query", "fragment"],
        "code_challenge_methods_supported": ["S256"],
    })
}

fn options(issuer: &MockServer, homeserver: Option<&MockServer>, only: &[&str]) -> Options {
    let mut options = Options::new(format!("{}/", issuer.uri()).parse().unwrap());
    options.homeserver = homeserver.map(|hs| format!("{}/", hs.uri()).parse().unwrap());
    options.only = only.iter().map(|s| (*s).to_owned()).collect();
    options
}

/// The first `n` matching requests get this answer, then the mounted ones below it.
async fn first(server: &MockServer, verb: &str, at: &str, n: u64, answer: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(at))
        .respond_with(answer)
        .up_to_n_times(n)
        .with_priority(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_the_request_repeated() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata(&issuer.uri())))
        .mount(&issuer)
        .await;
    let homeserver = MockServer::start().await;
    // An OAuth-style JSON 429 (RFC 6585 §4) with `Retry-After: 1` (RFC 9110 §10.2.3), once.
    first(
        &homeserver,
        "GET",
        "/_matrix/client/versions",
        1,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"error": "too_many_requests"})),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"versions": ["v1.15"]})))
        .mount(&homeserver)
        .await;

    // The real sleep: the suite does wait the second it was asked to.
    let started = Instant::now();
    let report = run(
        &options(&issuer, Some(&homeserver), &["homeserver.versions"]),
        conformance::system_clock,
        conformance::system_sleep,
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1));

    let finding = report.finding("homeserver.versions").unwrap();
    assert!(finding.outcome.is_pass(), "{:?}", finding.outcome);
    assert_eq!(
        finding.notes,
        ["slowed down by rate limits: 1 answer 429, waited 1 s"]
    );
    assert_eq!(homeserver.received_requests().await.unwrap().len(), 2);
    let limits = &report.rate_limits;
    assert_eq!(limits.responses, 1);
    assert_eq!(limits.waited_millis, 1000);
    assert_eq!(limits.checks(), ["homeserver.versions"]);
    let event = &limits.events[0];
    assert_eq!(event.asked, "Retry-After: 1");
    assert!(
        event.request.starts_with("GET http://"),
        "{}",
        event.request
    );
    assert!(event.gave_up.is_none());

    // Every format says so.
    let text = report.render_text();
    assert!(
        text.contains("Rate limits: the server answered 429 1 time; the suite waited 1 s in all (at most 30 s per wait, 300 s per run)"),
        "{text}"
    );
    assert!(
        text.contains("  homeserver.versions: 1 × 429 from "),
        "{text}"
    );
    assert!(text.contains("     note: slowed down by rate limits"));
    let doc: Value = serde_json::from_str(&report.render_json()).unwrap();
    assert_eq!(doc["rate_limits"]["responses"], 1);
    assert_eq!(doc["rate_limits"]["waited_millis"], 1000);
    assert_eq!(doc["rate_limits"]["checks"], json!(["homeserver.versions"]));
    assert_eq!(doc["rate_limits"]["events"][0]["asked"], "Retry-After: 1");
    let junit = report.render_junit();
    assert!(junit.contains("<!-- Rate limits: the server answered 429 1 time"));
    assert!(junit.contains("<property name=\"rate_limited_responses\" value=\"1\"/>"));
    assert!(junit.contains(
        "<system-out><![CDATA[slowed down by rate limits: 1 × 429, waited 1 s]]></system-out>"
    ));
    let markdown = report.render_markdown();
    assert!(markdown.contains("## Rate limits\n\nthe server answered 429 1 time"));
    assert!(
        markdown.contains("| `homeserver.versions` | 1 | "),
        "{markdown}"
    );
}

/// `/authorize` as a provider whose sign-in page is rate limited once (an HTML 429 with
/// `Retry-After` as an HTTP-date), then sends the code back.
struct SignInPage;

impl Respond for SignInPage {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let get = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let mut target = url::Url::parse(&get("redirect_uri")).unwrap();
        target
            .query_pairs_mut()
            .append_pair("code", "a-code-of-the-mock")
            .append_pair("state", &get("state"));
        ResponseTemplate::new(302).insert_header("location", target.as_str())
    }
}

#[tokio::test]
async fn a_rate_limited_sign_in_page_is_waited_out() {
    let issuer = MockServer::start().await;
    let base = issuer.uri();
    let mut doc = metadata(&base);
    doc["registration_endpoint"] = json!(format!("{base}/register"));
    doc["prompt_values_supported"] = json!(["create"]);
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc))
        .mount(&issuer)
        .await;
    Mock::given(method("POST"))
        .and(path("/register"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"client_id": "mock-client"})))
        .mount(&issuer)
        .await;
    // Two seconds after the (fixed) clock's now, as an IMF-fixdate.
    first(
        &issuer,
        "GET",
        "/authorize",
        1,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "Fri, 15 Jan 2027 08:00:02 GMT")
            .set_body_raw(
                "<html><body><p>Too many sign-in attempts, try again later.</p></body></html>",
                "text/html; charset=utf-8",
            ),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/authorize"))
        .respond_with(SignInPage)
        .mount(&issuer)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "an-access-token-of-the-mock",
            "token_type": "Bearer",
            "expires_in": 300,
        })))
        .mount(&issuer)
        .await;

    let report = run(
        &options(&issuer, None, &["oauth2.token.code_flow"]),
        fixed_clock,
        no_sleep,
    )
    .await;
    let finding = report.finding("oauth2.token.code_flow").unwrap();
    assert!(finding.outcome.is_pass(), "{:?}", finding.outcome);
    let limits = &report.rate_limits;
    assert_eq!(limits.responses, 1);
    assert_eq!(limits.waited_millis, 2000);
    assert_eq!(
        limits.events[0].asked,
        "Retry-After: Fri, 15 Jan 2027 08:00:02 GMT"
    );
    assert_eq!(limits.events[0].check, Some("oauth2.token.code_flow"));
}

#[tokio::test]
async fn a_matrix_429_with_retry_after_ms_is_waited_out() {
    let issuer = MockServer::start().await;
    let base = issuer.uri();
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata(&base)))
        .mount(&issuer)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "flows": [{"type": "m.login.password"}]
        })))
        .mount(&issuer)
        .await;
    // The Matrix form (C-S API §Rate limiting): M_LIMIT_EXCEEDED with retry_after_ms, no header.
    first(
        &issuer,
        "POST",
        "/_matrix/client/v3/login",
        2,
        ResponseTemplate::new(429).set_body_json(json!({
            "errcode": "M_LIMIT_EXCEEDED",
            "error": "Too many login attempts",
            "retry_after_ms": 1500,
        })),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/_matrix/client/v3/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "user_id": "@alice:example.org",
            "access_token": "mct_an-access-token",
            "device_id": "CONFDEVICE",
        })))
        .mount(&issuer)
        .await;

    let mut options = options(&issuer, None, &["matrix.compat.password"]);
    options.account = Some(("alice".into(), "a password".into()));
    let report = run(&options, fixed_clock, no_sleep).await;
    let finding = report.finding("matrix.compat.password").unwrap();
    assert!(finding.outcome.is_pass(), "{:?}", finding.outcome);
    let limits = &report.rate_limits;
    assert_eq!(limits.responses, 2);
    assert_eq!(limits.waited_millis, 3000);
    assert!(limits
        .events
        .iter()
        .all(|e| e.asked == "retry_after_ms: 1500" && e.waited_millis == 1500));
    assert_eq!(
        finding.notes,
        ["slowed down by rate limits: 2 answers 429, waited 3 s"]
    );
}

#[tokio::test]
async fn a_server_that_rate_limits_forever_gets_skips_within_the_bounds() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata(&issuer.uri())))
        .mount(&issuer)
        .await;
    let homeserver = MockServer::start().await;
    // Always 429, asking for a second each time.
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v1/auth_metadata"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down"})),
        )
        .mount(&homeserver)
        .await;
    // Always 429, asking for an hour: beyond one wait, not waited at all.
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .mount(&homeserver)
        .await;

    let mut options = options(
        &issuer,
        Some(&homeserver),
        &["homeserver.versions", "homeserver.auth_metadata"],
    );
    options.rate_limit_wait = Duration::from_secs(5);
    options.rate_limit_budget = Duration::from_secs(2);
    // Waits don't count against a check's time: 2 s of waiting in a check allowed 1 s.
    options.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let report = run(
        &options,
        conformance::system_clock,
        conformance::system_sleep,
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );

    for id in ["homeserver.versions", "homeserver.auth_metadata"] {
        let finding = report.finding(id).unwrap();
        assert_eq!(finding.level, Level::Must);
        assert!(finding.outcome.is_skipped(), "{id}: {:?}", finding.outcome);
        let reason = finding.outcome.reason().unwrap();
        assert!(
            reason.starts_with("rate limited by the server: GET http://"),
            "{reason}"
        );
    }
    let versions = report.finding("homeserver.versions").unwrap();
    assert!(versions
        .outcome
        .reason()
        .unwrap()
        .ends_with("(asking for Retry-After: 3600); it asks for 3600 s, more than the 5 s the suite waits at once (--rate-limit-wait)"));
    let auth_metadata = report.finding("homeserver.auth_metadata").unwrap();
    assert!(auth_metadata
        .outcome
        .reason()
        .unwrap()
        .contains("would exceed the 2 s the run may wait in all (--rate-limit-budget; 2 s spent)"));
    assert!(report.passed_all_musts());
    assert_eq!(report.exit_code(), 0);
    assert!(report.unreachable.is_none());

    let limits = &report.rate_limits;
    assert_eq!(limits.waited_millis, 2000);
    assert_eq!(limits.responses, 4, "{limits:#?}");
    assert_eq!(
        limits.events.iter().filter(|e| e.gave_up.is_some()).count(),
        2
    );
    let text = report.render_text();
    assert!(text.contains("; then gave up (skipped)"), "{text}");
    let markdown = report.render_markdown();
    assert!(markdown.contains("| Check | 429 answers | First, into the run | Waited | Gave up |"));
}

#[tokio::test]
async fn rate_limited_metadata_is_a_skip_not_an_unreachable_issuer() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .mount(&issuer)
        .await;
    let mut options = options(&issuer, None, &[]);
    options.profiles = vec![Profile::OAuth2];
    options.rate_limit_budget = Duration::from_secs(3);
    let report = run(&options, fixed_clock, no_sleep).await;
    assert!(report.unreachable.is_none());
    assert!(report.failed_ids().is_empty(), "{:?}", report.failed_ids());
    let reachable = report.finding("oauth2.metadata.reachable").unwrap();
    assert!(reachable
        .outcome
        .reason()
        .unwrap()
        .starts_with("rate limited by the server: GET "));
    assert_eq!(report.rate_limits.waited_millis, 3000);
    assert_eq!(report.rate_limits.events[0].check, None);
    assert!(report
        .render_text()
        .contains("  (metadata, before the checks): 4 × 429, waited 3 s"));
}

// ---- MSC2965: the unstable discovery endpoints are optional since Matrix v1.15 ----

/// A homeserver like Synapse 1.163: `v1/auth_metadata` (and the unstable `auth_metadata`,
/// when `unstable_metadata`), but no `auth_issuer` (404 `M_UNRECOGNIZED`).
async fn synapse_like(metadata: &Value, unstable_metadata: bool) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"versions": ["v1.14", "v1.15"]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v1/auth_metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata.clone()))
        .mount(&server)
        .await;
    if unstable_metadata {
        Mock::given(method("GET"))
            .and(path(
                "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(metadata.clone()))
            .mount(&server)
            .await;
    }
    // Synapse's answer to an endpoint it does not have (C-S API §API standards).
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "errcode": "M_UNRECOGNIZED",
            "error": "Unrecognized request",
        })))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

const DISCOVERY: &[&str] = &[
    "homeserver.versions",
    "homeserver.auth_metadata",
    "homeserver.auth_metadata_issuer",
    "homeserver.unstable_auth_metadata",
    "homeserver.auth_issuer",
];

#[tokio::test]
async fn a_homeserver_without_auth_issuer_fails_no_must() {
    let issuer = MockServer::start().await;
    let doc = metadata(&issuer.uri());
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc.clone()))
        .mount(&issuer)
        .await;
    let hs = synapse_like(&doc, true).await;
    let report = run(
        &options(&issuer, Some(&hs), DISCOVERY),
        fixed_clock,
        no_sleep,
    )
    .await;

    assert!(report.failed_ids().is_empty(), "{}", report.render_text());
    assert!(report.passed_all_musts());
    assert_eq!(report.exit_code(), 0);
    for id in [
        "homeserver.versions",
        "homeserver.auth_metadata",
        "homeserver.auth_metadata_issuer",
        "homeserver.unstable_auth_metadata",
    ] {
        let finding = report.finding(id).unwrap();
        assert!(finding.outcome.is_pass(), "{id}: {:?}", finding.outcome);
    }
    let auth_issuer = report.finding("homeserver.auth_issuer").unwrap();
    assert_eq!(auth_issuer.level, Level::May);
    assert!(auth_issuer.outcome.is_skipped());
    let reason = auth_issuer.outcome.reason().unwrap();
    assert!(
        reason.starts_with("not served (HTTP 404 M_UNRECOGNIZED): optional since Matrix v1.15"),
        "{reason}"
    );
    assert!(report.rate_limits.is_empty());
    assert!(!report.render_text().contains("Rate limits"));
    assert!(!report.render_markdown().contains("Rate limits"));
}

#[tokio::test]
async fn the_unstable_endpoints_are_graded_may_and_the_stable_one_must() {
    let issuer = MockServer::start().await;
    let doc = metadata(&issuer.uri());
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc.clone()))
        .mount(&issuer)
        .await;
    // No unstable auth_metadata, and an auth_issuer that names another issuer.
    let hs = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"issuer": "https://other.example/"})),
        )
        .mount(&hs)
        .await;
    // v1/auth_metadata and the unstable one are missing: wiremock's bare 404.
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"versions": ["v1.15"]})))
        .mount(&hs)
        .await;
    let report = run(
        &options(&issuer, Some(&hs), DISCOVERY),
        fixed_clock,
        no_sleep,
    )
    .await;

    // A served auth_issuer must name the issuer: a failure, of a MAY.
    let auth_issuer = report.finding("homeserver.auth_issuer").unwrap();
    assert!(auth_issuer.outcome.is_fail(), "{:?}", auth_issuer.outcome);
    assert_eq!(auth_issuer.level, Level::May);
    // Not served (a bare 404): a skip, not a failure.
    let unstable = report.finding("homeserver.unstable_auth_metadata").unwrap();
    assert_eq!(unstable.level, Level::May);
    assert!(unstable.outcome.is_skipped(), "{:?}", unstable.outcome);
    // The stable endpoint stays a MUST: missing, it fails the run.
    let stable = report.finding("homeserver.auth_metadata").unwrap();
    assert_eq!(stable.level, Level::Must);
    assert!(stable.outcome.is_fail());
    assert!(!report.passed_all_musts());
    assert_eq!(report.summary().may_failed, 1);
}
