//! Everything the reconciler writes to Kubernetes: the intent recorded on a ConfigMap before
//! acting (finalizer, connectors about to be created), the report of a pass (annotations or the
//! finalizer's release, computed by `status.rs`) and its Events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Map, Value, json};

use super::status::{ANNOTATIONS, Change, Note, map_annotation};
use crate::pipeline::manifest::{ANNOTATION_CONNECTORS, FINALIZER};

/// Events are capped below the apiserver's 1 kB note limit.
const NOTE_MAX: usize = 1000;

pub struct Writer {
    pub api: Api<ConfigMap>,
    pub client: kube::Client,
    pub reporter: Reporter,
}

impl Writer {
    /// Adds the finalizer and records `managed` (what it manages plus what is about to be
    /// created) before any PUT, so a crash after the PUT never loses a delete.
    pub async fn record_intent(
        &self,
        cm: &ConfigMap,
        add_finalizer: bool,
        managed: Option<&BTreeMap<String, String>>,
    ) -> Result<(), kube::Error> {
        let mut metadata = json!({});
        if let Some(managed) = managed {
            metadata["annotations"] = json!({ ANNOTATION_CONNECTORS: map_annotation(managed) });
        }
        if add_finalizer {
            let mut finalizers = cm.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(FINALIZER.to_string());
            metadata["finalizers"] = json!(finalizers);
            metadata["resourceVersion"] = json!(cm.metadata.resource_version);
        }
        self.patch(cm, json!({ "metadata": metadata })).await.map(drop)
    }

    /// Writes a pass's report on `cm`. A ConfigMap gone meanwhile is not an error.
    pub async fn apply(&self, cm: &ConfigMap, change: Change) -> Result<(), kube::Error> {
        let body = match change {
            Change::None => return Ok(()),
            Change::Annotations(patch) => json!({ "metadata": { "annotations": patch } }),
            Change::Release => {
                let finalizers: Vec<&String> = cm
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != FINALIZER)
                    .collect();
                // Our annotations go too: a released (unlabelled) ConfigMap stays behind.
                let annotations: Map<String, Value> =
                    ANNOTATIONS.iter().map(|k| (k.to_string(), Value::Null)).collect();
                json!({ "metadata": {
                    "finalizers": finalizers,
                    "annotations": annotations,
                    "resourceVersion": cm.metadata.resource_version,
                } })
            }
        };
        match self.patch(cm, body).await {
            Ok(released) => {
                if released {
                    tracing::info!("connectors deleted; finalizer removed");
                }
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A merge patch of `cm`; true when it removed the finalizer.
    async fn patch(&self, cm: &ConfigMap, body: Value) -> Result<bool, kube::Error> {
        let name = cm.metadata.name.as_deref().unwrap_or_default();
        let releases = body["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.iter().any(|f| f == FINALIZER));
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await?;
        Ok(releases)
    }

    pub async fn publish(&self, reference: &ObjectReference, note: Note) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(truncate(&note.text, NOTE_MAX)),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A fresh recorder per Event: the recorder folds same-reason Events into one series
        // that keeps the first note, and these notes name different connectors.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason = note.reason, "cannot publish an Event");
        }
    }
}

fn truncate(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut end = max_bytes.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 4), "...");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
