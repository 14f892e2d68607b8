//! Fault and overload harnesses against the real `kinde-meter` binary, each
//! server a child process (its memory is measured, it is killed with SIGKILL,
//! its disk fills up): overload far beyond the sustainable rate, a full disk
//! under SQLite, PostgreSQL refusing writes, and servers (on PostgreSQL and on
//! SQLite) killed under load. Every one ends with the same check: each
//! idempotency key the server acknowledged is stored exactly once, and none it
//! refused is stored.
//!
//! They take tens of seconds to minutes, load the machine, and some need root
//! or PostgreSQL, so they run only when `KINDE_METER_FAULTS=1` (CI's short
//! versions, and `tests/faults/run.sh` with its options for the long ones;
//! docs/testing.md). The settings are in [`settings`].

#[path = "../cli/support.rs"]
mod support;

mod ledger;
mod load;
mod pg;
mod probe;
mod settings;

mod crash;
mod disk_full;
mod overload;
mod pg_read_only;
