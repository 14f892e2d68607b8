//! The time billing decisions are made at.
//!
//! Production reads the system clock. Tests of period rules (late usage after a
//! period closed, month-end anchors) need time to move on demand, so the server
//! takes a [`Clock`] and a test may hold a [`ManualClock`] handle. Token expiry is
//! always judged against the system clock.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use jiff::{SignedDuration, Timestamp};

/// Where the server reads "now" for billing.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock a test sets and advances.
    Manual(ManualClock),
}

impl Clock {
    /// The current instant.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Manual(m) => m.now(),
        }
    }
}

/// A settable clock (nanosecond precision), shared by clones.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `at` (which must lie between 1678 and 2261).
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(to_nanos(at))))
    }

    /// The instant shown.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(self.0.load(Ordering::SeqCst)))
            .expect("a manual clock holds an in-range instant")
    }

    /// Shows `at` from now on.
    pub fn set(&self, at: Timestamp) {
        self.0.store(to_nanos(at), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        self.set(self.now() + by);
    }
}

fn to_nanos(at: Timestamp) -> i64 {
    i64::try_from(at.as_nanosecond()).expect("manual clock instants lie between 1678 and 2261")
}
