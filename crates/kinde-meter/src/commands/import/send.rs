//! Sending one chunk of rows through kinde-sdk, whose retries (429 and 503
//! after `Retry-After`, connection failures) resend with the same key; what
//! comes back decides each row's fate (docs/import-export.md#import).
//!
//! - Rows without their own key go in one batch request keyed by
//!   [`batch_key`]: a row is imported when the batch answers 200 and the row's
//!   result is `OK`, rejected with its result's code otherwise.
//! - Rows with their own `idempotency_key` go one by one to the single-record
//!   endpoint with that key, so it means there what it means for any other
//!   sender.
//! - A batch over the server's body limit (413) is split in halves, each
//!   keyed by what it holds: a function of the file, so a re-run splits alike.
//! - A batch refused as a whole (400) stores nothing: its rows are rejected
//!   with that reason. Anything else (403, retries spent, a 200 whose answer
//!   cannot be read) stops the import.

use anyhow::{Context, anyhow, bail};
use futures::{StreamExt, future::BoxFuture};
use kinde_meter_wire::{CreateMeterUsageRecordRequest, OK_CODE};
use kinde_sdk::{
    BillingMeterUsageApi, CreateMeterUsageRecordError, CreateMeterUsageRecordsBatchError,
};

use super::keys::batch_key;
use super::source::{Parsed, Reason, Row};

/// Single-record requests of one chunk in flight at once.
const SINGLES_IN_FLIGHT: usize = 8;

/// What became of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or stored by an earlier run: the server replayed its answer).
    Imported,
    /// Refused, by this command's parse or by the server.
    Rejected(Reason),
}

/// Sends the valid rows of `rows` and returns every row's outcome, in order.
///
/// # Errors
///
/// The server could not be reached or refused the credentials, or its answer
/// leaves a row's fate unknown; rows of this chunk may have been stored, and
/// importing the file again completes it without counting them twice.
pub async fn send_chunk(api: &BillingMeterUsageApi, rows: &[Row]) -> anyhow::Result<Vec<Outcome>> {
    let mut outcomes: Vec<Option<Outcome>> = rows
        .iter()
        .map(|row| {
            row.parsed
                .as_ref()
                .err()
                .map(|r| Outcome::Rejected(r.clone()))
        })
        .collect();
    let valid = rows
        .iter()
        .enumerate()
        .filter_map(|(index, row)| Some((index, row.line, row.parsed.as_ref().ok()?)));
    let (batched, keyed): (Vec<Member<'_>>, Vec<Member<'_>>) =
        valid.partition(|(_, _, parsed)| parsed.key.is_none());

    let batch = send_batch(api, batched);
    let singles = futures::stream::iter(keyed)
        .map(|(index, _, parsed)| async move { Ok((index, send_single(api, parsed).await?)) })
        .buffer_unordered(SINGLES_IN_FLIGHT)
        .collect::<Vec<anyhow::Result<_>>>();
    let (batch, singles) = futures::join!(batch, singles);
    for (index, outcome) in batch?
        .into_iter()
        .chain(singles.into_iter().collect::<Result<Vec<_>, _>>()?)
    {
        outcomes[index] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.context("a row was neither sent nor rejected"))
        .collect()
}

/// A valid row: its index in the chunk, its line, the record.
type Member<'a> = (usize, u64, &'a Parsed);

/// Sends `members` as one batch (halves if too large); their outcomes by index.
fn send_batch<'a>(
    api: &'a BillingMeterUsageApi,
    members: Vec<Member<'a>>,
) -> BoxFuture<'a, anyhow::Result<Vec<(usize, Outcome)>>> {
    Box::pin(async move {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let key = batch_key(
            members
                .iter()
                .map(|(_, line, parsed)| (*line, &parsed.canonical)),
        );
        let records: Vec<CreateMeterUsageRecordRequest> = members
            .iter()
            .map(|(_, _, parsed)| parsed.request.clone())
            .collect();
        let answer = api
            .create_meter_usage_records_batch_builder()
            .records(records)
            .idempotency_key(key)
            .send()
            .await;
        match answer {
            Ok(response) => {
                if response.results.len() != members.len() {
                    bail!(
                        "the server answered {} results for a batch of {} records",
                        response.results.len(),
                        members.len()
                    );
                }
                let mut outcomes = Vec::with_capacity(members.len());
                for result in response.results {
                    let (index, _, _) = members
                        .get(result.index)
                        .with_context(|| format!("the server answered for record {} of a batch of {}", result.index, members.len()))?;
                    let outcome = if result.code == OK_CODE {
                        Outcome::Imported
                    } else {
                        Outcome::Rejected(Reason::new(result.code, result.message))
                    };
                    outcomes.push((*index, outcome));
                }
                Ok(outcomes)
            }
            Err(CreateMeterUsageRecordsBatchError::PayloadTooLarge(_)) if members.len() > 1 => {
                let mut first = members;
                let second = first.split_off(first.len() / 2);
                let mut outcomes = send_batch(api, first).await?;
                outcomes.extend(send_batch(api, second).await?);
                Ok(outcomes)
            }
            Err(
                error @ (CreateMeterUsageRecordsBatchError::BadRequest(_)
                | CreateMeterUsageRecordsBatchError::PayloadTooLarge(_)),
            ) => {
                let reason = reason_of(error.code(), error.message(), &error);
                Ok(members
                    .iter()
                    .map(|(index, _, _)| (*index, Outcome::Rejected(reason.clone())))
                    .collect())
            }
            Err(error @ CreateMeterUsageRecordsBatchError::Decode { .. }) => Err(anyhow!(error)
                .context("the server stored a batch but its answer could not be read, so which of its rows it refused is unknown")),
            Err(error) => Err(anyhow!(error).context("a batch could not be sent")),
        }
    })
}

/// Sends one record with its own key.
async fn send_single(api: &BillingMeterUsageApi, parsed: &Parsed) -> anyhow::Result<Outcome> {
    let request = &parsed.request;
    let key = parsed.key.as_ref().context("a keyed row without a key")?;
    let mut builder = api
        .create_meter_usage_record_builder()
        .customer_agreement_id(request.customer_agreement_id.as_str())
        .billing_feature_code(request.billing_feature_code.as_str())
        .meter_value(request.meter_value.as_str())
        .idempotency_key(key.as_str());
    if let Some(at) = &request.meter_usage_timestamp {
        let at: jiff::Timestamp = at
            .parse()
            .context("a parsed timestamp did not parse again")?;
        builder = builder.meter_usage_timestamp(at);
    }
    if let Some(meter_type) = request.meter_type_code {
        builder = builder.meter_type_code(meter_type);
    }
    match builder.send().await {
        // A 200 whose body did not decode was stored all the same.
        Ok(_) | Err(CreateMeterUsageRecordError::Decode { .. }) => Ok(Outcome::Imported),
        Err(
            error @ (CreateMeterUsageRecordError::BadRequest(_)
            | CreateMeterUsageRecordError::PayloadTooLarge(_)
            | CreateMeterUsageRecordError::InvalidInput(_)),
        ) => Ok(Outcome::Rejected(reason_of(
            error.code(),
            error.message(),
            &error,
        ))),
        Err(error) => Err(anyhow!(error).context("a record could not be sent")),
    }
}

fn reason_of(code: Option<&str>, message: Option<&str>, error: &dyn std::fmt::Display) -> Reason {
    match (code, message) {
        (Some(code), Some(message)) => Reason::new(code, message),
        _ => Reason::new("REFUSED", error.to_string()),
    }
}
