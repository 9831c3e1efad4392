//! Helpers shared by the integration tests that talk HTTP to a running provider (`mod support;`):
//! plain and cookie-keeping clients that don't follow redirects, a user with a password, a valid
//! authorization request for the static client, the pages' forms (read, fill in, submit), and the
//! walk from an authorization URL back to the client's redirect URI.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod cli;

use std::sync::Arc;

use provider::{
    clock::SeededRngSource,
    core::passwords::{PasswordConfig, PasswordHasher},
    endpoints,
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use serde_json::Value;
use url::Url;

/// The redirect URI of the generated configuration's static client.
pub const REDIRECT: &str = "https://client.example.com/callback";

/// The PKCE verifier of RFC 7636 Appendix B, and its S256 challenge.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The `state` of [`authorize_url`]'s requests.
pub const STATE: &str = "xyz";

/// A client without cookies that shows redirects instead of following them.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The same, as the `openidconnect` client's HTTP client.
pub fn oidc_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

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

/// The `client_id` and secret of the generated configuration's static (confidential) client.
pub fn static_client(provider: &TestProvider) -> (String, String) {
    let client = &provider.settings.clients[0];
    (client.client_id.clone(), client.secret.clone().unwrap())
}

/// A valid authorization request (PKCE S256, `state` [`STATE`]) for the generated configuration's
/// static client, with `extra` parameters replacing or adding to the defaults; an empty value
/// leaves that parameter out.
pub fn authorize_url(provider: &TestProvider, extra: &[(&str, &str)]) -> String {
    let client_id = provider.settings.clients[0].client_id.as_str();
    let mut params = vec![
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid urn:matrix:client:api:*"),
        ("state", STATE),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let mut url = Url::parse(&provider.url(endpoints::AUTHORIZE)).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// The first form of a page: its action and every named input's value (text and hidden; not
/// passwords, which the test fills in).
pub fn form(html: &str) -> (String, Vec<(String, String)>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse("form").unwrap())
        .next()
        .unwrap_or_else(|| panic!("a form in {html}"));
    let action = form.value().attr("action").unwrap().to_owned();
    let fields = form
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
}

/// Sets a form field, replacing its value if the form has it.
pub fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(n, _)| n != name);
    fields.push((name.to_owned(), value.to_owned()));
}

/// Submits the first form of a page with `fields` set (see [`set`]); returns the response.
pub async fn submit(
    browser: &reqwest::Client,
    base: &Url,
    page: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (action, mut form_fields) = form(page);
    for (name, value) in fields {
        set(&mut form_fields, name, value);
    }
    browser
        .post(base.join(&action).unwrap())
        .form(&form_fields)
        .send()
        .await
        .unwrap()
}

/// The status and the body of a response.
pub async fn text(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The body of a `GET`, whatever its status.
pub async fn get_text(browser: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    browser.get(url).send().await.unwrap().text().await.unwrap()
}

/// The status, the headers and the JSON body of a response (panics, with the body, when it is
/// not JSON).
pub async fn json_of(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
    (status, headers, body)
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
        let page = get_text(browser, next.clone()).await;
        let fields: &[(&str, &str)] = if next.path() == "/login" {
            &[("username", "alice"), ("password", password)]
        } else {
            &[("action", "allow")]
        };
        next = location(&submit(browser, base, &page, fields).await, base);
    }
}

/// A query parameter of a URL.
pub fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An authorization code exchange by the static client (RFC 6749 §4.1.3, with the PKCE
/// [`VERIFIER`] and [`REDIRECT`] of [`authorize_url`]'s requests): status and JSON body.
pub async fn exchange_code(provider: &TestProvider, code: &str) -> (u16, Value) {
    let (client_id, secret) = static_client(provider);
    let response = http()
        .post(provider.url(endpoints::TOKEN))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    (status, body)
}

/// Introspection as Synapse asks it (RFC 7662; the shared secret as the bearer, and the device
/// in its own field, `X-MAS-Supports-Device-Id`, the homeserver contract): the answer, which
/// must be a 200.
pub async fn introspect_as_homeserver(provider: &TestProvider, token: &str) -> Value {
    let response = http()
        .post(provider.url(endpoints::INTROSPECTION))
        .bearer_auth(&provider.settings.matrix.secret)
        .header("X-MAS-Supports-Device-Id", "1")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The secret of the web app of [`ADMIN_CLIENTS`].
pub const WEB_APP_SECRET: &str = "web-app-secret-0123456789abcdef";
/// The secret of the admin robot of [`ADMIN_CLIENTS`].
pub const ROBOT_SECRET: &str = "robot-secret-0123456789abcdef";
/// The secret of the other robot of [`ADMIN_CLIENTS`].
pub const OTHER_SECRET: &str = "other-secret-0123456789abcdef";

/// Static clients for the tests of the admin API and of client policies: a web app for the
/// code flow (first, as [`static_client`] expects), which may be sent back to
/// `https://client.example.com/signed-out` after a logout; the admin robot (listed in
/// `admin.clients` by [`start_with_admin_robot`]); and another confidential client that isn't.
pub const ADMIN_CLIENTS: &str = "[\
    {client_id: web-app, client_auth_method: client_secret_basic, \
     client_secret: web-app-secret-0123456789abcdef, \
     redirect_uris: ['https://client.example.com/callback'], \
     post_logout_redirect_uris: ['https://client.example.com/signed-out'], \
     grant_types: [authorization_code, refresh_token]}, \
    {client_id: admin-robot, client_auth_method: client_secret_basic, \
     client_secret: robot-secret-0123456789abcdef, grant_types: [client_credentials]}, \
    {client_id: other-robot, client_auth_method: client_secret_basic, \
     client_secret: other-secret-0123456789abcdef, grant_types: [client_credentials]}]";

/// The provider with the static clients of [`ADMIN_CLIENTS`], `admin-robot` its admin client.
pub async fn start_with_admin_robot(db: &TestDb) -> TestProvider {
    TestProvider::start_with(
        db,
        &[
            ("PROVIDER__CLIENTS", ADMIN_CLIENTS),
            ("PROVIDER__ADMIN__CLIENTS", "[admin-robot]"),
        ],
    )
    .await
}

/// `POST /oauth2/token` with client credentials (RFC 6749 §4.4), HTTP Basic; an empty `scope`
/// is as if omitted (RFC 6749 §3.1). The status and the body.
pub async fn client_credentials(
    provider: &TestProvider,
    client: &str,
    secret: &str,
    scope: &str,
) -> (u16, Value) {
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::TOKEN))
            .basic_auth(client, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}
