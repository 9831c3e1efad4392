//! What the migration reads from Synapse: its configuration file (`homeserver.yaml`) and its
//! database, SQLite or PostgreSQL, opened read-only.
//!
//! The tables and columns are those of Synapse's schema (`synapse/storage/schema/main/`: the
//! full schema 72 and the deltas after it, e.g. `users.locked` from delta 80). Synapse stores
//! booleans as `SMALLINT` (`admin`, `deactivated`, `is_guest`) or `BOOLEAN` (`locked`,
//! `hidden`, `used`; integers in SQLite), so every flag is read as `CASE WHEN … THEN 1 ELSE 0
//! END` cast to `BIGINT`, which both engines answer as a 64-bit integer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr as _,
};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use serde_yaml_ng::Value;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
    PgPool, SqlitePool,
};

/// The parts of `homeserver.yaml` the migration reads.
#[derive(Debug, Clone, Default)]
pub struct SynapseConfig {
    pub server_name: String,
    /// The database as a URL (`sqlite://…` or `postgres://…`), from `database`.
    pub database_url: Option<String>,
    /// `password_config.pepper`.
    pub pepper: Option<String>,
    /// `password_config.enabled` and `password_config.localdb_enabled` (both default true).
    pub password_login: bool,
    pub enable_registration: bool,
    pub allow_guest_access: bool,
    /// `password_providers` and `modules`: code that may check passwords elsewhere.
    pub modules: Vec<String>,
    /// The SSO providers: Synapse's `auth_provider` ID (`oidc-<idp_id>`, `oidc`) → issuer.
    pub oidc_providers: BTreeMap<String, String>,
    /// `cas_config`, `saml2_config`, `jwt_config` when enabled.
    pub other_sso: Vec<&'static str>,
    /// `matrix_authentication_service.enabled`: Synapse already delegates.
    pub delegates_already: bool,
}

fn truthy(v: Option<&Value>, default: bool) -> bool {
    v.and_then(Value::as_bool).unwrap_or(default)
}

fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl SynapseConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("can't read Synapse's config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("in {}", path.display()))
    }

    /// Parses `homeserver.yaml`; relative SQLite paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let doc: Value = serde_yaml_ng::from_str(text).context("not YAML")?;
        let server_name = string(doc.get("server_name")).context("`server_name` is missing")?;
        let password = doc.get("password_config");
        let password_login = truthy(password.and_then(|p| p.get("enabled")), true)
            && truthy(password.and_then(|p| p.get("localdb_enabled")), true);
        let pepper = string(password.and_then(|p| p.get("pepper"))).filter(|p| !p.is_empty());

        let mut oidc_providers = BTreeMap::new();
        // `synapse/config/oidc.py`: an `oidc_providers` entry's `idp_id` (default "oidc") is
        // prefixed with `oidc-`, except "oidc" itself (kept for the legacy `oidc_config`).
        if let Some(Value::Sequence(list)) = doc.get("oidc_providers") {
            for entry in list {
                if !truthy(entry.get("enabled"), true) {
                    continue;
                }
                let idp_id = string(entry.get("idp_id")).unwrap_or_else(|| "oidc".to_owned());
                let id = if idp_id == "oidc" {
                    idp_id
                } else {
                    format!("oidc-{idp_id}")
                };
                let issuer = string(entry.get("issuer")).unwrap_or_default();
                oidc_providers.insert(id, issuer);
            }
        }
        if let Some(legacy) = doc.get("oidc_config") {
            if truthy(legacy.get("enabled"), false) {
                let issuer = string(legacy.get("issuer")).unwrap_or_default();
                oidc_providers.insert("oidc".to_owned(), issuer);
            }
        }
        let other_sso = [
            ("cas_config", "CAS"),
            ("saml2_config", "SAML2"),
            ("jwt_config", "JWT"),
        ]
        .into_iter()
        .filter(|(key, _)| {
            let section = doc.get(*key);
            // `saml2_config` is on when it has `sp_config`; the others have `enabled`.
            truthy(section.and_then(|s| s.get("enabled")), false)
                || section.and_then(|s| s.get("sp_config")).is_some()
        })
        .map(|(_, name)| name)
        .collect();

        let mut modules = Vec::new();
        for key in ["password_providers", "modules"] {
            if let Some(Value::Sequence(list)) = doc.get(key) {
                for m in list {
                    if let Some(name) = string(m.get("module")) {
                        modules.push(name);
                    }
                }
            }
        }

        Ok(Self {
            server_name,
            database_url: database_url(doc.get("database"), base)?,
            pepper,
            password_login,
            enable_registration: truthy(doc.get("enable_registration"), false),
            allow_guest_access: truthy(doc.get("allow_guest_access"), false),
            modules,
            oidc_providers,
            other_sso,
            delegates_already: truthy(
                doc.get("matrix_authentication_service")
                    .and_then(|m| m.get("enabled")),
                false,
            ),
        })
    }
}

/// The `database` section as a URL: `name: sqlite3` with `args.database` (a path), or
/// `name: psycopg2` with libpq arguments (`user`, `password`, `database`/`dbname`, `host`,
/// `port`; a `host` starting with `/` is a socket directory).
fn database_url(section: Option<&Value>, base: &Path) -> anyhow::Result<Option<String>> {
    let Some(section) = section else {
        return Ok(None);
    };
    let args = section.get("args");
    let arg = |k: &str| string(args.and_then(|a| a.get(k)));
    match string(section.get("name")).as_deref() {
        Some("sqlite3") => {
            let path =
                PathBuf::from(arg("database").context("`database.args.database` is missing")?);
            let path = if path.is_absolute() {
                path
            } else {
                base.join(path)
            };
            Ok(Some(format!("sqlite://{}", path.display())))
        }
        Some("psycopg2") => {
            let mut url = url::Url::parse("postgres://localhost/").expect("a valid URL");
            let host = arg("host");
            let socket = host.as_deref().filter(|h| h.starts_with('/'));
            if let Some(host) = host.as_deref().filter(|h| !h.starts_with('/')) {
                url.set_host(Some(host))
                    .context("`database.args.host` is invalid")?;
            }
            if let Some(port) = arg("port") {
                let port: u16 = port.parse().context("`database.args.port` is invalid")?;
                let _ = url.set_port(Some(port));
            }
            if let Some(user) = arg("user") {
                let _ = url.set_username(&user);
            }
            if let Some(password) = arg("password") {
                let _ = url.set_password(Some(&password));
            }
            url.set_path(
                &arg("database")
                    .or_else(|| arg("dbname"))
                    .unwrap_or_default(),
            );
            if let Some(socket) = socket {
                url.query_pairs_mut().append_pair("host", socket);
            }
            Ok(Some(url.to_string()))
        }
        Some(other) => bail!("`database.name: {other}` is not sqlite3 or psycopg2"),
        None => bail!("`database.name` is missing"),
    }
}

/// A Synapse user (`users`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub name: String,
    pub password_hash: Option<String>,
    pub admin: i64,
    pub deactivated: i64,
    pub locked: i64,
    pub is_guest: i64,
    pub appservice_id: Option<String>,
    /// Seconds.
    pub creation_ts: Option<i64>,
}

/// `user_threepids`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThreepidRow {
    pub user_id: String,
    pub medium: String,
    pub address: String,
    /// Milliseconds.
    pub added_at: i64,
}

/// `user_external_ids`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExternalIdRow {
    pub user_id: String,
    pub auth_provider: String,
    pub external_id: String,
}

/// `devices` (not the hidden ones: those hold cross-signing keys, they are no sessions).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    /// Milliseconds.
    pub last_seen: Option<i64>,
    pub user_agent: Option<String>,
}

/// `access_tokens` of a device, not puppeting another user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessTokenRow {
    pub id: i64,
    pub user_id: String,
    pub device_id: Option<String>,
    pub token: String,
    pub valid_until_ms: Option<i64>,
    pub last_validated: Option<i64>,
    pub refresh_token_id: Option<i64>,
}

/// `refresh_tokens` still usable: the last of their chain, or whose successor's access token
/// was never used (Synapse's `refresh_token` rotation, `synapse/handlers/auth.py`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshTokenRow {
    pub id: i64,
    pub user_id: String,
    pub device_id: String,
    pub token: String,
}

/// Counts of rows that don't move, for `check`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub users: i64,
    pub guests: i64,
    pub appservice_users: i64,
    pub non_bcrypt_passwords: i64,
    pub non_email_threepids: i64,
    pub deviceless_tokens: i64,
    pub puppet_tokens: i64,
    /// `user_external_ids` per `auth_provider`.
    pub external_ids: BTreeMap<String, i64>,
}

/// Synapse's database, read-only.
#[derive(Debug, Clone)]
pub enum SynapseDb {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs one `query_as` on whichever pool.
macro_rules! fetch_all {
    ($db:expr, $row:ty, $sql:expr) => {
        match $db {
            SynapseDb::Postgres(pool) => sqlx::query_as::<_, $row>($sql).fetch_all(pool).await,
            SynapseDb::Sqlite(pool) => sqlx::query_as::<_, $row>($sql).fetch_all(pool).await,
        }
    };
}

/// One `i64` answer on whichever pool.
macro_rules! scalar {
    ($db:expr, $sql:expr) => {
        match $db {
            SynapseDb::Postgres(pool) => sqlx::query_scalar::<_, i64>($sql).fetch_one(pool).await,
            SynapseDb::Sqlite(pool) => sqlx::query_scalar::<_, i64>($sql).fetch_one(pool).await,
        }
    };
}

impl SynapseDb {
    /// Opens the database read-only: SQLite with `mode=ro`, PostgreSQL with
    /// `default_transaction_read_only`, so nothing here can write to it.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let redacted = storage::redact_url(url);
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("invalid SQLite URL {redacted}"))?
                .read_only(true)
                .create_if_missing(false);
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .with_context(|| format!("can't open Synapse's database {redacted}"))?;
            Ok(Self::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .with_context(|| format!("invalid PostgreSQL URL {redacted}"))?
                .options([("default_transaction_read_only", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .with_context(|| format!("can't connect to Synapse's database {redacted}"))?;
            Ok(Self::Postgres(pool))
        } else {
            bail!("unsupported Synapse database URL {redacted}: expected sqlite:… or postgres://…")
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }

    pub async fn users(&self) -> anyhow::Result<Vec<UserRow>> {
        fetch_all!(
            self,
            UserRow,
            "SELECT name, password_hash, \
             CAST(CASE WHEN admin <> 0 THEN 1 ELSE 0 END AS BIGINT) AS admin, \
             CAST(CASE WHEN deactivated <> 0 THEN 1 ELSE 0 END AS BIGINT) AS deactivated, \
             CAST(CASE WHEN locked THEN 1 ELSE 0 END AS BIGINT) AS locked, \
             CAST(CASE WHEN is_guest <> 0 THEN 1 ELSE 0 END AS BIGINT) AS is_guest, \
             appservice_id, CAST(creation_ts AS BIGINT) AS creation_ts \
             FROM users ORDER BY name"
        )
        .context("can't read Synapse's `users` (is this Synapse's database?)")
    }

    pub async fn threepids(&self) -> anyhow::Result<Vec<ThreepidRow>> {
        fetch_all!(
            self,
            ThreepidRow,
            "SELECT user_id, medium, address, CAST(added_at AS BIGINT) AS added_at \
             FROM user_threepids ORDER BY user_id, medium, address"
        )
        .context("can't read Synapse's `user_threepids`")
    }

    pub async fn external_ids(&self) -> anyhow::Result<Vec<ExternalIdRow>> {
        fetch_all!(
            self,
            ExternalIdRow,
            "SELECT user_id, auth_provider, external_id FROM user_external_ids \
             ORDER BY user_id, auth_provider, external_id"
        )
        .context("can't read Synapse's `user_external_ids`")
    }

    pub async fn devices(&self) -> anyhow::Result<Vec<DeviceRow>> {
        fetch_all!(
            self,
            DeviceRow,
            "SELECT user_id, device_id, display_name, CAST(last_seen AS BIGINT) AS last_seen, \
             user_agent FROM devices \
             WHERE CAST(CASE WHEN hidden THEN 1 ELSE 0 END AS BIGINT) = 0 \
             ORDER BY user_id, device_id"
        )
        .context("can't read Synapse's `devices`")
    }

    /// The access tokens of devices (not puppeting another user: those were an admin's
    /// "log in as", which has no counterpart here).
    pub async fn access_tokens(&self) -> anyhow::Result<Vec<AccessTokenRow>> {
        fetch_all!(
            self,
            AccessTokenRow,
            "SELECT CAST(id AS BIGINT) AS id, user_id, device_id, token, \
             CAST(valid_until_ms AS BIGINT) AS valid_until_ms, \
             CAST(last_validated AS BIGINT) AS last_validated, \
             CAST(refresh_token_id AS BIGINT) AS refresh_token_id \
             FROM access_tokens WHERE puppets_user_id IS NULL AND device_id IS NOT NULL \
             ORDER BY user_id, device_id, id"
        )
        .context("can't read Synapse's `access_tokens`")
    }

    pub async fn refresh_tokens(&self) -> anyhow::Result<Vec<RefreshTokenRow>> {
        fetch_all!(
            self,
            RefreshTokenRow,
            "SELECT CAST(rt.id AS BIGINT) AS id, rt.user_id, rt.device_id, rt.token \
             FROM refresh_tokens rt \
             WHERE rt.next_token_id IS NULL OR NOT EXISTS (SELECT 1 FROM access_tokens nt \
               WHERE nt.refresh_token_id = rt.next_token_id \
               AND CAST(CASE WHEN nt.used THEN 1 ELSE 0 END AS BIGINT) = 1) \
             ORDER BY rt.user_id, rt.device_id, rt.id"
        )
        .context("can't read Synapse's `refresh_tokens`")
    }

    /// What `check` counts.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let count = |what: &'static str| move |e| anyhow::Error::from(e).context(what);
        let mut counts = Counts {
            users: scalar!(self, "SELECT COUNT(*) FROM users").map_err(count(
                "can't count Synapse's `users` (is this Synapse's database?)",
            ))?,
            guests: scalar!(self, "SELECT COUNT(*) FROM users WHERE is_guest <> 0")
                .map_err(count("can't count guests"))?,
            appservice_users: scalar!(
                self,
                "SELECT COUNT(*) FROM users WHERE appservice_id IS NOT NULL"
            )
            .map_err(count("can't count appservice users"))?,
            non_bcrypt_passwords: scalar!(
                self,
                "SELECT COUNT(*) FROM users WHERE password_hash IS NOT NULL \
                 AND password_hash <> '' AND password_hash NOT LIKE '$2%'"
            )
            .map_err(count("can't count password hashes"))?,
            non_email_threepids: scalar!(
                self,
                "SELECT COUNT(*) FROM user_threepids WHERE medium <> 'email'"
            )
            .map_err(count("can't count threepids"))?,
            deviceless_tokens: scalar!(
                self,
                "SELECT COUNT(*) FROM access_tokens \
                 WHERE device_id IS NULL AND puppets_user_id IS NULL"
            )
            .map_err(count("can't count access tokens"))?,
            puppet_tokens: scalar!(
                self,
                "SELECT COUNT(*) FROM access_tokens WHERE puppets_user_id IS NOT NULL"
            )
            .map_err(count("can't count access tokens"))?,
            external_ids: BTreeMap::new(),
        };
        #[derive(sqlx::FromRow)]
        struct PerProvider {
            auth_provider: String,
            n: i64,
        }
        for row in fetch_all!(
            self,
            PerProvider,
            "SELECT auth_provider, COUNT(*) AS n FROM user_external_ids GROUP BY auth_provider"
        )
        .context("can't read Synapse's `user_external_ids`")?
        {
            counts.external_ids.insert(row.auth_provider, row.n);
        }
        Ok(counts)
    }
}

/// The localpart of `@localpart:server_name`, when the user ID is of that server.
pub fn localpart<'a>(user_id: &'a str, server_name: &str) -> Option<&'a str> {
    let rest = user_id.strip_prefix('@')?;
    let (local, server) = rest.split_once(':')?;
    (server == server_name && !local.is_empty()).then_some(local)
}

/// A Synapse timestamp in milliseconds, as a UTC instant.
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_settings_that_matter() {
        let config = SynapseConfig::parse(
            "server_name: example.com\n\
             database: {name: psycopg2, args: {user: synapse, password: 'p@ss', database: synapse, host: db, port: 5433}}\n\
             password_config: {pepper: p3pp3r}\n\
             enable_registration: true\n\
             oidc_providers:\n  - {idp_id: keycloak, issuer: 'https://kc/'}\n  - {issuer: 'https://legacy/'}\n\
             password_providers:\n  - {module: ldap_auth_provider.LdapAuthProviderModule}\n",
            Path::new("/etc/synapse"),
        )
        .unwrap();
        assert_eq!(config.server_name, "example.com");
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://synapse:p%40ss@db:5433/synapse")
        );
        assert_eq!(config.pepper.as_deref(), Some("p3pp3r"));
        assert!(config.enable_registration && config.password_login);
        assert_eq!(
            config.oidc_providers.keys().collect::<Vec<_>>(),
            ["oidc", "oidc-keycloak"]
        );
        assert_eq!(
            config.modules,
            ["ldap_auth_provider.LdapAuthProviderModule"]
        );

        let sqlite = SynapseConfig::parse(
            "server_name: localhost\ndatabase: {name: sqlite3, args: {database: homeserver.db}}\n",
            Path::new("/data"),
        )
        .unwrap();
        assert_eq!(
            sqlite.database_url.as_deref(),
            Some("sqlite:///data/homeserver.db")
        );
        assert!(SynapseConfig::parse("database: {}", Path::new(".")).is_err());
    }

    #[test]
    fn localparts() {
        assert_eq!(
            localpart("@alice:example.com", "example.com"),
            Some("alice")
        );
        assert_eq!(localpart("@alice:other.org", "example.com"), None);
        assert_eq!(localpart("alice", "example.com"), None);
        assert_eq!(localpart("@:example.com", "example.com"), None);
    }
}
