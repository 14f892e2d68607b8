//! `kinde-meter entitlements [list]|check`: a customer's entitlements and the
//! live usage check, printed as JSON: through kinde-sdk against a running server
//! (`--server`), or on the data directory / database directly, built by the
//! server's own views so that both print the same answer.

use anyhow::{Context, bail};
use jiff::Timestamp;
use kinde_meter_core::ids::{CustomerId, FeatureCode};
use kinde_meter_server::views::{self, EntitlementsQuery, EntitlementsStart};
use kinde_meter_store::CustomerEntitlements;
use kinde_meter_wire::MeterValue;
use kinde_sdk::{BillingEntitlementsApi, GetBillingEntitlementsParams};

use super::ExitStatus;
use crate::cli::{
    EntitlementsArgs, EntitlementsCheckArgs, EntitlementsCommand, EntitlementsListArgs, Target,
};

/// The page size of a listing that names none (the server's default).
const DEFAULT_PAGE_SIZE: u32 = 10;

/// The exit status of a check that is not allowed (0: allowed; errors are 2).
pub const NOT_ALLOWED: u8 = 1;

/// The exit status of `check` on an error, so a script can tell it from "not
/// allowed" (the status clap gives a wrong command line, too).
pub const CHECK_ERROR: u8 = 2;

pub async fn run(args: EntitlementsArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(args.list).await,
        Some(EntitlementsCommand::List(list_args)) => list(list_args).await,
        Some(EntitlementsCommand::Check(check_args)) => check(check_args).await,
    }
}

fn api(server: &str, target: &Target) -> anyhow::Result<BillingEntitlementsApi> {
    Ok(BillingEntitlementsApi::new(super::remote::client(
        server,
        &target.credentials.auth(),
    )?))
}

async fn list(args: EntitlementsListArgs) -> anyhow::Result<()> {
    let customer_id = args.customer_id.context("--customer-id is required")?;
    if let Some(server) = &args.target.server {
        let page = api(server, &args.target)?
            .get_billing_entitlements(
                &customer_id,
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
        return Ok(());
    }
    // The checks the server makes, with its codes.
    let customer_id = CustomerId::parse(customer_id).context("--customer-id")?;
    let page_size = args.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=500).contains(&page_size) {
        bail!("INVALID_FIELD: --page-size must be 1 to 500");
    }
    let start = match (&args.starting_after, &args.ending_before) {
        (Some(id), _) => EntitlementsStart::StartingAfter(id),
        (None, Some(id)) => EntitlementsStart::EndingBefore(id),
        (None, None) => EntitlementsStart::First,
    };
    let customer = customer_entitlements(&args.target, &customer_id, None).await?;
    let page = views::entitlements_page(
        customer.as_ref(),
        EntitlementsQuery {
            page_size: page_size as usize,
            start,
            max_value: args.max_value,
            expand_plans: args.expand_plans,
        },
    )
    .map_err(|e| anyhow::anyhow!("NOT_FOUND: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&page)?);
    Ok(())
}

async fn check(args: EntitlementsCheckArgs) -> anyhow::Result<()> {
    let answer = match &args.target.server {
        Some(server) => {
            api(server, &args.target)?
                .check(
                    &args.customer_id,
                    &args.feature_code,
                    args.quantity.map(kinde_sdk::models::MeterValue::from),
                )
                .await?
        }
        None => {
            let customer_id = CustomerId::parse(args.customer_id).context("--customer-id")?;
            let feature_code = FeatureCode::parse(args.feature_code).context("--feature-code")?;
            let quantity = MeterValue::parse(args.quantity.as_deref().unwrap_or("1"))
                .map_err(|e| anyhow::anyhow!("INVALID_METER_VALUE: quantity {e}"))?;
            let customer =
                customer_entitlements(&args.target, &customer_id, Some(&feature_code)).await?;
            views::entitlement_check(customer.as_ref(), &feature_code, quantity)
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    if answer.allowed {
        Ok(())
    } else {
        Err(ExitStatus(NOT_ALLOWED).into())
    }
}

/// The customer's active agreement, plan and live usage (of every metered
/// feature, or only of `only`), read from the store of the data directory or
/// database as the server reads it.
async fn customer_entitlements(
    target: &Target,
    customer_id: &CustomerId,
    only: Option<&FeatureCode>,
) -> anyhow::Result<Option<CustomerEntitlements>> {
    let store = super::open_store(&target.data).await?;
    let customer = store
        .customer_entitlements(customer_id, Timestamp::now(), only)
        .await;
    store.shutdown().await;
    Ok(customer?)
}
