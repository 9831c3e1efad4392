//! Makes the database's upstream providers match the configuration, in the caller's
//! transaction (the one of [`crate::core::sync::sync_clients`], so `config sync --dry-run` reports it
//! too): each configured provider is upserted under its ID (its client secret encrypted, like
//! client secrets), and providers no longer configured are disabled — not deleted, so their
//! links survive and come back with the provider.

use rand::RngCore;

use crate::config::upstream::UpstreamProviderSettings;
use crate::{
    crypto::Encrypter,
    storage::{BoxRepository, StorageError, UpstreamProvider, UpstreamProviderParams},
};

/// What a sync did (or, on a dry run, would do), by provider ID.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProviderSyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    /// Enabled before, no longer configured: disabled.
    pub disabled: Vec<String>,
}

impl ProviderSyncReport {
    pub fn changed(&self) -> bool {
        !(self.created.is_empty() && self.updated.is_empty() && self.disabled.is_empty())
    }
}

/// The stored form of a configured provider. The ciphertext of an unchanged secret is kept
/// (encryption takes a fresh nonce each time, so re-encrypting would look like a change).
fn params(
    wanted: &UpstreamProviderSettings,
    existing: Option<&UpstreamProvider>,
    encrypter: &Encrypter,
    rng: &mut impl RngCore,
) -> Result<UpstreamProviderParams, StorageError> {
    let stored = existing
        .and_then(|p| p.encrypted_client_secret.clone())
        .filter(|enc| encrypter.decrypt(enc).ok() == wanted.client_secret);
    let encrypted_client_secret = match (&wanted.client_secret, stored) {
        (Some(_), Some(stored)) => Some(stored),
        (Some(plain), None) => Some(encrypter.encrypt(rng, plain)),
        (None, _) => None,
    };
    Ok(UpstreamProviderParams {
        issuer: Some(wanted.issuer.clone()),
        human_name: wanted.human_name.clone(),
        brand_name: wanted.brand_name.clone(),
        client_id: wanted.client_id.clone(),
        encrypted_client_secret,
        token_endpoint_auth_method: wanted.token_endpoint_auth_method,
        scope: wanted.scope.clone(),
        settings: serde_json::to_value(&wanted.settings)
            .map_err(|e| StorageError::Invalid(e.to_string()))?,
    })
}

/// Upserts the configured providers and disables the others.
pub async fn sync_providers(
    repo: &mut BoxRepository,
    providers: &[UpstreamProviderSettings],
    encrypter: &Encrypter,
    rng: &mut impl RngCore,
) -> Result<ProviderSyncReport, StorageError> {
    let mut report = ProviderSyncReport::default();
    for wanted in providers {
        let existing = repo.upstream_providers().lookup(wanted.id).await?;
        let params = params(wanted, existing.as_ref(), encrypter, rng)?;
        let unchanged = existing.as_ref().is_some_and(|p| {
            p.is_enabled()
                && UpstreamProviderParams {
                    issuer: p.issuer.clone(),
                    human_name: p.human_name.clone(),
                    brand_name: p.brand_name.clone(),
                    client_id: p.client_id.clone(),
                    encrypted_client_secret: p.encrypted_client_secret.clone(),
                    token_endpoint_auth_method: p.token_endpoint_auth_method,
                    scope: p.scope.clone(),
                    settings: p.settings.clone(),
                } == params
        });
        let id = wanted.id.to_string();
        if unchanged {
            report.unchanged.push(id);
            continue;
        }
        repo.upstream_providers().upsert(wanted.id, params).await?;
        if existing.is_some() {
            report.updated.push(id);
        } else {
            report.created.push(id);
        }
    }
    for stale in repo.upstream_providers().list_enabled().await? {
        if providers.iter().any(|p| p.id == stale.id) {
            continue;
        }
        if repo.upstream_providers().disable(stale.id).await? {
            report.disabled.push(stale.id.to_string());
        }
    }
    Ok(report)
}
