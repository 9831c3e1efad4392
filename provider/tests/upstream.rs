//! Signing in through an upstream OpenID Connect provider, over HTTP with cookie jars.
//!
//! The upstream is a second instance of this provider (a static confidential client, a user
//! with a confirmed email address), so the whole walk is real: our login page's button, the
//! upstream's login and consent pages, the callback (query and `form_post`), the code exchange,
//! the ID token, userinfo, and our link page (new account with imported claims, a second login
//! through the link, linking to an existing account after its password). A wiremock provider
//! covers the claims our provider doesn't send and the faults: token endpoint errors, ID tokens
//! with a wrong nonce, audience or signature, userinfo failures, `error=access_denied`.

mod support;

use provider::{
    backend_tests,
    clock::{Clock as _, SeededRngSource},
    keys::{PrivateKey, SigningKey},
    storage::DatabaseKind,
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use serde_json::{json, Value};
use support::{add_user, authorize_url, http, location, param, static_client, REDIRECT};
use url::Url;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

/// Provider IDs of the configurations below.
const A: &str = "01JAYS74TCG3BTWKADN5Q4518C";
const B: &str = "01JAYS74TCG3BTWKADN5Q4518D";
const C: &str = "01JAYS74TCG3BTWKADN5Q4518E";
const UPSTREAM_PASSWORD: &str = "upstream password 1";
const LOCAL_PASSWORD: &str = "local password 12";

/// A fresh database of the same kind as `db`.
async fn another_db(db: &TestDb) -> TestDb {
    match db.storage.kind() {
        DatabaseKind::Sqlite => TestDb::sqlite().await,
        DatabaseKind::Postgres => TestDb::postgres()
            .await
            .expect("a PostgreSQL server, as for the first database"),
    }
}

/// A browser: one cookie jar per site (the two providers share the host 127.0.0.1, and
/// cookies don't tell ports apart), redirects shown instead of followed.
struct Browser {
    down: reqwest::Client,
    up: reqwest::Client,
    up_base: Url,
}

impl Browser {
    fn new(up: &TestProvider) -> Self {
        Self {
            down: support::browser(),
            up: support::browser(),
            up_base: up.base_url.clone(),
        }
    }

    fn client(&self, url: &Url) -> &reqwest::Client {
        if url.origin() == self.up_base.origin() {
            &self.up
        } else {
            &self.down
        }
    }

    async fn get(&self, url: &Url) -> reqwest::Response {
        self.client(url).get(url.clone()).send().await.unwrap()
    }

    async fn get_text(&self, url: &Url) -> (u16, String) {
        support::text(self.get(url).await).await
    }

    /// Submits the form `selector` of `page` (at `base`) with `fields` set.
    async fn submit(
        &self,
        base: &Url,
        page: &str,
        selector: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let (action, method, mut values) = form(page, selector);
        for (name, value) in fields {
            support::set(&mut values, name, value);
        }
        let url = base.join(&action).unwrap();
        let client = self.client(&url);
        if method == "get" {
            let mut url = url.clone();
            url.query_pairs_mut().extend_pairs(values);
            client.get(url).send().await.unwrap()
        } else {
            client.post(url).form(&values).send().await.unwrap()
        }
    }
}

/// A form of a page: action, method and its named inputs (checked checkboxes only).
fn form(html: &str, selector: &str) -> (String, String, Vec<(String, String)>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse(selector).unwrap())
        .next()
        .unwrap_or_else(|| panic!("`{selector}` in {html}"));
    let action = form.value().attr("action").unwrap().to_owned();
    let method = form.value().attr("method").unwrap_or("get").to_owned();
    let fields = form
        .select(&Selector::parse("input[name]").unwrap())
        .filter(|i| i.value().attr("type") != Some("password"))
        .filter(|i| {
            i.value().attr("type") != Some("checkbox") || i.value().attr("checked").is_some()
        })
        .map(|i| {
            (
                i.value().attr("name").unwrap().to_owned(),
                i.value().attr("value").unwrap_or("").to_owned(),
            )
        })
        .collect();
    (action, method, fields)
}

/// Our provider and its upstream, a second instance with `alice` (email confirmed).
struct Env {
    up_db: TestDb,
    up: TestProvider,
    down: TestProvider,
}

/// Starts the upstream, then our provider configured with `providers` (JSON, `{issuer}`,
/// `{client_id}` and `{client_secret}` replaced), then registers our callbacks at the upstream.
async fn setup(db: &TestDb, providers: &str) -> Env {
    let up_db = another_db(db).await;
    let up = TestProvider::start(&up_db).await;
    add_user(&up_db, "alice", UPSTREAM_PASSWORD).await;
    let mut repo = up_db.storage.begin().await.unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let email = repo
        .user_emails()
        .add(alice.id, "alice@upstream.example")
        .await
        .unwrap();
    repo.user_emails().confirm(email.id).await.unwrap();
    repo.commit().await.unwrap();

    let (client_id, client_secret) = static_client(&up);
    let providers = providers
        .replace("{issuer}", up.base_url.as_str())
        .replace("{client_id}", &client_id)
        .replace("{client_secret}", &client_secret);
    let down = TestProvider::start_with(
        db,
        &[("PROVIDER__UPSTREAM_OAUTH2__PROVIDERS", providers.as_str())],
    )
    .await;

    // The upstream's client gets our redirect URIs.
    let mut settings = up.settings.clone();
    settings.clients[0].metadata["redirect_uris"] = json!([A, B, C]
        .iter()
        .map(|id| down.url(&format!("/upstream/callback/{id}")))
        .collect::<Vec<_>>());
    provider::server::prepare(&up_db.storage, &settings, false)
        .await
        .unwrap();
    Env { up_db, up, down }
}

/// Where the upstream sends the browser back: a redirect to our callback, or a `form_post` page.
enum Back {
    Redirect(Url),
    FormPost(String),
}

/// Follows the upstream's pages from `url` (signing in as alice, allowing) back to us.
async fn through_upstream(b: &Browser, env: &Env, mut url: Url) -> Back {
    loop {
        if url.origin() == env.down.base_url.origin() {
            return Back::Redirect(url);
        }
        let response = b.get(&url).await;
        if response.status() == 303 {
            url = location(&response, &env.up.base_url);
            continue;
        }
        let (status, page) = support::text(response).await;
        assert_eq!(status, 200, "{url}: {page}");
        let fields: &[(&str, &str)] = if url.path() == "/login" {
            &[("username", "alice"), ("password", UPSTREAM_PASSWORD)]
        } else {
            &[("action", "allow")]
        };
        let answer = b.submit(&env.up.base_url, &page, "form", fields).await;
        if answer.status() == 303 {
            url = location(&answer, &env.up.base_url);
        } else {
            let (status, page) = support::text(answer).await;
            assert_eq!(status, 200, "{page}");
            return Back::FormPost(page);
        }
    }
}

/// The `href` of the first link of `page` matching `selector`.
fn link_href(page: &str, selector: &str) -> String {
    let doc = Html::parse_document(page);
    let link = doc
        .select(&Selector::parse(selector).unwrap())
        .next()
        .unwrap_or_else(|| panic!("`{selector}` in {page}"));
    link.value().attr("href").unwrap().to_owned()
}

/// From our login page (for `grant`), the button of `provider` up to the redirect to the
/// upstream's authorization endpoint.
async fn press_button(b: &Browser, env: &Env, login: &Url, provider: &str) -> Url {
    let (status, page) = b.get_text(login).await;
    assert_eq!(status, 200);
    let href = link_href(
        &page,
        &format!("a[href^=\"/upstream/authorize/{provider}\"]"),
    );
    if let Some(grant) = param(login, "grant") {
        assert!(href.ends_with(&format!("?grant={grant}")), "{href}");
    }
    let response = b.get(&env.down.base_url.join(&href).unwrap()).await;
    location(&response, &env.down.base_url)
}

/// Starts at the client's authorization request, signs in upstream; returns the grant and the
/// page the callback sends the browser to.
async fn login_through(b: &Browser, env: &Env, provider: &str) -> (String, Url) {
    let response = b
        .get(&Url::parse(&authorize_url(&env.down, &[])).unwrap())
        .await;
    let login = location(&response, &env.down.base_url);
    assert_eq!(login.path(), "/login");
    let grant = param(&login, "grant").unwrap();
    let upstream = press_button(b, env, &login, provider).await;
    let Back::Redirect(callback) = through_upstream(b, env, upstream).await else {
        panic!("a redirect back expected");
    };
    let response = b.get(&callback).await;
    (grant, location(&response, &env.down.base_url))
}

/// Follows our consent step back to the client; returns the client's redirect.
async fn to_client(b: &Browser, env: &Env, mut url: Url) -> Url {
    loop {
        if url.as_str().starts_with(REDIRECT) {
            return url;
        }
        let response = b.get(&url).await;
        if response.status() == 303 {
            // Consent remembered: straight back to the client.
            url = location(&response, &env.down.base_url);
            continue;
        }
        let (status, page) = support::text(response).await;
        assert_eq!(status, 200, "{url}: {page}");
        let response = b
            .submit(&env.down.base_url, &page, "form", &[("action", "allow")])
            .await;
        url = location(&response, &env.down.base_url);
    }
}

fn provider_a(imports: Value) -> String {
    json!([{
        "id": A,
        "issuer": "{issuer}",
        "human_name": "Upstream",
        "client_id": "{client_id}",
        "client_secret": "{client_secret}",
        "scope": "openid email",
        "fetch_userinfo": true,
        "claims_imports": imports,
    }])
    .to_string()
}

async fn new_account_then_linked_sign_in(db: TestDb) {
    let env = setup(
        &db,
        &provider_a(json!({
            "localpart": {"action": "suggest", "template": "{{ user.email | split('@') | first }}"},
            "displayname": {"action": "suggest", "template": "{{ user.email | split('@') | first | capitalize }}"},
            "email": {"action": "suggest"},
        })),
    )
    .await;
    let b = Browser::new(&env.up);

    // The login page has the button.
    let login = location(
        &b.get(&Url::parse(&authorize_url(&env.down, &[])).unwrap())
            .await,
        &env.down.base_url,
    );
    let (_, page) = b.get_text(&login).await;
    assert!(page.contains("Continue with Upstream"), "{page}");

    let (grant, link) = login_through(&b, &env, A).await;
    assert!(link.path().starts_with("/upstream/link/"), "{link}");
    let (status, page) = b.get_text(&link).await;
    assert_eq!(status, 200, "{page}");
    // Suggested: the username (editable), the display name and the verified email address.
    assert!(page.contains(r#"value="alice""#), "{page}");
    assert!(!page.contains("readonly"), "{page}");
    assert!(
        page.contains("<strong id=\"displayname\">Alice</strong>"),
        "{page}"
    );
    assert!(page.contains("alice@upstream.example"), "{page}");
    assert!(
        !page.contains("you will confirm it"),
        "verified upstream: {page}"
    );

    // An invalid username is refused with the page again.
    let response = b
        .submit(
            &env.down.base_url,
            &page,
            "#register-form",
            &[("username", "Not Valid")],
        )
        .await;
    let (status, again) = support::text(response).await;
    assert_eq!(status, 400, "{again}");
    assert!(again.contains("Username:"), "{again}");

    let response = b
        .submit(&env.down.base_url, &page, "#register-form", &[])
        .await;
    let consent = location(&response, &env.down.base_url);
    assert_eq!(consent.path(), format!("/consent/{grant}"));
    let back = to_client(&b, &env, consent).await;
    assert!(param(&back, "code").is_some(), "{back}");

    // The account: imported display name and verified email, the identity linked.
    let mut repo = db.storage.reader().await.unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.display_name.as_deref(), Some("Alice"));
    assert!(repo
        .user_passwords()
        .active(alice.id)
        .await
        .unwrap()
        .is_none());
    let emails = repo.user_emails().list_for_user(alice.id).await.unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].email, "alice@upstream.example");
    assert!(emails[0].confirmed_at.is_some());
    let links = repo.upstream_links().list_for_user(alice.id).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].provider_id.to_string(), A);
    assert_eq!(
        links[0].human_account_name.as_deref(),
        Some("alice@upstream.example")
    );
    drop(repo);
    // The homeserver has the user, with the display name and the address.
    let on_homeserver = env.down.homeserver.store().user("alice").unwrap();
    assert_eq!(on_homeserver.displayname.as_deref(), Some("Alice"));
    assert_eq!(
        on_homeserver.emails,
        vec!["alice@upstream.example".to_owned()]
    );

    // The link page can't be used twice.
    let (status, _) = b.get_text(&link).await;
    assert_eq!(status, 400);

    // The account page lists the identity; it is the only way in, so it can't be unlinked.
    let (status, account) = b
        .get_text(&env.down.base_url.join("/account").unwrap())
        .await;
    assert_eq!(status, 200, "{account}");
    assert!(account.contains("Linked accounts"), "{account}");
    assert_eq!(
        link_href(&account, "#linkable-list a"),
        format!("/upstream/authorize/{A}?next=%2Faccount")
    );
    assert!(
        account.contains("Upstream — alice@upstream.example"),
        "{account}"
    );
    let unlink = env
        .down
        .base_url
        .join(&format!("/upstream/unlink/{}", links[0].id))
        .unwrap();
    let (status, confirm) = b.get_text(&unlink).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("the only way to sign in"), "{confirm}");

    // A second login, in a browser signed out here but still signed in upstream: the link
    // signs alice in at once, no page in between.
    let b2 = Browser {
        down: support::browser(),
        up: b.up.clone(),
        up_base: b.up_base.clone(),
    };
    let (grant2, next) = login_through(&b2, &env, A).await;
    assert!(next.path().starts_with("/upstream/link/"));
    let response = b2.get(&next).await;
    let consent = location(&response, &env.down.base_url);
    assert_eq!(consent.path(), format!("/consent/{grant2}"));
    let back = to_client(&b2, &env, consent).await;
    assert!(param(&back, "code").is_some());
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 1, "no second account");
    let sessions = repo
        .browser_sessions()
        .list_page(Some(alice.id), None, None, 10)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2);
    let last = repo
        .browser_sessions()
        .last_authentication(sessions[1].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last.method,
        provider::domain::sign_in_method::SignInMethod::Upstream(links[0].id)
    );
    drop(repo);
    drop(env.up_db);
}

async fn link_to_existing_account(db: TestDb) {
    add_user(&db, "alice", LOCAL_PASSWORD).await;
    let env = setup(
        &db,
        &provider_a(json!({
            "localpart": {"action": "force", "template": "{{ user.email | split('@') | first }}"},
        })),
    )
    .await;
    let b = Browser::new(&env.up);
    let (grant, link) = login_through(&b, &env, A).await;
    let (status, page) = b.get_text(&link).await;
    assert_eq!(status, 200, "{page}");
    // The imposed username is taken: no account can be made, linking is offered.
    assert!(page.contains("id=\"cannot-register\""), "{page}");
    assert!(!page.contains("id=\"register-form\""), "{page}");
    assert!(
        page.contains("An account named <strong>alice</strong> already exists"),
        "{page}"
    );

    // The wrong password, then the right one.
    let response = b
        .submit(
            &env.down.base_url,
            &page,
            "#login-form",
            &[("password", "wrong")],
        )
        .await;
    let (status, again) = support::text(response).await;
    assert_eq!(status, 401);
    assert!(again.contains("Wrong username or password."), "{again}");
    let response = b
        .submit(
            &env.down.base_url,
            &again,
            "#login-form",
            &[("password", LOCAL_PASSWORD)],
        )
        .await;
    let consent = location(&response, &env.down.base_url);
    assert_eq!(consent.path(), format!("/consent/{grant}"));
    let back = to_client(&b, &env, consent).await;
    assert!(param(&back, "code").is_some());

    let mut repo = db.storage.reader().await.unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let links = repo.upstream_links().list_for_user(alice.id).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(repo.users().count().await.unwrap(), 1);
    drop(repo);

    // With a password, the identity may be unlinked (GET asks, POST does it).
    let unlink = env
        .down
        .base_url
        .join(&format!("/upstream/unlink/{}", links[0].id))
        .unwrap();
    let (status, confirm) = b.get_text(&unlink).await;
    assert_eq!(status, 200, "{confirm}");
    let forged = b
        .down
        .post(unlink.clone())
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let response = b.submit(&env.down.base_url, &confirm, "form", &[]).await;
    assert_eq!(location(&response, &env.down.base_url).path(), "/account");
    let mut repo = db.storage.reader().await.unwrap();
    assert!(repo
        .upstream_links()
        .list_for_user(alice.id)
        .await
        .unwrap()
        .is_empty());
    drop(repo);

    drop(env.up_db);
}

async fn form_post_pkce_always_without_discovery(db: TestDb) {
    let providers = json!([{
        "id": B,
        "issuer": "{issuer}",
        "human_name": "Explicit",
        "client_id": "{client_id}",
        "client_secret": "{client_secret}",
        "scope": "openid email",
        "discovery_mode": "disabled",
        "authorization_endpoint": "{issuer}authorize",
        "token_endpoint": "{issuer}oauth2/token",
        "jwks_uri": "{issuer}oauth2/keys.json",
        "userinfo_endpoint": "{issuer}oauth2/userinfo",
        "fetch_userinfo": true,
        "pkce_method": "always",
        "response_mode": "form_post",
        "claims_imports": {
            "localpart": {"action": "require", "template": "{{ user.email | split('@') | first }}"},
            "email": {"action": "force", "set_email_verification": "never"},
        },
    }])
    .to_string();
    let env = setup(&db, &providers).await;
    let b = Browser::new(&env.up);
    let response = b
        .get(&Url::parse(&authorize_url(&env.down, &[])).unwrap())
        .await;
    let login = location(&response, &env.down.base_url);
    let grant = param(&login, "grant").unwrap();
    let upstream = press_button(&b, &env, &login, B).await;
    // Without discovery, PKCE (always) and form_post are in the request.
    assert_eq!(upstream.path(), "/authorize");
    assert_eq!(
        param(&upstream, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        param(&upstream, "response_mode").as_deref(),
        Some("form_post")
    );
    assert!(param(&upstream, "nonce").is_some());
    let Back::FormPost(page) = through_upstream(&b, &env, upstream).await else {
        panic!("form_post expected");
    };
    // The browser posts cross-site: without our cookie. We answer with a page that posts the
    // same fields again from our own origin.
    let (action, _, fields) = form(&page, "form");
    assert!(
        action.ends_with(&format!("/upstream/callback/{B}")),
        "{action}"
    );
    let cross_site = http().post(&action).form(&fields).send().await.unwrap();
    let (status, again) = support::text(cross_site).await;
    assert_eq!(status, 200, "{again}");
    assert!(again.contains(r#"name="resubmitted" value="1""#), "{again}");
    let response = b.submit(&env.down.base_url, &again, "form", &[]).await;
    // Answered with a page that moves on by itself (a fresh navigation, not a redirect of the
    // form's).
    let (status, onward) = support::text(response).await;
    assert_eq!(status, 200, "{onward}");
    let href = link_href(&onward, "#continue");
    let doc = Html::parse_document(&onward);
    let refresh = doc
        .select(&Selector::parse("meta[http-equiv=refresh]").unwrap())
        .next()
        .and_then(|m| m.value().attr("content"))
        .unwrap()
        .to_owned();
    assert_eq!(refresh, format!("0;url={href}"));
    let link = env.down.base_url.join(&href).unwrap();
    let (status, page) = b.get_text(&link).await;
    assert_eq!(status, 200, "{page}");
    // Required and present: imposed. The address is imposed too, unverified (`never`).
    assert!(page.contains("readonly"), "{page}");
    assert!(page.contains("you will confirm it"), "{page}");
    let response = b
        .submit(
            &env.down.base_url,
            &page,
            "#register-form",
            &[("username", "mallory")],
        )
        .await;
    assert_eq!(
        location(&response, &env.down.base_url).path(),
        format!("/consent/{grant}")
    );
    let mut repo = db.storage.reader().await.unwrap();
    let alice = repo.users().find_by_username("alice").await.unwrap();
    let alice = alice.expect("the imposed username, not the one typed in");
    assert!(repo
        .users()
        .find_by_username("mallory")
        .await
        .unwrap()
        .is_none());
    let emails = repo.user_emails().list_for_user(alice.id).await.unwrap();
    assert_eq!(emails.len(), 1);
    assert!(emails[0].confirmed_at.is_none());
    drop(repo);

    // Replaying the form_post response is refused (the attempt is over: its cookie is gone,
    // so the replay goes through the re-post page first).
    let replay = b.down.post(&action).form(&fields).send().await.unwrap();
    let (_, again) = support::text(replay).await;
    let replay = b.submit(&env.down.base_url, &again, "form", &[]).await;
    assert_eq!(replay.status(), 400);
    drop(env.up_db);
}

async fn required_claim_missing_is_refused(db: TestDb) {
    let providers = json!([{
        "id": C,
        "issuer": "{issuer}",
        "client_id": "{client_id}",
        "client_secret": "{client_secret}",
        "scope": "openid email",
        "claims_imports": {
            "localpart": {"action": "suggest", "template": "{{ user.sub | lower }}"},
            // Our provider's ID token has no `name`.
            "displayname": {"action": "require"},
        },
    }])
    .to_string();
    let env = setup(&db, &providers).await;
    let b = Browser::new(&env.up);
    // Without human_name, the button shows the issuer's host.
    let response = b
        .get(&Url::parse(&authorize_url(&env.down, &[])).unwrap())
        .await;
    let login = location(&response, &env.down.base_url);
    let (_, page) = b.get_text(&login).await;
    assert!(page.contains("Continue with 127.0.0.1"), "{page}");
    let (_, link) = login_through(&b, &env, C).await;
    let (status, page) = b.get_text(&link).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Missing account information"), "{page}");
    assert!(page.contains("display name"), "{page}");
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 0);
    drop(repo);
    drop(env.up_db);
}

async fn providers_are_synced_and_disabled(db: TestDb) {
    let env = setup(&db, &provider_a(json!({}))).await;
    let mut repo = db.storage.reader().await.unwrap();
    let id = A.parse().unwrap();
    let stored = repo.upstream_providers().lookup(id).await.unwrap().unwrap();
    let (_, secret) = static_client(&env.up);
    let encrypted = stored.encrypted_client_secret.clone().unwrap();
    assert_ne!(encrypted, secret, "encrypted at rest");
    assert_eq!(
        stored.token_endpoint_auth_method.as_str(),
        "client_secret_basic"
    );
    assert_eq!(stored.settings["fetch_userinfo"], true);
    drop(repo);

    // Syncing again changes nothing (the ciphertext is kept).
    let report = provider::core::sync::sync_clients(&db.storage, &env.down.settings, false, false)
        .await
        .unwrap();
    assert_eq!(report.upstream.unchanged, vec![A.to_owned()]);
    let mut repo = db.storage.reader().await.unwrap();
    let again = repo.upstream_providers().lookup(id).await.unwrap().unwrap();
    assert_eq!(
        again.encrypted_client_secret.as_deref(),
        Some(encrypted.as_str())
    );
    drop(repo);

    // Removed from the config: disabled, no button, its routes refuse.
    let mut settings = env.down.settings.clone();
    settings.upstream_providers.clear();
    provider::server::prepare(&db.storage, &settings, false)
        .await
        .unwrap();
    let mut repo = db.storage.reader().await.unwrap();
    assert!(!repo
        .upstream_providers()
        .lookup(id)
        .await
        .unwrap()
        .unwrap()
        .is_enabled());
    drop(repo);
    let b = Browser::new(&env.up);
    let response = b
        .get(&Url::parse(&authorize_url(&env.down, &[])).unwrap())
        .await;
    let login = location(&response, &env.down.base_url);
    let (_, page) = b.get_text(&login).await;
    assert!(!page.contains("Continue with"), "{page}");
    let (status, page) = b
        .get_text(
            &env.down
                .base_url
                .join(&format!("/upstream/authorize/{A}"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 404);
    assert!(page.contains("Unknown sign-in method"), "{page}");
    drop(env.up_db);
}

backend_tests!(
    new_account_then_linked_sign_in,
    link_to_existing_account,
    form_post_pkce_always_without_discovery,
    required_claim_missing_is_refused,
    providers_are_synced_and_disabled,
);

// A wiremock provider -----------------------------------------------------------------------

/// A provider under our control: discovery, keys, and token/userinfo answers set per attempt.
struct MockIdp {
    server: MockServer,
    issuer: String,
    key: SigningKey,
    /// Another key with the same `kid`: its signatures don't verify.
    impostor: SigningKey,
}

const MOCK_CLIENT: &str = "mock-client";
const MOCK_SECRET: &str = "mock-client-secret";

impl MockIdp {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let issuer = format!("{}/", server.uri());
        let rng = SeededRngSource::new(11);
        let key = SigningKey::new(
            PrivateKey::generate_p256(&mut provider::clock::RngSource::rng(&rng)),
            Some("k1".into()),
        );
        let impostor = SigningKey::new(
            PrivateKey::generate_p256(&mut provider::clock::RngSource::rng(&rng)),
            Some("k1".into()),
        );
        let idp = Self {
            server,
            issuer,
            key,
            impostor,
        };
        idp.basics().await;
        idp
    }

    /// Discovery and keys, after a reset.
    async fn basics(&self) {
        self.server.reset().await;
        let base = self.server.uri();
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": self.issuer,
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "jwks_uri": format!("{base}/jwks"),
                "userinfo_endpoint": format!("{base}/userinfo"),
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            })))
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"keys": [self.key.public_jwk()]})),
            )
            .mount(&self.server)
            .await;
    }

    fn claims(&self, nonce: &str, now: i64) -> Value {
        json!({
            "iss": self.issuer, "sub": "jane-1", "aud": MOCK_CLIENT,
            "exp": now + 300, "iat": now, "nonce": nonce,
            "preferred_username": "Jane.Doe", "name": "Jane Doe",
            "email": "jane@mock.example", "email_verified": false,
        })
    }

    /// The token endpoint answers `status` with `body` (for the next exchange).
    async fn token(&self, status: u16, body: Value) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    async fn userinfo(&self, status: u16, body: Value) {
        Mock::given(method("GET"))
            .and(path("/userinfo"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&self.server)
            .await;
    }
}

fn mock_provider(idp: &MockIdp) -> String {
    json!([{
        "id": A,
        "issuer": idp.issuer,
        "human_name": "Mock",
        "client_id": MOCK_CLIENT,
        "client_secret": MOCK_SECRET,
        "token_endpoint_auth_method": "client_secret_post",
        "id_token_signed_response_alg": "ES256",
        "pkce_method": "never",
        "fetch_userinfo": true,
        "claims_imports": {
            "localpart": {"action": "suggest", "template": "{{ user.preferred_username | lower }}"},
            "displayname": {"action": "suggest"},
            "email": {"action": "suggest"},
        },
    }])
    .to_string()
}

/// Starts a login at the mock from `browser`: the authorization URL's `state` and `nonce`.
async fn start_mock_login(browser: &reqwest::Client, down: &TestProvider) -> (Url, String, String) {
    let response = browser
        .get(down.url(&format!("/upstream/authorize/{A}")))
        .send()
        .await
        .unwrap();
    let url = location(&response, &down.base_url);
    let state = param(&url, "state").unwrap();
    let nonce = param(&url, "nonce").unwrap();
    (url, state, nonce)
}

async fn callback(
    browser: &reqwest::Client,
    down: &TestProvider,
    query: &[(&str, &str)],
) -> reqwest::Response {
    let mut url = Url::parse(&down.url(&format!("/upstream/callback/{A}"))).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    browser.get(url).send().await.unwrap()
}

async fn mock_provider_claims_and_pkce_never(db: TestDb) {
    let idp = MockIdp::start().await;
    let down = TestProvider::start_with(
        &db,
        &[(
            "PROVIDER__UPSTREAM_OAUTH2__PROVIDERS",
            mock_provider(&idp).as_str(),
        )],
    )
    .await;
    let browser = support::browser();
    let now = db.clock.now().timestamp();
    let (url, state, nonce) = start_mock_login(&browser, &down).await;
    assert_eq!(url.path(), "/authorize");
    assert_eq!(param(&url, "client_id").as_deref(), Some(MOCK_CLIENT));
    assert_eq!(
        param(&url, "scope").as_deref(),
        Some("openid profile email")
    );
    assert_eq!(param(&url, "code_challenge"), None, "pkce_method: never");
    assert_eq!(
        param(&url, "redirect_uri").unwrap(),
        down.url(&format!("/upstream/callback/{A}"))
    );

    let id_token = idp.key.sign(&idp.claims(&nonce, now)).unwrap();
    idp.token(
        200,
        json!({"access_token": "at-1", "token_type": "Bearer", "id_token": id_token}),
    )
    .await;
    idp.userinfo(200, json!({"sub": "jane-1", "nickname": "jd"}))
        .await;
    let response = callback(&browser, &down, &[("code", "c0de"), ("state", &state)]).await;
    let link = location(&response, &down.base_url);

    // The token request: client_secret_post, no code_verifier; userinfo with the bearer token.
    let requests = idp.server.received_requests().await.unwrap();
    let token = requests.iter().find(|r| r.url.path() == "/token").unwrap();
    let body: Vec<(String, String)> = url::form_urlencoded::parse(&token.body)
        .into_owned()
        .collect();
    let field = |name: &str| {
        body.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("grant_type"), Some("authorization_code"));
    assert_eq!(field("code"), Some("c0de"));
    assert_eq!(field("client_id"), Some(MOCK_CLIENT));
    assert_eq!(field("client_secret"), Some(MOCK_SECRET));
    assert_eq!(field("code_verifier"), None);
    let userinfo = requests
        .iter()
        .find(|r| r.url.path() == "/userinfo")
        .unwrap();
    assert_eq!(userinfo.headers["authorization"], "Bearer at-1");

    // The claims, stored with the session.
    let session_id = link.path().rsplit('/').next().unwrap().parse().unwrap();
    let mut repo = db.storage.reader().await.unwrap();
    let session = repo
        .upstream_sessions()
        .lookup(session_id)
        .await
        .unwrap()
        .unwrap();
    let claims = session.claims.unwrap();
    assert_eq!(claims["nickname"], "jd", "userinfo merged");
    assert_eq!(claims["preferred_username"], "Jane.Doe");
    drop(repo);

    let page = support::get_text(&browser, link.clone()).await;
    assert!(page.contains(r#"value="jane.doe""#), "{page}");
    assert!(page.contains("Jane Doe"), "{page}");
    assert!(
        page.contains("you will confirm it"),
        "email_verified false: {page}"
    );
    // Decline the display name; keep the address.
    let (action, _, mut fields) = form(&page, "#register-form");
    fields.retain(|(k, _)| k != "import_displayname");
    let response = browser
        .post(down.base_url.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &down.base_url).path(), "/login");
    let mut repo = db.storage.reader().await.unwrap();
    let jane = repo
        .users()
        .find_by_username("jane.doe")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jane.display_name, None);
    let emails = repo.user_emails().list_for_user(jane.id).await.unwrap();
    assert_eq!(emails[0].email, "jane@mock.example");
    assert!(emails[0].confirmed_at.is_none(), "not verified upstream");
    drop(repo);

    // Signed in as jane.doe, another identity of the provider is linked to the same account.
    idp.basics().await;
    let (_, state, nonce) = start_mock_login(&browser, &down).await;
    let mut claims = idp.claims(&nonce, now);
    claims["sub"] = json!("jane-2");
    let id_token = idp.key.sign(&claims).unwrap();
    idp.token(
        200,
        json!({"access_token": "at-2", "token_type": "Bearer", "id_token": id_token}),
    )
    .await;
    idp.userinfo(200, json!({"sub": "jane-2"})).await;
    let response = callback(&browser, &down, &[("code", "c0de2"), ("state", &state)]).await;
    let link = location(&response, &down.base_url);
    let page = support::get_text(&browser, link).await;
    assert!(page.contains("Link to jane.doe"), "{page}");
    let (action, _, fields) = form(&page, "#link-current-form");
    let response = browser
        .post(down.base_url.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &down.base_url).path(), "/login");
    let mut repo = db.storage.reader().await.unwrap();
    let links = repo.upstream_links().list_for_user(jane.id).await.unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(repo.users().count().await.unwrap(), 1);
    drop(repo);

    // Without a password, one of the two may go, never the last one.
    let unlink = |id: ulid::Ulid| {
        down.base_url
            .join(&format!("/upstream/unlink/{id}"))
            .unwrap()
    };
    let confirm = support::get_text(&browser, unlink(links[0].id)).await;
    let (_, _, fields) = form(&confirm, "form");
    let response = browser
        .post(unlink(links[0].id))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &down.base_url).path(), "/account");
    let confirm = support::get_text(&browser, unlink(links[1].id)).await;
    assert!(confirm.contains("the only way to sign in"), "{confirm}");
    let (status, page) = support::text(
        browser
            .post(unlink(links[1].id))
            .form(&fields)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{page}");
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.upstream_links()
            .list_for_user(jane.id)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(repo);
    // Someone else's link is not theirs to unlink: signed out, the login page comes first.
    let stranger = support::browser();
    let response = stranger.get(unlink(links[1].id)).send().await.unwrap();
    assert_eq!(location(&response, &down.base_url).path(), "/login");
}

async fn mock_provider_faults(db: TestDb) {
    let idp = MockIdp::start().await;
    let down = TestProvider::start_with(
        &db,
        &[(
            "PROVIDER__UPSTREAM_OAUTH2__PROVIDERS",
            mock_provider(&idp).as_str(),
        )],
    )
    .await;
    let browser = support::browser();
    let now = db.clock.now().timestamp();

    // Each case: a fresh login, the token endpoint (and userinfo) set up, the callback's page.
    async fn attempt(
        idp: &MockIdp,
        browser: &reqwest::Client,
        down: &TestProvider,
        setup: impl FnOnce(String) -> (Option<Value>, u16, Value),
    ) -> (u16, String) {
        idp.basics().await;
        let (_, state, nonce) = start_mock_login(browser, down).await;
        let (token, status, userinfo) = setup(nonce);
        if let Some(token) = token {
            let ok = token.get("error").is_none() && token.get("boom").is_none();
            idp.token(
                if ok {
                    200
                } else if token.get("boom").is_some() {
                    500
                } else {
                    400
                },
                token,
            )
            .await;
        }
        idp.userinfo(status, userinfo).await;
        support::text(callback(browser, down, &[("code", "c"), ("state", &state)]).await).await
    }
    let good_userinfo = json!({"sub": "jane-1"});
    let tokens =
        |jwt: String| Some(json!({"access_token": "at", "token_type": "Bearer", "id_token": jwt}));

    // The token endpoint fails (500), or refuses the code (400 invalid_grant).
    let (status, page) = attempt(&idp, &browser, &down, |_| {
        (Some(json!({"boom": true})), 200, good_userinfo.clone())
    })
    .await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("token endpoint answered HTTP 500"), "{page}");
    let (status, page) = attempt(&idp, &browser, &down, |_| {
        (
            Some(json!({"error": "invalid_grant", "error_description": "code expired"})),
            200,
            good_userinfo.clone(),
        )
    })
    .await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("<code>invalid_grant</code>"), "{page}");

    // ID tokens: wrong nonce, wrong audience, forged signature, none at all.
    type MakeIdToken<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: [(&str, MakeIdToken); 4] = [
        (
            "nonce does not match",
            Box::new(|_nonce: &str| idp.key.sign(&idp.claims("another nonce", now)).unwrap()),
        ),
        (
            "not issued to this client",
            Box::new(|nonce: &str| {
                let mut c = idp.claims(nonce, now);
                c["aud"] = json!("someone-else");
                idp.key.sign(&c).unwrap()
            }),
        ),
        (
            "signature does not verify",
            Box::new(|nonce: &str| idp.impostor.sign(&idp.claims(nonce, now)).unwrap()),
        ),
        (
            "has expired",
            Box::new(|nonce: &str| idp.key.sign(&idp.claims(nonce, now - 3600)).unwrap()),
        ),
    ];
    for (expected, make) in cases {
        let (status, page) = attempt(&idp, &browser, &down, |nonce| {
            (tokens(make(&nonce)), 200, good_userinfo.clone())
        })
        .await;
        assert_eq!(status, 502, "{expected}: {page}");
        assert!(page.contains(expected), "{expected}: {page}");
    }
    let (status, page) = attempt(&idp, &browser, &down, |_| {
        (
            Some(json!({"access_token": "at", "token_type": "Bearer"})),
            200,
            good_userinfo.clone(),
        )
    })
    .await;
    assert_eq!(status, 502);
    assert!(page.contains("no ID token"), "{page}");

    // Userinfo fails, or names another subject.
    let (status, page) = attempt(&idp, &browser, &down, |nonce| {
        (
            tokens(idp.key.sign(&idp.claims(&nonce, now)).unwrap()),
            500,
            json!({}),
        )
    })
    .await;
    assert_eq!(status, 502);
    assert!(
        page.contains("userinfo endpoint answered HTTP 500"),
        "{page}"
    );
    let (status, page) = attempt(&idp, &browser, &down, |nonce| {
        (
            tokens(idp.key.sign(&idp.claims(&nonce, now)).unwrap()),
            200,
            json!({"sub": "mallory"}),
        )
    })
    .await;
    assert_eq!(status, 502);
    assert!(page.contains("not the ID token"), "{page}");

    // The user said no: error=access_denied on the callback.
    idp.basics().await;
    let (_, state, _) = start_mock_login(&browser, &down).await;
    let (status, page) = support::text(
        callback(
            &browser,
            &down,
            &[
                ("error", "access_denied"),
                ("error_description", "The user said no"),
                ("state", &state),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        page.contains("Mock did not let you sign in: The user said no"),
        "{page}"
    );
    assert!(page.contains("<code>access_denied</code>"), "{page}");
    // That attempt is over.
    let (status, _) =
        support::text(callback(&browser, &down, &[("code", "c"), ("state", &state)]).await).await;
    assert_eq!(status, 400);

    // RFC 9207: an `iss` of another issuer is a mix-up.
    let (_, state, _) = start_mock_login(&browser, &down).await;
    let (status, page) = support::text(
        callback(
            &browser,
            &down,
            &[
                ("code", "c"),
                ("state", &state),
                ("iss", "https://evil.example/"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(page.contains("another issuer"), "{page}");

    // A response for a login this browser didn't start, and an unknown state.
    let (_, state, _) = start_mock_login(&browser, &down).await;
    let other = support::browser();
    let (status, page) =
        support::text(callback(&other, &down, &[("code", "c"), ("state", &state)]).await).await;
    assert_eq!(status, 400);
    assert!(page.contains("another browser"), "{page}");
    let (status, _) =
        support::text(callback(&browser, &down, &[("code", "c"), ("state", "made-up")]).await)
            .await;
    assert_eq!(status, 400);

    // Nothing was created by any of this.
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 0);
    drop(repo);
}

async fn mock_provider_jwt_client_authentication(db: TestDb) {
    let idp = MockIdp::start().await;
    let providers = json!([
        {"id": A, "issuer": idp.issuer, "client_id": MOCK_CLIENT, "client_secret": MOCK_SECRET,
         "token_endpoint_auth_method": "client_secret_jwt", "id_token_signed_response_alg": "ES256"},
        {"id": B, "issuer": idp.issuer, "client_id": MOCK_CLIENT,
         "token_endpoint_auth_method": "private_key_jwt", "id_token_signed_response_alg": "ES256"},
    ])
    .to_string();
    let down = TestProvider::start_with(
        &db,
        &[("PROVIDER__UPSTREAM_OAUTH2__PROVIDERS", providers.as_str())],
    )
    .await;
    let browser = support::browser();
    let now = db.clock.now().timestamp();
    let token_endpoint = format!("{}/token", idp.server.uri());
    let mut assertions = Vec::new();
    for id in [A, B] {
        idp.basics().await;
        let response = browser
            .get(down.url(&format!("/upstream/authorize/{id}")))
            .send()
            .await
            .unwrap();
        let url = location(&response, &down.base_url);
        // pkce_method auto: discovery lists S256.
        assert_eq!(
            param(&url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        let (state, nonce) = (param(&url, "state").unwrap(), param(&url, "nonce").unwrap());
        let id_token = idp.key.sign(&idp.claims(&nonce, now)).unwrap();
        idp.token(
            200,
            json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}),
        )
        .await;
        let mut back = Url::parse(&down.url(&format!("/upstream/callback/{id}"))).unwrap();
        back.query_pairs_mut()
            .extend_pairs([("code", "c"), ("state", state.as_str())]);
        let response = browser.get(back).send().await.unwrap();
        let link = location(&response, &down.base_url);
        assert!(link.path().starts_with("/upstream/link/"), "{link}");

        let requests = idp.server.received_requests().await.unwrap();
        let token = requests.iter().find(|r| r.url.path() == "/token").unwrap();
        assert!(token.headers.get("authorization").is_none());
        let body: Vec<(String, String)> = url::form_urlencoded::parse(&token.body)
            .into_owned()
            .collect();
        let field = |name: &str| body.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(
            field("client_assertion_type").as_deref(),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        assert_eq!(field("client_id").as_deref(), Some(MOCK_CLIENT));
        assert_eq!(field("client_secret"), None);
        assert_eq!(field("code_verifier").map(|v| v.len()), Some(64));
        assertions.push(field("client_assertion").unwrap());
    }
    // client_secret_jwt: HS256 keyed with the secret (RFC 7523 §3).
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.set_audience(&[token_endpoint.as_str()]);
    validation.set_issuer(&[MOCK_CLIENT]);
    let claims = jsonwebtoken::decode::<Value>(
        &assertions[0],
        &jsonwebtoken::DecodingKey::from_secret(MOCK_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], MOCK_CLIENT);
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 300);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    // private_key_jwt: signed with this provider's own key (published in its JWKS).
    let claims: Value = down
        .settings
        .keystore
        .verify_own(&assertions[1], MOCK_CLIENT)
        .expect("signed with our key");
    assert_eq!(claims["aud"], token_endpoint);
    assert_ne!(claims["jti"], json!(null));
}

/// `discovery_mode`: `oidc` refuses a document whose `issuer` isn't the configured one (OIDC
/// Discovery §4.3), `insecure` takes it and the login completes; the document is fetched once
/// for both logins (cached), and `pkce_method: auto` sends no challenge when discovery lists no
/// S256.
async fn mock_provider_discovery_modes(db: TestDb) {
    let idp = MockIdp::start().await;
    idp.server.reset().await;
    let base = idp.server.uri();
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            // Without the configured issuer's trailing slash: not identical.
            "issuer": base,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
            "response_types_supported": ["code"],
        })))
        .mount(&idp.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [idp.key.public_jwk()]})),
        )
        .mount(&idp.server)
        .await;
    let providers = json!([
        {"id": A, "issuer": idp.issuer, "client_id": MOCK_CLIENT, "client_secret": MOCK_SECRET,
         "id_token_signed_response_alg": "ES256"},
        {"id": B, "issuer": idp.issuer, "client_id": MOCK_CLIENT, "client_secret": MOCK_SECRET,
         "id_token_signed_response_alg": "ES256", "discovery_mode": "insecure"},
    ])
    .to_string();
    let down = TestProvider::start_with(
        &db,
        &[("PROVIDER__UPSTREAM_OAUTH2__PROVIDERS", providers.as_str())],
    )
    .await;
    let browser = support::browser();

    let (status, page) = support::text(
        browser
            .get(down.url(&format!("/upstream/authorize/{A}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("differs from the configured"), "{page}");

    let response = browser
        .get(down.url(&format!("/upstream/authorize/{B}")))
        .send()
        .await
        .unwrap();
    let url = location(&response, &down.base_url);
    assert_eq!(url.path(), "/authorize");
    assert_eq!(param(&url, "code_challenge"), None, "auto without S256");
    let (state, nonce) = (param(&url, "state").unwrap(), param(&url, "nonce").unwrap());
    let id_token = idp
        .key
        .sign(&idp.claims(&nonce, db.clock.now().timestamp()))
        .unwrap();
    idp.token(
        200,
        json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}),
    )
    .await;
    let mut back = Url::parse(&down.url(&format!("/upstream/callback/{B}"))).unwrap();
    back.query_pairs_mut()
        .extend_pairs([("code", "c"), ("state", state.as_str())]);
    let response = browser.get(back).send().await.unwrap();
    let link = location(&response, &down.base_url);
    assert!(link.path().starts_with("/upstream/link/"), "{link}");

    let requests = idp.server.received_requests().await.unwrap();
    let fetched = |p: &str| requests.iter().filter(|r| r.url.path() == p).count();
    assert_eq!(fetched("/.well-known/openid-configuration"), 1, "cached");
    assert_eq!(fetched("/jwks"), 1);
}

backend_tests!(
    mock_provider_claims_and_pkce_never,
    mock_provider_faults,
    mock_provider_jwt_client_authentication,
    mock_provider_discovery_modes,
);
