//! Reads for looking around the stored data (the dashboard, `docs/dashboard.md`):
//! the customers that have agreements, and the latest raw records of an
//! agreement. Neither is on the write path; both are served by indexes the
//! write path keeps anyway.

use jiff::Timestamp;
use kinde_meter_core::{
    aggregate::MeterType,
    ids::{AgreementId, CustomerId, FeatureCode, MAX_CODE_LEN},
    period::Period,
    value::MeterValue,
};

/// Most records one [`RecordsQuery`] may ask for.
pub const MAX_RECORDS: usize = 100;

/// A page of customers ([`crate::Store::list_customers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerQuery {
    /// Only customers whose id starts with this text (case-sensitive).
    pub prefix: Option<CustomerId>,
    /// The page after this customer id, in the listing's order (it need not name
    /// a customer).
    pub starting_after: Option<CustomerId>,
    /// Page size, at least 1.
    pub page_size: usize,
}

/// A page of customers, in byte order of their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPage {
    /// The customers of the page.
    pub customers: Vec<CustomerSummary>,
    /// Whether more customers match after this page.
    pub has_more: bool,
}

/// A customer that has agreements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSummary {
    /// The customer.
    pub customer_id: CustomerId,
    /// How many agreements it has, ended ones included.
    pub agreement_count: u64,
}

/// The latest raw records of an agreement ([`crate::Store::latest_usage_records`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsQuery {
    /// The agreement.
    pub agreement_id: AgreementId,
    /// One metered feature of its plan, or every metered feature.
    pub feature_code: Option<FeatureCode>,
    /// Most records to return, 1 to [`MAX_RECORDS`].
    pub limit: usize,
}

/// One stored usage record, as it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUsageRecord {
    /// The feature.
    pub feature_code: FeatureCode,
    /// Delta or absolute.
    pub meter_type: MeterType,
    /// The value, canonical.
    pub value: MeterValue,
    /// The record's `meter_usage_timestamp`; `None` when it had none (it
    /// counts at its receipt).
    pub timestamp: Option<Timestamp>,
    /// When it was received.
    pub received_at: Timestamp,
    /// The billing period it counts in.
    pub period: Period,
}

/// The order of [`crate::Store::latest_usage_records`], newest first: by period
/// start, then the instant the record counts at, then arrival. Both stores
/// keep these three columns in one index per agreement and feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RecordOrder {
    pub(crate) period_start_ns: i64,
    pub(crate) effective_at_ns: i64,
    pub(crate) seq: i64,
}

/// Merges per-feature lists (each newest first) into the `limit` newest records.
pub(crate) fn newest(
    mut found: Vec<(RecordOrder, StoredUsageRecord)>,
    limit: usize,
) -> Vec<StoredUsageRecord> {
    found.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
    found.truncate(limit);
    found.into_iter().map(|(_, r)| r).collect()
}

/// A stored meter type code.
pub(crate) fn meter_type(code: &str) -> Option<MeterType> {
    match code {
        "delta" => Some(MeterType::Delta),
        "absolute" => Some(MeterType::Absolute),
        _ => None,
    }
}

/// The range of customer ids a [`CustomerQuery`] covers, as bounds in code
/// point order (which is UTF-8 byte order): ids `> after` (or `>= prefix`)
/// and `< before`.
pub(crate) struct CustomerRange {
    /// Lower bound, excluded itself when `from_exclusive`.
    pub(crate) from: String,
    /// Whether `from` itself is excluded.
    pub(crate) from_exclusive: bool,
    /// Upper bound, exclusive; greater than every valid id when there is no prefix.
    pub(crate) before: String,
}

impl CustomerQuery {
    /// The bounds of this query's ids.
    pub(crate) fn range(&self) -> CustomerRange {
        let prefix = self.prefix.as_ref().map_or("", |p| p.as_str());
        let (from, from_exclusive) = match &self.starting_after {
            Some(after) if after.as_str() >= prefix => (after.as_str().to_owned(), true),
            _ => (prefix.to_owned(), false),
        };
        CustomerRange {
            from,
            from_exclusive,
            before: prefix_end(prefix),
        }
    }
}

/// The least string greater than every string that starts with `prefix` (in
/// code point order), or, for an empty prefix (or one with no such bound of
/// valid length), a string greater than every valid id: [`MAX_CODE_LEN`] + 1
/// times the last code point.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    std::iter::repeat_n(char::MAX, MAX_CODE_LEN + 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CustomerId {
        CustomerId::parse(s).unwrap()
    }

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end("cus_a"), "cus_b");
        assert_eq!(prefix_end("a\u{D7FF}"), "a\u{E000}");
        assert_eq!(prefix_end("a\u{10FFFF}"), "b");
        let top = prefix_end("");
        assert_eq!(top.chars().count(), MAX_CODE_LEN + 1);
        let longest = "\u{10FFFF}".repeat(MAX_CODE_LEN);
        assert!(longest < top);
        assert_eq!(prefix_end(&longest), top);
        for s in ["cus_a", "cus_a\u{10FFFF}", "cus_azzz"] {
            assert!(s.starts_with("cus_a") && s < prefix_end("cus_a").as_str());
        }
    }

    #[test]
    fn a_cursor_inside_the_prefix_moves_the_start() {
        let query = |prefix: Option<&str>, after: Option<&str>| CustomerQuery {
            prefix: prefix.map(id),
            starting_after: after.map(id),
            page_size: 10,
        };
        let r = query(Some("b"), Some("a")).range();
        assert_eq!((r.from.as_str(), r.from_exclusive), ("b", false));
        let r = query(Some("b"), Some("b1")).range();
        assert_eq!((r.from.as_str(), r.from_exclusive), ("b1", true));
        assert_eq!(r.before, "c");
        let r = query(None, None).range();
        assert_eq!((r.from.as_str(), r.from_exclusive), ("", false));
    }
}
