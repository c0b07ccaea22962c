//! What the webhook and the reconciler share, so they judge with the same inputs.

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::Store;

use crate::connect::ConnectClient;
use crate::inputs::LiveInputs;
use crate::metrics::Metrics;
use crate::plugin_cache::PluginCache;
use crate::verdict::Pipeline;

pub struct Shared {
    pub pipeline: Pipeline,
    pub inputs: Arc<LiveInputs>,
    pub plugins: Arc<PluginCache>,
    pub connect: ConnectClient,
    pub metrics: Metrics,
    /// The reconciled namespace's ConfigMaps, once the reconciler watches them.
    pub configmaps: OnceLock<NamespaceView>,
}

/// The ConfigMaps of the namespace the reconciler owns, as its watch sees them.
pub struct NamespaceView {
    pub namespace: String,
    pub store: Store<ConfigMap>,
}
