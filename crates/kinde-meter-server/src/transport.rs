//! The HTTP transport: the accept loop under a connection limit, timeouts
//! against slow clients, optional TLS, lingering close, and graceful draining
//! on shutdown ([`TransportConfig`]). Every request carries the peer address as
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo).
//!
//! Design: `docs/design.md#transport`; limits: `docs/limits.md#transport-limits`.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use anyhow::{Context as _, bail};
use axum::{
    Router,
    body::{Body, Bytes, HttpBody},
    extract::ConnectInfo,
    http::{Request, header},
};
use http_body::{Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};
use tokio_rustls::{TlsAcceptor, rustls};
use tower::Service;

/// Time allowed for a request's headers (and a TLS handshake); also the idle
/// keep-alive timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's body to arrive after its headers.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long shutdown waits for open connections to finish (`docs/limits.md` wants
/// the process gone within 10 s; the store's final commit comes after).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a connection closed after an answer keeps reading (and
/// discarding) what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);
/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How connections are accepted and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Time allowed for a request's headers, a TLS handshake, and an idle
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// Time allowed for a request's body, from its headers.
    pub request_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Serve HTTPS with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// PEM files for TLS (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A transport ready to serve: the configuration with its TLS files loaded.
pub struct Transport {
    config: TransportConfig,
    tls: Option<TlsAcceptor>,
}

impl Transport {
    /// Loads the TLS files, if any; a missing or unreadable file, or a key
    /// that does not match the certificate, is an error here rather than at
    /// the first handshake.
    pub fn new(config: TransportConfig) -> anyhow::Result<Transport> {
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        Ok(Transport { config, tls })
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves `app` on `listener` until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let Transport { config, tls } = self;
        let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let graceful = GracefulShutdown::new();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout);
        let connection = Connection {
            http,
            app,
            request_timeout: config.request_timeout,
            handshake_timeout: config.header_read_timeout,
        };
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if !is_connection_error(&e) {
                            // Out of file descriptors, most likely: back off a little.
                            tracing::error!(error = %e, "cannot accept a connection");
                            tokio::select! {
                                () = &mut shutdown => break,
                                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                            }
                        }
                        continue;
                    }
                },
            };
            let connection = connection.clone();
            let tls = tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                connection.run(stream, peer, tls, watcher).await;
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = config.drain_timeout.as_secs(),
                "connections still open at the end of the drain; closing them"
            );
        }
        Ok(())
    }
}

/// What serving one connection needs.
#[derive(Clone)]
struct Connection {
    http: http1::Builder,
    app: Router,
    request_timeout: Duration,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        watcher: Watcher,
    ) {
        let _ = stream.set_nodelay(true);
        match tls {
            None => self.serve(stream, peer, watcher).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => self.serve(stream, peer, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(self, io: I, peer: SocketAddr, watcher: Watcher)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            http,
            app,
            request_timeout,
            ..
        } = self;
        let linger = Arc::new(AtomicBool::new(false));
        let io = LingeringClose {
            io,
            linger: linger.clone(),
            deadline: None,
        };
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(|body| with_deadline(body, request_timeout));
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            let linger = linger.clone();
            async move {
                let response = app.call(request).await?;
                if response
                    .headers()
                    .get(header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    linger.store(true, Ordering::Relaxed);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let served = watcher
            .watch(http.serve_connection(TokioIo::new(io), service))
            .await;
        if let Err(e) = served {
            // Timeouts, resets, malformed requests: the client's business.
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// A connection whose shutdown, once an answer said `Connection: close`,
/// reads and discards the client's unread bytes until it closes or [`LINGER`]
/// has passed. Closing a socket with unread bytes makes the kernel reset the
/// connection, and a reset can reach the client before it has read the answer.
struct LingeringClose<I> {
    io: I,
    linger: Arc<AtomicBool>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I: AsyncRead + Unpin> AsyncRead for LingeringClose<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LingeringClose<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.linger.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            this.deadline = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let deadline = this.deadline.as_mut().expect("set above");
        let mut scratch = [0u8; 8192];
        loop {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // The client closed (or broke) its side: nothing more to read.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The body, failing if it has not ended `timeout` from now.
fn with_deadline(body: Incoming, timeout: Duration) -> Body {
    if body.is_end_stream() {
        return Body::new(body);
    }
    Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(timeout)),
    })
}

/// The error a body gives once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads the certificate chain and key into a TLS acceptor (HTTP/1.1, TLS
/// 1.2 and 1.3, rustls with the ring provider).
pub fn load_tls(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let cert_pem = read_pem(&files.cert, "--tls-cert")?;
    let key_pem = read_pem(&files.key, "--tls-key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "--tls-cert {} is not a PEM certificate chain",
                files.cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {} holds no PEM certificate",
            files.cert.display()
        );
    }
    // The key's own parse errors are not shown: they could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        anyhow::anyhow!(
            "--tls-key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the --tls-key does not fit the --tls-cert")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open {flag} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bail!("{flag} {} is larger than 1 MiB", path.display());
    }
    Ok(bytes)
}
