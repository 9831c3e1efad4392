//! The connection to the homeserver: what the provider asks of it (the homeserver contract of
//! SPEC-NOTES.md), as one trait with an implementation per API ([`HomeserverKind`]).
//!
//! Every method is idempotent, so a provisioning job may run it again after a failure or a
//! crash without harm.

use std::{collections::BTreeSet, fmt, sync::Arc};

use async_trait::async_trait;

use crate::config::{HomeserverKind, MatrixSettings};

/// A user as the homeserver knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixUser {
    pub localpart: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub deactivated: bool,
}

/// A change to one profile field, in a [`ProvisionUser`] request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FieldChange<T> {
    /// Leave the field as the homeserver has it.
    #[default]
    Keep,
    Set(T),
    Unset,
}

/// Creates the user on the homeserver or brings them up to date (`provision_user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionUser {
    pub localpart: String,
    pub displayname: FieldChange<String>,
    pub avatar_url: FieldChange<String>,
    /// The user's confirmed email addresses.
    pub emails: FieldChange<Vec<String>>,
    /// Locked users keep their data but can't use their tokens.
    pub locked: Option<bool>,
}

/// Why a call to the homeserver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HomeserverError {
    /// No answer: connection refused, timeout, broken response stream.
    #[error("the homeserver is unreachable: {0}")]
    Unreachable(String),
    /// The homeserver answered 5xx.
    #[error("the homeserver failed with HTTP {status}: {body}")]
    Server { status: u16, body: String },
    /// The homeserver refused the shared secret (401/403): the two configurations disagree.
    #[error("the homeserver refused the shared secret (HTTP {status}); check matrix.secret")]
    Unauthorized { status: u16 },
    /// The homeserver doesn't know this user.
    #[error("the homeserver has no user `{0}`")]
    UserNotFound(String),
    /// Any other refusal (4xx): the request itself is wrong, retrying won't help.
    #[error("the homeserver refused the request with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// A 2xx answer that isn't what the contract says.
    #[error("the homeserver answered something unexpected: {0}")]
    InvalidResponse(String),
}

impl HomeserverError {
    /// Worth retrying later: the homeserver may come back, or its configuration be fixed; a
    /// timeout (408) or a rate limit (429) in front of it passes too (RFC 9110 §15.5.9,
    /// RFC 6585 §4).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_)
                | Self::Server { .. }
                | Self::Unauthorized { .. }
                | Self::Refused {
                    status: 408 | 429,
                    ..
                }
        )
    }
}

/// What the provider asks of the homeserver. Implementations: [`super::synapse::SynapseConnection`]
/// (`/_synapse/mas/*`) and [`super::synapse_legacy::SynapseLegacyConnection`]
/// (`/_synapse/admin/*`).
#[async_trait]
pub trait HomeserverConnection: Send + Sync + fmt::Debug {
    /// The homeserver's server name.
    fn server_name(&self) -> &str;

    /// The Matrix user ID of a localpart on this homeserver.
    fn mxid(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// The user, or `None` when the homeserver has no such user.
    async fn query_user(&self, localpart: &str) -> Result<Option<MatrixUser>, HomeserverError>;

    /// May a new account take this localpart? `false` when taken or invalid.
    async fn is_localpart_available(&self, localpart: &str) -> Result<bool, HomeserverError>;

    /// Creates or updates a user; `true` when it was created.
    async fn provision_user(&self, request: &ProvisionUser) -> Result<bool, HomeserverError>;

    /// Deactivates a user (and erases their data when `erase`).
    async fn delete_user(&self, localpart: &str, erase: bool) -> Result<(), HomeserverError>;

    /// Reactivates a deactivated user.
    async fn reactivate_user(&self, localpart: &str) -> Result<(), HomeserverError>;

    /// Sets (`Some`) or removes (`None`) the display name.
    async fn set_displayname(
        &self,
        localpart: &str,
        displayname: Option<&str>,
    ) -> Result<(), HomeserverError>;

    /// Creates the device, or updates its display name when given.
    async fn upsert_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError>;

    async fn update_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: &str,
    ) -> Result<(), HomeserverError>;

    /// Deletes the device (its access ends at once on the homeserver); succeeds when it is
    /// already gone.
    async fn delete_device(&self, localpart: &str, device_id: &str) -> Result<(), HomeserverError>;

    /// Makes the user's devices exactly `devices`: missing ones are created, others deleted.
    async fn sync_devices(
        &self,
        localpart: &str,
        devices: &BTreeSet<String>,
    ) -> Result<(), HomeserverError>;

    /// Lets the user reset their cross-signing keys without interactive authentication for a
    /// while (MSC4191 `org.matrix.cross_signing_reset`).
    async fn allow_cross_signing_reset(&self, localpart: &str) -> Result<(), HomeserverError>;
}

/// The shared connection handle.
pub type Homeserver = Arc<dyn HomeserverConnection>;

/// The connection the settings ask for.
pub fn connect(settings: &MatrixSettings) -> Homeserver {
    match settings.kind {
        HomeserverKind::Synapse => Arc::new(super::synapse::SynapseConnection::new(settings)),
        HomeserverKind::SynapseLegacy => Arc::new(
            super::synapse_legacy::SynapseLegacyConnection::new(settings),
        ),
    }
}
