//! Reality (DESIGN.md, "Tests"): the scripted clients of the `test-clients` crate and the
//! conformance suite's homeserver profile against the provider in front of a real Synapse
//! (PyPI `matrix-synapse`, pinned in `synapse-harness`, `matrix_authentication_service` mode)
//! with Debian's nginx before both, routing as `deploy/nginx/matrix.conf` says. The clients are
//! given nginx as their homeserver, exactly as a Matrix client would be; on SQLite and
//! PostgreSQL.
//!
//! Without python3 or nginx every case prints one skip line and passes; with `CI` set it fails
//! instead (synapse-harness's `prepare`).

mod support;

use std::time::Duration;

use conformance::{Level, Options, Outcome, Profile};
use provider::{
    backend_tests,
    test_harness::{SynapseTestProvider, TestDb},
};
use support::add_user;
use test_clients::{
    journeys::{
        self, AwareOptions, DeviceOptions, LegacyOptions, NativeOptions, SharedRng, Sleeper,
    },
    pages::Account,
    transcript::Transcript,
};

const PASSWORD: &str = "the journeys' password";

/// The deployment with `alice` (a password account) and open registration; `None` when the
/// real Synapse cannot run here (the skip line is printed once).
async fn deployment(db: &TestDb, extra: &[(&str, &str)]) -> Option<SynapseTestProvider> {
    add_user(db, "alice", PASSWORD).await;
    let mut overrides = vec![("PROVIDER__ACCOUNT__REGISTRATION", "true")];
    overrides.extend_from_slice(extra);
    SynapseTestProvider::start_with(db, &overrides).await
}

fn alice() -> Account {
    Account::SignIn {
        username: "alice".into(),
        password: PASSWORD.into(),
    }
}

/// A journey's failure: what went wrong, what the client saw, and what Synapse and nginx logged.
fn failed(
    deployment: &SynapseTestProvider,
    error: impl std::fmt::Display,
    transcript: &Transcript,
) -> String {
    format!(
        "{error}\n{}\n{}",
        transcript.render_text(),
        deployment.log_tail(30)
    )
}

/// Whether Synapse knows the user (`GET /_synapse/mas/query_user`, Synapse
/// `synapse/rest/synapse/mas/users.py`: 200 with the user, 404 when unknown), asked with the
/// shared secret, as the provider would.
async fn synapse_knows(deployment: &SynapseTestProvider, localpart: &str) -> bool {
    let mut url = deployment
        .synapse()
        .url()
        .join("_synapse/mas/query_user")
        .unwrap();
    url.query_pairs_mut().append_pair("localpart", localpart);
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .bearer_auth(&deployment.settings.matrix.secret)
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        status == 200 || status == 404,
        "query_user answered {status}"
    );
    status == 200
}

async fn oidc_native_signs_in(db: TestDb) {
    let Some(deployment) = deployment(&db, &[]).await else {
        return;
    };
    let transcript = Transcript::new();
    let mut options = NativeOptions::new(
        deployment.homeserver_url().clone(),
        alice(),
        SharedRng::seeded(1),
    );
    options.device_id = Some("NATIVEDEV1".into());
    let report = journeys::oidc_native(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{}", failed(&deployment, e, &transcript)));
    assert_eq!(report.user_id, "@alice:localhost");
    assert_eq!(report.device_id, "NATIVEDEV1");
    assert_eq!(report.issuer, deployment.base_url.as_str());
    // The end_session_endpoint is advertised, so the RP-initiated logout ran (and the logged
    // out session's token was refused by Synapse).
    assert!(report.logged_out);
    deployment.stop().await;
}

async fn oidc_native_registers(db: TestDb) {
    let Some(deployment) = deployment(&db, &[]).await else {
        return;
    };
    assert!(!synapse_knows(&deployment, "newcomer").await);
    let transcript = Transcript::new();
    let account = Account::Register {
        username: "newcomer".into(),
        password: PASSWORD.into(),
    };
    let options = NativeOptions::new(
        deployment.homeserver_url().clone(),
        account,
        SharedRng::seeded(2),
    );
    let report = journeys::oidc_native(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{}", failed(&deployment, e, &transcript)));
    assert_eq!(report.user_id, "@newcomer:localhost");
    // Registration at the provider provisioned the account on Synapse.
    assert!(synapse_knows(&deployment, "newcomer").await);
    deployment.stop().await;
}

async fn oidc_aware_login_and_register(db: TestDb) {
    let Some(deployment) = deployment(&db, &[]).await else {
        return;
    };
    for account in [
        alice(),
        Account::Register {
            username: "ssouser".into(),
            password: PASSWORD.into(),
        },
    ] {
        let transcript = Transcript::new();
        let options = AwareOptions::new(deployment.homeserver_url().clone(), account.clone());
        let report = journeys::oidc_aware(&options, &transcript)
            .await
            .unwrap_or_else(|e| panic!("{}", failed(&deployment, e, &transcript)));
        assert_eq!(report.user_id, format!("@{}:localhost", account.username()));
    }
    assert!(synapse_knows(&deployment, "ssouser").await);
    deployment.stop().await;
}

async fn legacy_client(db: TestDb) {
    let Some(deployment) = deployment(&db, &[]).await else {
        return;
    };
    let transcript = Transcript::new();
    let options = LegacyOptions::new(deployment.homeserver_url().clone(), "alice", PASSWORD);
    let report = journeys::legacy(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{}", failed(&deployment, e, &transcript)));
    assert_eq!(report.user_id, "@alice:localhost");
    assert_ne!(report.device_id, report.refresh_device_id);
    deployment.stop().await;
}

async fn device_client_approves_itself(db: TestDb) {
    let Some(deployment) = deployment(&db, &[]).await else {
        return;
    };
    let transcript = Transcript::new();
    let mut options = DeviceOptions::new(
        deployment.homeserver_url().clone(),
        Some(alice()),
        SharedRng::seeded(3),
    );
    // The provider runs on a frozen clock: waiting the polling interval moves it instead.
    // (Synapse only ever sees `expires_in`, relative to its own clock.)
    let clock = db.clock.clone();
    options.sleep = Sleeper::new(move |wait: Duration| {
        clock.advance(chrono::Duration::from_std(wait).unwrap_or_default());
        async {}
    });
    let report = journeys::device(&options, &transcript)
        .await
        .unwrap_or_else(|e| panic!("{}", failed(&deployment, e, &transcript)));
    assert_eq!(report.user_id, "@alice:localhost");
    assert!(report.approved_here);
    assert!(report.verification_uri_complete.is_some());
    deployment.stop().await;
}

/// The conformance suite's homeserver profile, with nginx as the homeserver and the shared
/// secret: no MUST fails.
async fn homeserver_profile_has_no_must_failure(db: TestDb) {
    // The suite reads ID token times with the wall clock: move the provider's (frozen) test
    // clock there.
    #[allow(clippy::disallowed_methods)]
    let wall = chrono::Utc::now();
    db.clock.advance(wall - db.clock.now_db());
    let Some(deployment) = deployment(&db, &[]).await else {
        return;
    };
    let mut options = Options::new(deployment.base_url.clone());
    options.profiles = vec![Profile::MatrixHomeserver];
    options.homeserver = Some(deployment.homeserver_url().clone());
    options.homeserver_secret = Some(deployment.settings.matrix.secret.clone());
    let report = conformance::run(&options).await;

    let failed_musts: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.level == Level::Must && f.outcome.is_fail())
        .map(|f| f.id)
        .collect();
    assert!(
        report.passed_all_musts(),
        "MUSTs failed against real Synapse: {failed_musts:?}\n{}\n{}",
        report.render_text(),
        deployment.log_tail(30)
    );
    assert_eq!(report.exit_code(), 0);
    // Every finding is the homeserver profile's, and the MUSTs ran rather than skipped.
    assert!(report
        .findings
        .iter()
        .all(|f| f.profile == Profile::MatrixHomeserver));
    let skipped_musts: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.level == Level::Must && matches!(f.outcome, Outcome::Skipped(_)))
        .map(|f| f.id)
        .collect();
    assert!(
        skipped_musts.is_empty(),
        "MUSTs skipped: {skipped_musts:?}\n{}",
        report.render_text()
    );
    // The SHOULDs and MAYs are shown for the report, not asserted: some depend on Synapse.
    eprintln!("{}", report.render_text());
    deployment.stop().await;
}

backend_tests!(
    oidc_native_signs_in,
    oidc_native_registers,
    oidc_aware_login_and_register,
    legacy_client,
    device_client_approves_itself,
    homeserver_profile_has_no_must_failure
);
