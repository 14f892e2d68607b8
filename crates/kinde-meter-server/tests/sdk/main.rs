//! kinde-sdk against the real server over HTTP: typed calls and errors, the
//! `UsageReporter` (including a crash test in a child process), retries, and
//! the client-credentials token manager. One test binary, one module per
//! topic; `proxy` is the HTTP proxy they put between the SDK and the server.

#[path = "../support/mod.rs"]
mod support;

mod calls;
mod proxy;
mod reporter;
mod retries;
mod tokens;
