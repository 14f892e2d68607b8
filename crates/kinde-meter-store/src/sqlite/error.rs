//! What a SQLite operation fails with: SQLite itself, or the operation's own
//! refusal (a domain error such as an unknown plan). They are kept apart because
//! only SQLite's failure rolls back a writer batch or becomes a 503.

use crate::{CreateAgreementError, ListAgreementsError, ReadUsageError, StoreError};

/// The failure of an operation whose refusals are `E`.
#[derive(Debug)]
pub(super) enum OpError<E> {
    /// SQLite failed (or a stored value does not decode).
    Sqlite(rusqlite::Error),
    /// The operation's own answer: nothing failed, the request is refused.
    Refused(E),
}

impl<E> From<rusqlite::Error> for OpError<E> {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Sqlite(e)
    }
}

/// `?` on a refusal: `Err(ReadUsageError::AgreementNotFound)?`.
macro_rules! refusals {
    ($($e:ty),*) => {$(
        impl From<$e> for OpError<$e> {
            fn from(e: $e) -> Self {
                OpError::Refused(e)
            }
        }
    )*};
}
refusals!(
    StoreError,
    CreateAgreementError,
    ListAgreementsError,
    ReadUsageError
);

impl<E: From<StoreError>> OpError<E> {
    /// The caller's error: the refusal, or `Unavailable` for SQLite's failure.
    pub(super) fn into_answer(self) -> E {
        match self {
            OpError::Sqlite(e) => StoreError::Unavailable(e.to_string()).into(),
            OpError::Refused(e) => e,
        }
    }
}

/// Keeps a writer job's answer (its value or its refusal) in `slot`, to be sent
/// once the batch has committed; SQLite's failure is returned instead, and fails
/// the batch.
pub(super) fn keep<T, E>(
    result: Result<T, OpError<E>>,
    slot: &mut Option<Result<T, E>>,
) -> rusqlite::Result<()> {
    *slot = Some(match result {
        Ok(value) => Ok(value),
        Err(OpError::Refused(e)) => Err(e),
        Err(OpError::Sqlite(e)) => return Err(e),
    });
    Ok(())
}
