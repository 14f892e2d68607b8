//! Building the application: data directory, store, catalog, keys, router,
//! listener; and running it until a shutdown signal, then draining.

use std::{
    fs::File,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use std::os::unix::fs::DirBuilderExt;

use anyhow::{Context, bail};
use kinde_meter_core::catalog::Catalog;
use kinde_meter_store::{PgSettings, Store, StoreConfig, WriterStats};
use tokio::net::TcpListener;

use crate::auth::{
    IssuerIdentity, KeySet, RemoteJwks, SigningKey, Verifier, VerifierConfig, check_issuer_url,
};
use crate::clients::{self, RevokedClients, TokenIssuer};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimitConfig, RateLimits, redis::RedisLimitConfig};
use crate::routes;
use crate::state::{AppState, Shared};
use crate::storage;
use crate::transport::{Transport, TransportConfig};
use crate::webhooks::worker::{WebhookSettings, Worker, WorkerContext};

/// Everything `kinde-meter serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The server's public URL, its token issuer identity; default `http://<bound address>`
    /// (`https://` with TLS).
    pub public_url: Option<String>,
    /// The data directory (SQLite database, signing key, issuer identity);
    /// unused with [`database_url`](Self::database_url).
    pub data_dir: PathBuf,
    /// The plan catalog, loaded into the store at start.
    pub catalog: Catalog,
    /// Audiences accepted besides `<public URL>/api`.
    pub extra_audiences: Vec<String>,
    /// Store tuning.
    pub store: StoreConfig,
    /// Billing time.
    pub clock: Clock,
    /// Rate limits per client and, for invalid credentials, per source address.
    pub rate_limits: RateLimitConfig,
    /// Per-client buckets in Redis, shared by every server using it
    /// (`--redis-url`); `None`: in memory, each server limits on its own.
    pub redis: Option<RedisLimitConfig>,
    /// Timeouts, connection limit, TLS.
    pub transport: TransportConfig,
    /// Verify tokens of an external issuer (real Kinde) instead of our own.
    pub external_issuer: Option<ExternalIssuer>,
    /// Lifetime of tokens issued at `/oauth2/token` (`--token-lifetime`).
    pub token_lifetime: jiff::SignedDuration,
    /// How often the server polls the store for revoked M2M clients; their
    /// tokens are refused at most this long (plus a poll) after a revocation.
    pub revocation_refresh: std::time::Duration,
    /// PostgreSQL instead of SQLite (`--database-url postgres://…`): several
    /// servers may share the database, and with it agreements, usage and the
    /// built-in issuer's keys, identity and M2M clients (see [`crate::storage`]).
    pub database_url: Option<String>,
    /// Pool size, timeouts and schema for [`database_url`](Self::database_url).
    pub database: PgSettings,
    /// Webhook deliveries: the private-address rule, timeouts, concurrency.
    pub webhooks: WebhookSettings,
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
            rate_limits: RateLimitConfig::default(),
            redis: None,
            transport: TransportConfig::default(),
            external_issuer: None,
            token_lifetime: clients::DEFAULT_TOKEN_LIFETIME,
            revocation_refresh: clients::DEFAULT_REFRESH_INTERVAL,
            database_url: None,
            database: PgSettings::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    identity: IssuerIdentity,
    signing_key: Arc<SigningKey>,
    transport: Transport,
    revocation_refresh: std::time::Duration,
    /// The webhook delivery worker, started by [`run_until`](Self::run_until).
    webhook_worker: Worker,
    /// SQLite only: servers sharing a database share no directory.
    _lock: Option<DataDirLock>,
}

impl Application {
    /// Claims the data directory (SQLite), opens the store, loads the catalog
    /// and the signing key, and binds the listener.
    pub async fn build(config: ServerConfig) -> anyhow::Result<Application> {
        let lock = match &config.database_url {
            Some(_) => None,
            None => {
                // 0700: the directory holds the signing key, client secret hashes
                // and every customer's usage.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&config.data_dir)
                    .with_context(|| {
                        format!("cannot create data directory {}", config.data_dir.display())
                    })?;
                Some(DataDirLock::acquire(&config.data_dir)?)
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let transport = Transport::new(config.transport.clone())?;
        if transport.scheme() == "http" && !local_addr.ip().is_loopback() {
            tracing::warn!(
                address = %local_addr,
                "SERVING PLAIN HTTP ON A NON-LOOPBACK ADDRESS: bearer tokens and usage cross the network unencrypted; use --tls-cert and --tls-key, or a TLS-terminating proxy in front"
            );
        }
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{local_addr}", transport.scheme()));
        let identity = IssuerIdentity::new(public_url);

        let storage = storage::open(
            config.database_url.as_deref(),
            &config.database,
            &config.data_dir,
            config.store.clone(),
        )
        .await?;
        let store = storage.store.clone();
        storage::record_identity(store.as_ref(), &identity, &config.data_dir).await?;
        store
            .load_catalog(&config.catalog)
            .await
            .context("cannot load the catalog into the store")?;
        let signing_key = storage.keys.signing.clone();
        let (verifier, remote_jwks, served_jwks) = match &config.external_issuer {
            None => {
                let mut audiences = vec![identity.audience()];
                audiences.extend(config.extra_audiences.iter().cloned());
                let verifier = Verifier::new(
                    VerifierConfig::new(identity.issuer(), audiences),
                    Arc::new(storage.keys.key_set()),
                );
                (verifier, None, storage.keys.jwks())
            }
            Some(external) => {
                let (verifier, remote) = external_verifier(external).await?;
                // The issuer's keys are at the issuer; this server's own key
                // (kept as the built-in issuer's would be) signs webhooks only,
                // and receivers fetch it here.
                (verifier, Some(remote), storage.keys.jwks())
            }
        };
        // Known before the first request, so a revoked client is never let in.
        let revoked_clients = Arc::new(RevokedClients::new());
        revoked_clients
            .refresh(store.as_ref())
            .await
            .context("cannot load the revoked clients")?;
        let token_issuer = config.external_issuer.is_none().then(|| {
            Arc::new(TokenIssuer::new(
                signing_key.clone(),
                &identity,
                config.token_lifetime,
            ))
        });
        let limits = RateLimits::start_with(&config.rate_limits, config.redis.as_ref())?;
        if let Some(redis) = &config.redis {
            tracing::info!(key_prefix = %redis.key_prefix, "per-client rate limits shared through Redis");
        }
        let metrics = Arc::new(Metrics::new(Some(store.clone())));
        let webhook_worker = Worker::new(WorkerContext {
            store: store.clone(),
            clock: config.clock.clone(),
            key: signing_key.clone(),
            issuer: identity.issuer(),
            metrics: metrics.clone(),
            settings: config.webhooks.clone(),
        })?;
        let state = AppState::new(Shared {
            store: store.clone(),
            verifier: Arc::new(verifier),
            remote_jwks,
            jwks: Arc::new(served_jwks),
            clock: config.clock.clone(),
            limits,
            token_issuer,
            revoked_clients,
            metrics,
            webhook_endpoints: crate::webhooks::endpoint::EndpointCheck {
                allow_private_networks: config.webhooks.allow_private_networks,
            },
        });
        Ok(Application {
            listener,
            state,
            identity,
            signing_key,
            transport,
            revocation_refresh: config.revocation_refresh,
            webhook_worker,
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

    /// The writer's group-commit counters so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.state.store.writer_stats()
    }

    /// Serves until `shutdown` completes, then stops accepting connections,
    /// answers every accepted request, commits what is queued, and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        // Polls while serving; dropping it at the end stops it.
        let _refresher = clients::revocation::spawn_refresher(
            self.state.revoked_clients.clone(),
            store.clone(),
            self.revocation_refresh,
        );
        let webhooks = self.webhook_worker.spawn();
        let app = routes::router(self.state);
        let served = self.transport.serve(self.listener, app, shutdown).await;
        // Deliveries in flight end (each within its timeout) and are recorded
        // before the store closes; the rest wait in the outbox.
        webhooks.shutdown().await;
        // Every handler has had its answer by now; flush what may remain queued.
        store.shutdown().await;
        served.context("the HTTP server failed")?;
        Ok(())
    }
}

/// External issuer mode (`docs/tokens.md`): accept the tokens of a real Kinde business.
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    /// `https://<subdomain>.kinde.com` (an `http://` issuer only on loopback).
    pub issuer: String,
    /// Accepted audiences; default `<issuer>/api`, as Kinde's M2M tokens carry.
    pub audiences: Vec<String>,
    /// Least time between two JWKS fetches triggered by unknown `kid`s.
    pub refetch_interval: std::time::Duration,
}

impl ExternalIssuer {
    /// An issuer with the default audience and refetch interval.
    pub fn new(issuer: impl Into<String>) -> ExternalIssuer {
        let issuer = issuer.into().trim_end_matches('/').to_owned();
        ExternalIssuer {
            audiences: vec![format!("{issuer}/api")],
            issuer,
            refetch_interval: crate::auth::DEFAULT_REFETCH_INTERVAL,
        }
    }
}

/// The verifier of external mode and its JWKS source, loaded once at start. A
/// failed first fetch is not fatal: the issuer may be briefly unreachable, and
/// the first token with an unknown `kid` refetches.
async fn external_verifier(
    external: &ExternalIssuer,
) -> anyhow::Result<(Verifier, Arc<RemoteJwks>)> {
    check_issuer_url(&external.issuer).map_err(anyhow::Error::msg)?;
    let keys = Arc::new(KeySet::new());
    let remote = Arc::new(
        RemoteJwks::new(&external.issuer, keys.clone(), external.refetch_interval)
            .map_err(anyhow::Error::msg)?,
    );
    if let Err(e) = remote.fetch().await {
        tracing::warn!(error = %e, "cannot load the issuer's JWKS yet; tokens are refused until it loads");
    }
    let config = VerifierConfig::new(external.issuer.clone(), external.audiences.clone());
    Ok((Verifier::new(config, keys), remote))
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
