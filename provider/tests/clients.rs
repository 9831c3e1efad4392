//! The scripted clients of the `test-clients` crate, each through its whole journey, against the
//! provider and the fake homeserver in this process, on SQLite and PostgreSQL. The clients
//! speak HTTP only: they see exactly what a Matrix client would.

mod support;

use std::time::Duration;

use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use support::add_user;
use test_clients::{
    bench::{self, BenchOptions, Target},
    journeys::{
        self, AwareOptions, DeviceOptions, LegacyOptions, NativeOptions, SharedRng, Sleeper,
    },
    pages::Account,
    transcript::Transcript,
};

const PASSWORD: &str = "the journeys' password";

async fn provider_with_alice(db: &TestDb) -> TestProvider {
    add_user(db, "alice", PASSWORD).await;
    TestProvider::start_with(
        db,
        &[
            ("PROVIDER__ACCOUNT__REGISTRATION", "true"),
            // The static client may use client_credentials (the bench drives it).
            (
                "PROVIDER__CLIENTS__0__GRANT_TYPES",
                "[authorization_code, refresh_token, client_credentials]",
            ),
        ],
    )
    .await
}

fn alice() -> Account {
    Account::SignIn {
        username: "alice".into(),
        password: PASSWORD.into(),
    }
}

/// The transcript never shows the password, whatever the journey did.
fn assert_no_secrets(transcript: &Transcript) {
    let text = transcript.render_text();
    assert!(!text.contains(PASSWORD), "the password leaked");
    assert!(!transcript.to_json().to_string().contains(PASSWORD));
}

async fn oidc_native_signs_in(db: TestDb) {
    let provider = provider_with_alice(&db).await;
    let homeserver = provider.homeserver.base_url().clone();
    let transcript = Transcript::new();
    let mut options = NativeOptions::new(homeserver, alice(), SharedRng::seeded(1));
    options.device_id = Some("NATIVEDEV1".into());
    let report = journeys::oidc_native(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", transcript.render_text()));
    assert_eq!(report.user_id, "@alice:localhost");
    assert_eq!(report.device_id, "NATIVEDEV1");
    assert!(report.logged_out);
    // Revoked, then logged out: neither device is left on the homeserver.
    assert!(provider.homeserver.store().devices("alice").is_empty());
    assert_no_secrets(&transcript);
}

async fn oidc_native_registers(db: TestDb) {
    let provider = provider_with_alice(&db).await;
    let homeserver = provider.homeserver.base_url().clone();
    let transcript = Transcript::new();
    let account = Account::Register {
        username: "newcomer".into(),
        password: PASSWORD.into(),
    };
    let options = NativeOptions::new(homeserver, account, SharedRng::seeded(2));
    let report = journeys::oidc_native(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", transcript.render_text()));
    assert_eq!(report.user_id, "@newcomer:localhost");
    assert!(provider.homeserver.store().user("newcomer").is_some());
}

async fn oidc_aware_login_and_register(db: TestDb) {
    let provider = provider_with_alice(&db).await;
    let homeserver = provider.homeserver.base_url().clone();
    for account in [
        alice(),
        Account::Register {
            username: "ssouser".into(),
            password: PASSWORD.into(),
        },
    ] {
        let transcript = Transcript::new();
        let options = AwareOptions::new(homeserver.clone(), account.clone());
        let report = journeys::oidc_aware(&options, &transcript)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", transcript.render_text()));
        assert_eq!(report.user_id, format!("@{}:localhost", account.username()));
        assert_no_secrets(&transcript);
    }
}

async fn legacy_client(db: TestDb) {
    let provider = provider_with_alice(&db).await;
    let homeserver = provider.homeserver.base_url().clone();
    let transcript = Transcript::new();
    let options = LegacyOptions::new(homeserver, "alice", PASSWORD);
    let report = journeys::legacy(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", transcript.render_text()));
    assert_eq!(report.user_id, "@alice:localhost");
    // Both logins ended with /logout: their devices are gone.
    assert!(provider.homeserver.store().devices("alice").is_empty());
    assert_no_secrets(&transcript);
}

async fn device_client_approves_itself(db: TestDb) {
    let provider = provider_with_alice(&db).await;
    let homeserver = provider.homeserver.base_url().clone();
    let transcript = Transcript::new();
    let mut options = DeviceOptions::new(homeserver, Some(alice()), SharedRng::seeded(3));
    // The provider runs on a frozen clock: waiting the polling interval moves it instead.
    let clock = db.clock.clone();
    options.sleep = Sleeper::new(move |wait: Duration| {
        clock.advance(chrono::Duration::from_std(wait).unwrap_or_default());
        async {}
    });
    let report = journeys::device(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", transcript.render_text()));
    assert_eq!(report.user_id, "@alice:localhost");
    assert!(report.approved_here);
    assert!(report.verification_uri_complete.is_some());
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", &report.device_id));
}

/// The load generator drives each hot path and counts successes; the figures themselves are
/// for the README, not for a test.
async fn bench_drives_every_path(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    // The load runs as fast as the machine allows from one address: the sign-in limits
    // (`login.per_ip` lets 20 through at once) are raised as `scripts/bench.sh` raises them,
    // or a fast machine's 21st sign-in is refused with 429 and counted as an error.
    let provider = TestProvider::start_with(
        &db,
        &[
            (
                "PROVIDER__CLIENTS__0__GRANT_TYPES",
                "[authorization_code, refresh_token, client_credentials]",
            ),
            ("PROVIDER__RATE_LIMITING__LOGIN__PER_IP__BURST", "100000"),
            (
                "PROVIDER__RATE_LIMITING__LOGIN__PER_IP__PER_SECOND",
                "100000",
            ),
        ],
    )
    .await;
    let (client_id, secret) = support::static_client(&provider);
    let options = BenchOptions {
        issuer: provider.base_url.clone(),
        homeserver: Some(provider.homeserver.base_url().clone()),
        concurrency: 2,
        duration: Duration::from_millis(300),
        targets: vec![
            Target::Introspection,
            Target::Refresh,
            Target::ClientCredentials,
            Target::PasswordLogin,
        ],
        account: alice(),
        homeserver_secret: Some(provider.settings.matrix.secret.clone()),
        client: Some((client_id, secret)),
    };
    let transcript = Transcript::new();
    let figures = bench::run(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", transcript.render_text()));
    assert_eq!(figures.len(), 4);
    for f in &figures {
        assert!(f.ok > 0, "{f}");
        assert_eq!(f.errors, 0, "{f}");
        assert!(f.p50 <= f.p99 && f.p99 <= f.max, "{f}");
    }
}

backend_tests!(
    oidc_native_signs_in,
    oidc_native_registers,
    oidc_aware_login_and_register,
    legacy_client,
    device_client_approves_itself,
    bench_drives_every_path
);
