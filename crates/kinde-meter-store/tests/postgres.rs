//! The PostgreSQL store's own behaviour: several stores (standing for several
//! servers) on one schema, its writer, its reads and its migrations. Each test runs in a
//! scratch schema of its own on the server named by
//! `KINDE_METER_TEST_DATABASE_URL`, and is skipped when that is unset. The
//! contract every backend meets is in `contract.rs`.

#[macro_use]
mod common;

#[path = "postgres/concurrency.rs"]
mod concurrency;
#[path = "postgres/migrations.rs"]
mod migrations;
#[path = "postgres/one_flight.rs"]
mod one_flight;
#[path = "postgres/reads.rs"]
mod reads;
#[path = "postgres/throughput.rs"]
mod throughput;
#[path = "postgres/webhooks.rs"]
mod webhooks;
#[path = "postgres/writer.rs"]
mod writer;
