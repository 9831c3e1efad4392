//! The dashboard: its pages render, the QR code endpoint makes SVG, the device-flow and legacy
//! panels drive the provider and the homeserver, and the exchange log shows every exchange,
//! live and as JSON, with secrets elided.

mod common;

use std::time::Duration;

use common::{get_text, login, no_redirects, password, start_in_temp_dir, whoami};
use reqwest::{header, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn pages_render_with_a_strict_policy() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = reqwest::Client::new();
    for path in [
        "",
        "client",
        "callback?code=x&state=y",
        "device",
        "legacy",
        "log",
    ] {
        let page = http
            .get(dashboard.join(path).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = page.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline script on /{path}");
        assert!(html.contains("Matrix OAuth playground"), "{path}");
    }
    let overview = get_text(&http, dashboard.clone()).await;
    for expected in [
        password(&playground, "alice"),
        password(&playground, "bob"),
        "playground-demo".to_owned(),
        // The instructions and the documents name the homeserver's and the provider's URLs
        // (HTML-escaped: `/` is written `&#x2f;`).
        "auth_metadata".to_owned(),
        "openid-configuration".to_owned(),
        "keys.json".to_owned(),
        "Redirect URIs that register".to_owned(),
    ] {
        assert!(
            overview.contains(&expected),
            "`{expected}` missing from the overview"
        );
    }
    let client_page = get_text(&http, dashboard.join("client").unwrap()).await;
    assert!(client_page.contains(r#"<script src="/static/client.js">"#));
    assert!(client_page.contains("data-demo-client=\"playground-demo\""));

    for (path, content_type) in [
        ("static/style.css", "text/css"),
        ("static/client.js", "text/javascript"),
        ("static/log.js", "text/javascript"),
    ] {
        let asset = http
            .get(dashboard.join(path).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()[header::CONTENT_TYPE], content_type);
    }
    let missing = http
        .get(dashboard.join("nothing-here").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // No TLS, no certificate to download.
    let cert = http
        .get(dashboard.join("certificate.pem").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(cert.status(), 404);
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn qr_codes_are_svg() {
    let (_dir, playground) = start_in_temp_dir().await;
    let http = reqwest::Client::new();
    let mut url = playground.urls.dashboard.join("qr.svg").unwrap();
    url.query_pairs_mut()
        .append_pair("data", "http://127.0.0.1:8080/link?code=ABCD-EFGH");
    let qr = http.get(url).send().await.unwrap();
    assert_eq!(qr.status(), 200);
    assert_eq!(qr.headers()[header::CONTENT_TYPE], "image/svg+xml");
    let svg = qr.text().await.unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    for bad in [
        "qr.svg",
        "qr.svg?data=",
        &format!("qr.svg?data={}", "x".repeat(2000)),
    ] {
        let answer = http
            .get(playground.urls.dashboard.join(bad).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
    }
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn the_device_panel_starts_a_grant_and_shows_its_code() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = no_redirects();
    let form = get_text(&http, dashboard.join("device").unwrap()).await;
    assert!(form.contains("urn:matrix:client:device:"));
    let started = http
        .post(dashboard.join("device").unwrap())
        .form(&[(
            "scope",
            "openid urn:matrix:client:api:* urn:matrix:client:device:PLAYGROUND1",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let location = started.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(location.starts_with("/device/"), "{location}");
    let page = get_text(&http, dashboard.join(&location).unwrap()).await;
    assert!(page.contains("class=\"user-code\""), "{page}");
    assert!(
        page.contains("qr.svg?data=http%3A%2F%2F127.0.0.1"),
        "{page}"
    );
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "the pending page polls"
    );
    assert!(page.contains("Waiting for approval"));
    // The grant is listed on the form.
    let form = get_text(&http, dashboard.join("device").unwrap()).await;
    assert!(form.contains(&location));
    // A grant that doesn't exist.
    let missing = http
        .get(dashboard.join("device/0000").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn the_legacy_panel_logs_in_refreshes_and_logs_out() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = reqwest::Client::new();
    let alice = password(&playground, "alice");
    let page = http
        .post(dashboard.join("legacy").unwrap())
        .form(&[
            ("username", "alice"),
            ("password", alice.as_str()),
            ("refresh_token", "true"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("@alice:localhost"), "whoami answered: {page}");
    assert!(!page.contains(&alice), "the password is not shown");
    assert!(page.contains("action=\"/legacy/logout\""));
    assert!(page.contains("action=\"/legacy/refresh\""));
    let field = |page: &str, name: &str| {
        let start = format!("type=\"hidden\" name=\"{name}\" value=\"");
        let at = page.find(&start).unwrap() + start.len();
        page[at..at + page[at..].find('"').unwrap()].to_owned()
    };
    let refresh = field(&page, "refresh_token");
    let page = http
        .post(dashboard.join("legacy/refresh").unwrap())
        .form(&[("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("@alice:localhost"), "{page}");
    let access = field(&page, "access_token");
    assert_eq!(
        whoami(&http, &playground.urls.homeserver, &access)
            .await
            .unwrap(),
        "@alice:localhost"
    );
    let page = http
        .post(dashboard.join("legacy/logout").unwrap())
        .form(&[("access_token", access.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("M_UNKNOWN_TOKEN"), "{page}");
    assert!(whoami(&http, &playground.urls.homeserver, &access)
        .await
        .is_err());

    // Forms posted from another site are refused.
    let cross = http
        .post(dashboard.join("legacy").unwrap())
        .header(header::ORIGIN, "http://evil.example")
        .form(&[("username", "alice"), ("password", alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    playground.stop().await.unwrap();
}

/// Reads server-sent events until one holds `needle`; returns everything read.
async fn read_events_until(mut stream: reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the event arrives")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test]
async fn the_exchange_log_shows_every_exchange_with_secrets_elided() {
    let (_dir, playground) = start_in_temp_dir().await;
    let urls = playground.urls.clone();
    let http = reqwest::Client::new();
    let events = http
        .get(urls.dashboard.join("log/events").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()[header::CONTENT_TYPE], "text/event-stream");

    let alice = password(&playground, "alice");
    let token = login(&http, &urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    whoami(&http, &urls.homeserver, &token).await.unwrap();

    // Live: the login, as the provider received it from the homeserver's proxy.
    let seen = read_events_until(events, "/oauth2/introspect").await;
    assert!(seen.contains("event: exchange"), "{seen}");
    assert!(seen.contains("/_matrix/client/v3/login"), "{seen}");
    assert!(!seen.contains(&alice), "no password in the stream");
    assert!(!seen.contains(&token), "no token in the stream");

    // The backlog, as JSON.
    let entries: Vec<Value> = http
        .get(urls.dashboard.join("log.json").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = serde_json::to_string(&entries).unwrap();
    assert!(
        !text.contains(&alice) && !text.contains(&token),
        "secrets are elided"
    );
    let find = |from: &str, to: &str, method: &str, path: &str| {
        entries
            .iter()
            .find(|e| {
                e["from"] == from && e["to"] == to && e["method"] == method && e["path"] == path
            })
            .unwrap_or_else(|| panic!("no {from} → {to} {method} {path} in {text}"))
            .clone()
    };
    let client_login = find("client", "homeserver", "POST", "/_matrix/client/v3/login");
    assert_eq!(client_login["status"], 200);
    assert_eq!(client_login["request"]["body"]["kind"], "json");
    let request_body: Value =
        serde_json::from_str(client_login["request"]["body"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(request_body["password"], "<elided>");
    assert_eq!(request_body["identifier"]["user"], "alice");
    let response_body: Value =
        serde_json::from_str(client_login["response"]["body"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(response_body["access_token"], "<elided>");
    assert_eq!(response_body["user_id"], "@alice:localhost");
    assert!(client_login["duration_ms"].as_f64().unwrap() >= 0.0);

    let proxied = find("homeserver", "provider", "POST", "/_matrix/client/v3/login");
    assert_eq!(proxied["status"], 200);
    let introspection = find("homeserver", "provider", "POST", "/oauth2/introspect");
    assert_eq!(introspection["request"]["body"]["kind"], "form");
    assert!(introspection["request"]["body"]["text"]
        .as_str()
        .unwrap()
        .contains("token=<elided>"));
    let headers = introspection["request"]["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["authorization", "Bearer <elided>"])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&serde_json::json!(["x-mas-supports-device-id", "1"])),
        "{headers:?}"
    );
    let whoami_entry = find(
        "client",
        "homeserver",
        "GET",
        "/_matrix/client/v3/account/whoami",
    );
    assert!(whoami_entry["request"]["headers"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(["authorization", "Bearer <elided>"])));
    find(
        "provider",
        "homeserver",
        "POST",
        "/_synapse/mas/upsert_device",
    );

    // A reconnecting browser gets only what it missed.
    let last = entries.last().unwrap()["id"].as_u64().unwrap();
    let after: Vec<Value> = http
        .get(
            urls.dashboard
                .join(&format!("log.json?after={last}"))
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(after.is_empty(), "{after:?}");
    let resumed = http
        .get(urls.dashboard.join("log/events").unwrap())
        .header("Last-Event-ID", (last - 1).to_string())
        .send()
        .await
        .unwrap();
    let seen = read_events_until(resumed, &format!("id: {last}")).await;
    assert!(!seen.contains(&format!("id: {}\n", last - 1)), "{seen}");

    // Open streams don't hold up stopping.
    let _open = http
        .get(urls.dashboard.join("log/events").unwrap())
        .send()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), playground.stop())
        .await
        .expect("stops with a stream open")
        .unwrap();
}
