//! What the webhook and the reconciler share, so they judge with the same inputs.

use std::sync::Arc;

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
}
