//! OAuth 2.0 sessions (one per grant a user or client obtained) and their access and refresh
//! tokens.
//!
//! State changes that decide who wins a race (finishing a session, revoking a token, consuming a
//! refresh token) are compare-and-set updates: `Ok(true)` when this call made the change,
//! `Ok(false)` when the row was already past that state, [`StorageError::NotFound`] when there is
//! no such row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    compare_and_set, for_each_backend,
    rate_limits::{spend_then_write, BatchedSpend, SpendFirst, Spent},
    token_writer::in_own_transaction,
    types::{db_precision, decode_token_hash, DbId, Ts},
    Storage, StorageError, TokenHash, User,
};

/// An access token that may be used now, with what its callers need to know: its session, the
/// session's user (when there is one) and the public `client_id` of its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAccessToken {
    pub token: AccessToken,
    pub session: OAuth2Session,
    /// `None` for `client_credentials` sessions.
    pub user: Option<User>,
    /// The client's public `client_id`.
    pub client_id: String,
}

/// A grant given to a client: the scope it may use, for a user (or for itself, with
/// `client_credentials`), until it is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Session {
    pub id: Ulid,
    /// `None` for `client_credentials` sessions.
    pub user_id: Option<Ulid>,
    /// The internal ID of the client ([`super::Client::id`]).
    pub client_id: Ulid,
    /// The browser session the user approved it from, if any.
    pub browser_session_id: Option<Ulid>,
    /// The granted scope, space-separated (RFC 6749 §3.3).
    pub scope: String,
    /// The Matrix device of the device scope (MSC2967), if any.
    pub device_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
}

impl OAuth2Session {
    /// A finished session is over for good: its tokens are inactive.
    pub fn is_active(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// What a new [`OAuth2Session`] is made of.
#[derive(Debug, Clone, Copy)]
pub struct NewOAuth2Session<'a> {
    /// `None` for `client_credentials` sessions.
    pub user_id: Option<Ulid>,
    /// The internal ID of the client.
    pub client_id: Ulid,
    pub browser_session_id: Option<Ulid>,
    /// The granted scope, space-separated.
    pub scope: &'a str,
    pub device_id: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A new session with its one access token, as the group commit of token issuance writes them
/// ([`OAuth2SessionRepository::add_with_access_tokens`], `crate::Storage::add_session_with_token`).
/// Owned, so it can wait in the writer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSessionToken {
    /// `None` for `client_credentials` sessions.
    pub user_id: Option<Ulid>,
    /// The internal ID of the client.
    pub client_id: Ulid,
    /// The granted scope, space-separated.
    pub scope: String,
    pub device_id: Option<String>,
    /// The SHA-256 of the access token.
    pub token_hash: TokenHash,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An access token of a session, known by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub id: Ulid,
    pub session_id: Ulid,
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was first presented (introspection, userinfo): proof that the client received
    /// it, which closes the retry grace of the refresh that issued it.
    pub first_used_at: Option<DateTime<Utc>>,
}

impl AccessToken {
    /// Neither revoked nor expired at `now` (a token is expired from its `expires_at` on). Says
    /// nothing about the session: see [`AccessTokenRepository::find_active_by_hash`].
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|exp| now < exp)
    }
}

/// A refresh token of a session, known by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: Ulid,
    pub session_id: Ulid,
    pub token_hash: TokenHash,
    /// The access token issued together with it.
    pub access_token_id: Option<Ulid>,
    pub created_at: DateTime<Utc>,
    /// When it was exchanged for new tokens (rotation, RFC 6749 §6 / RFC 9700 §4.14.2).
    pub consumed_at: Option<DateTime<Utc>>,
    /// The refresh token issued in its place.
    pub next_refresh_token_id: Option<Ulid>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A refresh token rotation (RFC 6749 §6) waiting for its group commit
/// ([`Storage::rotate_refresh_token`]): consume `refresh_token_id` and issue a new pair in its
/// session. Owned, so it can wait in the writer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The refresh token presented.
    pub refresh_token_id: Ulid,
    pub session_id: Ulid,
    /// The SHA-256 of the new access token.
    pub access_token_hash: TokenHash,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// The SHA-256 of the new refresh token.
    pub refresh_token_hash: TokenHash,
}

/// What became of a [`Rotation`].
// Moved once, through its writer's answer: boxing `Issued` would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// The token was consumed and the new pair is committed (the session marked active).
    Issued {
        access: AccessToken,
        refresh: RefreshToken,
    },
    /// The token was consumed or revoked first, by a concurrent request (the compare-and-set
    /// of [`RefreshTokenRepository::consume`] failed): nothing of this rotation was written.
    Lost,
}

impl Storage {
    /// Rotates a refresh token (RFC 6749 §6, RFC 9700 §4.14.2) in a transaction shared with the
    /// other rotations of the moment (group commit, see `token_writer`), and answers after the
    /// commit. The outcome is this rotation's own, exactly what it would have been alone
    /// ([`RefreshTokenRepository::rotate_many`]).
    ///
    /// `spend`, when given, is a unit of a rate limit spent first by the same writer, with the
    /// spends of its batch (`spend_then_write`): when it is refused nothing is written.
    pub async fn rotate_refresh_token(
        &self,
        rotation: Rotation,
        spend: Option<BatchedSpend>,
    ) -> Result<Spent<Rotated>, StorageError> {
        self.group_commit(
            |writers| &writers.rotations,
            SpendFirst {
                item: rotation,
                spend,
            },
            |storage, items| {
                Box::pin(spend_then_write(storage, items, |storage, items| {
                    // On a kept connection (no pool pings). Should the connection fail,
                    // `hot_read` runs the batch again on another: what the first run committed
                    // makes the second's compare-and-sets fail (`Lost`), as if those answers
                    // were lost on the way.
                    Box::pin(storage.hot_read(items, |repo, items| {
                        repo.refresh_tokens().rotate_many(items)
                    }))
                }))
            },
        )
        .await?
    }
}

impl RefreshToken {
    /// Neither consumed nor revoked: it may be exchanged.
    pub fn is_usable(&self) -> bool {
        self.consumed_at.is_none() && self.revoked_at.is_none()
    }
}

#[async_trait]
pub trait OAuth2SessionRepository: Send {
    /// Starts a session.
    async fn add(&mut self, new: NewOAuth2Session<'_>) -> Result<OAuth2Session, StorageError>;

    /// Starts one session per item, each with its one access token, in two multi-row INSERTs
    /// whatever the number of items (the group commit of token issuance: one transaction for
    /// the tokens of concurrent requests). The result is in the order of `new`. Fails as a
    /// whole: [`StorageError::Conflict`] when a token hash is taken; a missing client or user
    /// fails the statement (the caller retries the items one by one to tell which). Commits
    /// in a transaction of its own: call it on a plain connection ([`Storage::reader`],
    /// [`Storage::hot_read`]), never inside a transaction.
    async fn add_with_access_tokens(
        &mut self,
        new: &[NewSessionToken],
    ) -> Result<Vec<(OAuth2Session, AccessToken)>, StorageError>;

    /// The session with this ID, finished or not.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<OAuth2Session>, StorageError>;

    /// The user's sessions that are not finished, oldest first.
    async fn list_active_for_user(
        &mut self,
        user_id: Ulid,
    ) -> Result<Vec<OAuth2Session>, StorageError>;

    /// The user's unfinished sessions holding the Matrix device `device_id`, oldest first (a
    /// device is one session: a new session claiming it ends these).
    async fn list_active_by_device(
        &mut self,
        user_id: Ulid,
        device_id: &str,
    ) -> Result<Vec<OAuth2Session>, StorageError>;

    /// Finishes a session (logout, revocation, reuse of a consumed refresh token): its tokens
    /// stop being active at once. Compare-and-set: `true` when this call finished it, `false`
    /// when it was finished already (the first `finished_at` stays).
    async fn finish(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Finishes every unfinished session started from a browser session (the user logged out
    /// of the browser); returns how many it finished.
    async fn finish_all_for_browser_session(
        &mut self,
        browser_session_id: Ulid,
    ) -> Result<u64, StorageError>;

    /// Records that the session was used now; returns the session as it is now.
    async fn touch(&mut self, id: Ulid) -> Result<OAuth2Session, StorageError>;

    /// Up to `limit` sessions `filter` selects, in ID (creation) order, after the session
    /// `after` when given (keyset pagination; the admin API's session list).
    async fn list_page(
        &mut self,
        filter: &OAuth2SessionFilter,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<OAuth2Session>, StorageError>;
}

/// Which sessions [`OAuth2SessionRepository::list_page`] returns; `None` members select
/// everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OAuth2SessionFilter {
    pub user_id: Option<Ulid>,
    /// The internal ID of the client.
    pub client_id: Option<Ulid>,
    /// Only unfinished (`true`) or finished (`false`) sessions.
    pub active: Option<bool>,
}

#[async_trait]
pub trait AccessTokenRepository: Send {
    /// Stores a new access token of a session; `expires_at` is kept at database precision
    /// (milliseconds). [`StorageError::Conflict`] when the hash is taken.
    async fn add(
        &mut self,
        session_id: Ulid,
        token_hash: &TokenHash,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<AccessToken, StorageError>;

    /// The access token with this ID, whatever its state.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<AccessToken>, StorageError>;

    /// The access token with this hash, whatever its state (introspection of inactive tokens,
    /// RFC 7009 revocation).
    async fn find_by_hash(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<AccessToken>, StorageError>;

    /// THE HOT PATH (introspection, userinfo): the token with this hash when it may be used at
    /// `now` (not revoked, not expired, its session not finished, its user neither locked nor
    /// deactivated), with its session, user and public client ID: ONE query, found through the
    /// unique hash index and then primary keys.
    async fn find_active_by_hash(
        &mut self,
        token_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<Option<ActiveAccessToken>, StorageError>;

    /// Revokes an access token (RFC 7009). Compare-and-set: `true` when this call revoked it,
    /// `false` when it was revoked already.
    async fn revoke(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Records the first use of a token, now: one conditional UPDATE that writes only while
    /// `first_used_at` is NULL, so the hot path writes once per token, not once per request,
    /// and only while the token is not revoked (a use racing [`Self::revoke_unused`] records
    /// nothing on a token that lost). `true` when this call recorded it, `false` when it was
    /// recorded already, the token is revoked, or there is no such token.
    async fn mark_used(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes a token that was never used (the retry grace of refresh rotation).
    /// Compare-and-set against [`AccessTokenRepository::mark_used`]: `true` when this call
    /// revoked it; `false` when it was used or revoked already, whichever came first.
    async fn revoke_unused(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes every unrevoked access token of a session; returns how many.
    async fn revoke_all_for_session(&mut self, session_id: Ulid) -> Result<u64, StorageError>;
}

#[async_trait]
pub trait RefreshTokenRepository: Send {
    /// Stores a new refresh token of a session, issued together with `access_token_id`.
    /// [`StorageError::Conflict`] when the hash is taken.
    async fn add(
        &mut self,
        session_id: Ulid,
        token_hash: &TokenHash,
        access_token_id: Option<Ulid>,
    ) -> Result<RefreshToken, StorageError>;

    /// The refresh token with this ID, whatever its state (e.g. the successor of a consumed
    /// one, to see whether it was used yet).
    async fn lookup(&mut self, id: Ulid) -> Result<Option<RefreshToken>, StorageError>;

    /// The refresh token with this hash, whatever its state: the refresh grant needs to see
    /// consumed ones to detect replays.
    async fn find_by_hash(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<RefreshToken>, StorageError>;

    /// The refresh token with this hash, whatever its state, with its session and whether the
    /// session's user may still sign in (`true` for a session without a user; `false` when the
    /// user is locked, deactivated or gone), in one statement: what the refresh grant decides
    /// on, read in one round trip (issue 16).
    async fn find_presented(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<PresentedRefreshToken>, StorageError>;

    /// Rotation (RFC 6749 §6, RFC 9700 §4.14.2): marks the token consumed and replaced by
    /// `next_refresh_token_id` (add the new token first, in the same transaction).
    /// Compare-and-set: `true` when this call consumed it; `false` when it was consumed or
    /// revoked already, i.e. a concurrent refresh won or this is a replay: roll back what this
    /// request issued.
    async fn consume(
        &mut self,
        id: Ulid,
        next_refresh_token_id: Ulid,
    ) -> Result<bool, StorageError>;

    /// Rotations of a batch, in their order, each as a lone one would be done, in a transaction
    /// of its own: call it on a plain connection ([`Storage::reader`], [`Storage::hot_read`]),
    /// never inside a transaction. Per rotation: its new access and refresh tokens added, its
    /// token consumed (compare-and-set, [`RefreshTokenRepository::consume`]), its session marked
    /// active ([`OAuth2SessionRepository::touch`]). A rotation whose token was consumed or
    /// revoked already, by an earlier item of the batch too, is [`Rotated::Lost`] and leaves
    /// nothing behind. PostgreSQL runs the batch as one statement (`ROTATE_SQL`); SQLite adds
    /// the new tokens with one multi-row statement per table, consumes one token per
    /// statement in order and touches the sessions with one. [`StorageError::Conflict`] when a
    /// new hash is taken (nothing is written then).
    async fn rotate_many(&mut self, items: &[Rotation]) -> Result<Vec<Rotated>, StorageError>;

    /// The grace of refresh rotation: a consumed token replayed while its successor is still
    /// unused gets a new successor. Re-points `next_refresh_token_id` from `current_next` to
    /// `new_next`; compare-and-set, so of two concurrent replays only one re-points.
    async fn repoint_next(
        &mut self,
        id: Ulid,
        current_next: Ulid,
        new_next: Ulid,
    ) -> Result<bool, StorageError>;

    /// Revokes a refresh token (RFC 7009). Compare-and-set: `true` when this call revoked it,
    /// `false` when it was revoked already.
    async fn revoke(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Revokes every unrevoked refresh token of a session; returns how many.
    async fn revoke_all_for_session(&mut self, session_id: Ulid) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: DbId,
    user_id: Option<DbId>,
    client_id: DbId,
    browser_session_id: Option<DbId>,
    scope: String,
    device_id: Option<String>,
    created_at: Ts,
    finished_at: Option<Ts>,
    last_active_at: Option<Ts>,
    user_agent: Option<String>,
}

impl From<SessionRow> for OAuth2Session {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.map(Into::into),
            client_id: r.client_id.0,
            browser_session_id: r.browser_session_id.map(Into::into),
            scope: r.scope,
            device_id: r.device_id,
            created_at: r.created_at.0,
            finished_at: r.finished_at.map(Into::into),
            last_active_at: r.last_active_at.map(Into::into),
            user_agent: r.user_agent,
        }
    }
}

macro_rules! session_columns {
    () => {
        "id, user_id, client_id, browser_session_id, scope, device_id, created_at, finished_at, \
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

impl TryFrom<AccessTokenRow> for AccessToken {
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

/// The columns of the session `s`, each named `s_<column>` (rows joining a session to another
/// table: `TokenWithSessionRow`, `PresentedRow`; [`PrefixedSessionRow`] reads them back).
macro_rules! prefixed_session_columns {
    () => {
        "s.id AS s_id, s.user_id AS s_user_id, s.client_id AS s_client_id, \
         s.browser_session_id AS s_browser_session_id, s.scope AS s_scope, \
         s.device_id AS s_device_id, s.created_at AS s_created_at, \
         s.finished_at AS s_finished_at, \
         s.last_active_at AS s_last_active_at, s.user_agent AS s_user_agent"
    };
}
pub(crate) use prefixed_session_columns;

/// A session's columns as `prefixed_session_columns!` names them, in a row that joins it to
/// another table (`#[sqlx(flatten)]`).
#[derive(sqlx::FromRow)]
pub(crate) struct PrefixedSessionRow {
    s_id: DbId,
    s_user_id: Option<DbId>,
    s_client_id: DbId,
    s_browser_session_id: Option<DbId>,
    s_scope: String,
    s_device_id: Option<String>,
    s_created_at: Ts,
    s_finished_at: Option<Ts>,
    s_last_active_at: Option<Ts>,
    s_user_agent: Option<String>,
}

impl From<PrefixedSessionRow> for SessionRow {
    fn from(r: PrefixedSessionRow) -> Self {
        Self {
            id: r.s_id,
            user_id: r.s_user_id,
            client_id: r.s_client_id,
            browser_session_id: r.s_browser_session_id,
            scope: r.s_scope,
            device_id: r.s_device_id,
            created_at: r.s_created_at,
            finished_at: r.s_finished_at,
            last_active_at: r.s_last_active_at,
            user_agent: r.s_user_agent,
        }
    }
}

/// The columns of an active access token's lookup ([`TokenWithSessionRow`]): the token `t`,
/// its session `s`, its client's `client_id` (`c`) and its user `u` (see
/// [`active_token_joins`]). Shared by the lookup of one token and the batched lookup of many
/// (`crate::batch`).
macro_rules! active_token_columns {
    () => {
        concat!(
            "t.id AS t_id, t.session_id AS t_session_id, \
             t.token_hash AS t_token_hash, t.created_at AS t_created_at, \
             t.expires_at AS t_expires_at, t.revoked_at AS t_revoked_at, \
             t.first_used_at AS t_first_used_at, ",
            $crate::oauth2_sessions::prefixed_session_columns!(),
            ", c.client_id AS c_client_id, \
             u.id AS u_id, u.username AS u_username, u.created_at AS u_created_at, \
             u.locked_at AS u_locked_at, u.deactivated_at AS u_deactivated_at, \
             u.can_request_admin AS u_can_request_admin, \
             u.display_name AS u_display_name"
        )
    };
}
pub(crate) use active_token_columns;

/// From the token `t`: its session, client and user, by primary keys.
macro_rules! active_token_joins {
    () => {
        "JOIN oauth2_sessions s ON s.id = t.session_id \
         JOIN oauth2_clients c ON c.id = s.client_id \
         LEFT JOIN users u ON u.id = s.user_id"
    };
}

/// What makes the token `t` active at `$now` (an SQL expression of the time): not revoked,
/// not expired, its session not finished, its user (if any) neither locked nor deactivated.
macro_rules! active_token_conditions {
    ($now:literal) => {
        concat!(
            "t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > ",
            $now,
            ") AND s.finished_at IS NULL \
             AND (s.user_id IS NULL OR (u.locked_at IS NULL AND u.deactivated_at IS NULL))"
        )
    };
}
pub(crate) use active_token_conditions;

/// A token joined with its session: the columns of both, prefixed `t_` and `s_`.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenWithSessionRow {
    t_id: DbId,
    t_session_id: DbId,
    t_token_hash: Vec<u8>,
    t_created_at: Ts,
    t_expires_at: Option<Ts>,
    t_revoked_at: Option<Ts>,
    t_first_used_at: Option<Ts>,
    #[sqlx(flatten)]
    session: PrefixedSessionRow,
    c_client_id: String,
    // LEFT JOIN: all NULL for client_credentials sessions
    u_id: Option<DbId>,
    u_username: Option<String>,
    u_created_at: Option<Ts>,
    u_locked_at: Option<Ts>,
    u_deactivated_at: Option<Ts>,
    u_can_request_admin: Option<bool>,
    u_display_name: Option<String>,
}

impl TryFrom<TokenWithSessionRow> for ActiveAccessToken {
    type Error = StorageError;

    fn try_from(r: TokenWithSessionRow) -> Result<Self, StorageError> {
        let user = match (r.u_id, r.u_username, r.u_created_at) {
            (Some(id), Some(username), Some(created_at)) => Some(User {
                id: id.0,
                username,
                created_at: created_at.0,
                locked_at: r.u_locked_at.map(Into::into),
                deactivated_at: r.u_deactivated_at.map(Into::into),
                can_request_admin: r.u_can_request_admin.unwrap_or(false),
                display_name: r.u_display_name,
            }),
            _ => None,
        };
        let token = AccessTokenRow {
            id: r.t_id,
            session_id: r.t_session_id,
            token_hash: r.t_token_hash,
            created_at: r.t_created_at,
            expires_at: r.t_expires_at,
            revoked_at: r.t_revoked_at,
            first_used_at: r.t_first_used_at,
        };
        let session = SessionRow::from(r.session);
        Ok(ActiveAccessToken {
            token: token.try_into()?,
            session: session.into(),
            user,
            client_id: r.c_client_id,
        })
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

impl TryFrom<RefreshTokenRow> for RefreshToken {
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

/// A presented refresh token as the refresh grant reads it
/// ([`RefreshTokenRepository::find_presented`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedRefreshToken {
    pub token: RefreshToken,
    pub session: OAuth2Session,
    /// The session has no user, or its user is neither locked nor deactivated.
    pub user_active: bool,
}

#[derive(sqlx::FromRow)]
pub(crate) struct PresentedRow {
    r_id: DbId,
    r_session_id: DbId,
    r_token_hash: Vec<u8>,
    r_access_token_id: Option<DbId>,
    r_created_at: Ts,
    r_consumed_at: Option<Ts>,
    r_next_refresh_token_id: Option<DbId>,
    r_revoked_at: Option<Ts>,
    #[sqlx(flatten)]
    session: PrefixedSessionRow,
    user_active: bool,
}

impl TryFrom<PresentedRow> for PresentedRefreshToken {
    type Error = StorageError;

    fn try_from(r: PresentedRow) -> Result<Self, StorageError> {
        let token = RefreshTokenRow {
            id: r.r_id,
            session_id: r.r_session_id,
            token_hash: r.r_token_hash,
            access_token_id: r.r_access_token_id,
            created_at: r.r_created_at,
            consumed_at: r.r_consumed_at,
            next_refresh_token_id: r.r_next_refresh_token_id,
            revoked_at: r.r_revoked_at,
        };
        let session = SessionRow::from(r.session);
        Ok(Self {
            token: token.try_into()?,
            session: session.into(),
            user_active: r.user_active,
        })
    }
}

/// The columns of a presented refresh token `r`, its session `s` and whether its user `u` is
/// active, as [`PresentedRow`] reads them (also in `batch::CLIENTS_WITH_REFRESH_TOKENS_SQL`).
macro_rules! presented_columns {
    () => {
        concat!(
            "r.id AS r_id, r.session_id AS r_session_id, r.token_hash AS r_token_hash, \
             r.access_token_id AS r_access_token_id, r.created_at AS r_created_at, \
             r.consumed_at AS r_consumed_at, r.next_refresh_token_id AS r_next_refresh_token_id, \
             r.revoked_at AS r_revoked_at, ",
            $crate::oauth2_sessions::prefixed_session_columns!(),
            ", (s.user_id IS NULL OR (u.id IS NOT NULL AND u.locked_at IS NULL \
               AND u.deactivated_at IS NULL)) AS user_active"
        )
    };
}
pub(crate) use presented_columns;

/// See [`RefreshTokenRepository::find_presented`]. Primary-key steps from the token's unique
/// hash: the plan is the same on an empty table as on a large one.
#[doc(hidden)]
pub const PRESENTED_REFRESH_TOKEN_SQL: &str = concat!(
    "SELECT ",
    presented_columns!(),
    " FROM oauth2_refresh_tokens r \
     JOIN oauth2_sessions s ON s.id = r.session_id \
     LEFT JOIN users u ON u.id = s.user_id \
     WHERE r.token_hash = $1"
);

macro_rules! refresh_token_columns {
    () => {
        "id, session_id, token_hash, access_token_id, created_at, consumed_at, \
         next_refresh_token_id, revoked_at"
    };
}

/// The one `INSERT` of each token table, shared by the repositories of this module.
#[async_trait]
trait InsertTokens {
    /// Access tokens in one statement (multi-row `VALUES`): a lone token, a group-committed
    /// batch, the pairs of a batch of rotations. A hash already stored is
    /// [`StorageError::Conflict`].
    async fn insert_access_tokens(&mut self, tokens: &[&AccessToken]) -> Result<(), StorageError>;

    /// Refresh tokens, as [`Self::insert_access_tokens`].
    async fn insert_refresh_tokens(&mut self, tokens: &[&RefreshToken])
        -> Result<(), StorageError>;
}

/// The sessions' multi-row `INSERT` (`INSERT INTO oauth2_sessions (…) VALUES (…), (…)`).
fn push_sessions<'a, DB: sqlx::Database>(
    query: &mut sqlx::QueryBuilder<'a, DB>,
    rows: &'a [(OAuth2Session, AccessToken)],
) where
    DbId: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<DbId>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Ts: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push(
        "INSERT INTO oauth2_sessions (id, user_id, client_id, scope, device_id, created_at) ",
    );
    query.push_values(rows, |mut b, (session, _)| {
        b.push_bind(DbId(session.id))
            .push_bind(session.user_id.map(DbId))
            .push_bind(DbId(session.client_id))
            .push_bind(session.scope.clone())
            .push_bind(session.device_id.clone())
            .push_bind(Ts(session.created_at));
    });
}

/// The access tokens' multi-row `INSERT` (`INSERT INTO oauth2_access_tokens (…) VALUES …`).
fn push_access_tokens<'a, DB: sqlx::Database>(
    query: &mut sqlx::QueryBuilder<'a, DB>,
    tokens: impl IntoIterator<Item = &'a AccessToken>,
) where
    DbId: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Ts: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<Ts>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push(
        "INSERT INTO oauth2_access_tokens (id, session_id, token_hash, created_at, expires_at) ",
    );
    query.push_values(tokens, |mut row, token| {
        row.push_bind(DbId(token.id))
            .push_bind(DbId(token.session_id))
            .push_bind(token.token_hash.to_vec())
            .push_bind(Ts(token.created_at))
            .push_bind(token.expires_at.map(Ts));
    });
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl InsertTokens for $repo {
            async fn insert_access_tokens(
                &mut self,
                tokens: &[&AccessToken],
            ) -> Result<(), StorageError> {
                let mut insert = sqlx::QueryBuilder::new("");
                push_access_tokens(&mut insert, tokens.iter().copied());
                insert.push(" ON CONFLICT DO NOTHING");
                let done = insert.build().execute(self.conn()).await?;
                if done.rows_affected() != tokens.len() as u64 {
                    return Err(StorageError::Conflict("access token"));
                }
                Ok(())
            }

            async fn insert_refresh_tokens(
                &mut self,
                tokens: &[&RefreshToken],
            ) -> Result<(), StorageError> {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO oauth2_refresh_tokens \
                     (id, session_id, token_hash, access_token_id, created_at) ",
                );
                insert.push_values(tokens, |mut row, token| {
                    row.push_bind(DbId(token.id))
                        .push_bind(DbId(token.session_id))
                        .push_bind(token.token_hash.to_vec())
                        .push_bind(token.access_token_id.map(DbId))
                        .push_bind(Ts(token.created_at));
                });
                insert.push(" ON CONFLICT DO NOTHING");
                let done = insert.build().execute(self.conn()).await?;
                if done.rows_affected() != tokens.len() as u64 {
                    return Err(StorageError::Conflict("refresh token"));
                }
                Ok(())
            }
        }

        #[async_trait]
        impl OAuth2SessionRepository for $repo {
            async fn add(
                &mut self,
                new: NewOAuth2Session<'_>,
            ) -> Result<OAuth2Session, StorageError> {
                let session = OAuth2Session {
                    id: self.new_id(),
                    user_id: new.user_id,
                    client_id: new.client_id,
                    browser_session_id: new.browser_session_id,
                    scope: new.scope.to_owned(),
                    device_id: new.device_id.map(str::to_owned),
                    created_at: self.now(),
                    finished_at: None,
                    last_active_at: None,
                    user_agent: new.user_agent.map(str::to_owned),
                };
                sqlx::query(
                    "INSERT INTO oauth2_sessions \
                     (id, user_id, client_id, browser_session_id, scope, device_id, created_at, \
                      user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(DbId(session.id))
                .bind(session.user_id.map(DbId))
                .bind(DbId(session.client_id))
                .bind(session.browser_session_id.map(DbId))
                .bind(&session.scope)
                .bind(session.device_id.as_deref())
                .bind(Ts(session.created_at))
                .bind(session.user_agent.as_deref())
                .execute(self.conn())
                .await?;
                Ok(session)
            }

            async fn add_with_access_tokens(
                &mut self,
                new: &[NewSessionToken],
            ) -> Result<Vec<(OAuth2Session, AccessToken)>, StorageError> {
                if new.is_empty() {
                    return Ok(Vec::new());
                }
                let now = self.now();
                let mut rows = Vec::with_capacity(new.len());
                for item in new {
                    let session = OAuth2Session {
                        id: self.new_id(),
                        user_id: item.user_id,
                        client_id: item.client_id,
                        browser_session_id: None,
                        scope: item.scope.clone(),
                        device_id: item.device_id.clone(),
                        created_at: now,
                        finished_at: None,
                        last_active_at: None,
                        user_agent: None,
                    };
                    let token = AccessToken {
                        id: self.new_id(),
                        session_id: session.id,
                        token_hash: item.token_hash,
                        created_at: now,
                        expires_at: item.expires_at.map(db_precision),
                        revoked_at: None,
                        first_used_at: None,
                    };
                    rows.push((session, token));
                }
                self.insert_sessions_with_tokens(&rows).await?;
                Ok(rows)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<OAuth2Session>, StorageError> {
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM oauth2_sessions WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_active_for_user(
                &mut self,
                user_id: Ulid,
            ) -> Result<Vec<OAuth2Session>, StorageError> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM oauth2_sessions WHERE user_id = $1 AND finished_at IS NULL \
                      ORDER BY created_at, id"
                ))
                .bind(DbId(user_id))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_active_by_device(
                &mut self,
                user_id: Ulid,
                device_id: &str,
            ) -> Result<Vec<OAuth2Session>, StorageError> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM oauth2_sessions \
                      WHERE user_id = $1 AND device_id = $2 AND finished_at IS NULL \
                      ORDER BY created_at, id"
                ))
                .bind(DbId(user_id))
                .bind(device_id)
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn finish(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_sessions SET finished_at = $2 \
                     WHERE id = $1 AND finished_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "oauth2_sessions", id, "OAuth 2.0 session")
            }

            async fn finish_all_for_browser_session(
                &mut self,
                browser_session_id: Ulid,
            ) -> Result<u64, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_sessions SET finished_at = $2 \
                     WHERE browser_session_id = $1 AND finished_at IS NULL",
                )
                .bind(DbId(browser_session_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }

            async fn touch(&mut self, id: Ulid) -> Result<OAuth2Session, StorageError> {
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "UPDATE oauth2_sessions SET last_active_at = $2 WHERE id = $1 RETURNING ",
                    session_columns!()
                ))
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .fetch_optional(self.conn())
                .await?;
                row.map(Into::into)
                    .ok_or(StorageError::NotFound("OAuth 2.0 session"))
            }

            async fn list_page(
                &mut self,
                filter: &OAuth2SessionFilter,
                after: Option<Ulid>,
                limit: u32,
            ) -> Result<Vec<OAuth2Session>, StorageError> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM oauth2_sessions WHERE ($1 IS NULL OR id > $1) \
                      AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR client_id = $3) \
                      AND ($4 IS NULL OR (finished_at IS NULL) = $4) \
                      ORDER BY id LIMIT $5"
                ))
                .bind(after.map(DbId))
                .bind(filter.user_id.map(DbId))
                .bind(filter.client_id.map(DbId))
                .bind(filter.active)
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }

        #[async_trait]
        impl AccessTokenRepository for $repo {
            async fn add(
                &mut self,
                session_id: Ulid,
                token_hash: &TokenHash,
                expires_at: Option<DateTime<Utc>>,
            ) -> Result<AccessToken, StorageError> {
                let token = AccessToken {
                    id: self.new_id(),
                    session_id,
                    token_hash: *token_hash,
                    created_at: self.now(),
                    expires_at: expires_at.map(db_precision),
                    revoked_at: None,
                    first_used_at: None,
                };
                self.insert_access_tokens(&[&token]).await?;
                Ok(token)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<AccessToken>, StorageError> {
                let row: Option<AccessTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    access_token_columns!(),
                    " FROM oauth2_access_tokens WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_hash(
                &mut self,
                token_hash: &TokenHash,
            ) -> Result<Option<AccessToken>, StorageError> {
                let row: Option<AccessTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    access_token_columns!(),
                    " FROM oauth2_access_tokens WHERE token_hash = $1"
                ))
                .bind(&token_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_active_by_hash(
                &mut self,
                token_hash: &TokenHash,
                now: DateTime<Utc>,
            ) -> Result<Option<ActiveAccessToken>, StorageError> {
                // One round trip: the unique hash index finds the token, primary keys its
                // session, client and user. An expired or revoked token, a finished session or
                // a locked or deactivated user is simply not found.
                let row: Option<TokenWithSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    active_token_columns!(),
                    " FROM oauth2_access_tokens t ",
                    active_token_joins!(),
                    " WHERE t.token_hash = $1 AND ",
                    active_token_conditions!("$2")
                ))
                .bind(&token_hash[..])
                .bind(Ts(now))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn revoke(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_access_tokens SET revoked_at = $2 \
                     WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "oauth2_access_tokens", id, "access token")
            }

            async fn mark_used(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_access_tokens SET first_used_at = $2 \
                     WHERE id = $1 AND first_used_at IS NULL AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_unused(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_access_tokens SET revoked_at = $2 \
                     WHERE id = $1 AND revoked_at IS NULL AND first_used_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "oauth2_access_tokens", id, "access token")
            }

            async fn revoke_all_for_session(
                &mut self,
                session_id: Ulid,
            ) -> Result<u64, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_access_tokens SET revoked_at = $2 \
                     WHERE session_id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(session_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl RefreshTokenRepository for $repo {
            async fn add(
                &mut self,
                session_id: Ulid,
                token_hash: &TokenHash,
                access_token_id: Option<Ulid>,
            ) -> Result<RefreshToken, StorageError> {
                let token = RefreshToken {
                    id: self.new_id(),
                    session_id,
                    token_hash: *token_hash,
                    access_token_id,
                    created_at: self.now(),
                    consumed_at: None,
                    next_refresh_token_id: None,
                    revoked_at: None,
                };
                self.insert_refresh_tokens(&[&token]).await?;
                Ok(token)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<RefreshToken>, StorageError> {
                let row: Option<RefreshTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    refresh_token_columns!(),
                    " FROM oauth2_refresh_tokens WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_presented(
                &mut self,
                token_hash: &TokenHash,
            ) -> Result<Option<PresentedRefreshToken>, StorageError> {
                let row: Option<PresentedRow> = sqlx::query_as(PRESENTED_REFRESH_TOKEN_SQL)
                    .bind(&token_hash[..])
                    .fetch_optional(self.conn())
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_hash(
                &mut self,
                token_hash: &TokenHash,
            ) -> Result<Option<RefreshToken>, StorageError> {
                let row: Option<RefreshTokenRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    refresh_token_columns!(),
                    " FROM oauth2_refresh_tokens WHERE token_hash = $1"
                ))
                .bind(&token_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn consume(
                &mut self,
                id: Ulid,
                next_refresh_token_id: Ulid,
            ) -> Result<bool, StorageError> {
                // RFC 6749 §6 / RFC 9700 §4.14.2: a refresh token is exchanged once. Two
                // concurrent refreshes with the same token both get here; the condition lets
                // exactly one of them set `consumed_at`.
                let done = sqlx::query(
                    "UPDATE oauth2_refresh_tokens \
                     SET consumed_at = $2, next_refresh_token_id = $3 \
                     WHERE id = $1 AND consumed_at IS NULL AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .bind(DbId(next_refresh_token_id))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "oauth2_refresh_tokens", id, "refresh token")
            }

            async fn rotate_many(
                &mut self,
                items: &[Rotation],
            ) -> Result<Vec<Rotated>, StorageError> {
                if items.is_empty() {
                    return Ok(Vec::new());
                }
                self.rotate_batch(items).await
            }

            async fn repoint_next(
                &mut self,
                id: Ulid,
                current_next: Ulid,
                new_next: Ulid,
            ) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_refresh_tokens SET next_refresh_token_id = $3 \
                     WHERE id = $1 AND next_refresh_token_id = $2 AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(DbId(current_next))
                .bind(DbId(new_next))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "oauth2_refresh_tokens", id, "refresh token")
            }

            async fn revoke(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_refresh_tokens SET revoked_at = $2 \
                     WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "oauth2_refresh_tokens", id, "refresh token")
            }

            async fn revoke_all_for_session(
                &mut self,
                session_id: Ulid,
            ) -> Result<u64, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_refresh_tokens SET revoked_at = $2 \
                     WHERE session_id = $1 AND revoked_at IS NULL",
                )
                .bind(DbId(session_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

for_each_backend!(implementation);

impl<DB: sqlx::Database> super::SqlRepository<DB> {
    /// The new pair of a rotation, at `now`.
    fn new_pair(&mut self, item: &Rotation, now: DateTime<Utc>) -> (AccessToken, RefreshToken) {
        let access = AccessToken {
            id: self.new_id(),
            session_id: item.session_id,
            token_hash: item.access_token_hash,
            created_at: now,
            expires_at: item.access_expires_at.map(db_precision),
            revoked_at: None,
            first_used_at: None,
        };
        let refresh = RefreshToken {
            id: self.new_id(),
            session_id: item.session_id,
            token_hash: item.refresh_token_hash,
            access_token_id: Some(access.id),
            created_at: now,
            consumed_at: None,
            next_refresh_token_id: None,
            revoked_at: None,
        };
        (access, refresh)
    }
}

/// [`RefreshTokenRepository::rotate_many`] on PostgreSQL, as ONE statement (no `BEGIN`, no
/// `COMMIT`: a statement outside a transaction is one): each presented token is consumed with
/// the compare-and-set of [`RefreshTokenRepository::consume`], and only the rotations that
/// consumed theirs add their new pair and touch their session. The batch's rotations share
/// one round trip and one commit instead of `5 + n` round trips (issue 16: the rotation
/// writers spent most of a batch waiting on those round trips, not on the database).
///
/// Each token is found by its own index step and updated by its row's address
/// (`CROSS JOIN LATERAL (… LIMIT 1)`, then `ctid`): a plan made while the table was small
/// can't turn the update into a scan of the table (see `batch.rs`, "Plans made on empty
/// tables"); the sessions are touched the same way. Parameters: `$1` the presented tokens'
/// ids, `$2` their sessions, `$3`–`$5` the new access tokens (id, hash, expiry), `$6`–`$7`
/// the new refresh tokens (id, hash), `$8` now. Answers the ids of the tokens consumed.
#[doc(hidden)]
pub const ROTATE_SQL: &str = "WITH q AS (\
       SELECT * FROM unnest((SELECT $1::uuid[]), (SELECT $2::uuid[]), (SELECT $3::uuid[]), \
         (SELECT $4::bytea[]), (SELECT $5::timestamptz[]), (SELECT $6::uuid[]), \
         (SELECT $7::bytea[])) AS q(rid, sid, aid, ahash, aexp, nid, nhash)), \
     consumed AS (\
       UPDATE oauth2_refresh_tokens r SET consumed_at = $8, next_refresh_token_id = q.nid \
       FROM q CROSS JOIN LATERAL \
         (SELECT ctid AS tid FROM oauth2_refresh_tokens WHERE id = q.rid LIMIT 1) l \
       WHERE r.ctid = l.tid AND r.consumed_at IS NULL AND r.revoked_at IS NULL \
       RETURNING q.rid, q.sid, q.aid, q.ahash, q.aexp, q.nid, q.nhash), \
     access AS (\
       INSERT INTO oauth2_access_tokens (id, session_id, token_hash, created_at, expires_at) \
       SELECT aid, sid, ahash, $8, aexp FROM consumed), \
     refresh AS (\
       INSERT INTO oauth2_refresh_tokens (id, session_id, token_hash, access_token_id, created_at) \
       SELECT nid, sid, nhash, aid, $8 FROM consumed), \
     touched AS (\
       UPDATE oauth2_sessions s SET last_active_at = $8 \
       FROM (SELECT DISTINCT sid FROM consumed) c CROSS JOIN LATERAL \
         (SELECT ctid AS tid FROM oauth2_sessions WHERE id = c.sid LIMIT 1) l \
       WHERE s.ctid = l.tid) \
     SELECT rid FROM consumed";

/// Of `ids`, the refresh tokens that may still be exchanged (neither consumed nor revoked),
/// looked up one index step each.
const STILL_USABLE_SQL: &str = "SELECT r.id FROM unnest((SELECT $1::uuid[])) AS q(id) \
     CROSS JOIN LATERAL (SELECT id FROM oauth2_refresh_tokens \
       WHERE id = q.id AND consumed_at IS NULL AND revoked_at IS NULL LIMIT 1) r";

/// How many times a rotation whose token is still usable after the statement is tried again.
const ROTATE_ATTEMPTS: usize = 3;

impl super::PgRepository {
    async fn rotate_batch(&mut self, items: &[Rotation]) -> Result<Vec<Rotated>, StorageError> {
        use std::collections::HashSet;
        let now = self.now();
        let pairs: Vec<(AccessToken, RefreshToken)> =
            items.iter().map(|item| self.new_pair(item, now)).collect();
        let mut issued = vec![false; items.len()];
        // A token presented twice in the batch: its first item decides, as two `consume`s in
        // a row would; the later ones lose.
        let mut seen = HashSet::with_capacity(items.len());
        let mut pending: Vec<usize> = (0..items.len())
            .filter(|&i| seen.insert(items[i].refresh_token_id))
            .collect();
        // Rows are locked in the order of their ids: two writers never wait for each other in
        // a cycle.
        pending.sort_by_key(|&i| items[i].refresh_token_id);
        for _ in 0..ROTATE_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            // The statement's columns, one entry per pending rotation.
            let mut rids = Vec::with_capacity(pending.len());
            let mut sids = Vec::with_capacity(pending.len());
            let mut aids = Vec::with_capacity(pending.len());
            let mut ahashes = Vec::with_capacity(pending.len());
            let mut aexps = Vec::with_capacity(pending.len());
            let mut nids = Vec::with_capacity(pending.len());
            let mut nhashes = Vec::with_capacity(pending.len());
            for &i in &pending {
                let (access, refresh) = &pairs[i];
                rids.push(uuid::Uuid::from(items[i].refresh_token_id));
                sids.push(uuid::Uuid::from(items[i].session_id));
                aids.push(uuid::Uuid::from(access.id));
                ahashes.push(&access.token_hash[..]);
                aexps.push(access.expires_at);
                nids.push(uuid::Uuid::from(refresh.id));
                nhashes.push(&refresh.token_hash[..]);
            }
            let consumed: Vec<(uuid::Uuid,)> = sqlx::query_as(ROTATE_SQL)
                .bind(rids)
                .bind(sids)
                .bind(aids)
                .bind(ahashes)
                .bind(aexps)
                .bind(nids)
                .bind(nhashes)
                .bind(now)
                .fetch_all(self.conn())
                .await
                // A new hash taken: the statement wrote nothing.
                .map_err(|e| unique_taken(e, "access or refresh token"))?;
            let consumed: HashSet<Ulid> = consumed.into_iter().map(|(id,)| id.into()).collect();
            let mut left = Vec::new();
            for i in pending {
                if consumed.contains(&items[i].refresh_token_id) {
                    issued[i] = true;
                } else {
                    left.push(i);
                }
            }
            if left.is_empty() {
                break;
            }
            // Not consumed: lost, unless the token is still usable. A row changed by another
            // transaction while the statement ran (an `ON DELETE SET NULL` of its access
            // token, say) has moved, and its old address matched nothing: try again.
            let ids: Vec<uuid::Uuid> = left
                .iter()
                .map(|&i| items[i].refresh_token_id.into())
                .collect();
            let usable: Vec<(uuid::Uuid,)> = sqlx::query_as(STILL_USABLE_SQL)
                .bind(ids)
                .fetch_all(self.conn())
                .await?;
            let usable: HashSet<Ulid> = usable.into_iter().map(|(id,)| id.into()).collect();
            pending = left
                .into_iter()
                .filter(|&i| usable.contains(&items[i].refresh_token_id))
                .collect();
        }
        Ok(issued
            .into_iter()
            .zip(pairs)
            .map(|(issued, (access, refresh))| {
                if issued {
                    Rotated::Issued { access, refresh }
                } else {
                    Rotated::Lost
                }
            })
            .collect())
    }
}

impl super::PgRepository {
    /// The sessions and their tokens of a `client_credentials` batch as ONE statement (no
    /// `BEGIN`, no `COMMIT`: a statement outside a transaction is one): the sessions by a
    /// data-modifying `WITH`, the tokens by the statement itself (the foreign key is checked
    /// at its end). One round trip and its commit for the batch, instead of four. A hash
    /// taken fails the whole statement: nothing is written, [`StorageError::Conflict`].
    async fn insert_sessions_with_tokens(
        &mut self,
        rows: &[(OAuth2Session, AccessToken)],
    ) -> Result<(), StorageError> {
        let mut insert = sqlx::QueryBuilder::new("WITH sessions AS (");
        push_sessions(&mut insert, rows);
        insert.push(") ");
        push_access_tokens(&mut insert, rows.iter().map(|(_, token)| token));
        insert
            .build()
            .execute(self.conn())
            .await
            .map_err(|e| unique_taken(e, "access token"))?;
        Ok(())
    }
}

/// A unique key taken (a statement that can't count its rows with `ON CONFLICT DO NOTHING`:
/// it failed as a whole) is [`StorageError::Conflict`]`(what)`.
fn unique_taken(e: sqlx::Error, what: &'static str) -> StorageError {
    match &e {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            StorageError::Conflict(what)
        }
        _ => e.into(),
    }
}

impl super::SqliteRepository {
    /// The sessions and their tokens of a `client_credentials` batch in a transaction of its
    /// own: one multi-row statement per table.
    async fn insert_sessions_with_tokens(
        &mut self,
        rows: &[(OAuth2Session, AccessToken)],
    ) -> Result<(), StorageError> {
        in_own_transaction!(self, {
            let mut sessions = sqlx::QueryBuilder::new("");
            push_sessions(&mut sessions, rows);
            sessions.build().execute(self.conn()).await?;
            let tokens: Vec<&AccessToken> = rows.iter().map(|(_, token)| token).collect();
            self.insert_access_tokens(&tokens).await
        })
    }

    /// [`RefreshTokenRepository::rotate_many`] on SQLite (in-process: no round trip to save),
    /// in a transaction of its own: the new tokens of the batch go in with one multi-row
    /// statement per table, the consumes run one statement each in the batch's order, and the
    /// sessions are touched with one.
    async fn rotate_batch(&mut self, items: &[Rotation]) -> Result<Vec<Rotated>, StorageError> {
        in_own_transaction!(self, {
            let now = self.now();
            let pairs: Vec<(AccessToken, RefreshToken)> =
                items.iter().map(|item| self.new_pair(item, now)).collect();
            // The new tokens first: `next_refresh_token_id` refers to the new refresh token.
            let access: Vec<&AccessToken> = pairs.iter().map(|(token, _)| token).collect();
            self.insert_access_tokens(&access).await?;
            let refresh: Vec<&RefreshToken> = pairs.iter().map(|(_, token)| token).collect();
            self.insert_refresh_tokens(&refresh).await?;
            // Each consume in the batch's order, as `consume` does it: an item presenting a
            // token an earlier item consumed loses, as it would have after that one's commit.
            let mut rotated = Vec::with_capacity(items.len());
            let mut lost_access = Vec::new();
            let mut lost_refresh = Vec::new();
            let mut touched = Vec::new();
            for (item, (access, refresh)) in items.iter().zip(pairs) {
                let done = sqlx::query(
                    "UPDATE oauth2_refresh_tokens \
                     SET consumed_at = $2, next_refresh_token_id = $3 \
                     WHERE id = $1 AND consumed_at IS NULL AND revoked_at IS NULL",
                )
                .bind(DbId(item.refresh_token_id))
                .bind(Ts(now))
                .bind(DbId(refresh.id))
                .execute(self.conn())
                .await?;
                if done.rows_affected() > 0 {
                    touched.push(DbId(item.session_id));
                    rotated.push(Rotated::Issued { access, refresh });
                } else {
                    lost_access.push(DbId(access.id));
                    lost_refresh.push(DbId(refresh.id));
                    rotated.push(Rotated::Lost);
                }
            }
            // What a lost rotation added goes again (its refresh token first: it refers to
            // its access token).
            for (table, ids) in [
                ("oauth2_refresh_tokens", lost_refresh),
                ("oauth2_access_tokens", lost_access),
            ] {
                if ids.is_empty() {
                    continue;
                }
                let mut delete =
                    sqlx::QueryBuilder::new(format!("DELETE FROM {table} WHERE id IN ("));
                let mut list = delete.separated(", ");
                for id in ids {
                    list.push_bind(id);
                }
                delete.push(")");
                delete.build().execute(self.conn()).await?;
            }
            if !touched.is_empty() {
                let mut touch =
                    sqlx::QueryBuilder::new("UPDATE oauth2_sessions SET last_active_at = ");
                touch.push_bind(Ts(now)).push(" WHERE id IN (");
                let mut list = touch.separated(", ");
                for id in touched {
                    list.push_bind(id);
                }
                touch.push(")");
                touch.build().execute(self.conn()).await?;
            }
            Ok(rotated)
        })
    }
}
