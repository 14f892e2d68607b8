//! The HTTP layer of kinde-meter.
//!
//! It speaks Kinde's meter usage contract (`../shared/SPEC.md` §2), the agreements,
//! usage read-back and batch routes (§4) and the built-in token issuer (§5), over
//! the storage trait of `kinde-meter-store`. Where to look:
//!
//! - [`routes`]: the route table with each route's scope, and one module per route group,
//! - [`extract`]: authentication, the body limit, the `Idempotency-Key` header,
//! - [`error`]: every error becomes Kinde's `ErrorResponse` here,
//! - [`auth`]: signing keys, token minting and verification,
//! - [`clients`]: M2M clients, the client-credentials grant, revocations,
//! - [`rate_limit`]: per-client and per-source-address rate limits,
//! - [`transport`]: accept loop, connection limit, timeouts, TLS,
//! - [`metrics`]: `GET /metrics`, request and write-path counters for Prometheus,
//! - [`startup`]: building the application, binding, graceful shutdown,
//! - [`storage`]: SQLite in the data directory or PostgreSQL, and where the
//!   built-in issuer's keys and identity live with each,
//! - [`openapi`]: the generated OpenAPI document.

pub mod auth;
pub mod clients;
pub mod clock;
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

pub use clock::{Clock, ManualClock};
pub use startup::{Application, ExternalIssuer, ServerConfig};
