//! Billing webhooks (`docs/webhooks.md`): where an endpoint may point
//! ([`endpoint`]: the URL rule, applied on create, on every connection and on
//! every redirect of a delivery), what a delivery carries ([`signing`]) and
//! the worker that delivers ([`worker`]).

pub mod endpoint;
pub mod signing;
pub mod worker;
