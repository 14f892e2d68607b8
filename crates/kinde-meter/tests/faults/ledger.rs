//! Exactly once, per idempotency key: what the clients were told, against the
//! usage records stored under each key.
//!
//! A key answered 200 must be stored exactly once (else it is *lost* or
//! *doubled*); a key only ever refused (429, 503) must not be stored at all; a
//! key whose request got no answer (the connection failed: sent or not,
//! nobody knows) may be stored once at most.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// What the clients were told, per key.
#[derive(Default)]
pub struct Ledger {
    /// Keys answered 200, with their value.
    acknowledged: BTreeMap<String, String>,
    /// Keys whose requests got no answer at least once, never acknowledged.
    in_doubt: BTreeSet<String>,
    /// Keys only ever refused.
    refused: BTreeSet<String>,
    /// Acknowledged keys that had an unanswered attempt first (the ones a
    /// server may have stored before it failed, and must not store twice).
    resolved_doubts: usize,
}

impl Ledger {
    /// `key` was answered 200.
    pub fn acknowledged(&mut self, key: &str, value: &str) {
        if self.in_doubt.remove(key) {
            self.resolved_doubts += 1;
        }
        self.refused.remove(key);
        self.acknowledged.insert(key.to_owned(), value.to_owned());
    }

    /// `key` was refused (429, 503, …); an earlier unanswered attempt may
    /// still have been stored.
    pub fn refused(&mut self, key: &str) {
        if !self.acknowledged.contains_key(key) && !self.in_doubt.contains(key) {
            self.refused.insert(key.to_owned());
        }
    }

    /// `key`'s request got no answer.
    pub fn in_doubt(&mut self, key: &str) {
        if !self.acknowledged.contains_key(key) {
            self.refused.remove(key);
            self.in_doubt.insert(key.to_owned());
        }
    }

    /// Adds another load's ledger (its keys are its own).
    pub fn merge(&mut self, other: &Ledger) {
        self.resolved_doubts += other.resolved_doubts;
        for (key, value) in &other.acknowledged {
            self.acknowledged(key, value);
        }
        for key in &other.in_doubt {
            self.in_doubt(key);
        }
        for key in &other.refused {
            self.refused(key);
        }
    }

    /// The sum of the acknowledged values (whole numbers in these harnesses).
    pub fn acknowledged_sum(&self) -> u128 {
        self.acknowledged
            .values()
            .map(|v| v.parse::<u128>().expect("whole-number values"))
            .sum()
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    /// Compares with `stored`: the number of usage records per key (`""` for
    /// records without one).
    pub fn check(&self, stored: &BTreeMap<String, u64>) -> Check {
        let count = |key: &str| stored.get(key).copied().unwrap_or(0);
        let known = |key: &String| {
            self.acknowledged.contains_key(key)
                || self.in_doubt.contains(key)
                || self.refused.contains(key)
        };
        Check {
            checked: self.acknowledged.len(),
            resolved_doubts: self.resolved_doubts,
            refused: self.refused.len(),
            in_doubt: self.in_doubt.len(),
            in_doubt_stored: self.in_doubt.iter().filter(|k| count(k) > 0).count(),
            lost: self
                .acknowledged
                .keys()
                .filter(|k| count(k) == 0)
                .cloned()
                .collect(),
            doubled: stored
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, _)| k.clone())
                .collect(),
            refused_stored: self
                .refused
                .iter()
                .filter(|k| count(k) > 0)
                .cloned()
                .collect(),
            unknown: stored.keys().filter(|k| !known(k)).cloned().collect(),
        }
    }
}

/// The comparison of a ledger with the stored records.
#[derive(Debug)]
pub struct Check {
    /// Acknowledged keys (each checked to be stored once).
    pub checked: usize,
    /// Of those, the ones acknowledged after an unanswered attempt.
    pub resolved_doubts: usize,
    pub refused: usize,
    pub in_doubt: usize,
    pub in_doubt_stored: usize,
    pub lost: Vec<String>,
    pub doubled: Vec<String>,
    pub refused_stored: Vec<String>,
    /// Stored keys no client sent.
    pub unknown: Vec<String>,
}

impl Check {
    /// Asserts exactly once: nothing lost, doubled, refused-but-stored or unknown.
    pub fn assert_exact(&self) {
        let first = |keys: &[String]| keys.iter().take(5).cloned().collect::<Vec<_>>();
        assert!(
            self.lost.is_empty()
                && self.doubled.is_empty()
                && self.refused_stored.is_empty()
                && self.unknown.is_empty(),
            "not exactly once: {} lost (first {:?}), {} doubled (first {:?}), {} refused yet stored \
             (first {:?}), {} stored without being sent (first {:?})",
            self.lost.len(),
            first(&self.lost),
            self.doubled.len(),
            first(&self.doubled),
            self.refused_stored.len(),
            first(&self.refused_stored),
            self.unknown.len(),
            first(&self.unknown),
        );
    }

    /// One line for the log and the docs.
    pub fn summary(&self) -> String {
        format!(
            "records checked {} (acknowledged, each stored once; {} after an unanswered attempt), \
             refused {} (stored {}), unanswered {} (stored {}), lost {}, doubled {}",
            self.checked,
            self.resolved_doubts,
            self.refused,
            self.refused_stored.len(),
            self.in_doubt,
            self.in_doubt_stored,
            self.lost.len(),
            self.doubled.len()
        )
    }
}

/// Usage records per idempotency key of `agreement` in a SQLite database.
pub fn sqlite_counts(database: &Path, agreement: &str) -> BTreeMap<String, u64> {
    let conn =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut statement = conn
        .prepare(
            "SELECT coalesce(idempotency_key, ''), count(*) FROM usage_records
             WHERE agreement_id = ?1 GROUP BY 1",
        )
        .unwrap();
    statement
        .query_map([agreement], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
