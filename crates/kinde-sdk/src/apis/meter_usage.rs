//! [`BillingMeterUsageApi`]: recording usage (`POST /api/v1/billing/meter_usage`,
//! Kinde's endpoint) and, on kinde-meter only, batches and usage read-back.

use jiff::Timestamp;
use kinde_meter_wire::{
    CreateMeterUsageRecordRequest, CreateMeterUsageRecordResponse,
    CreateMeterUsageRecordsBatchRequest, CreateMeterUsageRecordsBatchResponse, ExportFormat,
    GetMeterUsageResponse, MeterTypeCode,
};

use crate::client::{ApiClient, Call};
use crate::error::{
    CreateMeterUsageRecordError, CreateMeterUsageRecordsBatchError, ExportMeterUsageError,
    GetMeterUsageError, InvalidInput,
};
use crate::idempotency::IdempotencyKey;
use crate::models::{MeterValue, UsageTimestamp};

const METER_USAGE: &str = "/api/v1/billing/meter_usage";
const METER_USAGE_BATCH: &str = "/api/v1/billing/meter_usage/batch";
const METER_USAGE_EXPORT: &str = "/api/v1/billing/meter_usage/export";

/// Kinde's `BillingMeterUsageApi`: records how much of a metered feature a
/// customer used.
///
/// ```no_run
/// use kinde_sdk::models::MeterTypeCode;
/// use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let api_client = ApiClient::new(
///     Configuration::new("https://your-subdomain.kinde.com").with_access_token("eyJhbGciOi..."),
/// )?;
/// let api = BillingMeterUsageApi::new(api_client);
/// api.create_meter_usage_record_builder()
///     .customer_agreement_id("agreement_0195ac80a14c2ca2cec97d026d864de0")
///     .billing_feature_code("api_calls")
///     .meter_value(150)
///     .meter_type_code(MeterTypeCode::Delta)
///     .send()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BillingMeterUsageApi {
    client: ApiClient,
}

impl BillingMeterUsageApi {
    /// The API, over `client`.
    pub fn new(client: ApiClient) -> Self {
        BillingMeterUsageApi { client }
    }

    /// The client this API sends through.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Records one usage value: `POST /api/v1/billing/meter_usage`.
    ///
    /// The request is sent with a freshly generated `Idempotency-Key`; use
    /// [`create_meter_usage_record_builder`](Self::create_meter_usage_record_builder)
    /// and its [`idempotency_key`](CreateMeterUsageRecordBuilder::idempotency_key)
    /// to choose your own, e.g. one you store with the event so a retry after a
    /// crash cannot count it twice.
    ///
    /// # Errors
    ///
    /// See [`CreateMeterUsageRecordError`]; its
    /// [`is_retryable`](CreateMeterUsageRecordError::is_retryable) says whether to
    /// try again.
    pub async fn create_meter_usage_record(
        &self,
        request: CreateMeterUsageRecordRequest,
    ) -> Result<CreateMeterUsageRecordResponse, CreateMeterUsageRecordError> {
        self.send_record(&request, &IdempotencyKey::generate())
            .await
    }

    /// Starts a fluent request for
    /// [`create_meter_usage_record`](Self::create_meter_usage_record):
    /// set the fields, then `.send().await`.
    pub fn create_meter_usage_record_builder(&self) -> CreateMeterUsageRecordBuilder {
        CreateMeterUsageRecordBuilder {
            client: self.client.clone(),
            customer_agreement_id: None,
            billing_feature_code: None,
            meter_value: None,
            meter_usage_timestamp: None,
            meter_type_code: None,
            idempotency_key: None,
        }
    }

    /// Sends one record with `key`: the one place a usage write goes out, so every
    /// attempt of a logical call carries the same key.
    pub(crate) async fn send_record(
        &self,
        request: &CreateMeterUsageRecordRequest,
        key: &IdempotencyKey,
    ) -> Result<CreateMeterUsageRecordResponse, CreateMeterUsageRecordError> {
        let call = Call::post_json(METER_USAGE, request)?.idempotency_key(key);
        self.client.execute(&call).await
    }

    /// Records up to 100 values in one request:
    /// `POST /api/v1/billing/meter_usage/batch`. **kinde-meter only**; real Kinde
    /// has no batch endpoint.
    ///
    /// Each record is validated and stored on its own: a 200 answer lists, per
    /// record, `"OK"` or that record's error code. The whole batch is sent with
    /// one generated `Idempotency-Key`; use
    /// [`create_meter_usage_records_batch_builder`](Self::create_meter_usage_records_batch_builder)
    /// to choose it.
    ///
    /// # Errors
    ///
    /// See [`CreateMeterUsageRecordsBatchError`]; a batch of more than 100 records
    /// is a `BadRequest` with code `BATCH_TOO_LARGE`.
    pub async fn create_meter_usage_records_batch(
        &self,
        records: Vec<CreateMeterUsageRecordRequest>,
    ) -> Result<CreateMeterUsageRecordsBatchResponse, CreateMeterUsageRecordsBatchError> {
        self.create_meter_usage_records_batch_builder()
            .records(records)
            .send()
            .await
    }

    /// Starts a fluent request for
    /// [`create_meter_usage_records_batch`](Self::create_meter_usage_records_batch).
    pub fn create_meter_usage_records_batch_builder(&self) -> CreateMeterUsageRecordsBatchBuilder {
        CreateMeterUsageRecordsBatchBuilder {
            client: self.client.clone(),
            records: Vec::new(),
            idempotency_key: None,
        }
    }

    /// Reads the usage of an agreement's metered features in one billing period:
    /// `GET /api/v1/billing/meter_usage`. **kinde-meter only**; real Kinde has no
    /// usage read-back.
    ///
    /// `billing_feature_code` narrows the answer to one feature; `at` picks the
    /// period containing that instant (default: now, the current period).
    ///
    /// # Errors
    ///
    /// See [`GetMeterUsageError`]; an unknown agreement is a `BadRequest` with code
    /// `AGREEMENT_NOT_FOUND`.
    pub async fn get_meter_usage(
        &self,
        customer_agreement_id: &str,
        billing_feature_code: Option<&str>,
        at: Option<Timestamp>,
    ) -> Result<GetMeterUsageResponse, GetMeterUsageError> {
        let call = Call::get(METER_USAGE)
            .query("customer_agreement_id", Some(customer_agreement_id))
            .query("billing_feature_code", billing_feature_code)
            .query("at", at);
        self.client.execute(&call).await
    }

    /// Exports every agreement's usage for invoicing:
    /// `GET /api/v1/billing/meter_usage/export`. **kinde-meter only**; real
    /// Kinde has no such route. Needs the scope `read:meter_usage`.
    ///
    /// One row per agreement active in its period and metered feature of its
    /// plan, with the period's exact usage and, where the catalog prices the
    /// feature, the amount in cents ([`MeterUsageExportRow`](crate::models::MeterUsageExportRow)).
    /// `period` picks each agreement's period: `"current"` (the default),
    /// `"previous"`, or an RFC 3339 instant (the period containing it).
    /// `format` is [`ExportFormat::Csv`] (the default; a header row, then one
    /// line per row) or [`ExportFormat::Ndjson`] (one JSON object per line).
    ///
    /// Returns the body exactly as the server wrote it, whole; the request's
    /// time limit ([`Configuration::with_timeout`](crate::Configuration::with_timeout))
    /// covers reading all of it.
    ///
    /// # Errors
    ///
    /// See [`ExportMeterUsageError`]; a bad `period` or `format` is a
    /// `BadRequest` with code `INVALID_FIELD`.
    pub async fn export_meter_usage(
        &self,
        period: Option<&str>,
        format: Option<ExportFormat>,
    ) -> Result<String, ExportMeterUsageError> {
        let call = Call::get(METER_USAGE_EXPORT)
            .query("period", period)
            .query("format", format);
        self.client.execute_text(&call).await
    }
}

/// A fluent [`BillingMeterUsageApi::create_meter_usage_record`] request.
///
/// `customer_agreement_id`, `billing_feature_code` and `meter_value` are
/// required; [`send`](Self::send) fails with
/// [`InvalidInput`](CreateMeterUsageRecordError::InvalidInput), without sending
/// anything, if one is missing. Unset optional fields are left out of the JSON,
/// so the server applies its defaults (time of receipt, `delta`).
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until `.send().await`"]
pub struct CreateMeterUsageRecordBuilder {
    client: ApiClient,
    customer_agreement_id: Option<String>,
    billing_feature_code: Option<String>,
    meter_value: Option<MeterValue>,
    meter_usage_timestamp: Option<UsageTimestamp>,
    meter_type_code: Option<MeterTypeCode>,
    idempotency_key: Option<String>,
}

impl CreateMeterUsageRecordBuilder {
    /// The billing agreement to record against, e.g.
    /// `agreement_0195ac80a14c2ca2cec97d026d864de0`. Required.
    pub fn customer_agreement_id(mut self, id: impl Into<String>) -> Self {
        self.customer_agreement_id = Some(id.into());
        self
    }

    /// The code of a metered feature of the agreement's plan, e.g. `api_calls`.
    /// Required.
    pub fn billing_feature_code(mut self, code: impl Into<String>) -> Self {
        self.billing_feature_code = Some(code.into());
        self
    }

    /// The usage value: an integer (`150`) or a decimal string (`"0.5"`), see
    /// [`MeterValue`]. Required.
    pub fn meter_value(mut self, value: impl Into<MeterValue>) -> Self {
        self.meter_value = Some(value.into());
        self
    }

    /// When the usage happened: a [`jiff::Timestamp`] or [`jiff::Zoned`], sent as
    /// RFC 3339 with an offset (see [`UsageTimestamp`]). Defaults to the time the
    /// server receives the record.
    pub fn meter_usage_timestamp(mut self, at: impl Into<UsageTimestamp>) -> Self {
        self.meter_usage_timestamp = Some(at.into());
        self
    }

    /// [`MeterTypeCode::Delta`] (the server's default) adds the value to the
    /// usage; [`MeterTypeCode::Absolute`] replaces the usage with it.
    pub fn meter_type_code(mut self, code: MeterTypeCode) -> Self {
        self.meter_type_code = Some(code);
        self
    }

    /// The `Idempotency-Key` to send: 1 to 255 visible ASCII characters (an
    /// [`IdempotencyKey`] converts too). Without one, a random key is generated
    /// when the request is sent.
    ///
    /// Choose your own when the usage event has a stable identity (an order id,
    /// a message id): a retry with the same key and record — even from another
    /// process after a crash — is answered with the original response and counts
    /// nothing twice. The same key with a *different* record is refused with
    /// `IDEMPOTENCY_KEY_REUSED`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sends the request.
    ///
    /// # Errors
    ///
    /// See [`CreateMeterUsageRecordError`].
    pub async fn send(self) -> Result<CreateMeterUsageRecordResponse, CreateMeterUsageRecordError> {
        let key = key_or_generate(self.idempotency_key)?;
        let request = CreateMeterUsageRecordRequest {
            customer_agreement_id: required(self.customer_agreement_id, "customer_agreement_id")?,
            billing_feature_code: required(self.billing_feature_code, "billing_feature_code")?,
            meter_value: required(self.meter_value, "meter_value")?.into(),
            meter_usage_timestamp: self.meter_usage_timestamp.map(|at| at.to_string()),
            meter_type_code: self.meter_type_code,
        };
        BillingMeterUsageApi::new(self.client)
            .send_record(&request, &key)
            .await
    }
}

/// A fluent [`BillingMeterUsageApi::create_meter_usage_records_batch`] request.
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until `.send().await`"]
pub struct CreateMeterUsageRecordsBatchBuilder {
    client: ApiClient,
    records: Vec<CreateMeterUsageRecordRequest>,
    idempotency_key: Option<String>,
}

impl CreateMeterUsageRecordsBatchBuilder {
    /// Adds one record.
    pub fn record(mut self, record: CreateMeterUsageRecordRequest) -> Self {
        self.records.push(record);
        self
    }

    /// Adds records.
    pub fn records(
        mut self,
        records: impl IntoIterator<Item = CreateMeterUsageRecordRequest>,
    ) -> Self {
        self.records.extend(records);
        self
    }

    /// The `Idempotency-Key` of the whole batch; see
    /// [`CreateMeterUsageRecordBuilder::idempotency_key`]. Without one, a random
    /// key is generated when the request is sent.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sends the batch.
    ///
    /// # Errors
    ///
    /// See [`CreateMeterUsageRecordsBatchError`].
    pub async fn send(
        self,
    ) -> Result<CreateMeterUsageRecordsBatchResponse, CreateMeterUsageRecordsBatchError> {
        let key = key_or_generate(self.idempotency_key)?;
        let body = CreateMeterUsageRecordsBatchRequest {
            records: self.records,
        };
        let call = Call::post_json(METER_USAGE_BATCH, &body)?.idempotency_key(&key);
        self.client.execute(&call).await
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, InvalidInput> {
    value.ok_or_else(|| InvalidInput(format!("{field} is required")))
}

/// The caller's key, checked, or a fresh one: chosen once per logical call.
fn key_or_generate(key: Option<String>) -> Result<IdempotencyKey, InvalidInput> {
    match key {
        Some(key) => IdempotencyKey::new(key).map_err(|error| InvalidInput(error.to_string())),
        None => Ok(IdempotencyKey::generate()),
    }
}
