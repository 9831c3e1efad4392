//! The pages: sign-in, registration, consent, the device link, logout, recovery and the account
//! pages. What they share is the kit ([`crate::http::kit`]); what they do is the core.

pub mod account;
pub mod link;
pub mod login;
pub mod logout;
pub mod recover;
pub mod register;
pub mod register_controls;
pub mod register_verify;
