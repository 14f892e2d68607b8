//! Fuzz target `catalog`: the body is `kinde_meter_fuzz_targets::catalog::catalog`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinde_meter_fuzz_targets::catalog::catalog(data));
