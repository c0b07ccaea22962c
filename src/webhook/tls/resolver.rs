//! [`CertResolver`]: serves the certificate from `--tls-cert`/`--tls-key` and follows rotations.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::{CryptoProvider, ring};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use super::certs::{certified_key, read_limited};

fn content_hash(cert: &[u8], key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// What a look at the files found.
enum Looked {
    /// The same content as last time.
    Unchanged,
    /// A pair is serving where none was before.
    First,
    /// A new pair replaced the one serving.
    Replaced,
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
        resolver.look()?;
        Ok(Arc::new(resolver))
    }

    /// Like [`load`](Self::load), but a missing file is not an error: cert-manager issues the
    /// certificate after the pod starts. The resolver then starts without a certificate;
    /// handshakes fail and [`loaded`](Self::loaded) is false until the reloader finds the pair.
    /// Files that exist but are unusable are still an error.
    pub fn load_or_wait(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let resolver = Self::empty(cert, key);
        match resolver.look() {
            Ok(_) => {}
            Err(TlsError::Missing { path }) => tracing::warn!(
                missing = %path.display(),
                "serving certificate not there yet; waiting for it (TLS handshakes fail and /readyz answers 503 until then)"
            ),
            Err(e) => return Err(e),
        }
        Ok(Arc::new(resolver))
    }

    /// Re-reads both files. `Ok(true)`: a new pair is now serving; `Ok(false)`: unchanged since
    /// the last look (a pair already rejected is not re-parsed); `Err`: the files are unusable
    /// right now and the previous certificate (if any) keeps serving.
    ///
    /// Errors count as [`reload_failures`](Self::reload_failures), except a missing file while no
    /// certificate has been loaded yet: that is still waiting for the first one, not a failure.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = self.look();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(Looked::Unchanged) => {}
            Ok(Looked::First) => {
                seen.1 = None;
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate loaded");
            }
            Ok(Looked::Replaced) => {
                seen.1 = None;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(TlsError::Missing { .. }) if !self.loaded() => {}
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                if seen.1.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, serving_previous = self.loaded(), "TLS certificate not (re)loaded; retrying");
                    seen.1 = Some(message);
                }
            }
        }
        result.map(|looked| !matches!(looked, Looked::Unchanged))
    }

    /// Reads both files and serves them if their content changed and they are usable.
    fn look(&self) -> Result<Looked, TlsError> {
        let cert = read_limited(&self.cert_path)?;
        let key = read_limited(&self.key_path)?;
        let hash = content_hash(&cert, &key);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.0 == Some(hash) {
                return Ok(Looked::Unchanged);
            }
            // Remember it now so a rejected pair is not re-parsed (and re-counted) every tick.
            seen.0 = Some(hash);
        }
        let certified = certified_key(&self.provider, &self.cert_path, &cert, &self.key_path, &key)?;
        let previous = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Arc::new(certified));
        Ok(if previous.is_some() {
            Looked::Replaced
        } else {
            Looked::First
        })
    }

    /// Polls both files every `interval` and swaps in a changed, consistent pair. The task ends
    /// when the resolver is dropped (or the handle is aborted).
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; the files were just read
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

    /// How often a changed pair replaced the one serving. The first certificate, loaded at start
    /// or found later by [`load_or_wait`](Self::load_or_wait)'s reloader, is not counted.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reload attempts that found the files missing, unparsable or mismatched.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertResolver {
    /// `None` before the first certificate is loaded: rustls then fails the handshake with an alert.
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::time::Instant;

    use super::super::certs::tests::{file_der, generate};
    use super::super::certs::{CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, write_atomic};
    use super::*;

    fn served_der(r: &CertResolver) -> Vec<u8> {
        r.current().expect("a certificate is loaded").cert[0].to_vec()
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
    fn load_serves_the_pair_and_an_unchanged_pair_is_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let r = CertResolver::load(dir.path().join(TLS_CERT), dir.path().join(TLS_KEY)).unwrap();
        assert!(r.loaded());
        assert_eq!(served_der(&r), file_der(&dir.path().join(TLS_CERT)));
        assert_eq!((r.reloads(), r.reload_failures()), (0, 0));
        assert!(!r.reload().unwrap(), "unchanged files are not reloaded");
        assert_eq!((r.reloads(), r.reload_failures()), (0, 0));
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
    fn load_or_wait_starts_without_the_files_and_loads_them_when_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join(TLS_CERT), dir.path().join(TLS_KEY));
        let r = CertResolver::load_or_wait(cert.clone(), key.clone()).unwrap();
        assert!(!r.loaded());
        assert!(r.current().is_none());
        // Waiting for the first certificate is not a failure, however long it takes.
        assert!(matches!(r.reload(), Err(TlsError::Missing { .. })));
        assert_eq!((r.reloads(), r.reload_failures()), (0, 0));

        generate(dir.path());
        assert!(r.reload().unwrap());
        assert!(r.loaded());
        assert_eq!(served_der(&r), file_der(&cert));
        assert_eq!(
            (r.reloads(), r.reload_failures()),
            (0, 0),
            "the first certificate is no reload"
        );

        generate(dir.path());
        assert!(r.reload().unwrap());
        assert_eq!((r.reloads(), r.reload_failures()), (1, 0));
        // Once a certificate was served, files disappearing are a failure again.
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(r.reload(), Err(TlsError::Missing { .. })));
        assert_eq!((r.reloads(), r.reload_failures()), (1, 1));
        assert!(r.loaded());
    }

    #[test]
    fn load_or_wait_refuses_files_that_exist_but_are_unusable() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        let (cert, key) = (dir.path().join(TLS_CERT), dir.path().join(TLS_KEY));
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let msg = CertResolver::load_or_wait(cert, key).unwrap_err().to_string();
        assert!(msg.contains("tls.crt") && msg.contains("not PEM"), "{msg}");
    }
}
