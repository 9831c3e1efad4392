//! Registration (`prompt=create`), and RP-initiated logout, through the pages with a cookie jar.

mod support;

use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use support::{
    authorize_url, browser, form, get_text, location, param, static_client, submit, REDIRECT,
    VERIFIER,
};
use url::Url;

const SIGNED_OUT: &str = "https://client.example.com/signed-out";

async fn registration_with_prompt_create(db: TestDb) {
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__ACCOUNT__REGISTRATION", "true")]).await;
    let base = provider.base_url.clone();
    let http = browser();
    let register = location(
        &http
            .get(authorize_url(&provider, &[("prompt", "create")]))
            .send()
            .await
            .unwrap(),
        &base,
    );
    assert_eq!(register.path(), "/register");
    let page = get_text(&http, register.clone()).await;
    assert!(page.contains("@username:localhost"), "{page}");

    for (username, password, confirm, error) in [
        (
            "Carol",
            "long enough pw",
            "long enough pw",
            "Username: use only lower-case letters",
        ),
        ("carol", "short", "short", "Password:"),
        (
            "carol",
            "long enough pw",
            "another pw!!",
            "The two passwords differ.",
        ),
    ] {
        let response = submit(
            &http,
            &base,
            &page,
            &[
                ("username", username),
                ("password", password),
                ("password_confirm", confirm),
            ],
        )
        .await;
        assert_eq!(response.status(), 400);
        let body = response.text().await.unwrap();
        assert!(body.contains(error), "{error}: {body}");
    }
    let response = submit(
        &http,
        &base,
        &page,
        &[
            ("username", "carol"),
            ("password", "long enough pw"),
            ("password_confirm", "long enough pw"),
        ],
    )
    .await;
    let consent = location(&response, &base);
    assert!(consent.path().starts_with("/consent/"), "{consent}");
    let page = get_text(&http, consent).await;
    assert!(page.contains("Signed in as <strong>carol</strong>"));
    let back = location(
        &submit(&http, &base, &page, &[("action", "allow")]).await,
        &base,
    );
    assert!(param(&back, "code").is_some());

    // The name is taken now, for good.
    let other = browser();
    let page = get_text(&other, provider.url("/register")).await;
    let response = submit(
        &other,
        &base,
        &page,
        &[
            ("username", "carol"),
            ("password", "long enough pw"),
            ("password_confirm", "long enough pw"),
        ],
    )
    .await;
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("This username is taken."));
    provider.stop().await;
}

async fn registration_closed_by_default(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let response = browser()
        .get(provider.url("/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Registration is closed"));
    // prompt=create then falls back to the login page.
    let response = browser()
        .get(authorize_url(&provider, &[("prompt", "create")]))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &provider.base_url).path(), "/login");
    provider.stop().await;
}

async fn rp_initiated_logout(db: TestDb) {
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__ACCOUNT__REGISTRATION", "true")]).await;
    let base = provider.base_url.clone();
    let (client_id, secret) = static_client(&provider);
    let http = browser();
    // Register (and so sign in), then get a code and tokens.
    let page = get_text(&http, provider.url("/register")).await;
    submit(
        &http,
        &base,
        &page,
        &[
            ("username", "dave"),
            ("password", "long enough pw"),
            ("password_confirm", "long enough pw"),
        ],
    )
    .await;
    let consent = location(
        &http
            .get(authorize_url(&provider, &[]))
            .send()
            .await
            .unwrap(),
        &base,
    );
    let page = get_text(&http, consent).await;
    let back = location(
        &submit(&http, &base, &page, &[("action", "allow")]).await,
        &base,
    );
    let code = param(&back, "code").unwrap();
    let tokens: serde_json::Value = reqwest::Client::new()
        .post(provider.url("/oauth2/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // An unregistered post-logout redirect is refused on a page.
    let mut bad = Url::parse(&provider.url("/oauth2/logout")).unwrap();
    bad.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("post_logout_redirect_uri", "https://evil.example/");
    let response = http.get(bad).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    // A hint that isn't ours is refused.
    let response = http
        .get(provider.url("/oauth2/logout?id_token_hint=e30.e30.e30"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // The real thing: a confirmation page, then back to the client with the state.
    let mut url = Url::parse(&provider.url("/oauth2/logout")).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("post_logout_redirect_uri", SIGNED_OUT)
        .append_pair("state", "bye");
    // Signing out redirects to the client: the page's form-action allows its origin (browsers
    // check a form's redirects against it).
    let response = http.get(url.clone()).send().await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    let client_origin = Url::parse(SIGNED_OUT)
        .unwrap()
        .origin()
        .ascii_serialization();
    assert!(
        csp.contains(&format!("form-action 'self' {client_origin};")),
        "{csp}"
    );
    let page = get_text(&http, url).await;
    assert!(
        page.contains("Sign out?") && page.contains("dave"),
        "{page}"
    );
    // Without the CSRF token the confirmation is refused.
    let (action, fields) = form(&page);
    let forged: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| k != "csrf")
        .cloned()
        .collect();
    let response = http
        .post(base.join(&action).unwrap())
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let done = location(&submit(&http, &base, &page, &[]).await, &base);
    assert_eq!(done.as_str(), format!("{SIGNED_OUT}?state=bye"));

    // Signed out: the browser must sign in again, and the session's refresh token is dead.
    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &base).path(), "/login");
    let refreshed: serde_json::Value = reqwest::Client::new()
        .post(provider.url("/oauth2/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["error"], "invalid_grant");
    provider.stop().await;
}

backend_tests!(
    registration_with_prompt_create,
    registration_closed_by_default,
    rp_initiated_logout
);
