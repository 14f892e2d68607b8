//! Kinde's billing agreement shapes.

use serde::{Deserialize, Serialize};

/// Kinde's `CreateBillingAgreementRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateBillingAgreementRequest {
    /// The customer the agreement binds, e.g. `customer_0195ac80a14c2ca2cec97d026d864de0`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub customer_id: String,
    /// Code of the plan in the catalog.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub plan_code: String,
    /// Accepted for compatibility with Kinde; kinde-meter does not invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_invoice_now: Option<bool>,
    /// Accepted for compatibility with Kinde; kinde-meter does not prorate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_prorate: Option<bool>,
}

/// Kinde's `SuccessResponse`: `{"message":"Success","code":"OK"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuccessResponse {
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
}

impl SuccessResponse {
    /// The success body.
    pub fn success() -> Self {
        SuccessResponse {
            message: crate::SUCCESS_MESSAGE.to_owned(),
            code: crate::OK_CODE.to_owned(),
        }
    }
}

/// Kinde's `GetBillingAgreementsResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetBillingAgreementsResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// Whether more agreements follow this page.
    #[serde(default)]
    pub has_more: bool,
    /// The page, newest first.
    #[serde(default)]
    pub agreements: Vec<BillingAgreement>,
}

/// One agreement of [`GetBillingAgreementsResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingAgreement {
    /// The agreement id, e.g. `agreement_0195ac80a14c2ca2cec97d026d864de0`.
    pub id: String,
    /// Code of the agreement's plan.
    pub plan_code: String,
    /// When the agreement ended (RFC 3339), null while active.
    pub expires_on: Option<String>,
    /// The plan's billing group, null without one.
    pub billing_group_id: Option<String>,
    /// Start of the current billing period, null for an ended agreement.
    pub current_period_start: Option<String>,
    /// End of the current billing period, null for an ended agreement.
    pub current_period_end: Option<String>,
    /// The plan's features.
    #[serde(default)]
    pub entitlements: Vec<BillingEntitlement>,
}

/// One entitlement of a [`BillingAgreement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingEntitlement {
    /// The feature's code.
    pub feature_code: String,
    /// The entitlement's id.
    pub entitlement_id: String,
}
