//! The homeserver API the provider calls: `/_synapse/mas/*` and the legacy admin API.

mod common;

use common::*;
use fake_homeserver::DeviceRecord;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn the_shared_secret_is_required_and_refusals_are_journaled() {
    let hs = start_offline().await;
    let path = "/_synapse/mas/query_user?localpart=alice";

    let missing = call(&hs, Method::GET, path, None, None).await;
    assert_error(&missing, 401, "M_MISSING_TOKEN");
    let wrong = call(&hs, Method::GET, path, Some("not-the-secret"), None).await;
    // Synapse's bare `SynapseError(403, …)` (`synapse/rest/synapse/mas/_base.py`): M_UNKNOWN.
    assert_error(&wrong, 403, "M_UNKNOWN");
    let prefix = call(&hs, Method::GET, path, Some("s3cre"), None).await;
    assert_error(&prefix, 403, "M_UNKNOWN");
    let body = json!({"localpart": "alice"});
    let refused_post = call(
        &hs,
        Method::POST,
        "/_synapse/mas/provision_user",
        Some("nope"),
        Some(body.clone()),
    )
    .await;
    assert_error(&refused_post, 403, "M_UNKNOWN");
    assert!(
        hs.store().user("alice").is_none(),
        "refused calls change nothing"
    );
    let admin_refused = call(
        &hs,
        Method::GET,
        "/_synapse/admin/v2/users/%40alice%3Ahs.test",
        None,
        None,
    )
    .await;
    assert_error(&admin_refused, 401, "M_MISSING_TOKEN");

    let allowed = call(&hs, Method::GET, path, Some(SECRET), None).await;
    assert_error(&allowed, 404, "M_NOT_FOUND");

    let journal = hs.journal();
    let statuses: Vec<u16> = journal.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [401, 403, 403, 403, 401, 404]);
    assert_eq!(journal[0].method, "GET");
    assert_eq!(journal[0].path, "/_synapse/mas/query_user");
    assert_eq!(journal[0].query.as_deref(), Some("localpart=alice"));
    assert_eq!(journal[0].body, Value::Null);
    assert_eq!(journal[3].method, "POST");
    assert_eq!(journal[3].body, body);
    assert_eq!(
        journal[4].path,
        "/_synapse/admin/v2/users/%40alice%3Ahs.test"
    );
}

#[tokio::test]
async fn the_secret_may_come_as_a_query_parameter_but_not_both_ways() {
    let hs = start_offline().await;
    let ok = call(
        &hs,
        Method::GET,
        "/_synapse/mas/is_localpart_available?localpart=alice&access_token=s3cret",
        None,
        None,
    )
    .await;
    assert_eq!(ok, (200, json!({})));
    let both = call(
        &hs,
        Method::GET,
        "/_synapse/mas/is_localpart_available?localpart=alice&access_token=s3cret",
        Some(SECRET),
        None,
    )
    .await;
    assert_error(&both, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn only_requests_to_synapse_paths_are_journaled() {
    let hs = start_offline().await;
    call(&hs, Method::GET, "/_matrix/client/versions", None, None).await;
    assert!(hs.journal().is_empty());
    let unknown = admin(&hs, Method::GET, "/_synapse/mas/nope", None).await;
    assert_error(&unknown, 404, "M_UNRECOGNIZED");
    assert_eq!(hs.journal().len(), 1);
    assert_eq!(hs.journal()[0].status, 404);
}

#[tokio::test]
async fn bodies_must_be_json_objects_with_their_fields() {
    let hs = start_offline().await;
    let url = hs.base_url().join("_synapse/mas/provision_user").unwrap();
    let response = http()
        .post(url)
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_BAD_JSON");
    assert_eq!(
        hs.journal()[0].body,
        Value::String("{not json".into()),
        "a non-JSON body is journaled as text"
    );

    assert_error(
        &mas_post(&hs, "provision_user", json!([1])).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &mas_post(&hs, "provision_user", json!({})).await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &mas_post(&hs, "provision_user", json!({"localpart": 7})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &mas_post(&hs, "delete_user", json!({"localpart": "alice"})).await,
        400,
        "M_MISSING_PARAM",
    );
}

#[tokio::test]
async fn wrong_methods_are_405() {
    let hs = start_offline().await;
    let answer = admin(&hs, Method::GET, "/_synapse/mas/provision_user", None).await;
    assert_error(&answer, 405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn query_user_and_localpart_availability() {
    let hs = start_offline().await;
    let query = |lp: &str| format!("/_synapse/mas/query_user?localpart={lp}");
    assert_error(
        &admin(&hs, Method::GET, &query("alice"), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &admin(&hs, Method::GET, "/_synapse/mas/query_user", None).await,
        400,
        "M_MISSING_PARAM",
    );

    let available = |lp: &str| format!("/_synapse/mas/is_localpart_available?localpart={lp}");
    assert_eq!(
        admin(&hs, Method::GET, &available("alice"), None).await,
        (200, json!({}))
    );
    for invalid in ["Alice", "al%20ice", "_bridge", "12345", "al%3Aice", ""] {
        assert_error(
            &admin(&hs, Method::GET, &available(invalid), None).await,
            400,
            "M_INVALID_USERNAME",
        );
    }
    assert_error(
        &admin(
            &hs,
            Method::GET,
            "/_synapse/mas/is_localpart_available",
            None,
        )
        .await,
        400,
        "M_MISSING_PARAM",
    );

    hs.store().insert_user("alice");
    hs.store().update_user("alice", |u| {
        u.displayname = Some("Alice".into());
        u.deactivated = true;
    });
    assert_error(
        &admin(&hs, Method::GET, &available("alice"), None).await,
        400,
        "M_USER_IN_USE",
    );
    assert_eq!(
        admin(&hs, Method::GET, &query("alice"), None).await,
        (
            200,
            json!({
                "user_id": "@alice:hs.test",
                "display_name": "Alice",
                "avatar_url": null,
                "is_suspended": false,
                "is_deactivated": true,
            })
        )
    );
}

#[tokio::test]
async fn provision_user_creates_then_updates() {
    let hs = start_offline().await;
    let created = mas_post(
        &hs,
        "provision_user",
        json!({
            "localpart": "alice",
            "set_displayname": "Alice",
            "set_avatar_url": "mxc://hs.test/alice",
            "set_emails": ["alice@example.com", "a@example.com", "alice@example.com"],
        }),
    )
    .await;
    assert_eq!(created, (201, json!({})));
    let alice = hs.store().user("alice").unwrap();
    assert_eq!(alice.displayname.as_deref(), Some("Alice"));
    assert_eq!(alice.avatar_url.as_deref(), Some("mxc://hs.test/alice"));
    assert_eq!(alice.emails, ["alice@example.com", "a@example.com"]);
    assert!(!alice.locked && !alice.deactivated);

    let updated = mas_post(
        &hs,
        "provision_user",
        json!({
            "localpart": "alice",
            "unset_displayname": true,
            "unset_avatar_url": true,
            "set_emails": ["new@example.com"],
            "locked": true,
        }),
    )
    .await;
    assert_eq!(updated, (200, json!({})));
    let alice = hs.store().user("alice").unwrap();
    assert_eq!(alice.displayname, None);
    assert_eq!(alice.avatar_url, None);
    assert_eq!(alice.emails, ["new@example.com"]);
    assert!(alice.locked);

    let unlocked = mas_post(
        &hs,
        "provision_user",
        json!({"localpart": "alice", "unset_emails": true, "locked": false}),
    )
    .await;
    assert_eq!(unlocked.0, 200);
    let alice = hs.store().user("alice").unwrap();
    assert!(alice.emails.is_empty() && !alice.locked);

    // Like Synapse's registration, a new user without a display name gets its localpart.
    assert_eq!(
        mas_post(&hs, "provision_user", json!({"localpart": "bob"}))
            .await
            .0,
        201
    );
    assert_eq!(
        hs.store().user("bob").unwrap().displayname.as_deref(),
        Some("bob")
    );
}

#[tokio::test]
async fn provision_user_refuses_conflicting_and_invalid_input() {
    let hs = start_offline().await;
    for (set, unset, value) in [
        ("set_displayname", "unset_displayname", json!("A")),
        ("set_avatar_url", "unset_avatar_url", json!("mxc://x/y")),
        ("set_emails", "unset_emails", json!(["a@example.com"])),
    ] {
        let mut body = json!({"localpart": "alice", unset: true});
        body[set] = value;
        assert_error(
            &mas_post(&hs, "provision_user", body).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    assert_error(
        &mas_post(&hs, "provision_user", json!({"localpart": "Not Valid"})).await,
        400,
        "M_INVALID_USERNAME",
    );
    assert!(hs.store().users().is_empty());
}

#[tokio::test]
async fn delete_and_reactivate_user() {
    let hs = start_offline().await;
    assert_error(
        &mas_post(
            &hs,
            "delete_user",
            json!({"localpart": "alice", "erase": false}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    mas_post(
        &hs,
        "provision_user",
        json!({"localpart": "alice", "set_displayname": "Alice", "set_emails": ["a@example.com"]}),
    )
    .await;
    hs.store().insert_device("alice", "DEV1");

    let deleted = mas_post(
        &hs,
        "delete_user",
        json!({"localpart": "alice", "erase": false}),
    )
    .await;
    assert_eq!(deleted, (200, json!({})));
    let alice = hs.store().user("alice").unwrap();
    assert!(alice.deactivated && !alice.erased);
    assert_eq!(
        alice.displayname.as_deref(),
        Some("Alice"),
        "kept without erase"
    );
    assert!(hs.store().devices("alice").is_empty());

    assert_eq!(
        mas_post(&hs, "reactivate_user", json!({"localpart": "alice"})).await,
        (200, json!({}))
    );
    assert!(!hs.store().user("alice").unwrap().deactivated);

    mas_post(
        &hs,
        "delete_user",
        json!({"localpart": "alice", "erase": true}),
    )
    .await;
    let alice = hs.store().user("alice").unwrap();
    assert!(alice.deactivated && alice.erased);
    assert_eq!(alice.displayname, None);

    mas_post(&hs, "reactivate_user", json!({"localpart": "alice"})).await;
    let alice = hs.store().user("alice").unwrap();
    assert!(!alice.deactivated && !alice.erased);
    assert_error(
        &mas_post(&hs, "reactivate_user", json!({"localpart": "bob"})).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn display_names() {
    let hs = start_offline().await;
    assert_error(
        &mas_post(
            &hs,
            "set_displayname",
            json!({"localpart": "alice", "displayname": "A"}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &mas_post(&hs, "unset_displayname", json!({"localpart": "alice"})).await,
        404,
        "M_NOT_FOUND",
    );
    hs.store().insert_user("alice");
    assert_eq!(
        mas_post(
            &hs,
            "set_displayname",
            json!({"localpart": "alice", "displayname": "Alice"})
        )
        .await,
        (200, json!({}))
    );
    assert_eq!(
        hs.store().user("alice").unwrap().displayname.as_deref(),
        Some("Alice")
    );
    assert_eq!(
        mas_post(&hs, "unset_displayname", json!({"localpart": "alice"})).await,
        (200, json!({}))
    );
    assert_eq!(hs.store().user("alice").unwrap().displayname, None);
    assert_error(
        &mas_post(&hs, "set_displayname", json!({"localpart": "alice"})).await,
        400,
        "M_MISSING_PARAM",
    );
}

#[tokio::test]
async fn upsert_and_rename_devices() {
    let hs = start_offline().await;
    let upsert = |body: Value| mas_post(&hs, "upsert_device", body);
    assert_error(
        &upsert(json!({"localpart": "alice", "device_id": "DEV1"})).await,
        404,
        "M_NOT_FOUND",
    );
    hs.store().insert_user("alice");
    assert_eq!(
        upsert(json!({"localpart": "alice", "device_id": "DEV1", "display_name": "Phone"})).await,
        (201, json!({}))
    );
    assert_eq!(
        upsert(json!({"localpart": "alice", "device_id": "DEV1"})).await,
        (200, json!({}))
    );
    assert_eq!(
        hs.store().devices("alice"),
        [DeviceRecord {
            device_id: "DEV1".into(),
            display_name: Some("Phone".into())
        }],
        "an upsert without display name keeps it"
    );
    upsert(json!({"localpart": "alice", "device_id": "DEV1", "display_name": "Tablet"})).await;
    assert_eq!(
        hs.store().devices("alice")[0].display_name.as_deref(),
        Some("Tablet")
    );
    assert_error(
        &upsert(json!({"localpart": "alice"})).await,
        400,
        "M_MISSING_PARAM",
    );

    let rename = |body: Value| mas_post(&hs, "update_device_display_name", body);
    assert_eq!(
        rename(json!({"localpart": "alice", "device_id": "DEV1", "display_name": "Laptop"})).await,
        (200, json!({}))
    );
    assert_eq!(
        hs.store().devices("alice")[0].display_name.as_deref(),
        Some("Laptop")
    );
    assert_error(
        &rename(json!({"localpart": "alice", "device_id": "NOPE", "display_name": "x"})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &rename(json!({"localpart": "bob", "device_id": "DEV1", "display_name": "x"})).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn delete_device_is_idempotent() {
    let hs = start_offline().await;
    let delete = || {
        mas_post(
            &hs,
            "delete_device",
            json!({"localpart": "alice", "device_id": "DEV1"}),
        )
    };
    assert_error(&delete().await, 404, "M_NOT_FOUND");
    hs.store().insert_device("alice", "DEV1");
    hs.store().insert_device("alice", "DEV2");
    // 204 No Content, as Synapse (`synapse/rest/synapse/mas/devices.py`).
    assert_eq!(delete().await, (204, Value::Null));
    assert!(!hs.store().has_device("alice", "DEV1"));
    assert!(hs.store().has_device("alice", "DEV2"));
    assert_eq!(
        delete().await,
        (204, Value::Null),
        "already gone: still 204"
    );
}

#[tokio::test]
async fn sync_devices_makes_the_set_exact() {
    let hs = start_offline().await;
    assert_error(
        &mas_post(
            &hs,
            "sync_devices",
            json!({"localpart": "alice", "devices": []}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    hs.store().insert_user("alice");
    for (id, name) in [("KEEP", "Kept"), ("DROP", "Dropped")] {
        mas_post(
            &hs,
            "upsert_device",
            json!({"localpart": "alice", "device_id": id, "display_name": name}),
        )
        .await;
    }
    let synced = mas_post(
        &hs,
        "sync_devices",
        json!({"localpart": "alice", "devices": ["KEEP", "NEW", "NEW"]}),
    )
    .await;
    assert_eq!(synced, (200, json!({})));
    assert_eq!(
        hs.store().devices("alice"),
        [
            DeviceRecord {
                device_id: "KEEP".into(),
                display_name: Some("Kept".into())
            },
            DeviceRecord {
                device_id: "NEW".into(),
                display_name: None
            },
        ]
    );
    mas_post(
        &hs,
        "sync_devices",
        json!({"localpart": "alice", "devices": []}),
    )
    .await;
    assert!(hs.store().devices("alice").is_empty());
    assert_error(
        &mas_post(&hs, "sync_devices", json!({"localpart": "alice"})).await,
        400,
        "M_MISSING_PARAM",
    );
}

#[tokio::test]
async fn allow_cross_signing_reset() {
    let hs = start_offline().await;
    assert_error(
        &mas_post(
            &hs,
            "allow_cross_signing_reset",
            json!({"localpart": "alice"}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    hs.store().insert_user("alice");
    assert_eq!(
        mas_post(
            &hs,
            "allow_cross_signing_reset",
            json!({"localpart": "alice"})
        )
        .await,
        (200, json!({}))
    );
    assert!(
        hs.store()
            .user("alice")
            .unwrap()
            .cross_signing_reset_allowed
    );
}

// ---- the legacy admin API ----

const ALICE: &str = "/_synapse/admin/v2/users/%40alice%3Ahs.test";

#[tokio::test]
async fn admin_put_creates_then_updates_users() {
    let hs = start_offline().await;
    assert_error(
        &admin(&hs, Method::GET, ALICE, None).await,
        404,
        "M_NOT_FOUND",
    );

    let created = admin(
        &hs,
        Method::PUT,
        ALICE,
        Some(json!({
            "displayname": "Alice",
            "threepids": [{"medium": "email", "address": "alice@example.com"}],
            "admin": true,
        })),
    )
    .await;
    assert_eq!(created.0, 201);
    assert_eq!(created.1["name"], "@alice:hs.test");
    assert_eq!(created.1["displayname"], "Alice");
    assert_eq!(created.1["admin"], true);
    assert_eq!(created.1["deactivated"], false);
    assert_eq!(created.1["locked"], false);
    assert_eq!(
        created.1["threepids"],
        json!([{"medium": "email", "address": "alice@example.com"}])
    );
    let alice = hs.store().user("alice").unwrap();
    assert!(alice.admin);
    assert_eq!(alice.emails, ["alice@example.com"]);

    let updated = admin(
        &hs,
        Method::PUT,
        ALICE,
        Some(json!({"avatar_url": "mxc://hs.test/a", "locked": true, "threepids": []})),
    )
    .await;
    assert_eq!(updated.0, 200);
    assert_eq!(updated.1["avatar_url"], "mxc://hs.test/a");
    assert_eq!(updated.1["displayname"], "Alice", "untouched fields stay");
    assert_eq!(updated.1["locked"], true);
    assert_eq!(updated.1["threepids"], json!([]));
    assert_eq!(admin(&hs, Method::GET, ALICE, None).await, updated);

    hs.store().insert_device("alice", "DEV1");
    let deactivated = admin(&hs, Method::PUT, ALICE, Some(json!({"deactivated": true}))).await;
    assert_eq!(deactivated.1["deactivated"], true);
    assert!(hs.store().devices("alice").is_empty());
    let reactivated = admin(&hs, Method::PUT, ALICE, Some(json!({"deactivated": false}))).await;
    assert_eq!(reactivated.1["deactivated"], false);
}

#[tokio::test]
async fn admin_put_refuses_bad_ids_and_media() {
    let hs = start_offline().await;
    assert_error(
        &admin(
            &hs,
            Method::PUT,
            "/_synapse/admin/v2/users/%40alice%3Aother.test",
            Some(json!({})),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &admin(&hs, Method::GET, "/_synapse/admin/v2/users/alice", None).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &admin(
            &hs,
            Method::PUT,
            "/_synapse/admin/v2/users/%40Alice%3Ahs.test",
            Some(json!({})),
        )
        .await,
        400,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &admin(
            &hs,
            Method::PUT,
            ALICE,
            Some(json!({"threepids": [{"medium": "msisdn", "address": "123"}]})),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert!(hs.store().users().is_empty());
}

#[tokio::test]
async fn admin_devices() {
    let hs = start_offline().await;
    let devices = format!("{ALICE}/devices");
    assert_error(
        &admin(&hs, Method::GET, &devices, None).await,
        404,
        "M_NOT_FOUND",
    );
    hs.store().insert_user("alice");

    let created = admin(
        &hs,
        Method::POST,
        &devices,
        Some(json!({"device_id": "DEV1"})),
    )
    .await;
    assert_eq!(created, (201, json!({})));
    let again = admin(
        &hs,
        Method::POST,
        &devices,
        Some(json!({"device_id": "DEV1"})),
    )
    .await;
    assert_eq!(again, (201, json!({})));
    admin(
        &hs,
        Method::POST,
        &devices,
        Some(json!({"device_id": "DEV2"})),
    )
    .await;

    let renamed = admin(
        &hs,
        Method::PUT,
        &format!("{devices}/DEV1"),
        Some(json!({"display_name": "Phone"})),
    )
    .await;
    assert_eq!(renamed, (200, json!({})));
    assert_error(
        &admin(
            &hs,
            Method::PUT,
            &format!("{devices}/NOPE"),
            Some(json!({"display_name": "x"})),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    let (status, list) = admin(&hs, Method::GET, &devices, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 2);
    assert_eq!(list["devices"][0]["device_id"], "DEV1");
    assert_eq!(list["devices"][0]["display_name"], "Phone");
    assert_eq!(list["devices"][0]["user_id"], "@alice:hs.test");
    assert_eq!(list["devices"][1]["display_name"], Value::Null);

    let one = admin(&hs, Method::GET, &format!("{devices}/DEV1"), None).await;
    assert_eq!(one.1["display_name"], "Phone");

    let deleted = admin(&hs, Method::DELETE, &format!("{devices}/DEV1"), None).await;
    assert_eq!(deleted, (200, json!({})));
    let deleted_again = admin(&hs, Method::DELETE, &format!("{devices}/DEV1"), None).await;
    assert_eq!(deleted_again, (200, json!({})));
    assert!(!hs.store().has_device("alice", "DEV1"));

    hs.store().insert_device("alice", "DEV3");
    let bulk = admin(
        &hs,
        Method::POST,
        &format!("{ALICE}/delete_devices"),
        Some(json!({"devices": ["DEV2", "DEV3", "GONE"]})),
    )
    .await;
    assert_eq!(bulk, (200, json!({})));
    assert!(hs.store().devices("alice").is_empty());
}

#[tokio::test]
async fn admin_username_available_and_deactivate() {
    let hs = start_offline().await;
    let available = |u: &str| format!("/_synapse/admin/v1/username_available?username={u}");
    assert_eq!(
        admin(&hs, Method::GET, &available("alice"), None).await,
        (200, json!({"available": true}))
    );
    assert_error(
        &admin(&hs, Method::GET, &available("ALICE"), None).await,
        400,
        "M_INVALID_USERNAME",
    );
    hs.store().insert_device("alice", "DEV1");
    hs.store()
        .update_user("alice", |u| u.displayname = Some("Alice".into()));
    assert_error(
        &admin(&hs, Method::GET, &available("alice"), None).await,
        400,
        "M_USER_IN_USE",
    );

    let deactivate = "/_synapse/admin/v1/deactivate/%40alice%3Ahs.test";
    let answer = admin(&hs, Method::POST, deactivate, Some(json!({"erase": true}))).await;
    assert_eq!(answer, (200, json!({"id_server_unbind_result": "success"})));
    let alice = hs.store().user("alice").unwrap();
    assert!(alice.deactivated && alice.erased);
    assert_eq!(alice.displayname, None);
    assert!(hs.store().devices("alice").is_empty());

    // An empty body means erase: false.
    hs.store().insert_user("bob");
    let answer = admin(
        &hs,
        Method::POST,
        "/_synapse/admin/v1/deactivate/%40bob%3Ahs.test",
        None,
    )
    .await;
    assert_eq!(answer.0, 200);
    let bob = hs.store().user("bob").unwrap();
    assert!(bob.deactivated && !bob.erased);

    assert_error(
        &admin(
            &hs,
            Method::POST,
            "/_synapse/admin/v1/deactivate/%40carol%3Ahs.test",
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
}

/// A simulated outage answers every homeserver API call 503 (journaled), then recovers.
#[tokio::test]
async fn simulated_outage_answers_503_until_lifted() {
    let hs = start_offline().await;
    hs.store().insert_user("alice");
    let upsert = || {
        mas_post(
            &hs,
            "upsert_device",
            json!({"localpart": "alice", "device_id": "DEV1"}),
        )
    };
    hs.set_unavailable(true);
    assert_error(&upsert().await, 503, "M_UNKNOWN");
    assert!(!hs.store().has_device("alice", "DEV1"));
    assert_eq!(hs.journal().last().map(|e| e.status), Some(503));
    hs.set_unavailable(false);
    assert_eq!(upsert().await.0, 201);
    assert!(hs.store().has_device("alice", "DEV1"));
}
