//! Email verification codes and pending registrations: one counted attempt per try, never past
//! the limit, never after expiry or use; the newest code counts.

use chrono::Duration;
use provider::clock::Clock as _;
use provider::{
    backend_tests,
    storage::{NewPendingRegistration, StorageError},
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::hash;

async fn verification_codes(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("alice").await.unwrap();
    let email = repo
        .user_emails()
        .add(user.id, "alice@example.org")
        .await
        .unwrap();
    assert_eq!(
        repo.user_email_verifications()
            .latest(email.id)
            .await
            .unwrap(),
        None
    );
    let expires = db.clock.now() + Duration::minutes(15);
    let first = repo
        .user_email_verifications()
        .add(email.id, &hash(1), expires)
        .await
        .unwrap();
    assert_eq!(first.attempts, 0);
    assert_eq!(first.created_at, db.clock.now_db());
    assert_eq!(first.consumed_at, None);
    db.clock.advance(Duration::seconds(1));
    let second = repo
        .user_email_verifications()
        .add(email.id, &hash(2), expires)
        .await
        .unwrap();
    // The newest code counts.
    assert_eq!(
        repo.user_email_verifications()
            .latest(email.id)
            .await
            .unwrap(),
        Some(second.clone())
    );

    // Three attempts allowed: counted one by one, then refused.
    for n in 1..=3 {
        let tried = repo
            .user_email_verifications()
            .record_attempt(second.id, 3)
            .await
            .unwrap()
            .expect("an attempt under the limit");
        assert_eq!(tried.attempts, n);
        assert_eq!(tried.code_hash, hash(2));
    }
    assert_eq!(
        repo.user_email_verifications()
            .record_attempt(second.id, 3)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.user_email_verifications()
            .latest(email.id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        3,
        "a refused attempt changes nothing"
    );

    // Used once.
    assert!(repo
        .user_email_verifications()
        .consume(first.id)
        .await
        .unwrap());
    assert!(!repo
        .user_email_verifications()
        .consume(first.id)
        .await
        .unwrap());
    assert_eq!(
        repo.user_email_verifications()
            .record_attempt(first.id, 10)
            .await
            .unwrap(),
        None,
        "a used code can't be tried"
    );
    assert!(matches!(
        repo.user_email_verifications().consume(Ulid::nil()).await,
        Err(StorageError::NotFound("email verification"))
    ));
    // An address that is gone.
    assert!(matches!(
        repo.user_email_verifications()
            .add(Ulid::nil(), &hash(3), expires)
            .await,
        Err(StorageError::NotFound("email address"))
    ));
    repo.commit().await.unwrap();

    // Expired: neither tried nor used.
    let mut repo = db.storage.begin().await.unwrap();
    let third = repo
        .user_email_verifications()
        .add(email.id, &hash(4), db.clock.now() + Duration::minutes(15))
        .await
        .unwrap();
    db.clock.advance(Duration::minutes(15));
    assert_eq!(
        repo.user_email_verifications()
            .record_attempt(third.id, 5)
            .await
            .unwrap(),
        None
    );
    assert!(!repo
        .user_email_verifications()
        .consume(third.id)
        .await
        .unwrap());

    // Removing the address removes its codes.
    assert!(repo.user_emails().remove(email.id).await.unwrap());
    assert_eq!(
        repo.user_email_verifications()
            .latest(email.id)
            .await
            .unwrap(),
        None
    );
    repo.commit().await.unwrap();
}

async fn pending_registrations(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let token = Ulid::from_parts(7, 7);
    let expires = db.clock.now() + Duration::minutes(15);
    let pending = repo
        .pending_registrations()
        .add(NewPendingRegistration {
            username: "carol",
            email: "carol@example.org",
            hashed_password: "$argon2id$x",
            password_version: 1,
            code_hash: &hash(1),
            expires_at: expires,
            registration_token_id: Some(token),
            accepted_terms_url: Some("https://example.org/terms"),
        })
        .await
        .unwrap();
    assert_eq!(pending.attempts, 0);
    assert_eq!(pending.completed_at, None);
    assert_eq!(
        repo.pending_registrations()
            .lookup(pending.id)
            .await
            .unwrap(),
        Some(pending.clone())
    );
    assert_eq!(
        repo.pending_registrations()
            .lookup(Ulid::nil())
            .await
            .unwrap(),
        None
    );
    // No user, no username taken.
    assert_eq!(repo.users().find_by_username("carol").await.unwrap(), None);

    for n in 1..=2 {
        let tried = repo
            .pending_registrations()
            .record_attempt(pending.id, 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tried.attempts, n);
    }
    assert_eq!(
        repo.pending_registrations()
            .record_attempt(pending.id, 2)
            .await
            .unwrap(),
        None
    );
    // A new code: attempts start over, the expiry moves.
    db.clock.advance(Duration::minutes(20));
    assert_eq!(
        repo.pending_registrations()
            .record_attempt(pending.id, 5)
            .await
            .unwrap(),
        None,
        "expired"
    );
    let later = db.clock.now() + Duration::minutes(15);
    assert!(repo
        .pending_registrations()
        .renew_code(pending.id, &hash(2), later)
        .await
        .unwrap());
    let renewed = repo
        .pending_registrations()
        .record_attempt(pending.id, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.attempts, 1);
    assert_eq!(renewed.code_hash, hash(2));
    assert_eq!(
        renewed.expires_at,
        provider::storage::types::db_precision(later)
    );

    // Completed once; the password hash is dropped; nothing more can happen to it.
    assert!(repo
        .pending_registrations()
        .complete(pending.id)
        .await
        .unwrap());
    assert!(!repo
        .pending_registrations()
        .complete(pending.id)
        .await
        .unwrap());
    let done = repo
        .pending_registrations()
        .lookup(pending.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.completed_at, Some(db.clock.now_db()));
    assert_eq!(done.hashed_password, "");
    assert_eq!(done.registration_token_id, Some(token));
    assert_eq!(
        done.accepted_terms_url.as_deref(),
        Some("https://example.org/terms")
    );
    assert!(!repo
        .pending_registrations()
        .renew_code(pending.id, &hash(3), later)
        .await
        .unwrap());
    assert_eq!(
        repo.pending_registrations()
            .record_attempt(pending.id, 5)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        repo.pending_registrations().complete(Ulid::nil()).await,
        Err(StorageError::NotFound("pending registration"))
    ));
    repo.commit().await.unwrap();
}

backend_tests!(verification_codes, pending_registrations);
