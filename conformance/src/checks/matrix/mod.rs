//! The `matrix-provider` profile: what Matrix clients and homeservers need from the provider
//! (MSC2965 discovery, MSC2966 registration, MSC2967 scopes, MSC4191 account management,
//! MSC4341 device grant, the homeserver's introspection contract, the legacy login API).

pub(crate) mod compat;
pub(crate) mod device;
pub(crate) mod introspection;
pub(crate) mod metadata;
pub(crate) mod registration;
pub(crate) mod scopes;
