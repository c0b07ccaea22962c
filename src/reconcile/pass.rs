//! One reconcile pass: judge, read the ledger and the worker, plan, record intent (ledger first),
//! act, report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use tokio::time::Instant;

use super::ledger::Ledger;
use super::plan::{self, Action, Cause, CmInput, CmPlan, Decl, Declared, Live, LiveState, PlanMemory, PlanOptions};
use super::status::{self, Facts, Note, json_annotation};
use super::watch::ours;
use super::worker::ActionError;
use super::{ReconcileError, Reconciler, Rejection, Restarts};
use crate::metrics::StateLabels;
use crate::pipeline::manifest::{
    ANNOTATION_APPLIED, ANNOTATION_CONNECTORS, FINALIZER, Target, declaring, is_connector_configmap,
};
use crate::pipeline::verdict::{Desired, Verdict};

/// One ConfigMap during a pass.
struct CmState {
    object: Arc<ConfigMap>,
    input: CmInput,
    annotations: BTreeMap<String, String>,
    verdicts: Vec<Verdict>,
    /// Error lines for last-error.
    errors: Vec<String>,
    notes: Vec<Note>,
    /// `connect-gate.io/applied` as this pass leaves it: the plan's, then this pass's writes.
    applied: BTreeMap<String, String>,
    failed_deletes: BTreeSet<String>,
    /// Connectors written this pass (their status is not known yet).
    written: BTreeSet<String>,
    /// Puts/state changes must not run: recording intent failed.
    blocked: bool,
}

pub(super) struct Outcome {
    /// Nothing was done and every status is known: the next pass can wait for the resync.
    pub settled: bool,
}

impl Reconciler {
    pub(super) async fn pass(&mut self) -> Result<Outcome, ReconcileError> {
        self.judge.reload_inputs();
        let mut objects: Vec<_> = self.view.store.state().into_iter().filter(|cm| ours(cm)).collect();
        objects.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let local = self.judge.destinations().local_destination();
        if local.plugins.catalog().is_none() {
            // Unlike an admission request, a pass can wait for the worker to answer.
            local.plugins.refresh().await;
        }
        let judged = declaring(objects.iter().map(|o| o.as_ref()), &self.view.namespace);
        let verdicts = self.judge.judge(&judged).await;
        let mut by_cm: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
        for v in verdicts {
            by_cm.entry(v.origin.name.clone()).or_default().push(v);
        }
        let mut cms: Vec<CmState> = objects.into_iter().map(|o| cm_state(o, &mut by_cm)).collect();

        // Secret values per connector, to mask whatever the worker says about it.
        let secrets: BTreeMap<String, Vec<String>> = cms
            .iter()
            .flat_map(|cm| cm.input.keys.iter())
            .filter_map(|d| match &d.decl {
                Decl::Apply(c) => Some((c.name.clone(), c.secrets.clone())),
                _ => None,
            })
            .collect();

        let mut stored = self.writer.read_ledger().await?;
        // The ledger's names too: one missing from the listing must not be taken for gone.
        let interest: BTreeSet<String> = stored
            .ledger
            .names()
            .cloned()
            .chain(cms.iter().flat_map(|cm| {
                let declared = cm.input.keys.iter().filter_map(|d| match &d.decl {
                    Decl::Apply(c) => Some(c.name.clone()),
                    Decl::Absent(name) => name.clone(),
                    Decl::Rejected(_) => None,
                });
                declared.chain(cm.input.managed.keys().cloned()).collect::<Vec<_>>()
            }))
            .collect();
        let live = self.worker.read_live(&interest).await?;

        let now = Instant::now();
        let memory = PlanMemory {
            worker_rejected: self.memory.rejections_waiting(now),
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
        let plan = plan::plan(
            &inputs_for_plan,
            &live,
            &stored.ledger,
            &memory,
            options,
            &self.applied_hash,
        );
        let plans: BTreeMap<String, CmPlan> = plan.cms.iter().map(|p| (p.name.clone(), p.clone())).collect();

        // Record intent before acting: in the ledger what is about to be created or adopted (no
        // write at all without it), then on each ConfigMap its finalizer and managed names.
        let recorded = stored.ledger.before_acting(&live, &plan);
        self.writer.write_ledger(&mut stored, recorded).await?;
        for cm in cms.iter_mut() {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            cm.applied = p.applied.clone();
            match self.record_intent(cm, p).await {
                Ok(()) => {}
                Err(e @ ReconcileError::Deposed(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(configmap = %cm.input.name, error = %e, "cannot record intent on the ConfigMap; not applying its connectors this pass");
                    cm.errors.push(e.to_string());
                    cm.blocked = true;
                }
            }
        }

        let mut failed = 0usize;
        let mut acted = 0usize;
        let mut deleted: BTreeSet<String> = BTreeSet::new();
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
            if let Action::Restart { name, .. } = action {
                let r = self.memory.restarts.entry(name.clone()).or_insert_with(Restarts::new);
                r.next = Instant::now() + r.backoff.next().unwrap_or_default();
            }
            let result = tracing::Instrument::instrument(self.worker.execute(action, &mask), span).await;
            let cm = cm_index.map(|i| &mut cms[i]);
            match (result, cm) {
                (Ok(()), cm) => {
                    let mut done = Done::Ok;
                    match action {
                        Action::Put { name, cause, .. } => {
                            self.memory.worker_rejected.remove(name);
                            if cause.is_drift() {
                                self.metrics.drift_reverts.inc();
                            }
                        }
                        Action::Restart { name, .. } => {
                            let r = self.memory.restarts.entry(name.clone()).or_insert_with(Restarts::new);
                            r.total += 1;
                            done = Done::Restarted(r.total);
                        }
                        Action::Delete { name, .. } => {
                            deleted.insert(name.clone());
                        }
                        Action::State { .. } => {}
                    }
                    if let Some(cm) = cm {
                        done.apply_to(cm, action);
                    }
                }
                (Err(ActionError::Fatal(e)), _) => return Err(e),
                (Err(ActionError::Rejected(message)), cm) => {
                    if let Action::Put { name, config, .. } = action {
                        let previous = self.memory.worker_rejected.remove(name);
                        let policy = self.rejection_policy();
                        let rejection =
                            Rejection::after(previous, plan::fingerprint(config), message, policy, Instant::now());
                        tracing::warn!(connector = %name, attempts = rejection.report.attempts, retry_in = ?rejection.report.retry_in, "the worker rejected the config; retrying later");
                        if let Some(cm) = cm {
                            cm.notes.push(Note::warning("Failed", rejection.report.describe(name)));
                        }
                        self.memory.worker_rejected.insert(name.clone(), rejection);
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
                        cm.notes.push(Note::warning(
                            "Failed",
                            format!("connector {}: {message}", action.name()),
                        ));
                    }
                }
            }
        }

        // What was deleted is no longer ours. Should this write fail, the next pass drops those
        // names anyway: they are neither on the worker nor declared.
        let settled = stored.ledger.forget(&deleted);
        match self.writer.write_ledger(&mut stored, settled).await {
            Ok(()) => {}
            Err(e @ ReconcileError::Deposed(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the ledger after deleting");
                failed += 1;
            }
        }

        // Restart bookkeeping: healthy connectors start a new streak.
        for (name, l) in &live {
            if let (Some(r), Some(status)) = (self.memory.restarts.get_mut(name), &l.status)
                && !status.failed()
            {
                r.healthy();
            }
        }

        let mut missing_status = false;
        let restarts: BTreeMap<String, u32> = self.memory.restarts.iter().map(|(n, r)| (n.clone(), r.total)).collect();
        for cm in cms.iter_mut() {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            missing_status |= p.desired.keys().any(|n| live.get(n).is_none_or(|l| l.status.is_none()));
            let span = tracing::info_span!("report", configmap = %cm.input.name);
            let report = self.report(cm, p, &live, &secrets, &restarts, &stored.ledger);
            match tracing::Instrument::instrument(report, span).await {
                Ok(()) => {}
                Err(e @ ReconcileError::Deposed(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(configmap = %cm.input.name, error = %e, "cannot write status to the ConfigMap");
                    failed += 1;
                }
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

    /// Adds the finalizer and records the connectors about to be created, before any PUT.
    async fn record_intent(&self, cm: &mut CmState, p: &CmPlan) -> Result<(), ReconcileError> {
        if cm.input.deleting {
            return Ok(());
        }
        let managed_changed = p.managed_pre != cm.input.managed;
        if !p.add_finalizer && !managed_changed {
            return Ok(());
        }
        let managed = managed_changed.then_some(&p.managed_pre);
        self.writer.record_intent(&cm.object, p.add_finalizer, managed).await?;
        if managed_changed {
            match status::map_annotation(&p.managed_pre) {
                serde_json::Value::String(s) => cm.annotations.insert(ANNOTATION_CONNECTORS.into(), s),
                _ => cm.annotations.remove(ANNOTATION_CONNECTORS),
            };
        }
        Ok(())
    }

    /// Events, then status annotations or, for a deleted ConfigMap whose connectors are gone,
    /// the finalizer's release.
    async fn report(
        &self,
        cm: &mut CmState,
        p: &CmPlan,
        live: &LiveState,
        secrets: &BTreeMap<String, Vec<String>>,
        restarts: &BTreeMap<String, u32>,
        ledger: &Ledger,
    ) -> Result<(), ReconcileError> {
        let report = status::report(&Facts {
            plan: p,
            annotations: &cm.annotations,
            deleting: cm.input.deleting,
            has_finalizer: cm.input.has_finalizer,
            managed: &cm.input.managed,
            applied: &cm.applied,
            rejections: cm.verdicts.iter().flat_map(Verdict::messages).collect(),
            errors: &cm.errors,
            failed_deletes: &cm.failed_deletes,
            written: &cm.written,
            live,
            worker_rejected: &self
                .memory
                .worker_rejected
                .iter()
                .map(|(name, r)| (name.clone(), r.report.clone()))
                .collect(),
            restarts,
            secrets,
            ledger,
        });
        let reference = cm.object.object_ref(&());
        for note in std::mem::take(&mut cm.notes).into_iter().chain(report.notes) {
            self.writer.publish(&reference, note).await;
        }
        self.writer.apply(&cm.object, report.change).await
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
            self.metrics
                .connectors
                .get_or_create(&StateLabels { state: state.clone() })
                .set(0);
        }
        for (state, n) in &counts {
            self.metrics
                .connectors
                .get_or_create(&StateLabels { state: state.clone() })
                .set(*n);
        }
        self.memory.reported_states = counts.into_keys().collect();
    }
}

/// A ConfigMap as the planner sees it, with its verdicts taken out of `by_cm`.
fn cm_state(object: Arc<ConfigMap>, by_cm: &mut BTreeMap<String, Vec<Verdict>>) -> CmState {
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
        applied: BTreeMap::new(),
        object,
        input,
        annotations,
        verdicts,
        errors: vec![],
        notes: vec![],
        failed_deletes: BTreeSet::new(),
        written: BTreeSet::new(),
        blocked: false,
    }
}

/// A verdict as the planner sees it.
fn declared(v: &Verdict) -> Declared {
    let decl = if v.destination != Target::Local {
        // Runs elsewhere: never applied to (nor deleted from) the local worker.
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

/// What an action that succeeded means for its ConfigMap's report.
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
                    Cause::Adopted => (
                        "Updated",
                        format!("applied this ConfigMap's config to adopted connector {name}"),
                    ),
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
                cm.notes.push(Note::normal(reason, note));
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
                cm.notes
                    .push(Note::normal("Deleted", format!("deleted connector {name}: {why}")));
            }
            (Done::Ok, Action::State { name, to, .. }) => {
                cm.written.insert(name.clone());
                cm.notes
                    .push(Note::normal("Updated", format!("connector {name}: {}", to.verb())));
            }
            (Done::Restarted(n), Action::Restart { name, .. }) => {
                cm.written.insert(name.clone());
                cm.notes.push(Note::normal(
                    "Restarted",
                    format!("restarted the failed parts of connector {name} (restart {n})"),
                ));
            }
            _ => {}
        }
    }
}
