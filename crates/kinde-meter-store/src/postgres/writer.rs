//! The write queue and its group commit, for PostgreSQL: one writer task per
//! server commits everything queued in one transaction (`batch`), answering
//! only after COMMIT returns, within each submission's deadline.
//!
//! Design: `docs/design.md#group-commit`, `docs/design.md#outages-and-deadlines`.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use deadpool_postgres::Object;
use futures::FutureExt;
use jiff::Timestamp;
use tokio::{
    sync::{Notify, mpsc, oneshot},
    time::Instant,
};

use super::{
    batch,
    failure::Failure,
    idempotency, one_flight,
    pool::{Backoff, Db, on_conn},
};
use crate::{
    StoreConfig, StoreError, SubmissionOutcome, UsageSubmission,
    writer_queue::{Counters, JobQueue, WriterStats},
};

/// Expired idempotency keys are purged after every this many batches.
const PURGE_EVERY_BATCHES: u64 = 256;
/// Most expired keys one purge deletes.
const PURGE_LIMIT: i64 = 1000;
/// A batch that lost a deadlock or a serialization conflict is run again this
/// many times at most (time permitting).
const MAX_ATTEMPTS: u32 = 3;
/// A submission with less time left than this is answered 503 rather than run:
/// a batch that short could not commit.
const MIN_BUDGET: Duration = Duration::from_millis(20);

/// A submission waiting for the writer.
struct Job {
    submission: UsageSubmission,
    deadline: Instant,
    reply: oneshot::Sender<Result<SubmissionOutcome, StoreError>>,
}

/// How much longer than its deadline a batch's last flight (its writes and
/// COMMIT, sent together), once sent, is waited for, and how long the outcome of one whose COMMIT went unanswered is asked
/// for, in operation timeouts (a COMMIT itself is bounded by one: the
/// session's `statement_timeout`, unless it is past the point of no return).
const COMMIT_WAIT_TIMEOUTS: u32 = 2;

/// The outcome of a transaction whose COMMIT went unanswered.
enum TxOutcome {
    Committed,
    Aborted,
    Unknown(StoreError),
}

impl TxOutcome {
    /// Neither could be told (`failure` lost COMMIT's answer; `txid` the
    /// transaction's id, if known): logged, and answered so that a client
    /// knows to retry with its key.
    fn unknown(failure: &Failure, txid: Option<i64>) -> TxOutcome {
        tracing::error!(error = %failure, ?txid, "the outcome of a write batch is unknown");
        TxOutcome::Unknown(StoreError::Unavailable(format!(
            "the outcome of the write is unknown ({failure}); retry with the same Idempotency-Key"
        )))
    }
}

/// Connections of the writer's own pool: one for the batch, one to ask a
/// batch's outcome or purge keys while the first is broken or busy.
pub(super) const WRITER_CONNECTIONS: usize = 2;

/// The async side of the writer: its queue and its thread.
pub(super) struct WriterHandle {
    queue: JobQueue<Job>,
    /// Fires when the writer's thread has answered everything and ends.
    task: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    counters: Arc<Counters>,
    operation_timeout: Duration,
    /// Notified after a commit that raised events ([`crate::Store::events_raised`]).
    raised: Arc<Notify>,
}

impl WriterHandle {
    /// Starts the writer on a thread of its own, with a single-threaded tokio
    /// runtime that also drives its connections (from `db`, a pool of its
    /// own). A batch's round trips to PostgreSQL are then not queued behind
    /// the request handlers' tasks on a busy runtime: each is a wake-up of
    /// this thread (`docs/design.md#group-commit`).
    pub(super) fn spawn(db: Db, config: StoreConfig) -> Result<WriterHandle, StoreError> {
        let (jobs, queue) = JobQueue::new(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let operation_timeout = db.operation_timeout;
        let raised = Arc::new(Notify::new());
        let writer = Writer {
            db: Arc::new(db),
            config,
            counters: counters.clone(),
            raised: raised.clone(),
            kept: batch::Kept::default(),
        };
        let cannot = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot start the PostgreSQL writer: {e}"))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(cannot)?;
        let (ended, task) = oneshot::channel();
        std::thread::Builder::new()
            .name("kinde-meter-pg-writer".to_owned())
            .spawn(move || {
                runtime.block_on(writer.run(queue));
                let _ = ended.send(());
            })
            .map_err(cannot)?;
        Ok(WriterHandle {
            queue: jobs,
            task: tokio::sync::Mutex::new(Some(task)),
            counters,
            operation_timeout,
            raised,
        })
    }

    /// Notified after a commit that raised events.
    pub(super) fn raised(&self) -> Arc<Notify> {
        self.raised.clone()
    }

    /// Queues a submission without waiting (a full queue is answered at once)
    /// and waits for its answer, which comes by its deadline.
    pub(super) async fn submit(
        &self,
        submission: UsageSubmission,
    ) -> Result<SubmissionOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            submission,
            deadline: Instant::now() + self.operation_timeout,
            reply,
        };
        self.queue.try_send(job)?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the writer stopped before answering".to_owned(),
            ))
        })
    }

    /// Jobs waiting in the queue.
    pub(super) fn queued(&self) -> usize {
        self.queue.queued()
    }

    /// The writer's counters.
    pub(super) fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Closes the queue, lets the writer commit and answer everything queued,
    /// and waits for it to end.
    pub(super) async fn shutdown(&self) {
        let mut task = self.task.lock().await;
        self.queue.close();
        if let Some(task) = task.take()
            && task.await.is_err()
        {
            tracing::error!("the PostgreSQL writer thread failed");
        }
    }
}

/// A connection a batch runs on, closed rather than put back in the pool if
/// the batch panics: its transaction may still be open (`batch::run`).
struct Discard(Option<Object>);

impl Discard {
    /// The connection, which the batch left outside a transaction.
    fn keep(mut self) -> Object {
        self.0.take().expect("kept once")
    }
}

impl Drop for Discard {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

/// The writer task's state.
struct Writer {
    db: Arc<Db>,
    config: StoreConfig,
    counters: Arc<Counters>,
    raised: Arc<Notify>,
    /// What batches leave for the next ones.
    kept: batch::Kept,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let max_records = self.config.max_batch_records.max(1);
        let mut batch = Vec::new();
        let mut since_purge = 0;
        // The billing clock as the submissions tell it (their time of receipt):
        // keys are stored and checked by it, so they are purged by it too.
        let mut latest_received: Option<Timestamp> = None;
        while let Some(first) = queue.recv().await {
            // A job without records still takes room, so batches stay bounded.
            let mut size = first.submission.records.len().max(1);
            batch.push(first);
            while size < max_records {
                let Ok(job) = queue.try_recv() else { break };
                size += job.submission.records.len().max(1);
                batch.push(job);
            }
            self.counters
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            latest_received = batch
                .iter()
                .map(|job| job.submission.received_at)
                .chain(latest_received)
                .max();
            self.commit(std::mem::take(&mut batch)).await;
            since_purge += 1;
            if since_purge == PURGE_EVERY_BATCHES
                && let Some(now) = latest_received
            {
                since_purge = 0;
                self.purge_expired_keys(now).await;
            }
        }
    }

    /// Runs the batch in one transaction and answers every job of it.
    async fn commit(&mut self, batch: Vec<Job>) {
        let now = Instant::now();
        let (live, late): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| job.deadline > now + MIN_BUDGET);
        for job in late {
            let _ = job.reply.send(Err(StoreError::Unavailable(
                "PostgreSQL did not take the write in time".to_owned(),
            )));
        }
        let Some(deadline) = live.iter().map(|job| job.deadline).min() else {
            return;
        };
        let submissions: Vec<&UsageSubmission> = live.iter().map(|job| &job.submission).collect();
        let mut attempt = 1;
        let outcome = loop {
            // A panic must not kill the only writer: the connection is
            // closed (the transaction rolled back) as it unwinds, the batch
            // answered 503.
            let mut committing = None;
            let (db, config, kept) = (&self.db, &self.config, &mut self.kept);
            let run = AssertUnwindSafe(async {
                // The connection and the work must come by `deadline`; the
                // last flight (writes and COMMIT), once sent, is waited for up
                // to COMMIT_WAIT_TIMEOUTS longer, so a slow commit is not
                // answered 503 while PostgreSQL makes it durable.
                let conn = Discard(Some(db.get(deadline).await?));
                let result = tokio::time::timeout_at(
                    deadline + db.operation_timeout * COMMIT_WAIT_TIMEOUTS,
                    batch::run(
                        conn.0.as_ref().expect("taken only below"),
                        config,
                        kept,
                        &submissions,
                        deadline,
                        &mut committing,
                    ),
                )
                .await
                .unwrap_or(Err(Failure::Timeout));
                db.release(conn.keep(), &result);
                result
            })
            .catch_unwind()
            .await;
            let result = match (run, committing) {
                (Ok(Ok(())), Some(done)) => Ok(done),
                // COMMIT was sent and its answer lost: ask PostgreSQL.
                (Ok(Err(failure)), Some(done)) => match self.outcome_of(&done, &failure).await {
                    TxOutcome::Committed => Ok(done),
                    TxOutcome::Aborted => Err((StoreError::from(failure), false)),
                    TxOutcome::Unknown(e) => Err((e, false)),
                },
                (Ok(Ok(())), None) => Err((
                    StoreError::Unavailable("internal error in the writer".to_owned()),
                    false,
                )),
                (Ok(Err(failure)), None) => Err({
                    if matches!(failure, Failure::Stale) {
                        self.counters.stale_flights.fetch_add(1, Ordering::Relaxed);
                        self.kept.memory.stale();
                    }
                    let retry = failure.is_retryable()
                        && attempt < MAX_ATTEMPTS
                        && Instant::now() + MIN_BUDGET < deadline;
                    (StoreError::from(failure), retry)
                }),
                (Err(_), _) => Err((
                    StoreError::Unavailable("internal error in the writer".to_owned()),
                    false,
                )),
            };
            match result {
                Err((e, true)) => {
                    tracing::debug!(error = %e, attempt, "write batch conflicted; running it again");
                    self.kept.memory.forget();
                    attempt += 1;
                }
                Ok(done) => {
                    self.kept.known.insert(done.states.keys());
                    self.kept.memory.committed(&done.states, &done.spare_seqs);
                    if done.settle.is_some() {
                        self.counters
                            .one_flight_batches
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if done.raised_events {
                        self.raised.notify_one();
                    }
                    break Ok(done.answers);
                }
                Err((e, false)) => {
                    self.kept.memory.forget();
                    break Err(e);
                }
            }
        };
        let c = &self.counters;
        match outcome {
            Ok(answers) => {
                let jobs = live.len() as u64;
                let records: usize = live.iter().map(|j| j.submission.records.len()).sum();
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.jobs.fetch_add(jobs, Ordering::Relaxed);
                c.records.fetch_add(records as u64, Ordering::Relaxed);
                c.largest_batch.fetch_max(jobs, Ordering::Relaxed);
                for (job, answer) in live.into_iter().zip(answers) {
                    // A caller that stopped waiting is no error.
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, jobs = live.len(), "write batch rolled back");
                for job in live {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Whether the batch `done`, whose COMMIT was sent but not answered
    /// (`failure`), committed: asked on another connection by its transaction
    /// id until PostgreSQL knows (a COMMIT still running shows as in
    /// progress), or, for a batch sent in one flight whose id never came back,
    /// by ending its backend and looking for its first record
    /// ([`one_flight::settle`]); for at most COMMIT_WAIT_TIMEOUTS.
    async fn outcome_of(&self, done: &batch::Committing, failure: &Failure) -> TxOutcome {
        let give_up = Instant::now() + self.db.operation_timeout * COMMIT_WAIT_TIMEOUTS;
        let txid = match (done.txid, &done.settle) {
            (Some(txid), _) => txid,
            // Said nothing at all by the deadline: the database is likely
            // out of reach, and asking it would only make the answer late.
            (None, Some(settle)) if !matches!(failure, Failure::Timeout) => {
                return self.settled(settle, failure, give_up).await;
            }
            (None, _) => return TxOutcome::unknown(failure, None),
        };
        let mut backoff = Backoff::until(give_up);
        loop {
            let status = on_conn!(self.db, give_up, |conn| {
                conn.query_one("SELECT txid_status($1)", &[&txid])
                    .await
                    .map(|row| row.get::<_, Option<String>>(0))
                    .map_err(Failure::from)
            });
            match status.as_ref().map(Option::as_deref) {
                Ok(Some("committed")) => {
                    tracing::warn!(error = %failure, txid, "COMMIT's answer was lost, but the batch committed");
                    return TxOutcome::Committed;
                }
                Ok(Some("aborted")) => return TxOutcome::Aborted,
                Ok(None) => break,
                _ => {}
            }
            if !backoff.wait().await {
                break;
            }
        }
        TxOutcome::unknown(failure, Some(txid))
    }

    /// [`outcome_of`](Self::outcome_of) for a batch sent in one flight whose
    /// transaction id never came back.
    async fn settled(
        &self,
        settle: &one_flight::Settle,
        failure: &Failure,
        give_up: Instant,
    ) -> TxOutcome {
        let found = on_conn!(self.db, give_up, |conn| one_flight::settle(
            &*conn, settle, give_up
        )
        .await);
        match found {
            Ok(Some(true)) => {
                tracing::warn!(error = %failure, "COMMIT's answer was lost, but the batch committed");
                TxOutcome::Committed
            }
            Ok(Some(false)) => TxOutcome::Aborted,
            Ok(None) | Err(_) => TxOutcome::unknown(failure, None),
        }
    }

    /// Deletes a bounded slice of expired idempotency keys, after the batch was
    /// answered. Failure only delays the purge.
    async fn purge_expired_keys(&self, now: Timestamp) {
        let before = now
            .checked_sub(self.config.idempotency_retention)
            .unwrap_or(Timestamp::MIN);
        let result = on_conn!(self.db, self.db.deadline(), |conn| idempotency::purge(
            &*conn,
            before,
            PURGE_LIMIT
        )
        .await);
        match result {
            Ok(purged) => tracing::debug!(purged, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency keys failed"),
        }
    }
}
