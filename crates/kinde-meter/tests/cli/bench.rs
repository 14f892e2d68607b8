//! `kinde-meter bench`, run short as CI runs it: every mode with a few hundred
//! requests, in-process (SQLite) and against running servers (SQLite with a
//! token or client credentials, PostgreSQL given
//! `KINDE_METER_TEST_DATABASE_URL`). What is asserted is correctness: every
//! answer 200, the stored usage equal to what was acknowledged, the report's
//! shape (the bare axum baseline, open-loop runs at a --rate, agreements
//! shared with --customers). Never a timing.

use kinde_meter_store::postgres::scratch::ScratchSchema;
use serde_json::Value;

use crate::support::{Server, kinde_meter, run, run_ok};

/// The `--json` report of a bench that succeeded.
fn bench_json(command: &mut std::process::Command) -> Value {
    let stdout = run_ok(command.arg("--json"));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The run of `mode` at `connections`.
fn run_of<'a>(report: &'a Value, mode: &str, connections: u64) -> &'a Value {
    report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == mode && r["connections"] == connections)
        .unwrap_or_else(|| panic!("no {mode} run at {connections}: {report:#}"))
}

/// Every run answered `requests` × 200 and nothing else, its percentiles are
/// in order, and each run that made agreements stored exactly what it
/// acknowledged: `expected` (mode, acknowledged records).
fn assert_correct(report: &Value, requests: u64, expected: &[(&str, u64)]) {
    assert_eq!(report["failure"], Value::Null, "{report:#}");
    assert_eq!(report["stored_equals_acknowledged"], true, "{report:#}");
    for run in report["runs"].as_array().unwrap() {
        let mode = run["mode"].as_str().unwrap();
        assert_eq!(run["requests"], requests, "{run:#}");
        assert_eq!(
            run["answers"],
            serde_json::json!({ "200": requests }),
            "{run:#}"
        );
        assert_eq!(run["first_transport_error"], Value::Null, "{run:#}");
        let latency = &run["latency_ms"];
        let p = |name: &str| latency[name].as_f64().unwrap();
        assert!(
            0.0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"),
            "{run:#}"
        );
        assert!(p("p99") <= p("p99.9") && p("p99.9") <= p("max"), "{run:#}");
        assert!(run["requests_per_second"].as_f64().unwrap() > 0.0);
        assert!(
            run["cpu_us_per_request"].is_null()
                || run["cpu_us_per_request"]["load_generator"]
                    .as_f64()
                    .unwrap()
                    >= 0.0,
            "{run:#}"
        );
        if mode == "healthz" || mode == "axum" {
            assert_eq!(run["vs_healthz"], Value::Null, "{run:#}");
            assert_eq!(run["stored"], Value::Null, "{run:#}");
            assert_eq!(run["rate"], Value::Null, "{run:#}");
            // healthz's ceiling: the bare axum of the same connection count.
            assert_eq!(
                run["vs_axum"]["requests_per_second"].as_f64().is_some(),
                mode == "healthz",
                "{run:#}"
            );
            continue;
        }
        assert_eq!(run["vs_axum"], Value::Null, "{run:#}");
        match &run["rate"] {
            // Open loop: no ratios, the rate asked and achieved.
            Value::Null => assert!(
                run["vs_healthz"]["requests_per_second"].as_f64().unwrap() > 0.0,
                "{run:#}"
            ),
            rate => {
                assert_eq!(run["vs_healthz"], Value::Null, "{run:#}");
                assert!(rate["asked_per_second"].as_f64().unwrap() > 0.0, "{run:#}");
                assert!(
                    rate["achieved_per_second"].as_f64().unwrap() > 0.0,
                    "{run:#}"
                );
            }
        }
        // check's ceiling reads a table of its own, which nothing records to.
        if mode == "check-ceiling" {
            assert_eq!(run["stored"], Value::Null, "{run:#}");
            assert_eq!(run["records"], 0, "{run:#}");
            continue;
        }
        let acknowledged = expected
            .iter()
            .find(|(m, _)| *m == mode)
            .unwrap_or_else(|| panic!("unexpected mode {mode}"))
            .1;
        let stored = &run["stored"];
        assert_eq!(stored["acknowledged"], acknowledged, "{run:#}");
        assert_eq!(stored["value"], acknowledged.to_string(), "{run:#}");
        assert_eq!(stored["records"], acknowledged, "{run:#}");
        assert_eq!(stored["exact"], true, "{run:#}");
    }
}

#[test]
fn every_mode_in_process_stores_exactly_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_json(
        kinde_meter()
            .args(["bench", "--requests", "200", "--connections", "2,4"])
            .args(["--agreements", "3", "--batch-size", "10"])
            .args([
                "--mode",
                "single,batch,read,check,mixed,single-enforced,single-keyed,ceiling,check-ceiling",
            ])
            .arg("--work-dir")
            .arg(dir.path()),
    );
    // At each connection count the bare axum and healthz first, then the
    // modes as given.
    let order: Vec<(&str, u64)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["mode"].as_str().unwrap(),
                r["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    let modes = [
        "axum",
        "healthz",
        "single",
        "batch",
        "read",
        "check",
        "mixed",
        "single-enforced",
        "single-keyed",
        "ceiling",
        "check-ceiling",
    ];
    let expected_order: Vec<(&str, u64)> = [2, 4]
        .iter()
        .flat_map(|c| modes.iter().map(move |m| (*m, *c)))
        .collect();
    assert_eq!(order, expected_order);
    // read, check and mixed record one record per agreement first; mixed
    // writes 16 of every 20 requests.
    assert_correct(
        &report,
        200,
        &[
            ("single", 200),
            ("single-enforced", 200),
            ("single-keyed", 200),
            ("batch", 2000),
            ("read", 3),
            ("check", 3),
            ("mixed", 160 + 3),
            ("ceiling", 200),
        ],
    );
    for connections in [2, 4] {
        let batch = run_of(&report, "batch", connections);
        assert_eq!(batch["records"], 2000);
        assert_eq!(batch["record_results"], serde_json::json!({ "OK": 2000 }));
        assert!(batch["cpu_us_per_request"]["server_per_record"].is_number());
        // The in-process server's writer: its CPU and its wait for a CPU.
        let single = &run_of(&report, "single", connections)["cpu_us_per_request"];
        assert!(
            single["sqlite_writer"].as_f64().unwrap() >= 0.0,
            "{single:#}"
        );
        assert!(
            single["sqlite_writer_waiting"].as_f64().unwrap() >= 0.0,
            "{single:#}"
        );
        let mixed = run_of(&report, "mixed", connections);
        let kinds: Vec<(&str, u64)> = mixed["by_request"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["name"].as_str().unwrap(), k["requests"].as_u64().unwrap()))
            .collect();
        assert_eq!(kinds, [("write", 160), ("read", 30), ("check", 10)]);
        for kind in mixed["by_request"].as_array().unwrap() {
            assert_eq!(kind["answers"]["200"], kind["requests"], "{mixed:#}");
        }
        // The in-process SQLite writer committed exactly the timed records.
        let single = run_of(&report, "single", connections);
        assert_eq!(single["group_commit"]["records"], 200, "{single:#}");
        assert_eq!(single["group_commit"]["failed_commits"], 0, "{single:#}");
        assert!(single["cpu_us_per_request"]["sqlite_writer"].is_number());
        assert!(single["peak_rss_kib"].as_u64().unwrap() > 0);
        assert_eq!(run_of(&report, "read", connections)["records"], 0);
        // single's ceiling: in this process, its writer thread counted as the
        // store's, its own table's records compared with its 200s (above).
        let ceiling = run_of(&report, "ceiling", connections);
        assert_eq!(ceiling["records"], 200, "{ceiling:#}");
        let cpu = &ceiling["cpu_us_per_request"];
        assert_eq!(cpu["server_in_this_process"], true, "{ceiling:#}");
        assert!(cpu["sqlite_writer"].as_f64().unwrap() >= 0.0, "{ceiling:#}");
        assert_eq!(ceiling["group_commit"], Value::Null, "{ceiling:#}");
        // check's ceiling: in this process too, no writer of its own.
        let cpu = &run_of(&report, "check-ceiling", connections)["cpu_us_per_request"];
        assert_eq!(cpu["server_in_this_process"], true, "{cpu:#}");
        assert_eq!(cpu["sqlite_writer"], Value::Null, "{cpu:#}");
    }
    assert_eq!(report["server"]["kind"], "in-process");
    assert!(
        report["server"]["peak_rss_of"]
            .as_str()
            .unwrap()
            .contains("load generator")
    );
    assert_eq!(
        report["load"]["mixed"],
        serde_json::json!({ "write_percent": 80, "read_percent": 15, "check_percent": 5 })
    );
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
    // The bare axum answered in this process, on a port of its own.
    let axum = run_of(&report, "axum", 2);
    assert_eq!(axum["cpu_us_per_request"]["server_in_this_process"], true);
    assert_ne!(report["server"]["axum_url"], report["server"]["url"]);
    // The in-process server's data directory is removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn text_report_has_each_run_and_a_summary_table() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_ok(
        kinde_meter()
            .args(["bench", "--requests", "100", "--connections", "4"])
            .args(["--agreements", "2", "--mode", "single", "--work-dir"])
            .arg(dir.path()),
    );
    assert!(
        stdout.contains("command: ") && stdout.contains("bench --requests 100 --connections 4"),
        "{stdout}"
    );
    // The bare axum and healthz run first even when not asked for: they are
    // the baselines.
    let axum = stdout
        .find("run 1 (axum at 4 connections)\n")
        .expect(&stdout);
    let healthz = stdout
        .find("run 2 (healthz at 4 connections)\n")
        .expect(&stdout);
    let single = stdout
        .find("run 3 (single at 4 connections)\n")
        .expect(&stdout);
    assert!(axum < healthz && healthz < single);
    assert_eq!(
        stdout.matches("answers       200: 100\n").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("  vs healthz    "), "{stdout}");
    assert!(stdout.contains("  vs axum       "), "{stdout}");
    assert!(stdout.contains(" µs load generator"), "{stdout}");
    assert!(stdout.contains("records/commit"), "{stdout}");
    assert!(
        stdout.contains("stored        usage 100 in 100 records, acknowledged 100: exact"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| connections | mode | load | req/s |"),
        "{stdout}"
    );
    assert!(stdout.contains("\n| 4 | single | closed | "), "{stdout}");
    assert!(stdout.contains("\n| 4 | axum | closed | "), "{stdout}");
    assert!(
        stdout.ends_with("stored = acknowledged in every run: yes\n"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn against_a_running_server_with_a_token_or_client_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--rate-limit", "0"]);
    let token = server.printed_token();
    let pid = server.pid().to_string();
    let report = bench_json(kinde_meter().args([
        "bench",
        "--requests",
        "100",
        "--connections",
        "2",
        "--agreements",
        "2",
        "--batch-size",
        "5",
        "--server",
        &server.url,
        "--server-pid",
        &pid,
        "--token",
        &token,
    ]));
    assert_correct(
        &report,
        100,
        &[
            ("single", 100),
            ("batch", 500),
            ("read", 2),
            ("check", 2),
            ("mixed", 80 + 2),
        ],
    );
    assert_eq!(report["runs"].as_array().unwrap().len(), 7);
    assert_eq!(report["server"]["kind"], "external");
    assert!(
        report["command"]
            .as_str()
            .unwrap()
            .contains("--token \"$TOKEN\"")
    );
    assert!(!report.to_string().contains(&token), "the token is printed");
    // The server's own process: its CPU and peak RSS, no in-process figures.
    let single = run_of(&report, "single", 2);
    assert!(single["peak_rss_kib"].as_u64().unwrap() > 0, "{single:#}");
    assert!(
        single["cpu_us_per_request"]["server"].is_number(),
        "{single:#}"
    );
    assert_eq!(single["cpu_us_per_request"]["sqlite_writer"], Value::Null);
    assert_eq!(single["group_commit"], Value::Null);

    // An M2M client's credentials instead of a token; no --server-pid.
    let created: Value = serde_json::from_str(&run_ok(
        kinde_meter()
            .args(["clients", "create", "--name", "bench", "--json", "--scopes"])
            .arg(
                "create:meter_usage read:meter_usage create:billing_agreements \
                 read:billing_agreements read:billing_entitlements",
            )
            .arg("--data-dir")
            .arg(dir.path()),
    ))
    .unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    let stdout = run_ok(kinde_meter().args([
        "bench",
        "--requests",
        "100",
        "--connections",
        "2",
        "--agreements",
        "2",
        "--mode",
        "single",
        "--server",
        &server.url,
        "--client-id",
        created["client_id"].as_str().unwrap(),
        "--client-secret",
        secret,
    ]));
    assert!(
        stdout.contains(&format!("server:  {} (external)", server.url)),
        "{stdout}"
    );
    assert!(!stdout.contains(secret), "the secret is printed: {stdout}");
    assert!(
        stdout.contains("--client-secret \"$CLIENT_SECRET\""),
        "{stdout}"
    );
    assert!(stdout.contains("CPU/request   n/a"), "{stdout}");
    assert!(stdout.contains("peak RSS      n/a"), "{stdout}");
    assert!(
        stdout.contains("stored        usage 100 in 100 records, acknowledged 100: exact"),
        "{stdout}"
    );

    // Wrong credentials fail before any run, loudly.
    let refused = run(kinde_meter().args([
        "bench",
        "--server",
        &server.url,
        "--client-id",
        created["client_id"].as_str().unwrap(),
        "--client-secret",
        "wrong",
    ]));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the token endpoint answered 401"),
        "{stderr}"
    );
    assert!(server.stop().success());
}

#[test]
fn open_loop_runs_at_half_the_closed_loop_rate_store_what_they_acknowledge() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_json(
        kinde_meter()
            .args(["bench", "--requests", "100", "--connections", "2"])
            .args(["--agreements", "2", "--batch-size", "5"])
            .args(["--mode", "single,batch", "--rate", "half", "--work-dir"])
            .arg(dir.path()),
    );
    let order: Vec<(&str, bool)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["mode"].as_str().unwrap(), r["rate"].is_null()))
        .collect();
    // Each mode asked for, closed loop then open loop; the baselines closed only.
    assert_eq!(
        order,
        [
            ("axum", true),
            ("healthz", true),
            ("single", true),
            ("single", false),
            ("batch", true),
            ("batch", false)
        ]
    );
    assert_eq!(report["load"]["rate"], "half");
    assert_correct(&report, 100, &[("single", 100), ("batch", 500)]);
    let runs = report["runs"].as_array().unwrap();
    for pair in [&runs[2..4], &runs[4..6]] {
        let (closed, open) = (&pair[0], &pair[1]);
        assert_eq!(open["rate"]["asked"], "half the closed loop's", "{open:#}");
        // serde_json parses floats to within an ulp, not always exactly.
        let asked = open["rate"]["asked_per_second"].as_f64().unwrap();
        let closed = closed["requests_per_second"].as_f64().unwrap();
        assert!((asked / (closed / 2.0) - 1.0).abs() < 1e-9, "{pair:#?}");
        assert_eq!(
            open["rate"]["achieved_per_second"], open["requests_per_second"],
            "{open:#}"
        );
    }
}

#[test]
fn reads_at_a_fixed_rate_over_agreements_an_earlier_run_filled() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--rate-limit", "0"]);
    let token = server.printed_token();
    let bench = |args: &[&str]| {
        let mut command = kinde_meter();
        command
            .args(["bench", "--connections", "2", "--agreements", "2"])
            .args(["--customers", "filled", "--server", &server.url])
            .args(["--token", &token])
            .args(args);
        bench_json(&mut command)
    };
    // The filling: 40 batches of 10 records over filled_0 and filled_1.
    let filled = bench(&["--mode", "batch", "--requests", "40", "--batch-size", "10"]);
    assert_correct(&filled, 40, &[("batch", 400)]);
    assert_eq!(filled["load"]["customers"], "filled");
    // Reads and checks at 500/s of the same agreements: each run checks only
    // what it added (one seeded record per agreement).
    let read = bench(&["--mode", "read,check", "--requests", "50", "--rate", "500"]);
    assert_correct(&read, 50, &[("read", 2), ("check", 2)]);
    let open = read["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == "read" && !r["rate"].is_null())
        .unwrap();
    assert_eq!(open["rate"]["asked_per_second"], 500.0, "{open:#}");
    assert_eq!(open["rate"]["asked"], "requests per second", "{open:#}");
    // One agreement per customer, holding what every run stored: the 400
    // batched records, and one record per agreement seeded by each of the four
    // read and check runs (closed and open loop).
    let mut total = 0;
    for customer in ["filled_0", "filled_1"] {
        let listed: Value = serde_json::from_str(&run_ok(
            kinde_meter()
                .args(["agreements", "list", "--customer-id", customer])
                .args(["--server", &server.url, "--token", &token]),
        ))
        .unwrap();
        let agreements = listed["agreements"].as_array().unwrap();
        assert_eq!(agreements.len(), 1, "{listed:#}");
        let usage: Value = serde_json::from_str(&run_ok(
            kinde_meter()
                .args(["usage", "--feature-code", "api_calls", "--agreement-id"])
                .arg(agreements[0]["id"].as_str().unwrap())
                .args(["--server", &server.url, "--token", &token]),
        ))
        .unwrap();
        total += usage["usage"][0]["record_count"].as_u64().unwrap();
    }
    assert_eq!(total, 400 + 4 * 2);
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_postgresql_server() {
    let Ok(database_url) = std::env::var("KINDE_METER_TEST_DATABASE_URL") else {
        eprintln!("skipped: KINDE_METER_TEST_DATABASE_URL is not set");
        return;
    };
    let schema = ScratchSchema::create(&database_url).await.unwrap();
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{database_url}{separator}options=-c%20search_path%3D{}",
        schema.name()
    );
    let mut command = kinde_meter();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .args(["--database-url", &url]);
    let server = Server::spawn(command);
    let token = run_ok(kinde_meter().args(["token", "--database-url", &url]));
    let pid = server.pid().to_string();
    let base = format!("http://{}", server.addr);
    let report = tokio::task::spawn_blocking(move || {
        bench_json(kinde_meter().args([
            "bench",
            "--requests",
            "200",
            "--connections",
            "4",
            "--agreements",
            "3",
            "--batch-size",
            "10",
            "--mode",
            "single,single-keyed,batch,read,check,mixed",
            "--server",
            &base,
            "--server-pid",
            &pid,
            "--token",
            token.trim(),
        ]))
    })
    .await
    .unwrap();
    assert_correct(
        &report,
        200,
        &[
            ("single", 200),
            ("single-keyed", 200),
            ("batch", 2000),
            ("read", 3),
            ("check", 3),
            ("mixed", 160 + 3),
        ],
    );
    assert!(server.stop().success());
}
