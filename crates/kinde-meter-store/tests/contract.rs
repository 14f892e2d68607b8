//! The store contract, run against every backend: SQLite in a temporary
//! directory and PostgreSQL in a scratch schema of its own (when
//! `KINDE_METER_TEST_DATABASE_URL` names a server; skipped otherwise). Each
//! test is an `async fn(Backend)`; `contract_tests!` makes it two tests,
//! `on_sqlite::NAME` and `on_postgres::NAME`.

#[macro_use]
mod common;

#[path = "contract/agreements.rs"]
mod agreements;
#[path = "contract/browse.rs"]
mod browse;
#[path = "contract/changes.rs"]
mod changes;
#[path = "contract/clients.rs"]
mod clients;
#[path = "contract/durability.rs"]
mod durability;
#[path = "contract/entitlements.rs"]
mod entitlements;
#[path = "contract/export.rs"]
mod export;
#[path = "contract/hard_limits.rs"]
mod hard_limits;
#[path = "contract/idempotency.rs"]
mod idempotency;
#[path = "contract/usage.rs"]
mod usage;
#[path = "contract/webhooks.rs"]
mod webhooks;
#[path = "contract/writer.rs"]
mod writer;
