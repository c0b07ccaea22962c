//! The reconciler: applies accepted connectors to Kafka Connect and reports on the ConfigMaps.
//!
//! A reflector keeps the labelled ConfigMaps of the namespace in memory. Any change to them
//! (debounced) or the `--resync` tick triggers one full, level-based pass: re-read the template
//! inputs (rotated Secret files), judge every ConfigMap together through the shared verdict
//! pipeline, read the worker's state in one bulk call, plan ([`crate::plan`], pure), record on
//! each ConfigMap what is about to be created (so no delete is ever missed), act, then write
//! Events and status annotations. Only the holder of the Lease ([`crate::lease`]) runs passes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event as WatchEvent};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::FINALIZER;
use crate::cli::parse_duration;
use crate::connect::{ConnectError, RestResponse, connector_path};
use crate::lease::{self, LeaseConfig};
use crate::manifest::{ConnectorConfigMap, declaring, is_connector_configmap};
use crate::metrics::{RestLabels, ResultLabels, StateLabels};
use crate::plan::{self, Action, Cause, CmInput, CmPlan, Decl, Declared, Live, LiveState, PlanMemory, PlanOptions};
use crate::shared::{NamespaceView, Shared};
use crate::verdict::{Desired, PluginCheck, Verdict};

/// Connectors applied from a ConfigMap: JSON `{connector: data key}`.
pub const ANNOTATION_CONNECTORS: &str = "connect-gate.io/connectors";
/// Per connector: the hash of the config last applied, never the config.
pub const ANNOTATION_APPLIED: &str = "connect-gate.io/applied";
/// Per connector: state, task states, shortened FAILED trace, restarts.
pub const ANNOTATION_STATUS: &str = "connect-gate.io/status";
/// Why something declared here is not (yet) as declared; absent when all is well.
pub const ANNOTATION_LAST_ERROR: &str = "connect-gate.io/last-error";

const DEBOUNCE: Duration = Duration::from_millis(700);
/// After a pass that changed something, look again soon to report the new status.
const SETTLE: Duration = Duration::from_secs(2);
const MAX_SETTLE_PASSES: u32 = 15;
/// Retries of one REST call answered 409 (rebalance) or 5xx.
const CALL_RETRIES: u32 = 5;
const TRACE_MAX: usize = 240;

#[derive(Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// Period of the full pass that re-applies drifted connectors and re-reads secrets.
    #[arg(long, env = "CONNECT_GATE_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Also delete connectors that no ConfigMap declares and connect-gate never created.
    #[arg(long, env = "CONNECT_GATE_PRUNE_UNMANAGED")]
    pub prune_unmanaged: bool,
    /// Restart FAILED connectors and tasks, with capped exponential backoff.
    #[arg(long, env = "CONNECT_GATE_AUTO_RESTART")]
    pub auto_restart: bool,
    /// The coordination.k8s.io Lease (in --namespace) whose holder reconciles.
    #[arg(long, env = "CONNECT_GATE_LEASE_NAME", default_value = "connect-gate")]
    pub lease_name: String,
    /// How long a Lease holder that stopped renewing keeps it before another replica takes over.
    #[arg(long, env = "CONNECT_GATE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Worker(#[from] ConnectError),
    #[error("Kafka Connect answered {status} to {what}: {message}")]
    WorkerStatus { what: String, status: u16, message: String },
    #[error("unexpected answer from Kafka Connect to {what}: {source}")]
    Decode { what: String, source: serde_json::Error },
    #[error("{failed} action(s) failed; retrying")]
    Incomplete { failed: usize },
}

/// A pseudo-random number without a random crate (jitter, identities).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

fn jitter() -> f64 {
    (random_u64() % 10_000) as f64 / 10_000.0
}

pub async fn run(
    shared: Arc<Shared>,
    client: kube::Client,
    namespace: String,
    args: ReconcileArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let (store, writer) = reflector::store();
    // Admission checks connector names against the same ConfigMaps this pass judges.
    let _ = shared.configmaps.set(NamespaceView {
        namespace: namespace.clone(),
        store: store.clone(),
    });
    let notify = Arc::new(Notify::new());
    let watch_task = tokio::spawn(watch_configmaps(api.clone(), writer, notify.clone()));
    let identity = lease::default_identity();
    let lease_config = LeaseConfig {
        namespace: namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: args.lease_duration,
    };
    let lease_stop = CancellationToken::new();
    let (mut leading, lease_task) = lease::spawn(client.clone(), lease_config, lease_stop.clone());
    let reporter = Reporter {
        controller: "connect-gate".into(),
        instance: Some(identity.clone()),
    };
    tracing::info!(%namespace, %identity, lease = %args.lease_name, "reconciler started; waiting for the Lease");
    let mut reconciler = Reconciler {
        shared: shared.clone(),
        api,
        store,
        client,
        reporter,
        args,
        namespace,
        memory: Memory::default(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        shared.metrics.leader.set(1);
        tracing::info!("leading: reconciling");
        tokio::select! {
            _ = reconciler.lead(&notify) => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("lost the Lease: stopped reconciling"),
            _ = shutdown.cancelled() => {}
        }
        shared.metrics.leader.set(0);
        reconciler.memory = Memory::default();
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Stop acting first, then let a successor take over at once.
    lease_stop.cancel();
    let _ = lease_task.await;
    watch_task.abort();
    Ok(())
}

/// Whether connect-gate has business with a ConfigMap: it is labelled, or it still carries the
/// finalizer (its label was removed: its connectors must be deleted and the finalizer released).
fn ours(cm: &ConfigMap) -> bool {
    is_connector_configmap(cm.metadata.labels.as_ref())
        || cm.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// Keeps the store of the namespace's ConfigMaps and signals changes that matter to connect-gate
/// (not its own annotation writes). The watch is not label-selected, so that a ConfigMap whose
/// label is removed stays in view until its finalizer is released. It resumes with backoff.
async fn watch_configmaps(api: Api<ConfigMap>, writer: reflector::store::Writer<ConfigMap>, notify: Arc<Notify>) {
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut seen: HashMap<String, u64> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(WatchEvent::Apply(cm) | WatchEvent::InitApply(cm)) if ours(&cm) => {
                let key = cm.metadata.uid.clone().unwrap_or_default();
                let print = fingerprint(&cm);
                if seen.insert(key, print) != Some(print) {
                    notify.notify_one();
                }
            }
            Ok(WatchEvent::Delete(cm)) => {
                seen.remove(&cm.metadata.uid.clone().unwrap_or_default());
                notify.notify_one();
            }
            Ok(WatchEvent::InitDone) => notify.notify_one(),
            Ok(WatchEvent::Init | WatchEvent::Apply(_) | WatchEvent::InitApply(_)) => {}
            Err(e) => tracing::warn!(error = %e, "ConfigMap watch failed; resuming"),
        }
    }
}

/// What a change must touch to trigger a pass: labels, data, deletion, finalizers.
fn fingerprint(cm: &ConfigMap) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
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

#[derive(Default)]
struct Memory {
    /// Configs the worker answered 400 to: name -> (hash, message).
    worker_rejected: BTreeMap<String, (String, String)>,
    restarts: BTreeMap<String, Restarts>,
    reported_states: BTreeSet<String>,
    unsettled: u32,
}

struct Restarts {
    total: u32,
    streak: u32,
    next: Instant,
}

struct Reconciler {
    shared: Arc<Shared>,
    api: Api<ConfigMap>,
    store: Store<ConfigMap>,
    client: kube::Client,
    reporter: Reporter,
    args: ReconcileArgs,
    namespace: String,
    memory: Memory,
}

/// One ConfigMap during a pass.
struct CmState {
    object: Arc<ConfigMap>,
    input: CmInput,
    annotations: BTreeMap<String, String>,
    verdicts: Vec<Verdict>,
    /// Error lines for last-error.
    errors: Vec<String>,
    events: Vec<(EventType, &'static str, String)>,
    applied: BTreeMap<String, String>,
    failed_deletes: BTreeSet<String>,
    /// Connectors written this pass (their status is not known yet).
    written: BTreeSet<String>,
    /// Puts/state changes must not run: recording intent failed.
    blocked: bool,
}

struct Outcome {
    settled: bool,
}

impl Reconciler {
    /// Runs passes while leading: on changes (debounced), on the resync tick, and sooner
    /// after failures (capped exponential backoff with jitter).
    async fn lead(&mut self, notify: &Notify) {
        let _ = self.store.wait_until_ready().await;
        let mut next = Instant::now();
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
                _ = tokio::time::sleep_until(next) => {}
            }
            let span = tracing::info_span!("reconcile", namespace = %self.namespace);
            let result = tracing::Instrument::instrument(self.pass(), span).await;
            let delay = match result {
                Ok(outcome) => {
                    failures = 0;
                    self.count("ok");
                    if outcome.settled || self.memory.unsettled >= MAX_SETTLE_PASSES {
                        self.memory.unsettled = 0;
                        self.args.resync
                    } else {
                        self.memory.unsettled += 1;
                        SETTLE.min(self.args.resync)
                    }
                }
                Err(e) => {
                    self.count("error");
                    let delay = plan::backoff(failures, Duration::from_secs(1), Duration::from_secs(30), jitter())
                        .min(self.args.resync.max(Duration::from_secs(1)));
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, retry_in = ?delay, "reconcile pass incomplete");
                    delay
                }
            };
            next = Instant::now() + delay;
        }
    }

    fn count(&self, result: &'static str) {
        self.shared
            .metrics
            .reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    async fn pass(&mut self) -> Result<Outcome, ReconcileError> {
        match self.shared.inputs.reload() {
            Ok(true) => tracing::info!("template inputs changed on disk"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot re-read template inputs; keeping the last good ones"),
        }
        let inputs = self.shared.inputs.current();
        let mut objects: Vec<_> = self.store.state().into_iter().filter(|cm| ours(cm)).collect();
        objects.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let judged = declaring(objects.iter().map(|o| o.as_ref()), &self.namespace);
        let verdicts = self.judge(&judged, &inputs).await;
        let mut by_cm: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
        for v in verdicts {
            by_cm.entry(v.origin.name.clone()).or_default().push(v);
        }

        let mut cms: Vec<CmState> = objects
            .into_iter()
            .map(|object| {
                let name = object.metadata.name.clone().unwrap_or_default();
                let verdicts = if object.metadata.deletion_timestamp.is_some() {
                    vec![]
                } else {
                    by_cm.remove(&name).unwrap_or_default()
                };
                let annotations = object.metadata.annotations.clone().unwrap_or_default();
                let input = CmInput {
                    name,
                    // An unlabelled ConfigMap still holding the finalizer declares nothing any more.
                    deleting: object.metadata.deletion_timestamp.is_some()
                        || !is_connector_configmap(object.metadata.labels.as_ref()),
                    has_finalizer: object.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER),
                    keys: verdicts.iter().map(declared).collect(),
                    managed: json_annotation(&annotations, ANNOTATION_CONNECTORS),
                    applied: json_annotation(&annotations, ANNOTATION_APPLIED),
                };
                CmState {
                    applied: input.applied.clone(),
                    object,
                    input,
                    annotations,
                    verdicts,
                    errors: vec![],
                    events: vec![],
                    failed_deletes: BTreeSet::new(),
                    written: BTreeSet::new(),
                    blocked: false,
                }
            })
            .collect();

        // Secret values per connector, to mask whatever the worker says about it.
        let secrets: BTreeMap<String, Vec<String>> = cms
            .iter()
            .flat_map(|cm| cm.input.keys.iter())
            .filter_map(|d| match &d.decl {
                Decl::Apply(c) => Some((
                    c.name.clone(),
                    c.secret_keys.iter().filter_map(|k| c.config.get(k).cloned()).collect(),
                )),
                _ => None,
            })
            .collect();

        let interest: BTreeSet<String> = cms
            .iter()
            .flat_map(|cm| {
                let declared = cm.input.keys.iter().filter_map(|d| match &d.decl {
                    Decl::Apply(c) => Some(c.name.clone()),
                    Decl::Absent(name) => name.clone(),
                    Decl::Rejected(_) => None,
                });
                declared.chain(cm.input.managed.keys().cloned()).collect::<Vec<_>>()
            })
            .collect();
        let live = self.read_live(&interest).await?;

        let now = Instant::now();
        let memory = PlanMemory {
            worker_rejected: self
                .memory
                .worker_rejected
                .iter()
                .map(|(n, (h, _))| (n.clone(), h.clone()))
                .collect(),
            restart_ready: live
                .keys()
                .filter(|n| self.memory.restarts.get(*n).is_none_or(|r| r.next <= now))
                .cloned()
                .collect(),
        };
        let inputs_for_plan: Vec<CmInput> = cms.iter().map(|c| c.input.clone()).collect();
        let options = PlanOptions {
            prune_unmanaged: self.args.prune_unmanaged,
            auto_restart: self.args.auto_restart,
        };
        let plan = plan::plan(&inputs_for_plan, &live, &memory, options);
        let plans: BTreeMap<String, CmPlan> = plan.cms.iter().map(|p| (p.name.clone(), p.clone())).collect();

        // Record intent (finalizer, connectors about to be created) before acting.
        for cm in cms.iter_mut() {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            if let Err(e) = self.record_intent(cm, p).await {
                tracing::warn!(configmap = %cm.input.name, error = %e, "cannot record intent on the ConfigMap; not applying its connectors this pass");
                cm.errors.push(format!("cannot update the ConfigMap: {e}"));
                cm.blocked = true;
            }
        }

        let mut failed = 0usize;
        let mut acted = 0usize;
        let index: BTreeMap<String, usize> = cms.iter().enumerate().map(|(i, c)| (c.input.name.clone(), i)).collect();
        for action in &plan.actions {
            let cm_index = action.cm().and_then(|c| index.get(c)).copied();
            if cm_index.is_some_and(|i| cms[i].blocked) && !matches!(action, Action::Delete { .. }) {
                continue;
            }
            let span =
                tracing::info_span!("action", connector = %action.name(), configmap = action.cm().unwrap_or("-"));
            let mask: Vec<&str> = secrets
                .get(action.name())
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            acted += 1;
            let result = tracing::Instrument::instrument(self.execute(action, &mask), span).await;
            let cm = cm_index.map(|i| &mut cms[i]);
            match (result, cm) {
                (Ok(done), cm) => {
                    if let Action::Put { name, cause, .. } = action {
                        self.memory.worker_rejected.remove(name);
                        if cause.is_drift() {
                            self.shared.metrics.drift_reverts.inc();
                        }
                    }
                    if let Some(cm) = cm {
                        done.apply_to(cm, action);
                    }
                }
                (Err(ActionError::Fatal(e)), _) => return Err(e),
                (Err(ActionError::Rejected(message)), cm) => {
                    if let Action::Put { name, hash, .. } = action {
                        self.memory
                            .worker_rejected
                            .insert(name.clone(), (hash.clone(), message.clone()));
                    }
                    if let Some(cm) = cm {
                        cm.events.push((
                            EventType::Warning,
                            "Failed",
                            format!("connector {}: {message}", action.name()),
                        ));
                    }
                }
                (Err(ActionError::Failed(message)), cm) => {
                    failed += 1;
                    tracing::warn!(connector = %action.name(), error = %message, "action failed");
                    if let Some(cm) = cm {
                        if let Action::Delete { name, .. } = action {
                            cm.failed_deletes.insert(name.clone());
                        }
                        cm.errors.push(format!("connector {}: {message}", action.name()));
                        cm.events.push((
                            EventType::Warning,
                            "Failed",
                            format!("connector {}: {message}", action.name()),
                        ));
                    }
                }
            }
        }

        // Restart bookkeeping: healthy connectors start a new streak.
        for (name, l) in &live {
            if let (Some(r), Some(status)) = (self.memory.restarts.get_mut(name), &l.status)
                && !status.failed()
            {
                r.streak = 0;
            }
        }

        let mut missing_status = false;
        for cm in cms.iter_mut() {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            missing_status |= p.desired.keys().any(|n| live.get(n).is_none_or(|l| l.status.is_none()));
            if let Err(e) = self.report(cm, p, &live, &secrets).await {
                tracing::warn!(configmap = %cm.input.name, error = %e, "cannot write status to the ConfigMap");
                failed += 1;
            }
        }
        self.report_metrics(&cms, &plans, &live);
        if failed > 0 {
            return Err(ReconcileError::Incomplete { failed });
        }
        Ok(Outcome {
            settled: acted == 0 && !missing_status,
        })
    }

    async fn judge(&self, cms: &[ConnectorConfigMap], inputs: &crate::inputs::TemplateInputs) -> Vec<Verdict> {
        let plugins = &self.shared.plugins;
        let catalog = match plugins.catalog() {
            Some(c) => Some(c),
            None => plugins.refresh().await,
        };
        let why = plugins
            .last_error()
            .unwrap_or_else(|| "the worker's plugin list is not available".into());
        let check = match &catalog {
            Some(c) => PluginCheck::Catalog(c),
            None => PluginCheck::Unavailable(&why),
        };
        let verdicts = self.shared.pipeline.judge(cms, inputs, check).await;
        if catalog.is_some()
            && verdicts.iter().any(|v| v.unknown_class)
            && let Some(fresh) = plugins.refresh_after_miss(Duration::from_secs(60)).await
        {
            return self
                .shared
                .pipeline
                .judge(cms, inputs, PluginCheck::Catalog(&fresh))
                .await;
        }
        verdicts
    }

    /// One REST call, counted, with 409 (rebalance) and 5xx retried with capped exponential
    /// backoff and jitter. An unreachable worker is an error at once: the pass is retried.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<RestResponse, ConnectError> {
        let mut attempt = 0;
        loop {
            let result = self.shared.connect.send(method.clone(), path, body).await;
            let status = match &result {
                Ok(r) => r.status.as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            self.shared
                .metrics
                .rest_calls
                .get_or_create(&RestLabels {
                    method: method.to_string(),
                    status,
                })
                .inc();
            match result {
                Ok(r) if (r.status.as_u16() == 409 || r.status.is_server_error()) && attempt < CALL_RETRIES => {
                    let delay = plan::backoff(attempt, Duration::from_millis(250), Duration::from_secs(4), jitter());
                    tracing::debug!(status = %r.status, ?delay, "Kafka Connect busy; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The worker's connectors in one bulk call; a connector it lists but leaves out of the
    /// expansion (status not written yet) and that matters here is fetched on its own.
    async fn read_live(&self, interest: &BTreeSet<String>) -> Result<LiveState, ReconcileError> {
        let what = "GET /connectors?expand=info&expand=status";
        let r = self
            .call(Method::GET, "/connectors?expand=info&expand=status", None)
            .await?;
        if !r.status.is_success() {
            return Err(ReconcileError::WorkerStatus {
                what: what.into(),
                status: r.status.as_u16(),
                message: r.message(),
            });
        }
        let mut live = plan::parse_expanded(&r.body).map_err(|source| ReconcileError::Decode {
            what: what.into(),
            source,
        })?;
        let unlisted: Vec<&String> = interest.iter().filter(|n| !live.contains_key(*n)).collect();
        for name in unlisted {
            let r = self.call(Method::GET, &connector_path(name), None).await?;
            match r.status.as_u16() {
                404 => {}
                200 => {
                    #[derive(serde::Deserialize)]
                    struct Info {
                        config: BTreeMap<String, String>,
                    }
                    let info: Info = serde_json::from_slice(&r.body).map_err(|source| ReconcileError::Decode {
                        what: "GET /connectors/{name}".into(),
                        source,
                    })?;
                    live.insert(
                        name.clone(),
                        Live {
                            config: info.config,
                            status: None,
                        },
                    );
                }
                status => {
                    return Err(ReconcileError::WorkerStatus {
                        what: "GET /connectors/{name}".into(),
                        status,
                        message: r.message(),
                    });
                }
            }
        }
        Ok(live)
    }

    async fn execute(&mut self, action: &Action, secrets: &[&str]) -> Result<Done, ActionError> {
        let fail = |what: &str, r: &RestResponse| {
            ActionError::Failed(format!(
                "{what} answered {}: {}",
                r.status.as_u16(),
                crate::inputs::mask(&r.message(), secrets)
            ))
        };
        match action {
            Action::Put {
                name, config, cause, ..
            } => {
                let r = self
                    .call(
                        Method::PUT,
                        &format!("{}/config", connector_path(name)),
                        Some(&json!(config)),
                    )
                    .await?;
                match r.status.as_u16() {
                    200 | 201 => {
                        tracing::info!(connector = %name, cause = ?cause, "applied");
                        Ok(Done::Ok)
                    }
                    400 | 422 => {
                        let message = format!(
                            "Kafka Connect rejected the config: {}",
                            crate::inputs::mask(&r.message(), secrets)
                        );
                        tracing::warn!(connector = %name, "the worker rejected the config");
                        Err(ActionError::Rejected(message))
                    }
                    _ => Err(fail("PUT config", &r)),
                }
            }
            Action::Delete { name, cause, .. } => {
                let r = self.call(Method::DELETE, &connector_path(name), None).await?;
                match r.status.as_u16() {
                    200 | 202 | 204 | 404 => {
                        tracing::info!(connector = %name, cause = ?cause, "deleted");
                        Ok(Done::Ok)
                    }
                    _ => Err(fail("DELETE", &r)),
                }
            }
            Action::State { name, to, .. } => {
                let r = self
                    .call(Method::PUT, &format!("{}/{}", connector_path(name), to.verb()), None)
                    .await?;
                match r.status.as_u16() {
                    200 | 202 | 204 => {
                        tracing::info!(connector = %name, transition = to.verb(), "state changed");
                        Ok(Done::Ok)
                    }
                    // Created a moment ago and not yet visible to the worker that answered.
                    404 => Err(fail(to.verb(), &r)),
                    _ => Err(fail(to.verb(), &r)),
                }
            }
            Action::Restart { name, .. } => {
                let path = format!("{}/restart?includeTasks=true&onlyFailed=true", connector_path(name));
                let r = self.call(Method::POST, &path, None).await?;
                let restarts = self.memory.restarts.entry(name.clone()).or_insert(Restarts {
                    total: 0,
                    streak: 0,
                    next: Instant::now(),
                });
                restarts.streak += 1;
                restarts.next = Instant::now()
                    + plan::backoff(
                        restarts.streak,
                        Duration::from_secs(5),
                        Duration::from_secs(300),
                        jitter(),
                    );
                match r.status.as_u16() {
                    200 | 202 | 204 => {
                        restarts.total += 1;
                        tracing::info!(connector = %name, restarts = restarts.total, "restarted failed connector/tasks");
                        Ok(Done::Restarted(restarts.total))
                    }
                    _ => Err(fail("restart", &r)),
                }
            }
        }
    }

    /// Adds the finalizer and records the connectors about to be created, before any PUT.
    async fn record_intent(&self, cm: &mut CmState, p: &CmPlan) -> Result<(), kube::Error> {
        if cm.input.deleting {
            return Ok(());
        }
        let managed_changed = p.managed_pre != cm.input.managed;
        if !p.add_finalizer && !managed_changed {
            return Ok(());
        }
        let mut metadata = json!({});
        if managed_changed {
            metadata["annotations"] = json!({ ANNOTATION_CONNECTORS: map_annotation(&p.managed_pre) });
        }
        if p.add_finalizer {
            let mut finalizers = cm.object.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(FINALIZER.to_string());
            metadata["finalizers"] = json!(finalizers);
            metadata["resourceVersion"] = json!(cm.object.metadata.resource_version);
        }
        self.api
            .patch(
                &cm.input.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": metadata })),
            )
            .await?;
        if managed_changed {
            match map_annotation(&p.managed_pre) {
                Value::String(s) => cm.annotations.insert(ANNOTATION_CONNECTORS.into(), s),
                _ => cm.annotations.remove(ANNOTATION_CONNECTORS),
            };
        }
        Ok(())
    }

    /// Events, status annotations and, for a deleted ConfigMap whose connectors are gone, the
    /// finalizer's removal.
    async fn report(
        &self,
        cm: &mut CmState,
        p: &CmPlan,
        live: &LiveState,
        secrets: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), kube::Error> {
        let reference = cm.object.object_ref(&());
        let mut managed = p.managed_pre.clone();
        for name in &p.release {
            if !cm.failed_deletes.contains(name) {
                managed.remove(name);
            }
        }
        for (kind, reason, note) in std::mem::take(&mut cm.events) {
            self.publish(&reference, kind, reason, note).await;
        }
        if cm.input.deleting {
            if managed.is_empty() && cm.input.has_finalizer {
                let finalizers: Vec<String> = cm
                    .object
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                // Our annotations go too: a released (unlabelled) ConfigMap stays behind.
                let annotations: serde_json::Map<String, Value> = [
                    ANNOTATION_CONNECTORS,
                    ANNOTATION_APPLIED,
                    ANNOTATION_STATUS,
                    ANNOTATION_LAST_ERROR,
                ]
                .into_iter()
                .map(|k| (k.to_string(), Value::Null))
                .collect();
                let patch = json!({ "metadata": {
                    "finalizers": finalizers,
                    "annotations": annotations,
                    "resourceVersion": cm.object.metadata.resource_version,
                } });
                match self
                    .api
                    .patch(&cm.input.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => tracing::info!(configmap = %cm.input.name, "connectors deleted; finalizer removed"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
                return Ok(());
            }
            if managed == cm.input.managed && cm.errors.is_empty() {
                return Ok(());
            }
        }

        // last-error: the pipeline's rejections, the worker's 400s, failures of this pass.
        let mut errors: Vec<String> = cm.verdicts.iter().flat_map(Verdict::messages).collect();
        for name in p.desired.keys() {
            if let Some((hash, message)) = self.memory.worker_rejected.get(name)
                && p.desired.get(name) == Some(hash)
            {
                errors.push(format!("connector {name}: {message}"));
            }
        }
        errors.extend(cm.errors.iter().cloned());
        let last_error = (!errors.is_empty()).then(|| errors.join("\n"));
        let previous: BTreeSet<&str> = cm
            .annotations
            .get(ANNOTATION_LAST_ERROR)
            .map(|e| e.lines().collect())
            .unwrap_or_default();
        let rejections: Vec<String> = cm
            .verdicts
            .iter()
            .flat_map(Verdict::messages)
            .filter(|m| !previous.contains(m.as_str()))
            .collect();
        if !rejections.is_empty() {
            self.publish(&reference, EventType::Warning, "Rejected", rejections.join("\n"))
                .await;
        }

        // status: every connector this ConfigMap declares or still manages.
        let mut status: BTreeMap<String, ConnectorStatus> = BTreeMap::new();
        let names: BTreeSet<&String> = p
            .desired
            .keys()
            .chain(p.rejected.iter())
            .chain(managed.keys())
            .collect();
        let previous_status: BTreeMap<String, Value> = cm
            .annotations
            .get(ANNOTATION_STATUS)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for name in names {
            let mask: Vec<&str> = secrets
                .get(name)
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let mut s = ConnectorStatus::from_live(live.get(name), &mask);
            if cm.written.contains(name) {
                s.state = "PENDING".into();
                s.tasks.clear();
                s.trace = None;
            }
            if p.rejected.contains(name) {
                s.note = Some("rejected: not applied, see connect-gate.io/last-error");
            } else if self
                .memory
                .worker_rejected
                .get(name)
                .is_some_and(|(h, _)| p.desired.get(name) == Some(h))
            {
                s.note = Some("the worker rejected the config, see connect-gate.io/last-error");
            }
            s.restarts = self.memory.restarts.get(name).map(|r| r.total).filter(|t| *t > 0);
            let was_trace = previous_status
                .get(name)
                .and_then(|v| v.get("trace"))
                .and_then(Value::as_str);
            if let Some(trace) = &s.trace
                && was_trace != Some(trace.as_str())
            {
                self.publish(
                    &reference,
                    EventType::Warning,
                    "Failed",
                    format!("connector {name} is FAILED: {trace}"),
                )
                .await;
            }
            status.insert(name.clone(), s);
        }

        let applied: BTreeMap<String, String> = cm
            .applied
            .iter()
            .filter(|(n, _)| managed.contains_key(*n))
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        let wanted: [(&str, Value); 4] = [
            (ANNOTATION_CONNECTORS, map_annotation(&managed)),
            (ANNOTATION_APPLIED, map_annotation(&applied)),
            (
                ANNOTATION_STATUS,
                if status.is_empty() {
                    Value::Null
                } else {
                    json!(serde_json::to_string(&status).expect("serialises"))
                },
            ),
            (
                ANNOTATION_LAST_ERROR,
                last_error.map(Value::String).unwrap_or(Value::Null),
            ),
        ];
        let mut patch = serde_json::Map::new();
        for (key, value) in wanted {
            let current = cm
                .annotations
                .get(key)
                .map(|s| Value::String(s.clone()))
                .unwrap_or(Value::Null);
            if current != value {
                patch.insert(key.to_string(), value);
            }
        }
        if patch.is_empty() {
            return Ok(());
        }
        let body = json!({ "metadata": { "annotations": patch } });
        match self
            .api
            .patch(&cm.input.name, &PatchParams::default(), &Patch::Merge(body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let note = truncate(&note, 1000);
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A fresh recorder per Event: the recorder folds same-reason Events into one series
        // that keeps the first note, and these notes name different connectors.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason, "cannot publish an Event");
        }
    }

    fn report_metrics(&mut self, cms: &[CmState], plans: &BTreeMap<String, CmPlan>, live: &LiveState) {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for cm in cms {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            for name in p.desired.keys() {
                let state = match live.get(name) {
                    None => "absent".to_string(),
                    Some(Live { status: None, .. }) => "unknown".to_string(),
                    Some(Live { status: Some(s), .. }) => s.connector.state.to_lowercase(),
                };
                *counts.entry(state).or_default() += 1;
            }
        }
        for state in self.memory.reported_states.iter().filter(|s| !counts.contains_key(*s)) {
            self.shared
                .metrics
                .connectors
                .get_or_create(&StateLabels { state: state.clone() })
                .set(0);
        }
        for (state, n) in &counts {
            self.shared
                .metrics
                .connectors
                .get_or_create(&StateLabels { state: state.clone() })
                .set(*n);
        }
        self.memory.reported_states = counts.into_keys().collect();
    }
}

enum Done {
    Ok,
    Restarted(u32),
}

impl Done {
    fn apply_to(self, cm: &mut CmState, action: &Action) {
        match (self, action) {
            (Done::Ok, Action::Put { name, hash, cause, .. }) => {
                cm.applied.insert(name.clone(), hash.clone());
                cm.written.insert(name.clone());
                let (reason, note) = match cause {
                    Cause::Created => ("Applied", format!("created connector {name}")),
                    Cause::DriftChanged => (
                        "DriftReverted",
                        format!("connector {name}: its config was changed behind connect-gate's back; re-applied"),
                    ),
                    Cause::DriftDeleted => (
                        "DriftReverted",
                        format!("connector {name} was deleted behind connect-gate's back; recreated"),
                    ),
                    _ => ("Updated", format!("updated connector {name}")),
                };
                cm.events.push((EventType::Normal, reason, note));
            }
            (Done::Ok, Action::Delete { name, cause, .. }) => {
                let why = match cause {
                    Cause::KeyRemoved => "its data key was removed",
                    Cause::Renamed => "it was renamed",
                    Cause::Disabled => "the ConfigMap is enabled: \"false\"",
                    Cause::ConfigMapDeleted => "the ConfigMap is being deleted",
                    _ => "it is no longer declared",
                };
                cm.applied.remove(name);
                cm.events
                    .push((EventType::Normal, "Deleted", format!("deleted connector {name}: {why}")));
            }
            (Done::Ok, Action::State { name, to, .. }) => {
                cm.written.insert(name.clone());
                cm.events
                    .push((EventType::Normal, "Updated", format!("connector {name}: {}", to.verb())));
            }
            (Done::Restarted(n), Action::Restart { name, .. }) => {
                cm.written.insert(name.clone());
                cm.events.push((
                    EventType::Normal,
                    "Restarted",
                    format!("restarted the failed parts of connector {name} (restart {n})"),
                ));
            }
            _ => {}
        }
    }
}

enum ActionError {
    /// The worker found the config invalid (400): reported, not retried until it changes.
    Rejected(String),
    /// Anything else that failed: retried by the next pass.
    Failed(String),
    /// The worker is unreachable: the pass stops here.
    Fatal(ReconcileError),
}

impl From<ConnectError> for ActionError {
    fn from(e: ConnectError) -> Self {
        ActionError::Fatal(ReconcileError::Worker(e))
    }
}

/// What `connect-gate.io/status` says about one connector.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct ConnectorStatus {
    state: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tasks: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
}

impl ConnectorStatus {
    fn from_live(live: Option<&Live>, secrets: &[&str]) -> Self {
        let empty = |state: &str| ConnectorStatus {
            state: state.into(),
            tasks: BTreeMap::new(),
            trace: None,
            restarts: None,
            note: None,
        };
        let Some(live) = live else { return empty("ABSENT") };
        let Some(status) = &live.status else {
            return empty("PENDING");
        };
        let trace = status
            .connector
            .trace
            .iter()
            .chain(
                status
                    .tasks
                    .iter()
                    .filter(|t| t.state == "FAILED")
                    .filter_map(|t| t.trace.as_ref()),
            )
            .next()
            .filter(|_| status.failed())
            .map(|t| plan::shorten_trace(t, secrets, TRACE_MAX));
        ConnectorStatus {
            state: status.connector.state.clone(),
            tasks: status
                .tasks
                .iter()
                .map(|t| (t.id.to_string(), t.state.clone()))
                .collect(),
            trace,
            restarts: None,
            note: None,
        }
    }
}

/// A verdict as the planner sees it.
fn declared(v: &Verdict) -> Declared {
    let decl = if v.cloud_target.is_some() {
        // Runs on a fully managed cluster: never applied to (nor deleted from) the local worker.
        Decl::Rejected(v.name.clone())
    } else if !v.accepted() {
        match (v.desired, &v.name) {
            (Desired::Absent, None) => Decl::Absent(None),
            _ => Decl::Rejected(v.name.clone()),
        }
    } else {
        match (v.desired, &v.connector) {
            (Desired::Present, Some(c)) => Decl::Apply(c.clone()),
            (Desired::Present, None) => Decl::Rejected(v.name.clone()),
            (Desired::Absent, _) => Decl::Absent(v.name.clone()),
        }
    };
    Declared {
        key: v.key.clone(),
        decl,
    }
}

fn json_annotation(annotations: &BTreeMap<String, String>, key: &str) -> BTreeMap<String, String> {
    annotations
        .get(key)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// A map as an annotation value: compact JSON, or `null` (removed) when empty.
fn map_annotation(map: &BTreeMap<String, String>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        Value::String(serde_json::to_string(map).expect("serialises"))
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
    use super::*;
    use crate::plan::{LiveStatus, StateTrace, TaskStatus};

    #[test]
    fn status_shows_states_and_masked_failed_traces_only() {
        let live = Live {
            config: BTreeMap::new(),
            status: Some(LiveStatus {
                connector: StateTrace {
                    state: "RUNNING".into(),
                    trace: None,
                },
                tasks: vec![
                    TaskStatus {
                        id: 0,
                        state: "RUNNING".into(),
                        trace: None,
                    },
                    TaskStatus {
                        id: 1,
                        state: "FAILED".into(),
                        trace: Some("java.io.IOException: bad password p4ssw0rd!\n\tat x".into()),
                    },
                ],
            }),
        };
        let s = ConnectorStatus::from_live(Some(&live), &["p4ssw0rd!"]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"state":"RUNNING","tasks":{"0":"RUNNING","1":"FAILED"},"trace":"java.io.IOException: bad password ****"}"#
        );
        assert_eq!(ConnectorStatus::from_live(None, &[]).state, "ABSENT");
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

    #[test]
    fn empty_maps_remove_their_annotation() {
        assert_eq!(map_annotation(&BTreeMap::new()), Value::Null);
        assert_eq!(
            map_annotation(&[("a".to_string(), "k".to_string())].into()),
            json!(r#"{"a":"k"}"#)
        );
        assert_eq!(truncate("ééé", 4), "...");
    }
}
