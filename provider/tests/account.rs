//! The account management page (MSC4191), through the real router with a cookie-keeping
//! browser, on both databases, with the fake homeserver: the signed-out round trip through the
//! login page, the profile, the devices (an OAuth 2.0 device from the authorization code flow, a
//! legacy login, an app without a device), signing a device out (the homeserver's device goes
//! and the token is inactive at once), the cross-signing reset, deactivation, and CSRF.

mod support;

use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use serde_json::json;
use support::{
    add_user, authorize, authorize_url, browser, form, get_text, http, introspect_as_homeserver,
    json_of, location, param, set, static_client, submit, text, REDIRECT, VERIFIER,
};
use url::Url;

const PASSWORD: &str = "correct horse battery staple";

/// Signs `username` in on the login page.
async fn sign_in(browser: &reqwest::Client, base: &Url, username: &str) {
    let page = get_text(browser, base.join("/login").unwrap()).await;
    let response = submit(
        browser,
        base,
        &page,
        &[("username", username), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(response.status(), 303, "{username} signs in");
}

/// `GET /account` with a query: status and page.
async fn account(browser: &reqwest::Client, provider: &TestProvider, query: &str) -> (u16, String) {
    text(
        browser
            .get(provider.url(&format!("/account{query}")))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The text of the first element matching `selector`, if any.
fn text_of(html: &str, selector: &str) -> Option<String> {
    let doc = Html::parse_document(html);
    doc.select(&Selector::parse(selector).unwrap())
        .next()
        .map(|e| e.text().collect::<String>())
}

/// The navigation links of an account page.
fn nav_links(html: &str) -> Vec<String> {
    let doc = Html::parse_document(html);
    doc.select(&Selector::parse("nav a").unwrap())
        .map(|a| a.value().attr("href").unwrap().to_owned())
        .collect()
}

/// A legacy `m.login.password` login of alice on a chosen device (through the homeserver, as
/// clients do); returns the access token.
async fn legacy_login(provider: &TestProvider, device_id: &str, name: &str) -> String {
    let (status, _, body) = json_of(
        http()
            .post(
                provider
                    .homeserver
                    .base_url()
                    .join("_matrix/client/v3/login")
                    .unwrap(),
            )
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": PASSWORD,
                "device_id": device_id,
                "initial_device_display_name": name,
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The authorization code flow of the static client with `scope`, through the pages (signing
/// alice in if needed); returns the access token.
async fn oauth_login(provider: &TestProvider, browser: &reqwest::Client, scope: &str) -> String {
    let url = authorize_url(provider, &[("scope", scope)]);
    let back = authorize(browser, &provider.base_url, &url, PASSWORD).await;
    let code = param(&back, "code").expect("a code");
    let (client_id, secret) = static_client(provider);
    let (status, _, tokens) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_owned()
}

fn static_client_name(provider: &TestProvider) -> String {
    provider.settings.clients[0].metadata["client_name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A signed-out browser goes to the login page and back to the very page it asked for, with
/// the action and the device ID (MSC4191 links carry them); forms posted signed out too.
async fn signed_out_round_trip(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    legacy_login(&provider, "ROUNDTRIP01", "Phone").await;

    let browser = browser();
    let asked = provider.url("/account?action=org.matrix.session_view&device_id=ROUNDTRIP01");
    let login = location(&browser.get(&asked).send().await.unwrap(), &base);
    assert_eq!(login.path(), "/login");
    assert_eq!(
        param(&login, "next").as_deref(),
        Some("/account?action=org.matrix.session_view&device_id=ROUNDTRIP01")
    );
    let page = get_text(&browser, login).await;
    let back = location(
        &submit(
            &browser,
            &base,
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await,
        &base,
    );
    assert_eq!(back.as_str(), asked);
    let (status, page) = text(browser.get(back).send().await.unwrap()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(text_of(&page, "#device-id").as_deref(), Some("ROUNDTRIP01"));

    // Only the known parameters come back, rebuilt (RFC 9700 §4.11).
    let signed_out = support::browser();
    let login = location(
        &signed_out
            .get(provider.url(
                "/account?next=https://evil.example&action=org.matrix.cross_signing_reset&x=1",
            ))
            .send()
            .await
            .unwrap(),
        &base,
    );
    assert_eq!(
        param(&login, "next").as_deref(),
        Some("/account?action=org.matrix.cross_signing_reset")
    );
    let login = location(
        &signed_out
            .get(provider.url("/account?action=org.matrix.nonsense"))
            .send()
            .await
            .unwrap(),
        &base,
    );
    assert_eq!(param(&login, "next").as_deref(), Some("/account"));
    // A form posted signed out (with the cookie's CSRF token): sign in, then back to its page.
    let fresh = support::browser();
    let login_page = get_text(&fresh, provider.url("/login")).await;
    let (_, mut fields) = form(&login_page);
    fields.retain(|(n, _)| n == "csrf");
    set(&mut fields, "action", "end_device");
    set(&mut fields, "device_id", "ROUNDTRIP01");
    let response = fresh
        .post(provider.url("/account"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    let login = location(&response, &base);
    assert_eq!(login.path(), "/login");
    assert_eq!(
        param(&login, "next").as_deref(),
        Some("/account?action=org.matrix.device_delete&device_id=ROUNDTRIP01")
    );
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", "ROUNDTRIP01"));
    provider.stop().await;
}

/// The profile: username, Matrix ID, email addresses, creation date; unknown actions fall back
/// to it with a notice (MSC4191).
async fn profile(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    {
        let mut repo = db.storage.begin().await.unwrap();
        let user = repo
            .users()
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        let email = repo
            .user_emails()
            .add(user.id, "alice@example.org")
            .await
            .unwrap();
        repo.user_emails().confirm(email.id).await.unwrap();
        repo.user_emails()
            .add(user.id, "new@example.org")
            .await
            .unwrap();
        repo.commit().await.unwrap();
    }
    let provider = TestProvider::start(&db).await;
    let browser = browser();
    sign_in(&browser, &provider.base_url, "alice").await;

    for query in ["", "?action=org.matrix.profile"] {
        let (status, page) = account(&browser, &provider, query).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(text_of(&page, "#username").as_deref(), Some("alice"));
        assert_eq!(
            text_of(&page, "#matrix-id").as_deref(),
            Some("@alice:localhost")
        );
        let emails = text_of(&page, "#emails").unwrap();
        assert!(emails.contains("alice@example.org"), "{emails}");
        assert!(
            emails.contains("new@example.org (not confirmed)"),
            "{emails}"
        );
        assert_eq!(emails.matches("not confirmed").count(), 1, "{emails}");
        assert_eq!(text_of(&page, "#created-at").as_deref(), Some("2022-01-16"));
        assert_eq!(text_of(&page, "#account-notice"), None);
        assert_eq!(
            nav_links(&page),
            [
                "/account",
                "/account?action=emails",
                "/account?action=password",
                "/account?action=org.matrix.devices_list",
                "/account?action=org.matrix.cross_signing_reset",
                "/account?action=org.matrix.account_deactivate",
            ]
        );
    }
    let (status, page) = account(&browser, &provider, "?action=org.example.<b>what").await;
    assert_eq!(status, 200);
    assert_eq!(
        text_of(&page, "#account-notice").as_deref(),
        Some("This page doesn't know the action “org.example.<b>what”: here is your profile.")
    );
    assert!(!page.contains("<b>what"), "escaped: {page}");
    assert_eq!(
        text_of(&page, "#matrix-id").as_deref(),
        Some("@alice:localhost")
    );
    provider.stop().await;
}

/// The devices: an OAuth 2.0 device, a legacy login and an app without a device; one device's
/// page; the confirmation (a GET changes nothing); signing out through the forms deletes the
/// device on the homeserver and ends the token at once; CSRF is required.
async fn devices(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let browser = browser();
    let client_name = static_client_name(&provider);

    let oauth_token = oauth_login(
        &provider,
        &browser,
        "openid urn:matrix:client:api:* urn:matrix:client:device:OAUTHDEV01",
    )
    .await;
    let app_token = oauth_login(&provider, &browser, "openid").await;
    let legacy_token = legacy_login(&provider, "LEGACYDEV1", "Alice's laptop").await;
    let store = provider.homeserver.store();
    assert!(store.has_device("alice", "OAUTHDEV01"));
    assert!(store.has_device("alice", "LEGACYDEV1"));

    for action in ["org.matrix.devices_list", "org.matrix.sessions_list"] {
        let (status, page) = account(&browser, &provider, &format!("?action={action}")).await;
        assert_eq!(status, 200, "{page}");
        let listed = text_of(&page, "#devices").unwrap();
        assert!(listed.contains("OAUTHDEV01"), "{listed}");
        assert!(listed.contains(&client_name), "{listed}");
        assert!(listed.contains("LEGACYDEV1"), "{listed}");
        assert!(listed.contains("Alice's laptop"), "{listed}");
        assert!(listed.contains("legacy login"), "{listed}");
        assert!(listed.contains("2022-01-16 14:40 UTC"), "{listed}");
        let apps = text_of(&page, "#apps").unwrap();
        assert!(apps.contains(&client_name), "{apps}");
        // Each device links to its page.
        let doc = Html::parse_document(&page);
        let links: Vec<&str> = doc
            .select(&Selector::parse("#devices a").unwrap())
            .map(|a| a.value().attr("href").unwrap())
            .collect();
        assert!(links.contains(&"/account?action=org.matrix.device_view&device_id=OAUTHDEV01"));
        assert!(links.contains(&"/account?action=org.matrix.device_delete&device_id=LEGACYDEV1"));
    }

    // One device's page, under both names.
    for action in ["org.matrix.device_view", "org.matrix.session_view"] {
        let (status, page) = account(
            &browser,
            &provider,
            &format!("?action={action}&device_id=OAUTHDEV01"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(text_of(&page, "#device-id").as_deref(), Some("OAUTHDEV01"));
        assert!(page.contains(&client_name));
        assert!(page.contains("Sign out this device"));
        let (action, fields) = form(&page);
        assert_eq!(action, "/account");
        assert!(fields.contains(&("device_id".into(), "OAUTHDEV01".into())));
    }
    // An unknown device: a page that says so.
    let (status, page) = account(
        &browser,
        &provider,
        "?action=org.matrix.device_view&device_id=NOSUCHDEV",
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        page.contains("Unknown device") && page.contains("NOSUCHDEV"),
        "{page}"
    );
    // No device named: the list, with a notice.
    let (status, page) = account(&browser, &provider, "?action=org.matrix.device_view").await;
    assert_eq!(status, 200);
    assert_eq!(
        text_of(&page, "#account-notice").as_deref(),
        Some("Choose a device from the list.")
    );

    // The confirmation never deletes anything by itself.
    let (status, confirm) = account(
        &browser,
        &provider,
        "?action=org.matrix.session_end&device_id=LEGACYDEV1",
    )
    .await;
    assert_eq!(status, 200, "{confirm}");
    assert!(
        confirm.contains("Sign out Alice&#x27;s laptop?"),
        "{confirm}"
    );
    assert!(store.has_device("alice", "LEGACYDEV1"));
    assert_eq!(
        introspect_as_homeserver(&provider, &legacy_token).await["active"],
        true
    );

    // Without the CSRF token, or with another one: refused, nothing changes.
    let (_, fields) = form(&confirm);
    for csrf in [None, Some("forged")] {
        let mut fields = fields.clone();
        fields.retain(|(n, _)| n != "csrf");
        if let Some(csrf) = csrf {
            set(&mut fields, "csrf", csrf);
        }
        let (status, page) = text(
            browser
                .post(provider.url("/account"))
                .form(&fields)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{page}");
        assert!(store.has_device("alice", "LEGACYDEV1"));
    }

    // Signing out the legacy device through the confirmation.
    let response = submit(&browser, &base, &confirm, &[]).await;
    let back = location(&response, &base);
    assert_eq!(
        back.as_str(),
        provider.url("/account?action=org.matrix.devices_list&signed_out=LEGACYDEV1")
    );
    assert!(!store.has_device("alice", "LEGACYDEV1"));
    assert_eq!(
        introspect_as_homeserver(&provider, &legacy_token).await,
        json!({"active": false})
    );
    let (status, page) = text(browser.get(back).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        text_of(&page, "#account-notice").as_deref(),
        Some("Signed out LEGACYDEV1.")
    );
    assert!(!text_of(&page, "#devices").unwrap().contains("LEGACYDEV1"));
    // The same form again: the device is gone.
    let (status, page) = text(submit(&browser, &base, &confirm, &[]).await).await;
    assert_eq!(status, 404, "{page}");

    // Signing out the OAuth 2.0 device from its page.
    let (_, view) = account(
        &browser,
        &provider,
        "?action=org.matrix.device_view&device_id=OAUTHDEV01",
    )
    .await;
    assert_eq!(
        introspect_as_homeserver(&provider, &oauth_token).await["active"],
        true
    );
    let response = submit(&browser, &base, &view, &[]).await;
    assert_eq!(
        location(&response, &base).as_str(),
        provider.url("/account?action=org.matrix.devices_list&signed_out=OAUTHDEV01")
    );
    assert!(!store.has_device("alice", "OAUTHDEV01"));
    assert_eq!(
        introspect_as_homeserver(&provider, &oauth_token).await,
        json!({"active": false})
    );
    // The app without a device and the browser session are untouched.
    assert_eq!(
        introspect_as_homeserver(&provider, &app_token).await["active"],
        true
    );
    let (status, page) = account(&browser, &provider, "?action=org.matrix.devices_list").await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&page, "#devices"), None);
    assert!(text_of(&page, "#apps").unwrap().contains(&client_name));
    provider.stop().await;
}

/// MSC4191 `org.matrix.cross_signing_reset`: the homeserver is told to allow the reset; a
/// homeserver that refuses gets a readable 503.
async fn cross_signing_reset(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    add_user(&db, "bob", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let store = provider.homeserver.store();
    store.insert_user("alice");

    let browser = browser();
    sign_in(&browser, &base, "alice").await;
    let (status, page) = account(
        &browser,
        &provider,
        "?action=org.matrix.cross_signing_reset",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(!store.user("alice").unwrap().cross_signing_reset_allowed);
    let (status, done) = text(submit(&browser, &base, &page, &[]).await).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        text_of(&done, "#reset-allowed").as_deref(),
        Some(
            "You can now reset your cross-signing keys from your Matrix client within the next \
             10 minutes."
        )
    );
    assert!(store.user("alice").unwrap().cross_signing_reset_allowed);

    // bob is unknown to the homeserver: it refuses.
    let bob = support::browser();
    sign_in(&bob, &base, "bob").await;
    let (_, page) = account(&bob, &provider, "?action=org.matrix.cross_signing_reset").await;
    let (status, page) = text(submit(&bob, &base, &page, &[]).await).await;
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("Temporarily unavailable"), "{page}");
    provider.stop().await;
}

/// MSC4191 `org.matrix.account_deactivate`: the current password and the confirmation are
/// required; then the user is deactivated here and on the homeserver, every token is dead and
/// the browser is signed out.
async fn deactivation(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let browser = browser();
    let oauth_token = oauth_login(
        &provider,
        &browser,
        "openid urn:matrix:client:api:* urn:matrix:client:device:OAUTHDEV02",
    )
    .await;
    let legacy_token = legacy_login(&provider, "LEGACYDEV2", "Laptop").await;
    let store = provider.homeserver.store();
    assert!(!store.user("alice").unwrap().deactivated);

    let (status, page) =
        account(&browser, &provider, "?action=org.matrix.account_deactivate").await;
    assert_eq!(status, 200, "{page}");

    // A wrong password, no password, no confirmation: refused, nothing changes.
    let (status, refused) =
        text(submit(&browser, &base, &page, &[("password", "not my password")]).await).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(
        text_of(&refused, "#deactivate-error").as_deref(),
        Some("Wrong password.")
    );
    // The form checks the password behind the login page's limits: a stolen session can't be
    // used to guess it. Four more wrong ones empty alice's bucket (5 failures by default); the
    // next attempt is refused without a check, even with the right password.
    for _ in 0..4 {
        let (status, _) =
            text(submit(&browser, &base, &page, &[("password", "not my password")]).await).await;
        assert_eq!(status, 403);
    }
    let limited = submit(&browser, &base, &page, &[("password", PASSWORD)]).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let (_, limited) = text(limited).await;
    assert!(
        text_of(&limited, "#deactivate-error")
            .unwrap_or_default()
            .starts_with("Too many wrong passwords."),
        "{limited}"
    );
    assert!(!store.user("alice").unwrap().deactivated);
    // A minute later one more attempt is allowed (the bucket refills one failure a minute).
    db.clock.advance(chrono::Duration::seconds(61));
    let (_, fields) = form(&page);
    let mut unconfirmed = fields.clone();
    unconfirmed.retain(|(n, _)| n != "confirm");
    set(&mut unconfirmed, "password", PASSWORD);
    let mut without_password = fields.clone();
    set(&mut without_password, "password", "");
    for fields in [unconfirmed, without_password] {
        let (status, page) = text(
            browser
                .post(provider.url("/account"))
                .form(&fields)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{page}");
        assert!(text_of(&page, "#deactivate-error").is_some(), "{page}");
    }
    // Without the CSRF token: refused.
    let mut forged = fields.clone();
    forged.retain(|(n, _)| n != "csrf");
    set(&mut forged, "password", PASSWORD);
    let (status, _) = text(
        browser
            .post(provider.url("/account"))
            .form(&forged)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        introspect_as_homeserver(&provider, &oauth_token).await["active"],
        true
    );
    assert!(!store.user("alice").unwrap().deactivated);

    // The right password and the confirmation.
    let (status, done) =
        text(submit(&browser, &base, &page, &[("password", PASSWORD)]).await).await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Your account has been deactivated"), "{done}");
    let mut repo = db.storage.reader().await.unwrap();
    let user = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(user.deactivated_at.is_some());
    assert!(repo
        .oauth2_sessions()
        .list_active_for_user(user.id)
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .compat_sessions()
        .list_active_for_user(user.id)
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .browser_sessions()
        .list_active_for_user(user.id)
        .await
        .unwrap()
        .is_empty());
    drop(repo);
    assert!(store.user("alice").unwrap().deactivated);
    assert!(store.devices("alice").is_empty());
    for token in [&oauth_token, &legacy_token] {
        assert_eq!(
            introspect_as_homeserver(&provider, token).await,
            json!({"active": false})
        );
    }
    // Signed out: the account page sends to the login page, which refuses the account.
    let login = location(
        &browser.get(provider.url("/account")).send().await.unwrap(),
        &base,
    );
    assert_eq!(login.path(), "/login");
    let page = get_text(&browser, login).await;
    let (status, page) = text(
        submit(
            &browser,
            &base,
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
    assert!(page.contains("deactivated"), "{page}");
    provider.stop().await;
}

backend_tests!(
    signed_out_round_trip,
    profile,
    devices,
    cross_signing_reset,
    deactivation
);
