//! The `kinde-meter` command, end to end: `serve` and the commands around it
//! against a child server, `clients`, `record`/`usage --server` against a
//! server in this process, and the binary on PostgreSQL. One test binary, one
//! module per topic, with `support` for what they share.

mod support;

mod bench;
mod clients;
mod credentials;
mod entitlements;
mod export;
mod import;
mod logs;
mod postgres;
mod record;
mod serve;
mod webhooks;
