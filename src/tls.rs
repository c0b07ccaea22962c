//! HTTPS for the admission webhook: serving-certificate generation (`connect-gate certs`), a
//! certificate resolver that follows rotations of `--tls-cert`/`--tls-key` on disk, and the TLS
//! accept loop that serves an axum router over HTTP/1.1 and HTTP/2.
//!
//! Rotation: [`CertResolver::spawn_reloader`] re-reads both files every interval and compares
//! their content hash with the pair it saw last. Paths are opened by name each time, so a
//! Kubernetes Secret volume (`tls.crt -> ..data/tls.crt`, `..data` swapped atomically by the
//! kubelet) and cert-manager or `connect-gate certs` rewriting the files both show up on the next
//! tick. A pair that does not parse or whose key does not match the certificate (one file already
//! rewritten, the other not yet) is ignored with a warning and looked at again on the next tick;
//! the previous certificate keeps serving. New TLS handshakes use the new certificate; established
//! connections are not interrupted.
//!
//! CA reuse: [`generate_certs`] reuses `ca.crt` + `ca.key` when both already exist in the output
//! directory and issues only a new leaf, so clients that trust the CA keep working across leaf
//! rotations. With neither present it creates a new CA and writes `ca.key` (mode 0600) beside
//! `ca.crt`.

use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// The most connections [`serve`] handles at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1.1 client has to send a complete request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on which nothing is read or written for this long is closed (covers HTTP/2
/// clients that never send their preface, and clients that stop reading responses).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`serve`] waits for in-flight connections after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Certificate and key files larger than this are rejected unread.
const MAX_PEM_BYTES: u64 = 1 << 20;

pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(3600);

/// Everything that can go wrong loading or generating certificates. Messages name the file and the
/// cause; they never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: file not found", path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: larger than 1 MiB, not a PEM file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: not PEM: no `-----BEGIN CERTIFICATE-----` block found", path.display())]
    NotPemCert { path: PathBuf },
    #[error("{}: not PEM: no `-----BEGIN PRIVATE KEY-----` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY` block found", path.display())]
    NotPemKey { path: PathBuf },
    #[error("{}: malformed PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: &'static str },
    #[error("{}: not a usable X.509 certificate: {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("{}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519 expected)", path.display())]
    BadKey { path: PathBuf },
    #[error("{}: the private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{}: exists but {} does not; remove it to create a new CA, or restore the key", present.display(), absent.display())]
    HalfCa { present: PathBuf, absent: PathBuf },
    #[error("{}: cannot issue certificates with this CA: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("invalid subject alternative name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("cannot generate the {what}: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Writes a serving certificate for the webhook into `out`: `ca.crt`, `tls.crt` (signed by the
/// CA, SANs = `dns` + `ips`, or `localhost` + `127.0.0.1` when both are empty, extended key usage
/// serverAuth) and `tls.key` (PKCS#8 PEM, mode 0600).
///
/// If `out` already holds `ca.crt` and `ca.key`, that CA is reused and only a new leaf is issued;
/// otherwise a new CA is created and its key written to `ca.key` (mode 0600). Every file is
/// written to a temporary name and renamed into place, so a reader never sees half a file (it can
/// briefly see a new `tls.key` beside the old `tls.crt`; [`CertResolver`] ignores such a pair).
pub fn generate_certs(out: &Path, dns: &[String], ips: &[IpAddr]) -> Result<(), TlsError> {
    std::fs::create_dir_all(out).map_err(|source| TlsError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let (dns, ips): (Vec<String>, Vec<IpAddr>) = if dns.is_empty() && ips.is_empty() {
        (vec!["localhost".to_string()], vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    } else {
        (dns.to_vec(), ips.to_vec())
    };

    let (ca_crt_path, ca_key_path) = (out.join(CA_CERT), out.join(CA_KEY));
    let (issuer, ca_der) = match (ca_crt_path.exists(), ca_key_path.exists()) {
        (true, true) => load_ca(&ca_crt_path, &ca_key_path)?,
        (false, false) => {
            let (issuer, ca_pem, ca_der) = new_ca()?;
            write_atomic(&ca_key_path, issuer.key().serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&ca_crt_path, ca_pem.as_bytes(), 0o644)?;
            (issuer, ca_der)
        }
        (true, false) => {
            return Err(TlsError::HalfCa {
                present: ca_crt_path,
                absent: ca_key_path,
            });
        }
        (false, true) => {
            return Err(TlsError::HalfCa {
                present: ca_key_path,
                absent: ca_crt_path,
            });
        }
    };

    let leaf_key = rcgen::KeyPair::generate().map_err(|source| TlsError::Generate {
        what: "serving key",
        source,
    })?;
    let params = leaf_params(&dns, &ips)?;
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .map_err(|source| TlsError::Generate {
            what: "serving certificate",
            source,
        })?;

    // Prove the new leaf verifies against the CA for every name before replacing anything: a
    // `ca.key` that does not belong to `ca.crt` must not produce a certificate nobody trusts.
    verify_leaf(&ca_der, leaf.der(), &dns, &ips).map_err(|reason| TlsError::BadCa {
        path: ca_crt_path.clone(),
        reason,
    })?;

    write_atomic(&out.join(TLS_KEY), leaf_key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&out.join(TLS_CERT), leaf.pem().as_bytes(), 0o644)?;
    Ok(())
}

type CaIssuer = rcgen::Issuer<'static, rcgen::KeyPair>;

fn new_ca() -> Result<(CaIssuer, String, CertificateDer<'static>), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|source| TlsError::Generate { what: "CA key", source })?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "connect-gate webhook CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let cert = params.self_signed(&key).map_err(|source| TlsError::Generate {
        what: "CA certificate",
        source,
    })?;
    let (pem, der) = (cert.pem(), cert.der().clone());
    let issuer = rcgen::Issuer::new(params, key);
    Ok((issuer, pem, der))
}

fn load_ca(crt: &Path, key: &Path) -> Result<(CaIssuer, CertificateDer<'static>), TlsError> {
    let ca_der = parse_certs(crt, &read_limited(crt)?)?.remove(0);
    let key_bytes = read_limited(key)?;
    let key_pem = std::str::from_utf8(&key_bytes).map_err(|_| TlsError::NotPemKey {
        path: key.to_path_buf(),
    })?;
    let key_pair = rcgen::KeyPair::from_pem(key_pem).map_err(|_| TlsError::BadKey {
        path: key.to_path_buf(),
    })?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, key_pair).map_err(|e| TlsError::BadCert {
        path: crt.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((issuer, ca_der))
}

fn leaf_params(dns: &[String], ips: &[IpAddr]) -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::default();
    let mut sans = Vec::with_capacity(dns.len() + ips.len());
    for name in dns {
        // Validate as a DNS name the way a TLS client will; rcgen only checks for IA5.
        ServerName::try_from(name.as_str())
            .ok()
            .filter(|n| matches!(n, ServerName::DnsName(_)))
            .ok_or_else(|| TlsError::BadName {
                name: name.clone(),
                reason: "not a valid DNS name (use --ip for addresses)".into(),
            })?;
        let ia5 = rcgen::string::Ia5String::try_from(name.as_str()).map_err(|e| TlsError::BadName {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        sans.push(rcgen::SanType::DnsName(ia5));
    }
    sans.extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    let cn = dns
        .first()
        .cloned()
        .or_else(|| ips.first().map(|ip| ip.to_string()))
        .unwrap_or_default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LEAF_VALIDITY).into();
    Ok(params)
}

/// A positive 16-byte random serial (RFC 5280 asks for unpredictable, unique serials).
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    if ring::default_provider().secure_random.fill(&mut bytes).is_err() {
        // Fall back to time + pid: serials must be unique, not secret.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes.copy_from_slice(&(nanos ^ (u128::from(std::process::id()) << 96)).to_be_bytes());
    }
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive and exactly 16 bytes long
    rcgen::SerialNumber::from_slice(&bytes)
}

fn verify_leaf(
    ca: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(), String> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(ring::default_provider()))
        .build()
        .map_err(|e| e.to_string())?;
    let names = dns
        .iter()
        .filter_map(|d| ServerName::try_from(d.as_str()).ok())
        .chain(ips.iter().map(|ip| ServerName::IpAddress((*ip).into())));
    for name in names {
        verifier
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map_err(|e| format!("a certificate it signs does not verify ({e}); does ca.key belong to ca.crt?"))?;
    }
    Ok(())
}

/// Writes `contents` to a temporary file beside `path` with `mode`, then renames it over `path`.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    // Make the rename durable; failing to sync a directory is not worth failing the command.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `connect-gate certs`: write a CA and a serving certificate for local runs and tests.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (plus ca.key for a new CA). An existing
    /// ca.crt + ca.key there is reused, so only the serving certificate changes.
    #[arg(long)]
    pub out: PathBuf,
    /// DNS name for the serving certificate; repeatable. Default (with no --ip): localhost.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// IP address for the serving certificate; repeatable. Default (with no --dns): 127.0.0.1.
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
}

impl CertsArgs {
    pub fn run(&self) -> Result<(), TlsError> {
        generate_certs(&self.out, &self.dns, &self.ips)?;
        let show = |f: &str| self.out.join(f).display().to_string();
        println!(
            "wrote {} and {} (key mode 0600), signed by {}",
            show(TLS_CERT),
            show(TLS_KEY),
            show(CA_CERT)
        );
        println!("serve with: --tls-cert {} --tls-key {}", show(TLS_CERT), show(TLS_KEY));
        println!("webhook caBundle: base64 -w0 {}", show(CA_CERT));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and rotation
// ---------------------------------------------------------------------------------------------

fn read_limited(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_path_buf(),
        },
        _ => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// A description of a PEM error that cannot carry file content.
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no matching END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "unreadable",
    }
}

fn parse_certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NotPemCert {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NotPemKey {
            path: path.to_path_buf(),
        },
        e => TlsError::BadPem {
            path: path.to_path_buf(),
            reason: pem_reason(&e),
        },
    })
}

/// Parses a certificate chain and its key and checks they belong together.
fn certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert_path, cert_pem)?;
    let key_der = parse_key(key_path, key_pem)?;
    // The provider's error names the algorithms it tried, never the key; still, say only "unusable".
    let key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| TlsError::BadKey {
            path: key_path.to_path_buf(),
        })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        // ring can always derive the public key; if some key type cannot, accept it as rustls does.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(TlsError::BadCert {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn content_hash(cert: &[u8], key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Serves the certificate from `--tls-cert`/`--tls-key` and swaps in new ones when the files change.
pub struct CertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: CryptoProvider,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// Content hash of the last pair looked at (loaded or rejected), and the last error reported.
    seen: Mutex<(Option<u64>, Option<String>)>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("loaded", &self.loaded())
            .field("reloads", &self.reloads())
            .field("reload_failures", &self.reload_failures())
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    fn empty(cert: PathBuf, key: PathBuf) -> Self {
        CertResolver {
            cert_path: cert,
            key_path: key,
            provider: ring::default_provider(),
            current: RwLock::new(None),
            seen: Mutex::new((None, None)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// Loads the pair now; fails (naming the file and the cause) if it is missing or unusable.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let resolver = Self::empty(cert, key);
        let (hash, certified) = resolver.read_pair()?;
        *resolver.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(certified));
        resolver.seen.lock().unwrap_or_else(PoisonError::into_inner).0 = Some(hash);
        Ok(Arc::new(resolver))
    }

    /// Like [`load`](Self::load), but starts without a certificate when the pair is not usable yet
    /// (e.g. cert-manager has not issued it): handshakes fail and [`loaded`](Self::loaded) is false
    /// until the reloader finds a good pair.
    pub fn load_or_wait(cert: PathBuf, key: PathBuf) -> Arc<Self> {
        let resolver = Arc::new(Self::empty(cert, key));
        if let Err(e) = resolver.reload() {
            tracing::warn!(error = %e, "no usable TLS certificate yet; will keep looking");
        }
        resolver
    }

    fn read_pair(&self) -> Result<(u64, CertifiedKey), TlsError> {
        let cert = read_limited(&self.cert_path)?;
        let key = read_limited(&self.key_path)?;
        let hash = content_hash(&cert, &key);
        Ok((
            hash,
            certified_key(&self.provider, &self.cert_path, &cert, &self.key_path, &key)?,
        ))
    }

    /// Re-reads both files. `Ok(true)`: a new pair is now serving; `Ok(false)`: unchanged since
    /// the last look (a pair already rejected is not re-parsed); `Err`: the files are unusable
    /// right now and the previous certificate (if any) keeps serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = self.try_reload();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(true) => {
                seen.1 = None;
                self.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                if seen.1.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, serving_previous = self.loaded(), "TLS certificate not (re)loaded; retrying");
                    seen.1 = Some(message);
                }
            }
        }
        result
    }

    fn try_reload(&self) -> Result<bool, TlsError> {
        let cert = read_limited(&self.cert_path)?;
        let key = read_limited(&self.key_path)?;
        let hash = content_hash(&cert, &key);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.0 == Some(hash) {
                return Ok(false);
            }
            // Remember it now so a rejected pair is not re-parsed (and re-counted) every tick.
            seen.0 = Some(hash);
        }
        let certified = certified_key(&self.provider, &self.cert_path, &cert, &self.key_path, &key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(certified));
        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// Polls both files every `interval` and swaps in a changed, consistent pair. The task ends
    /// when the resolver is dropped (or the handle is aborted).
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; the pair was just loaded
            loop {
                ticker.tick().await;
                let Some(this) = weak.upgrade() else { break };
                // Errors are counted and logged inside reload(); the old certificate keeps serving.
                let _ = tokio::task::spawn_blocking(move || this.reload()).await;
            }
        })
    }

    /// True once a certificate is serving (readiness).
    pub fn loaded(&self) -> bool {
        self.current.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// The certificate and key currently served, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Successful reloads since [`load`](Self::load) (the initial load is not counted).
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reload attempts that found the files missing, unparsable or mismatched.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

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

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight connections finish (HTTP/1.1 keep-alive is ended, HTTP/2 gets GOAWAY) for up to
/// [`SHUTDOWN_GRACE`], and aborts the rest.
///
/// The protocol follows ALPN: `h2` is served as HTTP/2, anything else (including no ALPN) as
/// HTTP/1.1. At most [`MAX_CONNECTIONS`] are handled at once. Failed or slow handshakes
/// ([`HANDSHAKE_TIMEOUT`]) are logged at debug and never stop the loop; accept errors (e.g. out of
/// file descriptors) are logged and retried after a pause.
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
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(128);
    let builders = Arc::new((h1, h2));

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
            let io = hyper_util::rt::TokioIo::new(IdleTimeout::new(tls, IDLE_TIMEOUT));
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder = if http2 { &builders.1 } else { &builders.0 };
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
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

/// Fails reads and writes that make no progress for `timeout`, so a peer that goes silent (or
/// stops reading) cannot hold a connection slot forever.
struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check_idle(cx).map(Err),
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
            Poll::Pending => this.check_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check_idle(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check_idle(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(dir: &Path) {
        generate_certs(dir, &["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
    }

    fn served_der(r: &CertResolver) -> Vec<u8> {
        r.current().expect("a certificate is loaded").cert[0].to_vec()
    }

    fn file_der(path: &Path) -> Vec<u8> {
        parse_certs(path, &std::fs::read(path).unwrap()).unwrap()[0].to_vec()
    }

    /// Every base64 line of a PEM key file: none may appear in an error message.
    fn key_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 8)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        generate_certs(dir.path(), &[], &[]).unwrap();
        for f in [CA_CERT, CA_KEY, TLS_CERT, TLS_KEY] {
            assert!(dir.path().join(f).is_file(), "{f} written");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [CA_KEY, TLS_KEY] {
                let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f} mode");
            }
        }
        let key = std::fs::read_to_string(dir.path().join(TLS_KEY)).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");

        // Defaults: localhost and 127.0.0.1, verified against the CA with serverAuth.
        let ca = file_der(&dir.path().join(CA_CERT));
        let leaf = file_der(&dir.path().join(TLS_CERT));
        verify_leaf(
            &ca.into(),
            &leaf.into(),
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();

        let r = CertResolver::load(dir.path().join(TLS_CERT), dir.path().join(TLS_KEY)).unwrap();
        assert!(r.loaded());
        assert_eq!((r.reloads(), r.reload_failures()), (0, 0));
        assert!(!r.reload().unwrap(), "unchanged files are not reloaded");
        let config = server_config(r);
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn san_names_are_checked_by_the_self_verification() {
        let dir = tempfile::tempdir().unwrap();
        generate_certs(
            dir.path(),
            &["connect-gate-webhook.connect.svc".into()],
            &["10.0.0.7".parse().unwrap()],
        )
        .unwrap();
        let ca = CertificateDer::from(file_der(&dir.path().join(CA_CERT)));
        let leaf = CertificateDer::from(file_der(&dir.path().join(TLS_CERT)));
        verify_leaf(
            &ca,
            &leaf,
            &["connect-gate-webhook.connect.svc".into()],
            &["10.0.0.7".parse().unwrap()],
        )
        .unwrap();
        assert!(
            verify_leaf(&ca, &leaf, &["localhost".into()], &[]).is_err(),
            "a name not in the SANs fails"
        );

        let err = generate_certs(dir.path(), &["10.0.0.8".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.8") && err.contains("--ip"), "{err}");
    }

    #[test]
    fn existing_ca_is_reused_and_a_half_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let ca1 = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let leaf1 = std::fs::read(dir.path().join(TLS_CERT)).unwrap();
        generate(dir.path());
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca1, "CA kept");
        assert_ne!(std::fs::read(dir.path().join(TLS_CERT)).unwrap(), leaf1, "new leaf");
        let ca = CertificateDer::from(file_der(&dir.path().join(CA_CERT)));
        let leaf = CertificateDer::from(file_der(&dir.path().join(TLS_CERT)));
        verify_leaf(&ca, &leaf, &["localhost".into()], &[]).unwrap();

        // A ca.key that does not belong to ca.crt is caught before anything is replaced.
        let other = tempfile::tempdir().unwrap();
        generate(other.path());
        std::fs::copy(other.path().join(CA_KEY), dir.path().join(CA_KEY)).unwrap();
        let leaf_before = std::fs::read(dir.path().join(TLS_CERT)).unwrap();
        let err = generate_certs(dir.path(), &[], &[]).unwrap_err();
        assert!(matches!(err, TlsError::BadCa { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join(TLS_CERT)).unwrap(), leaf_before);

        std::fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let err = generate_certs(dir.path(), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("ca.crt") && err.contains("ca.key"), "{err}");
    }

    #[test]
    fn mismatched_key_is_rejected_without_key_material() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(a.path());
        generate(b.path());
        let (cert, key) = (a.path().join(TLS_CERT), b.path().join(TLS_KEY));
        let err = CertResolver::load(cert.clone(), key.clone()).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&*cert.to_string_lossy()) && msg.contains(&*key.to_string_lossy()),
            "{msg}"
        );
        assert!(msg.contains("does not match"), "{msg}");
        let debug = format!("{err:?}");
        for line in key_lines(&key).iter().chain(key_lines(&a.path().join(TLS_KEY)).iter()) {
            assert!(
                !msg.contains(line.as_str()) && !debug.contains(line.as_str()),
                "key material leaked"
            );
        }
        assert!(!msg.contains("PRIVATE KEY-----"));
    }

    #[test]
    fn load_errors_name_the_file_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let (cert, key) = (dir.path().join(TLS_CERT), dir.path().join(TLS_KEY));
        let missing = dir.path().join("nope.crt");
        let load = |c: &Path, k: &Path| {
            CertResolver::load(c.to_path_buf(), k.to_path_buf())
                .unwrap_err()
                .to_string()
        };

        let msg = load(&missing, &key);
        assert!(msg.contains("nope.crt") && msg.contains("not found"), "{msg}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello, not a certificate\n").unwrap();
        let msg = load(&junk, &key);
        assert!(msg.contains("junk.pem") && msg.contains("not PEM"), "{msg}");
        let msg = load(&cert, &junk);
        assert!(
            msg.contains("junk.pem") && msg.contains("not PEM") && msg.contains("PRIVATE KEY"),
            "{msg}"
        );

        // Swapped flags: the key file has no certificate and vice versa.
        let msg = load(&key, &cert);
        assert!(msg.contains("tls.key") && msg.contains("CERTIFICATE"), "{msg}");
        for line in key_lines(&key) {
            assert!(!msg.contains(line.as_str()), "key material leaked: {msg}");
        }

        // A truncated key: a BEGIN without END.
        let text = std::fs::read_to_string(&key).unwrap();
        let cut = dir.path().join("cut.key");
        std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
        let msg = load(&cert, &cut);
        assert!(msg.contains("cut.key") && msg.contains("malformed PEM"), "{msg}");
        for line in key_lines(&key) {
            assert!(!msg.contains(line.as_str()), "key material leaked: {msg}");
        }

        // Valid PEM, garbage DER.
        let bad = dir.path().join("bad.crt");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let msg = load(&bad, &key);
        assert!(msg.contains("bad.crt") && msg.contains("X.509"), "{msg}");
        let badkey = dir.path().join("bad.key");
        std::fs::write(
            &badkey,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let msg = load(&cert, &badkey);
        assert!(
            msg.contains("bad.key") && msg.contains("not a usable private key"),
            "{msg}"
        );
    }

    #[test]
    fn reload_picks_up_rewritten_files_and_ignores_a_half_updated_pair() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let (cert, key) = (dir.path().join(TLS_CERT), dir.path().join(TLS_KEY));
        let r = CertResolver::load(cert.clone(), key.clone()).unwrap();
        let first = served_der(&r);

        // Stage a new leaf elsewhere (same CA), then rewrite the pair one file at a time.
        let staging = tempfile::tempdir().unwrap();
        for f in [CA_CERT, CA_KEY] {
            std::fs::copy(dir.path().join(f), staging.path().join(f)).unwrap();
        }
        generate(staging.path());
        write_atomic(&cert, &std::fs::read(staging.path().join(TLS_CERT)).unwrap(), 0o644).unwrap();
        let err = r.reload().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert_eq!(served_der(&r), first, "old certificate keeps serving");
        assert_eq!((r.reloads(), r.reload_failures()), (0, 1));
        assert!(!r.reload().unwrap(), "the same half pair is not re-parsed");

        write_atomic(&key, &std::fs::read(staging.path().join(TLS_KEY)).unwrap(), 0o600).unwrap();
        assert!(r.reload().unwrap());
        assert_eq!(served_der(&r), file_der(&staging.path().join(TLS_CERT)));
        assert_ne!(served_der(&r), first);
        assert_eq!((r.reloads(), r.reload_failures()), (1, 1));

        // Files disappearing (e.g. a volume being remounted) keep the old certificate too.
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(r.reload(), Err(TlsError::Missing { .. })));
        assert!(r.loaded());
    }

    /// Lays out `dir` like a Kubernetes Secret volume: `tls.crt -> ..data/tls.crt`,
    /// `..data -> ..<version>`, and swaps `..data` atomically as the kubelet does.
    #[cfg(unix)]
    fn secret_volume_publish(volume: &Path, version: &str, source: &Path) {
        let versioned = volume.join(format!("..{version}"));
        std::fs::create_dir(&versioned).unwrap();
        for f in [TLS_CERT, TLS_KEY] {
            std::fs::copy(source.join(f), versioned.join(f)).unwrap();
        }
        let tmp = volume.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, volume.join("..data")).unwrap();
        for f in [TLS_CERT, TLS_KEY] {
            let link = volume.join(f);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn secret_volume_symlink_swap_is_followed() {
        let source = tempfile::tempdir().unwrap();
        let volume = tempfile::tempdir().unwrap();
        generate(source.path());
        secret_volume_publish(volume.path(), "v1", source.path());
        let r = CertResolver::load(volume.path().join(TLS_CERT), volume.path().join(TLS_KEY)).unwrap();
        assert_eq!(served_der(&r), file_der(&source.path().join(TLS_CERT)));

        generate(source.path());
        secret_volume_publish(volume.path(), "v2", source.path());
        assert!(r.reload().unwrap());
        assert_eq!(served_der(&r), file_der(&source.path().join(TLS_CERT)));
        assert_eq!(r.reloads(), 1);
    }

    #[tokio::test]
    async fn spawned_reloader_swaps_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let r = CertResolver::load(dir.path().join(TLS_CERT), dir.path().join(TLS_KEY)).unwrap();
        let first = served_der(&r);
        let task = r.spawn_reloader(Duration::from_millis(20));
        generate(dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        while served_der(&r) == first {
            assert!(
                Instant::now() < deadline,
                "reloader never picked up the new certificate"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(served_der(&r), file_der(&dir.path().join(TLS_CERT)));
        // The task ends once the resolver is gone.
        drop(r);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn load_or_wait_starts_empty_and_becomes_ready() {
        let dir = tempfile::tempdir().unwrap();
        let r = CertResolver::load_or_wait(dir.path().join(TLS_CERT), dir.path().join(TLS_KEY));
        assert!(!r.loaded());
        assert!(r.current().is_none());
        generate(dir.path());
        assert!(r.reload().unwrap());
        assert!(r.loaded());
    }
}
