//! [`BillingEntitlementsApi`]: what a customer's plan entitles them to
//! (`GET /api/v1/billing/entitlements`, Kinde's endpoint) and, on kinde-meter
//! only, a live usage check (`GET /api/v1/billing/entitlements/check`).

use kinde_meter_wire::{CheckBillingEntitlementResponse, GetBillingEntitlementsResponse};

use crate::client::{ApiClient, Call};
use crate::error::{CheckBillingEntitlementError, GetBillingEntitlementsError};
use crate::models::MeterValue;

const ENTITLEMENTS: &str = "/api/v1/billing/entitlements";
const ENTITLEMENTS_CHECK: &str = "/api/v1/billing/entitlements/check";

/// Kinde's `BillingEntitlementsApi`: the features of a customer's active plan,
/// with their limits — and, on kinde-meter, how much of each the customer has
/// used this period. Both calls need the scope `read:billing_entitlements`.
///
/// ```no_run
/// use kinde_sdk::{ApiClient, BillingEntitlementsApi, Configuration, GetBillingEntitlementsParams};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let api = BillingEntitlementsApi::new(ApiClient::new(Configuration::from_env()?)?);
/// let customer = "customer_0195ac80a14c2ca2cec97d026d864de0";
///
/// let page = api
///     .get_billing_entitlements(
///         customer,
///         GetBillingEntitlementsParams { expand: Some("plans".to_owned()), ..Default::default() },
///     )
///     .await?;
/// for entitlement in &page.entitlements {
///     println!(
///         "{}: limit {:?}, used {:?}",
///         entitlement.feature_code, entitlement.entitlement_limit_max, entitlement.consumed
///     );
/// }
///
/// // kinde-meter only: may the customer make 10 more API calls now?
/// let check = api.check(customer, "api_calls", Some(10.into())).await?;
/// if !check.allowed {
///     println!("over the limit: {} used of {:?}", check.consumed, check.entitlement_limit_max);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BillingEntitlementsApi {
    client: ApiClient,
}

/// The optional parameters of
/// [`BillingEntitlementsApi::get_billing_entitlements`], named as in the
/// official SDKs; `Default` leaves them all unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetBillingEntitlementsParams {
    /// Entitlements per page (server default 10, at most 500).
    pub page_size: Option<u32>,
    /// The page after the entitlement with this id (entitlements come in the
    /// catalog's order of the plan's features).
    pub starting_after: Option<String>,
    /// The page just before the entitlement with this id.
    pub ending_before: Option<String>,
    /// Answered as `entitlement_limit_max` where the limit is null (unlimited).
    pub max_value: Option<i64>,
    /// Additional data to return: `"plans"` adds the customer's active plan
    /// ([`plans`](crate::models::GetBillingEntitlementsResponse::plans)).
    pub expand: Option<String>,
}

impl BillingEntitlementsApi {
    /// The API, over `client`.
    pub fn new(client: ApiClient) -> Self {
        BillingEntitlementsApi { client }
    }

    /// The client this API sends through.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Lists the entitlements of a customer's active agreement's plan, one per
    /// feature, one page at a time: `GET /api/v1/billing/entitlements`. Follow
    /// [`has_more`](GetBillingEntitlementsResponse::has_more) by passing the last
    /// entitlement's id as `starting_after`.
    ///
    /// A customer without an active agreement (or unknown) has no entitlements:
    /// the page is empty, not an error. On kinde-meter, metered entitlements also
    /// carry the current period's usage
    /// ([`consumed`](crate::models::Entitlement::consumed),
    /// [`remaining`](crate::models::Entitlement::remaining)) and bounds; real
    /// Kinde leaves them out.
    ///
    /// The query is written as the official SDKs write it: `page_size`,
    /// `starting_after`, `ending_before`, `customer_id`, `max_value`, `expand`.
    ///
    /// # Errors
    ///
    /// See [`GetBillingEntitlementsError`]; a paging cursor that names no
    /// entitlement is a `BadRequest` with code `NOT_FOUND`.
    pub async fn get_billing_entitlements(
        &self,
        customer_id: &str,
        params: GetBillingEntitlementsParams,
    ) -> Result<GetBillingEntitlementsResponse, GetBillingEntitlementsError> {
        let GetBillingEntitlementsParams {
            page_size,
            starting_after,
            ending_before,
            max_value,
            expand,
        } = params;
        let call = Call::get(ENTITLEMENTS)
            .query("page_size", page_size)
            .query("starting_after", starting_after)
            .query("ending_before", ending_before)
            .query("customer_id", Some(customer_id))
            .query("max_value", max_value)
            .query("expand", expand);
        self.client.execute(&call).await
    }

    /// May the customer use `quantity` (default 1) more of `feature_code` now?
    /// `GET /api/v1/billing/entitlements/check`. **kinde-meter only**; real
    /// Kinde has no such endpoint (the call fails with `Unexpected` 404).
    ///
    /// The answer reads live usage, including records committed a moment
    /// before. [`allowed`](CheckBillingEntitlementResponse::allowed) is `false`
    /// — with a 200, not an error — for a feature that is not on the customer's
    /// active plan, a customer without an active agreement, and a metered
    /// feature whose limit `consumed + quantity` would exceed.
    ///
    /// A check is advice, not a reservation: usage recorded by others between
    /// the check and your record counts too. A feature with a hard limit
    /// refuses the record itself ([`is_entitlement_limit_exceeded`](crate::CreateMeterUsageRecordError::is_entitlement_limit_exceeded)).
    ///
    /// # Errors
    ///
    /// See [`CheckBillingEntitlementError`]; a `quantity` that is not a valid
    /// meter value is a `BadRequest` with code `INVALID_METER_VALUE`.
    pub async fn check(
        &self,
        customer_id: &str,
        feature_code: &str,
        quantity: Option<MeterValue>,
    ) -> Result<CheckBillingEntitlementResponse, CheckBillingEntitlementError> {
        let call = Call::get(ENTITLEMENTS_CHECK)
            .query("customer_id", Some(customer_id))
            .query("feature_code", Some(feature_code))
            .query("quantity", quantity);
        self.client.execute(&call).await
    }
}
