use chrono::Duration;
use provider::{backend_tests, storage::StorageError, test_harness::TestDb};
use ulid::Ulid;

async fn accepted_terms_are_recorded_once_per_url(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let bob = repo.users().add("bob").await.unwrap();
    let first = repo
        .user_terms()
        .accept(alice.id, "https://example.com/tos-v1")
        .await
        .unwrap();
    assert_eq!(first.user_id, alice.id);
    assert_eq!(first.terms_url, "https://example.com/tos-v1");
    assert_eq!(first.accepted_at, db.clock.now_db());

    // The same terms again: the first acceptance stays.
    db.clock.advance(Duration::minutes(1));
    let again = repo
        .user_terms()
        .accept(alice.id, "https://example.com/tos-v1")
        .await
        .unwrap();
    assert_eq!(again, first);
    // New terms: a new record.
    let second = repo
        .user_terms()
        .accept(alice.id, "https://example.com/tos-v2")
        .await
        .unwrap();
    assert_eq!(second.accepted_at, db.clock.now_db());

    // A missing user: NotFound, and the transaction stays usable (PostgreSQL).
    assert!(matches!(
        repo.user_terms()
            .accept(Ulid::new(), "https://example.com/tos-v1")
            .await,
        Err(StorageError::NotFound("user"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.user_terms().list_for_user(alice.id).await.unwrap(),
        vec![first, second]
    );
    assert!(repo
        .user_terms()
        .list_for_user(bob.id)
        .await
        .unwrap()
        .is_empty());
}

backend_tests!(accepted_terms_are_recorded_once_per_url);
