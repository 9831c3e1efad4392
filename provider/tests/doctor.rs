//! `provider doctor`, run as a subprocess against a running provider and a homeserver: the
//! fake homeserver well configured (every check ✅, exit 0), then broken in the ways operators
//! break it (wrong shared secret, homeserver down, `/login` not routed to the provider, another
//! provider's metadata, the MAS API missing), each a ❌ line with a hint and exit status 1.

// The clock test sets a homeserver `Date` relative to the real wall clock (the doctor reads the
// real one); the clock rule of `clippy.toml` is for request code.
#![allow(clippy::disallowed_methods)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use provider::{
    backend_tests,
    config::GenerateOptions,
    test_harness::{TestDb, TestProvider},
};
use rand::SeedableRng as _;
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

/// What one run printed.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The line of check `name` (`<icon> <name>: …`).
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}: ")))
            })
            .unwrap_or_else(|| panic!("no `{name}` line in\n{}", self.stdout))
    }

    fn assert_ok(&self, name: &str) {
        let line = self.line(name);
        assert!(line.starts_with("✅ "), "{line}\n{self:#?}");
    }

    /// Asserts a ❌ line for `name` containing `message` and a hint containing `hint`.
    fn assert_failed(&self, name: &str, message: &str, hint: &str) {
        let line = self.line(name);
        assert!(line.starts_with("❌ "), "{line}");
        let (said, fix) = line
            .split_once(" → ")
            .unwrap_or_else(|| panic!("no hint in {line}"));
        assert!(said.contains(message), "{message} in {line}");
        assert!(fix.contains(hint), "{hint} in {line}");
    }
}

/// A temporary directory holding a configuration for `provider`'s issuer, database and keys
/// (the same seed as the test harness), with the homeserver at `homeserver_endpoint`.
struct Setup {
    dir: tempfile::TempDir,
    secret: String,
}

impl Setup {
    fn new(db: &TestDb, provider: &TestProvider, homeserver_endpoint: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = GenerateOptions {
            issuer: provider.base_url.to_string(),
            listen: "127.0.0.1:8080".to_owned(),
            database_url: db.url.clone(),
            homeserver: provider.settings.matrix.homeserver.clone(),
            homeserver_endpoint: homeserver_endpoint.to_owned(),
        };
        let text = provider::config::generate(
            &mut rand::rngs::StdRng::seed_from_u64(7),
            db.clock.as_ref(),
            &options,
        )
        .unwrap();
        std::fs::write(dir.path().join("provider.yaml"), text).unwrap();
        Self {
            dir,
            secret: provider.settings.matrix.secret.clone(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("provider.yaml")
    }

    /// `provider doctor -c provider.yaml ARGS…` with the provider's shared secret (or
    /// `secret`).
    async fn doctor(&self, args: &[&str], secret: Option<&str>) -> Output {
        let secret = secret.unwrap_or(self.secret.as_str()).to_owned();
        self.doctor_env(args, &[("PROVIDER__MATRIX__SECRET", secret.as_str())])
            .await
    }

    /// `provider doctor -c provider.yaml ARGS…` with the provider's shared secret and `env`,
    /// off the async runtime (the servers it talks to run on it).
    async fn doctor_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_provider"));
        command
            .arg("doctor")
            .arg("-c")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("PROVIDER") || text == "RUST_LOG" || text == "NO_COLOR" {
                command.env_remove(&name);
            }
        }
        command.env("PROVIDER__MATRIX__SECRET", &self.secret);
        command.envs(env.iter().copied());
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let out = Output {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        assert!(
            !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
            "{out:#?}"
        );
        out
    }
}

/// The check names, in the order they are printed.
const CHECKS: [&str; 11] = [
    "signing keys",
    "database",
    "issuer",
    "public base",
    "published keys",
    "homeserver well-known",
    "client versions",
    "auth_metadata",
    "shared secret",
    "legacy login",
    "clock",
];

async fn a_well_configured_deployment_passes(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let setup = Setup::new(&db, &provider, provider.homeserver.base_url().as_str());
    let out = setup.doctor(&[], None).await;
    assert_eq!(out.code, Some(0), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), CHECKS.len() + 1, "{}", out.stdout);
    // A PostgreSQL server with autovacuum off (as the CI machine's is) is a warning, which
    // leaves the exit status 0.
    let autovacuum_off = db.storage.autovacuum_off().await.unwrap();
    for (line, name) in lines.iter().zip(CHECKS) {
        if name == "database" && autovacuum_off {
            assert!(line.starts_with("⚠️ database: "), "{line}");
            assert!(line.contains("autovacuum is off → "), "{line}");
            assert!(line.contains("VACUUM ANALYZE"), "{line}");
            continue;
        }
        assert!(line.starts_with(&format!("✅ {name}: ")), "{line}");
        assert!(!line.contains(" → "), "no hint on a passing check: {line}");
    }
    let summary = if autovacuum_off {
        "10 passed, 1 warning, 0 failed"
    } else {
        "11 passed, 0 warnings, 0 failed"
    };
    assert_eq!(lines[CHECKS.len()], summary);
    // Plain text on a pipe: no colour codes.
    assert!(!out.stdout.contains('\x1b'));
    assert!(out.line("issuer").contains(provider.base_url.as_str()));
    assert!(out
        .line("signing keys")
        .contains("RSA 2048 bits, EC P-256; RS256 available"));
    assert!(out.line("legacy login").contains("m.login.password"));

    // The same, for machines.
    let out = setup.doctor(&["--json"], None).await;
    assert_eq!(out.code, Some(0), "{out:#?}");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), CHECKS.len());
    for (check, name) in checks.iter().zip(CHECKS) {
        assert_eq!(check["name"], name);
        if name == "database" && autovacuum_off {
            assert_eq!(check["status"], "warn", "{check}");
            continue;
        }
        assert_eq!(check["status"], "ok", "{check}");
        assert!(check.get("hint").is_none());
    }
    provider.stop().await;
}

async fn a_wrong_shared_secret_fails_with_a_hint(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let setup = Setup::new(&db, &provider, provider.homeserver.base_url().as_str());
    let out = setup.doctor(&[], Some("not-the-secret-0123456789")).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    out.assert_failed(
        "shared secret",
        // Real Synapse (and the fake, which follows it) answers a wrong secret 403 M_UNKNOWN
        // (synapse/rest/synapse/mas/_base.py).
        "refused matrix.secret (HTTP 403)",
        "make matrix.secret equal the homeserver's matrix_authentication_service.secret",
    );
    // Everything else still works.
    for name in [
        "issuer",
        "homeserver well-known",
        "auth_metadata",
        "legacy login",
    ] {
        out.assert_ok(name);
    }
    let summary = if db.storage.autovacuum_off().await.unwrap() {
        "9 passed, 1 warning, 1 failed\n"
    } else {
        "10 passed, 0 warnings, 1 failed\n"
    };
    assert!(out.stdout.ends_with(summary), "{}", out.stdout);

    let out = setup
        .doctor(&["--json"], Some("not-the-secret-0123456789"))
        .await;
    assert_eq!(out.code, Some(1));
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["name"], "shared secret");
    assert!(failed[0]["hint"]
        .as_str()
        .unwrap()
        .contains("matrix.secret"));
    provider.stop().await;
}

async fn a_homeserver_that_is_down_fails(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let setup = Setup::new(&db, &provider, &format!("http://{closed}/"));
    let out = setup.doctor(&[], None).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    // The provider side is fine (the database answers; a warning about its autovacuum is not
    // a failure).
    assert!(!out.line("database").starts_with("❌ "), "{out:#?}");
    for name in ["signing keys", "issuer", "public base", "published keys"] {
        out.assert_ok(name);
    }
    out.assert_failed(
        "homeserver well-known",
        &format!("http://{closed}/.well-known/matrix/client: can't connect"),
        "serve {\"m.homeserver\"",
    );
    out.assert_failed(
        "client versions",
        "the homeserver is unreachable",
        "start the homeserver",
    );
    out.assert_failed("auth_metadata", "can't connect", "start the homeserver");
    out.assert_failed(
        "shared secret",
        "the homeserver API is unreachable",
        "fix matrix.endpoint",
    );
    out.assert_failed("legacy login", "can't connect", "start the homeserver");
    let clock = out.line("clock");
    assert!(clock.starts_with("⚠️ clock: not measured"), "{clock}");
    provider.stop().await;
}

/// A homeserver that doesn't proxy `/login` to the provider answers it itself (here: not at all).
async fn a_login_not_routed_to_the_provider_fails(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let homeserver = fake_homeserver::FakeHomeserver::start_on(
        fake_homeserver::Config {
            server_name: provider.settings.matrix.homeserver.clone(),
            provider_endpoint: provider.base_url.clone(),
            secret: provider.settings.matrix.secret.clone(),
            proxy_login: false,
            public_base: None,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let setup = Setup::new(&db, &provider, homeserver.base_url().as_str());
    let out = setup.doctor(&[], None).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    out.assert_failed(
        "legacy login",
        "/_matrix/client/v3/login answered HTTP 404 Not Found M_UNRECOGNIZED",
        &format!("to {}", provider.base_url),
    );
    for name in [
        "homeserver well-known",
        "auth_metadata",
        "shared secret",
        "clock",
    ] {
        out.assert_ok(name);
    }
    homeserver.shutdown().await;
    provider.stop().await;
}

/// A homeserver delegating to another provider, without the MAS API, with an old spec version
/// and a clock ten minutes fast.
async fn a_homeserver_of_another_provider_fails(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let server = MockServer::start().await;
    let base = format!("{}/", server.uri());
    let issuer = provider.base_url.as_str();
    let other = "https://auth.other.example/";
    let ten_minutes_fast = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc2822();
    let mocks = [
        (
            "/.well-known/matrix/client",
            ResponseTemplate::new(200).set_body_json(json!({
                "m.homeserver": {"base_url": base},
                "org.matrix.msc2965.authentication": {"issuer": issuer},
            })),
        ),
        (
            "/_matrix/client/versions",
            ResponseTemplate::new(200)
                .insert_header("date", ten_minutes_fast.as_str())
                .set_body_json(json!({"versions": ["r0.6.1", "v1.1", "v1.11"]})),
        ),
        (
            "/_matrix/client/v1/auth_metadata",
            ResponseTemplate::new(200).set_body_json(json!({"issuer": other})),
        ),
        (
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            ResponseTemplate::new(200).set_body_json(json!({"issuer": other})),
        ),
        (
            "/_synapse/mas/is_localpart_available",
            ResponseTemplate::new(404).set_body_json(
                json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
            ),
        ),
    ];
    for (at, answer) in mocks {
        Mock::given(method("GET"))
            .and(path(at))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    let setup = Setup::new(&db, &provider, &base);
    let out = setup.doctor(&[], None).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    out.assert_ok("homeserver well-known");
    out.assert_failed(
        "auth_metadata",
        &format!("names issuer {other}, this provider is {issuer}"),
        &format!("matrix_authentication_service.endpoint at {issuer}"),
    );
    out.assert_failed(
        "shared secret",
        "/_synapse/mas/is_localpart_available doesn't exist (HTTP 404)",
        "enable matrix_authentication_service in Synapse",
    );
    let versions = out.line("client versions");
    assert!(
        versions.starts_with("⚠️ client versions:") && versions.contains("v1.15"),
        "{versions}"
    );
    out.assert_failed("clock", "s ahead of this machine's", "NTP");
    out.assert_failed("legacy login", "HTTP 404", "route /_matrix/client/*/login");
    provider.stop().await;
}

/// A SQLite database file that isn't there is reported, and not created.
async fn a_missing_sqlite_file_is_not_created(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let setup = Setup::new(&db, &provider, provider.homeserver.base_url().as_str());
    let missing = setup.dir.path().join("nowhere").join("provider.db");
    let url = format!("sqlite://{}", missing.display());
    let out = setup
        .doctor_env(&[], &[("PROVIDER__DATABASE__URL", url.as_str())])
        .await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    out.assert_failed("database", "doesn't exist", "database.url");
    assert!(!missing.exists());
    assert!(!missing.parent().unwrap().exists());
    provider.stop().await;
}

/// An invalid configuration: its problems, exit 1, no checks run.
#[test]
fn an_invalid_configuration_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "http: {issuer: 'ftp://x'}\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_provider"))
        .args(["doctor", "-c", "bad.yaml"])
        .current_dir(dir.path())
        .env_remove("PROVIDER_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.yaml"));
}

backend_tests!(
    a_well_configured_deployment_passes,
    a_wrong_shared_secret_fails_with_a_hint,
    a_homeserver_that_is_down_fails,
    a_login_not_routed_to_the_provider_fails,
    a_homeserver_of_another_provider_fails,
    a_missing_sqlite_file_is_not_created,
);
