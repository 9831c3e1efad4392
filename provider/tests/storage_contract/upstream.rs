use chrono::Duration;
use provider::{
    backend_tests,
    domain::protocol::ClientAuthMethod,
    storage::{
        StorageError, UpstreamAuthorizationSession, UpstreamLink, UpstreamProvider,
        UpstreamProviderParams,
    },
    test_harness::TestDb,
};
use serde_json::json;
use ulid::Ulid;

use crate::fixtures::{assert_invalid, write_by_hand};

fn params(client_id: &str) -> UpstreamProviderParams {
    UpstreamProviderParams {
        issuer: Some("https://accounts.example.com".to_owned()),
        human_name: Some("Example".to_owned()),
        brand_name: Some("example".to_owned()),
        client_id: client_id.to_owned(),
        encrypted_client_secret: Some("ZW5jcnlwdGVk".to_owned()),
        token_endpoint_auth_method: ClientAuthMethod::ClientSecretBasic,
        scope: "openid profile email".to_owned(),
        // Nested values of every JSON kind, to check the round trip (JSONB / TEXT).
        settings: json!({
            "discovery_mode": "oidc",
            "pkce_mode": "auto",
            "claims_imports": {
                "localpart": {"action": "require", "template": "{{ user.preferred_username }}"},
                "displayname": {"action": "suggest", "template": null},
            },
            "additional_parameters": [["prompt", "login"], ["ui_locales", "fr é 🦀"]],
            "response_timeout_ms": 5000,
            "ratio": 0.5,
            "fetch_userinfo": true,
        }),
    }
}

async fn upstream_providers(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let first = repo
        .upstream_providers()
        .add(params("client-1"))
        .await
        .unwrap();
    let p = params("client-1");
    assert_eq!(
        first,
        UpstreamProvider {
            id: first.id,
            issuer: p.issuer,
            human_name: p.human_name,
            brand_name: p.brand_name,
            client_id: p.client_id,
            encrypted_client_secret: p.encrypted_client_secret,
            token_endpoint_auth_method: p.token_endpoint_auth_method,
            scope: p.scope,
            settings: p.settings,
            created_at: db.clock.now_db(),
            disabled_at: None,
        }
    );
    assert!(first.is_enabled());

    db.clock.advance(Duration::seconds(1));
    let bare = repo
        .upstream_providers()
        .add(UpstreamProviderParams {
            issuer: None,
            human_name: None,
            brand_name: None,
            client_id: "client-2".to_owned(),
            encrypted_client_secret: None,
            token_endpoint_auth_method: ClientAuthMethod::None,
            scope: "openid".to_owned(),
            settings: json!({}),
        })
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    // The JSON settings come back as they went in.
    assert_eq!(
        repo.upstream_providers().lookup(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        repo.upstream_providers().lookup(bare.id).await.unwrap(),
        Some(bare.clone())
    );
    assert_eq!(
        repo.upstream_providers().lookup(Ulid::new()).await.unwrap(),
        None
    );

    // A config-defined provider, with its own id.
    let config_id = Ulid::from_parts(1_600_000_000_000, 42);
    db.clock.advance(Duration::seconds(1));
    let created_at = db.clock.now_db();
    let from_config = repo
        .upstream_providers()
        .upsert(config_id, params("config-client"))
        .await
        .unwrap();
    assert_eq!(from_config.id, config_id);
    assert_eq!(from_config.created_at, created_at);
    assert_eq!(from_config.client_id, "config-client");
    assert_eq!(
        repo.upstream_providers().list_enabled().await.unwrap(),
        vec![first.clone(), bare.clone(), from_config.clone()]
    );

    // disable: compare-and-set; disabled providers are not listed.
    db.clock.advance(Duration::seconds(1));
    assert!(repo.upstream_providers().disable(config_id).await.unwrap());
    assert!(!repo.upstream_providers().disable(config_id).await.unwrap());
    let disabled = repo
        .upstream_providers()
        .lookup(config_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        disabled,
        UpstreamProvider {
            disabled_at: Some(db.clock.now_db()),
            ..from_config.clone()
        }
    );
    assert!(!disabled.is_enabled());
    assert!(matches!(
        repo.upstream_providers().disable(Ulid::new()).await,
        Err(StorageError::NotFound("upstream provider"))
    ));
    assert_eq!(
        repo.upstream_providers().list_enabled().await.unwrap(),
        vec![first.clone(), bare.clone()]
    );

    // Upserting again replaces the settings, keeps created_at and re-enables.
    db.clock.advance(Duration::seconds(1));
    let mut changed = params("config-client-2");
    changed.issuer = None;
    changed.encrypted_client_secret = None;
    changed.scope = "openid".to_owned();
    changed.settings = json!({"discovery_mode": "disabled", "endpoints": ["a", "b"]});
    let replaced = repo
        .upstream_providers()
        .upsert(config_id, changed.clone())
        .await
        .unwrap();
    assert_eq!(
        replaced,
        UpstreamProvider {
            id: config_id,
            issuer: None,
            human_name: changed.human_name,
            brand_name: changed.brand_name,
            client_id: "config-client-2".to_owned(),
            encrypted_client_secret: None,
            token_endpoint_auth_method: changed.token_endpoint_auth_method,
            scope: "openid".to_owned(),
            settings: changed.settings,
            created_at,
            disabled_at: None,
        }
    );
    assert_eq!(
        repo.upstream_providers().lookup(config_id).await.unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(
        repo.upstream_providers().list_enabled().await.unwrap(),
        vec![first, bare, replaced]
    );
    repo.commit().await.unwrap();
}

async fn upstream_links(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap();
    let bob = repo.users().add("bob").await.unwrap();
    let google = repo.upstream_providers().add(params("g")).await.unwrap();
    let github = repo.upstream_providers().add(params("gh")).await.unwrap();

    let link = repo
        .upstream_links()
        .add(google.id, "sub-123", Some("alice@example.com"))
        .await
        .unwrap();
    assert_eq!(
        link,
        UpstreamLink {
            id: link.id,
            provider_id: google.id,
            user_id: None,
            subject: "sub-123".to_owned(),
            human_account_name: Some("alice@example.com".to_owned()),
            created_at: db.clock.now_db(),
        }
    );
    // (provider, subject) is unique; the same subject at another provider is another identity.
    assert!(matches!(
        repo.upstream_links().add(google.id, "sub-123", None).await,
        Err(StorageError::Conflict("upstream link"))
    ));
    assert!(matches!(
        repo.upstream_links()
            .add(Ulid::new(), "sub-123", None)
            .await,
        Err(StorageError::NotFound("upstream provider"))
    ));
    db.clock.advance(Duration::seconds(1));
    let other = repo
        .upstream_links()
        .add(github.id, "sub-123", None)
        .await
        .unwrap();
    assert_eq!(other.human_account_name, None);
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.upstream_links().lookup(link.id).await.unwrap(),
        Some(link.clone())
    );
    assert_eq!(
        repo.upstream_links().lookup(Ulid::new()).await.unwrap(),
        None
    );
    assert_eq!(
        repo.upstream_links()
            .find_by_subject(github.id, "sub-123")
            .await
            .unwrap(),
        Some(other.clone())
    );
    assert_eq!(
        repo.upstream_links()
            .find_by_subject(google.id, "sub-999")
            .await
            .unwrap(),
        None
    );
    assert!(repo
        .upstream_links()
        .list_for_user(alice.id)
        .await
        .unwrap()
        .is_empty());

    // associate: compare-and-set, only while linked to nobody.
    assert!(repo
        .upstream_links()
        .associate(link.id, alice.id)
        .await
        .unwrap());
    assert!(!repo
        .upstream_links()
        .associate(link.id, bob.id)
        .await
        .unwrap());
    assert!(!repo
        .upstream_links()
        .associate(link.id, alice.id)
        .await
        .unwrap());
    let linked = UpstreamLink {
        user_id: Some(alice.id),
        ..link.clone()
    };
    assert_eq!(
        repo.upstream_links().lookup(link.id).await.unwrap(),
        Some(linked.clone())
    );
    assert!(matches!(
        repo.upstream_links().associate(Ulid::new(), alice.id).await,
        Err(StorageError::NotFound("upstream link"))
    ));
    assert!(matches!(
        repo.upstream_links().associate(other.id, Ulid::new()).await,
        Err(StorageError::NotFound("user"))
    ));
    assert!(repo
        .upstream_links()
        .associate(other.id, alice.id)
        .await
        .unwrap());
    // Oldest first.
    assert_eq!(
        repo.upstream_links().list_for_user(alice.id).await.unwrap(),
        vec![
            linked.clone(),
            UpstreamLink {
                user_id: Some(alice.id),
                ..other.clone()
            }
        ]
    );
    assert!(repo
        .upstream_links()
        .list_for_user(bob.id)
        .await
        .unwrap()
        .is_empty());

    // remove
    assert!(repo.upstream_links().remove(link.id).await.unwrap());
    assert!(!repo.upstream_links().remove(link.id).await.unwrap());
    assert_eq!(repo.upstream_links().lookup(link.id).await.unwrap(), None);
    assert_eq!(
        repo.upstream_links()
            .find_by_subject(google.id, "sub-123")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.upstream_links()
            .list_for_user(alice.id)
            .await
            .unwrap()
            .len(),
        1
    );
    // The subject may be recorded again.
    repo.upstream_links()
        .add(google.id, "sub-123", None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

async fn upstream_sessions(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let provider = repo.upstream_providers().add(params("c")).await.unwrap();
    let link = repo
        .upstream_links()
        .add(provider.id, "sub-1", None)
        .await
        .unwrap();

    let session = repo
        .upstream_sessions()
        .add(
            provider.id,
            &[7; 32],
            Some("verifier-abc"),
            Some("nonce-xyz"),
        )
        .await
        .unwrap();
    assert_eq!(
        session,
        UpstreamAuthorizationSession {
            id: session.id,
            provider_id: provider.id,
            state_hash: [7; 32],
            code_verifier: Some("verifier-abc".to_owned()),
            nonce: Some("nonce-xyz".to_owned()),
            link_id: None,
            id_token: None,
            claims: None,
            created_at: db.clock.now_db(),
            completed_at: None,
            consumed_at: None,
        }
    );
    assert!(matches!(
        repo.upstream_sessions()
            .add(provider.id, &[7; 32], None, None)
            .await,
        Err(StorageError::Conflict("upstream authorization session"))
    ));
    assert!(matches!(
        repo.upstream_sessions()
            .add(Ulid::new(), &[8; 32], None, None)
            .await,
        Err(StorageError::NotFound("upstream provider"))
    ));
    let plain = repo
        .upstream_sessions()
        .add(provider.id, &[8; 32], None, None)
        .await
        .unwrap();
    assert_eq!(
        (plain.code_verifier.clone(), plain.nonce.clone()),
        (None, None)
    );
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.upstream_sessions().lookup(session.id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        repo.upstream_sessions().lookup(Ulid::new()).await.unwrap(),
        None
    );
    assert_eq!(
        repo.upstream_sessions()
            .find_by_state_hash(&[7; 32])
            .await
            .unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        repo.upstream_sessions()
            .find_by_state_hash(&[9; 32])
            .await
            .unwrap(),
        None
    );

    // Not completed: can't be consumed.
    assert!(!repo.upstream_sessions().consume(session.id).await.unwrap());

    // complete: compare-and-set, once.
    let claims = json!({
        "sub": "sub-1",
        "email": "alice@example.com",
        "email_verified": true,
        "groups": ["admins", "users"],
        "address": {"locality": "Zürich"},
        "iat": 1_642_344_000,
    });
    assert!(matches!(
        repo.upstream_sessions()
            .complete(Ulid::new(), link.id, None, &claims)
            .await,
        Err(StorageError::NotFound("upstream authorization session"))
    ));
    assert!(matches!(
        repo.upstream_sessions()
            .complete(session.id, Ulid::new(), None, &claims)
            .await,
        Err(StorageError::NotFound("upstream link"))
    ));
    db.clock.advance(Duration::seconds(10));
    let completed_at = db.clock.now_db();
    assert!(repo
        .upstream_sessions()
        .complete(
            session.id,
            link.id,
            Some("eyJhbGciOiJSUzI1NiJ9.e30.sig"),
            &claims
        )
        .await
        .unwrap());
    assert!(!repo
        .upstream_sessions()
        .complete(session.id, link.id, None, &json!({"sub": "other"}))
        .await
        .unwrap());
    let completed = UpstreamAuthorizationSession {
        link_id: Some(link.id),
        id_token: Some("eyJhbGciOiJSUzI1NiJ9.e30.sig".to_owned()),
        claims: Some(claims.clone()),
        completed_at: Some(completed_at),
        ..session.clone()
    };
    assert_eq!(
        repo.upstream_sessions().lookup(session.id).await.unwrap(),
        Some(completed.clone())
    );

    // consume: compare-and-set, once.
    db.clock.advance(Duration::seconds(10));
    assert!(repo.upstream_sessions().consume(session.id).await.unwrap());
    assert!(!repo.upstream_sessions().consume(session.id).await.unwrap());
    let consumed = UpstreamAuthorizationSession {
        consumed_at: Some(db.clock.now_db()),
        ..completed
    };
    assert_eq!(
        repo.upstream_sessions()
            .find_by_state_hash(&[7; 32])
            .await
            .unwrap(),
        Some(consumed.clone())
    );
    assert!(matches!(
        repo.upstream_sessions().consume(Ulid::new()).await,
        Err(StorageError::NotFound("upstream authorization session"))
    ));

    // Removing the link leaves the session with its claims and without the link.
    assert!(repo.upstream_links().remove(link.id).await.unwrap());
    assert_eq!(
        repo.upstream_sessions().lookup(session.id).await.unwrap(),
        Some(UpstreamAuthorizationSession {
            link_id: None,
            ..consumed
        })
    );
    repo.commit().await.unwrap();
}

/// A stored `token_endpoint_auth_method` outside the enum's table (written by hand, or by an
/// older or newer version) is a data error when the provider is read, as for a client.
async fn unknown_stored_upstream_auth_method_is_invalid(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let id = Ulid::new();
    repo.upstream_providers()
        .upsert(id, params("ours"))
        .await
        .unwrap();
    repo.commit().await.unwrap();
    write_by_hand(
        &db,
        "UPDATE upstream_oauth_providers SET token_endpoint_auth_method = 'tls_client_auth'",
    )
    .await;
    let mut repo = db.storage.reader().await.unwrap();
    assert_invalid(
        repo.upstream_providers().lookup(id).await,
        "tls_client_auth",
    );
    assert_invalid(
        repo.upstream_providers().list_enabled().await,
        "tls_client_auth",
    );
}

backend_tests!(
    upstream_providers,
    upstream_links,
    upstream_sessions,
    unknown_stored_upstream_auth_method_is_invalid
);
