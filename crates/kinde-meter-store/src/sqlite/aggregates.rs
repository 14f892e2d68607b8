//! The maintained usage of each (agreement, feature, period): `usage_aggregates`.
//!
//! A row is [`AggregateState`] plus its `value`, stored so that reads never fold
//! raw records. The one write-side read of raw records is [`deltas_after`], which
//! the core asks for only when a late absolute becomes the latest one.

use kinde_meter_core::{
    aggregate::{AggregateState, OrderKey},
    value::{MeterValue, UsageTotal},
};
use rusqlite::{CachedStatement, Connection, OptionalExtension, Statement};

use super::{
    codec::{self, stored},
    record_order,
};

/// Which aggregate: an agreement's feature in the period starting at `period_start_ns`.
pub(super) struct PeriodKey<'a> {
    pub agreement_id: &'a str,
    pub feature_code: &'a str,
    pub period_start_ns: i64,
}

/// The state of an aggregate, the empty state if it has no row yet.
pub(super) fn load(conn: &Connection, key: &PeriodKey<'_>) -> rusqlite::Result<AggregateState> {
    let row = conn
        .prepare_cached(
            "SELECT abs_effective_at_ns, abs_seq, abs_value, deltas_after, record_count,
                    last_recorded_at_ns
             FROM usage_aggregates
             WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3",
        )?
        .query_row(
            (key.agreement_id, key.feature_code, key.period_start_ns),
            |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((abs_at, abs_seq, abs_value, deltas_after, count, last)) = row else {
        return Ok(AggregateState::default());
    };
    let latest_absolute = match (abs_at, abs_seq, abs_value) {
        (Some(at), Some(seq), Some(value)) => Some((
            OrderKey {
                effective_at: codec::timestamp(at)?,
                seq,
            },
            stored(MeterValue::parse(&value))?,
        )),
        (None, None, None) => None,
        _ => {
            return Err(codec::corrupt(
                "a partial latest absolute in usage_aggregates".into(),
            ));
        }
    };
    Ok(AggregateState {
        latest_absolute,
        deltas_after: stored(UsageTotal::parse(&deltas_after))?,
        record_count: stored(u64::try_from(count))?,
        last_recorded_at: codec::opt_timestamp(last)?,
    })
}

/// An [`AggregateState`] as its columns are stored.
struct Columns {
    abs_at: Option<i64>,
    abs_seq: Option<i64>,
    abs_value: Option<String>,
    deltas_after: String,
    value: String,
    count: i64,
    last: Option<i64>,
}

impl Columns {
    fn of(state: &AggregateState) -> rusqlite::Result<Columns> {
        let (abs_at, abs_seq, abs_value) = match state.latest_absolute {
            Some((k, v)) => (
                Some(codec::ns(k.effective_at)?),
                Some(k.seq),
                Some(v.to_string()),
            ),
            None => (None, None, None),
        };
        Ok(Columns {
            abs_at,
            abs_seq,
            abs_value,
            deltas_after: state.deltas_after.to_string(),
            value: state.value().to_string(),
            count: i64::try_from(state.record_count)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            last: state.last_recorded_at.map(codec::ns).transpose()?,
        })
    }
}

/// How a write of an aggregate makes its coalesced usage event due
/// (docs/design.md#webhook-outbox): at `max(changed_at, last event + interval)`,
/// unless it is due already.
#[derive(Debug, Clone, Copy)]
pub(super) struct UsageEventMark {
    /// Nanoseconds of the latest change of the usage.
    pub changed_at_ns: i64,
    /// The coalescing interval in nanoseconds.
    pub interval_ns: i64,
}

/// Overwrites the state of an aggregate that has a row; `false` if it has none.
/// Cheaper than [`save`]'s upsert, which first tries (and fails) to insert.
/// With a `mark`, the same statement makes the usage event due; without one
/// it writes exactly the state columns (the writer leaves the mark out when
/// the event is known to be due already, so that the common write does not
/// rewrite the due index). `plain` keeps the statement without a mark
/// between calls, so that a flush of many aggregates takes it from the
/// statement cache once.
pub(super) fn update<'c>(
    conn: &'c Connection,
    plain: &mut Option<CachedStatement<'c>>,
    key: &PeriodKey<'_>,
    state: &AggregateState,
    mark: Option<UsageEventMark>,
) -> rusqlite::Result<bool> {
    let c = Columns::of(state)?;
    let state_params = rusqlite::params![
        key.agreement_id,
        key.feature_code,
        key.period_start_ns,
        c.abs_at,
        c.abs_seq,
        c.abs_value,
        c.deltas_after,
        c.value,
        c.count,
        c.last,
    ];
    let changed = match mark {
        None => {
            let stmt = match plain {
                Some(stmt) => stmt,
                None => plain.insert(conn.prepare_cached(
                    "UPDATE usage_aggregates SET
                         abs_effective_at_ns = ?4, abs_seq = ?5, abs_value = ?6, deltas_after = ?7,
                         value = ?8, record_count = ?9, last_recorded_at_ns = ?10
                     WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3",
                )?),
            };
            stmt.execute(state_params)?
        }
        Some(mark) => {
            let mut params = state_params.to_vec();
            params.extend(rusqlite::params![mark.changed_at_ns, mark.interval_ns]);
            conn.prepare_cached(
                "UPDATE usage_aggregates SET
                     abs_effective_at_ns = ?4, abs_seq = ?5, abs_value = ?6, deltas_after = ?7,
                     value = ?8, record_count = ?9, last_recorded_at_ns = ?10,
                     usage_event_due_ns = coalesce(usage_event_due_ns,
                         max(?11, coalesce(usage_event_last_ns + ?12, ?11)))
                 WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3",
            )?
            .execute(&*params)?
        }
    };
    Ok(changed > 0)
}

/// Writes the state of an aggregate (and its value) for the period ending at
/// `period_end_ns`, marking its usage event due like [`update`].
pub(super) fn save(
    conn: &Connection,
    key: &PeriodKey<'_>,
    period_end_ns: i64,
    state: &AggregateState,
    mark: Option<UsageEventMark>,
) -> rusqlite::Result<()> {
    let c = Columns::of(state)?;
    conn.prepare_cached(
        "INSERT INTO usage_aggregates (agreement_id, feature_code, period_start_ns, period_end_ns,
             abs_effective_at_ns, abs_seq, abs_value, deltas_after, value, record_count,
             last_recorded_at_ns, usage_event_due_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (agreement_id, feature_code, period_start_ns) DO UPDATE SET
             abs_effective_at_ns = excluded.abs_effective_at_ns,
             abs_seq = excluded.abs_seq,
             abs_value = excluded.abs_value,
             deltas_after = excluded.deltas_after,
             value = excluded.value,
             record_count = excluded.record_count,
             last_recorded_at_ns = excluded.last_recorded_at_ns,
             usage_event_due_ns = CASE WHEN ?12 IS NULL THEN usage_event_due_ns
                 ELSE coalesce(usage_event_due_ns,
                               max(?12, coalesce(usage_event_last_ns + ?13, ?12))) END",
    )?
    .execute((
        key.agreement_id,
        key.feature_code,
        key.period_start_ns,
        period_end_ns,
        c.abs_at,
        c.abs_seq,
        c.abs_value,
        c.deltas_after,
        c.value,
        c.count,
        c.last,
        mark.map(|m| m.changed_at_ns),
        mark.map_or(0, |m| m.interval_ns),
    ))?;
    Ok(())
}

/// Why the deltas after an order key could not be summed.
pub(super) enum SumError {
    /// The sum passed 10^27 (only possible if the stored state is inconsistent).
    OutOfRange,
    /// SQLite failed.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for SumError {
    fn from(e: rusqlite::Error) -> Self {
        SumError::Sql(e)
    }
}

/// The unfiled part of [`deltas_after`]: the period's deltas after `?6`
/// (the filed mark) ordered after `(?4, ?5)`, by a rowid range.
pub(super) const DELTAS_TAIL: &str = "SELECT value FROM usage_records
     WHERE seq > ?6 AND agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3
       AND effective_at_ns >= ?4 AND (effective_at_ns > ?4 OR seq > ?5)
       AND meter_type = 'delta'";

/// The sum of the period's deltas ordered after `after`: the filed records
/// the period's runs name after it, each read by seq (deleted ones skipped),
/// and the unfiled tail (`record_order.rs`). The two parts are disjoint by
/// `filed_upto`, the mark the writer's transaction read when it began (it
/// moves only when that transaction files, before COMMIT).
pub(super) fn deltas_after(
    conn: &Connection,
    key: &PeriodKey<'_>,
    filed_upto: i64,
    after: OrderKey,
) -> Result<UsageTotal, SumError> {
    let after_ns = codec::ns(after.effective_at)?;
    let mut sum = UsageTotal::ZERO;
    let mut add = |value: String| -> Result<(), SumError> {
        let value = stored(MeterValue::parse(&value))?;
        sum = sum.checked_add(value).map_err(|_| SumError::OutOfRange)?;
        Ok(())
    };
    let filed = record_order::filed_after(
        conn,
        key.agreement_id,
        key.feature_code,
        key.period_start_ns,
        (after_ns, after.seq),
    )?;
    let mut delta = conn.prepare_cached(
        "SELECT value FROM usage_records WHERE seq = ?1 AND meter_type = 'delta'",
    )?;
    for seq in filed {
        if let Some(value) = delta.query_row([seq], |r| r.get(0)).optional()? {
            add(value)?;
        }
    }
    let mut tail = conn.prepare_cached(DELTAS_TAIL)?;
    let mut rows = tail.query((
        key.agreement_id,
        key.feature_code,
        key.period_start_ns,
        after_ns,
        after.seq,
        filed_upto,
    ))?;
    while let Some(r) = rows.next()? {
        add(r.get(0)?)?;
    }
    Ok(sum)
}

/// Usage of one feature in a period, as read back: value, record count, last receipt.
pub(super) fn read(
    conn: &Connection,
    key: &PeriodKey<'_>,
) -> rusqlite::Result<Option<(UsageTotal, u64, Option<jiff::Timestamp>)>> {
    read_with(&mut *conn.prepare_cached(READ)?, key)
}

/// The statement of [`read`].
pub(super) const READ: &str =
    "SELECT value, record_count, last_recorded_at_ns FROM usage_aggregates
     WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3";

/// [`read`] with its statement prepared already (the hot reads keep it).
pub(super) fn read_with(
    statement: &mut Statement<'_>,
    key: &PeriodKey<'_>,
) -> rusqlite::Result<Option<(UsageTotal, u64, Option<jiff::Timestamp>)>> {
    let row = statement
        .query_row(
            (key.agreement_id, key.feature_code, key.period_start_ns),
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .optional()?;
    row.map(|(value, count, last)| read_row(&value, count, last))
        .transpose()
}

/// A usage read's row from its stored columns (`value`, `record_count`,
/// `last_recorded_at_ns`), whichever statement read them.
pub(super) fn read_row(
    value: &str,
    count: i64,
    last: Option<i64>,
) -> rusqlite::Result<(UsageTotal, u64, Option<jiff::Timestamp>)> {
    Ok((
        stored(UsageTotal::parse(value))?,
        stored(u64::try_from(count))?,
        codec::opt_timestamp(last)?,
    ))
}
