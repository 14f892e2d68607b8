//! The agreements and plans the writer last read, by which a batch places its
//! records in their periods before it has read them again: the batch then sends
//! its aggregate locks in the same flight as its BEGIN and its reads, one round
//! trip fewer, and goes on only if what it read in its transaction is what it
//! guessed from ([`AgreementCache::confirms`]); otherwise it rolls back and runs
//! the way it would without a cache.
//!
//! Design: `docs/design.md#postgresql-store`.

use std::collections::HashMap;

use kinde_meter_core::{
    agreement::Agreement,
    catalog::Plan,
    ids::{AgreementId, PlanCode},
};

/// Agreements (and the plans they are on) as a batch last read them.
#[derive(Default)]
pub(super) struct AgreementCache {
    pub(super) agreements: HashMap<AgreementId, Agreement>,
    pub(super) plans: HashMap<PlanCode, Plan>,
}

impl AgreementCache {
    /// Most agreements kept: past it the cache starts again, empty (a batch
    /// of agreements not in it costs the round trip it saves, nothing else).
    const CAPACITY: usize = 100_000;

    /// Whether every agreement of `ids` and its plan are here, so that a batch
    /// can place its records by them.
    pub(super) fn covers(&self, ids: &[&AgreementId]) -> bool {
        ids.iter().all(|id| {
            self.agreements
                .get(*id)
                .is_some_and(|a| self.plans.contains_key(&a.plan_code))
        })
    }

    /// Whether the agreements of `ids` and their plans, as the batch's
    /// transaction read them (`agreements`, `plans`), are the ones here. Only
    /// then does a placement made from the cache stand.
    pub(super) fn confirms(
        &self,
        ids: &[&AgreementId],
        agreements: &HashMap<AgreementId, Agreement>,
        plans: &HashMap<PlanCode, Plan>,
    ) -> bool {
        ids.iter().all(|id| {
            let (Some(cached), Some(read)) = (self.agreements.get(*id), agreements.get(*id)) else {
                return false;
            };
            cached == read
                && self
                    .plans
                    .get(&cached.plan_code)
                    .is_some_and(|plan| plans.get(&cached.plan_code) == Some(plan))
        })
    }

    /// Keeps what a batch read: the agreements of `ids` (forgetting those it
    /// did not find) and their plans.
    pub(super) fn remember(
        &mut self,
        ids: &[&AgreementId],
        agreements: &HashMap<AgreementId, Agreement>,
        plans: &HashMap<PlanCode, Plan>,
    ) {
        if self.agreements.len() + ids.len() > Self::CAPACITY {
            self.agreements.clear();
            self.plans.clear();
        }
        for id in ids {
            match agreements.get(*id) {
                Some(a) => {
                    self.agreements.insert(a.id.clone(), a.clone());
                }
                None => {
                    self.agreements.remove(*id);
                }
            }
        }
        for (code, plan) in plans {
            if self.plans.get(code) != Some(plan) {
                self.plans.insert(code.clone(), plan.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kinde_meter_core::{catalog::Catalog, ids::CustomerId, period::Interval};

    use super::*;

    fn plans(limit: u32) -> HashMap<PlanCode, Plan> {
        let text = format!(
            "[[plans]]\ncode = \"pro\"\nname = \"Pro\"\ninterval = \"month\"\n\n\
             [[plans.features]]\ncode = \"calls\"\nmetered = true\nlimit_max = {limit}\n"
        );
        Catalog::parse(&text, "test")
            .unwrap()
            .plans
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect()
    }

    fn agreement(id: &str, expires_on: Option<&str>) -> Agreement {
        Agreement {
            id: AgreementId::parse(id).unwrap(),
            customer_id: CustomerId::parse("cust").unwrap(),
            plan_code: PlanCode::parse("pro").unwrap(),
            interval: Interval::Month,
            anchor: "2024-03-01T00:00:00Z".parse().unwrap(),
            expires_on: expires_on.map(|t| t.parse().unwrap()),
        }
    }

    fn by_id(list: &[&Agreement]) -> HashMap<AgreementId, Agreement> {
        list.iter().map(|a| (a.id.clone(), (*a).clone())).collect()
    }

    #[test]
    fn only_what_was_read_the_same_confirms_a_guess() {
        let (a, b) = (agreement("agr_a", None), agreement("agr_b", None));
        let ids = [&a.id, &b.id];
        let mut cache = AgreementCache::default();
        assert!(!cache.covers(&ids));
        cache.remember(&ids, &by_id(&[&a, &b]), &plans(100));
        assert!(cache.covers(&ids));
        assert!(cache.confirms(&ids, &by_id(&[&a, &b]), &plans(100)));

        // An agreement ended, a plan's terms changed, an agreement gone.
        let ended = agreement("agr_b", Some("2024-03-05T00:00:00Z"));
        assert!(!cache.confirms(&ids, &by_id(&[&a, &ended]), &plans(100)));
        assert!(!cache.confirms(&ids, &by_id(&[&a, &b]), &plans(50)));
        assert!(!cache.confirms(&ids, &by_id(&[&a]), &plans(100)));
        assert!(!cache.confirms(&ids, &by_id(&[&a, &b]), &HashMap::new()));

        // What was read replaces what was cached; an agreement not found is forgotten.
        cache.remember(&ids, &by_id(&[&a]), &plans(50));
        assert!(!cache.covers(&ids));
        assert!(cache.covers(&[&a.id]));
        assert!(cache.confirms(&[&a.id], &by_id(&[&a]), &plans(50)));
    }

    #[test]
    fn an_agreement_without_its_plan_is_not_covered() {
        let a = agreement("agr_a", None);
        let mut cache = AgreementCache::default();
        cache.remember(&[&a.id], &by_id(&[&a]), &HashMap::new());
        assert!(!cache.covers(&[&a.id]));
    }
}
