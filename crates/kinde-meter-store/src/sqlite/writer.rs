//! The single writer thread and its group commit.
//!
//! Every write goes through one bounded queue to one thread owning the one write
//! connection. With `synchronous=FULL` each commit costs an fsync; the writer
//! therefore takes the first queued job, then everything else already queued (up
//! to about `max_batch_records` records) and commits it all in one transaction:
//! whatever arrived while the previous commit was syncing shares the next one.
//! Answers are sent only after COMMIT returns, so an answer always means durable.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
};

use jiff::Timestamp;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Notify, mpsc};

use super::{
    cache::WriterCache,
    codec, idempotency,
    job::{Answer, Job},
    usage::WriteContext,
};
use crate::{
    StoreConfig, StoreError,
    writer_queue::{Counters, JobQueue},
};

use crate::writer_queue::WriterStats;

/// Expired idempotency keys are purged after every this many batches.
const PURGE_EVERY_BATCHES: u64 = 256;
/// Most expired keys one purge deletes, so that it holds the write lock briefly.
const PURGE_LIMIT: i64 = 1000;

/// The async side of the writer: its queue and its thread.
pub(super) struct WriterHandle {
    queue: JobQueue<Job>,
    /// Joined by `shutdown`; a tokio mutex so concurrent shutdowns all wait.
    thread: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    /// Notified after a commit that raised events ([`crate::Store::events_raised`]).
    raised: Arc<Notify>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`.
    pub(super) fn spawn(conn: Connection, config: StoreConfig) -> Result<WriterHandle, StoreError> {
        let (jobs, queue) = JobQueue::new(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let raised = Arc::new(Notify::new());
        let writer = Writer {
            conn,
            config,
            counters: counters.clone(),
            raised: raised.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(crate::SQLITE_WRITER_THREAD.to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(WriterHandle {
            queue: jobs,
            thread: tokio::sync::Mutex::new(Some(thread)),
            counters,
            raised,
        })
    }

    /// Notified after a commit that raised events.
    pub(super) fn raised(&self) -> Arc<Notify> {
        self.raised.clone()
    }

    /// Queues `job` without waiting (a full queue is answered 503 at once).
    pub(super) fn try_send(&self, job: Job) -> Result<(), StoreError> {
        self.queue.try_send(job)
    }

    /// Queues `job`, waiting for room (rare administrative writes).
    pub(super) async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.queue.send(job).await
    }

    /// Jobs waiting in the queue (not yet taken by the writer).
    pub(super) fn queued(&self) -> usize {
        self.queue.queued()
    }

    /// The writer's counters.
    pub(super) fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Closes the queue, lets the writer commit and answer everything queued, and
    /// waits for its thread to end.
    pub(super) async fn shutdown(&self) {
        let mut thread = self.thread.lock().await;
        self.queue.close();
        if let Some(handle) = thread.take() {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!("the SQLite writer thread panicked"),
                Err(e) => tracing::error!(error = %e, "joining the SQLite writer thread failed"),
            }
        }
    }
}

/// Waits for a job's answer.
pub(super) async fn answer<T, E: From<StoreError>>(rx: Answer<T, E>) -> Result<T, E> {
    rx.await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable("the writer stopped before answering".to_owned()).into())
    })
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    config: StoreConfig,
    counters: Arc<Counters>,
    raised: Arc<Notify>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let max_records = self.config.max_batch_records.max(1);
        let mut batch = Vec::new();
        let mut since_purge = 0;
        let mut cache = WriterCache::default();
        // The billing clock as the submissions tell it (their time of receipt):
        // keys are stored and checked by it, so they are purged by it too.
        let mut latest_received: Option<Timestamp> = None;
        while let Some(first) = queue.blocking_recv() {
            // A job without records still takes room, so batches stay bounded.
            let mut size = first.records().max(1);
            batch.push(first);
            while size < max_records {
                let Ok(job) = queue.try_recv() else { break };
                size += job.records().max(1);
                batch.push(job);
            }
            // Counted once the batch is closed, so that an observer who sees the
            // count knows a job queued afterwards waits for the next batch.
            self.counters
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            latest_received = batch
                .iter()
                .filter_map(Job::received_at)
                .chain(latest_received)
                .max();
            self.commit(&mut batch, &mut cache);
            since_purge += 1;
            if since_purge == PURGE_EVERY_BATCHES
                && let Some(now) = latest_received
            {
                since_purge = 0;
                self.purge_expired_keys(now);
            }
        }
    }

    /// Runs `batch` in one transaction and answers every job of it.
    fn commit(&mut self, batch: &mut Vec<Job>, cache: &mut WriterCache) {
        let config = &self.config;
        let conn = &mut self.conn;
        // A panic must not kill the only writer: the transaction rolls back as it
        // unwinds, and the batch is answered like any failed one.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            execute(conn, config, batch, &mut *cache)
        }));
        let failure = match outcome {
            Ok(Ok(raised)) => {
                if raised {
                    self.raised.notify_one();
                }
                None
            }
            Ok(Err(e)) => Some(StoreError::Unavailable(e.to_string())),
            Err(_) => Some(StoreError::Unavailable(
                "internal error in the writer".to_owned(),
            )),
        };
        let c = &self.counters;
        match &failure {
            None => {
                let jobs = batch.len() as u64;
                let records: usize = batch.iter().map(Job::records).sum();
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.jobs.fetch_add(jobs, Ordering::Relaxed);
                c.records.fetch_add(records as u64, Ordering::Relaxed);
                c.largest_batch.fetch_max(jobs, Ordering::Relaxed);
            }
            Some(e) => {
                // What the cache learnt in the rolled-back transaction is void.
                cache.clear();
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, jobs = batch.len(), "write batch rolled back");
            }
        }
        for job in batch.drain(..) {
            job.answer(failure.as_ref());
        }
    }

    /// Deletes a bounded slice of expired idempotency keys in a transaction of its
    /// own, after the batch was answered. Failure only delays the purge.
    fn purge_expired_keys(&mut self, now: Timestamp) {
        let before = now
            .checked_sub(self.config.idempotency_retention)
            .unwrap_or(Timestamp::MIN);
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let purged = idempotency::purge(&tx, codec::ns_clamped(before), PURGE_LIMIT)?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(purged)
        })();
        match result {
            Ok(purged) => tracing::debug!(purged, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency keys failed"),
        }
    }
}

/// The group commit itself: every job in one `BEGIN IMMEDIATE … COMMIT`; the first
/// SQLite error rolls everything back (the transaction's drop does). `Ok(true)`
/// when the transaction raised events.
fn execute(
    conn: &mut Connection,
    config: &StoreConfig,
    batch: &mut [Job],
    cache: &mut WriterCache,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ctx = WriteContext::begin(&tx, config, cache)?;
    for job in batch.iter_mut() {
        job.run(&tx, &mut ctx)?;
    }
    let raised = ctx.raised_events;
    ctx.finish(&tx)?;
    tx.commit()?;
    Ok(raised)
}
