//! `config sync`: makes the database's static clients (and upstream providers, see
//! [`crate::core::upstream::sync`]) match the configuration.

use crate::{
    config::Settings,
    crypto::Encrypter,
    storage::{Storage, StorageError, Upserted},
};

/// What a sync did (or, on a dry run, would do), by `client_id`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    /// Static clients no longer in the config, deleted because of `--prune`.
    pub deleted: Vec<String>,
    /// Static clients no longer in the config, kept because `--prune` was not given.
    pub kept: Vec<String>,
    /// The upstream providers (`upstream_oauth2`), by ID.
    pub upstream: crate::core::upstream::sync::ProviderSyncReport,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        !(self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty())
            || self.upstream.changed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("client `{0}` in the config has the client_id of a dynamically registered client; choose another client_id")]
    TakenByDynamicClient(String),
    #[error("{0}")]
    Storage(StorageError),
}

impl From<StorageError> for SyncError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

/// Writes the configured static clients. With `prune`, deletes static clients the config no
/// longer lists (and, by cascade, their sessions). With `dry_run`, does all of it in a
/// transaction that is rolled back, so the report is exact and nothing changes.
pub async fn sync_clients(
    storage: &Storage,
    settings: &Settings,
    prune: bool,
    dry_run: bool,
) -> Result<SyncReport, SyncError> {
    let encrypter = Encrypter::new(&settings.encryption_key);
    let mut rng = storage.entropy().rng.rng();
    let mut repo = storage.begin().await?;
    let mut report = SyncReport::default();

    for client in &settings.clients {
        let existing = repo.clients().find_by_client_id(&client.client_id).await?;
        // Keep the stored ciphertext when the plain secret is unchanged: encryption uses a
        // fresh nonce each time, so re-encrypting would look like a change.
        let stored = existing
            .as_ref()
            .and_then(|c| c.encrypted_client_secret.clone())
            .filter(|enc| encrypter.decrypt(enc).ok() == client.secret);
        let secret = match (&client.secret, stored) {
            (Some(_), Some(stored)) => Some(stored),
            (Some(plain), None) => Some(encrypter.encrypt(&mut rng, plain)),
            (None, _) => None,
        };
        let outcome = repo
            .clients()
            .upsert_static(
                &client.client_id,
                secret.as_deref(),
                client.auth_method,
                &client.metadata,
            )
            .await;
        let list = match outcome {
            Ok((_, Upserted::Created)) => &mut report.created,
            Ok((_, Upserted::Updated)) => &mut report.updated,
            Ok((_, Upserted::Unchanged)) => &mut report.unchanged,
            Err(StorageError::Conflict(_)) => {
                return Err(SyncError::TakenByDynamicClient(client.client_id.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        list.push(client.client_id.clone());
    }

    for stale in repo.clients().list_static().await? {
        if settings
            .clients
            .iter()
            .any(|c| c.client_id == stale.client_id)
        {
            continue;
        }
        if prune {
            repo.clients().delete(stale.id).await?;
            report.deleted.push(stale.client_id);
        } else {
            report.kept.push(stale.client_id);
        }
    }

    report.upstream = crate::core::upstream::sync::sync_providers(
        &mut repo,
        &settings.upstream_providers,
        &encrypter,
        &mut rng,
    )
    .await?;

    if !dry_run {
        repo.commit().await?;
    }
    Ok(report)
}
