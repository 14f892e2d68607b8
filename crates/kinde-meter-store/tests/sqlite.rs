//! The SQLite store's own behaviour against real database files in temporary
//! directories: its writer (bounded queue, group commit, failed commits) and
//! its migrations. The contract every backend meets is in `contract.rs`.
//!
//! No test waits by sleeping: where a test needs jobs to pile up in the writer's
//! queue, it holds SQLite's write lock from a second connection (as another
//! process would) and watches the writer's counters.

mod common;

#[path = "sqlite/common.rs"]
mod sqlite_common;

#[path = "sqlite/clients.rs"]
mod clients;
#[path = "sqlite/writer.rs"]
mod writer;
