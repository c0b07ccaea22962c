//! One reconcile pass: judge, read the ledger and the worker, plan, record intent (ledger first),
//! act, report.

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use tokio::time::Instant;

mod done;

use super::day2::{self, OffsetsRecord, Phase, Record, RestartRecord};
use super::fanout::{Placed, hold, homes, merge, touched};
use super::input::{cm_input, interest, plan_destination};
use super::ledger::Ledger;
use super::live::{Live, LiveState};
use super::plan::{self, Action, CmInput, CmPlan, PlanMemory, PlanOptions, Trigger};
use super::status::{self, Facts, Note, Places};
use super::watch::holds_finalizer;
use super::worker::{ActionError, Worker};
use super::{ReconcileError, Reconciler, Rejection, Restarts, rotation};
use crate::connect::destinations::LOCAL;
use crate::connect::registry::Destination;
use crate::metrics::{ConnectorLabels, ConnectorSeries, ConnectorStateLabels, OperationLabels, StateLabels};
use crate::pipeline::check::verdict::{Connector, Verdict};
use crate::pipeline::parse::manifest::{
    ANNOTATION_CONNECTORS, ANNOTATION_OPERATIONS, Target, declaring, is_connector_configmap,
};
use done::Done;

/// One ConfigMap during a pass.
struct CmState {
    object: Arc<ConfigMap>,
    /// The destination its labels pick, or why there is none.
    target: Result<Arc<Destination>, String>,
    input: CmInput,
    annotations: BTreeMap<String, String>,
    verdicts: Vec<Verdict>,
    /// Error lines for last-error.
    errors: Vec<String>,
    notes: Vec<Note>,
    /// `connect-gate.io/applied` as this pass leaves it: the plan's, then this pass's writes.
    applied: BTreeMap<String, String>,
    /// `connect-gate.io/operations` as this pass leaves it: the plan's, then this pass's results.
    operations: BTreeMap<String, Record>,
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
        let objects = self.stores.ours();
        let destinations = self.judge.destinations().clone();
        let targets: Vec<Result<Arc<Destination>, String>> = objects
            .iter()
            .map(|o| destinations.resolve(&Target::from_labels(o.metadata.labels.as_ref())))
            .collect();
        let mut fetched = BTreeSet::new();
        for d in std::iter::once(destinations.local_destination()).chain(targets.iter().flatten()) {
            if fetched.insert(d.id.clone()) && d.plugins.catalog().is_none() {
                // Unlike an admission request, a pass can wait for a destination to answer.
                d.plugins.refresh().await;
            }
        }
        let judged = declaring(objects.iter().map(|o| o.as_ref()), &self.view.namespace);
        let verdicts = self.judge.judge(&judged).await;
        let mut by_cm: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
        for v in verdicts {
            by_cm.entry(v.origin.name.clone()).or_default().push(v);
        }
        let mut cms: Vec<CmState> = objects
            .into_iter()
            .zip(targets)
            .map(|(o, target)| cm_state(o, target, &mut by_cm))
            .collect();
        // The watch may not have brought this leader's last write of the operations records yet:
        // what it did is remembered, so a restart token never acts twice.
        self.memory
            .operations
            .retain(|name, _| cms.iter().any(|cm| cm.input.name == *name));
        for cm in cms.iter_mut() {
            if let Some(done) = self.memory.operations.get(&cm.input.name) {
                cm.input.operations = done.clone();
            }
        }

        let accepted: Vec<&Connector> = cms.iter().flat_map(|cm| cm.input.accepted()).collect();
        // Secret values per connector, to mask whatever the worker says about it.
        let secrets: BTreeMap<String, Vec<String>> =
            accepted.iter().map(|c| (c.name.clone(), c.secrets.clone())).collect();
        let as_values: BTreeSet<String> = accepted
            .iter()
            .filter(|c| c.values_for_lack_of_providers)
            .map(|c| c.name.clone())
            .collect();
        // Connectors whose referenced files changed since they were last started.
        let versions: BTreeMap<String, String> = accepted
            .iter()
            .filter(|c| !c.referenced_files.is_empty())
            .map(|c| (c.name.clone(), rotation::version(&c.referenced_files)))
            .collect();
        let rotated = self.memory.rotation.changed(versions);

        let mut stored = self.writer.read_ledger().await?;
        let ledgers = stored.ledger.clone();
        // Where each ConfigMap goes: one being deleted whose destination is gone still deletes
        // what the ledgers say it created anywhere.
        let placed: Vec<Option<Placed>> = cms
            .iter()
            .map(|cm| {
                let target = match &cm.target {
                    Ok(d) => d.id.clone(),
                    Err(_) if cm.input.deleting => LOCAL.to_string(),
                    Err(_) => return None,
                };
                Some(Placed {
                    input: cm.input.clone(),
                    target,
                })
            })
            .collect();

        // Read every destination that matters, each on its own: one that does not answer holds
        // only the ConfigMaps that touch it.
        let ids: BTreeSet<String> = std::iter::once(LOCAL.to_string())
            .chain(ledgers.destinations().cloned())
            .chain(placed.iter().flatten().map(|p| p.target.clone()))
            .collect();
        let mut workers: BTreeMap<String, (Arc<Destination>, Worker)> = BTreeMap::new();
        let mut live_by: BTreeMap<String, LiveState> = BTreeMap::new();
        let mut down: BTreeMap<String, String> = BTreeMap::new();
        for id in ids {
            let d = match destinations.resolve_id(&id) {
                Ok(d) => d,
                Err(why) => {
                    down.insert(id, why);
                    continue;
                }
            };
            // The ledger's names too: one missing from the listing must not be taken for gone.
            let interest: BTreeSet<String> = ledgers
                .get(&id)
                .names()
                .cloned()
                .chain(placed.iter().flatten().flat_map(|p| interest(p, &ledgers, &id)))
                .collect();
            let worker = Worker::new(&d, self.metrics.clone(), self.writer.leadership.clone());
            match worker.read_live(&interest).await {
                Ok(live) => {
                    live_by.insert(id.clone(), live);
                }
                Err(e) => {
                    tracing::warn!(destination = %id, error = %e, "cannot read the destination; its ConfigMaps wait");
                    down.insert(id.clone(), e.to_string());
                }
            }
            workers.insert(id, (d, worker));
        }

        let now = Instant::now();
        let flags = PlanOptions {
            prune_unmanaged: self.args.prune_unmanaged,
            auto_restart: self.args.auto_restart,
        };
        let held: Vec<bool> = placed
            .iter()
            .map(|p| {
                p.as_ref()
                    .is_none_or(|p| touched(p, &ledgers).iter().any(|d| down.contains_key(*d)))
            })
            .collect();
        let active: Vec<Placed> = placed
            .iter()
            .zip(&held)
            .filter(|(_, held)| !**held)
            .filter_map(|(p, _)| p.clone())
            .collect();
        let mut actions: Vec<(String, Action)> = Vec::new();
        let mut parts: BTreeMap<String, Vec<CmPlan>> = BTreeMap::new();
        let mut recorded = ledgers.clone();
        for (id, live) in live_by.iter_mut() {
            let (d, _) = &workers[id];
            let memory = PlanMemory {
                worker_rejected: self.memory.rejections_waiting(now),
                restart_ready: live
                    .keys()
                    .filter(|n| self.memory.restarts.get(*n).is_none_or(|r| r.next <= now))
                    .cloned()
                    .collect(),
                day2: day2::Waiting {
                    offsets_retry: self
                        .memory
                        .offsets_retry
                        .iter()
                        .filter(|(_, r)| r.next > now)
                        .map(|(n, _)| n.clone())
                        .collect(),
                },
                rotated: rotated.clone(),
            };
            let ledger = ledgers.get(id);
            let (_, plan) = plan_destination(&active, &ledgers, d, live, &memory, flags, &self.applied_hash);
            let declared = plan.cms.iter().flat_map(|p| p.desired.keys());
            recorded.set(id, ledger.before_acting(live, declared, &plan.record));
            actions.extend(plan.actions.into_iter().map(|a| (id.clone(), a)));
            for p in plan.cms {
                parts.entry(p.name.clone()).or_default().push(p);
            }
        }
        let mut plans: BTreeMap<String, CmPlan> = BTreeMap::new();
        // Where each connector's status comes from, and those whose destination did not answer.
        let mut homes_of: BTreeMap<String, String> = BTreeMap::new();
        let mut unknown: BTreeSet<String> = BTreeSet::new();
        for ((cm, p), held) in cms.iter_mut().zip(&placed).zip(&held) {
            let plan = if *held {
                let plan = hold(&cm.input);
                // Held for a destination that did not answer (not for labels naming none, whose
                // rejection says why): what it declares or manages there is unknown.
                if let Some(p) = p {
                    let away: Vec<&str> = touched(p, &ledgers)
                        .into_iter()
                        .filter(|d| down.contains_key(*d))
                        .collect();
                    cm.errors.extend(away.iter().map(|d| {
                        format!("destination {d} cannot be reached ({}); its connectors are left as they are until it answers", down[*d])
                    }));
                    let names = plan.desired.keys().chain(plan.managed_pre.keys());
                    unknown.extend(
                        names
                            .filter(|n| homes(&ledgers, n, &p.target).iter().any(|d| away.contains(d)))
                            .cloned(),
                    );
                }
                plan
            } else {
                let mine: Vec<&CmPlan> = parts.get(&cm.input.name).into_iter().flatten().collect();
                merge(&cm.input, &mine)
            };
            let target = p.as_ref().map_or(LOCAL, |p| p.target.as_str());
            for name in plan.managed_pre.keys() {
                let home = homes(&ledgers, name, target)
                    .into_iter()
                    .find(|d| live_by.get(*d).is_some_and(|l| l.contains_key(name)));
                homes_of.insert(name.clone(), home.unwrap_or(target).to_string());
            }
            for name in plan.desired.keys() {
                homes_of.insert(name.clone(), target.to_string());
            }
            plans.insert(cm.input.name.clone(), plan);
        }
        let live: LiveState = homes_of
            .iter()
            .filter_map(|(name, d)| Some((name.clone(), live_by.get(d)?.get(name)?.clone())))
            .collect();

        // Record intent before acting: in the ledgers what is about to be created or adopted (no
        // write at all without it), then on each ConfigMap its finalizer and managed names.
        self.writer.write_ledger(&mut stored, recorded).await?;
        let this = &*self;
        let mut intents = Vec::new();
        for cm in cms.iter_mut() {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            cm.applied = p.applied.clone();
            cm.operations = p.operations.clone();
            intents.push(async move {
                let result = this.record_intent(cm, p).await;
                if let Err(e) = &result
                    && !matches!(e, ReconcileError::Deposed(_))
                {
                    tracing::warn!(configmap = %cm.input.name, error = %e, "cannot record intent on the ConfigMap; not applying its connectors this pass");
                    cm.errors.push(e.to_string());
                    cm.blocked = true;
                }
                result
            });
        }
        if let (_, Some(deposed)) = write_all(intents).await {
            return Err(deposed);
        }

        let mut failed = 0usize;
        let mut acted = 0usize;
        let mut deleted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let index: BTreeMap<String, usize> = cms.iter().enumerate().map(|(i, c)| (c.input.name.clone(), i)).collect();
        let mut runnable: Vec<(&String, &Action, Option<usize>)> = Vec::new();
        for (destination, action) in &actions {
            let cm_index = action.cm().and_then(|c| index.get(c)).copied();
            if cm_index.is_some_and(|i| cms[i].blocked) && !matches!(action, Action::Delete { .. }) {
                continue;
            }
            if let Some(why) = down.get(destination) {
                if let Some(i) = cm_index {
                    cms[i]
                        .errors
                        .push(format!("connector {}: destination {destination}: {why}", action.name()));
                }
                continue;
            }
            acted += 1;
            if let Action::Restart {
                name,
                trigger: Trigger::Failed,
                ..
            } = action
            {
                let r = self.memory.restarts.entry(name.clone()).or_insert_with(Restarts::new);
                r.next = Instant::now() + r.backoff.next().unwrap_or_default();
            }
            runnable.push((destination, action, cm_index));
        }
        let ran = execute(&runnable, &workers, &secrets).await;
        for ((destination, action, cm_index), ran) in runnable.into_iter().zip(ran) {
            let result = match ran {
                Ran::Done(result) => result,
                Ran::NotSent(why) => {
                    if let Some(i) = cm_index {
                        cms[i]
                            .errors
                            .push(format!("connector {}: destination {destination}: {why}", action.name()));
                    }
                    continue;
                }
            };
            let cm = cm_index.map(|i| &mut cms[i]);
            match (result, cm) {
                (Ok(answer), cm) => {
                    let mut done = Done::Ok;
                    match action {
                        Action::Put { name, cause, .. } => {
                            self.memory.worker_rejected.remove(name);
                            // A written config restarts the connector, which resolves anew.
                            self.memory.rotation.restarted(name);
                            if cause.is_drift() {
                                self.metrics.drift_reverts.inc();
                            }
                        }
                        Action::Restart {
                            name,
                            trigger: Trigger::Failed,
                            ..
                        } => {
                            let r = self.memory.restarts.entry(name.clone()).or_insert_with(Restarts::new);
                            r.total += 1;
                            done = Done::Restarted(r.total);
                            self.count_operation("auto-restart", "ok");
                        }
                        Action::Restart {
                            name,
                            trigger: Trigger::Rotation,
                            ..
                        } => {
                            self.memory.rotation.restarted(name);
                            self.count_operation("rotation-restart", "ok");
                        }
                        Action::Restart { .. } => self.count_operation("restart", "ok"),
                        Action::Offsets { name, .. } => {
                            self.memory.offsets_retry.remove(name);
                            self.count_operation("offsets", "ok");
                            done = Done::Offsets(answer.unwrap_or_default());
                        }
                        Action::Delete { name, .. } => {
                            deleted.entry(destination.clone()).or_default().insert(name.clone());
                        }
                        Action::State { .. } => {}
                    }
                    if let Some(cm) = cm {
                        done.apply_to(cm, action, destination);
                    }
                }
                (Err(ActionError::Fatal(e @ ReconcileError::Deposed(_))), _) => return Err(e),
                (Err(ActionError::Fatal(e)), cm) => {
                    // This destination stopped answering: its other actions wait for the next pass.
                    tracing::warn!(%destination, error = %e, "destination unreachable; its remaining actions wait");
                    if let Some(cm) = cm {
                        cm.errors
                            .push(format!("connector {}: destination {destination}: {e}", action.name()));
                    }
                    down.insert(destination.clone(), e.to_string());
                }
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
                    let mut cm = cm;
                    self.operation_failed(cm.as_deref_mut(), action, &message);
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

        for cm in cms.iter().filter(|cm| plans.contains_key(&cm.input.name)) {
            self.memory
                .operations
                .insert(cm.input.name.clone(), cm.operations.clone());
        }

        // What was deleted is no longer ours. Should this write fail, the next pass drops those
        // names anyway: they are neither on the worker nor declared.
        let mut settled = stored.ledger.clone();
        for (destination, names) in &deleted {
            settled.set(destination, settled.get(destination).forget(names));
        }
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
        let owned = stored.ledger.merged();
        let seen = Seen {
            live: &live,
            secrets: &secrets,
            restarts: &restarts,
            ledger: &owned,
            places: Places {
                homes: &homes_of,
                unknown: &unknown,
            },
            as_values: &as_values,
        };
        let (this, seen) = (&*self, &seen);
        let mut reports = Vec::new();
        for cm in cms.iter_mut() {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            missing_status |= p.desired.keys().any(|n| live.get(n).is_none_or(|l| l.status.is_none()));
            let span = tracing::info_span!("report", configmap = %cm.input.name);
            let report = async move {
                let result = this.report(cm, p, seen).await;
                if let Err(e) = &result
                    && !matches!(e, ReconcileError::Deposed(_))
                {
                    tracing::warn!(configmap = %cm.input.name, error = %e, "cannot write status to the ConfigMap");
                }
                result
            };
            reports.push(tracing::Instrument::instrument(report, span));
        }
        match write_all(reports).await {
            (_, Some(deposed)) => return Err(deposed),
            (failures, None) => failed += failures,
        }
        self.report_metrics(&cms, &plans, &live, &homes_of);
        if !down.is_empty() {
            let destinations = down.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ReconcileError::Unreachable { destinations, failed });
        }
        if failed > 0 {
            return Err(ReconcileError::Incomplete { failed });
        }
        // An offsets operation waits for the worker to stop the connector: look again soon.
        let operating = cms.iter().any(|cm| cm.operations.values().any(day2::in_progress));
        Ok(Outcome {
            settled: acted == 0 && !missing_status && !operating,
        })
    }

    /// Adds the finalizer and records the connectors about to be created and the offsets
    /// operations about to start, before any PUT.
    async fn record_intent(&self, cm: &mut CmState, p: &CmPlan) -> Result<(), ReconcileError> {
        if cm.input.deleting {
            return Ok(());
        }
        let managed_changed = p.managed_pre != cm.input.managed;
        let operations_changed = p.operations != cm.input.operations;
        if !p.add_finalizer && !managed_changed && !operations_changed {
            return Ok(());
        }
        let mut annotations = BTreeMap::new();
        if managed_changed {
            annotations.insert(ANNOTATION_CONNECTORS, status::map_annotation(&p.managed_pre));
        }
        if operations_changed {
            annotations.insert(ANNOTATION_OPERATIONS, day2::encode(&p.operations).into());
        }
        self.writer
            .record_intent(&cm.object, p.add_finalizer, &annotations)
            .await?;
        for (key, value) in annotations {
            match value {
                serde_json::Value::String(s) => cm.annotations.insert(key.into(), s),
                _ => cm.annotations.remove(key),
            };
        }
        Ok(())
    }

    /// A declared restart that failed is recorded as done (a token acts once); a failed
    /// offsets operation is recorded, leaves the connector stopped and is retried with backoff.
    fn operation_failed(&mut self, cm: Option<&mut CmState>, action: &Action, message: &str) {
        match action {
            Action::Restart {
                name,
                trigger: Trigger::Token(token),
                ..
            } => {
                self.count_operation("restart", "failed");
                if let Some(cm) = cm {
                    cm.operations.entry(name.clone()).or_default().restart = Some(RestartRecord {
                        token: token.clone(),
                        result: format!("failed: {message}"),
                    });
                }
            }
            Action::Offsets { name, token, .. } => {
                self.count_operation("offsets", "failed");
                let r = self
                    .memory
                    .offsets_retry
                    .entry(name.clone())
                    .or_insert_with(Restarts::new);
                r.total += 1;
                r.next = Instant::now() + r.backoff.next().unwrap_or_default();
                if let Some(cm) = cm {
                    cm.operations.entry(name.clone()).or_default().offsets = Some(OffsetsRecord {
                        token: token.clone(),
                        phase: Phase::Failed,
                        result: Some(message.to_string()),
                    });
                }
            }
            Action::Restart {
                trigger: Trigger::Failed,
                ..
            } => self.count_operation("auto-restart", "failed"),
            Action::Restart {
                trigger: Trigger::Rotation,
                ..
            } => self.count_operation("rotation-restart", "failed"),
            _ => {}
        }
    }

    fn count_operation(&self, operation: &'static str, result: &'static str) {
        self.metrics
            .operations
            .get_or_create(&OperationLabels { operation, result })
            .inc();
    }

    /// Events, then status annotations or, for a deleted ConfigMap whose connectors are gone,
    /// the finalizer's release.
    async fn report(&self, cm: &mut CmState, p: &CmPlan, seen: &Seen<'_>) -> Result<(), ReconcileError> {
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
            live: seen.live,
            worker_rejected: &self
                .memory
                .worker_rejected
                .iter()
                .map(|(name, r)| (name.clone(), r.report.clone()))
                .collect(),
            restarts: seen.restarts,
            operations: &cm.operations,
            secrets: seen.secrets,
            ledger: seen.ledger,
            places: seen.places,
            as_values: seen.as_values,
        });
        let reference = cm.object.object_ref(&());
        for note in std::mem::take(&mut cm.notes).into_iter().chain(report.notes) {
            self.writer.publish(&reference, note).await;
        }
        self.writer.apply(&cm.object, report.change).await
    }

    /// Connectors by state, and each connector's state, tasks and offsets operation, from what
    /// this pass read (no extra call).
    fn report_metrics(
        &mut self,
        cms: &[CmState],
        plans: &BTreeMap<String, CmPlan>,
        live: &LiveState,
        homes: &BTreeMap<String, String>,
    ) {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        let mut series = ConnectorSeries::default();
        for cm in cms {
            let Some(p) = plans.get(&cm.input.name) else { continue };
            for name in p.desired.keys() {
                let state = match live.get(name) {
                    None => "absent".to_string(),
                    Some(Live { status: None, .. }) => "unknown".to_string(),
                    Some(Live { status: Some(s), .. }) => s.connector.state.to_lowercase(),
                };
                let destination = homes.get(name).map_or(LOCAL, String::as_str).to_string();
                let labels = |state: String| ConnectorStateLabels {
                    destination: destination.clone(),
                    connector: name.clone(),
                    state,
                };
                for task in live
                    .get(name)
                    .and_then(|l| l.status.as_ref())
                    .iter()
                    .flat_map(|s| &s.tasks)
                {
                    *series.tasks.entry(labels(task.state.to_lowercase())).or_default() += 1;
                }
                if cm.operations.get(name).is_some_and(day2::in_progress) {
                    series.offsets.insert(ConnectorLabels {
                        destination: destination.clone(),
                        connector: name.clone(),
                    });
                }
                series.states.insert(labels(state.clone()));
                *counts.entry(state).or_default() += 1;
            }
        }
        self.metrics.report_connectors(&self.memory.reported_series, &series);
        self.memory.reported_series = series;
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

/// ConfigMap writes (intent, status) sent to the API server at once: a pass that creates a
/// thousand connectors records intent on a thousand ConfigMaps first.
const CONFIGMAP_WRITES_AT_ONCE: usize = 8;

/// Runs ConfigMap writes [`CONFIGMAP_WRITES_AT_ONCE`] at a time: how many failed, and a lost
/// leadership among them (the pass ends with it).
async fn write_all<F>(writes: Vec<F>) -> (usize, Option<ReconcileError>)
where
    F: std::future::Future<Output = Result<(), ReconcileError>>,
{
    let results: Vec<_> = futures::stream::iter(writes)
        .buffer_unordered(CONFIGMAP_WRITES_AT_ONCE)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let deposed = results.into_iter().find_map(|r| match r {
        Err(e @ ReconcileError::Deposed(_)) => Some(e),
        _ => None,
    });
    (failed, deposed)
}

/// Actions sent at once, across destinations. A Connect worker answers a few requests at once
/// sooner than one after another (each config it writes to its config topic and reads back), so
/// creating hundreds of connectors takes less time; one connector's actions stay in order
/// (create, then pause).
const ACTIONS_AT_ONCE: usize = 4;

/// What became of one action.
enum Ran {
    Done(Result<Option<String>, ActionError>),
    /// Not sent: its destination stopped answering first (why).
    NotSent(String),
}

/// Sends `runnable` (each with its destination), [`ACTIONS_AT_ONCE`] connectors at a time, one
/// connector's actions in turn; once a destination stops answering, nothing more is sent there.
/// The outcomes come back in the order of `runnable`.
async fn execute(
    runnable: &[(&String, &Action, Option<usize>)],
    workers: &BTreeMap<String, (Arc<Destination>, Worker)>,
    secrets: &BTreeMap<String, Vec<String>>,
) -> Vec<Ran> {
    // One turn a connector, in the plan's order.
    let mut turns: Vec<Vec<usize>> = Vec::new();
    let mut turn_of: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, (destination, action, _)) in runnable.iter().enumerate() {
        let turn = *turn_of.entry((destination.as_str(), action.name())).or_insert_with(|| {
            turns.push(Vec::new());
            turns.len() - 1
        });
        turns[turn].push(i);
    }
    let stopped: std::sync::Mutex<BTreeMap<String, String>> = Default::default();
    let one_connector = |turn: Vec<usize>| {
        let stopped = &stopped;
        async move {
            let mut ran = Vec::new();
            for i in turn {
                let (destination, action, _) = runnable[i];
                if let Some(why) = stopped.lock().expect("not poisoned").get(destination) {
                    ran.push((i, Ran::NotSent(why.clone())));
                    continue;
                }
                let span = tracing::info_span!("action", connector = %action.name(), configmap = action.cm().unwrap_or("-"), %destination);
                let mask: Vec<&str> = secrets
                    .get(action.name())
                    .map(|v| v.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                let result = tracing::Instrument::instrument(workers[destination].1.execute(action, &mask), span).await;
                if let Err(ActionError::Fatal(e)) = &result {
                    stopped
                        .lock()
                        .expect("not poisoned")
                        .insert(destination.clone(), e.to_string());
                }
                ran.push((i, Ran::Done(result)));
            }
            ran
        }
    };
    let mut by_index: BTreeMap<usize, Ran> = futures::stream::iter(turns.into_iter().map(one_connector))
        .buffer_unordered(ACTIONS_AT_ONCE)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    (0..runnable.len())
        .map(|i| by_index.remove(&i).expect("every action has an outcome"))
        .collect()
}

/// A ConfigMap as the planner sees it, with its verdicts taken out of `by_cm`.
fn cm_state(
    object: Arc<ConfigMap>,
    target: Result<Arc<Destination>, String>,
    by_cm: &mut BTreeMap<String, Vec<Verdict>>,
) -> CmState {
    let name = object.metadata.name.clone().unwrap_or_default();
    let verdicts = if object.metadata.deletion_timestamp.is_some() {
        vec![]
    } else {
        by_cm.remove(&name).unwrap_or_default()
    };
    let annotations = object.metadata.annotations.clone().unwrap_or_default();
    let input = cm_input(
        name,
        // An unlabelled ConfigMap still holding the finalizer declares nothing any more.
        object.metadata.deletion_timestamp.is_some() || !is_connector_configmap(object.metadata.labels.as_ref()),
        holds_finalizer(&object.metadata),
        &annotations,
        &verdicts,
    );
    CmState {
        applied: BTreeMap::new(),
        operations: BTreeMap::new(),
        target,
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

/// What a pass saw and did, as every ConfigMap's report needs it.
struct Seen<'a> {
    /// Each reported connector's state on its destination.
    live: &'a LiveState,
    secrets: &'a BTreeMap<String, Vec<String>>,
    restarts: &'a BTreeMap<String, u32>,
    ledger: &'a Ledger,
    places: Places<'a>,
    as_values: &'a BTreeSet<String>,
}
