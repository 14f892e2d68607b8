//! `kinde-meter bench`: the load benchmark.
//!
//! It sends a fixed number of `POST /api/v1/billing/meter_usage` records (a
//! `delta` of `1` each) over a fixed number of concurrent keep-alive connections,
//! first at a baseline concurrency (1 connection by default) and then at
//! `--connections`, in the same process against the same server, so that the
//! figures to quote are the ratios between the two runs (PERFORMANCE-NOTES: the
//! run-to-run spread on a shared 2-core machine reaches 20 %).
//!
//! For each run it reports requests/s, latency percentiles, the answers by
//! status, CPU time per request and, for the in-process SQLite server, the
//! average group-commit batch (records per committed transaction). Then it
//! reads the usage back and checks that exactly the acknowledged (200) records
//! were stored: a fixed request count, not a deadline, makes that check exact.
//!
//! `--mode` picks what is sent (see [`BenchMode`]): single records, single
//! records to a feature whose limit is enforced (the hard-limit decision on
//! every record), batches of `--batch-size` records (counted by their
//! per-record results: the acknowledged records are the `"OK"` results of the
//! 200 answers), usage checks, or `GET /healthz`, the HTTP path alone. Several
//! modes run one after the other against the same server, and the closing
//! summary gives each one's figures at the main concurrency and its ratio to
//! `healthz` and to `single` from the same process.
//!
//! By default the server runs in this process on a fresh data directory
//! (127.0.0.1:0, SQLite, demo catalog). The load generator then shares the
//! process, on its own runtime whose threads are named [`LOAD_THREAD_PREFIX`]:
//! their CPU time, read per thread from `/proc/self/task`, is subtracted from
//! the process's to give the server's share.
//!
//! The in-process server runs without rate limits; an external one (`--server`)
//! should be started with `--rate-limit 0`, or its 429s show in the answers.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    catalog::Catalog,
    ids::{FeatureCode, PlanCode},
};
use kinde_meter_server::{
    Application, ServerConfig,
    auth::{MintRequest, mint_token},
    rate_limit::RateLimitConfig,
};
use kinde_meter_store::{SQLITE_WRITER_THREAD, Store, WriterStats};
use kinde_meter_wire::{CreateMeterUsageRecordsBatchResponse, Scope};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::cli::{BenchArgs, BenchMode};

/// Thread name of the load generator's runtime (Linux keeps 15 characters).
const LOAD_THREAD_PREFIX: &str = "km-bench-load";

/// Thread name of the SQLite store's writer as Linux keeps it (15 bytes).
const WRITER_THREAD_PREFIX: &str = SQLITE_WRITER_THREAD.split_at(15).0;

/// Scopes the in-process benchmark token carries.
const BENCH_SCOPES: [Scope; 5] = [
    Scope::CreateMeterUsage,
    Scope::ReadMeterUsage,
    Scope::CreateBillingAgreements,
    Scope::ReadBillingAgreements,
    Scope::ReadBillingEntitlements,
];

/// `limit_max` of the in-process server's enforced feature: never reached, so
/// every record is decided against it and none is refused.
const ENFORCED_LIMIT: i64 = 1_000_000_000_000_000_000;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.requests == 0 || args.connections == 0 || args.agreements == 0 || args.batch_size == 0 {
        bail!("--requests, --connections, --agreements and --batch-size must be at least 1");
    }
    let command_line = command_line();
    let target = match &args.server {
        Some(server) => Target::External {
            base: server.trim_end_matches('/').to_owned(),
            token: args.token.clone().context("--server needs --token")?,
        },
        None => Target::InProcess(InProcess::start(&args).await?),
    };
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus())
        .thread_name(LOAD_THREAD_PREFIX)
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;

    let mut plan = Vec::new();
    if args.baseline_connections > 0 && args.baseline_connections != args.connections {
        plan.push(args.baseline_connections);
    }
    plan.push(args.connections);

    let mut modes = Vec::new();
    for mode in &args.modes {
        if !modes.contains(mode) {
            modes.push(*mode);
        }
    }
    // Today's output, unlabelled, when single records are all that is measured.
    let labelled = modes != [BenchMode::Single];

    println!("kinde-meter bench");
    println!("command: {command_line}");
    match &target {
        Target::InProcess(server) => println!(
            "server:  in-process at {}, SQLite (WAL, synchronous=FULL, group commit) in {}",
            server.base,
            server.data_dir.display()
        ),
        Target::External { base, .. } => println!("server:  {base} (external)"),
    }
    if labelled {
        println!(
            "load:    {} requests per run, over {} agreements (plan {}), HTTP/1.1 keep-alive, \
             load generator in this process ({} threads) on {} CPUs",
            args.requests,
            args.agreements,
            args.plan_code,
            cpus(),
            cpus()
        );
        for mode in &modes {
            println!(
                "mode:    {:<15} {}",
                mode_name(*mode),
                describe(*mode, &args)
            );
        }
    } else {
        println!(
            "load:    {} records per run, each a delta of \"1\" to {} over {} agreements (plan {}), \
             HTTP/1.1 keep-alive, load generator in this process ({} threads) on {} CPUs",
            args.requests,
            args.feature_code,
            args.agreements,
            args.plan_code,
            cpus(),
            cpus()
        );
    }

    let run_id = format!("{:08x}", rand::random::<u32>());
    let mut results: Vec<PhaseResult> = Vec::new();
    let mut failure = None;
    let mut index = 0;
    'modes: for &mode in &modes {
        let first = results.len();
        for &connections in &plan {
            index += 1;
            let result = run_phase(&args, &target, &load, &run_id, index, mode, connections).await;
            match result {
                Ok(result) => {
                    print_phase(index, &result, labelled);
                    if !result.exact() {
                        failure.get_or_insert_with(|| {
                            format!(
                                "run {index}: stored usage {} (in {} records) differs from the {} acknowledged records",
                                result.stored_value, result.stored_records, result.acknowledged
                            )
                        });
                    }
                    results.push(result);
                }
                Err(e) => {
                    failure = Some(format!("run {index}: {e:#}"));
                    break 'modes;
                }
            }
        }
        if let [base, main] = &results[first..] {
            print_ratio(base, main);
        }
    }
    load.shutdown_background();
    if labelled {
        print_summary(&results, args.connections);
    }
    if let Target::InProcess(server) = target {
        server.stop().await?;
    }
    match failure {
        Some(failure) => bail!("{failure}"),
        None => {
            if results.iter().any(|r| r.mode.writes()) {
                println!("stored = acknowledged in every run: yes");
            }
            Ok(())
        }
    }
}

impl BenchMode {
    /// Whether the mode records usage (and its runs are read back).
    fn writes(self) -> bool {
        matches!(
            self,
            BenchMode::Single | BenchMode::SingleEnforced | BenchMode::Batch
        )
    }
}

fn mode_name(mode: BenchMode) -> &'static str {
    match mode {
        BenchMode::Single => "single",
        BenchMode::SingleEnforced => "single-enforced",
        BenchMode::Check => "check",
        BenchMode::Healthz => "healthz",
        BenchMode::Batch => "batch",
    }
}

/// What a mode sends, for the header.
fn describe(mode: BenchMode, args: &BenchArgs) -> String {
    match mode {
        BenchMode::Single => format!(
            "POST /api/v1/billing/meter_usage, a delta of \"1\" to {} (limit not enforced)",
            args.feature_code
        ),
        BenchMode::SingleEnforced => format!(
            "POST /api/v1/billing/meter_usage, a delta of \"1\" to {} (enforce_limit, limit_max never reached)",
            args.enforced_feature_code
        ),
        BenchMode::Check => format!(
            "GET /api/v1/billing/entitlements/check?customer_id=…&feature_code={} (one record per agreement first)",
            args.feature_code
        ),
        BenchMode::Healthz => {
            "GET /healthz, no token (the HTTP path alone: the baseline)".to_owned()
        }
        BenchMode::Batch => format!(
            "POST /api/v1/billing/meter_usage/batch, {} records each, a delta of \"1\" to {} \
             spread over the agreements ({} records per run)",
            args.batch_size,
            args.feature_code,
            args.requests.saturating_mul(args.batch_size)
        ),
    }
}

/// Where the requests go.
enum Target {
    InProcess(InProcess),
    External { base: String, token: String },
}

impl Target {
    fn base(&self) -> &str {
        match self {
            Target::InProcess(s) => &s.base,
            Target::External { base, .. } => base,
        }
    }

    fn token(&self) -> &str {
        match self {
            Target::InProcess(s) => &s.token,
            Target::External { token, .. } => token,
        }
    }

    fn writer_stats(&self) -> Option<WriterStats> {
        match self {
            Target::InProcess(s) => Some(s.store.writer_stats()),
            Target::External { .. } => None,
        }
    }

    fn in_process(&self) -> bool {
        matches!(self, Target::InProcess(_))
    }
}

/// A server started in this process on a fresh data directory.
struct InProcess {
    base: String,
    token: String,
    data_dir: PathBuf,
    store: Arc<dyn Store>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(args: &BenchArgs) -> anyhow::Result<InProcess> {
        let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("kinde-meter-bench-")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot make a data directory in {}", parent.display()))?;
        let data_dir = dir.path().to_owned();
        let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), &data_dir);
        if args.modes.contains(&BenchMode::SingleEnforced) {
            add_enforced_feature(&mut config.catalog, args)?;
        }
        // The benchmark measures the server, not the per-client limit (one client
        // sends everything here).
        config.rate_limits = RateLimitConfig::off();
        let app = Application::build(config).await?;
        let token = mint_token(
            app.signing_key(),
            &MintRequest {
                issuer: app.identity().issuer(),
                audience: vec![app.identity().audience()],
                client_id: "kinde-meter-bench".to_owned(),
                scopes: BENCH_SCOPES.iter().map(Scope::to_string).collect(),
                lifetime: SignedDuration::from_hours(24),
                now: Timestamp::now(),
            },
        )?;
        let base = format!("http://{}", app.local_addr());
        let store = app.store();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Ok(InProcess {
            base,
            token,
            data_dir,
            store,
            stop,
            task,
            _dir: dir,
        })
    }

    /// Stops the server (draining it) before the data directory is removed.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the server task failed")??;
        Ok(())
    }
}

/// Adds `--enforced-feature-code` to the bench's plan: a copy of
/// `--feature-code` whose limit is enforced and never reached.
fn add_enforced_feature(catalog: &mut Catalog, args: &BenchArgs) -> anyhow::Result<()> {
    let plan_code = PlanCode::parse(args.plan_code.clone()).context("--plan-code")?;
    let feature_code = FeatureCode::parse(args.feature_code.clone()).context("--feature-code")?;
    let enforced_code = FeatureCode::parse(args.enforced_feature_code.clone())
        .context("--enforced-feature-code")?;
    let plan = catalog
        .plans
        .iter_mut()
        .find(|p| p.code == plan_code)
        .with_context(|| format!("the catalog has no plan {plan_code}"))?;
    if plan.feature(&enforced_code).is_some() {
        bail!("plan {plan_code} already has a feature {enforced_code}");
    }
    let mut enforced = plan
        .feature(&feature_code)
        .with_context(|| format!("plan {plan_code} has no feature {feature_code}"))?
        .clone();
    enforced.code = enforced_code;
    enforced.name = format!("{} (enforced)", enforced.name);
    enforced.limit_max = Some(ENFORCED_LIMIT);
    enforced.enforce_limit = true;
    plan.features.push(enforced);
    Ok(())
}

/// What one run measured.
struct PhaseResult {
    mode: BenchMode,
    connections: usize,
    requests: usize,
    /// Usage records sent: `requests` times the records per request.
    records: usize,
    elapsed: Duration,
    /// Latencies of the answered requests, sorted, in microseconds.
    latencies: Vec<u64>,
    /// Answers by status, and transport failures under `"transport error"`.
    outcomes: BTreeMap<String, u64>,
    first_transport_error: Option<String>,
    /// Records the server acknowledged: the 200 answers of single records, the
    /// `"OK"` per-record results of the 200 answers of batches.
    acknowledged: u64,
    /// Per-record results of the batches' 200 answers, by code.
    record_results: BTreeMap<String, u64>,
    cpu: Option<Cpu>,
    writer: Option<WriterStats>,
    stored_value: String,
    stored_records: u64,
}

impl PhaseResult {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU time per request, in seconds.
    fn server_cpu_per_request(&self) -> Option<f64> {
        self.cpu
            .map(|c| (c.process - c.load) / self.requests as f64)
    }

    /// Stored usage is exactly the acknowledged records (always, for a mode
    /// that records nothing).
    fn exact(&self) -> bool {
        !self.mode.writes()
            || (self.stored_value == self.acknowledged.to_string()
                && self.stored_records == self.acknowledged)
    }

    fn records_per_commit(&self) -> Option<f64> {
        self.writer
            .filter(|w| w.batches > 0)
            .map(|w| w.records as f64 / w.batches as f64)
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1000.0
    }
}

/// CPU time of a run, in seconds.
#[derive(Clone, Copy)]
struct Cpu {
    /// The whole process.
    process: f64,
    /// The load generator's threads.
    load: f64,
    /// The SQLite writer thread (part of the server's share).
    writer: f64,
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    args: &BenchArgs,
    target: &Target,
    load: &tokio::runtime::Runtime,
    run_id: &str,
    phase: usize,
    mode: BenchMode,
    connections: usize,
) -> anyhow::Result<PhaseResult> {
    let feature_code = match mode {
        BenchMode::SingleEnforced => &args.enforced_feature_code,
        _ => &args.feature_code,
    };
    // Fresh agreements per run, so that each run's stored usage is its own.
    let mut customers = Vec::new();
    let mut agreements = Vec::new();
    if mode != BenchMode::Healthz {
        for i in 0..args.agreements {
            let customer = format!("bench_{run_id}_{phase}_{i}");
            let id = super::remote::create_agreement(
                target.base(),
                &kinde_sdk::Auth::AccessToken(target.token().to_owned()),
                &customer,
                &args.plan_code,
            )
            .await
            .with_context(|| format!("cannot create the agreement for {customer}"))?;
            customers.push(customer);
            agreements.push(id);
        }
    }
    let body = |id: &str| {
        serde_json::json!({
            "customer_agreement_id": id,
            "billing_feature_code": feature_code,
            "meter_value": "1",
            "meter_type_code": "delta",
        })
        .to_string()
    };
    let record_url = format!("{}/api/v1/billing/meter_usage", target.base());
    let auth = HeaderValue::from_str(&format!("Bearer {}", target.token()))
        .context("the token is not a valid header value")?;
    let requests = match mode {
        BenchMode::Single | BenchMode::SingleEnforced => Requests::Post {
            url: record_url,
            bodies: agreements.iter().map(|id| body(id)).collect(),
            batch: false,
        },
        BenchMode::Batch => {
            // Body k holds --batch-size records over the agreements in turn,
            // starting at agreement k.
            let bodies = (0..agreements.len())
                .map(|k| {
                    let records: Vec<serde_json::Value> = (0..args.batch_size)
                        .map(|j| {
                            let id = &agreements[(k + j) % agreements.len()];
                            serde_json::json!({
                                "customer_agreement_id": id,
                                "billing_feature_code": feature_code,
                                "meter_value": "1",
                                "meter_type_code": "delta",
                            })
                        })
                        .collect();
                    serde_json::json!({ "records": records }).to_string()
                })
                .collect();
            Requests::Post {
                url: format!("{record_url}/batch"),
                bodies,
                batch: true,
            }
        }
        BenchMode::Check => {
            // Usage to check: each agreement's aggregate row exists, as it
            // does for a customer in use.
            let client = reqwest::Client::new();
            for id in &agreements {
                let response = client
                    .post(&record_url)
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body(id))
                    .send()
                    .await
                    .context("cannot record the usage to check")?;
                if !response.status().is_success() {
                    bail!(
                        "recording the usage to check answered {}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
            }
            let mut urls = Vec::with_capacity(customers.len());
            for customer in &customers {
                let url = reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/billing/entitlements/check", target.base()),
                    [
                        ("customer_id", customer.as_str()),
                        ("feature_code", feature_code.as_str()),
                    ],
                )
                .context("the server URL")?;
                urls.push(url.to_string());
            }
            Requests::Get { urls }
        }
        BenchMode::Healthz => Requests::Get {
            urls: vec![format!("{}/healthz", target.base())],
        },
    };
    let auth = (mode != BenchMode::Healthz).then_some(auth);

    let writer_before = target.writer_stats();
    let cpu_before = target.in_process().then(cpu_now).flatten();
    let count = args.requests;
    let outcome = load
        .spawn(drive(Arc::new(requests), auth, count, connections))
        .await
        .context("the load generator panicked")??;
    let cpu_after = target.in_process().then(cpu_now).flatten();
    let writer = match (writer_before, target.writer_stats()) {
        (Some(a), Some(b)) => Some(WriterStats {
            received: b.received - a.received,
            batches: b.batches - a.batches,
            failed_batches: b.failed_batches - a.failed_batches,
            jobs: b.jobs - a.jobs,
            records: b.records - a.records,
            largest_batch: b.largest_batch,
        }),
        _ => None,
    };
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(Cpu {
            process: b.process - a.process,
            load: b.load - a.load,
            writer: b.writer - a.writer,
        }),
        _ => None,
    };

    // Read back what was stored.
    let mut stored = 0u128;
    let mut stored_records = 0u64;
    if mode.writes() {
        for id in &agreements {
            let usage = super::remote::get_usage(
                target.base(),
                &kinde_sdk::Auth::AccessToken(target.token().to_owned()),
                id,
                Some(feature_code),
                None,
            )
            .await
            .with_context(|| format!("cannot read the usage of {id}"))?;
            for feature in usage.usage {
                stored += feature.value.parse::<u128>().with_context(|| {
                    format!("usage {:?} of {id} is not an integer", feature.value)
                })?;
                stored_records += feature.record_count;
            }
        }
    }

    let ok = outcome.outcomes.get("200").copied().unwrap_or(0);
    let (records, acknowledged) = match mode {
        BenchMode::Batch => (
            count.saturating_mul(args.batch_size),
            outcome.record_results.get("OK").copied().unwrap_or(0),
        ),
        _ => (count, ok),
    };
    Ok(PhaseResult {
        mode,
        connections,
        requests: count,
        records,
        elapsed: outcome.elapsed,
        latencies: outcome.latencies,
        outcomes: outcome.outcomes,
        first_transport_error: outcome.first_transport_error,
        acknowledged,
        record_results: outcome.record_results,
        cpu,
        writer,
        stored_value: stored.to_string(),
        stored_records,
    })
}

/// What a run sends: request `i` is the `i % n`-th body or URL.
enum Requests {
    /// `batch`: the 200 answers' per-record results are counted.
    Post {
        url: String,
        bodies: Vec<String>,
        batch: bool,
    },
    Get {
        urls: Vec<String>,
    },
}

struct LoadOutcome {
    elapsed: Duration,
    latencies: Vec<u64>,
    outcomes: BTreeMap<String, u64>,
    /// Per-record results of batch answers (200 only), by code.
    record_results: BTreeMap<String, u64>,
    first_transport_error: Option<String>,
}

/// Sends `requests` requests over `connections` concurrent keep-alive
/// connections: each of `connections` tasks sends one request at a time, taking
/// the next number until all are taken. Runs on the load generator's runtime.
async fn drive(
    spec: Arc<Requests>,
    auth: Option<HeaderValue>,
    requests: usize,
    connections: usize,
) -> anyhow::Result<LoadOutcome> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, spec, auth, next) = (client.clone(), spec.clone(), auth.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(requests / connections + 1);
            let mut outcomes = BTreeMap::<String, u64>::new();
            let mut record_results = BTreeMap::<String, u64>::new();
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let request = match &*spec {
                    Requests::Post { url, bodies, .. } => client
                        .post(url)
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                        .body(bodies[i % bodies.len()].clone()),
                    Requests::Get { urls } => client.get(&urls[i % urls.len()]),
                };
                let request = match &auth {
                    Some(auth) => request.header(AUTHORIZATION, auth.clone()),
                    None => request,
                };
                let sent = Instant::now();
                let answer = request.send().await;
                let status = match answer {
                    // The body is read to the end so that the connection is reused.
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Ok(body) => Ok((status, body)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                match status {
                    Ok((status, body)) => {
                        latencies.push(sent.elapsed().as_micros() as u64);
                        *outcomes.entry(status.as_u16().to_string()).or_default() += 1;
                        if status.is_success()
                            && matches!(&*spec, Requests::Post { batch: true, .. })
                        {
                            count_record_results(&body, &mut record_results);
                        }
                    }
                    Err(e) => {
                        *outcomes.entry("transport error".to_owned()).or_default() += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, outcomes, record_results, first_error)
        });
    }
    let mut outcome = LoadOutcome {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(requests),
        outcomes: BTreeMap::new(),
        record_results: BTreeMap::new(),
        first_transport_error: None,
    };
    while let Some(joined) = tasks.join_next().await {
        let (latencies, outcomes, record_results, first_error) =
            joined.context("a connection task panicked")?;
        outcome.latencies.extend(latencies);
        for (k, v) in outcomes {
            *outcome.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in record_results {
            *outcome.record_results.entry(k).or_default() += v;
        }
        if outcome.first_transport_error.is_none() {
            outcome.first_transport_error = first_error;
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort_unstable();
    Ok(outcome)
}

/// Adds a batch answer's per-record results to `into`, by code (an answer that
/// is not a batch answer counts under `"unreadable answer"`).
fn count_record_results(body: &[u8], into: &mut BTreeMap<String, u64>) {
    match serde_json::from_slice::<CreateMeterUsageRecordsBatchResponse>(body) {
        Ok(answer) => {
            for result in answer.results {
                *into.entry(result.code).or_default() += 1;
            }
        }
        Err(_) => *into.entry("unreadable answer".to_owned()).or_default() += 1,
    }
}

fn print_phase(index: usize, r: &PhaseResult, labelled: bool) {
    let plural = if r.connections == 1 { "" } else { "s" };
    println!();
    if labelled {
        println!(
            "run {index} ({}): {} connection{plural}",
            mode_name(r.mode),
            r.connections
        );
    } else {
        println!("run {index}: {} connection{plural}", r.connections);
    }
    if r.mode == BenchMode::Batch {
        println!(
            "  throughput    {:.0} records/s = {:.0} req/s ({} requests of {} records in {:.2} s)",
            r.records_per_second(),
            r.throughput(),
            r.requests,
            r.records / r.requests,
            r.elapsed.as_secs_f64()
        );
    } else {
        println!(
            "  throughput    {:.0} req/s ({} requests in {:.2} s)",
            r.throughput(),
            r.requests,
            r.elapsed.as_secs_f64()
        );
    }
    println!(
        "  latency       p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        r.percentile(0.50),
        r.percentile(0.90),
        r.percentile(0.99),
        r.percentile(1.0)
    );
    let mut answers = String::new();
    for (status, count) in &r.outcomes {
        if !answers.is_empty() {
            answers.push_str(", ");
        }
        let _ = write!(answers, "{status}: {count}");
    }
    println!("  answers       {answers}");
    if r.mode == BenchMode::Batch {
        let mut results = String::new();
        for (code, count) in &r.record_results {
            if !results.is_empty() {
                results.push_str(", ");
            }
            let _ = write!(results, "{code}: {count}");
        }
        if results.is_empty() {
            results.push_str("none");
        }
        println!("  records       {results} (per-record results of the 200 answers)");
    }
    if let Some(e) = &r.first_transport_error {
        println!("                first transport error: {e}");
    }
    match r.cpu {
        Some(cpu) => {
            let per = |s: f64| s * 1e6 / r.requests as f64;
            println!(
                "  CPU/request   {:.1} µs process = {:.1} µs server (of which {:.1} µs the SQLite \
                 writer thread) + {:.1} µs load generator (user+sys from /proc/self, {} ms resolution)",
                per(cpu.process),
                per(cpu.process - cpu.load),
                per(cpu.writer),
                per(cpu.load),
                1000.0 / USER_HZ
            );
        }
        None => println!("  CPU/request   n/a (server not in this process)"),
    }
    if let (BenchMode::Batch, Some(cpu)) = (r.mode, r.cpu) {
        let per = |s: f64| s * 1e6 / r.records as f64;
        println!(
            "  CPU/record    {:.2} µs server (of which {:.2} µs the SQLite writer thread) + {:.2} µs load generator",
            per(cpu.process - cpu.load),
            per(cpu.writer),
            per(cpu.load)
        );
    }
    if !r.mode.writes() {
        return;
    }
    match (r.writer, r.records_per_commit()) {
        (Some(w), Some(avg)) => println!(
            "  group commit  {} records in {} commits: {avg:.2} records/commit (largest batch so far {} jobs{})",
            w.records,
            w.batches,
            w.largest_batch,
            if w.failed_batches > 0 {
                format!(", {} failed batches", w.failed_batches)
            } else {
                String::new()
            }
        ),
        _ => println!("  group commit  n/a (server not in this process)"),
    }
    println!(
        "  stored        usage {} in {} records, acknowledged {}: {}",
        r.stored_value,
        r.stored_records,
        r.acknowledged,
        if r.exact() { "exact" } else { "MISMATCH" }
    );
}

fn print_ratio(base: &PhaseResult, main: &PhaseResult) {
    println!();
    let mut line = format!(
        "ratio {}{} vs {} connection{}: {:.2}x req/s",
        match main.mode {
            BenchMode::Single => String::new(),
            mode => format!("({}) ", mode_name(mode)),
        },
        main.connections,
        base.connections,
        if base.connections == 1 { "" } else { "s" },
        main.throughput() / base.throughput()
    );
    if let (Some(b), Some(m)) = (base.cpu, main.cpu) {
        let server = |c: Cpu, r: &PhaseResult| (c.process - c.load) / r.requests as f64;
        let _ = write!(
            line,
            ", {:.2}x server CPU/request",
            server(m, main) / server(b, base)
        );
    }
    if let (Some(b), Some(m)) = (base.records_per_commit(), main.records_per_commit())
        && main.mode.writes()
    {
        let _ = write!(line, ", records/commit {b:.2} -> {m:.2}");
    }
    println!("{line}");
}

/// Each mode's figures at `connections`, with its ratios to `healthz` and
/// `single` measured in the same process.
fn print_summary(results: &[PhaseResult], connections: usize) {
    let at = |mode| {
        results
            .iter()
            .find(|r| r.mode == mode && r.connections == connections)
    };
    let (healthz, single) = (at(BenchMode::Healthz), at(BenchMode::Single));
    println!();
    println!("summary at {connections} connections (same process, same server):");
    for r in results.iter().filter(|r| r.connections == connections) {
        let mut line = format!(
            "  {:<15} {:>7.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
            mode_name(r.mode),
            r.throughput(),
            r.percentile(0.50),
            r.percentile(0.99)
        );
        if let Some(cpu) = r.server_cpu_per_request() {
            let _ = write!(line, "  {:.1} µs server CPU/request", cpu * 1e6);
        }
        if r.mode == BenchMode::Batch {
            // A batch's figures per record, and its records/s against single's.
            let _ = write!(line, "  {:.0} records/s", r.records_per_second());
            if let Some(cpu) = r.cpu {
                let _ = write!(
                    line,
                    "  {:.2} µs server CPU/record",
                    (cpu.process - cpu.load) * 1e6 / r.records as f64
                );
            }
            if let Some(single) = single {
                let _ = write!(
                    line,
                    "  {:.2}x single records/s",
                    r.records_per_second() / single.records_per_second()
                );
            }
            if let Some(healthz) = healthz {
                let _ = write!(
                    line,
                    "  {:.2}x healthz req/s",
                    r.throughput() / healthz.throughput()
                );
            }
            println!("{line}");
            continue;
        }
        for (name, base) in [("healthz", healthz), ("single", single)] {
            if let Some(base) = base.filter(|b| b.mode != r.mode) {
                let _ = write!(
                    line,
                    "  {:.2}x {name} req/s",
                    r.throughput() / base.throughput()
                );
            }
        }
        println!("{line}");
    }
}

/// CPU time so far of the whole process and of the load generator's threads.
fn cpu_now() -> Option<Cpu> {
    let process = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, process) = parse_stat(&process)?;
    let (mut load, mut writer) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // the thread has just ended
        };
        match parse_stat(&stat) {
            Some((comm, ticks)) if comm.starts_with(LOAD_THREAD_PREFIX) => load += ticks,
            Some((comm, ticks)) if comm.starts_with(WRITER_THREAD_PREFIX) => writer += ticks,
            _ => {}
        }
    }
    Some(Cpu {
        process: process as f64 / USER_HZ,
        load: load as f64 / USER_HZ,
        writer: writer as f64 / USER_HZ,
    })
}

/// `(comm, utime + stime)` of a `/proc/…/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // After the comm: state is field 3; utime and stime are fields 14 and 15.
    let mut fields = stat[close + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// This process's command line, quoted for a POSIX shell, with a token's value
/// left out.
fn command_line() -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in std::env::args() {
        if hide_next {
            out.push("\"$TOKEN\"".to_owned());
            hide_next = false;
            continue;
        }
        if arg == "--token" {
            hide_next = true;
            out.push(arg);
            continue;
        }
        if arg.starts_with("--token=") {
            out.push("--token=\"$TOKEN\"".to_owned());
            continue;
        }
        out.push(shell_quote(&arg));
    }
    out.join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_and_comm_from_a_stat_line() {
        let line = "1234 (km-bench-load) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 4 0 99";
        assert_eq!(parse_stat(line), Some(("km-bench-load", 280)));
        // A comm with spaces and parentheses.
        let line = "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0";
        assert_eq!(parse_stat(line), Some(("a (b) c", 3)));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some());
    }

    #[test]
    fn quotes_only_what_a_shell_needs_quoted() {
        assert_eq!(shell_quote("--requests"), "--requests");
        assert_eq!(
            shell_quote("target/release/kinde-meter"),
            "target/release/kinde-meter"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
