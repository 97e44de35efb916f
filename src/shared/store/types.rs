//! The stored forms of times, identifiers and JSON documents, one per backend.
//!
//! Promise: on PostgreSQL each is the native type (`timestamptz`, `uuid`, `jsonb`), so the
//! database itself refuses a value that is not one; on SQLite, which has no such types, each is
//! text in one fixed form: times as RFC 3339 UTC with exactly six fractional digits (so text
//! order is time order), identifiers as lowercase hyphenated UUIDs, documents as JSON. Reading
//! a stored value that does not parse is an error (`StoreError::Corrupt`, naming the column),
//! never a default. Times are kept to the microsecond on both, so what is read back (and what
//! the ledger hashes) equals what was written.

use std::borrow::Cow;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

use crate::contract::lead::LeadId;

/// A stored instant, to the microsecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(DateTime<Utc>);

impl DbTime {
    pub fn new(time: DateTime<Utc>) -> Self {
        DbTime(time.trunc_subsecs(6))
    }

    pub fn get(self) -> DateTime<Utc> {
        self.0
    }

    /// The text form: SQLite's stored form, the ledger's hashed form and the API's.
    pub fn text(self) -> String {
        self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    fn parse(text: &str) -> Result<Self, BoxDynError> {
        DateTime::parse_from_rfc3339(text)
            .map(|time| DbTime::new(time.with_timezone(&Utc)))
            .map_err(|_| format!("{text:?} is not an RFC 3339 time").into())
    }
}

impl From<DateTime<Utc>> for DbTime {
    fn from(time: DateTime<Utc>) -> Self {
        DbTime::new(time)
    }
}

/// A stored UUID (lead ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DbUuid(pub Uuid);

impl From<LeadId> for DbUuid {
    fn from(id: LeadId) -> Self {
        DbUuid(id.as_uuid())
    }
}

impl From<DbUuid> for LeadId {
    fn from(id: DbUuid) -> Self {
        LeadId::from_uuid(id.0)
    }
}

/// A stored JSON document that is queried, not hashed (assessments, timeline details,
/// feedback). Documents whose exact bytes a hash covers (a lead as received, a ledger entry's
/// details) are stored as text instead, so they read back byte for byte.
#[derive(Clone, Debug, PartialEq)]
pub struct DbJson(pub Value);

// PostgreSQL: the native types, through sqlx's own encodings.

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbTime::new(<DateTime<Utc> as Decode<Postgres>>::decode(
            value,
        )?))
    }
}

impl Type<Postgres> for DbUuid {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbUuid {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbUuid {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbUuid(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for DbJson {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<Value> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <sqlx::types::Json<Value> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbJson {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <sqlx::types::Json<&Value> as Encode<Postgres>>::encode(sqlx::types::Json(&self.0), buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbJson {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbJson(
            <sqlx::types::Json<Value> as Decode<Postgres>>::decode(value)?.0,
        ))
    }
}

// SQLite: text in one fixed form each.

fn sqlite_text(
    text: String,
    args: &mut Vec<SqliteArgumentValue<'_>>,
) -> Result<IsNull, BoxDynError> {
    args.push(SqliteArgumentValue::Text(Cow::Owned(text)));
    Ok(IsNull::No)
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for DbTime {
    fn encode_by_ref(
        &self,
        args: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        sqlite_text(self.text(), args)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        DbTime::parse(<&str as Decode<Sqlite>>::decode(value)?)
    }
}

impl Type<Sqlite> for DbUuid {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for DbUuid {
    fn encode_by_ref(
        &self,
        args: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        sqlite_text(self.0.hyphenated().to_string(), args)
    }
}

impl<'r> Decode<'r, Sqlite> for DbUuid {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Uuid::parse_str(text)
            .map(DbUuid)
            .map_err(|_| format!("{text:?} is not a UUID").into())
    }
}

impl Type<Sqlite> for DbJson {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for DbJson {
    fn encode_by_ref(
        &self,
        args: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        sqlite_text(self.0.to_string(), args)
    }
}

impl<'r> Decode<'r, Sqlite> for DbJson {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        serde_json::from_str(text)
            .map(DbJson)
            .map_err(|error| format!("not JSON ({error})").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_are_microseconds_and_sort_as_they_read() {
        let early = DateTime::parse_from_rfc3339("2026-11-26T08:00:00.5000007Z")
            .unwrap()
            .with_timezone(&Utc);
        let late = DateTime::parse_from_rfc3339("2026-11-26T08:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(DbTime::new(early).text(), "2026-11-26T08:00:00.500000Z");
        assert!(DbTime::new(early).text() < DbTime::new(late).text());
        let read = DbTime::parse(&DbTime::new(early).text()).unwrap();
        assert_eq!(read, DbTime::new(early));
        assert!(DbTime::parse("yesterday").is_err());
    }
}
