//! The storage a test server runs on. Unset `KINDE_METER_TEST_DATABASE_URL`:
//! SQLite in the test's data directory, as always. Set it to a PostgreSQL
//! server (`postgres://postgres@127.0.0.1:5432/test`) and every server the
//! harness starts uses PostgreSQL instead, each data directory getting a
//! scratch schema of its own (named in a file inside it, so a server restarted
//! on the directory finds its data again), dropped with the directory. The
//! whole suite thus runs unchanged against either backend.
//!
//! Tests that look behind the API do it through the helpers here, which work
//! on either backend.

use std::{path::Path, sync::Arc};

use kinde_meter_server::ServerConfig;
use kinde_meter_store::{
    Store, StoreConfig,
    postgres::{PgSettings, PgStore, scratch::ScratchSchema},
    sqlite::{DATABASE_FILE, SqliteStore},
};

/// The environment variable that selects PostgreSQL for the suite.
pub const DATABASE_URL_VAR: &str = "KINDE_METER_TEST_DATABASE_URL";

/// The file in a data directory naming its scratch schema.
const SCHEMA_FILE: &str = "test-postgres-schema";

/// The PostgreSQL server the suite runs against, if any.
pub fn database_url() -> Option<String> {
    std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether the suite runs against PostgreSQL.
pub fn on_postgres() -> bool {
    database_url().is_some()
}

/// A temporary data directory a test owns, with the scratch schema that goes
/// with it on PostgreSQL; both are removed when it is dropped.
pub struct TestDir {
    tmp: tempfile::TempDir,
    pub(super) schema: Option<Arc<ScratchSchema>>,
}

impl TestDir {
    /// A fresh directory (its schema is made when a server first starts on it).
    pub fn new() -> TestDir {
        TestDir {
            tmp: tempfile::tempdir().unwrap(),
            schema: None,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

/// The schema of a data directory, if a server ran on it on PostgreSQL.
fn schema_of(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(SCHEMA_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Settings for a test server's schema: a small pool (many tests share the
/// server's connection limit).
fn settings(schema: &str) -> PgSettings {
    PgSettings {
        schema: Some(schema.to_owned()),
        pool_size: 4,
        ..PgSettings::default()
    }
}

/// Points `config` at PostgreSQL when the suite runs on it: the schema of
/// `data_dir`, made now if it has none (returned, to be kept alive as long as
/// the directory). `url` overrides the server's address (a proxy in front of it).
pub async fn configure(
    config: &mut ServerConfig,
    data_dir: &Path,
    url: Option<String>,
) -> Option<Arc<ScratchSchema>> {
    let server = database_url()?;
    let (schema, created) = match schema_of(data_dir) {
        Some(schema) => (schema, None),
        None => {
            let scratch = ScratchSchema::create(&server).await.unwrap();
            std::fs::write(data_dir.join(SCHEMA_FILE), scratch.name()).unwrap();
            (scratch.name().to_owned(), Some(Arc::new(scratch)))
        }
    };
    config.database_url = Some(url.unwrap_or(server));
    config.database = settings(&schema);
    created
}

/// Another store on a test server's data, as the CLI opens it beside a running
/// server: SQLite in the directory, or the directory's PostgreSQL schema.
pub async fn open_store(data_dir: &Path) -> Box<dyn Store> {
    match (database_url(), schema_of(data_dir)) {
        (Some(url), Some(schema)) => Box::new(
            PgStore::connect(&url, settings(&schema), StoreConfig::default())
                .await
                .unwrap(),
        ),
        _ => Box::new(SqliteStore::open(data_dir, StoreConfig::default()).unwrap()),
    }
}

/// A plain connection to the directory's PostgreSQL schema, if it has one.
async fn pg_connection(data_dir: &Path) -> Option<tokio_postgres::Client> {
    let (url, schema) = (database_url()?, schema_of(data_dir)?);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .await
        .unwrap();
    Some(client)
}

fn sqlite_connection(data_dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(data_dir.join(DATABASE_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

/// Runs `sql` (portable SQL, no parameters) on the data behind the server's
/// back; returns the rows changed.
pub async fn execute_sql(data_dir: &Path, sql: &str) -> u64 {
    match pg_connection(data_dir).await {
        Some(pg) => pg.execute(sql, &[]).await.unwrap(),
        None => sqlite_connection(data_dir).execute(sql, []).unwrap() as u64,
    }
}

/// The text in the first column of the first row of `sql` (portable SQL).
pub async fn query_text(data_dir: &Path, sql: &str) -> String {
    match pg_connection(data_dir).await {
        Some(pg) => pg.query_one(sql, &[]).await.unwrap().get(0),
        None => sqlite_connection(data_dir)
            .query_row(sql, [], |r| r.get(0))
            .unwrap(),
    }
}

/// A lock another process holds on the data, that stops every usage write
/// until [`WriteLock::release`]: SQLite's write lock, or on PostgreSQL an
/// exclusive lock on the aggregates table.
pub enum WriteLock {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

/// Takes a [`WriteLock`] on the data of `data_dir`.
pub async fn lock_writes(data_dir: &Path) -> WriteLock {
    match pg_connection(data_dir).await {
        Some(pg) => {
            pg.batch_execute("BEGIN; LOCK TABLE usage_aggregates IN EXCLUSIVE MODE")
                .await
                .unwrap();
            WriteLock::Postgres(pg)
        }
        None => {
            let conn = sqlite_connection(data_dir);
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            WriteLock::Sqlite(conn)
        }
    }
}

impl WriteLock {
    /// Lets writes through again.
    pub async fn release(self) {
        match self {
            WriteLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            WriteLock::Postgres(pg) => pg.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

/// The suite's PostgreSQL URL and the settings of the schema of `data_dir`, if
/// a server ran on it on PostgreSQL.
pub fn database_for(data_dir: &Path) -> Option<(String, PgSettings)> {
    Some((database_url()?, settings(&schema_of(data_dir)?)))
}

/// The address of the suite's PostgreSQL server (for a proxy in front of it).
pub fn database_addr() -> Option<std::net::SocketAddr> {
    let config: tokio_postgres::Config = database_url()?.parse().unwrap();
    let host = match config.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    format!("{host}:{port}").parse().ok()
}

/// The suite's PostgreSQL URL with `addr` (a proxy) in place of the server's.
pub fn database_url_via(addr: std::net::SocketAddr) -> Option<String> {
    let config: tokio_postgres::Config = database_url()?.parse().unwrap();
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or(user);
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    Some(format!("postgres://{user}{password}@{addr}/{dbname}"))
}
