//! Opening a store: where it is ([`StoreLocation`], which also picks the
//! backend) and the one function that opens it ([`open`]). A backend left out of
//! the build (cargo features `sqlite`, `postgres`) answers
//! [`OpenError::NotCompiled`].

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{Store, StoreConfig, StoreError};

/// Where a store is, and so which backend keeps it.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// SQLite: one database file in a data directory.
    Sqlite {
        /// The data directory.
        data_dir: PathBuf,
        /// Whether to create the directory and database when absent; `false`
        /// answers [`OpenError::NoDatabase`] instead (an offline command should
        /// not make an empty store by mistake).
        create: bool,
    },
    /// PostgreSQL: a database several servers may share.
    Postgres {
        /// `postgres://user@host:port/database`.
        url: String,
        /// How to use it.
        settings: PgSettings,
    },
}

impl StoreLocation {
    /// The backend's name, for messages.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreLocation::Sqlite { .. } => "SQLite",
            StoreLocation::Postgres { .. } => "PostgreSQL",
        }
    }
}

/// How to use a PostgreSQL database, beyond its URL.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// The schema to keep kinde-meter's tables in (created by the migrations);
    /// `None`: the connection's default (`public`, or what the URL's `options`
    /// set). Lowercase letters, digits and `_`.
    pub schema: Option<String>,
    /// Most connections this server holds (the writer uses one at a time; the
    /// rest serve reads, agreements and clients).
    pub pool_size: usize,
    /// Connecting gives up after this, unless the URL's `connect_timeout` says
    /// otherwise.
    pub connect_timeout: Duration,
    /// Longest a store operation may take, waiting for a connection included;
    /// also every session's `statement_timeout`. A write is answered within it
    /// (503 when the database does not commit in time; `docs/limits.md` asks
    /// for 5 s).
    pub operation_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            schema: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(4),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory holds no database and [`StoreLocation::Sqlite`]'s
    /// `create` was `false`.
    #[error("{} holds no kinde-meter database", data_dir.display())]
    NoDatabase {
        /// The directory.
        data_dir: PathBuf,
    },
    /// This build left the backend out.
    #[error("this build of kinde-meter has no {backend} support (cargo feature `{feature}`)")]
    NotCompiled {
        /// The backend's name.
        backend: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The backend failed to open (unreachable, unwritable, migration failed).
    #[error("cannot open the {backend} store")]
    Store {
        /// The backend's name.
        backend: &'static str,
        /// What failed.
        #[source]
        source: StoreError,
    },
}

/// Opens the store at `location`: creates or migrates its schema, and starts
/// its writer on the current tokio runtime. Safe while other processes (a
/// server, the CLI) have the same store open.
pub async fn open(
    location: &StoreLocation,
    config: StoreConfig,
) -> Result<Arc<dyn Store>, OpenError> {
    let backend = location.backend();
    let failed = |source| OpenError::Store { backend, source };
    match location {
        #[cfg(feature = "sqlite")]
        StoreLocation::Sqlite { data_dir, create } => {
            if !create && !data_dir.join(crate::sqlite::DATABASE_FILE).exists() {
                return Err(OpenError::NoDatabase {
                    data_dir: data_dir.clone(),
                });
            }
            let dir = data_dir.clone();
            let opened =
                tokio::task::spawn_blocking(move || crate::sqlite::SqliteStore::open(&dir, config))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            Ok(Arc::new(opened.map_err(failed)?))
        }
        #[cfg(feature = "postgres")]
        StoreLocation::Postgres { url, settings } => {
            let store = crate::postgres::PgStore::connect(url, settings.clone(), config)
                .await
                .map_err(failed)?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        _ => {
            let _ = (failed, config);
            Err(OpenError::NotCompiled {
                backend,
                feature: match location {
                    StoreLocation::Sqlite { .. } => "sqlite",
                    StoreLocation::Postgres { .. } => "postgres",
                },
            })
        }
    }
}
