//! The dashboard: server-rendered pages about the deployment, a browser OIDC client (the one
//! place JavaScript must run), a device-flow panel, a legacy login panel, the live exchange
//! log, the mailbox (every mail the provider sent), and a conformance page that runs the
//! conformance suite against this deployment (or another issuer) and shows its report. Pages
//! are minijinja templates under `playground/templates/`, embedded in the binary; one style
//! sheet; scripts only from files (the Content-Security-Policy forbids inline ones).

mod conformance;
mod device;
mod http;
mod legacy;
mod log;
mod mailbox;

use std::{ops::Deref, sync::Arc, time::Duration};

use axum::{
    extract::{Query, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use minijinja::{context, Environment};
use provider::{clock::Entropy, http::AppState};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::{exchange::ExchangeLog, Account, Error, Tls, Urls, DEMO_CLIENT_ID};

/// Time limit on the dashboard's calls to the provider and the homeserver.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest text a QR code is made of.
const MAX_QR_DATA: usize = 1024;

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self' http: https:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the dashboard is built from.
pub(crate) struct Setup {
    pub urls: Urls,
    pub server_name: String,
    /// The database URL, password redacted.
    pub database: String,
    pub accounts: Vec<Account>,
    pub provider: AppState,
    pub tls: Option<Tls>,
    pub log: ExchangeLog,
    pub entropy: Entropy,
    /// Turns `true` when the playground stops (live streams end then).
    pub stop: watch::Receiver<bool>,
}

/// The dashboard's state; cheap to clone.
#[derive(Clone)]
pub(crate) struct Dashboard(Arc<Inner>);

pub(crate) struct Inner {
    setup: Setup,
    templates: Environment<'static>,
    http: reqwest::Client,
    devices: device::Grants,
    conformance: conformance::Runs,
}

impl Deref for Dashboard {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Deref for Inner {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

/// The dashboard's router.
pub(crate) fn router(setup: Setup) -> Result<Router, Error> {
    let mut http = reqwest::Client::builder()
        .user_agent(concat!("playground-dashboard/", env!("CARGO_PKG_VERSION")))
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = &setup.tls {
        let cert = reqwest::Certificate::from_pem(tls.cert_pem.as_bytes())
            .map_err(|e| Error::Dashboard(format!("can't read the certificate: {e}")))?;
        http = http.add_root_certificate(cert);
    }
    let http = http
        .build()
        .map_err(|e| Error::Dashboard(format!("can't build the HTTP client: {e}")))?;
    let state = Dashboard(Arc::new(Inner {
        templates: templates()?,
        http,
        devices: device::Grants::default(),
        conformance: conformance::Runs::default(),
        setup,
    }));
    Ok(Router::new()
        .route("/", get(index))
        .route("/client", get(client_page))
        .route("/callback", get(client_page))
        .route("/device", get(device::form).post(device::start))
        .route("/device/{id}", get(device::status))
        .route("/legacy", get(legacy::form).post(legacy::login))
        .route("/legacy/refresh", post(legacy::refresh))
        .route("/legacy/logout", post(legacy::logout))
        .route(
            "/conformance",
            get(conformance::form).post(conformance::start),
        )
        .route("/conformance/runs/{file}", get(conformance::run))
        .route("/log", get(log::page))
        .route("/log/events", get(log::events))
        .route("/log.json", get(log::entries))
        .route("/mailbox", get(mailbox::page))
        .route("/mailbox.json", get(mailbox::json))
        .route("/qr.svg", get(qr))
        .route("/certificate.pem", get(certificate))
        .route("/static/style.css", get(|| asset("text/css", STYLE)))
        .route(
            "/static/client.js",
            get(|| asset("text/javascript", CLIENT_JS)),
        )
        .route("/static/log.js", get(|| asset("text/javascript", LOG_JS)))
        .route(
            "/static/conformance.css",
            get(|| asset("text/css", conformance::STYLE)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(same_origin_posts))
        .layer(middleware::map_response(security_headers))
        .with_state(state))
}

const STYLE: &str = include_str!("../../static/style.css");
const CLIENT_JS: &str = include_str!("../../static/client.js");
const LOG_JS: &str = include_str!("../../static/log.js");

fn templates() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("macros.html", include_str!("../../templates/macros.html")),
        ("index.html", include_str!("../../templates/index.html")),
        ("client.html", include_str!("../../templates/client.html")),
        ("device.html", include_str!("../../templates/device.html")),
        (
            "device_grant.html",
            include_str!("../../templates/device_grant.html"),
        ),
        ("legacy.html", include_str!("../../templates/legacy.html")),
        ("log.html", include_str!("../../templates/log.html")),
        ("mailbox.html", include_str!("../../templates/mailbox.html")),
        (
            "conformance.html",
            include_str!("../../templates/conformance.html"),
        ),
        (
            "conformance_run.html",
            include_str!("../../templates/conformance_run.html"),
        ),
        (
            "not_found.html",
            include_str!("../../templates/not_found.html"),
        ),
    ] {
        env.add_template(name, source)
            .map_err(|e| Error::Dashboard(format!("template {name}: {e}")))?;
    }
    Ok(env)
}

impl Dashboard {
    /// Renders a page; `page` is the path its navigation entry has.
    fn render(&self, template: &str, page: &str, ctx: minijinja::Value) -> Response {
        let base = context! {
            page,
            issuer => self.urls.issuer.as_str(),
            homeserver => self.urls.homeserver.as_str(),
            dashboard => self.urls.dashboard.as_str(),
        };
        let rendered = self
            .templates
            .get_template(template)
            .and_then(|t| t.render(context! { ..base, ..ctx }));
        match rendered {
            Ok(html) => (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                html,
            )
                .into_response(),
            Err(error) => {
                tracing::error!(template, %error, "can't render a dashboard page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }

    /// The provider's metadata, as it serves it.
    fn metadata(&self) -> Value {
        serde_json::from_slice(&self.provider.documents.metadata).unwrap_or(Value::Null)
    }

    /// An endpoint from the provider's metadata (e.g. `token_endpoint`).
    fn endpoint(&self, name: &str) -> Option<url::Url> {
        self.metadata()
            .get(name)
            .and_then(Value::as_str)
            .and_then(|s| url::Url::parse(s).ok())
    }

    /// A URL on the homeserver.
    fn homeserver_url(&self, path: &str) -> url::Url {
        self.urls
            .homeserver
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.urls.homeserver.clone())
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `GET /`: the deployment, the accounts, the demo client, instructions, the documents.
async fn index(State(d): State<Dashboard>) -> Response {
    let metadata = d.metadata();
    let jwks: Value = serde_json::from_slice(&d.provider.documents.jwks).unwrap_or(Value::Null);
    let well_known = fake_homeserver::client_well_known(
        &d.urls.homeserver,
        d.urls.issuer.as_str(),
        metadata
            .get("account_management_uri")
            .and_then(Value::as_str),
    );
    let hs = |path: &str| d.homeserver_url(path).to_string();
    let is = |path: &str| provider::endpoints::url(&d.urls.issuer, path).to_string();
    let documents = [
        (
            hs("/.well-known/matrix/client"),
            "the homeserver's client discovery (with the provider for older clients, MSC2965)",
            pretty(&well_known),
        ),
        (
            hs("/_matrix/client/versions"),
            "the spec versions (v1.15 tells clients to look for auth_metadata)",
            pretty(&fake_homeserver::versions()),
        ),
        (
            hs("/_matrix/client/v1/auth_metadata"),
            "the provider's metadata, through the homeserver (MSC2965)",
            pretty(&metadata),
        ),
        (
            is(provider::endpoints::OPENID_CONFIGURATION),
            "the provider's metadata (OIDC Discovery, RFC 8414)",
            pretty(&metadata),
        ),
        (
            is(provider::endpoints::JWKS),
            "the provider's signing keys (JWKS)",
            pretty(&jwks),
        ),
    ]
    .map(|(url, what, body)| context! { url, what, body });
    let demo = d
        .provider
        .settings
        .clients
        .iter()
        .find(|c| c.client_id == DEMO_CLIENT_ID)
        .map(|c| {
            context! {
                client_id => c.client_id,
                redirect_uris => c.metadata.get("redirect_uris"),
                post_logout_redirect_uris => c.metadata.get("post_logout_redirect_uris"),
                grant_types => c.metadata.get("grant_types"),
            }
        });
    let tls = d.tls.as_ref().map(|t| {
        context! {
            cert_path => t.cert_path.display().to_string(),
            fingerprint => t.fingerprint,
        }
    });
    d.render(
        "index.html",
        "/",
        context! {
            server_name => d.server_name,
            database => d.database,
            accounts => d.accounts,
            demo,
            tls,
            documents,
        },
    )
}

/// `GET /client` and `GET /callback`: the browser client (its script reads the callback's
/// query itself).
async fn client_page(State(d): State<Dashboard>) -> Response {
    d.render(
        "client.html",
        "/client",
        context! {
            demo_client_id => DEMO_CLIENT_ID,
            demo_redirect => d.urls.callback(),
            demo_post_logout => d.urls.client_page(),
        },
    )
}

#[derive(Debug, Deserialize)]
struct QrQuery {
    data: String,
}

/// `GET /qr.svg?data=…`: a QR code of `data`, as SVG.
async fn qr(Query(q): Query<QrQuery>) -> Response {
    if q.data.is_empty() || q.data.len() > MAX_QR_DATA {
        return (
            StatusCode::BAD_REQUEST,
            format!("data must be 1 to {MAX_QR_DATA} bytes"),
        )
            .into_response();
    }
    match qrcode::QrCode::with_error_correction_level(q.data.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .quiet_zone(true)
                .build();
            (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                svg,
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("no QR code for that: {e}")).into_response(),
    }
}

/// `GET /certificate.pem`: the playground's certificate, for clients to trust (with TLS).
async fn certificate(State(d): State<Dashboard>) -> Response {
    match &d.tls {
        Some(tls) => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"matrix-oauth-playground.pem\"",
                ),
            ],
            tls.cert_pem.clone(),
        )
            .into_response(),
        None => not_found_page(
            &d,
            "The playground runs without TLS: there is no certificate.",
        ),
    }
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(State(d): State<Dashboard>, request: Request) -> Response {
    let message = format!("Nothing is served at {}.", request.uri().path());
    not_found_page(&d, &message)
}

fn not_found_page(d: &Dashboard, message: &str) -> Response {
    let mut response = d.render("not_found.html", "", context! { message });
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// The dashboard's forms make the playground act (log in, start grants): refuse posts from
/// other sites. Browsers send `Origin` on every POST; it must be this page's origin.
async fn same_origin_posts(request: Request, next: Next) -> Response {
    if request.method() == Method::POST {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        let same = match (origin, host) {
            (None, _) => true,
            (Some(origin), Some(host)) => origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
            (Some(_), None) => false,
        };
        if !same {
            return (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response();
        }
    }
    next.run(request).await
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // `same-origin`, not `no-referrer`: with no referrer, browsers send `Origin: null` on the
        // dashboard's own form posts and the cross-site check would refuse them; other sites
        // still learn nothing.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
