//! The embedded SQLite store: one database file in the data directory.
//!
//! - Writes go through one dedicated writer thread (`writer`) that commits many
//!   submissions per transaction (group commit): with `synchronous=FULL` every
//!   commit costs an fsync, and sharing it is what makes the throughput.
//! - Reads run on a small pool of read connections on tokio's blocking threads
//!   (`read`); WAL mode lets them proceed while the writer commits.
//! - Another process (the CLI working offline) may open the same directory at the
//!   same time: every write transaction takes SQLite's write lock with
//!   `BEGIN IMMEDIATE` and waits up to 5 s for it, and what the writer keeps in
//!   memory between transactions (`cache`: agreements, plans, aggregate states)
//!   is dropped as soon as `PRAGMA data_version` shows another connection has
//!   committed.
//!
//! The schema is in `schema.rs`; one module per table family does the SQL.

mod aggregates;
mod agreements;
mod browse;
mod cache;
mod catalog;
mod clients;
mod codec;
mod connection;
mod error;
mod exec;
mod export;
mod idempotency;
mod job;
mod outbox;
mod read;
mod record_order;
mod schema;
mod usage;
mod webhooks;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    agreement::Agreement,
    catalog::Catalog,
    ids::{AgreementId, CustomerId, FeatureCode},
    webhook::{Event, EventId, WebhookId},
};

use crate::WriterStats;

use self::{job::Job, read::ReadPool, writer::WriterHandle};
use crate::{
    AgreementPage, AgreementQuery, CreateAgreementError, ListAgreementsError, NewAgreement,
    ReadUsageError, Store, StoreConfig, StoreError, SubmissionOutcome, UsageQuery, UsageReport,
    UsageSubmission,
};
use crate::{Client, ClientWithSecret, CustomerEntitlements, NewClient, RevokedClient};
use crate::{CustomerPage, CustomerQuery, RecordsQuery, StoredUsageRecord};
use crate::{
    Delivery, DeliveryId, DeliveryResult, DeliveryStats, NewWebhook, Webhook, WebhookPatch,
    WebhookStatus,
};

pub use schema::CURRENT_VERSION;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "kinde-meter.db";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    writer: WriterHandle,
    reads: Arc<ReadPool>,
}

impl SqliteStore {
    /// Opens the store in `data_dir` (created if needed), creating or migrating
    /// [`DATABASE_FILE`] in it, and starts the writer thread. Safe while another
    /// process has the same directory open.
    pub fn open(data_dir: &Path, config: StoreConfig) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let mut conn = connection::open_writer(&path)?;
        schema::migrate(&mut conn)
            .map_err(|e| StoreError::Unavailable(format!("migrating {}: {e}", path.display())))?;
        let writer = WriterHandle::spawn(conn, config)?;
        Ok(SqliteStore {
            reads: Arc::new(ReadPool::new(path.clone())),
            path,
            writer,
        })
    }

    /// The database file.
    pub fn database_path(&self) -> &Path {
        &self.path
    }

    /// Runs a write of the webhook outbox on the writer, in a batch's
    /// transaction, and answers after its commit. Waits for room in the queue
    /// rather than failing: the delivery worker is not a client to shed.
    async fn outbox<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.outbox_job(false, work).await
    }

    /// [`Self::outbox`] for a job that may build usage events.
    async fn outbox_job<T, F>(&self, builds_usage_events: bool, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (job, answer) = exec::job(move |conn| Ok::<_, error::OpError<StoreError>>(work(conn)?));
        self.writer
            .send(Job::Outbox {
                work: job,
                builds_usage_events,
            })
            .await?;
        writer::answer(answer).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.reads.run(|conn| Ok(read::ping(conn)?)).await
    }

    async fn load_catalog(&self, catalog: &Catalog) -> Result<(), StoreError> {
        let (job, answer) = Job::load_catalog(catalog.clone());
        self.writer.send(job).await?;
        let loaded = writer::answer(answer).await;
        // Committed or not (a failed commit may still have reached the file),
        // plans read before are not to be trusted.
        self.reads.catalog_loaded();
        loaded
    }

    async fn catalog(&self) -> Result<Catalog, StoreError> {
        self.reads
            .run(|conn| {
                let tx = conn.transaction()?;
                Ok(catalog::load_all(&tx)?)
            })
            .await
    }

    async fn create_agreement(&self, new: NewAgreement) -> Result<Agreement, CreateAgreementError> {
        let (job, answer) = Job::create_agreement(new);
        self.writer.try_send(job)?;
        writer::answer(answer).await
    }

    async fn agreement(&self, id: &AgreementId) -> Result<Option<Agreement>, StoreError> {
        self.reads
            .run_inline(|conn, _| Ok(agreements::load(conn, id)?))
    }

    async fn list_agreements(
        &self,
        query: AgreementQuery,
    ) -> Result<AgreementPage, ListAgreementsError> {
        self.reads
            .run(move |conn| {
                let tx = conn.transaction()?;
                agreements::list(&tx, &query)
            })
            .await
    }

    async fn submit_usage(
        &self,
        submission: UsageSubmission,
    ) -> Result<SubmissionOutcome, StoreError> {
        let (job, answer) = Job::usage(submission);
        self.writer.try_send(job)?;
        writer::answer(answer).await
    }

    async fn read_usage(&self, query: UsageQuery) -> Result<UsageReport, ReadUsageError> {
        self.reads
            .run_inline(|conn, plans| read::usage(conn, plans, &query))
    }

    async fn export_usage(
        &self,
        query: crate::ExportQuery,
    ) -> Result<crate::ExportPage, StoreError> {
        self.reads
            .run(move |conn| Ok(export::page(conn, &query)?))
            .await
    }

    async fn list_customers(&self, query: CustomerQuery) -> Result<CustomerPage, StoreError> {
        self.reads
            .run(move |conn| Ok(browse::customers(conn, &query)?))
            .await
    }

    async fn latest_usage_records(
        &self,
        query: RecordsQuery,
    ) -> Result<Vec<StoredUsageRecord>, ReadUsageError> {
        self.reads
            .run(move |conn| browse::latest_records(conn, &query))
            .await
    }

    async fn customer_entitlements(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
        only: Option<&FeatureCode>,
    ) -> Result<Option<CustomerEntitlements>, StoreError> {
        self.reads.run_inline(|conn, plans| {
            Ok(read::customer_entitlements(
                conn,
                plans,
                customer_id,
                now,
                only,
            )?)
        })
    }

    async fn create_client(&self, new: NewClient) -> Result<Client, StoreError> {
        let (job, answer) = exec::job(move |conn| clients::create(conn, &new));
        // Administrative, like catalog loads: wait for room rather than fail.
        self.writer.send(Job::Exec(job)).await?;
        writer::answer(answer).await
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.reads.run(|conn| Ok(clients::list(conn)?)).await
    }

    async fn client(&self, id: &str) -> Result<Option<ClientWithSecret>, StoreError> {
        let id = id.to_owned();
        self.reads
            .run(move |conn| Ok(clients::load(conn, &id)?))
            .await
    }

    async fn revoke_client(&self, id: &str, now: Timestamp) -> Result<Option<Client>, StoreError> {
        let id = id.to_owned();
        let (job, answer) = exec::job(move |conn| Ok(clients::revoke(conn, &id, now)?));
        self.writer.send(Job::Exec(job)).await?;
        writer::answer(answer).await
    }

    async fn revoked_clients_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<RevokedClient>, StoreError> {
        self.reads
            .run(move |conn| Ok(clients::revoked_since(conn, since)?))
            .await
    }

    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StoreError> {
        self.outbox(move |conn| webhooks::create(conn, &new)).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookStatus>, StoreError> {
        self.reads.run(|conn| Ok(webhooks::list(conn)?)).await
    }

    async fn update_webhook(
        &self,
        id: &WebhookId,
        patch: WebhookPatch,
    ) -> Result<Option<Webhook>, StoreError> {
        let id = id.clone();
        self.outbox(move |conn| webhooks::update(conn, &id, &patch))
            .await
    }

    async fn delete_webhook(&self, id: &WebhookId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.outbox(move |conn| webhooks::delete(conn, &id)).await
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let id = id.clone();
        self.reads
            .run(move |conn| Ok(outbox::load(conn, &id)?))
            .await
    }

    async fn build_usage_events(&self, now: Timestamp) -> Result<usize, StoreError> {
        // The worker asks every second or so; no writer job when nothing is due.
        let due = self
            .reads
            .run(move |conn| {
                Ok::<_, error::OpError<StoreError>>(outbox::usage_event_due(conn, now)?)
            })
            .await?;
        if !due {
            return Ok(0);
        }
        self.outbox_job(true, move |conn| outbox::build_usage_events(conn, now))
            .await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
        lease: SignedDuration,
        busy: &[WebhookId],
    ) -> Result<Vec<Delivery>, StoreError> {
        // The worker asks every second or so; no writer job when idle.
        let claimable = self
            .reads
            .run(move |conn| Ok::<_, error::OpError<StoreError>>(webhooks::claimable(conn, now)?))
            .await?;
        if !claimable {
            return Ok(Vec::new());
        }
        let busy = busy.to_vec();
        self.outbox(move |conn| webhooks::claim(conn, now, limit, lease, &busy))
            .await
    }

    async fn finish_delivery(
        &self,
        id: DeliveryId,
        result: DeliveryResult,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.outbox(move |conn| webhooks::finish(conn, id, &result, now))
            .await
    }

    async fn delivery_stats(&self, _now: Timestamp) -> Result<DeliveryStats, StoreError> {
        self.reads.run(|conn| Ok(webhooks::stats(conn)?)).await
    }

    async fn shutdown(&self) {
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
}
