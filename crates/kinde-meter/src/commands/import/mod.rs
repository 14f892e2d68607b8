//! `kinde-meter import`: usage records from a CSV or NDJSON file, through the
//! batch endpoint with kinde-sdk, safe to run again after an interruption
//! (docs/import-export.md#import).
//!
//! A reader thread streams the file in chunks of [`CHUNK_ROWS`] rows over a
//! bounded channel (constant memory); up to `--concurrency` chunks are sent at
//! once and their outcomes taken in file order, so rejected rows reach stderr
//! and the reject file in line order.

mod keys;
mod parse;
mod report;
mod send;
mod source;
mod tee;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration, RetryPolicy};
use tokio::sync::mpsc;

use self::report::{Progress, Rejects, Tally, default_rejects_path};
use self::send::{Outcome, send_chunk};
use self::source::{Format, Row, Source};
use super::ExitStatus;
use crate::cli::Credentials;

/// Rows per chunk: the server's largest batch (docs/api.md#batch). Fixed, not
/// a flag: the batches are the unit of the idempotency keys, so a re-run must
/// cut the file exactly as the first run did.
pub const CHUNK_ROWS: usize = 100;

/// Exit status when some rows were rejected and every other one imported.
pub const SOME_REJECTED: u8 = 1;
/// Exit status when the import stopped early (or never started).
pub const STOPPED: u8 = 2;

/// `kinde-meter import`: send a file of usage records to a server.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row, or NDJSON; each row a record with the
    /// fields customer_agreement_id, billing_feature_code, meter_value and
    /// optionally meter_usage_timestamp, meter_type_code, idempotency_key.
    pub file: PathBuf,
    /// The file's format (default: from its extension, .csv, .ndjson or .jsonl).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Where to write the rejected rows, each after a comment with its line and
    /// reason (default: FILE with .rejects before its extension).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Batches of 100 records in flight at once.
    #[arg(long, env = "KINDE_METER_IMPORT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// URL of the kinde-meter server.
    #[arg(long, env = "KINDE_METER_SERVER", requires = "credentials")]
    pub server: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// Runs the import: exit status 0 when every row was imported,
/// [`SOME_REJECTED`] when some were rejected, [`STOPPED`] on an error.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    match import(args).await {
        Ok(tally) if tally.rejected == 0 => Ok(()),
        Ok(_) => Err(ExitStatus(SOME_REJECTED).into()),
        Err(error) => {
            eprintln!("kinde-meter: {error:#}");
            Err(ExitStatus(STOPPED).into())
        }
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<Tally> {
    let format = match args.format.or_else(|| Format::of_path(&args.file)) {
        Some(format) => format,
        None => anyhow::bail!(
            "cannot tell the format of {} from its extension; pass --format csv or --format ndjson",
            args.file.display()
        ),
    };
    let api = BillingMeterUsageApi::new(client(&args)?);
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let source = Source::open(&args.file, format)?;
    let rejects_path = args
        .rejects
        .clone()
        .unwrap_or_else(|| default_rejects_path(&args.file));
    let mut rejects = Rejects::new(rejects_path, source.header().to_vec());

    let concurrency = usize::from(args.concurrency);
    let (chunks, mut receiver) = mpsc::channel(concurrency);
    let reader = tokio::task::spawn_blocking(move || read_chunks(source, &chunks));
    let mut sent = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
        .map(|chunk: Chunk| {
            let api = &api;
            async move {
                let outcomes = send_chunk(api, &chunk.rows).await;
                (chunk, outcomes)
            }
        })
        .buffered(concurrency);

    let progress = Progress::new(size);
    let mut tally = Tally::default();
    let mut stopped = None;
    while let Some((chunk, outcomes)) = sent.next().await {
        tally.read += chunk.rows.len() as u64;
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(error) => {
                stopped = Some(error);
                break;
            }
        };
        for (row, outcome) in chunk.rows.iter().zip(outcomes) {
            match outcome {
                Outcome::Imported => tally.imported += 1,
                Outcome::Rejected(reason) => {
                    tally.rejected += 1;
                    progress.println(&format!("line {}: {reason}", row.line));
                    if let Err(error) = rejects.write(row.line, &row.raw, &reason) {
                        stopped = Some(error);
                    }
                }
            }
        }
        if stopped.is_some() {
            break;
        }
        progress.update(chunk.offset, &tally);
    }
    // Stops the reader if the import stopped early.
    drop(sent);
    if stopped.is_none() {
        stopped = reader
            .await
            .context("the file reader failed")
            .and_then(|read| read)
            .err();
    }
    if let Err(error) = rejects.finish() {
        stopped.get_or_insert(error);
    }
    progress.finish(&tally, &rejects, stopped.is_some());
    match stopped {
        Some(error) => Err(error),
        None => Ok(tally),
    }
}

/// The client: the SDK's retries, more patient than its default, since an
/// import is worth waiting for a server that is briefly away.
fn client(args: &ImportArgs) -> anyhow::Result<ApiClient> {
    let retries = RetryPolicy::default()
        .with_max_attempts(10)
        .with_max_elapsed(Duration::from_secs(120));
    ApiClient::new(
        Configuration::new(args.server.trim_end_matches('/'))
            .with_auth(args.credentials.auth())
            .with_retry_policy(retries),
    )
    .context("cannot configure the HTTP client")
}

/// Up to [`CHUNK_ROWS`] consecutive rows and the file offset after them.
struct Chunk {
    rows: Vec<Row>,
    offset: u64,
}

/// Reads `source` to its end in chunks, until the receiver goes away.
fn read_chunks(mut source: Source, chunks: &mpsc::Sender<Chunk>) -> anyhow::Result<()> {
    loop {
        let mut rows = Vec::with_capacity(CHUNK_ROWS);
        while rows.len() < CHUNK_ROWS {
            match source.next_row().context("cannot read the file")? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        let end = rows.len() < CHUNK_ROWS;
        if !rows.is_empty() {
            let chunk = Chunk {
                rows,
                offset: source.offset(),
            };
            if chunks.blocking_send(chunk).is_err() {
                return Ok(());
            }
        }
        if end {
            return Ok(());
        }
    }
}
