//! The legacy Matrix login API (compat layer, MSC3824) over HTTP, on both databases, with the
//! fake homeserver next to the provider: the flows, password and token logins, refresh with
//! reuse detection, logout, and `m.login.sso` through the provider's pages. Clients call the
//! homeserver, whose reverse proxy sends these paths to the provider, as in a deployment; the
//! homeserver's `whoami` shows the token works there (introspection + the device).

mod support;

use chrono::Duration;
use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user, browser, get_text, http, introspect_as_homeserver, json_of, location, param, submit,
    text,
};
use url::Url;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

const PASSWORD: &str = "correct horse battery staple";
/// Where the SSO logins send the user back to.
const CLIENT_SSO: &str = "https://app.example/sso/callback?state=abc";

/// A client API URL on the homeserver (proxied to the provider for the login API).
fn matrix(provider: &TestProvider, path: &str) -> Url {
    provider
        .homeserver
        .base_url()
        .join(&format!("_matrix/client/v3{path}"))
        .unwrap()
}

/// `POST` a JSON body (or raw text): status and JSON answer.
async fn post(url: impl reqwest::IntoUrl, body: &Value) -> (u16, Value) {
    let (status, headers, body) = json_of(http().post(url).json(body).send().await.unwrap()).await;
    assert_eq!(headers["content-type"], "application/json", "{body}");
    (status, body)
}

/// `POST /login` through the homeserver.
async fn login(provider: &TestProvider, body: Value) -> (u16, Value) {
    post(matrix(provider, "/login"), &body).await
}

/// A password login of `alice` that must succeed, with `extra` members.
async fn alice_logs_in(provider: &TestProvider, extra: Value) -> Value {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, answer) = login(provider, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The errcode of an error answer, checking its status.
fn error(answer: (u16, Value), status: u16) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    answer.1["errcode"].as_str().unwrap().to_owned()
}

/// `whoami` on the homeserver with a token: status and answer.
async fn whoami(provider: &TestProvider, token: &str) -> (u16, Value) {
    let (status, _, body) = json_of(
        http()
            .get(matrix(provider, "/account/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

/// `POST /logout` or `/logout/all` with a token.
async fn logout(provider: &TestProvider, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().post(matrix(provider, path)).json(&json!({}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, _, body) = json_of(request.send().await.unwrap()).await;
    (status, body)
}

async fn set_user(db: &TestDb, username: &str, locked: bool, deactivated: bool) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo
        .users()
        .find_by_username(username)
        .await
        .unwrap()
        .unwrap();
    repo.users().set_locked(user.id, locked).await.unwrap();
    repo.users()
        .set_deactivated(user.id, deactivated)
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

/// `GET /login`: the flows, under both prefixes, callable from web clients (CORS).
async fn login_flows(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let expected = json!({"flows": [
        {"type": "m.login.password"},
        {
            "type": "m.login.sso",
            "identity_providers": [],
            "oauth_aware_preferred": true,
            "org.matrix.msc3824.delegated_oidc_compatibility": true,
        },
        {"type": "m.login.token"},
    ]});
    for prefix in ["r0", "v3"] {
        let response = http()
            .get(provider.url(&format!("/_matrix/client/{prefix}/login")))
            .header("Origin", "https://web.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let (status, _, body) = json_of(response).await;
        assert_eq!((status, body), (200, expected.clone()), "{prefix}");
    }
    // Through the homeserver's proxy, as clients reach it.
    let (status, _, body) = json_of(
        http()
            .get(matrix(&provider, "/login"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, expected));

    // A preflight for a login with a JSON body and a logout with a token.
    let preflight = http()
        .request(
            reqwest::Method::OPTIONS,
            provider.url("/_matrix/client/v3/logout"),
        )
        .header("Origin", "https://web.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    // Another method on a known path: M_UNRECOGNIZED.
    let (status, _, body) = json_of(
        http()
            .put(provider.url("/_matrix/client/v3/login"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (405, Some("M_UNRECOGNIZED"))
    );
    provider.stop().await;
}

/// `m.login.password`: the three ways to name the user, device IDs, and every refusal.
async fn password_logins(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;

    // A generated device, an access token that never expires, no refresh token.
    let answer = alice_logs_in(&provider, json!({})).await;
    assert_eq!(answer["user_id"], "@alice:localhost");
    assert_eq!(answer["home_server"], "localhost");
    let device = answer["device_id"].as_str().unwrap().to_owned();
    assert_eq!(device.len(), 10);
    assert!(device.bytes().all(|b| b.is_ascii_uppercase()), "{device}");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("mct_"), "{token}");
    assert!(answer.get("refresh_token").is_none() && answer.get("expires_in_ms").is_none());
    // The homeserver has the device, and serves the token as alice on it.
    assert!(provider.homeserver.store().has_device("alice", &device));
    assert_eq!(
        whoami(&provider, &token).await,
        (
            200,
            json!({ "user_id": "@alice:localhost", "is_guest": false, "device_id": device })
        )
    );
    let body = introspect_as_homeserver(&provider, &token).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["device_id"], device.as_str());
    assert!(body.get("exp").is_none(), "{body}");

    // The legacy `user` member and a full Matrix ID, with a chosen device and its name.
    for (n, user) in ["alice", "@alice:localhost"].into_iter().enumerate() {
        let device_id = format!("MY-PHONE.{n}");
        let (status, answer) = login(
            &provider,
            json!({
                "type": "m.login.password",
                "user": user,
                "password": PASSWORD,
                "device_id": device_id,
                "initial_device_display_name": "Alice's phone",
            }),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["device_id"], device_id.as_str());
        let devices = provider.homeserver.store().devices("alice");
        let made = devices.iter().find(|d| d.device_id == device_id).unwrap();
        assert_eq!(made.display_name.as_deref(), Some("Alice's phone"));
    }

    // Logging in again with the same device replaces its session: the old token stops working,
    // the device stays.
    let again = alice_logs_in(&provider, json!({ "device_id": device })).await;
    assert_eq!(again["device_id"], device.as_str());
    assert_eq!(
        introspect_as_homeserver(&provider, &token).await,
        json!({ "active": false })
    );
    let new_token = again["access_token"].as_str().unwrap();
    assert_eq!(
        introspect_as_homeserver(&provider, new_token).await["active"],
        true
    );
    assert!(provider.homeserver.store().has_device("alice", &device));

    // Wrong credentials and foreign users: one answer.
    for body in [
        json!({"type": "m.login.password", "user": "alice", "password": "wrong"}),
        json!({"type": "m.login.password", "user": "mallory", "password": PASSWORD}),
        json!({"type": "m.login.password", "user": "@alice:elsewhere.example", "password": PASSWORD}),
    ] {
        assert_eq!(error(login(&provider, body).await, 403), "M_FORBIDDEN");
    }
    let right = json!({"type": "m.login.password", "user": "alice", "password": PASSWORD});
    // Malformed requests.
    let mut bad_device = right.clone();
    bad_device["device_id"] = json!("not a device");
    assert_eq!(
        error(login(&provider, bad_device).await, 400),
        "M_INVALID_PARAM"
    );
    assert_eq!(
        error(
            login(
                &provider,
                json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "bot"}})
            )
            .await,
            400
        ),
        "M_APPSERVICE_LOGIN_UNSUPPORTED"
    );
    let unknown = login(&provider, json!({"type": "m.login.recaptcha"})).await;
    assert_eq!(unknown.1["error"], "Unknown login type");
    assert_eq!(error(unknown, 400), "M_UNKNOWN");
    let (status, _, body) = json_of(
        http()
            .post(matrix(&provider, "/login"))
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error((status, body), 400), "M_NOT_JSON");
    assert_eq!(
        error(
            login(
                &provider,
                json!({"type": "m.login.password", "user": ["alice"], "password": PASSWORD})
            )
            .await,
            400
        ),
        "M_BAD_JSON"
    );

    // The account's state is told after the right password only.
    set_user(&db, "alice", true, false).await;
    assert_eq!(
        error(login(&provider, right.clone()).await, 401),
        "M_USER_LOCKED"
    );
    let wrong = json!({"type": "m.login.password", "user": "alice", "password": "wrong"});
    assert_eq!(
        error(login(&provider, wrong.clone()).await, 403),
        "M_FORBIDDEN"
    );
    set_user(&db, "alice", false, true).await;
    assert_eq!(
        error(login(&provider, right).await, 403),
        "M_USER_DEACTIVATED"
    );
    assert_eq!(error(login(&provider, wrong).await, 403), "M_FORBIDDEN");
    provider.stop().await;
}

/// `refresh_token: true` → a pair; `/refresh` rotates it; a used refresh token presented again
/// ends the session and deletes the device (RFC 9700 §4.14.2).
async fn refresh_rotation_and_reuse(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let first = alice_logs_in(&provider, json!({ "refresh_token": true })).await;
    assert_eq!(first["expires_in_ms"], 300_000);
    let device = first["device_id"].as_str().unwrap().to_owned();
    let access = first["access_token"].as_str().unwrap().to_owned();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh.starts_with("mcr_"), "{refresh}");
    assert_eq!(
        introspect_as_homeserver(&provider, &access).await["expires_in"],
        300
    );

    // Rotation: a new pair, the old access token revoked.
    let (status, second) = post(
        matrix(&provider, "/refresh"),
        &json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["expires_in_ms"], 300_000);
    let access2 = second["access_token"].as_str().unwrap().to_owned();
    let refresh2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(access2, access);
    assert_ne!(refresh2, refresh);
    assert_eq!(
        introspect_as_homeserver(&provider, &access).await,
        json!({ "active": false })
    );
    assert_eq!(
        introspect_as_homeserver(&provider, &access2).await["device_id"],
        device.as_str()
    );
    assert_eq!(whoami(&provider, &access2).await.0, 200);

    // The access token expires; the refresh token still works.
    db.clock.advance(Duration::minutes(6));
    assert_eq!(
        introspect_as_homeserver(&provider, &access2).await,
        json!({ "active": false })
    );
    let (status, third) = post(
        matrix(&provider, "/refresh"),
        &json!({ "refresh_token": refresh2 }),
    )
    .await;
    assert_eq!(status, 200, "{third}");
    let access3 = third["access_token"].as_str().unwrap().to_owned();
    let refresh3 = third["refresh_token"].as_str().unwrap().to_owned();

    // The first refresh token again: the session ends, the device goes.
    let (status, body) = post(
        matrix(&provider, "/refresh"),
        &json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
    assert_eq!(body["soft_logout"], false);
    assert_eq!(
        introspect_as_homeserver(&provider, &access3).await,
        json!({ "active": false })
    );
    assert!(!provider.homeserver.store().has_device("alice", &device));
    assert_eq!(
        error(
            post(
                matrix(&provider, "/refresh"),
                &json!({ "refresh_token": refresh3 })
            )
            .await,
            401
        ),
        "M_UNKNOWN_TOKEN"
    );

    // Garbage, another kind of token, nothing.
    for token in [
        "mcr_nope",
        access3.as_str(),
        "mar_abcdefghijklmnopqrstuvwxyzABCD_26uB93",
    ] {
        assert_eq!(
            error(
                post(
                    matrix(&provider, "/refresh"),
                    &json!({ "refresh_token": token })
                )
                .await,
                401
            ),
            "M_UNKNOWN_TOKEN"
        );
    }
    assert_eq!(
        error(post(matrix(&provider, "/refresh"), &json!({})).await, 400),
        "M_MISSING_PARAM"
    );
    provider.stop().await;
}

/// `POST /logout`: the token's session ends at once, its device is deleted.
async fn logout_ends_the_session(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let answer = alice_logs_in(&provider, json!({})).await;
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let device = answer["device_id"].as_str().unwrap().to_owned();
    let other = alice_logs_in(&provider, json!({})).await;
    let other_token = other["access_token"].as_str().unwrap();

    assert_eq!(
        error(logout(&provider, "/logout", None).await, 401),
        "M_MISSING_TOKEN"
    );
    for garbage in [
        "nope",
        "mct_000000000000000000000000000000_000000",
        // An OAuth 2.0 access token is not logged out here (clients use revocation).
        "mat_000000000000000000000000000000_3ExMZI",
    ] {
        assert_eq!(
            error(logout(&provider, "/logout", Some(garbage)).await, 401),
            "M_UNKNOWN_TOKEN"
        );
    }
    assert_eq!(
        logout(&provider, "/logout", Some(&token)).await,
        (200, json!({}))
    );
    assert_eq!(
        introspect_as_homeserver(&provider, &token).await,
        json!({ "active": false })
    );
    assert!(!provider.homeserver.store().has_device("alice", &device));
    assert_eq!(whoami(&provider, &token).await.0, 401);
    assert_eq!(
        error(logout(&provider, "/logout", Some(&token)).await, 401),
        "M_UNKNOWN_TOKEN"
    );
    // The other session goes on.
    assert_eq!(whoami(&provider, other_token).await.0, 200);
    provider.stop().await;
}

/// `POST /logout/all`: every compat session of the user, not other users'.
async fn logout_all(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    add_user(&db, "bob", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let one = alice_logs_in(&provider, json!({ "device_id": "ONE" })).await;
    let two = alice_logs_in(
        &provider,
        json!({ "device_id": "TWO", "refresh_token": true }),
    )
    .await;
    let (status, bob) = login(
        &provider,
        json!({"type": "m.login.password", "user": "bob", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{bob}");

    let token = one["access_token"].as_str().unwrap();
    assert_eq!(
        logout(&provider, "/logout/all", Some(token)).await,
        (200, json!({}))
    );
    for answer in [&one, &two] {
        let token = answer["access_token"].as_str().unwrap();
        assert_eq!(
            introspect_as_homeserver(&provider, token).await,
            json!({ "active": false })
        );
    }
    assert_eq!(
        error(
            post(
                matrix(&provider, "/refresh"),
                &json!({ "refresh_token": two["refresh_token"] })
            )
            .await,
            401
        ),
        "M_UNKNOWN_TOKEN"
    );
    assert!(provider.homeserver.store().devices("alice").is_empty());
    let bob_token = bob["access_token"].as_str().unwrap();
    assert_eq!(
        introspect_as_homeserver(&provider, bob_token).await["active"],
        true
    );
    assert_eq!(
        error(logout(&provider, "/logout/all", Some(token)).await, 401),
        "M_UNKNOWN_TOKEN"
    );
    provider.stop().await;
}

/// Starts an `m.login.sso` login through the homeserver; returns the provider page it leads to.
async fn sso_redirect(provider: &TestProvider, browser: &reqwest::Client, query: &str) -> Url {
    let mut start = matrix(provider, "/login/sso/redirect");
    start.set_query(Some(query));
    let response = browser.get(start).send().await.unwrap();
    let page = location(&response, &provider.base_url);
    assert!(
        page.as_str()
            .starts_with(&provider.url("/complete-compat-sso/")),
        "{page}"
    );
    page
}

fn sso_query() -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirectUrl", CLIENT_SSO)
        .finish()
}

/// Signs in at the login page the confirmation page sent the browser to, and comes back to it.
async fn sign_in_and_return(provider: &TestProvider, browser: &reqwest::Client, page: &Url) {
    let base = &provider.base_url;
    let response = browser.get(page.clone()).send().await.unwrap();
    let login_page = location(&response, base);
    assert_eq!(login_page.path(), "/login");
    assert_eq!(param(&login_page, "next").as_deref(), Some(page.path()));
    let html = get_text(browser, login_page).await;
    let response = submit(
        browser,
        base,
        &html,
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(location(&response, base), *page);
}

/// Confirms on the page; returns where the browser was sent back to.
async fn confirm(provider: &TestProvider, browser: &reqwest::Client, page: &Url) -> Url {
    let html = get_text(browser, page.clone()).await;
    location(
        &submit(browser, &provider.base_url, &html, &[]).await,
        &provider.base_url,
    )
}

/// `m.login.sso`: redirect → login page → confirmation → back to the client with a
/// `loginToken` → `m.login.token`, once.
async fn sso_login(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = &provider.base_url;
    let browser = browser();

    // `redirectUrl` is required.
    let (status, _, body) = json_of(
        http()
            .get(matrix(&provider, "/login/sso/redirect"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error((status, body), 400), "M_MISSING_PARAM");

    let page = sso_redirect(&provider, &browser, &sso_query()).await;
    sign_in_and_return(&provider, &browser, &page).await;

    // The confirmation says where the login goes, and lets the form go there.
    let response = browser.get(page.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://app.example;"),
        "{csp}"
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("Continue to app.example"), "{html}");
    assert!(
        html.contains("Signed in as <strong>alice</strong>"),
        "{html}"
    );

    // A forged confirmation (no CSRF token) is refused.
    let forged = browser
        .post(page.clone())
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let back = submit(&browser, base, &html, &[]).await;
    let back = location(&back, base);
    let token = param(&back, "loginToken").unwrap();
    assert!(
        back.as_str()
            .starts_with(&format!("{CLIENT_SSO}&loginToken=")),
        "{back}"
    );
    // The device exists on the homeserver already.
    let devices = provider.homeserver.store().devices("alice");
    assert_eq!(devices.len(), 1, "{devices:?}");
    let device = devices[0].device_id.clone();

    // A second confirmation of the same login: refused, no second device.
    let (status, again) = text(submit(&browser, base, &html, &[]).await).await;
    assert_eq!(status, 400);
    assert!(again.contains("already completed"), "{again}");
    assert_eq!(provider.homeserver.store().devices("alice").len(), 1);

    // The client exchanges the token: the device made at confirmation.
    let token_login = json!({ "type": "m.login.token", "token": token, "refresh_token": true });
    let (status, answer) = login(&provider, token_login.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user_id"], "@alice:localhost");
    assert_eq!(answer["device_id"], device.as_str());
    assert!(answer["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("mcr_"));
    let access = answer["access_token"].as_str().unwrap();
    assert_eq!(
        whoami(&provider, access).await.1["device_id"],
        device.as_str()
    );

    // Once only; unknown tokens likewise.
    assert_eq!(
        error(login(&provider, token_login).await, 403),
        "M_FORBIDDEN"
    );
    assert_eq!(
        error(
            login(
                &provider,
                json!({ "type": "m.login.token", "token": "A".repeat(32) })
            )
            .await,
            403
        ),
        "M_FORBIDDEN"
    );
    provider.stop().await;
}

/// The login token lives two minutes from the confirmation; a client may name its device.
async fn sso_token_lifetime_and_device(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let browser = browser();

    let page = sso_redirect(&provider, &browser, &sso_query()).await;
    sign_in_and_return(&provider, &browser, &page).await;
    let back = confirm(&provider, &browser, &page).await;
    let late = param(&back, "loginToken").unwrap();
    db.clock.advance(Duration::minutes(3));
    assert_eq!(
        error(
            login(&provider, json!({ "type": "m.login.token", "token": late })).await,
            403
        ),
        "M_FORBIDDEN"
    );

    // The browser is still signed in: straight to the confirmation.
    let page = sso_redirect(&provider, &browser, &sso_query()).await;
    let back = confirm(&provider, &browser, &page).await;
    let token = param(&back, "loginToken").unwrap();
    let before: Vec<String> = provider
        .homeserver
        .store()
        .devices("alice")
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    let (status, answer) = login(
        &provider,
        json!({
            "type": "m.login.token",
            "token": token,
            "device_id": "CHOSEN",
            "initial_device_display_name": "Laptop",
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["device_id"], "CHOSEN");
    assert_eq!(
        whoami(&provider, answer["access_token"].as_str().unwrap())
            .await
            .1["device_id"],
        "CHOSEN"
    );
    let after = provider.homeserver.store().devices("alice");
    let chosen = after.iter().find(|d| d.device_id == "CHOSEN").unwrap();
    assert_eq!(chosen.display_name.as_deref(), Some("Laptop"));
    // The device made at confirmation, not wanted, is gone; the expired login's stays (its
    // token can't be used, but its session was made: it ends like any other).
    assert_eq!(after.len(), before.len(), "{before:?} → {after:?}");
    provider.stop().await;
}

/// `action=register` opens registration (when open) and comes back; stale and unknown logins
/// get a readable page.
async fn sso_register_and_expiry(db: TestDb) {
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__ACCOUNT__REGISTRATION", "true")]).await;
    let base = &provider.base_url;
    let browser = browser();

    let query = format!("{}&action=register", sso_query());
    let page = sso_redirect(&provider, &browser, &query).await;
    let response = browser.get(page.clone()).send().await.unwrap();
    let register = location(&response, base);
    assert_eq!(register.path(), "/register");
    assert_eq!(param(&register, "next").as_deref(), Some(page.path()));
    let html = get_text(&browser, register).await;
    let response = submit(
        &browser,
        base,
        &html,
        &[
            ("username", "carol"),
            ("password", PASSWORD),
            ("password_confirm", PASSWORD),
        ],
    )
    .await;
    assert_eq!(location(&response, base).path(), page.path());
    let back = confirm(&provider, &browser, &page).await;
    let token = param(&back, "loginToken").unwrap();
    let (status, answer) = login(
        &provider,
        json!({ "type": "m.login.token", "token": token }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user_id"], "@carol:localhost");

    // Ten minutes to complete a login.
    let page = sso_redirect(&provider, &browser, &sso_query()).await;
    db.clock.advance(Duration::minutes(11));
    let (status, html) = text(browser.get(page).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(html.contains("expired"), "{html}");
    let (status, _) = text(
        browser
            .get(provider.url("/complete-compat-sso/01HZZZZZZZZZZZZZZZZZZZZZZZ"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    provider.stop().await;
}

/// The homeserver answers `upsert_device` with `status` from now on.
async fn homeserver_answers(homeserver: &MockServer, status: u16) {
    homeserver.reset().await;
    Mock::given(method("POST"))
        .and(path("/_synapse/mas/upsert_device"))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({})))
        .mount(homeserver)
        .await;
}

/// The device can't be made on the homeserver: the login leaves nothing behind (503, the
/// client may try again), and an SSO confirmation can be tried again too.
async fn homeserver_down_rolls_back(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let homeserver = MockServer::start().await;
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__MATRIX__ENDPOINT", &homeserver.uri())]).await;
    let active_sessions = || async {
        let mut repo = db.storage.reader().await.unwrap();
        let user = repo
            .users()
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        repo.compat_sessions()
            .list_active_for_user(user.id)
            .await
            .unwrap()
            .len()
    };

    homeserver_answers(&homeserver, 503).await;
    let request = json!({
        "type": "m.login.password",
        "user": "alice",
        "password": PASSWORD,
        "device_id": "DOWN",
        "refresh_token": true,
    });
    let response = http()
        .post(provider.url("/_matrix/client/v3/login"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_none());
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({ "errcode": "M_UNKNOWN", "error": "the homeserver can't be reached; try again" })
    );
    assert_eq!(active_sessions().await, 0);

    homeserver_answers(&homeserver, 200).await;
    let (status, answer) = post(provider.url("/_matrix/client/v3/login"), &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["device_id"], "DOWN");
    assert_eq!(active_sessions().await, 1);

    // The SSO confirmation: an error page, nothing completed; the user tries again.
    let browser = browser();
    let start = provider.url(&format!(
        "/_matrix/client/r0/login/sso/redirect/oidc-idp?{}",
        sso_query()
    ));
    let page = location(
        &browser.get(start).send().await.unwrap(),
        &provider.base_url,
    );
    sign_in_and_return(&provider, &browser, &page).await;
    let html = get_text(&browser, page.clone()).await;
    homeserver_answers(&homeserver, 503).await;
    let (status, error_page) = text(submit(&browser, &provider.base_url, &html, &[]).await).await;
    assert_eq!(status, 503);
    assert!(error_page.contains("homeserver"), "{error_page}");
    assert_eq!(active_sessions().await, 1);
    homeserver_answers(&homeserver, 200).await;
    let back = location(
        &submit(&browser, &provider.base_url, &html, &[]).await,
        &provider.base_url,
    );
    assert!(param(&back, "loginToken").is_some(), "{back}");
    assert_eq!(active_sessions().await, 2);
    provider.stop().await;
}

backend_tests!(
    login_flows,
    password_logins,
    refresh_rotation_and_reuse,
    logout_ends_the_session,
    logout_all,
    sso_login,
    sso_token_lifetime_and_device,
    sso_register_and_expiry,
    homeserver_down_rolls_back,
);
