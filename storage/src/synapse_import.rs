//! The import of a Synapse homeserver's accounts (`provider syn2mas migrate`): bulk inserts that
//! keep what Synapse had, each keyed by its natural key so that a second run, or a run again
//! after an interruption, inserts nothing twice.
//!
//! - an **account** by its username (the Synapse localpart), with its bcrypt hash as a password
//!   of the caller's scheme version, the admin flag as `can_request_admin`, its lock and
//!   deactivation and its creation time;
//! - a confirmed **e-mail address** by (user, address);
//! - an **upstream link** by (upstream provider, subject);
//! - a **compat session** by (user, device ID), whatever its state, with its access and refresh
//!   tokens by their hashes ([`TokenHash`]: Synapse's token values are never stored).
//!
//! Rows are looked up by username inside each statement (`INSERT … SELECT … FROM users WHERE
//! username = …`), so a batch needs no prior read. The caller groups rows in batches, one
//! transaction each ([`crate::Storage::begin`]).
//!
//! An import is recorded in `synapse_imports` ([`SynapseImport`]): started before the first
//! batch, finished after the last.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    for_each_backend,
    types::{DbId, Ts},
    StorageError, TokenHash,
};

/// One import of a Synapse database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseImport {
    pub id: Ulid,
    /// Synapse's `server_name`.
    pub server_name: String,
    pub started_at: DateTime<Utc>,
    /// `None` while it is under way (or was interrupted).
    pub finished_at: Option<DateTime<Utc>>,
}

/// An account as Synapse had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUser {
    /// The localpart of the Synapse user ID.
    pub username: String,
    pub created_at: DateTime<Utc>,
    /// Synapse's `admin`: may be granted `urn:synapse:admin:*`.
    pub can_request_admin: bool,
    pub locked_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// `(scheme version, hash)`: Synapse's bcrypt hash, kept as it is.
    pub password: Option<(i32, String)>,
}

/// One of a session's imported access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedAccessToken {
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One of a session's imported refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRefreshToken {
    pub token_hash: TokenHash,
    /// The access token issued with it, when it is among the session's.
    pub access_token_hash: Option<TokenHash>,
    pub created_at: DateTime<Utc>,
}

/// A Synapse device and its tokens, as a compat session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCompatSession {
    pub username: String,
    pub device_id: String,
    pub human_name: Option<String>,
    pub is_synapse_admin: bool,
    pub created_at: DateTime<Utc>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub user_agent: Option<String>,
    pub access_tokens: Vec<ImportedAccessToken>,
    pub refresh_tokens: Vec<ImportedRefreshToken>,
}

/// What one import statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The row is new.
    Inserted,
    /// A row with the same natural key was there already (a previous run): nothing changed.
    AlreadyThere,
    /// The account it belongs to is not in the database (not imported): nothing changed.
    NoUser,
}

/// The import's repository.
#[async_trait]
pub trait SynapseImportRepository: Send {
    /// The latest import, finished or not.
    async fn last(&mut self) -> Result<Option<SynapseImport>, StorageError>;
    /// Records the start of an import.
    async fn start(&mut self, server_name: &str) -> Result<SynapseImport, StorageError>;
    /// Records its end.
    async fn finish(&mut self, id: Ulid) -> Result<(), StorageError>;

    /// An account and its password, unless the username is taken.
    async fn import_user(&mut self, user: &ImportedUser) -> Result<Imported, StorageError>;
    /// A confirmed e-mail address of the user `username`.
    async fn import_email(
        &mut self,
        username: &str,
        email: &str,
        added_at: DateTime<Utc>,
    ) -> Result<Imported, StorageError>;
    /// A link of the user `username` to `subject` at an upstream provider (which must exist).
    async fn import_upstream_link(
        &mut self,
        username: &str,
        provider_id: Ulid,
        subject: &str,
    ) -> Result<Imported, StorageError>;
    /// A compat session and its tokens, unless the user already has a session with this device
    /// (then nothing is written, tokens included).
    async fn import_compat_session(
        &mut self,
        session: &ImportedCompatSession,
    ) -> Result<Imported, StorageError>;
}

#[derive(sqlx::FromRow)]
struct ImportRow {
    id: DbId,
    server_name: String,
    started_at: Ts,
    finished_at: Option<Ts>,
}

impl From<ImportRow> for SynapseImport {
    fn from(r: ImportRow) -> Self {
        Self {
            id: r.id.0,
            server_name: r.server_name,
            started_at: r.started_at.0,
            finished_at: r.finished_at.map(Into::into),
        }
    }
}

macro_rules! implementation {
    ($repo:ty) => {
        impl $repo {
            /// After an `INSERT … SELECT … FROM users WHERE username = $n` changed nothing: was
            /// the row there already, or is the user missing?
            async fn already_or_no_user(
                &mut self,
                username: &str,
            ) -> Result<Imported, StorageError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_one(self.conn())
                    .await?;
                Ok(if n > 0 {
                    Imported::AlreadyThere
                } else {
                    Imported::NoUser
                })
            }
        }

        #[async_trait]
        impl SynapseImportRepository for $repo {
            async fn last(&mut self) -> Result<Option<SynapseImport>, StorageError> {
                let row: Option<ImportRow> = sqlx::query_as(
                    "SELECT id, server_name, started_at, finished_at FROM synapse_imports \
                     ORDER BY started_at DESC, id DESC LIMIT 1",
                )
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn start(&mut self, server_name: &str) -> Result<SynapseImport, StorageError> {
                let import = SynapseImport {
                    id: self.new_id(),
                    server_name: server_name.to_owned(),
                    started_at: self.now(),
                    finished_at: None,
                };
                sqlx::query(
                    "INSERT INTO synapse_imports (id, server_name, started_at) VALUES ($1, $2, $3)",
                )
                .bind(DbId(import.id))
                .bind(&import.server_name)
                .bind(Ts(import.started_at))
                .execute(self.conn())
                .await?;
                Ok(import)
            }

            async fn finish(&mut self, id: Ulid) -> Result<(), StorageError> {
                let now = self.now();
                let done = sqlx::query("UPDATE synapse_imports SET finished_at = $2 WHERE id = $1")
                    .bind(DbId(id))
                    .bind(Ts(now))
                    .execute(self.conn())
                    .await?;
                StorageError::found(done, "Synapse import")
            }

            async fn import_user(&mut self, user: &ImportedUser) -> Result<Imported, StorageError> {
                let id = self.new_id();
                let done = sqlx::query(
                    "INSERT INTO users \
                     (id, username, created_at, locked_at, deactivated_at, can_request_admin) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(id))
                .bind(&user.username)
                .bind(Ts(user.created_at))
                .bind(user.locked_at.map(Ts))
                .bind(user.deactivated_at.map(Ts))
                .bind(user.can_request_admin)
                .execute(self.conn())
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(Imported::AlreadyThere);
                }
                if let Some((version, hash)) = &user.password {
                    let password_id = self.new_id();
                    sqlx::query(
                        "INSERT INTO user_passwords \
                         (id, user_id, hashed_password, version, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(DbId(password_id))
                    .bind(DbId(id))
                    .bind(hash)
                    .bind(*version)
                    .bind(Ts(user.created_at))
                    .execute(self.conn())
                    .await?;
                }
                Ok(Imported::Inserted)
            }

            async fn import_email(
                &mut self,
                username: &str,
                email: &str,
                added_at: DateTime<Utc>,
            ) -> Result<Imported, StorageError> {
                let id = self.new_id();
                let done = sqlx::query(
                    "INSERT INTO user_emails (id, user_id, email, created_at, confirmed_at) \
                     SELECT $1, id, $3, $4, $4 FROM users WHERE username = $2 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(id))
                .bind(username)
                .bind(email)
                .bind(Ts(added_at))
                .execute(self.conn())
                .await?;
                if done.rows_affected() > 0 {
                    return Ok(Imported::Inserted);
                }
                self.already_or_no_user(username).await
            }

            async fn import_upstream_link(
                &mut self,
                username: &str,
                provider_id: Ulid,
                subject: &str,
            ) -> Result<Imported, StorageError> {
                let id = self.new_id();
                let now = self.now();
                let done = sqlx::query(
                    "INSERT INTO upstream_oauth_links \
                     (id, provider_id, user_id, subject, created_at) \
                     SELECT $1, $2, id, $4, $5 FROM users WHERE username = $3 \
                     AND EXISTS (SELECT 1 FROM upstream_oauth_providers WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(id))
                .bind(DbId(provider_id))
                .bind(username)
                .bind(subject)
                .bind(Ts(now))
                .execute(self.conn())
                .await?;
                if done.rows_affected() > 0 {
                    return Ok(Imported::Inserted);
                }
                if !crate::row_exists!(self, "upstream_oauth_providers", provider_id) {
                    return Err(StorageError::NotFound("upstream provider"));
                }
                self.already_or_no_user(username).await
            }

            async fn import_compat_session(
                &mut self,
                s: &ImportedCompatSession,
            ) -> Result<Imported, StorageError> {
                let session_id = self.new_id();
                // Any session of this device, finished or not, counts as imported already: a
                // device logged out since the import must not come back.
                let done = sqlx::query(
                    "INSERT INTO compat_sessions \
                     (id, user_id, device_id, human_name, is_synapse_admin, created_at, \
                      last_active_at, user_agent) \
                     SELECT $1, u.id, $3, $4, $5, $6, $7, $8 FROM users u WHERE u.username = $2 \
                     AND NOT EXISTS (SELECT 1 FROM compat_sessions c \
                       WHERE c.user_id = u.id AND c.device_id = $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(session_id))
                .bind(&s.username)
                .bind(&s.device_id)
                .bind(&s.human_name)
                .bind(s.is_synapse_admin)
                .bind(Ts(s.created_at))
                .bind(s.last_active_at.map(Ts))
                .bind(&s.user_agent)
                .execute(self.conn())
                .await?;
                if done.rows_affected() == 0 {
                    return self.already_or_no_user(&s.username).await;
                }
                let mut access_ids: Vec<(TokenHash, Ulid)> = Vec::new();
                for token in &s.access_tokens {
                    let id = self.new_id();
                    // A token hash is unique: one Synapse token can't belong to two devices.
                    let done = sqlx::query(
                        "INSERT INTO compat_access_tokens \
                         (id, session_id, token_hash, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(DbId(id))
                    .bind(DbId(session_id))
                    .bind(&token.token_hash[..])
                    .bind(Ts(token.created_at))
                    .bind(token.expires_at.map(Ts))
                    .execute(self.conn())
                    .await?;
                    if done.rows_affected() > 0 {
                        access_ids.push((token.token_hash, id));
                    }
                }
                for token in &s.refresh_tokens {
                    let id = self.new_id();
                    let access_token_id = token.access_token_hash.and_then(|hash| {
                        access_ids
                            .iter()
                            .find(|(h, _)| *h == hash)
                            .map(|(_, id)| DbId(*id))
                    });
                    sqlx::query(
                        "INSERT INTO compat_refresh_tokens \
                         (id, session_id, token_hash, access_token_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(DbId(id))
                    .bind(DbId(session_id))
                    .bind(&token.token_hash[..])
                    .bind(access_token_id)
                    .bind(Ts(token.created_at))
                    .execute(self.conn())
                    .await?;
                }
                Ok(Imported::Inserted)
            }
        }
    };
}

for_each_backend!(implementation);
