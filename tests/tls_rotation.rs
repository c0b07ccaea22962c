//! The webhook's TLS server under certificate rotation: clients on kept-alive HTTP/1.1 and HTTP/2
//! connections and on fresh connections send requests while the serving certificate is replaced
//! several times (Secret-volume `..data` swaps and in-place rewrites with a half-updated pair in
//! between). No request may fail, and fresh connections must see each new certificate. Ends with a
//! graceful shutdown that lets an in-flight request finish.
//!
//! No timed assertions: every wait is a bounded poll against a generous deadline.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use connect_gate::webhook::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

const ROTATIONS: usize = 4;
const MIN_REQUESTS_PER_WORKER: usize = 100;
const MAX_REQUESTS_PER_WORKER: usize = 5_000;
const DEADLINE: Duration = Duration::from_secs(60);

fn leaf_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

fn issue(ca_dir: &Path) {
    tls::generate_certs(ca_dir, &["localhost".to_string()], &["127.0.0.1".parse().unwrap()]).unwrap();
}

/// Publishes `source`'s tls.crt/tls.key into `volume` the way the kubelet updates a Secret volume:
/// a new `..<version>` directory, a `..data_tmp` symlink renamed over `..data`, and
/// `tls.crt -> ..data/tls.crt` links that never change.
fn publish_secret_volume(volume: &Path, version: &str, source: &Path) {
    let versioned = volume.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(source.join(f), versioned.join(f)).unwrap();
    }
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, volume.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = volume.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

#[derive(Default)]
struct Tally {
    requests: usize,
    failures: Vec<String>,
    certs_seen: HashSet<Vec<u8>>,
    versions: HashSet<reqwest::Version>,
}

fn client_builder(ca: &reqwest::Certificate, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .tls_info(true)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
}

async fn get_once(client: &reqwest::Client, url: &str, tally: &Mutex<Tally>) {
    let outcome = async {
        let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
        let cert = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec);
        let (status, version) = (resp.status(), resp.version());
        let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
        if status != 200 || body != "ok" {
            return Err(format!("{status} {body:?}"));
        }
        Ok((cert, version))
    }
    .await;
    let mut t = tally.lock().unwrap();
    t.requests += 1;
    match outcome {
        Ok((cert, version)) => {
            t.certs_seen.extend(cert);
            t.versions.insert(version);
        }
        Err(e) => t.failures.push(e),
    }
}

/// Sends requests until `stop` is set (and at least the minimum was sent), never more than the maximum.
fn spawn_worker<F, Fut>(stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>, mut one: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut(Arc<Mutex<Tally>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            let sent = tally.lock().unwrap().requests;
            if sent >= MAX_REQUESTS_PER_WORKER || (stop.load(Ordering::Relaxed) && sent >= MIN_REQUESTS_PER_WORKER) {
                break;
            }
            one(tally.clone()).await;
        }
    })
}

/// The leaf a brand-new connection is served.
async fn fresh_peer_cert(ca: &reqwest::Certificate, addr: SocketAddr) -> Vec<u8> {
    let client = client_builder(ca, addr).http1_only().build().unwrap();
    let resp = client
        .get(format!("https://localhost:{}/", addr.port()))
        .send()
        .await
        .unwrap();
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("rustls reports the peer certificate")
        .to_vec()
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_certificate_rotation_and_shutdown_is_graceful() {
    connect_gate::install_crypto_provider();
    let ca_dir = tempfile::tempdir().unwrap();
    let volume = tempfile::tempdir().unwrap();
    issue(ca_dir.path());
    publish_secret_volume(volume.path(), "v0", ca_dir.path());
    let ca_pem = std::fs::read(ca_dir.path().join("ca.crt")).unwrap();
    let ca = reqwest::Certificate::from_pem(&ca_pem).unwrap();

    let (cert_path, key_path): (PathBuf, PathBuf) = (volume.path().join("tls.crt"), volume.path().join("tls.key"));
    let resolver = tls::CertResolver::load(cert_path, key_path).unwrap();
    let _reloader = resolver.spawn_reloader(Duration::from_millis(25));

    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get({
            let (entered, release) = (entered.clone(), release.clone());
            move || async move {
                entered.notify_one();
                release.notified().await;
                "slow done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve(
        listener,
        tls::server_config(resolver.clone()),
        router,
        async move {
            let _ = stopped.await;
        },
    ));

    // Bad input first: plaintext HTTP on the TLS port, and a client that connects and says nothing
    // (it holds a slot until the handshake timeout but must not block anyone else).
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut sink))
        .await
        .expect("server closes a non-TLS connection");
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    let first_cert = fresh_peer_cert(&ca, addr).await;
    assert_eq!(first_cert, leaf_der(&ca_dir.path().join("tls.crt")));

    let stop = Arc::new(AtomicBool::new(false));
    let url_dns = format!("https://localhost:{}/", addr.port());
    let url_ip = format!("https://127.0.0.1:{}/", addr.port());
    let tallies: Vec<(&str, Arc<Mutex<Tally>>)> = ["h2 kept-alive", "http/1.1 kept-alive", "fresh connections"]
        .into_iter()
        .map(|n| (n, Arc::default()))
        .collect();
    let h2 = client_builder(&ca, addr).build().unwrap();
    let h1 = client_builder(&ca, addr).http1_only().build().unwrap();
    let workers = vec![
        spawn_worker(stop.clone(), tallies[0].1.clone(), {
            let url = url_dns.clone();
            move |t| {
                let (h2, url) = (h2.clone(), url.clone());
                async move { get_once(&h2, &url, &t).await }
            }
        }),
        spawn_worker(stop.clone(), tallies[1].1.clone(), {
            let url = url_ip.clone();
            move |t| {
                let (h1, url) = (h1.clone(), url.clone());
                async move { get_once(&h1, &url, &t).await }
            }
        }),
        spawn_worker(stop.clone(), tallies[2].1.clone(), {
            let (ca, mut n) = (ca.clone(), 0usize);
            move |t| {
                n += 1;
                // Alternate protocols and names; a new client means a new connection and handshake.
                let builder = client_builder(&ca, addr);
                let (client, url) = if n % 2 == 0 {
                    (builder.build().unwrap(), url_dns.clone())
                } else {
                    (builder.http1_only().build().unwrap(), url_ip.clone())
                };
                async move { get_once(&client, &url, &t).await }
            }
        }),
    ];

    let mut served = vec![first_cert];
    for round in 1..=ROTATIONS {
        // Let some traffic run on the current certificate first.
        let before: usize = tallies.iter().map(|(_, t)| t.lock().unwrap().requests).sum();
        wait_until("traffic between rotations", async || {
            tallies.iter().map(|(_, t)| t.lock().unwrap().requests).sum::<usize>() >= before + 20
        })
        .await;

        issue(ca_dir.path()); // a new leaf from the same CA
        let new_leaf = leaf_der(&ca_dir.path().join("tls.crt"));
        if round % 2 == 1 {
            publish_secret_volume(volume.path(), &format!("v{round}"), ca_dir.path());
        } else {
            // Rewrite the files in place, certificate first: until the key follows, the pair does
            // not match, and the old certificate must keep serving.
            let failures_before = resolver.reload_failures();
            let data = volume.path().join("..data");
            std::fs::write(
                data.join("tls.crt"),
                std::fs::read(ca_dir.path().join("tls.crt")).unwrap(),
            )
            .unwrap();
            wait_until("the reloader to see the half-updated pair", async || {
                resolver.reload_failures() > failures_before
            })
            .await;
            assert_eq!(
                resolver.current().unwrap().cert[0].as_ref(),
                served.last().unwrap().as_slice()
            );
            assert_eq!(
                fresh_peer_cert(&ca, addr).await,
                *served.last().unwrap(),
                "old certificate still served"
            );
            std::fs::write(
                data.join("tls.key"),
                std::fs::read(ca_dir.path().join("tls.key")).unwrap(),
            )
            .unwrap();
        }
        wait_until("a fresh connection to get the new certificate", async || {
            fresh_peer_cert(&ca, addr).await == new_leaf
        })
        .await;
        served.push(new_leaf);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(DEADLINE, w)
            .await
            .expect("worker finishes")
            .unwrap();
    }

    let mut total = 0;
    for (name, tally) in &tallies {
        let t = tally.lock().unwrap();
        total += t.requests;
        assert!(
            t.failures.is_empty(),
            "{name}: {} of {} requests failed: {:?}",
            t.failures.len(),
            t.requests,
            t.failures
        );
        assert!(
            t.requests >= MIN_REQUESTS_PER_WORKER,
            "{name}: only {} requests",
            t.requests
        );
        assert!(
            t.certs_seen.iter().all(|c| served.contains(c)),
            "{name}: saw a certificate never published"
        );
    }
    let versions = |i: usize| tallies[i].1.lock().unwrap().versions.clone();
    assert_eq!(
        versions(0),
        HashSet::from([reqwest::Version::HTTP_2]),
        "ALPN h2 is served as HTTP/2"
    );
    assert_eq!(versions(1), HashSet::from([reqwest::Version::HTTP_11]));
    assert_eq!(
        versions(2),
        HashSet::from([reqwest::Version::HTTP_11, reqwest::Version::HTTP_2])
    );
    let fresh_certs = tallies[2].1.lock().unwrap().certs_seen.len();
    assert!(fresh_certs >= 2, "fresh connections saw {fresh_certs} certificates");
    assert_eq!(
        served.iter().collect::<HashSet<_>>().len(),
        ROTATIONS + 1,
        "every rotation served a new certificate"
    );
    assert_eq!(resolver.reloads(), ROTATIONS as u64);
    assert!(
        resolver.reload_failures() >= (ROTATIONS / 2) as u64,
        "half-updated pairs were rejected"
    );
    eprintln!(
        "{total} requests, {} reload failures (ignored half-updated pairs)",
        resolver.reload_failures()
    );

    // Graceful shutdown: an in-flight request completes, new connections are refused.
    let slow = {
        let client = client_builder(&ca, addr).http1_only().build().unwrap();
        let url = format!("https://localhost:{}/slow", addr.port());
        tokio::spawn(async move { client.get(url).send().await?.text().await })
    };
    tokio::time::timeout(DEADLINE, entered.notified())
        .await
        .expect("slow request reached the handler");
    stop_server.send(()).unwrap();
    wait_until("the listener to close", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    release.notify_one();
    let body = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("slow request finishes")
        .unwrap()
        .unwrap();
    assert_eq!(body, "slow done");
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
