//! Dynamic client registration over HTTP (RFC 7591 §3, MSC2966), on both databases: what a
//! Matrix client sends, what comes back, what is stored, and that the client then works at the
//! authorization endpoint.

mod support;

use provider::{
    backend_tests,
    crypto::Encrypter,
    domain::{
        client_metadata::RegisteredMetadata,
        protocol::{GrantType, ResponseType},
    },
    endpoints,
    storage::Client,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{authorize_url, http, json_of, STATE};
use url::Url;

const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What Element X (iOS) sends.
fn element_x() -> Value {
    json!({
        "client_name": "Element X",
        "client_uri": "https://element.io",
        "logo_uri": "https://element.io/mobile-icon.png",
        "tos_uri": "https://element.io/acceptable-use-policy-terms",
        "policy_uri": "https://element.io/privacy",
        "application_type": "native",
        "redirect_uris": ["io.element.elementx:/oidc/login", "http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
        "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token", DEVICE_CODE],
    })
}

/// POSTs a JSON body; returns status, headers and the JSON answer.
async fn register(
    provider: &TestProvider,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = http()
        .post(provider.url(endpoints::REGISTRATION))
        .json(body)
        .send()
        .await
        .unwrap();
    json_of(response).await
}

async fn stored(db: &TestDb, client_id: &str) -> Client {
    let mut repo = db.storage.reader().await.unwrap();
    repo.clients()
        .find_by_client_id(client_id)
        .await
        .unwrap()
        .expect("the client is stored")
}

/// `GET /authorize` with `prompt=none`: with nobody signed in, a trusted client and redirect URI
/// get `login_required` back at that redirect URI (RFC 6749 §4.1.2.1) — an untrusted one gets a
/// page instead.
async fn authorize(
    provider: &TestProvider,
    client_id: &str,
    redirect_uri: &str,
) -> reqwest::Response {
    let url = authorize_url(
        provider,
        &[
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("prompt", "none"),
        ],
    );
    http().get(url).send().await.unwrap()
}

/// Asserts the error goes back to `redirect_uri` (so the client was found and the URI trusted):
/// a self-registered client's error is shown on a page whose only way on is a link to that URI
/// (RFC 9700 §4.11.2), a configured client's is redirected at once.
async fn assert_trusted(provider: &TestProvider, client_id: &str, redirect_uri: &str) {
    let response = authorize(provider, client_id, redirect_uri).await;
    let target = match response.status().as_u16() {
        303 => response.headers()["location"].to_str().unwrap().to_owned(),
        400 => {
            assert!(response.headers().get("location").is_none());
            let page = scraper::Html::parse_document(&response.text().await.unwrap());
            let link = scraper::Selector::parse("a#return").unwrap();
            page.select(&link)
                .next()
                .unwrap_or_else(|| panic!("{client_id} at {redirect_uri}: no link back"))
                .value()
                .attr("href")
                .unwrap()
                .to_owned()
        }
        status => panic!("{client_id} at {redirect_uri}: {status}"),
    };
    let location = Url::parse(&target).unwrap();
    assert!(
        location.as_str().starts_with(redirect_uri),
        "{location} is not {redirect_uri}"
    );
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert!(
        pairs.contains(&("error".into(), "login_required".into())),
        "{pairs:?}"
    );
    assert!(pairs.contains(&("state".into(), STATE.into())), "{pairs:?}");
}

async fn assert_untrusted(provider: &TestProvider, client_id: &str, redirect_uri: &str) {
    let response = authorize(provider, client_id, redirect_uri).await;
    assert_eq!(response.status(), 400, "{client_id} at {redirect_uri}");
    assert!(response.headers().get("location").is_none());
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("id=\"return\""),
        "an untrusted URI is offered: {page}"
    );
}

fn without(mut body: Value, members: &[&str]) -> Value {
    if let Value::Object(map) = &mut body {
        for m in members {
            map.remove(*m);
        }
    }
    body
}

async fn a_native_matrix_client_registers(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let (status, headers, body) = register(&provider, &element_x()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");

    // RFC 7591 §3.2.1: a fresh client_id (a ULID), when it was issued, and every member echoed.
    let client_id = body["client_id"].as_str().unwrap().to_owned();
    assert!(client_id.parse::<ulid::Ulid>().is_ok(), "{client_id}");
    assert_eq!(body["client_id_issued_at"], db.clock.now_db().timestamp());
    assert!(
        body.get("client_secret").is_none(),
        "a public client has no secret"
    );
    assert!(body.get("client_secret_expires_at").is_none());
    let echoed = without(body.clone(), &["client_id", "client_id_issued_at"]);
    assert_eq!(echoed, element_x(), "every registered member, as sent");

    // Stored: dynamic, public, and the metadata is what was echoed.
    let client = stored(&db, &client_id).await;
    assert!(!client.is_static);
    assert_eq!(client.encrypted_client_secret, None);
    assert_eq!(client.token_endpoint_auth_method.as_str(), "none");
    assert_eq!(client.metadata, echoed);
    let read = RegisteredMetadata::from_json(&client.metadata);
    assert!(read.allows_grant(GrantType::DeviceCode) && read.allows_grant(GrantType::RefreshToken));
    assert_eq!(read.client_name.as_deref(), Some("Element X"));

    // The registered client works at the authorization endpoint: its private-use redirect, and
    // its port-less loopback redirect on any port (RFC 8252 §7.3).
    assert_trusted(&provider, &client_id, "io.element.elementx:/oidc/login").await;
    assert_trusted(&provider, &client_id, "http://127.0.0.1:51234/callback").await;
    assert_untrusted(&provider, &client_id, "io.element.elementx:/other").await;

    // Every registration is a new client.
    let (_, _, again) = register(&provider, &element_x()).await;
    assert_ne!(again["client_id"], body["client_id"]);
    provider.stop().await;
}

async fn a_web_client_gets_a_secret_stored_encrypted(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let encrypter = Encrypter::new(&provider.settings.encryption_key);
    let web = json!({
        "client_name": "Web client",
        "client_name#fr": "Client web",
        "client_uri": "https://example.com/",
        "tos_uri#de": "https://example.com/de/tos",
        "redirect_uris": ["https://app.example.com/callback"],
        "post_logout_redirect_uris": ["https://app.example.com/bye"],
        "grant_types": ["authorization_code", "refresh_token", "implicit",
                        "urn:ietf:params:oauth:grant-type:token-exchange"],
        "response_types": ["code", "token"],
        "contacts": ["ops@example.com"],
        "software_id": "webby",
        "software_version": "1.0",
        "scope": "openid",
    });
    // No token_endpoint_auth_method: RFC 7591 §2's default, client_secret_basic.
    for (method, request) in [
        ("client_secret_basic", web.clone()),
        ("client_secret_post", {
            let mut w = web.clone();
            w["token_endpoint_auth_method"] = json!("client_secret_post");
            w
        }),
    ] {
        let (status, headers, body) = register(&provider, &request).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["token_endpoint_auth_method"], method);
        assert_eq!(body["application_type"], "web");
        // unknown grant and response types are ignored (MSC2966), unknown members too
        assert_eq!(
            body["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(body["response_types"], json!(["code"]));
        assert!(body.get("scope").is_none());
        assert_eq!(body["client_name#fr"], "Client web");
        assert_eq!(body["tos_uri#de"], "https://example.com/de/tos");
        assert_eq!(
            body["post_logout_redirect_uris"],
            json!(["https://app.example.com/bye"])
        );
        assert_eq!(body["contacts"], json!(["ops@example.com"]));

        // The secret comes back once, never expiring; the database holds it encrypted.
        let secret = body["client_secret"].as_str().unwrap();
        assert!(secret.len() >= 32, "{secret}");
        assert_eq!(body["client_secret_expires_at"], 0);
        let client_id = body["client_id"].as_str().unwrap();
        let client = stored(&db, client_id).await;
        let encrypted = client.encrypted_client_secret.clone().unwrap();
        assert_ne!(encrypted, secret);
        assert!(!encrypted.contains(secret));
        assert_eq!(encrypter.decrypt(&encrypted).unwrap(), secret);
        assert_eq!(client.token_endpoint_auth_method.as_str(), method);
        assert!(client.metadata.get("client_secret").is_none());

        assert_trusted(&provider, client_id, "https://app.example.com/callback").await;
        assert_untrusted(&provider, client_id, "https://app.example.com/callback/").await;
    }
    provider.stop().await;
}

async fn a_device_only_client_registers_without_redirect_uris(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let (status, _, body) = register(
        &provider,
        &json!({
            "client_name": "Living-room TV",
            "client_uri": "https://tv.example.com/",
            "grant_types": [DEVICE_CODE, "refresh_token"],
            "response_types": [],
            "token_endpoint_auth_method": "none",
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["redirect_uris"], json!([]));
    assert_eq!(body["response_types"], json!([]));
    assert_eq!(body["grant_types"], json!([DEVICE_CODE, "refresh_token"]));
    let client = stored(&db, body["client_id"].as_str().unwrap()).await;
    let read = RegisteredMetadata::from_json(&client.metadata);
    assert!(read.redirect_uris.is_empty());
    assert!(!read.allows_response_type(ResponseType::Code));
    assert!(read.allows_grant(GrantType::DeviceCode));
    provider.stop().await;
}

async fn each_error_names_its_field(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let native = element_x();
    let with = |member: &str, value: Value| {
        let mut body = native.clone();
        body[member] = value;
        body
    };
    for (request, error, needle) in [
        (
            without(native.clone(), &["client_uri"]),
            "invalid_client_metadata",
            "client_uri",
        ),
        (
            with("client_uri", json!("http://element.io")),
            "invalid_client_metadata",
            "client_uri",
        ),
        (
            with("logo_uri", json!("https://evil.example/logo.png")),
            "invalid_client_metadata",
            "logo_uri",
        ),
        (
            with("policy_uri", json!("https://user@element.io/p")),
            "invalid_client_metadata",
            "policy_uri",
        ),
        (
            with("application_type", json!("tv")),
            "invalid_client_metadata",
            "application_type",
        ),
        (
            with("redirect_uris", json!(["com.example.app:/cb"])),
            "invalid_redirect_uri",
            "redirect_uris[0]",
        ),
        (
            with("redirect_uris", json!(["io.element.elementx://cb"])),
            "invalid_redirect_uri",
            "redirect_uris[0]",
        ),
        (
            with("redirect_uris", json!(["http://localhost:8080/cb"])),
            "invalid_redirect_uri",
            "redirect_uris[0]",
        ),
        (
            with(
                "redirect_uris",
                json!(["io.element.elementx:/cb", "https://element.io/cb#x"]),
            ),
            "invalid_redirect_uri",
            "redirect_uris[1]",
        ),
        (
            with("redirect_uris", json!([])),
            "invalid_redirect_uri",
            "redirect_uris",
        ),
        (
            with("grant_types", json!(["implicit"])),
            "invalid_client_metadata",
            "grant_types",
        ),
        (
            with("response_types", json!(["token"])),
            "invalid_client_metadata",
            "response_types",
        ),
        (
            with("token_endpoint_auth_method", json!("client_secret_jwt")),
            "invalid_client_metadata",
            "token_endpoint_auth_method",
        ),
        (
            with("token_endpoint_auth_method", json!("private_key_jwt")),
            "invalid_client_metadata",
            "jwks",
        ),
        (
            with(
                "post_logout_redirect_uris",
                json!(["https://evil.example/"]),
            ),
            "invalid_client_metadata",
            "post_logout_redirect_uris[0]",
        ),
        (
            with("contacts", json!("ops@element.io")),
            "invalid_client_metadata",
            "contacts",
        ),
        (
            with("client_name#fr", json!("")),
            "invalid_client_metadata",
            "client_name#fr",
        ),
        (
            json!(["not", "an", "object"]),
            "invalid_client_metadata",
            "JSON object",
        ),
    ] {
        let (status, headers, body) = register(&provider, &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["error"], error, "{request}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.contains(needle),
            "{description} does not name {needle}"
        );
    }
    provider.stop().await;
}

async fn the_body_must_be_json(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let url = provider.url(endpoints::REGISTRATION);
    let body = element_x().to_string();
    let cases = [
        (None, body.clone(), "Content-Type: application/json"),
        (
            Some("text/plain"),
            body.clone(),
            "Content-Type: application/json",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "client_uri=https%3A%2F%2Fa".to_owned(),
            "Content-Type: application/json",
        ),
        (
            Some("application/json"),
            "{\"client_uri\": ".to_owned(),
            "not valid JSON",
        ),
        (Some("application/json"), String::new(), "not valid JSON"),
        (
            Some("application/json; charset=utf-8"),
            "\u{feff}{}".to_owned(),
            "not valid JSON",
        ),
    ];
    for (content_type, payload, needle) in cases {
        let mut request = http().post(&url).body(payload);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let (status, headers, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, 400, "{content_type:?}: {body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["error"], "invalid_client_metadata");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(needle), "{description}");
    }
    // A charset parameter is fine.
    let response = http()
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Over 64 KiB: refused in the same JSON shape, not as plain text.
    let mut huge = element_x();
    huge["client_name"] = json!("x".repeat(70 * 1024));
    let (status, headers, body) = register(&provider, &huge).await;
    assert_eq!(status, 413);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["error"], "invalid_client_metadata");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("64 KiB"));

    // Only POST.
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    provider.stop().await;
}

/// Browser clients (Element Web) register cross-origin: the preflight is answered.
async fn browsers_may_register_cross_origin(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let url = provider.url(endpoints::REGISTRATION);
    let response = http()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("content-type"), "{allowed}");
    let response = http()
        .post(&url)
        .header("origin", "https://app.element.io")
        .json(&element_x())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    provider.stop().await;
}

/// Discovery advertises the endpoint (MSC2965 clients require `registration_endpoint`).
async fn discovery_advertises_the_endpoint(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let metadata: Value = reqwest::get(provider.url(endpoints::OPENID_CONFIGURATION))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["registration_endpoint"],
        provider.url(endpoints::REGISTRATION)
    );
    provider.stop().await;
}

backend_tests!(
    a_native_matrix_client_registers,
    a_web_client_gets_a_secret_stored_encrypted,
    a_device_only_client_registers_without_redirect_uris,
    each_error_names_its_field,
    the_body_must_be_json,
    browsers_may_register_cross_origin,
    discovery_advertises_the_endpoint,
);
