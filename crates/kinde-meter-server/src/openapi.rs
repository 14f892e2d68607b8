//! The OpenAPI 3 document, generated from the handlers' annotations and the wire
//! types (utoipa), so it cannot drift from the code.

use axum::{Json, response::IntoResponse};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::routes::{agreements, health, meter_usage, oauth, usage};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kinde-meter",
        description = "Kinde's billing meter usage API (POST /api/v1/billing/meter_usage) with agreements, usage read-back and batch."
    ),
    paths(
        meter_usage::create_meter_usage_record,
        meter_usage::create_meter_usage_records_batch,
        usage::get_meter_usage,
        agreements::create_billing_agreement,
        agreements::get_billing_agreements,
        health::healthz,
        health::readyz,
        health::jwks,
        crate::metrics::serve,
        oauth::token,
    ),
    components(schemas(
        kinde_meter_wire::CreateMeterUsageRecordRequest,
        kinde_meter_wire::CreateMeterUsageRecordResponse,
        kinde_meter_wire::MeterTypeCode,
        kinde_meter_wire::ErrorResponse,
        kinde_meter_wire::Error,
        kinde_meter_wire::CreateMeterUsageRecordsBatchRequest,
        kinde_meter_wire::CreateMeterUsageRecordsBatchResponse,
        kinde_meter_wire::BatchRecordResult,
        kinde_meter_wire::GetMeterUsageResponse,
        kinde_meter_wire::MeterUsage,
        kinde_meter_wire::CreateBillingAgreementRequest,
        kinde_meter_wire::SuccessResponse,
        kinde_meter_wire::GetBillingAgreementsResponse,
        kinde_meter_wire::BillingAgreement,
        kinde_meter_wire::BillingEntitlement,
        kinde_meter_wire::TokenResponse,
        kinde_meter_wire::OAuthErrorResponse,
        oauth::TokenRequestForm,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "kindeBearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
