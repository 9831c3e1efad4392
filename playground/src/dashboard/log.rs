//! The exchange log's page, its live stream (server-sent events: the backlog first, then each
//! new exchange; a reconnecting browser sends `Last-Event-ID` and gets only what it missed) and
//! the backlog as JSON.

use std::convert::Infallible;

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures_util::{stream, Stream, StreamExt as _};
use minijinja::context;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::Dashboard;
use crate::exchange::{self, Entry};

/// `GET /log`.
pub async fn page(State(d): State<Dashboard>) -> Response {
    d.render(
        "log.html",
        "/log",
        context! { capacity => exchange::CAPACITY },
    )
}

#[derive(Debug, Deserialize)]
pub struct After {
    #[serde(default)]
    after: u64,
}

/// `GET /log.json[?after=ID]`: the kept exchanges, oldest first.
pub async fn entries(State(d): State<Dashboard>, Query(q): Query<After>) -> Response {
    let entries = d.log.entries_after(q.after);
    Json(entries.iter().map(AsRef::as_ref).collect::<Vec<&Entry>>()).into_response()
}

fn event(entry: &Entry) -> Event {
    Event::default()
        .event("exchange")
        .id(entry.id.to_string())
        .json_data(entry)
        .unwrap_or_else(|_| Event::default().comment("an exchange could not be encoded"))
}

/// `GET /log/events`: server-sent events, one `exchange` event per exchange.
pub async fn events(
    State(d): State<Dashboard>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Subscribe first, then read the backlog: nothing falls between the two.
    let live = d.log.subscribe();
    let backlog = d.log.entries_after(last_seen);
    let sent = backlog.last().map_or(last_seen, |e| e.id);
    let backlog = stream::iter(backlog.into_iter().map(|e| Ok(event(&e))));
    let live = stream::unfold((live, sent), |(mut live, sent)| async move {
        loop {
            match live.recv().await {
                Ok(entry) if entry.id <= sent => continue,
                Ok(entry) => {
                    let id = entry.id;
                    return Some((Ok(event(&entry)), (live, id)));
                }
                Err(RecvError::Lagged(missed)) => {
                    let note = Event::default().event("lagged").data(missed.to_string());
                    return Some((Ok(note), (live, sent)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut stop = d.stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    Sse::new(backlog.chain(live).take_until(stopped)).keep_alive(KeepAlive::default())
}
