//! What the SQLite writer remembers between its transactions (agreements,
//! plans, aggregate states), so that a usage record costs one INSERT; only ever
//! a copy of what is committed or of what the current transaction wrote.
//!
//! Design: `docs/design.md#writer-cache`.

use std::rc::Rc;

// foldhash rather than std's SipHash: hashing the writer's keys (agreement ids,
// feature codes) with SipHash cost ~3.8 K instructions a record; foldhash's
// per-process random seed keeps it resistant enough to crafted keys, and these
// maps hold only keys of rows that exist (agreements, plans, aggregates).
use foldhash::{HashMap, HashMapExt};

use jiff::Timestamp;
use kinde_meter_core::{
    aggregate::AggregateState,
    agreement::Agreement,
    catalog::Plan,
    ids::{AgreementId, FeatureCode, PlanCode},
    period::{Interval, Period},
};
use rusqlite::Connection;

use super::{
    aggregates::{self, PeriodKey, UsageEventMark},
    agreements, catalog,
    record_order::UnfiledTail,
};

/// Agreements or aggregates kept at most; past it the cache starts over.
pub(super) const MAX_ENTRIES: usize = 50_000;

/// An aggregate: agreement, feature, period start (ns).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct AggregateKey {
    pub agreement_id: AgreementId,
    pub feature_code: FeatureCode,
    pub period_start_ns: i64,
}

struct CachedAggregate {
    state: AggregateState,
    period_end_ns: i64,
    /// Changed by the current transaction (and listed in `dirty`).
    dirty: bool,
    /// The database has a row for it (committed, or written by this transaction).
    stored: bool,
    /// When the current transaction last changed its usage (ns), if it did:
    /// what makes its coalesced usage event due.
    usage_changed_at_ns: Option<i64>,
    /// The [`WriterCache::usage_event_generation`] in which a write marked its
    /// usage event due: while it is the current one, the event is known to be
    /// due still, and writes leave the mark out.
    usage_event_marked_in: u64,
}

/// The billing period last found for each anchor and interval, up to `most`
/// of them: pure calendar arithmetic, so never stale. Most records and reads
/// of an agreement fall in the period of the one before.
pub(super) struct Periods {
    found: HashMap<(Timestamp, Interval), Period>,
    most: usize,
}

impl Periods {
    pub(super) fn new(most: usize) -> Periods {
        Periods {
            found: HashMap::new(),
            most,
        }
    }

    /// `interval.period_containing(anchor, at)`: the period remembered for
    /// the anchor and interval when it contains `at` (periods from an anchor
    /// do not overlap), computed otherwise. A period that does not contain
    /// `at` (an instant before the anchor is in the first period) is not
    /// remembered.
    pub(super) fn containing(
        &mut self,
        anchor: Timestamp,
        interval: Interval,
        at: Timestamp,
    ) -> Period {
        if let Some(period) = self.found.get(&(anchor, interval))
            && period.start <= at
            && at < period.end
        {
            return *period;
        }
        let period = interval.period_containing(anchor, at);
        if period.start <= at && at < period.end {
            if self.found.len() >= self.most {
                self.found.clear();
            }
            self.found.insert((anchor, interval), period);
        }
        period
    }
}

/// The writer thread's cache; when it is valid: `docs/design.md#writer-cache`.
pub(super) struct WriterCache {
    /// `PRAGMA data_version` when the cache was last known valid.
    data_version: Option<i64>,
    agreements: HashMap<AgreementId, Rc<Agreement>>,
    plans: HashMap<PlanCode, Option<Rc<Plan>>>,
    aggregates: HashMap<AggregateKey, CachedAggregate>,
    /// Aggregates changed by the current transaction, not yet written.
    dirty: Vec<AggregateKey>,
    /// Moves on whenever usage events may have been built (their due marks
    /// cleared), voiding what aggregates remember of their marks; never 0.
    usage_event_generation: u64,
    /// Not cleared with the rest: never stale.
    periods: Periods,
    /// The records inserted and not filed yet, for the next filing
    /// (docs/design.md#record-order); dropped with the rest.
    pub(super) unfiled: UnfiledTail,
}

impl Default for WriterCache {
    fn default() -> Self {
        WriterCache {
            data_version: None,
            agreements: HashMap::new(),
            plans: HashMap::new(),
            aggregates: HashMap::new(),
            dirty: Vec::new(),
            usage_event_generation: 1,
            periods: Periods::new(MAX_ENTRIES),
            unfiled: UnfiledTail::default(),
        }
    }
}

impl WriterCache {
    /// Called first in every write transaction, holding the write lock:
    /// drops everything if another connection has committed since.
    pub(super) fn begin(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if self.data_version != Some(version)
            || self.agreements.len() > MAX_ENTRIES
            || self.aggregates.len() > MAX_ENTRIES
        {
            self.clear();
        }
        self.data_version = Some(version);
        Ok(())
    }

    /// `interval.period_containing(anchor, at)` ([`Periods`]).
    pub(super) fn period_containing(
        &mut self,
        anchor: Timestamp,
        interval: Interval,
        at: Timestamp,
    ) -> Period {
        self.periods.containing(anchor, interval, at)
    }

    /// Forgets everything (after a rolled-back transaction).
    pub(super) fn clear(&mut self) {
        self.data_version = None;
        self.unfiled.clear();
        self.agreements.clear();
        self.plans.clear();
        self.aggregates.clear();
        self.dirty.clear();
    }

    /// Forgets which aggregates' usage events are known to be due, for a job
    /// that may have built them (cleared their marks).
    pub(super) fn forget_usage_event_marks(&mut self) {
        self.usage_event_generation += 1;
    }

    /// Forgets agreements and plans, for a job that may have changed them.
    pub(super) fn forget_agreements_and_plans(&mut self) {
        self.agreements.clear();
        self.plans.clear();
    }

    /// The agreement with `id`, `None` if there is none.
    pub(super) fn agreement(
        &mut self,
        conn: &Connection,
        id: &AgreementId,
    ) -> rusqlite::Result<Option<Rc<Agreement>>> {
        if let Some(agreement) = self.agreements.get(id) {
            return Ok(Some(agreement.clone()));
        }
        // Absent ones are not remembered: ids that exist are what repeats.
        let Some(agreement) = agreements::load(conn, id)? else {
            return Ok(None);
        };
        let agreement = Rc::new(agreement);
        self.agreements.insert(id.clone(), agreement.clone());
        Ok(Some(agreement))
    }

    /// The plan with `code`, `None` if the catalog has none.
    pub(super) fn plan(
        &mut self,
        conn: &Connection,
        code: &PlanCode,
    ) -> rusqlite::Result<Option<Rc<Plan>>> {
        if let Some(plan) = self.plans.get(code) {
            return Ok(plan.clone());
        }
        let plan = catalog::load_plan(conn, code)?.map(Rc::new);
        self.plans.insert(code.clone(), plan.clone());
        Ok(plan)
    }

    /// The state of an aggregate as of this transaction.
    pub(super) fn aggregate(
        &mut self,
        conn: &Connection,
        key: &AggregateKey,
    ) -> rusqlite::Result<AggregateState> {
        if let Some(cached) = self.aggregates.get(key) {
            return Ok(cached.state);
        }
        let state = aggregates::load(conn, &period_key(key))?;
        self.aggregates.insert(
            key.clone(),
            CachedAggregate {
                state,
                period_end_ns: 0, // set with the first change
                dirty: false,
                // Rows are written only with the records they count: a state
                // without records is one without a row.
                stored: state.record_count > 0,
                usage_changed_at_ns: None,
                usage_event_marked_in: 0,
            },
        );
        Ok(state)
    }

    /// Sets an aggregate's state; written to the database by [`flush`](Self::flush).
    /// `usage_changed_at_ns` is the instant of the change when it changed the
    /// usage (not only the record count).
    pub(super) fn set_aggregate(
        &mut self,
        key: &AggregateKey,
        period_end_ns: i64,
        state: AggregateState,
        usage_changed_at_ns: Option<i64>,
    ) {
        // One lookup when it is cached (as `aggregate` has usually done); the
        // key is cloned only when it is not.
        let cached = match self.aggregates.get_mut(key) {
            Some(cached) => cached,
            None => self
                .aggregates
                .entry(key.clone())
                .or_insert(CachedAggregate {
                    state,
                    period_end_ns,
                    dirty: false,
                    stored: false,
                    usage_changed_at_ns: None,
                    usage_event_marked_in: 0,
                }),
        };
        cached.state = state;
        cached.period_end_ns = period_end_ns;
        if usage_changed_at_ns.is_some() {
            cached.usage_changed_at_ns = cached.usage_changed_at_ns.max(usage_changed_at_ns);
        }
        if !cached.dirty {
            cached.dirty = true;
            self.dirty.push(key.clone());
        }
    }

    /// Writes every aggregate the transaction changed, once each, marking the
    /// coalesced usage event of those whose usage changed due (with the same
    /// statement, `usage_event_interval_ns` apart). Called before COMMIT, in
    /// the transaction.
    pub(super) fn flush(
        &mut self,
        conn: &Connection,
        usage_event_interval_ns: i64,
    ) -> rusqlite::Result<()> {
        let mut plain_update = None;
        for key in self.dirty.drain(..) {
            let Some(cached) = self.aggregates.get_mut(&key) else {
                continue; // not reached: dirty entries stay until flushed
            };
            let row = period_key(&key);
            // Marked only when the usage changed and the event is not known to
            // be due already: the common write stays the plain one.
            let mark = match cached.usage_changed_at_ns.take() {
                Some(changed_at_ns)
                    if cached.usage_event_marked_in != self.usage_event_generation =>
                {
                    cached.usage_event_marked_in = self.usage_event_generation;
                    Some(UsageEventMark {
                        changed_at_ns,
                        interval_ns: usage_event_interval_ns,
                    })
                }
                _ => None,
            };
            // An UPDATE of a known row is one b-tree seek; the upsert tries an
            // INSERT first. The upsert is kept for new rows (and, defensively,
            // for a row that turns out to be missing).
            let updated = cached.stored
                && aggregates::update(conn, &mut plain_update, &row, &cached.state, mark)?;
            if !updated {
                aggregates::save(conn, &row, cached.period_end_ns, &cached.state, mark)?;
            }
            cached.stored = true;
            cached.dirty = false;
        }
        Ok(())
    }
}

fn period_key(key: &AggregateKey) -> PeriodKey<'_> {
    PeriodKey {
        agreement_id: key.agreement_id.as_str(),
        feature_code: key.feature_code.as_str(),
        period_start_ns: key.period_start_ns,
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use kinde_meter_core::{
        ErrorCode, aggregate::MeterType, catalog::Catalog, ids::CustomerId, request::UsageRecord,
        value::MeterValue,
    };
    use rusqlite::TransactionBehavior;

    use super::*;
    use crate::{
        NewAgreement, RecordResult, Store, StoreConfig, SubmissionKind, SubmissionOutcome,
        UsageQuery, UsageSubmission, sqlite::SqliteStore,
    };

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    async fn agreement(store: &SqliteStore, at: &str, random: u8) -> Agreement {
        store
            .create_agreement(NewAgreement {
                customer_id: CustomerId::parse("customer_1".to_owned()).unwrap(),
                plan_code: PlanCode::parse("pro".to_owned()).unwrap(),
                now: t(at),
                id_random: [random; 10],
            })
            .await
            .unwrap()
    }

    async fn delta(
        store: &SqliteStore,
        agreement: &Agreement,
        value: &str,
        at: &str,
    ) -> RecordResult {
        let record = UsageRecord {
            agreement_id: agreement.id.clone(),
            feature_code: FeatureCode::parse("api_calls".to_owned()).unwrap(),
            value: MeterValue::parse(value).unwrap(),
            timestamp: None,
            meter_type: MeterType::Delta,
        };
        let outcome = store
            .submit_usage(UsageSubmission {
                client_id: "client".to_owned(),
                idempotency: None,
                records: vec![Ok(record)],
                received_at: t(at),
                kind: SubmissionKind::Single,
            })
            .await
            .unwrap();
        match outcome {
            SubmissionOutcome::Processed(mut results) => results.remove(0),
            other => panic!("{other:?}"),
        }
    }

    async fn usage(store: &SqliteStore, agreement: &Agreement) -> (String, u64) {
        let report = store
            .read_usage(UsageQuery {
                agreement_id: agreement.id.clone(),
                feature_code: Some(FeatureCode::parse("api_calls".to_owned()).unwrap()),
                at: t("2025-01-02T00:00:00Z"),
            })
            .await
            .unwrap();
        let usage = &report.usage[0];
        (usage.value.to_string(), usage.record_count)
    }

    /// The server's writer caches the agreement and its aggregate; another
    /// process (the CLI) then records usage and ends the agreement. The
    /// server's next writes must see both.
    #[tokio::test]
    async fn another_process_s_commits_invalidate_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let server = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        server.load_catalog(&Catalog::demo()).await.unwrap();
        let first = agreement(&server, "2025-01-01T00:00:00Z", 1).await;
        assert_eq!(
            delta(&server, &first, "5", "2025-01-01T10:00:00Z").await,
            Ok(())
        );

        let cli = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(
            delta(&cli, &first, "7", "2025-01-01T11:00:00Z").await,
            Ok(())
        );
        assert_eq!(
            delta(&server, &first, "1", "2025-01-01T12:00:00Z").await,
            Ok(())
        );
        assert_eq!(usage(&server, &first).await, ("13".to_owned(), 3));

        // A new agreement for the customer ends the first one.
        agreement(&cli, "2025-01-01T13:00:00Z", 2).await;
        cli.shutdown().await;
        let refused = delta(&server, &first, "1", "2025-01-01T14:00:00Z").await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::AgreementNotActive);
        assert_eq!(usage(&server, &first).await, ("13".to_owned(), 3));
        server.shutdown().await;
    }

    fn data_version(conn: &mut Connection) -> i64 {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let version = tx
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap();
        tx.commit().unwrap();
        version
    }

    #[test]
    fn data_version_moves_on_other_connections_commits_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut ours = Connection::open(&path).unwrap();
        ours.pragma_update(None, "journal_mode", "WAL").unwrap();
        ours.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let mut theirs = Connection::open(&path).unwrap();

        let first = data_version(&mut ours);
        ours.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(data_version(&mut ours), first, "our own commit");
        theirs.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let second = data_version(&mut ours);
        assert_ne!(second, first, "another connection's commit");
        assert_eq!(data_version(&mut ours), second);
        let tx = theirs.transaction().unwrap();
        tx.execute("INSERT INTO t VALUES (3)", []).unwrap();
        drop(tx); // rolled back
        assert_eq!(data_version(&mut ours), second, "a rollback elsewhere");
    }
}
