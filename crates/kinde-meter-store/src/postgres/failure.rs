//! What can go wrong talking to PostgreSQL, and what each failure means for the
//! caller and for the connection it happened on.

use std::fmt;

use tokio_postgres::error::SqlState;

use crate::{CreateAgreementError, ListAgreementsError, ReadUsageError, StoreError};

/// A failed store operation: PostgreSQL's own error, a stored value that does not
/// decode, or the operation's time running out.
#[derive(Debug)]
pub(super) enum Failure {
    /// The driver or the server failed.
    Db(tokio_postgres::Error),
    /// A stored value does not decode to anything the domain knows.
    Data(String),
    /// The operation did not finish within its deadline.
    Timeout,
    /// No connection could be had from the pool.
    Pool(String),
    /// A batch sent in one flight found what the writer remembered out of
    /// date (an aggregate row moved by another writer, or the agreements and
    /// plans changed): PostgreSQL rolled it back, and it is run again the
    /// usual way (`one_flight`).
    Stale,
    /// A batch sent in one flight carried an idempotency key that was not
    /// new (a retry's, or one another server's batch claimed): PostgreSQL
    /// rolled it back, and it is run again the usual way, which claims the
    /// key and answers from what it remembers (`one_flight`).
    KeyHeld,
}

/// Results of code that talks to PostgreSQL.
pub(super) type PgResult<T> = Result<T, Failure>;

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The driver's Display of a server error is only "db error"; the
            // server's message is what says what happened.
            Failure::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "PostgreSQL: {} ({})", db.message(), db.code().code()),
                None => write!(f, "PostgreSQL: {e}"),
            },
            Failure::Data(what) => write!(f, "unreadable stored data: {what}"),
            Failure::Timeout => f.write_str("PostgreSQL did not answer in time"),
            Failure::Pool(what) => write!(f, "no PostgreSQL connection: {what}"),
            Failure::Stale => {
                f.write_str("the writer's remembered aggregates or terms were out of date")
            }
            Failure::KeyHeld => {
                f.write_str("an idempotency key of a batch sent in one flight was not new")
            }
        }
    }
}

impl Failure {
    /// The SQLSTATE of a server error.
    pub(super) fn code(&self) -> Option<&SqlState> {
        match self {
            Failure::Db(e) => e.code(),
            _ => None,
        }
    }

    /// Whether running the same transaction again may succeed: the server chose
    /// it as a deadlock victim or refused it for a serialization conflict, or
    /// a batch sent in one flight was stale or carried a key that was not new.
    pub(super) fn is_retryable(&self) -> bool {
        matches!(self, Failure::Stale | Failure::KeyHeld)
            || matches!(
                self.code(),
                Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            )
    }

    /// Whether the connection it happened on must not be reused: anything but
    /// an error the server reported on a healthy session (a timed-out or
    /// broken connection may be mid-transaction or dead), and a session that
    /// may not write (a standby's after a failover, or one started while the
    /// database's `default_transaction_read_only` was on): it stays read-only
    /// while it lives, whereas a new session writes as soon as the database
    /// does again.
    pub(super) fn poisons_connection(&self) -> bool {
        match self {
            Failure::Db(e) => {
                e.as_db_error().is_none()
                    || e.is_closed()
                    || e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
            }
            Failure::Timeout => true,
            Failure::Data(_) | Failure::Pool(_) | Failure::Stale | Failure::KeyHeld => false,
        }
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        StoreError::Unavailable(f.to_string())
    }
}

/// The failure of an operation whose refusals are `E`: the database's, or the
/// operation's own refusal (a domain error such as an unknown plan). They are
/// kept apart because only the first may close the connection and becomes a 503.
#[derive(Debug)]
pub(super) enum OpError<E> {
    /// Talking to PostgreSQL failed.
    Failed(Failure),
    /// The operation's own answer: nothing failed, the request is refused.
    Refused(E),
}

impl<E> From<Failure> for OpError<E> {
    fn from(f: Failure) -> Self {
        OpError::Failed(f)
    }
}

impl<E> From<tokio_postgres::Error> for OpError<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Failed(Failure::Db(e))
    }
}

/// `?` on a refusal: `return Err(ReadUsageError::AgreementNotFound.into())`.
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
    ReadUsageError,
    crate::RecordFailure
);

impl<E: From<StoreError>> OpError<E> {
    /// The caller's error: the refusal, or `Unavailable` for a failure.
    pub(super) fn into_answer(self) -> E {
        match self {
            OpError::Failed(f) => StoreError::from(f).into(),
            OpError::Refused(e) => e,
        }
    }
}

/// The database failure in an operation's error, if it is one (what decides
/// whether its connection may be reused).
pub(super) trait AsFailure {
    fn as_failure(&self) -> Option<&Failure>;
}

impl AsFailure for Failure {
    fn as_failure(&self) -> Option<&Failure> {
        Some(self)
    }
}

impl<E> AsFailure for OpError<E> {
    fn as_failure(&self) -> Option<&Failure> {
        match self {
            OpError::Failed(f) => Some(f),
            OpError::Refused(_) => None,
        }
    }
}
