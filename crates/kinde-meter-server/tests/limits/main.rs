//! Limits a server puts on its clients (docs/limits.md): per-client and
//! per-address rate limits in memory and shared through Redis, and the
//! transport limits (timeouts, connection slots, TLS). One test binary, one
//! module per topic.
//!
//! Every test starts servers of its own, and each server has its own buckets
//! (or, in Redis, a key prefix of its own), so tests sharing the process do not
//! share limits.

#[path = "../support/mod.rs"]
mod support;

mod keep_alive;
mod rate_limits;
mod rate_limits_redis;
mod transport;
