//! Issue 14, findings 4, 8 and 9, over HTTP on both databases:
//! - RP-Initiated Logout 1.0 §3: no post-logout redirect to a target nothing confirms (no valid
//!   `id_token_hint`, a self-registered client) without the user's choice; RFC 9700 §4.11.2:
//!   authorization errors of a self-registered client are shown before going back to it;
//! - RFC 8252 §8.6: no silent code for a public native client (loopback or private-use scheme
//!   redirect), even with remembered consent (`interaction_required` under `prompt=none`);
//! - RFC 7662 §4: a client learns about its own tokens only (the homeserver and admin clients
//!   about all).

mod support;

use openidconnect::PkceCodeChallenge;
use provider::{
    backend_tests,
    crypto::sha256,
    domain::token::TokenKind,
    endpoints,
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use serde_json::{json, Value};
use support::{
    add_user, browser, client_credentials, get_text, http, introspect_as_homeserver, json_of,
    location, start_with_admin_robot, submit, OTHER_SECRET, REDIRECT, ROBOT_SECRET, WEB_APP_SECRET,
};
use url::Url;

const PASSWORD: &str = "correct horse battery";
const SIGNED_OUT: &str = "https://client.example.com/signed-out";
const BYE: &str = "https://client.example.com/bye";
const LOOPBACK: &str = "http://127.0.0.1/callback";

async fn start(db: &TestDb) -> TestProvider {
    add_user(db, "alice", PASSWORD).await;
    add_user(db, "bob", PASSWORD).await;
    start_with_admin_robot(db).await
}

/// Registers a client (RFC 7591); its `client_id` and `client_secret` (if any).
async fn register(provider: &TestProvider, body: Value) -> (String, Option<String>) {
    let (status, _, answer) = json_of(
        http()
            .post(provider.url(endpoints::REGISTRATION))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    (
        answer["client_id"].as_str().unwrap().to_owned(),
        answer["client_secret"].as_str().map(str::to_owned),
    )
}

/// A web client (https redirect, [`REDIRECT`]) that registered itself.
fn web_client(auth: &str) -> Value {
    json!({
        "client_name": "Self-registered web app",
        "client_uri": "https://client.example.com/",
        "application_type": "web",
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": [BYE],
        "token_endpoint_auth_method": auth,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
}

/// A public native client with a loopback redirect (RFC 8252 §7.3).
fn native_client() -> Value {
    json!({
        "client_name": "Native app",
        "client_uri": "https://client.example.com/",
        "application_type": "native",
        "redirect_uris": [LOOPBACK],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
}

/// An authorization request; returns it and its PKCE verifier.
fn authorize_url(
    provider: &TestProvider,
    client_id: &str,
    redirect: &str,
    extra: &[(&str, &str)],
) -> (String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut url = Url::parse(&provider.url(endpoints::AUTHORIZE)).unwrap();
    url.query_pairs_mut()
        .extend_pairs([
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "openid urn:matrix:client:api:*"),
            ("state", "xyz"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .extend_pairs(extra.iter().copied());
    (url.to_string(), verifier.secret().clone())
}

/// Follows a request through the pages (signing in as `user`, allowing) until the browser is
/// sent to a URL starting with `stop`; returns it and whether the consent page was shown.
async fn walk(
    browser: &reqwest::Client,
    provider: &TestProvider,
    url: &str,
    stop: &str,
    user: &str,
) -> (Url, bool) {
    let base = &provider.base_url;
    let mut next = location(&browser.get(url).send().await.unwrap(), base);
    let mut consent_shown = false;
    loop {
        if next.as_str().starts_with(stop) {
            return (next, consent_shown);
        }
        let page = get_text(browser, next.clone()).await;
        let fields: &[(&str, &str)] = if next.path() == endpoints::LOGIN {
            &[("username", user), ("password", PASSWORD)]
        } else {
            consent_shown = true;
            &[("action", "allow")]
        };
        next = location(&submit(browser, base, &page, fields).await, base);
    }
}

async fn sign_in(browser: &reqwest::Client, provider: &TestProvider, user: &str) {
    let page = get_text(browser, provider.url(endpoints::LOGIN)).await;
    let response = submit(
        browser,
        &provider.base_url,
        &page,
        &[("username", user), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(response.status(), 303, "signed in as {user}");
}

/// The `href` of the element `css` selects on a page.
fn link(page: &str, css: &str) -> Option<Url> {
    let doc = Html::parse_document(page);
    let href = doc
        .select(&Selector::parse(css).unwrap())
        .next()?
        .value()
        .attr("href")?
        .to_owned();
    Some(Url::parse(&href).unwrap())
}

/// The text of a page, as the user reads it (entities decoded).
fn text_of(page: &str) -> String {
    Html::parse_document(page).root_element().text().collect()
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn fragment(url: &Url, name: &str) -> Option<String> {
    url::form_urlencoded::parse(url.fragment().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An error shown on a page (RFC 9700 §4.11.2) rather than redirected: 400, no `Location`, a
/// link back to the client carrying it; returns the link.
async fn shown_error(response: reqwest::Response, redirect: &str) -> Url {
    assert_eq!(response.status(), 400);
    assert!(
        response.headers().get("location").is_none(),
        "not redirected"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("Self-registered web app") || page.contains("Native app"));
    let back = link(&page, "a#return").unwrap_or_else(|| panic!("a link back in {page}"));
    assert!(back.as_str().starts_with(redirect), "{back}");
    back
}

/// Tokens of `client` for `user`, through the pages and the token endpoint.
async fn tokens(
    provider: &TestProvider,
    browser: &reqwest::Client,
    client: (&str, Option<&str>),
    user: &str,
) -> Value {
    let (url, verifier) = authorize_url(provider, client.0, REDIRECT, &[]);
    let (back, _) = walk(browser, provider, &url, REDIRECT, user).await;
    let code = query(&back, "code").expect("a code");
    let (client_id, secret) = client;
    let mut request = http().post(provider.url(endpoints::TOKEN));
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    match secret {
        Some(secret) => request = request.basic_auth(client_id, Some(secret)),
        None => form.push(("client_id", client_id)),
    }
    let (status, _, body) = json_of(request.form(&form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

// ---- finding 4: the logout endpoint and error redirects as open redirectors ----

fn logout_url(provider: &TestProvider, params: &[(&str, &str)]) -> Url {
    let mut url = Url::parse(&provider.url(endpoints::END_SESSION)).unwrap();
    url.query_pairs_mut().extend_pairs(params.iter().copied());
    url
}

async fn logout_redirects_only_to_confirmed_targets(db: TestDb) {
    let provider = start(&db).await;
    let base = provider.base_url.clone();
    let (dynamic, _) = register(&provider, web_client("none")).await;

    // Nobody signed in, a self-registered client, no hint: the finding. A page names the target;
    // only its link goes there.
    let response = http()
        .get(logout_url(
            &provider,
            &[
                ("client_id", &dynamic),
                ("post_logout_redirect_uri", BYE),
                ("state", "s1"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("location").is_none());
    let page = response.text().await.unwrap();
    let text = text_of(&page);
    assert!(
        text.contains(BYE) && text.contains("Self-registered web app"),
        "{text}"
    );
    let onward = link(&page, "a#continue").expect("a link to the target");
    assert_eq!(onward.as_str(), format!("{BYE}?state=s1"));

    // A static client's addresses are the operator's: redirected as before.
    let response = http()
        .get(logout_url(
            &provider,
            &[
                ("client_id", "web-app"),
                ("post_logout_redirect_uri", SIGNED_OUT),
                ("state", "s2"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&response, &base).as_str(),
        format!("{SIGNED_OUT}?state=s2")
    );

    // A valid hint for the self-registered client confirms its target.
    let alice = browser();
    let issued = tokens(&provider, &alice, (&dynamic, None), "alice").await;
    let hint = issued["id_token"].as_str().unwrap().to_owned();
    let hinted = logout_url(
        &provider,
        &[
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", BYE),
            ("state", "s3"),
        ],
    );
    let response = http().get(hinted.clone()).send().await.unwrap();
    assert_eq!(
        location(&response, &base).as_str(),
        format!("{BYE}?state=s3")
    );

    // Signed in as the hint's user, in its browser session: the usual confirmation, which
    // doesn't warn about the target.
    let page = get_text(&alice, hinted.clone()).await;
    assert!(page.contains("Sign out?"), "{page}");
    assert!(!page.contains("has not verified"), "{page}");

    // Signed in as someone else (bob), the same hint is suspect: the page names the target,
    // and the user's button is what confirms it.
    let bob = browser();
    sign_in(&bob, &provider, "bob").await;
    let page = get_text(&bob, hinted.clone()).await;
    let text = text_of(&page);
    assert!(
        text.contains("has not verified") && text.contains(BYE),
        "{text}"
    );
    let response = submit(&bob, &base, &page, &[]).await;
    assert_eq!(
        location(&response, &base).as_str(),
        format!("{BYE}?state=s3")
    );

    // Signed in, no hint, a self-registered client: named, then confirmed by the button.
    let carol = browser();
    sign_in(&carol, &provider, "alice").await;
    let unhinted = logout_url(
        &provider,
        &[
            ("client_id", &dynamic),
            ("post_logout_redirect_uri", BYE),
            ("state", "s4"),
        ],
    );
    let page = get_text(&carol, unhinted).await;
    let text = text_of(&page);
    assert!(
        text.contains("has not verified") && text.contains(BYE),
        "{text}"
    );
    let response = submit(&carol, &base, &page, &[]).await;
    assert_eq!(
        location(&response, &base).as_str(),
        format!("{BYE}?state=s4")
    );

    // The signed-in confirmation of the hint's own session still redirects after the button.
    let page = get_text(&alice, hinted).await;
    let response = submit(&alice, &base, &page, &[]).await;
    assert_eq!(
        location(&response, &base).as_str(),
        format!("{BYE}?state=s3")
    );
    provider.stop().await;
}

async fn authorization_errors_of_self_registered_clients_are_shown(db: TestDb) {
    let provider = start(&db).await;
    let base = provider.base_url.clone();
    let issuer = base.to_string();
    let (dynamic, _) = register(&provider, web_client("none")).await;

    // An erroneous request (RFC 9700 §4.11.2, attack 1): a page with a link back.
    let (url, _) = authorize_url(&provider, &dynamic, REDIRECT, &[("prompt", "sometimes")]);
    let back = shown_error(http().get(url).send().await.unwrap(), REDIRECT).await;
    assert_eq!(query(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(query(&back, "state").as_deref(), Some("xyz"));
    assert_eq!(query(&back, "iss").as_deref(), Some(issuer.as_str()));
    assert!(query(&back, "error_description").is_some());

    // A silent request (attack 3), in the fragment response mode.
    let (url, _) = authorize_url(
        &provider,
        &dynamic,
        REDIRECT,
        &[("prompt", "none"), ("response_mode", "fragment")],
    );
    let back = shown_error(http().get(url).send().await.unwrap(), REDIRECT).await;
    assert_eq!(fragment(&back, "error").as_deref(), Some("login_required"));
    assert_eq!(fragment(&back, "iss").as_deref(), Some(issuer.as_str()));

    // form_post: a button posting to the client, no script submitting it.
    let (url, _) = authorize_url(
        &provider,
        &dynamic,
        REDIRECT,
        &[("prompt", "none"), ("response_mode", "form_post")],
    );
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'none'"), "{csp}");
    assert!(csp.contains("https://client.example.com"), "{csp}");
    let page = response.text().await.unwrap();
    let (action, fields) = support::form(&page);
    assert_eq!(action, REDIRECT);
    assert!(fields.contains(&("error".to_owned(), "login_required".to_owned())));
    assert!(fields.contains(&("state".to_owned(), "xyz".to_owned())));

    // A request the user denies (attack 2).
    let alice = browser();
    sign_in(&alice, &provider, "alice").await;
    let (url, _) = authorize_url(&provider, &dynamic, REDIRECT, &[]);
    let consent = location(&alice.get(url).send().await.unwrap(), &base);
    assert!(consent.path().starts_with("/consent/"), "{consent}");
    let page = get_text(&alice, consent).await;
    let response = submit(&alice, &base, &page, &[("action", "deny")]).await;
    let back = shown_error(response, REDIRECT).await;
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));

    // A static client's redirect URI is the operator's: errors go straight back.
    let (url, _) = authorize_url(&provider, "web-app", REDIRECT, &[("prompt", "sometimes")]);
    let back = location(&http().get(url).send().await.unwrap(), &base);
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    assert_eq!(query(&back, "error").as_deref(), Some("invalid_request"));
    provider.stop().await;
}

// ---- finding 8: silent codes for public native clients ----

async fn remembered_consent_needs_interaction_for_public_native_clients(db: TestDb) {
    let provider = start(&db).await;
    let base = provider.base_url.clone();
    let alice = browser();
    let (native, _) = register(&provider, native_client()).await;
    let first = "http://127.0.0.1:49152/callback";

    // First time: sign-in and consent.
    let (url, _) = authorize_url(&provider, &native, first, &[]);
    let (back, consent_shown) = walk(&alice, &provider, &url, first, "alice").await;
    assert!(consent_shown);
    assert!(query(&back, "code").is_some(), "{back}");

    // The same scopes again, silently, to another loopback port (any app on the device may
    // listen there): interaction_required, no code (RFC 8252 §8.6, OIDC Core §3.1.2.6).
    let other = "http://127.0.0.1:50000/callback";
    let (url, _) = authorize_url(&provider, &native, other, &[("prompt", "none")]);
    let response = alice.get(url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    let page = response.text().await.unwrap();
    let back = link(&page, "a#return").expect("a link back");
    assert!(back.as_str().starts_with(other), "{back}");
    assert_eq!(
        query(&back, "error").as_deref(),
        Some("interaction_required")
    );
    assert!(query(&back, "code").is_none());

    // Without prompt=none: the consent page again, though consent is remembered.
    let (url, _) = authorize_url(&provider, &native, other, &[]);
    let next = location(&alice.get(url.clone()).send().await.unwrap(), &base);
    assert!(next.path().starts_with("/consent/"), "{next}");
    let (back, consent_shown) = walk(&alice, &provider, &url, other, "alice").await;
    assert!(consent_shown);
    assert!(query(&back, "code").is_some());

    // A private-use URI scheme (RFC 8252 §7.1) proves no more.
    let mut custom = native_client();
    custom["client_uri"] = json!("https://app.example.com/");
    custom["redirect_uris"] = json!(["com.example.app:/callback"]);
    let (custom, _) = register(&provider, custom).await;
    let (url, _) = authorize_url(&provider, &custom, "com.example.app:/callback", &[]);
    let (back, _) = walk(&alice, &provider, &url, "com.example.app:", "alice").await;
    assert!(query(&back, "code").is_some(), "{back}");
    let (url, _) = authorize_url(
        &provider,
        &custom,
        "com.example.app:/callback",
        &[("prompt", "none")],
    );
    let page = alice.get(url).send().await.unwrap().text().await.unwrap();
    let back = link(&page, "a#return").expect("a link back");
    assert_eq!(
        query(&back, "error").as_deref(),
        Some("interaction_required")
    );

    // Clients whose identity is assured keep remembered consent and prompt=none: a
    // confidential client, and a public web client redirected to https.
    let (public_web, _) = register(&provider, web_client("none")).await;
    for client_id in ["web-app", public_web.as_str()] {
        let (url, _) = authorize_url(&provider, client_id, REDIRECT, &[]);
        walk(&alice, &provider, &url, REDIRECT, "alice").await;
        let (url, _) = authorize_url(&provider, client_id, REDIRECT, &[("prompt", "none")]);
        let back = location(&alice.get(url).send().await.unwrap(), &base);
        assert!(back.as_str().starts_with(REDIRECT), "{client_id}: {back}");
        assert!(query(&back, "code").is_some(), "{client_id}: {back}");
    }
    provider.stop().await;
}

// ---- finding 9: introspection across clients ----

async fn introspect(provider: &TestProvider, auth: (&str, &str), token: &str) -> Value {
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::INTROSPECTION))
            .basic_auth(auth.0, Some(auth.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A client credentials access token (no scope asked).
async fn robot_token(provider: &TestProvider, id: &str, secret: &str) -> String {
    let (status, body) = client_credentials(provider, id, secret, "").await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn introspection_only_to_clients_with_business(db: TestDb) {
    let provider = start(&db).await;
    let issued = tokens(
        &provider,
        &browser(),
        ("web-app", Some(WEB_APP_SECRET)),
        "alice",
    )
    .await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let inactive = json!({ "active": false });

    // The token's own client and the homeserver see it.
    let own = introspect(&provider, ("web-app", WEB_APP_SECRET), &access).await;
    assert_eq!(
        (own["active"].clone(), own["username"].clone()),
        (json!(true), json!("alice"))
    );
    assert_eq!(
        introspect_as_homeserver(&provider, &access).await["username"],
        "alice"
    );

    // An anonymously registered confidential client: nothing (the finding).
    let (stranger, secret) = register(&provider, web_client("client_secret_basic")).await;
    let secret = secret.expect("a confidential client gets a secret");
    for token in [&access, &refresh] {
        assert_eq!(
            introspect(&provider, (&stranger, &secret), token).await,
            inactive
        );
    }
    // A static confidential client that isn't an admin client: nothing either; its own token
    // it sees.
    for token in [&access, &refresh] {
        assert_eq!(
            introspect(&provider, ("other-robot", OTHER_SECRET), token).await,
            inactive
        );
    }
    let robots_own = robot_token(&provider, "other-robot", OTHER_SECRET).await;
    assert_eq!(
        introspect(&provider, ("other-robot", OTHER_SECRET), &robots_own).await["active"],
        true
    );
    // An admin client (admin.clients) sees every access token.
    let admin = introspect(&provider, ("admin-robot", ROBOT_SECRET), &access).await;
    assert_eq!(admin["active"], true);
    assert_eq!(admin["username"], "alice");

    // A compat token belongs to no client: the homeserver and admin clients only.
    let compat = {
        use rand::SeedableRng as _;
        TokenKind::CompatAccessToken.generate(&mut rand::rngs::StdRng::seed_from_u64(14))
    };
    let alice_id = {
        let mut repo = db.storage.reader().await.unwrap();
        repo.users()
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let mut repo = db.storage.begin().await.unwrap();
    let session = repo
        .compat_sessions()
        .add(alice_id, "COMPATDEV", None, false, None)
        .await
        .unwrap();
    repo.compat_tokens()
        .add_access(session.id, &sha256(&compat), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    assert_eq!(
        introspect_as_homeserver(&provider, &compat).await["active"],
        true
    );
    assert_eq!(
        introspect(&provider, ("admin-robot", ROBOT_SECRET), &compat).await["active"],
        true
    );
    for (id, secret) in [
        ("web-app", WEB_APP_SECRET),
        (stranger.as_str(), secret.as_str()),
    ] {
        assert_eq!(introspect(&provider, (id, secret), &compat).await, inactive);
    }
    provider.stop().await;
}

backend_tests!(
    logout_redirects_only_to_confirmed_targets,
    authorization_errors_of_self_registered_clients_are_shown,
    remembered_consent_needs_interaction_for_public_native_clients,
    introspection_only_to_clients_with_business,
);
