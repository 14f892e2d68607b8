//! Conversions between domain values and PostgreSQL column values.
//!
//! - Instants are `bigint` nanoseconds since the Unix epoch, as in the SQLite
//!   store: `timestamptz` keeps only microseconds, while RFC 3339 timestamps
//!   carry nanoseconds and the order of records (effective time, then arrival)
//!   must not change by rounding. Both backends hold the same instants (years
//!   1678 to 2261) and compare them the same way.
//! - Decimals are `numeric` (exact), written and read as canonical text: the
//!   domain's own parser and formatter stay the only ones, and `trim_scale`
//!   strips the zeros `numeric(p, 9)` pads with.

use jiff::Timestamp;

use super::failure::{Failure, PgResult};

/// An instant as stored: nanoseconds since the epoch.
pub(super) fn ns(at: Timestamp) -> PgResult<i64> {
    i64::try_from(at.as_nanosecond()).map_err(|_| {
        Failure::Data(format!(
            "{at} lies outside the instants the store holds (years 1678 to 2261)"
        ))
    })
}

/// An instant as stored, clamped into range: for bounds of comparisons.
pub(super) fn ns_clamped(at: Timestamp) -> i64 {
    let n = at.as_nanosecond();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// A stored instant.
pub(super) fn timestamp(ns: i64) -> PgResult<Timestamp> {
    stored(Timestamp::from_nanosecond(i128::from(ns)), "an instant")
}

/// A stored optional instant.
pub(super) fn opt_timestamp(ns: Option<i64>) -> PgResult<Option<Timestamp>> {
    ns.map(timestamp).transpose()
}

/// Decodes a stored value with the domain's own parser.
pub(super) fn stored<T, E: std::fmt::Display>(parsed: Result<T, E>, what: &str) -> PgResult<T> {
    parsed.map_err(|e| Failure::Data(format!("{what}: {e}")))
}
