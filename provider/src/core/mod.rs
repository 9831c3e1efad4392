//! What can happen, whatever the door: accounts and sign-in, sessions, the homeserver
//! connection and its provisioning jobs, rate limits, passwords, email, the upstream client.
//!
//! The core layer imports [`crate::config`] and the two bottom crates (`domain`, `storage`),
//! never the http layer: every door (pages, OAuth 2.0 endpoints, the admin API, the legacy
//! Matrix API, the CLI) reaches these services through a [`Core`].

use std::sync::Arc;

use crate::{config::Settings, storage::Storage};

pub mod accounts;
pub mod captcha;
pub mod clients;
pub mod email;
pub mod grants;
pub mod housekeeping;
pub mod matrix;
pub mod passwords;
pub mod rate_limit;
pub mod sessions;
pub mod sign_in;
pub mod sync;
pub mod templates;
pub mod tokens;
pub mod upstream;

use self::{
    captcha::CaptchaVerifier,
    email::Mailer,
    matrix::Homeserver,
    passwords::{PasswordConfig, PasswordConfigError, PasswordHasher},
    rate_limit::RateLimiter,
    templates::Templates,
    upstream::client::UpstreamHttp,
};

/// The services of one provider process, built once from the settings and the storage. Cheap
/// to clone (every field is shared).
#[derive(Clone)]
pub struct Core {
    pub settings: Arc<Settings>,
    pub storage: Storage,
    pub passwords: PasswordHasher,
    /// The homeserver this provider authenticates for.
    pub homeserver: Homeserver,
    /// The rate limits, kept in the database (see [`rate_limit`]).
    pub limiter: RateLimiter,
    /// Sends the verification codes and recovery links (see [`email`]).
    pub mailer: Mailer,
    /// The templates of the pages and the mails.
    pub templates: Arc<Templates>,
    /// The upstream login's HTTP client, with its metadata and key caches (see [`upstream`]).
    pub upstream: UpstreamHttp,
    /// Verifies the registration captcha when one is configured (see [`captcha`]).
    pub captcha: Option<CaptchaVerifier>,
    /// A hash to check unknown usernames against, made on first use.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("issuer", &self.settings.issuer.as_str())
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The services, hashing passwords with the default schemes (argon2id, OWASP parameters;
    /// imported bcrypt hashes checked with `secrets.password_pepper`).
    pub fn new(settings: Settings, storage: Storage) -> Result<Self, PasswordConfigError> {
        let config = PasswordConfig {
            bcrypt_pepper: settings.password_pepper.clone(),
            ..PasswordConfig::default()
        };
        let passwords = PasswordHasher::new(config, storage.entropy().rng.clone())?;
        Ok(Self::with_passwords(settings, storage, passwords))
    }

    /// The services with a given password hasher.
    pub fn with_passwords(settings: Settings, storage: Storage, passwords: PasswordHasher) -> Self {
        Self {
            homeserver: matrix::homeserver::connect(&settings.matrix),
            mailer: Mailer::from_settings(
                &settings.email,
                settings.issuer.host_str().unwrap_or("localhost"),
                storage.entropy().clone(),
            ),
            limiter: RateLimiter::new(storage.clone(), settings.rate_limits.clone()),
            captcha: settings.captcha.clone().map(CaptchaVerifier::new),
            settings: Arc::new(settings),
            storage,
            templates: Arc::new(Templates::new()),
            passwords,
            upstream: UpstreamHttp::new(),
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// A valid hash of no one's password, for checking unknown usernames in the same time as
    /// known ones.
    pub async fn dummy_password_hash(&self) -> String {
        self.dummy_hash
            .get_or_init(|| async {
                self.passwords
                    .hash("not a password of anyone".to_owned())
                    .await
                    .map(|(_, hash)| hash)
                    .unwrap_or_default()
            })
            .await
            .clone()
    }
}
