//! Rate limits over HTTP and across replicas, on both databases: a brute force on one account
//! (login page and legacy Matrix login share its bucket), per-IP limits behind a trusted proxy,
//! the token endpoint per client and per IP, registration, two limiters on one database,
//! parallel checks, cleanup, and the configuration section.

// Tests make throwaway IDs; the clock and RNG rule of `clippy.toml` is for request code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::{path::Path, sync::Arc, time::Duration};

use provider::{
    backend_tests,
    clock::{Entropy, SeededRngSource},
    config::{self, GenerateOptions},
    core::rate_limit::{Limit, Quota, RateLimitError, RateLimiter, RateLimits},
    endpoints,
    storage::{PoolSettings, Storage},
    test_harness::{TestDb, TestProvider},
};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::json;
use support::{add_user, browser, form, get_text, json_of, set, static_client};

const ALICE: &str = "correct horse battery staple";
const BOB: &str = "Tr0ub4dor&3 but longer";

/// The login page's form, filled in and posted from `ip` (as a trusted proxy would say, in
/// `X-Forwarded-For`) or straight from the test (no header).
async fn sign_in(
    browser: &reqwest::Client,
    provider: &TestProvider,
    ip: Option<&str>,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let page = get_text(browser, provider.url("/login")).await;
    let (action, mut fields) = form(&page);
    set(&mut fields, "username", username);
    set(&mut fields, "password", password);
    let mut request = browser
        .post(provider.base_url.join(&action).unwrap())
        .form(&fields);
    if let Some(ip) = ip {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

/// The seconds of a response's `Retry-After`.
fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `burst` and `per_second` overrides for one limit.
fn limit_env(section: &str, name: &str, burst: u32, per_second: f64) -> [(String, String); 2] {
    let prefix = format!(
        "PROVIDER__RATE_LIMITING__{}__{}",
        section.to_uppercase(),
        name.to_uppercase()
    );
    [
        (format!("{prefix}__BURST"), burst.to_string()),
        (format!("{prefix}__PER_SECOND"), per_second.to_string()),
    ]
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The acceptance test of the operators' issue: a burst of wrong passwords for one account is
/// limited (429, `Retry-After`), the account's right password is refused while it is, another
/// account's right password still works from the same address, and once the bucket refills the
/// account signs in again. Production defaults.
async fn brute_force_on_one_account_is_limited(db: TestDb) {
    add_user(&db, "alice", ALICE).await;
    add_user(&db, "bob", BOB).await;
    let provider = TestProvider::start(&db).await;
    let quota = provider
        .settings
        .rate_limits
        .quota(Limit::LoginPerAccount)
        .unwrap();
    let mallory = browser();
    for _ in 0..quota.burst() {
        let response = sign_in(&mallory, &provider, None, "alice", "guess").await;
        assert_eq!(response.status(), 401);
    }
    // The bucket is empty: refused before the password is looked at.
    let response = sign_in(&mallory, &provider, None, "alice", "another guess").await;
    assert_eq!(response.status(), 429);
    let wait = retry_after(&response);
    assert_eq!(wait, quota.interval().as_secs_f64().ceil() as u64);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Too many sign-in attempts. Try again in 1 minute."),
        "{page}"
    );
    // Even the right password: a guesser can't tell a right guess while limited.
    let response = sign_in(&mallory, &provider, None, "alice", ALICE).await;
    assert_eq!(response.status(), 429);
    // Another account, from the same address: unaffected.
    let response = sign_in(&browser(), &provider, None, "bob", BOB).await;
    assert_eq!(response.status(), 303, "bob signs in");

    // One unit refilled: alice signs in, and a right password doesn't use it up ...
    db.clock.advance(chrono::Duration::seconds(wait as i64));
    let alice = browser();
    let response = sign_in(&alice, &provider, None, "alice", ALICE).await;
    assert_eq!(
        response.status(),
        303,
        "alice signs in once the bucket refilled"
    );
    // ... so one more wrong guess is allowed, and then none.
    let response = sign_in(&mallory, &provider, None, "alice", "guess").await;
    assert_eq!(response.status(), 401);
    let response = sign_in(&mallory, &provider, None, "alice", "guess").await;
    assert_eq!(response.status(), 429);
    provider.stop().await;
}

/// The legacy Matrix login answers `M_LIMIT_EXCEEDED` with `retry_after_ms` (client-server API
/// §"Rate limiting"), and shares the account's bucket with the login page.
async fn compat_login_answers_limit_exceeded(db: TestDb) {
    add_user(&db, "alice", ALICE).await;
    add_user(&db, "bob", BOB).await;
    let provider = TestProvider::start(&db).await;
    let quota = provider
        .settings
        .rate_limits
        .quota(Limit::LoginPerAccount)
        .unwrap();
    let url = provider.url("/_matrix/client/v3/login");
    let login = |user: &'static str, password: &'static str| {
        let url = url.clone();
        async move {
            let body = json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            });
            json_of(
                reqwest::Client::new()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // Two wrong guesses on the login page, the rest through the Matrix API.
    for _ in 0..2 {
        let response = sign_in(&browser(), &provider, None, "alice", "guess").await;
        assert_eq!(response.status(), 401);
    }
    for _ in 2..quota.burst() {
        let (status, _, body) = login("alice", "guess").await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (403, Some("M_FORBIDDEN"))
        );
    }
    for password in ["guess", ALICE] {
        let (status, headers, body) = login("alice", password).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        let ms = body["retry_after_ms"].as_u64().unwrap();
        assert_eq!(
            ms,
            u64::try_from(quota.interval().as_micros().div_ceil(1000)).unwrap()
        );
        assert_eq!(
            headers["retry-after"].to_str().unwrap(),
            ms.div_ceil(1000).to_string()
        );
    }
    let (status, _, body) = login("bob", BOB).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    db.clock.advance(chrono::Duration::seconds(60));
    let (status, _, body) = login("alice", ALICE).await;
    assert_eq!(status, 200, "{body}");
    provider.stop().await;
}

/// Per-IP limits key the client's address: through a trusted proxy, the right-most
/// `X-Forwarded-For` entry it did not add itself; what the client claims left of it is ignored.
async fn login_per_ip_behind_a_trusted_proxy(db: TestDb) {
    add_user(&db, "alice", ALICE).await;
    let mut env = limit_env("login", "per_ip", 3, 0.2).to_vec();
    env.push((
        "PROVIDER__HTTP__TRUSTED_PROXIES".to_owned(),
        "[127.0.0.1]".to_owned(),
    ));
    let provider = TestProvider::start_with(&db, &borrowed(&env)).await;
    let http = browser();
    let first = Some("203.0.113.1");
    // Three attempts on three (unknown) accounts, so no account bucket empties.
    for user in ["u1", "u2", "u3"] {
        let response = sign_in(&http, &provider, first, user, "guess").await;
        assert_eq!(response.status(), 401);
    }
    let response = sign_in(&http, &provider, first, "alice", ALICE).await;
    assert_eq!(response.status(), 429);
    assert_eq!(retry_after(&response), 5);
    // The client's own claim, left of what the proxy saw, changes nothing.
    let spoofed = Some("198.51.100.99, 203.0.113.1");
    let response = sign_in(&http, &provider, spoofed, "alice", ALICE).await;
    assert_eq!(response.status(), 429);
    // Another address, and the proxy itself, are not limited.
    let response = sign_in(&browser(), &provider, Some("203.0.113.2"), "alice", ALICE).await;
    assert_eq!(response.status(), 303);
    let response = sign_in(&browser(), &provider, None, "alice", ALICE).await;
    assert_eq!(response.status(), 303);
    // IPv6 clients by their /64.
    for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"]
        .into_iter()
        .enumerate()
    {
        let response = sign_in(&http, &provider, Some(ip), &format!("v{i}"), "guess").await;
        assert_eq!(response.status(), 401);
    }
    let response = sign_in(&http, &provider, Some("2001:db8:1:2::ffff"), "alice", ALICE).await;
    assert_eq!(response.status(), 429);
    db.clock.advance(chrono::Duration::seconds(5));
    let response = sign_in(&browser(), &provider, first, "alice", ALICE).await;
    assert_eq!(response.status(), 303, "one unit refilled");
    provider.stop().await;
}

/// The token endpoint: per authenticated client (a failed authentication spends nothing), 429
/// with `Retry-After` and an RFC 6749 §5.2 body; public clients per IP.
async fn token_endpoint_is_limited_per_client(db: TestDb) {
    let mut env = limit_env("token", "per_client", 3, 1.0).to_vec();
    env.push((
        "PROVIDER__CLIENTS__0__GRANT_TYPES".to_owned(),
        "[authorization_code, refresh_token, client_credentials]".to_owned(),
    ));
    env.push((
        "PROVIDER__HTTP__TRUSTED_PROXIES".to_owned(),
        "[127.0.0.1]".to_owned(),
    ));
    let provider = TestProvider::start_with(&db, &borrowed(&env)).await;
    let (client_id, secret) = static_client(&provider);
    let http = reqwest::Client::new();
    let token = |secret: String| {
        http.post(provider.url(endpoints::TOKEN))
            .basic_auth(&client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    for _ in 0..3 {
        let (status, _, body) = json_of(token(secret.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
    }
    // A wrong secret is refused as such, and doesn't count.
    let (status, _, body) = json_of(token("wrong".repeat(4)).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, headers, body) = json_of(token(secret.clone()).await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"].is_string());
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["cache-control"], "no-store");
    db.clock.advance(chrono::Duration::seconds(1));
    let (status, _, _) = json_of(token(secret.clone()).await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, _, _) = json_of(token(secret.clone()).await.unwrap()).await;
    assert_eq!(status, 429);

    // A public client is shared by every user of its app: limited per address instead.
    let (status, _, registered) = json_of(
        http.post(provider.url(endpoints::REGISTRATION))
            .json(&json!({
                "client_name": "Native app",
                "client_uri": "https://app.example.com/",
                "application_type": "native",
                "redirect_uris": ["http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "none",
                "response_types": ["code"],
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let public_id = registered["client_id"].as_str().unwrap().to_owned();
    let exchange = |ip: &'static str| {
        http.post(provider.url(endpoints::TOKEN))
            .header("x-forwarded-for", ip)
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", public_id.as_str()),
                ("code", "not-a-code"),
                ("redirect_uri", "http://127.0.0.1/callback"),
                ("code_verifier", &"v".repeat(43)),
            ])
            .send()
    };
    for _ in 0..3 {
        let (status, _, body) = json_of(exchange("203.0.113.1").await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
    let (status, _, _) = json_of(exchange("203.0.113.1").await.unwrap()).await;
    assert_eq!(status, 429);
    let (status, _, _) = json_of(exchange("203.0.113.2").await.unwrap()).await;
    assert_eq!(status, 400, "another address has its own bucket");
    provider.stop().await;
}

/// Registration, per IP, at its default: every attempt counts, and the form says when to come
/// back.
async fn registration_is_limited_per_ip(db: TestDb) {
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__ACCOUNT__REGISTRATION", "true")]).await;
    let quota = provider
        .settings
        .rate_limits
        .quota(Limit::Registration)
        .unwrap();
    let http = browser();
    let register = |username: &'static str, confirm: &'static str| {
        let http = http.clone();
        let provider = &provider;
        async move {
            let page = get_text(&http, provider.url("/register")).await;
            let (action, mut fields) = form(&page);
            set(&mut fields, "username", username);
            set(&mut fields, "password", ALICE);
            set(&mut fields, "password_confirm", confirm);
            http.post(provider.base_url.join(&action).unwrap())
                .form(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..quota.burst() {
        let response = register("carol", "a typo").await;
        assert_eq!(response.status(), 400);
    }
    let response = register("carol", ALICE).await;
    assert_eq!(response.status(), 429);
    let wait = retry_after(&response);
    assert_eq!(wait, quota.interval().as_secs_f64().ceil() as u64);
    let page = response.text().await.unwrap();
    assert!(page.contains("Try again in 6 minutes."), "{page}");
    let mut repo = db.storage.reader().await.unwrap();
    assert!(repo
        .users()
        .find_by_username("carol")
        .await
        .unwrap()
        .is_none());
    drop(repo);
    db.clock.advance(chrono::Duration::seconds(wait as i64));
    let response = register("carol", ALICE).await;
    assert_eq!(response.status(), 303, "registered once a unit refilled");
    provider.stop().await;
}

/// A storage on the same database as `db`, with its own pool (as another replica has).
async fn replica(db: &TestDb, seed: u64) -> Storage {
    let entropy = Entropy {
        clock: db.clock.clone(),
        rng: Arc::new(SeededRngSource::new(seed)),
    };
    let pool = PoolSettings {
        max_connections: 6,
        ..PoolSettings::default()
    };
    Storage::connect(&db.url, &pool, entropy).await.unwrap()
}

fn limits(limit: Limit, quota: Quota) -> RateLimits {
    let mut limits = RateLimits::off();
    limits.set(limit, Some(quota));
    limits
}

fn is_limited(outcome: Result<(), RateLimitError>) -> Option<Duration> {
    match outcome {
        Ok(()) => None,
        Err(RateLimitError::Limited { retry_after }) => Some(retry_after),
        Err(e) => panic!("{e}"),
    }
}

/// Two replicas (two limiters, each with its own pool) on one database share every bucket.
async fn replicas_share_the_limits(db: TestDb) {
    let quota = Quota::new(5, 0.5).unwrap();
    let (a, b) = (replica(&db, 1).await, replica(&db, 2).await);
    let one = RateLimiter::new(a.clone(), limits(Limit::LoginPerIp, quota));
    let two = RateLimiter::new(b.clone(), limits(Limit::LoginPerIp, quota));
    for i in 0..5 {
        let limiter = if i % 2 == 0 { &one } else { &two };
        assert_eq!(
            is_limited(limiter.check(Limit::LoginPerIp, "198.51.100.1").await),
            None
        );
    }
    let wait = Some(Duration::from_secs(2));
    assert_eq!(
        is_limited(one.check(Limit::LoginPerIp, "198.51.100.1").await),
        wait
    );
    assert_eq!(
        is_limited(two.check(Limit::LoginPerIp, "198.51.100.1").await),
        wait
    );
    // A limit turned off is never limited (and asks nothing of the database).
    for _ in 0..20 {
        assert_eq!(
            is_limited(one.check(Limit::Token, "198.51.100.1").await),
            None
        );
    }
    db.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(
        is_limited(two.check(Limit::LoginPerIp, "198.51.100.1").await),
        None
    );
    assert!(is_limited(one.check(Limit::LoginPerIp, "198.51.100.1").await).is_some());
    // A refund on one replica shows on the other.
    one.refund(Limit::LoginPerIp, "198.51.100.1").await.unwrap();
    assert_eq!(
        is_limited(two.check(Limit::LoginPerIp, "198.51.100.1").await),
        None
    );
    a.close().await;
    b.close().await;
}

/// Many checks at once from two replicas on one key: exactly the burst is granted.
async fn parallel_checks_never_grant_more_than_the_burst(db: TestDb) {
    let quota = Quota::new(10, 0.001).unwrap();
    let (a, b) = (replica(&db, 1).await, replica(&db, 2).await);
    let one = RateLimiter::new(a.clone(), limits(Limit::LoginPerAccount, quota));
    let two = RateLimiter::new(b.clone(), limits(Limit::LoginPerAccount, quota));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let limiter = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.spawn(async move { limiter.check(Limit::LoginPerAccount, "alice").await });
    }
    let mut granted = 0;
    while let Some(outcome) = tasks.join_next().await {
        if is_limited(outcome.unwrap()).is_none() {
            granted += 1;
        }
    }
    assert_eq!(granted, 10);
    a.close().await;
    b.close().await;
}

/// How many full buckets one housekeeping run deletes.
async fn buckets_deleted(db: &TestDb) -> u64 {
    provider::core::housekeeping::run_once(&db.storage)
        .await
        .unwrap()
        .rate_limit_buckets
}

/// The cleanup deletes the buckets that are full again, and only those.
async fn cleanup_deletes_full_buckets(db: TestDb) {
    let quota = Quota::new(2, 1.0).unwrap();
    let limiter = RateLimiter::new(db.storage.clone(), limits(Limit::EmailSend, quota));
    for i in 0..25 {
        limiter
            .check(Limit::EmailSend, &format!("user{i}@example.org"))
            .await
            .unwrap();
    }
    limiter
        .check(Limit::EmailSend, "busy@example.org")
        .await
        .unwrap();
    limiter
        .check(Limit::EmailSend, "busy@example.org")
        .await
        .unwrap();
    assert_eq!(buckets_deleted(&db).await, 0);
    db.clock.advance(chrono::Duration::milliseconds(1500));
    assert_eq!(buckets_deleted(&db).await, 25);
    // The busy bucket is half refilled: kept, and one unit is there.
    limiter
        .check(Limit::EmailSend, "busy@example.org")
        .await
        .unwrap();
    assert!(is_limited(limiter.check(Limit::EmailSend, "busy@example.org").await).is_some());
}

backend_tests!(
    brute_force_on_one_account_is_limited,
    compat_login_answers_limit_exceeded,
    login_per_ip_behind_a_trusted_proxy,
    token_endpoint_is_limited_per_client,
    registration_is_limited_per_ip,
    replicas_share_the_limits,
    parallel_checks_never_grant_more_than_the_burst,
    cleanup_deletes_full_buckets,
);

fn generated() -> String {
    let clock = provider::clock::MockClock::default();
    config::generate(
        &mut StdRng::seed_from_u64(1),
        &clock,
        &GenerateOptions::default(),
    )
    .unwrap()
}

fn parse(text: &str, env: &[(&str, &str)]) -> Result<config::Settings, Vec<String>> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    config::parse(text, env, Path::new("."))
        .map(|(_, settings)| settings)
        .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}

#[test]
fn configuration_section() {
    // The defaults, and the generated file shows exactly them (uncommented, they read back the
    // same).
    let text = generated();
    let settings = parse(&text, &[]).unwrap();
    assert_eq!(settings.rate_limits, RateLimits::defaults());
    let start = text.find("rate_limiting:").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let uncommented = text[start..end].replace("  # ", "  ");
    let explicit = text.replacen(&text[start..end], &uncommented, 1);
    assert!(
        explicit.contains("    per_ip: {burst: 20, per_second: 0.2}"),
        "{explicit}"
    );
    assert_eq!(
        parse(&explicit, &[]).unwrap().rate_limits,
        RateLimits::defaults()
    );

    // One value changed, one limit off, or all off.
    let settings = parse(
        &text,
        &[
            ("PROVIDER__RATE_LIMITING__LOGIN__PER_IP__BURST", "50"),
            (
                "PROVIDER__RATE_LIMITING__TOKEN__PER_CLIENT__ENABLED",
                "false",
            ),
        ],
    )
    .unwrap();
    let per_ip = settings.rate_limits.quota(Limit::LoginPerIp).unwrap();
    assert_eq!(per_ip, Quota::new(50, 0.2).unwrap());
    assert_eq!(settings.rate_limits.quota(Limit::Token), None);
    let off = parse(&text, &[("PROVIDER__RATE_LIMITING__ENABLED", "false")]).unwrap();
    assert_eq!(off.rate_limits, RateLimits::off());

    // Every problem, with its path.
    let problems = parse(
        &text,
        &[
            ("PROVIDER__RATE_LIMITING__LOGIN__PER_IP__BURST", "0"),
            ("PROVIDER__RATE_LIMITING__EMAIL__PER_USER__PER_SECOND", "-1"),
            ("PROVIDER__RATE_LIMITING__LOGIN__PER_IPS__BURST", "3"),
            (
                "PROVIDER__HTTP__TRUSTED_PROXIES",
                "[10.0.0.0/8, proxy.internal]",
            ),
        ],
    )
    .unwrap_err();
    for expected in [
        "rate_limiting.login.per_ip.burst: the burst must be 1 to",
        "rate_limiting.email.per_user.per_second: per_second must be a number from",
        "rate_limiting.login.per_ips: unknown key",
        "http.trusted_proxies[1]: `proxy.internal` is not an IP address",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "missing `{expected}` in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");

    let settings = parse(
        &text,
        &[("PROVIDER__HTTP__TRUSTED_PROXIES", "[10.0.0.0/8, \"::1\"]")],
    )
    .unwrap();
    assert!(settings
        .trusted_proxies
        .contains("10.1.2.3".parse().unwrap()));
    assert!(settings.trusted_proxies.contains("::1".parse().unwrap()));
    assert!(!settings
        .trusted_proxies
        .contains("192.0.2.1".parse().unwrap()));
}
