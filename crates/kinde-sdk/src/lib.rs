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
//! `KINDE_DOMAIN`) and a token from `KINDE_ACCESS_TOKEN`, or client credentials
//! (see [Tokens](#tokens)); `examples/record_usage.rs` records one value that
//! way.
//!
//! # Tokens
//!
//! Give the SDK an M2M application's client id and secret instead of a token,
//! and it gets tokens itself, as the official management clients do: it posts
//! `grant_type=client_credentials`, the credentials and the audience
//! `{host}/api` (form-encoded) to `{host}/oauth2/token`, and sends the token
//! until 60 s before it expires (half-way through its life for tokens that live
//! less than two minutes). Then:
//!
//! - **one request per refresh**: however many tasks need a token at the same
//!   time, one token request is sent and they all wait for it — a hundred
//!   concurrent calls on a cold client make one token request;
//! - **a refused token is replaced once**: if the API answers 401 or 403 to a
//!   cached token (a key rotation, a token revoked early), the call drops that
//!   token, fetches a fresh one and is sent once more;
//! - **token failures are typed**: every operation's error has a `Token`
//!   variant holding a [`TokenError`] (`invalid_client` and the like are not
//!   retryable; an unreachable or overloaded token endpoint is).
//!
//! ```no_run
//! use kinde_sdk::{ApiClient, Auth, BillingMeterUsageApi, Configuration};
//!
//! # fn example() -> Result<(), kinde_sdk::ConfigurationError> {
//! // Real Kinde: tokens for https://your-subdomain.kinde.com/api.
//! let kinde = Configuration::new("https://your-subdomain.kinde.com")
//!     .with_client_credentials("m2m_client_id", "m2m_client_secret");
//!
//! // A kinde-meter server reached through another address than its public URL
//! // (`serve --public-url`) needs that URL's audience.
//! let meter = Configuration::new("http://10.0.0.7:8080").with_auth(Auth::ClientCredentials {
//!     client_id: "m2m_client_id".into(),
//!     client_secret: "m2m_client_secret".into(),
//!     audience: Some("https://meter.example.com/api".into()),
//! });
//! let api = BillingMeterUsageApi::new(ApiClient::new(kinde)?);
//! # let _ = (api, meter);
//! # Ok(())
//! # }
//! ```
//!
//! From the environment, [`Configuration::from_env`] reads the names the
//! official SDKs use: `KINDE_MANAGEMENT_CLIENT_ID` and
//! `KINDE_MANAGEMENT_CLIENT_SECRET` (`@kinde/management-api-js`), else
//! `KINDE_CLIENT_ID` and `KINDE_CLIENT_SECRET` (the Python SDK). The cache
//! belongs to the [`ApiClient`]: share one client (clones share it) rather than
//! building one per call.
//!
//! # Errors
//!
//! Each operation returns its own error enum ([`CreateMeterUsageRecordError`],
//! [`GetMeterUsageError`], …) with the same shape: one variant per documented
//! status carrying Kinde's parsed [`ErrorResponse`](models::ErrorResponse)
//! (`BadRequest`, `Forbidden`, `PayloadTooLarge`, `TooManyRequests`,
//! `ServiceUnavailable`), `Unexpected` for any other status, `Transport` for
//! connection failures and timeouts, `Decode` for a success body that did not
//! parse, `InvalidInput` for a request the SDK refused to send, and `Token`
//! when no access token could be obtained from client credentials. The
//! [`error`] module lists them. Errors come after the retries (see
//! [Retries](#retries)). Every error answers
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
//! # Retries
//!
//! Every call is retried by itself, under the [`RetryPolicy`] of its
//! [`Configuration`] (default: at most 5 attempts within 30 s):
//!
//! - a **429** waits for the delay the server gave (`RateLimit-Reset`, else
//!   `Retry-After`) plus a little jitter, and tries again; so does a **503**;
//! - **connection errors, timeouts, 500, 502, 504** back off exponentially with
//!   full jitter (a random wait up to 100 ms, 200 ms, 400 ms, … capped at 5 s) —
//!   for operations that are safe to send twice: reads and usage writes;
//! - **400, 403, 413** are returned at once: the same request would fail again.
//!
//! A call that runs out of attempts or time returns the last error, so
//! `TooManyRequests` still reaches you when the wait would exceed the budget.
//! [`RetryPolicy::none`] turns retries off.
//!
//! ```
//! use std::time::Duration;
//! use kinde_sdk::{Configuration, RetryPolicy};
//!
//! let configuration = Configuration::new("https://your-subdomain.kinde.com")
//!     .with_access_token("eyJhbGciOi...")
//!     .with_timeout(Duration::from_secs(5))
//!     .with_retry_policy(RetryPolicy::default().with_max_elapsed(Duration::from_secs(60)));
//! # let _ = configuration;
//! ```
//!
//! # Idempotency
//!
//! A usage write that timed out may or may not have been stored; sending it
//! again must not count it twice. So every usage write
//! ([`create_meter_usage_record`](BillingMeterUsageApi::create_meter_usage_record)
//! and the batch) carries an `Idempotency-Key` header: yours, set with the
//! builder's `idempotency_key(..)`, or one generated once per call
//! ([`IdempotencyKey::generate`]: the time in milliseconds, then 80 random
//! bits, as 32 hex digits, so that the server's index of keys grows at its end)
//! — and every retry of the call sends the same key and the same body.
//! The server answers a repeat of the same key and body with the original
//! response and stores nothing new; the same key with a different body is
//! refused (`IDEMPOTENCY_KEY_REUSED`).
//!
//! Creating an agreement carries no key and is not idempotent (a second
//! agreement ends the first), so
//! [`create_billing_agreement`](BillingAgreementsApi::create_billing_agreement)
//! is retried only after answers that prove nothing happened — 429, 503 and
//! connections that could not be made — never after a timeout or a lost
//! answer.
//!
//! Choose your own key when the usage event has a stable identity (an order or
//! message id): then even a retry from another process, after a crash, counts
//! once — within the server's retention window (24 hours by default):
//!
//! ```no_run
//! # use kinde_sdk::BillingMeterUsageApi;
//! # async fn example(api: BillingMeterUsageApi) -> Result<(), Box<dyn std::error::Error>> {
//! api.create_meter_usage_record_builder()
//!     .customer_agreement_id("agreement_0195ac80a14c2ca2cec97d026d864de0")
//!     .billing_feature_code("api_calls")
//!     .meter_value(1)
//!     .idempotency_key("order-4711-api-call")
//!     .send()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! kinde-meter honours `Idempotency-Key`. Kinde's API reference does not say
//! that its meter usage endpoint does: against real Kinde, a write retried
//! after a lost answer or a timeout may be counted twice. If that matters more
//! than losing the write, use [`RetryPolicy::none`] there and decide yourself.
//!
//! # UsageReporter
//!
//! [`UsageReporter`] is what to use in a service that records usage as it
//! happens. [`record`](UsageReporter::record) is a synchronous call that
//! touches only a local file; a background task delivers the usage:
//!
//! ```no_run
//! use std::time::Duration;
//! use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration, UsageReporter};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let api = BillingMeterUsageApi::new(ApiClient::new(Configuration::from_env()?)?);
//! let reporter = UsageReporter::with_spool(api, "/var/lib/my-service/usage.spool")
//!     .flush_interval(Duration::from_secs(1))
//!     .start()
//!     .await?; // replays whatever a crashed predecessor left in the spool
//!
//! reporter.record("agreement_0195ac80a14c2ca2cec97d026d864de0", "api_calls", 1)?;
//! reporter.record("agreement_0195ac80a14c2ca2cec97d026d864de0", "api_calls", "0.5")?;
//! reporter.record_absolute("agreement_0195ac80a14c2ca2cec97d026d864de0", "seats", 12)?;
//!
//! let report = reporter.shutdown().await?; // delivers what is pending
//! println!("undelivered: {}", report.undelivered);
//! # Ok(())
//! # }
//! ```
//!
//! What it does:
//!
//! - **Coalescing.** Deltas of the same (agreement, feature) recorded close
//!   together are added up — exactly, in decimal — and sent as one record with
//!   the timestamp of the latest of them; a coalesced delta spans at most the
//!   [`coalesce_window`](UsageReporterBuilder::coalesce_window) (10 s). An
//!   absolute is never merged: the deltas recorded before it are sent before
//!   it, those after it after it.
//! - **Flushing** every [`flush_interval`](UsageReporterBuilder::flush_interval),
//!   as soon as [`flush_threshold`](UsageReporterBuilder::flush_threshold)
//!   values wait, on [`flush`](UsageReporter::flush) and on
//!   [`shutdown`](UsageReporter::shutdown). Single records by default (real
//!   Kinde has no batch route); [`batch(true)`](UsageReporterBuilder::batch)
//!   uses kinde-meter's batch endpoint and falls back to single records on a
//!   404.
//! - **Never losing acknowledged usage.** `record` returns `Ok` only once the
//!   usage's line in the spool is fsynced ([`Durability::Fsync`], the default;
//!   concurrent records share fsyncs) — or written to the operating system,
//!   with [`Durability::Written`], which survives the process being killed but
//!   not a power loss before the next flush. Unsent usage stays in the spool
//!   through outages (delivery backs off up to 30 s between attempts) and
//!   crashes; the next reporter on the spool replays it.
//! - **Never double counting.** Before usage is first sent, the request it
//!   becomes is written to the spool (and fsynced) with the idempotency key it
//!   will always be sent with; a replay after a crash resends the same requests
//!   with the same keys, which the server recognises. An acknowledged request
//!   is removed from the spool (compaction rewrites the file once it grows).
//!   The guarantee needs the server to remember keys at least as long as a
//!   request can wait in the spool (kinde-meter: 24 h).
//! - **No silent loss.** A full spool
//!   ([`max_spool_bytes`](UsageReporterBuilder::max_spool_bytes), 64 MiB) makes
//!   `record` fail with [`RecordError::SpoolFull`]; usage the server refuses
//!   for good (an ended agreement, an unknown feature, a hard entitlement
//!   limit reached: `ENTITLEMENT_LIMIT_EXCEEDED`) is written to
//!   `<spool>.rejected` and passed to
//!   [`on_rejected`](UsageReporterBuilder::on_rejected), never retried.
//!
//! `examples/usage_reporter.rs` runs one.
//!
//! # Entitlements
//!
//! [`BillingEntitlementsApi::get_billing_entitlements`] lists what a
//! customer's active plan entitles them to, with the official SDKs' parameters
//! ([`GetBillingEntitlementsParams`]); on kinde-meter each metered entitlement
//! also says how much of it the customer used this period
//! ([`consumed`](models::Entitlement::consumed),
//! [`remaining`](models::Entitlement::remaining)), exactly.
//! [`BillingEntitlementsApi::check`] asks whether a customer may use some more
//! of a feature now. A feature whose limit the catalog enforces refuses usage
//! beyond it with `ENTITLEMENT_LIMIT_EXCEEDED`
//! ([`is_entitlement_limit_exceeded`](CreateMeterUsageRecordError::is_entitlement_limit_exceeded)).
//!
//! # Webhooks
//!
//! [`WebhooksApi`] subscribes endpoints to events with Kinde's webhooks
//! management API (`create_web_hook`, `get_web_hooks`, `update_web_hook`,
//! `delete_web_hook`, `get_event`, `get_event_types`, as the official SDKs name
//! them). A kinde-meter server sends billing events (`customer.agreement_created`,
//! `customer.plan_changed`, `customer.meter_usage_updated`, …) as Kinde sends its
//! own: a signed JWT per delivery. With the default feature `webhooks`,
//! `kinde_sdk::webhooks::decode` verifies one against the sender's JWKS
//! and returns the typed event, as `decodeWebhook` of `@kinde/webhooks` does for
//! TypeScript.
//!
//! # Beyond Kinde
//!
//! kinde-meter serves three endpoints real Kinde lacks, available here as
//! [`BillingMeterUsageApi::create_meter_usage_records_batch`] (up to 100 records
//! in one request), [`BillingMeterUsageApi::get_meter_usage`] (the usage of
//! each metered feature in a billing period) and
//! [`BillingEntitlementsApi::check`] (the live usage check). Against real Kinde
//! they fail with `Unexpected` (404).

#![deny(missing_docs)]

mod apis;
mod client;
mod configuration;
mod decimal;
pub mod error;
mod idempotency;
pub mod models;
mod reporter;
mod retry;
mod token;
#[cfg(feature = "webhooks")]
pub mod webhooks;

pub use apis::agreements::{BillingAgreementsApi, GetBillingAgreementsParams};
pub use apis::entitlements::{BillingEntitlementsApi, GetBillingEntitlementsParams};
pub use apis::meter_usage::{
    BillingMeterUsageApi, CreateMeterUsageRecordBuilder, CreateMeterUsageRecordsBatchBuilder,
};
pub use apis::webhooks::WebhooksApi;
pub use client::{ApiClient, KINDE_SDK_HEADER_VALUE, USER_AGENT};
pub use configuration::{Auth, Configuration, ConfigurationError};
pub use error::{
    CheckBillingEntitlementError, CreateBillingAgreementError, CreateMeterUsageRecordError,
    CreateMeterUsageRecordsBatchError, CreateWebHookError, DeleteWebHookError,
    ExportMeterUsageError, GetBillingAgreementsError, GetBillingEntitlementsError, GetEventError,
    GetEventTypesError, GetMeterUsageError, GetWebHooksError, UpdateWebHookError,
};
pub use idempotency::{IdempotencyKey, InvalidIdempotencyKey};
pub use reporter::{
    Durability, RecordError, RejectedUsage, ReporterError, ReporterStats, ShutdownReport, Usage,
    UsageReporter, UsageReporterBuilder,
};
/// The HTTP client crate the SDK is built on, re-exported so that
/// [`reqwest::Error`] (in `Transport` errors) and [`reqwest::StatusCode`] can be
/// named without depending on a matching version.
pub use reqwest;
pub use retry::RetryPolicy;
pub use token::TokenError;

/// The crate's README (its crates.io page), whose example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Entry points for the fuzz targets (`fuzz/`, docs/testing.md#fuzzing); not
/// part of the SDK's API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::reporter::{ReplayedSpool, replay_for_fuzzing};
}
