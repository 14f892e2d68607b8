//! Running a server: `/metrics`, durability across restarts, and what clients
//! see when storage refuses. One test binary, one module per topic.
//! (`log_redaction` is a binary of its own: it installs a process-global
//! tracing subscriber.)

#[path = "../support/mod.rs"]
mod support;

mod metrics;
mod restart;
mod storage_faults;
