//! An OAuth 2.0 / OpenID Connect provider for Matrix homeservers (MSC3861), in layers that
//! import only downwards (README "Architecture"):
//!
//! - `domain` (crate `provider-domain`): protocol rules and types without I/O, the clock, crypto
//!   helpers, signing keys, every path served ([`endpoints`]).
//! - `storage` (crate `provider-storage`): repository traits per aggregate, on PostgreSQL and
//!   SQLite.
//! - [`config`]: the YAML configuration, environment overrides, validation, generation.
//! - [`core`]: what can happen, whatever the door: accounts and sign-in, sessions, grants,
//!   the homeserver and its provisioning jobs, rate limits, passwords, email, the upstream client.
//! - [`http`]: `AppState`, the kit the doors share, and the doors: OAuth 2.0 endpoints, pages,
//!   the legacy Matrix login API, the admin API, the upstream login pages.
//! - wiring: [`app`] (the router), [`server`] (what `provider serve` does, reusable by the
//!   playground and tests), [`cli`], [`doctor`], [`telemetry`].

// The bottom two layers are crates of their own (`domain/`, `storage/`); re-exported so that
// `provider::storage::…` and `crate::clock::…` name the same items everywhere.
pub use domain::{self, clock, crypto, endpoints, keys};
pub use storage;

pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod doctor;
pub mod http;
pub mod server;
pub mod telemetry;
#[cfg(feature = "test-harness")]
pub mod test_harness;
