//! Loopback proxies that put faults between the sidecar and what it talks to:
//!   * [`CutProxy`], TCP between one replica and the API server, whose [`CutProxy::cut`] stops
//!     forwarding without closing anything (a silent API server: what hangs a client without a
//!     read timeout);
//!   * [`Recorder`], HTTP in front of a Connect worker, which records every write with the time
//!     it arrived, its body and the worker's answer, can keep the answers to them waiting (a slow
//!     worker) and can keep some writes from the worker altogether (a client stuck mid-request).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::stack::stack;

/// The stack's API server, as its kubeconfig names it (always on loopback).
pub fn apiserver_addr() -> SocketAddr {
    let kubeconfig: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&stack().kubeconfig).unwrap()).unwrap();
    let server = kubeconfig["clusters"][0]["cluster"]["server"].as_str().unwrap();
    server.trim_start_matches("https://").parse().unwrap()
}

/// The stack's admin kubeconfig (written into `dir`) with the API server at `addr` instead: the
/// API server's certificate names 127.0.0.1, so TLS works through a loopback proxy.
pub fn kubeconfig_via(addr: SocketAddr, dir: &Path) -> PathBuf {
    let mut kubeconfig: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&stack().kubeconfig).unwrap()).unwrap();
    kubeconfig["clusters"][0]["cluster"]["server"] = format!("https://{addr}").into();
    let path = dir.join(format!("kubeconfig-via-{}", addr.port()));
    std::fs::write(&path, serde_norway::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

/// A TCP proxy on loopback to `upstream`, stopped on drop.
pub struct CutProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    stop: CancellationToken,
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let inbound = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue,
                    },
                };
                tokio::spawn(token.child_token().run_until_cancelled_owned(connection(
                    inbound,
                    upstream,
                    cut_rx.clone(),
                )));
            }
        });
        CutProxy { addr, cut, stop }
    }

    /// From now on nothing is forwarded, in either direction, on open or new connections; no
    /// connection is closed, so the client waits for answers that never come.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One proxied connection: both directions copied until the cut, then held open, silent.
async fn connection(mut inbound: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let already_cut = *cut.borrow();
    if already_cut {
        return std::future::pending().await;
    }
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut in_read, mut in_write) = inbound.split();
    let (mut out_read, mut out_write) = outbound.split();
    let (mut up, mut down) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    let is_cut = cut.clone();
    let cut_signal = async move {
        let _ = cut.wait_for(|c| *c).await;
    };
    tokio::pin!(cut_signal);
    loop {
        let (read, upward) = tokio::select! {
            _ = &mut cut_signal => break,
            n = in_read.read(&mut up) => (n, true),
            n = out_read.read(&mut down) => (n, false),
        };
        let Ok(n @ 1..) = read else { return };
        // A chunk read just as the cut came is not passed on either.
        let now_cut = *is_cut.borrow();
        if now_cut {
            break;
        }
        let written = if upward {
            out_write.write_all(&up[..n]).await
        } else {
            in_write.write_all(&down[..n]).await
        };
        if written.is_err() {
            return;
        }
    }
    std::future::pending().await
}

/// A write (any method but GET) that reached the [`Recorder`].
#[derive(Clone, Debug)]
pub struct Write {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub body: String,
    /// The worker's status code; `None` while unanswered, or never sent ([`Recorder::block`]).
    pub status: Option<u16>,
}

/// An HTTP proxy on loopback to a Connect worker that records the writes it forwards.
pub struct Recorder {
    pub url: String,
    writes: Arc<Mutex<Vec<Write>>>,
    hold: watch::Sender<bool>,
    waiting: Arc<Mutex<usize>>,
    blocked: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    writes: Arc<Mutex<Vec<Write>>>,
    hold: watch::Receiver<bool>,
    waiting: Arc<Mutex<usize>>,
    blocked: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    pub async fn start(upstream: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (hold, hold_rx) = watch::channel(false);
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            writes: Arc::default(),
            hold: hold_rx,
            waiting: Arc::default(),
            blocked: Arc::default(),
        };
        let (writes, waiting, blocked) = (shared.writes.clone(), shared.waiting.clone(), shared.blocked.clone());
        let stop = serve_until_stopped(listener, axum::Router::new().fallback(forward).with_state(shared));
        Recorder {
            url,
            writes,
            hold,
            waiting,
            blocked,
            stop,
        }
    }

    /// While `Some(needle)`, a write whose `METHOD path` contains `needle` is recorded and never
    /// sent on nor answered: the client waits as for a worker that went silent mid-request.
    pub fn block(&self, needle: Option<&str>) {
        *self.blocked.lock().unwrap() = needle.map(str::to_string);
    }

    /// Every write so far, in order of arrival.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    /// While on, the answers to writes are kept from the client (the worker has acted on them).
    pub fn hold_answers(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// Writes whose answer is being kept.
    pub fn waiting(&self) -> usize {
        *self.waiting.lock().unwrap()
    }
}

/// Serves `app` on `listener` until the token returned is cancelled.
pub fn serve_until_stopped(listener: TcpListener, app: axum::Router) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
    });
    stop
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.hold.send_replace(false);
        self.stop.cancel();
    }
}

async fn forward(
    axum::extract::State(shared): axum::extract::State<Shared>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let write = parts.method != reqwest::Method::GET;
    let at = Instant::now();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let mut index = None;
    if write {
        let line = format!("{} {path}", parts.method);
        {
            let mut writes = shared.writes.lock().unwrap();
            index = Some(writes.len());
            writes.push(Write {
                at,
                method: parts.method.to_string(),
                path: path.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
                status: None,
            });
        }
        let blocked = shared.blocked.lock().unwrap().clone();
        if blocked.is_some_and(|needle| line.contains(&needle)) {
            return std::future::pending().await;
        }
    }
    let mut upstream = shared
        .http
        .request(parts.method, format!("{}{path}", shared.upstream))
        .body(body);
    if let Some(t) = parts.headers.get("content-type") {
        upstream = upstream.header("content-type", t);
    }
    let (status, body) = match upstream.send().await {
        Ok(r) => (r.status(), r.bytes().await.unwrap_or_default()),
        Err(e) => (reqwest::StatusCode::BAD_GATEWAY, e.to_string().into()),
    };
    if let Some(i) = index {
        shared.writes.lock().unwrap()[i].status = Some(status.as_u16());
    }
    if write {
        *shared.waiting.lock().unwrap() += 1;
        let _ = shared.hold.clone().wait_for(|h| !*h).await;
        *shared.waiting.lock().unwrap() -= 1;
    }
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    response
}
