//! Billing webhooks end to end (`docs/webhooks.md`): real servers delivering
//! to receivers on 127.0.0.1 (so they run with private networks allowed), on
//! SQLite, or on PostgreSQL with `KINDE_METER_TEST_DATABASE_URL`.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod crash;
mod delivery;
mod postgres;
mod retries;
