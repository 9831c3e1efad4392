//! The record of a run: every request and response in order, under the step headings the
//! journey wrote, with secrets elided when they are recorded (so no later rendering can leak
//! them).
//!
//! Elision:
//! - `Authorization` header values keep their scheme only (`Bearer <elided>`); `Cookie` and
//!   `Set-Cookie` keep the cookie names only (`name=<elided>`).
//! - Fields named in [`SECRET_FIELDS`] in form bodies, JSON bodies (at any depth), HTML
//!   `<input>`s, and query or fragment parameters of URLs and `Location` headers: tokens and codes
//!   keep their first 4 characters (`mat_…`) when they are at least 12 characters long, else
//!   become `…`; passwords and client secrets become `<elided>`.
//! - Every secret seen once is remembered: later occurrences anywhere in an exchange (an ID
//!   token echoed in a page, a token in an error message) are replaced the same way.
//!
//! Notes are the client's own words and are not elided: never put a secret in one.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, MutexGuard},
};

use serde::Serialize;
use serde_json::Value;

/// The names of fields (form, JSON, query, HTML inputs) whose values are secrets.
pub const SECRET_FIELDS: &[&str] = &[
    "password",
    "password_confirm",
    "new_password",
    "client_secret",
    "client_assertion",
    "access_token",
    "refresh_token",
    "code",
    "code_verifier",
    "device_code",
    "token",
    "loginToken",
    "login_token",
    "id_token",
    "id_token_hint",
];

/// Fields never shown even in part.
const FULLY_HIDDEN: &[&str] = &[
    "password",
    "password_confirm",
    "new_password",
    "client_secret",
    "client_assertion",
];

/// What elided header values and fully hidden fields become.
const ELIDED: &str = "<elided>";

/// Secrets shorter than this are elided where they are found (by field name) but not searched
/// for elsewhere: a short value would match ordinary text.
const MIN_REMEMBERED: usize = 8;

/// Whether a field of this name holds a secret.
pub fn is_secret_field(name: &str) -> bool {
    SECRET_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// What a secret value of the field `name` is shown as.
pub fn elide_value(name: &str, value: &str) -> String {
    if FULLY_HIDDEN.iter().any(|f| f.eq_ignore_ascii_case(name)) {
        ELIDED.to_owned()
    } else {
        elide_token(value)
    }
}

/// A token or code: its first 4 characters when it is long enough to keep most of it hidden.
fn elide_token(value: &str) -> String {
    if value.chars().count() >= 12 {
        let prefix: String = value.chars().take(4).collect();
        format!("{prefix}…")
    } else {
        "…".to_owned()
    }
}

/// One HTTP request and its response.
#[derive(Clone, Debug, Serialize)]
pub struct Exchange {
    /// The step heading (the last [`Transcript::note`]) this exchange belongs to.
    pub step: Option<String>,
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<String>,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
}

/// One entry of a transcript: a note of the client, or an exchange.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Note { text: String },
    Exchange(Exchange),
}

type Sink = Box<dyn Fn(&Event) + Send + Sync>;

#[derive(Default)]
struct Inner {
    events: Mutex<Vec<Event>>,
    step: Mutex<Option<String>>,
    /// Secrets seen so far and what they are shown as, longest first.
    secrets: Mutex<Vec<(String, String)>>,
    sink: Option<Sink>,
}

/// Every request/response of a run, in order, with secrets elided. Cloning shares it.
#[derive(Clone, Default)]
pub struct Transcript {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcript")
            .field("events", &lock(&self.inner.events).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Transcript {
    pub fn new() -> Self {
        Self::default()
    }

    /// A transcript that also hands every event, once recorded (elided), to `sink`: the binary
    /// prints the transcript as it goes this way.
    pub fn with_sink(sink: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink: Some(Box::new(sink)),
                ..Inner::default()
            }),
        }
    }

    /// The exchanges so far.
    pub fn entries(&self) -> Vec<Exchange> {
        lock(&self.inner.events)
            .iter()
            .filter_map(|e| match e {
                Event::Exchange(x) => Some(x.clone()),
                Event::Note { .. } => None,
            })
            .collect()
    }

    /// The notes and exchanges so far.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.inner.events).clone()
    }

    /// A step heading ("token exchange (RFC 6749 §4.1.3)"); the exchanges after it belong to it.
    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        *lock(&self.inner.step) = Some(text.clone());
        self.push(Event::Note { text });
    }

    /// Records an exchange, eliding its secrets first. Its `step` defaults to the current one.
    pub fn record(&self, mut exchange: Exchange) {
        if exchange.step.is_none() {
            exchange.step = lock(&self.inner.step).clone();
        }
        let exchange = self.elide(exchange);
        self.push(Event::Exchange(exchange));
    }

    fn push(&self, event: Event) {
        lock(&self.inner.events).push(event.clone());
        if let Some(sink) = &self.inner.sink {
            sink(&event);
        }
    }

    /// Replaces every secret this transcript has seen in `text` (for error messages).
    pub fn elide_text(&self, text: &str) -> String {
        replace_known(text, &lock(&self.inner.secrets))
    }

    /// The readable transcript.
    pub fn render_text(&self) -> String {
        lock(&self.inner.events).iter().map(render_event).collect()
    }

    /// The JSON transcript: an array of events, `{"kind": "note", "text"}` or
    /// `{"kind": "exchange", "method", "url", …}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&*lock(&self.inner.events)).unwrap_or(Value::Null)
    }

    fn elide(&self, mut x: Exchange) -> Exchange {
        let mut found = Vec::new();
        x.url = elide_url(&x.url, &mut found);
        let request_type = header_value(&x.request_headers, "content-type");
        let response_type = header_value(&x.response_headers, "content-type");
        for (name, value) in x
            .request_headers
            .iter_mut()
            .chain(x.response_headers.iter_mut())
        {
            *value = elide_header(name, value, &mut found);
        }
        x.request_body = x
            .request_body
            .map(|b| elide_body(&b, request_type.as_deref(), &mut found));
        x.response_body = elide_body(&x.response_body, response_type.as_deref(), &mut found);

        let mut secrets = lock(&self.inner.secrets);
        for (secret, shown) in found {
            remember(&mut secrets, secret, shown);
        }
        let known = &*secrets;
        x.url = replace_known(&x.url, known);
        for (_, value) in x
            .request_headers
            .iter_mut()
            .chain(x.response_headers.iter_mut())
        {
            *value = replace_known(value, known);
        }
        x.request_body = x.request_body.map(|b| replace_known(&b, known));
        x.response_body = replace_known(&x.response_body, known);
        x
    }
}

/// Adds a secret (and its percent-encoded form) to the list searched for, longest first.
fn remember(secrets: &mut Vec<(String, String)>, secret: String, shown: String) {
    if secret.chars().count() < MIN_REMEMBERED {
        return;
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json_escaped = serde_json::to_string(&secret)
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default();
    for variant in [secret, encoded, json_escaped] {
        if !variant.is_empty() && !secrets.iter().any(|(s, _)| *s == variant) {
            secrets.push((variant, shown.clone()));
        }
    }
    secrets.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
}

fn replace_known(text: &str, secrets: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (secret, shown) in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), shown);
        }
    }
    text
}

fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Elides a header value; the secrets found are added to `found` as (secret, shown).
fn elide_header(name: &str, value: &str, found: &mut Vec<(String, String)>) -> String {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "authorization" | "proxy-authorization" => match value.split_once(' ') {
            Some((scheme, credentials)) => {
                found.push((credentials.trim().to_owned(), ELIDED.to_owned()));
                format!("{scheme} {ELIDED}")
            }
            None => {
                found.push((value.to_owned(), ELIDED.to_owned()));
                ELIDED.to_owned()
            }
        },
        "cookie" => value
            .split(';')
            .map(|pair| elide_cookie_pair(pair.trim(), found))
            .collect::<Vec<_>>()
            .join("; "),
        "set-cookie" => {
            let (first, attributes) = match value.split_once(';') {
                Some((first, rest)) => (first, Some(rest)),
                None => (value, None),
            };
            let mut shown = elide_cookie_pair(first.trim(), found);
            if let Some(attributes) = attributes {
                shown.push(';');
                shown.push_str(attributes);
            }
            shown
        }
        "location" | "content-location" | "refresh" => elide_url(value, found),
        _ => value.to_owned(),
    }
}

fn elide_cookie_pair(pair: &str, found: &mut Vec<(String, String)>) -> String {
    match pair.split_once('=') {
        Some((name, value)) => {
            if !value.is_empty() {
                found.push((value.to_owned(), ELIDED.to_owned()));
            }
            format!("{name}={ELIDED}")
        }
        None => pair.to_owned(),
    }
}

/// Elides the secret parameters of a URL's query and fragment (absolute or relative URL, or
/// any text: only what follows `?` and `#` is looked at).
pub(crate) fn elide_url(url: &str, found: &mut Vec<(String, String)>) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((a, b)) => (a, Some(b)),
        None => (url, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (before_fragment, None),
    };
    let mut out = path.to_owned();
    if let Some(query) = query {
        out.push('?');
        out.push_str(&elide_pairs(query, found));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&elide_pairs(fragment, found));
    }
    out
}

/// Elides the secret fields of `application/x-www-form-urlencoded` text; the text is left as it
/// is when it has none.
fn elide_pairs(encoded: &str, found: &mut Vec<(String, String)>) -> String {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !pairs.iter().any(|(k, _)| is_secret_field(k)) {
        return encoded.to_owned();
    }
    // The elided values are written as they are (`code=mat_…`), not percent-encoded: the
    // transcript is for people.
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    pairs
        .iter()
        .map(|(name, value)| {
            if is_secret_field(name) && !value.is_empty() {
                let shown = elide_value(name, value);
                found.push((value.clone(), shown.clone()));
                format!("{}={shown}", encode(name))
            } else {
                format!("{}={}", encode(name), encode(value))
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Elides a body by its content type (or its look, without one): JSON, form, HTML.
pub(crate) fn elide_body(
    body: &str,
    content_type: Option<&str>,
    found: &mut Vec<(String, String)>,
) -> String {
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
    let trimmed = body.trim_start();
    let looks_json = trimmed.starts_with('{') || trimmed.starts_with('[');
    if content_type.contains("json") || (content_type.is_empty() && looks_json) {
        if let Ok(mut value) = serde_json::from_str::<Value>(body) {
            if elide_json(&mut value, found) {
                return value.to_string();
            }
            return body.to_owned();
        }
    }
    if content_type.contains("x-www-form-urlencoded") {
        return elide_pairs(body, found);
    }
    if content_type.contains("html") || trimmed.starts_with('<') {
        return elide_html_inputs(body, found);
    }
    body.to_owned()
}

/// Elides the string values of secret members at any depth; whether anything changed.
fn elide_json(value: &mut Value, found: &mut Vec<(String, String)>) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (name, member) in map.iter_mut() {
                match member {
                    Value::String(s) if is_secret_field(name) && !s.is_empty() => {
                        let shown = elide_value(name, s);
                        found.push((s.clone(), shown.clone()));
                        *s = shown;
                        changed = true;
                    }
                    other => changed |= elide_json(other, found),
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| elide_json(item, found) | changed),
        _ => false,
    }
}

/// One attribute of a tag: its name and the byte range of its value (without quotes).
struct Attribute<'a> {
    name: &'a str,
    value: Option<std::ops::Range<usize>>,
}

/// The attributes of the tag text `tag` (from after the tag name to before `>`).
fn attributes(tag: &str) -> Vec<Attribute<'_>> {
    let bytes = tag.as_bytes();
    let mut attrs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'/' | b'>')
        {
            i += 1;
        }
        let name = &tag[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = None;
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let value_start = i + 1;
                let end = tag[value_start..]
                    .bytes()
                    .position(|b| b == quote)
                    .map_or(bytes.len(), |p| value_start + p);
                value = Some(value_start..end);
                i = (end + 1).min(bytes.len());
            } else {
                let value_start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = Some(value_start..i);
            }
        }
        if name.is_empty() {
            i += 1;
        } else {
            attrs.push(Attribute { name, value });
        }
    }
    attrs
}

/// Elides the `value` of every `<input>` whose `name` is a secret field.
fn elide_html_inputs(html: &str, found: &mut Vec<(String, String)>) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(offset) = lower[search..].find("<input") {
        let tag_start = search + offset + "<input".len();
        let tag_end = lower[tag_start..]
            .find('>')
            .map_or(html.len(), |p| tag_start + p);
        search = tag_end;
        let tag = &html[tag_start..tag_end];
        let attrs = attributes(tag);
        let secret_name = attrs.iter().find_map(|a| {
            let value = a.value.clone()?;
            (a.name.eq_ignore_ascii_case("name") && is_secret_field(&tag[value.clone()]))
                .then(|| tag[value].to_owned())
        });
        let Some(field) = secret_name else { continue };
        let Some(range) = attrs
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case("value"))
            .and_then(|a| a.value.clone())
        else {
            continue;
        };
        let raw = &tag[range.clone()];
        if raw.is_empty() {
            continue;
        }
        let value = unescape_html(raw);
        let shown = elide_value(&field, &value);
        found.push((value.clone(), shown.clone()));
        if raw != value {
            found.push((raw.to_owned(), shown.clone()));
        }
        out.push_str(&html[copied..tag_start + range.start]);
        out.push_str(&shown);
        copied = tag_start + range.end;
    }
    out.push_str(&html[copied..]);
    out
}

/// The few entities templates write into attribute values.
fn unescape_html(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// Response headers worth showing in the readable transcript.
const SHOWN_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "cache-control",
    "www-authenticate",
    "set-cookie",
    "retry-after",
];

/// The longest body shown in the readable transcript.
const MAX_SHOWN_BODY: usize = 4000;

/// One event as readable text (what the binary prints as it goes).
pub fn render_event(event: &Event) -> String {
    let mut out = String::new();
    match event {
        Event::Note { text } => {
            let _ = writeln!(out, "\n== {text}");
        }
        Event::Exchange(x) => {
            let _ = writeln!(out, "→ {} {}", x.method, x.url);
            for (name, value) in &x.request_headers {
                let _ = writeln!(out, "  {name}: {value}");
            }
            if let Some(body) = &x.request_body {
                let content_type = header_value(&x.request_headers, "content-type");
                render_body(&mut out, body, content_type.as_deref());
            }
            let _ = writeln!(out, "← {} {}", x.status, reason(x.status));
            for (name, value) in &x.response_headers {
                if SHOWN_RESPONSE_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    let _ = writeln!(out, "  {name}: {value}");
                }
            }
            let content_type = header_value(&x.response_headers, "content-type");
            render_body(&mut out, &x.response_body, content_type.as_deref());
        }
    }
    out
}

fn render_body(out: &mut String, body: &str, content_type: Option<&str>) {
    if body.trim().is_empty() {
        return;
    }
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
    let shown = if content_type.contains("html") {
        let title = html_title(body).unwrap_or_default();
        format!("[HTML page \"{title}\", {} bytes]", body.len())
    } else if let Ok(value) = serde_json::from_str::<Value>(body) {
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| body.to_owned())
    } else if body.len() > MAX_SHOWN_BODY {
        let end = (0..=MAX_SHOWN_BODY)
            .rev()
            .find(|i| body.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &body[..end], body.len())
    } else {
        body.to_owned()
    };
    for line in shown.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    Some(
        html[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn exchange(url: &str) -> Exchange {
        Exchange {
            step: None,
            method: "POST".into(),
            url: url.into(),
            request_headers: Vec::new(),
            request_body: None,
            status: 200,
            response_headers: Vec::new(),
            response_body: String::new(),
        }
    }

    #[test]
    fn tokens_keep_a_prefix_passwords_nothing() {
        assert_eq!(elide_value("access_token", "mat_abcdefghijklmnop"), "mat_…");
        assert_eq!(elide_value("code", "short"), "…");
        assert_eq!(elide_value("password", "correct horse battery"), ELIDED);
    }

    #[test]
    fn an_exchange_is_elided_when_recorded() {
        let t = Transcript::new();
        t.note("token exchange");
        let mut x = exchange("https://auth.test/oauth2/token");
        x.request_headers = vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("authorization".into(), "Basic Y2xpZW50OnNlY3JldA==".into()),
        ];
        x.request_body = Some(
            "grant_type=authorization_code&code=CODEabcdefghijklmn&code_verifier=VERIFIERxyzxyzxyz&client_id=abc"
                .into(),
        );
        x.response_headers = vec![
            ("content-type".into(), "application/json".into()),
            (
                "set-cookie".into(),
                "session=COOKIEvalue123; Path=/; HttpOnly".into(),
            ),
        ];
        x.response_body = json!({
            "access_token": "mat_ACCESSaccessACCESS",
            "refresh_token": "mar_REFRESHrefreshREF",
            "token_type": "Bearer",
            "nested": [{ "id_token": "eyJIDTOKENidtokenIDTOKEN" }],
        })
        .to_string();
        t.record(x);

        let recorded = &t.entries()[0];
        assert_eq!(recorded.step.as_deref(), Some("token exchange"));
        assert_eq!(
            recorded.request_body.as_deref(),
            Some("grant_type=authorization_code&code=CODE…&code_verifier=VERI…&client_id=abc")
        );
        assert_eq!(recorded.request_headers[1].1, "Basic <elided>");
        assert_eq!(
            recorded.response_headers[1].1,
            "session=<elided>; Path=/; HttpOnly"
        );
        let body: Value = serde_json::from_str(&recorded.response_body).unwrap();
        assert_eq!(body["access_token"], "mat_…");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["nested"][0]["id_token"], "eyJI…");

        // The ID token echoed later in a page is elided too.
        let mut page =
            exchange("https://auth.test/oauth2/logout?id_token_hint=eyJIDTOKENidtokenIDTOKEN");
        page.method = "GET".into();
        page.response_headers = vec![("content-type".into(), "text/html".into())];
        page.response_body =
            "<p>eyJIDTOKENidtokenIDTOKEN</p><input type=hidden name=\"state\" value=\"s\">".into();
        t.record(page);
        let text = t.render_text();
        assert!(!text.contains("IDTOKENidtoken"), "{text}");
        assert!(!t.to_json().to_string().contains("IDTOKENidtoken"));
    }

    #[test]
    fn location_headers_and_fragments() {
        let mut found = Vec::new();
        assert_eq!(
            elide_url(
                "http://127.0.0.1/callback?state=xyz&code=abcdefghijklmnop&iss=https%3A%2F%2Fa.test%2F",
                &mut found
            ),
            "http://127.0.0.1/callback?state=xyz&code=abcd…&iss=https%3A%2F%2Fa.test%2F"
        );
        assert_eq!(
            elide_url("/cb#loginToken=LOGINloginLOGIN", &mut found),
            "/cb#loginToken=LOGI…"
        );
        // Nothing secret: unchanged, byte for byte.
        assert_eq!(
            elide_url("/login?next=%2Flink", &mut found),
            "/login?next=%2Flink"
        );
    }

    #[test]
    fn html_inputs() {
        let mut found = Vec::new();
        let html = r#"<form><INPUT type="hidden" name="csrf" value="c1"><input name='id_token_hint' value='eyJhbGciOi.payload.sig' type=hidden><input name=code value=ABCD-EFGH></form>"#;
        assert_eq!(
            elide_html_inputs(html, &mut found),
            r#"<form><INPUT type="hidden" name="csrf" value="c1"><input name='id_token_hint' value='eyJh…' type=hidden><input name=code value=…></form>"#
        );
    }

    #[test]
    fn notes_and_exchanges_render_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let t = Transcript::with_sink(move |e| lock(&sink).push(render_event(e)));
        t.note("discovery");
        let mut x = exchange("https://hs.test/_matrix/client/versions");
        x.method = "GET".into();
        x.response_headers = vec![("content-type".into(), "application/json".into())];
        x.response_body = r#"{"versions":["v1.15"]}"#.into();
        t.record(x);
        let text = t.render_text();
        assert_eq!(lock(&seen).concat(), text);
        assert!(
            text.starts_with(
                "\n== discovery\n→ GET https://hs.test/_matrix/client/versions\n← 200 OK\n"
            ),
            "{text}"
        );
        assert_eq!(t.to_json()[0], json!({"kind": "note", "text": "discovery"}));
        assert_eq!(t.to_json()[1]["kind"], "exchange");
        assert_eq!(t.to_json()[1]["step"], "discovery");
    }

    /// Secrets made so that they can't occur in the fixed text around them.
    fn secret() -> impl Strategy<Value = String> {
        "[A-Z]{2}[0-9]{2}[a-zA-Z0-9_~.-]{6,40}"
    }

    proptest! {
        #[test]
        fn secrets_never_appear_in_the_renderings(
            access in secret(),
            refresh in secret(),
            password in secret(),
            code in secret(),
            login_token in secret(),
            cookie in secret(),
            id_token in secret(),
            device_code in secret(),
        ) {
            let t = Transcript::new();
            t.note("a step");
            // A token response, a form with the code and the password, a bearer request.
            let mut x = exchange("https://auth.test/oauth2/token");
            x.request_headers = vec![
                ("content-type".into(), "application/x-www-form-urlencoded".into()),
                ("authorization".into(), format!("Bearer {access}")),
                ("cookie".into(), format!("a={cookie}; b=2")),
            ];
            x.request_body = Some(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("code", &code)
                    .append_pair("password", &password)
                    .append_pair("device_code", &device_code)
                    .finish(),
            );
            x.response_headers = vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), format!("http://127.0.0.1/sso?loginToken={login_token}&code={code}")),
                ("set-cookie".into(), format!("s={cookie}; Path=/")),
            ];
            x.response_body = json!({
                "access_token": access,
                "refresh_token": refresh,
                "deep": {"list": [{"id_token": id_token}]},
            }).to_string();
            t.record(x);
            // Echoes of the secrets in places without a field name.
            let mut echo = exchange(&format!("https://hs.test/cb?loginToken={login_token}&x={refresh}"));
            echo.request_headers = vec![("content-type".into(), "application/json".into())];
            echo.request_body = Some(json!({"type": "m.login.token", "token": login_token}).to_string());
            echo.response_headers = vec![("content-type".into(), "text/html".into())];
            echo.response_body = format!(
                "<p>{id_token} {access} {device_code}</p><input type=\"hidden\" name=\"id_token_hint\" value=\"{id_token}\">"
            );
            t.record(echo);

            let text = t.render_text();
            let json = t.to_json().to_string();
            let entries = format!("{:?}", t.entries());
            for s in [&access, &refresh, &password, &code, &login_token, &cookie, &id_token, &device_code] {
                prop_assert!(!text.contains(s.as_str()), "{} in {}", s, text);
                prop_assert!(!json.contains(s.as_str()), "{} in {}", s, json);
                prop_assert!(!entries.contains(s.as_str()), "{} in {}", s, entries);
            }
        }
    }
}
