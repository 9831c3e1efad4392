//! Scripted Matrix clients. They speak HTTP only, so they can face any provider or homeserver.
//!
//! This first part holds what every OAuth client needs before its first request: a PKCE pair
//! and the order of the discovery documents to try.

pub mod discovery;
pub mod pkce;
