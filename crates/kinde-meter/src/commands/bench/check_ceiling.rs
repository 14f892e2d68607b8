//! The `check-ceiling` mode's server: the least an entitlement check can cost
//! on this machine, `check`'s ceiling as the bare axum is `healthz`'s and
//! `ceiling` is `single`'s (docs/design.md#benchmark).
//!
//! It answers `check`'s request (`GET /api/v1/billing/entitlements/check`,
//! the same token) in the bench's process, on the bare axum's HTTP stack
//! ([`bare_axum`](super::bare_axum)):
//!
//! - the bearer token is looked up in a map of verified tokens, its expiry
//!   checked ([`super::write_ceiling::verified`], as `ceiling`'s);
//! - `customer_id` and `feature_code` are taken from the query string as
//!   sent (the bench's ids need no decoding; one that does is refused);
//! - one SQLite point read (WAL; a pool of read connections, each statement
//!   prepared once per connection, as `serve`'s hot reads keep theirs) of a
//!   row that holds the feature's limit, the period's usage and its end;
//! - the answer is kinde-meter-wire's `CheckBillingEntitlementResponse`,
//!   written with serde_json as `check`'s is.
//!
//! What it leaves out is what makes `check`'s answer right: the customer's
//! active agreement, its plan and feature, the period of now and its
//! aggregate, read in one snapshot with the versions that keep remembered
//! agreements exact; the checks and errors of the parameters; the middleware
//! stack and the request's log line. `check`'s ratio to it is what all of
//! that costs.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::Context;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use kinde_meter_wire::{CheckBillingEntitlementResponse, MeterValue, SCALE_DIGITS, UsageTotal};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::task::JoinHandle;

use super::write_ceiling::{Tokens, verified};

/// The customers the ceiling knows: `customer_ceiling_{k}` for `k` below
/// the bench's `--agreements`.
pub fn customer(k: usize) -> String {
    format!("customer_ceiling_{k}")
}

/// The limit of every feature the ceiling knows; never reached by a check
/// of 1 on a usage of 1.
const LIMIT_MAX: i64 = 1_000_000;

/// The read: a row of the one table by its key.
const READ: &str = "SELECT limit_max, consumed, period_end FROM usage WHERE customer_id = ?1 AND feature_code = ?2";

/// The ceiling's server, serving until dropped; its database is in a
/// directory of its own.
pub struct CheckCeiling {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    accept: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct Shared {
    tokens: Tokens,
    database: PathBuf,
    /// Read connections not in use.
    idle: Mutex<Vec<Connection>>,
}

impl CheckCeiling {
    /// Starts it on 127.0.0.1 on a port of its own, with a database in a new
    /// directory under `parent` holding a usage of 1 of `feature_code` for
    /// `customers` customers ([`customer`]), accepting `authorization`
    /// (`Bearer …`) as a verified token.
    pub async fn start(
        parent: &Path,
        authorization: &str,
        customers: usize,
        feature_code: &str,
    ) -> anyhow::Result<CheckCeiling> {
        let dir = tempfile::Builder::new()
            .prefix("kinde-meter-check-ceiling-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot make a directory in {}", parent.display()))?;
        let database = dir.path().join("check-ceiling.sqlite");
        create(&database, customers, feature_code)?;
        let shared = Arc::new(Shared {
            tokens: Tokens::of(authorization)?,
            database,
            idle: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/v1/billing/entitlements/check", get(check))
            .with_state(shared);
        let (base, accept) =
            super::bare_axum::serve_local(app, "the check ceiling's server").await?;
        Ok(CheckCeiling {
            base,
            accept,
            _dir: dir,
        })
    }
}

impl Drop for CheckCeiling {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn create(path: &Path, customers: usize, feature_code: &str) -> anyhow::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE usage (
             customer_id  TEXT NOT NULL,
             feature_code TEXT NOT NULL,
             limit_max    INTEGER,
             consumed     TEXT NOT NULL,
             period_end   TEXT NOT NULL,
             PRIMARY KEY (customer_id, feature_code)
         ) WITHOUT ROWID",
    )?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO usage VALUES (?1, ?2, ?3, '1', ?4)")?;
        for k in 0..customers {
            insert.execute((customer(k), feature_code, LIMIT_MAX, "2099-01-01T00:00:00Z"))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The feature's limit, the period's usage and its end, if the customer has it.
type Row = (Option<i64>, String, String);

impl Shared {
    /// Reads `customer`'s `feature` on an idle connection (opened if none is).
    fn read(&self, customer: &str, feature: &str) -> rusqlite::Result<Option<Row>> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match taken {
            Some(conn) => conn,
            None => Connection::open_with_flags(
                &self.database,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?,
        };
        let row = conn
            .prepare_cached(READ)?
            .query_row((customer, feature), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        row
    }
}

async fn check(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    if !verified(&shared.tokens, &headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let (mut customer, mut feature) = (None, None);
    for pair in uri.query().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("customer_id", value)) => customer = Some(value),
            Some(("feature_code", value)) => feature = Some(value),
            _ => {}
        }
    }
    let (Some(customer), Some(feature)) = (customer, feature) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if [customer, feature]
        .iter()
        .any(|v| v.is_empty() || v.contains(['%', '+']))
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let Ok(found) = shared.read(customer, feature) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let quantity = MeterValue::parse("1").expect("1 is a meter value");
    let answer = match found {
        Some((limit_max, consumed, period_end)) => {
            let Ok(consumed) = UsageTotal::parse(&consumed) else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            // In the decimals' units (10^-SCALE_DIGITS).
            let limit =
                limit_max.map(|l| u128::try_from(l).unwrap_or(0) * 10u128.pow(SCALE_DIGITS));
            let after = consumed.units() + quantity.units();
            CheckBillingEntitlementResponse {
                code: "OK".to_owned(),
                message: "Success".to_owned(),
                allowed: limit.is_none_or(|limit| after <= limit),
                feature_code: feature.to_owned(),
                entitlement_limit_max: limit_max,
                consumed,
                remaining: limit.map(|limit| {
                    UsageTotal::from_units(limit.saturating_sub(consumed.units()))
                        .unwrap_or(UsageTotal::ZERO)
                }),
                quantity,
                current_period_end: Some(period_end),
            }
        }
        None => CheckBillingEntitlementResponse {
            code: "OK".to_owned(),
            message: "Success".to_owned(),
            allowed: false,
            feature_code: feature.to_owned(),
            entitlement_limit_max: None,
            consumed: UsageTotal::ZERO,
            remaining: None,
            quantity,
            current_period_end: None,
        },
    };
    let mut body = Vec::with_capacity(384);
    match serde_json::to_writer(&mut body, &answer) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ceiling does the work it stands for: an unknown token is refused;
    /// a known customer's check is read from its row; an unknown one is not
    /// allowed.
    #[tokio::test]
    async fn refuses_unknown_tokens_and_answers_from_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let ceiling = CheckCeiling::start(dir.path(), "Bearer good", 2, "api_calls")
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let get = |token: &'static str, customer: &str| {
            client
                .get(format!(
                    "{}/api/v1/billing/entitlements/check?customer_id={customer}&feature_code=api_calls",
                    ceiling.base
                ))
                .header("authorization", format!("Bearer {token}"))
                .send()
        };
        let answer = |customer: String| {
            let sent = get("good", &customer);
            async move {
                sent.await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(get("bad", &customer(1)).await.unwrap().status(), 403);
        let known: serde_json::Value = answer(customer(1)).await;
        assert_eq!(known["allowed"], true, "{known}");
        assert_eq!(known["consumed"], "1", "{known}");
        assert_eq!(known["remaining"], "999999", "{known}");
        assert_eq!(known["entitlement_limit_max"], LIMIT_MAX, "{known}");
        let unknown: serde_json::Value = answer(customer(2)).await;
        assert_eq!(unknown["allowed"], false, "{unknown}");
        assert_eq!(unknown["current_period_end"], serde_json::Value::Null);
    }
}
