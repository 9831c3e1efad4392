//! The http layer: [`AppState`], the [`kit`] every door shares, and the doors themselves:
//! [`oauth2`] (the OAuth 2.0 / OpenID Connect endpoints), [`web`] (pages), [`compat`] (the legacy
//! Matrix login API), [`admin`] (the admin API) and [`upstream`] (the pages of an upstream
//! login). Doors reach each other only through the kit and [`crate::core`].

use std::{ops::Deref, sync::Arc};

use axum::{body::Bytes, extract::FromRef};
use axum_extra::extract::cookie::Key;

use crate::{
    config::Settings,
    core::{
        passwords::{PasswordConfigError, PasswordHasher},
        Core,
    },
    storage::Storage,
};

pub mod admin;
pub mod compat;
pub mod kit;
pub mod oauth2;
pub mod upstream;
pub mod web;

/// Documents that never change while the server runs, serialised once.
#[derive(Debug)]
pub struct Documents {
    pub metadata: Bytes,
    pub jwks: Bytes,
}

/// What every handler can reach: the [`Core`] services (through `Deref`, so `state.storage`,
/// `state.settings`, … read as before), and what only the http layer needs. One shared
/// allocation: axum clones the state for every extractor and middleware of every request, and
/// a clone is one reference count (the services' own dozen or so were measured at 3–4 % of the
/// provider's CPU on the introspection path, issue 16).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
pub struct Shared {
    pub core: Core,
    pub documents: Documents,
    /// Protects the browser cookie (see [`kit::session`]).
    pub cookie_key: Key,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl From<AppState> for Core {
    fn from(state: AppState) -> Self {
        state.core.clone()
    }
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Self {
        state.cookie_key.clone()
    }
}

impl AppState {
    /// The state, hashing passwords with the default schemes (argon2id, OWASP parameters).
    pub fn new(settings: Settings, storage: Storage) -> Result<Self, PasswordConfigError> {
        Ok(Self::from_core(Core::new(settings, storage)?))
    }

    /// The state with a given password hasher.
    pub fn with_passwords(settings: Settings, storage: Storage, passwords: PasswordHasher) -> Self {
        Self::from_core(Core::with_passwords(settings, storage, passwords))
    }

    /// The http layer around the services.
    pub fn from_core(core: Core) -> Self {
        let metadata = oauth2::discovery::ProviderMetadata::new(&core.settings);
        let documents = Documents {
            metadata: Bytes::from(serde_json::to_vec(&metadata).unwrap_or_default()),
            jwks: Bytes::from(core.settings.keystore.jwks().to_string()),
        };
        let cookie_key = kit::session::cookie_key(&core.settings.encryption_key);
        Self(Arc::new(Shared {
            core,
            documents,
            cookie_key,
        }))
    }

    /// What every page shows besides its content.
    pub fn chrome(&self) -> kit::Chrome<'_> {
        kit::Chrome {
            site_name: &self.settings.matrix.homeserver,
            stylesheet: kit::STYLESHEET,
        }
    }
}
