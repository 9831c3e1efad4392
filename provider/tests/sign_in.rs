//! The browser side of the authorization code flow, over HTTP with a cookie jar: /authorize →
//! login page → consent page → code at the client's redirect URI; remembered consent, prompt
//! values, denial and CSRF.

use std::sync::Arc;

use provider::{
    backend_tests,
    clock::SeededRngSource,
    crypto::sha256,
    endpoints,
    passwords::{PasswordConfig, PasswordHasher},
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use url::Url;

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://client.example.com/callback";
const SCOPE: &str = "openid urn:matrix:client:api:*";

/// A browser: keeps cookies, doesn't follow redirects (the test follows them, to look at each).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn add_user(db: &TestDb, username: &str, password: &str) {
    let hasher =
        PasswordHasher::new(PasswordConfig::default(), Arc::new(SeededRngSource::new(5))).unwrap();
    let (version, hash) = hasher.hash(password.to_owned()).await.unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add(username).await.unwrap();
    repo.user_passwords()
        .add(user.id, &hash, version, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

/// An authorization request; `extra` parameters replace or add to the defaults.
fn authorize_url(provider: &TestProvider, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("client_id", provider.settings.clients[0].client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", SCOPE),
        ("state", "st4te"),
        ("nonce", "n0nce"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        params.push((name, value));
    }
    let mut url = Url::parse(&provider.url(endpoints::AUTHORIZE)).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

fn location(response: &reqwest::Response, provider: &TestProvider) -> Url {
    assert_eq!(
        response.status(),
        303,
        "expected a redirect from {}",
        response.url()
    );
    let raw = response.headers()["location"].to_str().unwrap();
    provider.base_url.join(raw).unwrap()
}

/// The form of a page: its action and its fields (hidden ones included).
fn form(html: &str) -> (String, Vec<(String, String)>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse("form").unwrap())
        .next()
        .expect("a form");
    let action = form.value().attr("action").unwrap().to_owned();
    let fields = form
        .select(&Selector::parse("input[type=hidden]").unwrap())
        .map(|i| {
            (
                i.value().attr("name").unwrap().to_owned(),
                i.value().attr("value").unwrap_or("").to_owned(),
            )
        })
        .collect();
    (action, fields)
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Submits a page's form with extra fields; returns the response.
async fn submit(
    http: &reqwest::Client,
    provider: &TestProvider,
    page: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let (action, mut fields) = form(page);
    fields.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    http.post(provider.base_url.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap()
}

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
    let login = location(&response, &provider);
    assert_eq!(login.path(), "/login");
    let grant = param(&login, "grant").unwrap();

    let page = http.get(login.clone()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let page = page.text().await.unwrap();
    assert!(page.contains("Example confidential client"), "{page}");

    // A wrong password, then an unknown user: the same answer.
    for (user, password) in [("alice", "wrong"), ("mallory", "correct horse battery")] {
        let response = submit(
            &http,
            &provider,
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
        &provider,
        &page,
        &[("username", "alice"), ("password", "correct horse battery")],
    )
    .await;
    let consent = location(&response, &provider);
    assert_eq!(consent.path(), format!("/consent/{grant}"));
    let page = http
        .get(consent.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Signed in as <strong>alice</strong>"),
        "{page}"
    );
    assert!(page.contains("Access your Matrix account"), "{page}");

    // Allow: the code goes to the client with the state and the issuer (RFC 9207).
    let response = submit(&http, &provider, &page, &[("action", "allow")]).await;
    let back = location(&response, &provider);
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st4te"));
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
    let again = submit(&http, &provider, &page, &[("action", "allow")]).await;
    assert_eq!(again.status(), 400);

    // Signed in, consent remembered: the next request goes straight back with a code.
    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    let back = location(&response, &provider);
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
    assert!(param(&location(&response, &provider), "code").is_some());
    // prompt=consent asks again; prompt=login asks for the password again.
    let response = http
        .get(authorize_url(&provider, &[("prompt", "consent")]))
        .send()
        .await
        .unwrap();
    assert!(location(&response, &provider)
        .path()
        .starts_with("/consent/"));
    let response = http
        .get(authorize_url(&provider, &[("prompt", "login")]))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &provider).path(), "/login");
    // A different scope needs a new consent; prompt=none then says so.
    let response = http
        .get(authorize_url(
            &provider,
            &[("scope", "openid email"), ("prompt", "none")],
        ))
        .send()
        .await
        .unwrap();
    let back = location(&response, &provider);
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
    let back = location(&response, &provider);
    assert_eq!(param(&back, "error").as_deref(), Some("login_required"));
    assert_eq!(param(&back, "state").as_deref(), Some("st4te"));

    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    let login = location(&response, &provider);
    let page = http.get(login).send().await.unwrap().text().await.unwrap();
    let response = submit(
        &http,
        &provider,
        &page,
        &[("username", "bob"), ("password", "another good password")],
    )
    .await;
    let consent = location(&response, &provider);
    let page = http
        .get(consent)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let response = submit(&http, &provider, &page, &[("action", "deny")]).await;
    let back = location(&response, &provider);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert!(param(&back, "code").is_none());
    provider.stop().await;
}

backend_tests!(
    sign_in_consent_and_code,
    denial_and_prompt_none_without_a_session
);
