//! The OAuth 2.0 / OpenID Connect endpoints, one module each.

pub mod api;
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
