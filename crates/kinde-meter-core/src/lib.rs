//! The pure domain core of kinde-meter.
//!
//! Everything here is computation on values, with no I/O and no clock: the caller
//! passes "now" in. Request fields become the types of this crate at the HTTP edge
//! ([`request`]), and everything past the edge holds them, never re-checking:
//!
//! - [`value`]: exact fixed-point meter values and usage totals (from `kinde-meter-wire`),
//! - [`timestamp`]: usage timestamps as Kinde's clients write them,
//! - [`ids`]: agreement ids, feature, plan and customer codes,
//! - [`period`]: billing intervals and periods with month-end clamping (`docs/billing.md`),
//! - [`assignment`]: which period a record counts in, and at what effective time,
//! - [`aggregate`]: the ordered delta/absolute rule, maintained incrementally,
//! - [`catalog`]: plans and features from the TOML catalog (`docs/catalog.md`),
//! - [`agreement`]: an agreement's state and current period,
//! - [`export`]: the usage export's periods, amounts and CSV/NDJSON rows,
//! - [`idempotency`]: idempotency keys and request fingerprints,
//! - [`request`]: parsing `CreateMeterUsageRecordRequest` JSON into a [`request::UsageRecord`],
//! - [`webhook`]: billing webhook events, their ids, data, claims and retry schedule.

pub mod aggregate;
pub mod agreement;
pub mod assignment;
pub mod catalog;
pub mod entitlement;
pub mod export;
pub mod idempotency;
pub mod ids;
pub mod period;
pub mod request;
pub mod timestamp;
pub mod value;
pub mod webhook;

pub use kinde_meter_wire::ErrorCode;
