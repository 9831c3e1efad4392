//! Protocol rules as plain functions and types, without I/O. Each carries property tests.

pub mod client_metadata;
pub mod client_registration;
pub mod id_token;
pub mod pkce;
pub mod redirect_uri;
pub mod scope;
pub mod token;
pub mod username;
