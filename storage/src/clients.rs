//! OAuth 2.0 clients: static ones written from the config by `config sync`, dynamic ones from
//! registration (RFC 7591, MSC2966).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::protocol::ClientAuthMethod;
use ulid::Ulid;

use super::{
    delete_batch, for_each_backend, row_exists,
    types::{decode_text, DbId, Ts},
    StorageError,
};

/// A registered OAuth 2.0 client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// The internal ID, what other tables refer to.
    pub id: Ulid,
    /// The public `client_id` (RFC 6749 §2.2).
    pub client_id: String,
    /// Written by `config sync`: the config owns it.
    pub is_static: bool,
    /// The client secret encrypted with the configured key (never hashed: `client_secret_jwt`
    /// needs the plain value); `None` for public and `private_key_jwt` clients.
    pub encrypted_client_secret: Option<String>,
    /// How the client authenticates (RFC 7591 §2), stored as its wire value; read back through
    /// the enum's table, so an unknown stored value is [`StorageError::Invalid`].
    pub token_endpoint_auth_method: ClientAuthMethod,
    /// The registered client metadata (RFC 7591 §2), a JSON object.
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`ClientRepository::upsert_static`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// There was no client with that `client_id`: it was created.
    Created,
    /// The client existed with other values: they were replaced.
    Updated,
    /// The client existed with exactly these values: nothing was written.
    Unchanged,
}

#[async_trait]
pub trait ClientRepository: Send {
    /// Registers a client; [`StorageError::Conflict`] when the `client_id` is taken.
    async fn add(
        &mut self,
        client_id: &str,
        is_static: bool,
        encrypted_client_secret: Option<&str>,
        token_endpoint_auth_method: ClientAuthMethod,
        metadata: &serde_json::Value,
    ) -> Result<Client, StorageError>;

    /// The client with this internal ID.
    async fn lookup(&mut self, id: Ulid) -> Result<Option<Client>, StorageError>;

    /// The client with this public `client_id` (what requests carry).
    async fn find_by_client_id(&mut self, client_id: &str) -> Result<Option<Client>, StorageError>;

    /// Every static client, by `client_id`.
    async fn list_static(&mut self) -> Result<Vec<Client>, StorageError>;

    /// Makes the static client `client_id` hold these values (what `config sync` does for each
    /// configured client): creates it, replaces its secret, method and metadata (bumping
    /// `updated_at`), or leaves it alone when they are already equal (metadata is compared as
    /// JSON, not as text). [`StorageError::Conflict`] when a dynamic client holds the `client_id`:
    /// the config does not take over registered clients.
    ///
    /// An encrypted secret usually differs at each encryption (random nonce): pass the stored
    /// ciphertext when the plain secret did not change, or every sync reports an update.
    async fn upsert_static(
        &mut self,
        client_id: &str,
        encrypted_client_secret: Option<&str>,
        token_endpoint_auth_method: ClientAuthMethod,
        metadata: &serde_json::Value,
    ) -> Result<(Client, Upserted), StorageError>;

    /// Deletes a client, and with it (cascade) its sessions, tokens, grants and consents.
    /// `false` when there was none.
    async fn delete(&mut self, id: Ulid) -> Result<bool, StorageError>;

    /// Deletes the dynamically registered clients created before `before` that never got a
    /// session (no sign-in, no token ever issued to them) and have no authorization grant or
    /// device code left: a user may be signing in with the client right now, and the
    /// housekeeping deletes abandoned grants and expired device codes on its own, after which
    /// the client goes too. Static clients are never deleted here. At most `limit` rows;
    /// returns how many (housekeeping, see `provider::core::housekeeping`).
    async fn delete_unused_dynamic(
        &mut self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StorageError>;

    /// Up to `limit` clients, static and dynamic, in ID (creation) order, after the client
    /// `after` when given (keyset pagination).
    async fn list_page(
        &mut self,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<Client>, StorageError>;

    /// Replaces the secret, method and metadata of a dynamic client (bumping `updated_at`).
    /// [`StorageError::NotFound`] when there is no such client, [`StorageError::Conflict`] when
    /// it is static (the config owns those: `config sync` would undo the change).
    async fn update_dynamic(
        &mut self,
        id: Ulid,
        encrypted_client_secret: Option<&str>,
        token_endpoint_auth_method: ClientAuthMethod,
        metadata: &serde_json::Value,
    ) -> Result<Client, StorageError>;
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClientRow {
    id: DbId,
    client_id: String,
    is_static: bool,
    encrypted_client_secret: Option<String>,
    token_endpoint_auth_method: String,
    metadata: sqlx::types::Json<serde_json::Value>,
    created_at: Ts,
    updated_at: Ts,
}

impl TryFrom<ClientRow> for Client {
    type Error = StorageError;

    fn try_from(r: ClientRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.id.0,
            client_id: r.client_id,
            is_static: r.is_static,
            encrypted_client_secret: r.encrypted_client_secret,
            token_endpoint_auth_method: decode_text(
                "oauth2_clients.token_endpoint_auth_method",
                &r.token_endpoint_auth_method,
            )?,
            metadata: r.metadata.0,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

/// Rows read back into clients; the first row that doesn't decode fails them all.
fn clients(rows: Vec<ClientRow>) -> Result<Vec<Client>, StorageError> {
    rows.into_iter().map(Client::try_from).collect()
}

macro_rules! client_columns {
    () => {
        "id, client_id, is_static, encrypted_client_secret, token_endpoint_auth_method, \
         metadata, created_at, updated_at"
    };
}
pub(crate) use client_columns;

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl ClientRepository for $repo {
            async fn add(
                &mut self,
                client_id: &str,
                is_static: bool,
                encrypted_client_secret: Option<&str>,
                token_endpoint_auth_method: ClientAuthMethod,
                metadata: &serde_json::Value,
            ) -> Result<Client, StorageError> {
                let now = self.now();
                let client = Client {
                    id: self.new_id(),
                    client_id: client_id.to_owned(),
                    is_static,
                    encrypted_client_secret: encrypted_client_secret.map(str::to_owned),
                    token_endpoint_auth_method,
                    metadata: metadata.clone(),
                    created_at: now,
                    updated_at: now,
                };
                let done = sqlx::query(concat!(
                    "INSERT INTO oauth2_clients (",
                    client_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
                ))
                .bind(DbId(client.id))
                .bind(&client.client_id)
                .bind(client.is_static)
                .bind(client.encrypted_client_secret.as_deref())
                .bind(client.token_endpoint_auth_method.as_str())
                .bind(sqlx::types::Json(&client.metadata))
                .bind(Ts(now))
                .bind(Ts(now))
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "client")?;
                Ok(client)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<Client>, StorageError> {
                let row: Option<ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM oauth2_clients WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                row.map(Client::try_from).transpose()
            }

            async fn find_by_client_id(
                &mut self,
                client_id: &str,
            ) -> Result<Option<Client>, StorageError> {
                let row: Option<ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM oauth2_clients WHERE client_id = $1"
                ))
                .bind(client_id)
                .fetch_optional(self.conn())
                .await?;
                row.map(Client::try_from).transpose()
            }

            async fn list_static(&mut self) -> Result<Vec<Client>, StorageError> {
                let rows: Vec<ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM oauth2_clients WHERE is_static ORDER BY client_id"
                ))
                .fetch_all(self.conn())
                .await?;
                clients(rows)
            }

            async fn upsert_static(
                &mut self,
                client_id: &str,
                encrypted_client_secret: Option<&str>,
                token_endpoint_auth_method: ClientAuthMethod,
                metadata: &serde_json::Value,
            ) -> Result<(Client, Upserted), StorageError> {
                let now = Ts(self.now());
                let id = self.new_id();
                // Insert first: no read-then-insert race between two replicas syncing at once.
                let created: Option<ClientRow> = sqlx::query_as(concat!(
                    "INSERT INTO oauth2_clients (",
                    client_columns!(),
                    ") VALUES ($1, $2, TRUE, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING \
                     RETURNING ",
                    client_columns!()
                ))
                .bind(DbId(id))
                .bind(client_id)
                .bind(encrypted_client_secret)
                .bind(token_endpoint_auth_method.as_str())
                .bind(sqlx::types::Json(metadata))
                .bind(now)
                .fetch_optional(self.conn())
                .await?;
                if let Some(row) = created {
                    return Ok((row.try_into()?, Upserted::Created));
                }

                let existing = ClientRepository::find_by_client_id(self, client_id)
                    .await?
                    .ok_or(StorageError::NotFound("client"))?;
                if !existing.is_static {
                    return Err(StorageError::Conflict("client"));
                }
                // Compared here rather than in SQL: JSON equality ignores key order and
                // formatting, which a text comparison (SQLite) would not.
                if existing.encrypted_client_secret.as_deref() == encrypted_client_secret
                    && existing.token_endpoint_auth_method == token_endpoint_auth_method
                    && existing.metadata == *metadata
                {
                    return Ok((existing, Upserted::Unchanged));
                }
                let row: Option<ClientRow> = sqlx::query_as(concat!(
                    "UPDATE oauth2_clients SET encrypted_client_secret = $2, \
                     token_endpoint_auth_method = $3, metadata = $4, updated_at = $5 \
                     WHERE id = $1 AND is_static RETURNING ",
                    client_columns!()
                ))
                .bind(DbId(existing.id))
                .bind(encrypted_client_secret)
                .bind(token_endpoint_auth_method.as_str())
                .bind(sqlx::types::Json(metadata))
                .bind(now)
                .fetch_optional(self.conn())
                .await?;
                let client = row
                    .map(Client::try_from)
                    .transpose()?
                    .ok_or(StorageError::NotFound("client"))?;
                Ok((client, Upserted::Updated))
            }

            async fn delete(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query("DELETE FROM oauth2_clients WHERE id = $1")
                    .bind(DbId(id))
                    .execute(self.conn())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_unused_dynamic(
                &mut self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<u64, StorageError> {
                delete_batch!(
                    self,
                    "oauth2_clients",
                    "id",
                    "is_static = FALSE AND created_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM oauth2_sessions s \
                      WHERE s.client_id = oauth2_clients.id) \
                     AND NOT EXISTS (SELECT 1 FROM oauth2_authorization_grants g \
                      WHERE g.client_id = oauth2_clients.id) \
                     AND NOT EXISTS (SELECT 1 FROM oauth2_device_code_grants d \
                      WHERE d.client_id = oauth2_clients.id)",
                    Ts(before),
                    limit
                )
            }

            async fn list_page(
                &mut self,
                after: Option<Ulid>,
                limit: u32,
            ) -> Result<Vec<Client>, StorageError> {
                let rows: Vec<ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM oauth2_clients WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
                ))
                .bind(after.map(DbId))
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await?;
                clients(rows)
            }

            async fn update_dynamic(
                &mut self,
                id: Ulid,
                encrypted_client_secret: Option<&str>,
                token_endpoint_auth_method: ClientAuthMethod,
                metadata: &serde_json::Value,
            ) -> Result<Client, StorageError> {
                let row: Option<ClientRow> = sqlx::query_as(concat!(
                    "UPDATE oauth2_clients SET encrypted_client_secret = $2, \
                     token_endpoint_auth_method = $3, metadata = $4, updated_at = $5 \
                     WHERE id = $1 AND NOT is_static RETURNING ",
                    client_columns!()
                ))
                .bind(DbId(id))
                .bind(encrypted_client_secret)
                .bind(token_endpoint_auth_method.as_str())
                .bind(sqlx::types::Json(metadata))
                .bind(Ts(self.now()))
                .fetch_optional(self.conn())
                .await?;
                match row {
                    Some(row) => row.try_into(),
                    None if row_exists!(self, "oauth2_clients", id) => {
                        Err(StorageError::Conflict("static client"))
                    }
                    None => Err(StorageError::NotFound("client")),
                }
            }
        }
    };
}

for_each_backend!(implementation);
