//! The database schema, as versioned migrations applied when the store opens.
//!
//! Migration `i` (1-based) is `MIGRATIONS[i - 1]`; `schema_migrations` records the
//! versions applied. Migrations run inside one `BEGIN IMMEDIATE` transaction, so
//! two processes opening the same directory at once serialise: the second waits
//! for the first's write lock, then finds the versions applied and does nothing.
//! Never edit a migration that has shipped; append a new one. A migration may
//! add a step in Rust after its SQL (`Migration::then`; version 7 does).

use jiff::Timestamp;
use rusqlite::{Connection, TransactionBehavior};

use super::codec;

/// Version 1: plans, agreements, raw usage, per-period aggregates, idempotency.
///
/// - Instants are `*_ns` integers (see `codec`), decimals canonical text.
/// - `agreements.seq` gives the newest-first order of listings; AUTOINCREMENT so a
///   sequence number is never reused even if rows were ever deleted.
/// - `usage_records.seq` is the arrival sequence, assigned by the writer; the
///   period index serves the "deltas after an absolute" range read (version 6
///   replaces it with `usage_record_order`, version 7 with runs).
/// - `usage_aggregates` is what usage reads are served from (`docs/billing.md`).
const V1: &str = "
CREATE TABLE plans (
    code      TEXT PRIMARY KEY NOT NULL,
    ord       INTEGER NOT NULL,
    name      TEXT NOT NULL,
    interval  TEXT NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
    grp       TEXT
);

CREATE TABLE plan_features (
    plan_code   TEXT NOT NULL REFERENCES plans (code) ON DELETE CASCADE,
    code        TEXT NOT NULL,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    metered     INTEGER NOT NULL CHECK (metered IN (0, 1)),
    unit_amount INTEGER,
    limit_max   INTEGER,
    PRIMARY KEY (plan_code, code)
) WITHOUT ROWID;

CREATE TABLE agreements (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    customer_id   TEXT NOT NULL,
    plan_code     TEXT NOT NULL,
    interval      TEXT NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
    anchor_ns     INTEGER NOT NULL,
    expires_on_ns INTEGER
);
CREATE INDEX agreements_by_customer ON agreements (customer_id, seq);

CREATE TABLE usage_records (
    seq             INTEGER PRIMARY KEY,
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
    idempotency_key TEXT
);
CREATE INDEX usage_records_by_period
    ON usage_records (agreement_id, feature_code, period_start_ns, effective_at_ns, seq);

CREATE TABLE usage_aggregates (
    agreement_id        TEXT NOT NULL REFERENCES agreements (id),
    feature_code        TEXT NOT NULL,
    period_start_ns     INTEGER NOT NULL,
    period_end_ns       INTEGER NOT NULL,
    abs_effective_at_ns INTEGER,
    abs_seq             INTEGER,
    abs_value           TEXT,
    deltas_after        TEXT NOT NULL,
    value               TEXT NOT NULL,
    record_count        INTEGER NOT NULL,
    last_recorded_at_ns INTEGER,
    PRIMARY KEY (agreement_id, feature_code, period_start_ns)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    client_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('single', 'batch')),
    outcome_json  TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    PRIMARY KEY (client_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ns);
";

/// Version 2: M2M clients of the built-in issuer (`/oauth2/token`).
///
/// - `id` is 32 lowercase hex digits, like Kinde's client ids; `seq` orders listings.
/// - `scopes` is a JSON array of strings.
/// - `secret_hash` is an argon2id PHC string; the CHECK refuses anything else, so
///   a bug can never store a secret in plain text.
/// - The partial index serves `revoked_clients_since`, which servers poll.
const V2: &str = "
CREATE TABLE m2m_clients (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL CHECK (secret_hash LIKE '$argon2id$%'),
    created_at_ns INTEGER NOT NULL,
    revoked_at_ns INTEGER
);
CREATE INDEX m2m_clients_by_revocation
    ON m2m_clients (revoked_at_ns) WHERE revoked_at_ns IS NOT NULL;
";

/// Version 3: the catalog's entitlement terms of a feature (docs/catalog.md).
///
/// - `price_name`, `fixed_charge` and `limit_min` are NULL when the catalog
///   leaves them out.
/// - `thresholds` is a JSON array of percents (`[80,100]`). Rows written before
///   this version get what the catalog gave them then: the default thresholds
///   for a metered feature, none otherwise (the next catalog load rewrites them).
const V3: &str = "
ALTER TABLE plan_features ADD COLUMN price_name TEXT;
ALTER TABLE plan_features ADD COLUMN fixed_charge INTEGER;
ALTER TABLE plan_features ADD COLUMN limit_min INTEGER;
ALTER TABLE plan_features ADD COLUMN enforce_limit INTEGER NOT NULL DEFAULT 0
    CHECK (enforce_limit IN (0, 1));
ALTER TABLE plan_features ADD COLUMN thresholds TEXT NOT NULL DEFAULT '[]';
UPDATE plan_features SET thresholds = '[80,100]' WHERE metered = 1;
";

/// Version 4: billing webhooks and their outbox (docs/design.md#webhook-outbox).
///
/// - `webhooks.event_types` is a JSON array of event type codes; the `last_*`
///   columns and `consecutive_failures` are its delivery state, kept by
///   `finish_delivery`.
/// - `events` is the outbox: rows written in the transaction of the change that
///   raises them. `dedupe_key` makes a threshold event once per agreement,
///   feature, period and threshold; `fanned_out` becomes 1 once the event has
///   one delivery row per webhook subscribed to its type.
/// - `webhook_deliveries.attempt` is the number of the next attempt (1 for the
///   first); `leased_until_ns` keeps a claimed attempt from being claimed again
///   until it is finished or the lease expires.
/// - `usage_aggregates.usage_event_due_ns` is when the aggregate's coalesced
///   `customer.meter_usage_updated` is due (NULL: none), set by the writer with
///   the aggregate's own write; `usage_event_last_ns` when the last one was built.
const V4: &str = "
CREATE TABLE webhooks (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    name                 TEXT NOT NULL,
    endpoint             TEXT NOT NULL,
    description          TEXT,
    event_types          TEXT NOT NULL,
    created_at_ns        INTEGER NOT NULL,
    last_attempt_at_ns   INTEGER,
    last_success_at_ns   INTEGER,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    data          TEXT NOT NULL,
    fanned_out    INTEGER NOT NULL DEFAULT 0 CHECK (fanned_out IN (0, 1)),
    dedupe_key    TEXT UNIQUE
);
CREATE INDEX events_to_fan_out ON events (seq) WHERE fanned_out = 0;
CREATE INDEX events_by_age ON events (created_at_ns);

CREATE TABLE webhook_deliveries (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq            INTEGER NOT NULL REFERENCES events (seq),
    webhook_id           TEXT NOT NULL,
    attempt              INTEGER NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    next_attempt_at_ns   INTEGER NOT NULL,
    first_attempt_due_ns INTEGER NOT NULL,
    leased_until_ns      INTEGER,
    last_error           TEXT,
    created_at_ns        INTEGER NOT NULL,
    UNIQUE (event_seq, webhook_id)
);
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at_ns) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook
    ON webhook_deliveries (webhook_id, status, next_attempt_at_ns);

ALTER TABLE usage_aggregates ADD COLUMN usage_event_due_ns INTEGER;
ALTER TABLE usage_aggregates ADD COLUMN usage_event_last_ns INTEGER;
CREATE INDEX usage_aggregates_usage_event_due
    ON usage_aggregates (usage_event_due_ns) WHERE usage_event_due_ns IS NOT NULL;
";

/// Version 5: a counter of the changes to `agreements` (docs/design.md#hot-read-cache).
///
/// - Triggers move it on in the transaction of every insert, update or delete
///   of an agreement, whichever connection or process makes it; so two reads
///   that find the same `version` see the same agreements. The hot reads keep
///   the agreements they have read with it (`read.rs`) and confirm them with
///   it in the statement that reads the usage.
/// - Written so that it can run again on a database that has it already (the
///   migration tests re-apply versions).
const V5: &str = "
CREATE TABLE IF NOT EXISTS agreements_version (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO agreements_version (id, version) VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS agreements_version_on_insert AFTER INSERT ON agreements
BEGIN UPDATE agreements_version SET version = version + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS agreements_version_on_update AFTER UPDATE ON agreements
BEGIN UPDATE agreements_version SET version = version + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS agreements_version_on_delete AFTER DELETE ON agreements
BEGIN UPDATE agreements_version SET version = version + 1 WHERE id = 0; END;
";

/// Version 6: the raw records' period order is filed in chunks, not indexed
/// on every insert (docs/design.md#record-order).
///
/// - `usage_records_by_period` made every commit write one index leaf per
///   aggregate it touched, ~85 % of the WAL of a single-record commit
///   (bench/HISTORY.md). `usage_record_order` holds the same keys, but the writer
///   files the records into it many at a time (`record_order.rs`), so a
///   leaf is written once for many records.
/// - `usage_record_order_filed.upto_seq`: every record with `seq <= upto_seq`
///   is filed, none above it; the reads take the filed part from the order
///   table and the unfiled tail, bounded, by a scan of `usage_records` from
///   `upto_seq`.
/// - Existing records are filed here, in the old index's order (a covering
///   scan: no sort), then the index goes.
/// - The trigger keeps a deleted record's order row from outliving it (the
///   retention procedure in docs/operations.md deletes from `usage_records`).
/// - Written so that it can run again on a database that has it already.
const V6: &str = "
CREATE TABLE IF NOT EXISTS usage_record_order (
    agreement_id    TEXT NOT NULL,
    feature_code    TEXT NOT NULL,
    period_start_ns INTEGER NOT NULL,
    effective_at_ns INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
) WITHOUT ROWID;
INSERT OR IGNORE INTO usage_record_order
    (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
    SELECT agreement_id, feature_code, period_start_ns, effective_at_ns, seq
    FROM usage_records
    ORDER BY agreement_id, feature_code, period_start_ns, effective_at_ns, seq;
CREATE TABLE IF NOT EXISTS usage_record_order_filed (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    upto_seq INTEGER NOT NULL
);
INSERT OR REPLACE INTO usage_record_order_filed (id, upto_seq)
    VALUES (0, coalesce((SELECT max(seq) FROM usage_records), 0));
DROP INDEX IF EXISTS usage_records_by_period;
CREATE TRIGGER IF NOT EXISTS usage_record_order_on_delete AFTER DELETE ON usage_records
BEGIN
    DELETE FROM usage_record_order
    WHERE agreement_id = old.agreement_id AND feature_code = old.feature_code
      AND period_start_ns = old.period_start_ns AND effective_at_ns = old.effective_at_ns
      AND seq = old.seq;
END;
";

/// Version 7: the period order is filed in runs, one row per aggregate per
/// filing, instead of one order row per record (docs/design.md#record-order).
///
/// - Filing a record into `usage_record_order` cost more than inserting it
///   (a B-tree insert keyed by two texts at one position per aggregate), and
///   bounded the batch endpoint (bench/HISTORY.md, "Batches"). A run packs the
///   order keys of an aggregate's records of one filing in a blob.
/// - The index orders runs by their last record, so that both reads start
///   where they must and stop early.
/// - `period_end_ns` lets the retention procedure delete runs as it deletes
///   records, by period end (docs/operations.md); no trigger: a run names its
///   records by seq and the reads skip the deleted ones.
/// - The SQL makes the table; [`super::record_order::runs_from_order_table`]
///   then moves version 6's order table into it and drops it.
const V7: &str = "
CREATE TABLE IF NOT EXISTS usage_record_runs (
    id                INTEGER PRIMARY KEY,
    agreement_id      TEXT NOT NULL,
    feature_code      TEXT NOT NULL,
    period_start_ns   INTEGER NOT NULL,
    period_end_ns     INTEGER NOT NULL,
    last_effective_ns INTEGER NOT NULL,
    last_seq          INTEGER NOT NULL,
    entries           BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_record_runs_by_period ON usage_record_runs
    (agreement_id, feature_code, period_start_ns, last_effective_ns, last_seq);
DROP TRIGGER IF EXISTS usage_record_order_on_delete;
";

/// One schema version: its SQL, then, where SQL cannot say it, a step in
/// Rust run in the same transaction.
struct Migration {
    sql: &'static str,
    then: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

/// A version that is SQL alone.
const fn sql(sql: &'static str) -> Migration {
    Migration { sql, then: None }
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    sql(V1),
    sql(V2),
    sql(V3),
    sql(V4),
    sql(V5),
    sql(V6),
    Migration {
        sql: V7,
        then: Some(super::record_order::runs_from_order_table),
    },
];

/// The schema version this build writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`CURRENT_VERSION`], refusing a newer one (a newer
/// kinde-meter migrated it; this build would misread it).
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at TEXT NOT NULL
        )",
    )?;
    let applied: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if applied > CURRENT_VERSION {
        return Err(codec::failure(format!(
            "the database has schema version {applied}, newer than this kinde-meter knows ({CURRENT_VERSION})"
        )));
    }
    let now = Timestamp::now().to_string();
    for (version, migration) in (1i64..).zip(MIGRATIONS).skip(applied as usize) {
        tx.execute_batch(migration.sql)?;
        if let Some(step) = migration.then {
            step(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            (version, &now),
        )?;
    }
    tx.commit()
}
