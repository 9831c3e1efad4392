//! `provider syn2mas` against a database that real Synapse built (PyPI `matrix-synapse`, pinned
//! in `synapse-harness`): Synapse starts in plain mode (its own password login, the shared-secret
//! registration API) on SQLite or PostgreSQL; users are registered through
//! `/_synapse/admin/v1/register` (one admin), given e-mail addresses and an SSO link through
//! `/_synapse/admin/v2/users/<id>`, log in with `/login` (devices, tokens, a refresh token), and
//! one is deactivated. Synapse stops; the `provider` binary runs `check`, `migrate --dry-run`
//! (nothing written), `migrate`, and `migrate` again (nothing changes). Then Synapse starts again
//! on the same database in `matrix_authentication_service` mode, with `provider serve` on the
//! migrated database and nginx in front, and: every user signs in with the old password; old
//! tokens answer `whoami` through Synapse with their devices, an old refresh token refreshes;
//! the admin may be granted `urn:synapse:admin:*` and the others may not; the deactivated user
//! can't sign in; the linked user signs in through the upstream provider (a second provider
//! instance) to the same account. Provider on SQLite and PostgreSQL.
//!
//! Without python3, nginx or `DATABASE_URL` every case prints one skip line and passes; with
//! `CI` set it fails instead. (The harness's virtualenv holds Synapse's PostgreSQL driver.)

mod support;

use std::{sync::Arc, time::Duration};

use provider::{
    backend_tests, endpoints,
    test_harness::{skip_or_fail, TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user,
    cli::{run_blocking, KillOnDrop, Workdir},
    get_text, json_of, location, param, submit, CHALLENGE, REDIRECT, STATE, VERIFIER,
};
use synapse_harness::{
    Availability, ReverseProxy, Synapse, SynapseDatabase, SynapseOptions, Tools,
};
use url::Url;

const PEPPER: &str = "the synapse pepper";
const SHARED_SECRET: &str = "registration shared secret";
/// The upstream provider's ID in provider.yaml, and Synapse's ID for it (`oidc-<idp_id>`).
const UPSTREAM_ID: &str = "01JAYS74TCG3BTWKADN5Q4518C";
const SYNAPSE_IDP: &str = "oidc-upstream";
const UPSTREAM_PASSWORD: &str = "erin's password upstream";

/// Synapse's users: (localpart, password, admin).
const USERS: [(&str, &str, bool); 5] = [
    ("alice", "alice's old password", true),
    ("bob", "bob's old password", false),
    ("carol", "carol's old password", false),
    ("dave", "dave's old password", false),
    ("erin", "erin's old password", false),
];

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Where Synapse keeps its data in this case.
enum SynapseStore {
    Sqlite(tempfile::TempDir),
    Postgres { server: String, name: String },
}

impl SynapseStore {
    fn database(&self) -> SynapseDatabase {
        match self {
            Self::Sqlite(dir) => SynapseDatabase::Sqlite(dir.path().join("homeserver.db")),
            Self::Postgres { server, name } => {
                let url = Url::parse(server).unwrap();
                SynapseDatabase::Postgres {
                    host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
                    port: url.port().unwrap_or(5432),
                    user: if url.username().is_empty() {
                        "postgres".to_owned()
                    } else {
                        url.username().to_owned()
                    },
                    password: url.password().map(str::to_owned),
                    database: name.clone(),
                }
            }
        }
    }

    /// What the database holds, to show that nothing wrote to it: on SQLite, a SHA-256 of the
    /// file; on PostgreSQL, each table's row count and an MD5 of its rows (sorted), and each
    /// sequence's last value (Synapse's stream IDs).
    async fn fingerprint(&self) -> Vec<String> {
        match self {
            Self::Sqlite(dir) => {
                use sha2::Digest as _;
                let bytes = std::fs::read(dir.path().join("homeserver.db")).unwrap();
                vec![format!(
                    "homeserver.db: {} bytes, SHA-256 {:x}",
                    bytes.len(),
                    sha2::Sha256::digest(&bytes)
                )]
            }
            Self::Postgres { server, name } => {
                use sqlx::Connection as _;
                let mut url = Url::parse(server).unwrap();
                url.set_path(&format!("/{name}"));
                let mut conn = sqlx::PgConnection::connect(url.as_str()).await.unwrap();
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT table_name::TEXT FROM information_schema.tables \
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
                     ORDER BY table_name",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                assert!(
                    tables.iter().any(|(t,)| t == "users"),
                    "not Synapse's database: {tables:?}"
                );
                let mut lines = Vec::new();
                for (table,) in tables {
                    let (rows, digest): (i64, String) = sqlx::query_as(&format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::TEXT, E'\\n' \
                         ORDER BY t::TEXT)), '') FROM \"{table}\" t"
                    ))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                    lines.push(format!("{table}: {rows} rows, MD5 {digest}"));
                }
                let sequences: Vec<(String, Option<i64>)> = sqlx::query_as(
                    "SELECT sequencename::TEXT, last_value FROM pg_sequences \
                     WHERE schemaname = 'public' ORDER BY sequencename",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                lines.extend(
                    sequences
                        .into_iter()
                        .map(|(sequence, last)| format!("sequence {sequence}: {last:?}")),
                );
                lines
            }
        }
    }
}

impl Drop for SynapseStore {
    fn drop(&mut self) {
        if let Self::Postgres { server, name } = self {
            let (server, name) = (server.clone(), name.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    use sqlx::Connection as _;
                    let mut conn = sqlx::PgConnection::connect(&server).await.ok()?;
                    let _ =
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    Some(())
                })
            })
            .join();
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum SynapseKind {
    Sqlite,
    Postgres,
}

/// The tools, and a fresh store for Synapse; `None` (after the skip line) when this case can't
/// run here.
async fn prerequisites(kind: SynapseKind) -> Option<(Tools, SynapseStore)> {
    let tools = match synapse_harness::prepare()
        .await
        .expect("the real Synapse's prerequisites (CI is set)")
    {
        Availability::Ready(tools) => tools,
        Availability::Skip(reason) => {
            skip_or_fail(&format!("real Synapse test cases skipped: {reason}"));
            return None;
        }
    };
    let store = match kind {
        SynapseKind::Sqlite => SynapseStore::Sqlite(tempfile::tempdir().unwrap()),
        SynapseKind::Postgres => {
            let Some(server) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
                skip_or_fail("Synapse-on-PostgreSQL cases skipped: DATABASE_URL is not set");
                return None;
            };
            #[allow(clippy::disallowed_methods)]
            let name = format!(
                "syn2mas_synapse_{}",
                ulid::Ulid::new().to_string().to_lowercase()
            );
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
            // Synapse refuses any collation but C (`synapse/storage/engines/postgres.py`).
            sqlx::raw_sql(&format!(
                "CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' \
                 TEMPLATE template0"
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            SynapseStore::Postgres { server, name }
        }
    };
    Some((tools, store))
}

/// What the plain Synapse handed out.
struct Before {
    /// (localpart, device, access token) of each login.
    logins: Vec<(&'static str, String, String)>,
    bob_refresh: String,
}

async fn post_json(url: Url, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http().post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, _, body) = json_of(request.send().await.unwrap()).await;
    (status, body)
}

/// `/login` with a password on `base` (Synapse's, or nginx in front of the provider).
async fn password_login(
    base: &Url,
    user: &str,
    password: &str,
    device: Option<&str>,
    refresh: bool,
) -> (u16, Value) {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    });
    if let Some(device) = device {
        body["device_id"] = json!(device);
    }
    if refresh {
        body["refresh_token"] = json!(true);
    }
    post_json(base.join("_matrix/client/v3/login").unwrap(), None, body).await
}

async fn whoami(base: &Url, token: &str) -> (u16, Value) {
    let response = http()
        .get(base.join("_matrix/client/v3/account/whoami").unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(response).await;
    (status, body)
}

/// Fills the plain Synapse through its APIs.
async fn populate(synapse: &Synapse, erin_subject: &str) -> Before {
    let base = synapse.url().clone();
    for (user, password, admin) in USERS {
        synapse
            .register_user(user, password, admin)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", synapse.log_tail(30)));
    }
    let mut logins = Vec::new();
    let mut bob_refresh = String::new();
    for (user, device, refresh) in [
        ("alice", "ALICEPHONE", false),
        ("alice", "ALICELAPTOP", false),
        ("bob", "BOBDESK", false),
        ("bob", "BOBPHONE", true),
        ("carol", "CAROLTAB", false),
        ("dave", "DAVEPHONE", false),
        ("erin", "ERINPHONE", false),
    ] {
        let password = USERS.iter().find(|u| u.0 == user).unwrap().1;
        let (status, body) = password_login(&base, user, password, Some(device), refresh).await;
        assert_eq!(status, 200, "{body}\n{}", synapse.log_tail(20));
        assert_eq!(body["device_id"], device);
        if refresh {
            bob_refresh = body["refresh_token"].as_str().unwrap().to_owned();
        }
        logins.push((
            user,
            device.to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        ));
    }
    let admin = logins[0].2.clone();
    // E-mail addresses and the SSO link, with the admin API (`PUT /_synapse/admin/v2/users`).
    for (user, body) in [
        (
            "alice",
            json!({"threepids": [{"medium": "email", "address": "alice@example.com"}]}),
        ),
        (
            "bob",
            json!({"threepids": [{"medium": "email", "address": "bob@example.com"}]}),
        ),
        (
            "erin",
            json!({
                "threepids": [{"medium": "email", "address": "erin@example.com"}],
                "external_ids": [{"auth_provider": SYNAPSE_IDP, "external_id": erin_subject}],
            }),
        ),
    ] {
        let response = http()
            .put(
                base.join(&format!("_synapse/admin/v2/users/@{user}:localhost"))
                    .unwrap(),
            )
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, _, answer) = json_of(response).await;
        assert_eq!(status, 200, "{user}: {answer}");
    }
    // dave leaves (`POST /_synapse/admin/v1/deactivate`): his devices and tokens go with him.
    let (status, body) = post_json(
        base.join("_synapse/admin/v1/deactivate/@dave:localhost")
            .unwrap(),
        Some(&admin),
        json!({"erase": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    Before {
        logins,
        bob_refresh,
    }
}

/// provider.yaml for `db`, served at `base`: the generated configuration with Synapse's pepper
/// and the upstream provider mapped to Synapse's `oidc-upstream`.
fn provider_yaml(db: &TestDb, base: &Url, upstream: &TestProvider) -> String {
    use rand::SeedableRng as _;
    let options = provider::config::GenerateOptions {
        issuer: base.to_string(),
        listen: format!("127.0.0.1:{}", base.port().unwrap()),
        database_url: db.url.clone(),
        homeserver: "localhost".to_owned(),
        // `provider serve` is told Synapse's address when Synapse runs again.
        homeserver_endpoint: "http://127.0.0.1:9/".to_owned(),
    };
    let text = provider::config::generate(
        &mut rand::rngs::StdRng::seed_from_u64(11),
        db.clock.as_ref(),
        &options,
    )
    .unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let client = &upstream.settings.clients[0];
    let map = doc.as_mapping_mut().unwrap();
    let secrets = map
        .get_mut("secrets")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
        .expect("the generated configuration has `secrets`");
    secrets.insert("password_pepper".into(), PEPPER.into());
    let upstream_section: serde_yaml_ng::Value = serde_json::from_value(json!({"providers": [{
        "id": UPSTREAM_ID,
        "issuer": upstream.base_url.as_str(),
        "human_name": "Upstream",
        "client_id": client.client_id,
        "client_secret": client.secret,
        "scope": "openid email",
        "synapse_idp_id": SYNAPSE_IDP,
    }]}))
    .unwrap();
    map.insert("upstream_oauth2".into(), upstream_section);
    serde_yaml_ng::to_string(&doc).unwrap()
}

/// A free port on 127.0.0.1 (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Follows an authorization request through the provider's pages as `user`; returns where the
/// browser was sent back to the client.
async fn authorize_as(base: &Url, client_id: &str, scope: &str, user: &str, password: &str) -> Url {
    let mut url = endpoints::url(base, endpoints::AUTHORIZE);
    url.query_pairs_mut().extend_pairs([
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", scope),
        ("state", STATE),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]);
    let browser = browser();
    let mut next = location(&browser.get(url).send().await.unwrap(), base);
    loop {
        if next.as_str().starts_with(REDIRECT) {
            return next;
        }
        let response = browser.get(next.clone()).send().await.unwrap();
        if response.status() == 303 {
            next = location(&response, base);
            continue;
        }
        let page = response.text().await.unwrap();
        let fields: &[(&str, &str)] = if next.path() == "/login" {
            &[("username", user), ("password", password)]
        } else {
            &[("action", "allow")]
        };
        next = location(&submit(&browser, base, &page, fields).await, base);
    }
}

/// The code of a redirect back to the client, exchanged, then introspected with the shared
/// secret.
async fn exchange_and_introspect(
    base: &Url,
    client: (&str, &str),
    back: &Url,
    secret: &str,
) -> Value {
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (status, _, tokens) = json_of(
        http()
            .post(endpoints::url(base, endpoints::TOKEN))
            .basic_auth(client.0, Some(client.1))
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
    assert_eq!(status, 200, "{tokens}");
    let (_, _, answer) = json_of(
        http()
            .post(endpoints::url(base, endpoints::INTROSPECTION))
            .bearer_auth(secret)
            .form(&[("token", tokens["access_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    answer
}

/// erin signs in at the provider through the upstream provider (its login page's button, the
/// upstream's login and consent pages, the callback); returns where she is sent back to.
async fn through_upstream(base: &Url, client_id: &str, upstream: &TestProvider) -> Url {
    let mut url = endpoints::url(base, endpoints::AUTHORIZE);
    url.query_pairs_mut().extend_pairs([
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid urn:matrix:client:api:*"),
        ("state", STATE),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]);
    // Cookies are per host, not per port: one browser per server.
    let (ours, theirs) = (browser(), browser());
    let login = location(&ours.get(url).send().await.unwrap(), base);
    let page = get_text(&ours, login.clone()).await;
    let button = format!("{}/{UPSTREAM_ID}", endpoints::UPSTREAM_AUTHORIZE);
    let start = {
        let doc = scraper::Html::parse_document(&page);
        let selector = scraper::Selector::parse(&format!("a[href^=\"{button}\"]")).unwrap();
        let link = doc.select(&selector).next();
        link.unwrap_or_else(|| panic!("no upstream button on {page}"))
            .value()
            .attr("href")
            .unwrap()
            .to_owned()
    };
    let mut next = location(
        &ours.get(base.join(&start).unwrap()).send().await.unwrap(),
        base,
    );
    // The upstream's pages, up to the redirect to our callback.
    let up = &upstream.base_url;
    while next.origin() == up.origin() {
        let response = theirs.get(next.clone()).send().await.unwrap();
        if response.status() == 303 {
            next = location(&response, up);
            continue;
        }
        let (status, page) = (response.status(), response.text().await.unwrap());
        assert_eq!(status, 200, "{next}: {page}");
        let fields: &[(&str, &str)] = if next.path() == "/login" {
            &[
                ("username", "erin-upstream"),
                ("password", UPSTREAM_PASSWORD),
            ]
        } else {
            &[("action", "allow")]
        };
        next = location(&submit(&theirs, up, &page, fields).await, up);
    }
    // Ours: the callback signs erin in through the link, then consent.
    loop {
        if next.as_str().starts_with(REDIRECT) {
            return next;
        }
        let response = ours.get(next.clone()).send().await.unwrap();
        if response.status() == 303 {
            next = location(&response, base);
            continue;
        }
        let (status, page) = (response.status(), response.text().await.unwrap());
        assert_eq!(status, 200, "{next}: {page}");
        assert!(
            !next.path().starts_with("/upstream/link"),
            "the link was not found: erin was offered a new account: {page}"
        );
        next = location(
            &submit(&ours, base, &page, &[("action", "allow")]).await,
            base,
        );
    }
}

async fn a_real_synapse_moves_to_the_provider(db: TestDb, kind: SynapseKind) {
    let Some((tools, store)) = prerequisites(kind).await else {
        return;
    };

    // The upstream identity provider: a second provider instance with erin's upstream account.
    let up_db = TestDb::sqlite().await;
    // `provider serve` checks the upstream's ID tokens with the wall clock: move the upstream's
    // (frozen) test clock there.
    #[allow(clippy::disallowed_methods)]
    let wall = chrono::Utc::now();
    up_db.clock.advance(wall - up_db.clock.now_db());
    let upstream = TestProvider::start(&up_db).await;
    add_user(&up_db, "erin-upstream", UPSTREAM_PASSWORD).await;
    let erin_subject = {
        let mut repo = up_db.storage.reader().await.unwrap();
        let erin = repo.users().find_by_username("erin-upstream").await;
        erin.unwrap().unwrap().id.to_string()
    };
    let base = Url::parse(&format!("http://127.0.0.1:{}/", free_port())).unwrap();
    let mut up_settings = upstream.settings.clone();
    up_settings.clients[0].metadata["redirect_uris"] = json!([endpoints::url(
        &base,
        &format!("{}/{UPSTREAM_ID}", endpoints::UPSTREAM_CALLBACK)
    )]);
    provider::server::prepare(&up_db.storage, &up_settings, false)
        .await
        .unwrap();

    // Synapse as it was: plain mode, filled through its APIs, then stopped.
    let options = SynapseOptions::plain("localhost", store.database(), SHARED_SECRET, Some(PEPPER));
    let synapse = Synapse::start(&tools, options)
        .await
        .unwrap_or_else(|e| panic!("start Synapse (plain mode): {e}"));
    let before = populate(&synapse, &erin_subject).await;
    let synapse_dir = synapse.stop().await;
    let synapse_config = synapse_dir.path().join("homeserver.yaml");
    let synapse_fingerprint = store.fingerprint().await;
    let unwritten = |after: Vec<String>, what: &str| {
        let changed: Vec<_> = after
            .iter()
            .filter(|line| !synapse_fingerprint.contains(line))
            .collect();
        assert!(
            after == synapse_fingerprint,
            "{what} wrote to Synapse's database: {changed:#?}"
        );
    };

    // The migration, with the binary, as an operator runs it.
    let work = Arc::new(Workdir::new());
    work.write("provider.yaml", provider_yaml(&db, &base, &upstream));
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "-c".to_owned(),
            "provider.yaml".to_owned(),
            "--synapse-config".to_owned(),
            synapse_config.display().to_string(),
        ]);
        run_blocking(work.clone(), all, None)
    };
    let check = run(&["syn2mas", "check"]).await;
    check.expect_code(0, "syn2mas check");
    assert!(check.stdout.contains("check: 0 errors"), "{}", check.stdout);

    let dry = run(&["syn2mas", "migrate", "--dry-run"]).await;
    dry.expect_code(0, "syn2mas migrate --dry-run");
    assert!(
        dry.stdout
            .contains("dry run: rolled back, nothing was written"),
        "{}",
        dry.stdout
    );
    {
        let mut repo = db.storage.reader().await.unwrap();
        assert_eq!(repo.users().count().await.unwrap(), 0, "the dry run wrote");
        assert_eq!(repo.synapse_import().last().await.unwrap(), None);
    }
    unwritten(store.fingerprint().await, "syn2mas migrate --dry-run");

    let real = run(&["syn2mas", "migrate"]).await;
    real.expect_code(0, "syn2mas migrate");
    let tables = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("\tread "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        tables(&dry.stdout),
        tables(&real.stdout),
        "the dry run's report is the real one"
    );
    for expected in [
        // alice, bob, carol, dave (deactivated), erin.
        "users\tread 5\timported 5\tunchanged 0\tskipped 0",
        // dave's went with his deactivation (Synapse sets it to NULL).
        "passwords\tread 4\timported 4\tunchanged 0\tskipped 0",
        "e-mail addresses\tread 3\timported 3\tunchanged 0\tskipped 0",
        "upstream links\tread 1\timported 1\tunchanged 0\tskipped 0",
        // The six logins' and the four registrations' (the shared-secret API logs the new
        // user in); dave's went with his deactivation.
        "devices\tread 10\timported 10\tunchanged 0\tskipped 0",
        "access tokens\tread 10\timported 10\tunchanged 0\tskipped 0",
        "refresh tokens\tread 1\timported 1\tunchanged 0\tskipped 0",
        "done: the provider's database holds Synapse's accounts",
    ] {
        assert!(
            real.stdout.contains(expected),
            "{expected}\n{}",
            real.stdout
        );
    }

    let again = run(&["syn2mas", "migrate"]).await;
    again.expect_code(0, "syn2mas migrate (again)");
    assert!(
        again
            .stdout
            .contains("nothing changed: everything was imported already"),
        "{}",
        again.stdout
    );
    assert!(
        again
            .stdout
            .contains("users\tread 5\timported 0\tunchanged 5\tskipped 0"),
        "{}",
        again.stdout
    );
    unwritten(store.fingerprint().await, "syn2mas migrate");

    // dave, deactivated on Synapse, is deactivated here. Synapse removed his password when it
    // deactivated him, so an operator gives him one: his sign-in is then refused because he is
    // deactivated (`M_USER_DEACTIVATED`), not for want of a password.
    {
        let mut repo = db.storage.reader().await.unwrap();
        let dave = repo.users().find_by_username("dave").await.unwrap();
        let dave = dave.expect("dave was migrated");
        assert!(
            dave.deactivated_at.is_some(),
            "dave was migrated as an active user: {dave:?}"
        );
    }
    let dave_password = USERS.iter().find(|u| u.0 == "dave").unwrap().1;
    run_blocking(
        work.clone(),
        [
            "manage",
            "set-password",
            "-c",
            "provider.yaml",
            "dave",
            "--password",
            dave_password,
            "--ignore-password-policy",
        ]
        .map(str::to_owned)
        .to_vec(),
        None,
    )
    .await
    .expect_code(0, "manage set-password dave");

    // Synapse again, on the same database, delegating to the provider; the provider serves the
    // migrated database; nginx in front.
    let (_, settings) = provider::config::parse(
        &work.read("provider.yaml"),
        std::iter::empty(),
        std::path::Path::new("."),
    )
    .unwrap();
    let options = SynapseOptions::new("localhost", base.clone(), &settings.matrix.secret)
        .with_database(store.database());
    let synapse = Synapse::start(&tools, options)
        .await
        .unwrap_or_else(|e| panic!("start Synapse (MAS mode): {e}"));
    let endpoint = synapse.url().to_string();
    let mut serve = KillOnDrop(
        work.command(
            &["serve", "-c", "provider.yaml"],
            &[("PROVIDER__MATRIX__ENDPOINT", endpoint.as_str())],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path("serve.log")).unwrap())
        .spawn()
        .unwrap(),
    );
    let health = endpoints::url(&base, endpoints::HEALTH);
    let mut up = false;
    for _ in 0..300 {
        if let Ok(r) = http().get(health.clone()).send().await {
            if r.status() == 200 {
                up = true;
                break;
            }
        }
        if let Ok(Some(status)) = serve.0.try_wait() {
            panic!(
                "provider serve exited: {status}\n{}",
                work.read("serve.log")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "provider serve never answered\n{}",
        work.read("serve.log")
    );
    let proxy = ReverseProxy::start(&tools, synapse.url(), &base)
        .await
        .unwrap_or_else(|e| panic!("start nginx: {e}"));
    let homeserver = proxy.url().clone();
    let logs = || {
        format!(
            "--- Synapse ---\n{}\n--- provider ---\n{}",
            synapse.log_tail(30),
            work.read("serve.log")
        )
    };

    // Old tokens answer `whoami` through Synapse, with their devices.
    for (user, device, token) in &before.logins {
        let (status, body) = whoami(&homeserver, token).await;
        if *user == "dave" {
            assert_eq!(status, 401, "dave's token: {body}");
            continue;
        }
        assert_eq!(status, 200, "{user} {device}: {body}\n{}", logs());
        assert_eq!(body["user_id"], format!("@{user}:localhost"));
        assert_eq!(body["device_id"], device.as_str());
    }
    // bob's old refresh token refreshes (at the provider, through nginx), and the new token is
    // his phone's.
    let (status, body) = post_json(
        homeserver.join("_matrix/client/v3/refresh").unwrap(),
        None,
        json!({"refresh_token": before.bob_refresh}),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", logs());
    let (status, body) = whoami(&homeserver, body["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "BOBPHONE");

    // The admin's old token still acts as admin on Synapse; bob's doesn't.
    let admin_api = homeserver
        .join("_synapse/admin/v2/users/@bob:localhost")
        .unwrap();
    for (token, expected) in [(&before.logins[0].2, 200), (&before.logins[2].2, 403)] {
        let status = http()
            .get(admin_api.clone())
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, expected, "{}", logs());
    }

    // Every user signs in with the old password, except the deactivated one.
    for (user, password, _) in USERS {
        let (status, body) = password_login(&homeserver, user, password, None, false).await;
        if user == "dave" {
            // Client-server API §"Login": a deactivated account is 403 `M_USER_DEACTIVATED`.
            assert_eq!(
                (status, body["errcode"].as_str()),
                (403, Some("M_USER_DEACTIVATED")),
                "dave: {body}"
            );
            continue;
        }
        assert_eq!(status, 200, "{user}: {body}\n{}", logs());
        assert_eq!(body["user_id"], format!("@{user}:localhost"));
        // The provider answers a login only once the device exists on the homeserver
        // (`compat::login`): Synapse knows the new session at once.
        let token = body["access_token"].as_str().unwrap();
        let (status, answer) = whoami(&homeserver, token).await;
        assert_eq!(status, 200, "{user}: {answer}\n{}", logs());
        assert_eq!(answer["user_id"], format!("@{user}:localhost"), "{answer}");
    }

    // `urn:synapse:admin:*` for the admin only.
    let client = &settings.clients[0];
    let client_secret = client.secret.clone().unwrap();
    let admin_scope = "openid urn:matrix:client:api:* urn:synapse:admin:*";
    let back = authorize_as(&base, &client.client_id, admin_scope, "alice", USERS[0].1).await;
    let answer = exchange_and_introspect(
        &base,
        (&client.client_id, &client_secret),
        &back,
        &settings.matrix.secret,
    )
    .await;
    assert_eq!(answer["username"], "alice", "{answer}");
    assert!(
        answer["scope"]
            .as_str()
            .unwrap()
            .split(' ')
            .any(|s| s == "urn:synapse:admin:*"),
        "{answer}"
    );
    let back = authorize_as(&base, &client.client_id, admin_scope, "bob", USERS[1].1).await;
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("access_denied"),
        "{back}"
    );
    assert!(param(&back, "code").is_none());

    // erin signs in through the upstream provider, to her migrated account.
    let back = through_upstream(&base, &client.client_id, &upstream).await;
    let answer = exchange_and_introspect(
        &base,
        (&client.client_id, &client_secret),
        &back,
        &settings.matrix.secret,
    )
    .await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["username"], "erin", "{answer}");

    proxy.stop().await;
    drop(serve);
    synapse.stop().await;
    upstream.stop().await;
}

async fn on_synapse_sqlite(db: TestDb) {
    a_real_synapse_moves_to_the_provider(db, SynapseKind::Sqlite).await;
}

async fn on_synapse_postgres(db: TestDb) {
    a_real_synapse_moves_to_the_provider(db, SynapseKind::Postgres).await;
}

backend_tests!(on_synapse_sqlite, on_synapse_postgres);
