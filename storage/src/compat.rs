//! The compatibility layer (legacy Matrix login API, MSC3824): compat sessions, their tokens and
//! SSO logins.
//!
//! - A **compat session** is one Matrix device logged in through `/_matrix/client/v3/login`. It
//!   is active until finished (`/logout`, `/logout/all`, an administrator); a finished session
//!   never comes back, and its tokens stop working with it.
//! - Its **access tokens** (`mct_…`) are valid while not revoked, not expired and their session
//!   not finished. One issued without a refresh token has no `expires_at`: it never expires.
//! - Its **refresh tokens** (`mcr_…`) are single use: [`CompatTokenRepository::consume_refresh`]
//!   marks one used when it is exchanged for a new pair, and links it to the refresh token
//!   issued in its place (to tell a lost response's retry from a replay).
//! - A **compat SSO login** follows `m.login.sso`: created when the client is redirected to the
//!   provider (with the hash of the `loginToken` it will get back), *fulfilled* once the user has
//!   logged in and a compat session was created for it, *exchanged* (once) when the client sends
//!   the `loginToken` with `m.login.token` shortly after.
//!
//! Tokens are stored as the SHA-256 of their value ([`TokenHash`]).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use ulid::Ulid;

use super::{
    compare_and_set, delete_batch, for_each_backend, inserted_under, row_exists,
    types::{db_precision, decode_token_hash, DbId, Ts},
    StorageError, TokenHash,
};

/// One Matrix device logged in through the legacy login API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatSession {
    pub id: Ulid,
    pub user_id: Ulid,
    /// The Matrix device ID.
    pub device_id: String,
    /// The device's display name (`initial_device_display_name`).
    pub human_name: Option<String>,
    /// Does the session act as a Synapse administrator?
    pub is_synapse_admin: bool,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
}

impl CompatSession {
    /// Is the session still usable (not finished)?
    pub fn is_active(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// A compat access token (`mct_…`), by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatAccessToken {
    pub id: Ulid,
    pub session_id: Ulid,
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    /// `None`: never expires (issued without a refresh token).
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was first presented (introspection): proof that the client received it, which
    /// closes the retry grace of the refresh that issued it.
    pub first_used_at: Option<DateTime<Utc>>,
}

impl CompatAccessToken {
    /// Neither revoked nor expired at `now` (the session's state is not considered).
    pub fn is_valid(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|exp| now < exp)
    }
}

/// A compat refresh token (`mcr_…`), by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatRefreshToken {
    pub id: Ulid,
    pub session_id: Ulid,
    pub token_hash: TokenHash,
    /// The access token issued together with it (`None` once that one was deleted).
    pub access_token_id: Option<Ulid>,
    pub created_at: DateTime<Utc>,
    /// Set when it was exchanged for a new pair (single use).
    pub consumed_at: Option<DateTime<Utc>>,
    /// The refresh token issued in its place.
    pub next_refresh_token_id: Option<Ulid>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl CompatRefreshToken {
    /// Neither consumed nor revoked (the session's state is not considered).
    pub fn is_valid(&self) -> bool {
        self.consumed_at.is_none() && self.revoked_at.is_none()
    }
}

/// An `m.login.sso` login, from the redirect to the provider to the `m.login.token` exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatSsoLogin {
    pub id: Ulid,
    /// Where the client wants the user sent back with `?loginToken=…`.
    pub redirect_uri: String,
    pub login_token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    /// The compat session created for it, once fulfilled.
    pub session_id: Option<Ulid>,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub exchanged_at: Option<DateTime<Utc>>,
}

impl CompatSsoLogin {
    /// Fulfilled and not exchanged yet: the `loginToken` may be exchanged (within its window).
    pub fn is_exchangeable(&self) -> bool {
        self.fulfilled_at.is_some() && self.exchanged_at.is_none()
    }
}

#[async_trait]
pub trait CompatSessionRepository: Send {
    /// Starts a compat session for a user's device. [`StorageError::NotFound`] when the user
    /// doesn't exist; [`StorageError::Conflict`] when the user already has an active session
    /// with this device ID (finish it first: a device has one session at a time).
    async fn add(
        &mut self,
        user_id: Ulid,
        device_id: &str,
        human_name: Option<&str>,
        is_synapse_admin: bool,
        user_agent: Option<&str>,
    ) -> Result<CompatSession, StorageError>;

    /// A session by id, active or finished.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<CompatSession>, StorageError>;

    /// The user's active (not finished) session for a device, if any.
    async fn find_active_by_device(
        &mut self,
        user_id: Ulid,
        device_id: &str,
    ) -> Result<Option<CompatSession>, StorageError>;

    /// The user's active sessions, oldest first.
    async fn list_active_for_user(
        &mut self,
        user_id: Ulid,
    ) -> Result<Vec<CompatSession>, StorageError>;

    /// Ends a session (compare-and-set): `true` when this call ended it, `false` when it was
    /// already finished; [`StorageError::NotFound`] when there is no such session. Its tokens
    /// stop working at once (they are only valid with an active session).
    async fn finish(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Ends every active session of a user (`/logout/all`, account locked); returns how many
    /// were ended.
    async fn finish_all_for_user(&mut self, user_id: Ulid) -> Result<u64, StorageError>;

    /// Sets `last_active_at` to now; [`StorageError::NotFound`] when there is no such session.
    async fn touch(&mut self, id: Ulid) -> Result<(), StorageError>;

    /// Up to `limit` sessions, of `user_id` when given, only unfinished (`active: Some(true)`)
    /// or finished (`Some(false)`) ones when asked, in ID (creation) order, after the session
    /// `after` when given (keyset pagination; the admin API's session list).
    async fn list_page(
        &mut self,
        user_id: Option<Ulid>,
        active: Option<bool>,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<CompatSession>, StorageError>;
}

#[async_trait]
pub trait CompatTokenRepository: Send {
    /// Stores a new access token of a session; `expires_at: None` never expires.
    /// [`StorageError::NotFound`] when the session doesn't exist; [`StorageError::Conflict`]
    /// when the hash is already taken.
    async fn add_access(
        &mut self,
        session_id: Ulid,
        token_hash: &TokenHash,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CompatAccessToken, StorageError>;

    /// An access token by hash, whatever its state.
    async fn find_access_by_hash(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<CompatAccessToken>, StorageError>;

    /// The hot path (every Matrix request with a compat token, through introspection): the
    /// access token with this hash and its session, in one query, only when the token is not
    /// revoked, not expired at `now` and its session not finished. `None` otherwise.
    async fn find_active_access_by_hash_with_session(
        &mut self,
        token_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<Option<(CompatAccessToken, CompatSession)>, StorageError>;

    /// Stores a new refresh token of a session, issued with `access_token_id`.
    /// [`StorageError::NotFound`] when the session or that access token doesn't exist (or the
    /// access token belongs to another session); [`StorageError::Conflict`] when the hash is
    /// already taken.
    async fn add_refresh(
        &mut self,
        session_id: Ulid,
        token_hash: &TokenHash,
        access_token_id: Ulid,
    ) -> Result<CompatRefreshToken, StorageError>;

    /// A refresh token by hash, whatever its state.
    async fn find_refresh_by_hash(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<CompatRefreshToken>, StorageError>;

    /// An access token by ID, whatever its state.
    async fn lookup_access(&mut self, id: Ulid) -> Result<Option<CompatAccessToken>, StorageError>;

    /// A refresh token by ID, whatever its state (the successor of a consumed one).
    async fn lookup_refresh(
        &mut self,
        id: Ulid,
    ) -> Result<Option<CompatRefreshToken>, StorageError>;

    /// Marks a refresh token used and replaced by `next_refresh_token_id` (add that one first,
    /// in the same transaction). Compare-and-set: `true` when this call consumed it, `false`
    /// when it was already consumed or revoked; [`StorageError::NotFound`] when there is no such
    /// token.
    async fn consume_refresh(
        &mut self,
        id: Ulid,
        next_refresh_token_id: Ulid,
    ) -> Result<bool, StorageError>;

    /// The retry grace of refresh rotation: re-points a consumed token's successor from
    /// `current_next` to `new_next`. Compare-and-set, so of two concurrent retries only one
    /// re-points; `false` when the successor is not `current_next` or the token was revoked.
    async fn repoint_refresh_next(
        &mut self,
        id: Ulid,
        current_next: Ulid,
        new_next: Ulid,
    ) -> Result<bool, StorageError>;

    /// Records the first use of an access token, now: one conditional UPDATE that writes only
    /// while `first_used_at` is NULL (once per token, not once per request) and the token is not
    /// revoked (a use racing [`Self::revoke_access_unused`] records nothing on a token that
    /// lost). `true` when this call recorded it.
    async fn mark_access_used(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes an access token that was never used (the retry grace of refresh rotation).
    /// Compare-and-set against [`CompatTokenRepository::mark_access_used`]: `true` when this
    /// call revoked it; `false` when it was used or revoked already.
    async fn revoke_access_unused(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes an access token (compare-and-set): `true` when this call revoked it, `false` when
    /// it was already revoked; [`StorageError::NotFound`] when there is no such token.
    async fn revoke_access(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes a refresh token (compare-and-set): `true` when this call revoked it, `false` when
    /// it was already revoked; [`StorageError::NotFound`] when there is no such token.
    async fn revoke_refresh(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes every not yet revoked access and refresh token of a session; returns how many
    /// tokens this call revoked (both kinds together).
    async fn revoke_all_for_session(&mut self, session_id: Ulid) -> Result<u64, StorageError>;
}

#[async_trait]
pub trait CompatSsoLoginRepository: Send {
    /// Starts an SSO login for a client that wants to come back to `redirect_uri` with the
    /// login token whose hash is given; [`StorageError::Conflict`] when the hash is taken.
    async fn add(
        &mut self,
        redirect_uri: &str,
        login_token_hash: &TokenHash,
    ) -> Result<CompatSsoLogin, StorageError>;

    /// A login by id, whatever its state.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<CompatSsoLogin>, StorageError>;

    /// A login by the hash of its login token, whatever its state.
    async fn find_by_token_hash(
        &mut self,
        login_token_hash: &TokenHash,
    ) -> Result<Option<CompatSsoLogin>, StorageError>;

    /// Records that the user logged in and `session_id` was created for this login
    /// (compare-and-set: sets `session_id` and `fulfilled_at`). `true` when this call fulfilled
    /// it, `false` when it was already fulfilled; [`StorageError::NotFound`] when the login or
    /// the compat session doesn't exist.
    async fn fulfill(&mut self, id: Ulid, session_id: Ulid) -> Result<bool, StorageError>;

    /// Exchanges the login token (`m.login.token`), once (compare-and-set on `exchanged_at`).
    /// `true` only when this call exchanged it, the login is fulfilled, and it was fulfilled at
    /// most `valid_for` ago (the token's lifetime counts from fulfilment, since that's when the
    /// client receives it; a login exchanged exactly at `fulfilled_at + valid_for` still
    /// succeeds). `false` when it is not fulfilled, already exchanged or too old;
    /// [`StorageError::NotFound`] when there is no such login.
    async fn exchange(&mut self, id: Ulid, valid_for: Duration) -> Result<bool, StorageError>;

    /// The unfinished compat sessions that came out of logins created before `before` and never
    /// logged in: no login of the session was exchanged (its `loginToken` never reached
    /// `m.login.token`, so the session never got a token, but its device was upserted on the
    /// homeserver) and none is younger than `before`. At most `limit`.
    /// [`Self::delete_abandoned`] keeps their logins: the caller ends these sessions first
    /// (housekeeping, see `provider::core::housekeeping`).
    async fn live_sessions_of_abandoned(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Ulid>, StorageError>;

    /// Deletes the logins created before `before` that were never exchanged: requests whose
    /// page was abandoned, the request rows of completed logins (their token is never revealed;
    /// the session, in use through the issued token's row, doesn't refer to them) and issued
    /// tokens nobody exchanged; but not the logins of an unfinished session none of whose
    /// logins was exchanged ([`Self::live_sessions_of_abandoned`]). Deletes at most `limit`
    /// rows and returns how many (housekeeping, see `provider::core::housekeeping`).
    async fn delete_abandoned(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct CompatSessionRow {
    id: DbId,
    user_id: DbId,
    device_id: String,
    human_name: Option<String>,
    is_synapse_admin: bool,
    created_at: Ts,
    finished_at: Option<Ts>,
    last_active_at: Option<Ts>,
    user_agent: Option<String>,
}

impl From<CompatSessionRow> for CompatSession {
    fn from(r: CompatSessionRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.0,
            device_id: r.device_id,
            human_name: r.human_name,
            is_synapse_admin: r.is_synapse_admin,
            created_at: r.created_at.0,
            finished_at: r.finished_at.map(Into::into),
            last_active_at: r.last_active_at.map(Into::into),
            user_agent: r.user_agent,
        }
    }
}

macro_rules! session_columns {
    () => {
        "id, user_id, device_id, human_name, is_synapse_admin, created_at, finished_at, \
         last_active_at, user_agent"
    };
}

#[derive(sqlx::FromRow)]
struct AccessTokenRow {
    id: DbId,
    session_id: DbId,
    token_hash: Vec<u8>,
    created_at: Ts,
    expires_at: Option<Ts>,
    revoked_at: Option<Ts>,
    first_used_at: Option<Ts>,
}

impl TryFrom<AccessTokenRow> for CompatAccessToken {
    type Error = StorageError;

    fn try_from(r: AccessTokenRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            session_id: r.session_id.0,
            token_hash: decode_token_hash(r.token_hash)?,
            created_at: r.created_at.0,
            expires_at: r.expires_at.map(Into::into),
            revoked_at: r.revoked_at.map(Into::into),
            first_used_at: r.first_used_at.map(Into::into),
        })
    }
}

macro_rules! access_token_columns {
    () => {
        "id, session_id, token_hash, created_at, expires_at, revoked_at, first_used_at"
    };
}

/// An access token joined with its session (the hot path), columns prefixed `t_` and `s_`.
#[derive(sqlx::FromRow)]
struct AccessWithSessionRow {
    t_id: DbId,
    t_token_hash: Vec<u8>,
    t_created_at: Ts,
    t_expires_at: Option<Ts>,
    t_revoked_at: Option<Ts>,
    t_first_used_at: Option<Ts>,
    s_id: DbId,
    s_user_id: DbId,
    s_device_id: String,
    s_human_name: Option<String>,
    s_is_synapse_admin: bool,
    s_created_at: Ts,
    s_finished_at: Option<Ts>,
    s_last_active_at: Option<Ts>,
    s_user_agent: Option<String>,
}

impl TryFrom<AccessWithSessionRow> for (CompatAccessToken, CompatSession) {
    type Error = StorageError;

    fn try_from(r: AccessWithSessionRow) -> Result<Self, StorageError> {
        Ok((
            CompatAccessToken {
                id: r.t_id.0,
                session_id: r.s_id.0,
                token_hash: decode_token_hash(r.t_token_hash)?,
                created_at: r.t_created_at.0,
                expires_at: r.t_expires_at.map(Into::into),
                revoked_at: r.t_revoked_at.map(Into::into),
                first_used_at: r.t_first_used_at.map(Into::into),
            },
            CompatSession {
                id: r.s_id.0,
                user_id: r.s_user_id.0,
                device_id: r.s_device_id,
                human_name: r.s_human_name,
                is_synapse_admin: r.s_is_synapse_admin,
                created_at: r.s_created_at.0,
                finished_at: r.s_finished_at.map(Into::into),
                last_active_at: r.s_last_active_at.map(Into::into),
                user_agent: r.s_user_agent,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
struct RefreshTokenRow {
    id: DbId,
    session_id: DbId,
    token_hash: Vec<u8>,
    access_token_id: Option<DbId>,
    created_at: Ts,
    consumed_at: Option<Ts>,
    next_refresh_token_id: Option<DbId>,
    revoked_at: Option<Ts>,
}

impl TryFrom<RefreshTokenRow> for CompatRefreshToken {
    type Error = StorageError;

    fn try_from(r: RefreshTokenRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            session_id: r.session_id.0,
            token_hash: decode_token_hash(r.token_hash)?,
            access_token_id: r.access_token_id.map(Into::into),
            created_at: r.created_at.0,
            consumed_at: r.consumed_at.map(Into::into),
            next_refresh_token_id: r.next_refresh_token_id.map(Into::into),
            revoked_at: r.revoked_at.map(Into::into),
        })
    }
}

macro_rules! refresh_token_columns {
    () => {
        "id, session_id, token_hash, access_token_id, created_at, consumed_at, \
         next_refresh_token_id, revoked_at"
    };
}

#[derive(sqlx::FromRow)]
struct SsoLoginRow {
    id: DbId,
    redirect_uri: String,
    login_token_hash: Vec<u8>,
    created_at: Ts,
    session_id: Option<DbId>,
    fulfilled_at: Option<Ts>,
    exchanged_at: Option<Ts>,
}

impl TryFrom<SsoLoginRow> for CompatSsoLogin {
    type Error = StorageError;

    fn try_from(r: SsoLoginRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            redirect_uri: r.redirect_uri,
            login_token_hash: decode_token_hash(r.login_token_hash)?,
            created_at: r.created_at.0,
            session_id: r.session_id.map(Into::into),
            fulfilled_at: r.fulfilled_at.map(Into::into),
            exchanged_at: r.exchanged_at.map(Into::into),
        })
    }
}

macro_rules! sso_login_columns {
    () => {
        "id, redirect_uri, login_token_hash, created_at, session_id, fulfilled_at, exchanged_at"
    };
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl CompatSessionRepository for $repo {
            async fn add(
                &mut self,
                user_id: Ulid,
                device_id: &str,
                human_name: Option<&str>,
                is_synapse_admin: bool,
                user_agent: Option<&str>,
            ) -> Result<CompatSession, StorageError> {
                let session = CompatSession {
                    id: self.new_id(),
                    user_id,
                    device_id: device_id.to_owned(),
                    human_name: human_name.map(str::to_owned),
                    is_synapse_admin,
                    created_at: self.now(),
                    finished_at: None,
                    last_active_at: None,
                    user_agent: user_agent.map(str::to_owned),
                };
                // Inserts nothing (instead of failing on the foreign key, which would abort a
                // PostgreSQL transaction) when the user is missing or the device is taken; the
                // partial unique index makes the latter hold even when two logins race.
                let done = sqlx::query(
                    "INSERT INTO compat_sessions \
                     (id, user_id, device_id, human_name, is_synapse_admin, created_at, user_agent) \
                     SELECT $1, $2, $3, $4, $5, $6, $7 \
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = $2) \
                     AND NOT EXISTS (SELECT 1 FROM compat_sessions \
                       WHERE user_id = $2 AND device_id = $3 AND finished_at IS NULL) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(session.id))
                .bind(DbId(user_id))
                .bind(&session.device_id)
                .bind(&session.human_name)
                .bind(is_synapse_admin)
                .bind(Ts(session.created_at))
                .bind(&session.user_agent)
                .execute(self.conn())
                .await?;
                inserted_under!(
                    self,
                    done,
                    "compat session",
                    requires "users",
                    user_id,
                    "user"
                )?;
                Ok(session)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<CompatSession>, StorageError> {
                let row: Option<CompatSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM compat_sessions WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn find_active_by_device(
                &mut self,
                user_id: Ulid,
                device_id: &str,
            ) -> Result<Option<CompatSession>, StorageError> {
                let row: Option<CompatSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM compat_sessions \
                      WHERE user_id = $1 AND device_id = $2 AND finished_at IS NULL \
                      ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(DbId(user_id))
                .bind(device_id)
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_active_for_user(
                &mut self,
                user_id: Ulid,
            ) -> Result<Vec<CompatSession>, StorageError> {
                let rows: Vec<CompatSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM compat_sessions WHERE user_id = $1 AND finished_at IS NULL \
                      ORDER BY created_at, id"
                ))
                .bind(DbId(user_id))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn finish(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE compat_sessions SET finished_at = $2 \
                     WHERE id = $1 AND finished_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_sessions", id, "compat session")
            }

            async fn finish_all_for_user(&mut self, user_id: Ulid) -> Result<u64, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE compat_sessions SET finished_at = $2 \
                     WHERE user_id = $1 AND finished_at IS NULL",
                )
                .bind(DbId(user_id))
                .bind(now)
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }

            async fn touch(&mut self, id: Ulid) -> Result<(), StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query("UPDATE compat_sessions SET last_active_at = $2 WHERE id = $1")
                    .bind(DbId(id))
                    .bind(now)
                    .execute(self.conn())
                    .await?;
                StorageError::found(done, "compat session")
            }

            async fn list_page(
                &mut self,
                user_id: Option<Ulid>,
                active: Option<bool>,
                after: Option<Ulid>,
                limit: u32,
            ) -> Result<Vec<CompatSession>, StorageError> {
                let rows: Vec<CompatSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM compat_sessions WHERE ($1 IS NULL OR id > $1) \
                      AND ($2 IS NULL OR user_id = $2) \
                      AND ($3 IS NULL OR (finished_at IS NULL) = $3) \
                      ORDER BY id LIMIT $4"
                ))
                .bind(after.map(DbId))
                .bind(user_id.map(DbId))
                .bind(active)
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }

        #[async_trait]
        impl CompatTokenRepository for $repo {
            async fn add_access(
                &mut self,
                session_id: Ulid,
                token_hash: &TokenHash,
                expires_at: Option<DateTime<Utc>>,
            ) -> Result<CompatAccessToken, StorageError> {
                let token = CompatAccessToken {
                    id: self.new_id(),
                    session_id,
                    token_hash: *token_hash,
                    created_at: self.now(),
                    expires_at: expires_at.map(db_precision),
                    revoked_at: None,
                    first_used_at: None,
                };
                let done = sqlx::query(
                    "INSERT INTO compat_access_tokens \
                     (id, session_id, token_hash, created_at, expires_at) \
                     SELECT $1, $2, $3, $4, $5 \
                     WHERE EXISTS (SELECT 1 FROM compat_sessions WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(token.id))
                .bind(DbId(session_id))
                .bind(&token_hash[..])
                .bind(Ts(token.created_at))
                .bind(token.expires_at.map(Ts))
                .execute(self.conn())
                .await?;
                inserted_under!(
                    self,
                    done,
                    "compat access token",
                    requires "compat_sessions",
                    session_id,
                    "compat session"
                )?;
                Ok(token)
            }

            async fn find_access_by_hash(
                &mut self,
                token_hash: &TokenHash,
            ) -> Result<Option<CompatAccessToken>, StorageError> {
                let row: Option<AccessTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    access_token_columns!(),
                    " FROM compat_access_tokens WHERE token_hash = $1"
                ))
                .bind(&token_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_active_access_by_hash_with_session(
                &mut self,
                token_hash: &TokenHash,
                now: DateTime<Utc>,
            ) -> Result<Option<(CompatAccessToken, CompatSession)>, StorageError> {
                let row: Option<AccessWithSessionRow> = sqlx::query_as(
                    "SELECT t.id AS t_id, t.token_hash AS t_token_hash, \
                       t.created_at AS t_created_at, t.expires_at AS t_expires_at, \
                       t.revoked_at AS t_revoked_at, t.first_used_at AS t_first_used_at, \
                       s.id AS s_id, s.user_id AS s_user_id, s.device_id AS s_device_id, \
                       s.human_name AS s_human_name, s.is_synapse_admin AS s_is_synapse_admin, \
                       s.created_at AS s_created_at, s.finished_at AS s_finished_at, \
                       s.last_active_at AS s_last_active_at, s.user_agent AS s_user_agent \
                     FROM compat_access_tokens t \
                     JOIN compat_sessions s ON s.id = t.session_id \
                     WHERE t.token_hash = $1 \
                       AND t.revoked_at IS NULL \
                       AND (t.expires_at IS NULL OR t.expires_at > $2) \
                       AND s.finished_at IS NULL",
                )
                .bind(&token_hash[..])
                .bind(Ts(now))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn add_refresh(
                &mut self,
                session_id: Ulid,
                token_hash: &TokenHash,
                access_token_id: Ulid,
            ) -> Result<CompatRefreshToken, StorageError> {
                let token = CompatRefreshToken {
                    id: self.new_id(),
                    session_id,
                    token_hash: *token_hash,
                    access_token_id: Some(access_token_id),
                    created_at: self.now(),
                    consumed_at: None,
                    next_refresh_token_id: None,
                    revoked_at: None,
                };
                // The access token must exist and belong to the same session (which then
                // exists too).
                let done = sqlx::query(
                    "INSERT INTO compat_refresh_tokens \
                     (id, session_id, token_hash, access_token_id, created_at) \
                     SELECT $1, $2, $3, $4, $5 \
                     WHERE EXISTS (SELECT 1 FROM compat_access_tokens \
                       WHERE id = $4 AND session_id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(token.id))
                .bind(DbId(session_id))
                .bind(&token_hash[..])
                .bind(DbId(access_token_id))
                .bind(Ts(token.created_at))
                .execute(self.conn())
                .await?;
                if done.rows_affected() > 0 {
                    return Ok(token);
                }
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM compat_access_tokens WHERE id = $1 AND session_id = $2",
                )
                .bind(DbId(access_token_id))
                .bind(DbId(session_id))
                .fetch_one(self.conn())
                .await?;
                if n > 0 {
                    Err(StorageError::Conflict("compat refresh token"))
                } else if row_exists!(self, "compat_sessions", session_id) {
                    Err(StorageError::NotFound("compat access token"))
                } else {
                    Err(StorageError::NotFound("compat session"))
                }
            }

            async fn find_refresh_by_hash(
                &mut self,
                token_hash: &TokenHash,
            ) -> Result<Option<CompatRefreshToken>, StorageError> {
                let row: Option<RefreshTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    refresh_token_columns!(),
                    " FROM compat_refresh_tokens WHERE token_hash = $1"
                ))
                .bind(&token_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn lookup_access(
                &mut self,
                id: Ulid,
            ) -> Result<Option<CompatAccessToken>, StorageError> {
                let row: Option<AccessTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    access_token_columns!(),
                    " FROM compat_access_tokens WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn lookup_refresh(
                &mut self,
                id: Ulid,
            ) -> Result<Option<CompatRefreshToken>, StorageError> {
                let row: Option<RefreshTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    refresh_token_columns!(),
                    " FROM compat_refresh_tokens WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn consume_refresh(
                &mut self,
                id: Ulid,
                next_refresh_token_id: Ulid,
            ) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE compat_refresh_tokens \
                     SET consumed_at = $2, next_refresh_token_id = $3 \
                     WHERE id = $1 AND consumed_at IS NULL AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .bind(DbId(next_refresh_token_id))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_refresh_tokens", id, "compat refresh token")
            }

            async fn repoint_refresh_next(
                &mut self,
                id: Ulid,
                current_next: Ulid,
                new_next: Ulid,
            ) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE compat_refresh_tokens SET next_refresh_token_id = $3 \
                     WHERE id = $1 AND next_refresh_token_id = $2 AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(DbId(current_next))
                .bind(DbId(new_next))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_refresh_tokens", id, "compat refresh token")
            }

            async fn mark_access_used(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE compat_access_tokens SET first_used_at = $2 \
                     WHERE id = $1 AND first_used_at IS NULL AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_access_unused(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE compat_access_tokens SET revoked_at = $2 \
                     WHERE id = $1 AND revoked_at IS NULL AND first_used_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_access_tokens", id, "compat access token")
            }

            async fn revoke_access(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE compat_access_tokens SET revoked_at = $2 \
                     WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_access_tokens", id, "compat access token")
            }

            async fn revoke_refresh(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE compat_refresh_tokens SET revoked_at = $2 \
                     WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_refresh_tokens", id, "compat refresh token")
            }

            async fn revoke_all_for_session(
                &mut self,
                session_id: Ulid,
            ) -> Result<u64, StorageError> {
                let now = Ts(self.now());
                let access = sqlx::query(
                    "UPDATE compat_access_tokens SET revoked_at = $2 \
                     WHERE session_id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(session_id))
                .bind(now)
                .execute(self.conn())
                .await?;
                let refresh = sqlx::query(
                    "UPDATE compat_refresh_tokens SET revoked_at = $2 \
                     WHERE session_id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(session_id))
                .bind(now)
                .execute(self.conn())
                .await?;
                Ok(access.rows_affected() + refresh.rows_affected())
            }
        }

        #[async_trait]
        impl CompatSsoLoginRepository for $repo {
            async fn add(
                &mut self,
                redirect_uri: &str,
                login_token_hash: &TokenHash,
            ) -> Result<CompatSsoLogin, StorageError> {
                let login = CompatSsoLogin {
                    id: self.new_id(),
                    redirect_uri: redirect_uri.to_owned(),
                    login_token_hash: *login_token_hash,
                    created_at: self.now(),
                    session_id: None,
                    fulfilled_at: None,
                    exchanged_at: None,
                };
                let done = sqlx::query(
                    "INSERT INTO compat_sso_logins (id, redirect_uri, login_token_hash, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(login.id))
                .bind(&login.redirect_uri)
                .bind(&login_token_hash[..])
                .bind(Ts(login.created_at))
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "compat SSO login")?;
                Ok(login)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<CompatSsoLogin>, StorageError> {
                let row: Option<SsoLoginRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    sso_login_columns!(),
                    " FROM compat_sso_logins WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_token_hash(
                &mut self,
                login_token_hash: &TokenHash,
            ) -> Result<Option<CompatSsoLogin>, StorageError> {
                let row: Option<SsoLoginRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    sso_login_columns!(),
                    " FROM compat_sso_logins WHERE login_token_hash = $1"
                ))
                .bind(&login_token_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn fulfill(&mut self, id: Ulid, session_id: Ulid) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE compat_sso_logins SET session_id = $2, fulfilled_at = $3 \
                     WHERE id = $1 AND fulfilled_at IS NULL AND exchanged_at IS NULL \
                     AND EXISTS (SELECT 1 FROM compat_sessions WHERE id = $2)",
                )
                .bind(DbId(id))
                .bind(DbId(session_id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "compat_sso_logins",
                    id,
                    "compat SSO login",
                    requires "compat_sessions",
                    session_id,
                    "compat session"
                )
            }

            async fn exchange(&mut self, id: Ulid, valid_for: Duration) -> Result<bool, StorageError> {
                let now = self.now();
                let fulfilled_since = db_precision(now - valid_for);
                let done = sqlx::query(
                    "UPDATE compat_sso_logins SET exchanged_at = $2 \
                     WHERE id = $1 AND exchanged_at IS NULL \
                     AND fulfilled_at IS NOT NULL AND fulfilled_at >= $3",
                )
                .bind(DbId(id))
                .bind(Ts(now))
                .bind(Ts(fulfilled_since))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "compat_sso_logins", id, "compat SSO login")
            }

            async fn live_sessions_of_abandoned(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Ulid>, StorageError> {
                let ids: Vec<DbId> = sqlx::query_scalar(
                    "SELECT DISTINCT s.id FROM compat_sso_logins l \
                     JOIN compat_sessions s ON s.id = l.session_id \
                     WHERE l.exchanged_at IS NULL AND l.created_at < $1 \
                     AND s.finished_at IS NULL AND NOT EXISTS \
                     (SELECT 1 FROM compat_sso_logins x WHERE x.session_id = s.id \
                      AND (x.exchanged_at IS NOT NULL OR x.created_at >= $1)) \
                     LIMIT $2",
                )
                .bind(Ts(before))
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await?;
                Ok(ids.into_iter().map(|id| id.0).collect())
            }

            async fn delete_abandoned(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "compat_sso_logins",
                    "id",
                    "exchanged_at IS NULL AND created_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM compat_sessions s \
                      WHERE s.id = compat_sso_logins.session_id AND s.finished_at IS NULL \
                      AND NOT EXISTS (SELECT 1 FROM compat_sso_logins x \
                      WHERE x.session_id = s.id AND x.exchanged_at IS NOT NULL))",
                    Ts(before),
                    limit
                )
            }
        }
    };
}

for_each_backend!(implementation);
