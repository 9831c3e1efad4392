//! The Matrix side of the provider (MSC3861): the homeserver connection, user and device
//! provisioning through the job queue, and the compatibility layer for legacy clients.
//!
//! - [`homeserver`]: what the provider asks of the homeserver, as a trait;
//!   [`synapse`] speaks the `/_synapse/mas/*` API, [`synapse_legacy`] the older
//!   `/_synapse/admin/*` API.
//! - [`provisioning`]: every change the homeserver must learn about goes through the persistent
//!   job queue (retried with backoff, so an outage delays but never loses it); the device of a
//!   new grant is upserted synchronously, since it must exist before the client uses its token.
//!
//! The legacy Matrix login API (MSC3824) is a door of the http layer: `crate::http::compat`.

pub mod homeserver;
mod http;
pub mod provisioning;
pub mod synapse;
pub mod synapse_legacy;

pub use homeserver::{
    FieldChange, Homeserver, HomeserverConnection, HomeserverError, MatrixUser, ProvisionUser,
};
