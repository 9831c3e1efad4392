use chrono::Duration;
use provider::{backend_tests, storage::StorageError, test_harness::TestDb};

async fn users(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    assert_eq!(alice.username, "alice");
    assert!(alice.is_active());
    assert!(!alice.can_request_admin);
    assert_eq!(alice.created_at, db.clock.now_db());

    // A username is never issued twice.
    assert!(matches!(
        repo.users().add("alice").await,
        Err(StorageError::Conflict("user"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.users().lookup(alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        repo.users().find_by_username("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(repo.users().find_by_username("bob").await.unwrap(), None);
    assert_eq!(repo.users().lookup(ulid::Ulid::nil()).await.unwrap(), None);

    db.clock.advance(Duration::minutes(1));
    let locked = repo.users().set_locked(alice.id, true).await.unwrap();
    assert_eq!(locked.locked_at, Some(db.clock.now_db()));
    assert!(!locked.is_active());
    let unlocked = repo.users().set_locked(alice.id, false).await.unwrap();
    assert_eq!(unlocked.locked_at, None);

    let gone = repo.users().set_deactivated(alice.id, true).await.unwrap();
    assert!(gone.deactivated_at.is_some() && !gone.is_active());
    let back = repo.users().set_deactivated(alice.id, false).await.unwrap();
    assert!(back.is_active());

    let admin = repo
        .users()
        .set_can_request_admin(alice.id, true)
        .await
        .unwrap();
    assert!(admin.can_request_admin);
    assert!(matches!(
        repo.users().set_locked(ulid::Ulid::nil(), true).await,
        Err(StorageError::NotFound("user"))
    ));

    repo.users().add("bob").await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 2);
    // Dropping without commit rolls back.
    drop(repo);
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().count().await.unwrap(), 1);
    assert!(
        !repo
            .users()
            .lookup(alice.id)
            .await
            .unwrap()
            .unwrap()
            .can_request_admin
    );
}

async fn passwords(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("carol").await.unwrap();
    assert_eq!(repo.user_passwords().active(user.id).await.unwrap(), None);
    let first = repo
        .user_passwords()
        .add(user.id, "$2b$12$imported", 0, None)
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(5));
    let second = repo
        .user_passwords()
        .add(
            user.id,
            "$argon2id$v=19$m=19456,t=2,p=1$x$y",
            1,
            Some(first.id),
        )
        .await
        .unwrap();
    assert_eq!(second.upgraded_from_id, Some(first.id));
    assert_eq!(
        repo.user_passwords().active(user.id).await.unwrap(),
        Some(second)
    );
    repo.commit().await.unwrap();
}

async fn emails(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let dave = repo.users().add("dave").await.unwrap();
    let erin = repo.users().add("erin").await.unwrap();
    let a = repo
        .user_emails()
        .add(dave.id, "d@example.org")
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(1));
    let b = repo
        .user_emails()
        .add(dave.id, "dave@example.org")
        .await
        .unwrap();
    assert!(matches!(
        repo.user_emails().add(dave.id, "d@example.org").await,
        Err(StorageError::Conflict(_))
    ));
    // Another user may hold the same (unconfirmed) address.
    let c = repo
        .user_emails()
        .add(erin.id, "d@example.org")
        .await
        .unwrap();
    assert_eq!(
        repo.user_emails().lookup(a.id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        repo.user_emails().list_for_user(dave.id).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert!(repo
        .user_emails()
        .find_confirmed("d@example.org")
        .await
        .unwrap()
        .is_empty());

    db.clock.advance(Duration::seconds(1));
    let confirmed = repo.user_emails().confirm(a.id).await.unwrap();
    assert_eq!(confirmed.confirmed_at, Some(db.clock.now_db()));
    // Confirming twice keeps the first confirmation time.
    db.clock.advance(Duration::seconds(1));
    assert_eq!(repo.user_emails().confirm(a.id).await.unwrap(), confirmed);
    assert_eq!(
        repo.user_emails()
            .find_confirmed("d@example.org")
            .await
            .unwrap(),
        vec![confirmed]
    );

    assert!(repo.user_emails().remove(c.id).await.unwrap());
    assert!(!repo.user_emails().remove(c.id).await.unwrap());
    assert!(repo
        .user_emails()
        .list_for_user(erin.id)
        .await
        .unwrap()
        .is_empty());
    repo.commit().await.unwrap();
}

/// Walking every user page by page: in ID order, each once, the last page short.
async fn users_list_pages(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    assert!(repo.users().list_page(None, 10).await.unwrap().is_empty());
    let mut added = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        added.push(repo.users().add(name).await.unwrap());
        db.clock.advance(chrono::Duration::milliseconds(1));
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = repo.users().list_page(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page);
    }
    assert_eq!(seen, added);
    repo.commit().await.unwrap();
}

backend_tests!(users, passwords, emails, users_list_pages);
