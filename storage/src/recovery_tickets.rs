//! Password recovery tickets: the secret of a "Forgot password?" link mailed to a confirmed
//! address. Only the SHA-256 of the ticket is kept; it works once, until it expires, and dies
//! with the address it was mailed to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    compare_and_set, delete_batch, for_each_backend, inserted_under,
    types::{db_precision, decode_token_hash, DbId, Ts},
    StorageError, TokenHash,
};

/// A password recovery link mailed to an address of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryTicket {
    pub id: Ulid,
    pub user_id: Ulid,
    /// The confirmed address it was mailed to.
    pub user_email_id: Ulid,
    pub ticket_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
}

impl RecoveryTicket {
    /// Can it still set a password at `now` (unused and unexpired)?
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.consumed_at.is_none() && now < self.expires_at
    }
}

#[async_trait]
pub trait RecoveryTicketRepository: Send {
    /// A new ticket for the address `user_email_id` of `user_id`, valid until `expires_at`;
    /// [`StorageError::NotFound`]`("email address")` when the address is gone,
    /// [`StorageError::Conflict`] when it is someone else's (or the hash is taken).
    async fn add(
        &mut self,
        user_id: Ulid,
        user_email_id: Ulid,
        ticket_hash: &TokenHash,
        expires_at: DateTime<Utc>,
    ) -> Result<RecoveryTicket, StorageError>;
    async fn find_by_ticket_hash(
        &mut self,
        ticket_hash: &TokenHash,
    ) -> Result<Option<RecoveryTicket>, StorageError>;
    /// Marks the ticket used (compare-and-set: once, before it expires).
    async fn consume(&mut self, id: Ulid) -> Result<bool, StorageError>;
    /// Marks every unused ticket of the user used (a new password voids the other links);
    /// returns how many.
    async fn consume_all_for_user(&mut self, user_id: Ulid) -> Result<u64, StorageError>;

    /// Deletes the recovery tickets that expired before `before` (used or not).
    /// Deletes at most `limit` rows and returns how many (housekeeping, see
    /// `provider::core::housekeeping`).
    async fn delete_expired(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: DbId,
    user_id: DbId,
    user_email_id: DbId,
    ticket_hash: Vec<u8>,
    created_at: Ts,
    expires_at: Ts,
    consumed_at: Option<Ts>,
}

impl TryFrom<TicketRow> for RecoveryTicket {
    type Error = StorageError;
    fn try_from(r: TicketRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            user_id: r.user_id.0,
            user_email_id: r.user_email_id.0,
            ticket_hash: decode_token_hash(r.ticket_hash)?,
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
            consumed_at: r.consumed_at.map(Into::into),
        })
    }
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl RecoveryTicketRepository for $repo {
            async fn add(
                &mut self,
                user_id: Ulid,
                user_email_id: Ulid,
                ticket_hash: &TokenHash,
                expires_at: DateTime<Utc>,
            ) -> Result<RecoveryTicket, StorageError> {
                let row = RecoveryTicket {
                    id: self.new_id(),
                    user_id,
                    user_email_id,
                    ticket_hash: *ticket_hash,
                    created_at: self.now(),
                    expires_at: db_precision(expires_at),
                    consumed_at: None,
                };
                // The address must be the user's: a ticket can't point at someone else's.
                let done = sqlx::query(
                    "INSERT INTO user_recovery_tickets \
                     (id, user_id, user_email_id, ticket_hash, created_at, expires_at) \
                     SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE EXISTS (SELECT 1 FROM user_emails WHERE id = $3 AND user_id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(row.id))
                .bind(DbId(user_id))
                .bind(DbId(user_email_id))
                .bind(&row.ticket_hash[..])
                .bind(Ts(row.created_at))
                .bind(Ts(row.expires_at))
                .execute(self.conn())
                .await?;
                inserted_under!(
                    self, done, "recovery ticket",
                    requires "user_emails", user_email_id, "email address"
                )?;
                Ok(row)
            }

            async fn find_by_ticket_hash(
                &mut self,
                ticket_hash: &TokenHash,
            ) -> Result<Option<RecoveryTicket>, StorageError> {
                let row: Option<TicketRow> = sqlx::query_as(
                    "SELECT id, user_id, user_email_id, ticket_hash, created_at, expires_at, \
                     consumed_at FROM user_recovery_tickets WHERE ticket_hash = $1",
                )
                .bind(&ticket_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn consume(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE user_recovery_tickets SET consumed_at = $2 \
                     WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "user_recovery_tickets",
                    id,
                    "recovery ticket"
                )
            }

            async fn consume_all_for_user(&mut self, user_id: Ulid) -> Result<u64, StorageError> {
                let done = sqlx::query(
                    "UPDATE user_recovery_tickets SET consumed_at = $2 \
                     WHERE user_id = $1 AND consumed_at IS NULL",
                )
                .bind(DbId(user_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }

            async fn delete_expired(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "user_recovery_tickets",
                    "id",
                    "expires_at < $1",
                    Ts(before),
                    limit
                )
            }
        }
    };
}

for_each_backend!(implementation);
