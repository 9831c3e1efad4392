//! The browser side of the authorization code flow, over HTTP with a cookie jar: /authorize →
//! login page → consent page → code at the client's redirect URI; remembered consent, prompt
//! values, denial and CSRF.

mod support;

use provider::{
    backend_tests,
    crypto::sha256,
    test_harness::{TestDb, TestProvider},
};
use support::{
    add_user, authorize_url, browser, get_text, location, param, static_client, submit, REDIRECT,
    STATE, VERIFIER,
};

async fn sign_in_consent_and_code(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let http = browser();

    // Nobody is signed in: /authorize sends the browser to the login page.
    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    let login = location(&response, &provider.base_url);
    assert_eq!(login.path(), "/login");
    let grant = param(&login, "grant").unwrap();

    let page = http.get(login.clone()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    // Signing in may end at the client (a remembered consent), and browsers check a form's
    // redirects against form-action: the login and consent pages allow the client's origin.
    let client_origin = url::Url::parse(REDIRECT)
        .unwrap()
        .origin()
        .ascii_serialization();
    let form_action = format!("form-action 'self' {client_origin};");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains(&form_action), "{csp}");
    let page = page.text().await.unwrap();
    assert!(page.contains("Example confidential client"), "{page}");

    // A wrong password, then an unknown user: the same answer.
    for (user, password) in [("alice", "wrong"), ("mallory", "correct horse battery")] {
        let response = submit(
            &http,
            &provider.base_url,
            &page,
            &[("username", user), ("password", password)],
        )
        .await;
        assert_eq!(response.status(), 401);
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("Wrong username or password."));
    }

    // A forged form (no CSRF token) is refused.
    let forged = http
        .post(provider.url("/login"))
        .form(&[
            ("username", "alice"),
            ("password", "correct horse battery"),
            ("grant", grant.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // The right password: on to the consent page.
    let response = submit(
        &http,
        &provider.base_url,
        &page,
        &[("username", "alice"), ("password", "correct horse battery")],
    )
    .await;
    let consent = location(&response, &provider.base_url);
    assert_eq!(consent.path(), format!("/consent/{grant}"));
    let page = http.get(consent.clone()).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains(&form_action), "{csp}");
    let page = get_text(&http, consent.clone()).await;
    assert!(
        page.contains("Signed in as <strong>alice</strong>"),
        "{page}"
    );
    assert!(page.contains("Access your Matrix account"), "{page}");

    // Allow: the code goes to the client with the state and the issuer (RFC 9207).
    let response = submit(&http, &provider.base_url, &page, &[("action", "allow")]).await;
    let back = location(&response, &provider.base_url);
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some(STATE));
    assert_eq!(
        param(&back, "iss").as_deref(),
        Some(provider.base_url.as_str())
    );
    let code = param(&back, "code").unwrap();
    let mut repo = db.storage.reader().await.unwrap();
    let stored = repo
        .authorization_grants()
        .find_by_code_hash(&sha256(&code))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id.to_string(), grant);
    assert!(stored.fulfilled_at.is_some() && stored.session_id.is_some());
    drop(repo);

    // Approving the same request again doesn't mint a second code.
    let again = submit(&http, &provider.base_url, &page, &[("action", "allow")]).await;
    assert_eq!(again.status(), 400);

    // Signed in, consent remembered: the next request goes straight back with a code.
    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    let back = location(&response, &provider.base_url);
    assert!(
        back.as_str().starts_with(REDIRECT) && param(&back, "code").is_some(),
        "{back}"
    );
    // prompt=none works silently too.
    let response = http
        .get(authorize_url(&provider, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(param(&location(&response, &provider.base_url), "code").is_some());
    // prompt=consent asks again; prompt=login asks for the password again.
    let response = http
        .get(authorize_url(&provider, &[("prompt", "consent")]))
        .send()
        .await
        .unwrap();
    assert!(location(&response, &provider.base_url)
        .path()
        .starts_with("/consent/"));
    let response = http
        .get(authorize_url(&provider, &[("prompt", "login")]))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &provider.base_url).path(), "/login");
    // A different scope needs a new consent; prompt=none then says so.
    let response = http
        .get(authorize_url(
            &provider,
            &[("scope", "openid email"), ("prompt", "none")],
        ))
        .send()
        .await
        .unwrap();
    let back = location(&response, &provider.base_url);
    assert_eq!(param(&back, "error").as_deref(), Some("consent_required"));
    provider.stop().await;
}

async fn denial_and_prompt_none_without_a_session(db: TestDb) {
    add_user(&db, "bob", "another good password").await;
    let provider = TestProvider::start(&db).await;
    let http = browser();
    let response = http
        .get(authorize_url(&provider, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    let back = location(&response, &provider.base_url);
    assert_eq!(param(&back, "error").as_deref(), Some("login_required"));
    assert_eq!(param(&back, "state").as_deref(), Some(STATE));

    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    let login = location(&response, &provider.base_url);
    let page = get_text(&http, login).await;
    let response = submit(
        &http,
        &provider.base_url,
        &page,
        &[("username", "bob"), ("password", "another good password")],
    )
    .await;
    let consent = location(&response, &provider.base_url);
    let page = get_text(&http, consent).await;
    let response = submit(&http, &provider.base_url, &page, &[("action", "deny")]).await;
    let back = location(&response, &provider.base_url);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert!(param(&back, "code").is_none());
    provider.stop().await;
}

/// OIDC Core §3.1.2.1: `login_hint` pre-fills the username (a Matrix ID of this server too).
async fn login_hint_prefills_the_username(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let http = browser();
    for (hint, expected) in [
        ("carol", Some("carol")),
        ("mxid:@carol:localhost", Some("carol")),
        ("@carol:elsewhere", None),
    ] {
        let response = http
            .get(authorize_url(&provider, &[("login_hint", hint)]))
            .send()
            .await
            .unwrap();
        let login = location(&response, &provider.base_url);
        let page = http.get(login).send().await.unwrap().text().await.unwrap();
        match expected {
            Some(name) => assert!(
                page.contains(&format!(r#"value="{name}""#)),
                "{hint}: {page}"
            ),
            None => assert!(page.contains(r#"value="""#), "{hint}: {page}"),
        }
    }
    provider.stop().await;
}

/// Signs alice in and allows one request, so the browser holds a session and a CSRF token;
/// returns the consent page of that first request (its form carries the token).
async fn signed_in_browser(provider: &TestProvider) -> (reqwest::Client, String) {
    let http = browser();
    let base = provider.base_url.clone();
    let login = location(
        &http.get(authorize_url(provider, &[])).send().await.unwrap(),
        &base,
    );
    let page = get_text(&http, login).await;
    let response = submit(
        &http,
        &base,
        &page,
        &[("username", "alice"), ("password", "correct horse battery")],
    )
    .await;
    let consent = location(&response, &base);
    let page = get_text(&http, consent).await;
    (http, page)
}

/// An answer posted straight to `/consent/{id}` can't skip the sign-in `prompt=login` asks for.
async fn a_posted_answer_cannot_skip_a_required_sign_in(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let (http, first_page) = signed_in_browser(&provider).await;
    let csrf = support::form(&first_page)
        .1
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .unwrap()
        .1;
    db.clock.advance(chrono::Duration::seconds(5));
    let response = http
        .get(authorize_url(&provider, &[("prompt", "login")]))
        .send()
        .await
        .unwrap();
    let login = location(&response, &base);
    assert_eq!(login.path(), "/login");
    let grant = param(&login, "grant").unwrap();
    let response = http
        .post(provider.url(&format!("/consent/{grant}")))
        .form(&[("csrf", csrf.as_str()), ("action", "allow")])
        .send()
        .await
        .unwrap();
    let next = location(&response, &base);
    assert_eq!(
        next.path(),
        "/login",
        "no code without the fresh sign-in: {next}"
    );
    assert!(param(&next, "code").is_none());
    provider.stop().await;
}

/// A user locked between consent and the code exchange gets no tokens.
async fn a_locked_user_gets_no_tokens(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let (http, page) = signed_in_browser(&provider).await;
    let back = location(
        &submit(&http, &base, &page, &[("action", "allow")]).await,
        &base,
    );
    let code = param(&back, "code").unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    repo.users().set_locked(alice.id, true).await.unwrap();
    repo.commit().await.unwrap();
    let (client_id, secret) = static_client(&provider);
    let body: serde_json::Value = reqwest::Client::new()
        .post(provider.url("/oauth2/token"))
        .basic_auth(client_id, Some(secret))
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
    assert_eq!(body["error"], "invalid_grant", "{body}");
    provider.stop().await;
}

/// RFC 6749 §4.1.2: a code used twice revokes the tokens it issued.
async fn a_replayed_code_revokes_what_it_issued(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let (http, page) = signed_in_browser(&provider).await;
    let back = location(
        &submit(&http, &base, &page, &[("action", "allow")]).await,
        &base,
    );
    let code = param(&back, "code").unwrap();
    let (client_id, secret) = static_client(&provider);
    let exchange = || async {
        reqwest::Client::new()
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
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let introspect = |token: String| {
        let (client_id, secret) = (client_id.clone(), secret.clone());
        let url = provider.url("/oauth2/introspect");
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth(client_id, Some(secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let first = exchange().await;
    let access = first["access_token"].as_str().unwrap().to_owned();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(access.clone()).await["active"], true);
    assert_eq!(introspect(refresh.clone()).await["active"], true);

    // The same code again, with everything else right.
    let replay = exchange().await;
    assert_eq!(replay["error"], "invalid_grant", "{replay}");
    assert_eq!(
        introspect(access).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(
        introspect(refresh).await,
        serde_json::json!({"active": false})
    );
    provider.stop().await;
}

backend_tests!(
    a_replayed_code_revokes_what_it_issued,
    a_posted_answer_cannot_skip_a_required_sign_in,
    a_locked_user_gets_no_tokens,
    sign_in_consent_and_code,
    denial_and_prompt_none_without_a_session,
    login_hint_prefills_the_username,
);
