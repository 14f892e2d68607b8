//! `GET /api/v1/billing/meter_usage/export`: the usage export for invoicing (not
//! in Kinde), one row per agreement and metered feature of its plan for the
//! period each agreement is in, as CSV or NDJSON (`docs/import-export.md#export`).
//!
//! [`UsageExport`] writes the export page by page of agreements; the route
//! streams its chunks, and `kinde-meter export` writes the same chunks on a data
//! directory, so both produce the same bytes.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use jiff::Timestamp;
use kinde_meter_core::{
    ErrorCode,
    export::{self, ExportPeriod},
    ids::AgreementId,
};
use kinde_meter_store::{AgreementUsage, ExportQuery, Store, StoreError};
use kinde_meter_wire::{ErrorResponse, ExportFormat, MeterUsageExportRow};

use crate::error::ApiError;
use crate::extract::{Params, QueryParams};
use crate::state::AppState;

/// Agreements read from the store per chunk of the export.
pub const EXPORT_PAGE_SIZE: usize = 500;

/// The usage export as a sequence of chunks: the header (CSV) and the rows of
/// one page of agreements at a time, each page read in one snapshot.
pub struct UsageExport {
    store: Arc<dyn Store>,
    period: ExportPeriod,
    format: ExportFormat,
    now: Timestamp,
    after: Option<AgreementId>,
    started: bool,
    done: bool,
}

impl UsageExport {
    /// The export of `period` in `format`, `current` and `previous` taken at `now`.
    pub fn new(
        store: Arc<dyn Store>,
        period: ExportPeriod,
        format: ExportFormat,
        now: Timestamp,
    ) -> UsageExport {
        UsageExport {
            store,
            period,
            format,
            now,
            after: None,
            started: false,
            done: false,
        }
    }

    /// The next chunk of the export, `None` after the last. The first chunk
    /// holds the header row (CSV) even when no row follows; no chunk is empty.
    /// After an error the export is over: what was written is incomplete.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            export::write_header(self.format, &mut out);
        }
        while !self.done && out.is_empty() {
            let page = self
                .store
                .export_usage(ExportQuery {
                    after: self.after.clone(),
                    page_size: EXPORT_PAGE_SIZE,
                    period: self.period,
                    now: self.now,
                })
                .await
                .inspect_err(|_| self.done = true)?;
            for agreement in &page.agreements {
                write_rows(self.format, agreement, &mut out);
            }
            self.done = page.next.is_none();
            self.after = page.next;
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// The rows of one agreement: one per metered feature of its plan, in catalog order.
fn write_rows(format: ExportFormat, exported: &AgreementUsage, out: &mut Vec<u8>) {
    for usage in &exported.usage.usage {
        let Some(feature) = exported.plan.feature(&usage.feature_code) else {
            continue;
        };
        let row = export::row(
            &exported.agreement,
            feature,
            exported.usage.period,
            usage.value,
        );
        export::write_row(format, &row, out);
    }
}

/// Export every agreement's usage of each metered feature of its plan for one
/// billing period per agreement, for invoicing: CSV with a header row, or NDJSON.
#[utoipa::path(
    get,
    path = "/api/v1/billing/meter_usage/export",
    tag = "Billing Meter Usage",
    operation_id = "ExportMeterUsage",
    params(
        ("period" = Option<String>, Query, pattern = r"^(current|previous|((19[7-9][0-9]|2[01][0-9]{2})-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26]))-02-29)[Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?)$", description = "Which billing period of each agreement: current (default, the period containing now), previous (the one before it), or an RFC 3339 instant between 1970 and 2200 (offset as for meter_usage_timestamp): the period containing it"),
        ("format" = inline(Option<ExportFormat>), Query, description = "csv (default): text/csv with a header row; ndjson: one MeterUsageExportRow JSON object per line"),
    ),
    responses(
        (status = 200, description = "One row per agreement active in its period and metered feature of its plan, ordered by agreement id, then the plan's feature order", content(
            (String = "text/csv"),
            (MeterUsageExportRow = "application/x-ndjson"),
        )),
        (status = 400, description = "Invalid period or format", body = ErrorResponse),
    ),
)]
pub async fn export_meter_usage(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Response, ApiError> {
    let period = parse_param(&params, "period", ExportPeriod::Current)?;
    let format = parse_param(&params, "format", ExportFormat::Csv)?;
    let mut export = UsageExport::new(state.store.clone(), period, format, state.clock.now());
    // The first page before the answer starts, so that storage failing is
    // still a 503; a failure later cuts the body short (the client sees the
    // response end abruptly, never a complete-looking export).
    let first = export.next_chunk().await?;
    let rest = futures::stream::unfold(export, |mut export| async move {
        match export.next_chunk().await {
            Ok(chunk) => chunk.map(|chunk| (Ok(Bytes::from(chunk)), export)),
            Err(e) => {
                tracing::warn!(error = %e, "the usage export failed part-way; its answer is cut short");
                Some((Err(e), export))
            }
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::iter(first.map(|chunk| Ok::<_, StoreError>(Bytes::from(chunk)))),
        rest,
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

/// An optional parameter parsed with `FromStr`: `default` when absent, 400
/// `INVALID_FIELD` when empty or unusable.
fn parse_param<T>(params: &Params, name: &str, default: T) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match params.raw(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|e: T::Err| ApiError::bad_request(ErrorCode::InvalidField, e.to_string())),
    }
}
