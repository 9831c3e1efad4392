//! Users, their passwords and their email addresses.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::{
    for_each_backend,
    types::{DbId, Ts},
    StorageError,
};

/// A local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Ulid,
    /// The Matrix localpart.
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub locked_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// May this user be granted `urn:synapse:admin:*` (MSC2967)?
    pub can_request_admin: bool,
    /// The display name, pushed to the homeserver's profile; `None` leaves it unset there.
    pub display_name: Option<String>,
}

impl User {
    /// Locked and deactivated users can't sign in and their tokens are inactive.
    pub fn is_active(&self) -> bool {
        self.locked_at.is_none() && self.deactivated_at.is_none()
    }
}

/// A password hash of a user; the newest one is the one in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Password {
    pub id: Ulid,
    pub user_id: Ulid,
    /// A PHC string (argon2id) or an imported bcrypt hash.
    pub hashed_password: String,
    /// The hashing scheme version that produced it.
    pub version: i32,
    pub upgraded_from_id: Option<Ulid>,
    pub created_at: DateTime<Utc>,
}

/// An email address of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEmail {
    pub id: Ulid,
    pub user_id: Ulid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait UserRepository: Send {
    /// Creates a user; [`StorageError::Conflict`] when the username was ever taken.
    async fn add(&mut self, username: &str) -> Result<User, StorageError>;
    async fn lookup(&mut self, id: Ulid) -> Result<Option<User>, StorageError>;
    async fn find_by_username(&mut self, username: &str) -> Result<Option<User>, StorageError>;
    /// Locks (`true`) or unlocks (`false`) a user.
    async fn set_locked(&mut self, id: Ulid, locked: bool) -> Result<User, StorageError>;
    /// Deactivates (`true`) or reactivates (`false`) a user. The username stays taken.
    async fn set_deactivated(&mut self, id: Ulid, deactivated: bool) -> Result<User, StorageError>;
    async fn set_can_request_admin(&mut self, id: Ulid, can: bool) -> Result<User, StorageError>;
    /// Sets (`Some`) or clears (`None`) the display name.
    async fn set_display_name(
        &mut self,
        id: Ulid,
        display_name: Option<&str>,
    ) -> Result<User, StorageError>;
    async fn count(&mut self) -> Result<u64, StorageError>;
    /// Up to `limit` users in ID (creation) order, after the user `after` when given: one page
    /// of a walk through every user (keyset pagination, stable under inserts).
    async fn list_page(
        &mut self,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<User>, StorageError> {
        self.list_filtered(&UserFilter::default(), after, limit)
            .await
    }
    /// [`UserRepository::list_page`] restricted to the users `filter` selects (the admin API's
    /// user list).
    async fn list_filtered(
        &mut self,
        filter: &UserFilter,
        after: Option<Ulid>,
        limit: u32,
    ) -> Result<Vec<User>, StorageError>;
}

/// Where an account stands, as the admin API filters users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Neither locked nor deactivated: may sign in.
    Active,
    /// Locked, not deactivated.
    Locked,
    Deactivated,
}

/// Which users [`UserRepository::list_filtered`] returns; `None` members select everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub status: Option<UserStatus>,
    /// Only users who may (`true`) or may not (`false`) be granted the admin scopes.
    pub can_request_admin: Option<bool>,
    /// Only usernames that start with this, compared exactly (case and all). (A scan in ID
    /// order; `LIKE` would need escaping and is case-insensitive on SQLite.)
    pub username_prefix: Option<String>,
}

impl UserFilter {
    /// `(locked, deactivated)` conditions of the status, each `None` when it doesn't matter.
    fn state_conditions(&self) -> (Option<bool>, Option<bool>) {
        match self.status {
            None => (None, None),
            Some(UserStatus::Active) => (Some(false), Some(false)),
            Some(UserStatus::Locked) => (Some(true), Some(false)),
            Some(UserStatus::Deactivated) => (None, Some(true)),
        }
    }
}

#[async_trait]
pub trait UserPasswordRepository: Send {
    async fn add(
        &mut self,
        user_id: Ulid,
        hashed_password: &str,
        version: i32,
        upgraded_from_id: Option<Ulid>,
    ) -> Result<Password, StorageError>;
    /// The password in force: the newest one.
    async fn active(&mut self, user_id: Ulid) -> Result<Option<Password>, StorageError>;
}

#[async_trait]
pub trait UserEmailRepository: Send {
    /// Adds an address; [`StorageError::Conflict`] when the user already has it.
    async fn add(&mut self, user_id: Ulid, email: &str) -> Result<UserEmail, StorageError>;
    async fn lookup(&mut self, id: Ulid) -> Result<Option<UserEmail>, StorageError>;
    /// The user's addresses, oldest first.
    async fn list_for_user(&mut self, user_id: Ulid) -> Result<Vec<UserEmail>, StorageError>;
    /// Confirmed addresses equal to `email`, whoever owns them.
    async fn find_confirmed(&mut self, email: &str) -> Result<Vec<UserEmail>, StorageError>;
    async fn confirm(&mut self, id: Ulid) -> Result<UserEmail, StorageError>;
    /// Removes an address; `false` when there was none.
    async fn remove(&mut self, id: Ulid) -> Result<bool, StorageError>;
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: DbId,
    username: String,
    created_at: Ts,
    locked_at: Option<Ts>,
    deactivated_at: Option<Ts>,
    can_request_admin: bool,
    display_name: Option<String>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id.0,
            username: r.username,
            created_at: r.created_at.0,
            locked_at: r.locked_at.map(Into::into),
            deactivated_at: r.deactivated_at.map(Into::into),
            can_request_admin: r.can_request_admin,
            display_name: r.display_name,
        }
    }
}

macro_rules! user_columns {
    () => {
        "id, username, created_at, locked_at, deactivated_at, can_request_admin, display_name"
    };
}

#[derive(sqlx::FromRow)]
struct PasswordRow {
    id: DbId,
    user_id: DbId,
    hashed_password: String,
    version: i32,
    upgraded_from_id: Option<DbId>,
    created_at: Ts,
}

impl From<PasswordRow> for Password {
    fn from(r: PasswordRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.0,
            hashed_password: r.hashed_password,
            version: r.version,
            upgraded_from_id: r.upgraded_from_id.map(Into::into),
            created_at: r.created_at.0,
        }
    }
}

#[derive(sqlx::FromRow)]
struct EmailRow {
    id: DbId,
    user_id: DbId,
    email: String,
    created_at: Ts,
    confirmed_at: Option<Ts>,
}

impl From<EmailRow> for UserEmail {
    fn from(r: EmailRow) -> Self {
        Self {
            id: r.id.0,
            user_id: r.user_id.0,
            email: r.email,
            created_at: r.created_at.0,
            confirmed_at: r.confirmed_at.map(Into::into),
        }
    }
}

macro_rules! email_columns {
    () => {
        "id, user_id, email, created_at, confirmed_at"
    };
}

macro_rules! implementation {
    ($repo:ty) => {
        #[async_trait]
        impl UserRepository for $repo {
            async fn add(&mut self, username: &str) -> Result<User, StorageError> {
                let user = User {
                    id: self.new_id(),
                    username: username.to_owned(),
                    created_at: self.now(),
                    locked_at: None,
                    deactivated_at: None,
                    can_request_admin: false,
                    display_name: None,
                };
                let done = sqlx::query(
                    "INSERT INTO users (id, username, created_at, can_request_admin) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(user.id))
                .bind(&user.username)
                .bind(Ts(user.created_at))
                .bind(user.can_request_admin)
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "user")?;
                Ok(user)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<User>, StorageError> {
                let row: Option<UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn find_by_username(
                &mut self,
                username: &str,
            ) -> Result<Option<User>, StorageError> {
                let row: Option<UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE username = $1"
                ))
                .bind(username)
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn set_locked(&mut self, id: Ulid, locked: bool) -> Result<User, StorageError> {
                let at = locked.then(|| Ts(self.now()));
                let row: Option<UserRow> = sqlx::query_as(concat!(
                    "UPDATE users SET locked_at = $2 WHERE id = $1 RETURNING ",
                    user_columns!()
                ))
                .bind(DbId(id))
                .bind(at)
                .fetch_optional(self.conn())
                .await?;
                row.map(Into::into).ok_or(StorageError::NotFound("user"))
            }

            async fn set_deactivated(
                &mut self,
                id: Ulid,
                deactivated: bool,
            ) -> Result<User, StorageError> {
                let at = deactivated.then(|| Ts(self.now()));
                let row: Option<UserRow> = sqlx::query_as(concat!(
                    "UPDATE users SET deactivated_at = $2 WHERE id = $1 RETURNING ",
                    user_columns!()
                ))
                .bind(DbId(id))
                .bind(at)
                .fetch_optional(self.conn())
                .await?;
                row.map(Into::into).ok_or(StorageError::NotFound("user"))
            }

            async fn set_can_request_admin(
                &mut self,
                id: Ulid,
                can: bool,
            ) -> Result<User, StorageError> {
                let row: Option<UserRow> = sqlx::query_as(concat!(
                    "UPDATE users SET can_request_admin = $2 WHERE id = $1 RETURNING ",
                    user_columns!()
                ))
                .bind(DbId(id))
                .bind(can)
                .fetch_optional(self.conn())
                .await?;
                row.map(Into::into).ok_or(StorageError::NotFound("user"))
            }

            async fn set_display_name(
                &mut self,
                id: Ulid,
                display_name: Option<&str>,
            ) -> Result<User, StorageError> {
                let row: Option<UserRow> = sqlx::query_as(concat!(
                    "UPDATE users SET display_name = $2 WHERE id = $1 RETURNING ",
                    user_columns!()
                ))
                .bind(DbId(id))
                .bind(display_name)
                .fetch_optional(self.conn())
                .await?;
                row.map(Into::into).ok_or(StorageError::NotFound("user"))
            }

            async fn count(&mut self) -> Result<u64, StorageError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(self.conn())
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn list_filtered(
                &mut self,
                filter: &UserFilter,
                after: Option<Ulid>,
                limit: u32,
            ) -> Result<Vec<User>, StorageError> {
                let (locked, deactivated) = filter.state_conditions();
                let rows: Vec<UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE ($1 IS NULL OR id > $1) \
                      AND ($2 IS NULL OR (locked_at IS NOT NULL) = $2) \
                      AND ($3 IS NULL OR (deactivated_at IS NOT NULL) = $3) \
                      AND ($4 IS NULL OR can_request_admin = $4) \
                      AND ($5 IS NULL OR substr(username, 1, length($5)) = $5) \
                      ORDER BY id LIMIT $6"
                ))
                .bind(after.map(DbId))
                .bind(locked)
                .bind(deactivated)
                .bind(filter.can_request_admin)
                .bind(filter.username_prefix.as_deref())
                .bind(i64::from(limit))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }

        #[async_trait]
        impl UserPasswordRepository for $repo {
            async fn add(
                &mut self,
                user_id: Ulid,
                hashed_password: &str,
                version: i32,
                upgraded_from_id: Option<Ulid>,
            ) -> Result<Password, StorageError> {
                let password = Password {
                    id: self.new_id(),
                    user_id,
                    hashed_password: hashed_password.to_owned(),
                    version,
                    upgraded_from_id,
                    created_at: self.now(),
                };
                sqlx::query(
                    "INSERT INTO user_passwords \
                     (id, user_id, hashed_password, version, upgraded_from_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(DbId(password.id))
                .bind(DbId(user_id))
                .bind(&password.hashed_password)
                .bind(version)
                .bind(upgraded_from_id.map(DbId))
                .bind(Ts(password.created_at))
                .execute(self.conn())
                .await?;
                Ok(password)
            }

            async fn active(&mut self, user_id: Ulid) -> Result<Option<Password>, StorageError> {
                // ULIDs grow with time, so the greatest id is the newest password.
                let row: Option<PasswordRow> = sqlx::query_as(
                    "SELECT id, user_id, hashed_password, version, upgraded_from_id, created_at \
                     FROM user_passwords WHERE user_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind(DbId(user_id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }
        }

        #[async_trait]
        impl UserEmailRepository for $repo {
            async fn add(&mut self, user_id: Ulid, email: &str) -> Result<UserEmail, StorageError> {
                let row = UserEmail {
                    id: self.new_id(),
                    user_id,
                    email: email.to_owned(),
                    created_at: self.now(),
                    confirmed_at: None,
                };
                let done = sqlx::query(
                    "INSERT INTO user_emails (id, user_id, email, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(DbId(row.id))
                .bind(DbId(user_id))
                .bind(&row.email)
                .bind(Ts(row.created_at))
                .execute(self.conn())
                .await?;
                StorageError::inserted(done, "email address")?;
                Ok(row)
            }

            async fn lookup(&mut self, id: Ulid) -> Result<Option<UserEmail>, StorageError> {
                let row: Option<EmailRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    email_columns!(),
                    " FROM user_emails WHERE id = $1"
                ))
                .bind(DbId(id))
                .fetch_optional(self.conn())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_for_user(
                &mut self,
                user_id: Ulid,
            ) -> Result<Vec<UserEmail>, StorageError> {
                let rows: Vec<EmailRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    email_columns!(),
                    " FROM user_emails WHERE user_id = $1 ORDER BY created_at, id"
                ))
                .bind(DbId(user_id))
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn find_confirmed(
                &mut self,
                email: &str,
            ) -> Result<Vec<UserEmail>, StorageError> {
                let rows: Vec<EmailRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    email_columns!(),
                    " FROM user_emails WHERE email = $1 AND confirmed_at IS NOT NULL \
                      ORDER BY created_at, id"
                ))
                .bind(email)
                .fetch_all(self.conn())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn confirm(&mut self, id: Ulid) -> Result<UserEmail, StorageError> {
                let now = Ts(self.now());
                let row: Option<EmailRow> = sqlx::query_as(concat!(
                    "UPDATE user_emails SET confirmed_at = COALESCE(confirmed_at, $2) \
                     WHERE id = $1 RETURNING ",
                    email_columns!()
                ))
                .bind(DbId(id))
                .bind(now)
                .fetch_optional(self.conn())
                .await?;
                row.map(Into::into)
                    .ok_or(StorageError::NotFound("email address"))
            }

            async fn remove(&mut self, id: Ulid) -> Result<bool, StorageError> {
                let done = sqlx::query("DELETE FROM user_emails WHERE id = $1")
                    .bind(DbId(id))
                    .execute(self.conn())
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

for_each_backend!(implementation);
