//! The provider's domain: protocol rules as plain types and functions, without I/O (scopes,
//! token formats, PKCE, redirect URIs, client metadata, usernames, ID token claims, where a
//! sign-in may return to, rate-limit arithmetic), and the helpers everything above leans on:
//! the injected clock and randomness, hashing and encryption of secrets, signing keys, and the
//! paths the provider serves.
//!
//! The bottom layer: it depends on no other crate of the workspace, and everything else may
//! depend on it. Property tests live next to the rules.

pub mod account_management;
pub mod after_sign_in;
pub mod client_metadata;
pub mod client_registration;
pub mod clock;
pub mod crypto;
pub mod endpoints;
pub mod id_token;
pub mod keys;
pub mod pkce;
pub mod protocol;
pub mod rate_limit;
pub mod redirect_uri;
pub mod scope;
pub mod sign_in_method;
pub mod token;
pub mod username;
