//! `GET /oauth2/keys.json`: the public signing keys (RFC 7517 §5), for verifying ID tokens.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use crate::http::AppState;

pub async fn get(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        state.documents.jwks.clone(),
    )
        .into_response()
}
