//! Registration tokens: what a visitor must present to register when the operator requires it
//! (`account: registration_token_required`), issued through the admin API and the CLI.
//!
//! Only the SHA-256 of a token is stored ([`domain::crypto::sha256`]); the operator sees the
//! token once, when it is issued. A token is *valid* at an instant when it is not revoked, not
//! expired and under its usage limit; [`RegistrationTokenRepository::use_token`] checks that
//! and counts the use in one conditional `UPDATE`, so two registrations racing for the last use
//! can't both get it (PostgreSQL re-checks the condition on the row the other one committed).
//! Called in the transaction that creates the user, a registration that rolls back gives its
//! use back.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;
use ulid::Ulid;

use super::{
    compare_and_set, for_each_backend,
    types::{DbId, Ts},
    StorageError,
};
use domain::crypto::sha256;

/// Length of a [`generate_registration_token`] token: 20 base62 characters, ≈ 119 bits.
pub const REGISTRATION_TOKEN_LEN: usize = 20;

/// A new random registration token, to show once to the operator who issues it. Plain base62
/// (no prefix or checksum): users type or paste it into the registration form.
pub fn generate_registration_token(rng: &mut impl RngCore) -> String {
    domain::token::random_code(rng, REGISTRATION_TOKEN_LEN)
}

/// A registration token as stored (without its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub id: Ulid,
    /// How many registrations it allows; `None`: no limit.
    pub usage_limit: Option<u32>,
    pub times_used: u32,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a registration token can't be used (see [`RegistrationToken::invalid_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationTokenInvalid {
    Revoked,
    Expired,
    UsedUp,
}

impl RegistrationToken {
    /// Why the token can't be used at `now`, or `None` when it can. The same rule as the
    /// condition of [`RegistrationTokenRepository::use_token`] and of `list_page`'s `valid`.
    pub fn invalid_reason(&self, now: DateTime<Utc>) -> Option<RegistrationTokenInvalid> {
        if self.revoked_at.is_some() {
            Some(RegistrationTokenInvalid::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some(RegistrationTokenInvalid::Expired)
        } else if self
            .usage_limit
            .is_some_and(|limit| self.times_used >= limit)
        {
            Some(RegistrationTokenInvalid::UsedUp)
        } else {
            None
        }
    }

    /// Can the token be used at `now`?
    pub fn is_valid(&self, now: DateTime<Utc>) -> bool {
        self.invalid_reason(now).is_none()
    }
}

#[async_trait]
pub trait RegistrationTokenRepository: Send {
    /// Stores the SHA-256 of `token` (the caller generated it and shows it once);
    /// [`StorageError::Conflict`] when a token with this value exists.
    async fn add(
        &mut self,
        token: &str,
        usage_limit: Option<u32>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<RegistrationToken, StorageError>;
    async fn lookup(&mut self, id: Ulid) -> Result<Option<RegistrationToken>, StorageError>;
    /// The token with this value, valid or not.
    async fn find_by_token(
        &mut self,
        token: &str,
    ) -> Result<Option<RegistrationToken>, StorageError>;
    /// Counts one use if the token is valid now (not revoked, not expired, under its limit);
    /// `false` otherwise. [`StorageError::NotFound`] when there is no such token.
    async fn use_token(&mut self, id: Ulid) -> Result<bool, StorageError>;
    /// Revokes the token (from now on it can't be used); revoking it again keeps the first
    /// revocation time.
    async fn revoke(&mut self, id: Ulid) -> Result<RegistrationToken, StorageError>;
    /// Takes a revocation back.
    async fn unrevoke(&mut self, id: Ulid) -> Result<RegistrationToken, StorageError>;
    /// Up to `limit` tokens in ID (creation) order, after the token `after` when given (keyset
    /// pagination); with `valid`, only the tokens that are (`Some(true)`) or are not
    /// (`Some(false)`) valid now.
    async fn list_page(
        &mut self,
        after: Option<Ulid>,
        limit: u32,
        valid: Option<bool>,
    ) -> Result<Vec<RegistrationToken>, StorageError>;
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: DbId,
    usage_limit: Option<i64>,
    times_used: i64,
    created_at: Ts,
    last_used_at: Option<Ts>,
    expires_at: Option<Ts>,
    revoked_at: Option<Ts>,
}

fn count(n: i64) -> Result<u32, StorageError> {
    u32::try_from(n).map_err(|_| StorageError::Invalid(format!("a registration token count {n}")))
}

impl TryFrom<TokenRow> for RegistrationToken {
    type Error = StorageError;

    fn try_from(r: TokenRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            usage_limit: r.usage_limit.map(count).transpose()?,
            times_used: count(r.times_used)?,
            created_at: r.created_at.0,
            last_used_at: r.last_used_at.map(Into::into),
            expires_at: r.expires_at.map(Into::into),
            revoked_at: r.revoked_at.map(Into::into),
        })
    }
}

fn convert(row: Option<TokenRow>) -> Result<Option<RegistrationToken>, StorageError> {
    row.map(TryInto::try_into).transpose()
}

macro_rules! token_columns {
    () => {
        "id, usage_limit, times_used, created_at, last_used_at, expires_at, revoked_at"
    };
}

/// The SQL condition "valid at `$now`" over a `registration_tokens` row, with `$now` as the
/// given placeholder. Never NULL, so it can be compared with a boolean parameter.
macro_rules! valid_at {
    ($now:literal) => {
        concat!(
            "(revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            $now,
            ") AND (usage_limit IS NULL OR times_used < usage_limit))"
        )
    };
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl RegistrationTokenRepository for $repo {
            async fn add(
                &mut self,
                token: &str,
                usage_limit: Option<u32>,
                expires_at: Option<DateTime<Utc>>,
            ) -> Result<RegistrationToken, StorageError> {
                let row = RegistrationToken {
                    id: self.new_id(),
                    usage_limit,
                    times_used: 0,
                    created_at: self.now(),
                    last_used_at: None,
                    expires_at: expires_at.map(super::types::db_precision),
                    revoked_at: None,
                };
                let done = sqlx::query(
                    "INSERT INTO registration_tokens \
                     (id, token_hash, usage_limit, times_used, created_at, expires_at) \
                     VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(row.id))
                .bind(sha256(token).to_vec())
                .bind(usage_limit.map(i64::from))
                .bind(Ts(row.created_at))
                .bind(row.expires_at.map(Ts))
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "registration token")?;
                Ok(row)
            }

            async fn lookup(
                &mut self,
                id: Ulid,
            ) -> Result<Option<RegistrationToken>, StorageError> {
                let row: Option<TokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM registration_tokens WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                convert(row)
            }

            async fn find_by_token(
                &mut self,
                token: &str,
            ) -> Result<Option<RegistrationToken>, StorageError> {
                let row: Option<TokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM registration_tokens WHERE token_hash = $1"
                ))
                .bind(sha256(token).to_vec())
                .fetch_optional(self.conn())
                .await?;
                convert(row)
            }

            async fn use_token(&mut self, id: Ulid) -> Result<bool, StorageError> {
                // One statement checks and counts: under concurrency PostgreSQL makes the second
                // updater wait for the first one's row lock and re-evaluates the condition on
                // the committed row, so a usage limit is never exceeded; SQLite has one writer.
                let done = sqlx::query(concat!(
                    "UPDATE registration_tokens \
                     SET times_used = times_used + 1, last_used_at = $2 \
                     WHERE id = $1 AND ",
                    valid_at!("$2")
                ))
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "registration_tokens", id, "registration token")
            }

            async fn revoke(&mut self, id: Ulid) -> Result<RegistrationToken, StorageError> {
                let row: Option<TokenRow> = sqlx::query_as(concat!(
                    "UPDATE registration_tokens SET revoked_at = COALESCE(revoked_at, $2) \
                     WHERE id = $1 RETURNING ",
                    token_columns!()
                ))
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .fetch_optional(self.conn())
                .await?;
                convert(row)?.ok_or(StorageError::NotFound("registration token"))
            }

            async fn unrevoke(&mut self, id: Ulid) -> Result<RegistrationToken, StorageError> {
                let row: Option<TokenRow> = sqlx::query_as(concat!(
                    "UPDATE registration_tokens SET revoked_at = NULL WHERE id = $1 RETURNING ",
                    token_columns!()
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                convert(row)?.ok_or(StorageError::NotFound("registration token"))
            }

            async fn list_page(
                &mut self,
                after: Option<Ulid>,
                limit: u32,
                valid: Option<bool>,
            ) -> Result<Vec<RegistrationToken>, StorageError> {
                let rows: Vec<TokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM registration_tokens \
                      WHERE ($1 IS NULL OR id > $1) AND ($3 IS NULL OR $3 = ",
                    valid_at!("$4"),
                    ") ORDER BY id LIMIT $2"
                ))
                .bind(after.map(DbId))
                .bind(i64::from(limit))
                .bind(valid)
                .bind(Ts(self.now()))
                .fetch_all(self.conn())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }
    };
}

for_each_backend!(implementation);
