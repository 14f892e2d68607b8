//! The SDK against a canned local HTTP server: what goes on the wire, and how
//! each answer is read. No kinde-meter server is needed.

mod agreements;
mod entitlements;
mod errors;
mod meter_usage;
mod reporter;
mod retries;
mod support;
mod tokens;
mod webhooks;
