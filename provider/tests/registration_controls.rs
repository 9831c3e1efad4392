//! Registration controls through the register page, on both databases: registration tokens
//! (required, wrong, expired, revoked, used up, counted, raced for), terms of service (required
//! and recorded), and captchas verified over HTTP against a wiremock stand-in of the service.

mod support;

use chrono::Duration;
use provider::{
    backend_tests,
    storage::RegistrationToken,
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use support::{authorize_url, browser, form, get_text, location};
use wiremock::{
    matchers::{body_string_contains, method, path},
    Mock, MockServer, ResponseTemplate,
};

const PASSWORD: &str = "long enough pw";

/// A provider with registration open, rate limits off (these tests register many times from one
/// address), and `extra` settings.
async fn start(db: &TestDb, extra: &[(&str, &str)]) -> TestProvider {
    let mut overrides = vec![
        ("PROVIDER__ACCOUNT__REGISTRATION", "true"),
        ("PROVIDER__RATE_LIMITING__ENABLED", "false"),
    ];
    overrides.extend_from_slice(extra);
    TestProvider::start_with(db, &overrides).await
}

/// Opens the register page in a fresh browser and submits it as `username` with `fields` set
/// (the page's own fields otherwise, but never the terms box unless `fields` ticks it).
async fn register_with(
    http: &reqwest::Client,
    provider: &TestProvider,
    page_url: &str,
    username: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let page = get_text(http, page_url).await;
    let (action, mut form_fields) = form(&page);
    form_fields.retain(|(name, _)| name != "accept_terms");
    let mut set = |name: &str, value: &str| {
        form_fields.retain(|(n, _)| n != name);
        form_fields.push((name.to_owned(), value.to_owned()));
    };
    set("username", username);
    set("password", PASSWORD);
    set("password_confirm", PASSWORD);
    for (name, value) in fields {
        set(name, value);
    }
    http.post(provider.base_url.join(&action).unwrap())
        .form(&form_fields)
        .send()
        .await
        .unwrap()
}

async fn register(
    provider: &TestProvider,
    username: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    register_with(
        &browser(),
        provider,
        &provider.url("/register"),
        username,
        fields,
    )
    .await
}

/// The value of `attribute` on the first element of `page` matching `selector`.
fn attr(page: &str, selector: &str, attribute: &str) -> Option<String> {
    let doc = Html::parse_document(page);
    let found = doc
        .select(&Selector::parse(selector).unwrap())
        .next()?
        .value()
        .attr(attribute)
        .map(str::to_owned);
    found
}

/// The error the page shows, as text.
fn error_text(page: &str) -> String {
    let doc = Html::parse_document(page);
    let found = doc
        .select(&Selector::parse("#register-error").unwrap())
        .next()
        .map(|e| e.text().collect())
        .unwrap_or_default();
    found
}

/// Asserts a refusal: 400, the page again with `message`, and the typed username kept.
async fn assert_refused(response: reqwest::Response, username: &str, message: &str) -> String {
    assert_eq!(response.status(), 400, "{message}");
    let body = response.text().await.unwrap();
    assert!(error_text(&body).contains(message), "{message}: {body}");
    assert_eq!(
        attr(&body, "input#username", "value").as_deref(),
        Some(username),
        "the username is kept: {body}"
    );
    body
}

async fn user_exists(db: &TestDb, username: &str) -> bool {
    let mut repo = db.storage.reader().await.unwrap();
    repo.users()
        .find_by_username(username)
        .await
        .unwrap()
        .is_some()
}

async fn token(db: &TestDb, id: ulid::Ulid) -> RegistrationToken {
    let mut repo = db.storage.reader().await.unwrap();
    repo.registration_tokens()
        .lookup(id)
        .await
        .unwrap()
        .unwrap()
}

/// Issues a token with this value, usage limit and expiry.
async fn issue(
    db: &TestDb,
    value: &str,
    limit: Option<u32>,
    expires: Option<chrono::DateTime<chrono::Utc>>,
) -> RegistrationToken {
    let mut repo = db.storage.begin().await.unwrap();
    let token = repo
        .registration_tokens()
        .add(value, limit, expires)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    token
}

async fn a_registration_token_is_required(db: TestDb) {
    let provider = start(
        &db,
        &[("PROVIDER__ACCOUNT__REGISTRATION_TOKEN_REQUIRED", "true")],
    )
    .await;
    let now = db.clock.now_db();
    let twice = issue(&db, "good-token-twice", Some(2), None).await;
    issue(&db, "expired-token", None, Some(now - Duration::seconds(1))).await;
    let used_up = issue(&db, "used-up-token", Some(1), None).await;
    let revoked = issue(&db, "revoked-token", None, None).await;
    {
        let mut repo = db.storage.begin().await.unwrap();
        assert!(repo
            .registration_tokens()
            .use_token(used_up.id)
            .await
            .unwrap());
        repo.registration_tokens().revoke(revoked.id).await.unwrap();
        repo.commit().await.unwrap();
    }

    let page = get_text(&browser(), provider.url("/register")).await;
    assert_eq!(
        attr(&page, "input#registration_token", "name").as_deref(),
        Some("registration_token"),
        "{page}"
    );

    assert_refused(
        register(&provider, "erin", &[]).await,
        "erin",
        "A registration token is required",
    )
    .await;
    let body = assert_refused(
        register(
            &provider,
            "erin",
            &[("registration_token", "no-such-token")],
        )
        .await,
        "erin",
        "This registration token is not valid.",
    )
    .await;
    assert_eq!(
        attr(&body, "input#registration_token", "value").as_deref(),
        Some("no-such-token"),
        "the token is kept: {body}"
    );
    for (value, message) in [
        ("expired-token", "This registration token has expired."),
        ("used-up-token", "This registration token has been used up."),
        ("revoked-token", "This registration token has been revoked."),
    ] {
        assert_refused(
            register(&provider, "erin", &[("registration_token", value)]).await,
            "erin",
            message,
        )
        .await;
    }
    assert!(!user_exists(&db, "erin").await);
    assert_eq!(token(&db, twice.id).await.times_used, 0);

    // A valid token: the account is created and the use counted.
    let response = register(
        &provider,
        "erin",
        &[("registration_token", "good-token-twice")],
    )
    .await;
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    assert!(user_exists(&db, "erin").await);
    let counted = token(&db, twice.id).await;
    assert_eq!(counted.times_used, 1);
    assert_eq!(counted.last_used_at, Some(db.clock.now_db()));

    // Its second use, through prompt=create (the authorization request carries on to consent).
    let http = browser();
    let register_page = location(
        &http
            .get(authorize_url(&provider, &[("prompt", "create")]))
            .send()
            .await
            .unwrap(),
        &provider.base_url,
    );
    assert_eq!(register_page.path(), "/register");
    let response = register_with(
        &http,
        &provider,
        register_page.as_str(),
        "frank",
        &[("registration_token", "  good-token-twice  ")],
    )
    .await;
    let consent = location(&response, &provider.base_url);
    assert!(consent.path().starts_with("/consent/"), "{consent}");
    assert_eq!(token(&db, twice.id).await.times_used, 2);

    // Used up now.
    assert_refused(
        register(
            &provider,
            "gina",
            &[("registration_token", "good-token-twice")],
        )
        .await,
        "gina",
        "This registration token has been used up.",
    )
    .await;
    assert!(!user_exists(&db, "gina").await);
    assert_eq!(token(&db, twice.id).await.times_used, 2);
    provider.stop().await;
}

/// A registration refused after the token was checked (the username is taken in the provider
/// but not on the homeserver) doesn't spend the token.
async fn a_failed_registration_keeps_its_token_use(db: TestDb) {
    let provider = start(
        &db,
        &[("PROVIDER__ACCOUNT__REGISTRATION_TOKEN_REQUIRED", "true")],
    )
    .await;
    let once = issue(&db, "single-use-token", Some(1), None).await;
    support::add_user(&db, "taken", "another password").await;
    let response = register(
        &provider,
        "taken",
        &[("registration_token", "single-use-token")],
    )
    .await;
    assert_refused(response, "taken", "This username is taken.").await;
    assert_eq!(token(&db, once.id).await.times_used, 0);

    let response = register(
        &provider,
        "henry",
        &[("registration_token", "single-use-token")],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(token(&db, once.id).await.times_used, 1);
    provider.stop().await;
}

/// Registrations racing for a token's last uses: exactly as many accounts as its limit allows
/// (PostgreSQL serialises the conditional update on the token's row; SQLite has one writer).
async fn concurrent_registrations_respect_the_usage_limit(db: TestDb) {
    let provider = start(
        &db,
        &[("PROVIDER__ACCOUNT__REGISTRATION_TOKEN_REQUIRED", "true")],
    )
    .await;
    let limited = issue(&db, "contested-token", Some(2), None).await;
    let provider = std::sync::Arc::new(provider);
    let attempts: Vec<_> = (0..6)
        .map(|i| {
            let provider = provider.clone();
            tokio::spawn(async move {
                let response = register(
                    &provider,
                    &format!("racer{i}"),
                    &[("registration_token", "contested-token")],
                )
                .await;
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                (status, body)
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        let (status, body) = attempt.await.unwrap();
        match status {
            303 => created += 1,
            400 => assert!(
                error_text(&body).contains("This registration token has been used up."),
                "{body}"
            ),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(created, 2);
    assert_eq!(token(&db, limited.id).await.times_used, 2);
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 2);
}

async fn terms_must_be_accepted_and_are_recorded(db: TestDb) {
    let terms = "https://example.com/terms-v2";
    let provider = start(&db, &[("PROVIDER__ACCOUNT__TERMS_OF_SERVICE_URL", terms)]).await;
    let page = get_text(&browser(), provider.url("/register")).await;
    assert_eq!(
        attr(&page, "label a", "href").as_deref(),
        Some(terms),
        "{page}"
    );
    assert_eq!(
        attr(&page, "input#accept_terms", "required").as_deref(),
        Some(""),
        "{page}"
    );

    assert_refused(
        register(&provider, "iris", &[]).await,
        "iris",
        "Accept the terms of service to create an account.",
    )
    .await;
    assert!(!user_exists(&db, "iris").await);

    let response = register(&provider, "iris", &[("accept_terms", "yes")]).await;
    assert_eq!(response.status(), 303);
    let mut repo = db.storage.reader().await.unwrap();
    let user = repo
        .users()
        .find_by_username("iris")
        .await
        .unwrap()
        .unwrap();
    let accepted = repo.user_terms().list_for_user(user.id).await.unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].terms_url, terms);
    assert_eq!(accepted[0].accepted_at, db.clock.now_db());
    provider.stop().await;
}

/// A siteverify stand-in: `good-response` passes, `bad-response` fails, `down-response` gets a
/// 503, `garbage-response` an answer that is not the verdict. Each only with the right secret.
async fn siteverify() -> MockServer {
    let server = MockServer::start().await;
    for (response, answer) in [
        (
            "good-response",
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "success": true, "hostname": "127.0.0.1"
            })),
        ),
        (
            "bad-response",
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "success": false, "error-codes": ["invalid-input-response"]
            })),
        ),
        ("down-response", ResponseTemplate::new(503)),
        (
            "garbage-response",
            ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path("/siteverify"))
            .and(body_string_contains("secret=the-secret-key"))
            .and(body_string_contains(format!("response={response}")))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    server
}

fn captcha_overrides(service: &'static str, server: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("PROVIDER__CAPTCHA__SERVICE", service.to_owned()),
        ("PROVIDER__CAPTCHA__SITE_KEY", "the-site-key".to_owned()),
        ("PROVIDER__CAPTCHA__SECRET_KEY", "the-secret-key".to_owned()),
        (
            "PROVIDER__CAPTCHA__VERIFY_URL",
            format!("{}/siteverify", server.uri()),
        ),
    ]
}

async fn start_with_captcha(
    db: &TestDb,
    service: &'static str,
    server: &MockServer,
) -> TestProvider {
    let overrides = captcha_overrides(service, server);
    let borrowed: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start(db, &borrowed).await
}

async fn a_captcha_is_verified_with_the_service(db: TestDb) {
    let server = siteverify().await;
    let provider = start_with_captcha(&db, "hcaptcha", &server).await;

    // The page loads the widget, and its CSP lets the service's script and frames in.
    let response = browser()
        .get(provider.url("/register"))
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let page = response.text().await.unwrap();
    assert_eq!(
        attr(&page, "script", "src").as_deref(),
        Some("https://js.hcaptcha.com/1/api.js"),
        "{page}"
    );
    assert_eq!(
        attr(&page, "form div[data-sitekey]", "class").as_deref(),
        Some("h-captcha"),
        "{page}"
    );
    assert_eq!(
        attr(&page, "form div.h-captcha", "data-sitekey").as_deref(),
        Some("the-site-key"),
        "{page}"
    );
    assert!(!page.contains("the-secret-key"));
    for directive in ["script-src", "frame-src"] {
        let sources = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with(directive))
            .unwrap_or_else(|| panic!("{directive} in {csp}"));
        assert!(sources.contains("https://hcaptcha.com"), "{csp}");
        assert!(sources.contains("https://*.hcaptcha.com"), "{csp}");
    }
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

    // No response, a refused one, the service failing: no account.
    assert_refused(
        register(&provider, "jane", &[]).await,
        "jane",
        "Complete the captcha",
    )
    .await;
    assert_refused(
        register(&provider, "jane", &[("h-captcha-response", "bad-response")]).await,
        "jane",
        "The captcha was not solved. Try it again.",
    )
    .await;
    for response in ["down-response", "garbage-response"] {
        assert_refused(
            register(&provider, "jane", &[("h-captcha-response", response)]).await,
            "jane",
            "The captcha can't be checked right now. Try again in a moment.",
        )
        .await;
    }
    // Another service's field is not this one's.
    assert_refused(
        register(
            &provider,
            "jane",
            &[("g-recaptcha-response", "good-response")],
        )
        .await,
        "jane",
        "Complete the captcha",
    )
    .await;
    assert!(!user_exists(&db, "jane").await);

    let response = register(
        &provider,
        "jane",
        &[("h-captcha-response", "good-response")],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert!(user_exists(&db, "jane").await);

    // The verification was a form POST of the secret, the response and the client's address.
    let requests = server.received_requests().await.unwrap();
    let last = requests.last().unwrap();
    assert_eq!(
        last.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&last.body)
        .into_owned()
        .collect();
    assert!(
        form.contains(&("secret".into(), "the-secret-key".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("response".into(), "good-response".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("remoteip".into(), "127.0.0.1".into())),
        "{form:?}"
    );
    provider.stop().await;
}

/// The service can't be reached at all (nothing listens at the verify URL): no account, a
/// message to try again.
async fn an_unreachable_captcha_service_creates_no_account(db: TestDb) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let verify_url = format!("http://{closed}/siteverify");
    let provider = start(
        &db,
        &[
            ("PROVIDER__CAPTCHA__SERVICE", "turnstile"),
            ("PROVIDER__CAPTCHA__SITE_KEY", "the-site-key"),
            ("PROVIDER__CAPTCHA__SECRET_KEY", "the-secret-key"),
            ("PROVIDER__CAPTCHA__VERIFY_URL", &verify_url),
        ],
    )
    .await;
    assert_refused(
        register(&provider, "kate", &[("cf-turnstile-response", "any")]).await,
        "kate",
        "The captcha can't be checked right now. Try again in a moment.",
    )
    .await;
    assert!(!user_exists(&db, "kate").await);
    provider.stop().await;
}

/// reCAPTCHA and Turnstile: each page shows its own widget and the answer is read from its own
/// form field.
async fn each_service_has_its_widget_and_field(db: TestDb) {
    let server = siteverify().await;
    for (service, script, class, field, username) in [
        (
            "recaptcha_v2",
            "https://www.google.com/recaptcha/api.js",
            "g-recaptcha",
            "g-recaptcha-response",
            "lena",
        ),
        (
            "turnstile",
            "https://challenges.cloudflare.com/turnstile/v0/api.js",
            "cf-turnstile",
            "cf-turnstile-response",
            "mona",
        ),
    ] {
        let provider = start_with_captcha(&db, service, &server).await;
        let response = browser()
            .get(provider.url("/register"))
            .send()
            .await
            .unwrap();
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let page = response.text().await.unwrap();
        assert_eq!(
            attr(&page, "script", "src").as_deref(),
            Some(script),
            "{page}"
        );
        assert_eq!(
            attr(&page, &format!("form div.{class}"), "data-sitekey").as_deref(),
            Some("the-site-key"),
            "{page}"
        );
        let origin = url::Url::parse(script)
            .unwrap()
            .origin()
            .ascii_serialization();
        assert!(csp.contains(&origin), "{csp}");
        assert!(csp.contains("frame-src"), "{csp}");

        assert_refused(
            register(&provider, username, &[(field, "bad-response")]).await,
            username,
            "The captcha was not solved.",
        )
        .await;
        let response = register(&provider, username, &[(field, "good-response")]).await;
        assert_eq!(response.status(), 303, "{service}");
        assert!(user_exists(&db, username).await);
        provider.stop().await;
    }
}

/// Without controls configured, the page shows none of them and its CSP stays closed.
async fn the_page_shows_only_what_is_configured(db: TestDb) {
    let provider = start(&db, &[]).await;
    let response = browser()
        .get(provider.url("/register"))
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let page = response.text().await.unwrap();
    for absent in [
        "registration_token",
        "accept_terms",
        "<script",
        "data-sitekey",
    ] {
        assert!(!page.contains(absent), "{absent} in {page}");
    }
    assert!(csp.contains("script-src 'none'"), "{csp}");
    assert!(!csp.contains("frame-src"), "{csp}");
    // And registering needs nothing more than before.
    let response = register(&provider, "nina", &[]).await;
    assert_eq!(response.status(), 303);
    provider.stop().await;
}

backend_tests!(
    a_registration_token_is_required,
    a_failed_registration_keeps_its_token_use,
    concurrent_registrations_respect_the_usage_limit,
    terms_must_be_accepted_and_are_recorded,
    a_captcha_is_verified_with_the_service,
    an_unreachable_captcha_service_creates_no_account,
    each_service_has_its_widget_and_field,
    the_page_shows_only_what_is_configured,
);
