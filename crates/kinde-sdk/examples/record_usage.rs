//! Records one usage value.
//!
//! ```sh
//! export KINDE_HOST=https://your-subdomain.kinde.com   # or http://127.0.0.1:8080 for kinde-meter
//! export KINDE_ACCESS_TOKEN=eyJhbGciOi...              # a token with create:meter_usage, or:
//! # export KINDE_MANAGEMENT_CLIENT_ID=… KINDE_MANAGEMENT_CLIENT_SECRET=…   # an M2M application's
//! cargo run -p kinde-sdk --example record_usage -- agreement_0195ac80a14c2ca2cec97d026d864de0 api_calls 150
//! ```
//!
//! Arguments: the customer agreement id, the billing feature code (default
//! `api_calls`) and the value (default `1`). Failed attempts are retried with
//! the default `RetryPolicy`, all under one `Idempotency-Key`; what is printed
//! is the last attempt's outcome.

use std::process::ExitCode;

use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(agreement_id) = args.next() else {
        eprintln!("usage: record_usage AGREEMENT_ID [FEATURE_CODE] [VALUE]");
        return ExitCode::from(2);
    };
    let feature_code = args.next().unwrap_or_else(|| "api_calls".to_owned());
    let value = args.next().unwrap_or_else(|| "1".to_owned());

    let api_client = match Configuration::from_env().and_then(ApiClient::new) {
        Ok(api_client) => api_client,
        Err(error) => {
            eprintln!("configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let api = BillingMeterUsageApi::new(api_client);

    let result = api
        .create_meter_usage_record_builder()
        .customer_agreement_id(agreement_id)
        .billing_feature_code(feature_code)
        .meter_value(value)
        .send()
        .await;
    match result {
        Ok(response) => {
            println!("{} {}", response.code, response.message);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            if let Some(code) = error.code() {
                eprintln!("code: {code}");
            }
            if let Some(delay) = error.retry_after() {
                eprintln!("retry after: {} s", delay.as_secs());
            }
            if error.is_retryable() {
                eprintln!("(safe to retry)");
            }
            ExitCode::FAILURE
        }
    }
}
