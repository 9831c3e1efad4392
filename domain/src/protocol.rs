//! Protocol values of OAuth 2.0 and its extensions that are not a type of their own elsewhere.

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
