//! Applying usage submissions inside the writer's transaction (`docs/api.md`, `docs/billing.md`).
//!
//! Business failures (unknown agreement, feature not metered, a total out of
//! range, …) are per record: the record gets a [`crate::RecordFailure`] and nothing of it
//! is written, while the rest of the group commit goes on. Every check runs
//! before the record's first write, so a failed record needs no savepoint. Only
//! SQLite errors (`Err` of the outer `rusqlite::Result`) fail the whole batch.

use jiff::Timestamp;
use kinde_meter_core::{
    aggregate::{ApplyError, Entry, MeterType, OrderKey},
    assignment::Assignment,
    request::UsageRecord,
    value::MeterValue,
};
use rusqlite::{CachedStatement, Connection, Statement};

use super::{
    aggregates::{self, PeriodKey, SumError},
    cache::{AggregateKey, WriterCache},
    codec,
    error::OpError,
    idempotency, outbox,
    record_order::{self, UnfiledRecord},
};
use crate::{
    RecordResult, StoreConfig, StoreError, SubmissionOutcome, UsageSubmission, outcome,
    record_checks,
};

/// The INSERT of a usage record.
const INSERT_RECORD: &str =
    "INSERT INTO usage_records (seq, agreement_id, feature_code, period_start_ns,
     period_end_ns, meter_type, value, usage_timestamp, effective_at_ns,
     received_at_ns, client_id, idempotency_key)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// State of one write transaction.
pub(super) struct WriteContext<'a> {
    config: &'a StoreConfig,
    /// [`INSERT_RECORD`], taken from the statement cache once per
    /// transaction rather than per record (a cache lookup hashes the SQL text).
    insert_record: CachedStatement<'a>,
    /// What `insert_record`'s parameters hold now.
    bound: Bound,
    /// The arrival sequence the next stored record gets.
    next_seq: i64,
    /// Records up to this `seq` are filed in the period order (`record_order.rs`).
    filed_upto: i64,
    /// Agreements, plans and aggregates, read through (see `cache.rs`).
    cache: &'a mut WriterCache,
    /// Whether a job of the transaction raised events (an agreement's, a
    /// threshold crossed): the delivery worker is woken after COMMIT.
    pub(super) raised_events: bool,
}

impl<'a> WriteContext<'a> {
    /// Starts the state of a transaction that holds the write lock.
    pub(super) fn begin(
        conn: &'a Connection,
        config: &'a StoreConfig,
        cache: &'a mut WriterCache,
    ) -> rusqlite::Result<Self> {
        cache.begin(conn)?;
        // Read per transaction, under the write lock, rather than once at start:
        // another process (the CLI on the same data directory) may have written.
        // `max` of an INTEGER PRIMARY KEY is one b-tree descent.
        let (max, filed_upto): (Option<i64>, i64) = conn
            .prepare_cached(concat!(
                "SELECT (SELECT max(seq) FROM usage_records), ",
                record_order::upto_sql!()
            ))?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut insert_record = conn.prepare_cached(INSERT_RECORD)?;
        // The cache clears a statement's parameters when it takes it back;
        // cleared here too, so that `bound` starts from what SQLite holds.
        insert_record.clear_bindings();
        Ok(WriteContext {
            config,
            insert_record,
            bound: Bound::default(),
            // Never at or below the filed mark, even if the newest records
            // were deleted (retention): a record numbered there would count as
            // filed without being in the order table.
            next_seq: max.unwrap_or(0).max(filed_upto) + 1,
            filed_upto,
            cache,
            raised_events: false,
        })
    }

    /// Drops cached agreements and plans: a job of this transaction may have
    /// changed them (an agreement creation, a catalog load).
    pub(super) fn forget_agreements_and_plans(&mut self) {
        self.cache.forget_agreements_and_plans();
    }

    /// Forgets which aggregates' usage events are known to be due: a job of
    /// this transaction may build them.
    pub(super) fn forget_usage_event_marks(&mut self) {
        self.cache.forget_usage_event_marks();
    }

    /// Writes the aggregates the transaction changed (marking their coalesced
    /// usage events due) and files the records' period order once a chunk of
    /// them is unfiled; before COMMIT.
    pub(super) fn finish(self, conn: &Connection) -> rusqlite::Result<()> {
        drop(self.insert_record);
        let interval = self.config.webhook_usage_interval.as_nanos();
        let interval_ns = i64::try_from(interval.max(0)).unwrap_or(i64::MAX);
        self.cache.flush(conn, interval_ns)?;
        record_order::file_tail(
            conn,
            self.filed_upto,
            self.next_seq - 1,
            self.config.record_order_chunk,
            &mut self.cache.unfiled,
        )
    }
}

/// Applies a submission: the idempotency check, each record, and the remembered
/// outcome. A refusal fails this submission alone (nothing of it written).
pub(super) fn apply_submission(
    conn: &Connection,
    ctx: &mut WriteContext<'_>,
    s: &UsageSubmission,
) -> Result<SubmissionOutcome, OpError<StoreError>> {
    let received_ns = codec::ns(s.received_at)?;
    if let Some(claim) = &s.idempotency {
        let window_start = s
            .received_at
            .checked_sub(ctx.config.idempotency_retention)
            .unwrap_or(Timestamp::MIN);
        let found = idempotency::check(
            conn,
            &s.client_id,
            claim,
            s.kind,
            codec::ns_clamped(window_start),
        )?;
        if let Some(answer) = found {
            return Ok(answer);
        }
    }
    let mut results = Vec::with_capacity(s.records.len());
    for record in &s.records {
        results.push(match record {
            Ok(record) => apply_record(conn, ctx, s, record)?,
            Err(failure) => Err(failure.clone()),
        });
    }
    // What a replay of the key answers (see `outcome::remembered`).
    if let Some(claim) = &s.idempotency
        && outcome::remembered(s.kind, &results)
    {
        idempotency::remember(conn, &s.client_id, claim, s.kind, &results, received_ns)?;
    }
    Ok(SubmissionOutcome::Processed(results))
}

/// Checks, assigns and stores one record, updating its period's aggregate.
fn apply_record(
    conn: &Connection,
    ctx: &mut WriteContext<'_>,
    s: &UsageSubmission,
    record: &UsageRecord,
) -> rusqlite::Result<RecordResult> {
    let loaded = ctx.cache.agreement(conn, &record.agreement_id)?;
    let plan = match &loaded {
        Some(a) if a.is_active(s.received_at) => ctx.cache.plan(conn, &a.plan_code)?,
        _ => None,
    };
    // The checks and their messages are shared with the other backends.
    let (agreement, terms) = match record_checks::check(
        record,
        loaded.as_deref(),
        |_| plan.as_deref(),
        s.received_at,
    ) {
        Ok(checked) => checked,
        Err(failure) => return Ok(Err(failure)),
    };
    let id = &record.agreement_id;
    let feature = &record.feature_code;

    let assignment = assign(
        ctx.cache,
        agreement.anchor,
        agreement.interval,
        record.timestamp.unwrap_or(s.received_at),
        s.received_at,
        ctx.config.grace,
    );
    let key = PeriodKey {
        agreement_id: id.as_str(),
        feature_code: feature.as_str(),
        period_start_ns: codec::ns(assignment.period.start)?,
    };
    let seq = ctx.next_seq;
    let entry = Entry {
        key: OrderKey {
            effective_at: assignment.effective_at,
            seq,
        },
        meter_type: record.meter_type,
        value: record.value,
        received_at: s.received_at,
    };
    let cache_key = AggregateKey {
        agreement_id: id.clone(),
        feature_code: feature.clone(),
        period_start_ns: key.period_start_ns,
    };
    let filed_upto = ctx.filed_upto;
    let state = ctx.cache.aggregate(conn, &cache_key)?;
    let next = match state.apply(entry, |after| {
        aggregates::deltas_after(conn, &key, filed_upto, after)
    }) {
        Ok(next) => next,
        Err(ApplyError::OutOfRange | ApplyError::Source(SumError::OutOfRange)) => {
            return Ok(Err(record_checks::out_of_range(record)));
        }
        Err(ApplyError::Source(SumError::Sql(e))) => return Err(e),
    };
    // Decided on the state this transaction has so far, under the write lock:
    // in commit order, after every earlier record of the group commit.
    if let Err(failure) = record_checks::hard_limit(terms, record, &state, &next) {
        return Ok(Err(failure));
    }

    let period_end_ns = codec::ns(assignment.period.end)?;
    let received_ns = codec::ns(s.received_at)?;
    let effective_at_ns = codec::ns(assignment.effective_at)?;
    ctx.bound.insert(
        &mut ctx.insert_record,
        &RecordRow {
            seq,
            agreement_id: key.agreement_id,
            feature_code: key.feature_code,
            period: (key.period_start_ns, period_end_ns),
            meter_type: record.meter_type,
            value: record.value,
            timestamp: record.timestamp,
            effective_at_ns,
            received_ns,
            client_id: &s.client_id,
            idempotency_key: s.idempotency.as_ref().map(|c| c.key.as_str()),
        },
    )?;
    // Rare, and only for a feature with a limit: a threshold event once per
    // agreement, feature, period and threshold, in this transaction.
    let (before, after) = (state.value(), next.value());
    if terms.limit_max.is_some() && after > before {
        ctx.raised_events |= outbox::threshold_events(
            conn,
            &outbox::Crossing {
                customer_id: &agreement.customer_id,
                agreement_id: id,
                feature: terms,
                period: assignment.period,
                period_start_ns: key.period_start_ns,
                before,
                after,
                at: s.received_at,
            },
        )?;
    }
    // Written once per transaction, before COMMIT (WriterCache::flush), which
    // also marks the aggregate's coalesced usage event due if the usage changed.
    let changed_at = (after != before).then_some(received_ns);
    ctx.cache
        .set_aggregate(&cache_key, period_end_ns, next, changed_at);
    // The next filing reads it from here rather than from the table.
    ctx.cache.unfiled.push(UnfiledRecord {
        key: cache_key,
        period_end_ns,
        effective_at_ns,
        seq,
    });
    ctx.next_seq += 1;
    Ok(Ok(()))
}

/// One row of `usage_records`, as [`INSERT_RECORD`] takes it.
struct RecordRow<'r> {
    seq: i64,
    agreement_id: &'r str,
    feature_code: &'r str,
    /// Start and end (ns).
    period: (i64, i64),
    meter_type: MeterType,
    value: MeterValue,
    timestamp: Option<Timestamp>,
    effective_at_ns: i64,
    received_ns: i64,
    client_id: &'r str,
    idempotency_key: Option<&'r str>,
}

/// The parameters of [`INSERT_RECORD`] as last bound, for those that often
/// repeat from one record to the next. SQLite keeps a statement's parameters
/// from one execution to the next, so one equal to the previous record's is
/// not bound again: the records of a batch, and most single records of a
/// group commit, share their feature, type, value, caller and receipt, and
/// binding a text makes SQLite copy it (a record's twelve bindings were
/// ~2.5 K of the writer's ~13 K instructions per batched record). The seq,
/// the agreement and the effective instant are bound every time.
///
/// Starts empty with each transaction's [`WriteContext`], whose statement's
/// parameters are cleared then; a failed binding or insert fails the whole
/// transaction, and the next one starts from scratch.
#[derive(Default)]
struct Bound {
    feature_code: Option<String>,
    period: Option<(i64, i64)>,
    meter_type: Option<MeterType>,
    value: Option<MeterValue>,
    timestamp: Option<Option<Timestamp>>,
    received_ns: Option<i64>,
    client_id: Option<String>,
    idempotency_key: Option<Option<String>>,
}

impl Bound {
    /// Inserts `row` with `stmt` ([`INSERT_RECORD`]), binding only the
    /// parameters that differ from what it holds.
    fn insert(&mut self, stmt: &mut Statement<'_>, row: &RecordRow<'_>) -> rusqlite::Result<()> {
        stmt.raw_bind_parameter(1, row.seq)?;
        stmt.raw_bind_parameter(2, row.agreement_id)?;
        if replaced_text(&mut self.feature_code, row.feature_code) {
            stmt.raw_bind_parameter(3, row.feature_code)?;
        }
        if replaced(&mut self.period, row.period) {
            stmt.raw_bind_parameter(4, row.period.0)?;
            stmt.raw_bind_parameter(5, row.period.1)?;
        }
        if replaced(&mut self.meter_type, row.meter_type) {
            stmt.raw_bind_parameter(6, row.meter_type.as_str())?;
        }
        if replaced(&mut self.value, row.value) {
            stmt.raw_bind_parameter(7, row.value.to_string())?;
        }
        if replaced(&mut self.timestamp, row.timestamp) {
            stmt.raw_bind_parameter(8, row.timestamp.map(|t| t.to_string()))?;
        }
        stmt.raw_bind_parameter(9, row.effective_at_ns)?;
        if replaced(&mut self.received_ns, row.received_ns) {
            stmt.raw_bind_parameter(10, row.received_ns)?;
        }
        if replaced_text(&mut self.client_id, row.client_id) {
            stmt.raw_bind_parameter(11, row.client_id)?;
        }
        if self.idempotency_key.as_ref().map(Option::as_deref) != Some(row.idempotency_key) {
            stmt.raw_bind_parameter(12, row.idempotency_key)?;
            self.idempotency_key = Some(row.idempotency_key.map(str::to_owned));
        }
        stmt.raw_execute()?;
        Ok(())
    }
}

/// Whether `value` differs from what `held` holds; if so it holds it now
/// (and the caller binds it). Recorded before the binding: a binding that
/// fails fails the transaction, and with it this [`Bound`].
fn replaced<T: PartialEq>(held: &mut Option<T>, value: T) -> bool {
    let differs = held.as_ref() != Some(&value);
    if differs {
        *held = Some(value);
    }
    differs
}

/// [`replaced`] for a text, copied into the held one's allocation.
fn replaced_text(held: &mut Option<String>, value: &str) -> bool {
    let differs = held.as_deref() != Some(value);
    if differs {
        let text = held.get_or_insert_with(String::new);
        text.clear();
        text.push_str(value);
    }
    differs
}

/// `kinde_meter_core::assignment::assign`, with the periods from the writer's
/// cache (`WriterCache::period_containing`): the same answers (a test below
/// compares them), without the calendar arithmetic for most records.
fn assign(
    cache: &mut WriterCache,
    anchor: Timestamp,
    interval: kinde_meter_core::period::Interval,
    usage_at: Timestamp,
    received_at: Timestamp,
    grace: jiff::SignedDuration,
) -> Assignment {
    kinde_meter_core::assignment::assign_with(
        |at| cache.period_containing(anchor, interval, at),
        anchor,
        usage_at,
        received_at,
        grace,
    )
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};
    use kinde_meter_core::{
        catalog::Catalog,
        idempotency::{Fingerprint, IdempotencyKey},
        ids::{CustomerId, FeatureCode, PlanCode},
        period::Interval,
    };
    use rusqlite::TransactionBehavior;

    use super::*;
    use crate::{
        IdempotencyClaim, NewAgreement, Store, SubmissionKind,
        sqlite::{SqliteStore, connection},
    };

    /// Records whose parameters repeat, change and change back, from three
    /// callers in one transaction, are stored each with its own values
    /// (`Bound` skips a parameter only when it is the one bound).
    #[tokio::test]
    async fn each_record_is_stored_with_its_own_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        let catalog = Catalog::parse(
            "[[plans]]\ncode = \"pro\"\ninterval = \"month\"\n\
             [[plans.features]]\ncode = \"api_calls\"\nmetered = true\n\
             [[plans.features]]\ncode = \"seats\"\nmetered = true\n",
            "test.toml",
        )
        .unwrap();
        store.load_catalog(&catalog).await.unwrap();
        let now: Timestamp = "2026-03-10T12:00:00Z".parse().unwrap();
        let agreement = store
            .create_agreement(NewAgreement {
                customer_id: CustomerId::parse("customer_1".to_owned()).unwrap(),
                plan_code: PlanCode::parse("pro".to_owned()).unwrap(),
                now,
                id_random: [7; 10],
            })
            .await
            .unwrap();
        let record = |feature: &str, value: &str, at: Option<&str>, absolute: bool| {
            Ok(UsageRecord {
                agreement_id: agreement.id.clone(),
                feature_code: FeatureCode::parse(feature.to_owned()).unwrap(),
                value: MeterValue::parse(value).unwrap(),
                timestamp: at.map(|t| t.parse().unwrap()),
                meter_type: if absolute {
                    MeterType::Absolute
                } else {
                    MeterType::Delta
                },
            })
        };
        let submission = |client: &str, key: Option<&str>, seconds: i64, records| UsageSubmission {
            client_id: client.to_owned(),
            idempotency: key.map(|k| IdempotencyClaim {
                key: IdempotencyKey::new(k).unwrap(),
                fingerprint: Fingerprint::from_stored("00".to_owned()),
            }),
            records,
            received_at: now + SignedDuration::from_secs(seconds),
            kind: SubmissionKind::Batch,
        };
        let t = "2026-03-10T11:00:00Z";
        let submissions = [
            submission(
                "client_a",
                Some("key_1"),
                1,
                vec![
                    record("api_calls", "1", None, false),
                    record("api_calls", "1", None, false),
                    record("seats", "5", Some(t), true),
                    record("api_calls", "2.5", Some(t), false),
                    record("api_calls", "1", None, false),
                ],
            ),
            submission(
                "client_b",
                None,
                2,
                vec![record("api_calls", "1", None, false)],
            ),
            submission("client_a", None, 2, vec![record("seats", "5", None, true)]),
            submission(
                "client_a",
                Some("key_2"),
                3,
                vec![record("seats", "7", Some(t), true)],
            ),
        ];
        let config = StoreConfig::default();
        let mut cache = WriterCache::default();
        let mut conn = connection::open_writer(store.database_path()).unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let mut ctx = WriteContext::begin(&tx, &config, &mut cache).unwrap();
        for s in &submissions {
            let outcome = apply_submission(&tx, &mut ctx, s).unwrap();
            assert!(
                matches!(&outcome, SubmissionOutcome::Processed(results) if results.iter().all(Result::is_ok)),
                "{outcome:?}"
            );
        }
        ctx.finish(&tx).unwrap();
        tx.commit().unwrap();

        type Stored = (
            String,
            String,
            String,
            Option<String>,
            i64,
            String,
            Option<String>,
        );
        let stored: Vec<Stored> = conn
            .prepare(
                "SELECT feature_code, meter_type, value, usage_timestamp, received_at_ns,
                        client_id, idempotency_key
                 FROM usage_records ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<Stored> = submissions
            .iter()
            .flat_map(|s| {
                s.records.iter().map(move |r| {
                    let r = r.as_ref().unwrap();
                    (
                        r.feature_code.to_string(),
                        r.meter_type.as_str().to_owned(),
                        r.value.to_string(),
                        r.timestamp.map(|t| t.to_string()),
                        codec::ns(s.received_at).unwrap(),
                        s.client_id.clone(),
                        s.idempotency.as_ref().map(|c| c.key.as_str().to_owned()),
                    )
                })
            })
            .collect();
        assert_eq!(stored.len(), 8);
        assert_eq!(stored, expected);
    }

    /// The writer's assignment answers as the core's for every interval, on
    /// anchors at a month's end and at a leap day, for instants before the
    /// anchor and across many periods, received late or on time, with and
    /// without grace, visited forwards and backwards (so the remembered
    /// period is both reused and replaced).
    #[test]
    fn the_cached_assignment_is_the_cores() {
        let anchors: [Timestamp; 3] = [
            "2024-01-31T10:00:00Z".parse().unwrap(),
            "2024-02-29T23:59:59.5Z".parse().unwrap(),
            "2023-12-31T00:00:00Z".parse().unwrap(),
        ];
        let intervals = [
            Interval::Day,
            Interval::Week,
            Interval::Month,
            Interval::Year,
        ];
        let graces = [SignedDuration::ZERO, SignedDuration::from_hours(50)];
        let lags = [0, 3_600, 86_400 * 3, 86_400 * 40, 86_400 * 400];
        let mut cache = WriterCache::default();
        let mut compared = 0;
        for anchor in anchors {
            for interval in intervals {
                let instants: Vec<Timestamp> = (-20..1500)
                    .map(|i| anchor + SignedDuration::from_secs(i * 7 * 3_600 + i % 3))
                    .collect();
                for order in [instants.clone(), instants.into_iter().rev().collect()] {
                    for &at in &order {
                        for lag in lags {
                            for grace in graces {
                                let received = at + SignedDuration::from_secs(lag);
                                assert_eq!(
                                    assign(&mut cache, anchor, interval, at, received, grace),
                                    kinde_meter_core::assignment::assign(
                                        anchor, interval, at, received, grace
                                    ),
                                    "{anchor} {interval:?} {at} {received} {grace}"
                                );
                                compared += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(compared > 100_000);
    }
}
