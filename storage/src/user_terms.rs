//! Which terms of service each user accepted, and when (`account: terms_of_service_url`): the
//! record a registration leaves when the operator asks users to accept terms.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    for_each_backend,
    types::{DbId, Ts},
    StorageError,
};

/// One acceptance of terms of service by a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTerms {
    pub id: Ulid,
    pub user_id: Ulid,
    /// The terms' URL as configured when the user accepted them.
    pub terms_url: String,
    pub accepted_at: DateTime<Utc>,
}

#[async_trait]
pub trait UserTermsRepository: Send {
    /// Records that the user accepted the terms at `terms_url` now. Accepting the same terms
    /// again keeps the first acceptance (and returns it). [`StorageError::NotFound`] when there
    /// is no such user.
    async fn accept(&mut self, user_id: Ulid, terms_url: &str) -> Result<UserTerms, StorageError>;
    /// The terms the user accepted, oldest first.
    async fn list_for_user(&mut self, user_id: Ulid) -> Result<Vec<UserTerms>, StorageError>;
}

#[derive(sqlx::FromRow)]
struct TermsRow {
    id: DbId,
    user_id: DbId,
    terms_url: String,
    accepted_at: Ts,
}

impl From<TermsRow> for UserTerms {
    fn from(r: TermsRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.0,
            terms_url: r.terms_url,
            accepted_at: r.accepted_at.0,
        }
    }
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl UserTermsRepository for $repo {
            async fn accept(
                &mut self,
                user_id: Ulid,
                terms_url: &str,
            ) -> Result<UserTerms, StorageError> {
                let id = self.new_id();
                let now = self.now();
                // Guarded by the user's existence (a missing user inserts nothing instead of
                // failing on the foreign key, which would abort a PostgreSQL transaction); an
                // earlier acceptance of the same terms is kept.
                sqlx::query(
                    "INSERT INTO user_terms (id, user_id, terms_url, accepted_at) \
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(id))
                .bind(DbId(user_id))
                .bind(terms_url)
                .bind(Ts(now))
                .execute(self.conn())
                .await?;
                let row: Option<TermsRow> = sqlx::query_as(
                    "SELECT id, user_id, terms_url, accepted_at FROM user_terms \
                     WHERE user_id = $1 AND terms_url = $2",
                )
                .bind(DbId(user_id))
                .bind(terms_url)
                .fetch_optional(self.conn())
                .await?;
                // No row (inserted now or before) only when the user is missing.
                row.map(Into::into).ok_or(StorageError::NotFound("user"))
            }

            async fn list_for_user(
                &mut self,
                user_id: Ulid,
            ) -> Result<Vec<UserTerms>, StorageError> {
                let rows: Vec<TermsRow> = sqlx::query_as(
                    "SELECT id, user_id, terms_url, accepted_at FROM user_terms \
                     WHERE user_id = $1 ORDER BY accepted_at, id",
                )
                .bind(DbId(user_id))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }
    };
}

for_each_backend!(implementation);
