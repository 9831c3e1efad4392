//! Issue 14, the edge of every door, on both databases: control characters refused in each
//! endpoint's own error shape (finding 5), oversized bodies answered 413 in each door's shape
//! (finding 11), stored fields bounded and the unauthenticated writes rate limited per IP
//! (finding 3), and housekeeping removing what was never completed (finding 3).

// Tests make throwaway IDs; the clock and RNG rule of `clippy.toml` is for request code.
#![allow(clippy::disallowed_methods)]

mod support;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use provider::{
    backend_tests,
    core::housekeeping,
    endpoints,
    storage::NewOAuth2Session,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user, authorize_url, browser, get_text, http, json_of, set, static_client, submit, text,
    REDIRECT,
};
use url::Url;

const PASSWORD: &str = "correct horse battery staple";

/// The control characters sent: NUL (PostgreSQL refused it with a 500), other C0 controls,
/// DEL and a C1 control.
const CONTROLS: [char; 7] = ['\0', '\u{1}', '\u{8}', '\n', '\u{1b}', '\u{7f}', '\u{85}'];

fn matrix(provider: &TestProvider, path: &str) -> String {
    provider.url(&format!("/_matrix/client/v3{path}"))
}

/// An RFC 6749 §5.2 error: status, `error`, and the JSON content type.
async fn oauth_error(response: reqwest::Response) -> (u16, String) {
    let (status, headers, body) = json_of(response).await;
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{headers:?}"
    );
    assert!(body["error_description"].is_string(), "{body}");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A Matrix error: status and `errcode`.
async fn matrix_error(response: reqwest::Response) -> (u16, String) {
    let (status, _, body) = json_of(response).await;
    assert!(body["error"].is_string(), "{body}");
    (
        status,
        body["errcode"].as_str().unwrap_or_default().to_owned(),
    )
}

/// An HTML error page: status and body.
async fn page(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert!(
        content_type.starts_with("text/html"),
        "{content_type}: {body}"
    );
    (status, body)
}

/// An unsigned JWT with these claims (the signature is never reached).
fn unsigned_jwt(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.c2ln")
}

/// Finding 5: a NUL (and other controls) in every parameter that reached a query answered 500 on
/// PostgreSQL. Now each endpoint answers its normal 4xx.
async fn control_characters_get_each_endpoints_error(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let (client_id, secret) = static_client(&provider);
    let http = http();
    for c in CONTROLS {
        let bad = format!("al{c}ice");
        let why = format!("{:?}", c);

        // The login page: the HTML error page.
        let response = http
            .post(provider.url(endpoints::LOGIN))
            .form(&[("username", bad.as_str()), ("password", "x"), ("csrf", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(page(response).await.0, 400, "{why}");

        // The legacy login: `M_INVALID_PARAM`.
        let response = http
            .post(matrix(&provider, "/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": bad},
                "password": "x",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            matrix_error(response).await,
            (400, "M_INVALID_PARAM".into()),
            "{why}"
        );

        // /authorize: client_id, state, nonce; a page (the redirect URI is not checked yet).
        for (name, value) in [
            ("client_id", bad.as_str()),
            ("state", &bad),
            ("nonce", &bad),
        ] {
            let response = http
                .get(authorize_url(&provider, &[(name, value)]))
                .send()
                .await
                .unwrap();
            let (status, body) = page(response).await;
            assert_eq!(status, 400, "{name} {why}");
            assert!(body.contains("invalid_request"), "{body}");
        }

        // The token and device authorization endpoints: `invalid_request`.
        for path in [endpoints::TOKEN, endpoints::DEVICE_AUTHORIZATION] {
            let response = http
                .post(provider.url(path))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", bad.as_str()),
                    ("scope", "openid"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(
                oauth_error(response).await,
                (400, "invalid_request".into()),
                "{path} {why}"
            );
        }

        // Registration: `invalid_client_metadata`.
        let response = http
            .post(provider.url(endpoints::REGISTRATION))
            .json(&json!({
                "client_name": bad,
                "client_uri": "https://app.example.com/",
                "redirect_uris": ["https://app.example.com/cb"],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            oauth_error(response).await,
            (400, "invalid_client_metadata".into()),
            "{why}"
        );

        // Logout: the page.
        let mut logout = Url::parse(&provider.url(endpoints::END_SESSION)).unwrap();
        logout
            .query_pairs_mut()
            .append_pair("client_id", &bad)
            .append_pair("state", &bad);
        let response = http.get(logout).send().await.unwrap();
        assert_eq!(page(response).await.0, 400, "{why}");

        // Basic credentials on introspection and revocation: `invalid_client`, with the
        // challenge (RFC 6749 §5.2).
        for path in [endpoints::INTROSPECTION, endpoints::REVOCATION] {
            for credentials in [format!("{bad}:{secret}"), format!("{client_id}:se{c}cret")] {
                let response = http
                    .post(provider.url(path))
                    .header(
                        "authorization",
                        format!("Basic {}", STANDARD.encode(&credentials)),
                    )
                    .form(&[("token", "mat_x")])
                    .send()
                    .await
                    .unwrap();
                assert!(response.headers().contains_key("www-authenticate"));
                assert_eq!(
                    oauth_error(response).await,
                    (401, "invalid_client".into()),
                    "{path} {why}"
                );
            }
        }

        // A client assertion whose `sub` holds one: `invalid_client`.
        let assertion = unsigned_jwt(&json!({"iss": bad, "sub": bad, "aud": "x", "exp": 1}));
        let response = http
            .post(provider.url(endpoints::TOKEN))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            oauth_error(response).await,
            (401, "invalid_client".into()),
            "{why}"
        );
    }

    // A NUL in a path reaches no query either (the admin API's problem JSON).
    let response = http
        .get(provider.url("/api/admin/v1/users/by-username/al%00ice"))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json_of(response).await;
    assert_eq!(
        (status, body["status"].as_u64()),
        (400, Some(400)),
        "{body}"
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    provider.stop().await;
}

/// Finding 11: a body over the limit is answered 413 in each door's own shape, never the
/// framework's plain text.
async fn oversized_bodies_get_each_doors_413(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let http = http();
    let huge = "a".repeat(2_500_000);

    let response = http
        .post(provider.url(endpoints::TOKEN))
        .form(&[("grant_type", "client_credentials"), ("scope", &huge)])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(response).await, (413, "invalid_request".into()));

    let response = http
        .post(matrix(&provider, "/login"))
        .json(&json!({ "type": "m.login.password", "password": huge }))
        .send()
        .await
        .unwrap();
    assert_eq!(matrix_error(response).await, (413, "M_TOO_LARGE".into()));

    let response = http
        .post(provider.url("/api/admin/v1/users"))
        .json(&json!({ "username": huge }))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json_of(response).await;
    assert_eq!(
        (status, body["status"].as_u64()),
        (413, Some(413)),
        "{body}"
    );
    assert_eq!(headers["content-type"], "application/problem+json");

    let response = http
        .post(provider.url(endpoints::LOGIN))
        .form(&[("username", "alice"), ("password", &huge)])
        .send()
        .await
        .unwrap();
    assert_eq!(page(response).await.0, 413);

    // A body sent without a length (chunked) is cut at the limit too.
    let answer = chunked_post(&provider, endpoints::TOKEN, 2_500_000).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"invalid_request""#), "{answer}");
    provider.stop().await;
}

/// Posts `size` bytes of form body with chunked transfer encoding (no length said) over a raw
/// connection; returns what the server answered.
async fn chunked_post(provider: &TestProvider, path: &str, size: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = format!(
        "{}:{}",
        provider.base_url.host_str().unwrap(),
        provider.base_url.port().unwrap()
    );
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
    for _ in 0..size / (64 * 1024) {
        // The server may answer (and stop reading) before the end.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer)).await
    {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&answer).contains("}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Finding 3: every stored field from an unauthenticated request is bounded, answered with the
/// endpoint's error for that field.
async fn stored_fields_are_bounded(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let http = http();

    // The device endpoint took a 1.7 MB scope: now 413, and a scope over 2048 bytes is
    // `invalid_scope`.
    let response = http
        .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
        .form(&[("client_id", "x"), ("scope", &"s".repeat(1_700_000))])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(response).await.0, 413);
    let long_scope = format!("openid {}", "urn:x ".repeat(400));
    let response = http
        .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
        .form(&[("client_id", "x"), ("scope", &long_scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(response).await, (400, "invalid_scope".into()));

    // /authorize stored a 47 KB scope; now the page, with nothing stored.
    for (name, value) in [
        ("scope", format!("openid {}", "x".repeat(47_000))),
        ("state", "s".repeat(2049)),
        ("nonce", "n".repeat(513)),
        ("login_hint", "h".repeat(256)),
        ("code_challenge", "c".repeat(129)),
    ] {
        let response = http
            .get(authorize_url(&provider, &[(name, &value)]))
            .send()
            .await
            .unwrap();
        let (status, body) = page(response).await;
        assert_eq!(status, 400, "{name}");
        let code = if name == "scope" {
            "invalid_scope"
        } else {
            "invalid_request"
        };
        assert!(body.contains(code), "{name}: {body}");
    }
    // At their bounds, the request goes on (to the login page).
    let response = http
        .get(authorize_url(
            &provider,
            &[("state", &"s".repeat(2048)), ("nonce", &"n".repeat(512))],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);

    // Client metadata: names, URIs, counts.
    let base = json!({
        "client_name": "App",
        "client_uri": "https://app.example.com/",
        "redirect_uris": ["https://app.example.com/cb"],
        "token_endpoint_auth_method": "none",
    });
    let with = |name: &str, value: Value| {
        let mut metadata = base.clone();
        metadata[name] = value;
        metadata
    };
    for (metadata, error) in [
        (
            with("client_name", json!("n".repeat(257))),
            "invalid_client_metadata",
        ),
        (
            with("client_name#fr", json!("n".repeat(257))),
            "invalid_client_metadata",
        ),
        (
            with(
                "redirect_uris",
                json!([format!("https://app.example.com/{}", "p".repeat(2048))]),
            ),
            "invalid_redirect_uri",
        ),
        (
            with(
                "contacts",
                json!((0..33)
                    .map(|i| format!("a{i}@example.com"))
                    .collect::<Vec<_>>()),
            ),
            "invalid_client_metadata",
        ),
        (
            with("software_id", json!("x".repeat(2049))),
            "invalid_client_metadata",
        ),
    ] {
        let response = http
            .post(provider.url(endpoints::REGISTRATION))
            .json(&metadata)
            .send()
            .await
            .unwrap();
        assert_eq!(oauth_error(response).await, (400, error.into()));
    }
    let response = http
        .post(provider.url(endpoints::REGISTRATION))
        .json(&with("client_name", json!("n".repeat(256))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // The legacy SSO redirect: its `redirectUrl`.
    let response = http
        .get(format!(
            "{}?redirectUrl=https://app.example.com/{}",
            matrix(&provider, "/login/sso/redirect"),
            "p".repeat(2048)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        matrix_error(response).await,
        (400, "M_INVALID_PARAM".into())
    );
    // The legacy login: a device's display name is not the edge's to bound. Synapse takes a
    // longer one; the login keeps its first 100 characters (here 150 two-byte ones, 300 bytes).
    let long_name = "é".repeat(150);
    let response = http
        .post(matrix(&provider, "/login"))
        .json(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": PASSWORD,
            "device_id": "LONGNAME01",
            "initial_device_display_name": long_name,
        }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    let devices = provider.homeserver.store().devices("alice");
    let device = devices
        .iter()
        .find(|d| d.device_id == "LONGNAME01")
        .unwrap();
    assert_eq!(
        device.display_name.as_deref(),
        Some("é".repeat(100).as_str())
    );
    provider.stop().await;
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Finding 3: registration, device authorization, `/authorize` and the legacy SSO redirect are
/// rate limited per client IP, each over the limit answered 429 with `Retry-After` in its
/// door's shape; another address is not affected.
async fn unauthenticated_writes_are_limited_per_ip(db: TestDb) {
    let overrides = env(&[
        ("PROVIDER__HTTP__TRUSTED_PROXIES", "[127.0.0.1]"),
        (
            "PROVIDER__RATE_LIMITING__CLIENT_REGISTRATION__PER_IP__BURST",
            "2",
        ),
        (
            "PROVIDER__RATE_LIMITING__DEVICE_AUTHORIZATION__PER_IP__BURST",
            "2",
        ),
        ("PROVIDER__RATE_LIMITING__AUTHORIZE__PER_IP__BURST", "2"),
        ("PROVIDER__RATE_LIMITING__COMPAT_SSO__PER_IP__BURST", "2"),
    ]);
    let borrowed: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let provider = TestProvider::start_with(&db, &borrowed).await;
    let http = http();
    let metadata = json!({
        "client_name": "TV",
        "client_uri": "https://tv.example.com/",
        "application_type": "native",
        "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
        "response_types": [],
        "token_endpoint_auth_method": "none",
    });
    let register = |ip: &'static str| {
        http.post(provider.url(endpoints::REGISTRATION))
            .header("x-forwarded-for", ip)
            .header("origin", ORIGIN)
            .json(&metadata)
            .send()
    };
    let mut device_client = String::new();
    for _ in 0..2 {
        let (status, _, body) = json_of(register("203.0.113.1").await.unwrap()).await;
        assert_eq!(status, 201, "{body}");
        device_client = body["client_id"].as_str().unwrap().to_owned();
    }
    let response = register("203.0.113.1").await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    // A client in a page can read the refusal (CORS around the edge).
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        oauth_error(response).await,
        (429, "temporarily_unavailable".into())
    );
    assert_eq!(register("203.0.113.2").await.unwrap().status(), 201);

    let device = |ip: &'static str| {
        http.post(provider.url(endpoints::DEVICE_AUTHORIZATION))
            .header("x-forwarded-for", ip)
            .form(&[("client_id", device_client.as_str()), ("scope", "openid")])
            .send()
    };
    for _ in 0..2 {
        assert_eq!(device("203.0.113.1").await.unwrap().status(), 200);
    }
    let response = device("203.0.113.1").await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        oauth_error(response).await,
        (429, "temporarily_unavailable".into())
    );
    assert_eq!(device("203.0.113.2").await.unwrap().status(), 200);

    let authorize = |ip: &'static str| {
        http.get(authorize_url(&provider, &[]))
            .header("x-forwarded-for", ip)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(authorize("203.0.113.1").await.unwrap().status(), 303);
    }
    let response = authorize("203.0.113.1").await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = page(response).await;
    assert_eq!(status, 429);
    assert!(body.contains("Try again in"), "{body}");
    assert_eq!(authorize("203.0.113.2").await.unwrap().status(), 303);
    // `HEAD` runs the `GET` handler, so it spends the same limit (it went around it).
    let head = |ip: &'static str| {
        http.head(authorize_url(&provider, &[]))
            .header("x-forwarded-for", ip)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(head("203.0.113.3").await.unwrap().status(), 303);
    }
    let response = head("203.0.113.3").await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(authorize("203.0.113.3").await.unwrap().status(), 429);

    let sso = |ip: &'static str| {
        http.get(format!(
            "{}?redirectUrl=https://app.example.com/",
            matrix(&provider, "/login/sso/redirect")
        ))
        .header("x-forwarded-for", ip)
        .send()
    };
    for _ in 0..2 {
        assert_eq!(sso("203.0.113.1").await.unwrap().status(), sso_status());
    }
    let response = sso("203.0.113.1").await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, _, body) = json_of(response).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(sso("203.0.113.2").await.unwrap().status(), sso_status());
    provider.stop().await;
}

/// A web client's origin.
const ORIGIN: &str = "https://web-client.example";

/// The CORS headers a browser needs to let a page read a cross-origin answer.
fn allows_any_origin(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("access-control-allow-origin")
        .is_some_and(|v| v == "*")
}

/// The edge's refusals on the endpoints a client running in a page calls carry the CORS headers
/// (the edge ran outside CORS, so a browser saw only a network error), preflights still work,
/// and the pages still get no CORS.
async fn edge_refusals_carry_cors(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let http = http();
    let huge = "a".repeat(100 * 1024);

    // 413: registration, in the RFC 7591 §3.2.2 shape (its own limit is gone: the edge's).
    let response = http
        .post(provider.url(endpoints::REGISTRATION))
        .header("origin", ORIGIN)
        .json(&json!({ "client_name": huge }))
        .send()
        .await
        .unwrap();
    assert!(allows_any_origin(&response), "{:?}", response.headers());
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        oauth_error(response).await,
        (413, "invalid_client_metadata".into())
    );
    // 413: the token endpoint and the legacy login.
    let response = http
        .post(provider.url(endpoints::TOKEN))
        .header("origin", ORIGIN)
        .form(&[("grant_type", "client_credentials"), ("scope", &huge)])
        .send()
        .await
        .unwrap();
    assert!(allows_any_origin(&response), "{:?}", response.headers());
    assert_eq!(oauth_error(response).await, (413, "invalid_request".into()));
    let response = http
        .post(matrix(&provider, "/login"))
        .header("origin", ORIGIN)
        .json(&json!({ "type": "m.login.password", "user": huge }))
        .send()
        .await
        .unwrap();
    assert!(allows_any_origin(&response), "{:?}", response.headers());
    assert_eq!(matrix_error(response).await, (413, "M_TOO_LARGE".into()));
    // 400: a control character, at registration and on the device endpoint.
    let response = http
        .post(provider.url(endpoints::REGISTRATION))
        .header("origin", ORIGIN)
        .json(&json!({ "client_name": "a\u{0}b" }))
        .send()
        .await
        .unwrap();
    assert!(allows_any_origin(&response), "{:?}", response.headers());
    assert_eq!(
        oauth_error(response).await,
        (400, "invalid_client_metadata".into())
    );
    let response = http
        .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
        .header("origin", ORIGIN)
        .form(&[("client_id", "a\u{1}b")])
        .send()
        .await
        .unwrap();
    assert!(allows_any_origin(&response), "{:?}", response.headers());
    assert_eq!(oauth_error(response).await, (400, "invalid_request".into()));
    // The discovery document (GET only).
    let response = http
        .get(provider.url(endpoints::OPENID_CONFIGURATION))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert!(allows_any_origin(&response));

    // Preflights: each policy's methods and headers.
    for (path, method, headers) in [
        (endpoints::REGISTRATION.to_owned(), "POST", "content-type"),
        (
            endpoints::TOKEN.to_owned(),
            "POST",
            "authorization,content-type",
        ),
        (endpoints::USERINFO.to_owned(), "GET", "authorization"),
        (matrix(&provider, "/login"), "POST", "content-type"),
    ] {
        let url = if path.starts_with("http") {
            path.clone()
        } else {
            provider.url(&path)
        };
        let response = http
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", ORIGIN)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        assert!(allows_any_origin(&response), "{path}");
        let allowed = response.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(allowed.contains(method), "{path}: {allowed}");
        let allowed = response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        for header in headers.split(',') {
            assert!(allowed.contains(header), "{path}: {allowed}");
        }
    }

    // No CORS on the pages, `/authorize`, introspection and the admin API, refused or not.
    for response in [
        http.get(authorize_url(&provider, &[("state", "a\u{0}")]))
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap(),
        http.post(provider.url(endpoints::LOGIN))
            .header("origin", ORIGIN)
            .form(&[("username", "alice"), ("password", &huge)])
            .send()
            .await
            .unwrap(),
        http.post(provider.url(endpoints::INTROSPECTION))
            .header("origin", ORIGIN)
            .form(&[("token", "mat_x")])
            .send()
            .await
            .unwrap(),
        http.get(provider.url("/api/admin/v1/users"))
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap(),
    ] {
        assert!(
            !response
                .headers()
                .contains_key("access-control-allow-origin"),
            "{}: {:?}",
            response.url(),
            response.headers()
        );
    }
    provider.stop().await;
}

/// A password is checked by the password policy, not the edge: a password stored before (an
/// imported hash) signs in whatever it holds, on the login page and the legacy login, and no
/// new password may hold a control character (which nobody could type to sign in).
async fn passwords_are_the_policys_not_the_edges(db: TestDb) {
    // An imported (bcrypt, version 0) hash of a password with a tab and a DEL.
    let imported = "tab\there\u{7f}pass";
    let hash = bcrypt::hash(imported, 4).unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("alice").await.unwrap();
    repo.user_passwords()
        .add(user.id, &hash, 0, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();

    // The legacy login (the edge answered 400 `M_INVALID_PARAM`).
    let response = http()
        .post(matrix(&provider, "/login"))
        .json(&json!({"type": "m.login.password", "user": "alice", "password": imported}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    // A wrong password with a NUL is a wrong password, not a malformed request.
    let response = http()
        .post(matrix(&provider, "/login"))
        .json(&json!({"type": "m.login.password", "user": "alice", "password": "x\u{0}y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(matrix_error(response).await, (403, "M_FORBIDDEN".into()));

    // The login page (the edge answered the 400 page).
    let browser = browser();
    let page = get_text(&browser, base.join(endpoints::LOGIN).unwrap()).await;
    let response = submit(
        &browser,
        &base,
        &page,
        &[("username", "alice"), ("password", imported)],
    )
    .await;
    assert_eq!(response.status(), 303, "signed in");

    // A new password with a control character: the account page refuses it, saying why.
    let (status, page) = text(
        browser
            .get(provider.url("/account?action=password"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (action, mut fields) = {
        let doc = scraper::Html::parse_document(&page);
        let form = doc
            .select(&scraper::Selector::parse("#password-form").unwrap())
            .next()
            .unwrap_or_else(|| panic!("the password form in {page}"));
        let action = form.value().attr("action").unwrap().to_owned();
        let fields: Vec<(String, String)> = form
            .select(&scraper::Selector::parse("input[name]").unwrap())
            .filter(|i| i.value().attr("type") != Some("password"))
            .map(|i| {
                let name = i.value().attr("name").unwrap().to_owned();
                (name, i.value().attr("value").unwrap_or("").to_owned())
            })
            .collect();
        (action, fields)
    };
    let new = "a new\tlong password";
    for (name, value) in [
        ("current_password", imported),
        ("new_password", new),
        ("new_password_confirm", new),
    ] {
        set(&mut fields, name, value);
    }
    let (status, page) = text(
        browser
            .post(base.join(&action).unwrap())
            .form(&fields)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("control character"), "{page}");
    // The old password still signs in; the refused one doesn't.
    for (password, status) in [(imported, 200), (new, 403)] {
        let response = http()
            .post(matrix(&provider, "/login"))
            .json(&json!({"type": "m.login.password", "user": "alice", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{password:?}");
    }
    provider.stop().await;
}

/// The status of the legacy SSO redirect to the provider's page.
fn sso_status() -> u16 {
    303
}

/// Finding 3: housekeeping deletes what anyone may start without signing in and never
/// finish: authorization grants never exchanged, legacy SSO logins never exchanged (a
/// [`housekeeping::GRACE`] after they began), and dynamic clients that never got a session
/// ([`housekeeping::UNUSED_CLIENT_AGE`] after they registered). What is used, static or
/// recent stays.
async fn housekeeping_removes_what_was_never_completed(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let http = http();
    // An abandoned /authorize (the login page never answered) and an abandoned SSO login.
    assert_eq!(
        http.get(authorize_url(&provider, &[]))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    let sso = format!(
        "{}?redirectUrl=https://app.example.com/",
        matrix(&provider, "/login/sso/redirect")
    );
    assert_eq!(http.get(&sso).send().await.unwrap().status(), sso_status());
    // Two dynamic clients; one gets a session.
    let mut ids = Vec::new();
    for name in ["unused", "used"] {
        let response = http
            .post(provider.url(endpoints::REGISTRATION))
            .json(&json!({
                "client_name": name,
                "client_uri": "https://app.example.com/",
                "redirect_uris": [REDIRECT.replace("client.example.com", "app.example.com")],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap();
        let (status, _, body) = json_of(response).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["client_id"].as_str().unwrap().to_owned());
    }
    let mut repo = db.storage.begin().await.unwrap();
    let used = repo
        .clients()
        .find_by_client_id(&ids[1])
        .await
        .unwrap()
        .unwrap();
    repo.oauth2_sessions()
        .add(NewOAuth2Session {
            user_id: None,
            client_id: used.id,
            browser_session_id: None,
            scope: "openid",
            device_id: None,
            user_agent: None,
        })
        .await
        .unwrap();
    repo.commit().await.unwrap();

    // Within the grace nothing of it goes.
    db.clock.advance(chrono::Duration::hours(23));
    let deleted = housekeeping::run_once(&db.storage).await.unwrap();
    assert_eq!(
        (
            deleted.abandoned_authorization_grants,
            deleted.abandoned_compat_sso_logins,
            deleted.unused_clients
        ),
        (0, 0, 0)
    );
    // A fresh request, made now, outlives the old ones.
    assert_eq!(
        http.get(authorize_url(&provider, &[]))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    db.clock.advance(chrono::Duration::hours(2));
    let deleted = housekeeping::run_once(&db.storage).await.unwrap();
    assert_eq!(deleted.abandoned_authorization_grants, 1);
    assert_eq!(deleted.abandoned_compat_sso_logins, 1);
    assert_eq!(deleted.unused_clients, 0);

    db.clock.advance(housekeeping::UNUSED_CLIENT_AGE);
    let deleted = housekeeping::run_once(&db.storage).await.unwrap();
    assert_eq!(deleted.unused_clients, 1);
    assert_eq!(
        deleted.abandoned_authorization_grants, 1,
        "the fresh one, now old"
    );
    let mut repo = db.storage.reader().await.unwrap();
    assert!(repo
        .clients()
        .find_by_client_id(&ids[0])
        .await
        .unwrap()
        .is_none());
    assert!(repo
        .clients()
        .find_by_client_id(&ids[1])
        .await
        .unwrap()
        .is_some());
    let (static_id, _) = static_client(&provider);
    assert!(repo
        .clients()
        .find_by_client_id(&static_id)
        .await
        .unwrap()
        .is_some());
    drop(repo);
    assert_eq!(
        housekeeping::run_once(&db.storage).await.unwrap(),
        housekeeping::Deleted::default()
    );
    provider.stop().await;
}

backend_tests!(
    control_characters_get_each_endpoints_error,
    oversized_bodies_get_each_doors_413,
    stored_fields_are_bounded,
    unauthenticated_writes_are_limited_per_ip,
    housekeeping_removes_what_was_never_completed,
    edge_refusals_carry_cors,
    passwords_are_the_policys_not_the_edges,
);
