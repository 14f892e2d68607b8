//! Where a server keeps its state, and the built-in issuer's with it (`docs/tokens.md`,
//! §6):
//!
//! - **SQLite** (the default): the data directory holds the database, the
//!   signing key (`signing-key.pem`) and the issuer identity (`issuer.json`);
//!   one server per directory.
//! - **PostgreSQL** (`--database-url`): the database holds all of it, so that
//!   several servers behind a load balancer share agreements, usage,
//!   idempotency keys, M2M clients and one issuer: a token minted by any of
//!   them (or by `kinde-meter token --database-url`) is valid on all, given the
//!   same `--public-url`. The data directory is not used.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use kinde_meter_store::{
    IssuerStore, KeyGenerationError, PgSettings, Store, StoreConfig, StoreLocation,
};

use crate::auth::{
    CLI_CLIENT_ID, IssuerIdentity, KeySet, MintRequest, SigningKey, jwks, mint_token,
};

/// An opened store with the issuer keys that go with it.
pub(crate) struct Storage {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The built-in issuer's keys.
    pub keys: IssuerKeys,
}

/// The built-in issuer's keys: one signs, all are accepted (a key being
/// rotated out stays accepted while its tokens live).
#[derive(Clone)]
pub struct IssuerKeys {
    /// The key new tokens are signed with.
    pub signing: Arc<SigningKey>,
    /// Every key accepted, the signing key first.
    pub accepted: Vec<Arc<SigningKey>>,
}

impl IssuerKeys {
    /// A verifier key set of the accepted keys.
    pub fn key_set(&self) -> KeySet {
        let keys: Vec<&SigningKey> = self.accepted.iter().map(|k| k.as_ref()).collect();
        KeySet::from_signing_keys(&keys)
    }

    /// The JWKS document of the accepted keys.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<&SigningKey> = self.accepted.iter().map(|k| k.as_ref()).collect();
        jwks(&keys)
    }
}

/// Opens the store `database_url` names (PostgreSQL), or SQLite in `data_dir`,
/// with the built-in issuer's keys (created on first start): in the store when
/// it holds the issuer, else in `data_dir`.
pub(crate) async fn open(
    database_url: Option<&str>,
    database: &PgSettings,
    data_dir: &Path,
    config: StoreConfig,
) -> anyhow::Result<Storage> {
    let location = match database_url {
        Some(url) => StoreLocation::Postgres {
            url: url.to_owned(),
            settings: database.clone(),
        },
        None => StoreLocation::Sqlite {
            data_dir: data_dir.to_owned(),
            create: true,
        },
    };
    let store = kinde_meter_store::open(&location, config).await?;
    let keys = match store.issuer() {
        Some(issuer) => shared_keys(issuer).await?,
        None => {
            let data_dir = data_dir.to_owned();
            let key = tokio::task::spawn_blocking(move || SigningKey::load_or_create(&data_dir))
                .await?
                .context("cannot load the signing key")?;
            let key = Arc::new(key);
            IssuerKeys {
                signing: key.clone(),
                accepted: vec![key],
            }
        }
    };
    Ok(Storage { store, keys })
}

/// Records the identity the server starts with where `store` keeps it: in the
/// database when it holds the issuer, else as `issuer.json` in `data_dir`.
pub(crate) async fn record_identity(
    store: &dyn Store,
    identity: &IssuerIdentity,
    data_dir: &Path,
) -> anyhow::Result<()> {
    match store.issuer() {
        Some(issuer) => {
            let replaced = issuer
                .set_public_url(&identity.public_url)
                .await
                .context("cannot save the issuer identity in the database")?;
            if let Some(previous) = replaced {
                tracing::warn!(
                    previous = %previous,
                    now = %identity.public_url,
                    "the issuer identity in the database changed: servers sharing a database must share --public-url, or tokens from one are refused by another"
                );
            }
            Ok(())
        }
        None => identity
            .save(data_dir)
            .context("cannot save the issuer identity"),
    }
}

/// The keys an issuer store holds, a new one created (and stored) if none.
pub async fn shared_keys(issuer: &dyn IssuerStore) -> anyhow::Result<IssuerKeys> {
    let pems = issuer
        .load_or_create_signing_keys(Box::new(|| {
            SigningKey::generate()
                .and_then(|key| key.to_pkcs8_pem())
                .map_err(KeyGenerationError::new)
        }))
        .await
        .context("cannot load the signing keys from the database")?;
    let accepted = pems
        .iter()
        .map(|pem| SigningKey::from_pem(pem).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .context("a signing key in the database is unusable")?;
    let signing = accepted
        .first()
        .cloned()
        .context("the database holds no signing key")?;
    Ok(IssuerKeys { signing, accepted })
}

/// Mints a token the way `kinde-meter token --database-url URL` does: with the
/// key the servers on that database sign with (created if there is none), for
/// the identity they last started with (`public_url_override` wins; the
/// default identity if none ever started), `aud` = `[<issuer>/api]`, `azp` =
/// `client_id` or [`CLI_CLIENT_ID`].
pub async fn mint_for_database(
    url: &str,
    settings: &PgSettings,
    scopes: &[String],
    client_id: Option<&str>,
    public_url_override: Option<&str>,
    lifetime: SignedDuration,
    now: Timestamp,
) -> anyhow::Result<String> {
    let location = StoreLocation::Postgres {
        url: url.to_owned(),
        settings: settings.clone(),
    };
    let store = kinde_meter_store::open(&location, StoreConfig::default()).await?;
    let minted = async {
        let issuer = store
            .issuer()
            .context("the PostgreSQL store holds no issuer")?;
        let keys = shared_keys(issuer).await?;
        let identity = match public_url_override {
            Some(url) => IssuerIdentity::new(url),
            None => issuer
                .public_url()
                .await?
                .map(IssuerIdentity::new)
                .unwrap_or_default(),
        };
        let request = MintRequest {
            issuer: identity.issuer(),
            audience: vec![identity.audience()],
            client_id: client_id.unwrap_or(CLI_CLIENT_ID).to_owned(),
            scopes: scopes.to_vec(),
            lifetime,
            now,
        };
        Ok::<_, anyhow::Error>(mint_token(&keys.signing, &request)?)
    }
    .await;
    store.shutdown().await;
    minted
}
