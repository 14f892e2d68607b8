//! Model-based test of billing: generated histories run through real servers
//! over HTTP with a test clock, every answer compared with a small reference
//! model written separately (`reference`), which knows nothing of
//! kinde-meter-core. A failure prints the case's seed, its history up to the
//! first difference, and how to rerun it.
//!
//! - `KINDE_METER_MODEL_CASES`: how many cases (default 2400 on SQLite, 1000 on
//!   PostgreSQL).
//! - `KINDE_METER_MODEL_SEED`: run this one case only (as a failure prints it).
//! - `KINDE_METER_MODEL_BASE_SEED`: the run's first seed (default: random,
//!   printed), to repeat a whole run.
//! - `KINDE_METER_MODEL_LANES`: servers per grace setting (default 3); cases
//!   run one at a time on a server (the clock is the server's), servers side by side.
//!
//! Each case uses customers and keys of its own, so cases share servers.

#[path = "../support/mod.rs"]
mod support;

mod driver;
mod generator;
mod reference;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use jiff::SignedDuration;
use kinde_meter_core::catalog::Catalog;
use kinde_meter_server::rate_limit::RateLimitConfig;
use kinde_meter_store::StoreConfig;

use driver::{Failure, run_case};
use generator::{GRACES, Generator};
use support::{Options, TestApp, on_postgres};

/// Stop after this many failing cases.
const MAX_FAILURES: usize = 3;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, not {text:?}")),
    )
}

/// Spreads consecutive numbers over all of u64 (SplitMix64), so case seeds of
/// nearby base seeds do not overlap.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The SQLite writer's period-order chunk of each lane's server, round
/// robin: everything filed at every commit, small chunks (records split
/// between filed and unfiled), and the default (docs/design.md#record-order).
const RECORD_ORDER_CHUNKS: [usize; 3] = [1, 3, 256];

async fn server(grace: i128, record_order_chunk: usize) -> TestApp {
    TestApp::spawn_with(Options {
        clock_at: Some("2000-01-01T00:00:00Z".parse().unwrap()),
        catalog: Catalog::parse(reference::CATALOG_TOML, "<model test catalog>").unwrap(),
        store: StoreConfig {
            grace: SignedDuration::from_nanos(grace as i64),
            idempotency_retention: SignedDuration::from_secs(
                (reference::RETENTION / reference::SECOND) as i64,
            ),
            record_order_chunk,
            ..StoreConfig::default()
        },
        rate_limits: RateLimitConfig::off(),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_histories_agree_with_the_reference_model() {
    let backend = if on_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let seeds: Vec<u64> = match env_u64("KINDE_METER_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => {
            let cases = env_u64("KINDE_METER_MODEL_CASES").unwrap_or(if on_postgres() {
                1000
            } else {
                2400
            });
            let base = env_u64("KINDE_METER_MODEL_BASE_SEED").unwrap_or_else(rand::random);
            eprintln!("model: {cases} cases on {backend}, KINDE_METER_MODEL_BASE_SEED={base}");
            (0..cases).map(|i| mix(base.wrapping_add(i))).collect()
        }
    };
    let lanes = env_u64("KINDE_METER_MODEL_LANES").unwrap_or(3).max(1) as usize;

    // One queue of cases per grace setting, served by that setting's servers.
    let queues: Vec<Arc<Mutex<VecDeque<u64>>>> =
        (0..GRACES.len()).map(|_| Arc::default()).collect();
    for &seed in &seeds {
        queues[Generator::grace_class_of(seed)]
            .lock()
            .unwrap()
            .push_back(seed);
    }
    let requests = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = vec![];
    for (class, queue) in queues.iter().enumerate() {
        let wanted = queue.lock().unwrap().len().min(lanes);
        for lane in 0..wanted {
            let chunk = RECORD_ORDER_CHUNKS[lane % RECORD_ORDER_CHUNKS.len()];
            let app = server(GRACES[class], chunk).await;
            let (queue, requests, failures, seen, stop) = (
                queue.clone(),
                requests.clone(),
                failures.clone(),
                seen.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(seed) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(failure) = run_case(&app, seed, &requests, &seen).await {
                        let mut failures = failures.lock().unwrap();
                        failures.push(failure);
                        if failures.len() >= MAX_FAILURES {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                app.stop().await;
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let requests = requests.load(Ordering::Relaxed);
    eprintln!(
        "model: {} cases, {requests} requests in {:.1} s on {backend} ({:.0} requests/s)",
        seeds.len(),
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    let seen = seen.lock().unwrap();
    let seen: Vec<String> = seen
        .iter()
        .map(|(what, n)| format!("{what}: {n}"))
        .collect();
    eprintln!("model: exercised: {}", seen.join(", "));
    let failures = failures.lock().unwrap();
    for failure in failures.iter() {
        eprintln!("\n{}\n", failure.report());
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} model case(s) disagree with the server; the first: seed {}: {}\n\
             rerun: KINDE_METER_MODEL_SEED={} cargo test -p kinde-meter-server --test model",
            failures.len(),
            first.seed,
            first.mismatch,
            first.seed
        );
    }
}
