//! The exchange log: every HTTP request the provider and the homeserver receive, from clients
//! and from each other, with its answer: method, path, status, duration, a few headers and the
//! bodies, secrets elided. The last [`CAPACITY`] are kept; each new one is also published, so
//! the dashboard can stream them live (server-sent events).
//!
//! Headers are shown as received, credentials elided (`Authorization` keeps its scheme; cookie
//! values go). [`tap`] puts the recording layer around a router. Bodies are buffered up to
//! [`MAX_BODY_BYTES`] to be shown, then passed on unchanged (a larger body is passed on whole
//! and only noted); HTML pages, style sheets and other non-API answers are not buffered at all.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    body::{Body, Bytes, HttpBody as _},
    extract::{Request, State},
    http::{header, HeaderMap},
    middleware::{self, Next},
    response::Response,
    Router,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use provider::clock::Clock;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// What the dashboard's own HTTP client calls itself; the log tells its requests by it.
pub const USER_AGENT_PREFIX: &str = "playground-dashboard/";

/// How many exchanges are kept.
pub const CAPACITY: usize = 500;
/// Bodies larger than this are passed on but not shown.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// What stands in for a secret.
pub const ELIDED: &str = "<elided>";

/// Names (of JSON members, form fields and query parameters, compared without case) whose
/// values are never shown.
const SECRET_NAMES: &[&str] = &[
    "password",
    "new_password",
    "client_secret",
    "client_assertion",
    "access_token",
    "refresh_token",
    "code",
    "code_verifier",
    "device_code",
    "token",
    "logintoken",
    "login_token",
    "id_token",
    "id_token_hint",
    "secret",
    "csrf",
];

/// Is this the name of a secret?
pub fn is_secret(name: &str) -> bool {
    SECRET_NAMES.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Which server received a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    Provider,
    Homeserver,
}

impl Server {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Homeserver => "homeserver",
        }
    }
}

/// One request and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Increasing from 1, in the order the answers were complete.
    pub id: u64,
    /// When the request arrived.
    pub at: DateTime<Utc>,
    /// Who sent it, as far as can be told: `client`, `dashboard`, `homeserver` or `provider`.
    pub from: &'static str,
    /// Who received it: `provider` or `homeserver`.
    pub to: Server,
    pub method: String,
    /// The path and query, secret parameters elided.
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub request: Message,
    pub response: Message,
}

/// A request's or an answer's headers (the ones worth showing) and body.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub body: Shown,
}

/// A body as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// `empty`, `json`, `form` (decoded, one field a line), `text` or `omitted`.
    pub kind: &'static str,
    pub text: String,
}

impl Shown {
    fn new(kind: &'static str, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
        }
    }
}

/// The log: cheap to clone, shared by the recording layers and the dashboard.
#[derive(Clone)]
pub struct ExchangeLog {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<LogState>,
    sender: broadcast::Sender<Arc<Entry>>,
    clock: Arc<dyn Clock>,
    capacity: usize,
}

struct LogState {
    next_id: u64,
    entries: VecDeque<Arc<Entry>>,
}

impl std::fmt::Debug for ExchangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeLog")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl ExchangeLog {
    /// A log keeping the last `capacity` exchanges, timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>, capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(256);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(LogState {
                    next_id: 1,
                    entries: VecDeque::with_capacity(capacity.min(1024)),
                }),
                sender,
                clock,
                capacity,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept exchanges with an ID above `after` (all with 0), oldest first.
    pub fn entries_after(&self, after: u64) -> Vec<Arc<Entry>> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect()
    }

    /// Every exchange recorded from now on. Subscribe before reading the backlog, then skip
    /// what the backlog held, and nothing falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.inner.sender.subscribe()
    }

    fn push(&self, make: impl FnOnce(u64) -> Entry) -> Arc<Entry> {
        let mut state = self.lock();
        let entry = Arc::new(make(state.next_id));
        state.next_id += 1;
        if state.entries.len() == self.inner.capacity {
            state.entries.pop_front();
        }
        state.entries.push_back(entry.clone());
        // Sent under the lock, so subscribers see the IDs in order. No subscriber is fine.
        let _ = self.inner.sender.send(entry.clone());
        entry
    }
}

/// Records every request `router` serves (as received by `to`) in `log`.
pub fn tap(router: Router, log: ExchangeLog, to: Server) -> Router {
    router.layer(middleware::from_fn_with_state((log, to), record))
}

async fn record(
    State((log, to)): State<(ExchangeLog, Server)>,
    request: Request,
    next: Next,
) -> Response {
    let at = log.inner.clock.now();
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let from = sender(to, request.uri().path(), request.headers());
    let request_headers = shown_headers(request.headers());
    let request_type = content_type(request.headers());

    let (parts, body) = request.into_parts();
    let (request_body, body) = capture(body).await;
    let response = next.run(Request::from_parts(parts, body)).await;

    let (parts, body) = response.into_parts();
    let response_type = content_type(&parts.headers);
    let (response_body, body) = if is_api_body(&response_type) {
        capture(body).await
    } else {
        let size = body.size_hint().exact();
        let text = match size {
            Some(0) => String::new(),
            Some(n) => format!("({response_type}, {n} bytes)"),
            None => format!("({response_type})"),
        };
        (Captured::Skipped(text), body)
    };
    let response_headers = shown_headers(&parts.headers);
    let status = parts.status.as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    log.push(|id| Entry {
        id,
        at,
        from,
        to,
        method,
        path: elide_url(&path),
        status,
        duration_ms: (duration_ms * 100.0).round() / 100.0,
        request: Message {
            headers: request_headers,
            body: show(&request_type, request_body),
        },
        response: Message {
            headers: response_headers,
            body: show(&response_type, response_body),
        },
    });
    Response::from_parts(parts, body)
}

/// Who sent a request, told from what it asks and how: the homeserver's calls to the provider
/// (introspection, metadata; the legacy login API reaches the provider only through the
/// homeserver's reverse proxy), the provider's calls to the homeserver (`/_synapse/…`), the
/// dashboard's own calls, and everything else: clients.
fn sender(to: Server, path: &str, headers: &HeaderMap) -> &'static str {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match to {
        Server::Homeserver if path.starts_with("/_synapse/") => "provider",
        Server::Provider
            // The fake's agent, or real Synapse's (`Synapse/<version>`, `--homeserver synapse`).
            if agent.starts_with("fake-homeserver/")
                || agent.starts_with("Synapse/")
                || path.starts_with("/_matrix/") =>
        {
            "homeserver"
        }
        _ if agent.starts_with(USER_AGENT_PREFIX) => "dashboard",
        _ => "client",
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// JSON, forms and plain text are shown; pages, style sheets, images are not.
fn is_api_body(content_type: &str) -> bool {
    content_type.is_empty()
        || content_type.contains("json")
        || content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.starts_with("text/plain")
}

fn shown_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes());
            let shown = match name.as_str() {
                "authorization" | "proxy-authorization" => elide_authorization(&value),
                "cookie" => elide_cookies(&value, "; "),
                "set-cookie" => elide_cookies(&value, ";"),
                "location" => elide_url(&value),
                _ => value.into_owned(),
            };
            (name.as_str().to_owned(), shown)
        })
        .collect()
}

/// `name=<elided>` for each cookie (a `Set-Cookie` keeps its attributes).
fn elide_cookies(value: &str, separator: &str) -> String {
    let mut parts = value.split(';').map(str::trim);
    let cookies: Vec<String> = if separator == ";" {
        // Set-Cookie: the first part is the cookie, the rest are attributes.
        let first = parts.next().unwrap_or_default();
        std::iter::once(elide_cookie(first))
            .chain(parts.map(str::to_owned))
            .collect()
    } else {
        parts.map(elide_cookie).collect()
    };
    cookies.join(if separator == ";" { "; " } else { separator })
}

fn elide_cookie(pair: &str) -> String {
    match pair.split_once('=') {
        Some((name, _)) => format!("{name}={ELIDED}"),
        None => pair.to_owned(),
    }
}

/// `Bearer <elided>`: the scheme stays, the credentials go.
fn elide_authorization(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} {ELIDED}"),
        None => ELIDED.to_owned(),
    }
}

/// A body as read: whole, or too large (passed on, not shown), or not read at all.
enum Captured {
    Whole(Bytes),
    TooLarge(usize),
    Failed,
    Skipped(String),
}

/// Reads a body up to [`MAX_BODY_BYTES`] and gives back one that yields the same bytes.
async fn capture(body: Body) -> (Captured, Body) {
    let mut stream = body.into_data_stream();
    let mut read: Vec<u8> = Vec::new();
    loop {
        match stream.next().await {
            None => {
                let bytes = Bytes::from(read);
                return (Captured::Whole(bytes.clone()), Body::from(bytes));
            }
            Some(Ok(chunk)) => {
                read.extend_from_slice(&chunk);
                if read.len() > MAX_BODY_BYTES {
                    let seen = read.len();
                    let head = futures_util::stream::once(async move {
                        Ok::<_, axum::Error>(Bytes::from(read))
                    });
                    return (
                        Captured::TooLarge(seen),
                        Body::from_stream(head.chain(stream)),
                    );
                }
            }
            Some(Err(error)) => {
                let chunks = [Ok(Bytes::from(read)), Err(error)];
                return (
                    Captured::Failed,
                    Body::from_stream(futures_util::stream::iter(chunks)),
                );
            }
        }
    }
}

fn show(content_type: &str, body: Captured) -> Shown {
    let bytes = match body {
        Captured::Whole(bytes) => bytes,
        Captured::TooLarge(seen) => {
            return Shown::new("omitted", format!("(more than {seen} bytes: not shown)"))
        }
        Captured::Failed => return Shown::new("omitted", "(the body could not be read)"),
        Captured::Skipped(text) if text.is_empty() => return Shown::new("empty", ""),
        Captured::Skipped(text) => return Shown::new("omitted", text),
    };
    if bytes.is_empty() {
        return Shown::new("empty", "");
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return Shown::new("form", elide_form(&bytes));
    }
    if content_type.contains("json") || content_type.is_empty() {
        if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
            elide_json(&mut value);
            return Shown::new(
                "json",
                serde_json::to_string_pretty(&value).unwrap_or_default(),
            );
        }
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Shown::new("text", text),
        Err(_) => Shown::new("omitted", format!("({} bytes of binary data)", bytes.len())),
    }
}

/// Replaces the value of every secret member, at any depth.
pub fn elide_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, member) in map.iter_mut() {
                if is_secret(name) && !member.is_null() {
                    *member = Value::String(ELIDED.to_owned());
                } else {
                    elide_json(member);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(elide_json),
        _ => {}
    }
}

/// A form body, decoded, one `name=value` a line, secret values elided.
pub fn elide_form(body: &[u8]) -> String {
    url::form_urlencoded::parse(body)
        .map(|(name, value)| {
            let value = if is_secret(&name) {
                ELIDED.into()
            } else {
                value
            };
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Elides secret parameters in a URL's (or a path's) query and fragment, leaving the rest as
/// written.
pub fn elide_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (url, None),
    };
    let mut out = match before_fragment.split_once('?') {
        Some((path, query)) => format!("{path}?{}", elide_params(query)),
        None => before_fragment.to_owned(),
    };
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&elide_params(fragment));
    }
    out
}

fn elide_params(params: &str) -> String {
    params
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(&decode(name)) => format!("{name}={ELIDED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn decode(name: &str) -> String {
    url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use axum::routing::post;
    use serde_json::json;
    use tower::ServiceExt as _;

    use super::*;

    #[test]
    fn secrets_are_elided_everywhere() {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "hunter2",
            "tokens": [{"access_token": "mat_x", "expires_in": 300}],
            "refresh_token": null,
        });
        elide_json(&mut body);
        assert_eq!(body["password"], ELIDED);
        assert_eq!(body["identifier"]["user"], "alice");
        assert_eq!(body["tokens"][0]["access_token"], ELIDED);
        assert_eq!(body["tokens"][0]["expires_in"], 300);
        assert!(body["refresh_token"].is_null());

        assert_eq!(
            elide_form(b"grant_type=authorization_code&code=abc&Code_Verifier=v&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb"),
            "grant_type=authorization_code\ncode=<elided>\nCode_Verifier=<elided>\nredirect_uri=http://127.0.0.1/cb"
        );
        assert_eq!(
            elide_url("http://app/cb?state=s&code=c&iss=http%3A%2F%2Fx#access_token=t&token_type=Bearer"),
            "http://app/cb?state=s&code=<elided>&iss=http%3A%2F%2Fx#access_token=<elided>&token_type=Bearer"
        );
        assert_eq!(
            elide_url("/oauth2/logout?id_token_hint=eyJ&state=1"),
            "/oauth2/logout?id_token_hint=<elided>&state=1"
        );
        assert_eq!(elide_url("/path"), "/path");
        assert_eq!(elide_authorization("Bearer mat_abc"), "Bearer <elided>");
        assert_eq!(elide_authorization("garbage"), ELIDED);
        assert_eq!(elide_cookies("a=1; b=2", "; "), "a=<elided>; b=<elided>");
        assert_eq!(
            elide_cookies("session=xyz; Path=/; HttpOnly", ";"),
            "session=<elided>; Path=/; HttpOnly"
        );
    }

    #[tokio::test]
    async fn records_requests_without_changing_them() {
        let clock = Arc::new(provider::clock::MockClock::default());
        let log = ExchangeLog::new(clock, 2);
        let mut live = log.subscribe();
        let app =
            tap(
                Router::new().route(
                    "/echo",
                    post(|body: Bytes| async move {
                        ([(header::CONTENT_TYPE, "application/json")], body)
                    }),
                ),
                log.clone(),
                Server::Provider,
            );
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES));
        for body in [
            r#"{"access_token": "mat_1", "n": 1}"#.to_owned(),
            big.clone(),
        ] {
            let response = app
                .clone()
                .oneshot(
                    Request::post("/echo?code=1&x=2")
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::AUTHORIZATION, "Bearer secret")
                        .body(Body::from(body.clone()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let echoed = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(echoed, body.as_bytes(), "bodies pass through unchanged");
        }
        let entries = log.entries_after(0);
        assert_eq!(entries.len(), 2);
        let first = &entries[0];
        assert_eq!((first.id, first.status, first.from), (1, 200, "client"));
        assert_eq!(first.path, "/echo?code=<elided>&x=2");
        assert_eq!(first.request.body.kind, "json");
        assert!(first.request.body.text.contains("\"n\": 1"));
        assert!(!first.request.body.text.contains("mat_1"));
        assert!(first.response.body.text.contains(ELIDED));
        assert!(first
            .request
            .headers
            .contains(&("authorization".into(), "Bearer <elided>".into())));
        assert_eq!(entries[1].request.body.kind, "omitted");
        assert_eq!(live.recv().await.unwrap().id, 1);
        assert_eq!(live.recv().await.unwrap().id, 2);
        assert_eq!(log.entries_after(1).len(), 1);

        // Bounded: the oldest goes.
        let _ = app
            .oneshot(Request::post("/echo").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let ids: Vec<u64> = log.entries_after(0).iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
    }
}
