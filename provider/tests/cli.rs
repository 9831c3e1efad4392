//! The `provider` binary, run as a subprocess the way an operator runs it: each test in its own
//! temporary directory (the working directory of every command), on free ports, with the
//! `PROVIDER…` and `RUST_LOG` variables of the test's own environment removed.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use openidconnect::{core::CoreProviderMetadata, IssuerUrl};
use provider::{backend_tests, storage::redact_url, test_harness::TestDb};

mod support;

use support::cli::{describe, run_blocking, KillOnDrop, Workdir};

/// How long `serve` may take to answer `/health`, and to exit after SIGTERM.
const SERVE_LIMIT: Duration = Duration::from_secs(30);

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The `client_id` of the generated example client.
fn example_client_id(dir: &Workdir, file: &str) -> String {
    let (_, settings) = provider::config::load(&dir.path(file), Vec::new())
        .unwrap_or_else(|p| panic!("{file} is valid: {p:?}"));
    assert_eq!(settings.clients.len(), 1);
    settings.clients[0].client_id.clone()
}

// ---------------------------------------------------------------------------------------------
// config generate / check

#[test]
fn generated_config_checks_ok() {
    let dir = Workdir::new();
    dir.generate("c.yaml", &[]);
    let ok = "c.yaml: OK (issuer http://localhost:8080/, database sqlite://provider.db, \
              2 signing keys, 1 static client)\n";

    let out = dir.run(&["config", "check", "c.yaml"]);
    out.expect_code(0, "config check c.yaml");
    assert_eq!(out.stdout, ok);
    assert_eq!(out.stderr, "");

    // The same file named by --config, and by $PROVIDER_CONFIG.
    let out = dir.run(&["config", "check", "-c", "c.yaml"]);
    out.expect_code(0, "config check -c c.yaml");
    assert_eq!(out.stdout, ok);
    let out = dir.run_env(&["config", "check"], &[("PROVIDER_CONFIG", "c.yaml")]);
    out.expect_code(0, "PROVIDER_CONFIG=c.yaml config check");
    assert_eq!(out.stdout, ok);

    // A path with a directory in it is reported as given.
    std::fs::create_dir(dir.path("etc")).unwrap();
    std::fs::copy(dir.path("c.yaml"), dir.path("etc/provider.yaml")).unwrap();
    let out = dir.run(&["config", "check", "etc/provider.yaml"]);
    out.expect_code(0, "config check etc/provider.yaml");
    assert!(
        out.stdout.starts_with("etc/provider.yaml: OK ("),
        "{out:#?}"
    );

    // Fresh secrets every time.
    dir.generate("d.yaml", &[]);
    assert_ne!(dir.read("c.yaml"), dir.read("d.yaml"));
}

#[test]
fn generate_options_end_up_in_the_config() {
    let dir = Workdir::new();
    dir.generate(
        "c.yaml",
        &[
            "--issuer",
            "https://auth.example.com/",
            "--listen",
            "0.0.0.0:9000",
            "--database-url",
            "postgres://provider:hunter2hunter2@db.example.com/provider",
            "--server-name",
            "example.com",
            "--homeserver-endpoint",
            "https://matrix.example.com/",
        ],
    );
    let out = dir.run(&["config", "check", "c.yaml"]);
    out.expect_code(0, "config check c.yaml");
    assert_eq!(
        out.stdout,
        "c.yaml: OK (issuer https://auth.example.com/, \
         database postgres://provider:***@db.example.com/provider, \
         2 signing keys, 1 static client)\n"
    );
    assert!(!out.stdout.contains("hunter2"), "the password leaked");

    let (config, settings) = provider::config::load(&dir.path("c.yaml"), Vec::new())
        .expect("the generated configuration is valid");
    assert_eq!(settings.issuer.as_str(), "https://auth.example.com/");
    assert_eq!(settings.public_base.as_str(), "https://auth.example.com/");
    assert_eq!(settings.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        settings.database_url,
        "postgres://provider:hunter2hunter2@db.example.com/provider"
    );
    assert_eq!(config.matrix.homeserver, "example.com");
    assert_eq!(
        settings.matrix.endpoint.as_str(),
        "https://matrix.example.com/"
    );
}

#[test]
fn check_names_every_problem_with_its_path() {
    let dir = Workdir::new();
    dir.generate("c.yaml", &[]);
    let text = dir.read("c.yaml");
    let edits = [
        // an unknown key, and an issuer without its trailing `/`
        (
            "  issuer: \"http://localhost:8080/\"\n",
            "  issuer: \"http://localhost:8080\"\n  colour: blue\n",
        ),
        // a bad URL
        (
            "endpoint: \"http://localhost:8008/\"",
            "endpoint: \"not a url\"",
        ),
        // an unreadable key file, as an extra first key
        ("  keys:\n", "  keys:\n    - key_file: missing.pem\n"),
        // a bad client auth method (which also makes its secret superfluous)
        (
            "client_auth_method: client_secret_basic",
            "client_auth_method: magic",
        ),
    ];
    let mut broken = text.clone();
    for (from, to) in edits {
        assert!(broken.contains(from), "the generated file has `{from}`");
        broken = broken.replacen(from, to, 1);
    }
    dir.write("broken.yaml", &broken);

    let out = dir.run(&["config", "check", "broken.yaml"]);
    out.expect_code(1, "config check broken.yaml");
    assert_eq!(out.stdout, "");
    let expected = [
        "broken.yaml: http.colour: unknown key",
        "broken.yaml: http.issuer: must end with `/`",
        "broken.yaml: matrix.endpoint: `not a url` is not a valid URL",
        "broken.yaml: secrets.keys[0].key_file: can't read missing.pem: ",
        "broken.yaml: clients[0].client_auth_method: `magic` is not one of none, \
         client_secret_basic, client_secret_post, client_secret_jwt, private_key_jwt",
        "broken.yaml: clients[0].client_secret: not used by `magic`: remove it",
    ];
    let lines: Vec<&str> = out.stderr.lines().collect();
    for e in expected {
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(e)).count(),
            1,
            "expected one line starting with `{e}` in:\n{}",
            out.stderr
        );
    }
    assert_eq!(
        lines.last().copied(),
        Some("broken.yaml: 6 problems found"),
        "{}",
        out.stderr
    );
    assert_eq!(lines.len(), expected.len() + 1, "{}", out.stderr);

    // Each problem alone is found alone.
    for (i, (from, to)) in edits.iter().enumerate() {
        let name = format!("one-{i}.yaml");
        dir.write(&name, text.replacen(from, to, 1));
        let out = dir.run(&["config", "check", &name]);
        out.expect_code(1, &format!("config check {name}"));
        assert!(
            out.stderr.ends_with(" problem found\n") || out.stderr.ends_with(" problems found\n"),
            "{out:#?}"
        );
    }
}

#[test]
fn unreadable_and_malformed_files_fail_cleanly() {
    let dir = Workdir::new();
    let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n\
                  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
                  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
                  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n\
                  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    let cases: [(&str, Option<Vec<u8>>, &str); 11] = [
        (
            "missing.yaml",
            None,
            "missing.yaml: can't read missing.yaml: No such file or directory",
        ),
        (
            "not-yaml.yaml",
            Some(b"http: [1, 2".to_vec()),
            "not-yaml.yaml: not valid YAML: ",
        ),
        (
            "empty.yaml",
            Some(Vec::new()),
            "empty.yaml: the file is empty",
        ),
        (
            "comment.yaml",
            Some(b"# nothing here\n".to_vec()),
            "comment.yaml: the file is empty",
        ),
        (
            "garbage.yaml",
            Some(garbage),
            "garbage.yaml: can't read garbage.yaml: ",
        ),
        (
            "nul.yaml",
            Some(b"\0\0\0".to_vec()),
            "nul.yaml: not valid YAML: ",
        ),
        (
            "scalar.yaml",
            Some(b"just some words\n".to_vec()),
            "scalar.yaml: the file must be a YAML mapping of sections",
        ),
        (
            "list.yaml",
            Some(b"- http\n- database\n".to_vec()),
            "list.yaml: the file must be a YAML mapping of sections",
        ),
        (
            "deep.yaml",
            Some("[".repeat(100_000).into_bytes()),
            "deep.yaml: not valid YAML: recursion limit exceeded",
        ),
        (
            "laughs.yaml",
            Some(laughs.as_bytes().to_vec()),
            "laughs.yaml: not valid YAML: ",
        ),
        (
            "two-documents.yaml",
            Some(b"http: {}\n---\nhttp: {}\n".to_vec()),
            "two-documents.yaml: not valid YAML: ",
        ),
    ];
    for (name, contents, message) in &cases {
        if let Some(contents) = contents {
            dir.write(name, contents);
        }
        let out = dir.run(&["config", "check", name]);
        out.expect_code(1, &format!("config check {name}"));
        assert_eq!(out.stdout, "", "{name}");
        assert!(out.stderr.starts_with(message), "{name}: {out:#?}");
        assert!(
            out.stderr
                .ends_with(&format!("\n{name}: 1 problem found\n")),
            "{name}: {out:#?}"
        );
    }

    // A directory where the file should be.
    std::fs::create_dir(dir.path("dir.yaml")).unwrap();
    let out = dir.run(&["config", "check", "dir.yaml"]);
    out.expect_code(1, "config check dir.yaml");
    assert!(
        out.stderr.starts_with("dir.yaml: can't read dir.yaml: "),
        "{out:#?}"
    );

    // No file named and no provider.yaml: the default name is reported.
    let out = dir.run(&["config", "check"]);
    out.expect_code(1, "config check");
    assert!(
        out.stderr
            .starts_with("provider.yaml: can't read provider.yaml: "),
        "{out:#?}"
    );

    // Every command that reads the config fails the same way, without touching a database.
    for args in [
        &["config", "sync", "-c", "missing.yaml"][..],
        &["config", "sync", "-c", "garbage.yaml", "--prune"],
        &["database", "migrate", "-c", "empty.yaml"],
        &["serve", "-c", "not-yaml.yaml"],
    ] {
        let out = dir.run(args);
        out.expect_code(1, &describe(args));
        assert_eq!(out.stdout, "", "{out:#?}");
        assert!(out.stderr.ends_with(": 1 problem found\n"), "{out:#?}");
    }
    assert!(!dir.path("provider.db").exists(), "a database was created");
}

// ---------------------------------------------------------------------------------------------
// usage

#[test]
fn bad_usage_exits_2_with_a_usage_message() {
    let dir = Workdir::new();
    let cases: [(&[&str], &[&str]); 12] = [
        (&[], &["Usage: provider [OPTIONS] <COMMAND>"]),
        (
            &["frob"],
            &[
                "error: unrecognized subcommand 'frob'",
                "Usage: provider [OPTIONS] <COMMAND>",
            ],
        ),
        (&["config"], &["Usage: provider config [OPTIONS] <COMMAND>"]),
        (
            &["config", "frob"],
            &[
                "error: unrecognized subcommand 'frob'",
                "Usage: provider config",
            ],
        ),
        (
            &["database"],
            &["Usage: provider database [OPTIONS] <COMMAND>"],
        ),
        (
            &["config", "check", "--nope"],
            &[
                "error: unexpected argument '--nope' found",
                "Usage: provider config check",
            ],
        ),
        (
            &["serve", "--port", "80"],
            &[
                "error: unexpected argument '--port' found",
                "Usage: provider serve",
            ],
        ),
        (
            &["config", "check", "a.yaml", "b.yaml"],
            &[
                "error: unexpected argument 'b.yaml' found",
                "Usage: provider config check",
            ],
        ),
        (
            &["config", "generate", "--issuer"],
            &[
                "error: a value is required for '--issuer <ISSUER>'",
                "--help",
            ],
        ),
        (
            &["serve", "-c"],
            &[
                "error: a value is required for '--config <CONFIG>'",
                "--help",
            ],
        ),
        (
            &["database", "migrate", "--config"],
            &[
                "error: a value is required for '--config <CONFIG>'",
                "--help",
            ],
        ),
        (
            &["--log-format", "loud", "serve"],
            &[
                "error: invalid value 'loud' for '--log-format <LOG_FORMAT>'",
                "--help",
            ],
        ),
    ];
    for (args, messages) in cases {
        let what = describe(args);
        let out = dir.run(args);
        out.expect_code(2, &what);
        assert_eq!(out.stdout, "", "`{what}` wrote to stdout");
        for m in messages {
            assert!(
                out.stderr.contains(m),
                "`{what}`: no `{m}` in\n{}",
                out.stderr
            );
        }
    }

    // A bad value in the environment is a usage error too.
    let out = dir.run_env(&["config", "check"], &[("PROVIDER_LOG_FORMAT", "loud")]);
    out.expect_code(2, "PROVIDER_LOG_FORMAT=loud config check");
    assert!(out.stderr.contains("invalid value 'loud'"), "{out:#?}");
    // Nothing was created by any of it.
    assert_eq!(std::fs::read_dir(dir.path(".")).unwrap().count(), 0);
}

#[test]
fn help_has_examples() {
    let dir = Workdir::new();
    for args in [
        &[][..],
        &["config", "generate"],
        &["config", "check"],
        &["config", "sync"],
        &["database", "migrate"],
        &["serve"],
        &["homeserver", "sync-devices"],
    ] {
        for flag in ["--help", "-h"] {
            let mut all = args.to_vec();
            all.push(flag);
            let what = describe(&all);
            let out = dir.run(&all);
            out.expect_code(0, &what);
            assert!(out.stdout.contains("Usage: provider"), "`{what}`: {out:#?}");
            assert!(out.stdout.contains("Example"), "`{what}` has no example");
            assert_eq!(out.stderr, "", "`{what}` wrote to stderr");
        }
        // `provider help …` says the same as `provider … --help`.
        let mut help = vec!["help"];
        help.extend_from_slice(args);
        let mut long = args.to_vec();
        long.push("--help");
        let out = dir.run(&help);
        out.expect_code(0, &describe(&help));
        assert_eq!(out.stdout, dir.run(&long).stdout, "`{}`", describe(&help));
    }
    let out = dir.run(&["--version"]);
    out.expect_code(0, "provider --version");
    assert_eq!(
        out.stdout,
        format!("provider {}\n", env!("CARGO_PKG_VERSION"))
    );
}

// ---------------------------------------------------------------------------------------------
// environment overrides

#[test]
fn environment_overrides_apply_and_are_checked() {
    let dir = Workdir::new();
    dir.generate("c.yaml", &[]);
    let check = ["config", "check", "c.yaml"];

    let out = dir.run_env(
        &check,
        &[("PROVIDER__HTTP__ISSUER", "http://127.0.0.1:9999/")],
    );
    out.expect_code(0, "PROVIDER__HTTP__ISSUER=… config check");
    assert_eq!(
        out.stdout,
        "c.yaml: OK (issuer http://127.0.0.1:9999/, database sqlite://provider.db, \
         2 signing keys, 1 static client)\n"
    );

    let out = dir.run_env(
        &check,
        &[(
            "PROVIDER__DATABASE__URL",
            "postgres://u:s3cr3tpassword@db/p",
        )],
    );
    out.expect_code(0, "PROVIDER__DATABASE__URL=… config check");
    assert!(
        out.stdout.contains(", database postgres://u:***@db/p, "),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("s3cr3t"), "the password leaked");

    let out = dir.run_env(&check, &[("PROVIDER__HTTP__NOPE", "1")]);
    out.expect_code(1, "PROVIDER__HTTP__NOPE=1 config check");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "c.yaml: http.nope: unknown key (set by environment variable PROVIDER__HTTP__NOPE)\n\
         c.yaml: 1 problem found\n"
    );

    let out = dir.run_env(
        &check,
        &[("PROVIDER__HTTP__ISSUER", "http://127.0.0.1:9999")],
    );
    out.expect_code(1, "PROVIDER__HTTP__ISSUER=<no slash> config check");
    assert_eq!(
        out.stderr,
        "c.yaml: http.issuer: must end with `/`\nc.yaml: 1 problem found\n"
    );

    let out = dir.run_env(&check, &[("PROVIDER__CLIENTS__3__CLIENT_NAME", "x")]);
    out.expect_code(1, "PROVIDER__CLIENTS__3__CLIENT_NAME=x config check");
    assert_eq!(
        out.stderr,
        "c.yaml: clients[3].client_name: environment variable \
         PROVIDER__CLIENTS__3__CLIENT_NAME doesn't name a setting\nc.yaml: 1 problem found\n"
    );

    // Several bad ones: all reported.
    let out = dir.run_env(
        &check,
        &[
            ("PROVIDER__HTTP__NOPE", "1"),
            ("PROVIDER__DATABASE__MAX_CONNECTIONS", "0"),
        ],
    );
    out.expect_code(1, "two bad overrides");
    assert!(
        out.stderr.contains(
            "c.yaml: http.nope: unknown key (set by environment variable PROVIDER__HTTP__NOPE)\n"
        ),
        "{out:#?}"
    );
    assert!(
        out.stderr
            .contains("c.yaml: database.max_connections: must be at least 1\n"),
        "{out:#?}"
    );
    assert!(
        out.stderr.ends_with("c.yaml: 2 problems found\n"),
        "{out:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// database migrate, config sync

#[test]
fn migrate_a_fresh_sqlite_database() {
    let dir = Workdir::new();
    dir.generate("c.yaml", &[]);
    let out = dir.run(&["database", "migrate", "-c", "c.yaml"]);
    out.expect_code(0, "database migrate");
    assert!(!out.stdout.is_empty(), "{out:#?}");
    assert!(
        out.stdout.lines().all(|l| l.starts_with("applied\t")),
        "{out:#?}"
    );
    assert!(dir.path("provider.db").exists());
    let out = dir.run(&["database", "migrate", "-c", "c.yaml"]);
    out.expect_code(0, "database migrate (again)");
    assert_eq!(out.stdout, "the database is up to date\n");
}

/// The stored static client, if any.
async fn stored_client(db: &TestDb, client_id: &str) -> Option<provider::storage::Client> {
    let mut repo = db.storage.reader().await.unwrap();
    repo.clients().find_by_client_id(client_id).await.unwrap()
}

async fn migrate_and_sync(db: TestDb) {
    let dir = Workdir::new();
    dir.generate("c.yaml", &["--database-url", &db.url]);
    let id = example_client_id(&dir, "c.yaml");
    let sync = |extra: &[&str]| {
        let mut args = vec!["config", "sync", "-c", "c.yaml"];
        args.extend_from_slice(extra);
        let out = dir.run(&args);
        out.expect_code(0, &describe(&args));
        out.stdout
    };

    let out = dir.run(&["database", "migrate", "-c", "c.yaml"]);
    out.expect_code(0, "database migrate");
    assert_eq!(out.stdout, "the database is up to date\n");

    assert_eq!(sync(&["--dry-run"]), format!("would be created\t{id}\n"));
    assert!(stored_client(&db, &id).await.is_none(), "--dry-run created");
    assert_eq!(sync(&[]), format!("created\t{id}\n"));
    let stored = stored_client(&db, &id).await.expect("created");
    assert!(stored.is_static);
    assert_eq!(
        stored.token_endpoint_auth_method.as_str(),
        "client_secret_basic"
    );
    assert_eq!(
        stored.metadata["client_name"],
        "Example confidential client"
    );
    assert_eq!(sync(&[]), format!("unchanged\t{id}\n"));
    assert_eq!(sync(&["--dry-run"]), format!("unchanged\t{id}\n"));

    // Rename the example client and add a public one.
    let text = dir.read("c.yaml");
    let (head, example) = text.split_once("\nclients:\n").expect("a clients section");
    let head = format!("{head}\nclients:\n");
    let public = "  - client_id: cli-public\n    client_auth_method: none\n    \
                  redirect_uris: [\"http://127.0.0.1/callback\"]\n";
    let renamed = example.replace("Example confidential client", "Renamed");
    dir.write("c.yaml", format!("{head}{renamed}{public}"));
    assert_eq!(
        sync(&["--dry-run"]),
        format!("would be created\tcli-public\nwould be updated\t{id}\n")
    );
    assert_eq!(
        stored_client(&db, &id).await.unwrap().metadata["client_name"],
        "Example confidential client",
        "--dry-run updated"
    );
    assert!(stored_client(&db, "cli-public").await.is_none());
    assert_eq!(sync(&[]), format!("created\tcli-public\nupdated\t{id}\n"));
    assert_eq!(
        stored_client(&db, &id).await.unwrap().metadata["client_name"],
        "Renamed"
    );
    assert_eq!(
        stored_client(&db, "cli-public")
            .await
            .unwrap()
            .token_endpoint_auth_method
            .as_str(),
        "none"
    );
    assert_eq!(
        sync(&[]),
        format!("unchanged\t{id}\nunchanged\tcli-public\n")
    );

    // Remove the example client: kept until --prune.
    dir.write("c.yaml", format!("{head}{public}"));
    let kept =
        format!("unchanged\tcli-public\nkept\t{id}\t(not in the config; --prune deletes it)\n");
    assert_eq!(sync(&[]), kept);
    assert_eq!(sync(&["--dry-run"]), kept);
    assert_eq!(
        sync(&["--prune", "--dry-run"]),
        format!("unchanged\tcli-public\nwould be deleted\t{id}\n")
    );
    assert!(stored_client(&db, &id).await.is_some(), "--dry-run deleted");
    assert_eq!(sync(&[]), kept);
    assert_eq!(
        sync(&["--prune"]),
        format!("unchanged\tcli-public\ndeleted\t{id}\n")
    );
    assert!(stored_client(&db, &id).await.is_none(), "--prune kept it");
    assert_eq!(sync(&["--prune"]), "unchanged\tcli-public\n");
    assert_eq!(sync(&[]), "unchanged\tcli-public\n");

    // An invalid config changes nothing.
    dir.write(
        "bad.yaml",
        format!("{head}{public}  - client_id: cli-public\n    client_auth_method: none\n"),
    );
    let out = dir.run(&["config", "sync", "-c", "bad.yaml", "--prune"]);
    out.expect_code(1, "config sync -c bad.yaml --prune");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("bad.yaml: clients[1].client_id: `cli-public` is used by another client\n"),
        "{out:#?}"
    );
    assert!(stored_client(&db, "cli-public").await.is_some());
}

// ---------------------------------------------------------------------------------------------
// serve

/// `provider serve`, killed when dropped.
struct Serving {
    process: KillOnDrop,
    log: PathBuf,
}

impl Serving {
    fn start(dir: &Workdir, args: &[&str]) -> Self {
        let log = dir.path("serve.log");
        let file = std::fs::File::create(&log).expect("create the server log");
        let mut command = dir.command(args, &[]);
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("share the log file"))
            .stderr(file);
        let child = command.spawn().expect("start provider serve");
        Self {
            process: KillOnDrop(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/health` every 100 ms until it answers 200; fails after [`SERVE_LIMIT`], or as
    /// soon as the server exits.
    async fn wait_healthy(&mut self, base: &str) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{base}health");
        let deadline = Instant::now() + SERVE_LIMIT;
        loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                panic!(
                    "provider serve exited ({status}) before answering {url}; its log:\n{}",
                    self.log()
                );
            }
            let last = match client.get(&url).send().await {
                Ok(response) if response.status() == 200 => return,
                Ok(response) => format!("status {}", response.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "{url} didn't answer 200 within {SERVE_LIMIT:?} (last: {last}); the log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        let pid = self.process.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let status = self.process.wait_for_exit(SERVE_LIMIT).unwrap_or_else(|| {
            panic!(
                "provider serve still runs {SERVE_LIMIT:?} after SIGTERM; its log:\n{}",
                self.log()
            )
        });
        assert!(
            status.success(),
            "provider serve exited with {status} on SIGTERM; its log:\n{}",
            self.log()
        );
    }
}

/// `provider config generate > c.yaml && provider config check c.yaml && provider serve -c
/// c.yaml`, then `openidconnect` discovers the provider.
async fn generate_check_serve_discover(db: TestDb) {
    let dir = Workdir::new();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}/");
    let listen = format!("127.0.0.1:{port}");
    dir.generate(
        "c.yaml",
        &[
            "--issuer",
            &issuer,
            "--listen",
            &listen,
            "--database-url",
            &db.url,
        ],
    );

    let out = dir.run(&["config", "check", "c.yaml"]);
    out.expect_code(0, "config check c.yaml");
    assert_eq!(
        out.stdout,
        format!(
            "c.yaml: OK (issuer {issuer}, database {}, 2 signing keys, 1 static client)\n",
            redact_url(&db.url)
        )
    );

    let mut server = Serving::start(&dir, &["serve", "-c", "c.yaml"]);
    server.wait_healthy(&issuer).await;

    let http_client = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let issuer_url = IssuerUrl::new(issuer.clone()).unwrap();
    let metadata = CoreProviderMetadata::discover_async(issuer_url.clone(), &http_client)
        .await
        .unwrap_or_else(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            panic!("openidconnect can't discover {issuer}: {message}")
        });
    assert_eq!(metadata.issuer(), &issuer_url);
    assert_eq!(metadata.jwks().keys().len(), 2);

    // serve synced the configured client.
    let id = example_client_id(&dir, "c.yaml");
    assert!(stored_client(&db, &id).await.is_some());

    server.terminate();
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = Workdir::new();
    let port = free_port();
    let database_url = format!("sqlite://{}", dir.path("never.db").display());
    let issuer = format!("http://127.0.0.1:{port}");
    let flags = [
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--database-url".to_owned(),
        database_url,
    ];

    // `generate` refuses flags that would make an invalid file, and prints nothing.
    let mut args = vec!["config", "generate", "--issuer", issuer.as_str()];
    args.extend(flags.iter().map(String::as_str));
    let out = dir.run(&args);
    out.expect_code(1, "config generate --issuer <no slash>");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with(
            "error: the options make an invalid config: http.issuer: must end with `/`\n"
        ),
        "{out:#?}"
    );

    // A valid file broken by hand is refused by `serve` before it opens the database.
    let mut args = vec!["--issuer".to_owned(), format!("{issuer}/")];
    args.extend(flags.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dir.generate("c.yaml", &args);
    let text = std::fs::read_to_string(dir.path("c.yaml")).unwrap();
    std::fs::write(
        dir.path("c.yaml"),
        text.replace(&format!("{issuer}/"), &issuer),
    )
    .unwrap();
    let out = dir.run(&["serve", "-c", "c.yaml"]);
    out.expect_code(1, "serve -c c.yaml");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("c.yaml: http.issuer: must end with `/`\n"),
        "{out:#?}"
    );
    assert!(out.stderr.ends_with(" problems found\n"), "{out:#?}");
    assert!(!dir.path("never.db").exists(), "serve opened the database");
}

#[test]
fn serve_on_a_port_in_use_fails() {
    let dir = Workdir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let addr = taken.local_addr().unwrap();
    dir.generate(
        "c.yaml",
        &[
            "--issuer",
            &format!("http://{addr}/"),
            "--listen",
            &addr.to_string(),
        ],
    );
    let out = dir.run(&["serve", "-c", "c.yaml"]);
    out.expect_code(1, "serve -c c.yaml (port in use)");
    assert!(
        out.stderr
            .contains(&format!("error: can't listen on {addr}: ")),
        "{out:#?}"
    );
    drop(taken);
}

/// `provider homeserver sync-devices`: the homeserver's devices become those of the user's
/// active sessions; unknown users and an unreachable homeserver exit 1.
async fn homeserver_sync_devices(db: TestDb) {
    let dir = std::sync::Arc::new(Workdir::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    dir.generate(
        "c.yaml",
        &[
            "--database-url",
            &db.url,
            "--homeserver-endpoint",
            &endpoint,
        ],
    );
    let (_, settings) = provider::config::load(&dir.path("c.yaml"), Vec::new()).unwrap();
    let homeserver = fake_homeserver::FakeHomeserver::start(
        fake_homeserver::Config {
            server_name: settings.matrix.homeserver.clone(),
            provider_endpoint: settings.public_base.clone(),
            secret: settings.matrix.secret.clone(),
            proxy_login: false,
            public_base: None,
        },
        listener,
    )
    .await
    .unwrap();
    // Alice has one device (a legacy login); the homeserver has a stale one instead.
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    repo.compat_sessions()
        .add(alice.id, "CLIDEVICE1", None, false, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    homeserver.store().insert_device("alice", "STALEDEVICE");

    let sync = |extra: &[&str]| {
        let mut args: Vec<String> = ["homeserver", "sync-devices", "-c", "c.yaml"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        run_blocking(dir.clone(), args, None)
    };
    let out = sync(&["--user", "alice"]).await;
    out.expect_code(0, "sync-devices --user alice");
    assert_eq!(out.stdout, "synced\talice\n");
    let devices: Vec<String> = homeserver
        .store()
        .devices("alice")
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(devices, ["CLIDEVICE1"]);

    let out = sync(&["--all"]).await;
    out.expect_code(0, "sync-devices --all");
    assert_eq!(out.stdout, "synced\talice\n");

    let out = sync(&["--user", "nobody"]).await;
    out.expect_code(1, "sync-devices --user nobody");
    assert!(out.stderr.contains("no user `nobody`"), "{out:#?}");

    // Homeserver down: the reconciliation stays queued for the server's worker; exit 1.
    homeserver.set_unavailable(true);
    let out = sync(&["--user", "alice"]).await;
    out.expect_code(1, "sync-devices with the homeserver down");
    assert!(out.stdout.starts_with("queued\talice\t"), "{out:#?}");
    assert!(out.stdout.contains("503"), "{out:#?}");

    // Neither a user nor --all: a usage error.
    let out = sync(&[]).await;
    out.expect_code(2, "sync-devices without users");
}

backend_tests!(
    migrate_and_sync,
    generate_check_serve_discover,
    homeserver_sync_devices
);
