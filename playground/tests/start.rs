//! The playground starts from an empty directory with its accounts, its homeserver wired to
//! its provider, and keeps keys, passwords and sessions between runs unless told to start fresh.

mod common;

use common::{get_json, login, options, password, start, whoami};
use provider::storage::Storage;

async fn user_count(storage: &Storage) -> u64 {
    storage
        .reader()
        .await
        .unwrap()
        .users()
        .count()
        .await
        .unwrap()
}

#[tokio::test]
async fn starts_from_nothing_seeds_accounts_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&dir.path().join("data"));
    let http = reqwest::Client::new();

    // First run: everything is made.
    let first = start(&options).await;
    let urls = first.urls.clone();
    assert_eq!(
        urls.issuer.as_str(),
        format!("http://{}/", first.provider_addr)
    );
    assert_eq!(
        urls.homeserver.as_str(),
        format!("http://{}/", first.homeserver_addr)
    );
    assert_eq!(
        urls.dashboard.as_str(),
        format!("http://{}/", first.dashboard_addr)
    );
    let summary = first.summary();
    let alice = password(&first, "alice");
    let bob = password(&first, "bob");
    for expected in [
        urls.issuer.as_str(),
        urls.homeserver.as_str(),
        urls.dashboard.as_str(),
        "alice",
        alice.as_str(),
        "(admin)",
        "bob",
        bob.as_str(),
        "playground-demo",
    ] {
        assert!(
            summary.contains(expected),
            "`{expected}` missing from:\n{summary}"
        );
    }
    let first_lines: Vec<&str> = summary.lines().take(4).collect();
    assert!(first_lines
        .iter()
        .any(|l| l.contains(urls.dashboard.as_str())));
    assert!(first_lines
        .iter()
        .any(|l| l.contains(urls.homeserver.as_str())));
    assert!(first_lines.iter().any(|l| l.contains(urls.issuer.as_str())));
    for name in ["provider.yaml", "provider.db", "accounts.json"] {
        assert!(options.data_dir.join(name).exists(), "{name}");
    }

    // The homeserver points clients at the provider, unchanged.
    let discovery = get_json(
        &http,
        urls.issuer
            .join(".well-known/openid-configuration")
            .unwrap(),
    )
    .await;
    assert_eq!(discovery["issuer"], urls.issuer.as_str());
    let through_homeserver = get_json(
        &http,
        urls.homeserver
            .join("_matrix/client/v1/auth_metadata")
            .unwrap(),
    )
    .await;
    assert_eq!(through_homeserver, discovery);
    let jwks = get_json(&http, urls.issuer.join("oauth2/keys.json").unwrap()).await;
    // Registration is open.
    let register = http
        .get(urls.issuer.join("register").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 200);

    // The seeded accounts sign in through the homeserver; alice may be an admin.
    let alice_token = login(&http, &urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    assert_eq!(
        whoami(&http, &urls.homeserver, &alice_token).await.unwrap(),
        "@alice:localhost"
    );
    let bob_token = login(&http, &urls.homeserver, "bob", &bob).await.unwrap();
    assert_eq!(
        whoami(&http, &urls.homeserver, &bob_token).await.unwrap(),
        "@bob:localhost"
    );
    let wrong = login(&http, &urls.homeserver, "bob", "not-the-password")
        .await
        .unwrap_err();
    assert_eq!(wrong["errcode"], "M_FORBIDDEN", "{wrong}");
    let mut repo = first.storage.reader().await.unwrap();
    let admin = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let not_admin = repo.users().find_by_username("bob").await.unwrap().unwrap();
    drop(repo);
    assert!(admin.can_request_admin);
    assert!(!not_admin.can_request_admin);
    assert_eq!(user_count(&first.storage).await, 2);
    let accounts = first.accounts.clone();
    first.stop().await.unwrap();

    // Second run: same keys, same passwords, no new users, and the homeserver (which forgets
    // everything when it stops) knows the earlier session again.
    let second = start(&options).await;
    assert_eq!(second.accounts, accounts);
    assert!(!second.summary().contains("TLS"));
    let urls = second.urls.clone();
    assert_eq!(
        get_json(&http, urls.issuer.join("oauth2/keys.json").unwrap()).await,
        jwks
    );
    assert_eq!(user_count(&second.storage).await, 2);
    assert_eq!(
        whoami(&http, &urls.homeserver, &alice_token).await.unwrap(),
        "@alice:localhost",
        "a session of the first run still works"
    );
    login(&http, &urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    second.stop().await.unwrap();

    // --fresh: new keys, new passwords, a new database (with the two accounts only).
    options.fresh = true;
    let third = start(&options).await;
    let urls = third.urls.clone();
    assert_ne!(
        get_json(&http, urls.issuer.join("oauth2/keys.json").unwrap()).await,
        jwks
    );
    assert_ne!(third.accounts, accounts);
    assert_eq!(user_count(&third.storage).await, 2);
    assert!(login(&http, &urls.homeserver, "alice", &alice)
        .await
        .is_err());
    login(&http, &urls.homeserver, "alice", &password(&third, "alice"))
        .await
        .unwrap();
    third.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_name_and_a_changed_password_are_set_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.server_name = "playground.test".into();
    let http = reqwest::Client::new();
    let first = start(&options).await;
    let alice = password(&first, "alice");
    // Someone changes alice's password in the database…
    let (version, hash) = first
        .provider
        .passwords
        .hash("something else".into())
        .await
        .unwrap();
    let user = first
        .storage
        .reader()
        .await
        .unwrap()
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let mut repo = first.storage.begin().await.unwrap();
    repo.user_passwords()
        .add(user.id, &hash, version, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    first.stop().await.unwrap();

    // …the next start sets the printed one back.
    let second = start(&options).await;
    let token = login(&http, &second.urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    assert_eq!(
        whoami(&http, &second.urls.homeserver, &token)
            .await
            .unwrap(),
        "@alice:playground.test"
    );
    second.stop().await.unwrap();
}

async fn runs_on_postgres(db: provider::test_harness::TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.database_url = Some(db.url.clone());
    let http = reqwest::Client::new();
    let first = start(&options).await;
    assert!(first.summary().contains("postgres://"));
    assert!(!options.data_dir.join("provider.db").exists());
    let alice = password(&first, "alice");
    login(&http, &first.urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    first.stop().await.unwrap();
    let second = start(&options).await;
    assert_eq!(user_count(&second.storage).await, 2);
    login(&http, &second.urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    second.stop().await.unwrap();
}

#[tokio::test]
async fn runs_on_postgres_when_given_a_database_url() {
    if let Some(db) = provider::test_harness::TestDb::postgres().await {
        runs_on_postgres(db).await;
    }
}
