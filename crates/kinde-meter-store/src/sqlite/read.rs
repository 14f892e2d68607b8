//! Reads: a small pool of read connections.
//!
//! In WAL mode readers see the last committed state and neither wait for nor
//! delay the writer. Connections are opened lazily and reused. Two ways to run
//! a read (`docs/design.md#sqlite-store`):
//!
//! - [`ReadPool::run`], on tokio's blocking threads, for reads whose size the
//!   caller does not bound (listings, exports, statistics); a semaphore keeps at
//!   most [`READ_CONNECTIONS`] of them at once, so a burst queues rather than
//!   opening a connection per request.
//! - [`ReadPool::run_inline`], on the calling thread, for the hot point reads
//!   (usage read-back, the entitlement check, one agreement): a few index
//!   lookups, a few microseconds, where the two thread hops of a blocking task
//!   would cost several times the read itself.
//!   Its connections are kept apart from the others, each with the
//!   statements of these reads prepared on it ([`HotConnection`]).

use std::{
    collections::HashMap,
    mem::ManuallyDrop,
    ops::Deref,
    path::PathBuf,
    ptr::NonNull,
    sync::{
        Arc, LazyLock, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    catalog::{Feature, Plan},
    ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
    period::Period,
    value::UsageTotal,
};
use rusqlite::{Connection, OptionalExtension, Statement};
use tokio::sync::Semaphore;

use super::{
    aggregates::{self, PeriodKey},
    agreements,
    cache::Periods,
    catalog, codec, connection,
    error::OpError,
};
use crate::{
    CustomerEntitlements, FeatureUsage, ReadUsageError, StoreError, UsageQuery, UsageReport,
    record_checks::metered_features_asked, remembered::Agreements,
};

/// Most read connections open at once.
pub(super) const READ_CONNECTIONS: usize = 4;

/// Read connections to one database file, and the plans they have read.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// The connections of [`ReadPool::run_inline`], with their statements.
    hot: Mutex<Vec<HotConnection>>,
    permits: Arc<Semaphore>,
    plans: PlanCache,
}

/// Plans as the hot reads last loaded them, so that a check or a usage read
/// does not load its agreement's plan (two queries and a dozen allocations,
/// about half the SQL work of a check) on every request.
///
/// Plans change only when a catalog is loaded, and in SQLite only this
/// process loads one (`kinde-meter serve` at start; a second server on the
/// same directory is refused, the CLI loads none): [`ReadPool::catalog_loaded`]
/// is called after such a load commits, and empties the cache. A plan read
/// in a snapshot older than that load is not kept: entries are only added
/// while the generation read before their snapshot is still the current one.
#[derive(Default)]
struct PlanCache {
    generation: AtomicU64,
    plans: Mutex<HashMap<PlanCode, Arc<Plan>>>,
}

impl ReadPool {
    /// A pool for the database at `path`; no connection is opened yet.
    pub(super) fn new(path: PathBuf) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::with_capacity(READ_CONNECTIONS)),
            hot: Mutex::new(Vec::with_capacity(2 * READ_CONNECTIONS)),
            permits: Arc::new(Semaphore::new(READ_CONNECTIONS)),
            plans: PlanCache::default(),
        }
    }

    /// Forgets the plans read so far: a catalog load has committed.
    pub(super) fn catalog_loaded(&self) {
        let mut plans = self
            .plans
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.plans.generation.fetch_add(1, Ordering::SeqCst);
        plans.clear();
    }

    /// The current plan generation, read before a snapshot begins.
    fn plan_generation(&self) -> u64 {
        self.plans.generation.load(Ordering::SeqCst)
    }

    /// The plan `code` if the cache has it (then it is the current one).
    fn cached_plan(&self, code: &PlanCode) -> Option<Arc<Plan>> {
        self.plans
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(code)
            .cloned()
    }

    /// The plan `code` (`None`: no such plan), from the cache or read with
    /// `conn` in a snapshot begun after `generation` was read.
    fn plan(
        &self,
        conn: &Connection,
        code: &PlanCode,
        generation: u64,
    ) -> rusqlite::Result<Option<Arc<Plan>>> {
        if let Some(plan) = self.cached_plan(code) {
            return Ok(Some(plan));
        }
        let Some(plan) = catalog::load_plan(conn, code)? else {
            return Ok(None);
        };
        let plan = Arc::new(plan);
        let mut plans = self
            .plans
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Under the lock `catalog_loaded` takes: no load committed since the
        // snapshot began, so this plan is the current one.
        if self.plan_generation() == generation {
            plans.insert(code.clone(), plan.clone());
        }
        Ok(Some(plan))
    }

    /// Runs `read` on a read connection on a blocking thread: its answer, its
    /// refusal, or `StoreError::Unavailable` for a SQLite failure.
    pub(super) async fn run<T, E, F>(self: &Arc<Self>, read: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, OpError<E>> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let pool = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = match pool.take() {
                Some(conn) => conn,
                None => connection::open_reader(&pool.path)
                    .map_err(|e| OpError::<E>::from(e).into_answer())?,
            };
            let result = read(&mut conn).map_err(OpError::into_answer);
            // Back to the pool even after an error: SQLite connections recover.
            // After a panic it is dropped with the unwinding closure instead.
            pool.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Unavailable(format!("read task failed: {e}")).into()),
        }
    }

    /// Runs `read` on a read connection on this thread, without yielding:
    /// only for reads that are a bounded number of index lookups (they would
    /// otherwise hold up the runtime's other tasks). At most one connection per
    /// thread reading at once is in use, so the runtime's worker threads bound
    /// how many this opens.
    pub(super) fn run_inline<T, E, F>(&self, read: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: for<'c> FnOnce(&mut Reader<'c>, Plans<'_>) -> Result<T, OpError<E>>,
    {
        let plans = Plans {
            pool: self,
            generation: self.plan_generation(),
        };
        let taken = self
            .hot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => {
                HotConnection::open(&self.path).map_err(|e| OpError::<E>::from(e).into_answer())?
            }
        };
        let result = conn
            .with(|mut reader| read(&mut reader, plans))
            .map_err(OpError::into_answer);
        let mut idle = self.hot.lock().unwrap_or_else(PoisonError::into_inner);
        // Connections beyond what readers use at once are closed, and so is
        // one left inside a transaction its snapshot could not end.
        if idle.len() < 2 * READ_CONNECTIONS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }

    fn take(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }
}

/// Where an inline read gets its plans: [`ReadPool::plan`] with the
/// generation read before the read's snapshot began.
#[derive(Clone, Copy)]
pub(super) struct Plans<'a> {
    pool: &'a ReadPool,
    generation: u64,
}

impl Plans<'_> {
    /// The plan `code`, `None` if there is none.
    fn get(self, conn: &Connection, code: &PlanCode) -> rusqlite::Result<Option<Arc<Plan>>> {
        self.pool.plan(conn, code, self.generation)
    }

    /// The plan `code` if the cache has it (then it is the current one).
    fn cached(self, code: &PlanCode) -> Option<Arc<Plan>> {
        self.pool.cached_plan(code)
    }
}

/// The hot reads' statements, one per [`Hot`], each prepared on first use
/// and then kept with its connection ([`HotConnection`]): a read runs them
/// without rusqlite's statement cache, which hashes the SQL text, copies it
/// and re-inserts the statement on every use (about a tenth of a check's
/// instructions).
#[derive(Clone, Copy)]
enum Hot {
    Begin,
    Rollback,
    AgreementById,
    ActiveAgreementOfCustomer,
    Aggregate,
    /// The `agreements_version` counter (schema version 5).
    AgreementsVersion,
    /// That counter and the aggregates of `n` features (at most
    /// [`MAX_CONFIRMED`]) of one agreement and period, in one statement.
    Confirmed(usize),
}

impl Hot {
    const COUNT: usize = 7 + MAX_CONFIRMED;

    /// Its place in [`Statements`].
    fn index(self) -> usize {
        match self {
            Hot::Begin => 0,
            Hot::Rollback => 1,
            Hot::AgreementById => 2,
            Hot::ActiveAgreementOfCustomer => 3,
            Hot::Aggregate => 4,
            Hot::AgreementsVersion => 5,
            Hot::Confirmed(n) => 6 + n,
        }
    }

    /// The statement's SQL.
    fn sql(self) -> &'static str {
        match self {
            Hot::Begin => "BEGIN",
            Hot::Rollback => "ROLLBACK",
            Hot::AgreementById => agreements::LOAD,
            Hot::ActiveAgreementOfCustomer => agreements::ACTIVE_OF_CUSTOMER,
            Hot::Aggregate => aggregates::READ,
            Hot::AgreementsVersion => AGREEMENTS_VERSION,
            Hot::Confirmed(n) => &CONFIRMED[n],
        }
    }
}

/// The statement of [`Hot::AgreementsVersion`].
const AGREEMENTS_VERSION: &str = "SELECT version FROM agreements_version WHERE id = 0";

/// Most features whose aggregates [`Hot::Confirmed`] reads (a plan with more
/// metered features is read in a snapshot).
const MAX_CONFIRMED: usize = 8;

/// The SQL of [`Hot::Confirmed`]`(n)` for each `n`: one row, the version, then
/// for each `k < n` the `value, record_count, last_recorded_at_ns` of feature
/// `?{k + 3}`'s aggregate of agreement `?1` starting at `?2` (NULLs if it has
/// none): a primary-key lookup each, joined to the version's row, so one row
/// to step through whatever `n` (a `UNION ALL` of one row per aggregate cost
/// a check ~0.8 K more instructions, callgrind). One statement reads in one
/// snapshot, so the version confirms the agreement the aggregates are read
/// for.
static CONFIRMED: LazyLock<[String; MAX_CONFIRMED + 1]> = LazyLock::new(|| {
    std::array::from_fn(|n| {
        let mut columns = String::from("SELECT v.version");
        let mut joins = String::from(" FROM agreements_version v");
        for k in 0..n {
            columns.push_str(&format!(
                ", g{k}.value, g{k}.record_count, g{k}.last_recorded_at_ns"
            ));
            joins.push_str(&format!(
                " LEFT JOIN usage_aggregates g{k} ON g{k}.agreement_id = ?1
                     AND g{k}.feature_code = ?{} AND g{k}.period_start_ns = ?2",
                k + 3
            ));
        }
        columns + &joins + " WHERE v.id = 0"
    })
});

/// Statements prepared on the connection that `'c` borrows.
struct Statements<'c>([Option<Statement<'c>>; Hot::COUNT]);

/// A read connection of [`ReadPool::run_inline`] and the statements prepared
/// on it. The statements borrow the connection, so it is kept at a fixed
/// address of its own and only ever lent out shared (`&Connection`: the
/// statements hold the same kind of borrow); [`HotConnection::with`] lends
/// both for the length of one read, and `Drop` finalizes the statements
/// before it closes the connection.
struct HotConnection {
    /// Borrow `*conn`; their `'static` is never seen outside this type.
    statements: ManuallyDrop<Statements<'static>>,
    /// Billing periods found by this connection's reads.
    periods: Periods,
    /// Agreements found by this connection's reads.
    agreements: Agreements,
    /// From `Box::into_raw`; freed (closed) in `Drop`, after `statements`.
    conn: NonNull<Connection>,
}

// SAFETY: the connection is `Send` (rusqlite's own statement cache moves with
// it the same way); its statements move together with it and are used only
// through `&mut self`, so never from two threads at once.
unsafe impl Send for HotConnection {}

impl Drop for HotConnection {
    fn drop(&mut self) {
        // SAFETY: `statements` is not used again, and is dropped before the
        // connection it borrows; `conn` came from `Box::into_raw` and nothing
        // else frees it.
        unsafe {
            ManuallyDrop::drop(&mut self.statements);
            drop(Box::from_raw(self.conn.as_ptr()));
        }
    }
}

impl HotConnection {
    fn open(path: &std::path::Path) -> rusqlite::Result<HotConnection> {
        let conn = Box::new(connection::open_reader(path)?);
        Ok(HotConnection {
            statements: ManuallyDrop::new(Statements(Default::default())),
            periods: Periods::new(MAX_PERIODS),
            agreements: Agreements::new(MAX_AGREEMENTS),
            conn: NonNull::from(Box::leak(conn)),
        })
    }

    fn is_autocommit(&self) -> bool {
        // SAFETY: as in `with`.
        unsafe { self.conn.as_ref() }.is_autocommit()
    }

    /// Runs `read` with the connection and its statements. `read` works for
    /// any `'c`, so whatever it leaves in the statements is a statement of
    /// this connection (or of one that lives for ever).
    fn with<R>(&mut self, read: impl for<'c> FnOnce(Reader<'c>) -> R) -> R {
        // SAFETY: the connection lives until `self` is dropped, and only
        // shared references to it are made. The statements' lifetime is
        // narrowed to this call, which is no longer than the connection's.
        let conn: &Connection = unsafe { self.conn.as_ref() };
        let statements: &mut Statements<'static> = &mut self.statements;
        let statements: &mut Statements<'_> =
            unsafe { &mut *std::ptr::from_mut(statements).cast::<Statements<'_>>() };
        read(Reader {
            conn,
            statements,
            periods: &mut self.periods,
            agreements: &mut self.agreements,
        })
    }
}

/// A hot read's connection (as a `Connection`, for reads of its own) and
/// its kept statements.
pub(super) struct Reader<'c> {
    conn: &'c Connection,
    statements: &'c mut Statements<'c>,
    periods: &'c mut Periods,
    agreements: &'c mut Agreements,
}

impl<'c> Reader<'c> {
    /// The statement `hot`, prepared now if it was not yet.
    fn statement(&mut self, hot: Hot) -> rusqlite::Result<&mut Statement<'c>> {
        let slot = &mut self.statements.0[hot.index()];
        let stmt = match slot {
            Some(stmt) => stmt,
            None => slot.insert(self.conn.prepare(hot.sql())?),
        };
        Ok(stmt)
    }

    /// Runs `read` in one snapshot (a read transaction) of the database.
    fn snapshot<T, E>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        self.statement(Hot::Begin)?.execute([])?;
        let result = read(self);
        // Nothing was written: ending it either way is the same. Should this
        // fail, `ReadPool::run_inline` closes the connection.
        if let Ok(rollback) = self.statement(Hot::Rollback) {
            let _ = rollback.execute([]);
        }
        result
    }

    /// `agreement.period_containing(at)` ([`Periods`]).
    fn period_containing(&mut self, agreement: &Agreement, at: Timestamp) -> Period {
        self.periods
            .containing(agreement.anchor, agreement.interval, at)
    }

    /// The agreement with `id` (`agreements::load`).
    pub(super) fn agreement(&mut self, id: &AgreementId) -> rusqlite::Result<Option<Agreement>> {
        self.statement(Hot::AgreementById)?
            .query_row([id.as_str()], agreements::from_row)
            .optional()
    }

    /// The customer's newest agreement active at `now`
    /// (`agreements::active_of_customer`).
    fn active_agreement_of_customer(
        &mut self,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> rusqlite::Result<Option<Agreement>> {
        self.statement(Hot::ActiveAgreementOfCustomer)?
            .query_row(
                (customer_id.as_str(), codec::ns_clamped(now)),
                agreements::from_row,
            )
            .optional()
    }

    /// An aggregate's usage, record count and last record (`aggregates::read`).
    fn aggregate(&mut self, key: &PeriodKey<'_>) -> rusqlite::Result<Option<AggregateRow>> {
        aggregates::read_with(self.statement(Hot::Aggregate)?, key)
    }

    /// The `agreements_version` counter, remembered agreements forgotten if
    /// it is not the one they were read at. In a snapshot, before its
    /// agreements are read.
    fn agreements_version(&mut self) -> rusqlite::Result<Option<i64>> {
        let version = self
            .statement(Hot::AgreementsVersion)?
            .query_row([], |r| r.get(0))
            .optional()?;
        if let Some(version) = version {
            self.agreements.seen(version);
        }
        Ok(version)
    }

    /// The aggregates of `features` (one entry each, in their order; `None`:
    /// no usage yet) of `agreement_id` in the period starting at
    /// `period_start_ns`, in one statement that also finds the agreements
    /// version: `None` unless that is still `version` (then the agreement
    /// as remembered is the stored one in the statement's snapshot), or when
    /// there are too many features for one statement.
    fn confirmed_aggregates(
        &mut self,
        version: i64,
        agreement_id: &AgreementId,
        period_start_ns: i64,
        features: &[&Feature],
    ) -> rusqlite::Result<Option<[Option<AggregateRow>; MAX_CONFIRMED]>> {
        let n = features.len();
        if n > MAX_CONFIRMED {
            return Ok(None);
        }
        let stmt = self.statement(Hot::Confirmed(n))?;
        if n > 0 {
            stmt.raw_bind_parameter(1, agreement_id.as_str())?;
            stmt.raw_bind_parameter(2, period_start_ns)?;
            for (k, feature) in features.iter().enumerate() {
                stmt.raw_bind_parameter(k + 3, feature.code.as_str())?;
            }
        }
        let mut rows = stmt.raw_query();
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        if row.get::<_, i64>(0)? != version {
            return Ok(None);
        }
        let mut aggregates = [None; MAX_CONFIRMED];
        for (k, slot) in aggregates.iter_mut().enumerate().take(n) {
            let at = 1 + 3 * k;
            if let Some(value) = row.get_ref(at)?.as_str_or_null()? {
                *slot = Some(aggregates::read_row(
                    value,
                    row.get(at + 1)?,
                    row.get(at + 2)?,
                )?);
            }
        }
        Ok(Some(aggregates))
    }
}

impl Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Most periods a hot connection remembers.
const MAX_PERIODS: usize = 4096;

/// Most agreements (by id, and by customer) a hot connection remembers.
const MAX_AGREEMENTS: usize = 4096;

/// An aggregate's usage, record count and last record.
type AggregateRow = (UsageTotal, u64, Option<Timestamp>);

/// A trivial query that touches the database file.
pub(super) fn ping(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("SELECT count(*) FROM schema_migrations")?
        .query_row([], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// Usage of the agreement's metered features (or the one asked for) in the
/// period containing `query.at`, from the aggregates only.
pub(super) fn usage(
    reader: &mut Reader<'_>,
    plans: Plans<'_>,
    query: &UsageQuery,
) -> Result<UsageReport, OpError<ReadUsageError>> {
    if let Some(report) = remembered_usage(reader, plans, query)? {
        return Ok(report);
    }
    // One snapshot for agreement, plan and aggregates.
    reader.snapshot(|reader| {
        let version = reader.agreements_version()?;
        let Some(agreement) = reader.agreement(&query.agreement_id)? else {
            return Err(ReadUsageError::AgreementNotFound.into());
        };
        let agreement = Arc::new(agreement);
        if let Some(version) = version {
            reader.agreements.remember(version, &agreement);
        }
        let plan = plans.get(reader, &agreement.plan_code)?;
        let features =
            crate::record_checks::features_to_report(plan.as_deref(), query.feature_code.as_ref())?;
        let period = reader.period_containing(&agreement, query.at);
        Ok(report_with(&agreement, &features, period, |key| {
            reader.aggregate(key)
        })?)
    })
}

/// The customer's newest agreement active at `now`, its plan and the usage of
/// its metered features (or only of `only`) in the period containing `now`,
/// in one snapshot.
pub(super) fn customer_entitlements(
    reader: &mut Reader<'_>,
    plans: Plans<'_>,
    customer_id: &CustomerId,
    now: Timestamp,
    only: Option<&FeatureCode>,
) -> rusqlite::Result<Option<CustomerEntitlements>> {
    if let Some(found) = remembered_entitlements(reader, plans, customer_id, now, only)? {
        return Ok(Some(found));
    }
    reader.snapshot(|reader| {
        let version = reader.agreements_version()?;
        let Some(agreement) = reader.active_agreement_of_customer(customer_id, now)? else {
            return Ok(None);
        };
        let agreement = Arc::new(agreement);
        if let Some(version) = version {
            reader.agreements.remember(version, &agreement);
            reader.agreements.remember_newest(version, now, &agreement);
        }
        let Some(plan) = plans.get(reader, &agreement.plan_code)? else {
            return Ok(None);
        };
        let features: Vec<&Feature> = metered_features_asked(&plan, only).collect();
        let period = reader.period_containing(&agreement, now);
        let usage = report_with(&agreement, &features, period, |key| reader.aggregate(key))?;
        Ok(Some(CustomerEntitlements {
            agreement,
            plan,
            usage,
        }))
    })
}

/// [`usage`] from the agreement this connection remembers and the plan in
/// the cache, its aggregates read in one statement that confirms the
/// agreement: `None` if any of them is not at hand (then a snapshot reads
/// everything), or if the read would refuse (the refusal is left to it).
fn remembered_usage(
    reader: &mut Reader<'_>,
    plans: Plans<'_>,
    query: &UsageQuery,
) -> rusqlite::Result<Option<UsageReport>> {
    let (Some(version), Some(agreement)) = (
        reader.agreements.version(),
        reader.agreements.by_id(&query.agreement_id).cloned(),
    ) else {
        return Ok(None);
    };
    let Some(plan) = plans.cached(&agreement.plan_code) else {
        return Ok(None);
    };
    let Ok(features) =
        crate::record_checks::features_to_report(Some(&plan), query.feature_code.as_ref())
    else {
        return Ok(None);
    };
    let period = reader.period_containing(&agreement, query.at);
    confirmed_report(reader, version, &agreement, &features, period)
}

/// [`customer_entitlements`] from the customer's newest agreement this
/// connection remembers and the plan in the cache, as [`remembered_usage`].
fn remembered_entitlements(
    reader: &mut Reader<'_>,
    plans: Plans<'_>,
    customer_id: &CustomerId,
    now: Timestamp,
    only: Option<&FeatureCode>,
) -> rusqlite::Result<Option<CustomerEntitlements>> {
    let (Some(version), Some(agreement)) = (
        reader.agreements.version(),
        reader
            .agreements
            .newest_of_customer(customer_id, now)
            .cloned(),
    ) else {
        return Ok(None);
    };
    let Some(plan) = plans.cached(&agreement.plan_code) else {
        return Ok(None);
    };
    let features: Vec<&Feature> = metered_features_asked(&plan, only).collect();
    let period = reader.period_containing(&agreement, now);
    let Some(usage) = confirmed_report(reader, version, &agreement, &features, period)? else {
        return Ok(None);
    };
    Ok(Some(CustomerEntitlements {
        agreement,
        plan,
        usage,
    }))
}

/// [`report`] of `period` read with [`Reader::confirmed_aggregates`]: `None`
/// if the agreements version is no longer `version`.
fn confirmed_report(
    reader: &mut Reader<'_>,
    version: i64,
    agreement: &Agreement,
    features: &[&Feature],
    period: Period,
) -> rusqlite::Result<Option<UsageReport>> {
    // A period beyond the instants the store holds is left to the snapshot.
    let Ok(period_start_ns) = i64::try_from(period.start.as_nanosecond()) else {
        return Ok(None);
    };
    let Some(rows) =
        reader.confirmed_aggregates(version, &agreement.id, period_start_ns, features)?
    else {
        return Ok(None);
    };
    let usage = features
        .iter()
        .zip(rows)
        .map(|(feature, row)| feature_usage(feature, row))
        .collect();
    Ok(Some(UsageReport { period, usage }))
}

/// Usage of `features` of `agreement` in the period containing `at`, one
/// aggregate row each (none: no usage yet).
pub(super) fn report(
    conn: &Connection,
    agreement: &Agreement,
    features: &[&Feature],
    at: Timestamp,
) -> rusqlite::Result<UsageReport> {
    let period = agreement.period_containing(at);
    report_with(agreement, features, period, |key| {
        aggregates::read(conn, key)
    })
}

/// [`report`] of `period`, each aggregate read with `read`.
fn report_with(
    agreement: &Agreement,
    features: &[&Feature],
    period: Period,
    mut read: impl FnMut(&PeriodKey<'_>) -> rusqlite::Result<Option<AggregateRow>>,
) -> rusqlite::Result<UsageReport> {
    let mut usage = Vec::with_capacity(features.len());
    for feature in features {
        // A period beyond the instants the store holds has no aggregate.
        let found = match i64::try_from(period.start.as_nanosecond()) {
            Ok(period_start_ns) => {
                let key = PeriodKey {
                    agreement_id: agreement.id.as_str(),
                    feature_code: feature.code.as_str(),
                    period_start_ns,
                };
                read(&key)?
            }
            Err(_) => None,
        };
        usage.push(feature_usage(feature, found));
    }
    Ok(UsageReport { period, usage })
}

/// A feature's usage from its aggregate row (none: no usage yet).
fn feature_usage(feature: &Feature, row: Option<AggregateRow>) -> FeatureUsage {
    let (value, record_count, last_recorded_at) = row.unwrap_or_default();
    FeatureUsage {
        feature_code: feature.code.clone(),
        value,
        record_count,
        last_recorded_at,
    }
}

#[cfg(test)]
mod tests {
    use kinde_meter_core::{catalog::Catalog, ids::FeatureCode};

    use super::*;
    use crate::{NewAgreement, Store, StoreConfig, sqlite::SqliteStore};

    fn catalog(limit_max: u64, extra_feature: bool) -> Catalog {
        let extra = if extra_feature {
            "[[plans.features]]\ncode = \"extra\"\nmetered = true\n"
        } else {
            ""
        };
        let text = format!(
            "[[plans]]\ncode = \"pro\"\ninterval = \"month\"\n\
             [[plans.features]]\ncode = \"api_calls\"\nmetered = true\nlimit_max = {limit_max}\n{extra}"
        );
        Catalog::parse(&text, "test.toml").unwrap()
    }

    /// The limit of `api_calls` in the customer's plan, as a check reads it.
    async fn limit(store: &SqliteStore, customer: &CustomerId, now: Timestamp) -> Option<u64> {
        let code = FeatureCode::parse("api_calls".to_owned()).unwrap();
        let entitlements = store
            .customer_entitlements(customer, now, Some(&code))
            .await
            .unwrap()
            .unwrap();
        entitlements
            .plan
            .feature(&code)
            .unwrap()
            .limit_max
            .map(|l| u64::try_from(l).unwrap())
    }

    async fn read_extra(store: &SqliteStore, agreement: &Agreement, now: Timestamp) -> bool {
        store
            .read_usage(UsageQuery {
                agreement_id: agreement.id.clone(),
                feature_code: Some(FeatureCode::parse("extra".to_owned()).unwrap()),
                at: now,
            })
            .await
            .is_ok()
    }

    /// Checks and usage reads keep plans in memory; a catalog load replacing
    /// the plan is seen by the next read, and a read of a plan that does not
    /// exist yet is not remembered.
    #[tokio::test]
    async fn a_catalog_load_replaces_the_plans_reads_remember() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        store.load_catalog(&catalog(100, false)).await.unwrap();
        let now = Timestamp::now();
        let customer = CustomerId::parse("customer_1".to_owned()).unwrap();
        let agreement = store
            .create_agreement(NewAgreement {
                customer_id: customer.clone(),
                plan_code: PlanCode::parse("pro".to_owned()).unwrap(),
                now,
                id_random: [1; 10],
            })
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(limit(&store, &customer, now).await, Some(100));
            assert!(!read_extra(&store, &agreement, now).await);
        }
        store.load_catalog(&catalog(200, true)).await.unwrap();
        assert_eq!(limit(&store, &customer, now).await, Some(200));
        assert!(read_extra(&store, &agreement, now).await);
        store.shutdown().await;
    }

    /// A plan read in a snapshot taken before a catalog load committed is
    /// not kept once the load is known.
    #[test]
    fn a_plan_read_before_a_load_is_not_kept() {
        let pool = ReadPool::new(PathBuf::from("unused"));
        let generation = pool.plan_generation();
        pool.catalog_loaded();
        let dir = tempfile::tempdir().unwrap();
        let store_path = dir.path().join("db");
        let conn = Connection::open(&store_path).unwrap();
        conn.execute_batch(
            "CREATE TABLE plans (code TEXT PRIMARY KEY, name TEXT, interval TEXT, grp TEXT);
             CREATE TABLE plan_features (plan_code TEXT, code TEXT, position INTEGER, name TEXT,
                 metered INTEGER, unit_amount INTEGER, limit_max INTEGER, price_name TEXT,
                 fixed_charge INTEGER, limit_min INTEGER, enforce_limit INTEGER, thresholds TEXT);
             INSERT INTO plans VALUES ('pro', 'Pro', 'month', NULL);",
        )
        .unwrap();
        let code = PlanCode::parse("pro".to_owned()).unwrap();
        assert!(pool.plan(&conn, &code, generation).unwrap().is_some());
        assert!(pool.plans.plans.lock().unwrap().is_empty());
        let current = pool.plan_generation();
        assert!(pool.plan(&conn, &code, current).unwrap().is_some());
        assert_eq!(pool.plans.plans.lock().unwrap().len(), 1);
    }
}
