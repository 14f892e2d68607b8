//! An agreement's state: anchor, interval, whether it is active, its periods.

use jiff::Timestamp;

use crate::ids::{AgreementId, CustomerId, PlanCode};
use crate::period::{Interval, Period};

/// A customer's billing agreement on a plan (docs/billing.md#agreements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The agreement's id.
    pub id: AgreementId,
    /// The customer it binds.
    pub customer_id: CustomerId,
    /// The plan's code (kept even if the catalog later changes).
    pub plan_code: PlanCode,
    /// The plan's interval when the agreement was made; periods never move.
    pub interval: Interval,
    /// Creation time: the anchor of its billing periods.
    pub anchor: Timestamp,
    /// When it ended, if it has.
    pub expires_on: Option<Timestamp>,
}

impl Agreement {
    /// The anchor of an agreement created at `created_at`: that instant truncated
    /// to the whole second, so periods read like Kinde's (`2024-11-18T02:32:03Z`)
    /// and never start after the creation.
    pub fn anchor_for(created_at: Timestamp) -> Timestamp {
        Timestamp::from_second(created_at.as_second()).unwrap_or(created_at)
    }

    /// Whether usage may be recorded against it at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires_on.is_none_or(|end| end > now)
    }

    /// The period containing `now`, `None` once the agreement has ended (as Kinde
    /// has no current period for an ended agreement).
    pub fn current_period(&self, now: Timestamp) -> Option<Period> {
        self.is_active(now)
            .then(|| self.interval.period_containing(self.anchor, now))
    }

    /// The period containing `at`.
    pub fn period_containing(&self, at: Timestamp) -> Period {
        self.interval.period_containing(self.anchor, at)
    }
}
