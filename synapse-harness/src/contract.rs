//! The homeserver contract (SPEC-NOTES.md, "The homeserver contract"): what a homeserver in
//! `matrix_authentication_service` mode shows the provider and clients. The same checks run
//! against real Synapse and the fake homeserver (`synapse-harness/tests/contract.rs`); every
//! place where the two are allowed to differ is an explicit, commented expectation on
//! [`Kind`].
//!
//! The facts come from Synapse 1.163.2: `synapse/api/auth/mas.py` (introspection, its cache,
//! the checks on the answer), `synapse/rest/synapse/mas/{_base,users,devices}.py` (the
//! provisioning API), `synapse/config/mas.py` and the `register_servlets` functions of
//! `synapse/rest/client/{login,logout,register,account}.py` (what is switched off).
//!
//! Each check is a plain async function over a [`Ctx`]: the homeserver's base URL and shared
//! secret, and a wiremock server playing the provider (made by [`provider`]; the homeserver
//! must be configured with its URI as endpoint). Checks use their own users and tokens, so
//! they run one after another against one homeserver.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::Method;
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Which homeserver is under test: only used where the two differ on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Synapse,
    Fake,
}

/// What a check talks to.
pub struct Ctx<'a> {
    pub kind: Kind,
    /// The homeserver's base URL (ends with `/`).
    pub base: Url,
    pub secret: String,
    pub server_name: String,
    /// The provider the homeserver was configured with (see [`provider`]).
    pub provider: &'a MockServer,
    http: reqwest::Client,
}

/// A check's outcome: `Err` holds what differed.
pub type Outcome = Result<(), String>;

/// One named check.
pub struct Check {
    pub name: &'static str,
    pub run: for<'a> fn(&'a Ctx<'a>) -> BoxFuture<'a, Outcome>,
}

/// The provider's metadata, as the wiremock provider serves it.
pub fn provider_metadata(provider: &MockServer) -> Value {
    let base = provider.uri();
    json!({
        "issuer": format!("{base}/"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "registration_endpoint": format!("{base}/oauth2/registration"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "account_management_uri": format!("{base}/account/"),
        "account_management_actions_supported": ["org.matrix.profile", "org.matrix.devices_list"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["create"],
    })
}

/// A wiremock provider serving `/.well-known/openid-configuration` ([`provider_metadata`]);
/// introspection answers are mounted per token by the checks.
pub async fn provider() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(provider_metadata(&server)))
        .mount(&server)
        .await;
    server
}

impl<'a> Ctx<'a> {
    pub fn new(
        kind: Kind,
        base: Url,
        secret: &str,
        server_name: &str,
        provider: &'a MockServer,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            kind,
            base,
            secret: secret.to_owned(),
            server_name: server_name.to_owned(),
            provider,
            http,
        }
    }

    /// One call; the status and the JSON body (`Null` when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| e.to_string())?;
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// `POST /_synapse/mas/<endpoint>` with the shared secret.
    pub async fn mas(&self, endpoint: &str, body: Value) -> Result<(u16, Value), String> {
        let path = format!("_synapse/mas/{endpoint}");
        self.call(Method::POST, &path, Some(&self.secret), Some(body))
            .await
    }

    /// `GET /_synapse/mas/<endpoint>?<query>` with the shared secret.
    pub async fn mas_get(&self, endpoint_and_query: &str) -> Result<(u16, Value), String> {
        let path = format!("_synapse/mas/{endpoint_and_query}");
        self.call(Method::GET, &path, Some(&self.secret), None)
            .await
    }

    /// Creates a user (201) through `provision_user`.
    pub async fn provision(&self, localpart: &str) -> Outcome {
        let answer = self
            .mas("provision_user", json!({ "localpart": localpart }))
            .await?;
        expect_eq("provision_user status", answer.0, 201)
    }

    /// Creates a device (201) through `upsert_device`.
    pub async fn device(&self, localpart: &str, device_id: &str) -> Outcome {
        let answer = self
            .mas(
                "upsert_device",
                json!({ "localpart": localpart, "device_id": device_id }),
            )
            .await?;
        expect_eq("upsert_device status", answer.0, 201)
    }

    /// Makes the provider answer `answer` when `token` is introspected.
    pub async fn introspection(&self, token: &str, answer: Value) {
        Mock::given(method("POST"))
            .and(path("/oauth2/introspect"))
            .and(body_string_contains(format!("token={token}&")))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(self.provider)
            .await;
    }

    /// The introspection requests the provider received for `token`.
    pub async fn introspections(&self, token: &str) -> Vec<wiremock::Request> {
        let needle = format!("token={token}&");
        self.provider
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r.url.path() == "/oauth2/introspect"
                    && String::from_utf8_lossy(&r.body).contains(&needle)
            })
            .collect()
    }

    pub async fn whoami(&self, token: &str) -> Result<(u16, Value), String> {
        self.call(
            Method::GET,
            "_matrix/client/v3/account/whoami",
            Some(token),
            None,
        )
        .await
    }

    fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }
}

/// An active introspection answer with the fields the provider sends (SPEC-NOTES.md).
pub fn active(localpart: &str, scope: &str, device_id: Option<&str>) -> Value {
    let mut answer = json!({
        "active": true,
        "scope": scope,
        "username": localpart,
        "sub": format!("01SUB{localpart}"),
        "client_id": "01CLIENT",
        "token_type": "access_token",
        "expires_in": 300,
    });
    if let Some(device_id) = device_id {
        answer["device_id"] = device_id.into();
    }
    answer
}

const API: &str = "urn:matrix:client:api:*";

fn expect_eq<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// A Matrix error answer: status, `errcode`, and a string `error`.
fn expect_error(what: &str, answer: &(u16, Value), status: u16, errcode: &str) -> Outcome {
    if answer.0 == status && answer.1["errcode"] == errcode && answer.1["error"].is_string() {
        Ok(())
    } else {
        Err(format!(
            "{what}: got {} {}, want {status} {errcode}",
            answer.0, answer.1
        ))
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, in the order they run.
        pub fn checks() -> Vec<Check> {
            vec![$(Check { name: stringify!($name), run: |ctx| Box::pin($name(ctx)) }),*]
        }
    };
}

checks![
    versions_list_v1_15,
    auth_metadata_is_the_providers_unchanged,
    auth_issuer_is_gone,
    introspection_request_shape,
    device_from_the_explicit_field_or_the_scope,
    introspection_is_cached,
    device_deletion_cuts_the_cache_short,
    a_re_created_device_keeps_the_cached_answer,
    inactive_answers_are_cached_too,
    expiry_is_counted_from_the_cached_answer,
    token_errors,
    token_for_an_unknown_user,
    provider_down_is_503,
    shared_secret_is_required,
    provision_and_query_user,
    localpart_availability,
    devices_api,
    display_names,
    delete_and_reactivate_user,
    cross_signing_reset,
    unknown_users_are_404,
    endpoints_left_to_the_provider_are_gone,
];

/// Runs every check; the failures, by name.
pub async fn run_all(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let mut failures = Vec::new();
    for check in checks() {
        if let Err(why) = (check.run)(ctx).await {
            failures.push((check.name, why));
        }
    }
    failures
}

/// Matrix spec v1.15 (MSC2965): OAuth-aware clients only look for `auth_metadata` when
/// `/_matrix/client/versions` lists v1.15 or later.
async fn versions_list_v1_15(ctx: &Ctx<'_>) -> Outcome {
    let (status, body) = ctx
        .call(Method::GET, "_matrix/client/versions", None, None)
        .await?;
    expect_eq("status", status, 200)?;
    let listed = body["versions"].as_array().cloned().unwrap_or_default();
    if listed.iter().any(|v| v == "v1.15") {
        Ok(())
    } else {
        Err(format!("v1.15 not listed: {body}"))
    }
}

/// MSC2965: both `auth_metadata` paths serve the provider's metadata unchanged (Synapse's
/// `auth_metadata.py` serves the document it fetched from
/// `{endpoint}/.well-known/openid-configuration`, extra fields included).
async fn auth_metadata_is_the_providers_unchanged(ctx: &Ctx<'_>) -> Outcome {
    for p in [
        "_matrix/client/v1/auth_metadata",
        "_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    ] {
        let (status, body) = ctx.call(Method::GET, p, None, None).await?;
        expect_eq(&format!("{p} status"), status, 200)?;
        expect_eq(p, body, provider_metadata(ctx.provider))?;
    }
    Ok(())
}

/// Synapse 1.163 no longer serves the unstable `auth_issuer`: 404 `M_UNRECOGNIZED`.
async fn auth_issuer_is_gone(ctx: &Ctx<'_>) -> Outcome {
    let answer = ctx
        .call(
            Method::GET,
            "_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
            None,
            None,
        )
        .await?;
    expect_error("auth_issuer", &answer, 404, "M_UNRECOGNIZED")
}

/// `mas.py` `_introspect_token`: `POST {endpoint}/oauth2/introspect`, form
/// `token=…&token_type_hint=access_token`, `Authorization: Bearer <secret>`,
/// `X-MAS-Supports-Device-Id: 1`, `Accept: application/json`.
async fn introspection_request_shape(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("shape").await?;
    ctx.device("shape", "SHAPEDEV").await?;
    let token = "mat_contract_shape";
    ctx.introspection(token, active("shape", API, Some("SHAPEDEV")))
        .await;
    let (status, body) = ctx.whoami(token).await?;
    expect_eq("whoami status", status, 200)?;
    expect_eq("user_id", &body["user_id"], &json!(ctx.user_id("shape")))?;
    expect_eq("device_id", &body["device_id"], &json!("SHAPEDEV"))?;
    let seen = ctx.introspections(token).await;
    let request = seen.first().ok_or("no introspection request")?;
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    expect_eq(
        "authorization",
        header("authorization"),
        format!("Bearer {}", ctx.secret),
    )?;
    expect_eq(
        "x-mas-supports-device-id",
        header("x-mas-supports-device-id"),
        "1".into(),
    )?;
    expect_eq("accept", header("accept"), "application/json".into())?;
    expect_eq(
        "content-type",
        header("content-type"),
        "application/x-www-form-urlencoded".into(),
    )?;
    expect_eq(
        "body",
        String::from_utf8_lossy(&request.body).into_owned(),
        format!("token={token}&token_type_hint=access_token"),
    )
}

/// `mas.py`: the explicit `device_id` wins; without it, the single device scope (stable or
/// unstable); no device at all is accepted (`device_id` absent from `whoami`).
async fn device_from_the_explicit_field_or_the_scope(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("scoped").await?;
    ctx.device("scoped", "SCOPEDEV").await?;
    let cases = [
        (
            "mat_contract_scope_stable",
            format!("{API} urn:matrix:client:device:SCOPEDEV"),
            Some("SCOPEDEV"),
        ),
        (
            "mat_contract_scope_unstable",
            "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:SCOPEDEV".into(),
            Some("SCOPEDEV"),
        ),
        ("mat_contract_scope_none", API.into(), None),
    ];
    for (token, scope, device) in cases {
        ctx.introspection(token, active("scoped", &scope, None))
            .await;
        let (status, body) = ctx.whoami(token).await?;
        expect_eq(&format!("{token} status"), status, 200)?;
        expect_eq(
            &format!("{token} device_id"),
            body.get("device_id").cloned(),
            device.map(Value::from),
        )?;
    }
    Ok(())
}

/// `mas.py`: answers are kept in the `mas_token_introspection` cache (2 minutes): a second
/// request with the same token does not reach the provider.
async fn introspection_is_cached(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("cached").await?;
    ctx.device("cached", "CACHEDEV").await?;
    let token = "mat_contract_cached";
    ctx.introspection(token, active("cached", API, Some("CACHEDEV")))
        .await;
    for _ in 0..3 {
        expect_eq("whoami status", ctx.whoami(token).await?.0, 200)?;
    }
    expect_eq("introspections", ctx.introspections(token).await.len(), 1)
}

/// `mas.py`: the device is looked up on every request, cached answer or not; a deleted device
/// refuses the token at once (401 `M_UNKNOWN_TOKEN`) and drops the cached answer, so the next
/// request introspects again. `delete_device` answers 204 (`devices.py`).
async fn device_deletion_cuts_the_cache_short(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("loggedout").await?;
    ctx.device("loggedout", "GONEDEV").await?;
    let token = "mat_contract_logout";
    ctx.introspection(token, active("loggedout", API, Some("GONEDEV")))
        .await;
    expect_eq("whoami before", ctx.whoami(token).await?.0, 200)?;
    let deleted = ctx
        .mas(
            "delete_device",
            json!({"localpart": "loggedout", "device_id": "GONEDEV"}),
        )
        .await?;
    expect_eq("delete_device status", deleted.0, 204)?;
    expect_error(
        "whoami after the deletion",
        &ctx.whoami(token).await?,
        401,
        "M_UNKNOWN_TOKEN",
    )?;
    expect_eq(
        "introspections so far",
        ctx.introspections(token).await.len(),
        1,
    )?;
    // The cached answer was dropped: the device coming back means a new introspection.
    ctx.device("loggedout", "GONEDEV").await?;
    expect_eq(
        "whoami with the device back",
        ctx.whoami(token).await?.0,
        200,
    )?;
    expect_eq("introspections", ctx.introspections(token).await.len(), 2)
}

/// `mas.py` drops a cached answer only when a request with that token finds its device missing:
/// a device deleted and created again before the token is next used keeps the answer (no new
/// introspection). So re-creating a device can't end an old token of it early; only its
/// absence at the token's next use does (why `core::sessions::claim_device` keeps the device).
async fn a_re_created_device_keeps_the_cached_answer(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("reclaimed").await?;
    ctx.device("reclaimed", "AGAINDEV").await?;
    let token = "mat_contract_reclaimed";
    ctx.introspection(token, active("reclaimed", API, Some("AGAINDEV")))
        .await;
    expect_eq("whoami before", ctx.whoami(token).await?.0, 200)?;
    let deleted = ctx
        .mas(
            "delete_device",
            json!({"localpart": "reclaimed", "device_id": "AGAINDEV"}),
        )
        .await?;
    expect_eq("delete_device status", deleted.0, 204)?;
    ctx.device("reclaimed", "AGAINDEV").await?;
    expect_eq(
        "whoami with the device re-created",
        ctx.whoami(token).await?.0,
        200,
    )?;
    expect_eq(
        "introspections (the cached answer survived)",
        ctx.introspections(token).await.len(),
        1,
    )
}

/// `mas.py` caches every well-formed answer, inactive ones included, for the same 2 minutes.
async fn inactive_answers_are_cached_too(ctx: &Ctx<'_>) -> Outcome {
    let token = "mat_contract_inactive";
    ctx.introspection(token, json!({"active": false})).await;
    for _ in 0..2 {
        expect_error(
            "inactive token",
            &ctx.whoami(token).await?,
            401,
            "M_UNKNOWN_TOKEN",
        )?;
    }
    expect_eq("introspections", ctx.introspections(token).await.len(), 1)
}

/// `IntrospectionResponse.is_active`: `expires_in` counts from when the answer was received;
/// once past it the cached answer refuses the token without asking the provider again (the
/// entry stays for its 2 minutes).
async fn expiry_is_counted_from_the_cached_answer(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("expiring").await?;
    let token = "mat_contract_expiring";
    let mut answer = active("expiring", API, None);
    answer["expires_in"] = 1.into();
    ctx.introspection(token, answer).await;
    expect_eq("whoami while valid", ctx.whoami(token).await?.0, 200)?;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    expect_error(
        "whoami once expired",
        &ctx.whoami(token).await?,
        401,
        "M_UNKNOWN_TOKEN",
    )?;
    expect_eq("introspections", ctx.introspections(token).await.len(), 1)
}

/// `mas.py` `get_user_by_access_token`: no token → 401 `M_MISSING_TOKEN`; inactive, no API
/// scope, or a device the homeserver doesn't know → 401 `M_UNKNOWN_TOKEN`; several device
/// scopes → 500.
async fn token_errors(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("errs").await?;
    ctx.device("errs", "ERRDEV").await?;
    let missing = ctx
        .call(Method::GET, "_matrix/client/v3/account/whoami", None, None)
        .await?;
    expect_error("no token", &missing, 401, "M_MISSING_TOKEN")?;

    let cases = [
        ("mat_contract_unknown", json!({"active": false}), 401),
        (
            "mat_contract_noapi",
            active("errs", "openid urn:matrix:client:device:ERRDEV", None),
            401,
        ),
        (
            "mat_contract_nodevice",
            active("errs", API, Some("NOSUCHDEV")),
            401,
        ),
        (
            "mat_contract_twodevices",
            active(
                "errs",
                &format!("{API} urn:matrix:client:device:A1 urn:matrix:client:device:B2"),
                None,
            ),
            500,
        ),
    ];
    for (token, answer, status) in cases {
        ctx.introspection(token, answer).await;
        let got = ctx.whoami(token).await?;
        let errcode = if status == 401 {
            "M_UNKNOWN_TOKEN"
        } else {
            // `AuthError(500, …)`: AuthError's default errcode.
            "M_FORBIDDEN"
        };
        expect_error(token, &got, status, errcode)?;
    }
    Ok(())
}

/// `mas.py`: an active token whose `username` names no user of the homeserver is the
/// provider's fault: `AuthError(500, "User not found")` → 500 `M_FORBIDDEN`.
async fn token_for_an_unknown_user(ctx: &Ctx<'_>) -> Outcome {
    let token = "mat_contract_nouser";
    ctx.introspection(token, active("nobody-here", API, None))
        .await;
    expect_error(
        "unknown user",
        &ctx.whoami(token).await?,
        500,
        "M_FORBIDDEN",
    )
}

/// `mas.py`: the provider failing (here: answering 500) → 503 `M_UNKNOWN` "Unable to introspect
/// the access token"; a failure is not cached.
async fn provider_down_is_503(ctx: &Ctx<'_>) -> Outcome {
    let token = "mat_contract_down";
    Mock::given(method("POST"))
        .and(path("/oauth2/introspect"))
        .and(body_string_contains(format!("token={token}&")))
        .respond_with(ResponseTemplate::new(500))
        .mount(ctx.provider)
        .await;
    for _ in 0..2 {
        expect_error("provider down", &ctx.whoami(token).await?, 503, "M_UNKNOWN")?;
    }
    expect_eq("introspections", ctx.introspections(token).await.len(), 2)
}

/// `_base.py` `assert_request_is_from_mas`: no token → 401 `M_MISSING_TOKEN` (Synapse's
/// `get_access_token_from_request`); another token → 403 (a bare `SynapseError(403)`, so
/// `M_UNKNOWN`), and nothing changes.
async fn shared_secret_is_required(ctx: &Ctx<'_>) -> Outcome {
    let p = "_synapse/mas/query_user?localpart=secretless";
    let missing = ctx.call(Method::GET, p, None, None).await?;
    expect_error("no secret", &missing, 401, "M_MISSING_TOKEN")?;
    let wrong = ctx.call(Method::GET, p, Some("not-it"), None).await?;
    expect_error("wrong secret", &wrong, 403, "M_UNKNOWN")?;
    let refused = ctx
        .call(
            Method::POST,
            "_synapse/mas/provision_user",
            Some("not-it"),
            Some(json!({"localpart": "secretless"})),
        )
        .await?;
    expect_error("wrong secret, provision", &refused, 403, "M_UNKNOWN")?;
    let after = ctx.mas_get("query_user?localpart=secretless").await?;
    expect_error(
        "the refused call created nothing",
        &after,
        404,
        "M_NOT_FOUND",
    )
}

/// `users.py`: `provision_user` 201 on creation, 200 on update; `query_user` answers the
/// profile and status; the display name defaults to the localpart.
async fn provision_and_query_user(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("prov").await?;
    let again = ctx
        .mas(
            "provision_user",
            json!({"localpart": "prov", "set_displayname": "Prov Isioned", "set_emails": ["p@example.com"]}),
        )
        .await?;
    expect_eq("update", again, (200, json!({})))?;
    let queried = ctx.mas_get("query_user?localpart=prov").await?;
    expect_eq(
        "query_user",
        queried,
        (
            200,
            json!({
                "user_id": ctx.user_id("prov"),
                "display_name": "Prov Isioned",
                "avatar_url": null,
                "is_suspended": false,
                "is_deactivated": false,
            }),
        ),
    )?;
    ctx.provision("provdefault").await?;
    let queried = ctx.mas_get("query_user?localpart=provdefault").await?;
    expect_eq(
        "default display name",
        &queried.1["display_name"],
        &json!("provdefault"),
    )?;
    let both = ctx
        .mas(
            "provision_user",
            json!({"localpart": "prov", "set_displayname": "x", "unset_displayname": true}),
        )
        .await?;
    expect_eq("set and unset together: status", both.0, 400)
}

/// `users.py` `is_localpart_available` (Synapse's `check_username`): free 200 `{}`; taken 400
/// `M_USER_IN_USE`; malformed 400 `M_INVALID_USERNAME`.
async fn localpart_availability(ctx: &Ctx<'_>) -> Outcome {
    let free = ctx
        .mas_get("is_localpart_available?localpart=freeone")
        .await?;
    expect_eq("free", free, (200, json!({})))?;
    ctx.provision("takenone").await?;
    let taken = ctx
        .mas_get("is_localpart_available?localpart=takenone")
        .await?;
    expect_error("taken", &taken, 400, "M_USER_IN_USE")?;
    let bad = ctx
        .mas_get("is_localpart_available?localpart=Bad%20Name")
        .await?;
    expect_error("malformed", &bad, 400, "M_INVALID_USERNAME")
}

/// `devices.py`: `upsert_device` 201 then 200; `update_device_display_name` 200;
/// `delete_device` 204 (also for a device already gone); `sync_devices` 200 and leaves exactly
/// the listed devices (checked through tokens naming them).
async fn devices_api(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("devs").await?;
    ctx.device("devs", "D1").await?;
    let again = ctx
        .mas(
            "upsert_device",
            json!({"localpart": "devs", "device_id": "D1", "display_name": "Phone"}),
        )
        .await?;
    expect_eq("upsert again", again, (200, json!({})))?;
    let renamed = ctx
        .mas(
            "update_device_display_name",
            json!({"localpart": "devs", "device_id": "D1", "display_name": "Laptop"}),
        )
        .await?;
    expect_eq("rename", renamed, (200, json!({})))?;
    let gone = ctx
        .mas(
            "delete_device",
            json!({"localpart": "devs", "device_id": "NEVERTHERE"}),
        )
        .await?;
    expect_eq("delete a missing device: status", gone.0, 204)?;

    let synced = ctx
        .mas(
            "sync_devices",
            json!({"localpart": "devs", "devices": ["D2", "D3"]}),
        )
        .await?;
    expect_eq("sync", synced, (200, json!({})))?;
    for (device, want) in [("D1", 401), ("D2", 200), ("D3", 200)] {
        let token = format!("mat_contract_sync_{device}");
        ctx.introspection(&token, active("devs", API, Some(device)))
            .await;
        expect_eq(
            &format!("token on {device} after sync"),
            ctx.whoami(&token).await?.0,
            want,
        )?;
    }
    Ok(())
}

/// `users.py`: `set_displayname` / `unset_displayname` 200; `query_user` shows the result.
async fn display_names(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("named").await?;
    let set = ctx
        .mas(
            "set_displayname",
            json!({"localpart": "named", "displayname": "Named One"}),
        )
        .await?;
    expect_eq("set", set, (200, json!({})))?;
    let q = ctx.mas_get("query_user?localpart=named").await?;
    expect_eq("after set", &q.1["display_name"], &json!("Named One"))?;
    let unset = ctx
        .mas("unset_displayname", json!({"localpart": "named"}))
        .await?;
    expect_eq("unset", unset, (200, json!({})))?;
    let q = ctx.mas_get("query_user?localpart=named").await?;
    expect_eq("after unset", &q.1["display_name"], &Value::Null)
}

/// `users.py`: `delete_user` 200 deactivates (and deletes the devices); `reactivate_user` 200.
async fn delete_and_reactivate_user(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("leaving").await?;
    ctx.device("leaving", "LEAVEDEV").await?;
    let token = "mat_contract_leaving";
    ctx.introspection(token, active("leaving", API, Some("LEAVEDEV")))
        .await;
    let deviceless = "mat_contract_leaving_nodevice";
    ctx.introspection(deviceless, active("leaving", API, None))
        .await;
    expect_eq("whoami before", ctx.whoami(token).await?.0, 200)?;
    let deleted = ctx
        .mas(
            "delete_user",
            json!({"localpart": "leaving", "erase": false}),
        )
        .await?;
    expect_eq("delete_user", deleted, (200, json!({})))?;
    let q = ctx.mas_get("query_user?localpart=leaving").await?;
    expect_eq("deactivated", &q.1["is_deactivated"], &json!(true))?;
    expect_error(
        "the device went with the account",
        &ctx.whoami(token).await?,
        401,
        "M_UNKNOWN_TOKEN",
    )?;
    // A token naming no device, still active at the provider, for a deactivated user.
    let answer = ctx.whoami(deviceless).await?;
    match ctx.kind {
        // `mas.py` does not look at the deactivated (or locked) flag: it relies on the provider
        // answering inactive for such users.
        Kind::Synapse => expect_eq("deviceless token, deactivated user", answer.0, 200)?,
        // Kept on purpose: the fake is stricter, so a provider that keeps such tokens active
        // is caught in tests (`fake-homeserver/src/auth.rs`, step 5).
        Kind::Fake => expect_error(
            "deviceless token, deactivated user",
            &answer,
            403,
            "M_USER_DEACTIVATED",
        )?,
    }
    let back = ctx
        .mas("reactivate_user", json!({"localpart": "leaving"}))
        .await?;
    match ctx.kind {
        // Synapse 1.163.2 on SQLite fails here: `activate_account` → `create_profile` upserts
        // with `ON CONFLICT` on a column without a unique index in the SQLite schema
        // ("ON CONFLICT clause does not match any PRIMARY KEY or UNIQUE constraint") → 500
        // `M_UNKNOWN`. A Synapse bug on SQLite (the harness runs SQLite); the fake answers what
        // `users.py` means to answer, so the provider's reactivation is tested against that.
        Kind::Synapse => expect_error("reactivate_user (SQLite)", &back, 500, "M_UNKNOWN"),
        Kind::Fake => {
            expect_eq("reactivate_user", back, (200, json!({})))?;
            let q = ctx.mas_get("query_user?localpart=leaving").await?;
            expect_eq("reactivated", &q.1["is_deactivated"], &json!(false))
        }
    }
}

/// `users.py`: `allow_cross_signing_reset` 200, even when the user has no cross-signing key.
async fn cross_signing_reset(ctx: &Ctx<'_>) -> Outcome {
    ctx.provision("xsign").await?;
    let answer = ctx
        .mas("allow_cross_signing_reset", json!({"localpart": "xsign"}))
        .await?;
    expect_eq("allow_cross_signing_reset", answer, (200, json!({})))
}

/// `users.py`, `devices.py`: every call naming a user that doesn't exist → 404 `M_NOT_FOUND`.
async fn unknown_users_are_404(ctx: &Ctx<'_>) -> Outcome {
    let ghost = "ghost";
    let q = ctx.mas_get("query_user?localpart=ghost").await?;
    expect_error("query_user", &q, 404, "M_NOT_FOUND")?;
    for (endpoint, body) in [
        ("delete_user", json!({"localpart": ghost, "erase": false})),
        ("reactivate_user", json!({"localpart": ghost})),
        (
            "set_displayname",
            json!({"localpart": ghost, "displayname": "G"}),
        ),
        ("unset_displayname", json!({"localpart": ghost})),
        (
            "upsert_device",
            json!({"localpart": ghost, "device_id": "G1"}),
        ),
        (
            "update_device_display_name",
            json!({"localpart": ghost, "device_id": "G1", "display_name": "G"}),
        ),
        (
            "delete_device",
            json!({"localpart": ghost, "device_id": "G1"}),
        ),
        ("sync_devices", json!({"localpart": ghost, "devices": []})),
        ("allow_cross_signing_reset", json!({"localpart": ghost})),
    ] {
        expect_error(
            endpoint,
            &ctx.mas(endpoint, body).await?,
            404,
            "M_NOT_FOUND",
        )?;
    }
    Ok(())
}

/// `register_servlets` of `login.py`, `logout.py`, `register.py`, `account.py`: in MAS mode
/// these are not registered, so a homeserver not behind the login-routing proxy answers 404
/// `M_UNRECOGNIZED`.
async fn endpoints_left_to_the_provider_are_gone(ctx: &Ctx<'_>) -> Outcome {
    for (verb, p) in [
        (Method::GET, "_matrix/client/v3/login"),
        (Method::POST, "_matrix/client/v3/login"),
        (Method::POST, "_matrix/client/v3/logout"),
        (Method::POST, "_matrix/client/v3/logout/all"),
        (Method::POST, "_matrix/client/v3/refresh"),
        (
            Method::GET,
            "_matrix/client/v3/register/available?username=x",
        ),
        (Method::POST, "_matrix/client/v3/account/password"),
        (Method::POST, "_matrix/client/v3/account/deactivate"),
        (
            Method::POST,
            "_matrix/client/v3/account/3pid/email/requestToken",
        ),
    ] {
        let answer = ctx.call(verb.clone(), p, None, Some(json!({}))).await?;
        expect_error(&format!("{verb} {p}"), &answer, 404, "M_UNRECOGNIZED")?;
    }
    Ok(())
}
