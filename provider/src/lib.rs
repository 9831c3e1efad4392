//! An OAuth 2.0 / OpenID Connect provider for Matrix homeservers (MSC3861).
//!
//! - [`config`]: the YAML configuration, environment overrides, validation, generation.
//! - [`storage`]: repository traits per aggregate, on PostgreSQL and SQLite.
//! - [`keys`]: signing keys and the JWKS; [`crypto`]: secrets at rest.
//! - [`app`]: the HTTP application; [`endpoints`]: every path it serves; [`oauth2`]: the
//!   protocol endpoints.
//! - [`server`]: what `provider serve` does, reusable by the playground and tests.

pub mod accounts;
pub mod app;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod endpoints;
pub mod keys;
pub mod matrix;
pub mod oauth2;
pub mod passwords;
pub mod server;
pub mod storage;
pub mod sync;
pub mod telemetry;
#[cfg(feature = "test-harness")]
pub mod test_harness;
pub mod web;
