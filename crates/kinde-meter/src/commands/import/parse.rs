//! One row of an import file to a record: the server's own parser
//! (`kinde_meter_core::request`) on the row's fields, so a row refused here is
//! one the server would refuse, with its code and message
//! (docs/import-export.md#files).

use jiff::Timestamp;
use kinde_meter_core::request::{ParseError, UsageRecord};
use kinde_meter_wire::{CreateMeterUsageRecordRequest, ErrorCode, IdempotencyKey};
use serde_json::{Map, Value};

/// The optional column / key that carries a row's own `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_FIELD: &str = "idempotency_key";

/// A row that is a valid record.
#[derive(Debug)]
pub struct Parsed {
    /// The record as sent: every field in its canonical form.
    pub request: CreateMeterUsageRecordRequest,
    /// The canonical parts (`UsageRecord::canonical_parts`), for the batch key.
    pub canonical: [String; 5],
    /// The row's own key, from its `idempotency_key` column or field.
    pub key: Option<IdempotencyKey>,
}

/// Why a row was not imported: an error code and a message, as the server
/// writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// E.g. `INVALID_METER_VALUE`.
    pub code: String,
    /// What was wrong.
    pub message: String,
}

impl Reason {
    /// A reason with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Reason {
        Reason {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line, whatever the message holds.
        let message = self.message.replace(['\r', '\n'], " ");
        write!(f, "{}: {message}", self.code)
    }
}

/// What a CSV column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// A request field.
    Field(&'static str),
    /// The row's own key.
    Key,
}

/// A CSV row under `columns` (an empty cell is an absent field).
pub fn csv_row(columns: &[Column], record: &csv::ByteRecord) -> Result<Parsed, Reason> {
    if record.len() != columns.len() {
        return Err(Reason::new(
            ErrorCode::InvalidField.as_str(),
            format!(
                "the row has {} fields, the header {}",
                record.len(),
                columns.len()
            ),
        ));
    }
    let mut object = Map::new();
    let mut key = None;
    for (column, cell) in columns.iter().zip(record) {
        // An empty cell is an absent field.
        if cell.is_empty() {
            continue;
        }
        let name = match column {
            Column::Field(name) => name,
            Column::Key => IDEMPOTENCY_KEY_FIELD,
        };
        let Ok(text) = std::str::from_utf8(cell) else {
            return Err(Reason::new(
                ErrorCode::InvalidField.as_str(),
                format!("{name} is not UTF-8"),
            ));
        };
        match column {
            Column::Field(name) => {
                object.insert((*name).to_owned(), Value::String(text.to_owned()));
            }
            Column::Key => key = Some(text.to_owned()),
        }
    }
    let record = UsageRecord::from_json(&Value::Object(object), NO_FUTURE_BOUND);
    parsed(record, key)
}

/// One NDJSON line, without its line break.
pub fn ndjson_line(line: &[u8]) -> Result<Parsed, Reason> {
    let record = UsageRecord::from_json_slice(line, NO_FUTURE_BOUND);
    if record.is_err() {
        return parsed(record, None);
    }
    #[derive(serde::Deserialize)]
    struct KeyField {
        // Absent or null: none.
        #[serde(default)]
        idempotency_key: Option<String>,
    }
    let key = match serde_json::from_slice::<KeyField>(line) {
        Ok(KeyField { idempotency_key }) => idempotency_key,
        Err(_) => {
            return Err(Reason::new(
                ErrorCode::InvalidField.as_str(),
                format!("{IDEMPOTENCY_KEY_FIELD} must be a string"),
            ));
        }
    };
    parsed(record, key)
}

/// The parse's "now": the server refuses a timestamp more than 5 minutes
/// ahead of its own clock, at receipt. Deciding that here, on this machine's
/// clock, would make which rows are sent depend on the time of the run, and so
/// the batches and their keys; the server decides it and reports it per row.
const NO_FUTURE_BOUND: Timestamp = Timestamp::MAX;

fn parsed(record: Result<UsageRecord, ParseError>, key: Option<String>) -> Result<Parsed, Reason> {
    let record = record.map_err(|error| match error {
        ParseError::Json(error) => Reason::new(ErrorCode::InvalidJson.as_str(), error.to_string()),
        // The first problem's code with every problem's message, as the server
        // reports a batch record (docs/api.md#batch).
        ParseError::Fields(problems) => Reason::new(
            problems
                .first()
                .map_or(ErrorCode::InvalidJson.as_str(), |p| p.code.as_str()),
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    })?;
    let key = key
        .map(|key| {
            IdempotencyKey::new(key).map_err(|error| {
                Reason::new(
                    ErrorCode::InvalidField.as_str(),
                    format!("{IDEMPOTENCY_KEY_FIELD}: {error}"),
                )
            })
        })
        .transpose()?;
    Ok(Parsed {
        request: CreateMeterUsageRecordRequest {
            customer_agreement_id: record.agreement_id.to_string(),
            billing_feature_code: record.feature_code.to_string(),
            meter_value: record.value.to_string(),
            meter_usage_timestamp: record.timestamp.map(|at| at.to_string()),
            meter_type_code: Some(record.meter_type),
        },
        canonical: record.canonical_parts(),
        key,
    })
}
