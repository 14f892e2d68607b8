//! The webhook outbox's events: written in the transaction of the change that
//! raises them (agreement creation, a record crossing a threshold), or built
//! from the aggregates whose coalesced usage event is due
//! (docs/design.md#webhook-outbox).

use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    catalog::Feature,
    ids::{AgreementId, CustomerId, FeatureCode},
    period::Period,
    value::UsageTotal,
    webhook::{Event, EventId, EventType, data},
};
use rusqlite::{Connection, OptionalExtension, Row};

use super::codec::{self, stored};
use crate::new_events::{self, event, threshold_key, usage_key};

/// Columns [`from_row`] reads, in its order (of `events`, aliased `e`).
pub(super) const EVENT_COLUMNS: &str = "e.id, e.type, e.created_at_ns, e.data";

/// An event from the columns [`EVENT_COLUMNS`], starting at column `at`.
pub(super) fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Event> {
    let code: String = r.get(at + 1)?;
    let event_type = EventType::parse(&code)
        .ok_or_else(|| codec::corrupt(format!("unknown event type {code:?} in events")))?;
    let data: String = r.get(at + 3)?;
    Ok(Event {
        id: stored(EventId::parse(r.get::<_, String>(at)?))?,
        event_type,
        created_at: codec::timestamp(r.get(at + 2)?)?,
        data: stored(serde_json::from_str(&data))?,
    })
}

/// Writes `event` to the outbox; with a `dedupe_key` only if no event has that
/// key yet. Returns whether it was written.
pub(super) fn insert(
    conn: &Connection,
    event: &Event,
    dedupe_key: Option<&str>,
) -> rusqlite::Result<bool> {
    let written = conn
        .prepare_cached(
            "INSERT INTO events (id, type, created_at_ns, data, dedupe_key)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )?
        .execute((
            event.id.as_str(),
            event.event_type.as_str(),
            codec::ns(event.created_at)?,
            event.data.to_string(),
            dedupe_key,
        ))?;
    Ok(written > 0)
}

/// One event by id.
pub(super) fn load(conn: &Connection, id: &EventId) -> rusqlite::Result<Option<Event>> {
    conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1"
    ))?
    .query_row([id.as_str()], |r| from_row(r, 0))
    .optional()
}

/// Writes the events of an agreement creation at `now` (see
/// [`new_events::agreement_events`]).
pub(super) fn agreement_events(
    conn: &Connection,
    created: &Agreement,
    ended: &[Agreement],
    now: Timestamp,
) -> rusqlite::Result<()> {
    for e in &new_events::agreement_events(created, ended, now) {
        insert(conn, e, None)?;
    }
    Ok(())
}

/// What a stored record did to its period's usage, for threshold events.
pub(super) struct Crossing<'a> {
    pub customer_id: &'a CustomerId,
    pub agreement_id: &'a AgreementId,
    pub feature: &'a Feature,
    pub period: Period,
    pub period_start_ns: i64,
    pub before: UsageTotal,
    pub after: UsageTotal,
    pub at: Timestamp,
}

/// Writes a `customer.entitlement_threshold_reached` for each threshold of the
/// feature's `limit_max` the change crosses, once per agreement, feature,
/// period and threshold. The caller skips features without `limit_max`.
/// Returns whether the change crossed a threshold.
pub(super) fn threshold_events(conn: &Connection, c: &Crossing<'_>) -> rusqlite::Result<bool> {
    let change = kinde_meter_core::entitlement::UsageChange {
        before: c.before,
        after: c.after,
    };
    let Some(limit_max) = c.feature.limit_max else {
        return Ok(false);
    };
    let mut crossed = false;
    for percent in change.crossed_thresholds(c.feature) {
        crossed = true;
        let key = threshold_key(c.agreement_id, &c.feature.code, c.period_start_ns, percent);
        let data = data::entitlement_threshold_reached(
            c.customer_id,
            c.agreement_id,
            &c.feature.code,
            percent,
            limit_max,
            c.after,
            c.period,
        );
        let e = event(EventType::EntitlementThresholdReached, c.at, &key, data);
        insert(conn, &e, Some(&key))?;
    }
    Ok(crossed)
}

/// Most usage events one call of [`build_usage_events`] builds (the rest stay
/// due for the next call), so that it holds the write lock briefly.
const BUILD_LIMIT: i64 = 1000;

/// Builds the due coalesced `customer.meter_usage_updated` events: one per
/// aggregate row whose event is due at `now`, carrying its usage now; the row's
/// event is then not due, and the next one not before an interval. When no
/// webhook subscribes to the type, the rows are only marked built. Returns how
/// many events were written.
pub(super) fn build_usage_events(conn: &Connection, now: Timestamp) -> rusqlite::Result<usize> {
    let now_ns = codec::ns_clamped(now);
    let wanted = any_subscriber(conn, EventType::MeterUsageUpdated)?;
    let mut stmt = conn.prepare_cached(
        "SELECT u.agreement_id, u.feature_code, u.period_start_ns, u.period_end_ns, u.value,
                a.customer_id
         FROM usage_aggregates u JOIN agreements a ON a.id = u.agreement_id
         WHERE u.usage_event_due_ns <= ?1
         ORDER BY u.usage_event_due_ns
         LIMIT ?2",
    )?;
    let due = stmt
        .query_map((now_ns, BUILD_LIMIT), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut built = 0;
    for (agreement, feature, start_ns, end_ns, value, customer) in due {
        conn.prepare_cached(
            "UPDATE usage_aggregates SET usage_event_due_ns = NULL, usage_event_last_ns = ?4
             WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3",
        )?
        .execute((&agreement, &feature, start_ns, now_ns))?;
        if !wanted {
            continue;
        }
        let agreement_id = stored(AgreementId::parse(agreement))?;
        let feature_code = stored(FeatureCode::parse(feature))?;
        let period = Period {
            start: codec::timestamp(start_ns)?,
            end: codec::timestamp(end_ns)?,
        };
        let data = data::meter_usage_updated(
            &stored(CustomerId::parse(customer))?,
            &agreement_id,
            &feature_code,
            stored(UsageTotal::parse(&value))?,
            period,
        );
        let key = usage_key(&agreement_id, &feature_code, start_ns, now_ns);
        insert(
            conn,
            &event(EventType::MeterUsageUpdated, now, &key, data),
            None,
        )?;
        built += 1;
    }
    Ok(built)
}

/// Whether any aggregate's usage event is due at `now`. Answered on a read
/// connection, so that an idle delivery worker's polling costs the writer
/// nothing.
pub(super) fn usage_event_due(conn: &Connection, now: Timestamp) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM usage_aggregates WHERE usage_event_due_ns <= ?1)",
    )?
    .query_row([codec::ns_clamped(now)], |r| r.get(0))
}

/// Whether any webhook subscribes to `event_type`.
fn any_subscriber(conn: &Connection, event_type: EventType) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT event_types FROM webhooks")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let types: Vec<String> = stored(serde_json::from_str(&r.get::<_, String>(0)?))?;
        if types.iter().any(|t| t == event_type.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}
