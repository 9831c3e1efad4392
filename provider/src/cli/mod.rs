//! Command-line operations beyond serving, shared by the `provider` binary and its tests.
//!
//! - [`manage`]: `provider manage …`, account operations for operators.
//! - [`syn2mas`]: `provider syn2mas …`, the move of an existing Synapse onto the provider.

pub mod manage;
pub mod syn2mas;
