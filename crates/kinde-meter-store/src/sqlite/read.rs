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
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use jiff::Timestamp;
use kinde_meter_core::{agreement::Agreement, catalog::Feature, ids::CustomerId};
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

/// Read connections to one database file.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    /// A pool for the database at `path`; no connection is opened yet.
    pub(super) fn new(path: PathBuf) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::with_capacity(READ_CONNECTIONS)),
            permits: Arc::new(Semaphore::new(READ_CONNECTIONS)),
        }
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
        F: FnOnce(&mut Connection) -> Result<T, OpError<E>>,
    {
        let mut conn = match self.take() {
            Some(conn) => conn,
            None => connection::open_reader(&self.path)
                .map_err(|e| OpError::<E>::from(e).into_answer())?,
        };
        let result = read(&mut conn).map_err(OpError::into_answer);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Connections beyond what readers use at once are closed.
        if idle.len() < 2 * READ_CONNECTIONS {
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
    query: &UsageQuery,
) -> Result<UsageReport, OpError<ReadUsageError>> {
    // One snapshot for agreement, plan and aggregates.
    let tx = conn.transaction()?;
    let Some(agreement) = agreements::load(&tx, &query.agreement_id)? else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let plan = catalog::load_plan(&tx, &agreement.plan_code)?;
    let features =
        crate::record_checks::features_to_report(plan.as_ref(), query.feature_code.as_ref())?;
    Ok(report(&tx, &agreement, &features, query.at)?)
}

/// The customer's newest agreement active at `now`, its plan and the usage of
/// its metered features in the period containing `now`, in one snapshot.
pub(super) fn customer_entitlements(
    conn: &mut Connection,
    customer_id: &CustomerId,
    now: Timestamp,
) -> rusqlite::Result<Option<CustomerEntitlements>> {
    let tx = conn.transaction()?;
    let Some(agreement) = agreements::active_of_customer(&tx, customer_id, now)? else {
        return Ok(None);
    };
    let Some(plan) = catalog::load_plan(&tx, &agreement.plan_code)? else {
        return Ok(None);
    };
    let features: Vec<&Feature> = plan.metered_features().collect();
    let usage = report(&tx, &agreement, &features, now)?;
    Ok(Some(CustomerEntitlements {
        agreement,
        plan,
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
