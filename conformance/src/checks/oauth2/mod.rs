//! The `oauth2` profile: RFC 6749, 7636, 8414, 7009, 7662, 8628, 7591, 8252, 9207, RFC 9700.

pub(crate) mod authorize;
pub(crate) mod client_auth;
pub(crate) mod device;
pub(crate) mod introspection;
pub(crate) mod metadata;
pub(crate) mod registration;
pub(crate) mod revocation;
pub(crate) mod token;
