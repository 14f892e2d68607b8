//! Building the application: data directory, store, catalog, keys, router,
//! listener; and running it until a shutdown signal, then draining.

use std::{
    fs::File,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use kinde_meter_core::catalog::Catalog;
use kinde_meter_store::{Store, StoreConfig, sqlite::SqliteStore};
use tokio::net::TcpListener;

use crate::auth::{IssuerIdentity, SigningKey, Verifier, VerifierConfig, jwks};
use crate::clock::Clock;
use crate::routes;
use crate::state::AppState;

/// Everything `kinde-meter serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The server's public URL, its token issuer identity; default `http://<bound address>`.
    pub public_url: Option<String>,
    /// The data directory (SQLite database, signing key, issuer identity).
    pub data_dir: PathBuf,
    /// The plan catalog, loaded into the store at start.
    pub catalog: Catalog,
    /// Audiences accepted besides `<public URL>/api`.
    pub extra_audiences: Vec<String>,
    /// Store tuning.
    pub store: StoreConfig,
    /// Billing time.
    pub clock: Clock,
}

impl ServerConfig {
    /// The embedded default: SQLite in `data_dir`, demo catalog, system clock.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen,
            public_url: None,
            data_dir: data_dir.into(),
            catalog: Catalog::demo(),
            extra_audiences: Vec::new(),
            store: StoreConfig::default(),
            clock: Clock::System,
        }
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    identity: IssuerIdentity,
    signing_key: Arc<SigningKey>,
    _lock: DataDirLock,
}

impl Application {
    /// Claims the data directory, opens the store, loads the catalog and the
    /// signing key, and binds the listener.
    pub async fn build(config: ServerConfig) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let identity = IssuerIdentity::new(public_url);

        let data_dir = config.data_dir.clone();
        let store_config = config.store.clone();
        let (store, signing_key) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let key =
                SigningKey::load_or_create(&data_dir).context("cannot load the signing key")?;
            let store = SqliteStore::open(&data_dir, store_config)
                .context("cannot open the SQLite store")?;
            Ok((store, key))
        })
        .await??;
        identity
            .save(&config.data_dir)
            .context("cannot save the issuer identity")?;
        store
            .load_catalog(&config.catalog)
            .await
            .context("cannot load the catalog into the store")?;

        let signing_key = Arc::new(signing_key);
        let mut audiences = vec![identity.audience()];
        audiences.extend(config.extra_audiences.iter().cloned());
        let verifier = Verifier::built_in(
            VerifierConfig::new(identity.issuer(), audiences),
            &signing_key,
        );
        let state = AppState {
            store: Arc::new(store),
            verifier: Arc::new(verifier),
            jwks: Arc::new(jwks(&[&signing_key])),
            clock: config.clock.clone(),
        };
        Ok(Application {
            listener,
            state,
            identity,
            signing_key,
            _lock: lock,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The issuer identity (public URL) tokens must carry.
    pub fn identity(&self) -> &IssuerIdentity {
        &self.identity
    }

    /// The built-in issuer's signing key.
    pub fn signing_key(&self) -> &Arc<SigningKey> {
        &self.signing_key
    }

    /// The store, for tools and tests that look behind the API.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting connections,
    /// answers every accepted request, commits what is queued, and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        let app = routes::router(self.state);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        // Every handler has had its answer by now; flush what may remain queued.
        store.shutdown().await;
        served.context("the HTTP server failed")?;
        Ok(())
    }
}

/// An exclusive lock on the data directory held by a serving process, so that a
/// second `serve` on the same directory is refused (offline CLI commands do not
/// take it; SQLite's own locking keeps them safe).
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = data_dir.join("serve.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another kinde-meter server is already serving the data directory {}; stop it or use another --data-dir",
                data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}
