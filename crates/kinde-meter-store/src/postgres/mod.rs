//! The PostgreSQL store: several kinde-meter servers sharing one database.
//! Writes go through one group-committing writer task per server (`writer`,
//! `batch`); everything else is a short transaction on the pool (`pool`). The
//! schema is in `schema`; one module per table family does the SQL.
//!
//! Design: `docs/design.md#postgresql-store` (and the sections after it).

mod aggregates;
mod agreements;
mod batch;
mod browse;
mod catalog;
mod clients;
mod codec;
mod export;
mod failure;
mod idempotency;
mod issuer;
mod one_flight;
mod outbox;
mod pool;
mod read;
mod replan;
mod schema;
#[cfg(feature = "test-support")]
pub mod scratch;
mod shared;
mod terms;
mod webhooks;
mod writer;
mod writer_cache;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    agreement::Agreement,
    catalog::Catalog,
    ids::{AgreementId, CustomerId, FeatureCode},
    webhook::{Event, EventId, WebhookId},
};

pub use crate::PgSettings;

use crate::{CustomerPage, CustomerQuery, RecordsQuery, StoredUsageRecord};
pub use schema::{CURRENT_VERSION, valid_schema_name};

use self::{
    failure::{OpError, PgResult},
    pool::on_conn,
    pool::{Db, Role},
    writer::WriterHandle,
};
use crate::{
    AgreementPage, AgreementQuery, Client, ClientWithSecret, CreateAgreementError,
    CustomerEntitlements, Delivery, DeliveryId, DeliveryResult, DeliveryStats, IssuerStore,
    ListAgreementsError, NewAgreement, NewClient, NewKeyPem, NewWebhook, ReadUsageError,
    RevokedClient, Store, StoreConfig, StoreError, SubmissionOutcome, UsageQuery, UsageReport,
    UsageSubmission, Webhook, WebhookPatch, WebhookStatus, WriterStats,
};

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    db: Arc<Db>,
    writer: WriterHandle,
    /// The agreements and plans the reads remember (`terms.rs`).
    terms: terms::Terms,
    /// The connections the reads from remembered terms share (`shared.rs`).
    shared: shared::Shared,
    /// Set by `shutdown`: writes outside the writer are refused from then on
    /// too, as the SQLite store (whose every write goes through its writer) does.
    closed: AtomicBool,
}

impl PgStore {
    /// Connects to the database at `url`, applies the migrations it lacks (safe
    /// while other servers start on it) and starts the writer task on the
    /// current tokio runtime. Fails if the database cannot be reached within the
    /// connect and operation timeouts: a server should not start without it.
    pub async fn connect(
        url: &str,
        settings: PgSettings,
        config: StoreConfig,
    ) -> Result<PgStore, StoreError> {
        let db = Arc::new(Db::new(url, &settings, Role::General)?);
        migrate_on(&db, settings.schema.as_deref()).await?;
        // The remembered reads' shared connections come from a pool of
        // their own (`shared.rs`).
        let shared = shared::shared_connections();
        let shared_db = Db::new(
            url,
            &PgSettings {
                pool_size: shared * 2,
                ..settings.clone()
            },
            Role::General,
        )?;
        // The writer's connections are its own (`writer::WRITER_CONNECTIONS`),
        // driven by its own thread.
        let writer_db = Db::new(
            url,
            &PgSettings {
                pool_size: writer::WRITER_CONNECTIONS,
                ..settings
            },
            Role::Writer,
        )?;
        let writer = WriterHandle::spawn(writer_db, config)?;
        Ok(PgStore {
            db,
            writer,
            terms: terms::Terms::new(),
            shared: shared::Shared::new(shared_db, shared),
            closed: AtomicBool::new(false),
        })
    }

    /// Applies the migrations the database at `url` lacks and returns the
    /// versions applied by this call (empty if it was up to date), as
    /// `kinde-meter migrate` does.
    pub async fn migrate(url: &str, settings: &PgSettings) -> Result<Vec<i32>, StoreError> {
        let db = Db::new(url, settings, Role::General)?;
        let applied = migrate_on(&db, settings.schema.as_deref()).await;
        db.close();
        applied
    }
}

async fn migrate_on(db: &Db, schema: Option<&str>) -> Result<Vec<i32>, StoreError> {
    // Migrations may wait for another server's; give them more time than a request.
    let deadline = tokio::time::Instant::now() + db.operation_timeout * 15;
    let applied = on_conn!(db, deadline, |conn| schema::migrate(conn, schema).await)
        .map_err(|e| StoreError::Unavailable(format!("migrating the database: {e}")))?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied database migrations");
    }
    Ok(applied)
}

impl PgStore {
    /// Refuses a write once the store is shut down.
    fn open_for_writes(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::ShuttingDown);
        }
        Ok(())
    }
}

/// What a read from remembered terms on a shared connection answered: `None`
/// to read on a pooled connection instead, also when the shared one failed
/// (a PostgreSQL restart breaks every read queued on it; the pooled read
/// then answers, or fails by itself, within the same deadline).
fn remembered_or_pooled<T>(result: PgResult<Option<T>>) -> Option<T> {
    result.unwrap_or_else(|failure| {
        tracing::debug!(error = %failure, "a read on a shared connection failed; reading on a pooled one");
        None
    })
}

/// Maps an operation's outcome: its own answer or refusal, or 503 for a
/// database failure.
fn answer<T, E: From<StoreError>>(result: Result<T, OpError<E>>) -> Result<T, E> {
    result.map_err(OpError::into_answer)
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| read::ping(
            conn
        )
        .await)?)
    }

    async fn load_catalog(&self, catalog: &Catalog) -> Result<(), StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            catalog::upsert(conn, catalog).await
        })?)
    }

    async fn catalog(&self) -> Result<Catalog, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            catalog::load_all(&*conn).await
        })?)
    }

    async fn create_agreement(&self, new: NewAgreement) -> Result<Agreement, CreateAgreementError> {
        self.open_for_writes()?;
        let created = answer(on_conn!(self.db, self.db.deadline(), |conn| {
            agreements::create(conn, &new).await
        }));
        if created.is_ok() {
            self.writer.raised().notify_one();
        }
        created
    }

    async fn agreement(&self, id: &AgreementId) -> Result<Option<Agreement>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            agreements::load(&*conn, id).await
        })?)
    }

    async fn list_agreements(
        &self,
        query: AgreementQuery,
    ) -> Result<AgreementPage, ListAgreementsError> {
        answer(on_conn!(self.db, self.db.deadline(), |conn| {
            agreements::list(conn, &query).await
        }))
    }

    async fn submit_usage(
        &self,
        submission: UsageSubmission,
    ) -> Result<SubmissionOutcome, StoreError> {
        self.writer.submit(submission).await
    }

    async fn read_usage(&self, query: UsageQuery) -> Result<UsageReport, ReadUsageError> {
        let deadline = self.db.deadline();
        if let Some(remembered) = self.terms.by_id(&query.agreement_id)
            && let Some(report) = remembered_or_pooled(
                self.shared
                    .run(deadline, async |conn| {
                        read::remembered_usage(conn, remembered, &query).await
                    })
                    .await,
            )
        {
            return Ok(report);
        }
        answer(on_conn!(self.db, deadline, |conn| read::usage(
            conn,
            &self.terms,
            &query
        )
        .await))
    }

    async fn export_usage(
        &self,
        query: crate::ExportQuery,
    ) -> Result<crate::ExportPage, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            export::page(conn, &query).await
        })?)
    }

    async fn list_customers(&self, query: CustomerQuery) -> Result<CustomerPage, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            browse::customers(&*conn, &query).await
        })?)
    }

    async fn latest_usage_records(
        &self,
        query: RecordsQuery,
    ) -> Result<Vec<StoredUsageRecord>, ReadUsageError> {
        answer(on_conn!(self.db, self.db.deadline(), |conn| {
            browse::latest_records(conn, &query).await
        }))
    }

    async fn customer_entitlements(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
        only: Option<&FeatureCode>,
    ) -> Result<Option<CustomerEntitlements>, StoreError> {
        let deadline = self.db.deadline();
        if let Some(remembered) = self.terms.newest_of_customer(customer_id, now)
            && let Some(found) = remembered_or_pooled(
                self.shared
                    .run(deadline, async |conn| {
                        read::remembered_entitlements(conn, remembered, now, only).await
                    })
                    .await,
            )
        {
            return Ok(Some(found));
        }
        Ok(on_conn!(self.db, deadline, |conn| {
            read::customer_entitlements(conn, &self.terms, customer_id, now, only).await
        })?)
    }

    async fn create_client(&self, new: NewClient) -> Result<Client, StoreError> {
        self.open_for_writes()?;
        answer(on_conn!(self.db, self.db.deadline(), |conn| {
            clients::create(&*conn, &new).await
        }))
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            clients::list(&*conn).await
        })?)
    }

    async fn client(&self, id: &str) -> Result<Option<ClientWithSecret>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            clients::load(&*conn, id).await
        })?)
    }

    async fn revoke_client(&self, id: &str, now: Timestamp) -> Result<Option<Client>, StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            clients::revoke(&*conn, id, now).await
        })?)
    }

    async fn revoked_clients_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<RevokedClient>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            clients::revoked_since(&*conn, since).await
        })?)
    }

    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::create(conn, &new).await
        })?)
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookStatus>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::list(&*conn).await
        })?)
    }

    async fn update_webhook(
        &self,
        id: &WebhookId,
        patch: WebhookPatch,
    ) -> Result<Option<Webhook>, StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::update(&*conn, id, &patch).await
        })?)
    }

    async fn delete_webhook(&self, id: &WebhookId) -> Result<bool, StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::delete(&*conn, id).await
        })?)
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            outbox::load(&*conn, id).await
        })?)
    }

    async fn build_usage_events(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            outbox::build_usage_events(conn, now).await
        })?)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
        lease: SignedDuration,
        busy: &[WebhookId],
    ) -> Result<Vec<Delivery>, StoreError> {
        self.open_for_writes()?;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::claim(conn, now, limit, lease, busy).await
        })?)
    }

    async fn finish_delivery(
        &self,
        id: DeliveryId,
        result: DeliveryResult,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::finish(conn, id, &result, now).await
        })?)
    }

    async fn delivery_stats(&self, now: Timestamp) -> Result<DeliveryStats, StoreError> {
        let _ = now;
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            webhooks::stats(&*conn).await
        })?)
    }

    async fn shutdown(&self) {
        // The pool stays: reads after shutdown still work, as with SQLite.
        self.closed.store(true, Ordering::Release);
        self.writer.shutdown().await;
    }

    fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    fn queued_writes(&self) -> usize {
        self.writer.queued()
    }

    fn events_raised(&self) -> Arc<tokio::sync::Notify> {
        self.writer.raised()
    }

    fn issuer(&self) -> Option<&dyn IssuerStore> {
        Some(self)
    }
}

#[async_trait]
impl IssuerStore for PgStore {
    async fn load_or_create_signing_keys(
        &self,
        generate: NewKeyPem,
    ) -> Result<Vec<String>, StoreError> {
        // Key generation may take a while on a busy machine: a longer bound.
        let deadline = tokio::time::Instant::now() + self.db.operation_timeout * 4;
        Ok(on_conn!(self.db, deadline, |conn| {
            issuer::load_or_create_keys(conn, generate).await
        })?)
    }

    async fn public_url(&self) -> Result<Option<String>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            issuer::public_url(&*conn).await
        })?)
    }

    async fn set_public_url(&self, url: &str) -> Result<Option<String>, StoreError> {
        Ok(on_conn!(self.db, self.db.deadline(), |conn| {
            issuer::set_public_url(&*conn, url).await
        })?)
    }
}
