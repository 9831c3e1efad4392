//! The dashboard's own calls to the provider and the homeserver, each kept as a [`Step`] to
//! show: the request as sent and the answer as received.

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use url::Url;

/// One request and its answer, as shown on a panel.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub title: String,
    pub request: String,
    pub response: String,
    /// A 2xx answer.
    pub ok: bool,
}

/// A body to send.
pub enum Outgoing {
    Empty,
    Form(Vec<(&'static str, String)>),
    /// JSON; `shown` is what the panel shows (e.g. without the password).
    Json {
        body: Value,
        shown: Value,
    },
}

/// What came back.
pub struct Answer {
    pub step: Step,
    /// `None` when nothing came back.
    pub status: Option<u16>,
    /// The body, when it was JSON.
    pub json: Option<Value>,
}

impl Answer {
    /// A string member of a JSON answer.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.json.as_ref()?.get(name)?.as_str()
    }

    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends a request and keeps it and its answer for display.
pub async fn send(
    client: &reqwest::Client,
    title: &str,
    method: Method,
    url: Url,
    bearer: Option<&str>,
    body: Outgoing,
) -> Answer {
    let mut shown = format!("{method} {url}\n");
    let mut request = client.request(method, url);
    if let Some(token) = bearer {
        shown.push_str(&format!("Authorization: Bearer {token}\n"));
        request = request.bearer_auth(token);
    }
    match body {
        Outgoing::Empty => {}
        Outgoing::Form(fields) => {
            shown.push_str("Content-Type: application/x-www-form-urlencoded\n\n");
            let lines: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            shown.push_str(&lines.join("\n"));
            request = request.form(&fields);
        }
        Outgoing::Json { body, shown: seen } => {
            shown.push_str("Content-Type: application/json\n\n");
            shown.push_str(&serde_json::to_string_pretty(&seen).unwrap_or_default());
            request = request.json(&body);
        }
    }
    let (status, json, response) = match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let location = answer
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| format!("Location: {l}\n"))
                .unwrap_or_default();
            let text = answer.text().await.unwrap_or_default();
            let json = serde_json::from_str::<Value>(&text).ok();
            let body = match &json {
                Some(value) => serde_json::to_string_pretty(value).unwrap_or(text),
                None => text,
            };
            (
                Some(status.as_u16()),
                json,
                format!("HTTP {status}\n{location}\n{body}"),
            )
        }
        Err(error) => (None, None, format!("(no answer: {})", chain(&error))),
    };
    Answer {
        step: Step {
            title: title.to_owned(),
            request: shown,
            ok: status.is_some_and(|s| (200..300).contains(&s)),
            response,
        },
        status,
        json,
    }
}

/// An error and its causes, `: `-separated (reqwest's own message rarely says why).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
