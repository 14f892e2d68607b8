//! The HTTP layer of kinde-meter.
//!
//! It speaks Kinde's meter usage contract, the agreements, usage read-back and
//! batch routes and the built-in token issuer (`docs/api.md`, `docs/tokens.md`),
//! over the storage trait of `kinde-meter-store`. Where to look:
//!
//! - [`routes`]: the route table (each route declared once, with its scope; the
//!   router, the OpenAPI document and the scope checks are built from it), one
//!   module per route group, and the layers around every request,
//! - [`extract`]: authentication, the body limit, the `Idempotency-Key` header,
//!   query parameters,
//! - [`error`]: every error becomes Kinde's `ErrorResponse` here,
//! - [`auth`]: signing keys, token minting and verification,
//! - [`clients`]: M2M clients, the client-credentials grant, revocations,
//! - [`rate_limit`]: per-client and per-source-address rate limits,
//! - [`transport`]: accept loop, connection limit, timeouts, TLS,
//! - [`metrics`]: request and write-path counters for Prometheus (`GET /metrics`),
//! - [`startup`]: building the application, binding, graceful shutdown,
//! - [`storage`]: SQLite in the data directory or PostgreSQL, and where the
//!   built-in issuer's keys and identity live with each,
//! - [`openapi`]: what the OpenAPI document holds besides the routes,
//! - [`webhooks`]: billing webhooks: endpoint checks and delivery,
//! - [`dashboard`]: the usage dashboard's page and assets, embedded.

pub mod auth;
pub mod clients;
pub mod clock;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod state;
pub mod storage;
pub mod transport;
pub mod views;
pub mod webhooks;

pub use clock::{Clock, ManualClock};
pub use startup::{Application, ExternalIssuer, ServerConfig};
