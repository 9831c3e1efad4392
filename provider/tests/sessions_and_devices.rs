//! What a real deployment showed (issue 13), end to end against the fake homeserver, whose
//! introspection cache behaves like Synapse's (answers kept 2 minutes; only a device deletion
//! cuts that short):
//!
//! - refresh rotation: the previous refresh token may be retried only while neither new token
//!   was used, and only within `tokens.refresh_grace_seconds`; any other use, and any use of a
//!   successor such a retry revoked, ends the whole session (client-server API "Refreshing
//!   access tokens", RFC 9700 §4.14.2), OAuth 2.0 and compat alike;
//! - a Matrix device is one session: a new session claiming a device ID ends the one holding
//!   it, and ending a session deletes the device, so the homeserver stops accepting its tokens
//!   at once;
//! - compat SSO behind a reverse proxy: the browser is sent to the provider's public base, not
//!   to the host the request came in on.

mod support;

use chrono::Duration;
use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user, authorize_url, browser, http, json_of, location, param, static_client, submit,
};
use url::Url;

const PASSWORD: &str = "correct horse battery staple";
const DEVICE: &str = "SHAREDDEVICE01";

fn matrix(provider: &TestProvider, path: &str) -> Url {
    provider
        .homeserver
        .base_url()
        .join(&format!("_matrix/client/v3{path}"))
        .unwrap()
}

/// `whoami` on the homeserver: the status and the `errcode`, if any.
async fn whoami(provider: &TestProvider, token: &str) -> (u16, Option<String>) {
    let (status, _, body) = json_of(
        http()
            .get(matrix(provider, "/account/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body["errcode"].as_str().map(str::to_owned))
}

const UNKNOWN_TOKEN: (u16, Option<&str>) = (401, Some("M_UNKNOWN_TOKEN"));

async fn assert_refused(provider: &TestProvider, token: &str) {
    let (status, errcode) = whoami(provider, token).await;
    assert_eq!((status, errcode.as_deref()), UNKNOWN_TOKEN, "{token}");
}

async fn assert_served(provider: &TestProvider, token: &str) {
    assert_eq!(whoami(provider, token).await, (200, None), "{token}");
}

/// Introspection as the homeserver does it: is the token active?
async fn active(provider: &TestProvider, token: &str) -> bool {
    let (status, _, body) = json_of(
        http()
            .post(provider.url("/oauth2/introspect"))
            .bearer_auth(&provider.settings.matrix.secret)
            .header("X-MAS-Supports-Device-Id", "1")
            .form(&[("token", token)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["active"] == json!(true)
}

/// A `POST /oauth2/token` by the static (confidential) client.
async fn token(provider: &TestProvider, form: &[(&str, &str)]) -> (u16, Value) {
    let (id, secret) = static_client(provider);
    let (status, _, body) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

/// `(access, refresh)` of a token response.
fn pair(body: &Value) -> (String, String) {
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Follows an authorization URL through the pages (signing in as alice, allowing), also when
/// a page redirects on by itself (a consent given before is remembered): where the browser is
/// sent back to.
async fn sign_in_and_allow(base: &Url, url: &str) -> Url {
    let browser = browser();
    let mut next = location(&browser.get(url).send().await.unwrap(), base);
    while !next.as_str().starts_with(support::REDIRECT) {
        let page = browser.get(next.clone()).send().await.unwrap();
        if page.status().is_redirection() {
            next = location(&page, base);
            continue;
        }
        let html = page.text().await.unwrap();
        let fields: &[(&str, &str)] = if next.path() == "/login" {
            &[("username", "alice"), ("password", PASSWORD)]
        } else {
            &[("action", "allow")]
        };
        next = location(&submit(&browser, base, &html, fields).await, base);
    }
    next
}

/// Alice signs in through the code flow with the device scope of `device`: her tokens.
async fn oauth2_login(provider: &TestProvider, device: &str) -> (String, String) {
    let scope = format!("openid urn:matrix:client:api:* urn:matrix:client:device:{device}");
    let url = authorize_url(provider, &[("scope", &scope)]);
    let back = sign_in_and_allow(&provider.base_url, &url).await;
    let code = param(&back, "code").expect("a code");
    let (status, body) = token(
        provider,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", support::REDIRECT),
            ("code_verifier", support::VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    pair(&body)
}

async fn oauth2_refresh(provider: &TestProvider, refresh: &str) -> Result<(String, String), Value> {
    let (status, body) = token(
        provider,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    match status {
        200 => Ok(pair(&body)),
        _ => {
            assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
            Err(body)
        }
    }
}

/// Alice logs in with the legacy API for `device` (with a refresh token): her tokens.
async fn compat_login(provider: &TestProvider, device: &str) -> (String, String) {
    let (status, _, body) = json_of(
        http()
            .post(matrix(provider, "/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": PASSWORD,
                "device_id": device,
                "refresh_token": true,
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], device);
    pair(&body)
}

async fn compat_refresh(provider: &TestProvider, refresh: &str) -> Result<(String, String), Value> {
    let (status, _, body) = json_of(
        http()
            .post(matrix(provider, "/refresh"))
            .json(&json!({ "refresh_token": refresh }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    match status {
        200 => Ok(pair(&body)),
        _ => {
            assert_eq!((status, &body["errcode"]), (401, &json!("M_UNKNOWN_TOKEN")));
            Err(body)
        }
    }
}

/// Which API a refresh test drives.
#[derive(Clone, Copy)]
enum Api {
    OAuth2,
    Compat,
}

impl Api {
    async fn login(self, provider: &TestProvider) -> (String, String) {
        match self {
            Self::OAuth2 => oauth2_login(provider, DEVICE).await,
            Self::Compat => compat_login(provider, DEVICE).await,
        }
    }

    async fn refresh(
        self,
        provider: &TestProvider,
        refresh: &str,
    ) -> Result<(String, String), Value> {
        match self {
            Self::OAuth2 => oauth2_refresh(provider, refresh).await,
            Self::Compat => compat_refresh(provider, refresh).await,
        }
    }
}

/// The session ended: every token dead at introspection and on the homeserver at once (the
/// device is gone, which cuts the homeserver's cache short), refresh tokens refused.
async fn assert_session_ended(
    provider: &TestProvider,
    api: Api,
    access: &[&str],
    refresh: &[&str],
) {
    assert!(!provider.homeserver.store().has_device("alice", DEVICE));
    for token in access {
        assert!(!active(provider, token).await, "{token}");
        assert_refused(provider, token).await;
    }
    for token in refresh {
        assert!(api.refresh(provider, token).await.is_err(), "{token}");
    }
}

/// Refresh, the new access token used on the homeserver, then the old refresh token again:
/// the token leaked, the session ends (before the fix: another pair, the legitimate client's
/// revoked).
async fn replay_after_use_ends_the_session(db: TestDb, api: Api) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let (_, r1) = api.login(&provider).await;
    let (a2, r2) = api.refresh(&provider, &r1).await.unwrap();
    assert_served(&provider, &a2).await;
    // Still within the grace time: the use alone closes the window.
    assert!(api.refresh(&provider, &r1).await.is_err());
    assert_session_ended(&provider, api, &[&a2], &[&r2]).await;
    provider.stop().await;
}

/// A retry before any use, within the grace, gets a new pair once; after the new access token
/// is used, the old refresh token ends the session.
async fn retry_within_the_grace_works_until_use(db: TestDb, api: Api) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let (_, r1) = api.login(&provider).await;
    let (a2, _) = api.refresh(&provider, &r1).await.unwrap();
    db.clock.advance(Duration::seconds(30));
    let (a3, r3) = api.refresh(&provider, &r1).await.expect("a retry");
    assert_ne!(a3, a2);
    assert!(
        !active(&provider, &a2).await,
        "the unused pair was replaced"
    );
    assert_served(&provider, &a3).await;
    assert!(api.refresh(&provider, &r1).await.is_err());
    assert_session_ended(&provider, api, &[&a3], &[&r3]).await;
    provider.stop().await;
}

/// The successor a retry revoked, presented by the other holder: the session ends (before the
/// fix: an error for the legitimate client, the retrying party's session alive).
async fn a_successor_revoked_by_a_retry_ends_the_session(db: TestDb, api: Api) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let (_, r1) = api.login(&provider).await;
    let (_, r2) = api.refresh(&provider, &r1).await.unwrap();
    let (a3, r3) = api.refresh(&provider, &r1).await.expect("a retry");
    assert_served(&provider, &a3).await;
    assert!(api.refresh(&provider, &r2).await.is_err());
    assert_session_ended(&provider, api, &[&a3], &[&r3, &r1]).await;
    provider.stop().await;
}

/// A retry after the grace time, though nothing was used: the session ends.
async fn retry_after_the_grace_ends_the_session(db: TestDb, api: Api) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let grace = i64::from(provider.settings.refresh_grace_seconds);
    assert_eq!(grace, 60, "the default");
    let (_, r1) = api.login(&provider).await;
    let (a2, r2) = api.refresh(&provider, &r1).await.unwrap();
    db.clock.advance(Duration::seconds(grace));
    assert!(api.refresh(&provider, &r1).await.is_err());
    assert_session_ended(&provider, api, &[&a2], &[&r2]).await;
    provider.stop().await;
}

/// `tokens.refresh_grace_seconds: 0`: no retry at all.
async fn no_grace_no_retry(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__TOKENS__REFRESH_GRACE_SECONDS", "0")]).await;
    let (_, r1) = Api::OAuth2.login(&provider).await;
    let (a2, _) = Api::OAuth2.refresh(&provider, &r1).await.unwrap();
    assert!(Api::OAuth2.refresh(&provider, &r1).await.is_err());
    assert!(!active(&provider, &a2).await);
    provider.stop().await;
}

async fn oauth2_replay_after_use_ends_the_session(db: TestDb) {
    replay_after_use_ends_the_session(db, Api::OAuth2).await;
}
async fn compat_replay_after_use_ends_the_session(db: TestDb) {
    replay_after_use_ends_the_session(db, Api::Compat).await;
}
async fn oauth2_retry_within_the_grace_works_until_use(db: TestDb) {
    retry_within_the_grace_works_until_use(db, Api::OAuth2).await;
}
async fn compat_retry_within_the_grace_works_until_use(db: TestDb) {
    retry_within_the_grace_works_until_use(db, Api::Compat).await;
}
async fn oauth2_a_successor_revoked_by_a_retry_ends_the_session(db: TestDb) {
    a_successor_revoked_by_a_retry_ends_the_session(db, Api::OAuth2).await;
}
async fn compat_a_successor_revoked_by_a_retry_ends_the_session(db: TestDb) {
    a_successor_revoked_by_a_retry_ends_the_session(db, Api::Compat).await;
}
async fn oauth2_retry_after_the_grace_ends_the_session(db: TestDb) {
    retry_after_the_grace_ends_the_session(db, Api::OAuth2).await;
}
async fn compat_retry_after_the_grace_ends_the_session(db: TestDb) {
    retry_after_the_grace_ends_the_session(db, Api::Compat).await;
}

/// Signing in twice with one device ID, through `first` then `second`: the first session ends
/// (inactive at introspection at once), the second works on the same device, and revoking it
/// deletes the device, so the homeserver refuses both tokens at once although it cached their
/// introspection answers. (Before the fix, the first session kept the device, and the
/// homeserver kept serving the revoked token from its cache.)
///
/// The first token stays in the homeserver's cache until the device is deleted: Synapse only
/// drops a cached answer when a request finds the device missing (`synapse/api/auth/mas.py`),
/// and the device lives on for the second session.
async fn second_login_on_a_device(db: TestDb, first: Api, second: Api) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let (a1, r1) = first.login(&provider).await;
    assert_served(&provider, &a1).await; // now in the homeserver's cache
    let (a2, r2) = second.login(&provider).await;
    assert!(!active(&provider, &a1).await);
    assert!(first.refresh(&provider, &r1).await.is_err());
    assert!(provider.homeserver.store().has_device("alice", DEVICE));
    assert_served(&provider, &a2).await; // cached too
                                         // The second session ends (revocation; compat: logout): refused at once.
    match second {
        Api::OAuth2 => {
            let (id, secret) = static_client(&provider);
            let response = http()
                .post(provider.url("/oauth2/revoke"))
                .basic_auth(id, Some(secret))
                .form(&[("token", r2.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        Api::Compat => {
            let response = http()
                .post(matrix(&provider, "/logout"))
                .bearer_auth(&a2)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    assert!(!provider.homeserver.store().has_device("alice", DEVICE));
    assert_refused(&provider, &a2).await;
    assert_refused(&provider, &a1).await;
    provider.stop().await;
}

async fn second_oauth2_login_on_a_device(db: TestDb) {
    second_login_on_a_device(db, Api::OAuth2, Api::OAuth2).await;
}
async fn compat_login_on_an_oauth2_device(db: TestDb) {
    second_login_on_a_device(db, Api::OAuth2, Api::Compat).await;
}
async fn oauth2_login_on_a_compat_device(db: TestDb) {
    second_login_on_a_device(db, Api::Compat, Api::OAuth2).await;
}
async fn second_compat_login_on_a_device(db: TestDb) {
    second_login_on_a_device(db, Api::Compat, Api::Compat).await;
}

backend_tests!(
    oauth2_replay_after_use_ends_the_session,
    compat_replay_after_use_ends_the_session,
    oauth2_retry_within_the_grace_works_until_use,
    compat_retry_within_the_grace_works_until_use,
    oauth2_a_successor_revoked_by_a_retry_ends_the_session,
    compat_a_successor_revoked_by_a_retry_ends_the_session,
    oauth2_retry_after_the_grace_ends_the_session,
    compat_retry_after_the_grace_ends_the_session,
    no_grace_no_retry,
    second_oauth2_login_on_a_device,
    compat_login_on_an_oauth2_device,
    oauth2_login_on_a_compat_device,
    second_compat_login_on_a_device,
);

/// Compat SSO behind a reverse proxy: `…/login/sso/redirect` arrives with the homeserver's
/// `Host` (the proxy forwards it), and must send the browser to the provider's public base
/// (`http.public_base`), never to the request's host, where the homeserver answers 404.
async fn compat_sso_redirect_goes_to_the_public_base(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let public_base = provider.settings.public_base.clone();
    let url = format!(
        "{}_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example%2Fsso",
        provider.base_url
    );
    let response = http()
        .get(&url)
        .header("Host", "matrix.example.org")
        .header("X-Forwarded-Host", "matrix.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let target = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        target.starts_with(&format!("{public_base}complete-compat-sso/")),
        "{target}"
    );
    // The page is there, on the public base, and sends who is not signed in to sign in, on the
    // public base too.
    let page = browser().get(&target).send().await.unwrap();
    assert_eq!(page.status(), 303);
    let sign_in = page.headers()["location"].to_str().unwrap();
    assert!(
        sign_in.starts_with(&format!("{public_base}login?next=")),
        "{sign_in}"
    );
    provider.stop().await;
}

backend_tests!(compat_sso_redirect_goes_to_the_public_base);
