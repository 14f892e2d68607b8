//! One flight per batch: when the writer remembers the committed state of
//! every aggregate row a batch updates, it sends BEGIN, the transaction id,
//! the writes and COMMIT together, without first locking and reading the rows
//! (one round trip instead of two). The write statement itself checks, under
//! the rows' locks, that every row's usage columns are as remembered (its
//! `record_count`, which every stored record moves on, and the usage itself,
//! which only an edit behind the server's back changes alone) and the terms
//! counter as the writer's cache read it; if not, it fails, PostgreSQL rolls
//! the batch back, and the writer runs it again the usual way
//! ([`Failure::Stale`]).
//!
//! Idempotency keys are taken to be new (a fresh key per request is the
//! common case): the flight stores each with the outcome it remembers
//! ([`idempotency::NewKeys`]), and a key that was not new (a retry's, or one
//! claimed by another server's batch, which the insert waits for) fails the
//! insert, PostgreSQL rolls the batch back, and the writer runs it again the
//! usual way, which claims the key and answers from what it remembers
//! ([`Failure::KeyHeld`]).
//!
//! A batch goes this way only when ([`plan`]):
//! - every agreement of it and its plan are in the writer's cache;
//! - every record is a delta, on a row whose state is remembered, at an
//!   instant other than that row's latest absolute. Its sequence number comes
//!   from a stock taken in advance ([`Remembered::seqs`]), so it may be lower
//!   than one taken since by another server; sequence numbers only order
//!   records at the same instant, and the only order that changes a usage is
//!   a delta's against the latest absolute (deltas before it count for
//!   nothing, whatever their order against older absolutes): at another
//!   instant, the instants decide it, and an absolute arriving later takes a
//!   number above every number ever taken before it;
//! - every row it reads a state of, it also updates, so that the write's
//!   guard covers every state an answer was decided on (a record refused by
//!   a hard limit on a row the batch does not otherwise change is decided
//!   the usual way, under the row's lock);
//! - the stock holds a number for every record, and the backend of the
//!   connection is known, so that a lost answer can be settled ([`Settle`]).
//!
//! Design: `docs/design.md#one-flight`.

use std::collections::{HashMap, VecDeque};

use deadpool_postgres::{GenericClient, Object};
use kinde_meter_core::aggregate::{AggregateState, MeterType};
use tokio_postgres::error::SqlState;

use super::{
    aggregates::{self, PeriodKey},
    batch::{self, Committing, Writes},
    codec,
    failure::{Failure, PgResult},
    idempotency,
    pool::Backoff,
    writer_cache::AgreementCache,
};
use crate::{StoreConfig, UsageSubmission};

/// The records and the aggregates' new states in one statement, as
/// `batch::WRITE` writes them, except that an aggregate row is updated only if
/// its usage columns are still as remembered (`$25` to `$31`, the old states
/// as [`aggregates::SaveColumns::state_params`] gives them), and the
/// statement fails, rolling the transaction back, unless every row was (`$32`
/// of them) and the terms counter is at the cached value (`$33`). It fails by
/// a division by zero: no expression of it divides otherwise, and a volatile
/// failure cannot be folded into a constant when the statement is planned.
pub(super) const WRITE_GUARDED: &str = concat!(
    "WITH inserted AS (",
    batch::insert_records_sql!(),
    "), saved AS (UPDATE usage_aggregates g SET ",
    aggregates::save_set_sql!(),
    " FROM unnest(",
    aggregates::save_columns_sql!(),
    ", $25::int8[], $26::int8[], $27::text[], $28::text[], $29::text[], $30::int8[],
        $31::int8[]) AS u (",
    aggregates::save_names_sql!(),
    ", was_abs_at, was_abs_seq, was_abs_value, was_deltas, was_value, was_count, was_last)
      WHERE g.agreement_id = u.a AND g.feature_code = u.f AND g.period_start_ns = u.s
        AND g.record_count = u.was_count
        AND g.value = u.was_value::numeric AND g.deltas_after = u.was_deltas::numeric
        AND g.abs_value IS NOT DISTINCT FROM u.was_abs_value::numeric
        AND g.abs_seq IS NOT DISTINCT FROM u.was_abs_seq
        AND g.abs_effective_at_ns IS NOT DISTINCT FROM u.was_abs_at
        AND g.last_recorded_at_ns IS NOT DISTINCT FROM u.was_last
      RETURNING 1)
     SELECT 1 / CASE WHEN (SELECT count(*) FROM saved) = $32
                      AND (SELECT version FROM terms_version WHERE id = 0) = $33
                     THEN 1 ELSE 0 END"
);

/// The transaction's id, asked in the flight: by it the outcome of a batch
/// whose COMMIT went unanswered is asked, as for the usual way.
pub(super) const TXID: &str = "SELECT txid_current()";

/// `$1` sequence numbers for the stock, taken in a flight when the stock runs
/// low ([`Remembered::spare_wanted`]), so that the steady state never has to
/// go the usual way for them. A sequence is not transactional: the numbers
/// are taken whatever becomes of the batch, and are higher than every number
/// taken before, so above those in stock.
pub(super) const SPARE: &str =
    "SELECT nextval('usage_record_seq') FROM generate_series(1, $1::int8)";

/// Which backend a connection talks to: its process id and start, so that it
/// is never mistaken for a later backend given the same id.
pub(super) const BACKEND: &str =
    "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// What the writer remembers between batches for this path.
#[derive(Default)]
pub(super) struct Remembered {
    /// Aggregate rows as the writer's last committed batch left them.
    states: HashMap<PeriodKey, AggregateState>,
    /// Sequence numbers taken in advance, ascending, for the records of
    /// batches sent in one flight.
    seqs: VecDeque<i64>,
    /// The backend of each of the writer's connections.
    backends: HashMap<deadpool_postgres::ObjectId, Backend>,
    /// Batches left to run the usual way after a stale one (another server is
    /// writing the same rows: the guess would likely miss again).
    paused: u32,
    /// Records in the largest batch that asked for one flight, by which the
    /// stock is sized.
    largest: usize,
}

/// A PostgreSQL backend process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Backend {
    pub(super) pid: i32,
    /// `backend_start` as text.
    pub(super) start: String,
}

/// How to settle a batch sent in one flight whose transaction id never came
/// back: end its backend, then look for its first record.
#[derive(Clone, Debug)]
pub(super) struct Settle {
    pub(super) backend: Backend,
    /// The primary key of a record the batch inserts (its sequence number is
    /// unique): present if and only if the batch committed.
    pub(super) key: PeriodKey,
    pub(super) effective_at_ns: i64,
    pub(super) seq: i64,
}

impl Remembered {
    /// Most rows remembered: past it the writer starts again from none.
    const ROWS: usize = 16_384;
    /// The stock is refilled when it holds less than a quarter of the refill:
    /// [`Remembered::REFILL`] numbers, or four times the largest batch that
    /// asked for one flight (up to [`Remembered::MOST_REFILL`]), so that a
    /// group commit of batch requests finds enough too.
    const REFILL: usize = 1_024;
    const MOST_REFILL: usize = 65_536;
    /// Batches run the usual way after a stale one.
    const PAUSE_AFTER_STALE: u32 = 64;

    /// How many spare sequence numbers the next batch (run the usual way, or
    /// in one flight) should take for the stock.
    pub(super) fn spare_wanted(&self) -> usize {
        let refill = (self.largest * 4).clamp(Self::REFILL, Self::MOST_REFILL);
        if self.seqs.len() < refill / 4 {
            refill
        } else {
            0
        }
    }

    /// Keeps what a committed batch left: its rows' states and its spare
    /// sequence numbers (all taken after those in stock).
    pub(super) fn committed(&mut self, states: &HashMap<PeriodKey, AggregateState>, spare: &[i64]) {
        if self.states.len() + states.len() > Self::ROWS {
            self.states.clear();
        }
        self.states
            .extend(states.iter().map(|(k, s)| (k.clone(), *s)));
        self.seqs.extend(spare);
    }

    /// Forgets every row's state (a batch failed, or was stale): the next
    /// batches read their rows again. The stock stays valid.
    pub(super) fn forget(&mut self) {
        self.states.clear();
    }

    /// After a stale batch: forget, and let a few batches run the usual way.
    pub(super) fn stale(&mut self) {
        self.forget();
        self.paused = Self::PAUSE_AFTER_STALE;
    }

    /// The backend of connection `conn`, if known.
    pub(super) fn backend(&self, conn: &Object) -> Option<&Backend> {
        self.backends.get(&Object::id(conn))
    }

    /// Notes the backend of `conn`; forgets those of connections long gone.
    pub(super) fn note_backend(&mut self, conn: &Object, backend: Backend) {
        if self.backends.len() >= 16 {
            self.backends.clear();
        }
        self.backends.insert(Object::id(conn), backend);
    }
}

/// Reads the backend of `conn` (one round trip, once per connection).
pub(super) async fn read_backend(conn: &Object) -> PgResult<Backend> {
    let stmt = conn.prepare_cached(BACKEND).await?;
    let row = conn.query_one(&stmt, &[]).await?;
    Ok(Backend {
        pid: row.get(0),
        start: row.get(1),
    })
}

/// A batch ready to be sent in one flight.
pub(super) struct Flight<'a> {
    writes: Writes<'a>,
    /// The state of each row the batch reads, as remembered.
    remembered: HashMap<PeriodKey, AggregateState>,
    /// The cache's `terms_version`.
    version: i64,
    /// The batch's idempotency keys, stored as new.
    keys: idempotency::NewKeys<'a>,
    /// Sequence numbers to take for the stock ([`SPARE`]), if any.
    spare: i64,
    settle: Settle,
}

/// The batch, placed and applied from what the writer remembers, if it may go
/// in one flight (see the module); `None` sends it the usual way. No statement
/// is sent.
pub(super) async fn plan<'a>(
    conn: &Object,
    config: &StoreConfig,
    memory: &mut Remembered,
    cache: &AgreementCache,
    submissions: &[&'a UsageSubmission],
) -> PgResult<Option<Flight<'a>>> {
    if memory.paused > 0 {
        memory.paused -= 1;
        return Ok(None);
    }
    let Some(version) = cache.version() else {
        return Ok(None);
    };
    if memory.backend(conn).is_none() {
        return Ok(None);
    }
    let absolute = submissions.iter().any(|s| {
        s.records
            .iter()
            .flatten()
            .any(|r| r.meter_type != MeterType::Delta)
    });
    if absolute {
        return Ok(None);
    }
    let ids = batch::agreement_ids(submissions);
    if ids.is_empty() || !cache.covers(&ids) {
        return Ok(None);
    }
    let placed = batch::place_from_cache(submissions, config, cache)?;
    let mut states = HashMap::new();
    let mut records = 0;
    for p in placed.iter().flatten() {
        let Ok(p) = p else { continue };
        let Some(state) = memory.states.get(&p.key) else {
            return Ok(None);
        };
        let at_an_absolute = state
            .latest_absolute
            .is_some_and(|(order, _)| order.effective_at == p.effective_at);
        if at_an_absolute {
            return Ok(None);
        }
        states.insert(p.key.clone(), *state);
        records += 1;
    }
    memory.largest = memory.largest.max(records);
    if records == 0 || memory.seqs.len() < records {
        return Ok(None);
    }
    let remembered = states.clone();
    let seqs: Vec<i64> = memory.seqs.iter().take(records).copied().collect();
    // Every key is taken to be new (none claimed, none remembered): the
    // flight proves it by storing it, or fails.
    let keys = idempotency::Keys::default();
    // A delta never needs the deltas after an absolute, so `apply_all` reads
    // nothing here.
    let mut writes = batch::apply_all(conn, submissions, 0, keys, placed, states, seqs).await?;
    // Every row whose state decided an answer must be one the write guards:
    // a refusal (a hard limit) on a row the batch does not otherwise change
    // is decided under the row's lock, the usual way.
    if writes.changed.len() != writes.states.len() {
        return Ok(None);
    }
    let Some(first) = writes.stored.first() else {
        return Ok(None);
    };
    let settle = Settle {
        backend: memory.backend(conn).expect("checked above").clone(),
        key: first.key.clone(),
        effective_at_ns: codec::ns(first.order.effective_at)?,
        seq: first.order.seq,
    };
    let keys = idempotency::NewKeys::of(submissions, std::mem::take(&mut writes.keys))?;
    let spare = i64::try_from(memory.spare_wanted()).unwrap_or(0);
    memory.seqs.drain(..records);
    Ok(Some(Flight {
        writes,
        remembered,
        version,
        keys,
        spare,
        settle,
    }))
}

/// Sends `flight` on `conn`, which must not be in a transaction: BEGIN, the
/// transaction id, spare sequence numbers if due, the keys, the guarded
/// write, threshold events, the release of keys that remember nothing and
/// COMMIT, in one flight. As `batch::run`, it leaves the answers in
/// `committing` before sending; an `Err` with `committing` still set leaves
/// the outcome in doubt, and the caller asks for it by the transaction id if
/// it came back, else by [`Settle`] unless the connection said nothing at
/// all by `deadline` (`Failure::Timeout`: the database is likely
/// unreachable, and the answer is that the outcome is unknown). A stale
/// batch is `Err(Failure::Stale)`, one with a key that was not new
/// `Err(Failure::KeyHeld)`, with nothing committed.
///
/// BEGIN cannot fail on a connection that answers anything (it only warns when
/// a transaction is open already); on one that does not, nothing after it is
/// run either.
pub(super) async fn send(
    conn: &Object,
    config: &StoreConfig,
    flight: Flight<'_>,
    deadline: tokio::time::Instant,
    committing: &mut Option<Committing>,
) -> PgResult<()> {
    let Flight {
        writes,
        remembered,
        version,
        keys,
        spare,
        settle,
    } = flight;
    let Writes {
        answers,
        stored,
        states,
        changed,
        thresholds,
        ..
    } = writes;
    let saved = batch::saved(&states, &changed);
    let n_saved = i64::try_from(saved.len()).unwrap_or(i64::MAX);
    // The same rows in the same order, as remembered.
    let was: Vec<_> = saved
        .iter()
        .map(|(k, _, at)| (*k, &remembered[*k], *at))
        .collect();
    let records = batch::RecordColumns::new(&stored)?;
    let aggregates = aggregates::SaveColumns::new(&saved, config.webhook_usage_interval)?;
    let was = aggregates::SaveColumns::new(&was, config.webhook_usage_interval)?;
    *committing = Some(Committing {
        txid: None,
        settle: Some(settle),
        answers,
        states: states.clone(),
        raised_events: !thresholds.is_empty(),
        spare_seqs: Vec::new(),
    });
    // All prepared before the batch (`batch::run`): cache hits, so each
    // statement goes when its future is first polled, in the joined order.
    let txid_stmt = conn.prepare_cached(TXID).await?;
    let write_stmt = conn.prepare_cached(WRITE_GUARDED).await?;
    let spare_stmt = conn.prepare_cached(SPARE).await?;
    let mut params = Vec::with_capacity(33);
    params.extend(records.params());
    params.extend(aggregates.params());
    params.extend(was.state_params());
    params.extend([
        &n_saved as &(dyn tokio_postgres::types::ToSql + Sync),
        &version,
    ]);
    let got_txid = std::cell::Cell::new(None);
    let flight = async {
        futures::join!(
            conn.batch_execute("BEGIN"),
            async {
                let row = conn.query_one(&txid_stmt, &[]).await?;
                got_txid.set(Some(row.get::<_, i64>(0)));
                Ok::<_, tokio_postgres::Error>(())
            },
            async {
                if spare == 0 {
                    return Ok(Vec::new());
                }
                let rows = conn.query(&spare_stmt, &[&spare]).await?;
                Ok::<_, tokio_postgres::Error>(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
            },
            keys.insert(conn),
            conn.query_one(&write_stmt, &params),
            thresholds.write(conn),
            keys.release(conn),
            conn.batch_execute("COMMIT"),
        )
    };
    // A connection that has said nothing by the deadline, not even the
    // transaction id, is taken for dead (the usual way's first flight would
    // have timed out there too): the batch is in doubt, and is not waited for.
    let silent = async {
        tokio::time::sleep_until(deadline).await;
        if got_txid.get().is_some() {
            std::future::pending::<()>().await;
        }
    };
    let answered = tokio::select! {
        biased;
        answers = flight => Some(answers),
        () = silent => None,
    };
    if let Some(committing) = committing.as_mut() {
        committing.txid = got_txid.get();
    }
    let Some((begin, txid, spare, new_keys, written, events, released, commit)) = answered else {
        return Err(Failure::Timeout);
    };
    // Kept with the batch (they would be valid without it).
    let spare = match spare {
        Ok(seqs) => {
            if let Some(committing) = committing.as_mut() {
                committing.spare_seqs = seqs;
            }
            Ok(())
        }
        Err(e) => Err(Failure::from(e)),
    };
    let stale = written
        .as_ref()
        .err()
        .is_some_and(|e| e.code() == Some(&SqlState::DIVISION_BY_ZERO));
    let key_held = new_keys.as_ref().err().is_some_and(idempotency::not_new);
    let before_commit = begin
        .map_err(Failure::from)
        .and(txid.map_err(Failure::from))
        .and(spare)
        .and(new_keys)
        .and(written.map(drop).map_err(Failure::from))
        .and(events)
        .and(released);
    if let Err(failure) = before_commit {
        // A statement PostgreSQL refused aborts the transaction, whatever
        // COMMIT then says; a broken connection leaves it in doubt.
        if !failure.poisons_connection() {
            *committing = None;
        }
        return Err(if key_held {
            Failure::KeyHeld
        } else if stale {
            Failure::Stale
        } else {
            failure
        });
    }
    Ok(commit?)
}

/// Whether `conn`'s answer to a batch whose outcome is in doubt can be settled
/// by `settle`: ends the backend (unless it is gone already), waits until it
/// is, then tells whether the batch's first record is there. `Ok(None)`: the
/// backend did not go in time.
pub(super) async fn settle(
    conn: &impl GenericClient,
    settle: &Settle,
    give_up: tokio::time::Instant,
) -> PgResult<Option<bool>> {
    let Backend { pid, start } = &settle.backend;
    conn.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid = $1 AND backend_start::text = $2",
        &[pid, start],
    )
    .await?;
    let mut backoff = Backoff::until(give_up);
    loop {
        let alive: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                WHERE pid = $1 AND backend_start::text = $2)",
                &[pid, start],
            )
            .await?
            .get(0);
        if !alive {
            break;
        }
        if !backoff.wait().await {
            return Ok(None);
        }
    }
    let found: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM usage_records
                            WHERE agreement_id = $1 AND feature_code = $2
                              AND period_start_ns = $3 AND effective_at_ns = $4 AND seq = $5)",
            &[
                &settle.key.agreement_id,
                &settle.key.feature_code,
                &settle.key.period_start_ns,
                &settle.effective_at_ns,
                &settle.seq,
            ],
        )
        .await?
        .get(0);
    Ok(Some(found))
}
