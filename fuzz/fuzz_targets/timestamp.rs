//! Fuzz target `timestamp`: the body is `kinde_meter_fuzz_targets::timestamp::timestamp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinde_meter_fuzz_targets::timestamp::timestamp(data));
