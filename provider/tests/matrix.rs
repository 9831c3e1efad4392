//! The provider as a Matrix homeserver's authentication service, end to end, against the fake
//! homeserver over HTTP (no shortcut into either side's state but reading the homeserver's
//! journal): discovery through the homeserver → dynamic registration → account creation and
//! login with a device scope → the homeserver serves `whoami` as that user and device →
//! refresh → revocation → the homeserver refuses the token at once (the device is gone).
//!
//! Both homeserver APIs are covered: `/_synapse/mas/*` (`matrix.kind: synapse`) and the legacy
//! `/_synapse/admin` API (`synapse_legacy`). A homeserver outage (wiremock answering 503, then
//! recovering) delays provisioning but loses nothing.

mod support;

use chrono::Duration;
use provider::{
    backend_tests,
    clock::Clock as _,
    core::matrix::provisioning::{self, AfterCommit, Outcome, Task, Worker, QUEUE},
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{browser, get_text, json_of, location, param, submit, CHALLENGE, REDIRECT, VERIFIER};
use url::Url;
use wiremock::{
    matchers::{header, method, path},
    Mock, MockServer, ResponseTemplate,
};

const DEVICE: &str = "E2EDEVICE01";
const PASSWORD: &str = "correct horse battery staple";

/// A Matrix client call to the homeserver with a bearer token: status and JSON body.
async fn matrix_get(homeserver: &Url, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = json_of(
        reqwest::Client::new()
            .get(homeserver.join(path).unwrap())
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

/// A form `POST` to the provider: status and JSON body.
async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) = json_of(
        reqwest::Client::new()
            .post(url)
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, body)
}

/// The paths of the homeserver API calls the provider made, in order.
fn journal_paths(provider: &TestProvider) -> Vec<String> {
    provider
        .homeserver
        .journal()
        .into_iter()
        .map(|entry| entry.path)
        .collect()
}

/// Walks an authorization URL through the pages, creating the account `bob` on the way
/// (`prompt=create`) and allowing; returns where the browser was sent back to.
async fn sign_up_and_allow(browser: &reqwest::Client, base: &Url, url: &str) -> Url {
    let mut next = location(&browser.get(url).send().await.unwrap(), base);
    loop {
        if next.as_str().starts_with(REDIRECT) {
            return next;
        }
        let page = get_text(browser, next.clone()).await;
        let fields: &[(&str, &str)] = match next.path() {
            "/register" => &[
                ("username", "bob"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ],
            _ => &[("action", "allow")],
        };
        next = location(&submit(browser, base, &page, fields).await, base);
    }
}

async fn end_to_end(db: TestDb, kind: &str) {
    let provider = TestProvider::start_with(
        &db,
        &[
            ("PROVIDER__ACCOUNT__REGISTRATION", "true"),
            ("PROVIDER__MATRIX__KIND", kind),
        ],
    )
    .await;
    let base = provider.base_url.clone();
    let homeserver = provider.homeserver.base_url().clone();

    // Discovery through the homeserver (MSC2965): versions, then the provider's metadata,
    // unchanged.
    let (status, versions) = matrix_get(&homeserver, "_matrix/client/versions", "").await;
    assert_eq!(status, 200);
    assert!(versions["versions"]
        .as_array()
        .unwrap()
        .contains(&json!("v1.15")));
    let (status, metadata) = matrix_get(&homeserver, "_matrix/client/v1/auth_metadata", "").await;
    assert_eq!(status, 200);
    let direct: Value = reqwest::get(provider.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata, direct);
    assert_eq!(metadata["issuer"], base.as_str());
    assert!(metadata["prompt_values_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("create")));

    // Dynamic client registration (MSC2966): a public web client.
    let (status, _, registered) = json_of(
        reqwest::Client::new()
            .post(metadata["registration_endpoint"].as_str().unwrap())
            .json(&json!({
                "client_name": "End to end",
                "client_uri": "https://client.example.com/",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let client_id = registered["client_id"].as_str().unwrap().to_owned();

    // Account creation and consent, with a device scope (MSC2967).
    let scope = format!("openid urn:matrix:client:api:* urn:matrix:client:device:{DEVICE}");
    let mut url = Url::parse(metadata["authorization_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("response_type", "code")
        .append_pair("scope", &scope)
        .append_pair("state", "s1")
        .append_pair("prompt", "create")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    let back = sign_up_and_allow(&browser(), &base, url.as_str()).await;
    let code = param(&back, "code").expect("a code");
    // The account reached the homeserver through the job queue.
    assert!(provider.homeserver.store().user("bob").is_some());

    // The token exchange upserts the device before answering.
    let token_endpoint = metadata["token_endpoint"].as_str().unwrap();
    let (status, tokens) = post_form(
        token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["scope"]
        .as_str()
        .unwrap()
        .contains(&format!("urn:matrix:client:device:{DEVICE}")));
    assert!(provider.homeserver.store().has_device("bob", DEVICE));

    // The homeserver serves the user and the device.
    let access = tokens["access_token"].as_str().unwrap();
    let (status, whoami) =
        matrix_get(&homeserver, "_matrix/client/v3/account/whoami", access).await;
    assert_eq!(status, 200, "{whoami}");
    assert_eq!(whoami["user_id"], "@bob:localhost");
    assert_eq!(whoami["device_id"], DEVICE);
    assert_eq!(whoami["is_guest"], false);

    // Refresh: a new pair, the device unchanged.
    let (status, refreshed) = post_form(
        token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let access = refreshed["access_token"].as_str().unwrap();
    let (status, whoami) =
        matrix_get(&homeserver, "_matrix/client/v3/account/whoami", access).await;
    assert_eq!((status, &whoami["device_id"]), (200, &json!(DEVICE)));

    // Revocation (MSC4254) ends the session and deletes the device: the homeserver refuses the
    // token at once, although it may still have the introspection answer cached.
    let revoked = reqwest::Client::new()
        .post(metadata["revocation_endpoint"].as_str().unwrap())
        .form(&[("token", access), ("client_id", &client_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert!(!provider.homeserver.store().has_device("bob", DEVICE));
    let (status, refused) =
        matrix_get(&homeserver, "_matrix/client/v3/account/whoami", access).await;
    assert_eq!(status, 401);
    assert_eq!(refused["errcode"], "M_UNKNOWN_TOKEN");

    // The homeserver saw the provisioning, the device and its deletion.
    let calls = journal_paths(&provider);
    let position = |needle: &str| {
        calls
            .iter()
            .position(|p| p.contains(needle))
            .unwrap_or_else(|| panic!("no call to {needle} in {calls:?}"))
    };
    let (provision, upsert, delete) = if kind == "synapse" {
        (
            position("/_synapse/mas/provision_user"),
            position("/_synapse/mas/upsert_device"),
            position("/_synapse/mas/delete_device"),
        )
    } else {
        (
            position("/_synapse/admin/v2/users/"),
            position("/devices"),
            calls
                .iter()
                .rposition(|p| p.contains(&format!("/devices/{DEVICE}")))
                .expect("a device deletion"),
        )
    };
    assert!(provision < upsert && upsert < delete, "{calls:?}");
    if kind == "synapse" {
        assert!(
            calls.iter().all(|p| p.starts_with("/_synapse/mas/")),
            "{calls:?}"
        );
    } else {
        assert!(
            calls.iter().all(|p| p.starts_with("/_synapse/admin/")),
            "{calls:?}"
        );
    }
}

async fn end_to_end_mas_api(db: TestDb) {
    end_to_end(db, "synapse").await;
}

async fn end_to_end_legacy_admin_api(db: TestDb) {
    end_to_end(db, "synapse_legacy").await;
}

/// Registers `carol` through the registration page.
async fn register_carol(provider: &TestProvider) -> u16 {
    let base = provider.base_url.clone();
    let browser = browser();
    let page = get_text(&browser, provider.url("/register")).await;
    submit(
        &browser,
        &base,
        &page,
        &[
            ("username", "carol"),
            ("password", PASSWORD),
            ("password_confirm", PASSWORD),
        ],
    )
    .await
    .status()
    .as_u16()
}

/// The homeserver is down (503) when the account is created: the provisioning job stays queued,
/// is retried with backoff, and converges once the homeserver is back. Nothing is lost.
async fn homeserver_outage_is_retried(db: TestDb) {
    let homeserver = MockServer::start().await;
    let provider = TestProvider::start_with(
        &db,
        &[
            ("PROVIDER__ACCOUNT__REGISTRATION", "true"),
            ("PROVIDER__MATRIX__ENDPOINT", &homeserver.uri()),
        ],
    )
    .await;
    let secret = format!("Bearer {}", provider.settings.matrix.secret);
    Mock::given(method("GET"))
        .and(path("/_synapse/mas/is_localpart_available"))
        .and(header("authorization", secret.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&homeserver)
        .await;
    // Down for the first three provisioning attempts, then back.
    Mock::given(method("POST"))
        .and(path("/_synapse/mas/provision_user"))
        .respond_with(ResponseTemplate::new(503).set_body_string("down for maintenance"))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&homeserver)
        .await;
    Mock::given(method("POST"))
        .and(path("/_synapse/mas/provision_user"))
        .and(header("authorization", secret.as_str()))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({})))
        .with_priority(2)
        .mount(&homeserver)
        .await;

    // The account is created (a redirect, not an error page) though the homeserver is down.
    assert_eq!(register_carol(&provider).await, 303);
    let pending = || async {
        let mut repo = db.storage.reader().await.unwrap();
        repo.jobs().count_pending(Some(QUEUE)).await.unwrap()
    };
    assert_eq!(pending().await, 1, "the provisioning waits in the queue");

    // Time passes; the worker retries (the server's own worker may run it as well).
    let worker = Worker::new(provider.state.clone());
    let mut rounds = 0;
    while pending().await > 0 {
        rounds += 1;
        assert!(rounds <= 50, "the provisioning job never converged");
        db.clock.advance(Duration::minutes(15));
        worker.run_due().await.unwrap();
        tokio::task::yield_now().await;
    }
    let provisions: Vec<Value> = homeserver
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/_synapse/mas/provision_user")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(provisions.len(), 4, "three failures, then the success");
    // Every attempt carried the same, complete request.
    for body in &provisions {
        assert_eq!(body["localpart"], "carol");
        assert_eq!(body["locked"], false);
    }
}

/// The token exchange needs the device on the homeserver: when the homeserver can't be reached
/// the exchange fails cleanly (503 `temporarily_unavailable`) and the code stays usable.
async fn device_upsert_failure_keeps_the_code(db: TestDb) {
    let provider =
        TestProvider::start_with(&db, &[("PROVIDER__ACCOUNT__REGISTRATION", "true")]).await;
    let base = provider.base_url.clone();
    let (client_id, secret) = support::static_client(&provider);
    let url = support::authorize_url(
        &provider,
        &[
            (
                "scope",
                &format!("openid urn:matrix:client:api:* urn:matrix:client:device:{DEVICE}"),
            ),
            ("prompt", "create"),
        ],
    );
    let back = sign_up_and_allow(&browser(), &base, &url).await;
    let code = param(&back, "code").unwrap();
    let exchange = || async {
        json_of(
            reqwest::Client::new()
                .post(provider.url("/oauth2/token"))
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
        .await
    };
    provider.homeserver.set_unavailable(true);
    let (status, headers, body) = exchange().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(!provider.homeserver.store().has_device("bob", DEVICE));
    // Back up: the same code works, once.
    provider.homeserver.set_unavailable(false);
    let (status, _, body) = exchange().await;
    assert_eq!(status, 200, "{body}");
    assert!(provider.homeserver.store().has_device("bob", DEVICE));
}

/// A `provider manage` command beside a running server: the server's worker may claim the job
/// the command enqueued before the command runs it. The command then waits for that run and
/// reports what it became (it reported `queued` while the other worker was running the job).
async fn a_job_another_worker_runs_is_reported_once_run(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let core = provider.state.core.clone();
    let now = db.clock.now();
    let mut repo = db.storage.begin().await.unwrap();
    let task = Task::SyncDevices {
        user_id: ulid::Ulid::from_parts(1, 7),
    };
    // Due later, so the test server's own worker leaves it alone; a claim by id doesn't wait.
    let id = provisioning::enqueue(&mut repo, &task, now + Duration::hours(1))
        .await
        .unwrap();
    repo.commit().await.unwrap();
    // Another worker holds it first.
    let mut repo = db.storage.reader().await.unwrap();
    let held = repo
        .jobs()
        .claim_one(id, "worker-elsewhere", Duration::seconds(60))
        .await
        .unwrap();
    assert!(held.is_some());
    let mut jobs = AfterCommit::default();
    jobs.push(id);
    let reporting = tokio::spawn(async move { jobs.run_and_report(&core).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !reporting.is_finished(),
        "reported while another worker held the job"
    );
    assert!(repo.jobs().complete(id, "worker-elsewhere").await.unwrap());
    let outcomes = reporting.await.unwrap().unwrap();
    assert_eq!(outcomes, vec![Outcome::Done]);
    provider.stop().await;
}

backend_tests!(
    end_to_end_mas_api,
    end_to_end_legacy_admin_api,
    homeserver_outage_is_retried,
    device_upsert_failure_keeps_the_code,
    a_job_another_worker_runs_is_reported_once_run
);
