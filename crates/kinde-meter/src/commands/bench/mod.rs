//! `kinde-meter bench`: the load benchmark of every hot path
//! (docs/design.md#benchmark; figures in BENCHMARKS.md).
//!
//! At each `--connections` count it runs `axum` first (a bare axum
//! hello-world in this process, [`bare_axum`]: `healthz`'s ceiling), then
//! `healthz` (the HTTP path alone, every other figure's baseline from the same
//! invocation), then each `--mode` (see [`modes`]; `ceiling` and
//! `check-ceiling` go to servers of the bench's own, [`write_ceiling`] and
//! [`check_ceiling`], the least that can answer `single` and `check`), every
//! run a fixed number of
//! requests over that many concurrent keep-alive connections ([`load`]),
//! closed loop; with `--rate`, each mode given with `--mode` then runs again
//! open loop at that rate (or half the closed-loop run's). For each run it
//! reports throughput, latency percentiles from an HDR histogram, the answers
//! by status, the ratios to `healthz` (and `healthz`'s to `axum`), CPU per
//! request of the server and of the load generator, the server's peak RSS
//! where they can be read, and the group commits of an in-process server
//! ([`report`], text or `--json`). After each run it reads the usage of the
//! run's agreements back and fails, after the report, when what the run added
//! differs from what was acknowledged.
//!
//! By default the server runs in this process on a fresh data directory
//! ([`target`]), on a runtime and threads of its own laid out as `serve` runs
//! them; the load generator then shares the process, on its own runtime
//! whose threads are named [`process_stats::LOAD_THREAD_PREFIX`], so that its
//! CPU time can be told apart from the server's.

mod bare_axum;
mod check_ceiling;
mod command_line;
mod load;
mod measure;
mod modes;
mod process_stats;
mod report;
mod target;
mod write_ceiling;

use std::{collections::BTreeMap, sync::Arc};

use anyhow::{Context, bail};

use self::bare_axum::BareAxum;
use self::check_ceiling::CheckCeiling;
use self::load::{Endpoint, Pace};
use self::measure::{Baselines, Bench, Loop};
use self::modes::Mix;
use self::process_stats::{LOAD_THREAD_PREFIX, Machine};
use self::report::{LoadReport, Report, ServerReport};
use self::target::{Server, Target};
use self::write_ceiling::WriteCeiling;
use crate::cli::{BenchArgs, BenchMode, BenchRate};

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.requests == 0
        || args.connections.contains(&0)
        || args.agreements == 0
        || args.batch_size == 0
    {
        bail!("--requests, --connections, --agreements and --batch-size must be at least 1");
    }
    let modes = modes::run_order(&args.modes);
    // The modes that also run open loop (`--rate`): those asked for.
    let open_loop = |mode: BenchMode| args.rate.is_some() && args.modes.contains(&mode);
    let mut connections = Vec::new();
    for c in &args.connections {
        if !connections.contains(c) {
            connections.push(*c);
        }
    }
    let target = Target::start(&args).await?;
    let endpoint = Arc::new(Endpoint::resolve(&target.base).await?);
    let axum = BareAxum::start().await?;
    let axum_endpoint = Arc::new(Endpoint::resolve(&axum.base).await?);
    let authorization = target.authorization()?;
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let token = authorization
        .to_str()
        .context("the bench's authorization is not text")?;
    let ceiling = if modes.contains(&BenchMode::Ceiling) {
        let server = WriteCeiling::start(&parent, token).await?;
        let endpoint = Arc::new(Endpoint::resolve(&server.base).await?);
        Some((server, endpoint))
    } else {
        None
    };
    let check_ceiling = if modes.contains(&BenchMode::CheckCeiling) {
        let feature = BenchMode::CheckCeiling.feature_code(&args);
        let server = CheckCeiling::start(&parent, token, args.agreements, feature).await?;
        let endpoint = Arc::new(Endpoint::resolve(&server.base).await?);
        Some((server, endpoint))
    } else {
        None
    };
    // One worker per CPU. One worker in all was tried (in-process, open loop
    // at 1 000/s): its thread was scheduled in 1.6 times per request instead
    // of 4.1 (`perf sched timehist`: each wake-up of an idle worker wakes its
    // sibling too) and it used ~20 µs less CPU per request, but the p50 of
    // healthz, read and check came out higher, not lower (medians of 9 runs
    // with one worker and 15 with two, loaded host: 0.36-0.56 against
    // 0.30-0.31 ms, ranges overlapping), so it was not kept.
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
            axum_url: axum.base.clone(),
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
            rate: args.rate.map(|rate| match rate {
                BenchRate::PerSecond(n) => n.to_string(),
                BenchRate::Half => "half".to_owned(),
            }),
            customers: args.customers.clone(),
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
        endpoint,
        axum: (axum, axum_endpoint),
        ceiling,
        check_ceiling,
        load: &load,
        authorization,
        invocation: format!("{:08x}", rand::random::<u32>()),
        shared_agreements: tokio::sync::OnceCell::new(),
    };
    let per_connections = modes.len() + modes.iter().filter(|m| open_loop(**m)).count();
    let total = per_connections * connections.len();
    'runs: for &c in &connections {
        let (mut healthz, mut axum): (Option<usize>, Option<usize>) = (None, None);
        for &mode in &modes {
            // Closed loop, then open loop at --rate for the modes asked for.
            let passes = if open_loop(mode) { 2 } else { 1 };
            for pass in 0..passes {
                let number = report.runs.len() + 1;
                let how = match args.rate {
                    Some(asked) if pass == 1 => {
                        let closed_run =
                            report.runs.last().expect("the closed-loop run came first");
                        let per_second = match asked {
                            BenchRate::PerSecond(n) => n,
                            BenchRate::Half => closed_run.requests_per_second / 2.0,
                        };
                        Loop::Open {
                            asked,
                            pace: Pace { per_second },
                        }
                    }
                    _ => Loop::Closed,
                };
                if args.json {
                    let open = match how {
                        Loop::Open { pace, .. } => {
                            format!(", open loop at {:.0} req/s", pace.per_second)
                        }
                        Loop::Closed => String::new(),
                    };
                    eprintln!(
                        "run {number}/{total}: {} at {c} connections{open}",
                        mode.name()
                    );
                }
                let baselines = Baselines {
                    healthz: healthz.map(|i| &report.runs[i]),
                    axum: axum.map(|i| &report.runs[i]),
                };
                match bench.measure(number, mode, c, how, baselines).await {
                    Ok(run) => {
                        if !args.json {
                            report::print_run(&run, report.server.peak_rss_of.as_deref());
                        }
                        if matches!(how, Loop::Closed) {
                            match mode {
                                BenchMode::Healthz => healthz = Some(report.runs.len()),
                                BenchMode::Axum => axum = Some(report.runs.len()),
                                _ => {}
                            }
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
    }
    // The bare axum server goes with the bench, before the load generator.
    drop(bench);
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
