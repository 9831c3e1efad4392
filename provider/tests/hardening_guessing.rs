//! Issue 14 on both databases: guessing device user codes and client credentials is limited
//! (finding 6), and a stranger's wrong passwords can't lock an account out (finding 7).

// Tests make throwaway IDs; the clock and RNG rule of `clippy.toml` is for request code.
#![allow(clippy::disallowed_methods)]

mod support;

use provider::{
    backend_tests, endpoints,
    test_harness::{TestDb, TestProvider},
};
use support::{add_user, browser, form, get_text, http, json_of, set, static_client, submit, text};

const ALICE: &str = "correct horse battery staple";

fn start_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![(
        "PROVIDER__HTTP__TRUSTED_PROXIES".to_owned(),
        "[127.0.0.1]".to_owned(),
    )];
    env.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

async fn start(db: &TestDb, env: &[(String, String)]) -> TestProvider {
    let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestProvider::start_with(db, &borrowed).await
}

/// The login page's form posted from `ip` (as the trusted proxy says).
async fn sign_in(
    browser: &reqwest::Client,
    provider: &TestProvider,
    ip: &str,
    password: &str,
) -> u16 {
    let page = get_text(browser, provider.url("/login")).await;
    let (action, mut fields) = form(&page);
    set(&mut fields, "username", "alice");
    set(&mut fields, "password", password);
    browser
        .post(provider.base_url.join(&action).unwrap())
        .header("x-forwarded-for", ip)
        .form(&fields)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Finding 7: wrong passwords from one address empty that address's bucket for the account
/// only: the owner signs in from elsewhere, the guesser stays limited. Guesses from many
/// addresses empty the account's global bucket: then only addresses where the account signed
/// in recently get their password checked.
async fn a_stranger_cannot_lock_an_account_out(db: TestDb) {
    add_user(&db, "alice", ALICE).await;
    let env = start_env(&[(
        "PROVIDER__RATE_LIMITING__LOGIN__PER_ACCOUNT_GLOBAL__BURST",
        "8",
    )]);
    let provider = start(&db, &env).await;
    let (home, mallory_a, mallory_d, elsewhere) =
        ("198.51.100.7", "203.0.113.66", "203.0.113.67", "192.0.2.1");
    // Alice signs in at home once: a known place.
    assert_eq!(sign_in(&browser(), &provider, home, ALICE).await, 303);

    // Mallory hammers alice from A: five wrong guesses, then limited, even with the right one.
    let mallory = browser();
    for _ in 0..5 {
        assert_eq!(sign_in(&mallory, &provider, mallory_a, "guess").await, 401);
    }
    assert_eq!(sign_in(&mallory, &provider, mallory_a, "guess").await, 429);
    assert_eq!(sign_in(&mallory, &provider, mallory_a, ALICE).await, 429);
    // Alice, from home and from a new address, is not affected.
    assert_eq!(sign_in(&browser(), &provider, home, ALICE).await, 303);
    assert_eq!(sign_in(&browser(), &provider, elsewhere, ALICE).await, 303);

    // Mallory moves to D: three more wrong guesses empty the account's global bucket (8).
    for _ in 0..3 {
        assert_eq!(sign_in(&mallory, &provider, mallory_d, "guess").await, 401);
    }
    assert_eq!(sign_in(&mallory, &provider, mallory_d, "guess").await, 429);
    assert_eq!(
        sign_in(&mallory, &provider, "203.0.113.68", ALICE).await,
        429
    );
    // Alice's known places still let her in; a place she never signed in from doesn't.
    assert_eq!(sign_in(&browser(), &provider, home, ALICE).await, 303);
    assert_eq!(sign_in(&browser(), &provider, elsewhere, ALICE).await, 303);
    assert_eq!(
        sign_in(&browser(), &provider, "192.0.2.99", ALICE).await,
        429
    );
    provider.stop().await;
}

/// Finding 6: failed client authentications are limited per client IP; over the limit, 429
/// `temporarily_unavailable` with `Retry-After`, even for the right secret (else the answer
/// would still tell a right secret from a wrong one). Never per client: wrong secrets sent from
/// anywhere, however many, don't keep the client itself out (before the fix a per-`client_id`
/// bucket, spent by whoever named the client, did after 100).
async fn failed_client_authentication_is_limited(db: TestDb) {
    let env = start_env(&[(
        "PROVIDER__RATE_LIMITING__CLIENT_AUTH__FAILURES_PER_IP__BURST",
        "3",
    )]);
    let provider = start(&db, &env).await;
    let (client_id, secret) = static_client(&provider);
    let http = http();
    let introspect = |ip: String, secret: String| {
        http.post(provider.url(endpoints::INTROSPECTION))
            .header("x-forwarded-for", ip)
            .basic_auth(&client_id, Some(secret))
            .form(&[("token", "mat_unknown")])
            .send()
    };
    for _ in 0..3 {
        let (status, _, body) = json_of(
            introspect("203.0.113.1".into(), "wrong".into())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    for secret in ["wrong".to_owned(), secret.clone()] {
        let (status, headers, body) =
            json_of(introspect("203.0.113.1".into(), secret).await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (429, Some("temporarily_unavailable")),
            "{body}"
        );
        assert!(
            headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
    }
    // Wrong secrets for the client from 34 more addresses (102 failures in all), each address
    // limited after its own 3.
    for host in 2..=35 {
        let ip = format!("203.0.113.{host}");
        for _ in 0..3 {
            let (status, _, body) =
                json_of(introspect(ip.clone(), "wrong".into()).await.unwrap()).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("invalid_client")),
                "{ip}"
            );
        }
        let (status, _, _) = json_of(introspect(ip, "wrong".into()).await.unwrap()).await;
        assert_eq!(status, 429);
    }
    // The client itself, from its own address, is not affected.
    let (status, _, body) = json_of(
        introspect("198.51.100.9".into(), secret.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["active"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    // One unit back for the first address after 10 seconds (1 per 10 s, the default refill).
    db.clock.advance(chrono::Duration::seconds(10));
    let (status, _, _) = json_of(
        introspect("203.0.113.1".into(), secret.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    // The token endpoint counts unknown clients per address too.
    let token = |ip: &'static str| {
        http.post(provider.url(endpoints::TOKEN))
            .header("x-forwarded-for", ip)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
            ])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(token("198.51.100.1").await.unwrap().status(), 401);
    }
    let response = token("198.51.100.1").await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    provider.stop().await;
}

/// Finding 6: user codes typed on the verification page are limited per browser session and
/// per address (RFC 8628 §5.1): a 429 page with `Retry-After`.
async fn user_code_guesses_are_limited(db: TestDb) {
    add_user(&db, "alice", ALICE).await;
    let env = start_env(&[
        (
            "PROVIDER__RATE_LIMITING__USER_CODE__PER_SESSION__BURST",
            "3",
        ),
        ("PROVIDER__RATE_LIMITING__USER_CODE__PER_IP__BURST", "4"),
    ]);
    let provider = start(&db, &env).await;
    let signed_in = || async {
        let browser = browser();
        let page = get_text(&browser, provider.url("/login")).await;
        let response = submit(
            &browser,
            &provider.base_url,
            &page,
            &[("username", "alice"), ("password", ALICE)],
        )
        .await;
        assert_eq!(response.status(), 303);
        browser
    };
    let guess = |browser: reqwest::Client, ip: &'static str| {
        let provider = &provider;
        async move {
            let page = get_text(&browser, provider.url(endpoints::LINK)).await;
            let (action, mut fields) = form(&page);
            set(&mut fields, "code", "BBBB-CCCC");
            let response = browser
                .post(provider.base_url.join(&action).unwrap())
                .header("x-forwarded-for", ip)
                .form(&fields)
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let (status, body) = text(response).await;
            (status, retry_after, body)
        }
    };
    let first = signed_in().await;
    for _ in 0..3 {
        let (status, _, _) = guess(first.clone(), "203.0.113.1").await;
        assert_eq!(status, 404, "no such code");
    }
    // The session's bucket is empty, from any address.
    let (status, retry_after, body) = guess(first.clone(), "203.0.113.9").await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    assert!(body.contains("Try again in"), "{body}");
    // Another session from the first address: one more (the address's fourth), then limited.
    let second = signed_in().await;
    assert_eq!(guess(second.clone(), "203.0.113.1").await.0, 404);
    assert_eq!(guess(second.clone(), "203.0.113.1").await.0, 429);
    // Elsewhere, that session still types codes.
    assert_eq!(guess(second, "203.0.113.2").await.0, 404);
    provider.stop().await;
}

backend_tests!(
    a_stranger_cannot_lock_an_account_out,
    failed_client_authentication_is_limited,
    user_code_guesses_are_limited,
);
