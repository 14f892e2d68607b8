//! Fuzz target `spool`: the body is `kinde_meter_fuzz_targets::spool::spool`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinde_meter_fuzz_targets::spool::spool(data));
