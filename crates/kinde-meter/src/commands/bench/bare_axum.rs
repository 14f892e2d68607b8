//! The `axum` mode's server: a bare axum hello-world, `GET /healthz` answering
//! `ok` with no layers, the ceiling issue 11 measures kinde-meter's `/healthz`
//! against (docs/design.md#benchmark).
//!
//! For a fair comparison it runs on the same HTTP/1.1 server stack, configured
//! as `serve`'s transport configures it (kinde-meter-server's `transport.rs`):
//! hyper's `http1` server connection with tokio's timer and the same header
//! read timeout, `TCP_NODELAY`, one task per connection, on the runtime that
//! runs this command (`main.rs`: tokio's multi-threaded runtime, one worker per
//! CPU, as for `serve`). What it leaves out is what kinde-meter adds on every
//! request: the connection limit, the peer address, the body deadline, the
//! lingering close and the middleware stack.
//!
//! It always runs in the bench's own process, also with `--server` (its CPU
//! per request is then this process's CPU less the load generator's threads,
//! as for an in-process server).

use std::net::SocketAddr;

use anyhow::Context;
use axum::{Router, body::Body, routing::get};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use kinde_meter_server::transport::DEFAULT_HEADER_READ_TIMEOUT;
use tokio::{net::TcpListener, task::JoinHandle};
use tower::Service;

/// The bare axum server, serving until dropped.
pub struct BareAxum {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    accept: JoinHandle<()>,
}

impl BareAxum {
    /// Starts it on 127.0.0.1 on a port of its own.
    pub async fn start() -> anyhow::Result<BareAxum> {
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let (base, accept) = serve_local(app, "the bare axum server").await?;
        Ok(BareAxum { base, accept })
    }
}

/// Serves `app` ([`serve`]) on 127.0.0.1 on a port of its own: its base URL
/// (`http://127.0.0.1:PORT`) and the accepting task. `what` names it in errors.
pub async fn serve_local(app: Router, what: &str) -> anyhow::Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .with_context(|| format!("cannot listen for {what}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok((base, serve(listener, app)))
}

/// Serves `app` on `listener` as `serve`'s transport serves kinde-meter
/// (the module's comment), one task per connection, until aborted; the
/// `axum`, `ceiling` and `check-ceiling` modes' servers.
pub fn serve(listener: TcpListener, app: Router) -> JoinHandle<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: back off as serve does.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (http, app) = (http.clone(), app.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request| {
                    let mut app = app.clone();
                    async move { app.call(request.map(Body::new)).await }
                });
                let _ = http.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

type Request = hyper::Request<Incoming>;

impl Drop for BareAxum {
    fn drop(&mut self) {
        // Its connections end when the load generator's close.
        self.accept.abort();
    }
}
