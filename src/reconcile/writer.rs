//! Everything the reconciler writes to Kubernetes: the ledger (read and written on its Lease),
//! the intent recorded on a ConfigMap before acting (finalizer, connectors about to be created),
//! the report of a pass (annotations or the finalizer's release, computed by `status.rs`) and its
//! Events.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Map, Value, json};

use super::ReconcileError;
use super::lease::Leadership;
use super::ledger::{ANNOTATION_LEDGER, ANNOTATION_LEDGER_DESTINATIONS, Ledgers};
use super::status::{ANNOTATIONS, Change, NOTE_MAX, Note, bound};
use crate::pipeline::parse::manifest::FINALIZER;

pub struct Writer {
    pub api: Api<ConfigMap>,
    pub client: kube::Client,
    pub reporter: Reporter,
    /// The Lease holding the ledger, in the reconciled namespace.
    pub ledger: Api<Lease>,
    pub ledger_name: String,
    /// Checked before every write: a deposed leader writes nothing.
    pub leadership: Leadership,
}

/// The ledger as read, with the Lease it came from, so that a write is refused (409) when anyone
/// else wrote it since (a replica that lost the election while still finishing a pass).
pub struct StoredLedger {
    pub ledger: Ledgers,
    lease: Option<Lease>,
}

impl Writer {
    pub async fn read_ledger(&self) -> Result<StoredLedger, ReconcileError> {
        let lease = self
            .ledger
            .get_opt(&self.ledger_name)
            .await
            .map_err(|source| ReconcileError::LedgerApi {
                name: self.ledger_name.clone(),
                source,
            })?;
        let annotations = lease.as_ref().and_then(|l| l.metadata.annotations.as_ref());
        let annotation = |key| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let ledger = Ledgers::decode(
            annotation(ANNOTATION_LEDGER),
            annotation(ANNOTATION_LEDGER_DESTINATIONS),
        )
        .map_err(|source| ReconcileError::LedgerUnreadable {
            name: self.ledger_name.clone(),
            source,
        })?;
        Ok(StoredLedger { ledger, lease })
    }

    /// Writes `ledger` unless it is what `stored` holds already; the first write creates the Lease.
    pub async fn write_ledger(&self, stored: &mut StoredLedger, ledger: Ledgers) -> Result<(), ReconcileError> {
        if stored.ledger == ledger {
            return Ok(());
        }
        self.leadership.check()?;
        let mut lease = stored.lease.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.ledger_name.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let (local, others) = ledger.encode();
        let annotations = lease.metadata.annotations.get_or_insert_default();
        annotations.insert(ANNOTATION_LEDGER.into(), local);
        match others {
            Some(others) => annotations.insert(ANNOTATION_LEDGER_DESTINATIONS.into(), others),
            None => annotations.remove(ANNOTATION_LEDGER_DESTINATIONS),
        };
        let params = PostParams::default();
        // replace() sends the resourceVersion read: a concurrent writer makes this a 409.
        let written = match &stored.lease {
            Some(_) => self.ledger.replace(&self.ledger_name, &params, &lease).await,
            None => self.ledger.create(&params, &lease).await,
        }
        .map_err(|source| ReconcileError::LedgerApi {
            name: self.ledger_name.clone(),
            source,
        })?;
        *stored = StoredLedger {
            ledger,
            lease: Some(written),
        };
        Ok(())
    }

    /// Adds the finalizer and writes `annotations` (what it manages plus what is about to be
    /// created; offsets operations about to start) before any PUT, so a crash after the PUT
    /// never loses a delete or repeats an operation.
    pub async fn record_intent(
        &self,
        cm: &ConfigMap,
        add_finalizer: bool,
        annotations: &BTreeMap<&str, Value>,
    ) -> Result<(), ReconcileError> {
        let mut metadata = json!({});
        if !annotations.is_empty() {
            metadata["annotations"] = json!(annotations);
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
    pub async fn apply(&self, cm: &ConfigMap, change: Change) -> Result<(), ReconcileError> {
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
            Err(ReconcileError::ConfigMap {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A merge patch of `cm`; true when it removed the finalizer.
    async fn patch(&self, cm: &ConfigMap, body: Value) -> Result<bool, ReconcileError> {
        let name = cm.metadata.name.as_deref().unwrap_or_default();
        let releases = body["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.iter().any(|f| f == FINALIZER));
        self.leadership.check()?;
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(|source| ReconcileError::ConfigMap {
                name: name.to_string(),
                source,
            })?;
        Ok(releases)
    }

    pub async fn publish(&self, reference: &ObjectReference, note: Note) {
        if self.leadership.check().is_err() {
            tracing::debug!(reason = note.reason, "not leading any more: Event not published");
            return;
        }
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(bound(&note.text, NOTE_MAX)),
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
