//! A slow homeserver holds up only what waits for it (issue 14, finding 2), on both databases.
//!
//! The token exchange of a grant with a Matrix device calls the homeserver (the device must
//! exist before the client uses its token). It used to make that call inside its database
//! transaction: with the homeserver paused, SQLite answered "database is locked" to unrelated
//! writes and PostgreSQL's pool was pinned by the waiting exchanges. The rule now (DESIGN.md):
//! no transaction or pooled connection is held across a call to another server.
//!
//! The fake homeserver is paused ([`fake_homeserver::AppState::pause`]), so every call waits
//! and is counted until it is resumed: the tests wait until the exchanges are all held there,
//! check that unrelated requests are answered meanwhile (and that the exchanges are still
//! held, so those answers came while they were blocked), resume, then check what the exchanges
//! got: tokens whose device the homeserver has, and a code still single use. The provider's
//! homeserver calls are given an hour (`matrix.request_timeout_seconds`), so none of them gives
//! up while the test looks, however slow the machine: every held call is still held until the
//! resume. No duration is asserted; a generous timeout only turns a hang into a failure.

mod support;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration as StdDuration,
};

use async_trait::async_trait;
use provider::{
    backend_tests,
    core::matrix::{
        provisioning::{self, Outcome, Task, QUEUE},
        Homeserver, HomeserverConnection, HomeserverError, MatrixUser, ProvisionUser,
    },
    endpoints,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user, authorize, authorize_url, browser, exchange_code, get_text, http,
    introspect_as_homeserver, json_of, location, param, static_client, submit, text, REDIRECT,
    VERIFIER,
};
use tokio::{sync::watch, task::JoinHandle};

const PASSWORD: &str = "correct horse battery staple";
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The connections of a test database's pool (`test_harness`: test pools are 4 connections).
const POOL: usize = 4;
/// More blocked exchanges than the pool has connections.
const BLOCKED: usize = POOL + 4;
/// Only turns a hang into a failure.
const HANG: StdDuration = StdDuration::from_secs(60);

/// The provider, with homeserver calls that wait far longer than any test (an hour; the
/// default, 10 s, could run out under load while the test checks that the calls are held).
async fn start(db: &TestDb) -> TestProvider {
    TestProvider::start_with(db, &[("PROVIDER__MATRIX__REQUEST_TIMEOUT_SECONDS", "3600")]).await
}

/// An exchange waiting on the homeserver: its device, its code and its task.
type Blocked = (String, String, JoinHandle<(u16, Value)>);

fn device_scope(device: &str) -> String {
    format!("openid urn:matrix:client:api:* urn:matrix:client:device:{device}")
}

/// What must be answered while exchanges wait on the paused homeserver: the health check, a
/// dynamic client registration (a write), and an introspection of a live token (a read and a
/// write: its first use is recorded).
async fn unrelated_requests_are_answered(provider: &TestProvider, live_token: &str) {
    let health = http()
        .get(provider.url(endpoints::HEALTH))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::REGISTRATION))
            .json(&json!({
                "client_name": "Registered meanwhile",
                "client_uri": "https://meanwhile.example.com/",
                "redirect_uris": ["https://meanwhile.example.com/cb"],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        introspect_as_homeserver(provider, live_token).await["active"],
        true
    );
}

/// Waits until `n` homeserver calls are held by the pause.
async fn held(provider: &TestProvider, n: usize) {
    tokio::time::timeout(HANG, provider.homeserver.state().wait_until_held(n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {n} calls reached the paused homeserver: something holds the database",
                provider.homeserver.state().held()
            )
        });
}

/// `BLOCKED` authorization code exchanges (more than the pool's connections), each for its own
/// device, wait on the paused homeserver; `/health`, a registration and an introspection are
/// answered meanwhile. Afterwards each exchange got tokens for a device the homeserver has,
/// and each code is still single use: a replay is refused and revokes what it issued
/// (RFC 6749 §4.1.2).
async fn exchanges_blocked_on_the_homeserver_hold_no_connection(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = start(&db).await;
    let base = provider.base_url.clone();
    let browser = browser();
    let mut codes = Vec::new();
    for i in 0..=BLOCKED {
        let url = authorize_url(
            &provider,
            &[("scope", &device_scope(&format!("SLOWDEV{i:03}")))],
        );
        let back = authorize(&browser, &base, &url, PASSWORD).await;
        codes.push(param(&back, "code").expect("a code"));
    }
    // One exchange before the pause: a live token to introspect meanwhile.
    let (status, first) = exchange_code(&provider, &codes[0]).await;
    assert_eq!(status, 200, "{first}");
    let live_token = first["access_token"].as_str().unwrap().to_owned();

    provider.homeserver.state().pause();
    let blocked: Vec<Blocked> = codes[1..]
        .iter()
        .enumerate()
        .map(|(i, code)| {
            let (url, code) = (provider.url(endpoints::TOKEN), code.clone());
            let (client_id, secret) = static_client(&provider);
            let task = tokio::spawn({
                let code = code.clone();
                async move {
                    let (status, _, body) = json_of(
                        http()
                            .post(url)
                            .basic_auth(&client_id, Some(&secret))
                            .form(&[
                                ("grant_type", "authorization_code"),
                                ("code", code.as_str()),
                                ("redirect_uri", REDIRECT),
                                ("code_verifier", VERIFIER),
                            ])
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await;
                    (status, body)
                }
            });
            (format!("SLOWDEV{:03}", i + 1), code, task)
        })
        .collect();
    held(&provider, BLOCKED).await;

    unrelated_requests_are_answered(&provider, &live_token).await;
    // ...while every exchange was still waiting on the homeserver.
    assert_eq!(provider.homeserver.state().held(), BLOCKED);
    assert!(blocked.iter().all(|(_, _, task)| !task.is_finished()));

    provider.homeserver.state().resume();
    for (device, code, task) in blocked {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{device}: {body}");
        assert!(
            provider.homeserver.store().has_device("alice", &device),
            "tokens for {device}, which the homeserver doesn't have"
        );
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(
            introspect_as_homeserver(&provider, token).await["device_id"],
            device
        );
        // Single use: a replay is refused and revokes what the code issued.
        let (status, replay) = exchange_code(&provider, &code).await;
        assert_eq!(
            (status, replay["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(
            introspect_as_homeserver(&provider, token).await["active"],
            false
        );
    }
    provider.stop().await;
}

/// Device-code polls waiting on the paused homeserver hold no connection either. A second poll
/// of the same device code meanwhile also upserts the (same) device (idempotent, harmless);
/// once resumed, exactly one of the two gets the tokens (the one whose compare-and-set marks
/// the grant exchanged), the other `invalid_grant`, and the device code is used up (RFC 8628
/// §3.5).
async fn device_code_polls_blocked_on_the_homeserver_hold_no_connection(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = start(&db).await;
    let client_id = register_device_client(&provider).await;
    let started = start_device_request(&provider, &client_id, "TVDEVICE01").await;
    approve(&provider, &started).await;
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    // A live token to introspect meanwhile.
    let (status, first) = poll_device(&provider, &client_id, &device_code).await;
    assert_eq!(status, 200, "{first}");
    let live_token = first["access_token"].as_str().unwrap().to_owned();

    let started = start_device_request(&provider, &client_id, "TVDEVICE02").await;
    approve(&provider, &started).await;
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    provider.homeserver.state().pause();
    let spawn_poll = || {
        let (url, client_id, device_code) = (
            provider.url(endpoints::TOKEN),
            client_id.clone(),
            device_code.clone(),
        );
        tokio::spawn(async move { poll_at(&url, &client_id, &device_code).await })
    };
    let polls = [spawn_poll(), spawn_poll()];
    held(&provider, 2).await;
    unrelated_requests_are_answered(&provider, &live_token).await;
    assert_eq!(provider.homeserver.state().held(), 2);
    assert!(polls.iter().all(|poll| !poll.is_finished()));

    provider.homeserver.state().resume();
    let mut answers = Vec::new();
    for poll in polls {
        let (status, body) = poll.await.unwrap();
        answers.push((status, body["error"].as_str().map(str::to_owned)));
    }
    answers.sort();
    assert_eq!(
        answers,
        [(200, None), (400, Some("invalid_grant".to_owned()))],
        "one poll gets the tokens, once"
    );
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", "TVDEVICE02"));
    let (status, after) = poll_device(&provider, &client_id, &device_code).await;
    assert_eq!(
        (status, after["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    provider.stop().await;
}

/// When the homeserver is down the poll answers 503 and nothing is written that needs undoing:
/// the same device code gets the tokens once the homeserver is back, and only once.
async fn a_failed_device_upsert_keeps_the_device_code(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = start(&db).await;
    let client_id = register_device_client(&provider).await;
    let started = start_device_request(&provider, &client_id, "TVDEVICE03").await;
    approve(&provider, &started).await;
    let device_code = started["device_code"].as_str().unwrap();
    provider.homeserver.set_unavailable(true);
    let (status, body) = poll_device(&provider, &client_id, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    assert!(!provider
        .homeserver
        .store()
        .has_device("alice", "TVDEVICE03"));
    provider.homeserver.set_unavailable(false);
    let (status, body) = poll_device(&provider, &client_id, device_code).await;
    assert_eq!(status, 200, "{body}");
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", "TVDEVICE03"));
    let (status, body) = poll_device(&provider, &client_id, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    provider.stop().await;
}

/// A legacy password login (MSC3824 compat API) waiting on the paused homeserver holds no
/// connection: `/health`, a registration and an introspection are answered meanwhile.
async fn a_compat_login_blocked_on_the_homeserver_holds_no_connection(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = start(&db).await;
    let base = provider.base_url.clone();
    let url = authorize_url(&provider, &[("scope", &device_scope("COMPATLIVE"))]);
    let back = authorize(&browser(), &base, &url, PASSWORD).await;
    let (status, first) = exchange_code(&provider, &param(&back, "code").unwrap()).await;
    assert_eq!(status, 200, "{first}");
    let live_token = first["access_token"].as_str().unwrap().to_owned();

    provider.homeserver.state().pause();
    let login = tokio::spawn({
        let url = provider.url("/_matrix/client/v3/login");
        async move {
            json_of(
                http()
                    .post(url)
                    .json(&json!({
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": "alice"},
                        "password": PASSWORD,
                        "device_id": "COMPATDEV1",
                    }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    });
    held(&provider, 1).await;
    unrelated_requests_are_answered(&provider, &live_token).await;
    assert_eq!(provider.homeserver.state().held(), 1);
    assert!(!login.is_finished());
    provider.homeserver.state().resume();
    let (status, _, body) = login.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", "COMPATDEV1"));
    provider.stop().await;
}

/// Registers a device-only public client (MSC2966) and returns its `client_id`.
async fn register_device_client(provider: &TestProvider) -> String {
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::REGISTRATION))
            .json(&json!({
                "client_name": "A television",
                "client_uri": "https://tv.example.com/",
                "application_type": "native",
                "grant_types": [DEVICE_CODE, "refresh_token"],
                "response_types": [],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["client_id"].as_str().unwrap().to_owned()
}

/// Starts a device authorization request (RFC 8628 §3.1) for a device.
async fn start_device_request(provider: &TestProvider, client_id: &str, device: &str) -> Value {
    let (status, _, body) = json_of(
        http()
            .post(provider.url(endpoints::DEVICE_AUTHORIZATION))
            .form(&[("client_id", client_id), ("scope", &device_scope(device))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Signs `alice` in through `verification_uri_complete` and allows the request (the pages of
/// RFC 8628 §3.3: login, back to the link page, the code entry, the approval).
async fn approve(provider: &TestProvider, started: &Value) {
    let base = provider.base_url.clone();
    let browser = browser();
    let link = started["verification_uri_complete"].as_str().unwrap();
    let to_login = location(&browser.get(link).send().await.unwrap(), &base);
    let page = get_text(&browser, to_login).await;
    let signed_in = submit(
        &browser,
        &base,
        &page,
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    let page = get_text(&browser, location(&signed_in, &base)).await;
    let (status, approval) = text(submit(&browser, &base, &page, &[]).await).await;
    assert_eq!(status, 200, "{approval}");
    let (status, done) =
        text(submit(&browser, &base, &approval, &[("action", "allow")]).await).await;
    assert_eq!(status, 200, "{done}");
}

async fn poll_device(provider: &TestProvider, client_id: &str, device_code: &str) -> (u16, Value) {
    poll_at(&provider.url(endpoints::TOKEN), client_id, device_code).await
}

/// One poll of the token endpoint (RFC 8628 §3.4).
async fn poll_at(url: &str, client_id: &str, device_code: &str) -> (u16, Value) {
    let (status, _, body) = json_of(
        http()
            .post(url)
            .form(&[
                ("grant_type", DEVICE_CODE),
                ("device_code", device_code),
                ("client_id", client_id),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

/// The device of the deletion race tests.
const RACE_DEVICE: &str = "RACEDEV001";

/// One homeserver call held until the test opens the gate: once armed, the first call through
/// it waits there (and says so) until [`Gate::open`]; later calls pass.
struct Gate {
    armed: AtomicBool,
    reached: watch::Sender<bool>,
    open: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            reached: watch::Sender::new(false),
            open: watch::Sender::new(false),
        }
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    async fn pass(&self) {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut open = self.open.subscribe();
        self.reached.send_replace(true);
        let _ = open.wait_for(|open| *open).await;
    }

    /// Waits until a call waits at the gate.
    async fn reached(&self) {
        let mut reached = self.reached.subscribe();
        tokio::time::timeout(HANG, reached.wait_for(|reached| *reached))
            .await
            .expect("the homeserver call reaches the gate")
            .unwrap();
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

/// The gates of [`Gated`]: the deletion of [`RACE_DEVICE`] before it is sent, its upsert after
/// the homeserver made it (the exchange has its device and has not committed yet), and a
/// device sync before it is sent.
struct Gates {
    delete: Gate,
    upserted: Gate,
    sync: Gate,
}

/// The provider's homeserver connection with [`Gates`] on the calls about [`RACE_DEVICE`]:
/// the steps of the race run in the order the test chooses, with no sleep.
struct Gated {
    inner: Homeserver,
    gates: Arc<Gates>,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated").field("inner", &self.inner).finish()
    }
}

#[async_trait]
impl HomeserverConnection for Gated {
    fn server_name(&self) -> &str {
        self.inner.server_name()
    }
    async fn query_user(&self, localpart: &str) -> Result<Option<MatrixUser>, HomeserverError> {
        self.inner.query_user(localpart).await
    }
    async fn is_localpart_available(&self, localpart: &str) -> Result<bool, HomeserverError> {
        self.inner.is_localpart_available(localpart).await
    }
    async fn provision_user(&self, request: &ProvisionUser) -> Result<bool, HomeserverError> {
        self.inner.provision_user(request).await
    }
    async fn delete_user(&self, localpart: &str, erase: bool) -> Result<(), HomeserverError> {
        self.inner.delete_user(localpart, erase).await
    }
    async fn reactivate_user(&self, localpart: &str) -> Result<(), HomeserverError> {
        self.inner.reactivate_user(localpart).await
    }
    async fn set_displayname(
        &self,
        localpart: &str,
        displayname: Option<&str>,
    ) -> Result<(), HomeserverError> {
        self.inner.set_displayname(localpart, displayname).await
    }
    async fn upsert_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let result = self
            .inner
            .upsert_device(localpart, device_id, display_name)
            .await;
        if device_id == RACE_DEVICE {
            self.gates.upserted.pass().await;
        }
        result
    }
    async fn update_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: &str,
    ) -> Result<(), HomeserverError> {
        self.inner
            .update_device_display_name(localpart, device_id, display_name)
            .await
    }
    async fn delete_device(&self, localpart: &str, device_id: &str) -> Result<(), HomeserverError> {
        if device_id == RACE_DEVICE {
            self.gates.delete.pass().await;
        }
        self.inner.delete_device(localpart, device_id).await
    }
    async fn sync_devices(
        &self,
        localpart: &str,
        devices: &BTreeSet<String>,
    ) -> Result<(), HomeserverError> {
        self.gates.sync.pass().await;
        self.inner.sync_devices(localpart, devices).await
    }
    async fn allow_cross_signing_reset(&self, localpart: &str) -> Result<(), HomeserverError> {
        self.inner.allow_cross_signing_reset(localpart).await
    }
}

/// The provider with its homeserver calls about [`RACE_DEVICE`] gated, alice signed in on a
/// TV as [`RACE_DEVICE`] (device code grant), and the TV's client ID and tokens.
async fn start_race(db: &TestDb) -> (TestProvider, Arc<Gates>, String, Value) {
    add_user(db, "alice", PASSWORD).await;
    let gates = Arc::new(Gates {
        delete: Gate::new(),
        upserted: Gate::new(),
        sync: Gate::new(),
    });
    let provider = TestProvider::start_wrapping_homeserver(
        db,
        &[("PROVIDER__MATRIX__REQUEST_TIMEOUT_SECONDS", "3600")],
        {
            let gates = gates.clone();
            move |inner| Arc::new(Gated { inner, gates })
        },
    )
    .await;
    let client_id = register_device_client(&provider).await;
    let tokens = sign_in_device(&provider, &client_id).await;
    assert!(provider.homeserver.store().has_device("alice", RACE_DEVICE));
    (provider, gates, client_id, tokens)
}

/// A device code for [`RACE_DEVICE`], approved by alice.
async fn approved_device_code(provider: &TestProvider, client_id: &str) -> String {
    let started = start_device_request(provider, client_id, RACE_DEVICE).await;
    approve(provider, &started).await;
    started["device_code"].as_str().unwrap().to_owned()
}

async fn sign_in_device(provider: &TestProvider, client_id: &str) -> Value {
    let device_code = approved_device_code(provider, client_id).await;
    let (status, tokens) = poll_device(provider, client_id, &device_code).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

/// Signs the TV out (RFC 7009 revocation of its refresh token): the session ends and its
/// device's deletion is queued and run. In a task, since the deletion may wait at a gate.
fn sign_out(provider: &TestProvider, client_id: &str, tokens: &Value) -> JoinHandle<u16> {
    let url = provider.url(endpoints::REVOCATION);
    let client_id = client_id.to_owned();
    let token = tokens["refresh_token"].as_str().unwrap().to_owned();
    tokio::spawn(async move {
        http()
            .post(url)
            .form(&[("token", token.as_str()), ("client_id", client_id.as_str())])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// Waits until no homeserver job is pending (whoever runs them: the request that queued them
/// or the worker). Only a hang fails it.
async fn jobs_done(provider: &TestProvider) {
    tokio::time::timeout(HANG, async {
        loop {
            let mut repo = provider.state.storage.reader().await.unwrap();
            if repo.jobs().count_pending(Some(QUEUE)).await.unwrap() == 0 {
                return;
            }
            drop(repo);
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    })
    .await
    .expect("the homeserver jobs finish");
}

/// The new sign-in's tokens work, for a device the homeserver has.
async fn device_kept(provider: &TestProvider, tokens: &Value) {
    assert!(
        provider.homeserver.store().has_device("alice", RACE_DEVICE),
        "tokens for {RACE_DEVICE}, which the homeserver doesn't have"
    );
    let token = tokens["access_token"].as_str().unwrap();
    let answer = introspect_as_homeserver(provider, token).await;
    assert_eq!(
        (answer["active"].as_bool(), answer["device_id"].as_str()),
        (Some(true), Some(RACE_DEVICE)),
        "{answer}"
    );
}

/// The deletion race (see `provider::core::matrix::provisioning`, "The device deletion race"):
/// the TV signs out, and its device's deletion has read "no session holds RACEDEV001" and is on
/// its way to the homeserver when the TV signs in again with the same device ID, and gets its
/// tokens. The deletion then reaches the homeserver: afterwards, the homeserver has the device
/// again (the job checked again after its call, and upserted it back).
async fn a_deletion_from_before_an_exchange_leaves_its_device(db: TestDb) {
    let (provider, gates, client_id, old) = start_race(&db).await;
    gates.delete.arm();
    let signed_out = sign_out(&provider, &client_id, &old);
    gates.delete.reached().await;

    let new = sign_in_device(&provider, &client_id).await;
    gates.delete.open();
    assert_eq!(signed_out.await.unwrap(), 200);
    jobs_done(&provider).await;
    device_kept(&provider, &new).await;
    provider.stop().await;
}

/// The same race, with the deletion reaching the homeserver after the exchange's upsert but
/// before its commit: no session holds the device yet when the job checks again, but the
/// exchange's provisioning mark does, so the device comes back.
async fn a_deletion_during_an_exchange_leaves_its_device(db: TestDb) {
    let (provider, gates, client_id, old) = start_race(&db).await;
    gates.delete.arm();
    let signed_out = sign_out(&provider, &client_id, &old);
    gates.delete.reached().await;

    let device_code = approved_device_code(&provider, &client_id).await;
    gates.upserted.arm();
    let poll = tokio::spawn({
        let (url, client_id) = (provider.url(endpoints::TOKEN), client_id.clone());
        async move { poll_at(&url, &client_id, &device_code).await }
    });
    gates.upserted.reached().await;
    gates.delete.open();
    assert_eq!(signed_out.await.unwrap(), 200);
    jobs_done(&provider).await;
    gates.upserted.open();
    let (status, new) = poll.await.unwrap();
    assert_eq!(status, 200, "{new}");
    device_kept(&provider, &new).await;
    provider.stop().await;
}

/// A deletion that reads while an exchange is upserting the same device leaves it alone: it
/// is put off (never sent to the homeserver) and, run again once the exchange committed,
/// finds the new session holding the device.
async fn a_deletion_during_an_exchange_waits_for_it(db: TestDb) {
    let (provider, gates, client_id, old) = start_race(&db).await;
    let device_code = approved_device_code(&provider, &client_id).await;
    gates.upserted.arm();
    let poll = tokio::spawn({
        let (url, client_id) = (provider.url(endpoints::TOKEN), client_id.clone());
        async move { poll_at(&url, &client_id, &device_code).await }
    });
    gates.upserted.reached().await;
    assert_eq!(sign_out(&provider, &client_id, &old).await.unwrap(), 200);
    gates.upserted.open();
    let (status, new) = poll.await.unwrap();
    assert_eq!(status, 200, "{new}");
    // The put-off deletion runs after its backoff (the provider's clock is the test's).
    db.clock.advance(chrono::Duration::minutes(1));
    jobs_done(&provider).await;
    let deletions = provider
        .homeserver
        .journal()
        .into_iter()
        .filter(|call| call.path.ends_with("/delete_device"))
        .count();
    assert_eq!(deletions, 0, "{RACE_DEVICE} was deleted meanwhile");
    device_kept(&provider, &new).await;
    provider.stop().await;
}

/// The same race with a legacy password login (MSC3824 compat API) that names the device ID
/// of the session that just ended: the deletion reaches the homeserver after the login's
/// upsert, before its commit; the login's mark makes the job upsert the device back.
async fn a_deletion_during_a_compat_login_leaves_its_device(db: TestDb) {
    let (provider, gates, client_id, old) = start_race(&db).await;
    gates.delete.arm();
    let signed_out = sign_out(&provider, &client_id, &old);
    gates.delete.reached().await;

    gates.upserted.arm();
    let login = tokio::spawn({
        let url = provider.url("/_matrix/client/v3/login");
        async move {
            json_of(
                http()
                    .post(url)
                    .json(&json!({
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": "alice"},
                        "password": PASSWORD,
                        "device_id": RACE_DEVICE,
                    }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    });
    gates.upserted.reached().await;
    gates.delete.open();
    assert_eq!(signed_out.await.unwrap(), 200);
    jobs_done(&provider).await;
    gates.upserted.open();
    let (status, _, new) = login.await.unwrap();
    assert_eq!(status, 200, "{new}");
    device_kept(&provider, &new).await;
    provider.stop().await;
}

/// The race with a device sync and an authorization code exchange: the sync has read alice's
/// devices (RACEDEV001's session ended) and is on its way to the homeserver when a code for
/// RACEDEV001 is exchanged. The sync then makes the homeserver's devices those it read;
/// afterwards the homeserver has RACEDEV001 again (the job checked again after its call).
async fn a_device_sync_from_before_a_code_exchange_leaves_its_device(db: TestDb) {
    let (provider, gates, client_id, old) = start_race(&db).await;
    assert_eq!(sign_out(&provider, &client_id, &old).await.unwrap(), 200);
    assert!(!provider.homeserver.store().has_device("alice", RACE_DEVICE));
    let alice = {
        let mut repo = provider.state.storage.reader().await.unwrap();
        repo.users()
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap()
    };
    gates.sync.arm();
    let sync = tokio::spawn({
        let core = provider.state.core.clone();
        async move {
            let task = Task::SyncDevices { user_id: alice.id };
            provisioning::run_task_now(&core, &task).await.unwrap()
        }
    });
    gates.sync.reached().await;

    let url = authorize_url(&provider, &[("scope", &device_scope(RACE_DEVICE))]);
    let back = authorize(&browser(), &provider.base_url, &url, PASSWORD).await;
    let (status, new) = exchange_code(&provider, &param(&back, "code").unwrap()).await;
    assert_eq!(status, 200, "{new}");
    gates.sync.open();
    assert_eq!(sync.await.unwrap(), Outcome::Done);
    device_kept(&provider, &new).await;
    provider.stop().await;
}

backend_tests!(
    exchanges_blocked_on_the_homeserver_hold_no_connection,
    device_code_polls_blocked_on_the_homeserver_hold_no_connection,
    a_failed_device_upsert_keeps_the_device_code,
    a_compat_login_blocked_on_the_homeserver_holds_no_connection,
    a_deletion_from_before_an_exchange_leaves_its_device,
    a_deletion_during_an_exchange_leaves_its_device,
    a_deletion_during_an_exchange_waits_for_it,
    a_device_sync_from_before_a_code_exchange_leaves_its_device,
    a_deletion_during_a_compat_login_leaves_its_device,
);
