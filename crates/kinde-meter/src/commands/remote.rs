//! Client commands against a running server (ours or real Kinde), through `kinde-sdk`.

use anyhow::Context;
use jiff::Timestamp;
use kinde_meter_store::Cursor;
use kinde_sdk::{
    ApiClient, Auth, BillingAgreementsApi, BillingMeterUsageApi, Configuration,
    GetBillingAgreementsParams,
    models::{CreateBillingAgreementRequest, GetBillingAgreementsResponse, GetMeterUsageResponse},
};

/// A client for `server` authenticating with `auth` (a token, or client
/// credentials the SDK turns into tokens), with the SDK's default retries.
pub fn client(server: &str, auth: &Auth) -> anyhow::Result<ApiClient> {
    ApiClient::new(Configuration::new(server).with_auth(auth.clone()))
        .context("cannot configure the HTTP client")
}

/// Creates an agreement and returns its id. Kinde's create answers only
/// `{"message":"Success"}`, so the id is the customer's newest agreement.
pub async fn create_agreement(
    server: &str,
    auth: &Auth,
    customer_id: &str,
    plan_code: &str,
) -> anyhow::Result<String> {
    let api = BillingAgreementsApi::new(client(server, auth)?);
    api.create_billing_agreement(CreateBillingAgreementRequest {
        customer_id: customer_id.to_owned(),
        plan_code: plan_code.to_owned(),
        is_invoice_now: None,
        is_prorate: None,
    })
    .await?;
    let page = api
        .get_billing_agreements(
            customer_id,
            GetBillingAgreementsParams {
                page_size: Some(1),
                ..GetBillingAgreementsParams::default()
            },
        )
        .await?;
    page.agreements
        .into_iter()
        .next()
        .map(|a| a.id)
        .context("the server created the agreement but does not list it")
}

pub async fn list_agreements(
    server: &str,
    auth: &Auth,
    customer_id: &str,
    feature_code: Option<&str>,
    page_size: usize,
    cursor: &Cursor,
) -> anyhow::Result<GetBillingAgreementsResponse> {
    let api = BillingAgreementsApi::new(client(server, auth)?);
    let (starting_after, ending_before) = match cursor {
        Cursor::First => (None, None),
        Cursor::StartingAfter(id) => (Some(id.to_string()), None),
        Cursor::EndingBefore(id) => (None, Some(id.to_string())),
    };
    Ok(api
        .get_billing_agreements(
            customer_id,
            GetBillingAgreementsParams {
                feature_code: feature_code.map(str::to_owned),
                page_size: Some(u32::try_from(page_size).unwrap_or(u32::MAX)),
                starting_after,
                ending_before,
            },
        )
        .await?)
}

pub async fn get_usage(
    server: &str,
    auth: &Auth,
    agreement_id: &str,
    feature_code: Option<&str>,
    at: Option<Timestamp>,
) -> anyhow::Result<GetMeterUsageResponse> {
    let api = BillingMeterUsageApi::new(client(server, auth)?);
    Ok(api.get_meter_usage(agreement_id, feature_code, at).await?)
}
