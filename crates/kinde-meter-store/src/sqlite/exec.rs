//! Writes of their own kind (M2M client registration and revocation): a closure
//! run by the writer in a batch's transaction and answered after its commit, so
//! such a write needs no job variant of its own.

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{
    error::{OpError, keep},
    job::Answer,
};
use crate::StoreError;

/// A closure job as the writer sees it.
pub(super) trait ExecJob: Send {
    /// Runs the work in the batch's transaction, keeping its answer; SQLite's
    /// failure fails the batch.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Sends the kept answer if the batch committed (`failure` is `None`),
    /// otherwise the batch's failure.
    fn answer(self: Box<Self>, failure: Option<&StoreError>);
}

struct Exec<T, E, F> {
    work: Option<F>,
    answer: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

/// A job running `work` and where its answer (value or refusal `E`) arrives.
pub(super) fn job<T, E, F>(work: F) -> (Box<dyn ExecJob>, Answer<T, E>)
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&Connection) -> Result<T, OpError<E>> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Exec {
        work: Some(work),
        answer: None,
        reply,
    };
    (Box::new(job), rx)
}

impl<T, E, F> ExecJob for Exec<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnOnce(&Connection) -> Result<T, OpError<E>> + Send,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        match self.work.take() {
            Some(work) => keep(work(conn), &mut self.answer),
            None => Ok(()),
        }
    }

    fn answer(self: Box<Self>, failure: Option<&StoreError>) {
        let result = match (failure, self.answer) {
            (Some(e), _) => Err(e.clone().into()),
            (None, Some(answer)) => answer,
            (None, None) => Err(StoreError::Unavailable("the write was not run".to_owned()).into()),
        };
        // A caller that stopped waiting is no error.
        let _ = self.reply.send(result);
    }
}
