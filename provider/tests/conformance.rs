//! The conformance suite (the `conformance` crate, HTTP only) against the provider and the fake
//! homeserver in this process, on SQLite and PostgreSQL: every profile, with the homeserver and
//! its shared secret, and every MUST must hold. The report is rendered in all four formats.

use conformance::{Level, Options, Outcome};
use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};

async fn every_must_passes(db: TestDb) {
    // The suite signs client assertions and reads ID token times with the wall clock: move the
    // provider's (frozen) test clock there.
    #[allow(clippy::disallowed_methods)]
    let wall = chrono::Utc::now();
    db.clock.advance(wall - db.clock.now_db());
    // Registration open: the suite creates its own accounts with prompt=create. The static
    // client may use client_credentials. The suite signs in some 30 times from one address in
    // a few seconds (and the test clock doesn't move): more than the per-IP sign-in limit lets
    // through (README "Rate limits"), so it is raised, as for any deployment the suite is
    // pointed at from one machine.
    let provider = TestProvider::start_with(
        &db,
        &[
            ("PROVIDER__ACCOUNT__REGISTRATION", "true"),
            (
                "PROVIDER__CLIENTS__0__GRANT_TYPES",
                "[authorization_code, refresh_token, client_credentials]",
            ),
            ("PROVIDER__RATE_LIMITING__LOGIN__PER_IP__BURST", "200"),
        ],
    )
    .await;
    let mut options = Options::new(provider.base_url.clone());
    options.homeserver = Some(provider.homeserver.base_url().clone());
    options.homeserver_secret = Some(provider.settings.matrix.secret.clone());
    let report = conformance::run(&options).await;

    let failed_musts: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.level == Level::Must && matches!(f.outcome, Outcome::Fail { .. }))
        .map(|f| f.id.to_string())
        .collect();
    assert!(
        report.passed_all_musts(),
        "MUSTs failed: {failed_musts:?}\n{}",
        report.render_text()
    );
    assert_eq!(report.exit_code(), 0);
    // Nothing our deployment offers is skipped for want of an account or a homeserver.
    let skipped: Vec<String> = report
        .findings
        .iter()
        .filter(|f| matches!(f.outcome, Outcome::Skipped(_)))
        .map(|f| f.id.to_string())
        .collect();
    let failed: Vec<String> = report.failed_ids().iter().map(|s| s.to_string()).collect();
    // Our own deployment passes the SHOULDs and MAYs too.
    assert!(
        failed.is_empty(),
        "failed: {failed:?}\n{}",
        report.render_text()
    );
    // The two skips: registration refuses client_secret_jwt (a shared-secret JWT needs the
    // secret in clear at the provider; private_key_jwt is offered instead), and the homeserver
    // doesn't serve the unstable `auth_issuer` any more (Synapse 1.163 answers 404 there; the
    // fake homeserver follows it).
    assert_eq!(
        skipped,
        ["oauth2.token.client_secret_jwt", "homeserver.auth_issuer"]
    );
    assert!(report.findings.len() >= 80);

    // The four formats.
    let text = report.render_text();
    assert!(text.contains("PASS"));
    let json: serde_json::Value = serde_json::from_str(&report.render_json()).unwrap();
    assert!(json.is_object() || json.is_array());
    let junit = report.render_junit();
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(junit.contains("<testsuite"));
    let markdown = report.render_markdown();
    assert!(markdown.contains("| Requirement | Spec | Level | Result |"));
}

backend_tests!(every_must_passes);
