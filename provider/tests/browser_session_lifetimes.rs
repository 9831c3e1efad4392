//! Browser sessions end (issue 14, finding 10), on both databases: after their idle lifetime
//! without use, at their absolute lifetime however much they are used (`sessions` in the
//! configuration; time from the injected clock), and when the user changes their password in
//! another browser, which stays signed in. The Matrix devices (OAuth 2.0 sessions) signed in
//! from an ended browser session stay.

mod support;

use chrono::Duration;
use provider::{
    backend_tests, endpoints,
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use support::{
    add_user, authorize, authorize_url, browser, exchange_code, get_text, http, json_of, param,
    static_client, submit, text,
};
use url::Url;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// The lifetimes the tests run with: an hour idle, a day at most.
const LIFETIMES: &[(&str, &str)] = &[
    ("PROVIDER__SESSIONS__BROWSER_IDLE_SECONDS", "3600"),
    ("PROVIDER__SESSIONS__BROWSER_MAX_SECONDS", "86400"),
];

/// Signs `alice` in on the login page with `password`.
async fn sign_in(browser: &reqwest::Client, base: &Url, password: &str) {
    let page = get_text(browser, base.join(endpoints::LOGIN).unwrap()).await;
    let response = submit(
        browser,
        base,
        &page,
        &[("username", "alice"), ("password", password)],
    )
    .await;
    assert_eq!(response.status(), 303, "signed in");
}

/// Whether the browser is signed in: the account page answers, else it sends to the login page.
async fn signed_in(browser: &reqwest::Client, provider: &TestProvider) -> bool {
    let response = browser
        .get(provider.url(endpoints::ACCOUNT))
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => true,
        303 => {
            let to = response.headers()["location"].to_str().unwrap().to_owned();
            assert!(to.contains(endpoints::LOGIN), "sent to {to}");
            false
        }
        other => panic!("the account page answered {other}"),
    }
}

/// How many browser sessions of the database are not finished.
async fn unfinished_sessions(db: &TestDb) -> usize {
    let mut repo = db.storage.reader().await.unwrap();
    let user = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    repo.browser_sessions()
        .list_active_for_user(user.id)
        .await
        .unwrap()
        .len()
}

/// An hour without use ends a session; any use (a page) starts the hour again.
async fn an_idle_browser_session_ends(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start_with(&db, LIFETIMES).await;
    let browser = browser();
    sign_in(&browser, &provider.base_url, PASSWORD).await;
    assert!(signed_in(&browser, &provider).await);
    // Used every 50 minutes: still signed in after 2.5 hours.
    for _ in 0..3 {
        db.clock.advance(Duration::minutes(50));
        assert!(signed_in(&browser, &provider).await);
    }
    // Then an hour without use: signed out, and the session is finished in the database.
    db.clock.advance(Duration::minutes(60));
    assert!(!signed_in(&browser, &provider).await);
    assert_eq!(unfinished_sessions(&db).await, 0);
    // Signing in again works.
    sign_in(&browser, &provider.base_url, PASSWORD).await;
    assert!(signed_in(&browser, &provider).await);
    provider.stop().await;
}

/// A day after sign-in a session ends, however busy; the Matrix device signed in from it
/// stays (an OAuth 2.0 session lives on its refresh token).
async fn a_browser_session_ends_at_its_absolute_lifetime(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start_with(&db, LIFETIMES).await;
    let browser = browser();
    let url = authorize_url(
        &provider,
        &[(
            "scope",
            "openid urn:matrix:client:api:* urn:matrix:client:device:LIFETIME01",
        )],
    );
    let back = authorize(&browser, &provider.base_url, &url, PASSWORD).await;
    let (status, tokens) = exchange_code(&provider, &param(&back, "code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let mut used = Duration::zero();
    while used + Duration::minutes(45) < Duration::hours(24) {
        db.clock.advance(Duration::minutes(45));
        used += Duration::minutes(45);
        assert!(signed_in(&browser, &provider).await, "after {used}");
    }
    db.clock.advance(Duration::hours(24) - used);
    assert!(!signed_in(&browser, &provider).await);
    assert_eq!(unfinished_sessions(&db).await, 0);
    // The device's session goes on: its refresh token still works.
    let (client_id, secret) = static_client(&provider);
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::TOKEN))
            .basic_auth(&client_id, Some(&secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    provider.stop().await;
}

/// Changing the password in one browser signs the other browsers out and keeps this one
/// signed in; the Matrix device signed in from another browser stays (README: a password
/// change ends the other browser sessions only; a reset by a recovery link ends everything).
async fn a_password_change_ends_the_other_browser_sessions(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let (here, elsewhere, phone) = (browser(), browser(), browser());
    sign_in(&here, &base, PASSWORD).await;
    sign_in(&elsewhere, &base, PASSWORD).await;
    let url = authorize_url(
        &provider,
        &[(
            "scope",
            "openid urn:matrix:client:api:* urn:matrix:client:device:PHONEDEV01",
        )],
    );
    let back = authorize(&phone, &base, &url, PASSWORD).await;
    let (status, tokens) = exchange_code(&provider, &param(&back, "code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(unfinished_sessions(&db).await, 3);

    db.clock.advance(Duration::seconds(1));
    let (status, page) = text(
        here.get(provider.url("/account?action=password"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let response = post_form(
        &here,
        &base,
        &page,
        "#password-form",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("new_password_confirm", NEW_PASSWORD),
        ],
    )
    .await;
    assert_eq!(response.status(), 303);

    assert!(
        signed_in(&here, &provider).await,
        "the browser that changed it stays"
    );
    assert!(!signed_in(&elsewhere, &provider).await);
    assert!(!signed_in(&phone, &provider).await);
    assert_eq!(unfinished_sessions(&db).await, 1);
    // The phone's Matrix device stays signed in.
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::INTROSPECTION))
            .bearer_auth(&provider.settings.matrix.secret)
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true, "{body}");
    provider.stop().await;
}

/// Submits the form `selector` of a page with `fields` set (its hidden fields, the CSRF token
/// among them, kept).
async fn post_form(
    browser: &reqwest::Client,
    base: &Url,
    html: &str,
    selector: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (action, mut form) = {
        let doc = Html::parse_document(html);
        let form = doc
            .select(&Selector::parse(selector).unwrap())
            .next()
            .unwrap_or_else(|| panic!("a form {selector} in {html}"));
        let action = form.value().attr("action").unwrap().to_owned();
        let fields: Vec<(String, String)> = form
            .select(&Selector::parse("input[name]").unwrap())
            .filter(|i| i.value().attr("type") != Some("password"))
            .map(|i| {
                (
                    i.value().attr("name").unwrap().to_owned(),
                    i.value().attr("value").unwrap_or("").to_owned(),
                )
            })
            .collect();
        (action, fields)
    };
    for (name, value) in fields {
        support::set(&mut form, name, value);
    }
    browser
        .post(base.join(&action).unwrap())
        .form(&form)
        .send()
        .await
        .unwrap()
}

backend_tests!(
    an_idle_browser_session_ends,
    a_browser_session_ends_at_its_absolute_lifetime,
    a_password_change_ends_the_other_browser_sessions,
);
