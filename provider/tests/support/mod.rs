//! Browser helpers shared by the integration tests that go through the sign-in and consent
//! pages (`mod support;`): a cookie-keeping client that doesn't follow redirects, a user with a
//! password, and the walk from an authorization URL back to the client's redirect URI.

use std::sync::Arc;

use provider::{
    clock::SeededRngSource,
    passwords::{PasswordConfig, PasswordHasher},
    test_harness::TestDb,
};
use scraper::{Html, Selector};
use url::Url;

/// The redirect URI of the generated configuration's static client.
pub const REDIRECT: &str = "https://client.example.com/callback";

/// A browser: keeps cookies, shows redirects instead of following them.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Adds a user with a password (hashed with the default scheme).
pub async fn add_user(db: &TestDb, username: &str, password: &str) {
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

/// The first form of a page: its action and its hidden fields.
pub fn form(html: &str) -> (String, Vec<(String, String)>) {
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

/// Where a 303 response sends the browser.
pub fn location(response: &reqwest::Response, base: &Url) -> Url {
    assert_eq!(
        response.status(),
        303,
        "expected a redirect from {}",
        response.url()
    );
    base.join(response.headers()["location"].to_str().unwrap())
        .unwrap()
}

/// Follows an authorization URL through the pages, signing in as `alice` and allowing as
/// needed; returns where the browser was sent back to.
pub async fn authorize(browser: &reqwest::Client, base: &Url, url: &str, password: &str) -> Url {
    let mut next = location(&browser.get(url).send().await.unwrap(), base);
    loop {
        if next.as_str().starts_with(REDIRECT) {
            return next;
        }
        let page = browser
            .get(next.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (action, mut fields) = form(&page);
        if next.path() == "/login" {
            fields.push(("username".into(), "alice".into()));
            fields.push(("password".into(), password.into()));
        } else {
            fields.push(("action".into(), "allow".into()));
        }
        let response = browser
            .post(base.join(&action).unwrap())
            .form(&fields)
            .send()
            .await
            .unwrap();
        next = location(&response, base);
    }
}

/// A query parameter of a URL.
pub fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
