//! `kinde-meter export`: the usage export for invoicing
//! (`docs/import-export.md#export`), on a data directory / database with the
//! server's own writer ([`UsageExport`]), or fetched from a server's `GET
//! /api/v1/billing/meter_usage/export` through kinde-sdk; both write the same
//! bytes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use jiff::Timestamp;
use kinde_meter_core::export::ExportPeriod;
use kinde_meter_server::routes::export::UsageExport;
use kinde_meter_wire::ExportFormat;
use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration};

use crate::cli::Target;

/// How long fetching a whole export from a server may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(600);

/// `kinde-meter export`: every agreement's usage of each metered feature of
/// its plan for one billing period, for invoicing.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which billing period of each agreement: current, previous (the one
    /// before the current one), or an RFC 3339 date-time (the period containing it).
    #[arg(long, env = "KINDE_METER_EXPORT_PERIOD", default_value = "current")]
    pub period: String,
    /// csv (a header row, then one line per row) or ndjson (one JSON object per line).
    #[arg(
        long,
        env = "KINDE_METER_EXPORT_FORMAT",
        value_enum,
        default_value = "csv"
    )]
    pub format: Format,
    /// Write to this file instead of standard output; it is replaced only once
    /// the whole export has been written.
    #[arg(long, env = "KINDE_METER_EXPORT_OUTPUT")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl From<Format> for ExportFormat {
    fn from(format: Format) -> ExportFormat {
        match format {
            Format::Csv => ExportFormat::Csv,
            Format::Ndjson => ExportFormat::Ndjson,
        }
    }
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    // The server's check, with its code, before anything is opened or sent.
    let period: ExportPeriod = args
        .period
        .parse()
        .map_err(|e| anyhow::anyhow!("INVALID_FIELD: --{e}"))?;
    let format = ExportFormat::from(args.format);
    let mut sink = Sink::open(args.output.as_deref())?;
    match &args.target.server {
        Some(server) => {
            let client = ApiClient::new(
                Configuration::new(server.as_str())
                    .with_auth(args.target.credentials.auth())
                    .with_timeout(REMOTE_TIMEOUT),
            )
            .context("cannot configure the HTTP client")?;
            let body = BillingMeterUsageApi::new(client)
                .export_meter_usage(Some(&args.period), Some(format))
                .await?;
            sink.write(body.as_bytes())?;
        }
        None => {
            let store = super::open_store(&args.target.data).await?;
            let mut export = UsageExport::new(store.clone(), period, format, Timestamp::now());
            let written = async {
                while let Some(chunk) = export.next_chunk().await? {
                    sink.write(&chunk)?;
                }
                anyhow::Ok(())
            }
            .await;
            store.shutdown().await;
            written?;
        }
    }
    sink.finish()
}

/// Where the export goes: standard output, or a temporary file beside
/// `--output` that replaces it when complete (so a failed export never leaves
/// a file that looks whole).
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File {
        file: std::io::BufWriter<tempfile::NamedTempFile>,
        path: PathBuf,
    },
}

impl Sink {
    fn open(output: Option<&Path>) -> anyhow::Result<Sink> {
        let Some(path) = output else {
            return Ok(Sink::Stdout(std::io::BufWriter::new(std::io::stdout())));
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        Ok(Sink::File {
            file: std::io::BufWriter::new(file),
            path: path.to_owned(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(bytes).context("writing to standard output"),
            Sink::File { file, path } => file
                .write_all(bytes)
                .with_context(|| format!("writing {}", path.display())),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut out) => out.flush().context("writing to standard output"),
            Sink::File { file, path } => {
                let file = file
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", path.display()))?;
                file.as_file()
                    .sync_all()
                    .with_context(|| format!("writing {}", path.display()))?;
                file.persist(&path)
                    .map_err(|e| e.error)
                    .with_context(|| format!("cannot replace {}", path.display()))?;
                Ok(())
            }
        }
    }
}
