//! Command-line operations beyond serving, shared by the `provider` binary and its tests.
//!
//! - [`manage`]: `provider manage …`, account operations for operators.

pub mod manage;
