//! Usage waiting to be sent: coalesced [`Group`]s (consecutive deltas summed
//! exactly, an absolute never merged), and the [`Unit`]s (requests with their
//! idempotency keys) they become (docs/design.md#reporter-coalescing).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kinde_meter_wire::{CreateMeterUsageRecordRequest, MeterTypeCode};
use serde::{Deserialize, Serialize};

use crate::decimal::Decimal;
use crate::idempotency::IdempotencyKey;

/// Most records in one batch request (the server's limit).
pub(crate) const MAX_BATCH_RECORDS: usize = 100;
/// Most JSON bytes of the records of one batch request, well under the
/// server's 64 KiB body limit.
const MAX_BATCH_BYTES: usize = 32 * 1024;

/// Recorded usage not yet in a unit: one run of deltas, or one absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Group {
    #[serde(rename = "a")]
    pub(crate) agreement: String,
    #[serde(rename = "f")]
    pub(crate) feature: String,
    #[serde(rename = "v")]
    pub(crate) value: Decimal,
    #[serde(rename = "m")]
    pub(crate) meter_type: MeterTypeCode,
    /// The timestamp to send, as the caller gave it (with its offset): the one
    /// of the latest usage covered.
    #[serde(rename = "ts")]
    pub(crate) timestamp: String,
    /// The earliest and latest instants covered.
    #[serde(rename = "lo")]
    pub(crate) earliest: Timestamp,
    #[serde(rename = "hi")]
    pub(crate) latest: Timestamp,
    /// How many recorded values it covers.
    #[serde(rename = "n")]
    pub(crate) count: u64,
}

impl Group {
    /// Merges `next` (a later delta of the same key) into this delta group, if
    /// the rules allow; says whether it did.
    fn absorb(&mut self, next: &Group, window: Duration) -> bool {
        if self.meter_type != MeterTypeCode::Delta || next.meter_type != MeterTypeCode::Delta {
            return false;
        }
        let earliest = self.earliest.min(next.earliest);
        let latest = self.latest.max(next.latest);
        let span = Duration::try_from(earliest.duration_until(latest)).unwrap_or(Duration::MAX);
        if span > window {
            return false;
        }
        let Some(value) = self.value.checked_add(next.value) else {
            return false;
        };
        if next.latest >= self.latest {
            self.timestamp.clone_from(&next.timestamp);
        }
        self.value = value;
        self.earliest = earliest;
        self.latest = latest;
        self.count += next.count;
        true
    }

    /// The request this group is sent as.
    fn request(&self) -> CreateMeterUsageRecordRequest {
        CreateMeterUsageRecordRequest {
            customer_agreement_id: self.agreement.clone(),
            billing_feature_code: self.feature.clone(),
            meter_value: self.value.to_string(),
            meter_usage_timestamp: Some(self.timestamp.clone()),
            meter_type_code: Some(self.meter_type),
        }
    }
}

/// The groups of every key, each key's in recording order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    keys: BTreeMap<(String, String), Vec<Group>>,
    groups: usize,
    values: u64,
}

impl Pending {
    /// Adds recorded usage, coalescing it with the key's last group if the
    /// rules allow.
    pub(crate) fn add(&mut self, group: Group, window: Duration) {
        self.values += group.count;
        let groups = self
            .keys
            .entry((group.agreement.clone(), group.feature.clone()))
            .or_default();
        if !groups
            .last_mut()
            .is_some_and(|last| last.absorb(&group, window))
        {
            groups.push(group);
            self.groups += 1;
        }
    }

    /// Removes and returns every group, each key's in order.
    pub(crate) fn take(&mut self) -> Vec<Group> {
        self.groups = 0;
        self.values = 0;
        std::mem::take(&mut self.keys)
            .into_values()
            .flatten()
            .collect()
    }

    /// Every group, each key's in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Group> {
        self.keys.values().flatten()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups == 0
    }

    /// Groups waiting (what will become records).
    pub(crate) fn groups(&self) -> usize {
        self.groups
    }

    /// Recorded values the groups cover.
    pub(crate) fn values(&self) -> u64 {
        self.values
    }
}

/// One request to send, with the idempotency key every attempt of it carries —
/// after a restart too, since units live in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Unit {
    pub(crate) id: u64,
    /// The `Idempotency-Key` of the request (of the batch, or of the single
    /// record). Records of a batch sent one by one use `<key>-<index>`.
    pub(crate) key: String,
    /// Sent to the batch endpoint (kinde-meter only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) batch: bool,
    /// A batch unit that must go out record by record from now on, because it
    /// may already have been sent that way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) split: bool,
    pub(crate) records: Vec<CreateMeterUsageRecordRequest>,
    /// For each record, how many recorded values it covers.
    pub(crate) counts: Vec<u64>,
}

impl Unit {
    /// The idempotency key of record `index` when sent on its own.
    pub(crate) fn record_key(&self, index: usize) -> IdempotencyKey {
        let key = if self.records.len() == 1 && !self.batch {
            self.key.clone()
        } else {
            format!("{}-{index}", self.key)
        };
        IdempotencyKey::new(key).expect("generated keys and their suffixes are valid")
    }

    /// The (agreement, feature) of a single-record unit.
    pub(crate) fn single_key(&self) -> Option<(&str, &str)> {
        match self.records.as_slice() {
            [record] if !self.batch => {
                Some((&record.customer_agreement_id, &record.billing_feature_code))
            }
            _ => None,
        }
    }
}

/// Turns groups into units, numbered from `next_id`: one unit per group, or
/// batches of up to 100 records (and 32 KiB) in order.
pub(crate) fn units(groups: Vec<Group>, batch: bool, next_id: &mut u64) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut size = 0;
    for group in groups {
        let record = group.request();
        let record_size = serde_json::to_vec(&record).map_or(0, |json| json.len());
        let fits = units.last().is_some_and(|unit| {
            batch && unit.records.len() < MAX_BATCH_RECORDS && size + record_size <= MAX_BATCH_BYTES
        });
        if fits {
            let unit = units.last_mut().expect("checked above");
            unit.records.push(record);
            unit.counts.push(group.count);
            size += record_size;
        } else {
            units.push(Unit {
                id: *next_id,
                key: IdempotencyKey::generate().to_string(),
                batch,
                split: false,
                records: vec![record],
                counts: vec![group.count],
            });
            *next_id += 1;
            size = record_size;
        }
    }
    units
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn group(
        agreement: &str,
        meter_type: MeterTypeCode,
        value: &str,
        at: &str,
    ) -> Group {
        let instant: Timestamp = at.parse().unwrap();
        Group {
            agreement: agreement.to_owned(),
            feature: "api_calls".to_owned(),
            value: Decimal::parse(value).unwrap(),
            meter_type,
            timestamp: at.to_owned(),
            earliest: instant,
            latest: instant,
            count: 1,
        }
    }

    fn delta(value: &str, at: &str) -> Group {
        group("agreement_a", MeterTypeCode::Delta, value, at)
    }

    fn absolute(value: &str, at: &str) -> Group {
        group("agreement_a", MeterTypeCode::Absolute, value, at)
    }

    const WINDOW: Duration = Duration::from_secs(10);

    fn summary(pending: &mut Pending) -> Vec<(MeterTypeCode, String, String, u64)> {
        pending
            .take()
            .into_iter()
            .map(|g| (g.meter_type, g.value.to_string(), g.timestamp, g.count))
            .collect()
    }

    #[test]
    fn deltas_add_up_exactly_and_carry_the_latest_timestamp() {
        let mut pending = Pending::default();
        pending.add(delta("0.1", "2025-01-01T00:00:01Z"), WINDOW);
        pending.add(delta("0.2", "2025-01-01T00:00:03Z"), WINDOW);
        pending.add(delta("1500.000000001", "2025-01-01T00:00:02Z"), WINDOW);
        assert_eq!((pending.groups(), pending.values()), (1, 3));
        assert_eq!(
            summary(&mut pending),
            [(
                MeterTypeCode::Delta,
                "1500.300000001".to_owned(),
                "2025-01-01T00:00:03Z".to_owned(),
                3
            )]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn an_absolute_is_never_merged_and_keeps_its_place() {
        let mut pending = Pending::default();
        pending.add(delta("1", "2025-01-01T00:00:01Z"), WINDOW);
        pending.add(delta("2", "2025-01-01T00:00:02Z"), WINDOW);
        pending.add(absolute("10", "2025-01-01T00:00:03Z"), WINDOW);
        pending.add(absolute("11", "2025-01-01T00:00:04Z"), WINDOW);
        pending.add(delta("4", "2025-01-01T00:00:05Z"), WINDOW);
        pending.add(delta("5", "2025-01-01T00:00:06Z"), WINDOW);
        let got: Vec<_> = summary(&mut pending)
            .into_iter()
            .map(|(kind, value, _, _)| (kind, value))
            .collect();
        use MeterTypeCode::{Absolute, Delta};
        assert_eq!(
            got,
            [
                (Delta, "3".to_owned()),
                (Absolute, "10".to_owned()),
                (Absolute, "11".to_owned()),
                (Delta, "9".to_owned())
            ]
        );
    }

    #[test]
    fn a_group_spans_at_most_the_window_and_fits_the_wire() {
        let mut pending = Pending::default();
        pending.add(delta("1", "2025-01-01T00:00:00Z"), WINDOW);
        pending.add(delta("1", "2025-01-01T00:00:10Z"), WINDOW);
        pending.add(delta("1", "2025-01-01T00:00:10.5Z"), WINDOW);
        assert_eq!(pending.groups(), 2);
        pending.take();

        pending.add(delta("999999999999999999", "2025-01-01T00:00:00Z"), WINDOW);
        pending.add(delta("1", "2025-01-01T00:00:00Z"), WINDOW);
        assert_eq!(pending.groups(), 2, "the sum would need 19 digits");
    }

    #[test]
    fn keys_are_coalesced_separately() {
        let mut pending = Pending::default();
        pending.add(delta("1", "2025-01-01T00:00:00Z"), WINDOW);
        pending.add(
            group(
                "agreement_b",
                MeterTypeCode::Delta,
                "2",
                "2025-01-01T00:00:00Z",
            ),
            WINDOW,
        );
        pending.add(delta("3", "2025-01-01T00:00:00Z"), WINDOW);
        assert_eq!((pending.groups(), pending.values()), (2, 3));
    }

    #[test]
    fn groups_become_single_units_or_batches() {
        let groups: Vec<Group> = (0..250)
            .map(|i| {
                group(
                    &format!("agreement_{i}"),
                    MeterTypeCode::Delta,
                    "1",
                    "2025-01-01T00:00:00Z",
                )
            })
            .collect();
        let mut next = 7;
        let singles = units(groups.clone(), false, &mut next);
        assert_eq!((singles.len(), next), (250, 257));
        assert!(singles.iter().all(|u| u.records.len() == 1 && !u.batch));
        assert_eq!(singles[0].record_key(0).as_str(), singles[0].key);
        assert_eq!(singles[0].single_key(), Some(("agreement_0", "api_calls")));

        let batches = units(groups, true, &mut next);
        let sizes: Vec<_> = batches.iter().map(|u| u.records.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(batches[1].records[0].customer_agreement_id, "agreement_100");
        assert_eq!(
            batches[0].record_key(3).as_str(),
            format!("{}-3", batches[0].key)
        );
        assert_eq!(batches[0].single_key(), None);
        let keys: std::collections::HashSet<_> = batches.iter().map(|u| &u.key).collect();
        assert_eq!(keys.len(), 3);
    }
}
