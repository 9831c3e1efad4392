use chrono::Duration;
use provider::{
    backend_tests,
    storage::{
        generate_registration_token, BoxRepository, RegistrationToken, RegistrationTokenInvalid,
        StorageError,
    },
    test_harness::TestDb,
};
use rand::{rngs::StdRng, SeedableRng};
use ulid::Ulid;

/// Counts a use of token `id`: whether it was granted.
async fn use_token(repo: &mut BoxRepository, id: Ulid) -> bool {
    repo.registration_tokens().use_token(id).await.unwrap()
}

/// Token `id` as stored now (it must be there).
async fn stored(repo: &mut BoxRepository, id: Ulid) -> RegistrationToken {
    repo.registration_tokens()
        .lookup(id)
        .await
        .unwrap()
        .unwrap()
}

async fn a_token_is_stored_hashed_and_found_by_value(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let expires = db.clock.now_db() + Duration::days(1);
    let added = repo
        .registration_tokens()
        .add("s3cret-token", Some(3), Some(expires))
        .await
        .unwrap();
    assert_eq!(added.usage_limit, Some(3));
    assert_eq!(added.times_used, 0);
    assert_eq!(added.created_at, db.clock.now_db());
    assert_eq!(added.expires_at, Some(expires));
    assert_eq!(added.last_used_at, None);
    assert_eq!(added.revoked_at, None);
    // The same value twice is a conflict, and the transaction stays usable (PostgreSQL).
    assert!(matches!(
        repo.registration_tokens()
            .add("s3cret-token", None, None)
            .await,
        Err(StorageError::Conflict("registration token"))
    ));
    let other = repo
        .registration_tokens()
        .add("other-token", None, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.registration_tokens().lookup(added.id).await.unwrap(),
        Some(added.clone())
    );
    assert_eq!(
        repo.registration_tokens()
            .find_by_token("s3cret-token")
            .await
            .unwrap(),
        Some(added.clone())
    );
    assert_eq!(
        repo.registration_tokens()
            .find_by_token("other-token")
            .await
            .unwrap()
            .map(|t| t.id),
        Some(other.id)
    );
    assert_eq!(
        repo.registration_tokens()
            .find_by_token("S3CRET-TOKEN")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.registration_tokens()
            .lookup(Ulid::new())
            .await
            .unwrap(),
        None
    );
}

/// Only the SHA-256 of the value reaches the database.
async fn the_value_is_not_stored(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    repo.registration_tokens()
        .add("plain-value-XYZ", None, None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    // The raw column, read on a connection of its own.
    let hash = provider::crypto::sha256("plain-value-XYZ");
    let url = db.url.clone();
    let stored: Vec<Vec<u8>> = if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows = sqlx::query_scalar("SELECT token_hash FROM registration_tokens")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let rows = sqlx::query_scalar("SELECT token_hash FROM registration_tokens")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    };
    assert_eq!(stored, vec![hash.to_vec()]);
}

async fn a_use_is_counted_until_the_limit(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let token = repo
        .registration_tokens()
        .add("twice", Some(2), None)
        .await
        .unwrap();
    db.clock.advance(Duration::minutes(1));
    assert!(use_token(&mut repo, token.id).await);
    assert!(use_token(&mut repo, token.id).await);
    // Used up: refused, and the count stays.
    assert!(!use_token(&mut repo, token.id).await);
    let used = stored(&mut repo, token.id).await;
    assert_eq!(used.times_used, 2);
    assert_eq!(used.last_used_at, Some(db.clock.now_db()));
    assert_eq!(
        used.invalid_reason(db.clock.now_db()),
        Some(RegistrationTokenInvalid::UsedUp)
    );
    // No such token.
    assert!(matches!(
        repo.registration_tokens().use_token(Ulid::new()).await,
        Err(StorageError::NotFound("registration token"))
    ));
    // Without a limit, any number of uses.
    let unlimited = repo
        .registration_tokens()
        .add("many", None, None)
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(use_token(&mut repo, unlimited.id).await);
    }
    // A limit of zero allows nothing.
    let zero = repo
        .registration_tokens()
        .add("none", Some(0), None)
        .await
        .unwrap();
    assert!(!use_token(&mut repo, zero.id).await);
    repo.commit().await.unwrap();
}

async fn a_rolled_back_use_is_given_back(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let token = repo
        .registration_tokens()
        .add("once", Some(1), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert!(use_token(&mut repo, token.id).await);
    drop(repo);

    let mut repo = db.storage.begin().await.unwrap();
    let after = stored(&mut repo, token.id).await;
    assert_eq!(after.times_used, 0);
    assert!(use_token(&mut repo, token.id).await);
    repo.commit().await.unwrap();
}

async fn an_expired_token_is_refused(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let expires = db.clock.now_db() + Duration::hours(1);
    let token = repo
        .registration_tokens()
        .add("soon", None, Some(expires))
        .await
        .unwrap();
    assert!(use_token(&mut repo, token.id).await);
    // Expiry is exclusive: at `expires_at` the token is expired.
    db.clock.advance(Duration::hours(1));
    assert!(!use_token(&mut repo, token.id).await);
    let token = stored(&mut repo, token.id).await;
    assert_eq!(token.times_used, 1);
    assert_eq!(
        token.invalid_reason(db.clock.now_db()),
        Some(RegistrationTokenInvalid::Expired)
    );
    repo.commit().await.unwrap();
}

async fn revocation_blocks_use_and_can_be_taken_back(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let token = repo
        .registration_tokens()
        .add("revocable", None, None)
        .await
        .unwrap();
    let revoked = repo.registration_tokens().revoke(token.id).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(db.clock.now_db()));
    assert_eq!(
        revoked.invalid_reason(db.clock.now_db()),
        Some(RegistrationTokenInvalid::Revoked)
    );
    assert!(!use_token(&mut repo, token.id).await);
    // Revoking again keeps the first time.
    db.clock.advance(Duration::minutes(5));
    let again = repo.registration_tokens().revoke(token.id).await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);

    let back = repo.registration_tokens().unrevoke(token.id).await.unwrap();
    assert_eq!(back.revoked_at, None);
    assert!(back.is_valid(db.clock.now_db()));
    assert!(use_token(&mut repo, token.id).await);

    assert!(matches!(
        repo.registration_tokens().revoke(Ulid::new()).await,
        Err(StorageError::NotFound("registration token"))
    ));
    assert!(matches!(
        repo.registration_tokens().unrevoke(Ulid::new()).await,
        Err(StorageError::NotFound("registration token"))
    ));
    repo.commit().await.unwrap();
}

async fn tokens_are_listed_by_page_and_validity(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let valid = repo
        .registration_tokens()
        .add("valid", Some(5), None)
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(1));
    let revoked = repo
        .registration_tokens()
        .add("revoked", None, None)
        .await
        .unwrap();
    repo.registration_tokens().revoke(revoked.id).await.unwrap();
    db.clock.advance(Duration::seconds(1));
    let expired = repo
        .registration_tokens()
        .add(
            "expired",
            None,
            Some(db.clock.now_db() + Duration::seconds(1)),
        )
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(1));
    let used_up = repo
        .registration_tokens()
        .add("used-up", Some(1), None)
        .await
        .unwrap();
    assert!(use_token(&mut repo, used_up.id).await);
    db.clock.advance(Duration::seconds(1));
    let unlimited = repo
        .registration_tokens()
        .add(
            "unlimited",
            None,
            Some(db.clock.now_db() + Duration::days(1)),
        )
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut repo = db.storage.reader().await.unwrap();
    let ids = |tokens: Vec<provider::storage::RegistrationToken>| {
        tokens.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(repo
            .registration_tokens()
            .list_page(None, 10, None)
            .await
            .unwrap()),
        vec![valid.id, revoked.id, expired.id, used_up.id, unlimited.id]
    );
    assert_eq!(
        ids(repo
            .registration_tokens()
            .list_page(None, 10, Some(true))
            .await
            .unwrap()),
        vec![valid.id, unlimited.id]
    );
    assert_eq!(
        ids(repo
            .registration_tokens()
            .list_page(None, 10, Some(false))
            .await
            .unwrap()),
        vec![revoked.id, expired.id, used_up.id]
    );
    // Keyset pages.
    assert_eq!(
        ids(repo
            .registration_tokens()
            .list_page(None, 2, None)
            .await
            .unwrap()),
        vec![valid.id, revoked.id]
    );
    assert_eq!(
        ids(repo
            .registration_tokens()
            .list_page(Some(revoked.id), 2, None)
            .await
            .unwrap()),
        vec![expired.id, used_up.id]
    );
    assert_eq!(
        ids(repo
            .registration_tokens()
            .list_page(Some(valid.id), 10, Some(true))
            .await
            .unwrap()),
        vec![unlimited.id]
    );
    assert!(repo
        .registration_tokens()
        .list_page(Some(unlimited.id), 10, None)
        .await
        .unwrap()
        .is_empty());
}

/// Two transactions racing for the last use of a token: one gets it, the other is refused once
/// the first commits (PostgreSQL re-checks the condition on the committed row; SQLite's single
/// writer serialises them).
async fn concurrent_uses_never_exceed_the_limit(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let token = repo
        .registration_tokens()
        .add("contested", Some(3), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let storage = db.storage.clone();
            tokio::spawn(async move {
                let mut repo = storage.begin().await.unwrap();
                let used = use_token(&mut repo, token.id).await;
                // Hold the transaction open a little, so the others pile up behind it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                repo.commit().await.unwrap();
                used
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        if task.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
    let mut repo = db.storage.reader().await.unwrap();
    let token = stored(&mut repo, token.id).await;
    assert_eq!(token.times_used, 3);
}

#[test]
fn generated_tokens_are_long_random_base62() {
    let mut rng = StdRng::seed_from_u64(1);
    let a = generate_registration_token(&mut rng);
    let b = generate_registration_token(&mut rng);
    assert_eq!(a.len(), provider::storage::REGISTRATION_TOKEN_LEN);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, b);
}

backend_tests!(
    a_token_is_stored_hashed_and_found_by_value,
    the_value_is_not_stored,
    a_use_is_counted_until_the_limit,
    a_rolled_back_use_is_given_back,
    an_expired_token_is_refused,
    revocation_blocks_use_and_can_be_taken_back,
    tokens_are_listed_by_page_and_validity,
    concurrent_uses_never_exceed_the_limit,
);
