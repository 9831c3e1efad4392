use chrono::Duration;
use provider::{
    backend_tests,
    domain::protocol::ClientAuthMethod,
    storage::{Client, StorageError, Upserted},
    test_harness::TestDb,
};
use serde_json::json;

use crate::fixtures::{assert_invalid, write_by_hand};

/// Metadata that exercises the JSON round trip: nesting, nulls, booleans, numbers, non-ASCII
/// text, and a key order JSONB does not keep.
fn rich_metadata() -> serde_json::Value {
    json!({
        "redirect_uris": ["https://app.example.org/cb", "http://127.0.0.1/cb"],
        "client_name": "Élément — client",
        "client_name#fr": "Élément",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": [],
        "default_max_age": 3600,
        "ratio": 1.5,
        "contacts": null,
        "nested": {"z": true, "a": [false, {"k": "v"}]}
    })
}

async fn add_lookup_delete(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let client = repo
        .clients()
        .add(
            "01HDYNAMIC",
            false,
            Some("enc:secret"),
            ClientAuthMethod::ClientSecretBasic,
            &rich_metadata(),
        )
        .await
        .unwrap();
    assert_eq!(
        client,
        Client {
            id: client.id,
            client_id: "01HDYNAMIC".to_owned(),
            is_static: false,
            encrypted_client_secret: Some("enc:secret".to_owned()),
            token_endpoint_auth_method: ClientAuthMethod::ClientSecretBasic,
            metadata: rich_metadata(),
            created_at: db.clock.now_db(),
            updated_at: db.clock.now_db(),
        }
    );

    // A client_id is registered once (RFC 7591 §3.2.1: the server issues unique ids); the
    // transaction stays usable after the conflict (PostgreSQL as well as SQLite).
    assert!(matches!(
        repo.clients()
            .add("01HDYNAMIC", true, None, ClientAuthMethod::None, &json!({}))
            .await,
        Err(StorageError::Conflict("client"))
    ));
    let public = repo
        .clients()
        .add("public", false, None, ClientAuthMethod::None, &json!({}))
        .await
        .unwrap();
    assert_eq!(public.encrypted_client_secret, None);
    repo.commit().await.unwrap();

    // The JSON metadata reads back equal on both backends (JSONB / TEXT).
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.clients().lookup(client.id).await.unwrap(),
        Some(client.clone())
    );
    assert_eq!(
        repo.clients()
            .find_by_client_id("01HDYNAMIC")
            .await
            .unwrap(),
        Some(client.clone())
    );
    assert_eq!(
        repo.clients().find_by_client_id("public").await.unwrap(),
        Some(public.clone())
    );
    assert_eq!(
        repo.clients().find_by_client_id("nope").await.unwrap(),
        None
    );
    assert_eq!(
        repo.clients().lookup(ulid::Ulid::new()).await.unwrap(),
        None
    );
    // Dynamic clients are not static ones.
    assert!(repo.clients().list_static().await.unwrap().is_empty());

    let mut repo = db.storage.begin().await.unwrap();
    assert!(repo.clients().delete(client.id).await.unwrap());
    assert!(!repo.clients().delete(client.id).await.unwrap());
    assert_eq!(repo.clients().lookup(client.id).await.unwrap(), None);
    // The client_id is free again.
    repo.clients()
        .add(
            "01HDYNAMIC",
            false,
            None,
            ClientAuthMethod::None,
            &json!({}),
        )
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

async fn upsert_static(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let metadata = json!({"redirect_uris": ["https://synapse.example.org/cb"], "a": 1});
    let (created, outcome) = repo
        .clients()
        .upsert_static(
            "synapse",
            Some("enc:1"),
            ClientAuthMethod::ClientSecretBasic,
            &metadata,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Created);
    assert_eq!(
        created,
        Client {
            id: created.id,
            client_id: "synapse".to_owned(),
            is_static: true,
            encrypted_client_secret: Some("enc:1".to_owned()),
            token_endpoint_auth_method: ClientAuthMethod::ClientSecretBasic,
            metadata: metadata.clone(),
            created_at: t0,
            updated_at: t0,
        }
    );
    repo.commit().await.unwrap();

    // Same values again, with the JSON keys in another order: nothing to do.
    db.clock.advance(Duration::minutes(1));
    let mut repo = db.storage.begin().await.unwrap();
    let reordered: serde_json::Value =
        serde_json::from_str(r#"{"a": 1, "redirect_uris": ["https://synapse.example.org/cb"]}"#)
            .unwrap();
    assert_eq!(
        repo.clients()
            .upsert_static(
                "synapse",
                Some("enc:1"),
                ClientAuthMethod::ClientSecretBasic,
                &reordered
            )
            .await
            .unwrap(),
        (created.clone(), Upserted::Unchanged)
    );

    // New metadata: updated in place, same id, `updated_at` moves.
    let t1 = db.clock.now_db();
    let metadata2 = json!({"redirect_uris": ["https://synapse.example.org/cb2"]});
    let (updated, outcome) = repo
        .clients()
        .upsert_static(
            "synapse",
            Some("enc:1"),
            ClientAuthMethod::ClientSecretBasic,
            &metadata2,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Updated);
    assert_eq!(
        updated,
        Client {
            metadata: metadata2.clone(),
            updated_at: t1,
            ..created.clone()
        }
    );

    // A new secret or method alone is an update too.
    db.clock.advance(Duration::minutes(1));
    let (updated, outcome) = repo
        .clients()
        .upsert_static("synapse", None, ClientAuthMethod::PrivateKeyJwt, &metadata2)
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Updated);
    assert_eq!(
        updated,
        Client {
            encrypted_client_secret: None,
            token_endpoint_auth_method: ClientAuthMethod::PrivateKeyJwt,
            metadata: metadata2.clone(),
            created_at: t0,
            updated_at: db.clock.now_db(),
            ..created.clone()
        }
    );

    // The config does not take over a dynamically registered client_id, and the transaction
    // stays usable after refusing.
    let dynamic = repo
        .clients()
        .add("dyn", false, None, ClientAuthMethod::None, &json!({"x": 1}))
        .await
        .unwrap();
    assert!(matches!(
        repo.clients()
            .upsert_static("dyn", None, ClientAuthMethod::None, &json!({}))
            .await,
        Err(StorageError::Conflict("client"))
    ));
    assert_eq!(
        repo.clients().lookup(dynamic.id).await.unwrap(),
        Some(dynamic)
    );
    let (admin, outcome) = repo
        .clients()
        .upsert_static("admin-cli", None, ClientAuthMethod::None, &json!({}))
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Created);
    repo.commit().await.unwrap();

    // Static clients only, by client_id.
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.clients().list_static().await.unwrap(),
        vec![admin, updated]
    );
}

/// A stored `token_endpoint_auth_method` outside the enum's table (written by hand, or by an
/// older or newer version) is a data error when read, never a panic nor a silent default.
async fn unknown_stored_auth_method_is_invalid(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let client = repo
        .clients()
        .add("odd", false, None, ClientAuthMethod::None, &json!({}))
        .await
        .unwrap();
    repo.commit().await.unwrap();
    write_by_hand(
        &db,
        "UPDATE oauth2_clients SET token_endpoint_auth_method = 'tls_client_auth' \
         WHERE client_id = 'odd'",
    )
    .await;
    let mut repo = db.storage.reader().await.unwrap();
    assert_invalid(repo.clients().lookup(client.id).await, "tls_client_auth");
    assert_invalid(
        repo.clients().find_by_client_id("odd").await,
        "tls_client_auth",
    );
    assert_invalid(repo.clients().list_page(None, 10).await, "tls_client_auth");
}

backend_tests!(
    add_lookup_delete,
    upsert_static,
    unknown_stored_auth_method_is_invalid
);
