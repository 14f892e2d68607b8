//! `kinde-meter agreements create|list`, against a running server (`--server`)
//! or directly on a data directory.

use anyhow::{Context, bail};
use jiff::Timestamp;
use kinde_meter_core::ids::{AgreementId, CustomerId, FeatureCode, PlanCode};
use kinde_meter_store::{AgreementQuery, CreateAgreementError, Cursor, NewAgreement};

use crate::cli::{AgreementsCommand, Target};

pub async fn run(command: AgreementsCommand) -> anyhow::Result<()> {
    match command {
        AgreementsCommand::Create {
            customer_id,
            plan_code,
            target,
        } => create(customer_id, plan_code, target).await,
        AgreementsCommand::List {
            customer_id,
            feature_code,
            page_size,
            starting_after,
            ending_before,
            target,
        } => {
            let cursor = match (starting_after, ending_before) {
                (None, None) => Cursor::First,
                (Some(a), None) => Cursor::StartingAfter(AgreementId::parse(a)?),
                (None, Some(b)) => Cursor::EndingBefore(AgreementId::parse(b)?),
                (Some(_), Some(_)) => bail!("give --starting-after or --ending-before, not both"),
            };
            list(customer_id, feature_code, page_size, cursor, target).await
        }
    }
}

async fn create(customer_id: String, plan_code: String, target: Target) -> anyhow::Result<()> {
    if let Some(server) = &target.server {
        let id = super::remote::create_agreement(
            server,
            &target.credentials.auth(),
            &customer_id,
            &plan_code,
        )
        .await?;
        println!("{id}");
        return Ok(());
    }
    let store = super::open_store(&target.data).await?;
    let plan_code = PlanCode::parse(plan_code).context("--plan-code")?;
    let created = store
        .create_agreement(NewAgreement {
            customer_id: CustomerId::parse(customer_id).context("--customer-id")?,
            plan_code: plan_code.clone(),
            now: Timestamp::now(),
            id_random: rand::random(),
        })
        .await;
    store.shutdown().await;
    match created {
        Ok(agreement) => {
            println!("{}", agreement.id);
            Ok(())
        }
        Err(CreateAgreementError::PlanNotFound) => bail!(
            "PLAN_NOT_FOUND: no plan {plan_code} in {} (the plans the server last loaded)",
            super::store_place(&target.data)
        ),
        Err(CreateAgreementError::Store(e)) => Err(e.into()),
    }
}

async fn list(
    customer_id: String,
    feature_code: Option<String>,
    page_size: usize,
    cursor: Cursor,
    target: Target,
) -> anyhow::Result<()> {
    if let Some(server) = &target.server {
        let body = super::remote::list_agreements(
            server,
            &target.credentials.auth(),
            &customer_id,
            feature_code.as_deref(),
            page_size,
            &cursor,
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let store = super::open_store(&target.data).await?;
    let now = Timestamp::now();
    let page = store
        .list_agreements(AgreementQuery {
            customer_id: CustomerId::parse(customer_id).context("--customer-id")?,
            feature_code: feature_code
                .map(FeatureCode::parse)
                .transpose()
                .context("--feature-code")?,
            page_size: page_size.clamp(1, 500),
            cursor,
            now,
        })
        .await;
    store.shutdown().await;
    let body = kinde_meter_server::views::agreements_page(&page?, now);
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
