//! What every handler shares.

use std::sync::Arc;

use kinde_meter_store::Store;

use crate::auth::Verifier;
use crate::clock::Clock;

/// The application state handed to every route.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Verifies bearer tokens.
    pub verifier: Arc<Verifier>,
    /// The public signing keys, served at `/.well-known/jwks`.
    pub jwks: Arc<serde_json::Value>,
    /// Billing time.
    pub clock: Clock,
}
