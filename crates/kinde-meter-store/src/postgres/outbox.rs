//! The webhook outbox's events: written in the transaction of the change that
//! raises them (agreement creation, records crossing thresholds in a group
//! commit), or built from the aggregates whose coalesced usage event is due
//! (docs/design.md#webhook-outbox).
//!
//! Events are inserted a statement at a time, however many: one multi-row
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` (the conflict being a
//! threshold's `dedupe_key` already taken).

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Object};
use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    catalog::Feature,
    entitlement::UsageChange,
    ids::{AgreementId, CustomerId, FeatureCode},
    period::Period,
    value::UsageTotal,
    webhook::{Event, EventId, EventType, data},
};
use tokio_postgres::Row;

use crate::new_events::{self, event, threshold_key, usage_key};

use super::{
    codec::{self, stored},
    failure::PgResult,
};

/// Writes events ([`insert`]).
pub(super) const INSERT_EVENTS: &str =
    "INSERT INTO events (id, type, created_at_ns, data, dedupe_key)
             SELECT i, t, c, d::json, k
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[])
                  WITH ORDINALITY AS u (i, t, c, d, k, o)
             ORDER BY o
             ON CONFLICT DO NOTHING";

/// Columns [`from_row`] reads, in its order (of `events`, aliased `e`).
pub(super) const EVENT_COLUMNS: &str = "e.id, e.type, e.created_at_ns, e.data::text";

/// An event from the columns [`EVENT_COLUMNS`], starting at column `at`.
pub(super) fn from_row(r: &Row, at: usize) -> PgResult<Event> {
    let code: &str = r.get(at + 1);
    let event_type = stored(
        EventType::parse(code).ok_or("unknown event type"),
        "events.type",
    )?;
    Ok(Event {
        id: stored(EventId::parse(r.get::<_, String>(at)), "events.id")?,
        event_type,
        created_at: codec::timestamp(r.get(at + 2))?,
        data: stored(serde_json::from_str(r.get(at + 3)), "events.data")?,
    })
}

/// An event to write, with its dedupe key if it is to be raised only once.
pub(super) struct NewEvent {
    pub event: Event,
    pub dedupe_key: Option<String>,
}

/// Writes `events` in one statement, skipping those whose dedupe key (or id)
/// is taken; returns how many were written.
pub(super) async fn insert(conn: &impl GenericClient, events: &[NewEvent]) -> PgResult<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let n = events.len();
    let mut id = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut body = Vec::with_capacity(n);
    let mut key = Vec::with_capacity(n);
    for e in events {
        id.push(e.event.id.as_str());
        kind.push(e.event.event_type.as_str());
        at.push(codec::ns(e.event.created_at)?);
        body.push(e.event.data.to_string());
        key.push(e.dedupe_key.as_deref());
    }
    let stmt = conn.prepare_cached(INSERT_EVENTS).await?;
    Ok(conn.execute(&stmt, &[&id, &kind, &at, &body, &key]).await?)
}

/// One event by id.
pub(super) async fn load(conn: &impl GenericClient, id: &EventId) -> PgResult<Option<Event>> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1"
        ))
        .await?;
    conn.query_opt(&stmt, &[&id.as_str()])
        .await?
        .map(|r| from_row(&r, 0))
        .transpose()
}

/// The events of an agreement creation at `now` (see
/// [`new_events::agreement_events`]), none deduplicated.
pub(super) fn agreement_events(
    created: &Agreement,
    ended: &[Agreement],
    now: Timestamp,
) -> Vec<NewEvent> {
    new_events::agreement_events(created, ended, now)
        .into_iter()
        .map(|event| NewEvent {
            event,
            dedupe_key: None,
        })
        .collect()
}

/// What a stored record did to its period's usage, for threshold events.
pub(super) struct Crossing<'a> {
    pub customer_id: &'a CustomerId,
    pub agreement_id: &'a AgreementId,
    pub feature: &'a Feature,
    pub period_start_ns: i64,
    pub period_end_ns: i64,
    pub before: UsageTotal,
    pub after: UsageTotal,
    pub at: Timestamp,
}

/// The threshold events of a batch: collected record by record (rarely any),
/// written with one statement at the end.
#[derive(Default)]
pub(super) struct Thresholds {
    events: Vec<NewEvent>,
    keys: HashSet<String>,
}

impl Thresholds {
    /// Adds a `customer.entitlement_threshold_reached` for each threshold of the
    /// feature's `limit_max` the change crosses, once per agreement, feature,
    /// period and threshold (here by key, across batches by `dedupe_key`). The
    /// caller skips features without `limit_max`.
    pub(super) fn add(&mut self, c: &Crossing<'_>) -> PgResult<()> {
        let Some(limit_max) = c.feature.limit_max else {
            return Ok(());
        };
        let change = UsageChange {
            before: c.before,
            after: c.after,
        };
        for percent in change.crossed_thresholds(c.feature) {
            let key = threshold_key(c.agreement_id, &c.feature.code, c.period_start_ns, percent);
            if !self.keys.insert(key.clone()) {
                continue;
            }
            let period = Period {
                start: codec::timestamp(c.period_start_ns)?,
                end: codec::timestamp(c.period_end_ns)?,
            };
            let data = data::entitlement_threshold_reached(
                c.customer_id,
                c.agreement_id,
                &c.feature.code,
                percent,
                limit_max,
                c.after,
                period,
            );
            self.events.push(NewEvent {
                event: event(EventType::EntitlementThresholdReached, c.at, &key, data),
                dedupe_key: Some(key),
            });
        }
        Ok(())
    }

    /// Whether no threshold was crossed.
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Writes them, if any (no statement otherwise).
    pub(super) async fn write(&self, conn: &impl GenericClient) -> PgResult<()> {
        insert(conn, &self.events).await?;
        Ok(())
    }
}

/// Most usage events one transaction of [`build_usage_events`] builds; it
/// goes on with another until none is left due, or [`BUILD_ROUNDS`] are done.
const BUILD_LIMIT: i64 = 1000;
/// Most transactions one call of [`build_usage_events`] runs (the rest waits
/// for the next call).
const BUILD_ROUNDS: usize = 16;

/// Builds the due coalesced `customer.meter_usage_updated` events: one per
/// aggregate row whose event is due at `now`, carrying its usage now; the row's
/// event is then not due, and the next one not before an interval. When no
/// webhook subscribes to the type, the rows are only marked built. Returns how
/// many events were written.
///
/// Rows are taken with `FOR UPDATE SKIP LOCKED`: a row a writer (or another
/// server's build) holds is left for the next call rather than waited for, so
/// this never blocks a group commit nor deadlocks with one.
pub(super) async fn build_usage_events(conn: &mut Object, now: Timestamp) -> PgResult<usize> {
    let now_ns = codec::ns_clamped(now);
    // The worker asks every second or so: one read of the due index when
    // nothing is due, no transaction.
    let due = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM usage_aggregates WHERE usage_event_due_ns <= $1)",
        )
        .await?;
    if !conn.query_one(&due, &[&now_ns]).await?.get::<_, bool>(0) {
        return Ok(0);
    }
    let mut built = 0;
    for _ in 0..BUILD_ROUNDS {
        let tx = conn.transaction().await?;
        let wanted = any_subscriber(&tx, EventType::MeterUsageUpdated).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE usage_aggregates g
                 SET usage_event_due_ns = NULL, usage_event_last_ns = $1
                 FROM agreements a
                 WHERE (g.agreement_id, g.feature_code, g.period_start_ns) IN (
                         SELECT agreement_id, feature_code, period_start_ns
                         FROM usage_aggregates
                         WHERE usage_event_due_ns <= $1
                         ORDER BY usage_event_due_ns
                         LIMIT $2
                         FOR UPDATE SKIP LOCKED)
                   AND a.id = g.agreement_id
                 RETURNING g.agreement_id, g.feature_code, g.period_start_ns, g.period_end_ns,
                           trim_scale(g.value)::text, a.customer_id",
            )
            .await?;
        let rows = tx.query(&stmt, &[&now_ns, &BUILD_LIMIT]).await?;
        let taken = rows.len();
        if wanted {
            let mut events = Vec::with_capacity(taken);
            for r in &rows {
                let agreement_id = stored(AgreementId::parse(r.get::<_, String>(0)), "agreement")?;
                let feature_code = stored(FeatureCode::parse(r.get::<_, String>(1)), "feature")?;
                let start_ns: i64 = r.get(2);
                let period = Period {
                    start: codec::timestamp(start_ns)?,
                    end: codec::timestamp(r.get(3))?,
                };
                let data = data::meter_usage_updated(
                    &stored(CustomerId::parse(r.get::<_, String>(5)), "customer")?,
                    &agreement_id,
                    &feature_code,
                    stored(UsageTotal::parse(r.get(4)), "usage_aggregates.value")?,
                    period,
                );
                let key = usage_key(&agreement_id, &feature_code, start_ns, now_ns);
                events.push(NewEvent {
                    event: event(EventType::MeterUsageUpdated, now, &key, data),
                    dedupe_key: None,
                });
            }
            built += usize::try_from(insert(&tx, &events).await?).unwrap_or(usize::MAX);
        }
        tx.commit().await?;
        if taken < BUILD_LIMIT as usize {
            break;
        }
    }
    Ok(built)
}

/// Whether any webhook subscribes to `event_type`.
async fn any_subscriber(conn: &impl GenericClient, event_type: EventType) -> PgResult<bool> {
    let stmt = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM webhooks WHERE $1 = ANY (event_types))")
        .await?;
    Ok(conn.query_one(&stmt, &[&event_type.as_str()]).await?.get(0))
}
