//! `kinde-meter import` against a server in this process: CSV and NDJSON
//! files counted exactly, bad rows named by line (stderr and reject file)
//! while the good rows of their batch are stored, the fixed reject file
//! imported in turn, and an import killed midway then run again counting
//! every row once, with client credentials.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kinde_meter_server::rate_limit::Limit;
use serde_json::{Value, json};

use crate::support::{
    ChildGuard, DEADLINE, create_agreement, kinde_meter, ok, run, run_args, serve_in_process,
    usage_entry,
};

const CSV_HEADER: &str = "customer_agreement_id,billing_feature_code,meter_value,meter_usage_timestamp,meter_type_code\n";

/// A value in thousandths as the API writes it: `"12.5"`, `"0.003"`, `"7"`.
fn thousandths(total: u64) -> String {
    let (whole, fraction) = (total / 1000, total % 1000);
    if fraction == 0 {
        return whole.to_string();
    }
    format!("{whole}.{fraction:03}")
        .trim_end_matches('0')
        .to_owned()
}

/// `(value, record_count)` of `feature`, read from the data directory.
fn usage(data_dir: &str, agreement: &str, feature: &str) -> (String, u64) {
    let body: Value = serde_json::from_str(&ok(run_args(&[
        "usage",
        "--agreement-id",
        agreement,
        "--feature-code",
        feature,
        "--data-dir",
        data_dir,
    ])))
    .unwrap();
    usage_entry(&body, feature)
}

fn import_command(file: &Path, url: &str, auth: &[&str], extra: &[&str]) -> Command {
    let mut command = kinde_meter();
    command
        .arg("import")
        .arg(file)
        .args(["--server", url])
        .args(auth)
        .args(extra);
    command
}

fn import(file: &Path, url: &str, auth: &[&str]) -> Output {
    run(&mut import_command(file, url, auth, &[]))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// Multi-threaded: the commands block this test's thread while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_ndjson_imports_count_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (url, _stop) = serve_in_process(dir.path(), |_| {}).await;
    let agreement = create_agreement(data_dir, "customer_import");
    let token = ok(run_args(&["token", "--data-dir", data_dir]));
    let auth = ["--token", token.as_str()];

    // 250 CSV rows (three batches), some with a timestamp or a type, and
    // the same row on two lines counting twice.
    let mut csv = String::from(CSV_HEADER);
    let mut csv_total = 0;
    let earlier = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60)).to_string();
    for i in 0..250u64 {
        let value = (i % 3) * 1000 + (i % 10) * 100;
        csv_total += value;
        let (at, kind) = match i % 4 {
            0 => (earlier.as_str(), "delta"),
            1 => ("", "delta"),
            _ => ("", ""),
        };
        csv.push_str(&format!(
            "{agreement},api_calls,{},{at},{kind}\n",
            thousandths(value)
        ));
    }
    let csv_path = dir.path().join("usage.csv");
    std::fs::write(&csv_path, &csv).unwrap();

    // 150 NDJSON lines (.jsonl), every tenth with its own idempotency key; the
    // first of those was already recorded with its key by another sender.
    let mut ndjson = String::new();
    let mut ndjson_total = 0;
    for i in 0..150u64 {
        let value = 1 + i % 7;
        ndjson_total += value;
        let mut line = json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "storage_gb",
            "meter_value": thousandths(value),
        });
        if i % 10 == 0 {
            line["idempotency_key"] = json!(format!("storage-{i}"));
        }
        ndjson.push_str(&format!("{line}\n"));
    }
    let ndjson_path = dir.path().join("usage.jsonl");
    std::fs::write(&ndjson_path, &ndjson).unwrap();
    ok(run_args(&[
        "record",
        "--agreement-id",
        &agreement,
        "--feature-code",
        "storage_gb",
        "--value",
        "0.001",
        "--idempotency-key",
        "storage-0",
        "--server",
        &url,
        "--token",
        &token,
    ]));

    for round in 0..2 {
        let output = import(&csv_path, &url, &auth);
        let text = stderr(&output);
        assert!(output.status.success(), "round {round}: {text}");
        assert!(
            text.contains("250 read, 250 imported, 0 rejected"),
            "round {round}: {text}"
        );
        // stderr is a pipe here: no progress bar.
        assert!(!text.contains("ETA"), "{text}");
        assert_eq!(
            usage(data_dir, &agreement, "api_calls"),
            (thousandths(csv_total), 250),
            "round {round}"
        );

        let output = import(&ndjson_path, &url, &auth);
        assert!(
            output.status.success(),
            "round {round}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("150 read, 150 imported, 0 rejected"));
        assert_eq!(
            usage(data_dir, &agreement, "storage_gb"),
            (thousandths(ndjson_total), 150),
            "round {round}: storage-0 counted once, with the earlier record"
        );
    }
    assert!(!dir.path().join("usage.rejects.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_named_rejected_and_importable_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (url, _stop) = serve_in_process(dir.path(), |_| {}).await;
    let agreement = create_agreement(data_dir, "customer_bad_rows");
    let token = ok(run_args(&["token", "--data-dir", data_dir]));
    let auth = ["--token", token.as_str()];
    let tomorrow = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string();

    // 120 rows; the file's line n holds row n - 1. Bad rows: four refused
    // here, two by the server, all in the first batch but one.
    let mut csv = String::from(CSV_HEADER);
    let mut good_total = 0;
    let mut all_total = 0;
    for row in 1..=120u64 {
        let line = row + 1;
        let value = row * 10;
        all_total += value;
        let text = match line {
            3 => format!("{agreement},api_calls,1.5.0,,\n"),
            10 => format!("{agreement},no_such_feature,{},,\n", thousandths(value)),
            11 => format!("{agreement},api_calls,{},{tomorrow},\n", thousandths(value)),
            50 => format!("{agreement},api_calls\n"),
            77 => format!("{agreement},api_calls,{},,sometimes\n", thousandths(value)),
            110 => format!("{agreement},api_calls,-{},,\n", thousandths(value)),
            _ => {
                good_total += value;
                format!("{agreement},api_calls,{},,\n", thousandths(value))
            }
        };
        csv.push_str(&text);
    }
    // Once fixed, row 2 (line 3) holds 1.5 and the others what they were meant to.
    all_total += 1500 - 20;
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, &csv).unwrap();

    let output = import(&path, &url, &auth);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for expected in [
        "line 3: INVALID_METER_VALUE: ",
        "line 10: FEATURE_NOT_FOUND: ",
        "line 11: TIMESTAMP_IN_FUTURE: ",
        "line 50: INVALID_FIELD: the row has 2 fields, the header 5",
        "line 77: INVALID_METER_TYPE: ",
        "line 110: INVALID_METER_VALUE: ",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    assert!(
        text.contains("120 read, 114 imported, 6 rejected"),
        "{text}"
    );
    assert_eq!(
        usage(data_dir, &agreement, "api_calls"),
        (thousandths(good_total), 114)
    );

    // The reject file: the header, then each row after its reason, as in the input.
    let rejects_path = dir.path().join("bad.rejects.csv");
    assert!(text.contains(&rejects_path.display().to_string()), "{text}");
    let rejects = std::fs::read_to_string(&rejects_path).unwrap();
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines.len(), 1 + 2 * 6, "{rejects}");
    assert_eq!(lines[0], CSV_HEADER.trim_end());
    assert!(
        lines[1].starts_with("# line 3: INVALID_METER_VALUE: "),
        "{rejects}"
    );
    assert_eq!(lines[2], format!("{agreement},api_calls,1.5.0,,"));
    assert!(
        lines[3].starts_with("# line 10: FEATURE_NOT_FOUND: "),
        "{rejects}"
    );
    assert!(lines[11].starts_with("# line 110: "), "{rejects}");
    assert_eq!(lines[12], format!("{agreement},api_calls,-1.09,,"));

    // Fixed in the reject file, which then imports as is; the input itself,
    // imported again, adds nothing.
    let fixed = rejects
        .replace("1.5.0", "1.5")
        .replace("no_such_feature", "api_calls")
        .replace(&format!(",{tomorrow},"), ",,")
        .replace(
            &format!("{agreement},api_calls\n"),
            &format!("{agreement},api_calls,0.49,,\n"),
        )
        .replace("sometimes", "delta")
        .replace("-1.09", "1.09");
    std::fs::write(&rejects_path, fixed).unwrap();
    let output = import(&rejects_path, &url, &auth);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("6 read, 6 imported, 0 rejected"));
    let output = import(&path, &url, &auth);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        usage(data_dir, &agreement, "api_calls"),
        (thousandths(all_total), 120)
    );

    // What cannot be imported at all stops before sending anything: exit 2.
    let odd = dir.path().join("usage.txt");
    std::fs::write(&odd, CSV_HEADER).unwrap();
    let output = import(&odd, &url, &auth);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--format"), "{}", stderr(&output));
    let typo = dir.path().join("typo.csv");
    std::fs::write(
        &typo,
        "customer_agreement_id,billing_feature_code,meter_valeu\n",
    )
    .unwrap();
    let output = import(&typo, &url, &auth);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown column \"meter_valeu\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_then_run_again_counts_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // One batch a second at most (the 429's Retry-After is whole seconds), so
    // the first run is still sending when it is killed.
    let (url, _stop) = serve_in_process(dir.path(), |config| {
        config.rate_limits.default = Limit::per_second(1, 1);
    })
    .await;
    let agreement = create_agreement(data_dir, "customer_interrupted");
    let client: Value = serde_json::from_str(&ok(run_args(&[
        "clients",
        "create",
        "--name",
        "importer",
        "--scopes",
        "create:meter_usage",
        "--json",
        "--data-dir",
        data_dir,
    ])))
    .unwrap();
    let credentials = [
        "--client-id",
        client["client_id"].as_str().unwrap(),
        "--client-secret",
        client["client_secret"].as_str().unwrap(),
    ];

    let mut csv = String::from(CSV_HEADER);
    let mut total = 0;
    for i in 0..600u64 {
        let value = 1 + i % 13;
        total += value;
        csv.push_str(&format!("{agreement},api_calls,{},,\n", thousandths(value)));
    }
    let path = dir.path().join("large.csv");
    std::fs::write(&path, &csv).unwrap();
    let mut command = import_command(&path, &url, &credentials, &["--concurrency", "2"]);

    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = ChildGuard(child);
    let until = Instant::now() + DEADLINE;
    let partial = loop {
        let (value, count) = usage(data_dir, &agreement, "api_calls");
        if count > 0 {
            break (value, count);
        }
        assert!(Instant::now() < until, "the first batch never arrived");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first run ended before it could be killed"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (_, stored) = usage(data_dir, &agreement, "api_calls");
    assert!(stored < 600, "{partial:?}, then {stored} records");

    let output = run(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("600 read, 600 imported, 0 rejected"));
    assert_eq!(
        usage(data_dir, &agreement, "api_calls"),
        (thousandths(total), 600)
    );
}
