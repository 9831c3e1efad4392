//! The storage contract: every repository method, exercised on SQLite and on PostgreSQL
//! (see `provider::test_harness` for how the PostgreSQL database is found).

// Tests make throwaway IDs (`Ulid::new()`) for rows that must not exist; the clock and RNG rule
// of `clippy.toml` is for request code.
#![allow(clippy::disallowed_methods)]

mod admin_lists;
mod batch;
mod browser_sessions;
mod client_assertions;
mod clients;
mod compat;
mod email_verifications;
mod fixtures;
mod grants;
mod hot;
mod housekeeping;
mod jobs;
mod oauth2_sessions;
mod rate_limits;
mod recovery_tickets;
mod registration_tokens;
mod synapse_import;
mod token_writer;
mod upstream;
mod user_terms;
mod users;
