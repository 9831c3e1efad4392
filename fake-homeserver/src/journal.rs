//! The journal: every call to the homeserver API (`/_synapse/*`), refused ones included, with
//! the status it was answered with, so tests can see exactly what the provider asked.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::json_body::read_body;
use crate::AppState;

/// One call to `/_synapse/*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    /// `GET`, `POST`…
    pub method: String,
    /// The path as received (still percent-encoded), e.g. `/_synapse/mas/upsert_device`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The JSON body; `Null` when there was none, a JSON string holding the raw text when the
    /// body was not JSON.
    pub body: Value,
    /// The status answered; `0` while the call is still being handled.
    pub status: u16,
}

/// Shared, append-only list of [`JournalEntry`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    entries: Arc<Mutex<Vec<JournalEntry>>>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JournalEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an entry and returns its index.
    fn push(&self, entry: JournalEntry) -> usize {
        let mut entries = self.lock();
        entries.push(entry);
        entries.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(entry) = self.lock().get_mut(index) {
            entry.status = status;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<JournalEntry> {
        self.lock().clone()
    }
}

/// Middleware over the whole router: records `/_synapse/*` calls in arrival order, and the
/// status once answered. It runs before the shared-secret check so refused calls are recorded.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/_synapse/") {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let (bytes, refusal) = match read_body(body).await {
        Ok(bytes) => (bytes, None),
        Err(error) => (Default::default(), Some(error)),
    };
    let body_value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let index = state.journal_log().push(JournalEntry {
        method: method.clone(),
        path: path.clone(),
        query,
        body: body_value,
        status: 0,
    });
    let response = match refusal {
        Some(error) => error.into_response(),
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    let status = response.status().as_u16();
    state.journal_log().set_status(index, status);
    tracing::info!(%method, %path, status, "homeserver API call");
    response
}
