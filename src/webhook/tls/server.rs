//! The TLS accept loop: serves an axum router over HTTP/1.1 and HTTP/2 with connection limits,
//! timeouts and a graceful shutdown.
//!
//! The webhook answers the API server within its 5 s timeout even while hundreds of slow or
//! silent clients hold connections: every connection slot is bounded in time by what the client
//! does, never by what the server does (its own HTTP/2 pings do not keep a connection alive):
//! - a TLS handshake gets [`HANDSHAKE_TIMEOUT`];
//! - every request gets one deadline, [`REQUEST_DEADLINE`], from its first byte (HTTP/1.1) or its
//!   headers (HTTP/2) to the response, body reading included; past it the answer is 408;
//! - request bodies are buffered against one process-wide budget, [`BODY_BUDGET`], so clients
//!   sending bodies slowly hold only the bytes they sent;
//! - a connection with no request in flight is closed after [`FIRST_REQUEST_TIMEOUT`] if it never
//!   sent one, else after [`IDLE_TIMEOUT`] (HTTP/2 gets GOAWAY);
//! - at most [`MAX_STREAMS`] concurrent requests per HTTP/2 connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rustls::crypto::ring;
use rustls::{ServerConfig, version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::CertResolver;

/// The most connections [`serve`] handles at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// From a request's first byte to its response: under the API server's 5 s webhook timeout,
/// after which nobody waits for the answer.
const REQUEST_DEADLINE: Duration = Duration::from_millis(4500);
/// Request bodies buffered at once, over all connections (a review is at most ~3 MiB).
const BODY_BUDGET: usize = 64 << 20;
/// The largest request body read.
const BODY_LIMIT: usize = 3 << 20;
/// A connection that has not sent a request this long after its handshake is closed.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection on which nothing is read or written for this long is closed (a client that
/// stops reading its response).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent requests on one HTTP/2 connection (the API server opens more connections).
const MAX_STREAMS: u32 = 32;
/// How long [`serve`] waits for in-flight connections after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long a connection closed for idleness may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// TLS 1.3 and 1.2 with ring, certificates from `resolver`, ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight connections finish (HTTP/1.1 keep-alive is ended, HTTP/2 gets GOAWAY) for up to
/// `SHUTDOWN_GRACE`, and aborts the rest.
///
/// The protocol follows ALPN: `h2` is served as HTTP/2, anything else (including no ALPN) as
/// HTTP/1.1. At most `MAX_CONNECTIONS` are handled at once. Failed or slow handshakes are logged
/// at debug and never stop the loop; accept errors (e.g. out of file descriptors) are logged and
/// retried after a pause.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut h1 = Builder::new(TokioExecutor::new()).http1_only();
    // hyper starts this timer whenever the connection waits for a request head, so it also ends
    // idle keep-alive connections.
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_DEADLINE)
        .keep_alive(true);
    let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(MAX_STREAMS);
    let builders = Arc::new((h1, h2));
    let bodies = Arc::new(Semaphore::new(BODY_BUDGET));

    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        while connections.try_join_next().is_some() {}
        // Take a slot before accepting, so at capacity clients wait in the backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builders = builders.clone();
        let router = router.clone();
        let bodies = bodies.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let tls = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                () = stopped(&mut stop) => return,
            };
            let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let activity = Arc::new(Activity::new(!http2));
            let io = hyper_util::rt::TokioIo::new(Watched::new(tls, activity.clone()));
            let service = {
                let activity = activity.clone();
                tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (router, activity, bodies) = (router.clone(), activity.clone(), bodies.clone());
                    async move { Ok::<_, Infallible>(handle(req.map(Body::new), router, &activity, bodies).await) }
                })
            };
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder = if http2 { &builders.1 } else { &builders.0 };
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            let mut check = tokio::time::interval(Duration::from_secs(1));
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    () = stopped(&mut stop) => {
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                    _ = check.tick() => if activity.idle_too_long() {
                        tracing::debug!(%peer, "closing an idle webhook connection");
                        conn.as_mut().graceful_shutdown();
                        break tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await.unwrap_or(Ok(()));
                    },
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let in_flight = connections.len();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            of = in_flight,
            "webhook connections still open after the grace period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// One request within its deadline: the body is read against the shared budget, then the router
/// answers; past the deadline the answer is 408 and the body read so far is dropped.
async fn handle(req: Request<Body>, router: axum::Router, activity: &Activity, bodies: Arc<Semaphore>) -> Response {
    let deadline = activity.request_started();
    let answer = tokio::time::timeout_at(deadline, async {
        let (parts, body) = req.into_parts();
        let (body, _held) = match read_body(body, &bodies).await {
            Ok(read) => read,
            Err(response) => return response,
        };
        match router.oneshot(Request::from_parts(parts, Body::from(body))).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    })
    .await;
    activity.request_ended();
    answer.unwrap_or_else(|_| {
        (
            StatusCode::REQUEST_TIMEOUT,
            "request not complete within its deadline\n",
        )
            .into_response()
    })
}

/// Reads a whole body, holding one budget permit per byte until the answer is sent.
async fn read_body(body: Body, budget: &Arc<Semaphore>) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Response> {
    let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, "request body over 3 MiB\n").into_response();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut buf = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| (StatusCode::BAD_REQUEST, "cannot read the request body\n").into_response())?;
        if buf.len() + chunk.len() > BODY_LIMIT {
            return Err(too_large());
        }
        let n = u32::try_from(chunk.len()).map_err(|_| too_large())?;
        let permit = budget.clone().acquire_many_owned(n).await.expect("never closed");
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buf), held))
}

/// Resolves once shutdown is signalled (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What a connection's client has been doing, by request rather than by byte.
struct Activity {
    /// HTTP/1.1: requests follow one another, so the first byte read while none is in flight
    /// starts the next one. (HTTP/2 multiplexes: a request starts when its headers arrive.)
    sequential: bool,
    first_byte: Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// When the last request started or ended, or the connection was set up.
    last: Mutex<Instant>,
}

impl Activity {
    fn new(sequential: bool) -> Self {
        Self {
            sequential,
            first_byte: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last: Mutex::new(Instant::now()),
        }
    }

    fn read_progressed(&self) {
        if self.sequential && self.in_flight.load(Ordering::Relaxed) == 0 {
            let mut first = self.first_byte.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(Instant::now);
        }
    }

    /// A request has arrived: its deadline.
    fn request_started(&self) -> Instant {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        let now = Instant::now();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = now;
        let first = self.first_byte.lock().unwrap_or_else(|p| p.into_inner()).take();
        first.unwrap_or(now) + REQUEST_DEADLINE
    }

    fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_too_long(&self) -> bool {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let limit = if self.served.load(Ordering::Relaxed) {
            IDLE_TIMEOUT
        } else {
            FIRST_REQUEST_TIMEOUT
        };
        self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > limit
    }
}

/// The TLS stream of one connection: reports reads to its [`Activity`], and fails reads and
/// writes that make no progress for `STALL_TIMEOUT` (a peer that stops reading its response).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            deadline: Box::pin(tokio::time::sleep(STALL_TIMEOUT)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + STALL_TIMEOUT;
        self.deadline.as_mut().reset(next);
    }

    fn check_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection stalled")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                if buf.filled().len() > before {
                    this.activity.read_progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.check_stalled(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check_stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check_stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check_stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check_stalled(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;

    use super::super::certs::tests::generate;
    use super::super::certs::{CA_CERT, TLS_CERT, TLS_KEY};
    use super::*;

    /// A TLS connection to `addr` offering `alpn`, trusting the CA in `ca`.
    async fn connect(
        addr: std::net::SocketAddr,
        ca: &std::path::Path,
        alpn: &[u8],
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// A TLS handshake offering h2; the negotiated ALPN protocol.
    async fn handshake(addr: std::net::SocketAddr, ca: &std::path::Path) -> io::Result<Option<Vec<u8>>> {
        let tls = connect(addr, ca, b"h2").await?;
        Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    }

    #[tokio::test]
    async fn a_body_sent_too_slowly_is_cut_at_the_request_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let resolver = CertResolver::load_or_wait(dir.path().join(TLS_CERT), dir.path().join(TLS_KEY)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::post(|body: Bytes| async move { body }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, server_config(resolver), router, async {
            let _ = stopped.await;
        }));

        let mut tls = connect(addr, &dir.path().join(CA_CERT), b"http/1.1").await.unwrap();
        tls.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn without_a_certificate_handshakes_fail_until_one_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = CertResolver::load_or_wait(dir.path().join(TLS_CERT), dir.path().join(TLS_KEY)).unwrap();
        let config = server_config(resolver.clone());
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, config, axum::Router::new(), async {
            let _ = stopped.await;
        }));

        generate(dir.path()); // the CA to trust; the resolver has not looked yet
        for _ in 0..3 {
            let err = handshake(addr, &dir.path().join(CA_CERT)).await.unwrap_err();
            assert!(err.to_string().contains("received fatal alert"), "{err}");
        }
        assert!(resolver.reload().unwrap());
        let alpn = handshake(addr, &dir.path().join(CA_CERT)).await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
