//! Conversions between domain values and SQLite column values.
//!
//! Instants are stored as `i64` nanoseconds since the Unix epoch (years 1678 to
//! 2261), so they sort and compare in SQL; decimals as canonical text, never
//! `REAL`, so they stay exact. A stored value that does not decode is reported as a
//! conversion error: it means the file was damaged or written by something else.

use jiff::Timestamp;
use rusqlite::types::Type;

/// An instant as stored: nanoseconds since the epoch.
pub(super) fn ns(at: Timestamp) -> rusqlite::Result<i64> {
    i64::try_from(at.as_nanosecond()).map_err(|_| {
        rusqlite::Error::ToSqlConversionFailure(
            format!("{at} lies outside the instants the store holds (years 1678 to 2261)").into(),
        )
    })
}

/// An instant as stored, clamped into range: for bounds of comparisons, where an
/// instant before (after) every storable one compares like the smallest (largest).
pub(super) fn ns_clamped(at: Timestamp) -> i64 {
    let n = at.as_nanosecond();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// A stored instant.
pub(super) fn timestamp(ns: i64) -> rusqlite::Result<Timestamp> {
    stored(Timestamp::from_nanosecond(i128::from(ns)))
}

/// A stored optional instant.
pub(super) fn opt_timestamp(ns: Option<i64>) -> rusqlite::Result<Option<Timestamp>> {
    ns.map(timestamp).transpose()
}

/// Decodes a stored column value with the domain's own parser, turning its error
/// into rusqlite's conversion error.
pub(super) fn stored<T, E>(parsed: Result<T, E>) -> rusqlite::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parsed.map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e)))
}

/// A stored value that decodes to nothing the domain knows.
pub(super) fn corrupt(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, what.into())
}

/// An error of kinde-meter's own, reported like SQLite's.
pub(super) fn failure(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(message),
    )
}
