//! Reports usage through a `UsageReporter`: records values as fast as it can
//! for a few seconds, then shuts down, delivering what is pending.
//!
//! ```sh
//! export KINDE_HOST=http://127.0.0.1:8080                # or https://your-subdomain.kinde.com
//! export KINDE_MANAGEMENT_CLIENT_ID=… KINDE_MANAGEMENT_CLIENT_SECRET=…   # or KINDE_ACCESS_TOKEN
//! cargo run -p kinde-sdk --example usage_reporter -- agreement_0195ac80a14c2ca2cec97d026d864de0 api_calls
//! ```
//!
//! Arguments: the customer agreement id, the feature code (default
//! `api_calls`) and the spool file (default `usage.spool`). Kill it with
//! `kill -9` and run it again: the second run delivers what the first left in
//! the spool, and nothing twice.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration, UsageReporter};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(agreement_id) = args.next() else {
        eprintln!("usage: usage_reporter AGREEMENT_ID [FEATURE_CODE] [SPOOL]");
        return ExitCode::from(2);
    };
    let feature_code = args.next().unwrap_or_else(|| "api_calls".to_owned());
    let spool = args.next().unwrap_or_else(|| "usage.spool".to_owned());

    let api = match Configuration::from_env().and_then(ApiClient::new) {
        Ok(client) => BillingMeterUsageApi::new(client),
        Err(error) => {
            eprintln!("configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let reporter = match UsageReporter::with_spool(api, &spool)
        .on_rejected(|rejected| {
            eprintln!(
                "rejected {} values: {} {}",
                rejected.values, rejected.code, rejected.message
            );
        })
        .start()
        .await
    {
        Ok(reporter) => reporter,
        Err(error) => {
            eprintln!("cannot start the reporter: {error}");
            return ExitCode::FAILURE;
        }
    };
    let replayed = reporter.stats().undelivered;
    if replayed > 0 {
        println!("replaying {replayed} values a previous run left in {spool}");
    }

    let until = Instant::now() + Duration::from_secs(3);
    let mut recorded = 0u64;
    while Instant::now() < until {
        if let Err(error) = reporter.record(&agreement_id, &feature_code, 1) {
            eprintln!("record: {error}");
            break;
        }
        recorded += 1;
        if recorded.is_multiple_of(100) {
            // Give the background task a turn on this single-threaded example.
            tokio::task::yield_now().await;
        }
    }
    println!("recorded {recorded} values");
    match reporter.shutdown().await {
        Ok(report) if report.is_complete() => {
            println!("all delivered");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "{} values stay in {spool} for the next run: {}",
                report.undelivered,
                report.last_error.unwrap_or_default()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("shutdown: {error}");
            ExitCode::FAILURE
        }
    }
}
