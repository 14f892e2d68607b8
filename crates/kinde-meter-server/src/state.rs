//! What every handler shares.

use std::{ops::Deref, sync::Arc};

use kinde_meter_store::Store;

use crate::auth::{RemoteJwks, Verifier};
use crate::clients::{RevokedClients, TokenIssuer};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::webhooks::endpoint::EndpointCheck;

/// The application state handed to every route: one reference count to
/// clone, where the fields' own are ten (axum clones the state for every
/// request, and the scope check's middleware once more).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of `shared`.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Verifies bearer tokens.
    pub verifier: Arc<Verifier>,
    /// The external issuer's JWKS, refetched on an unknown `kid` (external mode only).
    pub remote_jwks: Option<Arc<RemoteJwks>>,
    /// The public signing keys, served at `/.well-known/jwks`.
    pub jwks: Arc<serde_json::Value>,
    /// Billing time.
    pub clock: Clock,
    /// Issues tokens at `/oauth2/token` (built-in issuer mode only).
    pub token_issuer: Option<Arc<TokenIssuer>>,
    /// Registered clients that were revoked: their tokens are refused.
    pub revoked_clients: Arc<RevokedClients>,
    /// Rate limits: per client after authentication, per source address before it.
    pub limits: Arc<RateLimits>,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Where webhooks may point (`--webhook-allow-private-networks`).
    pub webhook_endpoints: EndpointCheck,
}
