//! One struct per API group of Kinde's management API, named as in the official
//! SDKs (`BillingMeterUsageApi`, `BillingAgreementsApi`, `BillingEntitlementsApi`,
//! `WebhooksApi`).

pub(crate) mod agreements;
pub(crate) mod entitlements;
pub(crate) mod meter_usage;
pub(crate) mod webhooks;
