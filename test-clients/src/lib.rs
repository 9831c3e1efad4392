//! Scripted Matrix clients. They speak HTTP only, so they can face any provider or homeserver.
//!
//! - [`transcript`]: the record of a run, secrets elided.
//! - [`http`]: a client that never follows redirects and records everything.
//! - [`pages`]: a person at the provider's pages (sign in, register, consent, confirm).
//! - [`discovery`]: the homeserver's authentication metadata (MSC2965).
//! - [`oauth`]: registration, authorization, tokens, revocation.
//! - [`journeys`]: the four scripted clients of the `test-clients` binary.
//! - [`pkce`]: PKCE pairs (RFC 7636).
//! - [`bench`]: a load generator for the hot paths of any deployment.

pub mod bench;
pub mod discovery;
mod error;
pub mod http;
pub mod journeys;
pub mod oauth;
pub mod pages;
pub mod pkce;
pub mod transcript;

pub use error::Error;
