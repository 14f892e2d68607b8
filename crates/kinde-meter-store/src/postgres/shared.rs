//! A few connections that many reads use at once, for the remembered reads'
//! one statement (`read.rs`): tokio-postgres sends a statement as soon as it
//! is asked for, behind those still running on the connection, so concurrent
//! checks are pipelined. PostgreSQL's backend then answers a queue of them
//! per wake-up, and the server writes and reads several per system call,
//! where a pooled connection each costs both sides a round trip of wake-ups
//! per check (the pool's wait included). Each statement outside a
//! transaction is its own snapshot, so sharing changes no answer.
//!
//! Design: `docs/design.md#hot-read-cache`.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use deadpool_postgres::Object;
use tokio::time::Instant;

use super::{
    failure::{Failure, PgResult},
    pool::Db,
};

/// How many connections are shared (see the module): one per two CPUs of
/// this machine, at least one and at most eight. A shared connection is one
/// PostgreSQL backend working through its queue, so more of them use more of
/// PostgreSQL's cores, but each takes its share of the queue from fewer
/// checks at a time; on a 2-CPU machine one gave 34.4-34.9 K checks/s at 64
/// connections, two 31.3-32.6 K and four 27.4-29.4 K (bench/HISTORY.md).
pub(super) fn shared_connections() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 8))
}

/// The shared connections and the pool they come from.
pub(super) struct Shared {
    /// Its own pool (twice the slots: a broken connection's replacement may
    /// be taken while reads still hold the old one).
    db: Db,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// A shared connection's place: the connection, and a lock that one read at
/// a time takes to open it, so that reads finding it missing together open
/// one.
#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Conn>>>,
    opening: tokio::sync::Mutex<()>,
}

/// One shared connection. Once a read found it broken (or timed out on it,
/// which leaves it in doubt), it is taken out of its slot, and closed rather
/// than put back in the pool when the last read using it is done.
struct Conn {
    object: Option<Object>,
    broken: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.broken.load(Ordering::Relaxed)
            && let Some(object) = self.object.take()
        {
            drop(Object::take(object));
        }
    }
}

impl Conn {
    fn object(&self) -> &Object {
        self.object.as_ref().expect("taken only when dropped")
    }

    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.object().is_closed()
    }
}

impl Shared {
    /// `slots` shared connections from `db`, a pool of their own, opened as
    /// reads first need them.
    pub(super) fn new(db: Db, slots: usize) -> Shared {
        Shared {
            db,
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `read` (one statement, or several independent ones: never a
    /// transaction) on a shared connection, bounded by `deadline`.
    pub(super) async fn run<T>(
        &self,
        deadline: Instant,
        read: impl AsyncFnOnce(&Object) -> PgResult<T>,
    ) -> PgResult<T> {
        let (slot, conn) = self.conn(deadline).await?;
        let result = tokio::time::timeout_at(deadline, read(conn.object()))
            .await
            .unwrap_or(Err(Failure::Timeout));
        if let Err(failure) = &result
            && failure.poisons_connection()
        {
            conn.broken.store(true, Ordering::Relaxed);
            let mut held = self.slot(slot);
            if held.as_ref().is_some_and(|held| Arc::ptr_eq(held, &conn)) {
                *held = None;
            }
        }
        result
    }

    /// The next slot's connection, opened (by `deadline`) if it has none or
    /// a broken one.
    async fn conn(&self, deadline: Instant) -> PgResult<(usize, Arc<Conn>)> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        if let Some(conn) = self.usable(slot) {
            return Ok((slot, conn));
        }
        let _opening = tokio::time::timeout_at(deadline, self.slots[slot].opening.lock())
            .await
            .map_err(|_| Failure::Timeout)?;
        if let Some(conn) = self.usable(slot) {
            return Ok((slot, conn));
        }
        let conn = Arc::new(Conn {
            object: Some(self.db.get(deadline).await?),
            broken: AtomicBool::new(false),
        });
        *self.slot(slot) = Some(conn.clone());
        Ok((slot, conn))
    }

    /// The slot's connection, if it has one still usable.
    fn usable(&self, slot: usize) -> Option<Arc<Conn>> {
        self.slot(slot).as_ref().filter(|c| c.usable()).cloned()
    }

    fn slot(&self, slot: usize) -> std::sync::MutexGuard<'_, Option<Arc<Conn>>> {
        self.slots[slot]
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
