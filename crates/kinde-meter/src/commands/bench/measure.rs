//! One run: one mode at one connection count. It makes the run's agreements
//! (and the usage its reads find), sends the requests, takes the server's CPU
//! time, group commits and peak RSS around them, and reads the stored usage
//! back to compare it with what was acknowledged.

use std::sync::Arc;

use anyhow::Context;
use kinde_meter_store::WriterStats;
use reqwest::header::HeaderValue;

use super::load::{self, LoadOutcome};
use super::modes::{self, record_body};
use super::report::{
    CpuPerRequest, GroupCommit, KindReport, Latency, RunReport, Stored, VsHealthz,
};
use super::target::{ServerUsage, Target};
use crate::cli::{BenchArgs, BenchMode};

/// What every run of an invocation shares.
pub struct Bench<'a> {
    pub args: &'a BenchArgs,
    pub target: &'a Target,
    /// The load generator's runtime.
    pub load: &'a tokio::runtime::Runtime,
    pub authorization: HeaderValue,
    /// Distinguishes this invocation's customers from earlier ones' on a shared server.
    pub invocation: String,
}

impl Bench<'_> {
    /// Runs `mode` at `connections` as run number `run`; `healthz` is the same
    /// invocation's healthz run at the same connection count.
    pub async fn measure(
        &self,
        run: usize,
        mode: BenchMode,
        connections: usize,
        healthz: Option<&RunReport>,
    ) -> anyhow::Result<RunReport> {
        let args = self.args;
        let feature = mode.feature_code(args);
        let agreements = if mode.uses_agreements() {
            let prefix = format!("bench_{}_{run}", self.invocation);
            self.target
                .create_agreements(&prefix, args.agreements, &args.plan_code)
                .await?
        } else {
            Vec::new()
        };
        let seeded = if mode.seeds_usage() {
            self.target
                .seed(&agreements, |id| record_body(id, feature))
                .await?
        } else {
            0
        };
        let workload = modes::workload(mode, args, &self.target.base, &agreements)?;

        let writer_before = self.target.writer_stats();
        let usage_before = self.target.usage_now();
        let outcome = self
            .load
            .spawn(load::drive(
                Arc::new(workload),
                self.authorization.clone(),
                args.requests,
                connections,
            ))
            .await
            .context("the load generator panicked")??;
        let usage_after = self.target.usage_now();
        let writer = match (writer_before, self.target.writer_stats()) {
            (Some(before), Some(after)) => Some(group_commit(before, after)),
            _ => None,
        };
        let peak_rss_kib = self.target.peak_rss_kib();

        let stored = if mode.uses_agreements() {
            let (value, records) = self.target.stored_usage(&agreements, feature).await?;
            Some((value, records))
        } else {
            None
        };

        let total = outcome.total(mode.name());
        let seconds = outcome.elapsed.as_secs_f64();
        let (records, acknowledged) = written(mode, args, &outcome);
        let requests = total.requests;
        let cpu = match (usage_before, usage_after) {
            (Some(before), Some(after)) => cpu_per_request(before, after, requests, records, mode),
            _ => None,
        };
        let latency = Latency::of(&total.latency);
        let requests_per_second = requests as f64 / seconds;
        let records_per_second = mode.records_usage().then(|| records as f64 / seconds);
        let vs_healthz = healthz.map(|h| VsHealthz {
            requests_per_second: requests_per_second / h.requests_per_second,
            records_per_second: records_per_second.map(|r| r / h.requests_per_second),
            p50: latency.p50 / h.latency_ms.p50,
            p99: latency.p99 / h.latency_ms.p99,
            server_cpu_per_request: cpu
                .zip(h.cpu_us_per_request)
                .map(|(c, h)| c.server / h.server),
        });
        let by_request = if outcome.kinds.len() > 1 {
            outcome
                .kinds
                .iter()
                .map(|kind| KindReport {
                    name: kind.name,
                    requests: kind.requests,
                    requests_per_second: kind.requests as f64 / seconds,
                    latency_ms: Latency::of(&kind.latency),
                    answers: kind.answers.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(RunReport {
            run,
            mode: mode.name(),
            connections,
            requests,
            records,
            elapsed_seconds: seconds,
            requests_per_second,
            records_per_second,
            latency_ms: latency,
            answers: total.answers.clone(),
            record_results: (mode == BenchMode::Batch).then(|| total.record_results.clone()),
            by_request,
            first_transport_error: total.first_transport_error.clone(),
            vs_healthz,
            cpu_us_per_request: cpu,
            group_commit: writer,
            peak_rss_kib,
            stored: stored
                .map(|(value, records)| Stored::new(value, records, seeded + acknowledged)),
        })
    }
}

/// The usage records the timed requests carried, and those acknowledged: the
/// 200 answers of single records (`write` requests of `mixed`), the `"OK"`
/// per-record results of the 200 answers of batches.
fn written(mode: BenchMode, args: &BenchArgs, outcome: &LoadOutcome) -> (u64, u64) {
    match mode {
        BenchMode::Single | BenchMode::SingleEnforced => {
            let kind = &outcome.kinds[0];
            (kind.requests, kind.ok())
        }
        BenchMode::Batch => {
            let kind = &outcome.kinds[0];
            (
                kind.requests * args.batch_size as u64,
                kind.record_results.get("OK").copied().unwrap_or(0),
            )
        }
        BenchMode::Mixed => outcome
            .kinds
            .iter()
            .find(|kind| kind.name == "write")
            .map_or((0, 0), |kind| (kind.requests, kind.ok())),
        BenchMode::Healthz | BenchMode::Read | BenchMode::Check => (0, 0),
    }
}

fn cpu_per_request(
    before: ServerUsage,
    after: ServerUsage,
    requests: u64,
    records: u64,
    mode: BenchMode,
) -> Option<CpuPerRequest> {
    let per = |seconds: f64, count: u64| seconds * 1e6 / count.max(1) as f64;
    let (server, sqlite_writer, load_generator) = match (before, after) {
        (ServerUsage::InProcess(before), ServerUsage::InProcess(after)) => {
            let spent = after.since(before);
            (
                spent.process - spent.load,
                Some(per(spent.writer, requests)),
                Some(per(spent.load, requests)),
            )
        }
        (ServerUsage::External(before), ServerUsage::External(after)) => {
            (after - before, None, None)
        }
        _ => return None,
    };
    Some(CpuPerRequest {
        server: per(server, requests),
        sqlite_writer,
        load_generator,
        server_per_record: (mode == BenchMode::Batch).then(|| per(server, records)),
    })
}

fn group_commit(before: WriterStats, after: WriterStats) -> GroupCommit {
    let records = after.records - before.records;
    let commits = after.batches - before.batches;
    GroupCommit {
        records,
        commits,
        records_per_commit: if commits == 0 {
            0.0
        } else {
            records as f64 / commits as f64
        },
        largest_batch_so_far: after.largest_batch,
        failed_commits: after.failed_batches - before.failed_batches,
    }
}
