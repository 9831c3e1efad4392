//! Housekeeping deletes: each table's `delete_expired` removes the dead rows (expired, or ended
//! before the time given), at most `limit` of them, and keeps the live ones; and
//! `housekeeping::run_once` over every table, with the grace it gives finished grants and
//! upstream authorization sessions.

use chrono::Duration;
use provider::{
    backend_tests,
    clock::Clock as _,
    core::{
        housekeeping::{self, Deleted},
        rate_limit::Quota,
    },
    storage::{BoxRepository, NewDeviceCodeGrant, NewPendingRegistration, User},
    test_harness::TestDb,
};
use serde_json::json;
use ulid::Ulid;

use crate::fixtures::{hash, user_and_client};

/// A pending registration for `username`, its code valid until `expires_at`.
async fn pending(
    repo: &mut BoxRepository,
    username: &str,
    n: u8,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Ulid {
    repo.pending_registrations()
        .add(NewPendingRegistration {
            username,
            email: "someone@example.org",
            hashed_password: "$argon2id$x",
            password_version: 1,
            code_hash: &hash(n),
            expires_at,
            registration_token_id: None,
            accepted_terms_url: None,
        })
        .await
        .unwrap()
        .id
}

/// A device code grant of `client`, valid until `expires_at`.
async fn device_grant(
    repo: &mut BoxRepository,
    client: Ulid,
    n: u8,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Ulid {
    let user_code = format!("BCDFGHJ{}", char::from(b'K' + n));
    repo.device_code_grants()
        .add(NewDeviceCodeGrant {
            client_id: client,
            scope: "openid",
            device_code_hash: hash(n),
            user_code: &user_code,
            expires_at,
            ip_address: None,
            user_agent: None,
        })
        .await
        .unwrap()
        .id
}

/// An upstream authorization session of a new provider, completed, and consumed when
/// `consume`.
async fn upstream_session(repo: &mut BoxRepository, n: u8, consume: bool) -> Ulid {
    let provider = repo
        .upstream_providers()
        .add(provider::storage::UpstreamProviderParams {
            issuer: Some("https://accounts.example.com".to_owned()),
            human_name: None,
            brand_name: None,
            client_id: format!("client-{n}"),
            encrypted_client_secret: None,
            token_endpoint_auth_method: "none".to_owned(),
            scope: "openid".to_owned(),
            settings: json!({}),
        })
        .await
        .unwrap();
    let link = repo
        .upstream_links()
        .add(provider.id, &format!("sub-{n}"), None)
        .await
        .unwrap();
    let session = repo
        .upstream_sessions()
        .add(provider.id, &hash(n), None, None)
        .await
        .unwrap();
    assert!(repo
        .upstream_sessions()
        .complete(
            session.id,
            link.id,
            None,
            &json!({"sub": format!("sub-{n}")})
        )
        .await
        .unwrap());
    if consume {
        assert!(repo.upstream_sessions().consume(session.id).await.unwrap());
    }
    session.id
}

/// A user with three addresses.
async fn user_with_addresses(repo: &mut BoxRepository) -> (User, [Ulid; 3]) {
    let user = repo.users().add("alice").await.unwrap();
    let mut ids = [Ulid::nil(); 3];
    for (i, id) in ids.iter_mut().enumerate() {
        *id = repo
            .user_emails()
            .add(user.id, &format!("alice{i}@example.org"))
            .await
            .unwrap()
            .id;
    }
    (user, ids)
}

async fn expired_verification_codes_go(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, [a, b, live]) = user_with_addresses(&mut repo).await;
    let t0 = db.clock.now();
    for (email, n) in [(a, 1), (b, 2)] {
        repo.user_email_verifications()
            .add(email, &hash(n), t0 + Duration::minutes(10))
            .await
            .unwrap();
    }
    repo.user_email_verifications()
        .add(live, &hash(3), t0 + Duration::hours(2))
        .await
        .unwrap();
    // A used one expires as well.
    let used = repo
        .user_email_verifications()
        .latest(a)
        .await
        .unwrap()
        .unwrap();
    assert!(repo
        .user_email_verifications()
        .consume(used.id)
        .await
        .unwrap());
    db.clock.advance(Duration::hours(1));
    let now = db.clock.now();
    let codes = repo.user_email_verifications();
    assert_eq!(codes.delete_expired(now, 1).await.unwrap(), 1, "limited");
    assert_eq!(codes.delete_expired(now, 1000).await.unwrap(), 1);
    assert_eq!(codes.delete_expired(now, 1000).await.unwrap(), 0);
    assert_eq!(codes.latest(a).await.unwrap(), None);
    assert_eq!(codes.latest(b).await.unwrap(), None);
    assert!(codes.latest(live).await.unwrap().is_some());
    repo.commit().await.unwrap();
}

async fn expired_recovery_tickets_go(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (user, [email, ..]) = user_with_addresses(&mut repo).await;
    let t0 = db.clock.now();
    let used = repo
        .recovery_tickets()
        .add(user.id, email, &hash(1), t0 + Duration::minutes(10))
        .await
        .unwrap();
    assert!(repo.recovery_tickets().consume(used.id).await.unwrap());
    repo.recovery_tickets()
        .add(user.id, email, &hash(2), t0 + Duration::minutes(10))
        .await
        .unwrap();
    repo.recovery_tickets()
        .add(user.id, email, &hash(3), t0 + Duration::hours(2))
        .await
        .unwrap();
    db.clock.advance(Duration::hours(1));
    let now = db.clock.now();
    let tickets = repo.recovery_tickets();
    assert_eq!(tickets.delete_expired(now, 1).await.unwrap(), 1, "limited");
    assert_eq!(tickets.delete_expired(now, 1000).await.unwrap(), 1);
    assert_eq!(tickets.delete_expired(now, 1000).await.unwrap(), 0);
    for n in [1, 2] {
        assert_eq!(tickets.find_by_ticket_hash(&hash(n)).await.unwrap(), None);
    }
    assert!(tickets
        .find_by_ticket_hash(&hash(3))
        .await
        .unwrap()
        .is_some());
    repo.commit().await.unwrap();
}

async fn expired_pending_registrations_go(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let t0 = db.clock.now();
    let abandoned = pending(&mut repo, "bob", 1, t0 + Duration::minutes(10)).await;
    let completed = pending(&mut repo, "carol", 2, t0 + Duration::minutes(10)).await;
    assert!(repo
        .pending_registrations()
        .complete(completed)
        .await
        .unwrap());
    let live = pending(&mut repo, "dave", 3, t0 + Duration::hours(2)).await;
    db.clock.advance(Duration::hours(1));
    let now = db.clock.now();
    let registrations = repo.pending_registrations();
    assert_eq!(
        registrations.delete_expired(now, 1).await.unwrap(),
        1,
        "limited"
    );
    assert_eq!(registrations.delete_expired(now, 1000).await.unwrap(), 1);
    assert_eq!(registrations.delete_expired(now, 1000).await.unwrap(), 0);
    assert_eq!(registrations.lookup(abandoned).await.unwrap(), None);
    assert_eq!(registrations.lookup(completed).await.unwrap(), None);
    assert!(registrations.lookup(live).await.unwrap().is_some());
    repo.commit().await.unwrap();
}

async fn expired_assertion_jtis_go(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "alice").await;
    let t0 = db.clock.now();
    let jtis = repo.client_assertions();
    for jti in ["old-1", "old-2"] {
        assert!(jtis
            .record_jti(client.id, jti, t0 + Duration::minutes(5))
            .await
            .unwrap());
    }
    assert!(jtis
        .record_jti(client.id, "live", t0 + Duration::hours(2))
        .await
        .unwrap());
    db.clock.advance(Duration::hours(1));
    let now = db.clock.now();
    assert_eq!(jtis.delete_expired(now, 1).await.unwrap(), 1, "limited");
    assert_eq!(jtis.delete_expired(now, 1000).await.unwrap(), 1);
    assert_eq!(jtis.delete_expired(now, 1000).await.unwrap(), 0);
    // Forgotten: recorded anew. Still known: a replay.
    let later = now + Duration::minutes(5);
    assert!(jtis.record_jti(client.id, "old-1", later).await.unwrap());
    assert!(!jtis.record_jti(client.id, "live", later).await.unwrap());
    repo.commit().await.unwrap();
}

async fn expired_device_code_grants_go(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "alice").await;
    let t0 = db.clock.now();
    let old = device_grant(&mut repo, client.id, 1, t0 + Duration::minutes(10)).await;
    let older = device_grant(&mut repo, client.id, 2, t0 + Duration::minutes(5)).await;
    let live = device_grant(&mut repo, client.id, 3, t0 + Duration::minutes(30)).await;
    db.clock.advance(Duration::hours(1));
    let grants = repo.device_code_grants();
    // Expired more than 20 minutes ago: the two first.
    let before = t0 + Duration::minutes(20);
    assert_eq!(
        grants.delete_expired(before, 1).await.unwrap(),
        1,
        "limited"
    );
    assert_eq!(grants.delete_expired(before, 1000).await.unwrap(), 1);
    assert_eq!(grants.delete_expired(before, 1000).await.unwrap(), 0);
    assert_eq!(grants.lookup(old).await.unwrap(), None);
    assert_eq!(grants.lookup(older).await.unwrap(), None);
    // Expired too, but after `before`.
    assert!(grants.lookup(live).await.unwrap().is_some());
    repo.commit().await.unwrap();
}

async fn old_upstream_sessions_go(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let first = upstream_session(&mut repo, 1, true).await;
    let second = upstream_session(&mut repo, 2, true).await;
    let waiting = upstream_session(&mut repo, 3, false).await;
    db.clock.advance(Duration::hours(2));
    let recent = upstream_session(&mut repo, 4, true).await;
    let before = db.clock.now() - Duration::hours(1);
    let sessions = repo.upstream_sessions();
    assert_eq!(
        sessions.delete_expired(before, 1).await.unwrap(),
        1,
        "limited"
    );
    assert_eq!(sessions.delete_expired(before, 1000).await.unwrap(), 2);
    assert_eq!(sessions.delete_expired(before, 1000).await.unwrap(), 0);
    assert_eq!(sessions.lookup(first).await.unwrap(), None);
    assert_eq!(sessions.lookup(second).await.unwrap(), None);
    // Abandoned halfway (never consumed): as done with as the consumed ones.
    assert_eq!(sessions.lookup(waiting).await.unwrap(), None);
    // Started after `before`.
    assert!(sessions.lookup(recent).await.unwrap().is_some());
    repo.commit().await.unwrap();
}

/// One run cleans every table, keeping what is still alive, and the grace of
/// [`housekeeping::GRACE`] for device code grants and upstream sessions.
async fn run_once_cleans_every_table(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (user, [email, live_email, _]) = user_with_addresses(&mut repo).await;
    let (_, client) = user_and_client(&mut repo, "bob").await;
    let t0 = db.clock.now();
    let soon = t0 + Duration::minutes(10);
    let later = t0 + Duration::days(3);
    repo.user_email_verifications()
        .add(email, &hash(1), soon)
        .await
        .unwrap();
    repo.user_email_verifications()
        .add(live_email, &hash(2), later)
        .await
        .unwrap();
    repo.recovery_tickets()
        .add(user.id, email, &hash(3), soon)
        .await
        .unwrap();
    repo.recovery_tickets()
        .add(user.id, email, &hash(4), later)
        .await
        .unwrap();
    let dead_pending = pending(&mut repo, "carol", 5, soon).await;
    let live_pending = pending(&mut repo, "dave", 6, later).await;
    let jtis = repo.client_assertions();
    assert!(jtis.record_jti(client.id, "old", soon).await.unwrap());
    assert!(jtis.record_jti(client.id, "live", later).await.unwrap());
    let dead_grant = device_grant(&mut repo, client.id, 7, soon).await;
    let live_grant = device_grant(&mut repo, client.id, 8, later).await;
    let dead_session = upstream_session(&mut repo, 9, true).await;
    let waiting_session = upstream_session(&mut repo, 10, false).await;
    repo.commit().await.unwrap();
    // A rate-limit bucket, full again a second later.
    let mut reader = db.storage.reader().await.unwrap();
    reader
        .rate_limits()
        .spend("test:bucket", Quota::new(1, 1.0).unwrap())
        .await
        .unwrap();
    drop(reader);

    // Within the grace, the grant (expired 50 minutes ago) and the session stay.
    db.clock.advance(Duration::hours(1));
    let first = housekeeping::run_once(&db.storage).await.unwrap();
    assert_eq!(
        first,
        Deleted {
            rate_limit_buckets: 1,
            email_verifications: 1,
            pending_registrations: 1,
            recovery_tickets: 1,
            client_assertion_jtis: 1,
            device_code_grants: 0,
            upstream_sessions: 0,
            ..Deleted::default()
        }
    );
    // After it, they go too.
    db.clock.advance(housekeeping::GRACE);
    let second = housekeeping::run_once(&db.storage).await.unwrap();
    assert_eq!(
        second,
        Deleted {
            device_code_grants: 1,
            upstream_sessions: 2,
            ..Deleted::default()
        }
    );
    assert_eq!(second.total(), 3);
    assert_eq!(
        housekeeping::run_once(&db.storage).await.unwrap(),
        Deleted::default()
    );

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.user_email_verifications().latest(email).await.unwrap(),
        None
    );
    assert!(repo
        .user_email_verifications()
        .latest(live_email)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        repo.recovery_tickets()
            .find_by_ticket_hash(&hash(3))
            .await
            .unwrap(),
        None
    );
    assert!(repo
        .recovery_tickets()
        .find_by_ticket_hash(&hash(4))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        repo.pending_registrations()
            .lookup(dead_pending)
            .await
            .unwrap(),
        None
    );
    assert!(repo
        .pending_registrations()
        .lookup(live_pending)
        .await
        .unwrap()
        .is_some());
    let again = db.clock.now() + Duration::minutes(5);
    assert!(repo
        .client_assertions()
        .record_jti(client.id, "old", again)
        .await
        .unwrap());
    assert!(!repo
        .client_assertions()
        .record_jti(client.id, "live", again)
        .await
        .unwrap());
    assert_eq!(
        repo.device_code_grants().lookup(dead_grant).await.unwrap(),
        None
    );
    assert!(repo
        .device_code_grants()
        .lookup(live_grant)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        repo.upstream_sessions().lookup(dead_session).await.unwrap(),
        None
    );
    assert_eq!(
        repo.upstream_sessions()
            .lookup(waiting_session)
            .await
            .unwrap(),
        None
    );
}

backend_tests!(
    expired_verification_codes_go,
    expired_recovery_tickets_go,
    expired_pending_registrations_go,
    expired_assertion_jtis_go,
    expired_device_code_grants_go,
    old_upstream_sessions_go,
    run_once_cleans_every_table,
);
