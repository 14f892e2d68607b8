//! `kinde-meter entitlements list|check`: a customer's entitlements and the
//! live usage check, through kinde-sdk against a running server, printed as the
//! server's JSON answer.

use kinde_sdk::models::MeterValue;
use kinde_sdk::{BillingEntitlementsApi, GetBillingEntitlementsParams};

use crate::cli::{EntitlementsCheckArgs, EntitlementsCommand, EntitlementsListArgs, Remote};

pub async fn run(command: EntitlementsCommand) -> anyhow::Result<()> {
    match command {
        EntitlementsCommand::List(args) => list(args).await,
        EntitlementsCommand::Check(args) => check(args).await,
    }
}

fn api(remote: &Remote) -> anyhow::Result<BillingEntitlementsApi> {
    Ok(BillingEntitlementsApi::new(super::remote::client(
        &remote.server,
        &remote.credentials.auth(),
    )?))
}

async fn list(args: EntitlementsListArgs) -> anyhow::Result<()> {
    let page = api(&args.remote)?
        .get_billing_entitlements(
            &args.customer_id,
            GetBillingEntitlementsParams {
                page_size: args.page_size,
                starting_after: args.starting_after,
                ending_before: args.ending_before,
                max_value: args.max_value,
                expand: args.expand_plans.then(|| "plans".to_owned()),
            },
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&page)?);
    Ok(())
}

async fn check(args: EntitlementsCheckArgs) -> anyhow::Result<()> {
    let answer = api(&args.remote)?
        .check(
            &args.customer_id,
            &args.feature_code,
            args.quantity.map(MeterValue::from),
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
