//! The `/_synapse/mas/*` API of Synapse ≥ 1.136 in `matrix_authentication_service` mode (the
//! homeserver contract, SPEC-NOTES.md): every call is a JSON request under
//! `{endpoint}/_synapse/mas/` with `Authorization: Bearer <shared secret>`.
//!
//! The localpart travels in the query (`GET`) or the body (`POST`), never in the path.

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    http::{HomeserverHttp, Reply},
    FieldChange, HomeserverConnection, HomeserverError, MatrixUser, ProvisionUser,
};
use crate::config::MatrixSettings;

/// A connection to Synapse through the `/_synapse/mas/*` API.
#[derive(Debug)]
pub struct SynapseConnection {
    server_name: String,
    http: HomeserverHttp,
}

/// The answer of `query_user` (homeserver contract, SPEC-NOTES.md).
#[derive(Debug, Deserialize)]
struct QueriedUser {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    is_deactivated: bool,
}

impl SynapseConnection {
    pub fn new(settings: &MatrixSettings) -> Self {
        Self::with_http(settings, HomeserverHttp::new(settings))
    }

    fn with_http(settings: &MatrixSettings, http: HomeserverHttp) -> Self {
        Self {
            server_name: settings.homeserver.clone(),
            http,
        }
    }

    /// `POST /_synapse/mas/{call}` with a JSON body, about the user `localpart` (so a 404 means
    /// the homeserver has no such user).
    async fn post(
        &self,
        call: &str,
        localpart: &str,
        body: Value,
    ) -> Result<Reply, HomeserverError> {
        let url = self.http.url(&["_synapse", "mas", call])?;
        self.http
            .send(Method::POST, url, Some(&body))
            .await?
            .check(Some(localpart))
    }

    /// `GET /_synapse/mas/{call}?localpart=…`.
    async fn get(&self, call: &str, localpart: &str) -> Result<Reply, HomeserverError> {
        let url = self
            .http
            .url_with_query(&["_synapse", "mas", call], &[("localpart", localpart)])?;
        self.http.send(Method::GET, url, None).await
    }
}

/// The body of `provision_user`: each field change as `set_…` or `unset_…`, left out when kept
/// (homeserver contract, SPEC-NOTES.md).
fn provision_body(request: &ProvisionUser) -> Value {
    let mut body = Map::new();
    body.insert("localpart".into(), json!(request.localpart));
    field_change(&mut body, "displayname", &request.displayname);
    field_change(&mut body, "avatar_url", &request.avatar_url);
    field_change(&mut body, "emails", &request.emails);
    if let Some(locked) = request.locked {
        body.insert("locked".into(), json!(locked));
    }
    Value::Object(body)
}

/// `set_{field}: value` for [`FieldChange::Set`], `unset_{field}: true` for
/// [`FieldChange::Unset`], nothing for [`FieldChange::Keep`].
fn field_change<T: serde::Serialize>(
    body: &mut Map<String, Value>,
    field: &str,
    change: &FieldChange<T>,
) {
    match change {
        FieldChange::Keep => {}
        FieldChange::Set(value) => {
            body.insert(format!("set_{field}"), json!(value));
        }
        FieldChange::Unset => {
            body.insert(format!("unset_{field}"), json!(true));
        }
    }
}

#[async_trait]
impl HomeserverConnection for SynapseConnection {
    fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `GET query_user?localpart=`: 200 with the user, 404 when unknown → `None` (homeserver
    /// contract, SPEC-NOTES.md).
    async fn query_user(&self, localpart: &str) -> Result<Option<MatrixUser>, HomeserverError> {
        let reply = match self
            .get("query_user", localpart)
            .await?
            .check(Some(localpart))
        {
            Ok(reply) => reply,
            Err(HomeserverError::UserNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let user: QueriedUser = reply.json()?;
        Ok(Some(MatrixUser {
            localpart: localpart.to_owned(),
            displayname: user.display_name,
            avatar_url: user.avatar_url,
            deactivated: user.is_deactivated,
        }))
    }

    /// `GET is_localpart_available?localpart=`: 200 when available; 400 `M_USER_IN_USE` or
    /// `M_INVALID_USERNAME` → `false` (homeserver contract, SPEC-NOTES.md).
    async fn is_localpart_available(&self, localpart: &str) -> Result<bool, HomeserverError> {
        let reply = self.get("is_localpart_available", localpart).await?;
        if reply.status == StatusCode::BAD_REQUEST
            && matches!(
                reply.errcode().as_deref(),
                Some("M_USER_IN_USE" | "M_INVALID_USERNAME")
            )
        {
            return Ok(false);
        }
        // Not about an existing user: a 404 means the API is missing, not the user.
        reply.check(None)?;
        Ok(true)
    }

    /// `POST provision_user`: 201 when created, 200 when updated (homeserver contract,
    /// SPEC-NOTES.md).
    async fn provision_user(&self, request: &ProvisionUser) -> Result<bool, HomeserverError> {
        let reply = self
            .post(
                "provision_user",
                &request.localpart,
                provision_body(request),
            )
            .await?;
        Ok(reply.status == StatusCode::CREATED)
    }

    /// `POST delete_user {localpart, erase}` (homeserver contract, SPEC-NOTES.md).
    async fn delete_user(&self, localpart: &str, erase: bool) -> Result<(), HomeserverError> {
        self.post(
            "delete_user",
            localpart,
            json!({ "localpart": localpart, "erase": erase }),
        )
        .await?;
        Ok(())
    }

    /// `POST reactivate_user {localpart}` (homeserver contract, SPEC-NOTES.md).
    async fn reactivate_user(&self, localpart: &str) -> Result<(), HomeserverError> {
        self.post(
            "reactivate_user",
            localpart,
            json!({ "localpart": localpart }),
        )
        .await?;
        Ok(())
    }

    /// `POST set_displayname {localpart, displayname}`, or `POST unset_displayname {localpart}`
    /// for `None` (homeserver contract, SPEC-NOTES.md).
    async fn set_displayname(
        &self,
        localpart: &str,
        displayname: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let (call, body) = match displayname {
            Some(displayname) => (
                "set_displayname",
                json!({ "localpart": localpart, "displayname": displayname }),
            ),
            None => ("unset_displayname", json!({ "localpart": localpart })),
        };
        self.post(call, localpart, body).await?;
        Ok(())
    }

    /// `POST upsert_device {localpart, device_id, display_name?}` (homeserver contract,
    /// SPEC-NOTES.md).
    async fn upsert_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let mut body = Map::new();
        body.insert("localpart".into(), json!(localpart));
        body.insert("device_id".into(), json!(device_id));
        if let Some(display_name) = display_name {
            body.insert("display_name".into(), json!(display_name));
        }
        self.post("upsert_device", localpart, Value::Object(body))
            .await?;
        Ok(())
    }

    /// `POST update_device_display_name {localpart, device_id, display_name}` (homeserver
    /// contract, SPEC-NOTES.md).
    async fn update_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: &str,
    ) -> Result<(), HomeserverError> {
        self.post(
            "update_device_display_name",
            localpart,
            json!({ "localpart": localpart, "device_id": device_id, "display_name": display_name }),
        )
        .await?;
        Ok(())
    }

    /// `POST delete_device {localpart, device_id}`: 200 even when the device is already gone;
    /// 404 when the user is unknown (homeserver contract, SPEC-NOTES.md).
    async fn delete_device(&self, localpart: &str, device_id: &str) -> Result<(), HomeserverError> {
        self.post(
            "delete_device",
            localpart,
            json!({ "localpart": localpart, "device_id": device_id }),
        )
        .await?;
        Ok(())
    }

    /// `POST sync_devices {localpart, devices: [ids]}` (homeserver contract, SPEC-NOTES.md).
    async fn sync_devices(
        &self,
        localpart: &str,
        devices: &BTreeSet<String>,
    ) -> Result<(), HomeserverError> {
        self.post(
            "sync_devices",
            localpart,
            json!({ "localpart": localpart, "devices": devices }),
        )
        .await?;
        Ok(())
    }

    /// `POST allow_cross_signing_reset {localpart}` (homeserver contract, SPEC-NOTES.md).
    async fn allow_cross_signing_reset(&self, localpart: &str) -> Result<(), HomeserverError> {
        self.post(
            "allow_cross_signing_reset",
            localpart,
            json!({ "localpart": localpart }),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wiremock::{
        matchers::{body_json, header, method, path, query_param},
        Mock, MockServer, ResponseTemplate,
    };

    use super::*;
    use crate::{
        config::HomeserverKind,
        core::matrix::http::test_support::{
            refused_endpoint, settings, ErrorCheck, BEARER, SHORT_TIMEOUT,
        },
    };

    fn connect(endpoint: &str) -> SynapseConnection {
        SynapseConnection::new(&settings(HomeserverKind::Synapse, endpoint))
    }

    async fn setup() -> (MockServer, SynapseConnection) {
        let server = MockServer::start().await;
        let connection = connect(&server.uri());
        (server, connection)
    }

    fn matrix_error(status: u16, errcode: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "test" }))
    }

    /// Expects exactly one `POST /_synapse/mas/{call}` with the bearer secret and this body.
    async fn expect_post(server: &MockServer, call: &str, body: Value, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(format!("/_synapse/mas/{call}")))
            .and(header("authorization", BEARER))
            .and(body_json(body))
            .respond_with(response)
            .expect(1)
            .mount(server)
            .await;
    }

    /// Expects exactly one `GET /_synapse/mas/{call}?localpart=…` with the bearer secret.
    async fn expect_get(
        server: &MockServer,
        call: &str,
        localpart: &str,
        response: ResponseTemplate,
    ) {
        Mock::given(method("GET"))
            .and(path(format!("/_synapse/mas/{call}")))
            .and(query_param("localpart", localpart))
            .and(header("authorization", BEARER))
            .respond_with(response)
            .expect(1)
            .mount(server)
            .await;
    }

    #[tokio::test]
    async fn query_user_reads_the_user() {
        let (server, hs) = setup().await;
        expect_get(
            &server,
            "query_user",
            "alice",
            ResponseTemplate::new(200).set_body_json(json!({
                "user_id": "@alice:example.com",
                "display_name": "Alice",
                "avatar_url": null,
                "is_suspended": false,
                "is_deactivated": true,
            })),
        )
        .await;
        assert_eq!(
            hs.query_user("alice").await,
            Ok(Some(MatrixUser {
                localpart: "alice".into(),
                displayname: Some("Alice".into()),
                avatar_url: None,
                deactivated: true,
            }))
        );
    }

    #[tokio::test]
    async fn query_user_unknown_is_none() {
        let (server, hs) = setup().await;
        expect_get(
            &server,
            "query_user",
            "bob",
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(hs.query_user("bob").await, Ok(None));
    }

    #[tokio::test]
    async fn query_user_encodes_the_localpart_in_the_query() {
        let (server, hs) = setup().await;
        expect_get(
            &server,
            "query_user",
            "a&b=c d",
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(hs.query_user("a&b=c d").await, Ok(None));
    }

    #[tokio::test]
    async fn query_user_with_a_bad_body_is_an_invalid_response() {
        let (server, hs) = setup().await;
        expect_get(
            &server,
            "query_user",
            "alice",
            ResponseTemplate::new(200).set_body_string("<html>hello</html>"),
        )
        .await;
        assert!(matches!(
            hs.query_user("alice").await,
            Err(HomeserverError::InvalidResponse(_))
        ));
    }

    #[tokio::test]
    async fn query_user_on_a_missing_api_is_refused() {
        let (server, hs) = setup().await;
        expect_get(
            &server,
            "query_user",
            "alice",
            matrix_error(404, "M_UNRECOGNIZED"),
        )
        .await;
        assert!(matches!(
            hs.query_user("alice").await,
            Err(HomeserverError::Refused { status: 404, .. })
        ));
    }

    #[tokio::test]
    async fn is_localpart_available_maps_the_answers() {
        let cases = [
            (
                ResponseTemplate::new(200).set_body_json(json!({})),
                Ok(true),
            ),
            (matrix_error(400, "M_USER_IN_USE"), Ok(false)),
            (matrix_error(400, "M_INVALID_USERNAME"), Ok(false)),
        ];
        for (response, expected) in cases {
            let (server, hs) = setup().await;
            expect_get(&server, "is_localpart_available", "alice", response).await;
            assert_eq!(hs.is_localpart_available("alice").await, expected);
        }
        for (response, status) in [
            (matrix_error(400, "M_BAD_JSON"), 400),
            (matrix_error(404, "M_NOT_FOUND"), 404),
        ] {
            let (server, hs) = setup().await;
            expect_get(&server, "is_localpart_available", "alice", response).await;
            assert!(
                matches!(
                    hs.is_localpart_available("alice").await,
                    Err(HomeserverError::Refused { status: s, .. }) if s == status
                ),
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn provision_user_sets_everything_and_reports_creation() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "provision_user",
            json!({
                "localpart": "alice",
                "set_displayname": "Alice",
                "set_avatar_url": "mxc://example.com/abc",
                "set_emails": ["alice@example.com", "a@example.org"],
                "locked": false,
            }),
            ResponseTemplate::new(201).set_body_json(json!({})),
        )
        .await;
        let request = ProvisionUser {
            localpart: "alice".into(),
            displayname: FieldChange::Set("Alice".into()),
            avatar_url: FieldChange::Set("mxc://example.com/abc".into()),
            emails: FieldChange::Set(vec!["alice@example.com".into(), "a@example.org".into()]),
            locked: Some(false),
        };
        assert_eq!(hs.provision_user(&request).await, Ok(true));
    }

    #[tokio::test]
    async fn provision_user_unsets_and_reports_update() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "provision_user",
            json!({
                "localpart": "alice",
                "unset_displayname": true,
                "unset_avatar_url": true,
                "unset_emails": true,
                "locked": true,
            }),
            ResponseTemplate::new(200).set_body_json(json!({})),
        )
        .await;
        let request = ProvisionUser {
            localpart: "alice".into(),
            displayname: FieldChange::Unset,
            avatar_url: FieldChange::Unset,
            emails: FieldChange::Unset,
            locked: Some(true),
        };
        assert_eq!(hs.provision_user(&request).await, Ok(false));
    }

    #[tokio::test]
    async fn provision_user_leaves_kept_fields_out() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "provision_user",
            json!({ "localpart": "alice" }),
            ResponseTemplate::new(200),
        )
        .await;
        let request = ProvisionUser {
            localpart: "alice".into(),
            ..ProvisionUser::default()
        };
        assert_eq!(hs.provision_user(&request).await, Ok(false));
    }

    #[tokio::test]
    async fn delete_user_sends_erase() {
        for erase in [true, false] {
            let (server, hs) = setup().await;
            expect_post(
                &server,
                "delete_user",
                json!({ "localpart": "alice", "erase": erase }),
                ResponseTemplate::new(200).set_body_json(json!({})),
            )
            .await;
            assert_eq!(hs.delete_user("alice", erase).await, Ok(()));
        }
    }

    #[tokio::test]
    async fn delete_user_unknown_is_user_not_found() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "delete_user",
            json!({ "localpart": "ghost", "erase": false }),
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.delete_user("ghost", false).await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
    }

    #[tokio::test]
    async fn reactivate_user_sends_the_localpart() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "reactivate_user",
            json!({ "localpart": "alice" }),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(hs.reactivate_user("alice").await, Ok(()));

        let (server, hs) = setup().await;
        expect_post(
            &server,
            "reactivate_user",
            json!({ "localpart": "ghost" }),
            // Any 404 on a call about a user, even without a Matrix error body.
            ResponseTemplate::new(404).set_body_string("not found"),
        )
        .await;
        assert_eq!(
            hs.reactivate_user("ghost").await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
    }

    #[tokio::test]
    async fn set_displayname_sets_or_unsets() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "set_displayname",
            json!({ "localpart": "alice", "displayname": "Alice A." }),
            ResponseTemplate::new(200),
        )
        .await;
        expect_post(
            &server,
            "unset_displayname",
            json!({ "localpart": "alice" }),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(hs.set_displayname("alice", Some("Alice A.")).await, Ok(()));
        assert_eq!(hs.set_displayname("alice", None).await, Ok(()));

        let (server, hs) = setup().await;
        expect_post(
            &server,
            "unset_displayname",
            json!({ "localpart": "ghost" }),
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.set_displayname("ghost", None).await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
    }

    #[tokio::test]
    async fn upsert_device_with_and_without_display_name() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "upsert_device",
            json!({ "localpart": "alice", "device_id": "DEV1", "display_name": "Phone" }),
            ResponseTemplate::new(201),
        )
        .await;
        expect_post(
            &server,
            "upsert_device",
            json!({ "localpart": "alice", "device_id": "DEV2" }),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(
            hs.upsert_device("alice", "DEV1", Some("Phone")).await,
            Ok(())
        );
        assert_eq!(hs.upsert_device("alice", "DEV2", None).await, Ok(()));
    }

    #[tokio::test]
    async fn upsert_device_for_an_unknown_user() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "upsert_device",
            json!({ "localpart": "ghost", "device_id": "DEV1" }),
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.upsert_device("ghost", "DEV1", None).await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
    }

    #[tokio::test]
    async fn update_device_display_name_sends_it() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "update_device_display_name",
            json!({ "localpart": "alice", "device_id": "DEV1", "display_name": "Laptop" }),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(
            hs.update_device_display_name("alice", "DEV1", "Laptop")
                .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn delete_device_sends_it() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "delete_device",
            json!({ "localpart": "alice", "device_id": "DEV1" }),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(hs.delete_device("alice", "DEV1").await, Ok(()));

        let (server, hs) = setup().await;
        expect_post(
            &server,
            "delete_device",
            json!({ "localpart": "ghost", "device_id": "DEV1" }),
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.delete_device("ghost", "DEV1").await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
    }

    #[tokio::test]
    async fn sync_devices_sends_the_whole_set() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "sync_devices",
            json!({ "localpart": "alice", "devices": ["AAA", "BBB"] }),
            ResponseTemplate::new(200),
        )
        .await;
        let devices = BTreeSet::from(["BBB".to_owned(), "AAA".to_owned()]);
        assert_eq!(hs.sync_devices("alice", &devices).await, Ok(()));

        let (server, hs) = setup().await;
        expect_post(
            &server,
            "sync_devices",
            json!({ "localpart": "alice", "devices": [] }),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(hs.sync_devices("alice", &BTreeSet::new()).await, Ok(()));
    }

    #[tokio::test]
    async fn allow_cross_signing_reset_sends_the_localpart() {
        let (server, hs) = setup().await;
        expect_post(
            &server,
            "allow_cross_signing_reset",
            json!({ "localpart": "alice" }),
            ResponseTemplate::new(200).set_body_json(json!({})),
        )
        .await;
        assert_eq!(hs.allow_cross_signing_reset("alice").await, Ok(()));
    }

    #[tokio::test]
    async fn error_statuses_map_to_errors() {
        let long_body = "x".repeat(1000);
        let cases: Vec<(ResponseTemplate, ErrorCheck)> = vec![
            (matrix_error(401, "M_UNKNOWN_TOKEN"), |e| {
                *e == HomeserverError::Unauthorized { status: 401 }
            }),
            (matrix_error(403, "M_FORBIDDEN"), |e| {
                *e == HomeserverError::Unauthorized { status: 403 }
            }),
            (ResponseTemplate::new(500).set_body_string(long_body), |e| {
                matches!(e, HomeserverError::Server { status: 500, body }
                    if body.chars().count() <= 201 && body.starts_with("xxx"))
            }),
            (ResponseTemplate::new(503), |e| {
                matches!(e, HomeserverError::Server { status: 503, .. })
            }),
            (
                matrix_error(400, "M_BAD_JSON"),
                |e| matches!(e, HomeserverError::Refused { status: 400, body } if body.contains("M_BAD_JSON")),
            ),
            (matrix_error(404, "M_UNRECOGNIZED"), |e| {
                matches!(e, HomeserverError::Refused { status: 404, .. })
            }),
            (
                ResponseTemplate::new(302).insert_header("location", "https://elsewhere.example/"),
                |e| matches!(e, HomeserverError::Refused { status: 302, .. }),
            ),
        ];
        for (response, expected) in cases {
            let (server, hs) = setup().await;
            expect_post(
                &server,
                "reactivate_user",
                json!({ "localpart": "alice" }),
                response,
            )
            .await;
            let result = hs.reactivate_user("alice").await;
            assert!(matches!(&result, Err(e) if expected(e)), "{result:?}");
        }
    }

    #[tokio::test]
    async fn no_answer_is_unreachable() {
        let hs = connect(&refused_endpoint());
        let result = hs.delete_user("alice", false).await;
        assert!(
            matches!(&result, Err(HomeserverError::Unreachable(_))),
            "{result:?}"
        );
        assert!(matches!(
            hs.query_user("alice").await,
            Err(HomeserverError::Unreachable(_))
        ));
    }

    #[tokio::test]
    async fn a_timeout_is_unreachable() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(SHORT_TIMEOUT * 10))
            .mount(&server)
            .await;
        let settings = settings(HomeserverKind::Synapse, &server.uri());
        let hs = SynapseConnection::with_http(
            &settings,
            HomeserverHttp::with_timeouts(&settings, SHORT_TIMEOUT, SHORT_TIMEOUT),
        );
        let result = hs.reactivate_user("alice").await;
        assert!(
            matches!(&result, Err(HomeserverError::Unreachable(m)) if m.contains("timed out")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn the_endpoint_path_is_kept() {
        for prefix in ["/synapse/", "/synapse"] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/synapse/_synapse/mas/reactivate_user"))
                .and(header("authorization", BEARER))
                .and(body_json(json!({ "localpart": "alice" })))
                .respond_with(ResponseTemplate::new(200))
                .expect(1)
                .mount(&server)
                .await;
            let hs = connect(&format!("{}{prefix}", server.uri()));
            assert_eq!(hs.reactivate_user("alice").await, Ok(()), "{prefix}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", connect("http://hs.example/"));
        assert!(
            !shown.contains(crate::core::matrix::http::test_support::SECRET),
            "{shown}"
        );
        assert_eq!(
            connect("http://hs.example/").mxid("alice"),
            "@alice:example.com"
        );
    }
}
