//! Helpers of the SQLite-only store tests, on top of the shared ones.

use std::{path::Path, time::Duration};

use kinde_meter_store::{Store, StoreConfig, sqlite::SqliteStore};

pub use crate::common::*;

/// Opens a store in `dir` with `config` and loads the test catalog.
pub async fn open_with(dir: &Path, config: StoreConfig) -> SqliteStore {
    let store = SqliteStore::open(dir, config).unwrap();
    store.load_catalog(&catalog()).await.unwrap();
    store
}

pub async fn open(dir: &Path) -> SqliteStore {
    open_with(dir, StoreConfig::default()).await
}

/// A second connection to the store's database, holding SQLite's write lock until
/// `ROLLBACK`: it stands for another process writing, and holds the writer
/// still so that jobs pile up in its queue.
pub fn lock_database(store: &SqliteStore) -> rusqlite::Connection {
    let conn = raw(store);
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

/// A plain connection to the store's database.
pub fn raw(store: &SqliteStore) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.database_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}
