//! An OAuth 2.0 / OpenID Connect provider for Matrix homeservers (MSC3861).

pub mod clock;
pub mod storage;
#[cfg(feature = "test-harness")]
pub mod test_harness;
