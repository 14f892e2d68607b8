//! `kinde-meter usage`: an agreement's usage for one period, as JSON.

use anyhow::{Context, bail};
use jiff::Timestamp;
use kinde_meter_core::{
    ids::{AgreementId, FeatureCode},
    timestamp::parse_rfc3339_lenient,
};
use kinde_meter_store::{ReadUsageError, UsageQuery};

use crate::cli::UsageArgs;

pub async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let at = match &args.at {
        Some(text) => {
            Some(parse_rfc3339_lenient(text).context("--at must be an RFC 3339 date-time")?)
        }
        None => None,
    };
    if let Some(server) = &args.target.server {
        let body = super::remote::get_usage(
            server,
            &args.target.credentials.auth(),
            &args.agreement_id,
            args.feature_code.as_deref(),
            at,
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let store = super::open_store(&args.target.data).await?;
    let report = store
        .read_usage(UsageQuery {
            agreement_id: AgreementId::parse(args.agreement_id.clone())
                .context("--agreement-id")?,
            feature_code: args
                .feature_code
                .clone()
                .map(FeatureCode::parse)
                .transpose()
                .context("--feature-code")?,
            at: at.unwrap_or_else(Timestamp::now),
        })
        .await;
    store.shutdown().await;
    let report = match report {
        Ok(report) => report,
        Err(ReadUsageError::AgreementNotFound) => {
            bail!("AGREEMENT_NOT_FOUND: no agreement {}", args.agreement_id)
        }
        Err(ReadUsageError::FeatureNotFound) => {
            bail!("FEATURE_NOT_FOUND: the agreement's plan has no such feature")
        }
        Err(ReadUsageError::FeatureNotMetered) => {
            bail!("FEATURE_NOT_METERED: that feature is not metered")
        }
        Err(ReadUsageError::Store(e)) => return Err(e.into()),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&kinde_meter_server::views::usage(&report))?
    );
    Ok(())
}
