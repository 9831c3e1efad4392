//! Browser sessions (the login cookie) and the authentications done in them.
//!
//! A browser session is active from [`BrowserSessionRepository::add`] until
//! [`BrowserSessionRepository::finish`] (logout, a password change elsewhere, its idle or
//! absolute lifetime running out, or an administrator ending it); a finished session never
//! comes back. Its lifetimes are the provider's to check (`provider::core::sessions`), from
//! `created_at` and `last_active_at` ([`BrowserSessionRepository::touch`]). Each time the user proves who they are in it (password, upstream
//! login, ...) an authentication is recorded; the newest one gives an ID token's `auth_time` and
//! decides whether a request's `max_age` asks for a new login.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::sign_in_method::SignInMethod;
use ulid::Ulid;

use super::{
    compare_and_set, for_each_backend,
    types::{decode_text, DbId, Ts},
    StorageError,
};

/// A user's login in one browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSession {
    pub id: Ulid,
    pub user_id: Ulid,
    pub created_at: DateTime<Utc>,
    /// Set once, when the session was ended (logout).
    pub finished_at: Option<DateTime<Utc>>,
    /// The last time the session was used ([`BrowserSessionRepository::touch`]).
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

impl BrowserSession {
    /// Is the session still usable (not finished)?
    pub fn is_active(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// One time the user proved who they are in a browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserAuthentication {
    pub id: Ulid,
    pub browser_session_id: Ulid,
    /// How.
    pub method: SignInMethod,
    /// When: an ID token's `auth_time`.
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait BrowserSessionRepository: Send {
    /// Starts a browser session for a user; [`StorageError::NotFound`] when the user doesn't
    /// exist.
    async fn add(
        &mut self,
        user_id: Ulid,
        user_agent: Option<&str>,
        ip_address: Option<&str>,
    ) -> Result<BrowserSession, StorageError>;

    /// A session by id, active or finished.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<BrowserSession>, StorageError>;

    /// The user's sessions that are not finished, oldest first.
    async fn list_active_for_user(
        &mut self,
        user_id: Ulid,
    ) -> Result<Vec<BrowserSession>, StorageError>;

    /// Ends a session (compare-and-set): `true` when this call ended it, `false` when it was
    /// already finished; [`StorageError::NotFound`] when there is no such session.
    async fn finish(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Ends every active session of a user (account locked, "log out everywhere"); returns how
    /// many were ended.
    async fn finish_all_for_user(&mut self, user_id: Ulid) -> Result<u64, StorageError>;

    /// Ends every active session of a user but `keep` (a password change signs the other
    /// browsers out and keeps the one it was made in); returns how many were ended.
    async fn finish_others_for_user(
        &mut self,
        user_id: Ulid,
        keep: Ulid,
    ) -> Result<u64, StorageError>;

    /// Sets `last_active_at` to now; [`StorageError::NotFound`] when there is no such session.
    async fn touch(&mut self, id: Ulid) -> Result<(), StorageError>;

    /// Records that the user just authenticated in a session with `method`;
    /// [`StorageError::NotFound`] when the session doesn't exist or is finished.
    async fn record_authentication(
        &mut self,
        browser_session_id: Ulid,
        method: SignInMethod,
    ) -> Result<BrowserAuthentication, StorageError>;

    /// The newest authentication of a session (for `auth_time` and `max_age`), if any.
    async fn last_authentication(
        &mut self,
        browser_session_id: Ulid,
    ) -> Result<Option<BrowserAuthentication>, StorageError>;

    /// Up to `limit` sessions, of `user_id` when given, only unfinished (`active: Some(true)`)
    /// or finished (`Some(false)`) ones when asked, in ID (creation) order, after the session
    /// `after` when given (keyset pagination; the admin API's session list).
    async fn list_page(
        &mut self,
        user_id: Option<Ulid>,
        active: Option<bool>,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<BrowserSession>, StorageError>;
}

#[derive(sqlx::FromRow)]
struct BrowserSessionRow {
    id: DbId,
    user_id: DbId,
    created_at: Ts,
    finished_at: Option<Ts>,
    last_active_at: Option<Ts>,
    user_agent: Option<String>,
    ip_address: Option<String>,
}

impl From<BrowserSessionRow> for BrowserSession {
    fn from(r: BrowserSessionRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.0,
            created_at: r.created_at.0,
            finished_at: r.finished_at.map(Into::into),
            last_active_at: r.last_active_at.map(Into::into),
            user_agent: r.user_agent,
            ip_address: r.ip_address,
        }
    }
}

macro_rules! browser_session_columns {
    () => {
        "id, user_id, created_at, finished_at, last_active_at, user_agent, ip_address"
    };
}

#[derive(sqlx::FromRow)]
struct AuthenticationRow {
    id: DbId,
    browser_session_id: DbId,
    method: String,
    created_at: Ts,
}

impl TryFrom<AuthenticationRow> for BrowserAuthentication {
    type Error = StorageError;

    fn try_from(r: AuthenticationRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            browser_session_id: r.browser_session_id.0,
            // Written by `record_authentication` from the typed value: other text is corrupt.
            method: decode_text("method", &r.method)?,
            created_at: r.created_at.0,
        })
    }
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl BrowserSessionRepository for $repo {
            async fn add(
                &mut self,
                user_id: Ulid,
                user_agent: Option<&str>,
                ip_address: Option<&str>,
            ) -> Result<BrowserSession, StorageError> {
                let session = BrowserSession {
                    id: self.new_id(),
                    user_id,
                    created_at: self.now(),
                    finished_at: None,
                    last_active_at: None,
                    user_agent: user_agent.map(str::to_owned),
                    ip_address: ip_address.map(str::to_owned),
                };
                // Inserts nothing (rather than failing on the foreign key, which would abort a
                // PostgreSQL transaction) when the user is missing.
                let done = sqlx::query(
                    "INSERT INTO browser_sessions (id, user_id, created_at, user_agent, ip_address) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
                )
                .bind(DbId(session.id))
                .bind(DbId(user_id))
                .bind(Ts(session.created_at))
                .bind(&session.user_agent)
                .bind(&session.ip_address)
                .execute(self.conn())
                .await?;
                StorageError::found(done, "user")?;
                Ok(session)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<BrowserSession>, StorageError> {
                let row: Option<BrowserSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    browser_session_columns!(),
                    " FROM browser_sessions WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_active_for_user(
                &mut self,
                user_id: Ulid,
            ) -> Result<Vec<BrowserSession>, StorageError> {
                let rows: Vec<BrowserSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    browser_session_columns!(),
                    " FROM browser_sessions WHERE user_id = $1 AND finished_at IS NULL \
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
                    "UPDATE browser_sessions SET finished_at = $2 \
                     WHERE id = $1 AND finished_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "browser_sessions", id, "browser session")
            }

            async fn finish_all_for_user(&mut self, user_id: Ulid) -> Result<u64, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE browser_sessions SET finished_at = $2 \
                     WHERE user_id = $1 AND finished_at IS NULL",
                )
                .bind(DbId(user_id))
                .bind(now)
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }

            async fn finish_others_for_user(
                &mut self,
                user_id: Ulid,
                keep: Ulid,
            ) -> Result<u64, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE browser_sessions SET finished_at = $2 \
                     WHERE user_id = $1 AND finished_at IS NULL AND id <> $3",
                )
                .bind(DbId(user_id))
                .bind(now)
                .bind(DbId(keep))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }

            async fn touch(&mut self, id: Ulid) -> Result<(), StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query("UPDATE browser_sessions SET last_active_at = $2 WHERE id = $1")
                    .bind(DbId(id))
                    .bind(now)
                    .execute(self.conn())
                    .await?;
                StorageError::found(done, "browser session")
            }

            async fn record_authentication(
                &mut self,
                browser_session_id: Ulid,
                method: SignInMethod,
            ) -> Result<BrowserAuthentication, StorageError> {
                let auth = BrowserAuthentication {
                    id: self.new_id(),
                    browser_session_id,
                    method,
                    created_at: self.now(),
                };
                let done = sqlx::query(
                    "INSERT INTO browser_session_authentications \
                     (id, browser_session_id, method, created_at) \
                     SELECT $1, $2, $3, $4 WHERE EXISTS \
                     (SELECT 1 FROM browser_sessions WHERE id = $2 AND finished_at IS NULL)",
                )
                .bind(DbId(auth.id))
                .bind(DbId(browser_session_id))
                .bind(auth.method.to_string())
                .bind(Ts(auth.created_at))
                .execute(self.conn())
                .await?;
                StorageError::found(done, "browser session")?;
                Ok(auth)
            }

            async fn last_authentication(
                &mut self,
                browser_session_id: Ulid,
            ) -> Result<Option<BrowserAuthentication>, StorageError> {
                let row: Option<AuthenticationRow> = sqlx::query_as(
                    "SELECT id, browser_session_id, method, created_at \
                     FROM browser_session_authentications WHERE browser_session_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind(DbId(browser_session_id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_page(
                &mut self,
                user_id: Option<Ulid>,
                active: Option<bool>,
                after: Option<Ulid>,
                limit: u32,
            ) -> Result<Vec<BrowserSession>, StorageError> {
                let rows: Vec<BrowserSessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    browser_session_columns!(),
                    " FROM browser_sessions WHERE ($1 IS NULL OR id > $1) \
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
    };
}

for_each_backend!(implementation);
