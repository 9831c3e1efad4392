use std::time::Duration as StdDuration;

use chrono::Duration;
use provider::{
    backend_tests,
    clock::Clock as _,
    storage::{
        AccessToken, ActiveAccessToken, NewOAuth2Session, OAuth2Session, RefreshToken, StorageError,
    },
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::{browser_session, hash, oauth2_session, session_for, user_and_client};

async fn sessions(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let bob = repo.users().add("bob").await.unwrap();
    let browser = browser_session(&mut repo, &alice).await;

    let first = repo
        .oauth2_sessions()
        .add(NewOAuth2Session {
            user_id: Some(alice.id),
            client_id: client.id,
            browser_session_id: Some(browser),
            scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
            device_id: Some("ABCDEFGHIJ"),
            user_agent: Some("Element/1.0"),
        })
        .await
        .unwrap();
    assert_eq!(
        first,
        OAuth2Session {
            id: first.id,
            user_id: Some(alice.id),
            client_id: client.id,
            browser_session_id: Some(browser),
            scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ".to_owned(),
            device_id: Some("ABCDEFGHIJ".to_owned()),
            created_at: t0,
            finished_at: None,
            last_active_at: None,
            user_agent: Some("Element/1.0".to_owned()),
        }
    );
    assert!(first.is_active());

    db.clock.advance(Duration::seconds(1));
    let second = repo
        .oauth2_sessions()
        .add(session_for(&alice, &client))
        .await
        .unwrap();
    assert_eq!(second.created_at, db.clock.now_db());
    assert_eq!(second.browser_session_id, None);
    // Other users' sessions and client_credentials sessions (no user) are not Alice's.
    repo.oauth2_sessions()
        .add(session_for(&bob, &client))
        .await
        .unwrap();
    let machine = repo
        .oauth2_sessions()
        .add(NewOAuth2Session {
            user_id: None,
            ..session_for(&alice, &client)
        })
        .await
        .unwrap();
    assert_eq!(machine.user_id, None);
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.oauth2_sessions().lookup(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        repo.oauth2_sessions().lookup(machine.id).await.unwrap(),
        Some(machine.clone())
    );
    assert_eq!(
        repo.oauth2_sessions().lookup(Ulid::new()).await.unwrap(),
        None
    );
    // Oldest first.
    assert_eq!(
        repo.oauth2_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![first.clone(), second.clone()]
    );

    db.clock.advance(Duration::seconds(30));
    let touched = repo.oauth2_sessions().touch(second.id).await.unwrap();
    assert_eq!(
        touched,
        OAuth2Session {
            last_active_at: Some(db.clock.now_db()),
            ..second.clone()
        }
    );
    assert!(matches!(
        repo.oauth2_sessions().touch(Ulid::new()).await,
        Err(StorageError::NotFound(_))
    ));

    // Finishing is a compare-and-set: the first call wins, later ones change nothing.
    let finished_at = db.clock.now_db();
    assert!(repo.oauth2_sessions().finish(first.id).await.unwrap());
    db.clock.advance(Duration::seconds(5));
    assert!(!repo.oauth2_sessions().finish(first.id).await.unwrap());
    let finished = repo
        .oauth2_sessions()
        .lookup(first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.finished_at, Some(finished_at));
    assert!(!finished.is_active());
    assert!(matches!(
        repo.oauth2_sessions().finish(Ulid::new()).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(
        repo.oauth2_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![touched]
    );
    repo.commit().await.unwrap();
}

async fn finish_all_for_browser_session(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let browser_a = browser_session(&mut repo, &alice).await;
    let browser_b = browser_session(&mut repo, &alice).await;
    let from = |browser| NewOAuth2Session {
        browser_session_id: Some(browser),
        ..session_for(&alice, &client)
    };
    let a1 = repo.oauth2_sessions().add(from(browser_a)).await.unwrap();
    let a2 = repo.oauth2_sessions().add(from(browser_a)).await.unwrap();
    let a3 = repo.oauth2_sessions().add(from(browser_a)).await.unwrap();
    let b1 = repo.oauth2_sessions().add(from(browser_b)).await.unwrap();
    assert!(repo.oauth2_sessions().finish(a3.id).await.unwrap());
    let a3 = repo.oauth2_sessions().lookup(a3.id).await.unwrap().unwrap();

    db.clock.advance(Duration::minutes(1));
    // Only the two unfinished sessions of browser A; a3 keeps its first finished_at.
    assert_eq!(
        repo.oauth2_sessions()
            .finish_all_for_browser_session(browser_a)
            .await
            .unwrap(),
        2
    );
    for s in [&a1, &a2] {
        assert_eq!(
            repo.oauth2_sessions()
                .lookup(s.id)
                .await
                .unwrap()
                .unwrap()
                .finished_at,
            Some(db.clock.now_db())
        );
    }
    assert_eq!(
        repo.oauth2_sessions().lookup(a3.id).await.unwrap(),
        Some(a3)
    );
    assert_eq!(
        repo.oauth2_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![b1]
    );
    assert_eq!(
        repo.oauth2_sessions()
            .finish_all_for_browser_session(browser_a)
            .await
            .unwrap(),
        0
    );
    repo.commit().await.unwrap();
}

async fn access_tokens(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let session = oauth2_session(&mut repo, &alice, &client).await;
    // Expiry is kept at database precision.
    let expires = t0 + Duration::minutes(5) + Duration::microseconds(999);
    let token = repo
        .access_tokens()
        .add(session.id, &hash(1), Some(expires))
        .await
        .unwrap();
    assert_eq!(
        token,
        AccessToken {
            id: token.id,
            session_id: session.id,
            token_hash: hash(1),
            created_at: t0,
            expires_at: Some(t0 + Duration::minutes(5)),
            revoked_at: None,
            first_used_at: None,
        }
    );
    // A hash is unique; the transaction stays usable afterwards.
    assert!(matches!(
        repo.access_tokens().add(session.id, &hash(1), None).await,
        Err(StorageError::Conflict("access token"))
    ));
    let forever = repo
        .access_tokens()
        .add(session.id, &hash(2), None)
        .await
        .unwrap();
    assert_eq!(forever.expires_at, None);
    repo.commit().await.unwrap();

    // The hot path runs on a plain connection.
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.access_tokens().lookup(token.id).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(
        repo.access_tokens().find_by_hash(&hash(1)).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(
        repo.access_tokens().find_by_hash(&hash(9)).await.unwrap(),
        None
    );
    assert_eq!(
        repo.access_tokens().lookup(Ulid::new()).await.unwrap(),
        None
    );
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(1), t0)
            .await
            .unwrap(),
        Some(ActiveAccessToken {
            token: token.clone(),
            session: session.clone(),
            user: Some(alice.clone()),
            client_id: client.client_id.clone(),
        })
    );
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(9), t0)
            .await
            .unwrap(),
        None
    );

    // Expired from `expires_at` on (RFC 6749 §4.2.2 `expires_in`: the lifetime).
    let just_before = t0 + Duration::minutes(5) - Duration::milliseconds(1);
    let at_expiry = t0 + Duration::minutes(5);
    assert!(token.is_valid_at(just_before));
    assert!(!token.is_valid_at(at_expiry));
    assert!(repo
        .access_tokens()
        .find_active_by_hash(&hash(1), just_before)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(1), at_expiry)
            .await
            .unwrap(),
        None
    );
    // A token without expiry stays active.
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(2), t0 + Duration::days(3650))
            .await
            .unwrap(),
        Some(ActiveAccessToken {
            token: forever.clone(),
            session: session.clone(),
            user: Some(alice.clone()),
            client_id: client.client_id.clone(),
        })
    );

    // A locked (or deactivated) user's tokens are inactive; unlocking brings them back.
    let mut repo = db.storage.begin().await.unwrap();
    repo.users().set_locked(alice.id, true).await.unwrap();
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(1), t0)
            .await
            .unwrap(),
        None
    );
    repo.users().set_locked(alice.id, false).await.unwrap();
    repo.users().set_deactivated(alice.id, true).await.unwrap();
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(1), t0)
            .await
            .unwrap(),
        None
    );
    repo.users().set_deactivated(alice.id, false).await.unwrap();
    assert!(repo
        .access_tokens()
        .find_active_by_hash(&hash(1), t0)
        .await
        .unwrap()
        .is_some());
    // A client's own session (client_credentials) has no user.
    let machine = repo
        .oauth2_sessions()
        .add(NewOAuth2Session {
            user_id: None,
            client_id: client.id,
            browser_session_id: None,
            scope: "urn:mas:admin",
            device_id: None,
            user_agent: None,
        })
        .await
        .unwrap();
    let machine_token = repo
        .access_tokens()
        .add(machine.id, &hash(77), None)
        .await
        .unwrap();
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(77), t0)
            .await
            .unwrap(),
        Some(ActiveAccessToken {
            token: machine_token,
            session: machine,
            user: None,
            client_id: client.client_id.clone(),
        })
    );
    repo.commit().await.unwrap();

    // Revocation (RFC 7009) is a compare-and-set.
    db.clock.advance(Duration::seconds(10));
    let mut repo = db.storage.begin().await.unwrap();
    let revoked_at = db.clock.now_db();
    assert!(repo.access_tokens().revoke(token.id).await.unwrap());
    db.clock.advance(Duration::seconds(10));
    assert!(!repo.access_tokens().revoke(token.id).await.unwrap());
    assert!(matches!(
        repo.access_tokens().revoke(Ulid::new()).await,
        Err(StorageError::NotFound("access token"))
    ));
    let revoked = AccessToken {
        revoked_at: Some(revoked_at),
        ..token.clone()
    };
    assert!(!revoked.is_valid_at(t0));
    assert_eq!(
        repo.access_tokens().find_by_hash(&hash(1)).await.unwrap(),
        Some(revoked)
    );
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(1), t0)
            .await
            .unwrap(),
        None
    );

    // A finished session's tokens are inactive, though not revoked themselves.
    assert!(repo.oauth2_sessions().finish(session.id).await.unwrap());
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(2), t0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.access_tokens()
            .find_by_hash(&hash(2))
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    repo.commit().await.unwrap();
}

async fn revoke_all_access_tokens(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let session = oauth2_session(&mut repo, &alice, &client).await;
    let other = oauth2_session(&mut repo, &alice, &client).await;
    let a = repo
        .access_tokens()
        .add(session.id, &hash(1), None)
        .await
        .unwrap();
    let b = repo
        .access_tokens()
        .add(session.id, &hash(2), None)
        .await
        .unwrap();
    let c = repo
        .access_tokens()
        .add(session.id, &hash(3), None)
        .await
        .unwrap();
    let kept = repo
        .access_tokens()
        .add(other.id, &hash(4), None)
        .await
        .unwrap();
    assert!(repo.access_tokens().revoke(c.id).await.unwrap());
    let c = repo.access_tokens().lookup(c.id).await.unwrap().unwrap();

    db.clock.advance(Duration::minutes(1));
    assert_eq!(
        repo.access_tokens()
            .revoke_all_for_session(session.id)
            .await
            .unwrap(),
        2
    );
    for t in [&a, &b] {
        assert_eq!(
            repo.access_tokens()
                .lookup(t.id)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(db.clock.now_db())
        );
    }
    // Already revoked tokens keep their time; other sessions are untouched.
    assert_eq!(repo.access_tokens().lookup(c.id).await.unwrap(), Some(c));
    assert_eq!(
        repo.access_tokens().lookup(kept.id).await.unwrap(),
        Some(kept)
    );
    assert_eq!(
        repo.access_tokens()
            .revoke_all_for_session(session.id)
            .await
            .unwrap(),
        0
    );
    repo.commit().await.unwrap();
}

async fn refresh_tokens(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let session = oauth2_session(&mut repo, &alice, &client).await;
    let access = repo
        .access_tokens()
        .add(session.id, &hash(1), Some(t0 + Duration::minutes(5)))
        .await
        .unwrap();
    let first = repo
        .refresh_tokens()
        .add(session.id, &hash(2), Some(access.id))
        .await
        .unwrap();
    assert_eq!(
        first,
        RefreshToken {
            id: first.id,
            session_id: session.id,
            token_hash: hash(2),
            access_token_id: Some(access.id),
            created_at: t0,
            consumed_at: None,
            next_refresh_token_id: None,
            revoked_at: None,
        }
    );
    assert!(first.is_usable());
    assert!(matches!(
        repo.refresh_tokens().add(session.id, &hash(2), None).await,
        Err(StorageError::Conflict("refresh token"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.refresh_tokens().lookup(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        repo.refresh_tokens().find_by_hash(&hash(2)).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        repo.refresh_tokens().find_by_hash(&hash(9)).await.unwrap(),
        None
    );
    assert_eq!(
        repo.refresh_tokens().lookup(Ulid::new()).await.unwrap(),
        None
    );

    // Rotation (RFC 6749 §6, RFC 9700 §4.14.2): issue the successor, then consume the old one.
    db.clock.advance(Duration::minutes(4));
    let second = repo
        .refresh_tokens()
        .add(session.id, &hash(3), None)
        .await
        .unwrap();
    assert!(repo
        .refresh_tokens()
        .consume(first.id, second.id)
        .await
        .unwrap());
    let consumed = RefreshToken {
        consumed_at: Some(db.clock.now_db()),
        next_refresh_token_id: Some(second.id),
        ..first.clone()
    };
    assert!(!consumed.is_usable());
    assert_eq!(
        repo.refresh_tokens().find_by_hash(&hash(2)).await.unwrap(),
        Some(consumed.clone())
    );
    // A replay of the consumed token loses and changes nothing.
    db.clock.advance(Duration::seconds(1));
    let third = repo
        .refresh_tokens()
        .add(session.id, &hash(4), None)
        .await
        .unwrap();
    assert!(!repo
        .refresh_tokens()
        .consume(first.id, third.id)
        .await
        .unwrap());
    assert_eq!(
        repo.refresh_tokens().lookup(first.id).await.unwrap(),
        Some(consumed)
    );
    assert!(matches!(
        repo.refresh_tokens().consume(Ulid::new(), third.id).await,
        Err(StorageError::NotFound("refresh token"))
    ));

    // Grace: re-pointing the successor is a compare-and-set on the current successor.
    assert!(repo
        .refresh_tokens()
        .repoint_next(first.id, second.id, third.id)
        .await
        .unwrap());
    assert!(!repo
        .refresh_tokens()
        .repoint_next(first.id, second.id, third.id)
        .await
        .unwrap());
    assert_eq!(
        repo.refresh_tokens()
            .lookup(first.id)
            .await
            .unwrap()
            .unwrap()
            .next_refresh_token_id,
        Some(third.id)
    );
    assert!(repo
        .refresh_tokens()
        .repoint_next(first.id, third.id, second.id)
        .await
        .unwrap());
    assert!(matches!(
        repo.refresh_tokens()
            .repoint_next(Ulid::new(), second.id, third.id)
            .await,
        Err(StorageError::NotFound("refresh token"))
    ));

    // A revoked token can't be consumed; revoking is a compare-and-set.
    let revoked_at = db.clock.now_db();
    assert!(repo.refresh_tokens().revoke(third.id).await.unwrap());
    db.clock.advance(Duration::seconds(1));
    assert!(!repo.refresh_tokens().revoke(third.id).await.unwrap());
    assert!(matches!(
        repo.refresh_tokens().revoke(Ulid::new()).await,
        Err(StorageError::NotFound("refresh token"))
    ));
    assert!(!repo
        .refresh_tokens()
        .consume(third.id, second.id)
        .await
        .unwrap());
    assert_eq!(
        repo.refresh_tokens().lookup(third.id).await.unwrap(),
        Some(RefreshToken {
            revoked_at: Some(revoked_at),
            ..third.clone()
        })
    );

    // Revoke all of the session: the unrevoked ones (first, consumed, and second).
    db.clock.advance(Duration::seconds(1));
    assert_eq!(
        repo.refresh_tokens()
            .revoke_all_for_session(session.id)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        repo.refresh_tokens()
            .lookup(second.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(db.clock.now_db())
    );
    assert_eq!(
        repo.refresh_tokens()
            .lookup(third.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(revoked_at)
    );
    assert_eq!(
        repo.refresh_tokens()
            .revoke_all_for_session(session.id)
            .await
            .unwrap(),
        0
    );
    repo.commit().await.unwrap();
}

/// Two refresh requests with the same token in concurrent transactions: exactly one rotates it.
async fn concurrent_refresh(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let session = oauth2_session(&mut repo, &alice, &client).await;
    let old = repo
        .refresh_tokens()
        .add(session.id, &hash(1), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut first = db.storage.begin().await.unwrap();
    let next_a = first
        .refresh_tokens()
        .add(session.id, &hash(2), None)
        .await
        .unwrap();
    assert!(first
        .refresh_tokens()
        .consume(old.id, next_a.id)
        .await
        .unwrap());

    // The second request blocks (row lock in PostgreSQL, write lock in SQLite) until the first
    // commits, then sees the token consumed.
    let storage = db.storage.clone();
    let (session_id, old_id) = (session.id, old.id);
    let racer = tokio::spawn(async move {
        let mut second = storage.begin().await.unwrap();
        let next_b = second
            .refresh_tokens()
            .add(session_id, &hash(3), None)
            .await
            .unwrap();
        let won = second
            .refresh_tokens()
            .consume(old_id, next_b.id)
            .await
            .unwrap();
        // A loser rolls back what it issued.
        drop(second);
        won
    });
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    first.commit().await.unwrap();
    assert!(!racer.await.unwrap());

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.refresh_tokens()
            .lookup(old.id)
            .await
            .unwrap()
            .unwrap()
            .next_refresh_token_id,
        Some(next_a.id)
    );
    assert_eq!(
        repo.refresh_tokens().find_by_hash(&hash(3)).await.unwrap(),
        None
    );
}

/// Deleting a client ends everything it held (ON DELETE CASCADE).
async fn client_delete_cascades(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let session = oauth2_session(&mut repo, &alice, &client).await;
    let token = repo
        .access_tokens()
        .add(session.id, &hash(1), None)
        .await
        .unwrap();
    assert!(repo.clients().delete(client.id).await.unwrap());
    assert_eq!(
        repo.oauth2_sessions().lookup(session.id).await.unwrap(),
        None
    );
    assert_eq!(repo.access_tokens().lookup(token.id).await.unwrap(), None);
    repo.commit().await.unwrap();
}

/// What refresh retries and device claims rest on: an access token's first use recorded once
/// (and seen by the hot path), an unused token revoked only while unused, the live sessions
/// holding a device.
async fn token_use_and_device_holders(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (user, client) = user_and_client(&mut repo, "dora").await;
    let (other, _) = user_and_client(&mut repo, "ed").await;
    let with_device = |user_id| NewOAuth2Session {
        user_id: Some(user_id),
        device_id: Some("HELDDEVICE"),
        ..session_for(&user, &client)
    };
    let first = repo
        .oauth2_sessions()
        .add(with_device(user.id))
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(1));
    let second = repo
        .oauth2_sessions()
        .add(with_device(user.id))
        .await
        .unwrap();
    repo.oauth2_sessions()
        .add(with_device(other.id))
        .await
        .unwrap();
    oauth2_session(&mut repo, &user, &client).await;
    let held =
        |sessions: Vec<OAuth2Session>| sessions.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        held(
            repo.oauth2_sessions()
                .list_active_by_device(user.id, "HELDDEVICE")
                .await
                .unwrap()
        ),
        vec![first.id, second.id]
    );
    repo.oauth2_sessions().finish(first.id).await.unwrap();
    assert_eq!(
        held(
            repo.oauth2_sessions()
                .list_active_by_device(user.id, "HELDDEVICE")
                .await
                .unwrap()
        ),
        vec![second.id]
    );
    assert!(repo
        .oauth2_sessions()
        .list_active_by_device(user.id, "OTHER")
        .await
        .unwrap()
        .is_empty());

    let access = repo
        .access_tokens()
        .add(second.id, &hash(31), None)
        .await
        .unwrap();
    let unused = repo
        .access_tokens()
        .add(second.id, &hash(32), None)
        .await
        .unwrap();
    assert_eq!(access.first_used_at, None);
    let used_at = db.clock.now_db();
    assert!(repo.access_tokens().mark_used(access.id).await.unwrap());
    db.clock.advance(Duration::seconds(5));
    assert!(!repo.access_tokens().mark_used(access.id).await.unwrap());
    assert!(!repo.access_tokens().mark_used(Ulid::new()).await.unwrap());
    assert_eq!(
        repo.access_tokens()
            .lookup(access.id)
            .await
            .unwrap()
            .unwrap()
            .first_used_at,
        Some(used_at)
    );
    assert_eq!(
        repo.access_tokens()
            .find_active_by_hash(&hash(31), db.clock.now())
            .await
            .unwrap()
            .unwrap()
            .token
            .first_used_at,
        Some(used_at)
    );
    assert!(!repo.access_tokens().revoke_unused(access.id).await.unwrap());
    assert!(repo.access_tokens().revoke_unused(unused.id).await.unwrap());
    assert!(!repo.access_tokens().revoke_unused(unused.id).await.unwrap());
    // A use racing the revocation records nothing on the token it lost.
    assert!(!repo.access_tokens().mark_used(unused.id).await.unwrap());
    assert_eq!(
        repo.access_tokens()
            .lookup(unused.id)
            .await
            .unwrap()
            .unwrap()
            .first_used_at,
        None
    );
    assert!(matches!(
        repo.access_tokens().revoke_unused(Ulid::new()).await,
        Err(StorageError::NotFound("access token"))
    ));
    repo.commit().await.unwrap();
}

backend_tests!(
    token_use_and_device_holders,
    sessions,
    finish_all_for_browser_session,
    access_tokens,
    revoke_all_access_tokens,
    refresh_tokens,
    concurrent_refresh,
    client_delete_cascades,
);
