//! Fault test: the PostgreSQL server restarts while token exchanges, refreshes and
//! introspections run against the provider.
//!
//! The server is a private instance (initdb + pg_ctl from the installed PostgreSQL binaries, on a
//! free loopback port, in a temporary directory), never the machine's shared one, which other
//! tests use. Under bounded load (a few clients, one request at a time each) it is stopped
//! (`pg_ctl stop -m fast`: every connection is cut, in-flight transactions abort) and started
//! again. Then:
//!
//! - the provider serves again within 5 s of the database coming back (`GET /health` answers 200
//!   before a 5 s deadline);
//! - no exchange was answered success without its rows: every access token handed out
//!   introspects active, every refresh token handed out refreshes;
//! - no grant was lost: a refresh chain's current token and a code never answered success are
//!   still redeemable (RFC 6749 §6 / §4.1.3), and a refresh is never answered `invalid_grant`
//!   on the token the client holds;
//! - no grant was used twice: no code or refresh token was answered success twice, and
//!   replaying one that was is refused (RFC 6749 §4.1.2, RFC 9700 §4.14.2).
//!
//! Without the PostgreSQL binaries (`PG_BIN`, else /usr/lib/postgresql/<version>/bin), the test
//! prints one line saying it was skipped; under CI that is a failure.

mod support;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use provider::{
    crypto::sha256,
    endpoints,
    test_harness::{skip_or_fail, TestDb, TestProvider},
};
use serde_json::Value;
use support::{add_user, authorize, browser, http, param, static_client, REDIRECT};
use tokio::time::{sleep, Instant};
use url::Url;

const PASSWORD: &str = "correct horse battery";
const VERIFIER: &str = support::VERIFIER;
/// Refresh chains running during the restart (each also introspects its access token).
const CHAINS: usize = 3;
/// Codes, approved beforehand, exchanged during the restart.
const CODES: usize = 6;
/// How long the database stays down.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// The bound on serving again once the database is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// A pause between a client's requests: the load stays bounded.
const PACE: Duration = Duration::from_millis(20);

/// A PostgreSQL server of its own in a temporary directory, stopped (immediately) on drop.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when running as root (initdb and postgres refuse root).
    run_as: Option<String>,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// The directory of `initdb`, `pg_ctl` and `postgres`: `PG_BIN`, else the newest
    /// /usr/lib/postgresql/<version>/bin that has them.
    fn binaries() -> Option<PathBuf> {
        let has_all = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
            return has_all(&dir).then_some(dir);
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, bin)| has_all(bin))
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    }

    /// initdb (trust authentication, user `postgres`) and start on a free loopback port.
    fn start() -> Option<Self> {
        let bin = Self::binaries()?;
        let root = output("id", &["-u"]).trim() == "0";
        let run_as = root.then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("pg-fault-")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().join("data");
        if let Some(user) = &run_as {
            // The server runs as `user`: it must own its directory.
            run("chown", &[user, &dir.path().display().to_string()]);
        }
        let port = free_port();
        let pg = Self {
            bin,
            data,
            port,
            run_as,
            _dir: dir,
        };
        pg.command(
            "initdb",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.pg_ctl_start();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the PostgreSQL binaries (as the server's user when root) and waits for it.
    fn command(&self, name: &str, args: &[&str]) {
        let program = self.bin.join(name).display().to_string();
        match &self.run_as {
            Some(user) => {
                let mut all = vec!["-u", user.as_str(), "--", program.as_str()];
                all.extend_from_slice(args);
                run("runuser", &all);
            }
            None => run(&program, args),
        }
    }

    /// `pg_ctl start -w`: returns once the server accepts connections.
    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log").display().to_string();
        self.command(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                &self.data.display().to_string(),
                "-l",
                &log,
                "-o",
                &options,
            ],
        );
    }

    /// `pg_ctl stop -m <mode> -w`.
    fn pg_ctl_stop(&self, mode: &str) {
        self.command(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-m",
                mode,
                "-D",
                &self.data.display().to_string(),
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data.display().to_string();
        let args = ["stop", "-w", "-m", "immediate", "-D", data.as_str()];
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program).args(args);
                c
            }
            None => {
                let mut c = Command::new(&program);
                c.args(args);
                c
            }
        };
        let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port (asked of the kernel, then released for the server to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// The static client's form request to the token or introspection endpoint: status and JSON.
async fn post(provider: &TestProvider, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let (id, secret) = static_client(provider);
    let response = http()
        .post(provider.url(path))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .expect("the provider answers (it is not the one restarted)");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A token pair, as answered.
#[derive(Debug, Clone)]
struct Pair {
    access: String,
    refresh: String,
}

impl Pair {
    fn of(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

/// What the load saw.
#[derive(Debug, Default)]
struct Record {
    /// Every refresh token answered success when presented, and every code likewise.
    redeemed: Vec<String>,
    /// Every pair handed out.
    issued: Vec<Pair>,
    failures: usize,
    successes: usize,
    introspections: usize,
    /// Requests sent while the database was stopped (they wait for it, or fail).
    during_outage: usize,
}

/// Where the fault is.
#[derive(Debug, Default)]
struct Fault {
    /// The database is being stopped, or is stopped.
    down: AtomicBool,
    /// The load is over.
    stop: AtomicBool,
}

impl Fault {
    /// Notes a request about to be sent.
    fn sending(&self, record: &Mutex<Record>) {
        if self.down.load(Ordering::Relaxed) {
            record.lock().unwrap().during_outage += 1;
        }
    }
}

/// An approved, not yet exchanged code for the static client (PKCE S256 with [`VERIFIER`]).
async fn approved_code(provider: &TestProvider, browser: &reqwest::Client) -> String {
    let client_id = static_client(provider).0;
    let mut url = Url::parse(&provider.url(endpoints::AUTHORIZE)).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid"),
        ("code_challenge", support::CHALLENGE),
        ("code_challenge_method", "S256"),
    ]);
    let back = authorize(browser, &provider.base_url, url.as_str(), PASSWORD).await;
    param(&back, "code").expect("a code")
}

async fn exchange(provider: &TestProvider, code: &str) -> (u16, Value) {
    post(
        provider,
        endpoints::TOKEN,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn refresh(provider: &TestProvider, token: &str) -> (u16, Value) {
    post(
        provider,
        endpoints::TOKEN,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn introspect(provider: &TestProvider, token: &str) -> (u16, Value) {
    post(provider, endpoints::INTROSPECTION, &[("token", token)]).await
}

/// While the database is away the provider may only answer a server error (500, or 503
/// `temporarily_unavailable`), never a client error about the grant.
fn assert_outage_answer(what: &str, status: u16, body: &Value) {
    assert!(
        status == 500 || status == 503,
        "{what} answered {status} {body} (only a server error is acceptable while the \
         database is away: a client error would refuse a valid grant)"
    );
}

/// One refresh chain: refresh, introspect the new access token, again, until told to stop.
async fn run_chain(
    provider: Arc<TestProvider>,
    mut current: Pair,
    fault: Arc<Fault>,
    record: Arc<Mutex<Record>>,
) -> Pair {
    while !fault.stop.load(Ordering::Relaxed) {
        fault.sending(&record);
        let (status, body) = refresh(&provider, &current.refresh).await;
        if status == 200 {
            let next = Pair::of(&body);
            let mut r = record.lock().unwrap();
            r.redeemed.push(current.refresh.clone());
            r.issued.push(next.clone());
            r.successes += 1;
            drop(r);
            current = next;
        } else {
            assert_outage_answer("a refresh of the current token", status, &body);
            record.lock().unwrap().failures += 1;
        }
        fault.sending(&record);
        let (status, body) = introspect(&provider, &current.access).await;
        if status == 200 {
            // An access token handed out is active: its rows exist.
            assert_eq!(
                body["active"], true,
                "introspection of a token handed out: {body}"
            );
            record.lock().unwrap().introspections += 1;
        } else {
            assert_outage_answer("an introspection", status, &body);
            record.lock().unwrap().failures += 1;
        }
        sleep(PACE).await;
    }
    current
}

/// Exchanges one code, retrying server errors until it succeeds (60 s at most).
async fn run_exchange(
    provider: Arc<TestProvider>,
    code: String,
    start_after: Duration,
    record: Arc<Mutex<Record>>,
    fault: Arc<Fault>,
) -> (String, Option<Pair>) {
    sleep(start_after).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fault.sending(&record);
        let (status, body) = exchange(&provider, &code).await;
        if status == 200 {
            let pair = Pair::of(&body);
            let mut r = record.lock().unwrap();
            r.redeemed.push(code.clone());
            r.issued.push(pair.clone());
            r.successes += 1;
            return (code, Some(pair));
        }
        if status == 400 && body["error"] == "invalid_grant" {
            // Only right when an earlier attempt committed but its answer was lost with the
            // connection: the caller checks that against the database.
            return (code, None);
        }
        assert_outage_answer("a code exchange", status, &body);
        record.lock().unwrap().failures += 1;
        assert!(
            Instant::now() < deadline,
            "a code could not be exchanged within 60 s"
        );
        sleep(PACE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load() {
    let Some(pg) = PrivatePostgres::start() else {
        skip_or_fail(
            "fault_postgres_restart skipped: no PostgreSQL binaries (initdb, pg_ctl, postgres) \
             in PG_BIN or /usr/lib/postgresql/<version>/bin",
        );
        return;
    };
    // This test process's databases live on the private server (the harness reads
    // DATABASE_URL once, on first use, which is below).
    std::env::set_var("DATABASE_URL", pg.url());
    let db = TestDb::postgres()
        .await
        .expect("the private PostgreSQL server is there");
    let provider = Arc::new(TestProvider::start(&db).await);
    add_user(&db, "alice", PASSWORD).await;

    // Before the fault: refresh chains and approved codes.
    let browser = browser();
    let mut chains = Vec::new();
    for _ in 0..CHAINS {
        let code = approved_code(&provider, &browser).await;
        let (status, body) = exchange(&provider, &code).await;
        assert_eq!(status, 200, "{body}");
        chains.push(Pair::of(&body));
    }
    let mut codes = Vec::new();
    for _ in 0..CODES {
        codes.push(approved_code(&provider, &browser).await);
    }

    let fault = Arc::new(Fault::default());
    let record = Arc::new(Mutex::new(Record::default()));
    let chain_tasks: Vec<_> = chains
        .iter()
        .cloned()
        .map(|pair| {
            tokio::spawn(run_chain(
                provider.clone(),
                pair,
                fault.clone(),
                record.clone(),
            ))
        })
        .collect();
    // The exchanges are spread over the time before, during and after the outage.
    let exchange_tasks: Vec<_> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            tokio::spawn(run_exchange(
                provider.clone(),
                code.clone(),
                Duration::from_millis(400 * i as u64),
                record.clone(),
                fault.clone(),
            ))
        })
        .collect();

    // The fault: stop the server under load, keep it away, start it again.
    sleep(Duration::from_millis(500)).await;
    let pg = Arc::new(pg);
    let stopper = pg.clone();
    fault.down.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || stopper.pg_ctl_stop("fast"))
        .await
        .unwrap();
    sleep(DOWN_FOR).await;
    let starter = pg.clone();
    tokio::task::spawn_blocking(move || starter.pg_ctl_start())
        .await
        .unwrap();
    let back_at = Instant::now();
    fault.down.store(false, Ordering::Relaxed);

    // Serving again within the bound: /health answers 200 before the deadline.
    let deadline = back_at + RECOVERY_BOUND;
    let healthy = loop {
        let status = http()
            .get(provider.url("/health"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            break Some(back_at.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        sleep(Duration::from_millis(100)).await;
    };
    let Some(recovered_in) = healthy else {
        panic!(
            "the provider did not serve again within {RECOVERY_BOUND:?} of the database coming back"
        );
    };

    // Let the load run a little on the restarted server, then stop it.
    sleep(Duration::from_secs(1)).await;
    fault.stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    for task in chain_tasks {
        finals.push(task.await.expect("a chain ran to its end"));
    }
    let mut exchanged = Vec::new();
    let lost_answers = AtomicUsize::new(0);
    for task in exchange_tasks {
        let (code, pair) = task.await.expect("an exchange ran to its end");
        match pair {
            Some(pair) => exchanged.push((code, pair)),
            None => {
                // Refused after the restart: only right if an attempt during the outage did
                // commit (its answer lost with the connection). The grant is then spent, not
                // lost: the database shows it exchanged into a session.
                let mut repo = db.storage.reader().await.unwrap();
                let grant = repo
                    .authorization_grants()
                    .find_by_code_hash(&sha256(&code))
                    .await
                    .unwrap()
                    .expect("the code's grant exists");
                assert!(
                    grant.exchanged_at.is_some() && grant.session_id.is_some(),
                    "a code that was never answered success is refused after the restart: \
                     the grant is lost"
                );
                lost_answers.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let record = Arc::try_unwrap(record)
        .expect("every task ended")
        .into_inner()
        .unwrap();

    // Nothing was answered success twice.
    let redeemed: HashSet<&String> = record.redeemed.iter().collect();
    assert_eq!(
        redeemed.len(),
        record.redeemed.len(),
        "a grant was answered success twice"
    );
    let issued: HashSet<&String> = record.issued.iter().map(|p| &p.access).collect();
    assert_eq!(
        issued.len(),
        record.issued.len(),
        "an access token was handed out twice"
    );

    // Every success has its rows: each code's tokens are active and refresh.
    for (_, pair) in &exchanged {
        let (status, body) = introspect(&provider, &pair.access).await;
        assert_eq!(
            (status, &body["active"]),
            (200, &Value::Bool(true)),
            "{body}"
        );
        let (status, body) = refresh(&provider, &pair.refresh).await;
        assert_eq!(
            status, 200,
            "a refresh token handed out by an exchange: {body}"
        );
    }
    // No chain lost its grant: the token each holds still refreshes; the one before it is
    // spent (its successor was used), and replaying it is refused.
    let mut spent = Vec::new();
    for current in &finals {
        let (status, body) = refresh(&provider, &current.refresh).await;
        assert_eq!(status, 200, "a chain's current refresh token: {body}");
        let next = Pair::of(&body);
        let (status, body) = introspect(&provider, &next.access).await;
        assert_eq!(
            (status, &body["active"]),
            (200, &Value::Bool(true)),
            "{body}"
        );
        let (status, _) = refresh(&provider, &next.refresh).await;
        assert_eq!(status, 200);
        spent.push(current.refresh.clone());
    }
    for token in &spent {
        let (status, body) = refresh(&provider, token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "a refresh token used before is refused: {body}"
        );
    }
    // A code answered success is refused when replayed (RFC 6749 §4.1.2).
    for (code, _) in &exchanged {
        let (status, body) = exchange(&provider, code).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "a code used before is refused: {body}"
        );
    }

    // The load did meet the fault (else this test proved nothing).
    assert!(
        record.during_outage > 0,
        "no request was sent while the database was stopped"
    );
    assert!(record.successes > 0 && record.introspections > 0);
    let _ = writeln_stderr(&format!(
        "fault_postgres_restart: {} successes, {} answered a server error during the outage, \
         {} introspections, {} requests sent while it was stopped, {} exchanges whose answer \
         was lost; /health 200 {:?} after the database came back",
        record.successes,
        record.failures,
        record.introspections,
        record.during_outage,
        lost_answers.load(Ordering::Relaxed),
        recovered_in
    ));

    Arc::try_unwrap(provider)
        .ok()
        .expect("the tasks are done")
        .stop()
        .await;
    drop(db);
    drop(pg);
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stderr(), "{line}")
}
