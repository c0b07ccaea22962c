//! Certificate files: generating a CA and serving certificate (`connect-gate certs`), and reading
//! and checking PEM certificates and keys for the resolver. Error messages name the file and the
//! cause, never key material.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;

/// Certificate and key files larger than this are rejected unread.
const MAX_PEM_BYTES: u64 = 1 << 20;

pub(super) const CA_CERT: &str = "ca.crt";
pub(super) const CA_KEY: &str = "ca.key";
pub(super) const TLS_CERT: &str = "tls.crt";
pub(super) const TLS_KEY: &str = "tls.key";
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
/// briefly see a new `tls.key` beside the old `tls.crt`; [`CertResolver`](super::CertResolver)
/// ignores such a pair).
pub fn generate_certs(out: &Path, dns: &[String], ips: &[IpAddr]) -> Result<CertFiles, TlsError> {
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

    let files = CertFiles {
        ca_cert: ca_crt_path,
        cert: out.join(TLS_CERT),
        key: out.join(TLS_KEY),
    };
    write_atomic(&files.key, leaf_key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&files.cert, leaf.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// The files [`generate_certs`] wrote that its users need: the CA for the webhook's `caBundle`
/// and the pair for `--tls-cert`/`--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
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
pub(super) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
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

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

pub(super) fn read_limited(path: &Path) -> Result<Vec<u8>, TlsError> {
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
pub(super) fn certified_key(
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A CA (new or reused) and a leaf for `localhost` + `127.0.0.1` in `dir`.
    pub(crate) fn generate(dir: &Path) {
        generate_certs(dir, &["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
    }

    /// The first certificate in a PEM file, as DER.
    pub(crate) fn file_der(path: &Path) -> Vec<u8> {
        parse_certs(path, &std::fs::read(path).unwrap()).unwrap()[0].to_vec()
    }

    #[test]
    fn generated_files_verify_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate_certs(dir.path(), &[], &[]).unwrap();
        assert_eq!(
            files,
            CertFiles {
                ca_cert: dir.path().join(CA_CERT),
                cert: dir.path().join(TLS_CERT),
                key: dir.path().join(TLS_KEY),
            }
        );
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
        let key = std::fs::read_to_string(&files.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");

        // Defaults: localhost and 127.0.0.1, verified against the CA with serverAuth.
        let ca = file_der(&files.ca_cert);
        let leaf = file_der(&files.cert);
        verify_leaf(
            &ca.into(),
            &leaf.into(),
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();

        // The pair is what a server can load.
        let (cert_pem, key_pem) = (read_limited(&files.cert).unwrap(), read_limited(&files.key).unwrap());
        certified_key(&ring::default_provider(), &files.cert, &cert_pem, &files.key, &key_pem).unwrap();
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
}
