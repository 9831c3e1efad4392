//! Builds the HTTP application from the settings and the storage. Used by `provider serve`, the
//! playground and the integration tests alike.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{FromRef, MatchedPath, State},
    http::{header, Method, Request, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use axum_extra::extract::cookie::Key;
use serde_json::json;
use tower_http::{
    cors::{Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    config::Settings,
    email::Mailer,
    endpoints,
    matrix::{self, Homeserver},
    oauth2,
    passwords::{PasswordConfig, PasswordConfigError, PasswordHasher},
    rate_limit::RateLimiter,
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
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub storage: Storage,
    pub documents: Arc<Documents>,
    pub templates: Arc<Templates>,
    /// Protects the browser cookie (see [`web::session`]).
    pub cookie_key: Key,
    pub passwords: PasswordHasher,
    /// The homeserver this provider authenticates for.
    pub homeserver: Homeserver,
    /// The rate limits, kept in the database (see [`crate::rate_limit`]).
    pub limiter: RateLimiter,
    /// Sends the verification codes and recovery links (see [`crate::email`]).
    pub mailer: Mailer,
    /// The upstream login's HTTP client, with its metadata and key caches (see
    /// [`crate::upstream`]).
    pub upstream: crate::upstream::client::UpstreamHttp,
    /// Verifies the registration captcha when one is configured (see [`crate::captcha`]).
    pub captcha: Option<crate::captcha::CaptchaVerifier>,
    /// A hash to check unknown usernames against, made on first use.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.settings.issuer.as_str())
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Self {
        state.cookie_key.clone()
    }
}

impl AppState {
    /// The state, hashing passwords with the default schemes (argon2id, OWASP parameters).
    pub fn new(settings: Settings, storage: Storage) -> Result<Self, PasswordConfigError> {
        let passwords =
            PasswordHasher::new(PasswordConfig::default(), storage.entropy().rng.clone())?;
        Ok(Self::with_passwords(settings, storage, passwords))
    }

    /// The state with a given password hasher.
    pub fn with_passwords(settings: Settings, storage: Storage, passwords: PasswordHasher) -> Self {
        let metadata = oauth2::discovery::ProviderMetadata::new(&settings);
        let documents = Documents {
            metadata: Bytes::from(serde_json::to_vec(&metadata).unwrap_or_default()),
            jwks: Bytes::from(settings.keystore.jwks().to_string()),
        };
        let cookie_key = web::session::cookie_key(&settings.encryption_key);
        Self {
            homeserver: matrix::homeserver::connect(&settings.matrix),
            mailer: Mailer::from_settings(
                &settings.email,
                settings.issuer.host_str().unwrap_or("localhost"),
                storage.entropy().clone(),
            ),
            limiter: RateLimiter::new(storage.clone(), settings.rate_limits.clone()),
            captcha: settings
                .captcha
                .clone()
                .map(crate::captcha::CaptchaVerifier::new),
            settings: Arc::new(settings),
            storage,
            documents: Arc::new(documents),
            templates: Arc::new(Templates::new()),
            cookie_key,
            passwords,
            upstream: crate::upstream::client::UpstreamHttp::new(),
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// A valid hash of no one's password, for checking unknown usernames in the same time as
    /// known ones.
    pub async fn dummy_password_hash(&self) -> String {
        self.dummy_hash
            .get_or_init(|| async {
                self.passwords
                    .hash("not a password of anyone".to_owned())
                    .await
                    .map(|(_, hash)| hash)
                    .unwrap_or_default()
            })
            .await
            .clone()
    }

    /// What every page shows besides its content.
    pub fn chrome(&self) -> Chrome<'_> {
        Chrome {
            site_name: &self.settings.matrix.homeserver,
            stylesheet: web::STYLESHEET,
        }
    }
}

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
        .merge(matrix::compat::routes())
        .route(endpoints::AUTHORIZE, get(oauth2::authorize::get))
        .route(endpoints::INTROSPECTION, post(oauth2::introspection::post))
        .route(endpoints::END_SESSION, get(web::logout::handle).post(web::logout::handle))
        .route(web::register::PATH, get(web::register::get).post(web::register::post))
        .route(web::login::PATH, get(web::login::get).post(web::login::post))
        .route("/consent/{grant}", get(web::consent::get).post(web::consent::post))
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
        .merge(crate::admin::router())
        .merge(crate::upstream::routes())
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
