//! Create-call throughput of `kinde-sdk` from one process: `--calls` calls of
//! [`BillingMeterUsageApi::create_meter_usage_record`], `--concurrency` at a
//! time, each with the value `1`, spread round-robin over `--agreements`.
//!
//! ```sh
//! cargo run --release -p kinde-sdk --example create_throughput -- \
//!     --server http://127.0.0.1:8080 --token "$TOKEN" \
//!     --agreements agreement_…,agreement_… --calls 20000 --concurrency 16
//! ```
//!
//! The calls are made as an application makes them: one shared [`ApiClient`]
//! (its default retry policy and timeouts), one `CreateMeterUsageRecordRequest`
//! built per call, a generated `Idempotency-Key` per call (the SDK's default),
//! the bearer `--token`, or tokens the SDK fetches and caches itself from an M2M
//! client's `--client-id` and `--client-secret` (`kinde-meter clients create`),
//! on the runtime `#[tokio::main]` gives (one worker thread per core);
//! `--runtime current-thread` runs everything on the main thread instead, to
//! show what the runtime's cross-thread wake-ups cost the client.
//!
//! Prints calls/s, latency percentiles and the process's CPU time during the
//! calls, then one line `RESULT {json}` with the same figures for scripts
//! (`bench/sdk-vs-python/run.sh` compares it with the official Python SDK's
//! `tests/python/sdk_create_throughput.py`). Exits 1 if any call failed.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kinde_sdk::models::{CreateMeterUsageRecordRequest, MeterTypeCode};
use kinde_sdk::{ApiClient, Auth, BillingMeterUsageApi, Configuration};

const USAGE: &str = "usage: create_throughput --server URL (--token T | --client-id ID --client-secret S) \
                     --agreements ID[,ID…] \
                     [--feature api_calls] [--calls 10000] [--concurrency 1] \
                     [--runtime multi-thread|current-thread]";

/// The command line.
struct Args {
    server: String,
    auth: Auth,
    agreements: Vec<String>,
    feature: String,
    calls: usize,
    concurrency: usize,
    current_thread: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut token = None;
    let mut client_id = None;
    let mut client_secret = None;
    let mut agreements = Vec::new();
    let mut feature = "api_calls".to_owned();
    let mut calls = 10_000;
    let mut concurrency = 1;
    let mut current_thread = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => server = Some(value()?),
            "--token" => token = Some(value()?),
            "--client-id" => client_id = Some(value()?),
            "--client-secret" => client_secret = Some(value()?),
            "--agreements" => {
                agreements = value()?
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--feature" => feature = value()?,
            "--calls" => calls = value()?.parse().map_err(|e| format!("--calls: {e}"))?,
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--runtime" => {
                current_thread = match value()?.as_str() {
                    "multi-thread" => false,
                    "current-thread" => true,
                    other => return Err(format!("--runtime: unknown runtime {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if agreements.is_empty() {
        return Err("--agreements is required".to_owned());
    }
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".to_owned());
    }
    let auth = match (token, client_id, client_secret) {
        (Some(token), None, None) => Auth::AccessToken(token),
        (None, Some(id), Some(secret)) => Auth::client_credentials(id, secret),
        _ => return Err("give --token, or --client-id and --client-secret".to_owned()),
    };
    Ok(Args {
        server: server.ok_or("--server is required")?,
        auth,
        agreements,
        feature,
        calls,
        concurrency,
        current_thread,
    })
}

/// What one task saw.
#[derive(Default)]
struct TaskResult {
    latencies: Vec<Duration>,
    failed: usize,
    first_error: Option<String>,
}

/// Takes call numbers from `next` until `calls` are taken, and makes each call.
async fn worker(
    api: BillingMeterUsageApi,
    agreements: Arc<[String]>,
    feature: Arc<str>,
    next: Arc<AtomicUsize>,
    calls: usize,
) -> TaskResult {
    let mut result = TaskResult::default();
    loop {
        let call = next.fetch_add(1, Ordering::Relaxed);
        if call >= calls {
            return result;
        }
        let request = CreateMeterUsageRecordRequest {
            customer_agreement_id: agreements[call % agreements.len()].clone(),
            billing_feature_code: feature.to_string(),
            meter_value: "1".to_owned(),
            meter_usage_timestamp: None,
            meter_type_code: Some(MeterTypeCode::Delta),
        };
        let started = Instant::now();
        match api.create_meter_usage_record(request).await {
            Ok(_) => result.latencies.push(started.elapsed()),
            Err(error) => {
                result.failed += 1;
                result.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// This process's user + system CPU time so far, from `/proc/self/stat`
/// (Linux; clock ticks of 1/100 s, the `USER_HZ` of every Linux ABI).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of proc(5); field 3 is fields[0].
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("a tokio runtime");
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let configuration = Configuration::new(&args.server).with_auth(args.auth.clone());
    let api = match ApiClient::new(configuration) {
        Ok(client) => BillingMeterUsageApi::new(client),
        Err(error) => {
            eprintln!("configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let agreements: Arc<[String]> = args.agreements.into();
    let feature: Arc<str> = args.feature.into();
    let next = Arc::new(AtomicUsize::new(0));

    let cpu_before = process_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                api.clone(),
                agreements.clone(),
                feature.clone(),
                next.clone(),
                args.calls,
            ))
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.calls);
    let mut failed = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await.expect("a worker task panicked");
        latencies.extend(result.latencies);
        failed += result.failed;
        first_error = first_error.or(result.first_error);
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, process_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };

    latencies.sort_unstable();
    let ok = latencies.len();
    let seconds = elapsed.as_secs_f64();
    let calls_per_s = ok as f64 / seconds;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99) = (
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );
    let cpu_us_per_call = cpu.as_secs_f64() * 1e6 / (ok + failed).max(1) as f64;
    println!(
        "kinde-sdk (Rust): {ok} ok, {failed} failed in {seconds:.2} s at concurrency {}: \
         {calls_per_s:.0} calls/s, p50 {p50:.3} ms, p99 {p99:.3} ms, \
         client CPU {:.2} s ({cpu_us_per_call:.0} µs per call)",
        args.concurrency,
        cpu.as_secs_f64()
    );
    if let Some(error) = &first_error {
        eprintln!("first error: {error}");
    }
    let result = serde_json::json!({
        "client": "kinde-sdk (Rust)",
        "concurrency": args.concurrency,
        "runtime": if args.current_thread { "current-thread" } else { "multi-thread" },
        "calls": args.calls,
        "ok": ok,
        "failed": failed,
        "seconds": seconds,
        "calls_per_s": calls_per_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_s": cpu.as_secs_f64(),
        "cpu_us_per_call": cpu_us_per_call,
    });
    println!("RESULT {result}");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
