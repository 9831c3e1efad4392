use chrono::Duration;
use provider::domain::protocol::ClientAuthMethod;
use provider::{backend_tests, test_harness::TestDb};
use serde_json::json;

async fn a_jti_is_used_once_per_client(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let a = repo
        .clients()
        .add(
            "client-a",
            false,
            None,
            ClientAuthMethod::PrivateKeyJwt,
            &json!({}),
        )
        .await
        .unwrap();
    let b = repo
        .clients()
        .add(
            "client-b",
            false,
            None,
            ClientAuthMethod::PrivateKeyJwt,
            &json!({}),
        )
        .await
        .unwrap();
    let expires = db.clock.now_db() + Duration::minutes(5);
    // RFC 7523 §3 item 7: first use, then a replay.
    assert!(repo
        .client_assertions()
        .record_jti(a.id, "jti-1", expires)
        .await
        .unwrap());
    assert!(!repo
        .client_assertions()
        .record_jti(a.id, "jti-1", expires)
        .await
        .unwrap());
    // The transaction stays usable after the conflict (PostgreSQL), and the same jti is
    // another client's own.
    assert!(repo
        .client_assertions()
        .record_jti(b.id, "jti-1", expires)
        .await
        .unwrap());
    repo.commit().await.unwrap();

    // Committed: still a replay on a fresh connection.
    let mut repo = db.storage.reader().await.unwrap();
    assert!(!repo
        .client_assertions()
        .record_jti(a.id, "jti-1", expires)
        .await
        .unwrap());
    assert!(repo
        .client_assertions()
        .record_jti(a.id, "jti-2", expires)
        .await
        .unwrap());

    // A client deleted meanwhile: NotFound, and the transaction stays usable (PostgreSQL).
    let mut repo = db.storage.begin().await.unwrap();
    assert!(repo.clients().delete(b.id).await.unwrap());
    assert!(matches!(
        repo.client_assertions()
            .record_jti(b.id, "jti-3", expires)
            .await,
        Err(provider::storage::StorageError::NotFound("client"))
    ));
    assert!(repo
        .client_assertions()
        .record_jti(a.id, "jti-3", expires)
        .await
        .unwrap());
    repo.commit().await.unwrap();
}

backend_tests!(a_jti_is_used_once_per_client);
