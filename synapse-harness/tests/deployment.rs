//! The whole deployment against real Synapse 1.163.2: the provider (`provider::test_harness::
//! SynapseTestProvider`, on SQLite and PostgreSQL) in front of a real Synapse in
//! `matrix_authentication_service` mode, with nginx before both routing as
//! `deploy/nginx/matrix.conf` says. Clients are given nginx as their homeserver.
//!
//! What it holds (issue 13):
//! - refresh replay ends the session, and Synapse refuses the session's tokens at once (OAuth 2.0
//!   and the compat `/refresh`);
//! - a device ID claimed twice is one session; revoking the second ends it on Synapse at once;
//! - the full conformance suite (every profile) against a fresh deployment with the provider's
//!   default settings, rate limits included, has no MUST failure, skips exactly the checks the
//!   defaults explain ([`EXPECTED_SKIPS`]), and passes the compat SSO login through real
//!   Synapse and nginx.
//!
//! "At once" means: the very next request, with no waiting. Synapse caches a positive
//! introspection answer for 2 minutes (`synapse/api/auth/mas.py`, `_introspection_cache`) and
//! drops it only when a request finds the token's device missing; so every token below is used
//! at Synapse first (and cached there) before its session ends.
//!
//! Without python3 or nginx every case prints one skip line and passes; with `CI` set it fails.

use std::time::Duration;

use conformance::{Level, Options, Outcome};
use provider::{
    backend_tests,
    clock::SeededRngSource,
    core::passwords::{PasswordConfig, PasswordHasher},
    test_harness::{SynapseTestProvider, TestDb},
};
use serde_json::{json, Value};
use test_clients::{
    discovery,
    http::Http,
    oauth::{self, SignedIn},
    pages::Account,
    transcript::Transcript,
};

const PASSWORD: &str = "the deployment's password";

/// Adds a user with a password (hashed with the default scheme).
async fn add_user(db: &TestDb, username: &str, password: &str) {
    let hasher = PasswordHasher::new(
        PasswordConfig::default(),
        std::sync::Arc::new(SeededRngSource::new(5)),
    )
    .unwrap();
    let (version, hash) = hasher.hash(password.to_owned()).await.unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add(username).await.unwrap();
    repo.user_passwords()
        .add(user.id, &hash, version, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

/// The deployment with the provider's default settings and the password account `alice`;
/// `None` when the real Synapse cannot run here (the skip line is printed).
async fn deployment(db: &TestDb) -> Option<SynapseTestProvider> {
    add_user(db, "alice", PASSWORD).await;
    SynapseTestProvider::start(db).await
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET /_matrix/client/v3/account/whoami` through nginx: the status and the body.
async fn whoami(d: &SynapseTestProvider, token: &str) -> (u16, Value) {
    let response = plain()
        .get(
            d.homeserver_url()
                .join("_matrix/client/v3/account/whoami")
                .unwrap(),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Synapse accepts `token` as `@alice:localhost` on `device`.
async fn accepted(d: &SynapseTestProvider, token: &str, device: &str, what: &str) {
    let (status, body) = whoami(d, token).await;
    assert_eq!(status, 200, "{what}: {body}\n{}", d.log_tail(20));
    assert_eq!(body["user_id"], "@alice:localhost", "{what}");
    assert_eq!(body["device_id"], device, "{what}");
}

/// Synapse refuses `token` with 401 `M_UNKNOWN_TOKEN` (Matrix C-S API, "Using access tokens").
async fn refused(d: &SynapseTestProvider, token: &str, what: &str) {
    let (status, body) = whoami(d, token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "{what}: {body}\n{}",
        d.log_tail(20)
    );
}

async fn metadata(d: &SynapseTestProvider) -> Value {
    discovery::from_issuer(&Http::new(Transcript::new()), &d.base_url)
        .await
        .unwrap()
}

/// `alice` signs in with the code flow (a new public client each time) for a Matrix session on
/// `device` (MSC2967 scopes).
async fn sign_in(metadata: &Value, device: &str) -> SignedIn {
    let scope = format!("openid urn:matrix:client:api:* urn:matrix:client:device:{device}");
    let account = Account::SignIn {
        username: "alice".into(),
        password: PASSWORD.into(),
    };
    oauth::sign_in(
        &Http::browser(Transcript::new()),
        metadata,
        &scope,
        &account,
    )
    .await
    .unwrap()
}

fn field<'a>(tokens: &'a Value, name: &str) -> &'a str {
    tokens[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {tokens}"))
}

/// The refresh grant (RFC 6749 §6) as a public client: the status and the body.
async fn refresh_grant(metadata: &Value, client_id: &str, refresh_token: &str) -> (u16, Value) {
    let response = plain()
        .post(metadata["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// OAuth 2.0 refresh replay: after a refresh whose new access token Synapse has seen, the old
/// refresh token is presented again. The Matrix C-S API ("Refreshing access tokens") keeps it
/// valid only until a successor is used; RFC 9700 §4.14.2 ends the session. Synapse refuses the
/// new access token at once, though it cached it (the session's device is deleted), and the new
/// refresh token is dead.
async fn oauth2_refresh_replay_ends_the_session_on_synapse(db: TestDb) {
    let Some(d) = deployment(&db).await else {
        return;
    };
    let metadata = metadata(&d).await;
    let first = sign_in(&metadata, "REPLAYDEV1").await;
    let old_access = field(&first.tokens, "access_token");
    let old_refresh = field(&first.tokens, "refresh_token");
    accepted(&d, old_access, "REPLAYDEV1", "the first access token").await;

    let (status, second) = refresh_grant(&metadata, &first.client_id, old_refresh).await;
    assert_eq!(status, 200, "{second}");
    let new_access = field(&second, "access_token");
    let new_refresh = field(&second, "refresh_token");
    assert_ne!(new_refresh, old_refresh, "refresh tokens rotate");
    // The successor is used (Synapse introspects it, the provider records its first use), and
    // Synapse now holds it in its cache.
    accepted(&d, new_access, "REPLAYDEV1", "the refreshed access token").await;
    accepted(
        &d,
        new_access,
        "REPLAYDEV1",
        "the refreshed access token, cached",
    )
    .await;

    // The replay (RFC 6749 §5.2: invalid_grant).
    let (status, body) = refresh_grant(&metadata, &first.client_id, old_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    refused(
        &d,
        new_access,
        "the refreshed access token after the replay",
    )
    .await;
    refused(&d, old_access, "the first access token after the replay").await;
    let (status, body) = refresh_grant(&metadata, &first.client_id, new_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the refreshed refresh token after the replay: {body}"
    );
    d.stop().await;
}

/// A compat endpoint through nginx (the provider answers it): the status and the body.
async fn compat(d: &SynapseTestProvider, path: &str, body: &Value) -> (u16, Value) {
    let response = plain()
        .post(d.homeserver_url().join(path).unwrap())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The same through the compatibility layer: `m.login.password` with `refresh_token: true`,
/// `POST /refresh`, then the old refresh token again (Matrix C-S API, "Refreshing access
/// tokens"; the provider answers 401 `M_UNKNOWN_TOKEN` for an invalid refresh token).
async fn compat_refresh_replay_ends_the_session_on_synapse(db: TestDb) {
    let Some(d) = deployment(&db).await else {
        return;
    };
    let (status, login) = compat(
        &d,
        "_matrix/client/v3/login",
        &json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": PASSWORD,
            "device_id": "COMPATREPLAY",
            "refresh_token": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let old_access = field(&login, "access_token");
    let old_refresh = field(&login, "refresh_token");
    accepted(&d, old_access, "COMPATREPLAY", "the login's access token").await;

    let (status, second) = compat(
        &d,
        "_matrix/client/v3/refresh",
        &json!({"refresh_token": old_refresh}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let new_access = field(&second, "access_token");
    let new_refresh = field(&second, "refresh_token");
    accepted(&d, new_access, "COMPATREPLAY", "the refreshed access token").await;
    accepted(
        &d,
        new_access,
        "COMPATREPLAY",
        "the refreshed access token, cached",
    )
    .await;

    let (status, body) = compat(
        &d,
        "_matrix/client/v3/refresh",
        &json!({"refresh_token": old_refresh}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "the replay: {body}"
    );

    refused(
        &d,
        new_access,
        "the refreshed access token after the replay",
    )
    .await;
    refused(&d, old_access, "the login's access token after the replay").await;
    let (status, body) = compat(
        &d,
        "_matrix/client/v3/refresh",
        &json!({"refresh_token": new_refresh}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "the refreshed refresh token after the replay: {body}"
    );
    d.stop().await;
}

/// A device ID claimed twice: the second session of the same user on the same device ends the
/// first (a Matrix device is one session); revoking the second (RFC 7009) ends it, and Synapse
/// refuses both sessions' tokens at once, though it had cached both.
async fn a_device_claimed_twice_is_one_session_on_synapse(db: TestDb) {
    let Some(d) = deployment(&db).await else {
        return;
    };
    let metadata = metadata(&d).await;
    let first = sign_in(&metadata, "CLAIMED1").await;
    let first_access = field(&first.tokens, "access_token");
    accepted(&d, first_access, "CLAIMED1", "the first session").await;

    let second = sign_in(&metadata, "CLAIMED1").await;
    let second_access = field(&second.tokens, "access_token");
    accepted(&d, second_access, "CLAIMED1", "the second session").await;

    // The first session ended at the provider: its refresh token is dead, and introspection
    // (as Synapse asks it) calls its access token inactive.
    let (status, body) = refresh_grant(
        &metadata,
        &first.client_id,
        field(&first.tokens, "refresh_token"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the first session's refresh token: {body}"
    );
    let introspected: Value = plain()
        .post(metadata["introspection_endpoint"].as_str().unwrap())
        .bearer_auth(&d.settings.matrix.secret)
        .form(&[("token", first_access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], false, "{introspected}");
    // Synapse, though, still holds its cached answer for the first token: the device lives on
    // for the second session, and Synapse drops a cached answer only when a request finds the
    // device missing. Measured on Synapse 1.163.2 (asserted, so a change shows): the first
    // token keeps working there until its cache entry expires (2 minutes at most), or until
    // the device goes. No provider-side call can cut that short while the device must exist
    // (deleting and re-creating it on the claim would not either: the cache entry survives
    // unless a request with that very token arrives while the device is missing).
    let (status, _) = whoami(&d, first_access).await;
    eprintln!("the first session's cached token on Synapse after the claim: {status}");
    assert_eq!(
        status, 200,
        "Synapse no longer serves a claimed device's old token from its cache: update \
         core::sessions::claim_device's documentation and this test"
    );

    oauth::revoke(
        &Http::new(Transcript::new()),
        &metadata,
        &second.client_id,
        second_access,
    )
    .await
    .unwrap();
    refused(&d, second_access, "the revoked second session").await;
    refused(&d, first_access, "the ended first session").await;
    d.stop().await;
}

/// Keeps the provider's (mock) clock on the wall clock, as a deployment's clock is: the rate
/// limits refill and tokens age as they would. Stops when dropped.
struct WallClock(tokio::task::JoinHandle<()>);

impl WallClock {
    fn follow(db: &TestDb) -> Self {
        #[allow(clippy::disallowed_methods)] // the test stands in for the deployment's clock
        let now = || chrono::Utc::now();
        db.clock.advance(now() - db.clock.now_db());
        let clock = db.clock.clone();
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let behind = now() - clock.now_db();
                if behind > chrono::Duration::zero() {
                    clock.advance(behind);
                }
            }
        }))
    }
}

impl Drop for WallClock {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The checks that skip against the deployment with the provider's default settings, each for a
/// reason the defaults explain. Any other skip fails the test: a check that could not run
/// (a walk through the pages that broke, say) must not pass unnoticed.
const EXPECTED_SKIPS: &[&str] = &[
    // The provider doesn't offer client_secret_jwt (RFC 7523 §2.2): registration refuses it.
    "oauth2.token.client_secret_jwt",
    // Registration is closed by default: no `create` in prompt_values_supported.
    "matrix.metadata.prompt_create_accepted",
    // The suite was given its account, which may be an admin.
    "matrix.scope.admin_not_granted",
    // Synapse 1.163 no longer serves the unstable auth_issuer (optional since Matrix v1.15).
    "homeserver.auth_issuer",
];

/// Issue 13, acceptance: the whole conformance suite (every profile) against a freshly started
/// deployment with the provider's default settings (rate limits included; only a password
/// account added), real Synapse behind nginx as the homeserver: no MUST fails, every MUST runs
/// or is skipped for a stated reason that the defaults explain.
async fn the_full_conformance_suite_has_no_must_failure(db: TestDb) {
    let _clock = WallClock::follow(&db);
    let Some(d) = deployment(&db).await else {
        return;
    };
    let mut options = Options::new(d.base_url.clone());
    options.homeserver = Some(d.homeserver_url().clone());
    options.homeserver_secret = Some(d.settings.matrix.secret.clone());
    options.account = Some(("alice".into(), PASSWORD.into()));
    let report = conformance::run(&options).await;
    let text = report.render_text();
    eprintln!("{text}");

    let failed_musts: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.level == Level::Must && f.outcome.is_fail())
        .map(|f| f.id)
        .collect();
    assert!(
        report.passed_all_musts() && report.unreachable.is_none(),
        "MUSTs failed against the real deployment: {failed_musts:?}\n{text}\n{}",
        d.log_tail(30)
    );
    assert_eq!(report.exit_code(), 0, "{text}");
    // Every profile ran.
    for profile in conformance::Profile::ALL {
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.profile == profile && !f.outcome.is_skipped()),
            "nothing of {profile:?} ran\n{text}"
        );
    }
    // Exactly the expected checks are skipped, with their reasons (the default settings don't
    // offer everything, e.g. registration is closed); none is skipped for a rate limit.
    let skipped: Vec<(&str, &str)> = report
        .findings
        .iter()
        .filter_map(|f| match &f.outcome {
            Outcome::Skipped(why) => Some((f.id, why.as_str())),
            _ => None,
        })
        .collect();
    eprintln!("skipped: {skipped:#?}");
    let mut skipped_ids: Vec<&str> = skipped.iter().map(|(id, _)| *id).collect();
    skipped_ids.sort_unstable();
    let mut expected = EXPECTED_SKIPS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        skipped_ids, expected,
        "the skipped checks are not the expected ones: {skipped:#?}\nevery 429 of the run: {:#?}",
        report.rate_limits.events
    );
    assert!(
        skipped.iter().all(|(_, why)| !why.contains("rate limit")),
        "{skipped:#?}\nevery 429 of the run: {:#?}",
        report.rate_limits.events
    );
    // The compat SSO login (MSC3824) works through real Synapse and nginx: m.login.sso, the
    // provider's pages, the loginToken exchanged with m.login.token.
    let sso = report
        .finding("matrix.compat.sso_login")
        .map(|f| &f.outcome);
    assert!(
        matches!(sso, Some(o) if o.is_pass()),
        "matrix.compat.sso_login: {sso:?}\n{text}"
    );
    // The SHOULD on Synapse's client well-known holds now that public_baseurl is set.
    let well_known = report.finding("homeserver.well_known").map(|f| &f.outcome);
    assert!(
        matches!(well_known, Some(o) if o.is_pass()),
        "homeserver.well_known: {well_known:?}\n{text}"
    );
    eprintln!(
        "rate limits met: {} answers 429, waited {} ms",
        report.rate_limits.responses, report.rate_limits.waited_millis
    );
    d.stop().await;
}

backend_tests!(
    oauth2_refresh_replay_ends_the_session_on_synapse,
    compat_refresh_replay_ends_the_session_on_synapse,
    a_device_claimed_twice_is_one_session_on_synapse,
    the_full_conformance_suite_has_no_must_failure,
);
