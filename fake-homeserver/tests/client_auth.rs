//! Client requests authenticated by introspection at a (wiremock) provider.

mod common;

use common::*;
use fake_homeserver::FakeHomeserver;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "mat_access_token_1";

/// A provider whose introspection endpoint answers `answer`, expected `calls` times.
async fn provider(answer: Value, calls: impl Into<wiremock::Times>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/introspect"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(calls)
        .mount(&server)
        .await;
    server
}

fn active(scope: &str, device_id: Option<&str>) -> Value {
    let mut answer = json!({
        "active": true,
        "scope": scope,
        "username": "alice",
        "sub": "01HUSER",
        "client_id": "01HCLIENT",
        "token_type": "access_token",
        "expires_in": 300,
    });
    if let Some(device_id) = device_id {
        answer["device_id"] = device_id.into();
    }
    answer
}

const API_AND_DEVICE: &str = "openid urn:matrix:client:api:* urn:matrix:client:device:DEV1";

async fn homeserver_for(provider: &MockServer) -> FakeHomeserver {
    let hs = start(&format!("{}/", provider.uri()), false).await;
    hs.store().insert_device("alice", "DEV1");
    hs
}

async fn whoami(hs: &FakeHomeserver) -> (u16, Value) {
    call(
        hs,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        Some(TOKEN),
        None,
    )
    .await
}

#[tokio::test]
async fn whoami_answers_the_introspected_user_and_device() {
    let provider = provider(active(API_AND_DEVICE, Some("DEV1")), 1).await;
    let hs = homeserver_for(&provider).await;

    let answer = whoami(&hs).await;
    assert_eq!(
        answer,
        (
            200,
            json!({"user_id": "@alice:hs.test", "device_id": "DEV1", "is_guest": false})
        )
    );

    let requests = provider.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let introspection = &requests[0];
    assert_eq!(introspection.headers["authorization"], "Bearer s3cret");
    assert_eq!(introspection.headers["x-mas-supports-device-id"], "1");
    assert_eq!(introspection.headers["accept"], "application/json");
    assert_eq!(
        introspection.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        std::str::from_utf8(&introspection.body).unwrap(),
        "token=mat_access_token_1&token_type_hint=access_token"
    );
}

#[tokio::test]
async fn introspection_is_cached_across_requests_and_endpoints() {
    let provider = provider(active(API_AND_DEVICE, Some("DEV1")), 1).await;
    let hs = homeserver_for(&provider).await;
    assert_eq!(whoami(&hs).await.0, 200);
    let r0 = call(
        &hs,
        Method::GET,
        "/_matrix/client/r0/account/whoami",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r0.1["user_id"], "@alice:hs.test");
    // The legacy query-parameter form reaches the same cached answer.
    let legacy = call(
        &hs,
        Method::GET,
        &format!("/_matrix/client/v3/account/whoami?access_token={TOKEN}"),
        None,
        None,
    )
    .await;
    assert_eq!(legacy.0, 200);
    provider.verify().await;
}

#[tokio::test]
async fn inactive_tokens_are_unknown() {
    let provider = provider(json!({"active": false}), 1).await;
    let hs = homeserver_for(&provider).await;
    let answer = whoami(&hs).await;
    assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(answer.1["soft_logout"], false);
    assert_error(&whoami(&hs).await, 401, "M_UNKNOWN_TOKEN");
    provider.verify().await;
}

#[tokio::test]
async fn expired_answers_are_inactive() {
    let mut answer = active(API_AND_DEVICE, Some("DEV1"));
    answer["expires_in"] = json!(0);
    // Like Synapse's cache, the expired answer is kept (2 minutes) and not asked for again.
    let provider = provider(answer, 1).await;
    let hs = homeserver_for(&provider).await;
    assert_error(&whoami(&hs).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&whoami(&hs).await, 401, "M_UNKNOWN_TOKEN");
    provider.verify().await;
}

#[tokio::test]
async fn tokens_without_the_api_scope_are_refused() {
    let provider = provider(
        active("openid urn:matrix:client:device:DEV1", Some("DEV1")),
        1,
    )
    .await;
    let hs = homeserver_for(&provider).await;
    assert_error(&whoami(&hs).await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn deleting_the_device_kills_a_cached_token_at_once() {
    let provider = provider(active(API_AND_DEVICE, Some("DEV1")), 1).await;
    let hs = homeserver_for(&provider).await;
    assert_eq!(whoami(&hs).await.0, 200);

    let deleted = mas_post(
        &hs,
        "delete_device",
        json!({"localpart": "alice", "device_id": "DEV1"}),
    )
    .await;
    // Synapse answers 204 No Content (`synapse/rest/synapse/mas/devices.py`).
    assert_eq!(deleted, (204, Value::Null));

    let answer = whoami(&hs).await;
    assert_error(&answer, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(answer.1["soft_logout"], false);
    // Exactly one introspection: the refusal came from the cached answer plus the device check.
    provider.verify().await;
}

#[tokio::test]
async fn the_device_comes_from_the_scope_when_not_named() {
    let provider = provider(active(API_AND_DEVICE, None), 1).await;
    let hs = homeserver_for(&provider).await;
    assert_eq!(whoami(&hs).await.1["device_id"], "DEV1");
}

#[tokio::test]
async fn unstable_scopes_are_accepted() {
    let scope = "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:DEV1";
    let provider = provider(active(scope, None), 1).await;
    let hs = homeserver_for(&provider).await;
    let answer = whoami(&hs).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["device_id"], "DEV1");
}

#[tokio::test]
async fn a_device_unknown_to_the_homeserver_is_refused() {
    let provider = provider(active(API_AND_DEVICE, Some("OTHER")), 1..).await;
    let hs = homeserver_for(&provider).await;
    assert_error(&whoami(&hs).await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn user_state_is_checked_on_every_request() {
    let provider = provider(active(API_AND_DEVICE, Some("DEV1")), 1).await;
    let hs = homeserver_for(&provider).await;
    assert_eq!(whoami(&hs).await.0, 200);

    hs.store().update_user("alice", |u| u.locked = true);
    let locked = whoami(&hs).await;
    assert_error(&locked, 401, "M_USER_LOCKED");
    assert_eq!(locked.1["soft_logout"], true);

    hs.store().update_user("alice", |u| u.deactivated = true);
    assert_error(&whoami(&hs).await, 403, "M_USER_DEACTIVATED");

    hs.store().update_user("alice", |u| {
        u.locked = false;
        u.deactivated = false;
    });
    assert_eq!(whoami(&hs).await.0, 200);
    provider.verify().await;
}

#[tokio::test]
async fn users_unknown_to_the_homeserver_are_refused() {
    let provider = provider(active(API_AND_DEVICE, Some("DEV1")), 1).await;
    let hs = start(&format!("{}/", provider.uri()), false).await;
    // The provider's fault, as in Synapse's `mas.py`: `AuthError(500, "User not found")`.
    assert_error(&whoami(&hs).await, 500, "M_FORBIDDEN");
}

#[tokio::test]
async fn missing_and_malformed_tokens() {
    let provider = provider(json!({"active": true}), 0).await;
    let hs = homeserver_for(&provider).await;
    let missing = call(
        &hs,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        None,
    )
    .await;
    assert_error(&missing, 401, "M_MISSING_TOKEN");
    let url = hs.base_url().join("_matrix/client/v3/devices").unwrap();
    let basic = http()
        .get(url)
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    let body: Value = basic.json().await.unwrap();
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    provider.verify().await;
}

#[tokio::test]
async fn an_unreachable_or_failing_provider_is_503() {
    let hs = start_offline().await;
    hs.store().insert_device("alice", "DEV1");
    assert_error(&whoami(&hs).await, 503, "M_UNKNOWN");

    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/introspect"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&failing)
        .await;
    let hs = homeserver_for(&failing).await;
    assert_error(&whoami(&hs).await, 503, "M_UNKNOWN");
    // Failures are not cached: the provider is asked again.
    assert_error(&whoami(&hs).await, 503, "M_UNKNOWN");
    failing.verify().await;
}

#[tokio::test]
async fn a_provider_answering_nonsense_is_503() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/introspect"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&server)
        .await;
    let hs = homeserver_for(&server).await;
    assert_error(&whoami(&hs).await, 503, "M_UNKNOWN");
}

#[tokio::test]
async fn devices_capabilities_and_profile() {
    let provider = provider(active(API_AND_DEVICE, Some("DEV1")), 1).await;
    let hs = homeserver_for(&provider).await;
    hs.store().insert_device("alice", "DEV2");
    mas_post(
        &hs,
        "update_device_display_name",
        json!({"localpart": "alice", "device_id": "DEV1", "display_name": "Phone"}),
    )
    .await;

    let (status, devices) = call(
        &hs,
        Method::GET,
        "/_matrix/client/v3/devices",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        devices,
        json!({"devices": [
            {"device_id": "DEV1", "display_name": "Phone", "last_seen_ip": null, "last_seen_ts": null},
            {"device_id": "DEV2", "display_name": null, "last_seen_ip": null, "last_seen_ts": null},
        ]})
    );
    let one = call(
        &hs,
        Method::GET,
        "/_matrix/client/r0/devices/DEV1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(one.1["display_name"], "Phone");
    assert_error(
        &call(
            &hs,
            Method::GET,
            "/_matrix/client/v3/devices/NOPE",
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    let (status, caps) = call(
        &hs,
        Method::GET,
        "/_matrix/client/v3/capabilities",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(caps["capabilities"]["m.change_password"]["enabled"], false);
    assert_eq!(caps["capabilities"]["m.3pid_changes"]["enabled"], false);
    assert!(caps["capabilities"]["m.room_versions"]["default"].is_string());
    assert_error(
        &call(
            &hs,
            Method::GET,
            "/_matrix/client/r0/capabilities",
            None,
            None,
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );

    hs.store()
        .update_user("alice", |u| u.displayname = Some("Alice".into()));
    let profile = call(
        &hs,
        Method::GET,
        "/_matrix/client/v3/profile/%40alice%3Ahs.test",
        None,
        None,
    )
    .await;
    assert_eq!(profile, (200, json!({"displayname": "Alice"})));
    assert_error(
        &call(
            &hs,
            Method::GET,
            "/_matrix/client/v3/profile/%40bob%3Ahs.test",
            None,
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &call(
            &hs,
            Method::GET,
            "/_matrix/client/r0/profile/%40alice%3Aelsewhere",
            None,
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    provider.verify().await;
}

#[tokio::test]
async fn delegated_and_unknown_endpoints_are_unrecognized() {
    let hs = start_offline().await;
    for (verb, path) in [
        (Method::POST, "/_matrix/client/v3/register"),
        (Method::POST, "/_matrix/client/r0/register"),
        (Method::POST, "/_matrix/client/v3/account/password"),
        (Method::POST, "/_matrix/client/v3/account/3pid/add"),
        (
            Method::POST,
            "/_matrix/client/v3/account/3pid/email/requestToken",
        ),
        (Method::POST, "/_matrix/client/v3/account/deactivate"),
        (Method::GET, "/_matrix/client/v3/login"),
        (Method::POST, "/_matrix/client/v3/login"),
        (Method::POST, "/_matrix/client/v3/logout"),
        (Method::POST, "/_matrix/client/v3/refresh"),
        (Method::GET, "/nothing/here"),
    ] {
        let answer = call(&hs, verb, path, None, Some(json!({}))).await;
        assert_eq!(
            answer,
            (
                404,
                json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
            ),
            "{path}"
        );
    }
    let wrong_method = call(
        &hs,
        Method::POST,
        "/_matrix/client/v3/account/whoami",
        None,
        None,
    )
    .await;
    assert_error(&wrong_method, 405, "M_UNRECOGNIZED");
}
