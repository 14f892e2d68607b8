//! A Rust client for Kinde's billing meter usage API.
//!
//! `kinde-sdk` is the Rust counterpart of the official SDKs' `BillingMeterUsageApi`
//! (Python: `kinde_sdk.management.BillingMeterUsageApi`): it records how much of
//! a metered feature a customer used, against real Kinde
//! (`https://<subdomain>.kinde.com`) or a self-hosted kinde-meter server, which
//! speaks the same contract. The JSON bodies are the types of the
//! `kinde-meter-wire` crate, re-exported in [`models`], so client and server
//! share one definition.
//!
//! # Recording usage
//!
//! The Python SDK's example
//!
//! ```python
//! from kinde_sdk.management import BillingMeterUsageApi, ApiClient, Configuration
//! from kinde_sdk.management.models import CreateMeterUsageRecordRequest
//! configuration = Configuration(host="https://your-subdomain.kinde.com", access_token="...")
//! with ApiClient(configuration) as api_client:
//!     api = BillingMeterUsageApi(api_client)
//!     request = CreateMeterUsageRecordRequest(customer_agreement_id="agreement_0195ac80a14c2ca2cec97d026d864de0", billing_feature_code="api_calls", meter_value="150", meter_type_code="delta")
//!     response = api.create_meter_usage_record(request)
//! ```
//!
//! reads in Rust:
//!
//! ```no_run
//! use kinde_sdk::models::{CreateMeterUsageRecordRequest, MeterTypeCode};
//! use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let configuration =
//!         Configuration::new("https://your-subdomain.kinde.com").with_access_token("...");
//!     let api_client = ApiClient::new(configuration)?;
//!     let api = BillingMeterUsageApi::new(api_client);
//!     let request = CreateMeterUsageRecordRequest {
//!         customer_agreement_id: "agreement_0195ac80a14c2ca2cec97d026d864de0".to_owned(),
//!         billing_feature_code: "api_calls".to_owned(),
//!         meter_value: "150".to_owned(),
//!         meter_usage_timestamp: None,
//!         meter_type_code: Some(MeterTypeCode::Delta),
//!     };
//!     let response = api.create_meter_usage_record(request).await?;
//!     println!("{} {}", response.code, response.message); // "OK Success"
//!     Ok(())
//! }
//! ```
//!
//! Python's `with ApiClient(...)` block has no counterpart: the connection pool
//! is released when the last clone of the [`ApiClient`] is dropped. Make one
//! client per host and credentials and share it (clones are cheap).
//!
//! The same call with the fluent builder, which takes typed values — an integer
//! or decimal string for the value, a [`jiff::Timestamp`] or [`jiff::Zoned`] for
//! the time, written as RFC 3339 with an offset:
//!
//! ```no_run
//! # use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration};
//! use kinde_sdk::models::MeterTypeCode;
//!
//! # async fn example(api: BillingMeterUsageApi) -> Result<(), Box<dyn std::error::Error>> {
//! api.create_meter_usage_record_builder()
//!     .customer_agreement_id("agreement_0195ac80a14c2ca2cec97d026d864de0")
//!     .billing_feature_code("api_calls")
//!     .meter_value(150)
//!     .meter_usage_timestamp(jiff::Zoned::now())
//!     .meter_type_code(MeterTypeCode::Delta)
//!     .send()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Configuration::from_env`] reads the host from `KINDE_HOST` (or
//! `KINDE_DOMAIN`) and the token from `KINDE_ACCESS_TOKEN`; `examples/record_usage.rs`
//! records one value that way.
//!
//! # Errors
//!
//! Each operation returns its own error enum ([`CreateMeterUsageRecordError`],
//! [`GetMeterUsageError`], …) with the same shape: one variant per documented
//! status carrying Kinde's parsed [`ErrorResponse`](models::ErrorResponse)
//! (`BadRequest`, `Forbidden`, `PayloadTooLarge`, `TooManyRequests`,
//! `ServiceUnavailable`), `Unexpected` for any other status, `Transport` for
//! connection failures and timeouts, `Decode` for a success body that did not
//! parse, and `InvalidInput` for a request the SDK refused to send. The
//! [`error`] module lists them. Every error answers
//!
//! - `code()`: the first error code, e.g. `"AGREEMENT_NOT_FOUND"` (compare with
//!   [`ErrorCode::AgreementNotFound.as_str()`](models::ErrorCode::as_str); real
//!   Kinde may send codes of its own),
//! - `message()`: the first message,
//! - `retry_after()`: the delay a 429 or 503 asked for (`RateLimit-Reset` or
//!   `Retry-After`, whole seconds),
//! - `is_retryable()`: whether the same request may succeed later and cannot be
//!   applied twice.
//!
//! ```no_run
//! use kinde_sdk::models::ErrorCode;
//! use kinde_sdk::{BillingMeterUsageApi, CreateMeterUsageRecordError};
//!
//! # async fn example(api: BillingMeterUsageApi) -> Result<(), CreateMeterUsageRecordError> {
//! let result = api
//!     .create_meter_usage_record_builder()
//!     .customer_agreement_id("agreement_0195ac80a14c2ca2cec97d026d864de0")
//!     .billing_feature_code("api_calls")
//!     .meter_value("1.5")
//!     .send()
//!     .await;
//! match result {
//!     Ok(_) => {}
//!     Err(error) if error.code() == Some(ErrorCode::AgreementNotActive.as_str()) => {
//!         // The customer changed plans: look up their current agreement.
//!     }
//!     Err(CreateMeterUsageRecordError::BadRequest(body)) => {
//!         for problem in &body.errors {
//!             eprintln!("{}: {}", problem.code, problem.message);
//!         }
//!     }
//!     Err(CreateMeterUsageRecordError::TooManyRequests { retry_after, .. }) => {
//!         eprintln!("rate limited, try again in {retry_after:?}");
//!     }
//!     Err(error) => return Err(error),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Idempotency
//!
//! A usage write that timed out may or may not have been stored; sending it
//! again must not count it twice. So every usage write
//! ([`create_meter_usage_record`](BillingMeterUsageApi::create_meter_usage_record)
//! and the batch) carries an `Idempotency-Key` header: yours, set with the
//! builder's `idempotency_key(..)`, or a random 128-bit hex key generated once
//! per call. The server answers a repeat of the same key and body with the
//! original response and stores nothing new; the same key with a different body
//! is refused (`IDEMPOTENCY_KEY_REUSED`).
//!
//! A retry must therefore reuse the key of the first attempt, and send the same
//! record (a timestamp taken inside the retry loop would change the body). This
//! version does not retry by itself; a retry loop looks like this:
//!
//! ```no_run
//! use std::time::Duration;
//! use kinde_sdk::{BillingMeterUsageApi, CreateMeterUsageRecordError, IdempotencyKey};
//!
//! # async fn example(api: BillingMeterUsageApi) -> Result<(), CreateMeterUsageRecordError> {
//! let key = IdempotencyKey::generate(); // once per logical call
//! let at = jiff::Timestamp::now(); // once too: it is part of the body
//! for attempt in 0u32.. {
//!     let result = api
//!         .create_meter_usage_record_builder()
//!         .customer_agreement_id("agreement_0195ac80a14c2ca2cec97d026d864de0")
//!         .billing_feature_code("api_calls")
//!         .meter_value(1)
//!         .meter_usage_timestamp(at)
//!         .idempotency_key(key.clone())
//!         .send()
//!         .await;
//!     match result {
//!         Err(error) if error.is_retryable() && attempt < 4 => {
//!             let backoff = Duration::from_millis(200 * 2u64.pow(attempt));
//!             tokio::time::sleep(error.retry_after().unwrap_or(backoff)).await;
//!         }
//!         other => return other.map(drop),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Choose your own key when the usage event has a stable identity (an order or
//! message id): then even a retry from another process, after a crash, counts
//! once — within the server's retention window (24 hours by default).
//!
//! # Beyond Kinde
//!
//! kinde-meter serves two endpoints real Kinde lacks, available here as
//! [`BillingMeterUsageApi::create_meter_usage_records_batch`] (up to 100 records
//! in one request) and [`BillingMeterUsageApi::get_meter_usage`] (the usage of
//! each metered feature in a billing period). Against real Kinde they fail with
//! `Unexpected` (404).

#![deny(missing_docs)]

mod apis;
mod client;
mod configuration;
pub mod error;
mod idempotency;
pub mod models;

pub use apis::agreements::{BillingAgreementsApi, GetBillingAgreementsParams};
pub use apis::meter_usage::{
    BillingMeterUsageApi, CreateMeterUsageRecordBuilder, CreateMeterUsageRecordsBatchBuilder,
};
pub use client::{ApiClient, KINDE_SDK_HEADER_VALUE, USER_AGENT};
pub use configuration::{Auth, Configuration, ConfigurationError};
pub use error::{
    CreateBillingAgreementError, CreateMeterUsageRecordError, CreateMeterUsageRecordsBatchError,
    GetBillingAgreementsError, GetMeterUsageError,
};
pub use idempotency::{IdempotencyKey, InvalidIdempotencyKey};
/// The HTTP client crate the SDK is built on, re-exported so that
/// [`reqwest::Error`] (in `Transport` errors) and [`reqwest::StatusCode`] can be
/// named without depending on a matching version.
pub use reqwest;
