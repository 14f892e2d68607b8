//! One run: one mode at one connection count, closed loop or at a fixed rate.
//! It makes the run's agreements (and the usage its reads find), sends the
//! requests, takes the server's CPU time, group commits and peak RSS around
//! them, and reads the stored usage back to compare what the run added with
//! what it acknowledged.

use std::sync::Arc;

use anyhow::Context;
use kinde_meter_store::WriterStats;
use reqwest::header::HeaderValue;
use tokio::sync::OnceCell;

use super::bare_axum::BareAxum;
use super::check_ceiling::CheckCeiling;
use super::load::{self, Endpoint, LoadOutcome, Pace};
use super::modes::{self, record_body};
use super::process_stats::OwnCpu;
use super::report::{
    CpuPerRequest, GroupCommit, KindReport, Latency, RateReport, Ratios, RunReport, Stored,
};
use super::target::{Agreement, ServerUsage, Target};
use super::write_ceiling::WriteCeiling;
use crate::cli::{BenchArgs, BenchMode, BenchRate};

/// What every run of an invocation shares.
pub struct Bench<'a> {
    pub args: &'a BenchArgs,
    pub target: &'a Target,
    /// Where the target's requests go.
    pub endpoint: Arc<Endpoint>,
    /// The `axum` mode's server, and where its requests go.
    pub axum: (BareAxum, Arc<Endpoint>),
    /// The `ceiling` mode's server, when asked for, and where its requests go.
    pub ceiling: Option<(WriteCeiling, Arc<Endpoint>)>,
    /// The `check-ceiling` mode's server, when asked for, and where its requests go.
    pub check_ceiling: Option<(CheckCeiling, Arc<Endpoint>)>,
    /// The load generator's runtime.
    pub load: &'a tokio::runtime::Runtime,
    pub authorization: HeaderValue,
    /// Distinguishes this invocation's customers from earlier ones' on a shared server.
    pub invocation: String,
    /// `--customers`' agreements, found (or made) by the first run that needs them.
    pub shared_agreements: OnceCell<Vec<Agreement>>,
}

/// How a run sends its requests.
#[derive(Debug, Clone, Copy)]
pub enum Loop {
    /// Each connection's next request as soon as its previous one is answered.
    Closed,
    /// At `pace`, asked as `asked`.
    Open { pace: Pace, asked: BenchRate },
}

/// The same invocation's runs a run is compared with, at the same connection count.
#[derive(Default, Clone, Copy)]
pub struct Baselines<'r> {
    /// `healthz`'s closed-loop run: every other closed-loop run's baseline.
    pub healthz: Option<&'r RunReport>,
    /// `axum`'s closed-loop run: `healthz`'s ceiling.
    pub axum: Option<&'r RunReport>,
}

impl Bench<'_> {
    /// Where the requests of `mode`, one of the modes whose server is the
    /// bench's own ([`BenchMode::in_bench`]), go: its base URL and endpoint.
    fn own_server(&self, mode: BenchMode) -> anyhow::Result<(&String, &Arc<Endpoint>)> {
        let server = match mode {
            BenchMode::Axum => Some((&self.axum.0.base, &self.axum.1)),
            BenchMode::Ceiling => self.ceiling.as_ref().map(|(s, e)| (&s.base, e)),
            BenchMode::CheckCeiling => self.check_ceiling.as_ref().map(|(s, e)| (&s.base, e)),
            _ => None,
        };
        server.with_context(|| format!("the {} mode's server was not started", mode.name()))
    }

    /// Runs `mode` at `connections` as run number `run`.
    pub async fn measure(
        &self,
        run: usize,
        mode: BenchMode,
        connections: usize,
        how: Loop,
        baselines: Baselines<'_>,
    ) -> anyhow::Result<RunReport> {
        let args = self.args;
        let feature = mode.feature_code(args);
        let agreements = self.agreements(run, mode).await?;
        // Shared agreements hold usage from before the run: it counts from here.
        let before = if mode.uses_agreements() && args.customers.is_some() {
            self.target.stored_usage(&agreements, feature).await?
        } else {
            (0, 0)
        };
        let seeded = if mode.seeds_usage() {
            self.target
                .seed(&agreements, |id| record_body(id, feature))
                .await?
        } else {
            0
        };
        let (base, endpoint) = if mode.in_bench() {
            self.own_server(mode)?
        } else {
            (&self.target.base, &self.endpoint)
        };
        // `ceiling` counts what it stored in its own table.
        let ceiling = match mode {
            BenchMode::Ceiling => self.ceiling.as_ref().map(|(server, _)| server),
            _ => None,
        };
        let workload = modes::workload(mode, args, base, &agreements)?;
        // The bench's own servers are in this process, whatever the target.
        let usage_now = || {
            if mode.in_bench() {
                OwnCpu::now().map(ServerUsage::InProcess)
            } else {
                self.target.usage_now()
            }
        };
        let in_target = !mode.in_bench();
        let ceiling_before = ceiling.map(WriteCeiling::stored).transpose()?;

        let writer_before = self.target.writer_stats();
        let usage_before = usage_now();
        let own_before = OwnCpu::now();
        let pace = match how {
            Loop::Closed => None,
            Loop::Open { pace, .. } => Some(pace),
        };
        let outcome = self
            .load
            .spawn(load::drive(
                endpoint.clone(),
                Arc::new(workload),
                self.authorization.clone(),
                args.requests,
                connections,
                pace,
            ))
            .await
            .context("the load generator panicked")??;
        let usage_after = usage_now();
        let own = own_before.zip(OwnCpu::now());
        let writer = match (writer_before, self.target.writer_stats()) {
            (Some(before), Some(after)) if in_target => Some(group_commit(before, after)),
            _ => None,
        };
        let peak_rss_kib = in_target.then(|| self.target.peak_rss_kib()).flatten();

        let stored = if let Some((server, (value, records))) = ceiling.zip(ceiling_before) {
            let (value_now, records_now) = server.stored()?;
            Some((
                value_now.saturating_sub(value),
                records_now.saturating_sub(records),
            ))
        } else if mode.uses_agreements() {
            let (value, records) = self.target.stored_usage(&agreements, feature).await?;
            Some((
                value.saturating_sub(before.0),
                records.saturating_sub(before.1),
            ))
        } else {
            None
        };

        let total = outcome.total(mode.name());
        let seconds = outcome.elapsed.as_secs_f64();
        let (records, acknowledged) = written(mode, args, &outcome);
        let requests = total.requests;
        let cpu = match (usage_before, usage_after) {
            (Some(before), Some(after)) => {
                cpu_per_request(before, after, own, requests, records, mode).map(|mut cpu| {
                    // The ceiling's writer thread is counted as the store's is;
                    // the bench's other servers record nothing and have none.
                    if mode.in_bench() && !mode.records_usage() {
                        cpu.sqlite_writer = None;
                        cpu.sqlite_writer_waiting = None;
                    }
                    cpu
                })
            }
            _ => None,
        };
        let latency = Latency::of(&total.latency);
        let requests_per_second = requests as f64 / seconds;
        let records_per_second = mode.records_usage().then(|| records as f64 / seconds);
        let ratios = |to: &RunReport| Ratios {
            requests_per_second: requests_per_second / to.requests_per_second,
            records_per_second: records_per_second.map(|r| r / to.requests_per_second),
            p50: latency.p50 / to.latency_ms.p50,
            p99: latency.p99 / to.latency_ms.p99,
            server_cpu_per_request: cpu
                .zip(to.cpu_us_per_request)
                .map(|(c, h)| c.server / h.server),
        };
        // Ratios compare closed-loop runs: an open-loop run's rate is asked.
        let closed = matches!(how, Loop::Closed);
        let vs_healthz = baselines.healthz.filter(|_| closed).map(ratios);
        let vs_axum = baselines
            .axum
            .filter(|_| closed && mode == BenchMode::Healthz)
            .map(ratios);
        let rate = match how {
            Loop::Closed => None,
            Loop::Open { pace, asked } => Some(RateReport {
                asked: match asked {
                    BenchRate::PerSecond(_) => "requests per second".to_owned(),
                    BenchRate::Half => "half the closed loop's".to_owned(),
                },
                asked_per_second: pace.per_second,
                achieved_per_second: requests_per_second,
            }),
        };
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
            rate,
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
            vs_axum,
            cpu_us_per_request: cpu,
            group_commit: writer,
            peak_rss_kib,
            stored: stored
                .map(|(value, records)| Stored::new(value, records, seeded + acknowledged)),
        })
    }

    /// The agreements run `run` of `mode` works on: none, new ones, or
    /// `--customers`' (found once per invocation).
    async fn agreements(&self, run: usize, mode: BenchMode) -> anyhow::Result<Vec<Agreement>> {
        let args = self.args;
        if !mode.uses_agreements() {
            return Ok(Vec::new());
        }
        match &args.customers {
            Some(prefix) => Ok(self
                .shared_agreements
                .get_or_try_init(|| {
                    self.target
                        .agreements(prefix, args.agreements, &args.plan_code, true)
                })
                .await?
                .clone()),
            None => {
                let prefix = format!("bench_{}_{run}", self.invocation);
                self.target
                    .agreements(&prefix, args.agreements, &args.plan_code, false)
                    .await
            }
        }
    }
}

/// The usage records the timed requests carried, and those acknowledged: the
/// 200 answers of single records (`write` requests of `mixed`), the `"OK"`
/// per-record results of the 200 answers of batches.
fn written(mode: BenchMode, args: &BenchArgs, outcome: &LoadOutcome) -> (u64, u64) {
    match mode {
        BenchMode::Single
        | BenchMode::SingleEnforced
        | BenchMode::SingleKeyed
        | BenchMode::Ceiling => {
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
        BenchMode::Healthz
        | BenchMode::Axum
        | BenchMode::Read
        | BenchMode::Check
        | BenchMode::CheckCeiling => (0, 0),
    }
}

/// CPU per request from the server's usage before and after, and this
/// process's (`own`: the load generator's threads, wherever the server is).
fn cpu_per_request(
    before: ServerUsage,
    after: ServerUsage,
    own: Option<(OwnCpu, OwnCpu)>,
    requests: u64,
    records: u64,
    mode: BenchMode,
) -> Option<CpuPerRequest> {
    let per = |seconds: f64, count: u64| seconds * 1e6 / count.max(1) as f64;
    let load_generator = own.map(|(before, after)| per(after.since(before).load, requests));
    let (server, sqlite_writer, sqlite_writer_waiting, server_in_this_process) =
        match (before, after) {
            (ServerUsage::InProcess(before), ServerUsage::InProcess(after)) => {
                let spent = after.since(before);
                (
                    spent.process - spent.load,
                    Some(per(spent.writer, requests)),
                    Some(per(spent.writer_waiting, requests)),
                    true,
                )
            }
            (ServerUsage::External(before), ServerUsage::External(after)) => {
                (after - before, None, None, false)
            }
            _ => return None,
        };
    Some(CpuPerRequest {
        server: per(server, requests),
        sqlite_writer,
        sqlite_writer_waiting,
        load_generator,
        server_per_record: (mode == BenchMode::Batch).then(|| per(server, records)),
        server_in_this_process,
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
