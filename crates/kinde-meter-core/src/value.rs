//! Exact meter values and usage totals (docs/api.md, `meter_value`).
//!
//! Fixed-point numbers with nine fractional digits in a `u128` count of 10⁻⁹
//! units. They are defined in `kinde-meter-wire`, so that the server and the SDK
//! parse and print a `meter_value` with one implementation; re-exported here for
//! the domain code that adds them up.

pub use kinde_meter_wire::{InvalidMeterValue, MeterValue, OutOfRange, SCALE_DIGITS, UsageTotal};
