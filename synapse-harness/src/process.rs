//! Shared pieces of running a child server: a free port, waiting for it to answer, log tails.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Child;
use url::Url;

use crate::Error;

/// A free TCP port on 127.0.0.1, found by binding port 0 and letting it go. Another process
/// could take it before the child binds it: the child then fails to start, but until it gives
/// up, the other process answers on the port. So each child's start checks that the server
/// answering is the child ([`wait_until_exists`] for nginx's pid file, Synapse's own signing
/// key), not only that something answers.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("looking for a free port"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("looking for a free port"))?
        .port();
    Ok(port)
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of each file that exists, each under its name.
pub(crate) fn log_tails(files: &[&Path], n: usize) -> String {
    let mut out = String::new();
    for file in files {
        if let Ok(bytes) = std::fs::read(file) {
            let text = String::from_utf8_lossy(&bytes);
            if text.trim().is_empty() {
                continue;
            }
            out.push_str(&format!("[{}]\n{}\n", file.display(), last_lines(&text, n)));
        }
    }
    if out.is_empty() {
        out.push_str("(no log output)");
    }
    out
}

/// Polls `check` every 100 ms until it holds, the child exits, or `limit` passes. `check`'s
/// `Err` says why not yet; the failure reason carries the last one.
pub(crate) async fn poll_child<F, Fut>(
    child: &mut Child,
    limit: Duration,
    mut check: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut last = String::from("not checked yet");
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("the process exited with {status} (last: {last})"));
        }
        match check().await {
            Ok(()) => return Ok(()),
            Err(why) => last = why,
        }
        if started.elapsed() > limit {
            return Err(format!("not ready within {limit:?} (last: {last})"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HTTP client of the readiness checks: loopback only, two seconds a request.
pub(crate) fn probe_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// Polls `GET url` ([`poll_child`]) until it answers `ok_status` (any status when `None`).
pub(crate) async fn wait_until_answering(
    child: &mut Child,
    url: &Url,
    ok_status: Option<u16>,
    limit: Duration,
) -> Result<(), String> {
    let http = &probe_client()?;
    poll_child(child, limit, || async move {
        let status = http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status()
            .as_u16();
        if ok_status.is_none_or(|ok| ok == status) {
            Ok(())
        } else {
            Err(format!("{url} answered {status}"))
        }
    })
    .await
}

/// Kills a child and reaps it.
pub(crate) async fn kill(child: &mut Child) {
    if let Err(error) = child.kill().await {
        tracing::warn!(%error, "could not kill a child process");
    }
}

/// Polls ([`poll_child`]) until `path` exists (such as a pid file a server writes once it
/// holds its ports).
pub(crate) async fn wait_until_exists(
    child: &mut Child,
    path: &Path,
    limit: Duration,
) -> Result<(), String> {
    poll_child(child, limit, || async move {
        if path.exists() {
            Ok(())
        } else {
            Err(format!("{} not written yet", path.display()))
        }
    })
    .await
}

/// What a server's own readiness check says when the server answering on a child's port is
/// not the child (see [`free_port`]); [`port_taken`] looks for it.
pub(crate) const ANOTHER_SERVER_ANSWERED: &str = "another server answered on its port";

/// Whether a child's start failed because another process held its port (see [`free_port`]):
/// its readiness check found [`ANOTHER_SERVER_ANSWERED`], or its log has the bind error.
pub(crate) fn port_taken(reason: &str, log_tail: &str) -> bool {
    reason.contains(ANOTHER_SERVER_ANSWERED) || log_tail.contains("Address already in use")
}

/// Runs `start` (a child's start on a port of [`free_port`]) again, up to three times in all,
/// while it fails because another process took that port ([`port_taken`]); any other outcome
/// is returned as it is.
pub(crate) async fn on_a_free_port<T, F, Fut>(what: &str, mut start: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut tries = 1;
    loop {
        match start().await {
            Err(Error::Start {
                reason, log_tail, ..
            }) if tries < 3 && port_taken(&reason, &log_tail) => {
                tracing::warn!(%reason, "{what}'s port was taken: starting it on another");
                tries += 1;
            }
            started => return started,
        }
    }
}
