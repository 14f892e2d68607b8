//! Wire types of Kinde's billing meter usage API.
//!
//! One definition of every JSON body that crosses the wire, shared by the
//! kinde-meter server and by `kinde-sdk`, so the two cannot drift. Field names and
//! types follow Kinde's management API (`CreateMeterUsageRecordRequest`,
//! `ErrorResponse`, `GetBillingAgreementsResponse`, …); the types that Kinde lacks
//! (usage read-back, batch) follow the same conventions.
//!
//! Besides the shapes, the two values both ends must read alike live here: the
//! exact decimal of a `meter_value` ([`MeterValue`], with [`UsageTotal`]) and the
//! [`IdempotencyKey`]. Parsing a whole request into domain values happens in
//! `kinde-meter-core`; the SDK builds these structs from typed values.
//!
//! With the `openapi` feature the types also derive `utoipa::ToSchema`, which the
//! server uses to generate its OpenAPI document; the SDK leaves it off.

mod agreements;
mod browse;
mod decimal;
mod entitlements;
mod error;
mod export;
mod idempotency;
pub mod json;
mod meter_usage;
mod oauth;
mod scope;
mod webhooks;

pub use agreements::*;
pub use browse::*;
pub use decimal::*;
pub use entitlements::*;
pub use error::*;
pub use export::*;
pub use idempotency::*;
pub use meter_usage::*;
pub use oauth::*;
pub use scope::*;
pub use webhooks::*;

/// The `code` of every successful response (`{"message":"Success","code":"OK"}`).
pub const OK_CODE: &str = "OK";
/// The `message` of every successful response.
pub const SUCCESS_MESSAGE: &str = "Success";
