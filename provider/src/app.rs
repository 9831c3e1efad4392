//! Builds the HTTP application from the settings and the storage. Used by `provider serve`, the
//! playground and the integration tests alike.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, State},
    http::{header, Method, Request, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tower_http::{
    cors::{Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::http::AppState;
use crate::{
    endpoints,
    http::{admin, compat, kit, oauth2, upstream, web},
};

/// The whole router, with request IDs, a tracing span per request and CORS where browser
/// clients call cross-origin: the public documents, and the API endpoints a client running in
/// a page uses (token, revocation, userinfo, device authorization; registration sets its own).
/// None of them reads cookies, so any origin may call them. The pages, and introspection (a
/// server-to-server call), get no CORS.
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

    let browser_api = Router::new()
        .route(endpoints::TOKEN, post(oauth2::token::post))
        .route(endpoints::REVOCATION, post(oauth2::revocation::post))
        .route(
            endpoints::USERINFO,
            get(oauth2::userinfo::get).post(oauth2::userinfo::post),
        )
        .route(endpoints::DEVICE_AUTHORIZATION, post(oauth2::device::post))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(Duration::from_secs(3600)),
        );

    Router::new()
        .merge(public_documents)
        .merge(browser_api)
        .merge(compat::routes())
        .route(endpoints::AUTHORIZE, get(oauth2::authorize::get))
        .route(endpoints::INTROSPECTION, post(oauth2::introspection::post))
        .route(endpoints::END_SESSION, get(web::logout::handle).post(web::logout::handle))
        .route(web::register::PATH, get(web::register::get).post(web::register::post))
        .route(web::login::PATH, get(web::login::get).post(web::login::post))
        .route(
            &format!("{}/{{grant}}", endpoints::CONSENT),
            get(oauth2::authorize::consent::get).post(oauth2::authorize::consent::post),
        )
        .route(endpoints::REGISTRATION, oauth2::registration::route())
        .route(endpoints::LINK, get(web::link::get).post(web::link::post))
        .route(endpoints::LINK_APPROVE, post(web::link::approve))
        .route(endpoints::ACCOUNT, get(web::account::get).post(web::account::post))
        .route(web::recover::PATH, get(web::recover::get).post(web::recover::post))
        .route(
            web::register_verify::PATH,
            get(web::register_verify::get).post(web::register_verify::post),
        )
        .route(
            web::recover::TICKET_PATH,
            get(web::recover::get_ticket).post(web::recover::post_ticket),
        )
        .merge(admin::router())
        .merge(upstream::routes())
        .route(kit::STYLESHEET, get(kit::stylesheet))
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
