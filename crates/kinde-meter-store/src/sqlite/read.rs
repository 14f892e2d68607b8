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

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    catalog::{Feature, Plan},
    ids::{CustomerId, PlanCode},
};
use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::{
    aggregates::{self, PeriodKey},
    agreements, catalog, connection,
    error::OpError,
};
use crate::{
    CustomerEntitlements, FeatureUsage, ReadUsageError, StoreError, UsageQuery, UsageReport,
};

/// Most read connections open at once.
pub(super) const READ_CONNECTIONS: usize = 4;

/// Read connections to one database file, and the plans they have read.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
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

    /// The plan `code` (`None`: no such plan), from the cache or read with
    /// `conn` in a snapshot begun after `generation` was read.
    fn plan(
        &self,
        conn: &Connection,
        code: &PlanCode,
        generation: u64,
    ) -> rusqlite::Result<Option<Arc<Plan>>> {
        let cached = self
            .plans
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(code)
            .cloned();
        if let Some(plan) = cached {
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
        F: FnOnce(&mut Connection, Plans<'_>) -> Result<T, OpError<E>>,
    {
        let plans = Plans {
            pool: self,
            generation: self.plan_generation(),
        };
        let mut conn = match self.take() {
            Some(conn) => conn,
            None => connection::open_reader(&self.path)
                .map_err(|e| OpError::<E>::from(e).into_answer())?,
        };
        let result = read(&mut conn, plans).map_err(OpError::into_answer);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
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
}

/// A read transaction: one snapshot for the statements run through it.
/// `BEGIN` and `ROLLBACK` are cached statements, where rusqlite's
/// `Transaction` prepares them anew each time (about a tenth of a check's
/// instructions).
struct Snapshot<'a>(&'a Connection);

impl<'a> Snapshot<'a> {
    fn begin(conn: &'a Connection) -> rusqlite::Result<Snapshot<'a>> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(Snapshot(conn))
    }
}

impl std::ops::Deref for Snapshot<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.0
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // Nothing was written: ending it either way is the same. Should this
        // fail, `ReadPool::run_inline` closes the connection.
        if let Ok(mut rollback) = self.0.prepare_cached("ROLLBACK") {
            let _ = rollback.execute([]);
        }
    }
}

/// A trivial query that touches the database file.
pub(super) fn ping(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("SELECT count(*) FROM schema_migrations")?
        .query_row([], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// Usage of the agreement's metered features (or the one asked for) in the
/// period containing `query.at`, from the aggregates only.
pub(super) fn usage(
    conn: &mut Connection,
    plans: Plans<'_>,
    query: &UsageQuery,
) -> Result<UsageReport, OpError<ReadUsageError>> {
    // One snapshot for agreement, plan and aggregates.
    let tx = Snapshot::begin(conn)?;
    let Some(agreement) = agreements::load(&tx, &query.agreement_id)? else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let plan = plans.get(&tx, &agreement.plan_code)?;
    let features =
        crate::record_checks::features_to_report(plan.as_deref(), query.feature_code.as_ref())?;
    Ok(report(&tx, &agreement, &features, query.at)?)
}

/// The customer's newest agreement active at `now`, its plan and the usage of
/// its metered features in the period containing `now`, in one snapshot.
pub(super) fn customer_entitlements(
    conn: &mut Connection,
    plans: Plans<'_>,
    customer_id: &CustomerId,
    now: Timestamp,
) -> rusqlite::Result<Option<CustomerEntitlements>> {
    let tx = Snapshot::begin(conn)?;
    let Some(agreement) = agreements::active_of_customer(&tx, customer_id, now)? else {
        return Ok(None);
    };
    let Some(plan) = plans.get(&tx, &agreement.plan_code)? else {
        return Ok(None);
    };
    let features: Vec<&Feature> = plan.metered_features().collect();
    let usage = report(&tx, &agreement, &features, now)?;
    Ok(Some(CustomerEntitlements {
        agreement,
        plan: Plan::clone(&plan),
        usage,
    }))
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
                aggregates::read(conn, &key)?
            }
            Err(_) => None,
        };
        let (value, record_count, last_recorded_at): (_, _, Option<Timestamp>) =
            found.unwrap_or_default();
        usage.push(FeatureUsage {
            feature_code: feature.code.clone(),
            value,
            record_count,
            last_recorded_at,
        });
    }
    Ok(UsageReport { period, usage })
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
        let entitlements = store
            .customer_entitlements(customer, now)
            .await
            .unwrap()
            .unwrap();
        let code = FeatureCode::parse("api_calls".to_owned()).unwrap();
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
