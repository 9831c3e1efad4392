//! The codes mailed to confirm an email address, and the registrations waiting for theirs.
//!
//! A code is tried through [`UserEmailVerificationRepository::record_attempt`] (or the pending
//! registration's), which counts the attempt in the same statement that checks the code can
//! still be tried (not used, not expired, under its attempt limit): concurrent guesses can't
//! exceed the limit, and a wrong guess counts even if the request fails afterwards (the caller
//! commits it either way).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    compare_and_set, delete_batch, for_each_backend, inserted_under,
    types::{db_precision, decode_token_hash, DbId, Ts},
    StorageError, TokenHash,
};

/// A code mailed to confirm an address of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailVerification {
    pub id: Ulid,
    pub user_email_id: Ulid,
    pub code_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Codes tried against it so far.
    pub attempts: i32,
    pub consumed_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait UserEmailVerificationRepository: Send {
    /// A new code for the address, valid until `expires_at`; [`StorageError::NotFound`]`("email
    /// address")` when the address is gone.
    async fn add(
        &mut self,
        user_email_id: Ulid,
        code_hash: &TokenHash,
        expires_at: DateTime<Utc>,
    ) -> Result<EmailVerification, StorageError>;
    /// The newest code of the address (the one that counts), whatever its state.
    async fn latest(
        &mut self,
        user_email_id: Ulid,
    ) -> Result<Option<EmailVerification>, StorageError>;
    /// Counts one attempt at the code, if it can still be tried now: not used, not expired,
    /// fewer than `max_attempts` attempts so far. Returns it with the new count, or `None`
    /// when it can't be tried (the caller tells why from [`Self::latest`]).
    async fn record_attempt(
        &mut self,
        id: Ulid,
        max_attempts: i32,
    ) -> Result<Option<EmailVerification>, StorageError>;
    /// Marks the code used (compare-and-set: only an unused, unexpired one, once).
    async fn consume(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Deletes the codes that expired before `before` (used or not: an expired code is
    /// never tried again).
    /// Deletes at most `limit` rows and returns how many (housekeeping, see
    /// `provider::core::housekeeping`).
    async fn delete_expired(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

/// A registration waiting for the code mailed to its address: no user exists (and no username
/// is taken) until [`PendingRegistrationRepository::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRegistration {
    pub id: Ulid,
    pub username: String,
    pub email: String,
    pub hashed_password: String,
    pub password_version: i32,
    pub code_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub attempts: i32,
    pub completed_at: Option<DateTime<Utc>>,
    /// The registration token the form was given, used when the account is created.
    pub registration_token_id: Option<Ulid>,
    /// The terms of service the form accepted, recorded when the account is created.
    pub accepted_terms_url: Option<String>,
}

/// What a new [`PendingRegistration`] holds.
#[derive(Debug, Clone)]
pub struct NewPendingRegistration<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub hashed_password: &'a str,
    pub password_version: i32,
    pub code_hash: &'a TokenHash,
    pub expires_at: DateTime<Utc>,
    pub registration_token_id: Option<Ulid>,
    pub accepted_terms_url: Option<&'a str>,
}

#[async_trait]
pub trait PendingRegistrationRepository: Send {
    async fn add(
        &mut self,
        new: NewPendingRegistration<'_>,
    ) -> Result<PendingRegistration, StorageError>;
    async fn lookup(&mut self, id: Ulid) -> Result<Option<PendingRegistration>, StorageError>;
    /// Counts one attempt at the code, as
    /// [`UserEmailVerificationRepository::record_attempt`] does: only for a registration not
    /// completed, not expired, under `max_attempts`.
    async fn record_attempt(
        &mut self,
        id: Ulid,
        max_attempts: i32,
    ) -> Result<Option<PendingRegistration>, StorageError>;
    /// A new code (attempts start over), valid until `expires_at`, for a registration not
    /// completed yet. `false` when it was completed.
    async fn renew_code(
        &mut self,
        id: Ulid,
        code_hash: &TokenHash,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StorageError>;
    /// Marks it completed (compare-and-set: once, before it expires), forgetting the password
    /// hash (the new user's password row has it now).
    async fn complete(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Deletes the pending registrations whose code expired before `before`, completed or
    /// abandoned (a completed one is a user now; an abandoned one can only be started
    /// again).
    /// Deletes at most `limit` rows and returns how many (housekeeping, see
    /// `provider::core::housekeeping`).
    async fn delete_expired(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct VerificationRow {
    id: DbId,
    user_email_id: DbId,
    code_hash: Vec<u8>,
    created_at: Ts,
    expires_at: Ts,
    attempts: i32,
    consumed_at: Option<Ts>,
}

impl TryFrom<VerificationRow> for EmailVerification {
    type Error = StorageError;
    fn try_from(r: VerificationRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            user_email_id: r.user_email_id.0,
            code_hash: decode_token_hash(r.code_hash)?,
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
            attempts: r.attempts,
            consumed_at: r.consumed_at.map(Into::into),
        })
    }
}

macro_rules! verification_columns {
    () => {
        "id, user_email_id, code_hash, created_at, expires_at, attempts, consumed_at"
    };
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: DbId,
    username: String,
    email: String,
    hashed_password: String,
    password_version: i32,
    code_hash: Vec<u8>,
    created_at: Ts,
    expires_at: Ts,
    attempts: i32,
    completed_at: Option<Ts>,
    registration_token_id: Option<DbId>,
    accepted_terms_url: Option<String>,
}

impl TryFrom<PendingRow> for PendingRegistration {
    type Error = StorageError;
    fn try_from(r: PendingRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            username: r.username,
            email: r.email,
            hashed_password: r.hashed_password,
            password_version: r.password_version,
            code_hash: decode_token_hash(r.code_hash)?,
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
            attempts: r.attempts,
            completed_at: r.completed_at.map(Into::into),
            registration_token_id: r.registration_token_id.map(Into::into),
            accepted_terms_url: r.accepted_terms_url,
        })
    }
}

macro_rules! pending_columns {
    () => {
        "id, username, email, hashed_password, password_version, code_hash, created_at, \
         expires_at, attempts, completed_at, registration_token_id, accepted_terms_url"
    };
}

/// Counts one attempt at the code of row `$id` of `$table` (both tables' code columns are
/// alike), if it can still be tried now: `$done` (its use) not set, not expired, fewer than
/// `$max` attempts so far. Evaluates to the row with the new count, or `None`.
macro_rules! record_attempt {
    (
        $self:ident, $table:literal, $row:ty, $columns:ident,
        unless $done:literal, $id:expr, $max:expr
    ) => {{
        let row: Option<$row> = sqlx::query_as(concat!(
            "UPDATE ",
            $table,
            " SET attempts = attempts + 1 WHERE id = $1 AND ",
            $done,
            " IS NULL AND expires_at > $2 AND attempts < $3 RETURNING ",
            $columns!()
        ))
        .bind(DbId($id))
        .bind(Ts($self.now()))
        .bind($max)
        .fetch_optional($self.conn())
        .await?;
        row.map(TryInto::try_into).transpose()
    }};
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl UserEmailVerificationRepository for $repo {
            async fn add(
                &mut self,
                user_email_id: Ulid,
                code_hash: &TokenHash,
                expires_at: DateTime<Utc>,
            ) -> Result<EmailVerification, StorageError> {
                let row = EmailVerification {
                    id: self.new_id(),
                    user_email_id,
                    code_hash: *code_hash,
                    created_at: self.now(),
                    expires_at: db_precision(expires_at),
                    attempts: 0,
                    consumed_at: None,
                };
                // Guarded: an address removed meanwhile inserts nothing instead of failing on
                // the foreign key (which would abort a PostgreSQL transaction).
                let done = sqlx::query(
                    "INSERT INTO user_email_verifications \
                     (id, user_email_id, code_hash, created_at, expires_at) \
                     SELECT $1, $2, $3, $4, $5 \
                     WHERE EXISTS (SELECT 1 FROM user_emails WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(row.id))
                .bind(DbId(user_email_id))
                .bind(&row.code_hash[..])
                .bind(Ts(row.created_at))
                .bind(Ts(row.expires_at))
                .execute(self.conn())
                .await?;
                inserted_under!(
                    self, done, "email verification",
                    requires "user_emails", user_email_id, "email address"
                )?;
                Ok(row)
            }

            async fn latest(
                &mut self,
                user_email_id: Ulid,
            ) -> Result<Option<EmailVerification>, StorageError> {
                // ULIDs grow with time: the greatest id is the newest code.
                let row: Option<VerificationRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    verification_columns!(),
                    " FROM user_email_verifications WHERE user_email_id = $1 \
                      ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(DbId(user_email_id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn record_attempt(
                &mut self,
                id: Ulid,
                max_attempts: i32,
            ) -> Result<Option<EmailVerification>, StorageError> {
                record_attempt!(
                    self, "user_email_verifications", VerificationRow, verification_columns,
                    unless "consumed_at", id, max_attempts
                )
            }

            async fn consume(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE user_email_verifications SET consumed_at = $2 \
                     WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "user_email_verifications",
                    id,
                    "email verification"
                )
            }

            async fn delete_expired(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "user_email_verifications",
                    "id",
                    "expires_at < $1",
                    Ts(before),
                    limit
                )
            }
        }

        #[async_trait]
        impl PendingRegistrationRepository for $repo {
            async fn add(
                &mut self,
                new: NewPendingRegistration<'_>,
            ) -> Result<PendingRegistration, StorageError> {
                let row = PendingRegistration {
                    id: self.new_id(),
                    username: new.username.to_owned(),
                    email: new.email.to_owned(),
                    hashed_password: new.hashed_password.to_owned(),
                    password_version: new.password_version,
                    code_hash: *new.code_hash,
                    created_at: self.now(),
                    expires_at: db_precision(new.expires_at),
                    attempts: 0,
                    completed_at: None,
                    registration_token_id: new.registration_token_id,
                    accepted_terms_url: new.accepted_terms_url.map(str::to_owned),
                };
                sqlx::query(
                    "INSERT INTO pending_registrations \
                     (id, username, email, hashed_password, password_version, code_hash, \
                      created_at, expires_at, registration_token_id, accepted_terms_url) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(DbId(row.id))
                .bind(&row.username)
                .bind(&row.email)
                .bind(&row.hashed_password)
                .bind(row.password_version)
                .bind(&row.code_hash[..])
                .bind(Ts(row.created_at))
                .bind(Ts(row.expires_at))
                .bind(row.registration_token_id.map(DbId))
                .bind(row.accepted_terms_url.as_deref())
                .execute(self.conn())
                .await?;
                Ok(row)
            }

            async fn lookup(
                &mut self,
                id: Ulid,
            ) -> Result<Option<PendingRegistration>, StorageError> {
                let row: Option<PendingRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    pending_columns!(),
                    " FROM pending_registrations WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn record_attempt(
                &mut self,
                id: Ulid,
                max_attempts: i32,
            ) -> Result<Option<PendingRegistration>, StorageError> {
                record_attempt!(
                    self, "pending_registrations", PendingRow, pending_columns,
                    unless "completed_at", id, max_attempts
                )
            }

            async fn renew_code(
                &mut self,
                id: Ulid,
                code_hash: &TokenHash,
                expires_at: DateTime<Utc>,
            ) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE pending_registrations \
                     SET code_hash = $2, expires_at = $3, attempts = 0 \
                     WHERE id = $1 AND completed_at IS NULL",
                )
                .bind(DbId(id))
                .bind(&code_hash[..])
                .bind(Ts(db_precision(expires_at)))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "pending_registrations",
                    id,
                    "pending registration"
                )
            }

            async fn complete(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE pending_registrations SET completed_at = $2, hashed_password = '' \
                     WHERE id = $1 AND completed_at IS NULL AND expires_at > $2",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "pending_registrations",
                    id,
                    "pending registration"
                )
            }

            async fn delete_expired(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "pending_registrations",
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
