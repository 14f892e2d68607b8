//! The HTTP API as a client sees it: the usage wire contract and its errors,
//! billing periods and the delta/absolute rule, idempotency, agreements, the
//! OpenAPI document and request ids, entitlements and hard limits. One test
//! binary; each module is one part of the contract (docs/api.md). New API tests
//! go here as another module.

#[path = "../support/mod.rs"]
mod support;

mod agreements;
mod billing_semantics;
mod browse;
mod entitlements;
mod export;
mod hot_reads;
mod idempotency;
mod meter_usage;
mod openapi;
mod request_id;
mod webhooks;
