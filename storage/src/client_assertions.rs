//! The `jti`s of JWT client assertions already used (RFC 7523 §3 item 7, OIDC Core §9).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    delete_batch, for_each_backend, row_exists,
    types::{DbId, Ts},
    StorageError,
};

#[async_trait]
pub trait ClientAssertionRepository: Send {
    /// Records that client `client` used an assertion with this `jti`, valid until `expires_at`.
    /// `true` the first time, `false` when the pair was already recorded (a replay). The check
    /// and the record are one `INSERT … ON CONFLICT DO NOTHING`, so two concurrent uses can't
    /// both win.
    async fn record_jti(
        &mut self,
        client: Ulid,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StorageError>;

    /// Deletes the `jti`s of assertions that expired before `before`: an expired assertion
    /// is refused for its `exp` anyway, so its `jti` no longer needs remembering.
    /// Deletes at most `limit` rows and returns how many (housekeeping, see
    /// `provider::core::housekeeping`).
    async fn delete_expired(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl ClientAssertionRepository for $repo {
            async fn record_jti(
                &mut self,
                client: Ulid,
                jti: &str,
                expires_at: DateTime<Utc>,
            ) -> Result<bool, StorageError> {
                // Guarded like every insert here: a client deleted meanwhile (config sync
                // --prune) inserts nothing instead of failing on the foreign key, which would
                // abort a PostgreSQL transaction.
                let done = sqlx::query(
                    "INSERT INTO oauth2_client_assertion_jtis (client_id, jti, expires_at) \
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM oauth2_clients WHERE id = $1) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(client))
                .bind(jti)
                .bind(Ts(expires_at))
                .execute(self.conn())
                .await?;
                match StorageError::inserted(done, "client assertion jti") {
                    Ok(()) => Ok(true),
                    Err(StorageError::Conflict(_)) if row_exists!(self, "oauth2_clients", client) => {
                        Ok(false)
                    }
                    Err(StorageError::Conflict(_)) => Err(StorageError::NotFound("client")),
                    Err(e) => Err(e),
                }
            }

            async fn delete_expired(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "oauth2_client_assertion_jtis",
                    "client_id, jti",
                    "expires_at < $1",
                    Ts(before),
                    limit
                )
            }
        }
    };
}

for_each_backend!(implementation);
