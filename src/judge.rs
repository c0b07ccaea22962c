//! The one way the sidecar judges connector ConfigMaps, for the webhook and the reconciler
//! alike: the current template inputs, the cached plugin list (refetched after a class it does
//! not know, at most every [`MISS_REFRESH_MIN_AGE`]) and the verdict pipeline. Both halves
//! judging through the same [`Judge`] is what keeps admission and reconciliation in agreement.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::Store;

use crate::connect::registry::Destinations;
use crate::pipeline::inputs::LiveInputs;
use crate::pipeline::manifest::{ConnectorConfigMap, declaring};
use crate::pipeline::verdict::{Pipeline, Verdict};

/// A plugin list younger than this is not refetched after a miss, so a flood of requests naming
/// an unknown class cannot hammer the worker, and a plugin installed a moment ago is still found.
pub const MISS_REFRESH_MIN_AGE: Duration = Duration::from_secs(5);

pub struct Judge {
    pipeline: Pipeline,
    inputs: Arc<LiveInputs>,
    destinations: Arc<Destinations>,
}

impl Judge {
    pub fn new(pipeline: Pipeline, inputs: Arc<LiveInputs>, destinations: Arc<Destinations>) -> Self {
        Self {
            pipeline,
            inputs,
            destinations,
        }
    }

    pub fn destinations(&self) -> &Arc<Destinations> {
        &self.destinations
    }

    /// Re-reads the template inputs (Secret volumes rotate). On a read error the last good
    /// inputs stay in use.
    pub fn reload_inputs(&self) {
        match self.inputs.reload() {
            Ok(true) => tracing::info!("template inputs changed on disk"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot re-read template inputs; keeping the last good ones"),
        }
    }

    /// Why there is no plugin list to check `cm`'s classes against, when there is none (its
    /// destination's).
    pub fn plugins_unavailable(&self, cm: &ConnectorConfigMap) -> Option<String> {
        let destination = self.destinations.resolve(&cm.destination).ok()?;
        if destination.plugins.catalog().is_some() {
            return None;
        }
        let error = destination.plugins.last_error();
        Some(format!(
            "the plugin list of destination {} is unavailable ({})",
            destination.id,
            error.as_deref().unwrap_or("not fetched yet")
        ))
    }

    /// Judges `cms` together (so a connector name declared twice is caught), each against its
    /// destination's plugin list. Without a cached list the plugin check is skipped with a
    /// warning.
    pub async fn judge(&self, cms: &[ConnectorConfigMap]) -> Vec<Verdict> {
        let inputs = self.inputs.current();
        let mut prepared = self.destinations.prepare(cms);
        let verdicts = self.pipeline.judge_each(cms, &inputs, &prepared.checks()).await;
        if verdicts.iter().any(|v| v.unknown_class)
            && prepared.refresh_after_miss(cms, &verdicts, MISS_REFRESH_MIN_AGE).await
        {
            return self.pipeline.judge_each(cms, &inputs, &prepared.checks()).await;
        }
        verdicts
    }
}

/// The ConfigMaps of the namespace the reconciler owns, as one watch sees them; the webhook
/// reads the same store to judge an incoming ConfigMap among its neighbours.
#[derive(Clone)]
pub struct NamespaceView {
    pub namespace: String,
    pub store: Store<ConfigMap>,
}

impl NamespaceView {
    /// `cm` first, then the other connector ConfigMaps of the namespace when `cm` is in it (its
    /// own stored version left out): what the reconciler would judge together.
    pub fn with_neighbours(&self, cm: ConnectorConfigMap) -> Vec<ConnectorConfigMap> {
        if cm.origin.namespace.as_deref() != Some(self.namespace.as_str()) {
            return vec![cm];
        }
        let objects = self.store.state();
        let mut cms = declaring(objects.iter().map(|o| o.as_ref()), &self.namespace);
        cms.retain(|other| other.origin.name != cm.origin.name);
        cms.insert(0, cm);
        cms
    }
}
