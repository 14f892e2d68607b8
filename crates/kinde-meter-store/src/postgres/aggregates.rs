//! The maintained usage of each (agreement, feature, period): `usage_aggregates`,
//! created ([`ensure`]) and locked in one deterministic order ([`lock`]) by the
//! batch that updates it, and the "deltas after a late absolute" read
//! ([`deltas_after`]). Rows are never deleted, so the writer skips creating
//! the ones it has seen committed ([`Known`]).
//!
//! Design: `docs/design.md#locking-order`.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
};

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

/// Locks aggregate rows in key order, then takes `$4` arrival sequence
/// numbers ([`lock`]): one statement, whose rows are the locked aggregates
/// (`seq` NULL) followed by the sequence numbers (every other column NULL).
/// `Append` runs its inputs in order (the statement cannot run in parallel:
/// `FOR UPDATE`, `nextval`), so the numbers are taken once every lock is held,
/// as when they were a statement of their own.
pub(super) const LOCK: &str = "WITH locked AS (
                 SELECT g.agreement_id, g.feature_code, g.period_start_ns, g.abs_effective_at_ns,
                        g.abs_seq, trim_scale(g.abs_value)::text,
                        trim_scale(g.deltas_after)::text, g.record_count, g.last_recorded_at_ns
                 FROM usage_aggregates g
                 JOIN unnest($1::text[], $2::text[], $3::int8[]) AS k (a, f, s)
                   ON g.agreement_id = k.a AND g.feature_code = k.f AND g.period_start_ns = k.s
                 ORDER BY g.agreement_id COLLATE \"C\", g.feature_code COLLATE \"C\",
                          g.period_start_ns
                 FOR UPDATE OF g)
             SELECT *, NULL::int8 FROM locked
             UNION ALL
             SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                    nextval('usage_record_seq')
             FROM generate_series(1, $4)";

/// Writes aggregates' new states ([`SaveColumns`]), its parameters from `$13`
/// on: the tail of the batch's one write statement, after the records' INSERT
/// (`batch::WRITE`). Macros, so that `concat!` can take them; the parts are
/// shared with the guarded write of a batch sent in one flight
/// (`one_flight::WRITE_GUARDED`).
macro_rules! save_sql {
    () => {
        concat!(
            "UPDATE usage_aggregates g SET ",
            $crate::postgres::aggregates::save_set_sql!(),
            " FROM unnest(",
            $crate::postgres::aggregates::save_columns_sql!(),
            ") AS u (",
            $crate::postgres::aggregates::save_names_sql!(),
            ") WHERE g.agreement_id = u.a AND g.feature_code = u.f AND g.period_start_ns = u.s"
        )
    };
}
pub(super) use save_sql;

/// The new state of an aggregate row `g` from the row `u` of [`save_sql`]'s
/// arrays.
macro_rules! save_set_sql {
    () => {
        "abs_effective_at_ns = u.abs_at, abs_seq = u.abs_seq,
         abs_value = u.abs_value::numeric, deltas_after = u.deltas::numeric,
         value = u.value::numeric, record_count = u.count, last_recorded_at_ns = u.last,
         usage_event_due_ns = CASE WHEN u.changed IS NULL THEN g.usage_event_due_ns
             ELSE coalesce(g.usage_event_due_ns,
                           greatest(u.changed, g.usage_event_last_ns + $24)) END"
    };
}
pub(super) use save_set_sql;

/// [`SaveColumns`]' arrays (`$13` to `$23`; `$24` is the usage event interval).
macro_rules! save_columns_sql {
    () => {
        "$13::text[], $14::text[], $15::int8[], $16::int8[], $17::int8[], $18::text[],
         $19::text[], $20::text[], $21::int8[], $22::int8[], $23::int8[]"
    };
}
pub(super) use save_columns_sql;

/// The names of [`save_columns_sql`]'s arrays in `u`.
macro_rules! save_names_sql {
    () => {
        "a, f, s, abs_at, abs_seq, abs_value, deltas, value, count, last, changed"
    };
}
pub(super) use save_names_sql;

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

/// Aggregate rows locked by [`lock`], and the sequence numbers taken with them.
pub(super) struct Locked {
    /// The states of the rows found, by key: rows missing from `keys` are
    /// absent (the caller creates them and locks them again).
    pub states: HashMap<PeriodKey, AggregateState>,
    /// The arrival sequence numbers, ascending.
    pub seqs: Vec<i64>,
}

/// Locks the rows of `keys` (sorted) in key order and returns their states,
/// then takes `seqs` arrival sequence numbers, in one statement.
pub(super) async fn lock(
    conn: &impl GenericClient,
    keys: &[(PeriodKey, i64)],
    seqs: usize,
) -> PgResult<Locked> {
    let (a, f, s, _) = columns(keys.iter().map(|(k, end)| (k, *end)));
    let n = i32::try_from(seqs).unwrap_or(i32::MAX);
    let stmt = conn.prepare_cached(LOCK).await?;
    let rows = conn.query(&stmt, &[&a, &f, &s, &n]).await?;
    let mut locked = Locked {
        states: HashMap::with_capacity(keys.len()),
        seqs: Vec::with_capacity(seqs),
    };
    for r in rows {
        if let Some(seq) = r.get::<_, Option<i64>>(9) {
            locked.seqs.push(seq);
            continue;
        }
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
        locked.states.insert(key, state);
    }
    if locked.seqs.len() != seqs {
        return Err(Failure::Data(format!(
            "{} sequence numbers taken, {seqs} asked",
            locked.seqs.len()
        )));
    }
    locked.seqs.sort_unstable();
    Ok(locked)
}

/// Aggregate rows the writer has seen committed, which therefore exist (rows
/// are never deleted): a batch whose rows are all known skips [`ensure`].
/// Kept as 64-bit hashes of the keys, in two generations of at most
/// [`Known::GENERATION`] each (the older one is dropped when the newer one is
/// full), so it stays small however many periods pass. A wrong "known" (a
/// hash collision, a row deleted behind the server's back) costs no
/// correctness: [`lock`] does not find the row, and the batch creates and
/// locks it then.
pub(super) struct Known {
    hasher: RandomState,
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl Default for Known {
    fn default() -> Self {
        Known {
            hasher: RandomState::new(),
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }
}

impl Known {
    /// Keys per generation.
    const GENERATION: usize = 100_000;

    /// Whether the row of `key` was seen committed.
    pub(super) fn contains(&self, key: &PeriodKey) -> bool {
        let h = self.hasher.hash_one(key);
        self.current.contains(&h) || self.previous.contains(&h)
    }

    /// Notes rows seen committed.
    pub(super) fn insert<'k>(&mut self, keys: impl IntoIterator<Item = &'k PeriodKey>) {
        for key in keys {
            if self.current.len() >= Self::GENERATION {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(self.hasher.hash_one(key));
        }
    }

    /// Forgets a row found missing.
    pub(super) fn forget(&mut self, key: &PeriodKey) {
        let h = self.hasher.hash_one(key);
        self.current.remove(&h);
        self.previous.remove(&h);
    }
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

/// The parameters of [`save_sql`]: the new states of aggregates (locked by
/// [`lock`]).
///
/// [`save_sql`] also marks the coalesced usage webhook event of each aggregate
/// whose usage changed (the third of each triple: the instant of its latest
/// change) due at `max(change, last event + interval)`, unless it is due
/// already (docs/design.md#webhook-outbox).
pub(super) struct SaveColumns<'k> {
    a: Vec<&'k str>,
    f: Vec<&'k str>,
    s: Vec<i64>,
    abs_at: Vec<Option<i64>>,
    abs_seq: Vec<Option<i64>>,
    abs_value: Vec<Option<String>>,
    deltas: Vec<String>,
    value: Vec<String>,
    count: Vec<i64>,
    last: Vec<Option<i64>>,
    changed_at: Vec<Option<i64>>,
    interval_ns: i64,
}

impl<'k> SaveColumns<'k> {
    pub(super) fn new(
        states: &[(&'k PeriodKey, &AggregateState, Option<i64>)],
        usage_event_interval: SignedDuration,
    ) -> PgResult<SaveColumns<'k>> {
        let n = states.len();
        let mut c = SaveColumns {
            a: Vec::with_capacity(n),
            f: Vec::with_capacity(n),
            s: Vec::with_capacity(n),
            abs_at: Vec::with_capacity(n),
            abs_seq: Vec::with_capacity(n),
            abs_value: Vec::with_capacity(n),
            deltas: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
            count: Vec::with_capacity(n),
            last: Vec::with_capacity(n),
            changed_at: Vec::with_capacity(n),
            // At most about 31 years, so that `last + interval` stays within bigint.
            interval_ns: i64::try_from(
                usage_event_interval
                    .as_nanos()
                    .clamp(0, 1_000_000_000_000_000_000),
            )
            .unwrap_or(0),
        };
        for (key, state, usage_changed_at) in states {
            c.changed_at.push(*usage_changed_at);
            c.a.push(key.agreement_id.as_str());
            c.f.push(key.feature_code.as_str());
            c.s.push(key.period_start_ns);
            match state.latest_absolute {
                Some((k, v)) => {
                    c.abs_at.push(Some(codec::ns(k.effective_at)?));
                    c.abs_seq.push(Some(k.seq));
                    c.abs_value.push(Some(v.to_string()));
                }
                None => {
                    c.abs_at.push(None);
                    c.abs_seq.push(None);
                    c.abs_value.push(None);
                }
            }
            c.deltas.push(state.deltas_after.to_string());
            c.value.push(state.value().to_string());
            c.count.push(
                i64::try_from(state.record_count)
                    .map_err(|_| Failure::Data("record count beyond i64".to_owned()))?,
            );
            c.last
                .push(state.last_recorded_at.map(codec::ns).transpose()?);
        }
        Ok(c)
    }

    /// The states' own columns: the latest absolute's instant, sequence
    /// number and value, the deltas after it, the usage, the record count and
    /// the last record's receipt. A guard compares them with a row's
    /// (`one_flight::WRITE_GUARDED`, `$25` to `$31`).
    pub(super) fn state_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.abs_at,
            &self.abs_seq,
            &self.abs_value,
            &self.deltas,
            &self.value,
            &self.count,
            &self.last,
        ]
    }

    /// `$13` to `$24` of [`save_sql`].
    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        let [abs_at, abs_seq, abs_value, deltas, value, count, last] = self.state_params();
        [
            &self.a,
            &self.f,
            &self.s,
            abs_at,
            abs_seq,
            abs_value,
            deltas,
            value,
            count,
            last,
            &self.changed_at,
            &self.interval_ns,
        ]
    }
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
