//! `kinde-meter bench`: the load benchmark of every hot path
//! (docs/design.md#benchmark; figures in BENCHMARKS.md).
//!
//! At each `--connections` count it runs `healthz` first (the HTTP path alone,
//! every other figure's baseline from the same invocation) and then each
//! `--mode` (see [`modes`]), every run a fixed number of requests over that
//! many concurrent keep-alive connections ([`load`]). For each run it reports
//! throughput, latency percentiles from an HDR histogram, the answers by
//! status, the ratios to `healthz`, CPU per request and the server's peak RSS
//! where they can be read, and the group commits of an in-process server
//! ([`report`], text or `--json`). After each run it reads the usage of the
//! run's agreements back and fails, after the report, when it differs from
//! what was acknowledged.
//!
//! By default the server runs in this process on a fresh data directory
//! ([`target`]); the load generator then shares the process, on its own
//! runtime whose threads are named [`process_stats::LOAD_THREAD_PREFIX`], so
//! that its CPU time can be told apart from the server's.

mod command_line;
mod load;
mod measure;
mod modes;
mod process_stats;
mod report;
mod target;

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use self::measure::Bench;
use self::modes::Mix;
use self::process_stats::{LOAD_THREAD_PREFIX, Machine};
use self::report::{LoadReport, Report, ServerReport};
use self::target::{Server, Target};
use crate::cli::{BenchArgs, BenchMode};

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.requests == 0
        || args.connections.contains(&0)
        || args.agreements == 0
        || args.batch_size == 0
    {
        bail!("--requests, --connections, --agreements and --batch-size must be at least 1");
    }
    let modes = modes::run_order(&args.modes);
    let mut connections = Vec::new();
    for c in &args.connections {
        if !connections.contains(c) {
            connections.push(*c);
        }
    }
    let target = Target::start(&args).await?;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(process_stats::cpus())
        .thread_name(LOAD_THREAD_PREFIX)
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;

    let mut report = Report {
        command: command_line::current(),
        server: ServerReport {
            url: target.base.clone(),
            kind: match target.server {
                Server::InProcess(_) => "in-process",
                Server::External { .. } => "external",
            },
            description: target.describe(),
            peak_rss_of: target.peak_rss_of(),
        },
        machine: Machine::now(),
        load: LoadReport {
            requests_per_run: args.requests,
            agreements_per_run: args.agreements,
            plan_code: args.plan_code.clone(),
            feature_code: args.feature_code.clone(),
            batch_size: args.batch_size,
            mixed: Mix::of_cycle(),
            load_generator_threads: process_stats::cpus(),
            modes: modes
                .iter()
                .map(|m| (m.name(), modes::describe(*m, &args)))
                .collect::<BTreeMap<_, _>>(),
        },
        connections: connections.clone(),
        modes: modes.iter().map(|m| m.name()).collect(),
        runs: Vec::new(),
        stored_equals_acknowledged: true,
        failure: None,
    };
    if !args.json {
        report::print_header(&report);
    }

    let bench = Bench {
        args: &args,
        target: &target,
        load: &load,
        authorization: target.authorization()?,
        invocation: format!("{:08x}", rand::random::<u32>()),
    };
    let total = modes.len() * connections.len();
    'runs: for &c in &connections {
        let mut healthz: Option<usize> = None;
        for &mode in &modes {
            let number = report.runs.len() + 1;
            if args.json {
                eprintln!("run {number}/{total}: {} at {c} connections", mode.name());
            }
            let baseline = healthz.map(|i| &report.runs[i]);
            match bench.measure(number, mode, c, baseline).await {
                Ok(run) => {
                    if !args.json {
                        report::print_run(&run, report.server.peak_rss_of.as_deref());
                    }
                    if mode == BenchMode::Healthz {
                        healthz = Some(report.runs.len());
                    }
                    report.runs.push(run);
                }
                Err(e) => {
                    report.failure = Some(format!(
                        "run {number} ({} at {c} connections): {e:#}",
                        mode.name()
                    ));
                    break 'runs;
                }
            }
        }
    }
    load.shutdown_background();
    let stopped = target.stop().await;

    report.machine.load_average_at_end = process_stats::load_average();
    let mismatch = report::mismatches(&report.runs);
    report.stored_equals_acknowledged = mismatch.is_none();
    if report.failure.is_none() {
        report.failure = mismatch.clone();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot write the report")?
        );
    } else {
        report::print_summary(&report);
    }
    stopped?;
    // A run that failed outright, then stored usage that differs from what was
    // acknowledged: both loud, after the figures.
    match (report.failure, mismatch) {
        (Some(failure), Some(mismatch)) if failure != mismatch => bail!("{failure}; {mismatch}"),
        (Some(failure), _) => bail!("{failure}"),
        (None, _) => Ok(()),
    }
}
