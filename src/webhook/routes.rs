//! The admission webhook's HTTP side: routes, request parsing, the worker's validator around
//! the shared [`Judge`], and metrics. TLS is `tls::serve`'s business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use tokio_util::sync::CancellationToken;

use super::admission::{self, Decision};
use crate::config::OnPluginsUnavailable;
use crate::judge::{Judge, NamespaceView};
use crate::metrics::{AdmissionLabels, Metrics, ResultLabels};
use crate::pipeline::check::verdict::Verdict;
use crate::pipeline::parse::manifest::ConnectorConfigMap;

/// A ConfigMap is at most 1 MiB; a review carries it twice (object and oldObject) plus metadata.
const BODY_LIMIT: usize = 3 << 20;

pub struct Webhook {
    pub judge: Arc<Judge>,
    pub metrics: Metrics,
    /// The namespace this sidecar reconciles (even under `--no-reconcile`): the only one judged.
    pub namespace: String,
    /// The reconciled namespace's ConfigMaps, when this sidecar reconciles: the names they
    /// declare are checked.
    pub neighbours: Option<NamespaceView>,
    /// The reconciler's username, the only one that may change connect-gate's records on a
    /// ConfigMap (`None`: unknown, so nobody may).
    pub controller: Option<String>,
    pub on_plugins_unavailable: OnPluginsUnavailable,
    /// `--validate-with-worker`: the time budget for the worker's validator.
    pub worker_validation: Option<Duration>,
    /// Whether the serving certificate is loaded.
    pub cert_loaded: Box<dyn Fn() -> bool + Send + Sync>,
    /// Cancelled when the process is asked to stop: not ready any more, still answering.
    pub stopping: CancellationToken,
}

pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(webhook)
}

async fn readyz(State(w): State<Arc<Webhook>>) -> Response {
    let plugins_ok = w.judge.destinations().local_destination().plugins.catalog().is_some()
        || w.on_plugins_unavailable == OnPluginsUnavailable::Warn;
    if w.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match ((w.cert_loaded)(), plugins_ok) {
        (true, true) => "ready".into_response(),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "serving certificate not loaded").into_response(),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "plugin list not fetched yet").into_response(),
    }
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<ConfigMap>, String> {
    let review: AdmissionReview<ConfigMap> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview for a ConfigMap: {e}"))?;
    review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_string())
}

fn operation(req: &AdmissionRequest<ConfigMap>) -> String {
    format!("{:?}", req.operation).to_uppercase()
}

async fn mutate(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    let req = match parse(&body) {
        Ok(req) => req,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(admission::invalid(&e))).into_response(),
    };
    let (patch, verdict) = if admission::outside_scope(&req, &w.namespace).is_some() {
        (None, "out_of_scope")
    } else {
        let patch = admission::finalizer_patch(&req);
        let verdict = if patch.is_some() { "patched" } else { "unchanged" };
        (patch, verdict)
    };
    w.metrics
        .admission_requests
        .get_or_create(&AdmissionLabels {
            webhook: "mutate",
            operation: operation(&req),
            verdict,
        })
        .inc();
    Json(admission::review(&req.uid, &Decision::allow(vec![]), patch.as_ref())).into_response()
}

async fn validate(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    let started = Instant::now();
    let req = match parse(&body) {
        Ok(req) => req,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(admission::invalid(&e))).into_response(),
    };
    // Other namespaces are not connect-gate's business; in its own, its records are guarded
    // before anything is judged.
    let (decision, verdict) = if let Some(decision) = admission::outside_scope(&req, &w.namespace) {
        (decision, "out_of_scope")
    } else if let Some(denial) = admission::guard(&req, w.controller.as_deref()) {
        (Decision::deny(denial, vec![]), "denied")
    } else {
        match admission::to_judge(&req) {
            None => (Decision::allow(vec![]), "skipped"),
            Some(cm) => {
                let span = tracing::info_span!("admission", configmap = %cm.origin, operation = %operation(&req), dry_run = req.dry_run);
                let decision = tracing::Instrument::instrument(w.judge(cm), span).await;
                let verdict = if decision.denial.is_some() { "denied" } else { "allowed" };
                (decision, verdict)
            }
        }
    };
    w.metrics
        .admission_requests
        .get_or_create(&AdmissionLabels {
            webhook: "validate",
            operation: operation(&req),
            verdict,
        })
        .inc();
    w.metrics.admission_duration.observe(started.elapsed().as_secs_f64());
    Json(admission::review(&req.uid, &decision, None)).into_response()
}

impl Webhook {
    async fn judge(&self, cm: ConnectorConfigMap) -> Decision {
        if self.on_plugins_unavailable == OnPluginsUnavailable::Deny
            && let Some(why) = self.judge.plugins_unavailable(&cm)
        {
            return Decision::deny(format!("{why} and --on-plugins-unavailable=deny"), vec![]);
        }
        let verdicts = self.judge.judge_admitted(cm, self.neighbours.as_ref()).await;
        let mut decision = admission::decide(&verdicts);
        if let (None, Some(budget)) = (&decision.denial, self.worker_validation) {
            self.validate_with_worker(&verdicts, budget, &mut decision).await;
        }
        decision
    }

    /// Asks the validator of each accepted connector's destination about it, within `budget`:
    /// over budget or unreachable, the request is allowed with a warning.
    async fn validate_with_worker(&self, verdicts: &[Verdict], budget: Duration, decision: &mut Decision) {
        let checks = verdicts.iter().filter_map(|v| {
            let connector = v.connector.as_ref()?;
            let destination = self.judge.destinations().resolve(&v.destination).ok()?;
            Some(async move {
                (
                    v,
                    destination.client.validate(&connector.config, &connector.secrets).await,
                )
            })
        });
        let Ok(results) = tokio::time::timeout(budget, futures::future::join_all(checks)).await else {
            self.metrics
                .worker_validations
                .get_or_create(&ResultLabels { result: "timeout" })
                .inc();
            decision.warnings.push(format!(
                "the worker's config validator did not answer within {budget:?}; not validated"
            ));
            return;
        };
        let mut messages = Vec::new();
        for (v, result) in results {
            match result {
                Ok(issues) => messages.extend(issues.iter().map(|issue| {
                    format!(
                        "{}: the worker rejects config key `{}`: {}",
                        v.location(),
                        issue.key,
                        issue.errors.join("; ")
                    )
                })),
                Err(e) => decision
                    .warnings
                    .push(format!("{}: not validated by the worker: {e}", v.location())),
            }
        }
        let result = if messages.is_empty() { "valid" } else { "invalid" };
        self.metrics
            .worker_validations
            .get_or_create(&ResultLabels { result })
            .inc();
        if !messages.is_empty() {
            decision.denial = Some(format!(
                "the worker's config validator rejected:\n- {}",
                messages.join("\n- ")
            ));
        }
    }
}
