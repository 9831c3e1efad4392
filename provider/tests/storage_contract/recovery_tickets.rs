//! Password recovery tickets: found by hash, used once before they expire, voided together, and
//! gone with the address they were mailed to.

use chrono::Duration;
use provider::clock::Clock as _;
use provider::{backend_tests, storage::StorageError, test_harness::TestDb};
use ulid::Ulid;

use crate::fixtures::hash;

async fn recovery_tickets(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let bob = repo.users().add("bob").await.unwrap();
    let email = repo
        .user_emails()
        .add(alice.id, "alice@example.org")
        .await
        .unwrap();
    let bobs = repo
        .user_emails()
        .add(bob.id, "bob@example.org")
        .await
        .unwrap();
    let expires = db.clock.now() + Duration::hours(1);
    let ticket = repo
        .recovery_tickets()
        .add(alice.id, email.id, &hash(1), expires)
        .await
        .unwrap();
    assert_eq!(ticket.user_id, alice.id);
    assert_eq!(ticket.created_at, db.clock.now_db());
    assert!(ticket.is_usable(db.clock.now()));
    assert!(!ticket.is_usable(expires));
    assert_eq!(
        repo.recovery_tickets()
            .find_by_ticket_hash(&hash(1))
            .await
            .unwrap(),
        Some(ticket.clone())
    );
    assert_eq!(
        repo.recovery_tickets()
            .find_by_ticket_hash(&hash(9))
            .await
            .unwrap(),
        None
    );
    // Only to one of the user's own addresses.
    assert!(matches!(
        repo.recovery_tickets()
            .add(alice.id, bobs.id, &hash(2), expires)
            .await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        repo.recovery_tickets()
            .add(alice.id, Ulid::nil(), &hash(2), expires)
            .await,
        Err(StorageError::NotFound("email address"))
    ));
    // A hash is unique.
    assert!(matches!(
        repo.recovery_tickets()
            .add(alice.id, email.id, &hash(1), expires)
            .await,
        Err(StorageError::Conflict(_))
    ));

    // Used once.
    assert!(repo.recovery_tickets().consume(ticket.id).await.unwrap());
    assert!(!repo.recovery_tickets().consume(ticket.id).await.unwrap());
    let used = repo
        .recovery_tickets()
        .find_by_ticket_hash(&hash(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.consumed_at, Some(db.clock.now_db()));
    assert!(matches!(
        repo.recovery_tickets().consume(Ulid::nil()).await,
        Err(StorageError::NotFound("recovery ticket"))
    ));

    // Expired: can't be used.
    let late = repo
        .recovery_tickets()
        .add(
            alice.id,
            email.id,
            &hash(3),
            db.clock.now() + Duration::hours(1),
        )
        .await
        .unwrap();
    db.clock.advance(Duration::hours(1));
    assert!(!repo.recovery_tickets().consume(late.id).await.unwrap());

    // A new password voids the others, only the user's.
    let a = repo
        .recovery_tickets()
        .add(
            alice.id,
            email.id,
            &hash(4),
            db.clock.now() + Duration::hours(1),
        )
        .await
        .unwrap();
    let b = repo
        .recovery_tickets()
        .add(
            bob.id,
            bobs.id,
            &hash(5),
            db.clock.now() + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(
        repo.recovery_tickets()
            .consume_all_for_user(alice.id)
            .await
            .unwrap(),
        2,
        "the expired one and the new one"
    );
    assert!(!repo.recovery_tickets().consume(a.id).await.unwrap());
    assert!(repo.recovery_tickets().consume(b.id).await.unwrap());

    // Removing the address removes its tickets.
    assert!(repo.user_emails().remove(email.id).await.unwrap());
    assert_eq!(
        repo.recovery_tickets()
            .find_by_ticket_hash(&hash(4))
            .await
            .unwrap(),
        None
    );
    repo.commit().await.unwrap();
}

backend_tests!(recovery_tickets);
