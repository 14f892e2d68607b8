//! The load generator: a fixed number of requests over a fixed number of
//! concurrent keep-alive connections, each connection sending one request at a
//! time and taking the next number until all are taken. A fixed count, not a
//! deadline, so that the stored usage can be compared exactly with what was
//! acknowledged (a timed run stops counting while requests are still in flight).
//!
//! A [`Workload`] has one or more kinds of request (`mixed` has three) sent in
//! a fixed cycle; each kind's latencies go into its own HDR histogram and its
//! answers are counted by status.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use kinde_meter_wire::CreateMeterUsageRecordsBatchResponse;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

/// Longest latency a histogram holds, in microseconds (beyond the client's
/// timeout of 60 s); longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 120_000_000;

/// How long one request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Key under which failures without an HTTP answer are counted.
pub const TRANSPORT_ERROR: &str = "transport error";

/// What a run sends.
pub struct Workload {
    /// The kinds of request.
    pub kinds: Vec<RequestKind>,
    /// Request `i` is of kind `cycle[i % cycle.len()]`.
    pub cycle: Vec<usize>,
}

impl Workload {
    /// A workload of one kind of request.
    pub fn uniform(kind: RequestKind) -> Workload {
        Workload {
            kinds: vec![kind],
            cycle: vec![0],
        }
    }

    /// Request `i`'s kind, and its number among the requests of that kind.
    fn pick(&self, i: usize) -> (usize, usize) {
        let kind = self.cycle[i % self.cycle.len()];
        let per_cycle = self.cycle.iter().filter(|k| **k == kind).count();
        let before = self.cycle[..i % self.cycle.len()]
            .iter()
            .filter(|k| **k == kind)
            .count();
        (kind, i / self.cycle.len() * per_cycle + before)
    }
}

/// One kind of request: request `j` of this kind is the `j % n`-th body or URL.
pub struct RequestKind {
    /// Its name in reports (`write`, `read`, `check`, or the mode's name).
    pub name: &'static str,
    pub method: Method,
    /// Whether it carries the bearer token.
    pub authorised: bool,
    /// Whether its 200 answers are batch answers whose per-record results count.
    pub batch: bool,
}

/// A request's method, with what it sends.
pub enum Method {
    Post { url: String, bodies: Vec<String> },
    Get { urls: Vec<String> },
}

/// What one kind of request got.
pub struct KindOutcome {
    pub name: &'static str,
    pub requests: u64,
    /// Latencies of the answered requests, in microseconds.
    pub latency: Histogram<u64>,
    /// Answers by status, and failures without an answer under [`TRANSPORT_ERROR`].
    pub answers: BTreeMap<String, u64>,
    /// Per-record results of the 200 batch answers, by code.
    pub record_results: BTreeMap<String, u64>,
    pub first_transport_error: Option<String>,
}

impl KindOutcome {
    fn new(name: &'static str) -> KindOutcome {
        KindOutcome {
            name,
            requests: 0,
            latency: new_histogram(),
            answers: BTreeMap::new(),
            record_results: BTreeMap::new(),
            first_transport_error: None,
        }
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &KindOutcome) {
        self.requests += other.requests;
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds add");
        for (status, count) in &other.answers {
            *self.answers.entry(status.clone()).or_default() += count;
        }
        for (code, count) in &other.record_results {
            *self.record_results.entry(code.clone()).or_default() += count;
        }
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error.clone();
        }
    }

    /// The 200 answers.
    pub fn ok(&self) -> u64 {
        self.answers.get("200").copied().unwrap_or(0)
    }
}

/// What a run got.
pub struct LoadOutcome {
    /// From the first request sent to the last answer.
    pub elapsed: Duration,
    /// One per kind of the workload, in its order.
    pub kinds: Vec<KindOutcome>,
}

impl LoadOutcome {
    /// All kinds together.
    pub fn total(&self, name: &'static str) -> KindOutcome {
        let mut total = KindOutcome::new(name);
        for kind in &self.kinds {
            total.merge(kind);
        }
        total
    }
}

/// An empty latency histogram: 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// What one connection saw: `(kind, latency µs)` per answer, and the counts.
struct ConnectionLog {
    latencies: Vec<(usize, u64)>,
    kinds: Vec<KindTally>,
}

#[derive(Default)]
struct KindTally {
    requests: u64,
    answers: BTreeMap<String, u64>,
    record_results: BTreeMap<String, u64>,
    first_transport_error: Option<String>,
}

/// Sends `requests` requests of `workload` over `connections` concurrent
/// keep-alive connections (HTTP/1.1). Runs on the load generator's runtime.
pub async fn drive(
    workload: Arc<Workload>,
    auth: HeaderValue,
    requests: usize,
    connections: usize,
) -> anyhow::Result<LoadOutcome> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, workload, auth, next) =
            (client.clone(), workload.clone(), auth.clone(), next.clone());
        tasks.spawn(async move {
            let mut log = ConnectionLog {
                latencies: Vec::with_capacity(requests / connections + 1),
                kinds: workload
                    .kinds
                    .iter()
                    .map(|_| KindTally::default())
                    .collect(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let (k, j) = workload.pick(i);
                let kind = &workload.kinds[k];
                let request = match &kind.method {
                    Method::Post { url, bodies } => client
                        .post(url)
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                        .body(bodies[j % bodies.len()].clone()),
                    Method::Get { urls } => client.get(&urls[j % urls.len()]),
                };
                let request = if kind.authorised {
                    request.header(AUTHORIZATION, auth.clone())
                } else {
                    request
                };
                let tally = &mut log.kinds[k];
                tally.requests += 1;
                let sent = Instant::now();
                // The body is read to the end so that the connection is reused.
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.map(|body| (status, body))
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok((status, body)) => {
                        log.latencies.push((k, sent.elapsed().as_micros() as u64));
                        *tally
                            .answers
                            .entry(status.as_u16().to_string())
                            .or_default() += 1;
                        if kind.batch && status.is_success() {
                            count_record_results(&body, &mut tally.record_results);
                        }
                    }
                    Err(e) => {
                        *tally.answers.entry(TRANSPORT_ERROR.to_owned()).or_default() += 1;
                        tally
                            .first_transport_error
                            .get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            log
        });
    }
    let mut kinds: Vec<KindOutcome> = workload
        .kinds
        .iter()
        .map(|k| KindOutcome::new(k.name))
        .collect();
    while let Some(joined) = tasks.join_next().await {
        let log = joined.context("a connection task panicked")?;
        for (k, latency) in log.latencies {
            kinds[k].latency.saturating_record(latency.max(1));
        }
        for (outcome, tally) in kinds.iter_mut().zip(log.kinds) {
            outcome.requests += tally.requests;
            for (status, count) in tally.answers {
                *outcome.answers.entry(status).or_default() += count;
            }
            for (code, count) in tally.record_results {
                *outcome.record_results.entry(code).or_default() += count;
            }
            if outcome.first_transport_error.is_none() {
                outcome.first_transport_error = tally.first_transport_error;
            }
        }
    }
    Ok(LoadOutcome {
        elapsed: started.elapsed(),
        kinds,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &'static str) -> RequestKind {
        RequestKind {
            name,
            method: Method::Get { urls: Vec::new() },
            authorised: true,
            batch: false,
        }
    }

    #[test]
    fn a_cycle_numbers_each_kinds_requests_in_turn() {
        let workload = Workload {
            kinds: vec![kind("write"), kind("read")],
            cycle: vec![0, 0, 1],
        };
        let picked: Vec<_> = (0..7).map(|i| workload.pick(i)).collect();
        assert_eq!(
            picked,
            [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (0, 4)]
        );
        let uniform = Workload::uniform(kind("single"));
        assert_eq!(uniform.pick(5), (0, 5));
    }

    #[test]
    fn merged_outcomes_add_counts_and_latencies() {
        let mut a = KindOutcome::new("write");
        a.requests = 2;
        a.answers.insert("200".into(), 2);
        a.latency.record(100).unwrap();
        a.latency.record(300).unwrap();
        let mut b = KindOutcome::new("read");
        b.requests = 1;
        b.answers.insert("503".into(), 1);
        b.latency.record(10_000).unwrap();
        let total = LoadOutcome {
            elapsed: Duration::from_secs(1),
            kinds: vec![a, b],
        }
        .total("mixed");
        assert_eq!(total.requests, 3);
        assert_eq!(total.ok(), 2);
        assert_eq!(total.answers.get("503"), Some(&1));
        assert_eq!(total.latency.len(), 3);
        assert_eq!(
            total.latency.max(),
            total.latency.highest_equivalent(10_000)
        );
    }

    #[test]
    fn batch_answers_are_counted_by_record_result() {
        let mut into = BTreeMap::new();
        count_record_results(
            br#"{"code":"OK","message":"Success","results":[{"index":0,"code":"OK","message":"Success"},{"index":1,"code":"FEATURE_NOT_FOUND","message":"x"}]}"#,
            &mut into,
        );
        count_record_results(b"not json", &mut into);
        assert_eq!(into.get("OK"), Some(&1), "{into:?}");
        assert_eq!(into.get("FEATURE_NOT_FOUND"), Some(&1), "{into:?}");
        assert_eq!(into.get("unreadable answer"), Some(&1));
    }
}
