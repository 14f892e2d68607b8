//! What a store's reads remember of the agreements they read, confirmed by a
//! version counter stored with them; used by both backends' hot reads
//! (`docs/design.md#hot-read-cache`).

use std::sync::Arc;

// foldhash rather than std's SipHash (see `sqlite/cache.rs`): these maps hold
// only keys of agreements that exist.
use foldhash::{HashMap, HashMapExt};
use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    ids::{AgreementId, CustomerId},
};

/// The agreements a reader has read, all as of one value of a version counter
/// that moves on in the transaction of every change to them (SQLite:
/// `agreements_version`; PostgreSQL: `terms_version`): while a statement finds
/// that value again, no agreement has changed since they were read, whichever
/// process or server changed it (`docs/design.md#hot-read-cache`).
pub(crate) struct Agreements {
    /// The counter's value they were read at; `None` before the first.
    version: Option<i64>,
    by_id: HashMap<AgreementId, Arc<Agreement>>,
    by_customer: HashMap<CustomerId, Newest>,
    most: usize,
}

/// The customer's newest agreement active at `since`: also the one active at
/// any later instant at which it is still active, while the agreements are
/// unchanged (later instants have fewer active agreements, never more).
struct Newest {
    since: Timestamp,
    agreement: Arc<Agreement>,
}

impl Agreements {
    pub(crate) fn new(most: usize) -> Agreements {
        Agreements {
            version: None,
            by_id: HashMap::new(),
            by_customer: HashMap::new(),
            most,
        }
    }

    /// The version what is remembered was read at.
    pub(crate) fn version(&self) -> Option<i64> {
        self.version
    }

    /// Called with the version a snapshot found, before what the snapshot
    /// read is remembered: forgets everything read at another version.
    pub(crate) fn seen(&mut self, version: i64) {
        if self.version != Some(version) {
            self.version = Some(version);
            self.by_id.clear();
            self.by_customer.clear();
        }
    }

    /// The agreement `id`, as read at [`Self::version`].
    pub(crate) fn by_id(&self, id: &AgreementId) -> Option<&Arc<Agreement>> {
        self.by_id.get(id)
    }

    /// The customer's newest agreement active at `now`, as read at
    /// [`Self::version`], when what was read tells it.
    pub(crate) fn newest_of_customer(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> Option<&Arc<Agreement>> {
        let newest = self.by_customer.get(customer_id)?;
        (newest.since <= now && newest.agreement.is_active(now)).then_some(&newest.agreement)
    }

    /// Remembers the agreement `id` read at version `version` (after [`Self::seen`]).
    pub(crate) fn remember(&mut self, version: i64, agreement: &Arc<Agreement>) {
        if self.version != Some(version) {
            return;
        }
        if self.by_id.len() >= self.most {
            self.by_id.clear();
        }
        self.by_id.insert(agreement.id.clone(), agreement.clone());
    }

    /// Remembers the customer's newest agreement active at `now`, read at
    /// version `version` (after [`Self::seen`]).
    pub(crate) fn remember_newest(
        &mut self,
        version: i64,
        now: Timestamp,
        agreement: &Arc<Agreement>,
    ) {
        if self.version != Some(version) {
            return;
        }
        if self.by_customer.len() >= self.most {
            self.by_customer.clear();
        }
        self.by_customer.insert(
            agreement.customer_id.clone(),
            Newest {
                since: now,
                agreement: agreement.clone(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use kinde_meter_core::{ids::PlanCode, period::Interval};

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ended(id: u8, customer: &str, expires_on: Option<&str>) -> Arc<Agreement> {
        Arc::new(Agreement {
            id: AgreementId::generate(t("2025-01-01T00:00:00Z"), [id; 10]),
            customer_id: CustomerId::parse(customer.to_owned()).unwrap(),
            plan_code: PlanCode::parse("pro".to_owned()).unwrap(),
            interval: Interval::Month,
            anchor: t("2025-01-01T00:00:00Z"),
            expires_on: expires_on.map(t),
        })
    }

    /// A customer's newest agreement is answered for instants from the one it
    /// was read at while it is active, and nothing is answered once another
    /// version was seen, or for what a stale version read.
    #[test]
    fn remembered_agreements_answer_only_what_a_read_would() {
        let customer = CustomerId::parse("customer_1".to_owned()).unwrap();
        let mut cache = Agreements::new(10);
        let a = ended(1, "customer_1", Some("2025-02-01T00:00:00Z"));
        assert_eq!(cache.version(), None);
        cache.remember_newest(3, t("2025-01-10T00:00:00Z"), &a);
        assert!(
            cache
                .newest_of_customer(&customer, t("2025-01-10T00:00:00Z"))
                .is_none()
        );
        cache.seen(3);
        cache.remember_newest(3, t("2025-01-10T00:00:00Z"), &a);
        cache.remember(3, &a);
        for at in ["2025-01-10T00:00:00Z", "2025-01-31T23:59:59Z"] {
            assert!(Arc::ptr_eq(
                cache.newest_of_customer(&customer, t(at)).unwrap(),
                &a
            ));
        }
        // Before the instant it was read at, an agreement ended since may be
        // the newest active one; at its end, an older one may still be.
        for at in ["2025-01-09T23:59:59Z", "2025-02-01T00:00:00Z"] {
            assert!(cache.newest_of_customer(&customer, t(at)).is_none());
        }
        let other = CustomerId::parse("customer_2".to_owned()).unwrap();
        assert!(
            cache
                .newest_of_customer(&other, t("2025-01-10T00:00:00Z"))
                .is_none()
        );
        assert!(Arc::ptr_eq(cache.by_id(&a.id).unwrap(), &a));

        cache.seen(3);
        assert!(cache.by_id(&a.id).is_some());
        cache.seen(4);
        assert_eq!(cache.version(), Some(4));
        assert!(cache.by_id(&a.id).is_none());
        assert!(
            cache
                .newest_of_customer(&customer, t("2025-01-10T00:00:00Z"))
                .is_none()
        );
        cache.remember(3, &a);
        cache.remember_newest(3, t("2025-01-10T00:00:00Z"), &a);
        assert!(cache.by_id(&a.id).is_none());
        assert!(
            cache
                .newest_of_customer(&customer, t("2025-01-10T00:00:00Z"))
                .is_none()
        );
    }

    /// Past its size the cache starts over.
    #[test]
    fn remembered_agreements_are_bounded() {
        let mut cache = Agreements::new(2);
        cache.seen(1);
        let now = t("2025-01-10T00:00:00Z");
        let agreements: Vec<_> = (0..3)
            .map(|i| ended(i, &format!("customer_{i}"), None))
            .collect();
        for a in &agreements {
            cache.remember(1, a);
            cache.remember_newest(1, now, a);
        }
        assert!(cache.by_id.len() <= 2 && cache.by_customer.len() <= 2);
        assert!(cache.by_id(&agreements[2].id).is_some());
        assert!(
            cache
                .newest_of_customer(&agreements[2].customer_id, now)
                .is_some()
        );
    }
}
