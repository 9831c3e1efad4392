//! How domain values are stored, per backend.
//!
//! IDs are ULIDs: `UUID` in PostgreSQL, their 26-character text in SQLite (readable, and it sorts
//! like the ULID). Timestamps are UTC: `TIMESTAMPTZ` in PostgreSQL, Unix milliseconds in SQLite
//! (SQLite has no date type, and integers compare correctly where text timestamps would not).

use chrono::{DateTime, Utc};
use sqlx::{
    encode::IsNull, error::BoxDynError, postgres::PgValueRef, sqlite::SqliteValueRef, Database,
    Decode, Encode, Postgres, Sqlite, Type,
};
use ulid::Ulid;
use uuid::Uuid;

use super::{StorageError, TokenHash};

/// A ULID as stored in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbId(pub Ulid);

impl From<DbId> for Ulid {
    fn from(id: DbId) -> Self {
        id.0
    }
}

impl Type<Postgres> for DbId {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl<'q> Encode<'q, Postgres> for DbId {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<'q, Postgres>>::encode(Uuid::from(self.0), buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbId {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(Ulid::from(<Uuid as Decode<'r, Postgres>>::decode(
            value,
        )?)))
    }
}

impl Type<Sqlite> for DbId {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for DbId {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.0.to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbId {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Sqlite>>::decode(value)?;
        Ok(Self(Ulid::from_string(text)?))
    }
}

/// A UTC instant as stored in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ts(pub DateTime<Utc>);

impl From<Ts> for DateTime<Utc> {
    fn from(ts: Ts) -> Self {
        ts.0
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl<'q> Encode<'q, Postgres> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<'r, Postgres>>::decode(
            value,
        )?))
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'q, Sqlite>>::encode(self.0.timestamp_millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let millis = <i64 as Decode<'r, Sqlite>>::decode(value)?;
        DateTime::from_timestamp_millis(millis)
            .map(Self)
            .ok_or_else(|| format!("timestamp out of range: {millis}").into())
    }
}

pub use domain::clock::db_precision;

/// A stored token hash (a `BYTEA`/`BLOB` column) back to a [`TokenHash`]; anything but 32 bytes
/// is corrupt data: [`StorageError::Invalid`].
pub(crate) fn decode_token_hash(bytes: Vec<u8>) -> Result<TokenHash, StorageError> {
    TokenHash::try_from(bytes)
        .map_err(|b| StorageError::Invalid(format!("a token hash of {} bytes", b.len())))
}

/// A typed value stored as text (a protocol enum of [`domain::protocol`], a `prompt` set, a
/// sign-in method) read back by its own parser; text the parser refuses is corrupt data:
/// [`StorageError::Invalid`], naming the column.
pub(crate) fn decode_text<T>(column: &str, text: &str) -> Result<T, StorageError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| StorageError::Invalid(format!("{column}: {e}")))
}
