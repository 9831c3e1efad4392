//! Shared by the playground's tests: start on ephemeral ports in a temporary data directory,
//! HTTP clients and requests, and log in the way a legacy client does.

#![allow(dead_code)]

use std::path::Path;

use playground::{Options, Playground};
use provider::clock::Entropy;
use serde_json::{json, Value};

/// Options for a playground on free ports, keeping its data in `data_dir`.
pub fn options(data_dir: &Path) -> Options {
    Options {
        data_dir: data_dir.to_owned(),
        port: 0,
        homeserver_port: 0,
        dashboard_port: 0,
        ..Options::default()
    }
}

pub async fn start(options: &Options) -> Playground {
    Playground::start(options, Entropy::system())
        .await
        .expect("the playground starts")
}

/// A playground with the default options in a fresh temporary data directory (deleted when the
/// returned guard is dropped: keep it for the length of the test).
pub async fn start_in_temp_dir() -> (tempfile::TempDir, Playground) {
    let dir = tempfile::tempdir().unwrap();
    let playground = start(&options(dir.path())).await;
    (dir, playground)
}

/// A client that doesn't follow redirects (to assert on them).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser-like client: a cookie jar, redirects left to the test.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The body of `GET url`, whatever its status.
pub async fn get_text(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The password of a seeded account.
pub fn password(playground: &Playground, username: &str) -> String {
    playground
        .accounts
        .iter()
        .find(|a| a.username == username)
        .map(|a| a.password.clone())
        .expect("a seeded account")
}

/// `m.login.password` at the homeserver (proxied to the provider): the access token, or the
/// error answer.
pub async fn login(
    client: &reqwest::Client,
    homeserver: &url::Url,
    username: &str,
    password: &str,
) -> Result<String, Value> {
    let answer = client
        .post(homeserver.join("_matrix/client/v3/login").unwrap())
        .json(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": password,
        }))
        .send()
        .await
        .unwrap();
    let ok = answer.status().is_success();
    let body: Value = answer.json().await.unwrap();
    match (ok, body["access_token"].as_str()) {
        (true, Some(token)) => Ok(token.to_owned()),
        _ => Err(body),
    }
}

/// `whoami` at the homeserver: the user ID, or the error answer.
pub async fn whoami(
    client: &reqwest::Client,
    homeserver: &url::Url,
    token: &str,
) -> Result<String, Value> {
    let answer = client
        .get(homeserver.join("_matrix/client/v3/account/whoami").unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let ok = answer.status().is_success();
    let body: Value = answer.json().await.unwrap();
    match (ok, body["user_id"].as_str()) {
        (true, Some(user)) => Ok(user.to_owned()),
        _ => Err(body),
    }
}

pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    let answer = client.get(url).send().await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    answer.json().await.unwrap()
}
