//! The storage engine's own ceiling for kinde-meter's usage writes (issue 11):
//! how many usage records per second one SQLite connection stores with the
//! store's real schema and settings (WAL, `synchronous=FULL`, foreign keys)
//! and the writer's own statements, with nothing else around it: no HTTP, no
//! parsing, no checks, no queue. The writer thread does all of this and more
//! per record, so its throughput cannot exceed these figures.
//!
//!     cargo run --release -p kinde-meter-store --example sqlite_ceiling -- [DIR]
//!
//! Transactions of 32 rows are what the single-record POST gets at 64
//! connections (the group commit takes 27-32 records a commit there); of
//! 1 000, what the batch endpoint gets (10 requests of 100).
//!
//! Each line: rows per transaction, what each transaction does, then over
//! 200 000 rows (best of 3 runs, each on a fresh database): rows/s and µs per
//! row of wall time (which includes waiting for each COMMIT's fsync, so it
//! depends on the disk and on what else uses it), and the thread's CPU time
//! (user + system, from `/proc/thread-self/stat`) per row, with the rows/s
//! that CPU time alone allows: the ceiling of one writer thread on a disk
//! whose fsync costs nothing.

use std::{path::Path, time::Instant};

use kinde_meter_store::{StoreConfig, sqlite::SqliteStore};
use rusqlite::{Connection, TransactionBehavior, params};

const ROWS: usize = 200_000;
const AGREEMENTS: usize = 50;

/// What each transaction does besides its INSERTs.
#[derive(Clone, Copy)]
enum Work {
    /// A minimal row (`INTEGER PRIMARY KEY` and a short text, no index, no
    /// foreign key) into a table of its own: what a generic "inserts per
    /// second" figure measures, for comparison.
    MinimalRow,
    /// One INSERT per record, foreign keys off.
    InsertNoForeignKeys,
    /// One INSERT per record (what the writer runs per record).
    Insert,
    /// Plus one UPDATE per aggregate the transaction touched (what the
    /// writer's flush runs before COMMIT).
    InsertAndAggregates,
    /// The writer's INSERT without the period index (`usage_records_by_period`):
    /// what the index costs. Since schema version 6 this is the writer's
    /// INSERT; the other `Insert*` variants put the index back, as versions 1
    /// to 5 had it.
    InsertWithoutIndex,
    /// Schema version 6's write: the INSERT, the aggregate UPDATEs, and the
    /// records filed in period order, one row per record of a `WITHOUT ROWID`
    /// table (`usage_record_order`), once 256 are unfiled.
    InsertAggregatesAndFiling,
    /// The same row into a `WITHOUT ROWID` table whose primary key is the period
    /// index's key: one B-tree per record instead of two.
    InsertClustered,
    /// The period index keyed by the agreement's integer `seq` instead of its
    /// text id.
    InsertIntegerKeyIndex,
    /// Schema version 6's write, but the order table keyed by an integer per
    /// (agreement, feature) instead of the two texts: what a smaller order
    /// key would give (not built; bench/HISTORY.md, "Batches: the order filing is
    /// the engine's ceiling").
    FilingIntegerKey,
    /// Schema version 7's write, the store's: the INSERT, the aggregate
    /// UPDATEs, and once 256 are unfiled, the records filed as runs, one row
    /// per aggregate (`usage_record_runs`), as `record_order.rs` does
    /// (docs/design.md#record-order).
    FilingRuns,
}

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| "/tmp".to_owned());
    for per_tx in [32, 100, 1000] {
        for work in [
            Work::MinimalRow,
            Work::InsertNoForeignKeys,
            Work::Insert,
            Work::InsertAndAggregates,
            Work::InsertWithoutIndex,
            Work::InsertAggregatesAndFiling,
            Work::InsertClustered,
            Work::InsertIntegerKeyIndex,
            Work::FilingIntegerKey,
            Work::FilingRuns,
        ] {
            let runs: Vec<(f64, f64)> = (0..3)
                .map(|run| measure(Path::new(&base), per_tx, work, run))
                .collect();
            let best = runs.iter().map(|r| r.0).fold(f64::MAX, f64::min);
            let cpu = runs.iter().map(|r| r.1).fold(f64::MAX, f64::min);
            let name = match work {
                Work::MinimalRow => "a minimal row (INTEGER PRIMARY KEY, short text)",
                Work::InsertNoForeignKeys => "INSERT only, foreign_keys=OFF",
                Work::Insert => "INSERT only (the writer's statement)",
                Work::InsertAndAggregates => {
                    "INSERT + aggregate UPDATE per (agreement, feature, period)"
                }
                Work::InsertWithoutIndex => "INSERT only, without the period index",
                Work::InsertAggregatesAndFiling => {
                    "INSERT + aggregate UPDATE + order rows by 256 (schema v6)"
                }
                Work::InsertClustered => "INSERT into a WITHOUT ROWID table keyed by period",
                Work::InsertIntegerKeyIndex => "INSERT, the period index on the agreement's seq",
                Work::FilingIntegerKey => "v6, the order table keyed by an integer series",
                Work::FilingRuns => "INSERT + aggregate UPDATE + runs by 256 (schema v7)",
            };
            println!(
                "{per_tx:>5} rows/tx  {name:<58} wall {:>7.0} rows/s {:>6.2} µs/row | CPU {:>5.2} µs/row = {:>7.0} rows/s",
                ROWS as f64 / best,
                best * 1e6 / ROWS as f64,
                cpu * 1e6 / ROWS as f64,
                ROWS as f64 / cpu
            );
        }
    }
}

/// This thread's CPU time so far (user + system), in seconds.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')').
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Files the records after `filed` up to `last` with `insert` (its `?1` and
/// `?2`), and moves the filed mark, as `record_order.rs` does.
fn file_by_statement(tx: &rusqlite::Transaction<'_>, insert: &str, filed: i64, last: i64) {
    tx.prepare_cached(insert)
        .and_then(|mut s| s.execute([filed, last]))
        .and_then(|_| {
            tx.execute(
                "UPDATE usage_record_order_filed SET upto_seq = ?1 WHERE id = 0",
                [last],
            )
        })
        .expect("file");
}

/// [`Work::FilingRuns`]: the records after `filed` up to `last`, grouped by
/// aggregate, each group's `(effective_at_ns, seq)` sorted and packed in one
/// row's blob, as the store's `record_order.rs` files them (its module is
/// private; this copy keeps the example's figures honest).
fn file_runs(tx: &rusqlite::Transaction<'_>, filed: i64, last: i64) {
    /// agreement, feature, period start and end, entries
    type Run = (String, String, i64, i64, Vec<(i64, i64)>);
    let mut runs: Vec<Run> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut probe = String::new();
    let mut read = tx
        .prepare_cached(
            "SELECT agreement_id, feature_code, period_start_ns, period_end_ns,
                    effective_at_ns, seq
             FROM usage_records WHERE seq > ?1 AND seq <= ?2",
        )
        .expect("prepare");
    let mut rows = read.query([filed, last]).expect("read the chunk");
    while let Some(r) = rows.next().expect("row") {
        let text = |i| r.get_ref(i).and_then(|v| Ok(v.as_str()?)).expect("text");
        let (agreement, feature) = (text(0), text(1));
        let period: i64 = r.get(2).expect("period");
        probe.clear();
        probe.push_str(agreement);
        probe.push('\0');
        probe.push_str(feature);
        probe.push('\0');
        probe.push_str(&period.to_string());
        let at = *index.entry(probe.clone()).or_insert_with(|| {
            runs.push((
                agreement.to_owned(),
                feature.to_owned(),
                period,
                r.get(3).expect("period end"),
                Vec::new(),
            ));
            runs.len() - 1
        });
        runs[at]
            .4
            .push((r.get(4).expect("effective"), r.get(5).expect("seq")));
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO usage_record_runs (agreement_id, feature_code, period_start_ns,
                 period_end_ns, last_effective_ns, last_seq, entries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .expect("prepare");
    for (agreement, feature, start, end, mut entries) in runs {
        entries.sort_unstable();
        let Some(&(last_effective, last_seq)) = entries.last() else {
            continue;
        };
        let blob: Vec<u8> = entries
            .iter()
            .flat_map(|(effective, seq)| [effective.to_le_bytes(), seq.to_le_bytes()])
            .flatten()
            .collect();
        insert
            .execute(params![
                agreement,
                feature,
                start,
                end,
                last_effective,
                last_seq,
                blob
            ])
            .expect("run");
    }
    tx.execute(
        "UPDATE usage_record_order_filed SET upto_seq = ?1 WHERE id = 0",
        [last],
    )
    .expect("mark");
}

/// Wall and CPU seconds to store [`ROWS`] records in transactions of `per_tx`.
fn measure(base: &Path, per_tx: usize, work: Work, run: usize) -> (f64, f64) {
    let dir = base.join(format!(
        "kinde-meter-ceiling-{}-{per_tx}-{run}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    // The store makes the schema (every migration) and is closed again.
    drop(SqliteStore::open(&dir, StoreConfig::default()).expect("open the store"));
    let conn = Connection::open(dir.join("kinde-meter.db")).expect("open");
    let fk = if matches!(work, Work::InsertNoForeignKeys) {
        "OFF"
    } else {
        "ON"
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys={fk};"
    ))
    .expect("pragmas");
    let ids: Vec<String> = (0..AGREEMENTS)
        .map(|i| format!("agreement_01a24ba0bf{i:022x}"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        conn.execute(
            "INSERT INTO agreements (id, customer_id, plan_code, interval, anchor_ns)
             VALUES (?1, ?2, 'pro', 'month', 0)",
            params![id, format!("cust_{i}")],
        )
        .expect("agreement");
        conn.execute(
            "INSERT INTO usage_aggregates (agreement_id, feature_code, period_start_ns,
                 period_end_ns, deltas_after, value, record_count)
             VALUES (?1, 'api_calls', 0, 1, '0', '0', 0)",
            params![id],
        )
        .expect("aggregate");
    }
    conn.execute_batch("CREATE TABLE minimal (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .expect("minimal table");
    match work {
        Work::MinimalRow | Work::InsertWithoutIndex | Work::FilingRuns => {}
        Work::InsertAggregatesAndFiling => conn
            .execute_batch(
                "CREATE TABLE usage_record_order (
                     agreement_id    TEXT NOT NULL,
                     feature_code    TEXT NOT NULL,
                     period_start_ns INTEGER NOT NULL,
                     effective_at_ns INTEGER NOT NULL,
                     seq             INTEGER NOT NULL,
                     PRIMARY KEY (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
                 ) WITHOUT ROWID;",
            )
            .expect("schema version 6's order table"),
        Work::FilingIntegerKey => conn
            .execute_batch(
                "ALTER TABLE usage_records ADD COLUMN agreement_seq INTEGER;
                 CREATE TABLE usage_record_order (
                     series          INTEGER NOT NULL,
                     period_start_ns INTEGER NOT NULL,
                     effective_at_ns INTEGER NOT NULL,
                     seq             INTEGER NOT NULL,
                     PRIMARY KEY (series, period_start_ns, effective_at_ns, seq)
                 ) WITHOUT ROWID;",
            )
            .expect("integer-keyed order table"),
        Work::InsertNoForeignKeys | Work::Insert | Work::InsertAndAggregates => conn
            .execute_batch(
                "CREATE INDEX usage_records_by_period ON usage_records
                     (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)",
            )
            .expect("the period index of schema versions 1 to 5"),
        Work::InsertClustered => conn
            .execute_batch(
                "DROP TABLE usage_records;
                 CREATE TABLE usage_records (
                     seq             INTEGER NOT NULL,
                     agreement_id    TEXT NOT NULL REFERENCES agreements (id),
                     feature_code    TEXT NOT NULL,
                     period_start_ns INTEGER NOT NULL,
                     period_end_ns   INTEGER NOT NULL,
                     meter_type      TEXT NOT NULL CHECK (meter_type IN ('delta', 'absolute')),
                     value           TEXT NOT NULL,
                     usage_timestamp TEXT,
                     effective_at_ns INTEGER NOT NULL,
                     received_at_ns  INTEGER NOT NULL,
                     client_id       TEXT NOT NULL,
                     idempotency_key TEXT,
                     PRIMARY KEY (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
                 ) WITHOUT ROWID;",
            )
            .expect("clustered table"),
        Work::InsertIntegerKeyIndex => conn
            .execute_batch(
                "ALTER TABLE usage_records ADD COLUMN agreement_seq INTEGER;
                 CREATE INDEX usage_records_by_period ON usage_records
                     (agreement_seq, feature_code, period_start_ns, effective_at_ns, seq);",
            )
            .expect("integer-keyed index"),
    }
    let mut conn = conn;
    let started = Instant::now();
    let cpu_before = thread_cpu();
    let mut seq = 0i64;
    let mut filed = 0i64;
    while (seq as usize) < ROWS {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut minimal = tx
                .prepare_cached("INSERT INTO minimal (id, v) VALUES (?1, 'delta')")
                .expect("prepare");
            let mut insert = tx
                .prepare_cached(if matches!(
                    work,
                    Work::InsertIntegerKeyIndex | Work::FilingIntegerKey
                ) {
                    "INSERT INTO usage_records (seq, agreement_id, feature_code, period_start_ns,
                             period_end_ns, meter_type, value, usage_timestamp, effective_at_ns,
                             received_at_ns, client_id, idempotency_key, agreement_seq)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?1 % 50)"
                } else {
                    "INSERT INTO usage_records (seq, agreement_id, feature_code, period_start_ns,
                             period_end_ns, meter_type, value, usage_timestamp, effective_at_ns,
                             received_at_ns, client_id, idempotency_key)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                })
                .expect("prepare");
            for _ in 0..per_tx {
                seq += 1;
                if matches!(work, Work::MinimalRow) {
                    minimal.execute([seq]).expect("insert");
                    continue;
                }
                let id = &ids[seq as usize % AGREEMENTS];
                let now_ns = 1_765_000_000_000_000_000i64 + seq;
                insert
                    .execute(params![
                        seq,
                        id,
                        "api_calls",
                        0i64,
                        1i64,
                        "delta",
                        "1",
                        None::<String>,
                        now_ns,
                        now_ns,
                        "kinde-meter-cli",
                        None::<String>
                    ])
                    .expect("insert");
            }
            if matches!(
                work,
                Work::InsertAndAggregates
                    | Work::InsertAggregatesAndFiling
                    | Work::FilingIntegerKey
                    | Work::FilingRuns
            ) {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE usage_aggregates SET
                             abs_effective_at_ns = ?4, abs_seq = ?5, abs_value = ?6,
                             deltas_after = ?7, value = ?8, record_count = ?9,
                             last_recorded_at_ns = ?10
                         WHERE agreement_id = ?1 AND feature_code = ?2 AND period_start_ns = ?3",
                    )
                    .expect("prepare");
                for id in ids.iter().take(per_tx.min(AGREEMENTS)) {
                    update
                        .execute(params![
                            id,
                            "api_calls",
                            0i64,
                            None::<i64>,
                            None::<i64>,
                            None::<String>,
                            seq.to_string(),
                            seq.to_string(),
                            seq,
                            seq
                        ])
                        .expect("update");
                }
            }
            if matches!(work, Work::FilingIntegerKey) && seq - filed >= 256 {
                file_by_statement(
                    &tx,
                    "INSERT OR FAIL INTO usage_record_order
                         (series, period_start_ns, effective_at_ns, seq)
                     SELECT agreement_seq, period_start_ns, effective_at_ns, seq
                     FROM usage_records WHERE seq > ?1 AND seq <= ?2",
                    filed,
                    seq,
                );
                filed = seq;
            }
            if matches!(work, Work::FilingRuns) && seq - filed >= 256 {
                file_runs(&tx, filed, seq);
                filed = seq;
            }
            if matches!(work, Work::InsertAggregatesAndFiling) && seq - filed >= 256 {
                file_by_statement(
                    &tx,
                    "INSERT OR FAIL INTO usage_record_order
                         (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
                     SELECT agreement_id, feature_code, period_start_ns, effective_at_ns, seq
                     FROM usage_records WHERE seq > ?1 AND seq <= ?2",
                    filed,
                    seq,
                );
                filed = seq;
            }
        }
        tx.commit().expect("commit");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = thread_cpu() - cpu_before;
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    (seconds, cpu)
}
