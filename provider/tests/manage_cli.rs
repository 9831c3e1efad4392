//! `provider manage …`, run as a subprocess the way an operator runs it (the pattern of
//! `tests/cli.rs`): each subcommand's output on a pipe, its exit status, what it did to the
//! database and to the homeserver (a fake one, over HTTP), and `queued` when the homeserver is
//! down.

use std::sync::Arc;

use provider::{backend_tests, clock::Clock as _, crypto::sha256, test_harness::TestDb};

mod support;

use support::cli::{run_blocking, Output, Workdir};

/// `provider manage SUBCOMMAND -c c.yaml ARGS…`, off the async runtime (the fake homeserver
/// it talks to runs on it).
async fn manage(dir: &Arc<Workdir>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all: Vec<String> = vec![
        "manage".into(),
        args[0].into(),
        "-c".into(),
        "c.yaml".into(),
    ];
    all.extend(args[1..].iter().map(|a| (*a).to_owned()));
    run_blocking(dir.clone(), all, stdin.map(str::to_owned)).await
}

/// A work directory with a config on `db` and a fake homeserver it provisions.
async fn setup(db: &TestDb) -> (Arc<Workdir>, fake_homeserver::FakeHomeserver) {
    let dir = Arc::new(Workdir::new());
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
    (dir, homeserver)
}

async fn user(db: &TestDb, username: &str) -> Option<provider::storage::User> {
    db.storage
        .reader()
        .await
        .unwrap()
        .users()
        .find_by_username(username)
        .await
        .unwrap()
}

/// register-user, set-password, add-email, verify-email, promote/demote-admin.
async fn accounts(db: TestDb) {
    let (dir, homeserver) = setup(&db).await;
    let store = homeserver.store();

    let out = manage(
        &dir,
        &[
            "register-user",
            "alice",
            "--password-stdin",
            "--email",
            "alice@example.com",
            "--email",
            "alice@work.example",
            "--admin",
            "--display-name",
            "Alice Liddell",
            "--yes",
        ],
        Some("a long enough password\n"),
    )
    .await;
    out.expect_code(0, "register-user alice");
    let alice = user(&db, "alice").await.expect("alice was created");
    assert_eq!(out.stdout, format!("created\talice\t{}\n", alice.id));
    assert_eq!(out.stderr, "");
    assert!(alice.can_request_admin);
    assert_eq!(alice.display_name.as_deref(), Some("Alice Liddell"));
    let first_password = db
        .storage
        .reader()
        .await
        .unwrap()
        .user_passwords()
        .active(alice.id)
        .await
        .unwrap()
        .expect("a password");
    let record = store.user("alice").expect("provisioned");
    assert_eq!(record.displayname.as_deref(), Some("Alice Liddell"));
    let mut emails = record.emails.clone();
    emails.sort();
    assert_eq!(emails, ["alice@example.com", "alice@work.example"]);

    // Refusals: taken here, taken on the homeserver, invalid, too short a password.
    let out = manage(&dir, &["register-user", "alice", "--yes"], None).await;
    out.expect_code(1, "register-user alice again");
    assert!(out.stderr.contains("`alice` is taken"), "{out:#?}");
    assert_eq!(out.stdout, "");
    store.insert_user("carol");
    let out = manage(&dir, &["register-user", "carol"], None).await;
    out.expect_code(1, "register-user carol");
    assert!(out.stderr.contains("taken"), "{out:#?}");
    let out = manage(&dir, &["register-user", "Bad.Name"], None).await;
    out.expect_code(1, "register-user Bad.Name");
    assert!(out.stderr.contains("username"), "{out:#?}");
    let out = manage(
        &dir,
        &["register-user", "dave", "--password", "short"],
        None,
    )
    .await;
    out.expect_code(1, "register-user with a short password");
    assert!(out.stderr.contains("too short"), "{out:#?}");
    assert!(user(&db, "dave").await.is_none());
    let out = manage(
        &dir,
        &[
            "register-user",
            "dave",
            "--password",
            "short",
            "--ignore-password-policy",
        ],
        None,
    )
    .await;
    out.expect_code(0, "register-user --ignore-password-policy");

    // Without a password (and without --yes: stdin is not a terminal, nothing is asked).
    let out = manage(&dir, &["register-user", "bob"], None).await;
    out.expect_code(0, "register-user bob");
    let bob = user(&db, "bob").await.unwrap();
    assert!(!bob.can_request_admin);

    // set-password: the browser sessions signed in with the old password end.
    let browser = {
        let mut repo = db.storage.begin().await.unwrap();
        let session = repo
            .browser_sessions()
            .add(alice.id, None, None)
            .await
            .unwrap();
        repo.commit().await.unwrap();
        session
    };
    let out = manage(
        &dir,
        &["set-password", "alice", "--password-stdin"],
        Some("another long password\n"),
    )
    .await;
    out.expect_code(0, "set-password alice");
    assert_eq!(out.stdout, "password-set\talice\n");
    let second_password = db
        .storage
        .reader()
        .await
        .unwrap()
        .user_passwords()
        .active(alice.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second_password.id, first_password.id);
    let ended = db
        .storage
        .reader()
        .await
        .unwrap()
        .browser_sessions()
        .lookup(browser.id)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.finished_at.is_some(), "{ended:?}");
    let out = manage(&dir, &["set-password", "alice"], None).await;
    out.expect_code(1, "set-password without a password");
    assert!(out.stderr.contains("--password"), "{out:#?}");
    let out = manage(
        &dir,
        &["set-password", "nobody", "--password", "whatever long"],
        None,
    )
    .await;
    out.expect_code(1, "set-password nobody");
    assert_eq!(out.stderr, "error: no user `nobody`\n");
    let out = manage(
        &dir,
        &[
            "set-password",
            "alice",
            "--password",
            "x",
            "--password-stdin",
        ],
        None,
    )
    .await;
    out.expect_code(2, "set-password with two passwords");

    // add-email, verify-email: the homeserver gets verified addresses only.
    let out = manage(&dir, &["add-email", "bob", "bob@example.com"], None).await;
    out.expect_code(0, "add-email");
    assert_eq!(out.stdout, "email-added\tbob\tbob@example.com\n");
    assert!(store.user("bob").unwrap().emails.is_empty());
    let out = manage(&dir, &["verify-email", "bob", "bob@example.com"], None).await;
    out.expect_code(0, "verify-email");
    assert_eq!(out.stdout, "email-verified\tbob\tbob@example.com\n");
    assert_eq!(store.user("bob").unwrap().emails, ["bob@example.com"]);
    let out = manage(
        &dir,
        &["add-email", "bob", "bob@work.example", "--verified"],
        None,
    )
    .await;
    out.expect_code(0, "add-email --verified");
    assert_eq!(out.stdout, "email-added-verified\tbob\tbob@work.example\n");
    assert_eq!(store.user("bob").unwrap().emails.len(), 2);
    let out = manage(&dir, &["add-email", "bob", "bob@example.com"], None).await;
    out.expect_code(1, "add-email twice");
    assert!(out.stderr.contains("already has"), "{out:#?}");
    let out = manage(&dir, &["add-email", "bob", "not-an-address"], None).await;
    out.expect_code(1, "add-email not-an-address");
    let out = manage(&dir, &["verify-email", "bob", "other@example.com"], None).await;
    out.expect_code(1, "verify-email of an address bob lacks");
    assert!(out.stderr.contains("no address"), "{out:#?}");

    // promote-admin / demote-admin
    let out = manage(&dir, &["promote-admin", "bob"], None).await;
    out.expect_code(0, "promote-admin");
    assert_eq!(out.stdout, "promoted\tbob\n");
    assert!(user(&db, "bob").await.unwrap().can_request_admin);
    let out = manage(&dir, &["demote-admin", "bob"], None).await;
    out.expect_code(0, "demote-admin");
    assert_eq!(out.stdout, "demoted\tbob\n");
    assert!(!user(&db, "bob").await.unwrap().can_request_admin);
    let out = manage(&dir, &["promote-admin", "nobody"], None).await;
    out.expect_code(1, "promote-admin nobody");
}

/// lock-user, unlock-user, kill-sessions, issue-compatibility-token, and `queued` when the
/// homeserver is down.
async fn locks_sessions_and_tokens(db: TestDb) {
    let (dir, homeserver) = setup(&db).await;
    let store = homeserver.store();
    manage(&dir, &["register-user", "bob"], None)
        .await
        .expect_code(0, "register-user bob");

    // issue-compatibility-token: the token alone on stdout; the device on the homeserver.
    let out = manage(
        &dir,
        &[
            "issue-compatibility-token",
            "bob",
            "--device-id",
            "BOTDEVICE",
        ],
        None,
    )
    .await;
    out.expect_code(0, "issue-compatibility-token");
    assert_eq!(out.stderr, "");
    let token = out.stdout.strip_suffix('\n').expect("one line");
    assert!(
        token.starts_with("mct_") && !token.contains(char::is_whitespace),
        "{token}"
    );
    let found = db
        .storage
        .reader()
        .await
        .unwrap()
        .compat_tokens()
        .find_active_access_by_hash_with_session(&sha256(token), db.clock.now())
        .await
        .unwrap()
        .expect("the token is active");
    assert_eq!(found.1.device_id, "BOTDEVICE");
    assert!(found.0.expires_at.is_none());
    assert!(store.has_device("bob", "BOTDEVICE"));
    let out = manage(&dir, &["issue-compatibility-token", "bob"], None).await;
    out.expect_code(0, "issue-compatibility-token with a random device");
    assert_eq!(store.devices("bob").len(), 2);
    for (args, what) in [
        (
            &["issue-compatibility-token", "bob", "--synapse-admin"][..],
            "may not administer",
        ),
        (
            &[
                "issue-compatibility-token",
                "bob",
                "--device-id",
                "bad/device",
            ][..],
            "not a valid device ID",
        ),
        (
            &["issue-compatibility-token", "nobody"][..],
            "no user `nobody`",
        ),
    ] {
        let out = manage(&dir, args, None).await;
        out.expect_code(1, &args.join(" "));
        assert!(out.stderr.contains(what), "{out:#?}");
        assert_eq!(out.stdout, "");
    }

    // lock-user / unlock-user: the homeserver is told each time.
    let out = manage(&dir, &["lock-user", "bob"], None).await;
    out.expect_code(0, "lock-user");
    assert_eq!(out.stdout, "locked\tbob\n");
    assert!(store.user("bob").unwrap().locked);
    assert!(user(&db, "bob").await.unwrap().locked_at.is_some());
    let out = manage(&dir, &["lock-user", "bob"], None).await;
    out.expect_code(0, "lock-user again");
    assert_eq!(out.stdout, "locked\tbob\t(already)\n");
    let out = manage(&dir, &["issue-compatibility-token", "bob"], None).await;
    out.expect_code(1, "issue-compatibility-token for a locked user");
    let out = manage(&dir, &["unlock-user", "bob"], None).await;
    out.expect_code(0, "unlock-user");
    assert_eq!(out.stdout, "unlocked\tbob\n");
    assert!(!store.user("bob").unwrap().locked);

    // kill-sessions: the devices go.
    let out = manage(&dir, &["kill-sessions", "bob"], None).await;
    out.expect_code(0, "kill-sessions");
    assert_eq!(out.stdout, "sessions-ended\tbob\n");
    assert!(store.devices("bob").is_empty());
    let bob = user(&db, "bob").await.unwrap();
    assert!(db
        .storage
        .reader()
        .await
        .unwrap()
        .compat_sessions()
        .list_active_for_user(bob.id)
        .await
        .unwrap()
        .is_empty());

    // The homeserver down: the change is made, its job queued, exit 1.
    homeserver.set_unavailable(true);
    let out = manage(&dir, &["lock-user", "bob"], None).await;
    out.expect_code(1, "lock-user with the homeserver down");
    assert!(
        out.stdout.starts_with("locked\tbob\nqueued\tbob\t"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("503"), "{out:#?}");
    assert!(user(&db, "bob").await.unwrap().locked_at.is_some());
    assert!(!store.user("bob").unwrap().locked);
    let out = manage(&dir, &["register-user", "erin"], None).await;
    out.expect_code(1, "register-user with the homeserver down");
    assert!(out.stderr.contains("homeserver"), "{out:#?}");
    assert!(user(&db, "erin").await.is_none());
}

/// issue-compatibility-token for a device an OAuth 2.0 session holds: a device is one session
/// (client-server API §"Login"), so the OAuth 2.0 session ends, its token inactive at once,
/// and the device stays on the homeserver for the new compat session.
async fn a_compat_token_takes_the_device_of_an_oauth_session(db: TestDb) {
    let (dir, homeserver) = setup(&db).await;
    let store = homeserver.store();
    manage(&dir, &["register-user", "bob"], None)
        .await
        .expect_code(0, "register-user bob");
    let bob = user(&db, "bob").await.unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    let client = repo
        .clients()
        .add(
            "oauth-app",
            false,
            None,
            provider::domain::protocol::ClientAuthMethod::None,
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let oauth = repo
        .oauth2_sessions()
        .add(provider::storage::NewOAuth2Session {
            user_id: Some(bob.id),
            client_id: client.id,
            browser_session_id: None,
            scope: "urn:matrix:client:api:* urn:matrix:client:device:SHAREDDEV",
            device_id: Some("SHAREDDEV"),
            user_agent: None,
        })
        .await
        .unwrap();
    let oauth_token = sha256("mat_the_oauth_token");
    repo.access_tokens()
        .add(oauth.id, &oauth_token, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let out = manage(
        &dir,
        &[
            "issue-compatibility-token",
            "bob",
            "--device-id",
            "SHAREDDEV",
        ],
        None,
    )
    .await;
    out.expect_code(
        0,
        "issue-compatibility-token for an OAuth 2.0 session's device",
    );
    let token = out.stdout.strip_suffix('\n').expect("one line");

    let mut repo = db.storage.reader().await.unwrap();
    let now = db.clock.now();
    let ended = repo
        .oauth2_sessions()
        .lookup(oauth.id)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.finished_at.is_some(), "the OAuth 2.0 session ended");
    assert!(
        repo.access_tokens()
            .find_active_by_hash(&oauth_token, now)
            .await
            .unwrap()
            .is_none(),
        "its token is inactive"
    );
    let (_, session) = repo
        .compat_tokens()
        .find_active_access_by_hash_with_session(&sha256(token), now)
        .await
        .unwrap()
        .expect("the compat token is active");
    assert_eq!(session.device_id, "SHAREDDEV");
    assert!(repo
        .oauth2_sessions()
        .list_active_by_device(bob.id, "SHAREDDEV")
        .await
        .unwrap()
        .is_empty());
    assert!(store.has_device("bob", "SHAREDDEV"), "the device stays");
}

/// issue-registration-token and provision-all-users.
async fn registration_tokens_and_provisioning(db: TestDb) {
    let (dir, homeserver) = setup(&db).await;
    let store = homeserver.store();

    let out = manage(
        &dir,
        &[
            "issue-registration-token",
            "--usage-limit",
            "2",
            "--expires-in",
            "7d",
        ],
        None,
    )
    .await;
    out.expect_code(0, "issue-registration-token");
    assert_eq!(out.stderr, "");
    let value = out.stdout.strip_suffix('\n').unwrap();
    assert!(
        value.len() >= 16 && value.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{value}"
    );
    let token = db
        .storage
        .reader()
        .await
        .unwrap()
        .registration_tokens()
        .find_by_token(value)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(token.usage_limit, Some(2));
    // The binary runs on the real clock: a week from (about) now.
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    let expires = token.expires_at.expect("an expiry");
    assert!(expires > now + chrono::Duration::days(6) && expires < now + chrono::Duration::days(8));

    let out = manage(
        &dir,
        &["issue-registration-token", "--token", "team-2026"],
        None,
    )
    .await;
    out.expect_code(0, "issue-registration-token --token");
    assert_eq!(out.stdout, "team-2026\n");
    let out = manage(
        &dir,
        &["issue-registration-token", "--token", "team-2026"],
        None,
    )
    .await;
    out.expect_code(1, "the same token twice");
    // A chosen value is held to the admin API's rule: people type it.
    let out = manage(
        &dir,
        &["issue-registration-token", "--token", "team 2026"],
        None,
    )
    .await;
    out.expect_code(1, "a token with a space");
    assert!(out.stderr.contains("1 to 64 of"), "{out:#?}");
    assert_eq!(out.stdout, "");
    for bad in [
        &["issue-registration-token", "--expires-in", "3w"][..],
        &["issue-registration-token", "--usage-limit", "0"][..],
    ] {
        manage(&dir, bad, None).await.expect_code(2, &bad.join(" "));
    }

    // provision-all-users: each user again, one line each, in ID order.
    for name in ["ann", "ben"] {
        manage(&dir, &["register-user", name], None)
            .await
            .expect_code(0, name);
    }
    store.update_user("ann", |u| u.displayname = Some("stale".into()));
    {
        let mut repo = db.storage.begin().await.unwrap();
        let ann = repo.users().find_by_username("ann").await.unwrap().unwrap();
        repo.users()
            .set_display_name(ann.id, Some("Ann"))
            .await
            .unwrap();
        repo.commit().await.unwrap();
    }
    let out = manage(&dir, &["provision-all-users"], None).await;
    out.expect_code(0, "provision-all-users");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["provisioned\tann", "provisioned\tben"]);
    assert_eq!(out.stderr, "", "no progress on a pipe");
    assert_eq!(
        store.user("ann").unwrap().displayname.as_deref(),
        Some("Ann")
    );

    homeserver.set_unavailable(true);
    let out = manage(&dir, &["provision-all-users"], None).await;
    out.expect_code(1, "provision-all-users with the homeserver down");
    assert_eq!(out.stdout.lines().count(), 2);
    assert!(
        out.stdout.lines().all(|l| l.starts_with("queued\t")),
        "{out:#?}"
    );
}

backend_tests!(
    accounts,
    locks_sessions_and_tokens,
    a_compat_token_takes_the_device_of_an_oauth_session,
    registration_tokens_and_provisioning
);

/// Every `manage` subcommand explains itself with an example, on stdout, exit 0.
#[test]
fn help_has_examples() {
    let dir = Workdir::new();
    for sub in [
        "register-user",
        "set-password",
        "add-email",
        "verify-email",
        "promote-admin",
        "demote-admin",
        "lock-user",
        "unlock-user",
        "kill-sessions",
        "issue-compatibility-token",
        "issue-registration-token",
        "provision-all-users",
    ] {
        let out = dir.run(&["manage", sub, "--help"]);
        out.expect_code(0, sub);
        assert!(
            out.stdout.contains("Usage: provider manage"),
            "{sub}: {out:#?}"
        );
        assert!(out.stdout.contains("Example"), "`{sub}` has no example");
        assert_eq!(out.stderr, "");
    }
    let out = dir.run(&["manage", "--help"]);
    out.expect_code(0, "manage --help");
    assert!(out.stdout.contains("provision-all-users"));
    // An unknown config file: the problem is said, exit 1.
    let out = dir.run(&["manage", "lock-user", "-c", "missing.yaml", "bob"]);
    out.expect_code(1, "manage with a missing config");
    assert!(out.stderr.contains("missing.yaml"), "{out:#?}");
}

/// `admin.clients` is checked by `config check`: each entry once, and a static client named
/// there must be able to use client credentials.
#[test]
fn admin_clients_are_checked() {
    let dir = Workdir::new();
    dir.generate("c.yaml", &[]);
    let (_, settings) = provider::config::load(&dir.path("c.yaml"), Vec::new()).unwrap();
    assert!(
        settings.admin_clients.is_empty(),
        "no admin client by default"
    );
    let example = settings.clients[0].client_id.clone();
    let text = dir.read("c.yaml");
    assert!(
        text.contains("\nadmin:\n"),
        "config generate documents the section"
    );

    // The example client lacks the grant; a name listed twice; an empty one.
    let listed = format!("  clients: [\"{example}\", robot, robot, \"\"]");
    dir.write("bad.yaml", text.replacen("  clients: []", &listed, 1));
    let out = dir.run(&["config", "check", "bad.yaml"]);
    out.expect_code(1, "config check bad.yaml");
    for problem in [
        "admin.clients[0]: ",
        "doesn't have the client_credentials grant",
        "admin.clients[2]: `robot` is listed twice",
        "admin.clients[3]: must be a client_id",
    ] {
        assert!(
            out.stderr.contains(problem),
            "missing `{problem}`: {out:#?}"
        );
    }

    // With the grant, the example client may be an admin client; a client the file doesn't
    // define (a dynamic one) is taken as it is.
    let good = text
        .replacen(
            "  clients: []",
            &format!("  clients: [\"{example}\", robot]"),
            1,
        )
        .replace(
            "grant_types: [authorization_code, refresh_token]",
            "grant_types: [authorization_code, refresh_token, client_credentials]",
        );
    dir.write("good.yaml", good);
    let (_, settings) = provider::config::load(&dir.path("good.yaml"), Vec::new())
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(settings.admin_clients, [example, "robot".to_owned()]);
}
