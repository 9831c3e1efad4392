//! The legacy login API, reverse-proxied to the provider when `proxy_login` is on.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn login_post_is_forwarded_with_body_and_headers() {
    let provider = MockServer::start().await;
    let login = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "hunter2",
    });
    Mock::given(method("POST"))
        .and(path("/_matrix/client/v3/login"))
        .and(header("authorization", "Bearer client-token"))
        .and(header("user-agent", "test-client/1.0"))
        .and(header("content-type", "application/json"))
        .and(body_json(&login))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"user_id":"@alice:hs.test"}"#, "application/json"),
        )
        .expect(1)
        .mount(&provider)
        .await;
    let hs = start(&format!("{}/", provider.uri()), true).await;

    let response = http()
        .post(hs.base_url().join("_matrix/client/v3/login").unwrap())
        .bearer_auth("client-token")
        .header("user-agent", "test-client/1.0")
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"user_id":"@alice:hs.test"}"#
    );
    provider.verify().await;
    assert!(
        hs.journal().is_empty(),
        "the proxy is not the homeserver API"
    );
}

#[tokio::test]
async fn redirects_are_passed_through_not_followed() {
    let provider = MockServer::start().await;
    let location = format!("{}/login?next=abc", provider.uri());
    Mock::given(method("GET"))
        .and(path("/_matrix/client/r0/login/sso/redirect/oidc-upstream"))
        .and(query_param("redirectUrl", "http://app.test/cb"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", location.as_str()))
        .expect(1)
        .mount(&provider)
        .await;
    // Following the redirect would hit this and fail the expectation.
    Mock::given(method("GET"))
        .and(path("/login"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&provider)
        .await;
    let hs = start(&format!("{}/", provider.uri()), true).await;

    let response = http()
        .get(
            hs.base_url()
                .join("_matrix/client/r0/login/sso/redirect/oidc-upstream?redirectUrl=http%3A%2F%2Fapp.test%2Fcb")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    assert_eq!(response.headers()["location"], location.as_str());
    provider.verify().await;
}

#[tokio::test]
async fn errors_and_retry_after_come_back_unchanged() {
    let provider = MockServer::start().await;
    let limited =
        json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many", "retry_after_ms": 2000});
    Mock::given(method("POST"))
        .and(path("/_matrix/client/v3/refresh"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(&limited)
                .insert_header("retry-after", "2"),
        )
        .mount(&provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/_matrix/client/v3/logout/all"))
        .and(header("authorization", "Bearer mct_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"flows": []})))
        .mount(&provider)
        .await;
    let hs = start(&format!("{}/", provider.uri()), true).await;

    let response = http()
        .post(hs.base_url().join("_matrix/client/v3/refresh").unwrap())
        .json(&json!({"refresh_token": "mcr_x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.json::<Value>().await.unwrap(), limited);

    let logout = call(
        &hs,
        Method::POST,
        "/_matrix/client/v3/logout/all",
        Some("mct_token"),
        None,
    )
    .await;
    assert_eq!(logout, (200, json!({})));
    let flows = call(&hs, Method::GET, "/_matrix/client/v3/login", None, None).await;
    assert_eq!(flows, (200, json!({"flows": []})));
    provider.verify().await;
}

#[tokio::test]
async fn without_proxying_login_is_unrecognized() {
    let provider = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&provider)
        .await;
    let hs = start(&format!("{}/", provider.uri()), false).await;
    let answer = call(
        &hs,
        Method::POST,
        "/_matrix/client/v3/login",
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        answer,
        (
            404,
            json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
        )
    );
    provider.verify().await;
}

#[tokio::test]
async fn an_unreachable_provider_is_502() {
    let hs = start(NO_PROVIDER, true).await;
    let answer = call(&hs, Method::GET, "/_matrix/client/v3/login", None, None).await;
    assert_error(&answer, 502, "M_UNKNOWN");
}
