//! The SQLite store's own behaviour against real database files in temporary
//! directories: its migrations and its filing of the records' period order.
//! The contract every backend meets (the writer's included) is in `contract.rs`.

mod common;

#[path = "sqlite/migrations.rs"]
mod migrations;
#[path = "sqlite/record_order.rs"]
mod record_order;
