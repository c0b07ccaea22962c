//! Prometheus metrics, served on their own plain-HTTP listener (`--metrics-listen`).

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub operation: String,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestLabels {
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// One connector. Its name is never from a secret (admission refuses names that depend on
/// template inputs).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub destination: String,
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ConnectorStateLabels {
    pub destination: String,
    pub connector: String,
    pub state: String,
}

/// The per-connector series of one pass: one state series per managed connector, one task
/// series per state its tasks are in, one offsets series while an operation is under way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorSeries {
    pub states: BTreeSet<ConnectorStateLabels>,
    pub tasks: BTreeMap<ConnectorStateLabels, i64>,
    pub offsets: BTreeSet<ConnectorLabels>,
}

/// Every metric connect-gate exports. Cheap to clone (the families share their cells).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Histogram,
    pub plugin_refreshes: Counter,
    pub plugin_refresh_failures: Counter,
    pub worker_validations: Family<ResultLabels, Counter>,
    pub cert_reloads: Counter,
    pub cert_reload_failures: Counter,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub renders: Counter,
    pub rest_calls: Family<RestLabels, Counter>,
    pub drift_reverts: Counter,
    pub connectors: Family<StateLabels, Gauge>,
    pub leader: Gauge,
    pub operations: Family<OperationLabels, Counter>,
    pub connector_state: Family<ConnectorStateLabels, Gauge>,
    pub connector_tasks: Family<ConnectorStateLabels, Gauge>,
    pub offsets_in_progress: Family<ConnectorLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> (Self, Registry) {
        let metrics = Self {
            admission_requests: Family::default(),
            admission_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            plugin_refreshes: Counter::default(),
            plugin_refresh_failures: Counter::default(),
            worker_validations: Family::default(),
            cert_reloads: Counter::default(),
            cert_reload_failures: Counter::default(),
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            renders: Counter::default(),
            rest_calls: Family::default(),
            drift_reverts: Counter::default(),
            connectors: Family::default(),
            leader: Gauge::default(),
            operations: Family::default(),
            connector_state: Family::default(),
            connector_tasks: Family::default(),
            offsets_in_progress: Family::default(),
        };
        let mut registry = Registry::with_prefix("connect_gate");
        let r = &mut registry;
        r.register(
            "admission_requests",
            "Admission requests by webhook, operation and verdict",
            metrics.admission_requests.clone(),
        );
        r.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            metrics.admission_duration.clone(),
        );
        r.register(
            "plugin_refreshes",
            "Fetches of the worker's plugin list",
            metrics.plugin_refreshes.clone(),
        );
        r.register(
            "plugin_refresh_failures",
            "Failed fetches of the worker's plugin list",
            metrics.plugin_refresh_failures.clone(),
        );
        r.register(
            "worker_validations",
            "Config validations sent to the worker, by result",
            metrics.worker_validations.clone(),
        );
        r.register(
            "cert_reloads",
            "Serving certificate reloads",
            metrics.cert_reloads.clone(),
        );
        r.register(
            "cert_reload_failures",
            "Serving certificate reloads that found the files missing, unparsable or mismatched",
            metrics.cert_reload_failures.clone(),
        );
        r.register("reconciles", "Reconcile passes by result", metrics.reconciles.clone());
        r.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass",
            metrics.reconcile_duration.clone(),
        );
        r.register(
            "renders",
            "Data keys rendered and checked, by the webhook and the reconciler together (not answered from the verdict cache)",
            metrics.renders.clone(),
        );
        r.register(
            "rest_calls",
            "Kafka Connect REST calls by method and status",
            metrics.rest_calls.clone(),
        );
        r.register(
            "drift_reverts",
            "Connectors changed or deleted behind connect-gate's back and reverted",
            metrics.drift_reverts.clone(),
        );
        r.register("connectors", "Managed connectors by state", metrics.connectors.clone());
        r.register(
            "leader",
            "1 while this replica holds the reconciler Lease",
            metrics.leader.clone(),
        );
        r.register(
            "operations",
            "Restarts (declared, or by --auto-restart) and offsets operations, by operation and result",
            metrics.operations.clone(),
        );
        r.register(
            "connector_state",
            "1 for each managed connector, labelled with its state (leader only)",
            metrics.connector_state.clone(),
        );
        r.register(
            "connector_tasks",
            "Tasks of each managed connector per state (leader only)",
            metrics.connector_tasks.clone(),
        );
        r.register(
            "offsets_in_progress",
            "1 while a declared offsets operation on the connector is under way (leader only)",
            metrics.offsets_in_progress.clone(),
        );
        (metrics, registry)
    }

    /// Replaces the per-connector series `before` with `now`: those `now` lacks are removed,
    /// so a deleted connector or a state left leaves no stale series.
    pub fn report_connectors(&self, before: &ConnectorSeries, now: &ConnectorSeries) {
        for gone in before.states.difference(&now.states) {
            self.connector_state.remove(gone);
        }
        for gone in before.tasks.keys().filter(|k| !now.tasks.contains_key(*k)) {
            self.connector_tasks.remove(gone);
        }
        for gone in before.offsets.difference(&now.offsets) {
            self.offsets_in_progress.remove(gone);
        }
        for labels in &now.states {
            self.connector_state.get_or_create(labels).set(1);
        }
        for (labels, n) in &now.tasks {
            self.connector_tasks.get_or_create(labels).set(*n);
        }
        for labels in &now.offsets {
            self.offsets_in_progress.get_or_create(labels).set(1);
        }
    }
}

/// The text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(connector: &str, state: &str) -> ConnectorStateLabels {
        ConnectorStateLabels {
            destination: "local".into(),
            connector: connector.into(),
            state: state.into(),
        }
    }

    #[test]
    fn per_connector_series_follow_the_connectors_and_leave_nothing_stale() {
        let (metrics, registry) = Metrics::new();
        let first = ConnectorSeries {
            states: [state("a", "running"), state("b", "failed")].into(),
            tasks: [(state("a", "running"), 2), (state("b", "failed"), 1)].into(),
            offsets: [ConnectorLabels {
                destination: "local".into(),
                connector: "a".into(),
            }]
            .into(),
        };
        metrics.report_connectors(&ConnectorSeries::default(), &first);
        let text = encode(&registry);
        assert!(
            text.contains(r#"connect_gate_connector_state{destination="local",connector="b",state="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"connect_gate_connector_tasks{destination="local",connector="a",state="running"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"connect_gate_offsets_in_progress{destination="local",connector="a"} 1"#),
            "{text}"
        );
        // b is deleted, a's operation is done and a is paused.
        let second = ConnectorSeries {
            states: [state("a", "paused")].into(),
            ..ConnectorSeries::default()
        };
        metrics.report_connectors(&first, &second);
        let text = encode(&registry);
        assert!(
            text.contains(r#"connect_gate_connector_state{destination="local",connector="a",state="paused"} 1"#),
            "{text}"
        );
        for stale in [
            r#"connector="b""#,
            r#"state="running""#,
            "connect_gate_offsets_in_progress{",
        ] {
            assert!(!text.contains(stale), "{stale} in {text}");
        }
    }
}
