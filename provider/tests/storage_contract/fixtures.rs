//! Setup shared by the contract tests: the rows a test needs before it exercises what it is
//! about. Each helper unwraps: a setup step that fails is a broken test, not a finding.

use provider::domain::protocol::ClientAuthMethod;
use provider::storage::{
    BoxRepository, Client, CompatSession, NewOAuth2Session, OAuth2Session, StorageError, TokenHash,
    User,
};
use provider::test_harness::TestDb;
use serde_json::json;
use ulid::Ulid;

/// Runs one SQL statement outside the repositories, on a connection of its own: a row written
/// by hand (or by an older or newer version), for the tests of what a read makes of it.
pub async fn write_by_hand(db: &TestDb, sql: &str) {
    if db.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// Asserts that a read refused a stored value as corrupt data ([`StorageError::Invalid`]),
/// naming what it refused (`names`: the value, or its column).
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(read: Result<T, StorageError>, names: &str) {
    assert!(
        matches!(read, Err(StorageError::Invalid(ref m)) if m.contains(names)),
        "expected a refusal naming {names}: {read:?}"
    );
}

/// A token hash made of one repeated byte: distinct `n`, distinct hashes.
pub fn hash(n: u8) -> TokenHash {
    [n; 32]
}

/// A new user `name` and a new dynamic public client `client-<name>` (no secret, `none` auth
/// method, metadata `{}`).
pub async fn user_and_client(repo: &mut BoxRepository, name: &str) -> (User, Client) {
    let user = repo.users().add(name).await.unwrap();
    let client = repo
        .clients()
        .add(
            &format!("client-{name}"),
            false,
            None,
            ClientAuthMethod::None,
            &json!({}),
        )
        .await
        .unwrap();
    (user, client)
}

/// A new browser session of the user (no user agent, no IP address); returns its ID.
pub async fn browser_session(repo: &mut BoxRepository, user: &User) -> Ulid {
    repo.browser_sessions()
        .add(user.id, None, None)
        .await
        .unwrap()
        .id
}

/// What [`oauth2_session`] starts: a session of the user with the client for the Matrix client
/// API, from no browser session; override fields with `..session_for(user, client)`.
pub fn session_for(user: &User, client: &Client) -> NewOAuth2Session<'static> {
    NewOAuth2Session {
        user_id: Some(user.id),
        client_id: client.id,
        browser_session_id: None,
        scope: "openid urn:matrix:client:api:*",
        device_id: None,
        user_agent: None,
    }
}

/// A new OAuth 2.0 session, as [`session_for`] describes it.
pub async fn oauth2_session(
    repo: &mut BoxRepository,
    user: &User,
    client: &Client,
) -> OAuth2Session {
    repo.oauth2_sessions()
        .add(session_for(user, client))
        .await
        .unwrap()
}

/// A new compat session of the user's device (no display name, not a Synapse administrator, no
/// user agent).
pub async fn compat_session(
    repo: &mut BoxRepository,
    user: &User,
    device_id: &str,
) -> CompatSession {
    repo.compat_sessions()
        .add(user.id, device_id, None, false, None)
        .await
        .unwrap()
}

/// Waits until a statement of the PostgreSQL database at `url` waits for a lock (one that a
/// test's other transaction holds), polling `pg_stat_activity`; whether one did within ten
/// seconds.
pub async fn a_statement_waits_for_a_lock(url: &str) -> bool {
    use sqlx::Connection as _;

    let mut watch = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..1000 {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}
