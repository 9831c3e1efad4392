//! Builds the HTTP application from the settings and the storage. Used by `provider serve`, the
//! playground and the integration tests alike.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{MatchedPath, State},
    http::{Method, Request, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use tower_http::{
    cors::{Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    config::Settings,
    endpoints, oauth2,
    storage::Storage,
    web::{self, Chrome, Templates},
};

/// Documents that never change while the server runs, serialised once.
#[derive(Debug)]
pub struct Documents {
    pub metadata: Bytes,
    pub jwks: Bytes,
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub storage: Storage,
    pub documents: Arc<Documents>,
    pub templates: Arc<Templates>,
}

impl AppState {
    pub fn new(settings: Settings, storage: Storage) -> Self {
        let metadata = oauth2::discovery::ProviderMetadata::new(&settings);
        let documents = Documents {
            metadata: Bytes::from(serde_json::to_vec(&metadata).unwrap_or_default()),
            jwks: Bytes::from(settings.keystore.jwks().to_string()),
        };
        Self {
            settings: Arc::new(settings),
            storage,
            documents: Arc::new(documents),
            templates: Arc::new(Templates::new()),
        }
    }

    /// What every page shows besides its content.
    pub fn chrome(&self) -> Chrome<'_> {
        Chrome {
            site_name: &self.settings.matrix.homeserver,
            stylesheet: web::STYLESHEET,
        }
    }
}

/// The whole router, with request IDs, a tracing span per request and CORS on the public
/// documents (browser clients fetch them cross-origin).
pub fn router(state: AppState) -> Router {
    let public_documents = Router::new()
        .route(endpoints::OPENID_CONFIGURATION, get(oauth2::discovery::get))
        .route(
            endpoints::OAUTH_AUTHORIZATION_SERVER,
            get(oauth2::discovery::get),
        )
        .route(endpoints::JWKS, get(oauth2::jwks::get))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET])
                .max_age(Duration::from_secs(3600)),
        );

    Router::new()
        .merge(public_documents)
        .route(endpoints::AUTHORIZE, get(oauth2::authorize::get))
        .route(web::STYLESHEET, get(web::stylesheet))
        .route(endpoints::HEALTH, get(health))
        .fallback(not_found)
        .with_state(state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or(request.uri().path(), MatchedPath::as_str);
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), route, request_id = id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// `GET /health`: 200 when the database answers, 503 otherwise.
async fn health(State(state): State<AppState>) -> Response {
    match state.storage.ping().await {
        Ok(()) => Json(json!({ "status": "ok", "database": "ok" })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "error", "database": "unreachable" })),
            )
                .into_response()
        }
    }
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "not_found",
            "error_description": format!("nothing is served at {}", uri.path()),
        })),
    )
        .into_response()
}
