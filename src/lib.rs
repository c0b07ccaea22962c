//! connect-gate keeps Kafka Connect connectors declared in ConfigMaps under GitOps: an admission
//! webhook that rejects bad connector ConfigMaps, and a reconciler that applies the good ones.
//! Both, and the offline CLI, share one verdict pipeline ([`verdict::Pipeline`]).

pub mod admission;
pub mod cli;
pub mod connect;
pub mod inputs;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod plugin_cache;
pub mod plugins;
pub mod properties;
pub mod reconcile;
pub mod serve;
pub mod shared;
pub mod template;
pub mod tls;
pub mod verdict;
pub mod webhook;

/// rustls needs one process-wide crypto provider; connect-gate uses ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
