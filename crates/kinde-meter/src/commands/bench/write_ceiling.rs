//! The `ceiling` mode's server: the least a durable single usage record can
//! cost on this machine, `single`'s ceiling as the bare axum is `healthz`'s
//! (docs/design.md#benchmark).
//!
//! It is the prototype the machine's ceilings were first measured with
//! (bench/HISTORY.md, "The single record's ceiling": axum, a cache of verified
//! tokens, SQLite in WAL mode with `synchronous=FULL` and group commit), built
//! on the bare axum's HTTP stack ([`bare_axum`](super::bare_axum)) and run in
//! the bench's process:
//!
//! - the bearer token is looked up in a map of verified tokens by its text,
//!   and its expiry checked (what a hit of `serve`'s token cache costs at
//!   least; no signature is verified: a hit needs none);
//! - the body is parsed with serde into the wire type `single` takes
//!   (`CreateMeterUsageRecordRequest`), the meter value by the same decimal
//!   parser;
//! - one writer thread takes every record queued, inserts them into a
//!   one-table SQLite database (WAL, `synchronous=FULL`) in one transaction,
//!   commits, and only then lets their `200`s go.
//!
//! What it leaves out is what a billing service needs around that write: the
//! agreement, its plan and the record's period, the maintained usage of the
//! period, the order of records for late absolutes, idempotency keys, usage
//! events, the record's checks and every error but these, the middleware
//! stack and the request's log line. `single`'s ratio to it is what all of
//! that costs.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, mpsc},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use kinde_meter_wire::{CreateMeterUsageRecordRequest, MeterTypeCode, MeterValue};
use rusqlite::Connection;
use tokio::{sync::oneshot, task::JoinHandle};

/// The writer thread's name: it starts as the store's writer's does, so that
/// the report's SQLite writer column counts it.
const WRITER_THREAD: &str = "kinde-meter-sqlite-ceiling";

/// Records one transaction takes at most (the store's writer takes up to
/// 1 024 requests a batch).
const MAX_BATCH: usize = 1024;

/// The ceiling's server, serving until dropped; its database is in `dir`.
pub struct WriteCeiling {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    accept: JoinHandle<()>,
    database: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A record on its way to the writer, and where its answer goes.
struct Queued {
    agreement_id: String,
    feature_code: String,
    value: String,
    absolute: bool,
    committed: oneshot::Sender<bool>,
}

struct Shared {
    tokens: Tokens,
    queue: mpsc::Sender<Queued>,
}

/// Verified tokens by their text, with their expiry (seconds since the
/// epoch): what the ceilings accept.
pub struct Tokens(HashMap<Box<str>, u64>);

impl Tokens {
    /// `authorization`'s bearer token (`Bearer …`), valid for a day.
    pub fn of(authorization: &str) -> anyhow::Result<Tokens> {
        let token = authorization
            .strip_prefix("Bearer ")
            .context("the bench's authorization is not a bearer token")?;
        let expires = now_seconds() + 24 * 3600;
        Ok(Tokens(HashMap::from([(Box::from(token), expires)])))
    }
}

/// Whether `headers` carry a bearer token of `tokens` that has not expired:
/// the least a hit of `serve`'s token cache costs (no signature is verified:
/// a hit needs none).
pub fn verified(tokens: &Tokens, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    token
        .and_then(|t| tokens.0.get(t))
        .is_some_and(|expires| *expires > now_seconds())
}

impl WriteCeiling {
    /// Starts it on 127.0.0.1 on a port of its own, with a database in a new
    /// directory under `parent`, accepting `authorization` (`Bearer …`) as a
    /// verified token.
    pub async fn start(parent: &Path, authorization: &str) -> anyhow::Result<WriteCeiling> {
        let dir = tempfile::Builder::new()
            .prefix("kinde-meter-ceiling-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot make a directory in {}", parent.display()))?;
        let database = dir.path().join("ceiling.sqlite");
        let conn = open(&database)?;
        let (queue, queued) = mpsc::channel();
        std::thread::Builder::new()
            .name(WRITER_THREAD.to_owned())
            .spawn(move || write(conn, queued))
            .context("cannot start the ceiling's writer thread")?;
        let shared = Arc::new(Shared {
            tokens: Tokens::of(authorization)?,
            queue,
        });

        let app = Router::new()
            .route("/api/v1/billing/meter_usage", post(record))
            .with_state(shared);
        let (base, accept) = super::bare_axum::serve_local(app, "the ceiling's server").await?;
        Ok(WriteCeiling {
            base,
            accept,
            database,
            _dir: dir,
        })
    }

    /// The records stored so far and the sum of their values (every bench
    /// record is a delta of 1).
    pub fn stored(&self) -> anyhow::Result<(u128, u64)> {
        let conn = Connection::open(&self.database)?;
        let (records, value): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(CAST(value AS INTEGER)), 0) FROM usage_records",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((u128::try_from(value)?, u64::try_from(records)?))
    }
}

impl Drop for WriteCeiling {
    fn drop(&mut self) {
        // The writer thread ends when the last sender (the router's state)
        // goes with the connections.
        self.accept.abort();
    }
}

fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    conn.execute_batch(
        "CREATE TABLE usage_records (
             seq            INTEGER PRIMARY KEY,
             agreement_id   TEXT NOT NULL,
             feature_code   TEXT NOT NULL,
             value          TEXT NOT NULL,
             absolute       INTEGER NOT NULL,
             recorded_at_ns INTEGER NOT NULL
         )",
    )?;
    Ok(conn)
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn record(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !verified(&shared.tokens, &headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    // The wire type `single` decodes too, and the same decimal parser.
    let Ok(record) = serde_json::from_slice::<CreateMeterUsageRecordRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if MeterValue::parse(&record.meter_value).is_err() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let absolute = record.meter_type_code == Some(MeterTypeCode::Absolute);
    let (committed, answer) = oneshot::channel();
    let queued = Queued {
        agreement_id: record.customer_agreement_id,
        feature_code: record.billing_feature_code,
        value: record.meter_value,
        absolute,
        committed,
    };
    if shared.queue.send(queued).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer.await {
        Ok(true) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"message":"Success","code":"OK"}"#,
        )
            .into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The writer: all that is queued in one transaction, the answers after COMMIT.
fn write(conn: Connection, queued: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queued.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let committed = commit(&conn, &batch).is_ok();
        for record in batch.drain(..) {
            let _ = record.committed.send(committed);
        }
    }
}

fn commit(conn: &Connection, batch: &[Queued]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO usage_records (agreement_id, feature_code, value, absolute, recorded_at_ns)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        for record in batch {
            insert.execute((
                &record.agreement_id,
                &record.feature_code,
                &record.value,
                record.absolute,
                at,
            ))?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ceiling does the work it stands for: an unknown token and a body
    /// that is not a record are refused and store nothing; a record is stored
    /// before its 200.
    #[tokio::test]
    async fn refuses_what_single_refuses_and_stores_before_answering() {
        let dir = tempfile::tempdir().unwrap();
        let ceiling = WriteCeiling::start(dir.path(), "Bearer good")
            .await
            .unwrap();
        let url = format!("{}/api/v1/billing/meter_usage", ceiling.base);
        let client = reqwest::Client::new();
        let post = |token: &'static str, body: &'static str| {
            client
                .post(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(body)
                .send()
        };
        let record =
            r#"{"customer_agreement_id":"a","billing_feature_code":"f","meter_value":"1"}"#;
        assert_eq!(post("bad", record).await.unwrap().status(), 403);
        assert_eq!(post("good", "{}").await.unwrap().status(), 400);
        let not_a_value =
            r#"{"customer_agreement_id":"a","billing_feature_code":"f","meter_value":"1e3"}"#;
        assert_eq!(post("good", not_a_value).await.unwrap().status(), 400);
        assert_eq!(ceiling.stored().unwrap(), (0, 0));
        let answer = post("good", record).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.text().await.unwrap(),
            r#"{"message":"Success","code":"OK"}"#
        );
        assert_eq!(ceiling.stored().unwrap(), (1, 1));
    }
}
