//! Shared helpers for the integration tests: start a homeserver, call it.
#![allow(dead_code)]

use fake_homeserver::{Config, FakeHomeserver};
use reqwest::Method;
use serde_json::Value;
use url::Url;

pub const SECRET: &str = "s3cret";
pub const SERVER_NAME: &str = "hs.test";
/// A provider endpoint nothing listens on (port 9, "discard").
pub const NO_PROVIDER: &str = "http://127.0.0.1:9/";

pub fn config(provider_endpoint: &str, proxy_login: bool) -> Config {
    Config {
        server_name: SERVER_NAME.into(),
        provider_endpoint: Url::parse(provider_endpoint).unwrap(),
        secret: SECRET.into(),
        proxy_login,
        public_base: None,
    }
}

pub async fn start_with(config: Config) -> FakeHomeserver {
    FakeHomeserver::start_on(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A homeserver whose provider is at `provider_endpoint` (e.g. a wiremock server's URI).
pub async fn start(provider_endpoint: &str, proxy_login: bool) -> FakeHomeserver {
    start_with(config(provider_endpoint, proxy_login)).await
}

/// A homeserver for tests that never reach the provider.
pub async fn start_offline() -> FakeHomeserver {
    start(NO_PROVIDER, false).await
}

/// An HTTP client that, like a careful test, never follows redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One call: returns the status and the JSON body (`Null` when the body is empty or not JSON).
pub async fn call(
    hs: &FakeHomeserver,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = hs.base_url().join(path.trim_start_matches('/')).unwrap();
    let mut request = http().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A call to the homeserver API with the shared secret.
pub async fn admin(
    hs: &FakeHomeserver,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call(hs, method, path, Some(SECRET), body).await
}

/// `POST` a JSON body to the homeserver API with the shared secret.
pub async fn mas_post(hs: &FakeHomeserver, endpoint: &str, body: Value) -> (u16, Value) {
    admin(
        hs,
        Method::POST,
        &format!("/_synapse/mas/{endpoint}"),
        Some(body),
    )
    .await
}

/// Asserts a Matrix error answer.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(answer.0, status, "unexpected status, body: {}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "body: {}", answer.1);
    assert!(answer.1["error"].is_string(), "body: {}", answer.1);
}
