//! The parts of the OpenAPI 3 document that are not a route: its info, the
//! security scheme, the shared schemas, and what every authenticated operation
//! gets (its scope as security, the common error answers). The paths come from
//! the handlers' `#[utoipa::path]` annotations, collected by the route table in
//! `routes`, which also serves the document.

use kinde_meter_wire::{ErrorCode, Scope};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, Content, Ref, RefOr,
        header::HeaderBuilder,
        path::{Operation, PathItem},
        response::{Response, ResponseBuilder},
        schema::{ObjectBuilder, Type},
        security::{
            ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes,
            SecurityRequirement, SecurityScheme,
        },
    },
};

/// The name of the bearer token scheme in the document.
pub const SECURITY_SCHEME: &str = "kindeBearerAuth";

/// The name of the OAuth2 client-credentials scheme in the document: the same
/// bearer tokens, obtained from `/oauth2/token` (`docs/api.md`, tokens).
pub const OAUTH2_SCHEME: &str = "kindeOAuth2";

/// Where the OAuth2 client-credentials flow gets its tokens.
pub const TOKEN_URL: &str = "/oauth2/token";

/// The document without paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kinde-meter",
        description = "Kinde's billing meter usage API (POST /api/v1/billing/meter_usage) with agreements, usage read-back and batch."
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
        kinde_meter_wire::Scope,
    )),
    modifiers(&SecuritySchemes)
)]
pub struct Base;

/// The two ways to present a token: a bearer JWT as is, or one obtained with
/// the OAuth2 client-credentials flow at [`TOKEN_URL`], with every scope.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let descriptions: Vec<(&str, String)> = Scope::ALL
            .iter()
            .map(|scope| (scope.as_str(), format!("the {scope} scope (docs/api.md)")))
            .collect();
        let scopes = Scopes::from_iter(
            descriptions
                .iter()
                .map(|(scope, description)| (*scope, description.as_str())),
        );
        components.add_security_scheme(
            OAUTH2_SCHEME,
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::ClientCredentials(ClientCredentials::new(
                    TOKEN_URL, scopes,
                ))],
                "OAuth2 client credentials (form-encoded, client_id and client_secret in the form or HTTP Basic, audience `<public URL>/api`)",
            )),
        );
    }
}

/// Every operation of `item`.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Makes `operation` need `scope`: its security requirement, and the error
/// answers every authenticated route can give, those it does not describe
/// itself. The scope is declared in the route table only: an operation whose
/// annotation declares security of its own is a second declaration, refused.
pub fn require_scope(operation: &mut Operation, scope: Scope) {
    assert!(
        operation.security.is_none(),
        "{}: declare the scope in the route table, not in #[utoipa::path]",
        operation.operation_id.as_deref().unwrap_or("an operation")
    );
    operation.security = Some(vec![
        SecurityRequirement::new(SECURITY_SCHEME, [scope.as_str()]),
        SecurityRequirement::new(OAUTH2_SCHEME, [scope.as_str()]),
    ]);
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    for (status, response) in common_errors(scope, has_body) {
        responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    }
}

/// Public operations declare no security.
pub fn public(operation: &mut Operation) {
    assert!(
        operation.security.is_none(),
        "{}: a public route declares no security",
        operation.operation_id.as_deref().unwrap_or("an operation")
    );
}

/// The error answers of every authenticated route, in Kinde's `ErrorResponse`
/// shape (`docs/errors.md`); 413 only where there is a body.
fn common_errors(scope: Scope, has_body: bool) -> Vec<(&'static str, Response)> {
    let mut errors = vec![
        (
            "400",
            error(
                "Invalid request: malformed JSON, a missing or invalid field",
                &[
                    ErrorCode::InvalidJson,
                    ErrorCode::MissingField,
                    ErrorCode::InvalidField,
                ],
            )
            .build(),
        ),
        (
            "403",
            error(
                &format!(
                    "Missing, malformed, expired, wrongly signed or wrongly addressed token, or a token without the scope {scope}"
                ),
                &[ErrorCode::InvalidCredentials, ErrorCode::InsufficientScope],
            )
            .build(),
        ),
        (
            "429",
            with_retry_after(
                error(
                    "Rate limit exceeded; retry after Retry-After seconds",
                    &[ErrorCode::TooManyRequests],
                ),
                true,
            ),
        ),
        (
            "503",
            with_retry_after(
                error(
                    "Storage unavailable or the write queue full; nothing was stored",
                    &[ErrorCode::ServiceUnavailable],
                ),
                false,
            ),
        ),
    ];
    if has_body {
        errors.push((
            "413",
            error("Body over 64 KiB", &[ErrorCode::BodyTooLarge]).build(),
        ));
    }
    errors
}

fn error(description: &str, codes: &[ErrorCode]) -> ResponseBuilder {
    let codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    ResponseBuilder::new()
        .description(format!("{description} ({})", codes.join(", ")))
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorResponse"))),
        )
}

fn with_retry_after(response: ResponseBuilder, rate_limit: bool) -> Response {
    let seconds = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .build()
    };
    let response = response.header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(seconds())
            .description(Some("Seconds to wait before retrying, at least 1"))
            .build(),
    );
    if rate_limit {
        response
            .header(
                "RateLimit-Reset",
                HeaderBuilder::new()
                    .schema(seconds())
                    .description(Some("Seconds until the limit admits a request again"))
                    .build(),
            )
            .build()
    } else {
        response.build()
    }
}
