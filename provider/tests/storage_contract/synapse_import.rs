//! The storage contract of `provider syn2mas`'s import repository
//! (`storage/src/synapse_import.rs`), on SQLite and on PostgreSQL: every method, each natural key
//! (a second import inserts nothing), rows whose user is missing, batches larger than one
//! statement, and what the imported rows look like through the other repositories.

use chrono::{DateTime, Duration, Utc};
use provider::{
    backend_tests,
    crypto::sha256,
    domain::protocol::ClientAuthMethod,
    storage::{
        Imported, ImportedAccessToken, ImportedCompatSession, ImportedEmail, ImportedRefreshToken,
        ImportedUser, StorageError, UpstreamProviderParams,
    },
    test_harness::TestDb,
};
use serde_json::json;
use ulid::Ulid;

use Imported::{AlreadyThere, Inserted, NoUser};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

fn user(name: &str) -> ImportedUser {
    ImportedUser {
        username: name.to_owned(),
        created_at: at(1_600_000_000),
        can_request_admin: false,
        locked_at: None,
        deactivated_at: None,
        password: None,
    }
}

fn session(username: &str, device: &str) -> ImportedCompatSession {
    ImportedCompatSession {
        username: username.to_owned(),
        device_id: device.to_owned(),
        human_name: None,
        is_synapse_admin: false,
        created_at: at(1_600_000_100),
        last_active_at: None,
        user_agent: None,
        access_tokens: Vec::new(),
        refresh_tokens: Vec::new(),
    }
}

async fn import_runs(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(repo.synapse_import().last().await.unwrap(), None);
    let import = repo.synapse_import().start("example.com").await.unwrap();
    assert_eq!(import.server_name, "example.com");
    assert_eq!(import.started_at, db.clock.now_db());
    assert_eq!(import.finished_at, None);
    assert_eq!(
        repo.synapse_import().last().await.unwrap(),
        Some(import.clone())
    );
    db.clock.advance(Duration::seconds(30));
    repo.synapse_import().finish(import.id).await.unwrap();
    let finished = repo.synapse_import().last().await.unwrap().unwrap();
    assert_eq!(finished.id, import.id);
    assert_eq!(finished.finished_at, Some(db.clock.now_db()));
    assert!(matches!(
        repo.synapse_import().finish(Ulid::new()).await,
        Err(StorageError::NotFound(_))
    ));
    // The latest import is the last started.
    db.clock.advance(Duration::seconds(30));
    let second = repo.synapse_import().start("example.com").await.unwrap();
    assert_eq!(
        repo.synapse_import().last().await.unwrap().unwrap().id,
        second.id
    );
    repo.commit().await.unwrap();
}

async fn users_and_passwords(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    // An account that was not imported keeps its state: its username is taken.
    let zed = repo.users().add("zed").await.unwrap();

    let alice = ImportedUser {
        can_request_admin: true,
        locked_at: Some(at(1_700_000_000)),
        password: Some((0, "$2b$12$alicehash".to_owned())),
        ..user("alice")
    };
    let bob = ImportedUser {
        deactivated_at: Some(at(1_700_000_001)),
        ..user("bob")
    };
    let zed_import = ImportedUser {
        password: Some((0, "$2b$12$zedhash".to_owned())),
        ..user("zed")
    };
    let outcomes = repo
        .synapse_import()
        .import_users(&[alice.clone(), bob.clone(), zed_import.clone()])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Inserted, Inserted, AlreadyThere]);

    let a = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.created_at, alice.created_at);
    assert!(a.can_request_admin);
    assert_eq!(a.locked_at, alice.locked_at);
    assert_eq!(a.deactivated_at, None);
    let password = repo.user_passwords().active(a.id).await.unwrap().unwrap();
    assert_eq!(password.hashed_password, "$2b$12$alicehash");
    assert_eq!(password.version, 0);
    let b = repo.users().find_by_username("bob").await.unwrap().unwrap();
    assert!(!b.can_request_admin);
    assert_eq!(b.deactivated_at, bob.deactivated_at);
    assert!(repo.user_passwords().active(b.id).await.unwrap().is_none());
    // zed: untouched, no password added.
    assert!(repo
        .user_passwords()
        .active(zed.id)
        .await
        .unwrap()
        .is_none());

    // Again, with a new one among them: only the new one is written.
    let outcomes = repo
        .synapse_import()
        .import_users(&[alice, user("carol"), bob])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![AlreadyThere, Inserted, AlreadyThere]);
    assert_eq!(repo.users().count().await.unwrap(), 4);
    assert_eq!(
        repo.users()
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );

    // More rows than one statement takes, in order.
    let many: Vec<ImportedUser> = (0..1203)
        .map(|i| ImportedUser {
            password: (i % 2 == 0).then(|| (0, format!("$2b$04$hash{i}"))),
            ..user(&format!("user{i:04}"))
        })
        .collect();
    let outcomes = repo.synapse_import().import_users(&many).await.unwrap();
    assert_eq!(outcomes, vec![Inserted; 1203]);
    assert_eq!(repo.users().count().await.unwrap(), 4 + 1203);
    let last = repo
        .users()
        .find_by_username("user1202")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        repo.user_passwords()
            .active(last.id)
            .await
            .unwrap()
            .unwrap()
            .hashed_password,
        "$2b$04$hash1202"
    );
    repo.commit().await.unwrap();
}

async fn emails(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    repo.synapse_import()
        .import_users(&[user("alice")])
        .await
        .unwrap();
    let email = |username: &str, address: &str| ImportedEmail {
        username: username.to_owned(),
        email: address.to_owned(),
        added_at: at(1_650_000_000),
    };
    let outcomes = repo
        .synapse_import()
        .import_emails(&[
            email("alice", "alice@example.com"),
            email("ghost", "ghost@example.com"),
            email("alice", "alice@work.example"),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Inserted, NoUser, Inserted]);
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let mut list = repo.user_emails().list_for_user(alice.id).await.unwrap();
    list.sort_by(|a, b| a.email.cmp(&b.email));
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].email, "alice@example.com");
    // Confirmed, when Synapse added (and validated) it.
    assert_eq!(list[0].created_at, at(1_650_000_000));
    assert_eq!(list[0].confirmed_at, Some(at(1_650_000_000)));

    let outcomes = repo
        .synapse_import()
        .import_emails(&[
            email("alice", "alice@example.com"),
            email("ghost", "ghost@example.com"),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![AlreadyThere, NoUser]);
    assert_eq!(
        repo.user_emails()
            .list_for_user(alice.id)
            .await
            .unwrap()
            .len(),
        2
    );
    repo.commit().await.unwrap();
}

async fn upstream_links(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    repo.synapse_import()
        .import_users(&[user("alice")])
        .await
        .unwrap();
    let provider = repo
        .upstream_providers()
        .add(UpstreamProviderParams {
            issuer: Some("https://sso.example.com".to_owned()),
            human_name: None,
            brand_name: None,
            client_id: "client".to_owned(),
            encrypted_client_secret: None,
            token_endpoint_auth_method: ClientAuthMethod::None,
            scope: "openid".to_owned(),
            settings: json!({}),
        })
        .await
        .unwrap();
    let import = |username: &'static str, provider_id: Ulid, subject: &'static str| {
        (username, provider_id, subject)
    };
    for ((username, provider_id, subject), expected) in [
        (import("alice", provider.id, "sub-alice"), Inserted),
        (import("alice", provider.id, "sub-alice"), AlreadyThere),
        (import("ghost", provider.id, "sub-ghost"), NoUser),
    ] {
        let outcome = repo
            .synapse_import()
            .import_upstream_link(username, provider_id, subject)
            .await
            .unwrap();
        assert_eq!(outcome, expected, "{username} {subject}");
    }
    assert!(matches!(
        repo.synapse_import()
            .import_upstream_link("alice", Ulid::new(), "sub-alice")
            .await,
        Err(StorageError::NotFound("upstream provider"))
    ));
    let link = repo
        .upstream_links()
        .find_by_subject(provider.id, "sub-alice")
        .await
        .unwrap()
        .unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.user_id, Some(alice.id));
    repo.commit().await.unwrap();
}

async fn compat_sessions(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    repo.synapse_import()
        .import_users(&[user("alice"), user("bob")])
        .await
        .unwrap();
    let (phone_token, laptop_token, refresh) = (sha256("syt_a"), sha256("syt_b"), sha256("syr_a"));
    let phone = ImportedCompatSession {
        human_name: Some("Alice's phone".to_owned()),
        is_synapse_admin: true,
        last_active_at: Some(at(1_600_000_200)),
        user_agent: Some("Element".to_owned()),
        access_tokens: vec![
            ImportedAccessToken {
                token_hash: phone_token,
                created_at: at(1_600_000_150),
                expires_at: Some(at(4_000_000_000)),
            },
            ImportedAccessToken {
                token_hash: laptop_token,
                created_at: at(1_600_000_160),
                expires_at: None,
            },
        ],
        refresh_tokens: vec![ImportedRefreshToken {
            token_hash: refresh,
            access_token_hash: Some(phone_token),
            created_at: at(1_600_000_150),
        }],
        ..session("alice", "PHONE")
    };
    // bob's device reuses alice's token (impossible in Synapse): the session comes, the token
    // doesn't, and its refresh token is kept without an access token.
    let stolen = ImportedCompatSession {
        access_tokens: vec![ImportedAccessToken {
            token_hash: phone_token,
            created_at: at(1_600_000_150),
            expires_at: None,
        }],
        refresh_tokens: vec![ImportedRefreshToken {
            token_hash: sha256("syr_bob"),
            access_token_hash: Some(phone_token),
            created_at: at(1_600_000_150),
        }],
        ..session("bob", "BOBDEVICE")
    };
    let outcomes = repo
        .synapse_import()
        .import_compat_sessions(&[phone.clone(), session("ghost", "X"), stolen])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Inserted, NoUser, Inserted]);

    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let s = repo
        .compat_sessions()
        .find_active_by_device(alice.id, "PHONE")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.human_name.as_deref(), Some("Alice's phone"));
    assert!(s.is_synapse_admin);
    assert_eq!(s.created_at, at(1_600_000_100));
    assert_eq!(s.last_active_at, Some(at(1_600_000_200)));
    assert_eq!(s.user_agent.as_deref(), Some("Element"));
    let access = repo
        .compat_tokens()
        .find_access_by_hash(&phone_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(access.session_id, s.id);
    assert_eq!(access.created_at, at(1_600_000_150));
    assert_eq!(access.expires_at, Some(at(4_000_000_000)));
    let laptop = repo
        .compat_tokens()
        .find_access_by_hash(&laptop_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((laptop.session_id, laptop.expires_at), (s.id, None));
    let r = repo
        .compat_tokens()
        .find_refresh_by_hash(&refresh)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.session_id, r.access_token_id), (s.id, Some(access.id)));
    let bobs = repo
        .compat_tokens()
        .find_refresh_by_hash(&sha256("syr_bob"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(bobs.session_id, s.id);
    assert_eq!(bobs.access_token_id, None);

    // Again: nothing; and a device logged out since does not come back.
    repo.compat_sessions().finish(s.id).await.unwrap();
    let outcomes = repo
        .synapse_import()
        .import_compat_sessions(&[phone])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![AlreadyThere]);
    assert!(repo
        .compat_sessions()
        .find_active_by_device(alice.id, "PHONE")
        .await
        .unwrap()
        .is_none());

    // More sessions than one statement takes, each with a token.
    let many: Vec<ImportedCompatSession> = (0..700)
        .map(|i| ImportedCompatSession {
            access_tokens: vec![ImportedAccessToken {
                token_hash: sha256(&format!("syt_many_{i}")),
                created_at: at(1_600_000_000),
                expires_at: None,
            }],
            ..session("bob", &format!("DEVICE{i}"))
        })
        .collect();
    let outcomes = repo
        .synapse_import()
        .import_compat_sessions(&many)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Inserted; 700]);
    let bob = repo.users().find_by_username("bob").await.unwrap().unwrap();
    let s699 = repo
        .compat_sessions()
        .find_active_by_device(bob.id, "DEVICE699")
        .await
        .unwrap()
        .unwrap();
    let token = repo
        .compat_tokens()
        .find_access_by_hash(&sha256("syt_many_699"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.session_id, s699.id);
    repo.commit().await.unwrap();
}

/// Values arrive as Synapse had them, whatever their characters (a tab, a line break, a
/// backslash, `\N`: what PostgreSQL's text `COPY` would take for separators, escapes or NULL)
/// and to the millisecond; and a second import of the same rows in the same transaction (as a
/// dry run does) finds them.
async fn values_as_they_are(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let odd = "t\tab\there\nline\r\\N \\ ü 🙂 'quoted' \"too\"";
    let created = at(1_600_000_000) + Duration::milliseconds(123);
    let name = "historical\\name=ü";
    let alice = ImportedUser {
        created_at: created,
        locked_at: Some(created + Duration::milliseconds(1)),
        password: Some((3, format!("$2b$04${odd}"))),
        ..user(name)
    };
    for expected in [Inserted, AlreadyThere] {
        let outcomes = repo
            .synapse_import()
            .import_users(std::slice::from_ref(&alice))
            .await
            .unwrap();
        assert_eq!(outcomes, vec![expected]);
    }
    let u = repo.users().find_by_username(name).await.unwrap().unwrap();
    assert_eq!(
        (u.created_at, u.locked_at, u.deactivated_at),
        (alice.created_at, alice.locked_at, None)
    );
    let password = repo.user_passwords().active(u.id).await.unwrap().unwrap();
    assert_eq!(
        (password.version, password.hashed_password.as_str()),
        (3, format!("$2b$04${odd}").as_str())
    );

    let email = ImportedEmail {
        username: name.to_owned(),
        email: format!("{odd}@example.com"),
        added_at: created,
    };
    for expected in [Inserted, AlreadyThere] {
        let outcomes = repo
            .synapse_import()
            .import_emails(std::slice::from_ref(&email))
            .await
            .unwrap();
        assert_eq!(outcomes, vec![expected]);
    }
    let emails = repo.user_emails().list_for_user(u.id).await.unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].email, email.email);
    assert_eq!(emails[0].confirmed_at, Some(created));

    let token = sha256("syt_odd");
    let device = ImportedCompatSession {
        human_name: Some(odd.to_owned()),
        user_agent: Some(format!("{odd}/agent")),
        last_active_at: Some(created + Duration::milliseconds(2)),
        created_at: created,
        access_tokens: vec![ImportedAccessToken {
            token_hash: token,
            created_at: created,
            expires_at: Some(created + Duration::milliseconds(3)),
        }],
        refresh_tokens: vec![ImportedRefreshToken {
            token_hash: sha256("syr_odd"),
            access_token_hash: Some(token),
            created_at: created,
        }],
        ..session(name, "D\\1\tX")
    };
    for expected in [Inserted, AlreadyThere] {
        let outcomes = repo
            .synapse_import()
            .import_compat_sessions(std::slice::from_ref(&device))
            .await
            .unwrap();
        assert_eq!(outcomes, vec![expected]);
    }
    let s = repo
        .compat_sessions()
        .find_active_by_device(u.id, &device.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.human_name, device.human_name);
    assert_eq!(s.user_agent, device.user_agent);
    assert_eq!(
        (s.created_at, s.last_active_at),
        (created, device.last_active_at)
    );
    let access = repo
        .compat_tokens()
        .find_access_by_hash(&token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (access.session_id, access.created_at, access.expires_at),
        (s.id, created, device.access_tokens[0].expires_at)
    );
    let refresh = repo
        .compat_tokens()
        .find_refresh_by_hash(&sha256("syr_odd"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            refresh.session_id,
            refresh.access_token_id,
            refresh.created_at
        ),
        (s.id, Some(access.id), created)
    );
    repo.commit().await.unwrap();
}

backend_tests!(
    import_runs,
    users_and_passwords,
    emails,
    upstream_links,
    compat_sessions,
    values_as_they_are
);
