//! The `/_synapse/admin` API of older Synapse (the legacy admin-API path of the homeserver
//! contract, SPEC-NOTES.md), with the shared secret as the admin token.
//!
//! Users are addressed by their Matrix ID (`@alice:example.com`), percent-encoded as one path
//! segment (`%40alice%3Aexample.com`); device IDs likewise.
//!
//! Two things differ from the `/_synapse/mas/*` API:
//! - `PUT /_synapse/admin/v2/users/{mxid}` creates the user when unknown (Synapse admin API),
//!   so `reactivate_user` and `set_displayname` on an unknown user create them rather than
//!   answer [`HomeserverError::UserNotFound`];
//! - the admin API has no "unset": an empty string removes a display name or avatar (Synapse's
//!   profile handler stores `""` as none), and an empty `threepids` list removes every email.

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

/// A connection to Synapse through the admin API.
#[derive(Debug)]
pub struct SynapseLegacyConnection {
    server_name: String,
    http: HomeserverHttp,
}

/// The answer of `GET /_synapse/admin/v2/users/{mxid}` (Synapse admin API), the fields read.
#[derive(Debug, Deserialize)]
struct AdminUser {
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    deactivated: Flag,
}

/// A flag Synapse has answered as a boolean, and as `0`/`1` in older versions.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl Flag {
    fn is_set(&self) -> bool {
        match self {
            Self::Bool(flag) => *flag,
            Self::Int(flag) => *flag != 0,
        }
    }
}

/// The answer of `GET /_synapse/admin/v1/username_available` (Synapse admin API).
#[derive(Debug, Deserialize)]
struct UsernameAvailable {
    available: bool,
}

/// The answer of `GET /_synapse/admin/v2/users/{mxid}/devices` (Synapse admin API).
#[derive(Debug, Deserialize)]
struct DeviceList {
    devices: Vec<Device>,
}

#[derive(Debug, Deserialize)]
struct Device {
    device_id: String,
}

impl SynapseLegacyConnection {
    pub fn new(settings: &MatrixSettings) -> Self {
        Self::with_http(settings, HomeserverHttp::new(settings))
    }

    fn with_http(settings: &MatrixSettings, http: HomeserverHttp) -> Self {
        Self {
            server_name: settings.homeserver.clone(),
            http,
        }
    }

    /// Sends `method /_synapse/admin/{version}/{collection}/{mxid}/{rest…}` for the user
    /// `localpart` (`v2/users/{mxid}/devices`, `v1/deactivate/{mxid}`), every segment
    /// percent-encoded (Synapse admin API).
    async fn send(
        &self,
        method: Method,
        version: &str,
        collection: &str,
        localpart: &str,
        rest: &[&str],
        body: Option<&Value>,
    ) -> Result<Reply, HomeserverError> {
        let mxid = self.mxid(localpart);
        let mut segments = vec!["_synapse", "admin", version, collection, &mxid];
        segments.extend_from_slice(rest);
        let url = self.http.url(&segments)?;
        self.http.send(method, url, body).await
    }

    /// `PUT /_synapse/admin/v2/users/{mxid}` (Synapse admin API): 201 when it created the user.
    async fn put_user(&self, localpart: &str, body: Value) -> Result<Reply, HomeserverError> {
        self.send(Method::PUT, "v2", "users", localpart, &[], Some(&body))
            .await?
            .check(Some(localpart))
    }

    /// `POST /_synapse/admin/v2/users/{mxid}/devices {device_id}` (Synapse admin API): creates
    /// the device, or leaves it as it is.
    async fn create_device(&self, localpart: &str, device_id: &str) -> Result<(), HomeserverError> {
        self.send(
            Method::POST,
            "v2",
            "users",
            localpart,
            &["devices"],
            Some(&json!({ "device_id": device_id })),
        )
        .await?
        .check(Some(localpart))?;
        Ok(())
    }
}

/// The body of `PUT /_synapse/admin/v2/users/{mxid}` for a [`ProvisionUser`]: kept fields left
/// out, unset ones as `""` (display name, avatar) or `[]` (emails), which is how the admin API
/// removes them.
fn provision_body(request: &ProvisionUser) -> Value {
    let mut body = Map::new();
    match &request.displayname {
        FieldChange::Keep => {}
        FieldChange::Set(displayname) => {
            body.insert("displayname".into(), json!(displayname));
        }
        FieldChange::Unset => {
            body.insert("displayname".into(), json!(""));
        }
    }
    match &request.avatar_url {
        FieldChange::Keep => {}
        FieldChange::Set(avatar_url) => {
            body.insert("avatar_url".into(), json!(avatar_url));
        }
        FieldChange::Unset => {
            body.insert("avatar_url".into(), json!(""));
        }
    }
    match &request.emails {
        FieldChange::Keep => {}
        FieldChange::Set(emails) => {
            let threepids: Vec<Value> = emails
                .iter()
                .map(|address| json!({ "medium": "email", "address": address }))
                .collect();
            body.insert("threepids".into(), Value::Array(threepids));
        }
        FieldChange::Unset => {
            body.insert("threepids".into(), json!([]));
        }
    }
    if let Some(locked) = request.locked {
        body.insert("locked".into(), json!(locked));
    }
    Value::Object(body)
}

#[async_trait]
impl HomeserverConnection for SynapseLegacyConnection {
    fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `GET /_synapse/admin/v2/users/{mxid}`; 404 → `None` (Synapse admin API).
    async fn query_user(&self, localpart: &str) -> Result<Option<MatrixUser>, HomeserverError> {
        let reply = self
            .send(Method::GET, "v2", "users", localpart, &[], None)
            .await?;
        let reply = match reply.check(Some(localpart)) {
            Ok(reply) => reply,
            Err(HomeserverError::UserNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let user: AdminUser = reply.json()?;
        Ok(Some(MatrixUser {
            localpart: localpart.to_owned(),
            displayname: user.displayname,
            avatar_url: user.avatar_url,
            deactivated: user.deactivated.is_set(),
        }))
    }

    /// `GET /_synapse/admin/v1/username_available?username=`: `{"available": true}`; 400
    /// `M_USER_IN_USE` or `M_INVALID_USERNAME` → `false` (Synapse admin API).
    async fn is_localpart_available(&self, localpart: &str) -> Result<bool, HomeserverError> {
        let url = self.http.url_with_query(
            &["_synapse", "admin", "v1", "username_available"],
            &[("username", localpart)],
        )?;
        let reply = self.http.send(Method::GET, url, None).await?;
        if reply.status == StatusCode::BAD_REQUEST
            && matches!(
                reply.errcode().as_deref(),
                Some("M_USER_IN_USE" | "M_INVALID_USERNAME")
            )
        {
            return Ok(false);
        }
        // Not about an existing user: a 404 means the API is missing, not the user.
        let answer: UsernameAvailable = reply.check(None)?.json()?;
        Ok(answer.available)
    }

    /// `PUT /_synapse/admin/v2/users/{mxid}` with the changed fields: 201 created, 200 updated
    /// (Synapse admin API).
    async fn provision_user(&self, request: &ProvisionUser) -> Result<bool, HomeserverError> {
        let reply = self
            .put_user(&request.localpart, provision_body(request))
            .await?;
        Ok(reply.status == StatusCode::CREATED)
    }

    /// `POST /_synapse/admin/v1/deactivate/{mxid} {erase}` (Synapse admin API).
    async fn delete_user(&self, localpart: &str, erase: bool) -> Result<(), HomeserverError> {
        self.send(
            Method::POST,
            "v1",
            "deactivate",
            localpart,
            &[],
            Some(&json!({ "erase": erase })),
        )
        .await?
        .check(Some(localpart))?;
        Ok(())
    }

    /// `PUT /_synapse/admin/v2/users/{mxid} {"deactivated": false}` (Synapse admin API).
    async fn reactivate_user(&self, localpart: &str) -> Result<(), HomeserverError> {
        self.put_user(localpart, json!({ "deactivated": false }))
            .await?;
        Ok(())
    }

    /// `PUT /_synapse/admin/v2/users/{mxid} {displayname}`, `""` for `None` (Synapse admin
    /// API: an empty display name removes it).
    async fn set_displayname(
        &self,
        localpart: &str,
        displayname: Option<&str>,
    ) -> Result<(), HomeserverError> {
        self.put_user(
            localpart,
            json!({ "displayname": displayname.unwrap_or_default() }),
        )
        .await?;
        Ok(())
    }

    /// `POST /_synapse/admin/v2/users/{mxid}/devices {device_id}`, then, with a display name,
    /// `PUT /_synapse/admin/v2/users/{mxid}/devices/{device_id} {display_name}` (Synapse admin
    /// API).
    async fn upsert_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        self.create_device(localpart, device_id).await?;
        if let Some(display_name) = display_name {
            self.update_device_display_name(localpart, device_id, display_name)
                .await?;
        }
        Ok(())
    }

    /// `PUT /_synapse/admin/v2/users/{mxid}/devices/{device_id} {display_name}` (Synapse admin
    /// API).
    async fn update_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: &str,
    ) -> Result<(), HomeserverError> {
        self.send(
            Method::PUT,
            "v2",
            "users",
            localpart,
            &["devices", device_id],
            Some(&json!({ "display_name": display_name })),
        )
        .await?
        .check(Some(localpart))?;
        Ok(())
    }

    /// `DELETE /_synapse/admin/v2/users/{mxid}/devices/{device_id}` (Synapse admin API); a 404
    /// (no such user, so no such device) counts as done: the trait asks for success when the
    /// device is already gone.
    async fn delete_device(&self, localpart: &str, device_id: &str) -> Result<(), HomeserverError> {
        let reply = self
            .send(
                Method::DELETE,
                "v2",
                "users",
                localpart,
                &["devices", device_id],
                None,
            )
            .await?;
        if reply.is_not_found() {
            return Ok(());
        }
        reply.check(Some(localpart))?;
        Ok(())
    }

    /// `GET /_synapse/admin/v2/users/{mxid}/devices`, then
    /// `POST /_synapse/admin/v2/users/{mxid}/delete_devices {devices}` for the extra ones (when
    /// there are any) and `POST /_synapse/admin/v2/users/{mxid}/devices {device_id}` for each
    /// missing one (Synapse admin API).
    async fn sync_devices(
        &self,
        localpart: &str,
        devices: &BTreeSet<String>,
    ) -> Result<(), HomeserverError> {
        let list: DeviceList = self
            .send(Method::GET, "v2", "users", localpart, &["devices"], None)
            .await?
            .check(Some(localpart))?
            .json()?;
        let existing: BTreeSet<String> = list.devices.into_iter().map(|d| d.device_id).collect();
        let extra: Vec<&String> = existing.difference(devices).collect();
        if !extra.is_empty() {
            self.send(
                Method::POST,
                "v2",
                "users",
                localpart,
                &["delete_devices"],
                Some(&json!({ "devices": extra })),
            )
            .await?
            .check(Some(localpart))?;
        }
        for device_id in devices.difference(&existing) {
            self.create_device(localpart, device_id).await?;
        }
        Ok(())
    }

    /// `POST /_synapse/admin/v1/users/{mxid}/_allow_cross_signing_replacement_without_uia {}`
    /// (Synapse admin API).
    async fn allow_cross_signing_reset(&self, localpart: &str) -> Result<(), HomeserverError> {
        self.send(
            Method::POST,
            "v1",
            "users",
            localpart,
            &["_allow_cross_signing_replacement_without_uia"],
            Some(&json!({})),
        )
        .await?
        .check(Some(localpart))?;
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
            refused_endpoint, settings, ErrorCheck, BEARER, SECRET,
        },
    };

    /// `@alice:example.com`, as a path segment.
    const ALICE: &str = "/_synapse/admin/v2/users/%40alice%3Aexample.com";
    const GHOST: &str = "/_synapse/admin/v2/users/%40ghost%3Aexample.com";

    fn connect(endpoint: &str) -> SynapseLegacyConnection {
        SynapseLegacyConnection::new(&settings(HomeserverKind::SynapseLegacy, endpoint))
    }

    async fn setup() -> (MockServer, SynapseLegacyConnection) {
        let server = MockServer::start().await;
        let connection = connect(&server.uri());
        (server, connection)
    }

    fn matrix_error(status: u16, errcode: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "test" }))
    }

    /// Expects exactly one `verb path` with the bearer secret, and this JSON body when given.
    async fn expect(
        server: &MockServer,
        verb: &str,
        at: &str,
        body: Option<Value>,
        response: ResponseTemplate,
    ) {
        let mock = Mock::given(method(verb))
            .and(path(at))
            .and(header("authorization", BEARER));
        let mock = match body {
            Some(body) => mock.and(body_json(body)),
            None => mock,
        };
        mock.respond_with(response).expect(1).mount(server).await;
    }

    async fn request_count(server: &MockServer) -> usize {
        server
            .received_requests()
            .await
            .map_or(0, |requests| requests.len())
    }

    #[tokio::test]
    async fn query_user_reads_the_user() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            ALICE,
            None,
            ResponseTemplate::new(200).set_body_json(json!({
                "name": "@alice:example.com",
                "displayname": "Alice",
                "avatar_url": "mxc://example.com/abc",
                "deactivated": false,
                "locked": false,
                "admin": false,
                "threepids": [{ "medium": "email", "address": "alice@example.com" }],
            })),
        )
        .await;
        assert_eq!(
            hs.query_user("alice").await,
            Ok(Some(MatrixUser {
                localpart: "alice".into(),
                displayname: Some("Alice".into()),
                avatar_url: Some("mxc://example.com/abc".into()),
                deactivated: false,
            }))
        );
    }

    #[tokio::test]
    async fn query_user_reads_old_integer_flags() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            ALICE,
            None,
            ResponseTemplate::new(200).set_body_json(json!({
                "name": "@alice:example.com",
                "displayname": null,
                "deactivated": 1,
            })),
        )
        .await;
        let user = hs.query_user("alice").await;
        assert!(
            matches!(&user, Ok(Some(u)) if u.deactivated && u.displayname.is_none() && u.avatar_url.is_none()),
            "{user:?}"
        );
    }

    #[tokio::test]
    async fn query_user_unknown_is_none() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            GHOST,
            None,
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(hs.query_user("ghost").await, Ok(None));
    }

    #[tokio::test]
    async fn query_user_with_a_bad_body_is_an_invalid_response() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            ALICE,
            None,
            ResponseTemplate::new(200).set_body_json(json!({ "name": "@alice:example.com" })),
        )
        .await;
        assert!(matches!(
            hs.query_user("alice").await,
            Err(HomeserverError::InvalidResponse(_))
        ));
    }

    #[tokio::test]
    async fn odd_localparts_stay_one_segment() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            "/_synapse/admin/v2/users/%40a%2F..%2Fb%3Fc%23d%3Aexample.com",
            None,
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(hs.query_user("a/../b?c#d").await, Ok(None));
    }

    #[tokio::test]
    async fn is_localpart_available_maps_the_answers() {
        let cases = [
            (
                ResponseTemplate::new(200).set_body_json(json!({ "available": true })),
                Ok(true),
            ),
            (
                ResponseTemplate::new(200).set_body_json(json!({ "available": false })),
                Ok(false),
            ),
            (matrix_error(400, "M_USER_IN_USE"), Ok(false)),
            (matrix_error(400, "M_INVALID_USERNAME"), Ok(false)),
        ];
        for (response, expected) in cases {
            let (server, hs) = setup().await;
            Mock::given(method("GET"))
                .and(path("/_synapse/admin/v1/username_available"))
                .and(query_param("username", "alice"))
                .and(header("authorization", BEARER))
                .respond_with(response)
                .expect(1)
                .mount(&server)
                .await;
            assert_eq!(hs.is_localpart_available("alice").await, expected);
        }
    }

    #[tokio::test]
    async fn is_localpart_available_errors() {
        let cases: Vec<(ResponseTemplate, ErrorCheck)> = vec![
            (ResponseTemplate::new(200).set_body_string("yes"), |e| {
                matches!(e, HomeserverError::InvalidResponse(_))
            }),
            (matrix_error(400, "M_BAD_JSON"), |e| {
                matches!(e, HomeserverError::Refused { status: 400, .. })
            }),
            (matrix_error(404, "M_NOT_FOUND"), |e| {
                matches!(e, HomeserverError::Refused { status: 404, .. })
            }),
        ];
        for (response, expected) in cases {
            let (server, hs) = setup().await;
            Mock::given(method("GET"))
                .and(path("/_synapse/admin/v1/username_available"))
                .and(query_param("username", "alice"))
                .respond_with(response)
                .expect(1)
                .mount(&server)
                .await;
            let result = hs.is_localpart_available("alice").await;
            assert!(matches!(&result, Err(e) if expected(e)), "{result:?}");
        }
    }

    #[tokio::test]
    async fn provision_user_sets_everything_and_reports_creation() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "PUT",
            ALICE,
            Some(json!({
                "displayname": "Alice",
                "avatar_url": "mxc://example.com/abc",
                "threepids": [
                    { "medium": "email", "address": "alice@example.com" },
                    { "medium": "email", "address": "a@example.org" },
                ],
                "locked": true,
            })),
            ResponseTemplate::new(201).set_body_json(json!({ "name": "@alice:example.com" })),
        )
        .await;
        let request = ProvisionUser {
            localpart: "alice".into(),
            displayname: FieldChange::Set("Alice".into()),
            avatar_url: FieldChange::Set("mxc://example.com/abc".into()),
            emails: FieldChange::Set(vec!["alice@example.com".into(), "a@example.org".into()]),
            locked: Some(true),
        };
        assert_eq!(hs.provision_user(&request).await, Ok(true));
    }

    #[tokio::test]
    async fn provision_user_unsets_and_reports_update() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "PUT",
            ALICE,
            Some(json!({
                "displayname": "",
                "avatar_url": "",
                "threepids": [],
                "locked": false,
            })),
            ResponseTemplate::new(200).set_body_json(json!({ "name": "@alice:example.com" })),
        )
        .await;
        let request = ProvisionUser {
            localpart: "alice".into(),
            displayname: FieldChange::Unset,
            avatar_url: FieldChange::Unset,
            emails: FieldChange::Unset,
            locked: Some(false),
        };
        assert_eq!(hs.provision_user(&request).await, Ok(false));
    }

    #[tokio::test]
    async fn provision_user_leaves_kept_fields_out() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "PUT",
            ALICE,
            Some(json!({})),
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
    async fn delete_user_deactivates() {
        for erase in [true, false] {
            let (server, hs) = setup().await;
            expect(
                &server,
                "POST",
                "/_synapse/admin/v1/deactivate/%40alice%3Aexample.com",
                Some(json!({ "erase": erase })),
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "id_server_unbind_result": "success" })),
            )
            .await;
            assert_eq!(hs.delete_user("alice", erase).await, Ok(()));
        }

        let (server, hs) = setup().await;
        expect(
            &server,
            "POST",
            "/_synapse/admin/v1/deactivate/%40ghost%3Aexample.com",
            Some(json!({ "erase": false })),
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.delete_user("ghost", false).await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
    }

    #[tokio::test]
    async fn reactivate_user_puts_deactivated_false() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "PUT",
            ALICE,
            Some(json!({ "deactivated": false })),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(hs.reactivate_user("alice").await, Ok(()));
    }

    #[tokio::test]
    async fn set_displayname_sets_or_empties() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "PUT",
            ALICE,
            Some(json!({ "displayname": "Alice A." })),
            ResponseTemplate::new(200),
        )
        .await;
        expect(
            &server,
            "PUT",
            ALICE,
            Some(json!({ "displayname": "" })),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(hs.set_displayname("alice", Some("Alice A.")).await, Ok(()));
        assert_eq!(hs.set_displayname("alice", None).await, Ok(()));
    }

    #[tokio::test]
    async fn upsert_device_creates_then_names() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "POST",
            &format!("{ALICE}/devices"),
            Some(json!({ "device_id": "DEV1" })),
            ResponseTemplate::new(201).set_body_json(json!({})),
        )
        .await;
        expect(
            &server,
            "PUT",
            &format!("{ALICE}/devices/DEV1"),
            Some(json!({ "display_name": "Phone" })),
            ResponseTemplate::new(200).set_body_json(json!({})),
        )
        .await;
        assert_eq!(
            hs.upsert_device("alice", "DEV1", Some("Phone")).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn upsert_device_without_a_name_only_creates() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "POST",
            &format!("{ALICE}/devices"),
            Some(json!({ "device_id": "DEV1" })),
            ResponseTemplate::new(201),
        )
        .await;
        assert_eq!(hs.upsert_device("alice", "DEV1", None).await, Ok(()));
        assert_eq!(request_count(&server).await, 1);
    }

    #[tokio::test]
    async fn upsert_device_for_an_unknown_user() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "POST",
            &format!("{GHOST}/devices"),
            Some(json!({ "device_id": "DEV1" })),
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.upsert_device("ghost", "DEV1", Some("Phone")).await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );
        assert_eq!(request_count(&server).await, 1);
    }

    #[tokio::test]
    async fn update_device_display_name_puts_it() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "PUT",
            &format!("{ALICE}/devices/DEV%2F1%20x"),
            Some(json!({ "display_name": "Laptop" })),
            ResponseTemplate::new(200),
        )
        .await;
        assert_eq!(
            hs.update_device_display_name("alice", "DEV/1 x", "Laptop")
                .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn delete_device_is_idempotent() {
        for response in [
            ResponseTemplate::new(200).set_body_json(json!({})),
            matrix_error(404, "M_NOT_FOUND"),
        ] {
            let (server, hs) = setup().await;
            expect(
                &server,
                "DELETE",
                &format!("{ALICE}/devices/DEV1"),
                None,
                response,
            )
            .await;
            assert_eq!(hs.delete_device("alice", "DEV1").await, Ok(()));
        }

        // A missing endpoint is no proof that the device is gone.
        let (server, hs) = setup().await;
        expect(
            &server,
            "DELETE",
            &format!("{ALICE}/devices/DEV1"),
            None,
            matrix_error(404, "M_UNRECOGNIZED"),
        )
        .await;
        assert!(matches!(
            hs.delete_device("alice", "DEV1").await,
            Err(HomeserverError::Refused { status: 404, .. })
        ));
    }

    #[tokio::test]
    async fn unsendable_device_ids_are_refused_without_a_request() {
        let (server, hs) = setup().await;
        for device_id in ["..", ".", ""] {
            assert!(matches!(
                hs.delete_device("alice", device_id).await,
                Err(HomeserverError::Refused { status: 0, .. })
            ));
        }
        assert_eq!(request_count(&server).await, 0);
    }

    #[tokio::test]
    async fn sync_devices_deletes_extra_and_creates_missing() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            &format!("{ALICE}/devices"),
            None,
            ResponseTemplate::new(200).set_body_json(json!({
                "devices": [
                    { "device_id": "KEEP", "display_name": null, "last_seen_ts": 1 },
                    { "device_id": "OLD1" },
                    { "device_id": "OLD2" },
                ],
                "total": 3,
            })),
        )
        .await;
        expect(
            &server,
            "POST",
            &format!("{ALICE}/delete_devices"),
            Some(json!({ "devices": ["OLD1", "OLD2"] })),
            ResponseTemplate::new(200).set_body_json(json!({})),
        )
        .await;
        for device_id in ["NEW1", "NEW2"] {
            expect(
                &server,
                "POST",
                &format!("{ALICE}/devices"),
                Some(json!({ "device_id": device_id })),
                ResponseTemplate::new(201),
            )
            .await;
        }
        let devices = BTreeSet::from(["KEEP".to_owned(), "NEW1".to_owned(), "NEW2".to_owned()]);
        assert_eq!(hs.sync_devices("alice", &devices).await, Ok(()));
        assert_eq!(request_count(&server).await, 4);
    }

    #[tokio::test]
    async fn sync_devices_in_step_only_reads() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            &format!("{ALICE}/devices"),
            None,
            ResponseTemplate::new(200)
                .set_body_json(json!({ "devices": [{ "device_id": "KEEP" }], "total": 1 })),
        )
        .await;
        let devices = BTreeSet::from(["KEEP".to_owned()]);
        assert_eq!(hs.sync_devices("alice", &devices).await, Ok(()));
        assert_eq!(request_count(&server).await, 1);
    }

    #[tokio::test]
    async fn sync_devices_errors() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            &format!("{GHOST}/devices"),
            None,
            matrix_error(404, "M_NOT_FOUND"),
        )
        .await;
        assert_eq!(
            hs.sync_devices("ghost", &BTreeSet::new()).await,
            Err(HomeserverError::UserNotFound("ghost".into()))
        );

        let (server, hs) = setup().await;
        expect(
            &server,
            "GET",
            &format!("{ALICE}/devices"),
            None,
            ResponseTemplate::new(200).set_body_json(json!({ "total": 0 })),
        )
        .await;
        assert!(matches!(
            hs.sync_devices("alice", &BTreeSet::new()).await,
            Err(HomeserverError::InvalidResponse(_))
        ));
    }

    #[tokio::test]
    async fn allow_cross_signing_reset_posts_to_the_admin_api() {
        let (server, hs) = setup().await;
        expect(
            &server,
            "POST",
            "/_synapse/admin/v1/users/%40alice%3Aexample.com/_allow_cross_signing_replacement_without_uia",
            Some(json!({})),
            ResponseTemplate::new(200)
                .set_body_json(json!({ "updatable_without_uia_before_ms": 1 })),
        )
        .await;
        assert_eq!(hs.allow_cross_signing_reset("alice").await, Ok(()));
    }

    #[tokio::test]
    async fn error_statuses_map_to_errors() {
        let cases: Vec<(ResponseTemplate, ErrorCheck)> = vec![
            (matrix_error(401, "M_MISSING_TOKEN"), |e| {
                *e == HomeserverError::Unauthorized { status: 401 }
            }),
            (matrix_error(403, "M_FORBIDDEN"), |e| {
                *e == HomeserverError::Unauthorized { status: 403 }
            }),
            (
                ResponseTemplate::new(500).set_body_string("y".repeat(500)),
                |e| matches!(e, HomeserverError::Server { status: 500, body } if body.chars().count() <= 201),
            ),
            (matrix_error(400, "M_INVALID_PARAM"), |e| {
                matches!(e, HomeserverError::Refused { status: 400, .. })
            }),
            (matrix_error(404, "M_UNRECOGNIZED"), |e| {
                matches!(e, HomeserverError::Refused { status: 404, .. })
            }),
        ];
        for (response, expected) in cases {
            let (server, hs) = setup().await;
            expect(
                &server,
                "PUT",
                ALICE,
                Some(json!({ "deactivated": false })),
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
        assert!(matches!(
            hs.reactivate_user("alice").await,
            Err(HomeserverError::Unreachable(_))
        ));
        assert!(matches!(
            hs.delete_device("alice", "DEV1").await,
            Err(HomeserverError::Unreachable(_))
        ));
    }

    #[tokio::test]
    async fn the_endpoint_path_is_kept() {
        for prefix in ["/synapse/", "/synapse"] {
            let server = MockServer::start().await;
            expect(
                &server,
                "PUT",
                &format!("/synapse{ALICE}"),
                Some(json!({ "deactivated": false })),
                ResponseTemplate::new(200),
            )
            .await;
            let hs = connect(&format!("{}{prefix}", server.uri()));
            assert_eq!(hs.reactivate_user("alice").await, Ok(()), "{prefix}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", connect("http://hs.example/"));
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
