//! Serving HTTP on the listener: every connection admitted under limits
//! (open connections in all and per peer address) and served with
//! timeouts, so that no client can hold the server's sockets for long:
//!
//! - a request's headers must arrive within `header_timeout`, and so must
//!   the next request on an idle keep-alive connection (slowloris);
//! - a handler must answer within `request_timeout` (its body, a streamed
//!   report, excepted), which bounds a slow upload too;
//! - every write to a socket must make progress within `send_timeout`, so
//!   a client that stops reading a report, an export or its WebSocket is
//!   disconnected, and the database connection behind the stream released.
//!
//! With TLS (`tls.cert`, `tls.key`), the handshake must finish within the
//! header timeout too.
//!
//! A connection past a limit is closed at once, before a byte is read, and
//! counted in `/metrics`: the server never runs out of open files, and one
//! address cannot take every slot.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::proxy::TrustedProxies;
use crate::services::metrics::Metrics;
use crate::slots::{Full, Slot, Slots};

/// Limits on connections and how long each may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections (WebSockets included) past which new ones are
    /// closed at once; `None`: the open-file limit less a reserve for the
    /// database and logs, read at startup.
    pub max_connections: Option<usize>,
    /// Open connections from one address. Agents behind one NAT address
    /// count as one: raise it for such fleets.
    pub max_connections_per_ip: usize,
    /// For a request's headers, and for the next request on an idle
    /// keep-alive connection.
    pub header_timeout: Duration,
    /// For a handler to answer, body excepted.
    pub request_timeout: Duration,
    /// For a write to a socket to make progress.
    pub send_timeout: Duration,
    /// For a WebSocket client of `/echo` to say HELLO.
    pub websocket_hello_timeout: Duration,
    /// Silence (no frame, not even a pong to the server's ping every 30 s)
    /// after which a WebSocket's peer is taken for gone and its slot freed.
    pub websocket_idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_connections_per_ip: 4_096,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            websocket_hello_timeout: Duration::from_secs(10),
            // Agents that read only when they send answer pings late: the
            // default leaves room for intervals of several minutes.
            websocket_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Open files kept for the database, the logs and the listener when the
/// connection limit is derived from the open-file limit.
const RESERVED_FILES: usize = 256;

impl ConnectionLimits {
    /// The limit on open connections, derived from the process's open-file
    /// limit when not configured.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
                .unwrap_or(1_024);
            files.saturating_sub(RESERVED_FILES).max(64)
        })
    }
}

/// Why a connection was closed unserved, as `/metrics` names it.
fn refusal_label(full: Full) -> &'static str {
    match full {
        Full::InAll { .. } => "max_connections",
        Full::ForKey { .. } => "max_connections_per_ip",
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then stops
/// accepting and waits for the requests in flight (the caller bounds how
/// long). WebSocket sessions are closed by the application itself.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    proxies: TrustedProxies,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let proxies = Arc::new(proxies);
    let admission: Arc<Slots<IpAddr>> =
        Slots::new(limits.max_connections(), limits.max_connections_per_ip);
    tracing::info!(
        max_connections = admission.max_total(),
        max_connections_per_ip = admission.max_per_key(),
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        request_timeout_s = limits.request_timeout.as_secs_f64(),
        send_timeout_s = limits.send_timeout.as_secs_f64(),
        trusted_proxies = ?proxies,
        "connection limits"
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder.http1_only());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        // A trusted proxy's address stands for all of its clients.
        let admitted = match proxies.is_trusted(peer.ip()) {
            true => admission.take_exempt(),
            false => admission.take(peer.ip()),
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(full) => {
                metrics.connection_refused(refusal_label(full));
                tracing::debug!(%peer, limit = refusal_label(full), "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = AdmittedStream {
            stream: with_send_timeout(stream, limits.send_timeout),
            _slot: admitted,
        };
        let (proxies, secure) = (proxies.clone(), tls.is_some());
        let service = TowerToHyperService::new(app.clone().map_request(
            move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                let origin = RequestOrigin {
                    client: proxies.client_address(peer.ip(), request.headers()),
                    secure: secure || proxies.forwarded_https(peer.ip(), request.headers()),
                };
                request.extensions_mut().insert(origin);
                request
            },
        ));
        let Some(tls) = tls.clone() else {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::spawn(log_end(peer, graceful.watch(connection.into_owned())));
            continue;
        };
        // The handshake runs on the connection's own task, bounded like
        // reading headers, so a slow one holds up no one else.
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            log_end(peer, watcher.watch(connection.into_owned())).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn log_end<E: std::fmt::Display>(
    peer: SocketAddr,
    connection: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(error) = connection.await {
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    }
}

/// A connection's socket and its slot: the slot is given back when the
/// socket closes, which for a WebSocket is long after its HTTP request
/// (the upgrade takes the socket with it).
struct AdmittedStream {
    stream: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: Slot<IpAddr>,
}

impl AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_read(context, buffer)
    }
}

impl AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_shutdown(context)
    }
}

fn with_send_timeout(stream: TcpStream, timeout: Duration) -> Pin<Box<TimeoutStream<TcpStream>>> {
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(timeout));
    Box::pin(stream)
}

/// Out of open files, or a connection reset before it was accepted: the
/// first passes as connections close, so wait a little instead of spinning.
async fn accept_failed(error: &std::io::Error) {
    tracing::warn!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Who sent a request and how: its client's address (behind a trusted
/// proxy, the one the proxy names) and whether it came over HTTPS (served
/// with TLS, or so a trusted proxy says). Recorded for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOrigin {
    pub client: IpAddr,
    pub secure: bool,
}

/// The origin of a request, where the server recorded it (its accept loop
/// does; a router served otherwise has none).
pub fn origin_of(request: &axum::http::request::Parts) -> Option<RequestOrigin> {
    request.extensions.get::<RequestOrigin>().copied()
}
