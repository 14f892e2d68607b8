//! Gates a request on the customer's entitlement: checks that the customer may
//! use one more API call now, serves the request only then, and records its
//! usage afterwards (docs/entitlements.md).
//!
//! ```sh
//! export KINDE_HOST=http://127.0.0.1:8080   # kinde-meter: the check is not in Kinde
//! export KINDE_ACCESS_TOKEN=eyJhbGciOi...   # read:billing_entitlements and create:meter_usage
//! cargo run -p kinde-sdk --example gate_request -- customer_0195ac80 agreement_0195ac80a14c2ca2cec97d026d864de0
//! ```
//!
//! Arguments: the customer id, their agreement id and the feature code
//! (default `api_calls`). The check is advice: usage recorded by others
//! between the check and the record counts too, so with a hard limit
//! (`enforce_limit`) the record itself may still be refused.

use std::process::ExitCode;

use kinde_sdk::{ApiClient, BillingEntitlementsApi, BillingMeterUsageApi, Configuration};

/// What became of one request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Served and its usage recorded.
    Served,
    /// Refused: the customer has used up the feature (or it is not on their plan).
    OverLimit,
    /// Served, but a hard limit that others reached since the check refused its
    /// record (record first, then serve, where that must never happen).
    ServedNotCounted,
}

/// Serves one request of `customer_id` if their plan allows one more unit of
/// `feature_code`, then records that unit against `agreement_id`.
async fn gate(
    client: &ApiClient,
    customer_id: &str,
    agreement_id: &str,
    feature_code: &str,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    // 1. May the customer use one more now? (`quantity` defaults to 1.)
    let check = BillingEntitlementsApi::new(client.clone())
        .check(customer_id, feature_code, None)
        .await?;
    if !check.allowed {
        return Ok(Outcome::OverLimit); // e.g. answer 429 to your caller
    }

    // 2. Serve the request: your own work goes here.

    // 3. Record what it used.
    let recorded = BillingMeterUsageApi::new(client.clone())
        .create_meter_usage_record_builder()
        .customer_agreement_id(agreement_id)
        .billing_feature_code(feature_code)
        .meter_value("1")
        .send()
        .await;
    match recorded {
        Ok(_) => Ok(Outcome::Served),
        Err(error) if error.is_entitlement_limit_exceeded() => Ok(Outcome::ServedNotCounted),
        Err(error) => Err(error.into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(customer_id), Some(agreement_id)) = (args.next(), args.next()) else {
        eprintln!("usage: gate_request CUSTOMER_ID AGREEMENT_ID [FEATURE_CODE]");
        return ExitCode::from(2);
    };
    let feature_code = args.next().unwrap_or_else(|| "api_calls".to_owned());
    let client = match Configuration::from_env().and_then(ApiClient::new) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("configuration: {error}");
            return ExitCode::from(2);
        }
    };
    match gate(&client, &customer_id, &agreement_id, &feature_code).await {
        Ok(Outcome::Served) => {
            println!("served and recorded");
            ExitCode::SUCCESS
        }
        Ok(Outcome::ServedNotCounted) => {
            println!("served, not recorded: the hard limit was reached meanwhile");
            ExitCode::SUCCESS
        }
        Ok(Outcome::OverLimit) => {
            println!("refused: {customer_id} may not use more {feature_code} now");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
