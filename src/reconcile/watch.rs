//! The watches on the reconciled namespace's ConfigMaps. They fill two stores, and signal the
//! changes that matter to connect-gate. Memory follows the connectors, not the namespace:
//! - connector ConfigMaps (label-selected), whole but their managedFields: what the reconciler
//!   and the webhook read;
//! - of the others, watched by metadata only, just those connect-gate reads: a ConfigMap that
//!   lost its label but still holds the finalizer (its records say which connectors to delete)
//!   and a ccloud-operator's ConfigMap (its labels name a Confluent Cloud cluster). The rest of
//!   the namespace's application config is never held, whatever its size.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event as WatchEvent};
use tokio::sync::Notify;

use crate::pipeline::parse::manifest::{
    CLOUD_CLUSTER_LABEL, CLOUD_ENVIRONMENT_LABEL, DESTINATION_CONNECT, DESTINATION_LABEL, FINALIZER,
    is_connector_configmap,
};

/// Objects per list request: the first list of a large namespace comes in pages, not at once.
const PAGE_SIZE: u32 = 250;

/// Whether connect-gate has business with a ConfigMap: it is labelled, or it still carries the
/// finalizer (its label was removed: its connectors must be deleted and the finalizer released).
pub fn ours(cm: &ConfigMap) -> bool {
    is_connector_configmap(cm.metadata.labels.as_ref()) || holds_finalizer(&cm.metadata)
}

pub fn holds_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// The two stores [`run`] fills.
#[derive(Clone)]
pub struct Stores {
    /// Connector ConfigMaps, whole but their managedFields.
    pub connectors: Store<ConfigMap>,
    /// Unlabelled finalizer holders and ccloud-operator ConfigMaps, by metadata only.
    pub others: Store<ConfigMap>,
}

pub struct Writers {
    connectors: Writer<ConfigMap>,
    others: Writer<ConfigMap>,
}

pub fn stores() -> (Stores, Writers) {
    let (connectors, connectors_writer) = reflector::store();
    let (others, others_writer) = reflector::store();
    (
        Stores { connectors, others },
        Writers {
            connectors: connectors_writer,
            others: others_writer,
        },
    )
}

impl Stores {
    pub async fn wait_until_ready(&self) {
        let _ = self.connectors.wait_until_ready().await;
        let _ = self.others.wait_until_ready().await;
    }

    /// The ConfigMaps connect-gate has business with, by name. While a label is added or removed
    /// one watch may have seen the change before the other: the later resourceVersion wins.
    pub fn ours(&self) -> Vec<Arc<ConfigMap>> {
        let mut by_name: BTreeMap<String, Arc<ConfigMap>> = BTreeMap::new();
        for cm in self.connectors.state().into_iter().chain(self.others.state()) {
            if !ours(&cm) {
                continue;
            }
            let name = cm.metadata.name.clone().unwrap_or_default();
            match by_name.get(&name) {
                Some(seen) if version(seen) >= version(&cm) => {}
                _ => {
                    by_name.insert(name, cm);
                }
            }
        }
        by_name.into_values().collect()
    }
}

/// A resourceVersion to order two views of one object by. The API server's are etcd revisions;
/// one that is not a number orders first.
fn version(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The label selector of connector ConfigMaps.
fn connector_selector() -> String {
    format!("{DESTINATION_LABEL}={DESTINATION_CONNECT}")
}

/// Whether the `others` store keeps a ConfigMap seen by metadata, and what of it (otherwise only
/// what takes it out). Annotations only for a finalizer holder: its records.
fn kept(meta: PartialObjectMeta<ConfigMap>) -> (bool, ConfigMap) {
    let m = meta.metadata;
    let labels = m.labels.as_ref();
    let holder = holds_finalizer(&m);
    let cloud = labels.is_some_and(|l| l.contains_key(CLOUD_ENVIRONMENT_LABEL) || l.contains_key(CLOUD_CLUSTER_LABEL));
    let keep = !is_connector_configmap(labels) && (holder || cloud);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            annotations: if keep && holder { m.annotations } else { None },
            labels: if keep { m.labels } else { None },
            finalizers: if keep { m.finalizers } else { None },
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            deletion_timestamp: m.deletion_timestamp,
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    (keep, cm)
}

/// A metadata event as the `others` store takes it: what it does not keep is dropped, or taken
/// out if it was kept before (a label added, a finalizer released).
fn others_event(event: WatchEvent<PartialObjectMeta<ConfigMap>>) -> Option<WatchEvent<ConfigMap>> {
    Some(match event {
        WatchEvent::Apply(m) => match kept(m) {
            (true, cm) => WatchEvent::Apply(cm),
            (false, cm) => WatchEvent::Delete(cm),
        },
        WatchEvent::InitApply(m) => match kept(m) {
            (true, cm) => WatchEvent::InitApply(cm),
            (false, _) => return None,
        },
        WatchEvent::Delete(m) => WatchEvent::Delete(kept(m).1),
        WatchEvent::Init => WatchEvent::Init,
        WatchEvent::InitDone => WatchEvent::InitDone,
    })
}

/// Keeps both stores and signals changes that matter to connect-gate (not its own annotation
/// writes, not other ConfigMaps). Each watch resumes with backoff.
pub async fn run(client: kube::Client, namespace: String, writers: Writers, changes: Arc<Notify>) {
    let labelled = watcher::watcher(
        Api::<ConfigMap>::namespaced(client.clone(), &namespace),
        watcher::Config::default()
            .labels(&connector_selector())
            .page_size(PAGE_SIZE),
    )
    .default_backoff()
    .modify(|cm| cm.metadata.managed_fields = None)
    .reflect(writers.connectors);
    let metadata = Api::<PartialObjectMeta<ConfigMap>>::namespaced(client, &namespace);
    let unlabelled = watcher::watcher(metadata, watcher::Config::default().page_size(PAGE_SIZE))
        .default_backoff()
        .filter_map(|event| std::future::ready(event.map(others_event).transpose()))
        .reflect(writers.others);
    let stream = futures::stream::select(labelled.map(|e| (true, e)), unlabelled.map(|e| (false, e)));
    futures::pin_mut!(stream);
    // By watch and uid: a ConfigMap whose label changes moves from one watch to the other.
    let mut seen: HashMap<(bool, String), u64> = HashMap::new();
    let key = |labelled: bool, cm: &ConfigMap| (labelled, cm.metadata.uid.clone().unwrap_or_default());
    while let Some((labelled, event)) = stream.next().await {
        let changed = match event {
            Ok(WatchEvent::Apply(cm) | WatchEvent::InitApply(cm)) => {
                let print = fingerprint(&cm);
                seen.insert(key(labelled, &cm), print) != Some(print)
            }
            // The `others` watch takes out what it never kept: no change then.
            Ok(WatchEvent::Delete(cm)) => seen.remove(&key(labelled, &cm)).is_some(),
            Ok(WatchEvent::InitDone) => true,
            Ok(WatchEvent::Init) => false,
            Err(e) => {
                tracing::warn!(error = %e, "ConfigMap watch failed; resuming");
                false
            }
        };
        if changed {
            changes.notify_one();
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

    fn meta(value: serde_json::Value) -> PartialObjectMeta<ConfigMap> {
        serde_json::from_value(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": value}),
        )
        .unwrap()
    }

    #[test]
    fn of_other_configmaps_only_finalizer_holders_and_ccloud_ones_are_kept_by_metadata() {
        let app = meta(
            json!({"name": "app", "uid": "1", "annotations": {"big": "x"}, "managedFields": [{"manager": "kubectl"}]}),
        );
        assert!(others_event(WatchEvent::InitApply(app.clone())).is_none());
        // Seen again (a label added, a finalizer released): taken out if it was kept.
        let Some(WatchEvent::Delete(gone)) = others_event(WatchEvent::Apply(app)) else {
            panic!()
        };
        assert_eq!(gone.metadata.name.as_deref(), Some("app"));

        let cloud = meta(
            json!({"name": "lkc-1", "labels": {"environment_id": "env-1", "resource_id": "lkc-1"},
                                "annotations": {"big": "x"}, "managedFields": [{"manager": "ccloud-operator"}]}),
        );
        let Some(WatchEvent::InitApply(cloud)) = others_event(WatchEvent::InitApply(cloud)) else {
            panic!()
        };
        assert_eq!(
            serde_json::to_value(&cloud).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lkc-1", "labels": {"environment_id": "env-1", "resource_id": "lkc-1"}}})
        );

        // Unlabelled but still holding the finalizer: its records are needed to delete its connectors.
        let leaving =
            meta(json!({"name": "l", "finalizers": [FINALIZER], "annotations": {"connect-gate.io/connectors": "{}"}}));
        let Some(WatchEvent::Apply(leaving)) = others_event(WatchEvent::Apply(leaving)) else {
            panic!()
        };
        assert!(leaving.metadata.annotations.is_some() && ours(&leaving));

        // A labelled one is the connectors watch's, whatever else it holds.
        let labelled = meta(json!({"name": "c", "labels": {"destination": "connect"}, "finalizers": [FINALIZER]}));
        assert!(others_event(WatchEvent::InitApply(labelled)).is_none());
    }

    #[test]
    fn while_a_label_moves_between_the_watches_the_later_version_wins() {
        let (stores, mut writers) = stores();
        let cm = |rv: &str, labelled: bool| -> ConfigMap {
            let labels = if labelled {
                json!({"destination": "connect"})
            } else {
                json!({})
            };
            serde_json::from_value(
                json!({"metadata": {"name": "c", "resourceVersion": rv, "labels": labels, "finalizers": [FINALIZER]}}),
            )
            .unwrap()
        };
        writers
            .connectors
            .apply_watcher_event(&WatchEvent::Apply(cm("7", true)));
        writers.others.apply_watcher_event(&WatchEvent::Apply(cm("9", false)));
        let ours = stores.ours();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].metadata.resource_version.as_deref(), Some("9"));
        writers
            .connectors
            .apply_watcher_event(&WatchEvent::Apply(cm("12", true)));
        assert_eq!(stores.ours()[0].metadata.resource_version.as_deref(), Some("12"));
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
