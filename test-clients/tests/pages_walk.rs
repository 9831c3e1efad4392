//! The browser walk through a provider's pages, and a whole `oauth::sign_in`, against a small
//! fake provider (wiremock) that behaves like the real one's pages: sign-in and registration
//! forms, a consent page with allow/deny, the device link pages, error pages. Only the public API
//! of the library is used.

use std::sync::{Arc, Mutex};

use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};
use test_clients::{
    http::Http,
    oauth,
    pages::{self, Account},
    pkce::PkcePair,
    transcript::Transcript,
    Error,
};
use url::Url;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, Request, ResponseTemplate,
};

const PASSWORD: &str = "correct horse battery staple";

fn page(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/html; charset=utf-8")
        .set_body_string(format!(
            "<!DOCTYPE html><html><head><title>Test</title></head><body><main>{body}</main></body></html>"
        ))
}

fn see_other(location: &str) -> ResponseTemplate {
    ResponseTemplate::new(303).insert_header("location", location)
}

fn form_of(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

const LOGIN_PAGE: &str = r#"<h1>Sign in</h1>
<form method="post" action="/login">
  <input type="hidden" name="csrf" value="c1">
  <input type="hidden" name="grant" value="g1">
  <input name="username" type="text">
  <input name="password" type="password">
  <button type="submit">Sign in</button>
</form>
<p>New here? <a href="/register?grant=g1">Create an account</a></p>"#;

const REGISTER_PAGE: &str = r#"<h1>Create an account</h1>
<form method="post" action="/register">
  <input type="hidden" name="csrf" value="c1">
  <input type="hidden" name="grant" value="g1">
  <input name="username" type="text">
  <input name="password" type="password">
  <input name="password_confirm" type="password">
  <button type="submit">Create</button>
</form>"#;

const CONSENT_PAGE: &str = r#"<h1>Allow?</h1>
<form method="post" action="/consent/g1">
  <input type="hidden" name="csrf" value="c2">
  <button type="submit" name="action" value="allow">Allow</button>
  <button type="submit" name="action" value="deny">Deny</button>
</form>"#;

/// The forms a fake provider received: (path, fields).
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A provider whose `/authorize` leads through sign-in (or registration) and consent back to
/// the client with a code, the state and `iss`; what the forms received is kept in `seen`.
async fn provider(seen: Seen) -> MockServer {
    let server = MockServer::start().await;
    let issuer = format!("{}/", server.uri());
    let pending = Arc::new(Mutex::new(None::<(String, String)>));

    let remember = pending.clone();
    Mock::given(method("GET"))
        .and(path("/authorize"))
        .respond_with(move |request: &Request| {
            let q = |n: &str| param(&request.url, n).unwrap_or_default();
            *remember.lock().unwrap() = Some((q("redirect_uri"), q("state")));
            if q("prompt") == "create" {
                see_other("/register?grant=g1")
            } else {
                see_other("/login?grant=g1")
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/login"))
        .respond_with(page(LOGIN_PAGE))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/register"))
        .respond_with(page(REGISTER_PAGE))
        .mount(&server)
        .await;
    for at in ["/login", "/register"] {
        let seen = seen.clone();
        Mock::given(method("POST"))
            .and(path(at))
            .respond_with(move |request: &Request| {
                let fields = form_of(request);
                let right = field(&fields, "password").as_deref() == Some(PASSWORD);
                seen.lock()
                    .unwrap()
                    .push((request.url.path().to_owned(), fields));
                if right {
                    see_other("/consent/g1")
                } else {
                    ResponseTemplate::new(401)
                        .insert_header("content-type", "text/html")
                        .set_body_string("<main><h1>Sign in</h1><p class=error>Wrong password.</p><form></form></main>")
                }
            })
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/consent/g1"))
        .respond_with(page(CONSENT_PAGE))
        .mount(&server)
        .await;
    let consent_seen = seen.clone();
    Mock::given(method("POST"))
        .and(path("/consent/g1"))
        .respond_with(move |request: &Request| {
            let fields = form_of(request);
            consent_seen
                .lock()
                .unwrap()
                .push(("/consent/g1".into(), fields));
            let (redirect_uri, state) = pending.lock().unwrap().clone().unwrap();
            let mut back = Url::parse(&redirect_uri).unwrap();
            back.query_pairs_mut()
                .append_pair("code", "the-code-0123456789")
                .append_pair("state", &state)
                .append_pair("iss", &issuer);
            see_other(back.as_str())
        })
        .mount(&server)
        .await;
    server
}

fn metadata(server: &MockServer) -> Value {
    let base = server.uri();
    json!({
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "registration_endpoint": format!("{base}/oauth2/registration"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "authorization_response_iss_parameter_supported": true,
    })
}

fn alice() -> Account {
    Account::SignIn {
        username: "alice".into(),
        password: PASSWORD.into(),
    }
}

#[tokio::test]
async fn sign_in_then_consent_back_to_the_client() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = provider(seen.clone()).await;
    let transcript = Transcript::new();
    let browser = Http::browser(transcript.clone());
    let metadata = metadata(&server);
    let pkce = PkcePair::generate(&mut StdRng::seed_from_u64(3));
    let request = oauth::AuthRequest {
        client_id: "client",
        redirect_uri: oauth::LOOPBACK_REDIRECT,
        scope: "openid",
        state: "state-1",
        challenge: &pkce.challenge,
        extra: &[],
    };
    let code = oauth::authorize(&browser, &metadata, &request, &alice())
        .await
        .unwrap();
    assert_eq!(code, "the-code-0123456789");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "/login");
    assert_eq!(field(&seen[0].1, "username").as_deref(), Some("alice"));
    assert_eq!(field(&seen[0].1, "csrf").as_deref(), Some("c1"));
    assert_eq!(field(&seen[0].1, "grant").as_deref(), Some("g1"));
    assert_eq!(seen[1].0, "/consent/g1");
    assert_eq!(
        seen[1].1,
        vec![
            ("csrf".into(), "c2".into()),
            ("action".into(), "allow".into())
        ]
    );
    // The transcript shows the walk, without the password or the code.
    let text = transcript.render_text();
    assert!(
        text.contains("browser: sign-in form at /login, as alice"),
        "{text}"
    );
    assert!(
        text.contains("browser: choosing `allow` at /consent/g1"),
        "{text}"
    );
    assert!(
        !text.contains(PASSWORD) && !text.contains("the-code-0123456789"),
        "{text}"
    );
}

#[tokio::test]
async fn a_new_account_registers_and_a_wrong_password_stops_the_walk() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = provider(seen.clone()).await;
    let metadata = metadata(&server);
    let start = Url::parse(&format!(
        "{}/authorize?redirect_uri=http%3A%2F%2F127.0.0.1%2Fcallback&state=s",
        server.uri()
    ))
    .unwrap();

    // A registering person at the sign-in page follows its link to the registration page.
    let bob = Account::Register {
        username: "bob".into(),
        password: PASSWORD.into(),
    };
    let browser = Http::browser(Transcript::new());
    let back = pages::walk(&browser, &start, oauth::LOOPBACK_REDIRECT, &bob)
        .await
        .unwrap();
    assert_eq!(
        oauth::check_authorization_response(&metadata, &back, "s").unwrap(),
        "the-code-0123456789"
    );
    let posted = seen.lock().unwrap()[0].clone();
    assert_eq!(posted.0, "/register");
    assert_eq!(
        field(&posted.1, "password_confirm").as_deref(),
        Some(PASSWORD)
    );

    // A wrong password: the error page's text, as a Page error.
    let mallory = Account::SignIn {
        username: "alice".into(),
        password: "wrong".into(),
    };
    let browser = Http::browser(Transcript::new());
    let error = pages::walk(&browser, &start, oauth::LOOPBACK_REDIRECT, &mallory)
        .await
        .unwrap_err();
    let Error::Page(text) = error else {
        panic!("{error}")
    };
    assert!(text.starts_with("HTTP 401 at "), "{text}");
    assert!(text.contains("Wrong password."), "{text}");
}

#[tokio::test]
async fn a_page_without_a_way_on_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/authorize"))
        .respond_with(page("<h1>Signed in</h1><p>You can close this page.</p>"))
        .mount(&server)
        .await;
    let start = Url::parse(&format!("{}/authorize?code=secret", server.uri())).unwrap();
    let error = pages::walk(
        &Http::browser(Transcript::new()),
        &start,
        oauth::LOOPBACK_REDIRECT,
        &alice(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("has no form to go on with: Signed in You can close this page."),
        "{error}"
    );
    assert!(!error.contains("secret"), "{error}");
}

#[tokio::test]
async fn device_approval_ends_on_the_result_page() {
    let server = MockServer::start().await;
    let posted = Arc::new(Mutex::new(Vec::new()));
    // Signed out: to the login page and back to the link page (RFC 8628 §3.3.1).
    Mock::given(method("GET"))
        .and(path("/link"))
        .respond_with(|request: &Request| {
            if request.headers.get("cookie").is_none() {
                see_other("/login?next=%2Flink")
            } else {
                page(r#"<form method="post" action="/link"><input type=hidden name=csrf value=c3><input name="code" value=""><button>Continue</button></form>"#)
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/login"))
        .respond_with(page(LOGIN_PAGE))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(see_other("/link").insert_header("set-cookie", "session=s1; Path=/"))
        .mount(&server)
        .await;
    let seen = posted.clone();
    Mock::given(method("POST"))
        .and(path("/link"))
        .respond_with(move |request: &Request| {
            seen.lock().unwrap().push(form_of(request));
            page(r#"<h1>Allow TV?</h1><form method="post" action="/link/approve"><input type=hidden name=csrf value=c4><input type=hidden name=grant value=g9><button name=action value=allow>Allow</button><button name=action value=deny>Deny</button></form>"#)
        })
        .mount(&server)
        .await;
    let seen = posted.clone();
    Mock::given(method("POST"))
        .and(path("/link/approve"))
        .respond_with(move |request: &Request| {
            seen.lock().unwrap().push(form_of(request));
            page("<h1>Device connected</h1>")
        })
        .mount(&server)
        .await;

    let start = Url::parse(&format!("{}/link", server.uri())).unwrap();
    let done = pages::approve_device(
        &Http::browser(Transcript::new()),
        &start,
        "BCDF-GHJK",
        &alice(),
    )
    .await
    .unwrap();
    assert_eq!(done.path(), "/link/approve");
    let posted = posted.lock().unwrap().clone();
    // The empty code field was filled with the user code; then "allow".
    assert_eq!(field(&posted[0], "code").as_deref(), Some("BCDF-GHJK"));
    assert_eq!(field(&posted[1], "action").as_deref(), Some("allow"));
    assert_eq!(field(&posted[1], "grant").as_deref(), Some("g9"));
}

#[tokio::test]
async fn sign_in_registers_a_native_client_and_exchanges_the_code() {
    let server = provider(Arc::new(Mutex::new(Vec::new()))).await;
    Mock::given(method("POST"))
        .and(path("/oauth2/registration"))
        .respond_with(|request: &Request| {
            let mut client: Value = request.body_json().unwrap();
            client["client_id"] = json!("native-1");
            ResponseTemplate::new(201).set_body_json(client)
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(|request: &Request| {
            let fields = form_of(request);
            assert_eq!(
                field(&fields, "grant_type").as_deref(),
                Some("authorization_code")
            );
            assert_eq!(field(&fields, "client_id").as_deref(), Some("native-1"));
            assert_eq!(
                field(&fields, "code").as_deref(),
                Some("the-code-0123456789")
            );
            assert_eq!(
                field(&fields, "redirect_uri").as_deref(),
                Some(oauth::LOOPBACK_REDIRECT)
            );
            assert_eq!(field(&fields, "code_verifier").map(|v| v.len()), Some(43));
            ResponseTemplate::new(200)
                .insert_header("cache-control", "no-store")
                .set_body_json(json!({
                    "access_token": "mat_access_token_value",
                    "refresh_token": "mar_refresh_token_value",
                    "token_type": "Bearer",
                    "expires_in": 300,
                }))
        })
        .mount(&server)
        .await;
    let transcript = Transcript::new();
    let signed_in = oauth::sign_in(
        &Http::browser(transcript.clone()),
        &metadata(&server),
        "openid urn:matrix:client:api:*",
        &alice(),
    )
    .await
    .unwrap();
    assert_eq!(signed_in.client_id, "native-1");
    assert_eq!(signed_in.redirect_uri, oauth::LOOPBACK_REDIRECT);
    assert_eq!(signed_in.tokens["access_token"], "mat_access_token_value");
    let registration = &transcript.entries()[0];
    let sent: Value = serde_json::from_str(registration.request_body.as_ref().unwrap()).unwrap();
    assert_eq!(sent["application_type"], "native");
    assert_eq!(sent["redirect_uris"], json!([oauth::LOOPBACK_REDIRECT]));
    assert_eq!(sent["token_endpoint_auth_method"], "none");
    assert!(!transcript.render_text().contains("mat_access_token_value"));
}
