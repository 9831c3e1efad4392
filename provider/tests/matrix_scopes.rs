//! MSC2967 scope rules over HTTP: refused at `/authorize` and `/oauth2/device` (as
//! `invalid_scope`), refused to users who may not administer the server (`access_denied`),
//! refused on `client_credentials`, and granted with the device provisioned otherwise.

mod support;

use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use serde_json::json;
use support::{
    add_user, authorize, authorize_url, browser, get_text, http, json_of, location, param,
    static_client, submit, REDIRECT, VERIFIER,
};

const PASSWORD: &str = "a password nobody guesses";

/// The `error` of the redirect an authorization request gets straight back.
async fn authorize_error(provider: &TestProvider, scope: &str) -> Option<String> {
    let response = http()
        .get(authorize_url(provider, &[("scope", scope)]))
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(response.headers().get("location")?.to_str().ok()?).ok()?;
    // Accepted: on to the sign-in page (absolute, on the public base), no error.
    if location.as_str().starts_with(&provider.url("/login?")) {
        return None;
    }
    assert!(location.as_str().starts_with(REDIRECT), "{location}");
    param(&location, "error")
}

const REFUSED: &[&str] = &[
    // Two devices in one grant.
    "urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB",
    // A device without the API scope.
    "openid urn:matrix:client:device:AAAAAAAAAA",
    // Stable and unstable forms mixed.
    "urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:device:AAAAAAAAAA",
    // Characters outside RFC 3986 unreserved.
    "urn:matrix:client:api:* urn:matrix:client:device:AB%2FCD",
    "urn:matrix:client:api:* urn:matrix:client:device:",
    // Unknown Matrix scopes (guest access was dropped from MSC2967).
    "urn:matrix:client:api:guest",
];

async fn matrix_scope_rules_at_authorize(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    for scope in REFUSED {
        let scope = scope.replace("%2F", "/");
        assert_eq!(
            authorize_error(&provider, &scope).await.as_deref(),
            Some("invalid_scope"),
            "{scope}"
        );
    }
    // Either form alone is fine: the request goes on to sign-in (a redirect to the login page).
    for scope in [
        "openid urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA",
        "openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:AAAAAAAAAA",
    ] {
        assert_eq!(authorize_error(&provider, scope).await, None, "{scope}");
    }
}

async fn matrix_scope_rules_at_device_authorization(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let (client_id, secret) = static_client(&provider);
    for scope in REFUSED {
        let scope = scope.replace("%2F", "/");
        let (status, _, body) = json_of(
            http()
                .post(provider.url("/oauth2/device"))
                .basic_auth(&client_id, Some(&secret))
                .form(&[("scope", scope.as_str())])
                .send()
                .await
                .unwrap(),
        )
        .await;
        // The static client may not use the device grant, or the scope is refused: either way
        // an RFC 6749 §5.2 error, never a grant.
        assert_eq!(status, 400, "{scope}: {body}");
        assert!(
            body["error"] == "invalid_scope" || body["error"] == "unauthorized_client",
            "{scope}: {body}"
        );
    }
}

async fn matrix_scopes_need_a_user(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let (client_id, secret) = static_client(&provider);
    for scope in [
        "urn:matrix:client:api:*",
        "urn:matrix:org.matrix.msc2967.client:api:*",
        "urn:synapse:admin:*",
    ] {
        let (status, _, body) = json_of(
            http()
                .post(provider.url("/oauth2/token"))
                .basic_auth(&client_id, Some(&secret))
                .form(&[("grant_type", "client_credentials"), ("scope", scope)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{scope}: {body}");
        assert!(
            body["error"] == "invalid_scope" || body["error"] == "unauthorized_client",
            "{scope}: {body}"
        );
    }
}

/// `urn:synapse:admin:*` only for users allowed to be admins.
async fn admin_scope_only_for_admins(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let scope = "openid urn:matrix:client:api:* urn:synapse:admin:*";

    // Alice may not: once she has signed in, the request ends with access_denied, without
    // tokens and without a consent page.
    let browser = browser();
    let login = location(
        &browser
            .get(authorize_url(&provider, &[("scope", scope)]))
            .send()
            .await
            .unwrap(),
        &base,
    );
    let page = get_text(&browser, login).await;
    let consent = location(
        &submit(
            &browser,
            &base,
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await,
        &base,
    );
    let back = location(&browser.get(consent).send().await.unwrap(), &base);
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert!(param(&back, "code").is_none());

    // Once allowed, she gets it, and the homeserver is told (introspection, both forms).
    {
        let mut repo = db.storage.begin().await.unwrap();
        let alice = repo
            .users()
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        repo.users()
            .set_can_request_admin(alice.id, true)
            .await
            .unwrap();
        repo.commit().await.unwrap();
    }
    let back = authorize(
        &support::browser(),
        &base,
        &authorize_url(&provider, &[("scope", scope)]),
        PASSWORD,
    )
    .await;
    let code = param(&back, "code").expect("a code for an admin");
    let (client_id, secret) = static_client(&provider);
    let (status, _, tokens) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .basic_auth(&client_id, Some(&secret))
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
    let (_, _, answer) = json_of(
        http()
            .post(provider.url("/oauth2/introspect"))
            .bearer_auth(&provider.settings.matrix.secret)
            .form(&[("token", tokens["access_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let granted: Vec<&str> = answer["scope"].as_str().unwrap().split(' ').collect();
    for token in [
        "urn:synapse:admin:*",
        "urn:matrix:client:api:*",
        "urn:matrix:org.matrix.msc2967.client:api:*",
    ] {
        assert!(granted.contains(&token), "{token} in {answer}");
    }
    assert_eq!(answer["username"], json!("alice"));
}

backend_tests!(
    matrix_scope_rules_at_authorize,
    matrix_scope_rules_at_device_authorization,
    matrix_scopes_need_a_user,
    admin_scope_only_for_admins
);
