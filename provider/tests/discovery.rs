//! Discovery and JWKS, served by the real router, judged by the `openidconnect` crate.

use openidconnect::{core::CoreProviderMetadata, IssuerUrl};
use provider::{
    backend_tests, endpoints,
    test_harness::{TestDb, TestProvider},
};
use serde_json::Value;

fn http_client() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

/// `openidconnect` accepts the metadata and the JWKS (it fetches both and checks the issuer).
async fn openidconnect_accepts_discovery(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let issuer = IssuerUrl::new(provider.base_url.to_string()).unwrap();
    let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &http_client())
        .await
        .expect("openidconnect accepts the discovery document");
    assert_eq!(metadata.issuer(), &issuer);
    assert_eq!(metadata.jwks().keys().len(), 2);
    let kids: Vec<String> = provider
        .settings
        .keystore
        .keys()
        .iter()
        .map(|k| k.kid.clone())
        .collect();
    for key in metadata.jwks().keys() {
        use openidconnect::JsonWebKey as _;
        let kid = key.key_id().expect("every key has a kid").as_str();
        assert!(kids.iter().any(|k| k == kid));
    }
    provider.stop().await;
}

/// Both well-known documents are the same, and snapshot-stable with the base URL redacted.
async fn documents_snapshot(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.to_string();
    let (status, headers, oidc) = get_json(&provider.url(endpoints::OPENID_CONFIGURATION)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let (_, _, oauth) = get_json(&provider.url(endpoints::OAUTH_AUTHORIZATION_SERVER)).await;
    assert_eq!(oidc, oauth);
    let redacted: Value =
        serde_json::from_str(&oidc.to_string().replace(&base, "https://issuer.example/")).unwrap();
    insta::assert_json_snapshot!("openid-configuration", redacted);

    let (status, _, jwks) = get_json(&provider.url(endpoints::JWKS)).await;
    assert_eq!(status, 200);
    // The seed is fixed, so the keys are too; only public members are published.
    insta::assert_json_snapshot!("jwks", jwks);
    provider.stop().await;
}

/// Every URL the metadata advertises is served by the router; every endpoint the router serves
/// for clients is advertised.
async fn document_and_router_agree(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.to_string();
    let (_, _, doc) = get_json(&provider.url(endpoints::OPENID_CONFIGURATION)).await;
    let client = reqwest::Client::new();
    let mut advertised = Vec::new();
    for (member, value) in doc.as_object().unwrap() {
        let Some(url) = value.as_str().filter(|v| v.starts_with("http")) else {
            continue;
        };
        if member == "issuer" {
            continue;
        }
        assert!(url.starts_with(&base), "{member} points elsewhere: {url}");
        let get = client.get(url).send().await.unwrap().status();
        let post = client.post(url).send().await.unwrap().status();
        assert!(
            get != 404 && !(get == 405 && post == 405),
            "{member} = {url} is not served (GET {get}, POST {post})"
        );
        advertised.push(url.trim_start_matches(&base).to_owned());
    }
    let served_for_clients = [
        endpoints::JWKS,
        endpoints::AUTHORIZE,
        endpoints::TOKEN,
        endpoints::REGISTRATION,
        endpoints::REVOCATION,
        endpoints::INTROSPECTION,
        endpoints::USERINFO,
        endpoints::DEVICE_AUTHORIZATION,
        endpoints::END_SESSION,
    ];
    for path in served_for_clients {
        assert!(
            advertised.iter().any(|a| format!("/{a}") == path),
            "{path} is served but not advertised"
        );
    }
    let (status, _, body) = get_json(&provider.url("/no/such/endpoint")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    provider.stop().await;
}

async fn health_checks_the_database(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let (status, _, body) = get_json(&provider.url(endpoints::HEALTH)).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok", "database": "ok"}));
    db.storage.close().await;
    let (status, _, body) = get_json(&provider.url(endpoints::HEALTH)).await;
    assert_eq!(status, 503);
    assert_eq!(body["database"], "unreachable");
    provider.stop().await;
}

backend_tests!(
    openidconnect_accepts_discovery,
    documents_snapshot,
    document_and_router_agree,
    health_checks_the_database,
);

/// Browser clients call the API endpoints cross-origin: a preflight is answered for them, and
/// not for the server-to-server introspection endpoint.
async fn cors_for_browser_clients(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let client = reqwest::Client::new();
    let preflight = |path: &'static str| {
        let request = client
            .request(reqwest::Method::OPTIONS, provider.url(path))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            );
        async move { request.send().await.unwrap() }
    };
    for path in [
        endpoints::TOKEN,
        endpoints::REVOCATION,
        endpoints::USERINFO,
        endpoints::REGISTRATION,
    ] {
        let response = preflight(path).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
    }
    let response = preflight(endpoints::INTROSPECTION).await;
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    provider.stop().await;
}

backend_tests!(cors_for_browser_clients);
