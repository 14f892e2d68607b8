//! Exact decimal arithmetic on Kinde's `meter_value` strings, for coalescing
//! deltas in the [`UsageReporter`](crate::UsageReporter).
//!
//! It is `kinde-meter-wire`'s [`MeterValue`](kinde_meter_wire::MeterValue), the
//! parser the server uses too: 1 to 18 digits, optionally `.` and 1 to 9
//! digits, held as a count of 10⁻⁹ units, so addition is exact; a sum that would
//! no longer fit the wire format is refused, never rounded. It is written to the
//! spool as its canonical string.

pub(crate) use kinde_meter_wire::MeterValue as Decimal;
