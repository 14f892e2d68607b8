//! The bodies of kinde-meter's fuzz targets (docs/testing.md#fuzzing).
//!
//! Each function takes the fuzzer's bytes and panics when a property of the
//! code under test fails: a panic of its own, or a result that breaks what the
//! code promises (a round trip, a bound, a checksum). `fuzz/fuzz_targets/*.rs`
//! run them under libFuzzer (`cargo fuzz`); `tests/corpus.rs` feeds every
//! committed corpus file through them in the regular `cargo test`, so a crash
//! once found stays a test.

use jiff::Timestamp;

pub mod bearer;
pub mod catalog;
pub mod meter_value;
pub mod spool;
pub mod timestamp;
pub mod usage_record;

/// The time of receipt the targets parse at, fixed so that an input means the
/// same thing in every run: 2025-06-15T15:06:40Z.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).expect("a valid instant")
}

/// A target's body: the fuzzer's bytes in, a panic when a property fails.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus
/// directory `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, Target); 6] = [
    ("usage_record", usage_record::usage_record),
    ("meter_value", meter_value::meter_value),
    ("timestamp", timestamp::timestamp),
    ("catalog", catalog::catalog),
    ("bearer", bearer::bearer),
    ("spool", spool::spool),
];
