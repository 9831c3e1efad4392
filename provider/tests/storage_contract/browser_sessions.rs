use chrono::Duration;
use provider::{
    backend_tests,
    domain::sign_in_method::SignInMethod,
    storage::{BrowserAuthentication, BrowserSession, StorageError},
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::{assert_invalid, browser_session, write_by_hand};

async fn browser_sessions(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let bob = repo.users().add("bob").await.unwrap();

    let first = repo
        .browser_sessions()
        .add(alice.id, Some("Firefox/128"), Some("192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(
        first,
        BrowserSession {
            id: first.id,
            user_id: alice.id,
            created_at: db.clock.now_db(),
            finished_at: None,
            last_active_at: None,
            user_agent: Some("Firefox/128".to_owned()),
            ip_address: Some("192.0.2.1".to_owned()),
        }
    );
    assert!(first.is_active());
    db.clock.advance(Duration::seconds(1));
    let second = repo
        .browser_sessions()
        .add(alice.id, None, None)
        .await
        .unwrap();
    assert_eq!(
        (second.user_agent.clone(), second.ip_address.clone()),
        (None, None)
    );
    let bobs = repo
        .browser_sessions()
        .add(bob.id, Some("curl"), None)
        .await
        .unwrap();

    // An unknown user is NotFound, and the transaction stays usable (no failed statement).
    assert!(matches!(
        repo.browser_sessions().add(Ulid::new(), None, None).await,
        Err(StorageError::NotFound("user"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.browser_sessions().lookup(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        repo.browser_sessions().lookup(Ulid::new()).await.unwrap(),
        None
    );
    // Oldest first.
    assert_eq!(
        repo.browser_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![first.clone(), second.clone()]
    );

    // touch records the last activity.
    db.clock.advance(Duration::minutes(1));
    repo.browser_sessions().touch(first.id).await.unwrap();
    let touched = repo
        .browser_sessions()
        .lookup(first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched,
        BrowserSession {
            last_active_at: Some(db.clock.now_db()),
            ..first.clone()
        }
    );
    assert!(matches!(
        repo.browser_sessions().touch(Ulid::new()).await,
        Err(StorageError::NotFound("browser session"))
    ));

    // finish is a compare-and-set: the second call loses and keeps the first time.
    db.clock.advance(Duration::minutes(1));
    let finished_at = db.clock.now_db();
    assert!(repo.browser_sessions().finish(first.id).await.unwrap());
    db.clock.advance(Duration::minutes(1));
    assert!(!repo.browser_sessions().finish(first.id).await.unwrap());
    let finished = repo
        .browser_sessions()
        .lookup(first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        finished,
        BrowserSession {
            finished_at: Some(finished_at),
            ..touched
        }
    );
    assert!(!finished.is_active());
    assert!(matches!(
        repo.browser_sessions().finish(Ulid::new()).await,
        Err(StorageError::NotFound("browser session"))
    ));
    assert_eq!(
        repo.browser_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![second.clone()]
    );

    // finish_all_for_user ends the rest of alice's sessions and nobody else's.
    db.clock.advance(Duration::minutes(1));
    assert_eq!(
        repo.browser_sessions()
            .finish_all_for_user(alice.id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        repo.browser_sessions()
            .finish_all_for_user(alice.id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        repo.browser_sessions()
            .lookup(second.id)
            .await
            .unwrap()
            .unwrap()
            .finished_at,
        Some(db.clock.now_db())
    );
    // The earlier finish time is untouched.
    assert_eq!(
        repo.browser_sessions()
            .lookup(first.id)
            .await
            .unwrap()
            .unwrap()
            .finished_at,
        Some(finished_at)
    );
    assert!(repo
        .browser_sessions()
        .list_active_for_user(alice.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        repo.browser_sessions()
            .list_active_for_user(bob.id)
            .await
            .unwrap(),
        vec![bobs]
    );
    repo.commit().await.unwrap();
}

async fn browser_authentications(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let carol = repo.users().add("carol").await.unwrap();
    let session = browser_session(&mut repo, &carol).await;
    let other = browser_session(&mut repo, &carol).await;
    assert_eq!(
        repo.browser_sessions()
            .last_authentication(session)
            .await
            .unwrap(),
        None
    );

    let password = repo
        .browser_sessions()
        .record_authentication(session, SignInMethod::Password)
        .await
        .unwrap();
    assert_eq!(
        password,
        BrowserAuthentication {
            id: password.id,
            browser_session_id: session,
            method: SignInMethod::Password,
            created_at: db.clock.now_db(),
        }
    );
    assert_eq!(
        repo.browser_sessions()
            .last_authentication(session)
            .await
            .unwrap(),
        Some(password.clone())
    );

    // The newest authentication is the one that counts (auth_time).
    db.clock.advance(Duration::minutes(5));
    let method = SignInMethod::Upstream(Ulid::new());
    let upstream = repo
        .browser_sessions()
        .record_authentication(session, method)
        .await
        .unwrap();
    assert_eq!(upstream.created_at, db.clock.now_db());
    assert_eq!(upstream.method, method);
    assert_eq!(
        repo.browser_sessions()
            .last_authentication(session)
            .await
            .unwrap(),
        Some(upstream.clone())
    );
    // Per session.
    assert_eq!(
        repo.browser_sessions()
            .last_authentication(other)
            .await
            .unwrap(),
        None
    );

    // No authentication in a missing or finished session.
    assert!(matches!(
        repo.browser_sessions()
            .record_authentication(Ulid::new(), SignInMethod::Password)
            .await,
        Err(StorageError::NotFound("browser session"))
    ));
    assert!(repo.browser_sessions().finish(session).await.unwrap());
    db.clock.advance(Duration::minutes(5));
    assert!(matches!(
        repo.browser_sessions()
            .record_authentication(session, SignInMethod::Password)
            .await,
        Err(StorageError::NotFound("browser session"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.browser_sessions()
            .last_authentication(session)
            .await
            .unwrap(),
        Some(upstream)
    );
}

/// A password change ends the user's other browser sessions and keeps the current one; other
/// users' sessions are untouched.
async fn finishing_the_other_sessions(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let dave = repo.users().add("dave").await.unwrap();
    let erin = repo.users().add("erin").await.unwrap();
    let here = browser_session(&mut repo, &dave).await;
    let there = browser_session(&mut repo, &dave).await;
    let ended = browser_session(&mut repo, &dave).await;
    let hers = browser_session(&mut repo, &erin).await;
    assert!(repo.browser_sessions().finish(ended).await.unwrap());
    let finished_before = repo.browser_sessions().lookup(ended).await.unwrap();
    db.clock.advance(chrono::Duration::seconds(5));
    assert_eq!(
        repo.browser_sessions()
            .finish_others_for_user(dave.id, here)
            .await
            .unwrap(),
        1
    );
    let live: Vec<_> = repo
        .browser_sessions()
        .list_active_for_user(dave.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, [here]);
    let there = repo
        .browser_sessions()
        .lookup(there)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(there.finished_at, Some(db.clock.now_db()));
    // One finished before keeps its time; another user's session is untouched.
    assert_eq!(
        repo.browser_sessions().lookup(ended).await.unwrap(),
        finished_before
    );
    assert!(repo
        .browser_sessions()
        .lookup(hers)
        .await
        .unwrap()
        .unwrap()
        .is_active());
    repo.commit().await.unwrap();
}

/// A stored sign-in method that is none (written by hand, or by another version) is a data
/// error when read, never a silent default.
async fn unknown_stored_method_is_invalid(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let session = repo
        .browser_sessions()
        .add(alice.id, None, None)
        .await
        .unwrap()
        .id;
    repo.browser_sessions()
        .record_authentication(session, SignInMethod::Password)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    write_by_hand(
        &db,
        "UPDATE browser_session_authentications SET method = 'webauthn'",
    )
    .await;
    let mut repo = db.storage.reader().await.unwrap();
    let read = repo.browser_sessions().last_authentication(session).await;
    assert_invalid(read, "webauthn");
}

backend_tests!(
    browser_sessions,
    browser_authentications,
    finishing_the_other_sessions,
    unknown_stored_method_is_invalid
);
