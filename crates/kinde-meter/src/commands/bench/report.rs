//! The bench's report: the figures of every run, as text while the runs go
//! (with a closing table per connection count, in Markdown so that it can be
//! pasted into BENCHMARKS.md) or as one JSON document (`--json`).

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::modes::Mix;
use super::process_stats::{Machine, USER_HZ};

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line, secrets left out.
    pub command: String,
    pub server: ServerReport,
    pub machine: Machine,
    pub load: LoadReport,
    /// The connection counts, in the order they ran.
    pub connections: Vec<usize>,
    /// The modes, in the order they ran at each connection count.
    pub modes: Vec<&'static str>,
    pub runs: Vec<RunReport>,
    /// Whether every run's stored usage equals what it acknowledged (true when
    /// no run was checked).
    pub stored_equals_acknowledged: bool,
    /// Why the bench failed, if it did.
    pub failure: Option<String>,
}

/// The server under load.
#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub url: String,
    /// `"in-process"` or `"external"`.
    pub kind: &'static str,
    pub description: String,
    /// Whose memory `peak_rss_kib` is (null: not measured).
    pub peak_rss_of: Option<String>,
    /// The bare axum server of the `axum` runs (in the bench's process).
    pub axum_url: String,
}

/// What every run sends.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub requests_per_run: usize,
    pub agreements_per_run: usize,
    pub plan_code: String,
    pub feature_code: String,
    pub batch_size: usize,
    pub mixed: Mix,
    /// Threads of the load generator (in the bench's process).
    pub load_generator_threads: usize,
    /// `--rate` as given (null: closed-loop runs only).
    pub rate: Option<String>,
    /// `--customers`: the prefix of the customers whose agreements every run
    /// shares (null: each run makes its own).
    pub customers: Option<String>,
    /// What each mode sends.
    pub modes: BTreeMap<&'static str, String>,
}

/// One mode at one connection count.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Its number, from 1, in the order of the runs.
    pub run: usize,
    pub mode: &'static str,
    pub connections: usize,
    /// Open-loop runs (`--rate`): the rate asked and achieved (null: closed loop).
    pub rate: Option<RateReport>,
    pub requests: u64,
    /// Usage records the timed requests carried (0 when they record nothing).
    pub records: u64,
    pub elapsed_seconds: f64,
    pub requests_per_second: f64,
    /// For modes that record usage.
    pub records_per_second: Option<f64>,
    pub latency_ms: Latency,
    /// Answers by HTTP status (`"transport error"`: no answer).
    pub answers: BTreeMap<String, u64>,
    /// Per-record results of the 200 batch answers, by code (`batch` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_results: Option<BTreeMap<String, u64>>,
    /// Each kind of request on its own (`mixed` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_request: Vec<KindReport>,
    pub first_transport_error: Option<String>,
    /// Ratios to `healthz` at the same connection count, same invocation
    /// (closed-loop runs but `healthz`'s and `axum`'s).
    pub vs_healthz: Option<Ratios>,
    /// `healthz` only: ratios to the bare axum at the same connection count,
    /// same invocation (issue 11 asks for at least 0.9 in requests/s).
    pub vs_axum: Option<Ratios>,
    /// CPU time per request, where it can be read.
    pub cpu_us_per_request: Option<CpuPerRequest>,
    /// The in-process SQLite writer's commits during the run.
    pub group_commit: Option<GroupCommit>,
    /// The server's peak RSS so far (VmHWM, KiB): see `server.peak_rss_of`.
    pub peak_rss_kib: Option<u64>,
    /// The usage read back after the run (modes with agreements).
    pub stored: Option<Stored>,
}

/// Latency percentiles of the answered requests, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds (NaN, null in JSON, when empty).
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |us: u64| {
            if histogram.is_empty() {
                f64::NAN
            } else {
                us as f64 / 1000.0
            }
        };
        Latency {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            self.p50, self.p90, self.p99, self.p99_9, self.max
        )
    }
}

/// One kind of request of a `mixed` run.
#[derive(Debug, Serialize)]
pub struct KindReport {
    pub name: &'static str,
    pub requests: u64,
    pub requests_per_second: f64,
    pub latency_ms: Latency,
    pub answers: BTreeMap<String, u64>,
}

/// An open-loop run's pace.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// How the rate was asked: `"requests per second"` (`--rate N`) or `"half
    /// the closed loop's"` (`--rate half`).
    pub asked: String,
    /// Requests per second asked, over all connections.
    pub asked_per_second: f64,
    /// Requests per second sent and answered, from the first due to the last answer.
    pub achieved_per_second: f64,
}

/// A run's figures divided by a baseline's (`healthz`, or `axum` for
/// `healthz`) at the same connection count.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    pub requests_per_second: f64,
    /// Records/s over the baseline's requests/s (modes that record usage).
    pub records_per_second: Option<f64>,
    pub p50: f64,
    pub p99: f64,
    pub server_cpu_per_request: Option<f64>,
}

/// CPU time per request, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerRequest {
    /// The server: an in-process server's share of this process (the load
    /// generator's threads subtracted), or `--server-pid`'s.
    pub server: f64,
    /// Of which the SQLite writer thread (in-process server).
    pub sqlite_writer: Option<f64>,
    /// Not CPU time: how long the SQLite writer thread waited for a CPU
    /// while ready to run, per request (in-process server; 0 where the kernel
    /// keeps no schedstats). With the writer's own CPU time and the
    /// throughput, it tells how much of the run's wall time the writer spent
    /// waiting for a core rather than working or syncing.
    pub sqlite_writer_waiting: Option<f64>,
    /// The load generator (this process's load threads, wherever the server is).
    pub load_generator: Option<f64>,
    /// Whether the server ran in this process (the in-process server, or the
    /// bare axum), its CPU the process's less the load generator's.
    pub server_in_this_process: bool,
    /// The server's CPU per usage record (`batch`).
    pub server_per_record: Option<f64>,
}

/// Commits of the in-process SQLite writer during a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GroupCommit {
    pub records: u64,
    pub commits: u64,
    pub records_per_commit: f64,
    pub largest_batch_so_far: u64,
    pub failed_commits: u64,
}

/// The usage stored for a run's agreements against what it acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    /// Sum of the stored usage values the run added (every record is a delta
    /// of 1; with `--customers`, what was stored before the run is subtracted).
    pub value: String,
    /// Sum of the stored record counts the run added.
    pub records: u64,
    /// Records answered 200 (batches: per-record `"OK"` results of 200 answers),
    /// those recorded before the timed requests included.
    pub acknowledged: u64,
    /// `value` and `records` both equal `acknowledged`.
    pub exact: bool,
}

impl Stored {
    pub fn new(value: u128, records: u64, acknowledged: u64) -> Stored {
        Stored {
            value: value.to_string(),
            records,
            acknowledged,
            exact: value == u128::from(acknowledged) && records == acknowledged,
        }
    }
}

impl RunReport {
    fn label(&self) -> String {
        let plural = if self.connections == 1 { "" } else { "s" };
        let rate = match &self.rate {
            Some(rate) => format!(", open loop at {:.0} req/s", rate.asked_per_second),
            None => String::new(),
        };
        format!(
            "run {} ({} at {} connection{plural}{rate})",
            self.run, self.mode, self.connections
        )
    }

    /// The summary table's load column: `closed`, or `open N/s`.
    fn load_text(&self) -> String {
        match &self.rate {
            Some(rate) => format!("open {:.0}/s", rate.asked_per_second),
            None => "closed".to_owned(),
        }
    }
}

/// The runs whose stored usage differs from what they acknowledged, as one
/// message, or `None`.
pub fn mismatches(runs: &[RunReport]) -> Option<String> {
    let wrong: Vec<String> = runs
        .iter()
        .filter_map(|run| {
            let stored = run.stored.as_ref().filter(|s| !s.exact)?;
            Some(format!(
                "{}: usage {} in {} records stored, {} records acknowledged",
                run.label(),
                stored.value,
                stored.records,
                stored.acknowledged
            ))
        })
        .collect();
    (!wrong.is_empty()).then(|| {
        format!(
            "stored usage differs from acknowledged: {}",
            wrong.join("; ")
        )
    })
}

/// The report's opening lines.
pub fn print_header(report: &Report) {
    println!("kinde-meter bench");
    println!("command: {}", report.command);
    println!("server:  {}", report.server.description);
    let machine = &report.machine;
    println!(
        "machine: {} CPUs ({}), {} memory, load average {}",
        machine.cpus,
        machine.cpu_model.as_deref().unwrap_or("unknown model"),
        machine
            .memory_kib
            .map_or("unknown".to_owned(), |kib| format!(
                "{:.1} GiB",
                kib as f64 / 1048576.0
            )),
        load_text(machine.load_average_at_start)
    );
    let agreements = match &report.load.customers {
        Some(prefix) => format!("the agreements of customers {prefix}_0…"),
        None => "agreements of their own".to_owned(),
    };
    println!(
        "load:    {} requests per run over {} {agreements} (plan {}), HTTP/1.1 keep-alive \
         (hyper client connections), load generator in this process ({} threads); connections {}{}",
        report.load.requests_per_run,
        report.load.agreements_per_run,
        report.load.plan_code,
        report.load.load_generator_threads,
        report
            .connections
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        match &report.load.rate {
            Some(rate) => format!("; closed loop, then open loop at --rate {rate}"),
            None => "; closed loop".to_owned(),
        }
    );
    for mode in &report.modes {
        println!("mode:    {mode:<15} {}", report.load.modes[mode]);
    }
}

fn load_text(load: Option<[f64; 3]>) -> String {
    load.map_or("unknown".to_owned(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

fn answers_text(answers: &BTreeMap<String, u64>) -> String {
    if answers.is_empty() {
        return "none".to_owned();
    }
    answers
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One run's figures, as text.
pub fn print_run(run: &RunReport, peak_rss_of: Option<&str>) {
    println!();
    println!("{}", run.label());
    if let Some(rate) = &run.rate {
        println!(
            "  rate          asked {:.0} req/s ({}), achieved {:.0} req/s; latency from each \
             request's intended send time",
            rate.asked_per_second, rate.asked, rate.achieved_per_second
        );
    }
    match run.record_results {
        Some(_) => println!(
            "  throughput    {:.0} records/s = {:.0} req/s ({} requests of {} records in {:.2} s)",
            run.records_per_second.unwrap_or(f64::NAN),
            run.requests_per_second,
            run.requests,
            run.records / run.requests.max(1),
            run.elapsed_seconds
        ),
        None => println!(
            "  throughput    {:.0} req/s ({} requests in {:.2} s)",
            run.requests_per_second, run.requests, run.elapsed_seconds
        ),
    }
    println!("  latency       {}", run.latency_ms.text());
    println!("  answers       {}", answers_text(&run.answers));
    for kind in &run.by_request {
        println!(
            "  {:<13} {} requests, {:.0} req/s, answers {}; {}",
            kind.name,
            kind.requests,
            kind.requests_per_second,
            answers_text(&kind.answers),
            kind.latency_ms.text()
        );
    }
    if let Some(results) = &run.record_results {
        println!(
            "  records       {} (per-record results of the 200 answers)",
            answers_text(results)
        );
    }
    if let Some(e) = &run.first_transport_error {
        println!("                first transport error: {e}");
    }
    for (name, ratios) in [("vs healthz", run.vs_healthz), ("vs axum", run.vs_axum)] {
        let Some(vs) = ratios else { continue };
        let mut line = format!("{:.2}x req/s", vs.requests_per_second);
        if let Some(records) = vs.records_per_second
            && run.record_results.is_some()
        {
            let _ = write!(line, ", {records:.2}x in records/s");
        }
        let _ = write!(line, ", {:.2}x p50, {:.2}x p99", vs.p50, vs.p99);
        if let Some(cpu) = vs.server_cpu_per_request {
            let _ = write!(line, ", {cpu:.2}x server CPU/request");
        }
        println!("  {name:<13} {line}");
    }
    match run.cpu_us_per_request {
        Some(CpuPerRequest {
            server,
            sqlite_writer,
            sqlite_writer_waiting,
            load_generator: Some(load),
            server_in_this_process: true,
            ..
        }) => println!(
            "  CPU/request   {:.1} µs process = {server:.1} µs server{} + {load:.1} µs load generator \
             (user+sys from /proc/self, {} ms resolution)",
            server + load,
            sqlite_writer.map_or(String::new(), |writer| format!(
                " (of which {writer:.1} µs the SQLite writer thread{})",
                sqlite_writer_waiting.map_or(String::new(), |waiting| format!(
                    ", which also waited {waiting:.1} µs for a CPU"
                ))
            )),
            1000.0 / USER_HZ
        ),
        Some(cpu) => println!(
            "  CPU/request   {:.1} µs server (user+sys from /proc/PID, {} ms resolution){}",
            cpu.server,
            1000.0 / USER_HZ,
            cpu.load_generator.map_or(String::new(), |load| format!(
                "; load generator {load:.1} µs (this process)"
            ))
        ),
        None => println!("  CPU/request   n/a (server not in this process; --server-pid gives it)"),
    }
    if let Some(per_record) = run.cpu_us_per_request.and_then(|c| c.server_per_record) {
        println!("  CPU/record    {per_record:.2} µs server");
    }
    if let Some(g) = run.group_commit
        && run.records > 0
    {
        println!(
            "  group commit  {} records in {} commits: {:.2} records/commit (largest batch so far {} jobs{})",
            g.records,
            g.commits,
            g.records_per_commit,
            g.largest_batch_so_far,
            if g.failed_commits > 0 {
                format!(", {} failed commits", g.failed_commits)
            } else {
                String::new()
            }
        );
    }
    match (run.peak_rss_kib, peak_rss_of) {
        (Some(kib), Some(of)) => println!(
            "  peak RSS      {:.1} MiB so far ({of})",
            kib as f64 / 1024.0
        ),
        _ => println!("  peak RSS      n/a (server not on this machine; --server-pid gives it)"),
    }
    if let Some(stored) = &run.stored {
        println!(
            "  stored        usage {} in {} records, acknowledged {}: {}",
            stored.value,
            stored.records,
            stored.acknowledged,
            if stored.exact { "exact" } else { "MISMATCH" }
        );
    }
}

/// The closing tables, one row per run, grouped by connection count.
pub fn print_summary(report: &Report) {
    println!();
    println!(
        "summary (ratios to healthz at the same connections, same invocation; load average at the end {}):",
        load_text(report.machine.load_average_at_end)
    );
    println!();
    println!(
        "| connections | mode | load | req/s | records/s | p50 ms | p90 ms | p99 ms | p99.9 ms | × healthz req/s | × axum req/s | server CPU µs/req | load generator CPU µs/req | peak RSS MiB | stored = acknowledged |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |value: Option<f64>, digits: usize| {
        value.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
    };
    for run in &report.runs {
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
            run.connections,
            run.mode,
            run.load_text(),
            run.requests_per_second,
            opt(run.records_per_second, 0),
            run.latency_ms.p50,
            run.latency_ms.p90,
            run.latency_ms.p99,
            run.latency_ms.p99_9,
            opt(run.vs_healthz.map(|v| v.requests_per_second), 2),
            opt(run.vs_axum.map(|v| v.requests_per_second), 2),
            opt(run.cpu_us_per_request.map(|c| c.server), 1),
            opt(run.cpu_us_per_request.and_then(|c| c.load_generator), 1),
            opt(run.peak_rss_kib.map(|kib| kib as f64 / 1024.0), 1),
            match &run.stored {
                Some(stored) if stored.exact => "yes",
                Some(_) => "NO",
                None => "–",
            }
        );
    }
    if report.runs.iter().any(|run| run.stored.is_some()) {
        println!();
        println!(
            "stored = acknowledged in every run: {}",
            if report.stored_equals_acknowledged {
                "yes"
            } else {
                "NO"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(number: usize, stored: Option<Stored>) -> RunReport {
        RunReport {
            run: number,
            mode: "single",
            connections: 64,
            rate: None,
            requests: 300,
            records: 300,
            elapsed_seconds: 1.0,
            requests_per_second: 300.0,
            records_per_second: Some(300.0),
            latency_ms: Latency::of(&Histogram::new(3).unwrap()),
            answers: BTreeMap::from([("200".to_owned(), 300)]),
            record_results: None,
            by_request: Vec::new(),
            first_transport_error: None,
            vs_healthz: None,
            vs_axum: None,
            cpu_us_per_request: None,
            group_commit: None,
            peak_rss_kib: None,
            stored,
        }
    }

    #[test]
    fn stored_is_exact_only_when_value_and_records_equal_the_acknowledged() {
        assert!(Stored::new(300, 300, 300).exact);
        assert!(!Stored::new(299, 299, 300).exact);
        assert!(!Stored::new(300, 299, 300).exact);
        assert!(!Stored::new(301, 301, 300).exact);
    }

    #[test]
    fn a_mismatch_is_named_with_its_run_and_figures() {
        assert_eq!(
            mismatches(&[run(1, None), run(2, Some(Stored::new(300, 300, 300)))]),
            None
        );
        let message = mismatches(&[
            run(2, Some(Stored::new(300, 300, 300))),
            run(3, Some(Stored::new(299, 299, 300))),
        ])
        .unwrap();
        assert_eq!(
            message,
            "stored usage differs from acknowledged: run 3 (single at 64 connections): \
             usage 299 in 299 records stored, 300 records acknowledged"
        );
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
        for us in 1..=1000 {
            histogram.record(us * 10).unwrap();
        }
        let latency = Latency::of(&histogram);
        assert!((latency.p50 - 5.0).abs() < 0.01, "{latency:?}");
        assert!((latency.p99 - 9.9).abs() < 0.01, "{latency:?}");
        assert!((latency.max - 10.0).abs() < 0.01, "{latency:?}");
        let empty = Latency::of(&Histogram::new(3).unwrap());
        assert!(empty.p50.is_nan());
        // NaN is null in the JSON document.
        assert_eq!(
            serde_json::to_value(empty).unwrap()["p99.9"],
            serde_json::Value::Null
        );
    }
}
