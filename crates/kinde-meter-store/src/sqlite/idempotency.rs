//! Remembered outcomes of submissions that carried an `Idempotency-Key` (`docs/api.md`).
//!
//! A row holds the request's fingerprint and its per-record results as JSON,
//! `[null, {"code": "AGREEMENT_NOT_FOUND", "message": "…"}]` (`null` = stored).
//! Rows older than the retention window count as absent: they are overwritten by
//! the next use of the key and purged in bounded slices by the writer.

use rusqlite::{Connection, OptionalExtension};

use super::error::OpError;

use crate::{
    IdempotencyClaim, RecordResult, StoreError, SubmissionKind, SubmissionOutcome,
    outcome::{decode, encode, kind_str},
};

/// What a claim finds: `None` if the key is unused (or expired), otherwise the
/// answer to give instead of processing: the original results when the request
/// is the same, `KeyReused` when it is not. A stored outcome that does not decode
/// fails this submission only (a refusal), not the whole group commit it is part of.
pub(super) fn check(
    conn: &Connection,
    client_id: &str,
    claim: &IdempotencyClaim,
    kind: SubmissionKind,
    not_before_ns: i64,
) -> Result<Option<SubmissionOutcome>, OpError<StoreError>> {
    let row = conn
        .prepare_cached(
            "SELECT fingerprint, kind, outcome_json FROM idempotency_keys
             WHERE client_id = ?1 AND key = ?2 AND created_at_ns >= ?3",
        )?
        .query_row((client_id, claim.key.as_str(), not_before_ns), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((fingerprint, stored_kind, outcome_json)) = row else {
        return Ok(None);
    };
    // The same key on the other endpoint is another request, whatever the hash.
    if fingerprint != claim.fingerprint.as_str() || stored_kind != kind_str(kind) {
        return Ok(Some(SubmissionOutcome::KeyReused));
    }
    let results = decode(&outcome_json).map_err(|e| {
        StoreError::Unavailable(format!(
            "the outcome stored for idempotency key {:?} is unreadable: {e}",
            claim.key.as_str()
        ))
    })?;
    Ok(Some(SubmissionOutcome::Replayed(results)))
}

/// Remembers `results` for the claim, replacing an expired row of the same key.
pub(super) fn remember(
    conn: &Connection,
    client_id: &str,
    claim: &IdempotencyClaim,
    kind: SubmissionKind,
    results: &[RecordResult],
    created_at_ns: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys
             (client_id, key, fingerprint, kind, outcome_json, created_at_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        client_id,
        claim.key.as_str(),
        claim.fingerprint.as_str(),
        kind_str(kind),
        encode(results),
        created_at_ns,
    ))?;
    Ok(())
}

/// Deletes up to `limit` rows created before `before_ns`; returns how many. Bounded
/// so a purge never holds the write lock for long.
pub(super) fn purge(conn: &Connection, before_ns: i64, limit: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE (client_id, key) IN (
             SELECT client_id, key FROM idempotency_keys WHERE created_at_ns < ?1 LIMIT ?2)",
    )?
    .execute((before_ns, limit))
}
