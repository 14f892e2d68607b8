//! The raw records' period order, filed in runs (docs/design.md#record-order).
//!
//! Two reads need a period's records in order: the deltas after a late
//! absolute (`aggregates::deltas_after`) and the dashboard's latest records
//! (`browse::latest_records`). Every record up to
//! `usage_record_order_filed.upto_seq` is filed in `usage_record_runs`; the
//! newer ones (the tail) are found by a rowid range scan of `usage_records`,
//! and the writer files them once there are
//! [`crate::StoreConfig::record_order_chunk`] of them, in the transaction that
//! crosses the mark.
//!
//! A run is one row per aggregate (agreement, feature, period) per filing:
//! the order keys of its records, `(effective_at_ns, seq)` ascending, packed
//! in a blob, and its last key, which the index orders runs by. Filing a
//! chunk writes one small row per aggregate in it, not one index entry per
//! record (bench/HISTORY.md, "Batches"). A run names records by `seq` only;
//! the reads fetch each record by it and skip the ones deleted since
//! (retention), and filed seqs are never given out again (`usage.rs`).
//!
//! Every read here runs inside the caller's transaction, so that the filed
//! part, the mark and the tail come from one snapshot.

// foldhash rather than std's SipHash for the runs' index, as in the writer's
// cache (`cache.rs`): a filing hashes one key per record.
use foldhash::HashMap;
use rusqlite::{Connection, OptionalExtension};

use super::cache::AggregateKey;
use crate::browse::RecordOrder;

/// The subquery that reads where the filed part ends.
macro_rules! upto_sql {
    () => {
        "(SELECT upto_seq FROM usage_record_order_filed WHERE id = 0)"
    };
}
pub(super) use upto_sql;

/// The most records one run holds (a blob of 16 bytes each); a bigger group
/// is filed as several runs.
const RUN_MAX_ENTRIES: usize = 4096;

/// Order rows the migration to runs holds in memory at most.
const MIGRATION_BUFFER: usize = 1 << 16;

/// Bytes of one entry: `effective_at_ns` then `seq`, little-endian.
const ENTRY_BYTES: usize = 16;

/// The seq up to which records are filed.
pub(super) fn filed_upto(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(concat!("SELECT ", upto_sql!()))?
        .query_row([], |r| r.get(0))
}

/// Files the oldest records after `upto` (the tail) once there are at least
/// `chunk` (and at least one) of them, `last_seq` being the highest stored:
/// at least enough that fewer than `chunk` stay unfiled, and past that as
/// many more as add no aggregate beyond [`runs_per_filing`] of them. Where
/// many aggregates take a record or two each (thousands of customers), a
/// filing of the whole tail would write a run per record in one commit, a
/// stall for every request waiting on it; this way a filing writes a bounded
/// number of runs, and where few aggregates take many records it still files
/// the whole tail as few, full runs. Runs in the writer's transaction, which
/// holds the write lock, so no record is inserted meanwhile.
///
/// The records come from `unfiled` when it holds exactly the tail (the
/// writer inserted every one of them: [`UnfiledTail`]), else from
/// `usage_records`; `unfiled` then forgets what was filed.
pub(super) fn file_tail(
    conn: &Connection,
    upto: i64,
    last_seq: i64,
    chunk: usize,
    unfiled: &mut UnfiledTail,
) -> rusqlite::Result<()> {
    let tail = u64::try_from(last_seq.saturating_sub(upto)).unwrap_or(0);
    if tail == 0 || tail < chunk as u64 {
        return Ok(());
    }
    let mut filing = Filing {
        // Filed whatever their aggregates: the records up to `must`.
        must: upto.saturating_add(i64::try_from(tail + 1 - chunk.max(1) as u64).unwrap_or(0)),
        max_runs: runs_per_filing(chunk),
        runs: Runs::default(),
        filed: upto,
    };
    match unfiled.exactly(upto, last_seq) {
        Some(records) => {
            #[cfg(debug_assertions)]
            assert_same_as_stored(conn, upto, last_seq, records)?;
            for r in records {
                let key = &r.key;
                let (agreement, feature) = (key.agreement_id.as_str(), key.feature_code.as_str());
                let order = (r.effective_at_ns, r.seq);
                if !filing.offer(
                    agreement,
                    feature,
                    key.period_start_ns,
                    r.period_end_ns,
                    order,
                ) {
                    break;
                }
            }
        }
        None => {
            let mut read = conn.prepare_cached(TAIL_ROWS)?;
            let mut rows = read.query((upto, last_seq))?;
            while let Some(r) = rows.next()? {
                let (agreement, feature, start, end, order) = tail_row(r)?;
                if !filing.offer(agreement, feature, start, end, order) {
                    break;
                }
            }
        }
    }
    filing.runs.insert(conn)?;
    conn.prepare_cached("UPDATE usage_record_order_filed SET upto_seq = ?1 WHERE id = 0")?
        .execute([filing.filed])?;
    unfiled.filed_upto(filing.filed);
    Ok(())
}

/// The tail's records as [`file_tail`] reads them from the table, oldest first.
const TAIL_ROWS: &str = "SELECT agreement_id, feature_code, period_start_ns, period_end_ns,
            effective_at_ns, seq
     FROM usage_records WHERE seq > ?1 AND seq <= ?2 ORDER BY seq";

/// A row of [`TAIL_ROWS`] (or of a query with its columns): agreement,
/// feature, period start and end, and the (effective instant, seq) order.
type TailRow<'r> = (&'r str, &'r str, i64, i64, (i64, i64));

fn tail_row<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<TailRow<'r>> {
    let text = |i| r.get_ref(i)?.as_str().map_err(rusqlite::Error::from);
    Ok((
        text(0)?,
        text(1)?,
        r.get(2)?,
        r.get(3)?,
        (r.get(4)?, r.get(5)?),
    ))
}

/// Debug builds (every test) check that what the writer remembers of the
/// tail is what the table holds.
#[cfg(debug_assertions)]
fn assert_same_as_stored(
    conn: &Connection,
    upto: i64,
    last_seq: i64,
    records: &[UnfiledRecord],
) -> rusqlite::Result<()> {
    let mut read = conn.prepare_cached(TAIL_ROWS)?;
    let mut rows = read.query((upto, last_seq))?;
    let mut stored = Vec::new();
    while let Some(r) = rows.next()? {
        let (agreement, feature, start, end, order) = tail_row(r)?;
        stored.push((agreement.to_owned(), feature.to_owned(), start, end, order));
    }
    let remembered: Vec<_> = records
        .iter()
        .map(|r| {
            let key = &r.key;
            let (agreement, feature) = (key.agreement_id.as_str(), key.feature_code.as_str());
            let order = (r.effective_at_ns, r.seq);
            (
                agreement.to_owned(),
                feature.to_owned(),
                key.period_start_ns,
                r.period_end_ns,
                order,
            )
        })
        .collect();
    assert_eq!(
        remembered, stored,
        "the writer's unfiled tail differs from usage_records"
    );
    Ok(())
}

/// One filing in progress: the records offered in seq order, grouped in runs.
struct Filing {
    /// Records up to this seq are filed whatever their aggregates.
    must: i64,
    /// Past `must`, the runs a filing may have at most.
    max_runs: usize,
    runs: Runs,
    /// The last record filed.
    filed: i64,
}

impl Filing {
    /// Files the next record, unless it would start a run past the bound;
    /// whether the filing goes on.
    fn offer(
        &mut self,
        agreement_id: &str,
        feature_code: &str,
        period_start_ns: i64,
        period_end_ns: i64,
        (effective_at_ns, seq): (i64, i64),
    ) -> bool {
        let may_start_run = seq <= self.must || self.runs.runs.len() < self.max_runs;
        let added = self.runs.add(
            agreement_id,
            feature_code,
            period_start_ns,
            period_end_ns,
            (effective_at_ns, seq),
            may_start_run,
        );
        if added {
            self.filed = seq;
        }
        added
    }
}

/// The records the writer has inserted and not filed yet, in seq order, so
/// that a filing need not read them back: a copy of the table's tail, kept
/// with the writer's cache and dropped with it (another connection wrote, a
/// transaction failed: `cache.rs`). [`file_tail`] uses it only when it holds
/// every seq of the tail and no other; otherwise it reads the table.
#[derive(Default)]
pub(super) struct UnfiledTail {
    records: Vec<UnfiledRecord>,
}

/// What a filing needs of a record.
pub(super) struct UnfiledRecord {
    pub key: AggregateKey,
    pub period_end_ns: i64,
    pub effective_at_ns: i64,
    pub seq: i64,
}

impl UnfiledTail {
    /// More than this many records is more than a tail (a filing keeps fewer
    /// than a chunk): past it the copy starts again, from the next record.
    const MOST: usize = 1 << 16;

    /// Remembers a record just inserted (seqs ascending).
    pub(super) fn push(&mut self, record: UnfiledRecord) {
        if self.records.len() >= Self::MOST
            || self
                .records
                .last()
                .is_some_and(|last| last.seq >= record.seq)
        {
            self.records.clear();
        }
        self.records.push(record);
    }

    /// Forgets everything (the table may have changed behind the writer).
    pub(super) fn clear(&mut self) {
        self.records.clear();
    }

    /// The records with seqs `upto + 1 ..= last_seq`, if it holds exactly those.
    fn exactly(&self, upto: i64, last_seq: i64) -> Option<&[UnfiledRecord]> {
        let skip = self.records.partition_point(|r| r.seq <= upto);
        let records = &self.records[skip..];
        let whole = records.first().is_some_and(|r| r.seq == upto + 1)
            && records.last().is_some_and(|r| r.seq == last_seq)
            && i64::try_from(records.len()).is_ok_and(|n| n == last_seq - upto);
        whole.then_some(records)
    }

    /// Forgets the records filed (seqs up to `filed`).
    fn filed_upto(&mut self, filed: i64) {
        let filed_count = self.records.partition_point(|r| r.seq <= filed);
        self.records.drain(..filed_count);
    }
}

/// The aggregates one filing takes past the records it must file: a quarter
/// of a chunk (64 of 256), at least one.
fn runs_per_filing(chunk: usize) -> usize {
    (chunk / 4).max(1)
}

/// Runs being built, one per aggregate, in the order their aggregates came.
#[derive(Default)]
struct Runs {
    /// `agreement \0 feature \0 period start` (its 8 bytes) → index in `runs`.
    index: HashMap<Vec<u8>, usize>,
    /// A key being looked up, reused so that a hit allocates nothing.
    probe: Vec<u8>,
    runs: Vec<Run>,
}

/// The records of one aggregate to file.
struct Run {
    agreement_id: String,
    feature_code: String,
    period_start_ns: i64,
    period_end_ns: i64,
    /// `(effective_at_ns, seq)`, in the order read; sorted when inserted.
    entries: Vec<(i64, i64)>,
}

impl Runs {
    /// Adds a row of (agreement, feature, period start, period end,
    /// effective instant, seq).
    fn add_row(&mut self, r: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let (agreement, feature, start, end, order) = tail_row(r)?;
        self.add(agreement, feature, start, end, order, true);
        Ok(())
    }

    /// Adds a record to its aggregate's run, unless it would start a run and
    /// `may_start_run` is false; whether it was added.
    fn add(
        &mut self,
        agreement_id: &str,
        feature_code: &str,
        period_start_ns: i64,
        period_end_ns: i64,
        entry: (i64, i64),
        may_start_run: bool,
    ) -> bool {
        self.probe.clear();
        self.probe.extend_from_slice(agreement_id.as_bytes());
        self.probe.push(0);
        self.probe.extend_from_slice(feature_code.as_bytes());
        self.probe.push(0);
        self.probe.extend_from_slice(&period_start_ns.to_le_bytes());
        let at = match self.index.get(self.probe.as_slice()) {
            Some(&at) => at,
            None if !may_start_run => return false,
            None => {
                self.index.insert(self.probe.clone(), self.runs.len());
                self.runs.push(Run {
                    agreement_id: agreement_id.to_owned(),
                    feature_code: feature_code.to_owned(),
                    period_start_ns,
                    period_end_ns,
                    entries: Vec::new(),
                });
                self.runs.len() - 1
            }
        };
        self.runs[at].entries.push(entry);
        true
    }

    /// One row per aggregate (more past [`RUN_MAX_ENTRIES`]), entries sorted.
    fn insert(self, conn: &Connection) -> rusqlite::Result<()> {
        // OR FAIL, as a multi-row statement needs it: an INSERT that may ABORT
        // keeps a statement journal of every page it changes (the run's row
        // and its index entry) so that it can undo itself alone; nothing here
        // can conflict, and any error rolls the whole transaction back.
        let mut insert = conn.prepare_cached(
            "INSERT OR FAIL INTO usage_record_runs (agreement_id, feature_code, period_start_ns,
                 period_end_ns, last_effective_ns, last_seq, entries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for mut run in self.runs {
            run.entries.sort_unstable();
            for part in run.entries.chunks(RUN_MAX_ENTRIES) {
                let Some(&(last_effective_ns, last_seq)) = part.last() else {
                    continue;
                };
                insert.execute((
                    &run.agreement_id,
                    &run.feature_code,
                    run.period_start_ns,
                    run.period_end_ns,
                    last_effective_ns,
                    last_seq,
                    encode(part),
                ))?;
            }
        }
        Ok(())
    }
}

/// A run's blob: each `(effective_at_ns, seq)` as two little-endian i64.
fn encode(entries: &[(i64, i64)]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (effective_at_ns, seq) in entries {
        blob.extend_from_slice(&effective_at_ns.to_le_bytes());
        blob.extend_from_slice(&seq.to_le_bytes());
    }
    blob
}

/// The entries of a run's blob; an error if its length is not whole entries
/// (a corrupt row).
fn decode(blob: &[u8]) -> rusqlite::Result<impl Iterator<Item = (i64, i64)> + '_> {
    if !blob.len().is_multiple_of(ENTRY_BYTES) {
        return Err(super::codec::corrupt(format!(
            "a run of the record order has {} bytes, not whole entries",
            blob.len()
        )));
    }
    Ok(blob.chunks_exact(ENTRY_BYTES).map(|entry| {
        let (effective_at, seq) = entry.split_at(8);
        let word = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or_default());
        (word(effective_at), word(seq))
    }))
}

/// The filed records of a period ordered after `(effective_at_ns, seq)`, by
/// seq, in no particular order; some may have been deleted since.
pub(super) fn filed_after(
    conn: &Connection,
    agreement_id: &str,
    feature_code: &str,
    period_start_ns: i64,
    after: (i64, i64),
) -> rusqlite::Result<Vec<i64>> {
    let mut runs = conn.prepare_cached(RUNS_AFTER)?;
    let mut rows = runs.query((agreement_id, feature_code, period_start_ns, after.0))?;
    let mut seqs = Vec::new();
    while let Some(r) = rows.next()? {
        let blob = r.get_ref(0)?.as_blob()?;
        seqs.extend(decode(blob)?.filter(|e| *e > after).map(|(_, seq)| seq));
    }
    Ok(seqs)
}

/// The runs of a period that may hold records ordered after an instant: those
/// whose last record is not before it.
pub(super) const RUNS_AFTER: &str = "SELECT entries FROM usage_record_runs
     WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3
       AND last_effective_ns >= ?4";

/// The newest `limit` filed records of an agreement's feature in
/// [`RecordOrder`], newest first, leaving out the seqs in `gone` (records
/// found deleted). Runs are read newest last record first, and reading stops
/// once `limit` are found that no later run can beat.
pub(super) fn filed_newest(
    conn: &Connection,
    agreement_id: &str,
    feature_code: &str,
    limit: usize,
    gone: &[i64],
) -> rusqlite::Result<Vec<RecordOrder>> {
    let mut runs = conn.prepare_cached(RUNS_NEWEST_FIRST)?;
    let mut rows = runs.query((agreement_id, feature_code))?;
    let mut best: Vec<RecordOrder> = Vec::new();
    while let Some(r) = rows.next()? {
        let period_start_ns: i64 = r.get(0)?;
        let newest_here = RecordOrder {
            period_start_ns,
            effective_at_ns: r.get(1)?,
            seq: r.get(2)?,
        };
        if limit == 0 || (best.len() >= limit && newest_here < best[limit - 1]) {
            break;
        }
        let blob = r.get_ref(3)?.as_blob()?;
        best.extend(decode(blob)?.filter(|(_, seq)| !gone.contains(seq)).map(
            |(effective_at_ns, seq)| RecordOrder {
                period_start_ns,
                effective_at_ns,
                seq,
            },
        ));
        best.sort_unstable_by(|a, b| b.cmp(a));
        best.truncate(limit);
    }
    Ok(best)
}

/// An agreement's feature's runs, the newest last record first.
pub(super) const RUNS_NEWEST_FIRST: &str =
    "SELECT period_start_ns, last_effective_ns, last_seq, entries FROM usage_record_runs
     WHERE agreement_id = ?1 AND feature_code = ?2
     ORDER BY period_start_ns DESC, last_effective_ns DESC, last_seq DESC";

/// Schema version 7's step: the order table of version 6, one row per
/// record, becomes runs, then goes. Does nothing where it is gone already.
/// Where runs exist too (the migration tests apply versions again), they are
/// rebuilt from the order table, which version 6 has just filled with every
/// record up to the mark.
pub(super) fn runs_from_order_table(conn: &Connection) -> rusqlite::Result<()> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_record_order'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(());
    }
    conn.execute("DELETE FROM usage_record_runs", [])?;
    {
        // The order table's key order (a scan of its key, no sort): each
        // aggregate's records come together and ascending. The period's end
        // comes from the record itself (a row per record, by rowid), which
        // also leaves out any order row whose record is gone.
        let mut read = conn.prepare(
            "SELECT o.agreement_id, o.feature_code, o.period_start_ns, r.period_end_ns,
                    o.effective_at_ns, o.seq
             FROM usage_record_order o JOIN usage_records r ON r.seq = o.seq
             ORDER BY o.agreement_id, o.feature_code, o.period_start_ns, o.effective_at_ns, o.seq",
        )?;
        let mut rows = read.query([])?;
        let mut runs = Runs::default();
        let mut buffered = 0;
        while let Some(r) = rows.next()? {
            runs.add_row(r)?;
            // Memory stays bounded whatever the history: a run is cut here
            // (an aggregate's records may then span two runs, which is fine).
            buffered += 1;
            if buffered == MIGRATION_BUFFER {
                std::mem::take(&mut runs).insert(conn)?;
                buffered = 0;
            }
        }
        runs.insert(conn)?;
    }
    conn.execute_batch("DROP TABLE usage_record_order")
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{aggregates::DELTAS_TAIL, browse::LATEST_TAIL, schema};
    use super::{RUNS_AFTER, RUNS_NEWEST_FIRST, decode, encode};

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

    /// Nothing scanned or sorted whole (which would make the reads grow with
    /// history): a scan of a subquery's few rows is fine.
    fn assert_no_scan_or_sort(steps: &[String]) {
        let text = steps.join("\n");
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN") && !s.starts_with("SCAN (subquery")),
            "{text}"
        );
        assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{text}");
    }

    /// The runs are found by their index (in its order for the newest first),
    /// the tail by a rowid range.
    #[test]
    fn the_reads_use_the_runs_index_and_the_tail_range() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        for sql in [RUNS_AFTER, RUNS_NEWEST_FIRST] {
            let steps = plan(&conn, sql);
            assert!(
                steps
                    .iter()
                    .any(|s| s.starts_with("SEARCH usage_record_runs USING INDEX")),
                "{}",
                steps.join("\n")
            );
            assert_no_scan_or_sort(&steps);
        }
        for sql in [DELTAS_TAIL, LATEST_TAIL] {
            let steps = plan(&conn, sql);
            assert!(
                steps
                    .iter()
                    .any(|s| s
                        .starts_with("SEARCH usage_records USING INTEGER PRIMARY KEY (rowid>?)")),
                "{}",
                steps.join("\n")
            );
            assert_no_scan_or_sort(&steps);
        }
    }

    #[test]
    fn a_run_decodes_to_what_was_encoded() {
        let entries = [(i64::MIN, 1), (-1, i64::MAX), (0, 0), (1_741_000_000, 42)];
        let blob = encode(&entries);
        assert_eq!(blob.len(), entries.len() * 16);
        assert_eq!(decode(&blob).unwrap().collect::<Vec<_>>(), entries);
        assert!(decode(&blob[1..]).is_err());
        assert_eq!(decode(&[]).unwrap().count(), 0);
    }
}
