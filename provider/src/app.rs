//! Builds the HTTP application from the settings and the storage. Used by `provider serve`, the
//! playground and the integration tests alike.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, State},
    http::{header, Method, Request, StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tower::{Layer as _, ServiceExt as _};
use tower_http::{
    cors::{Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::http::AppState;
use crate::{
    core::rate_limit::{ClientIp, Limit},
    endpoints,
    http::{
        admin, compat,
        kit::{
            self,
            edge::{self, Door, Route},
        },
        oauth2, upstream, web,
    },
};

/// The largest body of an OAuth API request, a page's form or a Matrix API request: a token
/// request with a client assertion is a few KiB.
const SMALL_BODY: usize = 64 * 1024;
/// The largest body of an admin API request.
const ADMIN_BODY: usize = 1024 * 1024;

/// What the edge ([`kit::edge`]) checks on a path, and in which door's shape it refuses: the
/// body limit, the per-IP limit of the unauthenticated requests that store a row (client
/// registration, device authorization, `/authorize`, the legacy SSO redirect), and whether
/// the parameter bounds apply.
fn edge_route(path: &str) -> Route {
    if let Some(rest) = endpoints::MATRIX_CLIENT_PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
    {
        let route = Route::new(Door::Matrix, SMALL_BODY);
        let sso = endpoints::COMPAT_SSO_REDIRECT;
        let is_sso = rest == sso || rest.strip_prefix(sso).is_some_and(|r| r.starts_with('/'));
        return if is_sso {
            route.limited(Method::GET, Limit::CompatSsoRedirect)
        } else {
            route
        };
    }
    if path.starts_with("/api/") {
        return Route::new(Door::Admin, ADMIN_BODY);
    }
    match path {
        endpoints::REGISTRATION => {
            Route::new(Door::Registration, oauth2::registration::MAX_BODY_BYTES)
                .limited(Method::POST, Limit::ClientRegistration)
        }
        endpoints::DEVICE_AUTHORIZATION => {
            Route::new(Door::OAuth, SMALL_BODY).limited(Method::POST, Limit::DeviceAuthorization)
        }
        endpoints::AUTHORIZE => {
            Route::new(Door::Browser, SMALL_BODY).limited(Method::GET, Limit::Authorize)
        }
        endpoints::END_SESSION => Route::new(Door::Browser, SMALL_BODY),
        // Signed in; each field is checked by the account code, which says what is wrong next
        // to it (a display name with a line break, an address with a space).
        endpoints::ACCOUNT => Route::new(Door::Browser, SMALL_BODY).forms_checked_by_handler(),
        // The upstream provider's answer: its values are its own (an ID token may be long).
        p if p.starts_with(endpoints::UPSTREAM_CALLBACK) => {
            Route::new(Door::Browser, SMALL_BODY).unbounded()
        }
        p if p.starts_with("/oauth2/") || p.starts_with("/.well-known/") => {
            Route::new(Door::OAuth, SMALL_BODY)
        }
        _ => Route::new(Door::Browser, SMALL_BODY),
    }
}

/// The edge checks of every request ([`kit::edge::check`]).
async fn edge_checks(
    State(state): State<AppState>,
    client_ip: ClientIp,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let route = edge_route(request.uri().path());
    edge::check(&state, &client_ip, route, request, next).await
}

/// Who may call a path cross-origin, from a client running in a page (the Fetch standard's
/// CORS protocol). None of these endpoints reads cookies, so any origin may call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cors {
    /// The public documents (discovery, JWKS): `GET`.
    Documents,
    /// The OAuth API a client in a page uses (token, revocation, userinfo, device
    /// authorization) and the Matrix API (client-server API §"Web Browser Clients"): `GET` and
    /// `POST`, with a bearer token and a body.
    Api,
    /// Dynamic client registration (RFC 7591 §3; Element Web registers cross-origin): `POST`
    /// of JSON.
    Registration,
}

impl Cors {
    fn layer(self) -> CorsLayer {
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .max_age(Duration::from_secs(3600));
        match self {
            Self::Documents => cors.allow_methods([Method::GET]),
            Self::Api => cors
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
            Self::Registration => cors
                .allow_methods([Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::ACCEPT]),
        }
    }
}

/// The CORS of a path. The pages, `/authorize`, introspection (a server-to-server call) and
/// the admin API get none.
fn cors_of(path: &str) -> Option<Cors> {
    if endpoints::MATRIX_CLIENT_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
    }) {
        return Some(Cors::Api);
    }
    match path {
        endpoints::OPENID_CONFIGURATION
        | endpoints::OAUTH_AUTHORIZATION_SERVER
        | endpoints::JWKS => Some(Cors::Documents),
        endpoints::TOKEN
        | endpoints::REVOCATION
        | endpoints::USERINFO
        | endpoints::DEVICE_AUTHORIZATION => Some(Cors::Api),
        endpoints::REGISTRATION => Some(Cors::Registration),
        _ => None,
    }
}

/// CORS ([`cors_of`]), around the edge checks: a refusal of the edge (413, 400, 429) carries
/// the CORS headers too, or a client in a page could read nothing of it but a network error.
async fn cors(request: axum::extract::Request, next: Next) -> Response {
    match cors_of(request.uri().path()) {
        Some(cors) => match cors.layer().layer(next).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => next.run(request).await,
    }
}

/// The whole router, with request IDs, a tracing span per request, CORS where browser clients
/// call cross-origin ([`cors_of`]) and the edge checks ([`kit::edge`]) inside it.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(endpoints::OPENID_CONFIGURATION, get(oauth2::discovery::get))
        .route(
            endpoints::OAUTH_AUTHORIZATION_SERVER,
            get(oauth2::discovery::get),
        )
        .route(endpoints::JWKS, get(oauth2::jwks::get))
        .route(endpoints::TOKEN, post(oauth2::token::post))
        .route(endpoints::REVOCATION, post(oauth2::revocation::post))
        .route(
            endpoints::USERINFO,
            get(oauth2::userinfo::get).post(oauth2::userinfo::post),
        )
        .route(endpoints::DEVICE_AUTHORIZATION, post(oauth2::device::post))
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
        .route(endpoints::REGISTRATION, post(oauth2::registration::post))
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
        .layer(middleware::from_fn_with_state(state.clone(), edge_checks))
        .layer(middleware::from_fn(cors))
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
