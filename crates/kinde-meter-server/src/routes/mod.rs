//! The route table: every route of the server, declared once.
//!
//! A route is its handler's `#[utoipa::path]` annotation (method, path, what it
//! takes and answers) plus one line in `table` saying who may call it: a
//! [`Scope`] or public. The router, the OpenAPI document (paths, each
//! operation's security, the common error answers) and the scope checks are all
//! built from that table, so none of them can disagree with another; a second
//! declaration of a method and path panics at start-up (axum refuses
//! overlapping routes), and a scope written into an annotation is refused
//! (the table is the only place for it). [`ROUTES`] lists the table for the
//! metrics, the docs and the tests.
//!
//! Adding a route: write the handler in a module here, annotate it with
//! `#[utoipa::path(<method>, path = "…", …)]` (no `security`), and add it to
//! `table`.

pub mod agreements;
pub mod browse;
pub mod entitlements;
pub mod export;
pub mod layers;
pub mod meter_usage;
pub mod oauth;
pub mod operations;
pub mod usage;
pub mod webhooks;

use std::sync::LazyLock;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::DefaultBodyLimit,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use kinde_meter_core::ErrorCode;
use kinde_meter_wire::Scope;
use utoipa::{OpenApi, openapi::path::PathItem};
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouter},
    routes,
};

use crate::error::ApiError;
use crate::extract::{BODY_LIMIT, RequireScope};
use crate::openapi;
use crate::state::AppState;

/// One entry of the table: handlers (their method and path are their
/// `#[utoipa::path]`) and the scope they need (`None`: public).
struct Route {
    scope: Option<Scope>,
    handlers: UtoipaMethodRouter<AppState>,
}

/// A route a token needs `scope` for.
fn scoped(scope: Scope, handlers: UtoipaMethodRouter<AppState>) -> Route {
    Route {
        scope: Some(scope),
        handlers,
    }
}

/// A route anyone may call.
fn public(handlers: UtoipaMethodRouter<AppState>) -> Route {
    Route {
        scope: None,
        handlers,
    }
}

/// Every route of the server and who may call it (`docs/api.md`).
fn table() -> Vec<Route> {
    use Scope::*;
    vec![
        scoped(
            CreateMeterUsage,
            routes!(meter_usage::create_meter_usage_record),
        ),
        scoped(
            CreateMeterUsage,
            routes!(meter_usage::create_meter_usage_records_batch),
        ),
        scoped(ReadMeterUsage, routes!(usage::get_meter_usage)),
        scoped(ReadMeterUsage, routes!(export::export_meter_usage)),
        scoped(
            CreateBillingAgreements,
            routes!(agreements::create_billing_agreement),
        ),
        scoped(
            ReadBillingAgreements,
            routes!(agreements::get_billing_agreements),
        ),
        scoped(
            ReadBillingEntitlements,
            routes!(entitlements::get_billing_entitlements),
        ),
        scoped(
            ReadBillingEntitlements,
            routes!(entitlements::check_billing_entitlement),
        ),
        scoped(CreateWebhooks, routes!(webhooks::create_web_hook)),
        scoped(ReadWebhooks, routes!(webhooks::get_web_hooks)),
        scoped(UpdateWebhooks, routes!(webhooks::update_web_hook)),
        scoped(DeleteWebhooks, routes!(webhooks::delete_web_hook)),
        scoped(ReadEvents, routes!(webhooks::get_event)),
        scoped(ReadEventTypes, routes!(webhooks::get_event_types)),
        scoped(ReadBillingAgreements, routes!(browse::get_customers)),
        scoped(ReadMeterUsage, routes!(browse::get_meter_usage_records)),
        scoped(ReadWebhooks, routes!(browse::get_webhook_status)),
        public(routes!(oauth::token)),
        public(routes!(operations::jwks)),
        public(routes!(operations::jwks_json)),
        public(routes!(operations::healthz)),
        public(routes!(operations::readyz)),
        public(routes!(operations::metrics)),
        public(routes!(openapi_json)),
        public(routes!(crate::dashboard::page)),
        public(routes!(crate::dashboard::script)),
        public(routes!(crate::dashboard::style)),
    ]
}

/// The router and document of `table`; with `state`, each scoped route
/// checks its scope (the document alone needs no state).
fn build(state: Option<&AppState>) -> OpenApiRouter<AppState> {
    let mut built = OpenApiRouter::with_openapi(openapi::Base::openapi());
    for Route { scope, handlers } in table() {
        let (schemas, mut paths, mut method_router) = handlers;
        for item in paths.paths.values_mut() {
            for operation in openapi::operations(item) {
                match scope {
                    Some(scope) => openapi::require_scope(operation, scope),
                    None => openapi::public(operation),
                }
            }
        }
        if let (Some(scope), Some(state)) = (scope, state) {
            method_router = method_router.route_layer(RequireScope {
                state: state.clone(),
                scope,
            });
        }
        built = built.routes((schemas, paths, method_router));
    }
    built
}

/// The whole application: the table's routes, the answers for unknown routes
/// and methods, and the [layers](layers::around) every request goes through.
pub fn router(state: AppState) -> Router {
    state
        .metrics
        .register_routes(ROUTES.iter().map(|r| (r.method, r.path)));
    let (routes, _) = build(Some(&state)).split_for_parts();
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    layers::around(routes, state.metrics.clone()).with_state(state)
}

/// One route of `table`: method, path and scope, as the metrics, docs and
/// tests see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method (`"GET"`, `"POST"`, …).
    pub method: &'static str,
    /// Path, as axum matches it (`{name}` for a parameter).
    pub path: &'static str,
    /// Required scope, `None` for public routes.
    pub scope: Option<Scope>,
}

/// Every route of `table`, in its order.
pub static ROUTES: LazyLock<Vec<RouteSpec>> = LazyLock::new(|| {
    let mut specs = Vec::new();
    for Route { scope, handlers } in table() {
        let (_, paths, _) = handlers;
        for (path, item) in paths.paths {
            // Made once per process; the `&'static str`s label metrics.
            let path: &'static str = Box::leak(path.into_boxed_str());
            for method in methods(&item) {
                specs.push(RouteSpec {
                    method,
                    path,
                    scope,
                });
            }
        }
    }
    specs
});

fn methods(item: &PathItem) -> impl Iterator<Item = &'static str> {
    [
        ("GET", item.get.is_some()),
        ("PUT", item.put.is_some()),
        ("POST", item.post.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("HEAD", item.head.is_some()),
        ("PATCH", item.patch.is_some()),
        ("TRACE", item.trace.is_some()),
    ]
    .into_iter()
    .filter_map(|(method, present)| present.then_some(method))
}

/// The OpenAPI document of `table`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    build(None).into_openapi()
}

/// The document as served, serialized once.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from(serde_json::to_vec(&openapi_document()).expect("the OpenAPI document serializes"))
});

/// This document: the OpenAPI 3 description of every route, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations", responses(
    (status = 200, description = "OpenAPI 3 document", content_type = "application/json"),
))]
pub async fn openapi_json() -> Response {
    json_text(DOCUMENT.clone())
}

/// A 200 answer whose body is `body`, JSON text already, with `Content-Type:
/// application/json` as its one header. Built directly rather than as a
/// `(headers, body)` pair, whose body first writes a content type of its own
/// that the pair then replaces; every JSON answer of the hot paths is one.
pub(crate) fn json_text(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `Json(value)`'s answer, serialized into a buffer of `capacity` bytes
/// (about the answer's size; `Json` starts at 128 and grows).
pub(crate) fn json_answer<T: serde::Serialize>(value: &T, capacity: usize) -> Response {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => json_text(buf),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            err.to_string(),
        )
            .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}
