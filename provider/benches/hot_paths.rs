//! The hot paths under load: discovery, introspection (as the homeserver calls it) and token
//! issuance (client_credentials: client authentication plus a durable session and token write).
//!
//! Starts the provider in this process on the given database, seeds a user session and a
//! client, and drives each path with `wrk` (Debian package `wrk`), printing what it reports.
//!
//! ```text
//! cargo bench -p provider --bench hot_paths -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/provider_bench --duration 10
//! ```
//! The database must exist; it is migrated. Without `--database-url` a temporary SQLite file is
//! used. Flags: `--duration SECONDS` (10), `--connections N` (16), `--threads N` (2),
//! `--no-rate-limits` (every rate limit off; by default the token endpoint's is checked on
//! every request, with a quota the load doesn't reach).

use std::{path::Path, process::Command, time::Duration};

use chrono::Duration as ChronoDuration;
use provider::{
    clock::Entropy,
    config::{self, GenerateOptions},
    crypto::sha256,
    domain::token::TokenKind,
    server::{self, Server},
    storage::NewOAuth2Session,
};

struct Options {
    database_url: Option<String>,
    duration: u64,
    connections: u32,
    threads: u32,
    /// Rate limits on (the default) or off (`--no-rate-limits`).
    rate_limits: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        database_url: None,
        duration: 10,
        connections: 16,
        threads: 2,
        rate_limits: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--database-url" => options.database_url = Some(value("--database-url")?),
            "--duration" => {
                options.duration = value("--duration")?
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?
            }
            "--connections" => {
                options.connections = value("--connections")?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--threads" => {
                options.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--no-rate-limits" => options.rate_limits = false,
            // cargo bench passes --bench to every bench binary
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument `{other}` (see the file's doc comment)"
                ))
            }
        }
    }
    Ok(options)
}

fn lua(method: &str, body: &str, headers: &[(&str, &str)]) -> String {
    let mut script = format!("wrk.method = \"{method}\"\nwrk.body = \"{body}\"\n");
    for (name, value) in headers {
        script.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    script
}

/// Runs wrk; returns its report's interesting lines.
fn wrk(options: &Options, url: &str, script: Option<&Path>) -> Result<String, String> {
    let mut command = Command::new("wrk");
    command.args([
        format!("-t{}", options.threads),
        format!("-c{}", options.connections),
        format!("-d{}s", options.duration),
        "--latency".to_owned(),
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .map_err(|e| format!("can't run wrk ({e}); install it: apt-get install wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok(text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("Requests/sec")
                || l.starts_with("Latency")
                || l.starts_with("50%")
                || l.starts_with("99%")
                || l.starts_with("Non-2xx")
                || l.contains("requests in")
        })
        .map(|l| format!("    {}", l.trim()))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(e) = runtime.block_on(run(options)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(options: Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let database_url = options
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let entropy = Entropy::system();
    let text = config::generate(
        &mut entropy.rng.rng(),
        entropy.clock.as_ref(),
        &GenerateOptions {
            issuer: format!("http://{addr}/"),
            listen: addr.to_string(),
            database_url,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    // The token endpoint's rate limit stays on (each request pays for its check) with a quota
    // this load never reaches: the default (100 a second per client) would answer most of it
    // 429. `--no-rate-limits` turns every limit off, to measure what the checks cost.
    let rate_limits = if options.rate_limits { "true" } else { "false" };
    let overrides = [
        (
            "PROVIDER__CLIENTS__0__GRANT_TYPES".to_owned(),
            "[authorization_code, refresh_token, client_credentials]".to_owned(),
        ),
        (
            "PROVIDER__RATE_LIMITING__ENABLED".to_owned(),
            rate_limits.to_owned(),
        ),
        (
            "PROVIDER__RATE_LIMITING__TOKEN__PER_CLIENT__BURST".to_owned(),
            "100000".to_owned(),
        ),
        (
            "PROVIDER__RATE_LIMITING__TOKEN__PER_CLIENT__PER_SECOND".to_owned(),
            "1000000".to_owned(),
        ),
    ];
    let (_, settings) =
        config::parse(&text, overrides, Path::new(".")).map_err(|p| format!("{p:?}"))?;
    let storage = server::open_storage(&settings, entropy.clone())
        .await
        .map_err(|e| e.to_string())?;
    server::prepare(&storage, &settings, true)
        .await
        .map_err(|e| e.to_string())?;

    // A user's session with a long-lived access token, as the homeserver would introspect.
    let access_token = TokenKind::AccessToken.generate(&mut entropy.rng.rng());
    let static_client = settings.clients[0].clone();
    {
        let mut repo = storage.begin().await.map_err(|e| e.to_string())?;
        let username = format!("bench{}", entropy.clock.now().timestamp_millis());
        let user = repo
            .users()
            .add(&username)
            .await
            .map_err(|e| e.to_string())?;
        let client = repo
            .clients()
            .find_by_client_id(&static_client.client_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the static client was not synced")?;
        let session = repo
            .oauth2_sessions()
            .add(NewOAuth2Session {
                user_id: Some(user.id),
                client_id: client.id,
                browser_session_id: None,
                scope: "openid urn:matrix:client:api:* urn:matrix:client:device:BENCHDEVICE",
                device_id: Some("BENCHDEVICE"),
                user_agent: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        repo.access_tokens()
            .add(
                session.id,
                &sha256(&access_token),
                Some(entropy.clock.now() + ChronoDuration::hours(1)),
            )
            .await
            .map_err(|e| e.to_string())?;
        repo.commit().await.map_err(|e| e.to_string())?;
    }

    let secret = settings.matrix.secret.clone();
    let kind = storage.kind().name();
    let server =
        Server::from_listener(listener, settings, storage.clone()).map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let base = format!("http://{addr}");
    let introspect = dir.path().join("introspect.lua");
    let body = format!("token={access_token}&token_type_hint=access_token");
    std::fs::write(
        &introspect,
        lua(
            "POST",
            &body,
            &[
                ("Authorization", &format!("Bearer {secret}")),
                ("X-MAS-Supports-Device-Id", "1"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
        ),
    )
    .map_err(|e| e.to_string())?;
    let token = dir.path().join("token.lua");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!(
            "{}:{}",
            static_client.client_id,
            static_client.secret.unwrap_or_default()
        ),
    );
    std::fs::write(
        &token,
        lua(
            "POST",
            "grant_type=client_credentials",
            &[
                ("Authorization", &format!("Basic {basic}")),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
        ),
    )
    .map_err(|e| e.to_string())?;

    println!(
        "provider hot paths on {kind}, wrk -t{} -c{} -d{}s, {} cores",
        options.threads,
        options.connections,
        options.duration,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    // Each path is checked once first: a bench of error answers would be meaningless.
    let client = reqwest::Client::new();
    let check = client
        .post(format!("{base}/oauth2/introspect"))
        .bearer_auth(&secret)
        .header("X-MAS-Supports-Device-Id", "1")
        .form(&[("token", access_token.as_str())])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json::<serde_json::Value>()
        .await
        .map_err(|e| e.to_string())?;
    if check["active"] != true {
        return Err(format!(
            "the seeded token does not introspect as active: {check}"
        ));
    }
    for (name, url, script) in [
        (
            "discovery",
            format!("{base}/.well-known/openid-configuration"),
            None,
        ),
        (
            "introspection",
            format!("{base}/oauth2/introspect"),
            Some(introspect.as_path()),
        ),
        (
            "token issuance (client_credentials)",
            format!("{base}/oauth2/token"),
            Some(token.as_path()),
        ),
    ] {
        println!("{name}:\n{}", wrk(&options, &url, script)?);
    }
    let _ = tx.send(());
    let _ = serving.await;
    storage.close().await;
    Ok(())
}
