//! Fuzz target `usage_record`: the body is `kinde_meter_fuzz_targets::usage_record::usage_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| kinde_meter_fuzz_targets::usage_record::usage_record(data)
);
