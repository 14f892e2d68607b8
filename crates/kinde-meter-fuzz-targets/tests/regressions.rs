//! One named test per crash a fuzz target found; each input is kept in
//! `fuzz/regressions/<target>/` (replayed by `tests/corpus.rs` and by every
//! fuzzing run too).

use std::sync::Arc;
use std::time::Duration;

use kinde_meter_core::request::{ParseError, UsageRecord};
use kinde_meter_fuzz_targets::{bearer, now, spool, usage_record};
use kinde_meter_server::auth::{KeySet, Verifier, VerifierConfig};
use kinde_sdk::fuzzing::replay_for_fuzzing;

/// Replays a `spool` input in sealed mode (its first byte is odd) and returns
/// the SDK's answer.
fn replay_sealed(input: &[u8]) -> Result<u64, String> {
    assert_eq!(input[0] % 2, 1, "a sealed-mode input");
    replay_for_fuzzing(&spool::seal(&input[1..]), Duration::from_secs(10))
        .map(|replayed| replayed.undelivered)
}

/// Two spool records whose counts of values add up past `u64::MAX` panicked
/// (`attempt to add with overflow` in `Pending::add`); such a spool is now
/// refused as corrupt.
#[test]
fn spool_record_counts_past_u64_are_refused() {
    let input = include_bytes!("../../../fuzz/regressions/spool/record-counts-past-u64");
    spool::spool(input);
    let error = replay_sealed(input).expect_err("refused");
    assert!(
        error.contains("line 3") && error.contains("64-bit"),
        "{error}"
    );
}

/// A unit with id `u64::MAX` panicked computing the next id; refused now.
#[test]
fn spool_unit_id_at_u64_max_is_refused() {
    let input = include_bytes!("../../../fuzz/regressions/spool/unit-id-u64-max");
    spool::spool(input);
    let error = replay_sealed(input).expect_err("refused");
    assert!(error.contains("unit id out of range"), "{error}");
}

/// Units whose counts add up past `u64::MAX` would panic summing what is
/// undelivered (the reporter's stats, the worker); refused now.
#[test]
fn spool_unit_counts_past_u64_are_refused() {
    let input = include_bytes!("../../../fuzz/regressions/spool/unit-counts-past-u64");
    spool::spool(input);
    assert!(replay_sealed(input).is_err());
}

/// A signed token whose `gty` claim (which the server does not read) holds
/// invalid UTF-8 is accepted: serde_json does not check the UTF-8 of strings it
/// skips, in jsonwebtoken's claims nor ours. Only the issuer's key can sign
/// one, and every claim the server reads is checked, so it stays accepted; the
/// target's check of an accepted token had assumed valid UTF-8 throughout.
#[test]
fn bearer_accepts_invalid_utf8_in_a_claim_it_does_not_read() {
    let input = include_bytes!("../../../fuzz/regressions/bearer/invalid-utf8-in-unread-claim");
    bearer::bearer(input);
    let (header, claims) =
        input[1..].split_at(input.iter().position(|&b| b == b'\n').expect("two lines") - 1);
    assert!(std::str::from_utf8(claims).is_err());
    let token = bearer::sign(header, &claims[1..]);
    let verifier = Verifier::new(
        VerifierConfig::new(bearer::ISSUER, vec![bearer::AUDIENCE.to_owned()]),
        Arc::new(KeySet::from_signing_keys(&[bearer::signing_key()])),
    );
    let principal = verifier
        .verify(&token, now().as_second())
        .expect("accepted");
    assert_eq!(principal.client_id, "client_1");
}

/// A body whose first key is serde_json's private `RawValue` key: `Value`
/// (with the `raw_value` feature this workspace turns on) refused it as not
/// JSON while the record parser, rightly, read a JSON object missing its
/// fields. Every body is now decoded with `kinde_meter_wire::json`, which
/// reads that key as any other.
#[test]
fn usage_record_a_raw_value_key_is_an_ordinary_key() {
    refused_for_its_fields(include_bytes!(
        "../../../fuzz/regressions/usage_record/serde-json-raw-value-key"
    ));
}

/// The same key in an object inside an array: the record parser skipped the
/// elements of a body that is not an object as `Value`s, which refused it as
/// not JSON, while the oracle (every key ordinary) read an array. Skipped
/// values are now `kinde_meter_wire::json::Skip`: checked, nothing built.
#[test]
fn usage_record_a_raw_value_key_in_a_skipped_value_is_an_ordinary_key() {
    refused_for_its_fields(include_bytes!(
        "../../../fuzz/regressions/usage_record/raw-value-key-in-an-array"
    ));
}

/// Runs a `usage_record` input through its target, and checks that the
/// record parser refuses it for its fields (it is JSON), not as JSON.
fn refused_for_its_fields(input: &[u8]) {
    usage_record::usage_record(input);
    let refused = UsageRecord::from_json_slice(input, now()).expect_err("refused");
    assert!(matches!(refused, ParseError::Fields(_)), "{refused:?}");
}
