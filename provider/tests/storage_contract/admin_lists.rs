//! The listing methods of the admin API (keyset pages in ID order, with filters) and the
//! client update: `UserRepository::list_filtered`, `ClientRepository::{list_page,
//! update_dynamic}`, `OAuth2SessionRepository::list_page`, `CompatSessionRepository::list_page`,
//! `BrowserSessionRepository::list_page`, `UpstreamLinkRepository::list_page`.

use chrono::Duration;
use provider::domain::protocol::ClientAuthMethod;
use provider::{
    backend_tests,
    storage::{
        NewOAuth2Session, OAuth2SessionFilter, StorageError, UpstreamProviderParams, UserFilter,
        UserStatus,
    },
    test_harness::TestDb,
};
use serde_json::json;
use ulid::Ulid;

use super::fixtures::{
    browser_session, compat_session, oauth2_session, session_for, user_and_client,
};

/// IDs of a list, to compare.
fn ids<T>(items: &[T], id: impl Fn(&T) -> Ulid) -> Vec<Ulid> {
    items.iter().map(id).collect()
}

async fn users_filtered(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let mut users = Vec::new();
    // One tick apart: ID order is creation order.
    for name in ["al_ice", "alfred", "bob", "carol", "dave"] {
        db.clock.advance(Duration::seconds(1));
        users.push(repo.users().add(name).await.unwrap());
    }
    let [al_ice, alfred, bob, carol, dave] = <[_; 5]>::try_from(users).unwrap();
    repo.users().set_locked(bob.id, true).await.unwrap();
    repo.users().set_locked(carol.id, true).await.unwrap();
    repo.users().set_deactivated(carol.id, true).await.unwrap();
    repo.users().set_deactivated(dave.id, true).await.unwrap();
    repo.users()
        .set_can_request_admin(alfred.id, true)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut repo = db.storage.reader().await.unwrap();
    let all = UserFilter::default();
    let page = repo.users().list_filtered(&all, None, 10).await.unwrap();
    assert_eq!(
        ids(&page, |u| u.id),
        [al_ice.id, alfred.id, bob.id, carol.id, dave.id]
    );
    // Pages: 2, 2, 1, then nothing.
    let first = repo.users().list_filtered(&all, None, 2).await.unwrap();
    let second = repo
        .users()
        .list_filtered(&all, Some(first[1].id), 2)
        .await
        .unwrap();
    let third = repo
        .users()
        .list_filtered(&all, Some(second[1].id), 2)
        .await
        .unwrap();
    assert_eq!(ids(&second, |u| u.id), [bob.id, carol.id]);
    assert_eq!(ids(&third, |u| u.id), [dave.id]);
    assert!(repo
        .users()
        .list_filtered(&all, Some(dave.id), 2)
        .await
        .unwrap()
        .is_empty());

    let by_status = |status| UserFilter {
        status: Some(status),
        ..UserFilter::default()
    };
    let active = repo
        .users()
        .list_filtered(&by_status(UserStatus::Active), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&active, |u| u.id), [al_ice.id, alfred.id]);
    let locked = repo
        .users()
        .list_filtered(&by_status(UserStatus::Locked), None, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&locked, |u| u.id),
        [bob.id],
        "deactivated ones are not 'locked'"
    );
    let deactivated = repo
        .users()
        .list_filtered(&by_status(UserStatus::Deactivated), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&deactivated, |u| u.id), [carol.id, dave.id]);

    let admins = UserFilter {
        can_request_admin: Some(true),
        ..UserFilter::default()
    };
    assert_eq!(
        ids(
            &repo.users().list_filtered(&admins, None, 10).await.unwrap(),
            |u| u.id
        ),
        [alfred.id]
    );
    // A prefix is exact: `_` is not a wildcard, case matters.
    let prefix = |p: &str| UserFilter {
        username_prefix: Some(p.to_owned()),
        ..UserFilter::default()
    };
    assert_eq!(
        ids(
            &repo
                .users()
                .list_filtered(&prefix("al"), None, 10)
                .await
                .unwrap(),
            |u| u.id
        ),
        [al_ice.id, alfred.id]
    );
    assert_eq!(
        ids(
            &repo
                .users()
                .list_filtered(&prefix("al_"), None, 10)
                .await
                .unwrap(),
            |u| u.id
        ),
        [al_ice.id]
    );
    assert!(repo
        .users()
        .list_filtered(&prefix("AL"), None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .users()
        .list_filtered(&prefix("al%"), None, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn clients_paged_and_updated(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    db.clock.advance(Duration::seconds(1));
    let dynamic = repo
        .clients()
        .add(
            "dyn",
            false,
            None,
            ClientAuthMethod::None,
            &json!({"client_name": "A"}),
        )
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(1));
    let fixed = repo
        .clients()
        .add(
            "static",
            true,
            Some("enc"),
            ClientAuthMethod::ClientSecretBasic,
            &json!({}),
        )
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        ids(&repo.clients().list_page(None, 10).await.unwrap(), |c| c.id),
        [dynamic.id, fixed.id]
    );
    assert_eq!(
        ids(
            &repo
                .clients()
                .list_page(Some(dynamic.id), 10)
                .await
                .unwrap(),
            |c| c.id
        ),
        [fixed.id]
    );

    db.clock.advance(Duration::minutes(5));
    let updated = repo
        .clients()
        .update_dynamic(
            dynamic.id,
            Some("new-enc"),
            ClientAuthMethod::ClientSecretPost,
            &json!({"client_name": "B"}),
        )
        .await
        .unwrap();
    assert_eq!(updated.encrypted_client_secret.as_deref(), Some("new-enc"));
    assert_eq!(
        updated.token_endpoint_auth_method,
        ClientAuthMethod::ClientSecretPost
    );
    assert_eq!(updated.metadata, json!({"client_name": "B"}));
    assert_eq!(updated.created_at, dynamic.created_at);
    assert_eq!(updated.updated_at, db.clock.now_db());
    assert_eq!(
        repo.clients().lookup(dynamic.id).await.unwrap(),
        Some(updated)
    );

    assert!(matches!(
        repo.clients()
            .update_dynamic(fixed.id, None, ClientAuthMethod::None, &json!({}))
            .await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(repo.clients().lookup(fixed.id).await.unwrap(), Some(fixed));
    assert!(matches!(
        repo.clients()
            .update_dynamic(Ulid::new(), None, ClientAuthMethod::None, &json!({}))
            .await,
        Err(StorageError::NotFound("client"))
    ));
}

async fn sessions_paged(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, web) = user_and_client(&mut repo, "alice").await;
    let (bob, other) = user_and_client(&mut repo, "bob").await;
    db.clock.advance(Duration::seconds(1));
    let a1 = oauth2_session(&mut repo, &alice, &web).await;
    db.clock.advance(Duration::seconds(1));
    let a2 = oauth2_session(&mut repo, &alice, &other).await;
    db.clock.advance(Duration::seconds(1));
    let b1 = oauth2_session(&mut repo, &bob, &web).await;
    db.clock.advance(Duration::seconds(1));
    let service = repo
        .oauth2_sessions()
        .add(NewOAuth2Session {
            user_id: None,
            ..session_for(&alice, &other)
        })
        .await
        .unwrap();
    repo.oauth2_sessions().finish(a2.id).await.unwrap();

    let filter = |user_id, client_id, active| OAuth2SessionFilter {
        user_id,
        client_id,
        active,
    };
    let page = repo
        .oauth2_sessions()
        .list_page(&filter(None, None, None), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [a1.id, a2.id, b1.id, service.id]);
    let page = repo
        .oauth2_sessions()
        .list_page(&filter(Some(alice.id), None, None), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [a1.id, a2.id]);
    let page = repo
        .oauth2_sessions()
        .list_page(&filter(None, Some(web.id), None), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [a1.id, b1.id]);
    let page = repo
        .oauth2_sessions()
        .list_page(&filter(Some(alice.id), None, Some(true)), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [a1.id]);
    let page = repo
        .oauth2_sessions()
        .list_page(&filter(None, None, Some(false)), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [a2.id]);
    let page = repo
        .oauth2_sessions()
        .list_page(&filter(None, None, None), Some(a2.id), 1)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [b1.id]);

    // Compat sessions.
    db.clock.advance(Duration::seconds(1));
    let c1 = compat_session(&mut repo, &alice, "DEV1").await;
    db.clock.advance(Duration::seconds(1));
    let c2 = compat_session(&mut repo, &alice, "DEV2").await;
    db.clock.advance(Duration::seconds(1));
    let c3 = compat_session(&mut repo, &bob, "DEV3").await;
    repo.compat_sessions().finish(c2.id).await.unwrap();
    let page = repo
        .compat_sessions()
        .list_page(None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [c1.id, c2.id, c3.id]);
    let page = repo
        .compat_sessions()
        .list_page(Some(alice.id), Some(true), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [c1.id]);
    let page = repo
        .compat_sessions()
        .list_page(None, Some(false), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [c2.id]);
    let page = repo
        .compat_sessions()
        .list_page(None, None, Some(c1.id), 1)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [c2.id]);

    // Browser sessions.
    db.clock.advance(Duration::seconds(1));
    let s1 = browser_session(&mut repo, &alice).await;
    db.clock.advance(Duration::seconds(1));
    let s2 = browser_session(&mut repo, &bob).await;
    db.clock.advance(Duration::seconds(1));
    let s3 = browser_session(&mut repo, &alice).await;
    repo.browser_sessions().finish(s3).await.unwrap();
    let page = repo
        .browser_sessions()
        .list_page(None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [s1, s2, s3]);
    let page = repo
        .browser_sessions()
        .list_page(Some(alice.id), None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [s1, s3]);
    let page = repo
        .browser_sessions()
        .list_page(Some(alice.id), Some(true), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [s1]);
    let page = repo
        .browser_sessions()
        .list_page(None, Some(false), Some(s1), 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |s| s.id), [s3]);
}

async fn upstream_links_paged(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let params = |name: &str| UpstreamProviderParams {
        issuer: Some(format!("https://{name}.example.com/")),
        human_name: None,
        brand_name: None,
        client_id: "c".into(),
        encrypted_client_secret: None,
        token_endpoint_auth_method: ClientAuthMethod::None,
        scope: "openid".into(),
        settings: json!({}),
    };
    let one = repo.upstream_providers().add(params("one")).await.unwrap();
    let two = repo.upstream_providers().add(params("two")).await.unwrap();
    db.clock.advance(Duration::seconds(1));
    let l1 = repo.upstream_links().add(one.id, "s1", None).await.unwrap();
    db.clock.advance(Duration::seconds(1));
    let l2 = repo.upstream_links().add(two.id, "s2", None).await.unwrap();
    db.clock.advance(Duration::seconds(1));
    let l3 = repo.upstream_links().add(one.id, "s3", None).await.unwrap();
    repo.upstream_links()
        .associate(l1.id, alice.id)
        .await
        .unwrap();
    repo.upstream_links()
        .associate(l2.id, alice.id)
        .await
        .unwrap();

    let page = repo
        .upstream_links()
        .list_page(None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |l| l.id), [l1.id, l2.id, l3.id]);
    let page = repo
        .upstream_links()
        .list_page(Some(alice.id), None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |l| l.id), [l1.id, l2.id]);
    let page = repo
        .upstream_links()
        .list_page(None, Some(one.id), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |l| l.id), [l1.id, l3.id]);
    let page = repo
        .upstream_links()
        .list_page(Some(alice.id), Some(one.id), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&page, |l| l.id), [l1.id]);
    let page = repo
        .upstream_links()
        .list_page(None, None, Some(l1.id), 1)
        .await
        .unwrap();
    assert_eq!(ids(&page, |l| l.id), [l2.id]);
}

backend_tests!(
    users_filtered,
    clients_paged_and_updated,
    sessions_paged,
    upstream_links_paged
);
