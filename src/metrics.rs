//! Prometheus metrics, served on their own plain-HTTP listener (`--metrics-listen`).

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
pub struct StateLabels {
    pub state: String,
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
    pub rest_calls: Family<RestLabels, Counter>,
    pub drift_reverts: Counter,
    pub connectors: Family<StateLabels, Gauge>,
    pub leader: Gauge,
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
            rest_calls: Family::default(),
            drift_reverts: Counter::default(),
            connectors: Family::default(),
            leader: Gauge::default(),
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
        (metrics, registry)
    }
}

/// The text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}
