//! The edge: what every request passes before a handler reads it, the same for every door, each
//! refusal answered in its door's own shape ([`Door`]). The router ([`crate::app`]) says which
//! door and which [`Route`] rules a path has; this module checks:
//!
//! 1. **Body size** ([`Route::max_body`]): a larger body is refused 413 without being read
//!    further (RFC 9110 §15.5.14), in the door's shape, never the framework's plain text.
//! 2. **Control characters** (Unicode `Cc`: C0, DEL, C1) in the path, the query, a form body
//!    (names and values) and every string and key of a JSON body: no protocol value may hold
//!    one (RFC 6749 Appendix A: OAuth parameters are printable VSCHAR/NQCHAR/NQSCHAR; Matrix
//!    identifiers and display names are printable), and PostgreSQL refuses a NUL in text
//!    (it answered 500 before this check). 400 in the door's shape. Passwords
//!    ([`is_password`]) are no protocol value and never stored as text: the edge bounds only
//!    their size. Which characters a new password may hold is the password policy's to say
//!    ([`crate::core::passwords::PasswordPolicy`]), and an imported password must still sign in.
//! 3. **Field bounds** ([`FIELD_BOUNDS`], [`REGISTRATION_BOUNDS`], [`MATRIX_BOUNDS`]): every
//!    value that may be stored from an unauthenticated request has a longest length, so nobody
//!    grows the database by sending megabytes of `scope` or `state`. 400 with the door's error
//!    for that field (`invalid_scope` for a scope, `invalid_client_metadata` /
//!    `invalid_redirect_uri` for client metadata, RFC 7591 §3.2.2, `M_INVALID_PARAM` on the
//!    Matrix API).
//! 4. **Rate limits** ([`Route::rate_limit`]): the unauthenticated requests that store a row
//!    (client registration, device authorization, `/authorize`, the legacy SSO redirect) spend
//!    one unit per client IP from the shared limiter ([`crate::core::rate_limit`]); over it,
//!    429 with `Retry-After`.
//!
//! `/authorize` refusals are pages, not redirects: the edge hasn't checked the redirect URI
//! yet, and RFC 6749 §4.1.2.1 forbids redirecting to one that isn't checked.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use super::params::{has_control, is_form_urlencoded, Params};
use crate::{
    core::rate_limit::{self, ClientIp, Limit, RateLimitError},
    domain::protocol::ErrorCode,
    http::AppState,
};

/// Which door a request knocks on: how its refusals are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The OAuth API endpoints (token, device authorization, introspection, revocation,
    /// userinfo): the JSON error of RFC 6749 §5.2.
    OAuth,
    /// Dynamic client registration: the JSON error of RFC 7591 §3.2.2.
    Registration,
    /// The Matrix client-server API (the compat layer): `{errcode, error}`.
    Matrix,
    /// The admin API: problem details (RFC 9457).
    Admin,
    /// Pages (and `/authorize`): the HTML error page.
    Browser,
}

/// What the edge checks on one route.
#[derive(Debug, Clone)]
pub struct Route {
    pub door: Door,
    /// The largest body read.
    pub max_body: usize,
    /// A per-IP limit spent by each request with this method ([`Route::spends`]).
    pub rate_limit: Option<(Method, Limit)>,
    /// Whether [`FIELD_BOUNDS`] apply to its query and form parameters (not to an upstream
    /// provider's callback, whose values are the upstream's).
    pub bounded: bool,
    /// Whether its form bodies are checked here (not the account pages': their handlers
    /// check every field, control characters included, and say what is wrong next to it).
    pub check_forms: bool,
}

impl Route {
    pub fn new(door: Door, max_body: usize) -> Self {
        Self {
            door,
            max_body,
            rate_limit: None,
            bounded: true,
            check_forms: true,
        }
    }

    pub fn limited(self, method: Method, limit: Limit) -> Self {
        Self {
            rate_limit: Some((method, limit)),
            ..self
        }
    }

    /// The limit a request with `method` spends, if any. `HEAD` is `GET` without the body
    /// (RFC 9110 §9.3.2: the server SHOULD answer it as it would `GET`, and the router runs the
    /// `GET` handler for it), so a limit on `GET` is spent by `HEAD` too.
    pub fn spends(&self, method: &Method) -> Option<Limit> {
        let (limited, limit) = self.rate_limit.as_ref()?;
        let as_get = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        (limited == as_get).then_some(*limit)
    }

    pub fn unbounded(self) -> Self {
        Self {
            bounded: false,
            ..self
        }
    }

    pub fn forms_checked_by_handler(self) -> Self {
        Self {
            check_forms: false,
            ..self
        }
    }
}

/// A bound on a field: its longest length in bytes (UTF-8), and the OAuth error a longer one
/// gets.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub name: &'static str,
    pub max: usize,
    pub error: ErrorCode,
}

const fn bound(name: &'static str, max: usize) -> Bound {
    Bound {
        name,
        max,
        error: ErrorCode::InvalidRequest,
    }
}

/// The longest value of each query or form parameter (OAuth endpoints, `/authorize`, the
/// pages). The specifications set no lengths; these follow what they define and what real
/// providers accept, well above what real clients send:
/// - `client_id`: 255 (ours are 26-character ULIDs; static ones are the operator's).
/// - `scope`: 2048; Matrix scopes with a device are about 150 characters. A longer one is
///   `invalid_scope` (RFC 6749 §5.2).
/// - `state`: 2048, Okta's limit; `nonce`: 512.
/// - URIs (`redirect_uri`, `post_logout_redirect_uri`, the legacy `redirectUrl`): 2048, the
///   common URL limit of browsers and proxies.
/// - `login_hint`, `username`: 255, the Matrix limit on user IDs (client-server API
///   §"User Identifiers").
/// - `code_challenge`, `code_verifier`: 128 (RFC 7636 §4.1: 43 to 128 characters).
/// - `user_code`: 32 (ours are 8 characters; RFC 8628 §6.1 keeps them short).
/// - `client_assertion`, `id_token_hint`: 8192 (a JWT signed with a 4096-bit RSA key is
///   about 1.5 KB).
/// - anything else: [`OTHER_PARAMETER`].
pub const FIELD_BOUNDS: &[Bound] = &[
    bound("client_id", 255),
    Bound {
        name: "scope",
        max: 2048,
        error: ErrorCode::InvalidScope,
    },
    bound("state", 2048),
    bound("nonce", 512),
    bound("redirect_uri", 2048),
    bound("post_logout_redirect_uri", 2048),
    bound("redirectUrl", 2048),
    bound("login_hint", 255),
    bound("username", 255),
    bound("code_challenge", 128),
    bound("code_challenge_method", 16),
    bound("code_verifier", 128),
    bound("response_type", 64),
    bound("response_mode", 64),
    bound("prompt", 64),
    bound("max_age", 10),
    bound("ui_locales", 256),
    bound("user_code", 32),
    bound("client_assertion", 8192),
    bound("id_token_hint", 8192),
];

/// The longest value of a parameter [`FIELD_BOUNDS`] doesn't name.
pub const OTHER_PARAMETER: usize = 4096;

/// Client metadata (RFC 7591 §2, MSC2966): the longest string of each member (localized
/// variants `client_name#fr` included) and the longest array. `client_name`: 256 characters;
/// URIs: 2048; `contacts`: 320 (the longest email address, RFC 5321 §4.5.3.1); any other
/// string: [`OTHER_METADATA`]; at most [`MAX_METADATA_ITEMS`] items in an array and
/// [`MAX_METADATA_MEMBERS`] members. The inline `jwks` is bounded by the body limit only (RSA
/// moduli and certificate chains are long).
pub const REGISTRATION_BOUNDS: &[Bound] = &[
    Bound {
        name: "client_name",
        max: 256,
        error: ErrorCode::InvalidClientMetadata,
    },
    Bound {
        name: "redirect_uris",
        max: 2048,
        error: ErrorCode::InvalidRedirectUri,
    },
    Bound {
        name: "contacts",
        max: 320,
        error: ErrorCode::InvalidClientMetadata,
    },
];
/// The longest string member of client metadata that [`REGISTRATION_BOUNDS`] doesn't name.
pub const OTHER_METADATA: usize = 2048;
/// The most items of one array of client metadata (`redirect_uris`, `contacts`, …).
pub const MAX_METADATA_ITEMS: usize = 32;
/// The most members of client metadata (localized variants count).
pub const MAX_METADATA_MEMBERS: usize = 64;

/// The Matrix API's JSON bodies (the legacy login): `device_id` and `user` 255 (the user ID
/// limit), any other string [`OTHER_PARAMETER`]. `initial_device_display_name` has no bound of
/// its own: Synapse takes a longer one, and the login keeps its first 100 characters
/// ([`crate::http::compat`]).
pub const MATRIX_BOUNDS: &[Bound] = &[bound("device_id", 255), bound("user", 255)];

/// Why the edge refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is larger than the route takes.
    TooLarge { max: usize },
    /// A control character in the named place.
    Control { place: String },
    /// A field longer than its bound.
    TooLong {
        field: String,
        max: usize,
        error: ErrorCode,
    },
    /// More array items or members than client metadata may have.
    TooMany { field: String, max: usize },
    /// Over the route's per-IP rate limit.
    Limited { retry_after: Duration },
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn description(&self) -> String {
        match self {
            Self::TooLarge { max } => {
                format!("the request body is larger than {} KiB", max / 1024)
            }
            Self::Control { place } => format!("{place} holds control characters"),
            Self::TooLong { field, max, .. } => {
                format!("`{field}` is longer than {max} bytes")
            }
            Self::TooMany { field, max } => format!("`{field}` has more than {max} entries"),
            Self::Limited { retry_after } => format!(
                "too many requests from this address; retry after {} s",
                rate_limit::retry_after_seconds(*retry_after)
            ),
        }
    }

    /// The OAuth error code (RFC 6749 §5.2, RFC 7591 §3.2.2).
    fn oauth_error(&self, door: Door) -> ErrorCode {
        match (self, door) {
            // RFC 6749 §4.1.2.1: "temporarily unavailable … due to a temporary overloading".
            (Self::Limited { .. }, _) => ErrorCode::TemporarilyUnavailable,
            (Self::TooLong { error, .. }, _) => *error,
            (_, Door::Registration) => ErrorCode::InvalidClientMetadata,
            _ => ErrorCode::InvalidRequest,
        }
    }

    /// The answer in `door`'s shape.
    pub fn answer(&self, state: &AppState, door: Door) -> Response {
        let status = self.status();
        let description = self.description();
        let mut response = match door {
            Door::OAuth | Door::Registration => (
                status,
                Json(json!({
                    "error": self.oauth_error(door),
                    "error_description": description,
                })),
            )
                .into_response(),
            Door::Matrix => {
                // Client-server API §"Common error codes"; `M_LIMIT_EXCEEDED` with
                // `retry_after_ms` (§"Rate limiting").
                let mut body = json!({
                    "errcode": match self {
                        Self::TooLarge { .. } => "M_TOO_LARGE",
                        Self::Limited { .. } => "M_LIMIT_EXCEEDED",
                        _ => "M_INVALID_PARAM",
                    },
                    "error": description,
                });
                if let Self::Limited { retry_after } = self {
                    body["retry_after_ms"] = json!(retry_after.as_millis() as u64);
                }
                (status, Json(body)).into_response()
            }
            Door::Admin => {
                let mut response = (
                    status,
                    Json(json!({
                        "type": "about:blank",
                        "title": status.canonical_reason().unwrap_or_default(),
                        "status": status.as_u16(),
                        "detail": description,
                    })),
                )
                    .into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                );
                response
            }
            Door::Browser => {
                let (title, detail) = match self {
                    Self::TooLarge { .. } => (
                        "Request too large",
                        "The form sent more than this page takes.".to_owned(),
                    ),
                    Self::Limited { retry_after } => (
                        "Too many requests",
                        format!(
                            "Too many requests came from your network. Try again {}.",
                            rate_limit::wait_in_words(*retry_after)
                        ),
                    ),
                    _ => (
                        "Invalid request",
                        format!("The request is not valid: {description}."),
                    ),
                };
                super::error_page(
                    &state.templates,
                    &state.chrome(),
                    status,
                    title,
                    &detail,
                    Some(self.oauth_error(door).as_str()),
                )
            }
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::Limited { retry_after } => super::with_retry_after(response, *retry_after),
            _ => response,
        }
    }
}

/// The bound of a parameter.
fn parameter_bound(name: &str) -> Bound {
    FIELD_BOUNDS
        .iter()
        .find(|b| b.name == name)
        .copied()
        .unwrap_or(Bound {
            name: "",
            max: OTHER_PARAMETER,
            error: ErrorCode::InvalidRequest,
        })
}

/// Whether a parameter or JSON member holds a password (`password`, `new_password`,
/// `password_confirm`, …): its value is not checked for control characters (see the module
/// documentation), only bounded.
pub fn is_password(name: &str) -> bool {
    name.split('_').any(|word| word == "password")
}

/// Checks query or form parameters: no control characters (in names, and in values other than
/// passwords), and (when `bounded`) every value within its [`FIELD_BOUNDS`].
pub fn check_params(params: &Params, what: &str, bounded: bool) -> Result<(), Refusal> {
    let control = params
        .iter()
        .find(|(name, value)| has_control(name) || (!is_password(name) && has_control(value)));
    if let Some((name, _)) = control {
        return Err(Refusal::Control {
            place: format!("the {what} parameter `{name}`"),
        });
    }
    if bounded {
        for (name, value) in params.iter() {
            let bound = parameter_bound(name);
            if value.len() > bound.max || name.len() > OTHER_PARAMETER {
                return Err(Refusal::TooLong {
                    field: name.chars().take(64).collect(),
                    max: bound.max,
                    error: bound.error,
                });
            }
        }
    }
    Ok(())
}

/// Checks a JSON document: no control characters in any key, or in any string but a password
/// (held by a member [`is_password`] names); for the registration
/// and Matrix doors, every string within its bound (by the name of the member holding it, or
/// the array holding it; client metadata by its top-level member) and, for registration, the
/// array and member counts.
pub fn check_json(value: &Value, door: Door) -> Result<(), Refusal> {
    fn walk(value: &Value, member: &str, door: Door, depth: usize) -> Result<(), Refusal> {
        match value {
            Value::String(s) => {
                if has_control(s) && !is_password(member) {
                    return Err(Refusal::Control {
                        place: format!("the JSON member `{member}`"),
                    });
                }
                if let Some(bound) = string_bound(member, door, depth) {
                    if s.len() > bound.max {
                        return Err(Refusal::TooLong {
                            field: member.chars().take(64).collect(),
                            max: bound.max,
                            error: bound.error,
                        });
                    }
                }
                Ok(())
            }
            Value::Array(items) => {
                if door == Door::Registration && depth == 1 && items.len() > MAX_METADATA_ITEMS {
                    return Err(Refusal::TooMany {
                        field: member.chars().take(64).collect(),
                        max: MAX_METADATA_ITEMS,
                    });
                }
                items
                    .iter()
                    .try_for_each(|item| walk(item, member, door, depth))
            }
            Value::Object(members) => {
                if door == Door::Registration && depth == 0 && members.len() > MAX_METADATA_MEMBERS
                {
                    return Err(Refusal::TooMany {
                        field: "client metadata".into(),
                        max: MAX_METADATA_MEMBERS,
                    });
                }
                for (key, item) in members {
                    if has_control(key) {
                        return Err(Refusal::Control {
                            place: "a JSON member name".into(),
                        });
                    }
                    // Client metadata is bounded by its top-level member (`jwks` keeps its own
                    // names below it); the Matrix API by the nearest member's name.
                    let inner = if door == Door::Registration && depth > 0 {
                        member
                    } else {
                        key.as_str()
                    };
                    walk(item, inner, door, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, "", door, 0)
}

/// The bound of a JSON string held (directly or in an array) by the top-level `member`.
fn string_bound(member: &str, door: Door, depth: usize) -> Option<Bound> {
    match door {
        Door::Registration => {
            if member == "jwks" || depth == 0 {
                return None;
            }
            // Localized variants (`client_name#fr`, RFC 7591 §2.2) share their member's bound.
            let base = member.split('#').next().unwrap_or(member);
            let named = REGISTRATION_BOUNDS.iter().find(|b| b.name == base).copied();
            Some(named.unwrap_or(Bound {
                name: "",
                max: if base.ends_with("_uri") || base.ends_with("_uris") {
                    2048
                } else {
                    OTHER_METADATA
                },
                error: ErrorCode::InvalidClientMetadata,
            }))
        }
        Door::Matrix => Some(
            MATRIX_BOUNDS
                .iter()
                .find(|b| b.name == member)
                .copied()
                .unwrap_or(Bound {
                    name: "",
                    max: OTHER_PARAMETER,
                    error: ErrorCode::InvalidRequest,
                }),
        ),
        _ => None,
    }
}

/// Percent-decodes a path (lossily: only to look for control characters).
fn decoded_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn content_type_is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        })
}

/// The checks of a request before its handler (see the module documentation); `route` says
/// what applies to it.
pub async fn check(
    state: &AppState,
    client_ip: &ClientIp,
    route: Route,
    request: Request,
    next: Next,
) -> Response {
    let door = route.door;
    let refuse = |refusal: Refusal| refusal.answer(state, door);
    let (parts, body) = request.into_parts();

    if has_control(&decoded_path(parts.uri.path())) {
        return refuse(Refusal::Control {
            place: "the path".into(),
        });
    }
    if let Some(query) = parts.uri.query() {
        if let Err(refusal) = check_params(&Params::parse(query), "query", route.bounded) {
            return refuse(refusal);
        }
    }

    // The body, read up to the route's limit (a declared larger length is refused unread).
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > route.max_body as u64) {
        return refuse(Refusal::TooLarge {
            max: route.max_body,
        });
    }
    let bytes: Bytes = match axum::body::to_bytes(body, route.max_body).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refuse(Refusal::TooLarge {
                max: route.max_body,
            })
        }
    };
    if !bytes.is_empty() {
        if is_form_urlencoded(&parts.headers) {
            // Not UTF-8 or repeated parameters: the handler answers those in its own words; the
            // account pages' fields are checked one by one there ([`Route::check_forms`]).
            if let (true, Ok(text)) = (route.check_forms, std::str::from_utf8(&bytes)) {
                if let Err(refusal) = check_params(&Params::parse(text), "form", route.bounded) {
                    return refuse(refusal);
                }
            }
        } else if content_type_is_json(&parts.headers)
            || matches!(route.door, Door::Matrix | Door::Registration)
        {
            // The Matrix API reads JSON whatever the content type (as Synapse does). A body
            // that doesn't parse is the handler's to answer.
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                if let Err(refusal) = check_json(&value, route.door) {
                    return refuse(refusal);
                }
            }
        }
    }

    if let Some(limit) = route.spends(&parts.method) {
        match state.limiter.check_ip(limit, client_ip).await {
            Ok(()) => {}
            Err(RateLimitError::Limited { retry_after }) => {
                return refuse(Refusal::Limited { retry_after })
            }
            Err(RateLimitError::Storage(e)) => {
                // The limiter's database is the request's too: the handler will fail the
                // same way and say so in its own words.
                tracing::warn!(error = %e, limit = limit.name(), "edge: can't check the rate limit");
            }
        }
    }

    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_are_decoded_to_find_controls() {
        assert!(has_control(&decoded_path("/users/a%00b")));
        assert!(has_control(&decoded_path("/users/%1b")));
        assert!(has_control(&decoded_path("/x/%C2%85")));
        assert!(!has_control(&decoded_path("/users/alice%20b%")));
        assert!(!has_control(&decoded_path("/%")));
        assert!(!has_control(&decoded_path("/%2")));
        assert_eq!(decoded_path("/a%2Fb"), "/a/b");
    }

    #[test]
    fn parameters_are_bounded_by_name() {
        let long_scope = format!("scope={}", "a".repeat(2049));
        let refusal = check_params(&Params::parse(&long_scope), "query", true).unwrap_err();
        assert!(matches!(
            refusal,
            Refusal::TooLong {
                error: ErrorCode::InvalidScope,
                max: 2048,
                ..
            }
        ));
        assert!(check_params(&Params::parse(&long_scope), "query", false).is_ok());
        let ok = format!("scope={}&state={}", "a".repeat(2048), "s".repeat(2048));
        assert!(check_params(&Params::parse(&ok), "query", true).is_ok());
        let other = format!("whatever={}", "x".repeat(OTHER_PARAMETER + 1));
        assert!(check_params(&Params::parse(&other), "form", true).is_err());
        assert!(matches!(
            check_params(&Params::parse("state=a%00"), "query", false),
            Err(Refusal::Control { .. })
        ));
    }

    #[test]
    fn passwords_are_only_bounded() {
        for name in [
            "password",
            "new_password",
            "new_password_confirm",
            "password_confirm",
        ] {
            assert!(is_password(name), "{name}");
            let form = format!("{name}=a%00%1b%7fb&username=alice");
            assert_eq!(check_params(&Params::parse(&form), "form", true), Ok(()));
            let long = format!("{name}={}", "p".repeat(OTHER_PARAMETER + 1));
            assert!(matches!(
                check_params(&Params::parse(&long), "form", true),
                Err(Refusal::TooLong { .. })
            ));
            for door in [Door::Matrix, Door::Admin] {
                assert_eq!(check_json(&json!({ name: "a\u{0}\tb" }), door), Ok(()));
            }
        }
        for name in ["passwords", "username", "client_secret", "passwordless"] {
            assert!(!is_password(name), "{name}");
        }
        // Controls anywhere else, and in a password member's name, are still refused.
        assert!(check_params(&Params::parse("pass%00word=x"), "form", true).is_err());
        assert!(check_params(&Params::parse("password=x&user=a%00"), "form", true).is_err());
        let login = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "al\u{0}ice" },
            "password": "x",
        });
        assert!(check_json(&login, Door::Matrix).is_err());
    }

    #[test]
    fn head_spends_the_limit_of_get() {
        let route = Route::new(Door::Browser, 1024).limited(Method::GET, Limit::Authorize);
        assert_eq!(route.spends(&Method::GET), Some(Limit::Authorize));
        assert_eq!(route.spends(&Method::HEAD), Some(Limit::Authorize));
        assert_eq!(route.spends(&Method::POST), None);
        assert_eq!(route.spends(&Method::OPTIONS), None);
        let route = Route::new(Door::OAuth, 1024).limited(Method::POST, Limit::DeviceAuthorization);
        assert_eq!(route.spends(&Method::HEAD), None);
        assert_eq!(Route::new(Door::OAuth, 1024).spends(&Method::GET), None);
    }

    #[test]
    fn client_metadata_is_bounded() {
        let ok = json!({
            "client_name": "Element",
            "client_name#fr": "Élément",
            "redirect_uris": ["https://app.example/cb"],
            "jwks": {"keys": [{"n": "x".repeat(5000)}]},
        });
        assert_eq!(check_json(&ok, Door::Registration), Ok(()));
        let long_name = json!({ "client_name#de": "n".repeat(257) });
        assert!(matches!(
            check_json(&long_name, Door::Registration),
            Err(Refusal::TooLong {
                error: ErrorCode::InvalidClientMetadata,
                ..
            })
        ));
        let long_uri =
            json!({ "redirect_uris": ["https://a.example/".to_owned() + &"p".repeat(2048)] });
        assert!(matches!(
            check_json(&long_uri, Door::Registration),
            Err(Refusal::TooLong {
                error: ErrorCode::InvalidRedirectUri,
                ..
            })
        ));
        let many: Vec<String> = (0..=MAX_METADATA_ITEMS)
            .map(|i| format!("https://a/{i}"))
            .collect();
        assert!(matches!(
            check_json(&json!({ "redirect_uris": many }), Door::Registration),
            Err(Refusal::TooMany { .. })
        ));
        let nul = json!({ "client_name": "a\u{0}b" });
        assert!(matches!(
            check_json(&nul, Door::Registration),
            Err(Refusal::Control { .. })
        ));
        let nul_key = json!({ "identifier": { "us\u{1}er": "a" } });
        assert!(matches!(
            check_json(&nul_key, Door::Matrix),
            Err(Refusal::Control { .. })
        ));
        // The legacy login keeps a long device name's first 100 characters, as Synapse takes it.
        let long_display = json!({ "initial_device_display_name": "é".repeat(150) });
        assert_eq!(check_json(&long_display, Door::Matrix), Ok(()));
        let long_device = json!({ "device_id": "d".repeat(256) });
        assert!(check_json(&long_device, Door::Matrix).is_err());
        // The admin API: controls only.
        assert_eq!(
            check_json(&json!({ "x": "y".repeat(10_000) }), Door::Admin),
            Ok(())
        );
    }
}
