//! Upstream OpenID Connect providers ("log in with …"): the providers, the links between an
//! upstream identity and a local account, and the authorization sessions of a login in progress.
//!
//! - A **provider** is enabled until [`UpstreamProviderRepository::disable`]d. Providers defined in
//!   the config carry their own ULID and are written with [`UpstreamProviderRepository::upsert`]
//!   (which also re-enables them); the rest of the configuration (discovery, PKCE, endpoints,
//!   claim imports) lives in the free-form `settings` JSON object.
//! - A **link** ties a provider's `sub` to a local user. It is created unassociated (`user_id`
//!   `None`) the first time an identity comes back, and associated once, when the user registers
//!   or logs in to link it ([`UpstreamLinkRepository::associate`]).
//! - An **authorization session** is one round trip to the provider: created with the hash of the
//!   `state` sent along, *completed* when the callback brought back an ID token (records the link
//!   and the claims), *consumed* once the login it served is done (single use).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::protocol::ClientAuthMethod;
use sqlx::types::Json;
use ulid::Ulid;

use super::{
    compare_and_set, for_each_backend, inserted_under,
    types::{decode_text, decode_token_hash, DbId, Ts},
    StorageError, TokenHash,
};

/// An upstream OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProvider {
    pub id: Ulid,
    pub issuer: Option<String>,
    pub human_name: Option<String>,
    /// `google`, `github`, ... for a recognisable button.
    pub brand_name: Option<String>,
    pub client_id: String,
    /// Encrypted with the configured encryption key; `None` for `none` and `private_key_jwt`.
    pub encrypted_client_secret: Option<String>,
    /// How we authenticate at its token endpoint (OIDC Core §9).
    pub token_endpoint_auth_method: ClientAuthMethod,
    /// Space-separated scope to request.
    pub scope: String,
    /// Discovery mode, PKCE mode, explicit endpoints, claim imports...: a JSON object.
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl UpstreamProvider {
    pub fn is_enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// What [`UpstreamProviderRepository::add`] and [`UpstreamProviderRepository::upsert`] write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProviderParams {
    pub issuer: Option<String>,
    pub human_name: Option<String>,
    pub brand_name: Option<String>,
    pub client_id: String,
    pub encrypted_client_secret: Option<String>,
    /// How we authenticate at its token endpoint (OIDC Core §9).
    pub token_endpoint_auth_method: ClientAuthMethod,
    pub scope: String,
    pub settings: serde_json::Value,
}

/// An upstream identity (provider and subject), maybe linked to a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLink {
    pub id: Ulid,
    pub provider_id: Ulid,
    /// `None` until the identity is linked to a local account.
    pub user_id: Option<Ulid>,
    /// The upstream `sub`.
    pub subject: String,
    /// A name to show for the upstream account (e.g. its email or username there).
    pub human_account_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One authorization round trip to an upstream provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAuthorizationSession {
    pub id: Ulid,
    pub provider_id: Ulid,
    /// SHA-256 of the `state` parameter sent to the provider.
    pub state_hash: TokenHash,
    /// The PKCE verifier, when PKCE is used.
    pub code_verifier: Option<String>,
    pub nonce: Option<String>,
    /// Set on completion: the link of the identity that came back.
    pub link_id: Option<Ulid>,
    pub id_token: Option<String>,
    /// Claims received (ID token and userinfo), as a JSON object; set on completion.
    pub claims: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub consumed_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait UpstreamProviderRepository: Send {
    /// Adds a provider with a new id.
    async fn add(
        &mut self,
        params: UpstreamProviderParams,
    ) -> Result<UpstreamProvider, StorageError>;

    /// A provider by id, enabled or disabled.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<UpstreamProvider>, StorageError>;

    /// The enabled providers, oldest first (then by id).
    async fn list_enabled(&mut self) -> Result<Vec<UpstreamProvider>, StorageError>;

    /// Creates or replaces the provider with this id (config-defined providers carry their own
    /// ULID). Replacing keeps `created_at` and re-enables the provider.
    async fn upsert(
        &mut self,
        id: Ulid,
        params: UpstreamProviderParams,
    ) -> Result<UpstreamProvider, StorageError>;

    /// Disables a provider (compare-and-set): `true` when this call disabled it, `false` when it
    /// was already disabled; [`StorageError::NotFound`] when there is no such provider.
    async fn disable(&mut self, id: Ulid) -> Result<bool, StorageError>;
}

#[async_trait]
pub trait UpstreamLinkRepository: Send {
    /// Records an upstream identity, not linked to any user yet. [`StorageError::Conflict`]
    /// when the provider already has a link for this subject; [`StorageError::NotFound`] when
    /// the provider doesn't exist.
    async fn add(
        &mut self,
        provider_id: Ulid,
        subject: &str,
        human_account_name: Option<&str>,
    ) -> Result<UpstreamLink, StorageError>;

    /// A link by id.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<UpstreamLink>, StorageError>;

    /// The link of a provider's subject, if any.
    async fn find_by_subject(
        &mut self,
        provider_id: Ulid,
        subject: &str,
    ) -> Result<Option<UpstreamLink>, StorageError>;

    /// The links associated with a user, oldest first.
    async fn list_for_user(&mut self, user_id: Ulid) -> Result<Vec<UpstreamLink>, StorageError>;

    /// Links an identity to a user (compare-and-set, only while it is linked to nobody): `true`
    /// when this call linked it, `false` when it was already linked (to anyone);
    /// [`StorageError::NotFound`] when the link or the user doesn't exist.
    async fn associate(&mut self, id: Ulid, user_id: Ulid) -> Result<bool, StorageError>;

    /// Deletes a link; `false` when there was none. Authorization sessions that pointed at it
    /// keep their claims and lose the link.
    async fn remove(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Up to `limit` links, of `user_id` and of `provider_id` when given, in ID (creation)
    /// order, after the link `after` when given (keyset pagination; the admin API's list).
    async fn list_page(
        &mut self,
        user_id: Option<Ulid>,
        provider_id: Option<Ulid>,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<UpstreamLink>, StorageError>;
}

#[async_trait]
pub trait UpstreamSessionRepository: Send {
    /// Starts an authorization round trip to a provider. [`StorageError::Conflict`] when the
    /// state hash is taken; [`StorageError::NotFound`] when the provider doesn't exist.
    async fn add(
        &mut self,
        provider_id: Ulid,
        state_hash: &TokenHash,
        code_verifier: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<UpstreamAuthorizationSession, StorageError>;

    /// A session by id, whatever its state.
    async fn lookup(
        &mut self,
        id: Ulid,
    ) -> Result<Option<UpstreamAuthorizationSession>, StorageError>;

    /// A session by the hash of its `state`, whatever its state (the callback's lookup; the
    /// caller decides how old a session may be from `created_at`).
    async fn find_by_state_hash(
        &mut self,
        state_hash: &TokenHash,
    ) -> Result<Option<UpstreamAuthorizationSession>, StorageError>;

    /// Records what the callback brought back (compare-and-set, once: sets `link_id`,
    /// `id_token`, `claims` and `completed_at`). `true` when this call completed it, `false`
    /// when it was already completed; [`StorageError::NotFound`] when the session or the link
    /// doesn't exist.
    async fn complete(
        &mut self,
        id: Ulid,
        link_id: Ulid,
        id_token: Option<&str>,
        claims: &serde_json::Value,
    ) -> Result<bool, StorageError>;

    /// Marks a completed session used (compare-and-set, single use): `true` when this call
    /// consumed it, `false` when it is not completed or already consumed;
    /// [`StorageError::NotFound`] when there is no such session.
    async fn consume(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Deletes the upstream authorization sessions started before `before`, consumed or
    /// abandoned (their login is over either way; the link a consumed one made stays).
    /// Deletes at most `limit` rows and returns how many (housekeeping, see
    /// `provider::core::housekeeping`).
    async fn delete_expired(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;
}

#[derive(sqlx::FromRow)]
struct ProviderRow {
    id: DbId,
    issuer: Option<String>,
    human_name: Option<String>,
    brand_name: Option<String>,
    client_id: String,
    encrypted_client_secret: Option<String>,
    token_endpoint_auth_method: String,
    scope: String,
    settings: Json<serde_json::Value>,
    created_at: Ts,
    disabled_at: Option<Ts>,
}

impl TryFrom<ProviderRow> for UpstreamProvider {
    type Error = StorageError;

    fn try_from(r: ProviderRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            issuer: r.issuer,
            human_name: r.human_name,
            brand_name: r.brand_name,
            client_id: r.client_id,
            encrypted_client_secret: r.encrypted_client_secret,
            token_endpoint_auth_method: decode_text(
                "token_endpoint_auth_method",
                &r.token_endpoint_auth_method,
            )?,
            scope: r.scope,
            settings: r.settings.0,
            created_at: r.created_at.0,
            disabled_at: r.disabled_at.map(Into::into),
        })
    }
}

macro_rules! provider_columns {
    () => {
        "id, issuer, human_name, brand_name, client_id, encrypted_client_secret, \
         token_endpoint_auth_method, scope, settings, created_at, disabled_at"
    };
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    id: DbId,
    provider_id: DbId,
    user_id: Option<DbId>,
    subject: String,
    human_account_name: Option<String>,
    created_at: Ts,
}

impl From<LinkRow> for UpstreamLink {
    fn from(r: LinkRow) -> Self {
        Self {
            id: r.id.0,
            provider_id: r.provider_id.0,
            user_id: r.user_id.map(Into::into),
            subject: r.subject,
            human_account_name: r.human_account_name,
            created_at: r.created_at.0,
        }
    }
}

macro_rules! link_columns {
    () => {
        "id, provider_id, user_id, subject, human_account_name, created_at"
    };
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: DbId,
    provider_id: DbId,
    state_hash: Vec<u8>,
    code_verifier: Option<String>,
    nonce: Option<String>,
    link_id: Option<DbId>,
    id_token: Option<String>,
    claims: Option<Json<serde_json::Value>>,
    created_at: Ts,
    completed_at: Option<Ts>,
    consumed_at: Option<Ts>,
}

impl TryFrom<SessionRow> for UpstreamAuthorizationSession {
    type Error = StorageError;

    fn try_from(r: SessionRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            provider_id: r.provider_id.0,
            state_hash: decode_token_hash(r.state_hash)?,
            code_verifier: r.code_verifier,
            nonce: r.nonce,
            link_id: r.link_id.map(Into::into),
            id_token: r.id_token,
            claims: r.claims.map(|c| c.0),
            created_at: r.created_at.0,
            completed_at: r.completed_at.map(Into::into),
            consumed_at: r.consumed_at.map(Into::into),
        })
    }
}

macro_rules! session_columns {
    () => {
        "id, provider_id, state_hash, code_verifier, nonce, link_id, id_token, claims, \
         created_at, completed_at, consumed_at"
    };
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl UpstreamProviderRepository for $repo {
            async fn add(
                &mut self,
                params: UpstreamProviderParams,
            ) -> Result<UpstreamProvider, StorageError> {
                let id = self.new_id();
                UpstreamProviderRepository::upsert(self, id, params).await
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<UpstreamProvider>, StorageError> {
                let row: Option<ProviderRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    provider_columns!(),
                    " FROM upstream_oauth_providers WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_enabled(&mut self) -> Result<Vec<UpstreamProvider>, StorageError> {
                let rows: Vec<ProviderRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    provider_columns!(),
                    " FROM upstream_oauth_providers WHERE disabled_at IS NULL \
                      ORDER BY created_at, id"
                ))
                .fetch_all(self.conn())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn upsert(
                &mut self,
                id: Ulid,
                params: UpstreamProviderParams,
            ) -> Result<UpstreamProvider, StorageError> {
                let now = Ts(self.now());
                let row: ProviderRow = sqlx::query_as(concat!(
                    "INSERT INTO upstream_oauth_providers (id, issuer, human_name, brand_name, \
                       client_id, encrypted_client_secret, token_endpoint_auth_method, scope, \
                       settings, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (id) DO UPDATE SET issuer = excluded.issuer, \
                       human_name = excluded.human_name, brand_name = excluded.brand_name, \
                       client_id = excluded.client_id, \
                       encrypted_client_secret = excluded.encrypted_client_secret, \
                       token_endpoint_auth_method = excluded.token_endpoint_auth_method, \
                       scope = excluded.scope, settings = excluded.settings, \
                       disabled_at = NULL \
                     RETURNING ",
                    provider_columns!()
                ))
                .bind(DbId(id))
                .bind(&params.issuer)
                .bind(&params.human_name)
                .bind(&params.brand_name)
                .bind(&params.client_id)
                .bind(&params.encrypted_client_secret)
                .bind(params.token_endpoint_auth_method.as_str())
                .bind(&params.scope)
                .bind(Json(&params.settings))
                .bind(now)
                .fetch_one(self.conn())
                .await?;
                row.try_into()
            }

            async fn disable(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE upstream_oauth_providers SET disabled_at = $2 \
                     WHERE id = $1 AND disabled_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(self, done, "upstream_oauth_providers", id, "upstream provider")
            }
        }

        #[async_trait]
        impl UpstreamLinkRepository for $repo {
            async fn add(
                &mut self,
                provider_id: Ulid,
                subject: &str,
                human_account_name: Option<&str>,
            ) -> Result<UpstreamLink, StorageError> {
                let link = UpstreamLink {
                    id: self.new_id(),
                    provider_id,
                    user_id: None,
                    subject: subject.to_owned(),
                    human_account_name: human_account_name.map(str::to_owned),
                    created_at: self.now(),
                };
                let done = sqlx::query(
                    "INSERT INTO upstream_oauth_links \
                     (id, provider_id, subject, human_account_name, created_at) \
                     SELECT $1, $2, $3, $4, $5 \
                     WHERE EXISTS (SELECT 1 FROM upstream_oauth_providers WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(link.id))
                .bind(DbId(provider_id))
                .bind(&link.subject)
                .bind(&link.human_account_name)
                .bind(Ts(link.created_at))
                .execute(self.conn())
                .await?;
                inserted_under!(
                    self,
                    done,
                    "upstream link",
                    requires "upstream_oauth_providers",
                    provider_id,
                    "upstream provider"
                )?;
                Ok(link)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<UpstreamLink>, StorageError> {
                let row: Option<LinkRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    link_columns!(),
                    " FROM upstream_oauth_links WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn find_by_subject(
                &mut self,
                provider_id: Ulid,
                subject: &str,
            ) -> Result<Option<UpstreamLink>, StorageError> {
                let row: Option<LinkRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    link_columns!(),
                    " FROM upstream_oauth_links WHERE provider_id = $1 AND subject = $2"
                ))
                .bind(DbId(provider_id))
                .bind(subject)
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_for_user(
                &mut self,
                user_id: Ulid,
            ) -> Result<Vec<UpstreamLink>, StorageError> {
                let rows: Vec<LinkRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    link_columns!(),
                    " FROM upstream_oauth_links WHERE user_id = $1 ORDER BY created_at, id"
                ))
                .bind(DbId(user_id))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn associate(&mut self, id: Ulid, user_id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query(
                    "UPDATE upstream_oauth_links SET user_id = $2 \
                     WHERE id = $1 AND user_id IS NULL \
                     AND EXISTS (SELECT 1 FROM users WHERE id = $2)",
                )
                .bind(DbId(id))
                .bind(DbId(user_id))
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "upstream_oauth_links",
                    id,
                    "upstream link",
                    requires "users",
                    user_id,
                    "user"
                )
            }

            async fn remove(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query("DELETE FROM upstream_oauth_links WHERE id = $1")
                    .bind(DbId(id))
                    .execute(self.conn())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_page(
                &mut self,
                user_id: Option<Ulid>,
                provider_id: Option<Ulid>,
                after: Option<Ulid>,
                limit: u32,
            ) -> Result<Vec<UpstreamLink>, StorageError> {
                let rows: Vec<LinkRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    link_columns!(),
                    " FROM upstream_oauth_links WHERE ($1 IS NULL OR id > $1) \
                      AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR provider_id = $3) \
                      ORDER BY id LIMIT $4"
                ))
                .bind(after.map(DbId))
                .bind(user_id.map(DbId))
                .bind(provider_id.map(DbId))
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }

        #[async_trait]
        impl UpstreamSessionRepository for $repo {
            async fn add(
                &mut self,
                provider_id: Ulid,
                state_hash: &TokenHash,
                code_verifier: Option<&str>,
                nonce: Option<&str>,
            ) -> Result<UpstreamAuthorizationSession, StorageError> {
                let session = UpstreamAuthorizationSession {
                    id: self.new_id(),
                    provider_id,
                    state_hash: *state_hash,
                    code_verifier: code_verifier.map(str::to_owned),
                    nonce: nonce.map(str::to_owned),
                    link_id: None,
                    id_token: None,
                    claims: None,
                    created_at: self.now(),
                    completed_at: None,
                    consumed_at: None,
                };
                let done = sqlx::query(
                    "INSERT INTO upstream_oauth_authorization_sessions \
                     (id, provider_id, state_hash, code_verifier, nonce, created_at) \
                     SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE EXISTS (SELECT 1 FROM upstream_oauth_providers WHERE id = $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbId(session.id))
                .bind(DbId(provider_id))
                .bind(&state_hash[..])
                .bind(&session.code_verifier)
                .bind(&session.nonce)
                .bind(Ts(session.created_at))
                .execute(self.conn())
                .await?;
                inserted_under!(
                    self,
                    done,
                    "upstream authorization session",
                    requires "upstream_oauth_providers",
                    provider_id,
                    "upstream provider"
                )?;
                Ok(session)
            }

            async fn lookup(
                &mut self,
                id: Ulid,
            ) -> Result<Option<UpstreamAuthorizationSession>, StorageError> {
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM upstream_oauth_authorization_sessions WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_state_hash(
                &mut self,
                state_hash: &TokenHash,
            ) -> Result<Option<UpstreamAuthorizationSession>, StorageError> {
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM upstream_oauth_authorization_sessions WHERE state_hash = $1"
                ))
                .bind(&state_hash[..])
                .fetch_optional(self.conn())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn complete(
                &mut self,
                id: Ulid,
                link_id: Ulid,
                id_token: Option<&str>,
                claims: &serde_json::Value,
            ) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE upstream_oauth_authorization_sessions \
                     SET link_id = $2, id_token = $3, claims = $4, completed_at = $5 \
                     WHERE id = $1 AND completed_at IS NULL \
                     AND EXISTS (SELECT 1 FROM upstream_oauth_links WHERE id = $2)",
                )
                .bind(DbId(id))
                .bind(DbId(link_id))
                .bind(id_token)
                .bind(Json(claims))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "upstream_oauth_authorization_sessions",
                    id,
                    "upstream authorization session",
                    requires "upstream_oauth_links",
                    link_id,
                    "upstream link"
                )
            }

            async fn consume(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let now = Ts(self.now());
                let done = sqlx::query(
                    "UPDATE upstream_oauth_authorization_sessions SET consumed_at = $2 \
                     WHERE id = $1 AND completed_at IS NOT NULL AND consumed_at IS NULL",
                )
                .bind(DbId(id))
                .bind(now)
                .execute(self.conn())
                .await?;
                compare_and_set!(
                    self,
                    done,
                    "upstream_oauth_authorization_sessions",
                    id,
                    "upstream authorization session"
                )
            }

            async fn delete_expired(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                // A bounded batch: PostgreSQL has no `DELETE … LIMIT`, so the rows are picked
                // by a limited sub-select. A login through an upstream provider lasts minutes:
                // a session started before `before` is done with, whether it was consumed or
                // abandoned halfway (the browser closed at the upstream's page).
                let done = sqlx::query(
                    "DELETE FROM upstream_oauth_authorization_sessions WHERE created_at < $1 AND id IN (\
                       SELECT id FROM upstream_oauth_authorization_sessions WHERE created_at < $1 LIMIT $2)",
                )
                .bind(Ts(before))
                .bind(i64::from(limit))
                .execute(self.conn())
                .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

for_each_backend!(implementation);
