//! Real Synapse 1.163.2 with a wiremock provider, and nginx in front of it.

use std::time::Duration;

use serde_json::{json, Value};
use synapse_harness::{prepare, Availability, ReverseProxy, Synapse, SynapseOptions, Tools};
use url::Url;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "s3cret-shared";

async fn tools() -> Option<Tools> {
    match prepare().await.expect("prerequisites") {
        Availability::Ready(tools) => Some(tools),
        Availability::Skip(reason) => {
            eprintln!("skipped (real Synapse): {reason}");
            None
        }
    }
}

fn metadata(provider: &MockServer) -> Value {
    let base = provider.uri();
    json!({
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "account_management_uri": format!("{base}/account"),
        "grant_types_supported": ["authorization_code", "refresh_token"],
    })
}

async fn provider() -> MockServer {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata(&provider)))
        .mount(&provider)
        .await;
    provider
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn synapse_starts_serves_the_provider_metadata_and_authenticates_by_introspection() {
    let Some(tools) = tools().await else { return };
    let provider = provider().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/introspect"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "active": true,
            "scope": "urn:matrix:client:api:*",
            "username": "alice",
            "sub": "01ALICE",
            "expires_in": 300,
        })))
        .mount(&provider)
        .await;
    let endpoint = Url::parse(&provider.uri()).unwrap();
    let synapse = Synapse::start(&tools, SynapseOptions::new("hs.test", endpoint, SECRET))
        .await
        .unwrap();
    eprintln!("Synapse started in {:?}", synapse.startup_time());
    let http = http();

    let versions: Value = http
        .get(synapse.url().join("_matrix/client/versions").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "v1.15"));

    let served: Value = http
        .get(
            synapse
                .url()
                .join("_matrix/client/v1/auth_metadata")
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, metadata(&provider));

    // The user must exist on the homeserver before its token is accepted.
    let provisioned = http
        .post(synapse.url().join("_synapse/mas/provision_user").unwrap())
        .bearer_auth(SECRET)
        .json(&json!({"localpart": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(provisioned.status(), 201, "{}", synapse.log_tail(20));
    let whoami = http
        .get(
            synapse
                .url()
                .join("_matrix/client/v3/account/whoami")
                .unwrap(),
        )
        .bearer_auth("mat_some_token")
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200, "{}", synapse.log_tail(20));
    let body: Value = whoami.json().await.unwrap();
    assert_eq!(body["user_id"], "@alice:hs.test");
    synapse.stop().await;
}

#[tokio::test]
async fn nginx_sends_the_legacy_login_api_to_the_provider_and_the_rest_to_synapse() {
    let Some(tools) = tools().await else { return };
    let provider = provider().await;
    Mock::given(path_regex(
        "^/_matrix/client/(r0|v3)/(login|logout|refresh)",
    ))
    .respond_with(ResponseTemplate::new(200).set_body_json(json!({"from": "provider"})))
    .mount(&provider)
    .await;
    let provider_url = Url::parse(&provider.uri()).unwrap();
    let synapse = Synapse::start(
        &tools,
        SynapseOptions::new("hs.test", provider_url.clone(), SECRET),
    )
    .await
    .unwrap();
    let proxy = ReverseProxy::start(&tools, synapse.url(), &provider_url)
        .await
        .unwrap();
    let http = http();

    for (verb, p) in [
        ("GET", "_matrix/client/v3/login"),
        ("POST", "_matrix/client/v3/login"),
        ("POST", "_matrix/client/r0/login"),
        (
            "GET",
            "_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fa",
        ),
        ("GET", "_matrix/client/v3/login/sso/redirect/oidc-x"),
        ("POST", "_matrix/client/v3/logout"),
        ("POST", "_matrix/client/v3/logout/all"),
        ("POST", "_matrix/client/v3/refresh"),
    ] {
        let response = http
            .request(verb.parse().unwrap(), proxy.url().join(p).unwrap())
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{verb} {p}: {}", proxy.log_tail(5));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"from": "provider"}), "{verb} {p}");
    }
    // What the provider saw: the client's address appended to the chain, the scheme, the host,
    // and the path exactly as sent.
    let seen = provider.received_requests().await.unwrap();
    let first = seen
        .iter()
        .find(|r| r.url.path() == "/_matrix/client/v3/login")
        .unwrap();
    assert_eq!(first.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(first.headers["x-forwarded-proto"], "http");
    assert_eq!(first.headers["host"], "127.0.0.1");
    assert!(seen
        .iter()
        .any(|r| r.url.path() == "/_matrix/client/v3/login/sso/redirect/oidc-x"));

    // Not the login API: Synapse answers (the versions document, and 404 M_UNRECOGNIZED for a
    // path that merely contains "login").
    for p in ["_matrix/client/versions", "_matrix/client/v1/auth_metadata"] {
        let response = http.get(proxy.url().join(p).unwrap()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{p}: {}", proxy.log_tail(5));
    }
    let not_login = http
        .get(proxy.url().join("_matrix/client/v3/loginx").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(not_login.status(), 404);
    let body: Value = not_login.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    assert!(provider
        .received_requests()
        .await
        .unwrap()
        .iter()
        .all(|r| !r.url.path().contains("versions") && !r.url.path().contains("loginx")));
    proxy.stop().await;
    synapse.stop().await;
}

/// A port found free and then taken by another process before nginx binds it: nginx's start
/// fails (it never holds the port), rather than taking the other server's answers for its own
/// (a flake seen in CI: a test's homeserver calls reached another test's deployment).
#[tokio::test]
async fn nginx_on_a_taken_port_is_not_taken_for_started() {
    let Some(tools) = tools().await else {
        return;
    };
    // Another server holds the port and answers every request.
    let other = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("not nginx"))
        .mount(&other)
        .await;
    let taken = *other.address();
    let upstream = Url::parse("http://127.0.0.1:9/").unwrap();
    let started = ReverseProxy::start_on(&tools, taken, &upstream, &upstream).await;
    let error = started.expect_err("nginx can't hold a taken port");
    assert!(
        error.to_string().contains("Address already in use"),
        "{error}"
    );
}
