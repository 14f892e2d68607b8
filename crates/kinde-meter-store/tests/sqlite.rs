//! The SQLite store against real database files in temporary directories.
//!
//! No test waits by sleeping: where a test needs jobs to pile up in the writer's
//! queue, it holds SQLite's write lock from a second connection (as another
//! process would) and watches the writer's counters.

#[path = "sqlite/common.rs"]
mod common;

#[path = "sqlite/agreements.rs"]
mod agreements;
#[path = "sqlite/clients.rs"]
mod clients;
#[path = "sqlite/durability.rs"]
mod durability;
#[path = "sqlite/idempotency.rs"]
mod idempotency;
#[path = "sqlite/usage.rs"]
mod usage;
#[path = "sqlite/writer.rs"]
mod writer;
