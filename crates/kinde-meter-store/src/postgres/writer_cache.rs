//! The agreements and plans the writer last read, all at one value of
//! `terms_version` (schema version 4: statement triggers move it on in the
//! transaction of every change to agreements or plans, whichever server or
//! session makes it), by which a batch places its records in their periods
//! without reading them again: the batch then sends its aggregate locks in the
//! same flight as its BEGIN and its reads, one round trip fewer, and goes on
//! only if its transaction finds the counter at that value
//! ([`AgreementCache::confirms`]), so that the agreements and plans are the
//! ones it placed by; otherwise it rolls back and runs the way it would
//! without a cache.
//!
//! Design: `docs/design.md#postgresql-store`.

use std::collections::HashMap;

use kinde_meter_core::{
    agreement::Agreement,
    catalog::Plan,
    ids::{AgreementId, PlanCode},
};

/// Agreements (and the plans they are on) as batches read them at
/// `terms_version` = `version`.
#[derive(Default)]
pub(super) struct AgreementCache {
    /// The counter's value everything here was read at; `None`: nothing yet.
    version: Option<i64>,
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
        self.version.is_some()
            && ids.iter().all(|id| {
                self.agreements
                    .get(*id)
                    .is_some_and(|a| self.plans.contains_key(&a.plan_code))
            })
    }

    /// The counter's value everything here was read at, if anything was.
    pub(super) fn version(&self) -> Option<i64> {
        self.version
    }

    /// Whether a batch's transaction that found the counter at `version`
    /// sees the agreements and plans here: only then does a placement made
    /// from the cache stand.
    pub(super) fn confirms(&self, version: i64) -> bool {
        self.version == Some(version)
    }

    /// Keeps what a batch read with the counter at `version`: the
    /// agreements of `ids` (forgetting those it did not find) and their
    /// plans. What was read at another value, an older one too (a restored
    /// backup), is forgotten first.
    pub(super) fn remember(
        &mut self,
        version: i64,
        ids: &[&AgreementId],
        agreements: &HashMap<AgreementId, Agreement>,
        plans: &HashMap<PlanCode, Plan>,
    ) {
        if self.version != Some(version) || self.agreements.len() + ids.len() > Self::CAPACITY {
            self.version = Some(version);
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
    fn only_the_counter_read_with_it_confirms_a_guess() {
        let (a, b) = (agreement("agr_a", None), agreement("agr_b", None));
        let ids = [&a.id, &b.id];
        let mut cache = AgreementCache::default();
        assert!(!cache.covers(&ids));
        assert!(!cache.confirms(0));
        cache.remember(7, &ids, &by_id(&[&a, &b]), &plans(100));
        assert!(cache.covers(&ids));
        assert!(cache.confirms(7));
        // Any change to agreements or plans moved the counter.
        assert!(!cache.confirms(8) && !cache.confirms(6));

        // What was read at the same value is added; an agreement not found is forgotten.
        let c = agreement("agr_c", None);
        cache.remember(7, &[&c.id, &b.id], &by_id(&[&c]), &plans(100));
        assert!(cache.covers(&[&a.id, &c.id]));
        assert!(!cache.covers(&[&b.id]));

        // What was read at another value, an older one too, replaces it all.
        for version in [9, 3] {
            cache.remember(version, &[&a.id], &by_id(&[&a]), &plans(50));
            assert!(cache.covers(&[&a.id]) && !cache.covers(&[&c.id]));
            assert!(cache.confirms(version) && !cache.confirms(7));
            assert_eq!(cache.plans[&a.plan_code].features[0].limit_max, Some(50));
        }
    }

    #[test]
    fn an_agreement_without_its_plan_is_not_covered() {
        let a = agreement("agr_a", None);
        let mut cache = AgreementCache::default();
        cache.remember(1, &[&a.id], &by_id(&[&a]), &HashMap::new());
        assert!(!cache.covers(&[&a.id]));
    }
}
