//! `kinde-meter record`: one usage value through kinde-sdk, against a running
//! kinde-meter server or real Kinde, with the SDK's retries and one
//! idempotency key for every attempt.

use anyhow::Context;
use kinde_meter_core::timestamp::parse_rfc3339_lenient;
use kinde_sdk::BillingMeterUsageApi;
use kinde_sdk::models::MeterTypeCode;

use crate::cli::RecordArgs;

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    let api = BillingMeterUsageApi::new(super::remote::client(
        &args.server,
        &args.credentials.auth(),
    )?);
    let mut request = api
        .create_meter_usage_record_builder()
        .customer_agreement_id(args.agreement_id)
        .billing_feature_code(args.feature_code)
        .meter_value(args.value)
        .meter_type_code(if args.absolute {
            MeterTypeCode::Absolute
        } else {
            MeterTypeCode::Delta
        });
    if let Some(text) = &args.timestamp {
        let at =
            parse_rfc3339_lenient(text).context("--timestamp must be an RFC 3339 date-time")?;
        request = request.meter_usage_timestamp(at);
    }
    if let Some(key) = args.idempotency_key {
        request = request.idempotency_key(key);
    }
    let response = request.send().await?;
    println!("{}", serde_json::to_string(&response)?);
    Ok(())
}
