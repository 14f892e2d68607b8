//! The SDK against a canned local HTTP server: what goes on the wire, and how
//! each answer is read. No kinde-meter server is needed.

mod agreements;
mod errors;
mod meter_usage;
mod retries;
mod support;
mod tokens;
