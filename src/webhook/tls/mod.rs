//! HTTPS for the admission webhook: serving-certificate generation (`connect-gate certs`, in
//! `certs`), a certificate resolver that follows rotations of `--tls-cert`/`--tls-key` on disk
//! (`resolver`), and the TLS accept loop that serves an axum router over HTTP/1.1 and HTTP/2
//! (`server`).
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
//! Starting before the certificate exists: cert-manager issues the serving certificate after the
//! pod is created, so [`CertResolver::load_or_wait`] accepts missing files and starts without a
//! certificate. Until the reloader finds the pair, TLS handshakes fail (the resolver has nothing
//! to offer) and [`CertResolver::loaded`] is false, which readiness reports. Files that exist but
//! are unusable are still an error at start.
//!
//! CA reuse: [`generate_certs`] reuses `ca.crt` + `ca.key` when both already exist in the output
//! directory and issues only a new leaf, so clients that trust the CA keep working across leaf
//! rotations. With neither present it creates a new CA and writes `ca.key` (mode 0600) beside
//! `ca.crt`.

mod certs;
mod resolver;
mod server;

pub use self::certs::{CertFiles, TlsError, generate_certs};
pub use self::resolver::CertResolver;
pub use self::server::{serve, server_config};
