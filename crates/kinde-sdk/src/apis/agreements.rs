//! [`BillingAgreementsApi`]: creating and listing a customer's billing agreements
//! (`/api/v1/billing/agreements`).

use kinde_meter_wire::{
    CreateBillingAgreementRequest, GetBillingAgreementsResponse, SuccessResponse,
};

use crate::client::{ApiClient, Call};
use crate::error::{CreateBillingAgreementError, GetBillingAgreementsError};

const AGREEMENTS: &str = "/api/v1/billing/agreements";

/// Kinde's `BillingAgreementsApi`: which plan a customer is on, and the
/// agreement ids usage is recorded against.
///
/// ```no_run
/// use kinde_sdk::{ApiClient, BillingAgreementsApi, Configuration, GetBillingAgreementsParams};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let api = BillingAgreementsApi::new(ApiClient::new(Configuration::from_env()?)?);
/// let page = api
///     .get_billing_agreements(
///         "customer_0195ac80a14c2ca2cec97d026d864de0",
///         GetBillingAgreementsParams { page_size: Some(50), ..Default::default() },
///     )
///     .await?;
/// for agreement in &page.agreements {
///     println!("{} on plan {}", agreement.id, agreement.plan_code);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BillingAgreementsApi {
    client: ApiClient,
}

/// The optional parameters of
/// [`BillingAgreementsApi::get_billing_agreements`]; `Default` leaves them all
/// unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetBillingAgreementsParams {
    /// Only agreements whose plan has this feature.
    pub feature_code: Option<String>,
    /// Agreements per page (server default 10, at most 500).
    pub page_size: Option<u32>,
    /// The page after the agreement with this id (agreements are newest first).
    pub starting_after: Option<String>,
    /// The page just before the agreement with this id.
    pub ending_before: Option<String>,
}

impl BillingAgreementsApi {
    /// The API, over `client`.
    pub fn new(client: ApiClient) -> Self {
        BillingAgreementsApi { client }
    }

    /// The client this API sends through.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Puts a customer on a plan: `POST /api/v1/billing/agreements`.
    ///
    /// As in Kinde, this ends the customer's other active agreements; usage
    /// recorded against them afterwards is refused with `AGREEMENT_NOT_ACTIVE`.
    /// The answer carries no id: read it back with
    /// [`get_billing_agreements`](Self::get_billing_agreements) (newest first).
    ///
    /// No idempotency key is sent (the endpoint takes none), so a timeout leaves
    /// the outcome unknown; check the customer's agreements before trying again.
    ///
    /// # Errors
    ///
    /// See [`CreateBillingAgreementError`]; an unknown plan is a `BadRequest` with
    /// code `PLAN_NOT_FOUND`.
    pub async fn create_billing_agreement(
        &self,
        request: CreateBillingAgreementRequest,
    ) -> Result<SuccessResponse, CreateBillingAgreementError> {
        let call = Call::post_json(AGREEMENTS, &request)?;
        self.client.execute(&call).await
    }

    /// Lists a customer's agreements, newest first, one page at a time:
    /// `GET /api/v1/billing/agreements`. Follow
    /// [`has_more`](GetBillingAgreementsResponse::has_more) by passing the last
    /// agreement's id as `starting_after`.
    ///
    /// # Errors
    ///
    /// See [`GetBillingAgreementsError`].
    pub async fn get_billing_agreements(
        &self,
        customer_id: &str,
        params: GetBillingAgreementsParams,
    ) -> Result<GetBillingAgreementsResponse, GetBillingAgreementsError> {
        let GetBillingAgreementsParams {
            feature_code,
            page_size,
            starting_after,
            ending_before,
        } = params;
        let call = Call::get(AGREEMENTS)
            .query("customer_id", Some(customer_id))
            .query("feature_code", feature_code)
            .query("page_size", page_size)
            .query("starting_after", starting_after)
            .query("ending_before", ending_before);
        self.client.execute(&call).await
    }
}
