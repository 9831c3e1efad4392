//! The OAuth 2.0 / OpenID Connect endpoints, one module each.

use axum::{
    http::{header, HeaderValue},
    response::Response,
};

pub mod authorize;
pub mod client_auth;
pub mod device;
pub mod discovery;
pub mod introspection;
pub mod jwks;
pub mod registration;
pub mod revocation;
pub mod token;
pub mod userinfo;

/// RFC 6749 §5.1 / RFC 7662 §2.2: token-bearing answers (and their errors) are not cached.
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
