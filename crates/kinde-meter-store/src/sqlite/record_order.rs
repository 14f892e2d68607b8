//! The raw records' period order, filed in chunks (docs/design.md#record-order).
//!
//! Two reads need a period's records in order: the deltas after a late
//! absolute (`aggregates::deltas_after`) and the dashboard's latest records
//! (`browse::latest_records`). An index on `usage_records` kept that order
//! but made every commit write one index leaf per aggregate it touched. Now
//! `usage_record_order` holds the same keys for every record up to
//! `usage_record_order_filed.upto_seq`, and the writer files the newer ones
//! (the tail) once there are [`crate::StoreConfig::record_order_chunk`] of
//! them, in the transaction that crosses the mark. A read takes the
//! filed part from the order table and the tail from a rowid range scan of
//! `usage_records`, in one statement or one transaction: one snapshot.

use rusqlite::Connection;

/// The subquery that reads where the filed part ends.
macro_rules! upto_sql {
    () => {
        "(SELECT upto_seq FROM usage_record_order_filed WHERE id = 0)"
    };
}
pub(super) use upto_sql;

/// Files every record after `upto` (the tail) if there are at least `chunk`
/// (and at least one) of them, `last_seq` being the highest stored. Runs in
/// the writer's transaction, which holds the write lock, so no record is
/// inserted meanwhile.
pub(super) fn file_tail(
    conn: &Connection,
    upto: i64,
    last_seq: i64,
    chunk: usize,
) -> rusqlite::Result<()> {
    let tail = u64::try_from(last_seq.saturating_sub(upto)).unwrap_or(0);
    if tail == 0 || tail < chunk as u64 {
        return Ok(());
    }
    // In arrival order: the leaves a chunk touches are the same in any order,
    // and an ORDER BY made SQLite sort the chunk first, +2.9 K instructions a
    // record (callgrind, chunks of 1 000 over 50 agreements), as much as
    // the insert itself.
    //
    // OR FAIL: a multi-row INSERT that may ABORT keeps a statement journal
    // (the original of every page it changes, spilled to a temporary file past
    // 64 KiB) so that it can undo itself alone; with batches of 1 000 records
    // that was ~230 KB of extra writes a commit. Nothing can conflict here
    // (each seq is filed once), and any error fails the whole transaction,
    // which rolls back, so the statement never needs to undo itself.
    conn.prepare_cached(
        "INSERT OR FAIL INTO usage_record_order
             (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
         SELECT agreement_id, feature_code, period_start_ns, effective_at_ns, seq
         FROM usage_records WHERE seq > ?1 AND seq <= ?2",
    )?
    .execute((upto, last_seq))?;
    conn.prepare_cached("UPDATE usage_record_order_filed SET upto_seq = ?1 WHERE id = 0")?
        .execute([last_seq])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{aggregates::DELTAS_AFTER, browse::LATEST_RECORDS, schema};

    /// How SQLite runs `sql`: the `detail` column of EXPLAIN QUERY PLAN.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Unbound parameters are NULL, which does not change the plan.
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get::<_, String>(3).unwrap());
        }
        steps
    }

    /// Both reads take the filed part by the order table's key and the tail by
    /// a rowid range, never by a scan or a sort of every record (which would
    /// make them grow with history).
    #[test]
    fn the_reads_use_the_order_key_and_the_tail_range() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        for sql in [DELTAS_AFTER, LATEST_RECORDS] {
            let steps = plan(&conn, sql);
            let text = steps.join("\n");
            assert!(
                steps
                    .iter()
                    .any(|s| s.starts_with("SEARCH o USING PRIMARY KEY")),
                "{text}"
            );
            assert!(
                steps
                    .iter()
                    .any(|s| s
                        .starts_with("SEARCH usage_records USING INTEGER PRIMARY KEY (rowid>?)")),
                "{text}"
            );
            // No table scanned (a scan of a subquery's few rows is fine), and
            // no sort of an aggregate's whole history.
            assert!(
                !steps
                    .iter()
                    .any(|s| s.starts_with("SCAN") && !s.starts_with("SCAN (subquery")),
                "{text}"
            );
            assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{text}");
        }
    }
}
