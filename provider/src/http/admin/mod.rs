//! The admin API: `/api/admin/v1`, JSON in and out, for operators and their automation.
//!
//! - **Authorization**: `Authorization: Bearer <access token>` (RFC 6750 §2.1), an OAuth 2.0
//!   access token carrying the scope `urn:mas:admin`, looked up with the one indexed query
//!   introspection uses. Users get that scope through the authorization code flow when they may
//!   administer (`can_request_admin`); clients listed in `admin.clients` get it with client
//!   credentials. A missing or unusable token is 401 with a `WWW-Authenticate: Bearer` challenge,
//!   a token without the scope (or of a user no longer allowed, or a client no longer listed)
//!   403 `insufficient_scope` (RFC 6750 §3.1). See [`auth`].
//! - **Errors** are problem details (RFC 9457, `application/problem+json`), see [`error`].
//! - **Lists** are pages in ID order (IDs are ULIDs, so creation order): `page[first]` (1 to
//!   [`MAX_PAGE`], default [`DEFAULT_PAGE`]) items after the ID `page[after]`; the answer is
//!   `{"data": [...], "next_cursor": "<ULID>" | null}`, and `next_cursor` is the `page[after]` of
//!   the next page (keyset pagination: stable while rows are added). Filters are
//!   `filter[...]` query parameters.
//! - Every change runs in one transaction; the homeserver jobs it enqueues run right after the
//!   commit (see [`crate::core::accounts`]), exactly as when the change comes through the account pages.
//!
//! The OpenAPI 3 document is built from the handlers themselves (`utoipa`): the routes below
//! are both the router and the document, so neither can list a route the other lacks. It is
//! served at [`SPEC`], with a Swagger UI page at [`DOCS`] (see [`doc`]).

use std::sync::OnceLock;

use axum::{
    extract::{FromRequestParts, State},
    http::{header, request::Parts, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        Content, OpenApi as OpenApiDocument, Ref, ResponseBuilder, Server,
    },
    IntoParams, Modify, OpenApi, ToSchema,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::AppState;

pub mod auth;
mod clients;
mod doc;
mod emails;
pub mod error;
mod registration_tokens;
mod sessions;
mod upstream;
mod users;

use self::error::Params;
pub use self::{
    auth::{Actor, Admin},
    error::{ApiError, Problem},
};

/// Where the admin API is served.
pub const PREFIX: &str = "/api/admin/v1";
/// The OpenAPI document of the admin API.
pub const SPEC: &str = "/api/spec.json";
/// The Swagger UI page over [`SPEC`].
pub const DOCS: &str = "/api/doc";

/// The page size when `page[first]` is not given.
pub const DEFAULT_PAGE: u32 = 10;
/// The largest page.
pub const MAX_PAGE: u32 = 100;

/// The name of the security scheme in the document.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Admin API",
        description = "Manage the users, sessions, clients, upstream links and registration \
            tokens of the provider. Every request needs `Authorization: Bearer <access token>` \
            with the scope `urn:mas:admin`. Lists are pages: `page[first]` items after the ID \
            `page[after]`; follow `next_cursor`. Errors are problem details (RFC 9457).",
    ),
    security(("bearer" = [])),
    tags(
        (name = "users", description = "Accounts: create, lock, deactivate, passwords, admin flag"),
        (name = "emails", description = "Email addresses of users"),
        (name = "sessions", description = "OAuth 2.0, compat (legacy login) and browser sessions"),
        (name = "clients", description = "OAuth 2.0 clients"),
        (name = "upstream", description = "Upstream OpenID Connect providers and the links to them"),
        (name = "registration-tokens", description = "Tokens that allow registration"),
    )
)]
struct ApiDoc;

/// Declares the bearer token scheme every operation uses, and the two answers every operation
/// may give for it (RFC 6750 §3.1): 401 without a usable token, 403 without the admin scope.
struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("401".into()).or_insert_with(|| {
                    problem("No usable access token (missing, unknown, expired or revoked)").into()
                });
                responses.entry("403".into()).or_insert_with(|| {
                    problem("The token lacks urn:mas:admin, or its holder may no longer have it")
                        .into()
                });
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token with the scope `urn:mas:admin` (RFC 6750)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The admin routes, with the document they make.
fn api() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get))
        .routes(routes!(users::by_username))
        .routes(routes!(users::set_password))
        .routes(routes!(users::lock))
        .routes(routes!(users::unlock))
        .routes(routes!(users::deactivate))
        .routes(routes!(users::reactivate))
        .routes(routes!(users::set_admin))
        .routes(routes!(users::end_sessions))
        .routes(routes!(emails::list, emails::add))
        .routes(routes!(emails::get, emails::remove))
        .routes(routes!(emails::verify))
        .routes(routes!(sessions::list_oauth2))
        .routes(routes!(sessions::get_oauth2))
        .routes(routes!(sessions::finish_oauth2))
        .routes(routes!(sessions::list_compat))
        .routes(routes!(sessions::get_compat))
        .routes(routes!(sessions::finish_compat))
        .routes(routes!(sessions::list_browser))
        .routes(routes!(sessions::get_browser))
        .routes(routes!(sessions::finish_browser))
        .routes(routes!(clients::list, clients::create))
        .routes(routes!(clients::get, clients::update, clients::delete))
        .routes(routes!(upstream::list_providers))
        .routes(routes!(upstream::get_provider))
        .routes(routes!(upstream::list_links))
        .routes(routes!(upstream::get_link, upstream::remove_link))
        .routes(routes!(
            registration_tokens::list,
            registration_tokens::create
        ))
        .routes(routes!(registration_tokens::get))
        .routes(routes!(registration_tokens::revoke))
        .routes(routes!(registration_tokens::unrevoke))
        .fallback(error::not_found);
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(PREFIX, v1)
}

/// The OpenAPI document of the admin API, as built from its routes (without `servers`, which
/// [`SPEC`] adds from the configured public base).
pub fn openapi() -> OpenApiDocument {
    static DOCUMENT: OnceLock<OpenApiDocument> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let mut document = api().into_openapi();
            // After the routes are in: it documents every operation.
            BearerSecurity.modify(&mut document);
            document
        })
        .clone()
}

/// The admin API, its document and its documentation page. Answers are never cached: they
/// hold account data, and some a secret shown once (RFC 9111 §5.2.2.5 `no-store`).
pub fn router() -> Router<AppState> {
    let (routes, _) = api().split_for_parts();
    routes
        .layer(axum::middleware::map_response(no_store))
        .route(SPEC, get(spec))
        .route(DOCS, get(doc::page))
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /api/spec.json`: the document, with the server it is served from.
async fn spec(State(state): State<AppState>) -> Response {
    let mut document = openapi();
    document.servers = Some(vec![Server::new(
        state.settings.public_base.as_str().trim_end_matches('/'),
    )]);
    match serde_json::to_vec_pretty(&document) {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// The `page[after]` of the next page; `null` on the last page.
    #[schema(value_type = Option<String>, format = "ulid")]
    pub next_cursor: Option<Ulid>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` items (one more than asked, to know whether another page
    /// follows), each with its ID.
    fn of<S>(
        mut items: Vec<S>,
        limit: u32,
        id: impl Fn(&S) -> Ulid,
        view: impl Fn(S) -> T,
    ) -> Self {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more { items.last().map(&id) } else { None };
        Self {
            data: items.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

/// The paging parameters every list takes, as sent (each list names them in its `params`, and
/// takes them checked, as [`Paging`]).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items after this ID (the `next_cursor` of the previous page).
    #[serde(rename = "page[after]")]
    #[param(rename = "page[after]", value_type = Option<String>)]
    after: Option<String>,
    /// Page size, 1 to 100 (default 10).
    #[serde(rename = "page[first]")]
    #[param(rename = "page[first]", value_type = Option<u32>, minimum = 1, maximum = 100)]
    first: Option<String>,
}

/// Paging, checked: the ID to start after and the page size. Extracting it reads
/// [`PageParams`] from the query; a bad one is a 400 problem.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    after: Option<Ulid>,
    limit: u32,
}

impl FromRequestParts<AppState> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Params(params) = Params::<PageParams>::from_request_parts(parts, state).await?;
        Self::parse(&params)
    }
}

impl Paging {
    fn parse(params: &PageParams) -> Result<Self, ApiError> {
        let after = parse_id_param("page[after]", params.after.as_deref())?;
        let limit = match params.first.as_deref() {
            None => DEFAULT_PAGE,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "page[first] must be a number from 1 to {MAX_PAGE}, not `{raw}`"
                    )))
                }
            },
        };
        Ok(Self { after, limit })
    }

    /// What to ask storage for: one more than the page, to know whether another follows.
    fn fetch(self) -> u32 {
        self.limit + 1
    }
}

/// A ULID given as a query parameter, when given.
fn parse_id_param(name: &str, raw: Option<&str>) -> Result<Option<Ulid>, ApiError> {
    raw.map(|raw| {
        Ulid::from_string(raw)
            .map_err(|_| ApiError::bad_request(format!("{name} must be a ULID, not `{raw}`")))
    })
    .transpose()
}

/// A ULID in the path: one that isn't can name nothing (404).
fn parse_id(what: &str, raw: &str) -> Result<Ulid, ApiError> {
    Ulid::from_string(raw).map_err(|_| ApiError::not_found(format!("no {what} `{raw}`")))
}

/// A boolean filter: `true` or `false`.
fn parse_bool_param(name: &str, raw: Option<&str>) -> Result<Option<bool>, ApiError> {
    match raw {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be `true` or `false`, not `{other}`"
        ))),
    }
}

/// A session status filter: `active` or `finished`, as "is active".
fn parse_session_status(raw: Option<&str>) -> Result<Option<bool>, ApiError> {
    match raw {
        None => Ok(None),
        Some("active") => Ok(Some(true)),
        Some("finished") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "filter[status] must be `active` or `finished`, not `{other}`"
        ))),
    }
}
