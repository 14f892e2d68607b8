//! What the usage reads and entitlement checks remember of the agreements and
//! plans they read (the terms an answer is given by), all as of one value of
//! `terms_version` (schema version 4), a counter that statement triggers move
//! on in the transaction of every change to `agreements`, `plans` or
//! `plan_features`, whichever server or session makes it. A read that finds
//! its agreement and plan here reads only the counter and the aggregates, in
//! one statement of primary-key probes (`read.rs`), and answers from what is
//! remembered when the counter is unchanged: then no agreement or plan has
//! changed since it was read. Shared by every read of the store.
//!
//! Design: `docs/design.md#hot-read-cache`.

use std::sync::{Arc, Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt};
use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    catalog::Plan,
    ids::{AgreementId, CustomerId, PlanCode},
};

use crate::remembered::Agreements;

/// Agreements (and plans) remembered at most; past it, the map starts over.
const MAX_ENTRIES: usize = 50_000;

/// An agreement and its plan, as read at `version` of `terms_version`.
pub(super) struct Remembered {
    pub version: i64,
    pub agreement: Arc<Agreement>,
    pub plan: Arc<Plan>,
}

/// The store's remembered terms (see the module).
pub(super) struct Terms(Mutex<Inner>);

struct Inner {
    agreements: Agreements,
    /// Plans by code, read at `agreements.version()`.
    plans: HashMap<PlanCode, Arc<Plan>>,
}

impl Terms {
    pub(super) fn new() -> Terms {
        Terms(Mutex::new(Inner {
            agreements: Agreements::new(MAX_ENTRIES),
            plans: HashMap::new(),
        }))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // What is kept is only ever whole entries: a panic elsewhere while
        // the lock was held leaves nothing half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agreement `id` and its plan, if both are remembered.
    pub(super) fn by_id(&self, id: &AgreementId) -> Option<Remembered> {
        let inner = self.inner();
        inner.with_plan(inner.agreements.by_id(id)?)
    }

    /// The customer's newest agreement active at `now` and its plan, if
    /// what is remembered tells it.
    pub(super) fn newest_of_customer(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> Option<Remembered> {
        let inner = self.inner();
        inner.with_plan(inner.agreements.newest_of_customer(customer_id, now)?)
    }

    /// Remembers what a read found in a snapshot at `version` (`None`: the
    /// counter was not read, so nothing is kept): the agreement, its plan if
    /// the store has it, and, with `newest_at`, that the agreement was the
    /// customer's newest active one at that instant. A read at another
    /// version replaces all of it, also an older one (a read that started
    /// before the last change and ended after it: the next read at the newer
    /// version replaces it again): the counter found is the database's, also
    /// after it went back (a backup restored under a running server), and a
    /// remembered version must never outlive the contents it was read with.
    pub(super) fn remember(
        &self,
        version: Option<i64>,
        agreement: &Arc<Agreement>,
        plan: Option<&Arc<Plan>>,
        newest_at: Option<Timestamp>,
    ) {
        let Some(version) = version else { return };
        let mut inner = self.inner();
        if inner.agreements.version() != Some(version) {
            inner.agreements.seen(version);
            inner.plans.clear();
        }
        inner.agreements.remember(version, agreement);
        if let Some(now) = newest_at {
            inner.agreements.remember_newest(version, now, agreement);
        }
        if let Some(plan) = plan {
            if inner.plans.len() >= MAX_ENTRIES {
                inner.plans.clear();
            }
            inner.plans.insert(plan.code.clone(), plan.clone());
        }
    }
}

impl Inner {
    fn with_plan(&self, agreement: &Arc<Agreement>) -> Option<Remembered> {
        Some(Remembered {
            version: self.agreements.version()?,
            agreement: agreement.clone(),
            plan: self.plans.get(&agreement.plan_code)?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use kinde_meter_core::period::Interval;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan() -> Arc<Plan> {
        Arc::new(Plan {
            code: PlanCode::parse("pro".to_owned()).unwrap(),
            name: "Pro".to_owned(),
            interval: Interval::Month,
            group: None,
            features: Vec::new(),
        })
    }

    fn agreement(id: u8) -> Arc<Agreement> {
        Arc::new(Agreement {
            id: AgreementId::generate(t("2025-01-01T00:00:00Z"), [id; 10]),
            customer_id: CustomerId::parse("customer_1".to_owned()).unwrap(),
            plan_code: PlanCode::parse("pro".to_owned()).unwrap(),
            interval: Interval::Month,
            anchor: t("2025-01-01T00:00:00Z"),
            expires_on: None,
        })
    }

    /// Only an agreement whose plan is remembered too is answered, at the
    /// version both were read at; a read at any other version, older too,
    /// forgets the rest.
    #[test]
    fn terms_are_answered_at_one_version_with_their_plan() {
        let terms = Terms::new();
        let (a, b) = (agreement(1), agreement(2));
        let now = t("2025-01-10T00:00:00Z");
        terms.remember(None, &a, Some(&plan()), Some(now));
        assert!(terms.by_id(&a.id).is_none(), "no version, nothing kept");

        terms.remember(Some(5), &a, None, Some(now));
        assert!(terms.by_id(&a.id).is_none(), "no plan");
        terms.remember(Some(5), &a, Some(&plan()), Some(now));
        let found = terms.by_id(&a.id).unwrap();
        assert_eq!((found.version, found.plan.code.as_str()), (5, "pro"));
        let newest = terms.newest_of_customer(&a.customer_id, now).unwrap();
        assert!(Arc::ptr_eq(&newest.agreement, &a));

        for version in [6, 4] {
            terms.remember(Some(version), &b, Some(&plan()), None);
            assert!(terms.by_id(&a.id).is_none(), "read at another version");
            assert!(terms.newest_of_customer(&a.customer_id, now).is_none());
            assert_eq!(terms.by_id(&b.id).unwrap().version, version);
            terms.remember(Some(version), &a, Some(&plan()), Some(now));
        }
    }
}
