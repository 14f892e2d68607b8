//! The maintained usage of each (agreement, feature, period): `usage_aggregates`,
//! created ([`ensure`]) and locked in one deterministic order ([`lock`]) by the
//! batch that updates it, and the "deltas after a late absolute" read
//! ([`deltas_after`]).
//!
//! Design: `docs/design.md#locking-order`.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use jiff::SignedDuration;
use kinde_meter_core::{
    aggregate::{AggregateState, OrderKey},
    value::{MeterValue, UsageTotal},
};

use super::{
    codec::{self, stored},
    failure::{Failure, PgResult},
};

/// Creates missing aggregate rows ([`ensure`]).
pub(super) const ENSURE: &str =
    "INSERT INTO usage_aggregates (agreement_id, feature_code, period_start_ns, period_end_ns)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
             ON CONFLICT DO NOTHING";

/// Locks aggregate rows in key order ([`lock`]).
pub(super) const LOCK: &str =
    "SELECT g.agreement_id, g.feature_code, g.period_start_ns, g.abs_effective_at_ns,
                    g.abs_seq, trim_scale(g.abs_value)::text, trim_scale(g.deltas_after)::text,
                    g.record_count, g.last_recorded_at_ns
             FROM usage_aggregates g
             JOIN unnest($1::text[], $2::text[], $3::int8[]) AS k (a, f, s)
               ON g.agreement_id = k.a AND g.feature_code = k.f AND g.period_start_ns = k.s
             ORDER BY g.agreement_id COLLATE \"C\", g.feature_code COLLATE \"C\", g.period_start_ns
             FOR UPDATE OF g";

/// Writes aggregates' new states ([`save`]).
pub(super) const SAVE: &str = "UPDATE usage_aggregates g SET
                 abs_effective_at_ns = u.abs_at, abs_seq = u.abs_seq,
                 abs_value = u.abs_value::numeric, deltas_after = u.deltas::numeric,
                 value = u.value::numeric, record_count = u.count, last_recorded_at_ns = u.last,
                 usage_event_due_ns = CASE WHEN u.changed IS NULL THEN g.usage_event_due_ns
                     ELSE coalesce(g.usage_event_due_ns,
                                   greatest(u.changed, g.usage_event_last_ns + $12)) END
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[],
                         $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[])
                  AS u (a, f, s, abs_at, abs_seq, abs_value, deltas, value, count, last, changed)
             WHERE g.agreement_id = u.a AND g.feature_code = u.f AND g.period_start_ns = u.s";

/// Which aggregate. Its derived order (bytewise strings, then the instant) is
/// the order rows are locked in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PeriodKey {
    pub agreement_id: String,
    pub feature_code: String,
    pub period_start_ns: i64,
}

/// Creates the missing rows of `keys` (sorted, with their period ends), empty.
/// An empty row reads like no row at all.
pub(super) async fn ensure(conn: &impl GenericClient, keys: &[(PeriodKey, i64)]) -> PgResult<()> {
    let (a, f, s, e) = columns(keys.iter().map(|(k, end)| (k, *end)));
    let stmt = conn.prepare_cached(ENSURE).await?;
    conn.execute(&stmt, &[&a, &f, &s, &e]).await?;
    Ok(())
}

/// Locks the rows of `keys` (which must exist) in key order and returns their states.
pub(super) async fn lock(
    conn: &impl GenericClient,
    keys: &[(PeriodKey, i64)],
) -> PgResult<HashMap<PeriodKey, AggregateState>> {
    let (a, f, s, _) = columns(keys.iter().map(|(k, end)| (k, *end)));
    let stmt = conn.prepare_cached(LOCK).await?;
    let rows = conn.query(&stmt, &[&a, &f, &s]).await?;
    let mut states = HashMap::with_capacity(rows.len());
    for r in rows {
        let key = PeriodKey {
            agreement_id: r.get(0),
            feature_code: r.get(1),
            period_start_ns: r.get(2),
        };
        let latest_absolute = match (
            r.get::<_, Option<i64>>(3),
            r.get::<_, Option<i64>>(4),
            r.get::<_, Option<&str>>(5),
        ) {
            (Some(at), Some(seq), Some(value)) => Some((
                OrderKey {
                    effective_at: codec::timestamp(at)?,
                    seq,
                },
                stored(MeterValue::parse(value), "usage_aggregates.abs_value")?,
            )),
            (None, None, None) => None,
            _ => {
                return Err(Failure::Data(
                    "a partial latest absolute in usage_aggregates".to_owned(),
                ));
            }
        };
        let state = AggregateState {
            latest_absolute,
            deltas_after: stored(UsageTotal::parse(r.get(6)), "usage_aggregates.deltas_after")?,
            record_count: stored(u64::try_from(r.get::<_, i64>(7)), "record_count")?,
            last_recorded_at: codec::opt_timestamp(r.get(8))?,
        };
        states.insert(key, state);
    }
    if states.len() != keys.len() {
        return Err(Failure::Data(format!(
            "{} of {} aggregate rows to lock were not found",
            keys.len() - states.len(),
            keys.len()
        )));
    }
    Ok(states)
}

/// The sum of the committed deltas of the period ordered after `after`, by a
/// range read of `usage_records`' primary key. `None` if it passes 10^27.
pub(super) async fn deltas_after(
    conn: &impl GenericClient,
    key: &PeriodKey,
    after: OrderKey,
) -> PgResult<Option<UsageTotal>> {
    let stmt = conn
        .prepare_cached(
            "SELECT trim_scale(coalesce(sum(value), 0))::text FROM usage_records
             WHERE agreement_id = $1 AND feature_code = $2 AND period_start_ns = $3
               AND (effective_at_ns, seq) > ($4, $5) AND meter_type = 'delta'",
        )
        .await?;
    let row = conn
        .query_one(
            &stmt,
            &[
                &key.agreement_id,
                &key.feature_code,
                &key.period_start_ns,
                &codec::ns(after.effective_at)?,
                &after.seq,
            ],
        )
        .await?;
    // A sum is a valid decimal; one that does not parse has passed 10^27.
    Ok(UsageTotal::parse(row.get(0)).ok())
}

/// Writes the new states of aggregates (locked by [`lock`]) in one statement.
///
/// The same statement marks the coalesced usage webhook event of each
/// aggregate whose usage changed (the third of each triple: the instant of its
/// latest change) due at `max(change, last event + interval)`, unless it is
/// due already (docs/design.md#webhook-outbox).
pub(super) async fn save(
    conn: &impl GenericClient,
    states: &[(&PeriodKey, &AggregateState, Option<i64>)],
    usage_event_interval: SignedDuration,
) -> PgResult<()> {
    if states.is_empty() {
        return Ok(());
    }
    let n = states.len();
    let mut a = Vec::with_capacity(n);
    let mut f = Vec::with_capacity(n);
    let mut s = Vec::with_capacity(n);
    let mut abs_at = Vec::with_capacity(n);
    let mut abs_seq = Vec::with_capacity(n);
    let mut abs_value = Vec::with_capacity(n);
    let mut deltas = Vec::with_capacity(n);
    let mut value = Vec::with_capacity(n);
    let mut count = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    let mut changed_at = Vec::with_capacity(n);
    for (key, state, usage_changed_at) in states {
        changed_at.push(*usage_changed_at);
        a.push(key.agreement_id.as_str());
        f.push(key.feature_code.as_str());
        s.push(key.period_start_ns);
        match state.latest_absolute {
            Some((k, v)) => {
                abs_at.push(Some(codec::ns(k.effective_at)?));
                abs_seq.push(Some(k.seq));
                abs_value.push(Some(v.to_string()));
            }
            None => {
                abs_at.push(None);
                abs_seq.push(None);
                abs_value.push(None);
            }
        }
        deltas.push(state.deltas_after.to_string());
        value.push(state.value().to_string());
        count.push(
            i64::try_from(state.record_count)
                .map_err(|_| Failure::Data("record count beyond i64".to_owned()))?,
        );
        last.push(state.last_recorded_at.map(codec::ns).transpose()?);
    }
    let stmt = conn.prepare_cached(SAVE).await?;
    // At most about 31 years, so that `last + interval` stays within bigint.
    let interval_ns = i64::try_from(
        usage_event_interval
            .as_nanos()
            .clamp(0, 1_000_000_000_000_000_000),
    )
    .unwrap_or(0);
    conn.execute(
        &stmt,
        &[
            &a,
            &f,
            &s,
            &abs_at,
            &abs_seq,
            &abs_value,
            &deltas,
            &value,
            &count,
            &last,
            &changed_at,
            &interval_ns,
        ],
    )
    .await?;
    Ok(())
}

/// Usage of one feature in a period, as read back: value, record count, last receipt.
pub(super) async fn read(
    conn: &impl GenericClient,
    key: &PeriodKey,
) -> PgResult<Option<(UsageTotal, u64, Option<jiff::Timestamp>)>> {
    let stmt = conn
        .prepare_cached(
            "SELECT trim_scale(value)::text, record_count, last_recorded_at_ns
             FROM usage_aggregates
             WHERE agreement_id = $1 AND feature_code = $2 AND period_start_ns = $3",
        )
        .await?;
    let row = conn
        .query_opt(
            &stmt,
            &[&key.agreement_id, &key.feature_code, &key.period_start_ns],
        )
        .await?;
    row.map(|r| {
        Ok((
            stored(UsageTotal::parse(r.get(0)), "usage_aggregates.value")?,
            stored(u64::try_from(r.get::<_, i64>(1)), "record_count")?,
            codec::opt_timestamp(r.get(2))?,
        ))
    })
    .transpose()
}

/// Usage of several features of an agreement in one period (as [`read`]), by
/// feature code; features without an aggregate row are absent.
pub(super) async fn read_features(
    conn: &impl GenericClient,
    agreement_id: &str,
    feature_codes: &[&str],
    period_start_ns: i64,
) -> PgResult<HashMap<String, (UsageTotal, u64, Option<jiff::Timestamp>)>> {
    let stmt = conn
        .prepare_cached(
            "SELECT feature_code, trim_scale(value)::text, record_count, last_recorded_at_ns
             FROM usage_aggregates
             WHERE agreement_id = $1 AND feature_code = ANY($2) AND period_start_ns = $3",
        )
        .await?;
    let rows = conn
        .query(&stmt, &[&agreement_id, &feature_codes, &period_start_ns])
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.get::<_, String>(0),
                (
                    stored(UsageTotal::parse(r.get(1)), "usage_aggregates.value")?,
                    stored(u64::try_from(r.get::<_, i64>(2)), "record_count")?,
                    codec::opt_timestamp(r.get(3))?,
                ),
            ))
        })
        .collect()
}

/// Columns of `(key, period end)` pairs as the arrays the statements take.
fn columns<'a>(
    keys: impl Iterator<Item = (&'a PeriodKey, i64)>,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<i64>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, end) in keys {
        out.0.push(k.agreement_id.as_str());
        out.1.push(k.feature_code.as_str());
        out.2.push(k.period_start_ns);
        out.3.push(end);
    }
    out
}
