//! Fuzz target `meter_value`: the body is `kinde_meter_fuzz_targets::meter_value::meter_value`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinde_meter_fuzz_targets::meter_value::meter_value(data));
