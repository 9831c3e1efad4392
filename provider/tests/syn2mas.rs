//! `provider syn2mas`: a Synapse database built with Synapse's own schema (the tables the
//! migration reads, as `synapse/storage/schema/main/full_schemas/72/full.sql.sqlite` and the
//! later deltas create them), filled as Synapse fills it (bcrypt hashes of password + pepper
//! made by PyPI `bcrypt`, `syt_` tokens with Synapse's checksum, a macaroon, a refresh pair);
//! then `check`, a dry run (nothing written, the same report), the migration, a second one
//! (nothing changes), and the provider's side: old passwords sign in and are upgraded to
//! argon2id, old tokens answer at introspection with their device, the admin keeps admin, the
//! deactivated user can't sign in. The provider's database is SQLite or PostgreSQL.

mod support;

use provider::{
    backend_tests,
    cli::syn2mas::{
        check::{self, Level},
        migrate::{self, Options, Progress},
        synapse::{SynapseConfig, SynapseDb},
    },
    crypto::sha256,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{http, introspect_as_homeserver, json_of};

/// Synapse's tables as its schema files create them (SQLite).
const SYNAPSE_SCHEMA: &str = r#"
CREATE TABLE users( name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT DEFAULT 0 NOT NULL, upgrade_ts BIGINT, is_guest SMALLINT DEFAULT 0 NOT NULL, appservice_id TEXT, consent_version TEXT, consent_server_notice_sent TEXT, user_type TEXT DEFAULT NULL, deactivated SMALLINT DEFAULT 0 NOT NULL, shadow_banned BOOLEAN, consent_ts bigint, UNIQUE(name) );
ALTER TABLE users ADD COLUMN approved BOOLEAN;
ALTER TABLE users ADD locked BOOLEAN DEFAULT FALSE NOT NULL;
ALTER TABLE users ADD COLUMN suspended BOOLEAN DEFAULT FALSE NOT NULL;
CREATE TABLE IF NOT EXISTS "user_threepids" ( user_id TEXT NOT NULL, medium TEXT NOT NULL, address TEXT NOT NULL, validated_at BIGINT NOT NULL, added_at BIGINT NOT NULL, CONSTRAINT medium_address UNIQUE (medium, address) );
CREATE TABLE IF NOT EXISTS "devices" (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen BIGINT,
    ip TEXT,
    user_agent TEXT,
    hidden BOOLEAN DEFAULT 0,
    CONSTRAINT device_uniqueness UNIQUE (user_id, device_id)
);
CREATE TABLE user_external_ids (
    auth_provider TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    UNIQUE (auth_provider, external_id)
);
CREATE TABLE refresh_tokens (
  id BIGINT PRIMARY KEY,
  user_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  token TEXT NOT NULL,
  next_token_id BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE, expiry_ts BIGINT DEFAULT NULL, ultimate_session_expiry_ts BIGINT DEFAULT NULL,
  UNIQUE(token)
);
CREATE TABLE IF NOT EXISTS "access_tokens" (
    id BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    token TEXT NOT NULL,
    valid_until_ms BIGINT,
    puppets_user_id TEXT,
    last_validated BIGINT, refresh_token_id BIGINT REFERENCES refresh_tokens (id) ON DELETE CASCADE, used BOOLEAN,
    UNIQUE(token)
);
"#;

const PEPPER: &str = "p3pp3r";

/// `bcrypt.hashpw((f"{name}-old-password" + PEPPER).encode(), bcrypt.gensalt(4))`, made with
/// the PyPI `bcrypt` of Synapse 1.163.2's virtualenv, as Synapse's `hash_password` does.
const HASHES: [(&str, &str); 4] = [
    (
        "alice",
        "$2b$04$JStt2m1N7hK5hcDPB0iLbOZnLjgZgQdm7quEOzHMJWSoNrURwE.gq",
    ),
    (
        "bob",
        "$2b$04$uR5AjquTuAb6WA1RGYKNietX4BFOsTMcoO8KcPLuPmwC.tj3Vqmce",
    ),
    (
        "carol",
        "$2b$04$CmsQHvd4zjnLqXZ64DYEJec7Iv6E.nQX0tmMyDnn.913QKAhVmnwG",
    ),
    (
        "dave",
        "$2b$04$acAHdHSdenxAQ00vOpxk/uV6uJRSmkrjCCWJ/B83WxrhZPyXUjE7e",
    ),
];

/// A `syt_` token as Synapse's `generate_access_token` makes it (`syr_` for refresh).
fn synapse_token(prefix: &str, localpart: &str, random: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(localpart);
    let base = format!("{prefix}_{b64}_{random}");
    let mut crc = crc32fast::hash(base.as_bytes());
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    while crc > 0 {
        digits.push(alphabet[(crc % 62) as usize]);
        crc /= 62;
    }
    while digits.len() < 6 {
        digits.push(b'0');
    }
    digits.reverse();
    format!("{base}_{}", String::from_utf8(digits).unwrap())
}

const MACAROON: &str = "MDAxN2xvY2F0aW9uIGxvY2FsaG9zdAowMDEzaWRlbnRpZmllciBrZXkKMDAxMGNpZCBnZW4gPSAxCjAwMjRjaWQgdXNlcl9pZCA9IEBib2I6bG9jYWxob3N0CjAwMTZjaWQgdHlwZSA9IGFjY2VzcwowMDJmc2lnbmF0dXJlIMh8";

struct Tokens {
    alice: String,
    bob_macaroon: String,
    bob_refreshable: String,
    bob_refresh: String,
    puppet: String,
    carol: String,
}

/// Builds Synapse's database at `path`: four users (alice an admin, carol deactivated, dave
/// locked), a guest, an appservice user, e-mail and phone 3PIDs, an SSO link, devices (one
/// hidden) and tokens.
async fn synapse_database(path: &std::path::Path) -> Tokens {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(SYNAPSE_SCHEMA)
        .execute(&mut conn)
        .await
        .unwrap();
    let tokens = Tokens {
        alice: synapse_token("syt", "alice", "KiWMbqkSHAjxdXpQcPfT"),
        bob_macaroon: MACAROON.to_owned(),
        bob_refreshable: synapse_token("syt", "bob", "RefreshableAccessTok"),
        bob_refresh: synapse_token("syr", "bob", "TheRefreshTokenValue"),
        puppet: synapse_token("syt", "bob", "PuppetedByAliceToken"),
        carol: synapse_token("syt", "carol", "CarolWasDeactivatedX"),
    };
    for (name, hash) in HASHES {
        let (admin, deactivated, locked) = match name {
            "alice" => (1, 0, false),
            "carol" => (0, 1, false),
            "dave" => (0, 0, true),
            _ => (0, 0, false),
        };
        sqlx::query(
            "INSERT INTO users (name, password_hash, creation_ts, admin, deactivated, locked) \
             VALUES ($1, $2, 1600000000, $3, $4, $5)",
        )
        .bind(format!("@{name}:localhost"))
        .bind(hash)
        .bind(admin)
        .bind(deactivated)
        .bind(locked)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let statements = [
        "INSERT INTO users (name, creation_ts, is_guest) VALUES ('@12345:localhost', 1600000000, 1)".to_owned(),
        "INSERT INTO users (name, creation_ts, appservice_id) VALUES ('@irc_bridge:localhost', 1600000000, 'irc')".to_owned(),
        "INSERT INTO user_threepids VALUES ('@alice:localhost', 'email', 'alice@example.com', 1600000001000, 1600000001000)".to_owned(),
        "INSERT INTO user_threepids VALUES ('@bob:localhost', 'msisdn', '447700900000', 1600000001000, 1600000001000)".to_owned(),
        "INSERT INTO user_external_ids VALUES ('oidc-keycloak', 'kc-subject-bob', '@bob:localhost')".to_owned(),
        "INSERT INTO devices VALUES ('@alice:localhost', 'ALICEDEVICE', 'Alice phone', 1600000002000, '10.0.0.1', 'Element', 0)".to_owned(),
        "INSERT INTO devices VALUES ('@alice:localhost', 'MASTERKEYDEVICE', NULL, NULL, NULL, NULL, 1)".to_owned(),
        "INSERT INTO devices VALUES ('@bob:localhost', 'BOBDEVICE', 'Bob laptop', 1600000002000, NULL, NULL, 0)".to_owned(),
        "INSERT INTO devices VALUES ('@bob:localhost', 'BOBREFRESH', NULL, 1600000002000, NULL, NULL, 0)".to_owned(),
        "INSERT INTO devices VALUES ('@carol:localhost', 'CAROLDEVICE', NULL, 1600000002000, NULL, NULL, 0)".to_owned(),
        format!("INSERT INTO access_tokens (id, user_id, device_id, token, last_validated) VALUES (1, '@alice:localhost', 'ALICEDEVICE', '{}', 1600000002000)", tokens.alice),
        format!("INSERT INTO access_tokens (id, user_id, device_id, token) VALUES (2, '@bob:localhost', 'BOBDEVICE', '{}')", tokens.bob_macaroon),
        format!("INSERT INTO access_tokens (id, user_id, device_id, token, puppets_user_id) VALUES (3, '@alice:localhost', 'ALICEDEVICE', '{}', '@bob:localhost')", tokens.puppet),
        "INSERT INTO access_tokens (id, user_id, device_id, token) VALUES (4, '@alice:localhost', NULL, 'syt_YWxpY2U_deviceless_000000')".to_owned(),
        format!("INSERT INTO access_tokens (id, user_id, device_id, token) VALUES (5, '@carol:localhost', 'CAROLDEVICE', '{}')", tokens.carol),
        format!("INSERT INTO refresh_tokens (id, user_id, device_id, token) VALUES (1, '@bob:localhost', 'BOBREFRESH', '{}')", tokens.bob_refresh),
        // Refreshable access tokens expire (5 min by default): this one is still valid.
        format!("INSERT INTO access_tokens (id, user_id, device_id, token, valid_until_ms, refresh_token_id, used) VALUES (6, '@bob:localhost', 'BOBREFRESH', '{}', 99999999999999, 1, 1)", tokens.bob_refreshable),
    ];
    for statement in statements {
        sqlx::raw_sql(&statement).execute(&mut conn).await.unwrap();
    }
    tokens
}

struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: &'static str, _: usize) {}
    fn advance(&mut self, _: usize) {}
    fn finish(&mut self) {}
}

fn table<'a>(report: &'a migrate::Report, name: &str) -> &'a migrate::TableReport {
    &report
        .tables
        .iter()
        .find(|(t, _)| *t == name)
        .unwrap_or_else(|| panic!("no table {name} in the report"))
        .1
}

async fn login(provider: &TestProvider, user: &str, password: &str) -> (u16, Value) {
    let response = http()
        .post(provider.url("/_matrix/client/v3/login"))
        .json(&json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    (status, body)
}

async fn a_synapse_database_moves_to_the_provider(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let synapse_db_path = dir.path().join("homeserver.db");
    let tokens = synapse_database(&synapse_db_path).await;
    let synapse = SynapseConfig::parse(
        &format!(
            "server_name: localhost\n\
             database: {{name: sqlite3, args: {{database: {}}}}}\n\
             password_config: {{pepper: {PEPPER}}}\n\
             oidc_providers:\n  - {{idp_id: keycloak, issuer: 'https://kc.example/'}}\n",
            synapse_db_path.display()
        ),
        dir.path(),
    )
    .unwrap();
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__SECRETS__PASSWORD_PEPPER", PEPPER)]).await;
    let settings = provider.settings.clone();
    let synapse_db = SynapseDb::open(synapse.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let before = std::fs::read(&synapse_db_path).unwrap();

    // check: the unmapped SSO provider is an error naming the key; the rest are warnings.
    let findings = check::findings(&synapse, &synapse_db, &settings)
        .await
        .unwrap();
    let errors: Vec<_> = findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{findings:#?}");
    assert!(
        errors[0].fix.contains("synapse_idp_id: oidc-keycloak")
            && errors[0].message.contains("1 user linked"),
        "{findings:#?}"
    );
    let warnings: Vec<String> = findings
        .iter()
        .filter(|f| f.level == Level::Warning)
        .map(|f| f.message.clone())
        .collect();
    for expected in [
        "guest",
        "application services",
        "phone",
        "no device",
        "log in as",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "no warning about {expected}: {warnings:#?}"
        );
    }

    // A dry run writes nothing and reports exactly what the migration then does.
    let options = |dry_run| Options {
        dry_run,
        batch_size: 2,
    };
    let dry = migrate::run(
        &synapse,
        &synapse_db,
        &settings,
        &db.storage,
        &mut Quiet,
        options(true),
    )
    .await
    .unwrap();
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 0, "the dry run wrote");
    assert_eq!(repo.synapse_import().last().await.unwrap(), None);
    drop(repo);

    let real = migrate::run(
        &synapse,
        &synapse_db,
        &settings,
        &db.storage,
        &mut Quiet,
        options(false),
    )
    .await
    .unwrap();
    assert_eq!(
        dry.tables, real.tables,
        "the dry run's report is the real one"
    );
    let users = table(&real, "users");
    assert_eq!(
        (users.read, users.imported, users.skipped_total()),
        (6, 4, 2)
    );
    assert_eq!(table(&real, "passwords").imported, 4);
    let emails = table(&real, "e-mail addresses");
    assert_eq!((emails.imported, emails.skipped_total()), (1, 1));
    let links = table(&real, "upstream links");
    assert_eq!((links.imported, links.skipped_total()), (0, 1));
    assert!(links
        .skipped
        .contains_key("no upstream provider has `synapse_idp_id: oidc-keycloak`"));
    let devices = table(&real, "devices");
    // alice's, bob's two; carol is deactivated; the hidden device is no session.
    assert_eq!(
        (devices.read, devices.imported, devices.skipped_total()),
        (4, 3, 1)
    );
    let access = table(&real, "access tokens");
    assert_eq!((access.imported, access.skipped_total()), (3, 1));
    assert_eq!(table(&real, "refresh tokens").imported, 1);
    assert!(real.changed_anything());

    // A second run changes nothing, and says so.
    let again = migrate::run(
        &synapse,
        &synapse_db,
        &settings,
        &db.storage,
        &mut Quiet,
        options(false),
    )
    .await
    .unwrap();
    assert!(!again.changed_anything(), "{:#?}", again.tables);
    assert!(again.previous.as_ref().unwrap().finished_at.is_some());
    assert_eq!(table(&again, "users").already, 4);
    assert_eq!(table(&again, "devices").already, 3);
    synapse_db.close().await;
    assert_eq!(
        std::fs::read(&synapse_db_path).unwrap(),
        before,
        "Synapse's database was written to"
    );

    // The provider's side. Flags first.
    let mut repo = db.storage.reader().await.unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(alice.can_request_admin);
    let bob = repo.users().find_by_username("bob").await.unwrap().unwrap();
    assert!(!bob.can_request_admin);
    let carol = repo
        .users()
        .find_by_username("carol")
        .await
        .unwrap()
        .unwrap();
    assert!(carol.deactivated_at.is_some());
    let dave = repo
        .users()
        .find_by_username("dave")
        .await
        .unwrap()
        .unwrap();
    assert!(dave.locked_at.is_some());
    assert!(repo
        .users()
        .find_by_username("12345")
        .await
        .unwrap()
        .is_none());
    let emails = repo.user_emails().list_for_user(alice.id).await.unwrap();
    assert_eq!(emails.len(), 1);
    assert!(emails[0].confirmed_at.is_some());
    drop(repo);

    // Old tokens answer with their device; alice's session is an admin's.
    let answer = introspect_as_homeserver(&provider, &tokens.alice).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["username"], "alice");
    assert_eq!(answer["device_id"], "ALICEDEVICE");
    assert!(answer["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .any(|s| s == "urn:synapse:admin:*"));
    let answer = introspect_as_homeserver(&provider, &tokens.bob_macaroon).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["device_id"], "BOBDEVICE");
    assert!(!answer["scope"]
        .as_str()
        .unwrap()
        .contains("urn:synapse:admin"));
    let answer = introspect_as_homeserver(&provider, &tokens.bob_refreshable).await;
    assert_eq!(answer["device_id"], "BOBREFRESH", "{answer}");
    // Not migrated: a puppeting token, a deactivated user's.
    for token in [&tokens.puppet, &tokens.carol] {
        assert_eq!(
            introspect_as_homeserver(&provider, token).await,
            json!({"active": false})
        );
    }
    // Stored as hashes only.
    let mut repo = db.storage.reader().await.unwrap();
    assert!(repo
        .compat_tokens()
        .find_access_by_hash(&sha256(&tokens.alice))
        .await
        .unwrap()
        .is_some());
    drop(repo);

    // Old passwords sign in (with the pepper) and are upgraded to argon2id.
    let (status, body) = login(&provider, "alice", "alice-old-password").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = login(&provider, "bob", "bob-old-password").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = login(&provider, "bob", "alice-old-password").await;
    assert_eq!(status, 403);
    let mut repo = db.storage.reader().await.unwrap();
    let password = repo
        .user_passwords()
        .active(alice.id)
        .await
        .unwrap()
        .unwrap();
    assert!(password.hashed_password.starts_with("$argon2id$"));
    drop(repo);
    // The deactivated user can't.
    let (status, body) = login(&provider, "carol", "carol-old-password").await;
    assert_ne!(status, 200, "{body}");

    provider.stop().await;
}

backend_tests!(a_synapse_database_moves_to_the_provider);
