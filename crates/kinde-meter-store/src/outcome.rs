//! Remembered outcomes of keyed submissions as stored text, shared by the
//! backends: `[null, {"code": "AGREEMENT_NOT_FOUND", "message": "…"}]`, one
//! entry per record, `null` for a stored one.

use std::sync::Arc;

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

/// Whether a submission of `kind` with `results` is remembered under its key:
/// a batch always (always answered 200); a single record when stored (200) or
/// refused by an entitlement limit, so that a replay answers the same refusal
/// even if usage has dropped since. Other failures of a single record store
/// nothing, not even the key: a retry is processed afresh.
pub(crate) fn remembered(kind: SubmissionKind, results: &[RecordResult]) -> bool {
    match kind {
        SubmissionKind::Batch => true,
        SubmissionKind::Single => {
            !results.is_empty()
                && results.iter().all(|r| match r {
                    Ok(()) => true,
                    Err(f) => f.code == ErrorCode::EntitlementLimitExceeded,
                })
        }
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

/// Why a remembered outcome cannot be replayed (the database was damaged, or
/// written by something else).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UnreadableOutcome {
    /// Not the JSON `encode` writes.
    #[error("{0}")]
    Json(Arc<serde_json::Error>),
    /// An error code this build does not know.
    #[error("unknown error code {0:?}")]
    UnknownCode(String),
    /// The key was claimed but its outcome never stored (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    #[error("the outcome was never written")]
    NeverWritten,
}

/// Stored per-record results.
pub(crate) fn decode(json: &str) -> Result<Vec<RecordResult>, UnreadableOutcome> {
    let stored: Vec<Option<StoredFailure>> =
        serde_json::from_str(json).map_err(|e| UnreadableOutcome::Json(Arc::new(e)))?;
    stored
        .into_iter()
        .map(|entry| match entry {
            None => Ok(Ok(())),
            Some(f) => match ErrorCode::parse(&f.code) {
                Some(code) => Ok(Err(RecordFailure::new(code, f.message))),
                None => Err(UnreadableOutcome::UnknownCode(f.code)),
            },
        })
        .collect()
}
