//! The device authorization grant end to end over HTTP (RFC 8628, MSC4341), on both databases: a
//! device-only public client registers itself (MSC2966), starts a request at
//! `/oauth2/device`, polls the token endpoint while a user signs in and answers on the `/link`
//! pages in a browser (a cookie jar), and gets its tokens once.

mod support;

use std::str::FromStr as _;

use chrono::Duration;
use openidconnect::{
    core::{CoreIdToken, CoreIdTokenVerifier, CoreProviderMetadata},
    ClientId, IssuerUrl, Nonce,
};
use provider::{
    backend_tests,
    clock::Clock as _,
    endpoints,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user, browser, form, http, json_of, location, oidc_http, static_client, submit, text,
};
use url::Url;

const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const PASSWORD: &str = "correct horse battery";
const SCOPE: &str = "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ";

/// Registers a device-only public client (MSC2966) and returns its `client_id`.
async fn register_device_client(provider: &TestProvider, name: &str) -> String {
    let response = http()
        .post(provider.url(endpoints::REGISTRATION))
        .json(&json!({
            "client_name": name,
            "client_uri": "https://tv.example.com/",
            "application_type": "native",
            "grant_types": [DEVICE_CODE, "refresh_token"],
            "response_types": [],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 201, "{body}");
    body["client_id"].as_str().unwrap().to_owned()
}

/// `POST /oauth2/device` with form fields.
async fn device_request(provider: &TestProvider, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http()
        .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
        .form(form)
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json_of(response).await;
    assert_eq!(headers["cache-control"], "no-store", "{body}");
    (status, body)
}

/// Starts a device request for a public client; returns the answer (RFC 8628 §3.2).
async fn start(provider: &TestProvider, client_id: &str) -> Value {
    let (status, body) =
        device_request(provider, &[("client_id", client_id), ("scope", SCOPE)]).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// One poll of the token endpoint (RFC 8628 §3.4).
async fn poll(provider: &TestProvider, client_id: &str, device_code: &str) -> (u16, Value) {
    let response = http()
        .post(provider.url(endpoints::TOKEN))
        .form(&[
            ("grant_type", DEVICE_CODE),
            ("device_code", device_code),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json_of(response).await;
    assert_eq!(headers["cache-control"], "no-store", "{body}");
    (status, body)
}

/// Asserts a 400 with this error.
fn refused(answer: (u16, Value), error: &str) {
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (400, Some(error)),
        "{}",
        answer.1
    );
}

/// Opens `verification_uri_complete` signed out: the login page, then back to the link page.
/// Returns the link page's HTML.
async fn sign_in_through_link(browser: &reqwest::Client, base: &Url, link: &str) -> String {
    let to_login = location(&browser.get(link).send().await.unwrap(), base);
    assert_eq!(to_login.path(), "/login");
    let (status, page) = text(browser.get(to_login).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let response = submit(
        browser,
        base,
        &page,
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    let back = location(&response, base);
    // Back on the link page with the code (RFC 8628 §3.3.1).
    assert_eq!(back.as_str(), link, "came back to the link page");
    let (status, page) = text(browser.get(back).send().await.unwrap()).await;
    assert_eq!(status, 200, "{page}");
    page
}

/// Submits the code entry form with `code`; returns the answer.
async fn enter_code(
    browser: &reqwest::Client,
    base: &Url,
    page: &str,
    code: Option<&str>,
) -> (u16, String) {
    let fields = match code {
        Some(code) => vec![("code", code)],
        None => Vec::new(),
    };
    text(submit(browser, base, page, &fields).await).await
}

/// Answers the approval page with `allow` or `deny`; returns the result page.
async fn answer(browser: &reqwest::Client, base: &Url, page: &str, action: &str) -> (u16, String) {
    text(submit(browser, base, page, &[("action", action)]).await).await
}

/// Signs in through the link page and answers a request; returns the result page.
async fn approve(provider: &TestProvider, started: &Value, action: &str) -> (u16, String) {
    let base = provider.base_url.clone();
    let browser = browser();
    let link = started["verification_uri_complete"].as_str().unwrap();
    let page = sign_in_through_link(&browser, &base, link).await;
    let (status, approval) = enter_code(&browser, &base, &page, None).await;
    assert_eq!(status, 200, "{approval}");
    answer(&browser, &base, &approval, action).await
}

async fn device_flow_end_to_end(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let client_id = register_device_client(&provider, "Living-room TV").await;

    // RFC 8628 §3.2: the answer.
    let started = start(&provider, &client_id).await;
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    let user_code = started["user_code"].as_str().unwrap().to_owned();
    assert_eq!(device_code.len(), 32);
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert!(
        user_code.chars().enumerate().all(|(i, c)| if i == 4 {
            c == '-'
        } else {
            "BCDFGHJKLMNPQRSTVWXZ".contains(c)
        }),
        "{user_code}"
    );
    assert_eq!(
        started["verification_uri"].as_str(),
        Some(format!("{base}link").as_str())
    );
    assert_eq!(
        started["verification_uri_complete"].as_str(),
        Some(format!("{base}link?code={user_code}").as_str())
    );
    assert_eq!(started["expires_in"], 600);
    assert_eq!(started["interval"], 5);

    // RFC 8628 §3.5: pending, then too fast, then pending again after the interval.
    refused(
        poll(&provider, &client_id, &device_code).await,
        "authorization_pending",
    );
    refused(poll(&provider, &client_id, &device_code).await, "slow_down");
    db.clock.advance(Duration::seconds(6));
    refused(
        poll(&provider, &client_id, &device_code).await,
        "authorization_pending",
    );

    // The user: signs in from the link, types the code in lower case without the dash (§6.1)...
    let browser = browser();
    let link = started["verification_uri_complete"].as_str().unwrap();
    let page = sign_in_through_link(&browser, &base, link).await;
    let (_, fields) = form(&page);
    assert!(
        fields.contains(&("code".into(), user_code.clone())),
        "pre-filled (§3.3.1): {fields:?}"
    );
    let typed = user_code.replace('-', " ").to_lowercase();
    let (status, approval) = enter_code(&browser, &base, &page, Some(&typed)).await;
    assert_eq!(status, 200, "{approval}");
    // ...sees who asks, the code to compare with the device's (§5.4) and the scopes in words...
    assert!(approval.contains("Living-room TV"), "{approval}");
    assert!(approval.contains(&user_code), "{approval}");
    assert!(
        approval.contains("Access your Matrix account"),
        "{approval}"
    );
    assert!(approval.contains("Device ABCDEFGHIJ"), "{approval}");
    // ...and allows it.
    let (status, done) = answer(&browser, &base, &approval, "allow").await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Device connected"), "{done}");

    // The next poll after the interval gets the tokens.
    db.clock.advance(Duration::seconds(6));
    let (status, tokens) = poll(&provider, &client_id, &device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    assert!(tokens["access_token"].as_str().unwrap().starts_with("mat_"));
    // MSC4341: a refresh token, always.
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert!(refresh.starts_with("mar_"));
    let mut granted: Vec<&str> = tokens["scope"].as_str().unwrap().split(' ').collect();
    granted.sort_unstable();
    let mut asked: Vec<&str> = SCOPE.split(' ').collect();
    asked.sort_unstable();
    assert_eq!(granted, asked);
    // The device exists on the homeserver before the client gets its tokens (MSC2967).
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", "ABCDEFGHIJ"));

    // The ID token (openid in scope): signed with a published key, for this client, about a
    // sign-in, with at_hash.
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(base.to_string()).unwrap(),
        &oidc_http(),
    )
    .await
    .unwrap();
    let now = db.clock.now();
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(client_id.clone()),
        IssuerUrl::new(base.to_string()).unwrap(),
        metadata.jwks().clone(),
    )
    .set_time_fn(move || now);
    let id_token = CoreIdToken::from_str(tokens["id_token"].as_str().unwrap()).unwrap();
    let claims = id_token
        .claims(&verifier, |nonce: Option<&Nonce>| match nonce {
            None => Ok(()),
            Some(_) => Err("no nonce in the device flow".to_owned()),
        })
        .unwrap();
    assert!(claims.auth_time().is_some());
    assert!(claims.access_token_hash().is_some());

    // RFC 8628 §3.5: the device code is single use.
    refused(
        poll(&provider, &client_id, &device_code).await,
        "invalid_grant",
    );
    db.clock.advance(Duration::seconds(6));
    refused(
        poll(&provider, &client_id, &device_code).await,
        "invalid_grant",
    );

    // The refresh token works like any other (RFC 6749 §6).
    let response = http()
        .post(provider.url(endpoints::TOKEN))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let (status, _, refreshed) = json_of(response).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["refresh_token"].as_str(), Some(refresh.as_str()));

    // The code can't be entered again.
    let (status, page) = text(browser.get(link).send().await.unwrap()).await;
    assert_eq!(status, 200, "signed in already: {page}");
    let (status, closed) = enter_code(&browser, &base, &page, None).await;
    assert_eq!(status, 400, "{closed}");
    assert!(closed.contains("already used"), "{closed}");
    provider.stop().await;
}

async fn a_denied_request_gets_access_denied(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let client_id = register_device_client(&provider, "Kiosk").await;
    let started = start(&provider, &client_id).await;
    let device_code = started["device_code"].as_str().unwrap();
    refused(
        poll(&provider, &client_id, device_code).await,
        "authorization_pending",
    );
    let (status, done) = approve(&provider, &started, "deny").await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Request denied"), "{done}");
    // RFC 8628 §3.5: access_denied, even when polled too fast, and from then on.
    refused(
        poll(&provider, &client_id, device_code).await,
        "access_denied",
    );
    db.clock.advance(Duration::seconds(30));
    refused(
        poll(&provider, &client_id, device_code).await,
        "access_denied",
    );
    provider.stop().await;
}

async fn an_expired_request_gets_expired_token(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let client_id = register_device_client(&provider, "Kiosk").await;
    let started = start(&provider, &client_id).await;
    let device_code = started["device_code"].as_str().unwrap();

    // The user reaches the approval page in time...
    let browser = browser();
    let link = started["verification_uri_complete"].as_str().unwrap();
    let page = sign_in_through_link(&browser, &base, link).await;
    let (status, approval) = enter_code(&browser, &base, &page, None).await;
    assert_eq!(status, 200, "{approval}");
    // ...but answers after the 10 minutes (RFC 8628 §3.2 expires_in).
    db.clock.advance(Duration::seconds(601));
    let (status, late) = answer(&browser, &base, &approval, "allow").await;
    assert_eq!(status, 400, "{late}");
    assert!(late.contains("This code has expired"), "{late}");
    let (status, late) = enter_code(&browser, &base, &page, None).await;
    assert_eq!(status, 400, "{late}");
    assert!(late.contains("This code has expired"), "{late}");
    // RFC 8628 §3.5: expired_token.
    refused(
        poll(&provider, &client_id, device_code).await,
        "expired_token",
    );
    provider.stop().await;
}

async fn another_client_gets_invalid_grant(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let owner = register_device_client(&provider, "Kiosk").await;
    let other = register_device_client(&provider, "Other").await;
    let started = start(&provider, &owner).await;
    let device_code = started["device_code"].as_str().unwrap();
    refused(poll(&provider, &other, device_code).await, "invalid_grant");
    // The other client's poll counts for nothing: the owner's first poll is not too fast.
    refused(
        poll(&provider, &owner, device_code).await,
        "authorization_pending",
    );
    let (status, _) = approve(&provider, &started, "allow").await;
    assert_eq!(status, 200);
    db.clock.advance(Duration::seconds(6));
    refused(poll(&provider, &other, device_code).await, "invalid_grant");
    // An unknown device code, a missing one.
    refused(
        poll(&provider, &owner, "not-a-device-code").await,
        "invalid_grant",
    );
    let response = http()
        .post(provider.url(endpoints::TOKEN))
        .form(&[("grant_type", DEVICE_CODE), ("client_id", owner.as_str())])
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    refused((status, body), "invalid_request");
    // The owner still gets its tokens.
    let (status, tokens) = poll(&provider, &owner, device_code).await;
    assert_eq!(status, 200, "{tokens}");
    provider.stop().await;
}

async fn the_link_pages_explain_what_is_wrong(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let browser = browser();
    let link = format!("{base}link?code=bcdf-ghjk");
    // Signed out: to the login page, carrying the (normalised) code back.
    let to_login = location(&browser.get(&link).send().await.unwrap(), &base);
    assert_eq!(
        to_login.query(),
        Some("next=%2Flink%3Fcode%3DBCDF-GHJK"),
        "{to_login}"
    );
    let page = sign_in_through_link(&browser, &base, &format!("{base}link?code=BCDF-GHJK")).await;

    // An unknown code: the form again, with a clear message.
    let (status, unknown) = enter_code(&browser, &base, &page, None).await;
    assert_eq!(status, 404, "{unknown}");
    assert!(unknown.contains("No request has this code"), "{unknown}");
    let (_, fields) = form(&unknown);
    assert!(fields.iter().any(|(n, _)| n == "code"), "the form again");
    let (status, empty) = enter_code(&browser, &base, &page, Some(" - ")).await;
    assert_eq!(status, 400, "{empty}");
    assert!(empty.contains("Enter the code"), "{empty}");

    // Without the CSRF token: refused.
    let response = browser
        .post(provider.url(endpoints::LINK))
        .form(&[("code", "BCDF-GHJK")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = browser
        .post(provider.url(endpoints::LINK_APPROVE))
        .form(&[("grant", "01J00000000000000000000000"), ("action", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A made-up grant: a clear page.
    let (_, fields) = form(&page);
    let csrf = fields.iter().find(|(n, _)| n == "csrf").unwrap().1.clone();
    let (status, page) = text(
        browser
            .post(provider.url(endpoints::LINK_APPROVE))
            .form(&[
                ("csrf", csrf.as_str()),
                ("grant", "01J00000000000000000000000"),
                ("action", "allow"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("Unknown request"), "{page}");

    // The login page's `next` only ever leads back to the link page.
    let fresh = support::browser();
    let (_, login) = text(
        fresh
            .get(format!(
                "{base}login?next=https%3A%2F%2Fevil.example%2Flink"
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!login.contains("evil.example"), "{login}");
    let response = submit(
        &fresh,
        &base,
        &login,
        &[
            ("username", "alice"),
            ("password", PASSWORD),
            ("next", "//evil.example/link"),
        ],
    )
    .await;
    assert_eq!(location(&response, &base).as_str(), format!("{base}login"));
    provider.stop().await;
}

async fn the_device_endpoint_refuses_bad_requests(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let device = register_device_client(&provider, "Kiosk").await;
    let (id, secret) = static_client(&provider);

    // RFC 6749 §5.2 via RFC 8628 §3.2: a client not registered for the grant.
    let response = http()
        .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
        .basic_auth(&id, Some(&secret))
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    refused((status, body), "unauthorized_client");
    // ...and it can't use the grant at the token endpoint either.
    let response = http()
        .post(provider.url(endpoints::TOKEN))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", DEVICE_CODE), ("device_code", "x")])
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    refused((status, body), "unauthorized_client");

    // Client authentication as at the token endpoint.
    let (status, body) =
        device_request(&provider, &[("client_id", "nobody"), ("scope", "openid")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = device_request(&provider, &[("scope", "openid")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // The shared checks: scope, parameters once.
    refused(
        device_request(&provider, &[("client_id", &device)]).await,
        "invalid_scope",
    );
    refused(
        device_request(&provider, &[("client_id", &device), ("scope", "a\"b")]).await,
        "invalid_scope",
    );
    refused(
        device_request(
            &provider,
            &[
                ("client_id", &device),
                ("scope", "openid"),
                ("scope", "email"),
            ],
        )
        .await,
        "invalid_request",
    );
    // A form body only.
    let response = http()
        .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
        .json(&json!({"client_id": device, "scope": "openid"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    refused((status, body), "invalid_request");
    // Discovery advertises the endpoint and the grant (RFC 8628 §4, MSC4341).
    let (_, _, doc) = json_of(
        http()
            .get(provider.url(endpoints::OPENID_CONFIGURATION))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        doc["device_authorization_endpoint"].as_str(),
        Some(provider.url(endpoints::DEVICE_AUTHORIZATION).as_str())
    );
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!(DEVICE_CODE)));
    provider.stop().await;
}

/// The same grant with `openidconnect` as the device's client: its device authorization request,
/// a person approving on the pages, and its polling loop (whose sleeps move the mock clock).
async fn driven_by_openidconnect(db: TestDb) {
    use openidconnect::{OAuth2TokenResponse as _, TokenResponse as _};

    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let client_id = register_device_client(&provider, "Living-room TV").await;
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(provider.base_url.to_string()).unwrap(),
        &oidc_http(),
    )
    .await
    .unwrap();
    let client = openidconnect::core::CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.clone()),
        None,
    )
    .set_device_authorization_url(
        openidconnect::DeviceAuthorizationUrl::new(provider.url(endpoints::DEVICE_AUTHORIZATION))
            .unwrap(),
    )
    .set_auth_type(openidconnect::AuthType::RequestBody);
    let details: openidconnect::core::CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(
            SCOPE
                .split(' ')
                .map(|s| openidconnect::Scope::new(s.to_owned())),
        )
        .request_async(&oidc_http())
        .await
        .unwrap();
    let started = json!({
        "verification_uri_complete": details.verification_uri_complete().unwrap().secret(),
    });
    let (status, page) = approve(&provider, &started, "allow").await;
    assert_eq!(status, 200, "{page}");

    let clock = db.clock.clone();
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(
            &oidc_http(),
            move |wait: std::time::Duration| {
                clock.advance(Duration::from_std(wait).unwrap_or_default());
                std::future::ready(())
            },
            None,
        )
        .await
        .unwrap();
    assert!(tokens.access_token().secret().starts_with("mat_"));
    assert!(tokens.refresh_token().is_some(), "MSC4341: a refresh token");
    let now = db.clock.now();
    let verifier = client.id_token_verifier().set_time_fn(move || now);
    let id_token = tokens.id_token().expect("openid was asked for");
    // No nonce in the device flow: accept its absence.
    let claims = id_token
        .claims(&verifier, |nonce: Option<&Nonce>| {
            nonce
                .is_none()
                .then_some(())
                .ok_or_else(|| "unexpected nonce".to_owned())
        })
        .unwrap();
    assert_eq!(claims.audiences()[0].as_str(), client_id);
    provider.stop().await;
}

backend_tests!(
    driven_by_openidconnect,
    device_flow_end_to_end,
    a_denied_request_gets_access_denied,
    an_expired_request_gets_expired_token,
    another_client_gets_invalid_grant,
    the_link_pages_explain_what_is_wrong,
    the_device_endpoint_refuses_bad_requests,
);
