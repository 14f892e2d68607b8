//! Connections: the pool, the session settings every connection gets, and
//! running an operation within a deadline on a pooled connection.
//!
//! Every operation is bounded twice: on the server by `statement_timeout` (a
//! statement waiting for a lock or grinding gives up) and here by a deadline
//! around the whole operation (a server that stopped answering, a network that
//! drops packets). A connection that timed out or broke is taken out of the
//! pool and closed, which also makes the server roll back whatever it was
//! doing; the next operation opens a fresh one, which is how the store
//! recovers by itself when PostgreSQL comes back.

use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::time::Instant;
use tokio_postgres::NoTls;

use super::{
    PgSettings,
    failure::{AsFailure, Failure, PgResult},
    schema::valid_schema_name,
};
use crate::StoreError;

/// The pauses between asking PostgreSQL the same question again while it
/// does not know yet (a transaction's outcome, whether a backend is gone):
/// 5 ms, doubling up to 200 ms, never past `give_up`.
pub(super) struct Backoff {
    pause: Duration,
    give_up: Instant,
}

impl Backoff {
    pub(super) fn until(give_up: Instant) -> Backoff {
        Backoff {
            pause: Duration::from_millis(5),
            give_up,
        }
    }

    /// Sleeps the next pause, or returns `false` at once if it would end past
    /// `give_up`.
    pub(super) async fn wait(&mut self) -> bool {
        if Instant::now() + self.pause >= self.give_up {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(200));
        true
    }
}

/// What a pool's sessions are for, which decides their settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Reads and the other operations: PostgreSQL's own choice of plans.
    General,
    /// The group-commit writer's own connections. Its few statements take a
    /// batch's rows as arrays, and with the default `plan_cache_mode=auto`
    /// PostgreSQL planned them again on nearly every batch (`pg_stat_statements`:
    /// 155 plans for 146 executions of the lock statement), the planner being
    /// ~15 % of the writer's backend instructions. `force_generic_plan` plans
    /// each prepared statement once per session: PostgreSQL's CPU per single
    /// record at 64 connections 44.5-45.8 -> 40.0-42.0 µs (bench/HISTORY.md).
    Writer,
}

/// The connection pool of one store.
pub(super) struct Db {
    pool: Pool,
    /// Bound of one operation (and the sessions' `statement_timeout`).
    pub(super) operation_timeout: Duration,
}

impl Db {
    /// A pool for `url` with `settings`, its sessions set up for `role`;
    /// connects lazily, so this never waits.
    pub(super) fn new(url: &str, settings: &PgSettings, role: Role) -> Result<Db, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(settings.connect_timeout);
        }
        // Dead peers are noticed by the operation deadline; keepalives let the
        // server side notice a vanished client too.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("kinde-meter");
        }
        config.options(&session_options(
            config.get_options(),
            settings.schema.as_deref(),
            settings.operation_timeout,
            role,
        )?);
        // TLS: a `MakeTlsConnect` (tokio-postgres-rustls, say) goes here
        // instead of `NoTls`; nothing else changes.
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(settings.operation_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot build the connection pool: {e}"))
            })?;
        Ok(Db {
            pool,
            operation_timeout: settings.operation_timeout,
        })
    }

    /// When an operation started now must have finished.
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.operation_timeout
    }

    /// A connection, by `deadline`.
    pub(super) async fn get(&self, deadline: Instant) -> PgResult<Object> {
        match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(PoolError::Backend(e))) => Err(Failure::Db(e)),
            Ok(Err(PoolError::Timeout(_))) | Err(_) => Err(Failure::Timeout),
            Ok(Err(e)) => Err(Failure::Pool(e.to_string())),
        }
    }

    /// Puts a connection back after an operation, or closes it if the
    /// operation's failure left it in doubt (timed out mid-statement, broken).
    pub(super) fn release<T, E: AsFailure>(&self, conn: Object, result: &Result<T, E>) {
        if let Err(e) = result
            && let Some(failure) = e.as_failure()
            && failure.poisons_connection()
        {
            drop(Object::take(conn));
        }
    }

    /// Closes the pool: idle connections now, the others as they come back.
    pub(super) fn close(&self) {
        self.pool.close();
    }
}

/// A read-only, repeatable-read transaction on `conn`: one snapshot for every
/// statement of a read, so what it reads (agreement, plan, aggregates, cursor)
/// agrees.
pub(super) async fn read_snapshot(
    conn: &mut Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    conn.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// The `options` startup parameter: whatever the URL asked for, then the
/// schema (`search_path`) and the timeouts every session of the store runs
/// with. `idle_in_transaction_session_timeout` frees the locks of a server
/// that vanished mid-transaction without closing its connection. The writer's
/// sessions also keep generic plans ([`Role::Writer`]).
fn session_options(
    from_url: Option<&str>,
    schema: Option<&str>,
    operation_timeout: Duration,
    role: Role,
) -> Result<String, StoreError> {
    let mut options = from_url.unwrap_or_default().to_owned();
    let mut set = |name: &str, value: &str| {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={value}"));
    };
    if let Some(schema) = schema {
        if !valid_schema_name(schema) {
            return Err(StoreError::Unavailable(format!(
                "invalid schema name {schema:?}: use lowercase letters, digits and _"
            )));
        }
        set("search_path", schema);
    }
    let ms = operation_timeout.as_millis().max(1).to_string();
    set("statement_timeout", &ms);
    let idle_ms = (operation_timeout * 4).as_millis().max(1000).to_string();
    set("idle_in_transaction_session_timeout", &idle_ms);
    if role == Role::Writer {
        set("plan_cache_mode", "force_generic_plan");
    }
    Ok(options)
}

/// Runs `$body` (an expression using the connection `$conn: &mut Object`) on a
/// connection of `$db`, bounded by `$deadline`: a [`Failure::Timeout`] when time
/// runs out, and the connection closed rather than reused when the outcome left
/// it in doubt. A macro rather than a function taking a closure, because the
/// body's future borrows the connection.
macro_rules! on_conn {
    ($db:expr, $deadline:expr, |$conn:ident| $body:expr) => {{
        let db: &$crate::postgres::pool::Db = &$db;
        let deadline = $deadline;
        match db.get(deadline).await {
            Err(failure) => Err(failure.into()),
            Ok(mut conn) => {
                let result = {
                    let $conn = &mut conn;
                    match tokio::time::timeout_at(deadline, async { $body }).await {
                        Ok(result) => result,
                        Err(_) => Err($crate::postgres::failure::Failure::Timeout.into()),
                    }
                };
                db.release(conn, &result);
                result
            }
        }
    }};
}
pub(super) use on_conn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_options_keep_the_urls_and_add_ours() {
        let o = session_options(
            Some("-c work_mem=4MB"),
            Some("tenant_a"),
            Duration::from_secs(4),
            Role::General,
        )
        .unwrap();
        assert_eq!(
            o,
            "-c work_mem=4MB -c search_path=tenant_a -c statement_timeout=4000 -c idle_in_transaction_session_timeout=16000"
        );
        let w = session_options(None, None, Duration::from_secs(4), Role::Writer).unwrap();
        assert_eq!(
            w,
            "-c statement_timeout=4000 -c idle_in_transaction_session_timeout=16000 -c plan_cache_mode=force_generic_plan"
        );
        assert!(session_options(None, Some("a b"), Duration::from_secs(1), Role::General).is_err());
    }
}
