//! Throwaway schemas on a shared PostgreSQL server, for tests: each
//! [`ScratchSchema`] is a fresh, empty schema of its own (so tests run in
//! parallel without seeing each other), dropped with everything in it when the
//! guard is dropped.
//!
//! Names are `kmt_<process id>_<random>`. A process that dies without dropping
//! its guards leaves its schemas behind; the first guard a later process
//! creates drops those of processes that no longer run.

use std::sync::OnceLock;

use tokio_postgres::NoTls;

use super::PgSettings;
use crate::StoreError;

/// Prefix of scratch schema names.
const PREFIX: &str = "kmt_";

/// A fresh schema, dropped (CASCADE) when this is dropped.
#[derive(Debug)]
pub struct ScratchSchema {
    url: String,
    name: String,
}

impl ScratchSchema {
    /// Creates a new empty schema on the server at `url`.
    pub async fn create(url: &str) -> Result<ScratchSchema, StoreError> {
        let client = connect(url).await?;
        static SWEPT: OnceLock<()> = OnceLock::new();
        if SWEPT.set(()).is_ok() {
            sweep(&client).await;
        }
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        );
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .map_err(|e| fail("creating a scratch schema", e))?;
        Ok(ScratchSchema {
            url: url.to_owned(),
            name,
        })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Store settings for this schema: a small pool (many tests share one
    /// server's connection limit) and a patient operation timeout (a test
    /// machine shared with other builds is slow at times); tests of timeouts
    /// set their own.
    pub fn settings(&self) -> PgSettings {
        PgSettings {
            schema: Some(self.name.clone()),
            pool_size: 4,
            operation_timeout: std::time::Duration::from_secs(15),
            ..PgSettings::default()
        }
    }

    /// A plain connection with this schema as its `search_path`, for tests that
    /// look behind the store.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let client = connect(&self.url).await?;
        client
            .batch_execute(&format!("SET search_path = {}", self.name))
            .await
            .map_err(|e| fail("setting the search path", e))?;
        Ok(client)
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), std::mem::take(&mut self.name));
        // Drop may run inside an async runtime, which cannot be blocked on:
        // a thread of its own with a runtime of its own does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = connect(&url).await?;
                drop_schema(&client, &name).await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop scratch schema: {e}"),
            Err(_) => eprintln!("could not drop scratch schema: the thread panicked"),
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| fail("connecting", e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Drops a schema, giving up rather than waiting long for locks (a server
/// still running on it mid-transaction).
async fn drop_schema(client: &tokio_postgres::Client, name: &str) -> Result<(), DropError> {
    if !super::valid_schema_name(name) || !name.starts_with(PREFIX) {
        return Err(DropError::NotScratch(name.to_owned()));
    }
    client
        .batch_execute(&format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
        ))
        .await?;
    Ok(())
}

/// Why a scratch schema was not dropped.
#[derive(Debug, thiserror::Error)]
enum DropError {
    #[error("refusing to drop {0:?}: not a scratch schema")]
    NotScratch(String),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no runtime to drop it on: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Drops the scratch schemas of processes that no longer run.
async fn sweep(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or_default();
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive && let Err(e) = drop_schema(client, &name).await {
            eprintln!("could not drop stale scratch schema {name}: {e}");
        }
    }
}

fn fail(what: &str, e: tokio_postgres::Error) -> StoreError {
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned());
    StoreError::Unavailable(format!("{what}: {detail}"))
}
