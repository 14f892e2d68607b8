//! The router: one table of every route with the scope it needs.
//!
//! [`ROUTES`] is the single source for which scope each route requires; the router
//! is built from it, the docs print it, and a test walks it route by route.

pub mod agreements;
pub mod health;
pub mod meter_usage;
pub mod oauth;
pub mod usage;

use std::collections::HashMap;

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequestParts, Query},
    http::{Method, StatusCode, request::Parts},
    middleware,
    routing::{MethodRouter, get, post},
};
use kinde_meter_core::{ErrorCode, ids::CodeError};

use crate::error::ApiError;
use crate::extract::{BODY_LIMIT, RequireScope, authenticate};
use crate::state::AppState;

/// One route of the API and the scope a token needs for it (`None`: public).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path.
    pub path: &'static str,
    /// Required scope, `None` for public routes.
    pub scope: Option<&'static str>,
}

/// Every route (SPEC §4), with its scope.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: "POST",
        path: "/api/v1/billing/meter_usage",
        scope: Some("create:meter_usage"),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/billing/meter_usage/batch",
        scope: Some("create:meter_usage"),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/billing/meter_usage",
        scope: Some("read:meter_usage"),
    },
    RouteSpec {
        method: "POST",
        path: "/api/v1/billing/agreements",
        scope: Some("create:billing_agreements"),
    },
    RouteSpec {
        method: "GET",
        path: "/api/v1/billing/agreements",
        scope: Some("read:billing_agreements"),
    },
    RouteSpec {
        method: "GET",
        path: "/.well-known/jwks",
        scope: None,
    },
    RouteSpec {
        method: "GET",
        path: "/.well-known/jwks.json",
        scope: None,
    },
    RouteSpec {
        method: "GET",
        path: "/healthz",
        scope: None,
    },
    RouteSpec {
        method: "GET",
        path: "/readyz",
        scope: None,
    },
    RouteSpec {
        method: "GET",
        path: "/metrics",
        scope: None,
    },
    RouteSpec {
        method: "GET",
        path: "/openapi.json",
        scope: None,
    },
    RouteSpec {
        method: "POST",
        path: "/oauth2/token",
        scope: None,
    },
];

/// The scope [`ROUTES`] gives a route; panics at start-up for a route missing
/// from the table, so the table cannot fall behind the router.
fn scope_of(method: Method, path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| r.method == method.as_str() && r.path == path)
        .and_then(|r| r.scope)
        .unwrap_or_else(|| panic!("{method} {path} is not an authenticated route of ROUTES"))
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    // Outermost, after routing: it sees the matched path and every answer,
    // 404s and auth refusals included.
    let metrics = state.metrics.layer();
    let guarded = |method: Method, path: &'static str, route: MethodRouter<AppState>| {
        route.route_layer(middleware::from_fn_with_state(
            RequireScope {
                state: state.clone(),
                scope: scope_of(method, path),
            },
            authenticate,
        ))
    };
    let meter_usage = "/api/v1/billing/meter_usage";
    let batch = "/api/v1/billing/meter_usage/batch";
    let agreements = "/api/v1/billing/agreements";
    Router::new()
        .route(
            meter_usage,
            guarded(
                Method::POST,
                meter_usage,
                post(meter_usage::create_meter_usage_record),
            )
            .merge(guarded(
                Method::GET,
                meter_usage,
                get(usage::get_meter_usage),
            )),
        )
        .route(
            batch,
            guarded(
                Method::POST,
                batch,
                post(meter_usage::create_meter_usage_records_batch),
            ),
        )
        .route(
            agreements,
            guarded(
                Method::POST,
                agreements,
                post(agreements::create_billing_agreement),
            )
            .merge(guarded(
                Method::GET,
                agreements,
                get(agreements::get_billing_agreements),
            )),
        )
        .route("/.well-known/jwks", get(health::jwks))
        .route("/.well-known/jwks.json", get(health::jwks))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::serve))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/oauth2/token", post(oauth::token))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(metrics)
        .with_state(state)
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

/// Query parameters with Kinde's error codes for missing or malformed ones.
pub struct QueryParams(pub Params);

/// Decoded query parameters.
pub struct Params(HashMap<String, String>);

impl Params {
    /// A parameter that must be present and non-empty (else `MISSING_FIELD`).
    pub fn required(&self, name: &'static str) -> Result<Param<'_>, ApiError> {
        match self.0.get(name).filter(|v| !v.is_empty()) {
            Some(value) => Ok(Param { name, value }),
            None => Err(ApiError::bad_request(
                ErrorCode::MissingField,
                format!("{name} is required"),
            )),
        }
    }

    /// A parameter that may be absent (empty counts as absent).
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A present query parameter.
pub struct Param<'a> {
    name: &'static str,
    value: &'a str,
}

impl Param<'_> {
    /// Parses the value as a code, `INVALID_FIELD` naming the parameter if it is not one.
    pub fn and_then_code<T>(
        self,
        parse: impl FnOnce(String) -> Result<T, CodeError>,
    ) -> Result<T, ApiError> {
        parse(self.value.to_owned()).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidField, format!("{} {e}", self.name))
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request(ErrorCode::InvalidField, "the query string is malformed")
            })?;
        Ok(QueryParams(Params(map)))
    }
}
