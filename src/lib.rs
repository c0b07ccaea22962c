//! connect-gate keeps Kafka Connect connectors declared in ConfigMaps under GitOps: an admission
//! webhook that rejects bad connector ConfigMaps, and a reconciler that applies the good ones.
//! Both, and the offline CLI, share one verdict pipeline ([`verdict::Pipeline`]).

pub mod cli;
pub mod connect;
pub mod inputs;
pub mod manifest;
pub mod plugins;
pub mod properties;
pub mod template;
pub mod verdict;

/// rustls needs one process-wide crypto provider; connect-gate uses ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
