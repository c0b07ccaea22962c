//! The one watch on the reconciled namespace's ConfigMaps: it fills the store that the
//! reconciler and the webhook both read, and signals the changes that matter to connect-gate.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event as WatchEvent};
use tokio::sync::Notify;

use crate::pipeline::parse::manifest::{FINALIZER, is_connector_configmap};

/// Whether connect-gate has business with a ConfigMap: it is labelled, or it still carries the
/// finalizer (its label was removed: its connectors must be deleted and the finalizer released).
pub fn ours(cm: &ConfigMap) -> bool {
    is_connector_configmap(cm.metadata.labels.as_ref())
        || cm.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// What the store keeps of a ConfigMap: connect-gate's whole but its managedFields, which it
/// never reads; of any other only its metadata but annotations (labels find a ccloud-operator's
/// ConfigMap; a label added later brings the whole object again). A namespace's application
/// config then costs the store little, whatever its size.
pub fn prune(cm: &mut ConfigMap) {
    cm.metadata.managed_fields = None;
    if !ours(cm) {
        cm.data = None;
        cm.binary_data = None;
        cm.metadata.annotations = None;
    }
}

/// Keeps the store of the namespace's ConfigMaps and signals changes that matter to connect-gate
/// (not its own annotation writes). The watch is not label-selected, so that a ConfigMap whose
/// label is removed stays in view until its finalizer is released. It resumes with backoff.
pub async fn run(api: Api<ConfigMap>, writer: Writer<ConfigMap>, changes: Arc<Notify>) {
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(prune)
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut seen: HashMap<String, u64> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(WatchEvent::Apply(cm) | WatchEvent::InitApply(cm)) if ours(&cm) => {
                let key = cm.metadata.uid.clone().unwrap_or_default();
                let print = fingerprint(&cm);
                if seen.insert(key, print) != Some(print) {
                    changes.notify_one();
                }
            }
            Ok(WatchEvent::Delete(cm)) => {
                seen.remove(&cm.metadata.uid.clone().unwrap_or_default());
                changes.notify_one();
            }
            Ok(WatchEvent::InitDone) => changes.notify_one(),
            Ok(WatchEvent::Init | WatchEvent::Apply(_) | WatchEvent::InitApply(_)) => {}
            Err(e) => tracing::warn!(error = %e, "ConfigMap watch failed; resuming"),
        }
    }
}

/// What a change must touch to trigger a pass: labels, data, deletion, finalizers.
fn fingerprint(cm: &ConfigMap) -> u64 {
    let mut h = DefaultHasher::new();
    cm.metadata.labels.hash(&mut h);
    cm.data.hash(&mut h);
    cm.binary_data
        .as_ref()
        .map(|b| b.keys().collect::<Vec<_>>())
        .hash(&mut h);
    cm.metadata.deletion_timestamp.is_some().hash(&mut h);
    cm.metadata.finalizers.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::manifest::ANNOTATION_STATUS;
    use serde_json::json;

    #[test]
    fn the_store_keeps_connector_configmaps_whole_and_of_others_only_their_metadata() {
        let mut other: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "app", "labels": {"environment_id": "env-1"}, "annotations": {"big": "x"},
                         "managedFields": [{"manager": "kubectl"}]},
            "data": {"app.yaml": "a large document"}, "binaryData": {"blob": "AAAA"},
        }))
        .unwrap();
        prune(&mut other);
        assert_eq!(
            serde_json::to_value(&other).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "labels": {"environment_id": "env-1"}}})
        );
        let mut mine: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "c", "labels": {"destination": "connect"}, "annotations": {"connect-gate.io/status": "{}"},
                         "managedFields": [{"manager": "kubectl"}]},
            "data": {"c.json": "{}"},
        }))
        .unwrap();
        prune(&mut mine);
        assert!(mine.metadata.managed_fields.is_none());
        assert!(mine.data.is_some() && mine.metadata.annotations.is_some());
        // Unlabelled but still holding the finalizer: its records are needed to delete its connectors.
        let mut leaving: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "l", "finalizers": [FINALIZER], "annotations": {"connect-gate.io/connectors": "{}"}},
            "data": {"c.json": "{}"},
        }))
        .unwrap();
        prune(&mut leaving);
        assert!(leaving.metadata.annotations.is_some());
    }

    #[test]
    fn fingerprint_ignores_annotations() {
        let mut cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "a", "labels": {"destination": "connect"}}, "data": {"k": "v"}}),
        )
        .unwrap();
        let before = fingerprint(&cm);
        cm.metadata.annotations = Some([(ANNOTATION_STATUS.to_string(), "{}".to_string())].into());
        assert_eq!(before, fingerprint(&cm));
        cm.data.as_mut().unwrap().insert("k".into(), "w".into());
        assert_ne!(before, fingerprint(&cm));
    }
}
