use chrono::Duration;
use provider::{
    backend_tests,
    clock::Clock,
    storage::{CompatAccessToken, CompatRefreshToken, CompatSession, CompatSsoLogin, StorageError},
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::compat_session;

async fn compat_sessions(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let bob = repo.users().add("bob").await.unwrap();

    let phone = repo
        .compat_sessions()
        .add(
            alice.id,
            "PHONEDEVICE",
            Some("Alice's phone"),
            true,
            Some("Element/1.11"),
        )
        .await
        .unwrap();
    assert_eq!(
        phone,
        CompatSession {
            id: phone.id,
            user_id: alice.id,
            device_id: "PHONEDEVICE".to_owned(),
            human_name: Some("Alice's phone".to_owned()),
            is_synapse_admin: true,
            created_at: db.clock.now_db(),
            finished_at: None,
            last_active_at: None,
            user_agent: Some("Element/1.11".to_owned()),
        }
    );
    assert!(phone.is_active());

    // One active session per (user, device); another user may use the same device ID.
    assert!(matches!(
        repo.compat_sessions()
            .add(alice.id, "PHONEDEVICE", None, false, None)
            .await,
        Err(StorageError::Conflict("compat session"))
    ));
    let bobs = repo
        .compat_sessions()
        .add(bob.id, "PHONEDEVICE", None, false, None)
        .await
        .unwrap();
    assert!(matches!(
        repo.compat_sessions()
            .add(Ulid::new(), "X", None, false, None)
            .await,
        Err(StorageError::NotFound("user"))
    ));
    db.clock.advance(Duration::seconds(1));
    let laptop = repo
        .compat_sessions()
        .add(alice.id, "LAPTOPDEVICE", None, false, None)
        .await
        .unwrap();
    assert_eq!(
        (
            laptop.human_name.clone(),
            laptop.is_synapse_admin,
            laptop.user_agent.clone()
        ),
        (None, false, None)
    );
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.compat_sessions().lookup(phone.id).await.unwrap(),
        Some(phone.clone())
    );
    assert_eq!(
        repo.compat_sessions().lookup(Ulid::new()).await.unwrap(),
        None
    );
    assert_eq!(
        repo.compat_sessions()
            .find_active_by_device(alice.id, "PHONEDEVICE")
            .await
            .unwrap(),
        Some(phone.clone())
    );
    assert_eq!(
        repo.compat_sessions()
            .find_active_by_device(bob.id, "LAPTOPDEVICE")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.compat_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![phone.clone(), laptop.clone()]
    );

    db.clock.advance(Duration::minutes(1));
    repo.compat_sessions().touch(phone.id).await.unwrap();
    let touched = repo
        .compat_sessions()
        .lookup(phone.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched,
        CompatSession {
            last_active_at: Some(db.clock.now_db()),
            ..phone.clone()
        }
    );
    assert!(matches!(
        repo.compat_sessions().touch(Ulid::new()).await,
        Err(StorageError::NotFound("compat session"))
    ));

    // finish: compare-and-set.
    db.clock.advance(Duration::minutes(1));
    let finished_at = db.clock.now_db();
    assert!(repo.compat_sessions().finish(phone.id).await.unwrap());
    db.clock.advance(Duration::minutes(1));
    assert!(!repo.compat_sessions().finish(phone.id).await.unwrap());
    assert_eq!(
        repo.compat_sessions().lookup(phone.id).await.unwrap(),
        Some(CompatSession {
            finished_at: Some(finished_at),
            ..touched
        })
    );
    assert!(matches!(
        repo.compat_sessions().finish(Ulid::new()).await,
        Err(StorageError::NotFound("compat session"))
    ));
    assert_eq!(
        repo.compat_sessions()
            .find_active_by_device(alice.id, "PHONEDEVICE")
            .await
            .unwrap(),
        None
    );
    // The device ID is free again.
    let phone_again = repo
        .compat_sessions()
        .add(alice.id, "PHONEDEVICE", None, false, None)
        .await
        .unwrap();
    assert_eq!(
        repo.compat_sessions()
            .find_active_by_device(alice.id, "PHONEDEVICE")
            .await
            .unwrap(),
        Some(phone_again.clone())
    );
    assert_eq!(
        repo.compat_sessions()
            .list_active_for_user(alice.id)
            .await
            .unwrap(),
        vec![laptop.clone(), phone_again.clone()]
    );

    assert_eq!(
        repo.compat_sessions()
            .finish_all_for_user(alice.id)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        repo.compat_sessions()
            .finish_all_for_user(alice.id)
            .await
            .unwrap(),
        0
    );
    assert!(repo
        .compat_sessions()
        .list_active_for_user(alice.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        repo.compat_sessions()
            .list_active_for_user(bob.id)
            .await
            .unwrap(),
        vec![bobs]
    );
    repo.commit().await.unwrap();
}

async fn compat_access_tokens(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("dave").await.unwrap();
    let session = compat_session(&mut repo, &user, "DEVICE1").await;
    let other_session = compat_session(&mut repo, &user, "DEVICE2").await;

    // Without a refresh token: never expires.
    let forever = repo
        .compat_tokens()
        .add_access(session.id, &[1; 32], None)
        .await
        .unwrap();
    assert_eq!(
        forever,
        CompatAccessToken {
            id: forever.id,
            session_id: session.id,
            token_hash: [1; 32],
            created_at: db.clock.now_db(),
            expires_at: None,
            revoked_at: None,
            first_used_at: None,
        }
    );
    // expires_at is kept at the database's precision.
    let expires_at = db.clock.now() + Duration::minutes(5) + Duration::microseconds(1_500);
    let expiring = repo
        .compat_tokens()
        .add_access(session.id, &[2; 32], Some(expires_at))
        .await
        .unwrap();
    assert_eq!(
        expiring.expires_at,
        Some(db.clock.now_db() + Duration::minutes(5) + Duration::milliseconds(1))
    );
    let elsewhere = repo
        .compat_tokens()
        .add_access(other_session.id, &[3; 32], None)
        .await
        .unwrap();

    assert!(matches!(
        repo.compat_tokens()
            .add_access(session.id, &[1; 32], None)
            .await,
        Err(StorageError::Conflict("compat access token"))
    ));
    assert!(matches!(
        repo.compat_tokens()
            .add_access(Ulid::new(), &[9; 32], None)
            .await,
        Err(StorageError::NotFound("compat session"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[1; 32])
            .await
            .unwrap(),
        Some(forever.clone())
    );
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[2; 32])
            .await
            .unwrap(),
        Some(expiring.clone())
    );
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[9; 32])
            .await
            .unwrap(),
        None
    );

    // The hot path: token and session in one go.
    let now = db.clock.now();
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[1; 32], now)
            .await
            .unwrap(),
        Some((forever.clone(), session.clone()))
    );
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[3; 32], now)
            .await
            .unwrap(),
        Some((elsewhere.clone(), other_session.clone()))
    );
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[9; 32], now)
            .await
            .unwrap(),
        None
    );
    // Active until its expiry instant, not at it.
    let exp = expiring.expires_at.unwrap();
    assert!(expiring.is_valid(exp - Duration::milliseconds(1)));
    assert!(!expiring.is_valid(exp));
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[2; 32], exp - Duration::milliseconds(1))
            .await
            .unwrap(),
        Some((expiring.clone(), session.clone()))
    );
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[2; 32], exp)
            .await
            .unwrap(),
        None
    );
    // The one without expiry is still active years later.
    let later = now + Duration::days(3650);
    assert!(forever.is_valid(later));
    assert!(repo
        .compat_tokens()
        .find_active_access_by_hash_with_session(&[1; 32], later)
        .await
        .unwrap()
        .is_some());

    // Revocation: compare-and-set.
    db.clock.advance(Duration::seconds(10));
    assert!(repo
        .compat_tokens()
        .revoke_access(forever.id)
        .await
        .unwrap());
    assert!(!repo
        .compat_tokens()
        .revoke_access(forever.id)
        .await
        .unwrap());
    let revoked = CompatAccessToken {
        revoked_at: Some(db.clock.now_db()),
        ..forever.clone()
    };
    assert!(!revoked.is_valid(db.clock.now()));
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[1; 32])
            .await
            .unwrap(),
        Some(revoked)
    );
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[1; 32], db.clock.now())
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        repo.compat_tokens().revoke_access(Ulid::new()).await,
        Err(StorageError::NotFound("compat access token"))
    ));

    // A finished session takes its tokens down with it.
    assert!(repo
        .compat_sessions()
        .finish(other_session.id)
        .await
        .unwrap());
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[3; 32], db.clock.now())
            .await
            .unwrap(),
        None
    );
    // ... while the token itself is unchanged.
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[3; 32])
            .await
            .unwrap(),
        Some(elsewhere)
    );
    repo.commit().await.unwrap();
}

async fn compat_refresh_tokens(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("erin").await.unwrap();
    let session = compat_session(&mut repo, &user, "DEVICE1").await;
    let other_session = compat_session(&mut repo, &user, "DEVICE2").await;
    let access = repo
        .compat_tokens()
        .add_access(
            session.id,
            &[1; 32],
            Some(db.clock.now() + Duration::minutes(5)),
        )
        .await
        .unwrap();
    let other_access = repo
        .compat_tokens()
        .add_access(other_session.id, &[2; 32], None)
        .await
        .unwrap();

    let refresh = repo
        .compat_tokens()
        .add_refresh(session.id, &[11; 32], access.id)
        .await
        .unwrap();
    assert_eq!(
        refresh,
        CompatRefreshToken {
            id: refresh.id,
            session_id: session.id,
            token_hash: [11; 32],
            access_token_id: Some(access.id),
            created_at: db.clock.now_db(),
            consumed_at: None,
            next_refresh_token_id: None,
            revoked_at: None,
        }
    );
    assert!(refresh.is_valid());

    assert!(matches!(
        repo.compat_tokens()
            .add_refresh(session.id, &[11; 32], access.id)
            .await,
        Err(StorageError::Conflict("compat refresh token"))
    ));
    // The access token must exist and belong to the same session.
    assert!(matches!(
        repo.compat_tokens()
            .add_refresh(session.id, &[12; 32], Ulid::new())
            .await,
        Err(StorageError::NotFound("compat access token"))
    ));
    assert!(matches!(
        repo.compat_tokens()
            .add_refresh(session.id, &[12; 32], other_access.id)
            .await,
        Err(StorageError::NotFound("compat access token"))
    ));
    assert!(matches!(
        repo.compat_tokens()
            .add_refresh(Ulid::new(), &[12; 32], access.id)
            .await,
        Err(StorageError::NotFound("compat session"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.compat_tokens()
            .find_refresh_by_hash(&[11; 32])
            .await
            .unwrap(),
        Some(refresh.clone())
    );
    assert_eq!(
        repo.compat_tokens()
            .find_refresh_by_hash(&[12; 32])
            .await
            .unwrap(),
        None
    );

    // The pair that replaces it.
    let access2 = repo
        .compat_tokens()
        .add_access(
            session.id,
            &[3; 32],
            Some(db.clock.now() + Duration::minutes(5)),
        )
        .await
        .unwrap();
    let refresh2 = repo
        .compat_tokens()
        .add_refresh(session.id, &[13; 32], access2.id)
        .await
        .unwrap();

    // Single use: the second consume loses.
    db.clock.advance(Duration::minutes(1));
    let consumed_at = db.clock.now_db();
    assert!(repo
        .compat_tokens()
        .consume_refresh(refresh.id, refresh2.id)
        .await
        .unwrap());
    db.clock.advance(Duration::minutes(1));
    assert!(!repo
        .compat_tokens()
        .consume_refresh(refresh.id, refresh2.id)
        .await
        .unwrap());
    let consumed = CompatRefreshToken {
        consumed_at: Some(consumed_at),
        next_refresh_token_id: Some(refresh2.id),
        ..refresh.clone()
    };
    assert!(!consumed.is_valid());
    assert_eq!(
        repo.compat_tokens()
            .find_refresh_by_hash(&[11; 32])
            .await
            .unwrap(),
        Some(consumed.clone())
    );
    assert!(matches!(
        repo.compat_tokens()
            .consume_refresh(Ulid::new(), refresh2.id)
            .await,
        Err(StorageError::NotFound("compat refresh token"))
    ));

    // A revoked refresh token can't be consumed.
    assert!(repo
        .compat_tokens()
        .revoke_refresh(refresh2.id)
        .await
        .unwrap());
    assert!(!repo
        .compat_tokens()
        .revoke_refresh(refresh2.id)
        .await
        .unwrap());
    assert!(!repo
        .compat_tokens()
        .consume_refresh(refresh2.id, refresh.id)
        .await
        .unwrap());
    assert_eq!(
        repo.compat_tokens()
            .find_refresh_by_hash(&[13; 32])
            .await
            .unwrap(),
        Some(CompatRefreshToken {
            revoked_at: Some(db.clock.now_db()),
            ..refresh2
        })
    );
    assert!(matches!(
        repo.compat_tokens().revoke_refresh(Ulid::new()).await,
        Err(StorageError::NotFound("compat refresh token"))
    ));

    // Revoke everything of the session: access, access2 and the consumed refresh token (the
    // revoked one stays as it was); nothing of the other session.
    db.clock.advance(Duration::minutes(1));
    assert_eq!(
        repo.compat_tokens()
            .revoke_all_for_session(session.id)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        repo.compat_tokens()
            .revoke_all_for_session(session.id)
            .await
            .unwrap(),
        0
    );
    let now = db.clock.now_db();
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(now)
    );
    assert_eq!(
        repo.compat_tokens()
            .find_refresh_by_hash(&[11; 32])
            .await
            .unwrap(),
        Some(CompatRefreshToken {
            revoked_at: Some(now),
            ..consumed
        })
    );
    assert_eq!(
        repo.compat_tokens()
            .find_refresh_by_hash(&[13; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(now - Duration::minutes(1))
    );
    assert_eq!(
        repo.compat_tokens()
            .find_active_access_by_hash_with_session(&[3; 32], db.clock.now())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.compat_tokens()
            .find_access_by_hash(&[2; 32])
            .await
            .unwrap(),
        Some(other_access)
    );
    repo.commit().await.unwrap();
}

async fn compat_sso_logins(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("frank").await.unwrap();
    let session = compat_session(&mut repo, &user, "SSODEVICE").await;

    let login = repo
        .compat_sso_logins()
        .add("https://app.example.org/login?x=1", &[1; 32])
        .await
        .unwrap();
    assert_eq!(
        login,
        CompatSsoLogin {
            id: login.id,
            redirect_uri: "https://app.example.org/login?x=1".to_owned(),
            login_token_hash: [1; 32],
            created_at: db.clock.now_db(),
            session_id: None,
            fulfilled_at: None,
            exchanged_at: None,
        }
    );
    assert!(!login.is_exchangeable());
    assert!(matches!(
        repo.compat_sso_logins()
            .add("https://other.example.org/", &[1; 32])
            .await,
        Err(StorageError::Conflict("compat SSO login"))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.compat_sso_logins().lookup(login.id).await.unwrap(),
        Some(login.clone())
    );
    assert_eq!(
        repo.compat_sso_logins().lookup(Ulid::new()).await.unwrap(),
        None
    );
    assert_eq!(
        repo.compat_sso_logins()
            .find_by_token_hash(&[1; 32])
            .await
            .unwrap(),
        Some(login.clone())
    );
    assert_eq!(
        repo.compat_sso_logins()
            .find_by_token_hash(&[2; 32])
            .await
            .unwrap(),
        None
    );

    // Not fulfilled yet: can't be exchanged.
    assert!(!repo
        .compat_sso_logins()
        .exchange(login.id, Duration::seconds(30))
        .await
        .unwrap());

    // fulfill: compare-and-set, and both rows must exist.
    assert!(matches!(
        repo.compat_sso_logins()
            .fulfill(Ulid::new(), session.id)
            .await,
        Err(StorageError::NotFound("compat SSO login"))
    ));
    assert!(matches!(
        repo.compat_sso_logins()
            .fulfill(login.id, Ulid::new())
            .await,
        Err(StorageError::NotFound("compat session"))
    ));
    db.clock.advance(Duration::seconds(20));
    let fulfilled_at = db.clock.now_db();
    assert!(repo
        .compat_sso_logins()
        .fulfill(login.id, session.id)
        .await
        .unwrap());
    let other_session = compat_session(&mut repo, &user, "OTHERDEVICE").await;
    assert!(!repo
        .compat_sso_logins()
        .fulfill(login.id, other_session.id)
        .await
        .unwrap());
    let fulfilled = CompatSsoLogin {
        session_id: Some(session.id),
        fulfilled_at: Some(fulfilled_at),
        ..login.clone()
    };
    assert!(fulfilled.is_exchangeable());
    assert_eq!(
        repo.compat_sso_logins().lookup(login.id).await.unwrap(),
        Some(fulfilled.clone())
    );

    // Exchangeable up to (and at) fulfilled_at + window, once.
    db.clock.advance(Duration::seconds(30));
    assert!(repo
        .compat_sso_logins()
        .exchange(login.id, Duration::seconds(30))
        .await
        .unwrap());
    assert!(!repo
        .compat_sso_logins()
        .exchange(login.id, Duration::seconds(30))
        .await
        .unwrap());
    let exchanged = CompatSsoLogin {
        exchanged_at: Some(db.clock.now_db()),
        ..fulfilled
    };
    assert!(!exchanged.is_exchangeable());
    assert_eq!(
        repo.compat_sso_logins()
            .find_by_token_hash(&[1; 32])
            .await
            .unwrap(),
        Some(exchanged)
    );
    assert!(matches!(
        repo.compat_sso_logins()
            .exchange(Ulid::new(), Duration::seconds(30))
            .await,
        Err(StorageError::NotFound("compat SSO login"))
    ));

    // Too late: one millisecond past the window.
    let late = repo
        .compat_sso_logins()
        .add("https://app.example.org/", &[2; 32])
        .await
        .unwrap();
    assert!(repo
        .compat_sso_logins()
        .fulfill(late.id, other_session.id)
        .await
        .unwrap());
    db.clock
        .advance(Duration::seconds(30) + Duration::milliseconds(1));
    assert!(!repo
        .compat_sso_logins()
        .exchange(late.id, Duration::seconds(30))
        .await
        .unwrap());
    assert_eq!(
        repo.compat_sso_logins()
            .lookup(late.id)
            .await
            .unwrap()
            .unwrap()
            .exchanged_at,
        None
    );
    // A wider window (the caller's choice) still allows it.
    assert!(repo
        .compat_sso_logins()
        .exchange(late.id, Duration::minutes(1))
        .await
        .unwrap());
    repo.commit().await.unwrap();
}

/// What refresh retries rest on: an access token's first use recorded once, an unused token
/// revoked only while unused, a consumed token's successor re-pointed once.
async fn compat_token_use_and_successors(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo.users().add("grace").await.unwrap();
    let session = compat_session(&mut repo, &user, "GRACEDEVICE").await;
    let access = repo
        .compat_tokens()
        .add_access(session.id, &[21; 32], None)
        .await
        .unwrap();
    let refresh = repo
        .compat_tokens()
        .add_refresh(session.id, &[22; 32], access.id)
        .await
        .unwrap();
    let access2 = repo
        .compat_tokens()
        .add_access(session.id, &[23; 32], None)
        .await
        .unwrap();
    let refresh2 = repo
        .compat_tokens()
        .add_refresh(session.id, &[24; 32], access2.id)
        .await
        .unwrap();
    let access3 = repo
        .compat_tokens()
        .add_access(session.id, &[25; 32], None)
        .await
        .unwrap();
    let refresh3 = repo
        .compat_tokens()
        .add_refresh(session.id, &[26; 32], access3.id)
        .await
        .unwrap();
    assert_eq!(
        repo.compat_tokens().lookup_access(access.id).await.unwrap(),
        Some(access.clone())
    );
    assert_eq!(
        repo.compat_tokens()
            .lookup_refresh(refresh.id)
            .await
            .unwrap(),
        Some(refresh.clone())
    );
    assert_eq!(
        repo.compat_tokens()
            .lookup_access(Ulid::new())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.compat_tokens()
            .lookup_refresh(Ulid::new())
            .await
            .unwrap(),
        None
    );

    // First use: recorded once, at the first time.
    let first = db.clock.now_db();
    assert!(repo
        .compat_tokens()
        .mark_access_used(access.id)
        .await
        .unwrap());
    db.clock.advance(Duration::seconds(5));
    assert!(!repo
        .compat_tokens()
        .mark_access_used(access.id)
        .await
        .unwrap());
    assert!(!repo
        .compat_tokens()
        .mark_access_used(Ulid::new())
        .await
        .unwrap());
    let used = repo
        .compat_tokens()
        .lookup_access(access.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.first_used_at, Some(first));
    let (hot, _) = repo
        .compat_tokens()
        .find_active_access_by_hash_with_session(&[21; 32], db.clock.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hot.first_used_at, Some(first));

    // Revoked only while unused.
    assert!(!repo
        .compat_tokens()
        .revoke_access_unused(access.id)
        .await
        .unwrap());
    assert!(repo
        .compat_tokens()
        .revoke_access_unused(access2.id)
        .await
        .unwrap());
    assert!(!repo
        .compat_tokens()
        .revoke_access_unused(access2.id)
        .await
        .unwrap());
    // A use racing the revocation records nothing on the token it lost.
    assert!(!repo
        .compat_tokens()
        .mark_access_used(access2.id)
        .await
        .unwrap());
    let lost = repo
        .compat_tokens()
        .lookup_access(access2.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lost.first_used_at, None);
    assert!(matches!(
        repo.compat_tokens().revoke_access_unused(Ulid::new()).await,
        Err(StorageError::NotFound("compat access token"))
    ));

    // The successor re-pointed once (compare-and-set on the current successor).
    assert!(repo
        .compat_tokens()
        .consume_refresh(refresh.id, refresh2.id)
        .await
        .unwrap());
    assert!(repo
        .compat_tokens()
        .repoint_refresh_next(refresh.id, refresh2.id, refresh3.id)
        .await
        .unwrap());
    assert!(!repo
        .compat_tokens()
        .repoint_refresh_next(refresh.id, refresh2.id, refresh3.id)
        .await
        .unwrap());
    assert_eq!(
        repo.compat_tokens()
            .lookup_refresh(refresh.id)
            .await
            .unwrap()
            .unwrap()
            .next_refresh_token_id,
        Some(refresh3.id)
    );
    assert!(matches!(
        repo.compat_tokens()
            .repoint_refresh_next(Ulid::new(), refresh2.id, refresh3.id)
            .await,
        Err(StorageError::NotFound("compat refresh token"))
    ));
    repo.commit().await.unwrap();
}

backend_tests!(
    compat_sessions,
    compat_access_tokens,
    compat_refresh_tokens,
    compat_sso_logins,
    compat_token_use_and_successors,
);
