//! The work the writer thread does: one job per call, answered after commit.

use jiff::Timestamp;
use kinde_meter_core::{agreement::Agreement, catalog::Catalog};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{agreements, catalog, error::keep, exec::ExecJob, usage};
use crate::{CreateAgreementError, NewAgreement, StoreError, SubmissionOutcome, UsageSubmission};

/// A write waiting for the writer. Each variant keeps its answer until the
/// batch's transaction has committed (or failed), then sends it.
pub(super) enum Job {
    /// `Store::submit_usage`.
    Usage {
        submission: UsageSubmission,
        reply: oneshot::Sender<Result<SubmissionOutcome, StoreError>>,
        answer: Option<Result<SubmissionOutcome, StoreError>>,
    },
    /// `Store::create_agreement`.
    CreateAgreement {
        new: NewAgreement,
        reply: oneshot::Sender<Result<Agreement, CreateAgreementError>>,
        answer: Option<Result<Agreement, CreateAgreementError>>,
    },
    /// `Store::load_catalog`.
    LoadCatalog {
        catalog: Catalog,
        reply: oneshot::Sender<Result<(), StoreError>>,
        done: bool,
    },
    /// A closure write (`exec`): M2M client registration and revocation.
    Exec(Box<dyn ExecJob>),
    /// A closure write of the webhook outbox (webhooks, events, deliveries,
    /// and the usage-event columns of aggregates, which the cache does not
    /// hold): unlike [`Job::Exec`] it keeps the cache, since the delivery
    /// worker sends such jobs all the time. `builds_usage_events`: it may
    /// clear aggregates' usage-event marks, which the cache then forgets.
    Outbox {
        work: Box<dyn ExecJob>,
        builds_usage_events: bool,
    },
}

/// Where a job's answer arrives.
pub(super) type Answer<T, E> = oneshot::Receiver<Result<T, E>>;

impl Job {
    /// A usage submission and where its answer arrives.
    pub(super) fn usage(
        submission: UsageSubmission,
    ) -> (Job, Answer<SubmissionOutcome, StoreError>) {
        let (reply, rx) = oneshot::channel();
        let job = Job::Usage {
            submission,
            reply,
            answer: None,
        };
        (job, rx)
    }

    /// An agreement creation and where its answer arrives.
    pub(super) fn create_agreement(
        new: NewAgreement,
    ) -> (Job, Answer<Agreement, CreateAgreementError>) {
        let (reply, rx) = oneshot::channel();
        let job = Job::CreateAgreement {
            new,
            reply,
            answer: None,
        };
        (job, rx)
    }

    /// A catalog load and where its answer arrives.
    pub(super) fn load_catalog(catalog: Catalog) -> (Job, Answer<(), StoreError>) {
        let (reply, rx) = oneshot::channel();
        let job = Job::LoadCatalog {
            catalog,
            reply,
            done: false,
        };
        (job, rx)
    }

    /// Usage records the job carries (0 for other jobs): what batches are sized by.
    pub(super) fn records(&self) -> usize {
        match self {
            Job::Usage { submission, .. } => submission.records.len(),
            Job::CreateAgreement { .. }
            | Job::LoadCatalog { .. }
            | Job::Exec(_)
            | Job::Outbox { .. } => 0,
        }
    }

    /// A usage submission's time of receipt (the billing clock); `None` for other jobs.
    pub(super) fn received_at(&self) -> Option<Timestamp> {
        match self {
            Job::Usage { submission, .. } => Some(submission.received_at),
            _ => None,
        }
    }

    /// Does the job's work in the batch's transaction, keeping the answer.
    pub(super) fn run(
        &mut self,
        conn: &Connection,
        ctx: &mut usage::WriteContext<'_>,
    ) -> rusqlite::Result<()> {
        match self {
            Job::Usage {
                submission, answer, ..
            } => keep(usage::apply_submission(conn, ctx, submission), answer)?,
            Job::CreateAgreement { new, answer, .. } => {
                // It ends the customer's other agreements, and raises events.
                ctx.forget_agreements_and_plans();
                ctx.raised_events = true;
                keep(agreements::create(conn, new), answer)?;
            }
            Job::LoadCatalog {
                catalog: c, done, ..
            } => {
                ctx.forget_agreements_and_plans();
                catalog::upsert(conn, c)?;
                *done = true;
            }
            Job::Exec(work) => {
                // Client registrations and revocations, but a closure could
                // write anything that is cached.
                ctx.forget_agreements_and_plans();
                work.run(conn)?;
            }
            Job::Outbox {
                work,
                builds_usage_events,
            } => {
                if *builds_usage_events {
                    ctx.forget_usage_event_marks();
                }
                work.run(conn)?;
            }
        }
        Ok(())
    }

    /// Sends the answer: the kept one if the batch committed (`failure` is `None`),
    /// otherwise the batch's failure. A caller that stopped waiting is no error.
    pub(super) fn answer(self, failure: Option<&StoreError>) {
        let not_run = || StoreError::Unavailable("the write was not run".to_owned());
        match self {
            Job::Usage { reply, answer, .. } => {
                let result = match failure {
                    Some(e) => Err(e.clone()),
                    None => answer.unwrap_or_else(|| Err(not_run())),
                };
                let _ = reply.send(result);
            }
            Job::CreateAgreement { reply, answer, .. } => {
                let result = match failure {
                    Some(e) => Err(e.clone().into()),
                    None => answer.unwrap_or_else(|| Err(not_run().into())),
                };
                let _ = reply.send(result);
            }
            Job::LoadCatalog { reply, done, .. } => {
                let result = match failure {
                    Some(e) => Err(e.clone()),
                    None if done => Ok(()),
                    None => Err(not_run()),
                };
                let _ = reply.send(result);
            }
            Job::Exec(work) | Job::Outbox { work, .. } => work.answer(failure),
        }
    }
}
