//! connect-gate keeps Kafka Connect connectors declared in ConfigMaps under GitOps: an admission
//! webhook that rejects bad connector ConfigMaps, and a reconciler that applies the good ones.
//! Both, and the offline CLI, judge through one verdict pipeline ([`pipeline`]), reached from
//! the sidecar through [`judge::Judge`].
//!
//! Layers, each importing only those before it: `allocator`, `pipeline`, `metrics` → `config`, `connect` (the
//! worker's REST API) → `judge` → `webhook`, `reconcile` → `serve` → `cli`.

pub mod allocator;
pub mod cli;
pub mod config;
pub mod connect;
pub mod judge;
pub mod metrics;
pub mod pipeline;
pub mod reconcile;
pub mod serve;
pub mod webhook;

/// rustls needs one process-wide crypto provider; connect-gate uses ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
