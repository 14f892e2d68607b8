//! One group commit: every submission of a batch in one transaction, run in
//! phases that take every lock in one global order (idempotency keys, then
//! aggregate rows). Any SQL failure fails the whole batch; business failures
//! are per record.
//!
//! Design: `docs/design.md#locking-order`.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Object};
use jiff::Timestamp;
use kinde_meter_core::{
    aggregate::{AggregateState, ApplyError, Entry, MeterType, OrderKey},
    agreement::Agreement,
    assignment::assign,
    catalog::{Feature, Plan},
    ids::{AgreementId, PlanCode},
    request::UsageRecord,
    value::UsageTotal,
};

use super::{
    aggregates::{self, Known, PeriodKey},
    agreements, catalog, codec,
    failure::{Failure, OpError, PgResult},
    idempotency::{self, KeyId, KeyState},
    one_flight::{self, Remembered},
    outbox::{self, Crossing, Thresholds},
    replan,
    writer_cache::AgreementCache,
};
use crate::{
    RecordFailure, RecordResult, StoreConfig, StoreError, SubmissionOutcome, UsageSubmission,
    outcome::{self, kind_str},
    record_checks,
};

/// Inserts the stored records and writes the aggregates' new states, one
/// statement ([`write_usage`]): the INSERT is a data-modifying `WITH`, run
/// once and to completion whether or not the UPDATE reads it.
pub(super) const WRITE: &str = concat!(
    "WITH inserted AS (",
    insert_records_sql!(),
    ") ",
    aggregates::save_sql!()
);

/// The INSERT of the stored records ([`RecordColumns`], `$1` to `$12`). A
/// macro, so that `concat!` can take it (also `one_flight::WRITE_GUARDED`).
macro_rules! insert_records_sql {
    () => {
        "INSERT INTO usage_records (agreement_id, feature_code, period_start_ns,
                 effective_at_ns, seq, period_end_ns, meter_type, value, usage_timestamp,
                 received_at_ns, client_id, idempotency_key)
             SELECT a, f, ps, eff, seq, pe, mt, v::numeric, ts, rcv, client, key
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
                         $7::text[], $8::text[], $9::text[], $10::int8[], $11::text[], $12::text[])
                  AS u (a, f, ps, eff, seq, pe, mt, v, ts, rcv, client, key)"
    };
}
pub(super) use insert_records_sql;

/// What each submission of the batch is answered, in order.
pub(super) type Answers = Vec<Result<SubmissionOutcome, StoreError>>;

/// A record that passed its checks, placed in its period.
pub(super) struct Placed<'p> {
    /// The record's agreement (its customer, for webhook events).
    agreement: &'p Agreement,
    pub(super) key: PeriodKey,
    period_end_ns: i64,
    pub(super) effective_at: Timestamp,
    /// The feature's terms in the agreement's plan (its hard limit, if any).
    terms: &'p Feature,
}

/// A record to insert, with what its row needs beyond the request.
pub(super) struct Stored<'a> {
    record: &'a UsageRecord,
    submission: &'a UsageSubmission,
    pub(super) key: PeriodKey,
    period_end_ns: i64,
    pub(super) order: OrderKey,
}

/// What the writer keeps from one batch to the next, each of which lets a
/// batch skip work.
#[derive(Default)]
pub(super) struct Kept {
    /// Aggregate rows seen committed, whose creation batches skip.
    pub(super) known: Known,
    /// Aggregate rows as committed, sequence numbers in stock and the
    /// connections' backends, by which a batch may go in one flight.
    pub(super) memory: Remembered,
    /// Agreements and plans as batches last read them, by which the next
    /// batch places its records before reading them again.
    pub(super) cache: AgreementCache,
    /// When each connection's statements were last prepared.
    pub(super) plans: replan::Plans,
}

/// A batch whose COMMIT has been sent: its answers, and the transaction's id,
/// by which the outcome can be asked when COMMIT's own answer is lost.
pub(super) struct Committing {
    /// The transaction's id (`txid_current()`); `None` while a batch sent in
    /// one flight has not had it back.
    pub(super) txid: Option<i64>,
    /// For a batch sent in one flight: how to settle its outcome without the
    /// transaction id.
    pub(super) settle: Option<one_flight::Settle>,
    /// The answers, valid if and only if the transaction committed.
    pub(super) answers: Answers,
    /// The states of the aggregate rows the batch locked or updated, which
    /// exist, in these states, once it committed.
    pub(super) states: HashMap<PeriodKey, AggregateState>,
    /// Whether the batch raised events (a threshold crossed).
    pub(super) raised_events: bool,
    /// Sequence numbers the batch took for the writer's stock.
    pub(super) spare_seqs: Vec<i64>,
}

/// Runs the batch in one transaction on `conn`, which must not be in one. The
/// work up to the last flight must end by `deadline` (past it the transaction
/// is rolled back: nothing stored). Just before the last flight (the writes
/// and COMMIT) is sent, the answers and the transaction id are left in
/// `committing`; from then on an `Err` (COMMIT failed, the connection broke, or
/// the caller's wider deadline cancelled the wait) leaves the outcome in doubt,
/// and the caller asks PostgreSQL for it (`docs/design.md#outages-and-deadlines`),
/// unless PostgreSQL refused one of the writes, which rolls the transaction
/// back (`committing` is then `None` again). An `Err` with `committing` `None`
/// means nothing was committed.
///
/// The transaction is begun by the first flight and ended by the last or, on
/// an error before it, by a ROLLBACK, so `conn` is outside a transaction again
/// unless the `Err` makes the caller close it ([`Failure::poisons_connection`]);
/// the caller closes it too if this panics or is cancelled.
///
/// Aggregate rows in `kept.known` are taken to exist (not created); those
/// found missing are forgotten.
pub(super) async fn run(
    conn: &Object,
    config: &StoreConfig,
    kept: &mut Kept,
    submissions: &[&UsageSubmission],
    deadline: tokio::time::Instant,
    committing: &mut Option<Committing>,
) -> PgResult<()> {
    let client = conn;
    let Kept {
        known,
        memory,
        cache,
        plans,
    } = kept;
    // Every statement a batch sends is prepared here, before the batch: a
    // flight's statements then go in the order they are joined in.
    if plans.due(Object::id(conn), tokio::time::Instant::now()) {
        conn.statement_cache.clear();
        let prepared = tokio::time::timeout_at(deadline, prepare_statements(conn))
            .await
            .unwrap_or(Err(Failure::Timeout));
        if let Err(failure) = prepared {
            plans.forget(Object::id(conn));
            return Err(failure);
        }
    }
    if memory.backend(conn).is_none() {
        let backend = tokio::time::timeout_at(deadline, one_flight::read_backend(conn))
            .await
            .map_err(|_| Failure::Timeout)??;
        memory.note_backend(conn, backend);
    }
    if let Some(flight) = one_flight::plan(conn, config, memory, cache, submissions).await? {
        return one_flight::send(conn, config, flight, deadline, committing).await;
    }
    let spare = memory.spare_wanted();
    let writes = match tokio::time::timeout_at(
        deadline,
        prepare(client, config, known, cache, submissions, spare),
    )
    .await
    {
        Ok(Ok(writes)) => writes,
        Ok(Err(failure)) => return Err(roll_back(client, failure).await),
        Err(_) => return Err(Failure::Timeout),
    };
    let Writes {
        txid,
        answers,
        stored,
        states,
        changed,
        keys,
        thresholds,
        spare_seqs,
    } = writes;
    let saved = saved(&states, &changed);
    *committing = Some(Committing {
        txid: Some(txid),
        settle: None,
        answers,
        states: states.clone(),
        raised_events: !thresholds.is_empty(),
        spare_seqs,
    });
    // 5. The writes and COMMIT, one flight. After a refused write PostgreSQL
    // ends the transaction with a rollback whatever COMMIT says.
    let writes = async {
        futures::try_join!(
            write_usage(client, &stored, &saved, config.webhook_usage_interval),
            idempotency::finish(client, &keys),
            thresholds.write(client),
        )
    };
    let (written, committed) = futures::join!(writes, client.batch_execute("COMMIT"));
    if let Err(failure) = written {
        if !failure.poisons_connection() {
            *committing = None;
        }
        return Err(failure);
    }
    Ok(committed?)
}

/// Ends the transaction that `failure` interrupted before its last flight, so
/// the connection can be used again; returns the failure to report (that of
/// the ROLLBACK if it failed too).
async fn roll_back(conn: &Object, failure: Failure) -> Failure {
    if failure.poisons_connection() {
        return failure;
    }
    match conn.batch_execute("ROLLBACK").await {
        Ok(()) => failure,
        Err(e) => {
            tracing::warn!(error = %failure, "ROLLBACK after a failed batch failed too");
            Failure::Db(e)
        }
    }
}

/// What a batch writes in its last flight, and answers if that commits.
pub(super) struct Writes<'a> {
    pub(super) txid: i64,
    pub(super) answers: Answers,
    pub(super) stored: Vec<Stored<'a>>,
    pub(super) states: HashMap<PeriodKey, AggregateState>,
    /// The aggregates changed, each with when its usage (not only its record
    /// count) last changed, if it did: what makes its usage event due.
    pub(super) changed: HashMap<PeriodKey, Option<i64>>,
    pub(super) keys: idempotency::Keys,
    pub(super) thresholds: Thresholds,
    /// Sequence numbers taken beyond the batch's own, for the writer's stock
    /// (`one_flight::Remembered`).
    pub(super) spare_seqs: Vec<i64>,
}

/// The aggregates a batch changed with their new states and when their usage
/// last changed, in key order: the rows its write updates.
pub(super) fn saved<'s>(
    states: &'s HashMap<PeriodKey, AggregateState>,
    changed: &'s HashMap<PeriodKey, Option<i64>>,
) -> Vec<(&'s PeriodKey, &'s AggregateState, Option<i64>)> {
    let mut saved: Vec<_> = changed
        .iter()
        .map(|(k, at)| (k, states.get(k).expect("changed keys have states"), *at))
        .collect();
    saved.sort_by(|a, b| a.0.cmp(b.0));
    saved
}

/// The batch's statements up to (not including) its last flight: begins the
/// transaction, and returns what the last flight writes.
///
/// Where the writer's cache has every agreement of the batch and its plan, the
/// records are placed in their periods from it and the statements go in one
/// flight before the last ([`prepare_from_cache`]); otherwise in two, each
/// pipelined on the connection (sent together, answered in order, one round
/// trip): BEGIN, the transaction id with the agreements, their plans, and the
/// keys; the aggregates not `known` created, then all of them locked with the
/// sequence numbers (one statement). PostgreSQL runs a flight's statements in
/// the order they were sent, so the locking order is the same as one at a time.
async fn prepare<'a>(
    tx: &Object,
    config: &StoreConfig,
    known: &mut Known,
    cache: &mut AgreementCache,
    submissions: &[&'a UsageSubmission],
    spare: usize,
) -> PgResult<Writes<'a>> {
    // (Those of submissions answered from a key are not used.)
    let agreement_ids = agreement_ids(submissions);
    let ids: Vec<&str> = agreement_ids.iter().map(|id| id.as_str()).collect();
    if !ids.is_empty()
        && cache.covers(&agreement_ids)
        && let Some(writes) =
            prepare_from_cache(tx, config, known, cache, submissions, spare).await?
    {
        return Ok(writes);
    }

    // 1. The transaction id with the agreements, their plans, and the keys.
    let ((), (txid, version, agreements, plans), keys) = futures::try_join!(
        async { PgResult::Ok(tx.batch_execute("BEGIN").await?) },
        load_agreements(tx, &ids),
        idempotency::claim(tx, config, submissions),
    )?;
    cache.remember(version, &agreement_ids, &agreements, &plans);
    // Submissions answered from another transaction's outcome are not placed.
    let applies = |s: &UsageSubmission| match key_of(s) {
        Some(id) => matches!(keys.states.get(&id), Some(KeyState::Free)),
        None => true,
    };

    // 2. Checks and periods.
    let placed = place_all(submissions, applies, config, &agreements, &plans)?;

    // 3. Lock the aggregates; sequence numbers for every record that may be stored.
    let rows = RowsToLock::of(&placed, known, spare);
    let locked = lock_rows(tx, &rows).await?;
    let (states, mut seqs) = complete_locks(tx, known, &rows, locked).await?;
    let spare_seqs = seqs.split_off(rows.records.min(seqs.len()));
    let mut writes = apply_all(tx, submissions, txid, keys, placed, states, seqs).await?;
    writes.spare_seqs = spare_seqs;
    Ok(writes)
}

/// [`prepare`] from the writer's cache of agreements and plans: the records
/// are placed by them, and BEGIN, the transaction id with `terms_version`,
/// the keys, and the aggregates' creation and locks with the sequence
/// numbers go in one flight, in that order. If the transaction finds the
/// counter at the value the cache was read at, no agreement or plan has
/// changed since, so the placement stands and the batch goes on as
/// [`prepare`] would have; otherwise the transaction is rolled back and
/// `None` tells [`prepare`] to run the batch its own way, which reads them
/// again and refreshes the cache.
///
/// Every submission is placed, also those a key will answer (they are skipped
/// when applied): that may lock a row and take a sequence number more than
/// needed, never fewer.
async fn prepare_from_cache<'a>(
    tx: &Object,
    config: &StoreConfig,
    known: &mut Known,
    cache: &AgreementCache,
    submissions: &[&'a UsageSubmission],
    spare: usize,
) -> PgResult<Option<Writes<'a>>> {
    let placed = place_from_cache(submissions, config, cache)?;
    let rows = RowsToLock::of(&placed, known, spare);
    let stmt = tx.prepare_cached(TXID_AND_VERSION).await?;
    let ((), (txid, version), keys, locked) = futures::try_join!(
        async { PgResult::Ok(tx.batch_execute("BEGIN").await?) },
        async {
            let row = tx.query_one(&stmt, &[]).await?;
            PgResult::Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        },
        idempotency::claim(tx, config, submissions),
        lock_rows(tx, &rows),
    )?;
    if cache.confirms(version) {
        let (states, mut seqs) = complete_locks(tx, known, &rows, locked).await?;
        let spare_seqs = seqs.split_off(rows.records.min(seqs.len()));
        let mut writes = apply_all(tx, submissions, txid, keys, placed, states, seqs).await?;
        writes.spare_seqs = spare_seqs;
        return Ok(Some(writes));
    }
    tracing::debug!("agreements or plans changed since the writer cached them; batch run again");
    tx.batch_execute("ROLLBACK").await?;
    Ok(None)
}

/// The agreements of every record of the batch, sorted, each once.
pub(super) fn agreement_ids<'a>(submissions: &[&'a UsageSubmission]) -> Vec<&'a AgreementId> {
    let mut ids: Vec<&AgreementId> = submissions
        .iter()
        .flat_map(|s| s.records.iter().flatten())
        .map(|r| &r.agreement_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The idempotency key of a submission, if it has one.
fn key_of(s: &UsageSubmission) -> Option<KeyId> {
    s.idempotency
        .as_ref()
        .map(|c| (s.client_id.clone(), c.key.as_str().to_owned()))
}

/// Each submission's records checked and placed in their periods (none for a
/// submission that does not `apply`), in order. A record refused is a
/// per-record failure; a failure of the store's own data fails the batch.
fn place_all<'p>(
    submissions: &[&UsageSubmission],
    apply: impl Fn(&UsageSubmission) -> bool,
    config: &StoreConfig,
    agreements: &'p HashMap<AgreementId, Agreement>,
    plans: &'p HashMap<PlanCode, Plan>,
) -> PgResult<Vec<Vec<Result<Placed<'p>, RecordFailure>>>> {
    let mut placed = Vec::with_capacity(submissions.len());
    for s in submissions {
        let mut list = Vec::new();
        if apply(s) {
            for record in s.records.iter().flatten() {
                list.push(match place(record, s, config, agreements, plans) {
                    Ok(placed) => Ok(placed),
                    Err(OpError::Refused(failure)) => Err(failure),
                    Err(OpError::Failed(failure)) => return Err(failure),
                });
            }
        }
        placed.push(list);
    }
    Ok(placed)
}

/// Every submission's records placed by the writer's cache of agreements
/// and plans (also those a key will answer).
pub(super) fn place_from_cache<'p>(
    submissions: &[&UsageSubmission],
    config: &StoreConfig,
    cache: &'p AgreementCache,
) -> PgResult<Vec<Vec<Result<Placed<'p>, RecordFailure>>>> {
    place_all(
        submissions,
        |_| true,
        config,
        &cache.agreements,
        &cache.plans,
    )
}

/// The aggregate rows a batch locks, and how many sequence numbers it takes.
struct RowsToLock {
    /// Every row of a placed record, sorted (the locking order), with its
    /// period's end.
    all: Vec<(PeriodKey, i64)>,
    /// Those not `known`, which are created first.
    unknown: Vec<(PeriodKey, i64)>,
    /// Records placed: one sequence number each.
    records: usize,
    /// Sequence numbers taken beyond the records', for the writer's stock.
    spare: usize,
}

impl RowsToLock {
    fn of(
        placed: &[Vec<Result<Placed, RecordFailure>>],
        known: &Known,
        spare: usize,
    ) -> RowsToLock {
        let mut all: Vec<(PeriodKey, i64)> = placed
            .iter()
            .flatten()
            .filter_map(|p| p.as_ref().ok())
            .map(|p| (p.key.clone(), p.period_end_ns))
            .collect();
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0);
        // Rows this writer saw committed exist (rows are never deleted), so
        // only the others are created: in the steady state, no statement.
        let unknown = all
            .iter()
            .filter(|(k, _)| !known.contains(k))
            .cloned()
            .collect();
        let records = placed.iter().flatten().filter(|p| p.is_ok()).count();
        RowsToLock {
            all,
            unknown,
            records,
            spare,
        }
    }
}

/// Creates the rows not known and locks all of them, taking the sequence
/// numbers (no statement when there is no row).
async fn lock_rows(tx: &Object, rows: &RowsToLock) -> PgResult<aggregates::Locked> {
    if rows.all.is_empty() {
        return Ok(aggregates::Locked {
            states: HashMap::new(),
            seqs: Vec::new(),
        });
    }
    if rows.unknown.is_empty() {
        return aggregates::lock(tx, &rows.all, rows.records + rows.spare).await;
    }
    let ((), locked) = futures::try_join!(
        aggregates::ensure(tx, &rows.unknown),
        aggregates::lock(tx, &rows.all, rows.records + rows.spare),
    )?;
    Ok(locked)
}

/// The states of every row of `rows` and the sequence numbers, from `locked`
/// and, for rows taken as known that were not there, from creating and
/// locking them now.
async fn complete_locks(
    tx: &Object,
    known: &mut Known,
    rows: &RowsToLock,
    locked: aggregates::Locked,
) -> PgResult<(HashMap<PeriodKey, AggregateState>, Vec<i64>)> {
    let aggregates::Locked { mut states, seqs } = locked;
    if states.len() < rows.all.len() {
        // Rows taken as known are gone (deleted behind the server's back,
        // or a hash collision in `known`): created and locked now. This
        // takes their locks after others, out of the global order; a
        // deadlock that may cause is detected by PostgreSQL and the batch
        // run again (`Failure::is_retryable`), with the keys forgotten.
        let missing: Vec<(PeriodKey, i64)> = rows
            .all
            .iter()
            .filter(|(k, _)| !states.contains_key(k))
            .cloned()
            .collect();
        for (k, _) in &missing {
            known.forget(k);
        }
        tracing::warn!(
            rows = missing.len(),
            "aggregate rows known to exist were not found; creating them"
        );
        let ((), again) = futures::try_join!(
            aggregates::ensure(tx, &missing),
            aggregates::lock(tx, &missing, 0),
        )?;
        if again.states.len() != missing.len() {
            return Err(Failure::Data(format!(
                "{} of {} aggregate rows to lock were not found",
                missing.len() - again.states.len(),
                missing.len()
            )));
        }
        states.extend(again.states);
    }
    Ok((states, seqs))
}

/// Applies the placed records in order to the locked states (4.), answering
/// every submission: the last flight's writes.
pub(super) async fn apply_all<'a>(
    tx: &Object,
    submissions: &[&'a UsageSubmission],
    txid: i64,
    mut keys: idempotency::Keys,
    placed: Vec<Vec<Result<Placed<'_>, RecordFailure>>>,
    mut states: HashMap<PeriodKey, AggregateState>,
    seqs: Vec<i64>,
) -> PgResult<Writes<'a>> {
    let mut seqs = seqs.into_iter();

    // 4. Apply, in order.
    let mut stored: Vec<Stored<'a>> = Vec::new();
    let mut changed: HashMap<PeriodKey, Option<i64>> = HashMap::new();
    let mut thresholds = Thresholds::default();
    let mut answers = Vec::with_capacity(submissions.len());
    for (s, placed) in submissions.iter().zip(placed) {
        let id = key_of(s);
        if let Some(id) = &id
            && let Some(KeyState::Remembered {
                fingerprint,
                kind,
                outcome,
                ..
            }) = keys.states.get(id)
        {
            let claim = s.idempotency.as_ref().expect("keyed");
            // The same key on the other endpoint is another request, whatever the hash.
            answers.push(
                if fingerprint != claim.fingerprint.as_str() || kind != kind_str(s.kind) {
                    Ok(SubmissionOutcome::KeyReused)
                } else {
                    outcome
                        .clone()
                        .map(SubmissionOutcome::Replayed)
                        .map_err(|e| {
                            StoreError::Unavailable(format!(
                                "the outcome stored for idempotency key {:?} is unreadable: {e}",
                                claim.key.as_str()
                            ))
                        })
                },
            );
            continue;
        }
        let mut placed = placed.into_iter();
        let mut results: Vec<RecordResult> = Vec::with_capacity(s.records.len());
        let received_ns = codec::ns(s.received_at)?;
        for record in &s.records {
            let record = match record {
                Ok(record) => record,
                Err(failure) => {
                    results.push(Err(failure.clone()));
                    continue;
                }
            };
            let p = match placed.next().expect("one placement per parsed record") {
                Ok(p) => p,
                Err(failure) => {
                    results.push(Err(failure));
                    continue;
                }
            };
            let seq = *seqs
                .as_slice()
                .first()
                .expect("a sequence number per placed record");
            let entry = Entry {
                key: OrderKey {
                    effective_at: p.effective_at,
                    seq,
                },
                meter_type: record.meter_type,
                value: record.value,
                received_at: s.received_at,
            };
            let state = states.get(&p.key).copied().unwrap_or_default();
            match apply(tx, &state, entry, &p.key, &stored).await? {
                // Decided on the locked row's state plus this batch's earlier
                // records: in commit order, across every server.
                Some(next)
                    if let Err(failure) =
                        record_checks::hard_limit(p.terms, record, &state, &next) =>
                {
                    results.push(Err(failure));
                }
                Some(next) => {
                    seqs.next();
                    let (before, after) = (state.value(), next.value());
                    // Rare, and only for a feature with a limit: threshold
                    // events, written with one statement at the end.
                    if p.terms.limit_max.is_some() && after > before {
                        thresholds.add(&Crossing {
                            customer_id: &p.agreement.customer_id,
                            agreement_id: &p.agreement.id,
                            feature: p.terms,
                            period_start_ns: p.key.period_start_ns,
                            period_end_ns: p.period_end_ns,
                            before,
                            after,
                            at: s.received_at,
                        })?;
                    }
                    states.insert(p.key.clone(), next);
                    let usage_changed_at = changed.entry(p.key.clone()).or_default();
                    if after != before {
                        *usage_changed_at = (*usage_changed_at).max(Some(received_ns));
                    }
                    stored.push(Stored {
                        record,
                        submission: s,
                        key: p.key,
                        period_end_ns: p.period_end_ns,
                        order: entry.key,
                    });
                    results.push(Ok(()));
                }
                None => results.push(Err(record_checks::out_of_range(record))),
            }
        }
        if let (Some(id), Some(claim)) = (&id, &s.idempotency)
            && outcome::remembered(s.kind, &results)
        {
            keys.states.insert(
                id.clone(),
                KeyState::Remembered {
                    fingerprint: claim.fingerprint.as_str().to_owned(),
                    kind: kind_str(s.kind).to_owned(),
                    outcome: Ok(results.clone()),
                    created_at: Some(s.received_at),
                },
            );
        }
        answers.push(Ok(SubmissionOutcome::Processed(results)));
    }

    Ok(Writes {
        txid,
        answers,
        stored,
        states,
        changed,
        keys,
        thresholds,
        spare_seqs: Vec::new(),
    })
}

/// The statements of the flights whose order matters (aggregates created
/// before they are locked; the writes before COMMIT; a batch in one flight).
const ORDERED: [&str; 10] = [
    aggregates::ENSURE,
    aggregates::LOCK,
    WRITE,
    idempotency::REMEMBER,
    idempotency::RELEASE,
    idempotency::INSERT_NEW,
    one_flight::SPARE,
    outbox::INSERT_EVENTS,
    one_flight::TXID,
    one_flight::WRITE_GUARDED,
];

/// Prepares [`ORDERED`], the keys' claim, [`AGREEMENTS_AND_PLANS`] and
/// [`TXID_AND_VERSION`] on `conn` where they are not yet (one round trip on a
/// new connection, none after). A flight's statement is then sent the first
/// time its future is polled, so the statements of a flight go in the order
/// they are joined in, not in the order their preparations come back.
async fn prepare_statements(conn: &Object) -> PgResult<()> {
    let first_flight = [
        idempotency::CLAIM,
        AGREEMENTS_AND_PLANS.as_str(),
        TXID_AND_VERSION,
    ];
    futures::future::try_join_all(
        ORDERED
            .iter()
            .chain(&first_flight)
            .map(|sql| conn.prepare_cached(sql)),
    )
    .await?;
    Ok(())
}

/// The transaction id, the agreements and their plans, in one statement
/// ([`load_agreements`]): rows of part 0 are the id with an agreement's
/// [`agreements::COLUMNS`] (one row at least, with NULL columns when no
/// agreement matches), rows of part 1 a plan's [`catalog::PLAN_COLUMNS`],
/// ordered by plan, then feature, as `catalog::fold_plans` takes them; the
/// last column of part 0 is `terms_version`, by which the writer's cache
/// keeps them ([`VERSION_AT`]).
static AGREEMENTS_AND_PLANS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT 0, txid_current(), {agreement_columns},
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, (SELECT version FROM terms_version WHERE id = 0)
         FROM (VALUES (1)) AS one (x) LEFT JOIN agreements ON id = ANY($1)
         UNION ALL
         SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, {plan_columns}, p.ord, f.position,
                NULL
         {plans_from}
         WHERE p.code IN (SELECT plan_code FROM agreements WHERE id = ANY($1))
         ORDER BY 1, 23, 9, 24",
        agreement_columns = agreements::COLUMNS,
        plan_columns = catalog::PLAN_COLUMNS,
        plans_from = catalog::PLANS_FROM,
    )
});

/// Where [`AGREEMENTS_AND_PLANS`] has the `terms_version` counter.
const VERSION_AT: usize = 24;

/// The transaction's id and the `terms_version` counter, for a batch placed
/// from the writer's cache ([`prepare_from_cache`]).
const TXID_AND_VERSION: &str = "SELECT txid_current(), version FROM terms_version WHERE id = 0";

/// What [`load_agreements`] read: the transaction's id, `terms_version`, the
/// agreements by id and their plans by code.
type Loaded = (
    i64,
    i64,
    HashMap<AgreementId, Agreement>,
    HashMap<PlanCode, Plan>,
);

/// The transaction's id (`txid_current()`, by which its outcome can be asked
/// if COMMIT's answer is lost), `terms_version`, the agreements with the
/// given ids, by id, and their plans, by code, in one statement
/// ([`AGREEMENTS_AND_PLANS`]), so from one snapshot. An agreement whose plan
/// it did not find has its plan asked again, as before the two were one
/// statement.
async fn load_agreements(conn: &impl GenericClient, ids: &[&str]) -> PgResult<Loaded> {
    let stmt = conn.prepare_cached(&AGREEMENTS_AND_PLANS).await?;
    let rows = conn.query(&stmt, &[&ids]).await?;
    let (txid, version): (i64, i64) = rows
        .first()
        .and_then(|r| {
            Some((
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(VERSION_AT)?,
            ))
        })
        .ok_or_else(|| Failure::Data("no transaction id or terms_version".to_owned()))?;
    let agreements = rows
        .iter()
        .filter(|r| r.get::<_, Option<&str>>(2).is_some())
        .map(|r| agreements::from_row_at(r, 2).map(|a| (a.id.clone(), a)))
        .collect::<PgResult<HashMap<_, _>>>()?;
    let mut plans: HashMap<PlanCode, Plan> = catalog::fold_plans(&rows, 8)?
        .into_iter()
        .map(|p| (p.code.clone(), p))
        .collect();
    let mut missing: Vec<&str> = agreements
        .values()
        .filter(|a| !plans.contains_key(&a.plan_code))
        .map(|a| a.plan_code.as_str())
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        missing.dedup();
        plans.extend(catalog::load_plans(conn, &missing).await?);
    }
    Ok((txid, version, agreements, plans))
}

/// Checks a record and assigns it to its period (`docs/billing.md`).
fn place<'p>(
    record: &UsageRecord,
    s: &UsageSubmission,
    config: &StoreConfig,
    agreements: &'p HashMap<AgreementId, Agreement>,
    plans: &'p HashMap<PlanCode, Plan>,
) -> Result<Placed<'p>, OpError<RecordFailure>> {
    let (agreement, terms) = record_checks::check(
        record,
        agreements.get(&record.agreement_id),
        |a| plans.get(&a.plan_code),
        s.received_at,
    )?;
    let assignment = assign(
        agreement.anchor,
        agreement.interval,
        record.timestamp.unwrap_or(s.received_at),
        s.received_at,
        config.grace,
    );
    Ok(Placed {
        agreement,
        key: PeriodKey {
            agreement_id: record.agreement_id.as_str().to_owned(),
            feature_code: record.feature_code.as_str().to_owned(),
            period_start_ns: codec::ns(assignment.period.start)?,
        },
        period_end_ns: codec::ns(assignment.period.end)?,
        effective_at: assignment.effective_at,
        terms,
    })
}

/// The state after `entry`, or `None` if the usage would pass 10^27. When a late
/// absolute becomes the latest, the deltas after it are the committed ones (read
/// under the row's lock) plus those of this batch not yet inserted.
async fn apply(
    conn: &impl GenericClient,
    state: &AggregateState,
    entry: Entry,
    key: &PeriodKey,
    pending: &[Stored<'_>],
) -> PgResult<Option<AggregateState>> {
    /// The sum is needed: `apply` is synchronous, so it asks, and is asked again
    /// with the answer (it is pure, so asking twice is harmless).
    struct Needs(OrderKey);
    let after = match state.apply(entry, |after| Err::<UsageTotal, _>(Needs(after))) {
        Ok(next) => return Ok(Some(next)),
        Err(ApplyError::OutOfRange) => return Ok(None),
        Err(ApplyError::Source(Needs(after))) => after,
    };
    let Some(committed) = aggregates::deltas_after(conn, key, after).await? else {
        return Ok(None);
    };
    let mut sum = Some(committed);
    for p in pending {
        if p.key == *key && p.record.meter_type == MeterType::Delta && p.order > after {
            sum = sum.and_then(|s| s.checked_add(p.record.value).ok());
        }
    }
    let Some(sum) = sum else { return Ok(None) };
    match state.apply(entry, |_| Ok::<_, ()>(sum)) {
        Ok(next) => Ok(Some(next)),
        Err(_) => Ok(None),
    }
}

/// The batch's stored records (one multi-row INSERT) and the new states of
/// the aggregates they changed (`saved`), in one statement ([`WRITE`]).
async fn write_usage(
    conn: &impl GenericClient,
    stored: &[Stored<'_>],
    saved: &[(&PeriodKey, &AggregateState, Option<i64>)],
    usage_event_interval: jiff::SignedDuration,
) -> PgResult<()> {
    // Every aggregate saved changed by a stored record, and the other way round.
    if stored.is_empty() && saved.is_empty() {
        return Ok(());
    }
    let records = RecordColumns::new(stored)?;
    let aggregates = aggregates::SaveColumns::new(saved, usage_event_interval)?;
    let mut params = Vec::with_capacity(24);
    params.extend(records.params());
    params.extend(aggregates.params());
    let stmt = conn.prepare_cached(WRITE).await?;
    conn.execute(&stmt, &params).await?;
    Ok(())
}

/// The stored records as the arrays of [`insert_records_sql`] (`$1` to `$12`).
pub(super) struct RecordColumns<'a> {
    a: Vec<&'a str>,
    f: Vec<&'a str>,
    ps: Vec<i64>,
    eff: Vec<i64>,
    seq: Vec<i64>,
    pe: Vec<i64>,
    mt: Vec<&'static str>,
    v: Vec<String>,
    ts: Vec<Option<String>>,
    rcv: Vec<i64>,
    client: Vec<&'a str>,
    key: Vec<Option<&'a str>>,
}

impl<'a> RecordColumns<'a> {
    pub(super) fn new(stored: &'a [Stored<'a>]) -> PgResult<RecordColumns<'a>> {
        let n = stored.len();
        let mut c = RecordColumns {
            a: Vec::with_capacity(n),
            f: Vec::with_capacity(n),
            ps: Vec::with_capacity(n),
            eff: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            pe: Vec::with_capacity(n),
            mt: Vec::with_capacity(n),
            v: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            rcv: Vec::with_capacity(n),
            client: Vec::with_capacity(n),
            key: Vec::with_capacity(n),
        };
        for r in stored {
            c.a.push(r.key.agreement_id.as_str());
            c.f.push(r.key.feature_code.as_str());
            c.ps.push(r.key.period_start_ns);
            c.eff.push(codec::ns(r.order.effective_at)?);
            c.seq.push(r.order.seq);
            c.pe.push(r.period_end_ns);
            c.mt.push(r.record.meter_type.as_str());
            c.v.push(r.record.value.to_string());
            c.ts.push(r.record.timestamp.map(|t| t.to_string()));
            c.rcv.push(codec::ns(r.submission.received_at)?);
            c.client.push(r.submission.client_id.as_str());
            c.key
                .push(r.submission.idempotency.as_ref().map(|c| c.key.as_str()));
        }
        Ok(c)
    }

    /// `$1` to `$12` of [`insert_records_sql`].
    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.a,
            &self.f,
            &self.ps,
            &self.eff,
            &self.seq,
            &self.pe,
            &self.mt,
            &self.v,
            &self.ts,
            &self.rcv,
            &self.client,
            &self.key,
        ]
    }
}
