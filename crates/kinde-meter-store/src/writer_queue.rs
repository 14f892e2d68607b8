//! What both backends' group-commit writers share: the bounded queue in front of
//! the writer, which answers 503 at once when full instead of growing, and the
//! counters a benchmark or `/metrics` reads. The writers themselves differ (a
//! thread owning a SQLite connection, a task with a PostgreSQL pool).

use std::sync::{
    PoisonError, RwLock,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::StoreError;

/// Counters of a writer since the store opened, e.g. for a benchmark to report
/// the average batch size (`records / batches`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Jobs (submissions, agreement creations, catalog loads) taken off the queue
    /// into a batch, counted when the batch is closed.
    pub received: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Transactions rolled back (their jobs answered `Unavailable`).
    pub failed_batches: u64,
    /// Jobs in committed transactions.
    pub jobs: u64,
    /// Usage records in committed transactions, stored or refused one by one.
    pub records: u64,
    /// Most jobs committed in one transaction.
    pub largest_batch: u64,
    /// Of `batches`, those sent in one flight, without reading their
    /// aggregate rows first (PostgreSQL; `docs/design.md#one-flight`).
    pub one_flight_batches: u64,
    /// Batches sent in one flight that found what the writer remembered out
    /// of date, rolled back and run again the usual way (PostgreSQL).
    pub stale_flights: u64,
}

/// The live counters behind [`WriterStats`], bumped by the writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) jobs: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) one_flight_batches: AtomicU64,
    pub(crate) stale_flights: AtomicU64,
}

impl Counters {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> WriterStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            received: get(&self.received),
            batches: get(&self.batches),
            failed_batches: get(&self.failed_batches),
            jobs: get(&self.jobs),
            records: get(&self.records),
            largest_batch: get(&self.largest_batch),
            one_flight_batches: get(&self.one_flight_batches),
            stale_flights: get(&self.stale_flights),
        }
    }
}

/// The sending side of a writer's bounded queue. Closing it (dropping the only
/// lasting sender) is how a writer learns to finish what is queued and stop.
pub(crate) struct JobQueue<J> {
    /// `None` once closed.
    sender: RwLock<Option<mpsc::Sender<J>>>,
}

impl<J> JobQueue<J> {
    /// A queue of `capacity` jobs (at least 1) and its receiving end.
    pub(crate) fn new(capacity: usize) -> (JobQueue<J>, mpsc::Receiver<J>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let queue = JobQueue {
            sender: RwLock::new(Some(sender)),
        };
        (queue, receiver)
    }

    /// Queues `job` without waiting: a full queue is answered at once (503), so
    /// memory stays bounded under overload.
    pub(crate) fn try_send(&self, job: J) -> Result<(), StoreError> {
        let sender = self.sender.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = sender.as_ref() else {
            return Err(StoreError::ShuttingDown);
        };
        sender.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::QueueFull,
            TrySendError::Closed(_) => StoreError::ShuttingDown,
        })
    }

    /// Queues `job`, waiting for room: for rare administrative writes (catalog
    /// loads) that should not fail because the queue is momentarily full.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) async fn send(&self, job: J) -> Result<(), StoreError> {
        let sender = self
            .sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::ShuttingDown)?;
        sender.send(job).await.map_err(|_| StoreError::ShuttingDown)
    }

    /// Jobs waiting in the queue (not yet taken by the writer).
    pub(crate) fn queued(&self) -> usize {
        let sender = self.sender.read().unwrap_or_else(PoisonError::into_inner);
        sender
            .as_ref()
            .map_or(0, |s| s.max_capacity() - s.capacity())
    }

    /// Closes the queue: later sends get `ShuttingDown`, and the writer sees the
    /// end once it has received every job queued before.
    pub(crate) fn close(&self) {
        drop(
            self.sender
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}
