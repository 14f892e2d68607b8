//! Opening connections with the settings every kinde-meter connection needs.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

use super::codec;
use crate::StoreError;

/// How long a connection waits for another one's lock before giving up. Another
/// process (the CLI on the same data directory) may hold the write lock briefly;
/// 5 s also bounds how long a write waits before it is answered 503 (`docs/tokens.md`).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements the writer keeps prepared; more than it uses, so none is evicted.
const STATEMENT_CACHE: usize = 64;

/// Opens (creating if needed) the database for writing: WAL so that readers never
/// wait for the writer, `synchronous=FULL` so that a commit survives power loss.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Unavailable(format!("{}: {e}", path.display()));
    let conn = Connection::open(path).map_err(fail)?;
    configure_writer(&conn).map_err(fail)?;
    Ok(conn)
}

fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that the journal-mode switch below waits for a concurrent opener.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(codec::failure(format!(
            "could not switch to WAL mode (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // SQLite's default page cache (2 MB) on purpose. With `cache_size = -65536`
    // (64 MB), random Idempotency-Keys on 400 K stored keys read 9.5 KB a request
    // from the file instead of 16.7, but every commit then scans the page cache's
    // whole hash table (`pcache1TruncateUnsafe`, 24 K instructions a request), and
    // the server's CPU per request rose from 93 to 107-109 us (user 40 -> 58 us),
    // its RSS from 40 to 109 MB (bench/sdk-vs-python/README.md).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Opens an existing database for reading only; `query_only` makes a stray write
/// on a read connection an error rather than a second writer.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}
