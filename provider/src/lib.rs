//! An OAuth 2.0 / OpenID Connect provider for Matrix homeservers (MSC3861).
//!
//! - [`config`]: the YAML configuration, environment overrides, validation, generation.
//! - [`storage`]: repository traits per aggregate, on PostgreSQL and SQLite.
//! - [`keys`]: signing keys and the JWKS; [`crypto`]: secrets at rest.
//! - [`app`]: the HTTP application; [`endpoints`]: every path it serves; [`oauth2`]: the
//!   protocol endpoints.
//! - [`server`]: what `provider serve` does, reusable by the playground and tests.
//! - [`admin`]: the admin API (`/api/admin/v1`) and its OpenAPI document.
//! - [`cli`]: `provider manage …`, account operations from the command line.
//! - [`email`]: outgoing mail (SMTP, captured, or dropped).
//! - [`upstream`]: signing in through upstream OpenID Connect providers.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod captcha;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod doctor;
pub mod domain;
pub mod email;
pub mod endpoints;
pub mod housekeeping;
pub mod keys;
pub mod matrix;
pub mod oauth2;
pub mod passwords;
pub mod rate_limit;
pub mod server;
pub mod storage;
pub mod sync;
pub mod telemetry;
#[cfg(feature = "test-harness")]
pub mod test_harness;
pub mod upstream;
pub mod web;
