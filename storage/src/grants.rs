//! Grants in progress: authorization code grants (RFC 6749 §4.1 with PKCE, RFC 7636), the
//! consents users gave, and device authorization grants (RFC 8628).
//!
//! Each step of a grant is a compare-and-set update: `Ok(true)` when this call made the step,
//! `Ok(false)` when the grant was not in the state the step needs (already exchanged, cancelled,
//! expired, ...), [`StorageError::NotFound`] when there is no such grant. Single-use codes rely
//! on it: of two concurrent exchanges, exactly one gets `true`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::protocol::{Prompts, ResponseMode};
use ulid::Ulid;

use super::{
    compare_and_set, delete_batch, for_each_backend,
    types::{db_precision, decode_text, decode_token_hash, DbId, Ts},
    Dialect, StorageError, TokenHash,
};

/// An authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1) and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationGrant {
    pub id: Ulid,
    /// The internal ID of the client.
    pub client_id: Ulid,
    pub redirect_uri: String,
    /// The requested scope, space-separated.
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// How the answer goes back to the client (OAuth 2.0 Multiple Response Type Encoding
    /// Practices §2.1, OAuth 2.0 Form Post Response Mode), read at `/authorize`.
    pub response_mode: ResponseMode,
    /// PKCE (RFC 7636 §4.3).
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    /// OIDC `max_age`, in seconds.
    pub max_age: Option<i64>,
    /// The `prompt` values (OIDC Core §3.1.2.1), read at `/authorize`; empty when not given.
    pub prompt: Prompts,
    pub login_hint: Option<String>,
    /// The hash of the authorization code, when the response type includes `code`.
    pub code_hash: Option<TokenHash>,
    pub created_at: DateTime<Utc>,
    /// The browser session that approved it.
    pub browser_session_id: Option<Ulid>,
    /// The OAuth 2.0 session created on approval.
    pub session_id: Option<Ulid>,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub exchanged_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// The parameters of a new [`AuthorizationGrant`], as validated from the request.
#[derive(Debug, Clone, Copy)]
pub struct NewAuthorizationGrant<'a> {
    /// The internal ID of the client.
    pub client_id: Ulid,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub response_mode: ResponseMode,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
    pub max_age: Option<i64>,
    pub prompt: Prompts,
    pub login_hint: Option<&'a str>,
    /// Usually `None`: the code is made when the user approves, and its hash recorded by
    /// [`AuthorizationGrantRepository::fulfill`].
    pub code_hash: Option<TokenHash>,
}

/// A consent a user gave a client, for a set of scope tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub id: Ulid,
    pub user_id: Ulid,
    /// The internal ID of the client.
    pub client_id: Ulid,
    /// The scope tokens, sorted, de-duplicated and space-separated.
    pub scope: String,
    pub created_at: DateTime<Utc>,
}

/// A device authorization request (RFC 8628 §3.1) and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodeGrant {
    pub id: Ulid,
    /// The internal ID of the client.
    pub client_id: Ulid,
    /// The requested scope, space-separated.
    pub scope: String,
    pub device_code_hash: TokenHash,
    /// Normalised by [`normalize_user_code`].
    pub user_code: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The last time the device polled the token endpoint (RFC 8628 §3.5 `slow_down`).
    pub last_polled_at: Option<DateTime<Utc>>,
    /// The browser session that approved or rejected it.
    pub browser_session_id: Option<Ulid>,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub rejected_at: Option<DateTime<Utc>>,
    /// The OAuth 2.0 session created when the device got its tokens.
    pub session_id: Option<Ulid>,
    pub exchanged_at: Option<DateTime<Utc>>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// Where a [`DeviceCodeGrant`] stands, and so what a token request polling it gets (RFC 8628
/// §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCodeGrantState {
    /// Waiting for the user: `authorization_pending`.
    Pending,
    /// Approved, tokens not issued yet: the next poll gets them.
    Fulfilled,
    /// The user said no: `access_denied`.
    Rejected,
    /// Not exchanged before `expires_at`: `expired_token`.
    Expired,
    /// Tokens were issued: the device code is used up (`invalid_grant`).
    Exchanged,
}

impl DeviceCodeGrant {
    /// The state at `now`, as the repository's compare-and-set steps see it: an unexchanged
    /// grant is expired from `expires_at` on, approved or not.
    pub fn state(&self, now: DateTime<Utc>) -> DeviceCodeGrantState {
        if self.exchanged_at.is_some() {
            DeviceCodeGrantState::Exchanged
        } else if self.rejected_at.is_some() {
            DeviceCodeGrantState::Rejected
        } else if now >= self.expires_at {
            DeviceCodeGrantState::Expired
        } else if self.fulfilled_at.is_some() {
            DeviceCodeGrantState::Fulfilled
        } else {
            DeviceCodeGrantState::Pending
        }
    }
}

/// The parameters of a new [`DeviceCodeGrant`].
#[derive(Debug, Clone, Copy)]
pub struct NewDeviceCodeGrant<'a> {
    /// The internal ID of the client.
    pub client_id: Ulid,
    pub scope: &'a str,
    pub device_code_hash: TokenHash,
    /// Normalised by [`DeviceCodeGrantRepository::add`] (see [`normalize_user_code`]).
    pub user_code: &'a str,
    /// Kept at database precision (milliseconds).
    pub expires_at: DateTime<Utc>,
    pub ip_address: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A user code as stored and compared (RFC 8628 §6.1): the one rule lives with the user code
/// format in the domain.
pub use domain::token::normalize_user_code;

/// A scope as consents store it: its tokens sorted, de-duplicated, space-separated.
fn normalize_scope(scope: &str) -> String {
    let mut tokens: Vec<&str> = scope.split_whitespace().collect();
    tokens.sort_unstable();
    tokens.dedup();
    tokens.join(" ")
}

#[async_trait]
pub trait AuthorizationGrantRepository: Send {
    /// Stores an authorization request. [`StorageError::Conflict`] when the code hash is taken.
    async fn add(
        &mut self,
        new: NewAuthorizationGrant<'_>,
    ) -> Result<AuthorizationGrant, StorageError>;

    /// The grant with this ID, whatever its state.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<AuthorizationGrant>, StorageError>;

    /// The grant whose authorization code has this hash, whatever its state: the token endpoint
    /// must see exchanged grants to detect a replayed code (RFC 6749 §4.1.2).
    async fn find_by_code_hash(
        &mut self,
        code_hash: &TokenHash,
    ) -> Result<Option<AuthorizationGrant>, StorageError>;

    /// The user approved: records the browser session, the OAuth 2.0 session created for the
    /// grant and the hash of the authorization code handed to the client (the code is made at
    /// approval, since only then is it sent). Compare-and-set: only a grant neither fulfilled
    /// nor cancelled.
    async fn fulfill(
        &mut self,
        id: Ulid,
        browser_session_id: Ulid,
        session_id: Ulid,
        code_hash: &TokenHash,
    ) -> Result<bool, StorageError>;

    /// The code was redeemed at the token endpoint. Compare-and-set: only a fulfilled,
    /// uncancelled grant, and only once (RFC 6749 §4.1.2: a code is single use; `false` on a
    /// replay, when the caller should end the session issued from it). The code lifetime
    /// (`created_at` + at most 10 minutes) is for the caller to check. The token endpoint calls
    /// it in the transaction that issues the tokens, after the homeserver has the device: of
    /// two concurrent redemptions exactly one gets `true`.
    async fn exchange(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// The user declined or the request was abandoned. Compare-and-set: only a grant neither
    /// fulfilled nor cancelled.
    async fn cancel(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// The unfinished OAuth 2.0 sessions of grants created before `before` whose code was never
    /// exchanged (approved, perhaps with the device upserted on the homeserver by an exchange
    /// that never completed: the session holds a device ID and never got a token), at most
    /// `limit`. [`Self::delete_abandoned`] keeps these grants: the caller ends their sessions
    /// first (housekeeping, see `provider::core::housekeeping`).
    async fn live_sessions_of_abandoned(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Ulid>, StorageError>;

    /// Deletes the grants created before `before` whose code was never exchanged: requests
    /// abandoned on the way (sign-in, consent), refused, or whose code expired unused; but not
    /// one whose session is unfinished ([`Self::live_sessions_of_abandoned`]: the grant is the
    /// session's only trace of how it began). Deletes at most `limit` rows and returns how many
    /// (housekeeping, see `provider::core::housekeeping`). Exchanged grants are kept: a
    /// replayed code is refused by them, and it revokes what they issued (RFC 6749 §4.1.2).
    async fn delete_abandoned(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[async_trait]
pub trait ConsentRepository: Send {
    /// Remembers that the user consented to this scope for this client. The scope is stored
    /// normalised (tokens sorted, de-duplicated, space-separated); recording a set already
    /// recorded is not an error. `true` when the set was new.
    async fn record(
        &mut self,
        user_id: Ulid,
        client_id: Ulid,
        scope: &str,
    ) -> Result<bool, StorageError>;

    /// Does one recorded consent of the user for the client cover every token of `scope`? A
    /// recorded set covers a request when it holds each requested token (equal set or
    /// superset); tokens are not pooled across separate consents, and with no consent recorded
    /// the answer is `false`, even for an empty scope. Scope tokens that change at each grant
    /// (the MSC2967 device scope) should be left out of both `record` and this check.
    async fn has_consent(
        &mut self,
        user_id: Ulid,
        client_id: Ulid,
        scope: &str,
    ) -> Result<bool, StorageError>;

    /// The user's consents for the client, by scope.
    async fn list(&mut self, user_id: Ulid, client_id: Ulid) -> Result<Vec<Consent>, StorageError>;

    /// Forgets every consent of the user for the client; returns how many there were.
    async fn revoke_all(&mut self, user_id: Ulid, client_id: Ulid) -> Result<u64, StorageError>;
}

#[async_trait]
pub trait DeviceCodeGrantRepository: Send {
    /// Stores a device authorization request (RFC 8628 §3.1), with its user code normalised.
    /// [`StorageError::Conflict`] when the device code hash or the user code is taken (draw
    /// another user code and retry).
    async fn add(&mut self, new: NewDeviceCodeGrant<'_>) -> Result<DeviceCodeGrant, StorageError>;

    /// The grant with this ID, whatever its state.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<DeviceCodeGrant>, StorageError>;

    /// The grant of this device code (the token endpoint's poll), whatever its state.
    async fn find_by_device_code_hash(
        &mut self,
        device_code_hash: &TokenHash,
    ) -> Result<Option<DeviceCodeGrant>, StorageError>;

    /// The grant of this user code (the verification page, RFC 8628 §3.3), whatever its state;
    /// the code is normalised first, so `abcd-efgh` finds `ABCDEFGH`.
    async fn find_by_user_code(
        &mut self,
        user_code: &str,
    ) -> Result<Option<DeviceCodeGrant>, StorageError>;

    /// Records a poll of the token endpoint now, and returns the previous poll's time, so the
    /// caller can answer `slow_down` when it is less than `interval` ago (RFC 8628 §3.5). Call
    /// it in a transaction ([`super::Storage::begin`]): the row is locked between the read and
    /// the write, so two concurrent polls see each other.
    async fn record_poll(&mut self, id: Ulid) -> Result<Option<DateTime<Utc>>, StorageError>;

    /// The user approved the request from this browser session (RFC 8628 §3.3).
    /// Compare-and-set: only a grant not fulfilled, not rejected and not expired now.
    async fn fulfill(&mut self, id: Ulid, browser_session_id: Ulid) -> Result<bool, StorageError>;

    /// The user denied the request from this browser session (RFC 8628 §3.5 `access_denied`).
    /// Compare-and-set: only a grant neither fulfilled nor rejected.
    async fn reject(&mut self, id: Ulid, browser_session_id: Ulid) -> Result<bool, StorageError>;

    /// The device got its tokens for `session_id` (create the session first, in the same
    /// transaction). Compare-and-set: only a fulfilled grant, not expired now, and only once
    /// (the device code is single use, RFC 8628 §3.5); on `false` roll back.
    async fn exchange(&mut self, id: Ulid, session_id: Ulid) -> Result<bool, StorageError>;

    /// Deletes the device code grants that expired before `before` (the caller passes a
    /// time well in the past, so a finished grant is kept a while for its audit trail and a
    /// late poll still gets `expired_token`).
    /// Deletes at most `limit` rows and returns how many (housekeeping, see
    /// `provider::core::housekeeping`).
    async fn delete_expired(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct AuthorizationGrantRow {
    id: DbId,
    client_id: DbId,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    response_mode: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    max_age: Option<i64>,
    prompt: Option<String>,
    login_hint: Option<String>,
    code_hash: Option<Vec<u8>>,
    created_at: Ts,
    browser_session_id: Option<DbId>,
    session_id: Option<DbId>,
    fulfilled_at: Option<Ts>,
    exchanged_at: Option<Ts>,
    cancelled_at: Option<Ts>,
}

impl TryFrom<AuthorizationGrantRow> for AuthorizationGrant {
    type Error = StorageError;

    fn try_from(r: AuthorizationGrantRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            client_id: r.client_id.0,
            redirect_uri: r.redirect_uri,
            scope: r.scope,
            state: r.state,
            nonce: r.nonce,
            // Stored by `add` from the typed value: one the enum doesn't know is corrupt data.
            response_mode: decode_text("response_mode", &r.response_mode)?,
            code_challenge: r.code_challenge,
            code_challenge_method: r.code_challenge_method,
            max_age: r.max_age,
            // NULL when the request had none (`add`).
            prompt: decode_text("prompt", r.prompt.as_deref().unwrap_or_default())?,
            login_hint: r.login_hint,
            code_hash: r.code_hash.map(decode_token_hash).transpose()?,
            created_at: r.created_at.0,
            browser_session_id: r.browser_session_id.map(Into::into),
            session_id: r.session_id.map(Into::into),
            fulfilled_at: r.fulfilled_at.map(Into::into),
            exchanged_at: r.exchanged_at.map(Into::into),
            cancelled_at: r.cancelled_at.map(Into::into),
        })
    }
}

macro_rules! authorization_grant_columns {
    () => {
        "id, client_id, redirect_uri, scope, state, nonce, response_mode, code_challenge, \
         code_challenge_method, max_age, prompt, login_hint, code_hash, created_at, \
         browser_session_id, session_id, fulfilled_at, exchanged_at, cancelled_at"
    };
}

#[derive(sqlx::FromRow)]
struct ConsentRow {
    id: DbId,
    user_id: DbId,
    client_id: DbId,
    scope: String,
    created_at: Ts,
}

impl From<ConsentRow> for Consent {
    fn from(r: ConsentRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.0,
            client_id: r.client_id.0,
            scope: r.scope,
            created_at: r.created_at.0,
        }
    }
}

#[derive(sqlx::FromRow)]
struct DeviceCodeGrantRow {
    id: DbId,
    client_id: DbId,
    scope: String,
    device_code_hash: Vec<u8>,
    user_code: String,
    created_at: Ts,
    expires_at: Ts,
    last_polled_at: Option<Ts>,
    browser_session_id: Option<DbId>,
    fulfilled_at: Option<Ts>,
    rejected_at: Option<Ts>,
    session_id: Option<DbId>,
    exchanged_at: Option<Ts>,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

impl TryFrom<DeviceCodeGrantRow> for DeviceCodeGrant {
    type Error = StorageError;

    fn try_from(r: DeviceCodeGrantRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            client_id: r.client_id.0,
            scope: r.scope,
            device_code_hash: decode_token_hash(r.device_code_hash)?,
            user_code: r.user_code,
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
            last_polled_at: r.last_polled_at.map(Into::into),
            browser_session_id: r.browser_session_id.map(Into::into),
            fulfilled_at: r.fulfilled_at.map(Into::into),
            rejected_at: r.rejected_at.map(Into::into),
            session_id: r.session_id.map(Into::into),
            exchanged_at: r.exchanged_at.map(Into::into),
            ip_address: r.ip_address,
            user_agent: r.user_agent,
        })
    }
}

macro_rules! device_code_grant_columns {
    () => {
        "id, client_id, scope, device_code_hash, user_code, created_at, expires_at, \
         last_polled_at, browser_session_id, fulfilled_at, rejected_at, session_id, \
         exchanged_at, ip_address, user_agent"
    };
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl AuthorizationGrantRepository for $repo {
            async fn add(
                &mut self,
                new: NewAuthorizationGrant<'_>,
            ) -> Result<AuthorizationGrant, StorageError> {
                let grant = AuthorizationGrant {
                    id: self.new_id(),
                    client_id: new.client_id,
                    redirect_uri: new.redirect_uri.to_owned(),
                    scope: new.scope.to_owned(),
                    state: new.state.map(str::to_owned),
                    nonce: new.nonce.map(str::to_owned),
                    response_mode: new.response_mode,
                    code_challenge: new.code_challenge.map(str::to_owned),
                    code_challenge_method: new.code_challenge_method.map(str::to_owned),
                    max_age: new.max_age,
                    prompt: new.prompt,
                    login_hint: new.login_hint.map(str::to_owned),
                    code_hash: new.code_hash,
                    created_at: self.now(),
                    browser_session_id: None,
                    session_id: None,
                    fulfilled_at: None,
                    exchanged_at: None,
                    cancelled_at: None,
                };
                let done = sqlx::query(
                    "INSERT INTO oauth2_authorization_grants \
                     (id, client_id, redirect_uri, scope, state, nonce, response_mode, \
                      code_challenge, code_challenge_method, max_age, prompt, login_hint, \
                      code_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(grant.id))
                .bind(DbId(grant.client_id))
                .bind(&grant.redirect_uri)
                .bind(&grant.scope)
                .bind(grant.state.as_deref())
                .bind(grant.nonce.as_deref())
                .bind(grant.response_mode.as_str())
                .bind(grant.code_challenge.as_deref())
                .bind(grant.code_challenge_method.as_deref())
                .bind(grant.max_age)
                .bind((!grant.prompt.is_empty()).then(|| grant.prompt.to_string()))
                .bind(grant.login_hint.as_deref())
                .bind(grant.code_hash.as_ref().map(|h| &h[..]))
                .bind(Ts(grant.created_at))
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "authorization code")?;
                Ok(grant)
            }

            async fn lookup(
                &mut self,
                id: Ulid,
            ) -> Result<Option<AuthorizationGrant>, StorageError> {
                let row: Option<AuthorizationGrantRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    authorization_grant_columns!(),
                    " FROM oauth2_authorization_grants WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_code_hash(
                &mut self,
                code_hash: &TokenHash,
            ) -> Result<Option<AuthorizationGrant>, StorageError> {
                let row: Option<AuthorizationGrantRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    authorization_grant_columns!(),
                    " FROM oauth2_authorization_grants WHERE code_hash = $1"
                ))
                .bind(&code_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn fulfill(
                &mut self,
                id: Ulid,
                browser_session_id: Ulid,
                session_id: Ulid,
                code_hash: &TokenHash,
            ) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_authorization_grants \
                     SET browser_session_id = $2, session_id = $3, fulfilled_at = $4, \
                         code_hash = $5 \
                     WHERE id = $1 AND fulfilled_at IS NULL AND cancelled_at IS NULL",
                )
                .bind(DbId(id))
                .bind(DbId(browser_session_id))
                .bind(DbId(session_id))
                .bind(Ts(self.now()))
                .bind(&code_hash[..])
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "oauth2_authorization_grants",
                    id,
                    "authorization grant"
                )
            }

            async fn exchange(&mut self, id: Ulid) -> Result<bool, StorageError> {
                // RFC 6749 §4.1.2: the code MUST NOT be used more than once. Of two concurrent
                // redemptions exactly one sets `exchanged_at`.
                let done = sqlx::query(
                    "UPDATE oauth2_authorization_grants SET exchanged_at = $2 \
                     WHERE id = $1 AND fulfilled_at IS NOT NULL AND exchanged_at IS NULL \
                       AND cancelled_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "oauth2_authorization_grants",
                    id,
                    "authorization grant"
                )
            }

            async fn cancel(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_authorization_grants SET cancelled_at = $2 \
                     WHERE id = $1 AND fulfilled_at IS NULL AND cancelled_at IS NULL",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "oauth2_authorization_grants",
                    id,
                    "authorization grant"
                )
            }

            async fn live_sessions_of_abandoned(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Ulid>, StorageError> {
                let ids: Vec<DbId> = sqlx::query_scalar(
                    "SELECT s.id FROM oauth2_authorization_grants g \
                     JOIN oauth2_sessions s ON s.id = g.session_id \
                     WHERE g.exchanged_at IS NULL AND g.created_at < $1 \
                     AND s.finished_at IS NULL LIMIT $2",
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
                    "oauth2_authorization_grants",
                    "id",
                    "exchanged_at IS NULL AND created_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM oauth2_sessions s \
                      WHERE s.id = oauth2_authorization_grants.session_id \
                      AND s.finished_at IS NULL)",
                    Ts(before),
                    limit
                )
            }
        }

        #[async_trait]
        impl ConsentRepository for $repo {
            async fn record(
                &mut self,
                user_id: Ulid,
                client_id: Ulid,
                scope: &str,
            ) -> Result<bool, StorageError> {
                let id = self.new_id();
                let done = sqlx::query(
                    "INSERT INTO oauth2_consents (id, user_id, client_id, scope, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(id))
                .bind(DbId(user_id))
                .bind(DbId(client_id))
                .bind(normalize_scope(scope))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn has_consent(
                &mut self,
                user_id: Ulid,
                client_id: Ulid,
                scope: &str,
            ) -> Result<bool, StorageError> {
                let recorded: Vec<String> = sqlx::query_scalar(
                    "SELECT scope FROM oauth2_consents WHERE user_id = $1 AND client_id = $2",
                )
                .bind(DbId(user_id))
                .bind(DbId(client_id))
                .fetch_all(self.conn())
                .await?;
                Ok(recorded.iter().any(|set| {
                    let granted: Vec<&str> = set.split(' ').collect();
                    scope.split_whitespace().all(|token| granted.contains(&token))
                }))
            }

            async fn list(
                &mut self,
                user_id: Ulid,
                client_id: Ulid,
            ) -> Result<Vec<Consent>, StorageError> {
                let rows: Vec<ConsentRow> = sqlx::query_as(
                    "SELECT id, user_id, client_id, scope, created_at FROM oauth2_consents \
                     WHERE user_id = $1 AND client_id = $2 ORDER BY scope",
                )
                .bind(DbId(user_id))
                .bind(DbId(client_id))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn revoke_all(
                &mut self,
                user_id: Ulid,
                client_id: Ulid,
            ) -> Result<u64, StorageError> {
                let done = sqlx::query(
                    "DELETE FROM oauth2_consents WHERE user_id = $1 AND client_id = $2",
                )
                .bind(DbId(user_id))
                .bind(DbId(client_id))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl DeviceCodeGrantRepository for $repo {
            async fn add(
                &mut self,
                new: NewDeviceCodeGrant<'_>,
            ) -> Result<DeviceCodeGrant, StorageError> {
                let grant = DeviceCodeGrant {
                    id: self.new_id(),
                    client_id: new.client_id,
                    scope: new.scope.to_owned(),
                    device_code_hash: new.device_code_hash,
                    user_code: normalize_user_code(new.user_code),
                    created_at: self.now(),
                    expires_at: db_precision(new.expires_at),
                    last_polled_at: None,
                    browser_session_id: None,
                    fulfilled_at: None,
                    rejected_at: None,
                    session_id: None,
                    exchanged_at: None,
                    ip_address: new.ip_address.map(str::to_owned),
                    user_agent: new.user_agent.map(str::to_owned),
                };
                let done = sqlx::query(
                    "INSERT INTO oauth2_device_code_grants \
                     (id, client_id, scope, device_code_hash, user_code, created_at, expires_at, \
                      ip_address, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(grant.id))
                .bind(DbId(grant.client_id))
                .bind(&grant.scope)
                .bind(&grant.device_code_hash[..])
                .bind(&grant.user_code)
                .bind(Ts(grant.created_at))
                .bind(Ts(grant.expires_at))
                .bind(grant.ip_address.as_deref())
                .bind(grant.user_agent.as_deref())
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "device code grant")?;
                Ok(grant)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<DeviceCodeGrant>, StorageError> {
                let row: Option<DeviceCodeGrantRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    device_code_grant_columns!(),
                    " FROM oauth2_device_code_grants WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_device_code_hash(
                &mut self,
                device_code_hash: &TokenHash,
            ) -> Result<Option<DeviceCodeGrant>, StorageError> {
                let row: Option<DeviceCodeGrantRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    device_code_grant_columns!(),
                    " FROM oauth2_device_code_grants WHERE device_code_hash = $1"
                ))
                .bind(&device_code_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_user_code(
                &mut self,
                user_code: &str,
            ) -> Result<Option<DeviceCodeGrant>, StorageError> {
                let row: Option<DeviceCodeGrantRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    device_code_grant_columns!(),
                    " FROM oauth2_device_code_grants WHERE user_code = $1"
                ))
                .bind(normalize_user_code(user_code))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn record_poll(
                &mut self,
                id: Ulid,
            ) -> Result<Option<DateTime<Utc>>, StorageError> {
                // RFC 8628 §3.5 slow_down: the caller compares the previous poll with the
                // interval. The row stays locked from this read to the end of the transaction.
                let select = format!(
                    "SELECT last_polled_at FROM oauth2_device_code_grants WHERE id = $1 {}",
                    <Self as Dialect>::FOR_UPDATE
                );
                let previous: Option<Option<Ts>> = sqlx::query_scalar(&select)
                    .bind(DbId(id))
                    .fetch_optional(self.conn())
                    .await?;
                let previous = previous.ok_or(StorageError::NotFound("device code grant"))?;
                sqlx::query(
                    "UPDATE oauth2_device_code_grants SET last_polled_at = $2 WHERE id = $1",
                )
                .bind(DbId(id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                Ok(previous.map(Into::into))
            }

            async fn fulfill(
                &mut self,
                id: Ulid,
                browser_session_id: Ulid,
            ) -> Result<bool, StorageError> {
                // RFC 8628 §3.3: the user approves a pending request before it expires.
                let done = sqlx::query(
                    "UPDATE oauth2_device_code_grants \
                     SET browser_session_id = $2, fulfilled_at = $3 \
                     WHERE id = $1 AND fulfilled_at IS NULL AND rejected_at IS NULL \
                       AND expires_at > $3",
                )
                .bind(DbId(id))
                .bind(DbId(browser_session_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "oauth2_device_code_grants",
                    id,
                    "device code grant"
                )
            }

            async fn reject(
                &mut self,
                id: Ulid,
                browser_session_id: Ulid,
            ) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE oauth2_device_code_grants \
                     SET browser_session_id = $2, rejected_at = $3 \
                     WHERE id = $1 AND fulfilled_at IS NULL AND rejected_at IS NULL",
                )
                .bind(DbId(id))
                .bind(DbId(browser_session_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "oauth2_device_code_grants",
                    id,
                    "device code grant"
                )
            }

            async fn exchange(&mut self, id: Ulid, session_id: Ulid) -> Result<bool, StorageError> {
                // RFC 8628 §3.5: tokens once, for an approved request whose device code has
                // not expired (`expired_token` otherwise).
                let done = sqlx::query(
                    "UPDATE oauth2_device_code_grants SET session_id = $2, exchanged_at = $3 \
                     WHERE id = $1 AND fulfilled_at IS NOT NULL AND rejected_at IS NULL \
                       AND exchanged_at IS NULL AND expires_at > $3",
                )
                .bind(DbId(id))
                .bind(DbId(session_id))
                .bind(Ts(self.now()))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "oauth2_device_code_grants",
                    id,
                    "device code grant"
                )
            }

            async fn delete_expired(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "oauth2_device_code_grants",
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
