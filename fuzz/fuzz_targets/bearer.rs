//! Fuzz target `bearer`: the body is `kinde_meter_fuzz_targets::bearer::bearer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinde_meter_fuzz_targets::bearer::bearer(data));
