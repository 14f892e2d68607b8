//! Writes of their own kind (M2M client registration and revocation): a closure
//! run by the writer in a batch's transaction and answered after its commit, so
//! such a write needs no job variant of its own.

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::job::Answer;
use crate::StoreError;

/// A closure job as the writer sees it.
pub(super) trait ExecJob: Send {
    /// Runs the work in the batch's transaction, keeping its result.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Sends the kept result if the batch committed (`failure` is `None`),
    /// otherwise the batch's failure.
    fn answer(self: Box<Self>, failure: Option<&StoreError>);
}

struct Exec<T, F> {
    work: Option<F>,
    result: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

/// A job running `work` and where its answer arrives.
pub(super) fn job<T, F>(work: F) -> (Box<dyn ExecJob>, Answer<T, StoreError>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Exec {
        work: Some(work),
        result: None,
        reply,
    };
    (Box::new(job), rx)
}

impl<T, F> ExecJob for Exec<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if let Some(work) = self.work.take() {
            self.result = Some(work(conn)?);
        }
        Ok(())
    }

    fn answer(self: Box<Self>, failure: Option<&StoreError>) {
        let result = match (failure, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => Ok(result),
            (None, None) => Err(StoreError::Unavailable("the write was not run".to_owned())),
        };
        // A caller that stopped waiting is no error.
        let _ = self.reply.send(result);
    }
}
