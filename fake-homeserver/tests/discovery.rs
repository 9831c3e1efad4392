//! Client discovery (MSC2965): the provider's metadata, passed through and cached.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Deliberately odd formatting and key order: the homeserver must pass the bytes on unchanged.
const METADATA: &str = r#"{ "token_endpoint":"http://auth.test/oauth2/token",
  "issuer": "http://auth.test",
  "account_management_uri": "http://auth.test/account/",
  "authorization_endpoint": "http://auth.test/authorize" }"#;

async fn provider(calls: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(METADATA, "application/json"))
        .expect(calls)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn auth_metadata_is_the_provider_document_unchanged_and_cached() {
    let provider = provider(1).await;
    let hs = start(&format!("{}/", provider.uri()), false).await;
    for path in [
        "_matrix/client/v1/auth_metadata",
        "_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    ] {
        let response = http()
            .get(hs.base_url().join(path).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        assert_eq!(response.text().await.unwrap(), METADATA, "{path}");
    }
    let issuer = call(
        &hs,
        Method::GET,
        "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
        None,
        None,
    )
    .await;
    // Synapse 1.163 no longer serves the unstable auth_issuer.
    assert_error(&issuer, 404, "M_UNRECOGNIZED");
    // One fetch served both metadata requests.
    provider.verify().await;
}

#[tokio::test]
async fn well_known_names_the_homeserver_issuer_and_account_page() {
    let provider = provider(1).await;
    let hs = start(&format!("{}/", provider.uri()), false).await;
    let (status, body) = call(&hs, Method::GET, "/.well-known/matrix/client", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "m.homeserver": {"base_url": hs.base_url().as_str()},
            "org.matrix.msc2965.authentication": {
                "issuer": "http://auth.test",
                "account": "http://auth.test/account/",
            },
        })
    );
}

#[tokio::test]
async fn the_public_base_can_be_configured() {
    let provider = provider(1).await;
    let mut config = config(&provider.uri(), false);
    config.public_base = Some("https://matrix.example.com".parse().unwrap());
    let hs = start_with(config).await;
    let (_, body) = call(&hs, Method::GET, "/.well-known/matrix/client", None, None).await;
    assert_eq!(
        body["m.homeserver"]["base_url"],
        "https://matrix.example.com/"
    );
}

#[tokio::test]
async fn versions_list_v1_15() {
    let hs = start_offline().await;
    let (status, body) = call(&hs, Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200);
    assert!(body["versions"]
        .as_array()
        .unwrap()
        .contains(&Value::from("v1.15")));
}

#[tokio::test]
async fn provider_down_means_503_and_a_bare_well_known() {
    let hs = start_offline().await;
    assert_error(
        &call(
            &hs,
            Method::GET,
            "/_matrix/client/v1/auth_metadata",
            None,
            None,
        )
        .await,
        503,
        "M_UNKNOWN",
    );
    assert_error(
        &call(
            &hs,
            Method::GET,
            "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
            None,
            None,
        )
        .await,
        404,
        "M_UNRECOGNIZED",
    );
    let (status, body) = call(&hs, Method::GET, "/.well-known/matrix/client", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"m.homeserver": {"base_url": hs.base_url().as_str()}})
    );
}

#[tokio::test]
async fn failed_fetches_are_retried_and_bad_documents_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"no": "issuer"})))
        .expect(2)
        .mount(&server)
        .await;
    let hs = start(&format!("{}/", server.uri()), false).await;
    for _ in 0..2 {
        assert_error(
            &call(
                &hs,
                Method::GET,
                "/_matrix/client/v1/auth_metadata",
                None,
                None,
            )
            .await,
            503,
            "M_UNKNOWN",
        );
    }
    server.verify().await;
}

#[tokio::test]
async fn web_clients_get_cors_headers() {
    let hs = start_offline().await;
    let response = http()
        .request(
            Method::OPTIONS,
            hs.base_url()
                .join("_matrix/client/v3/account/whoami")
                .unwrap(),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}
