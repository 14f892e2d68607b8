//! Remembered outcomes of keyed submissions as stored text, shared by the
//! backends: `[null, {"code": "AGREEMENT_NOT_FOUND", "message": "…"}]`, one
//! entry per record, `null` for a stored one.

use kinde_meter_core::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::{RecordFailure, RecordResult, SubmissionKind};

#[derive(Serialize, Deserialize)]
struct StoredFailure {
    code: String,
    message: String,
}

/// How a submission kind is stored.
pub(crate) fn kind_str(kind: SubmissionKind) -> &'static str {
    match kind {
        SubmissionKind::Single => "single",
        SubmissionKind::Batch => "batch",
    }
}

/// The per-record results as stored.
pub(crate) fn encode(results: &[RecordResult]) -> String {
    let stored: Vec<Option<StoredFailure>> = results
        .iter()
        .map(|r| {
            r.as_ref().err().map(|f| StoredFailure {
                code: f.code.as_str().to_owned(),
                message: f.message.clone(),
            })
        })
        .collect();
    serde_json::to_string(&stored).expect("plain strings serialise")
}

/// Stored per-record results.
pub(crate) fn decode(json: &str) -> Result<Vec<RecordResult>, String> {
    let stored: Vec<Option<StoredFailure>> =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    stored
        .into_iter()
        .map(|entry| match entry {
            None => Ok(Ok(())),
            Some(f) => match ErrorCode::parse(&f.code) {
                Some(code) => Ok(Err(RecordFailure::new(code, f.message))),
                None => Err(format!("unknown error code {:?}", f.code)),
            },
        })
        .collect()
}
