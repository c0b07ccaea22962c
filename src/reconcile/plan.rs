//! The reconciler's planning, pure: from what the ConfigMaps declare, what the worker runs and
//! what connect-gate created or adopted before (its [`Ledger`]), to the REST actions that
//! converge them. No I/O here, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::day2::{self, OffsetsChange, Record};
use super::ledger::{Ledger, Provenance};
use super::live::LiveState;
use crate::pipeline::check::verdict::{Connector, State};

/// What one data key of a ConfigMap declares, after the verdict pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decl {
    /// Accepted: the connector must exist with this config and state.
    Apply(Connector),
    /// The ConfigMap is `enabled: "false"`: the named connector must not exist.
    Absent(Option<String>),
    /// Rejected by the pipeline: neither applied nor deleted.
    Rejected(Option<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub key: String,
    pub decl: Decl,
}

/// One watched ConfigMap, as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmInput {
    pub name: String,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    pub has_finalizer: bool,
    /// One entry per data key (empty while deleting: nothing is applied from it any more).
    pub keys: Vec<Declared>,
    /// Connectors connect-gate applied from this ConfigMap: name -> data key (annotation). Which
    /// data key a name came from; never proof that connect-gate owns it (the ledger is).
    pub managed: BTreeMap<String, String>,
    /// Hash of the config last applied, per connector (annotation).
    pub applied: BTreeMap<String, String>,
    /// The day-2 tokens acted on, per connector (annotation).
    pub operations: BTreeMap<String, Record>,
}

impl CmInput {
    /// The connectors its keys declare and the pipeline accepted.
    pub fn accepted(&self) -> impl Iterator<Item = &Connector> {
        self.keys.iter().filter_map(|d| match &d.decl {
            Decl::Apply(c) => Some(c),
            _ => None,
        })
    }
}

/// Why a connector is written or deleted; becomes the Event's reason and note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cause {
    Created,
    Updated,
    /// It existed on the worker before connect-gate owned it; now this ConfigMap's config applies.
    Adopted,
    /// Its live config was changed behind connect-gate's back.
    DriftChanged,
    /// It was deleted behind connect-gate's back.
    DriftDeleted,
    KeyRemoved,
    Renamed,
    Disabled,
    ConfigMapDeleted,
    Unmanaged,
}

impl Cause {
    pub fn is_drift(self) -> bool {
        matches!(self, Cause::DriftChanged | Cause::DriftDeleted)
    }
}

/// Target state changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Pause,
    Resume,
    Stop,
}

impl Transition {
    pub fn verb(self) -> &'static str {
        match self {
            Transition::Pause => "pause",
            Transition::Resume => "resume",
            Transition::Stop => "stop",
        }
    }
}

/// Why a connector is restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `--auto-restart`: its failed parts.
    Failed,
    /// A declared `restart` token.
    Token(String),
    /// A file its references read changed: the worker resolves references only when it starts
    /// a connector, and the built-in providers give no TTL.
    Rotation,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `PUT /connectors/{name}/config`; when `stopped`, it does not exist yet and is created
    /// stopped instead (`POST /connectors` with `initial_state: STOPPED`).
    Put {
        cm: String,
        name: String,
        config: BTreeMap<String, String>,
        hash: String,
        cause: Cause,
        stopped: bool,
    },
    /// `DELETE /connectors/{name}`; `cm` is `None` for an unmanaged connector being pruned.
    Delete {
        cm: Option<String>,
        name: String,
        cause: Cause,
    },
    /// `PUT /connectors/{name}/{pause,resume,stop}`.
    State { cm: String, name: String, to: Transition },
    /// `POST /connectors/{name}/restart?includeTasks=true&onlyFailed=...`.
    Restart {
        cm: String,
        name: String,
        only_failed: bool,
        trigger: Trigger,
    },
    /// `DELETE` or `PATCH /connectors/{name}/offsets`, for a declared `offsets` token.
    Offsets {
        cm: String,
        name: String,
        token: String,
        change: OffsetsChange,
    },
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Put { name, .. }
            | Action::Delete { name, .. }
            | Action::State { name, .. }
            | Action::Restart { name, .. }
            | Action::Offsets { name, .. } => name,
        }
    }

    pub fn cm(&self) -> Option<&str> {
        match self {
            Action::Put { cm, .. }
            | Action::State { cm, .. }
            | Action::Restart { cm, .. }
            | Action::Offsets { cm, .. } => Some(cm),
            Action::Delete { cm, .. } => cm.as_deref(),
        }
    }
}

/// What to do with one ConfigMap's bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmPlan {
    pub name: String,
    pub deleting: bool,
    /// Add the finalizer (before anything is created from it).
    pub add_finalizer: bool,
    /// The managed map to record BEFORE acting: what it managed plus what is about to be
    /// created, so a crash between the PUT and the status write never loses a delete.
    pub managed_pre: BTreeMap<String, String>,
    /// Names to drop from the managed map once they are gone (their delete succeeded, or they
    /// were absent already, or another ConfigMap now declares them).
    pub release: BTreeSet<String>,
    /// Desired connectors of this ConfigMap (for status), with their config's [`fingerprint`].
    pub desired: BTreeMap<String, String>,
    /// `connect-gate.io/applied` before this pass's writes: the recorded hashes of the current
    /// scheme, and the current hash of every desired connector whose live config already is the
    /// desired one. So a hash of an older scheme, which may cover secret values, is dropped or
    /// replaced without any write to the worker.
    pub applied: BTreeMap<String, String>,
    /// Names its keys declare but that were rejected (kept as they are).
    pub rejected: BTreeSet<String>,
    /// Connectors it declares that were on the worker without being connect-gate's: taken over
    /// this pass.
    pub adopted: BTreeSet<String>,
    /// `connect-gate.io/operations` to record BEFORE acting: the tokens of the connectors it
    /// declares or manages, with an offsets operation about to start marked pending.
    pub operations: BTreeMap<String, Record>,
    /// Names its `connect-gate.io/connectors` lists for deletion that are not in the ledger:
    /// connect-gate did not create or adopt them, so they are not deleted, only dropped from the
    /// annotation and reported.
    pub unowned: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub cms: Vec<CmPlan>,
    /// In execution order: deletes first (a renamed connector's old name frees its resources),
    /// then writes, then state changes and restarts.
    pub actions: Vec<Action>,
    /// To add to the ledger BEFORE acting: what the actions create, and what is adopted.
    pub record: BTreeMap<String, Provenance>,
}

/// What the reconciler remembers between passes.
#[derive(Clone, Debug, Default)]
pub struct PlanMemory {
    /// Connectors whose config the worker answered 400 to and whose retry is not due yet:
    /// name -> [`fingerprint`] of that config. Sent again when due or when it changes.
    pub worker_rejected: BTreeMap<String, String>,
    /// FAILED connectors whose restart backoff has elapsed.
    pub restart_ready: BTreeSet<String>,
    pub day2: day2::Waiting,
    /// Running connectors whose referenced files changed since they were last started.
    pub rotated: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions {
    pub prune_unmanaged: bool,
    pub auto_restart: bool,
}

/// How `connect-gate.io/applied` hashes a config. Whoever can read the ConfigMap reads the hash,
/// so it must not let them test guesses of a secret value offline: keyed (`--hash-key-file`), or
/// without a key only over the values that came from no template input. The prefix names the
/// scheme, so a hash recorded under another one (such as the unkeyed `sha256:` of full configs
/// that earlier versions wrote) never equals a current one: it reads as unknown, never as drift.
#[derive(Clone, Debug)]
pub enum AppliedHash {
    /// HMAC-SHA256 of the whole config.
    Keyed(ring::hmac::Key),
    /// SHA-256 of the config with the values that depend on template inputs left out (those
    /// that differ between the real and the placeholder render: transformed ones too).
    NonSecret,
}

const KEYED: &str = "hmac-sha256:";
const NON_SECRET: &str = "sha256-nonsecret:";
/// Shorter keys are placeholders or typos, not secrets.
pub const MIN_HASH_KEY: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("the hash key has {len} bytes; at least {MIN_HASH_KEY} random bytes are needed")]
pub struct ShortHashKey {
    len: usize,
}

impl AppliedHash {
    pub fn keyed(key: &[u8]) -> Result<Self, ShortHashKey> {
        if key.len() < MIN_HASH_KEY {
            return Err(ShortHashKey { len: key.len() });
        }
        Ok(Self::Keyed(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)))
    }

    /// What `connect-gate.io/applied` records for `connector`.
    pub fn of(&self, connector: &Connector) -> String {
        self.of_config(&connector.config, &secret_keys(connector))
    }

    /// The hash of `config`, taking `secret_keys` as the keys whose values came from inputs.
    fn of_config(&self, config: &BTreeMap<String, String>, secret_keys: &BTreeSet<&String>) -> String {
        match self {
            Self::Keyed(key) => format!("{KEYED}{}", hex12(ring::hmac::sign(key, &canonical(config)).as_ref())),
            Self::NonSecret => {
                let covered: BTreeMap<&String, Option<&String>> = config
                    .iter()
                    .map(|(k, v)| (k, (!secret_keys.contains(k)).then_some(v)))
                    .collect();
                let digest = ring::digest::digest(&ring::digest::SHA256, &canonical(&covered));
                format!("{NON_SECRET}{}", hex12(digest.as_ref()))
            }
        }
    }

    /// Whether `hash` was made under this scheme (with this key or another).
    fn same_scheme(&self, hash: &str) -> bool {
        hash.starts_with(match self {
            Self::Keyed(_) => KEYED,
            Self::NonSecret => NON_SECRET,
        })
    }
}

/// The keys of `connector`'s config whose values depend on template inputs.
fn secret_keys(connector: &Connector) -> BTreeSet<&String> {
    connector
        .config
        .iter()
        .filter(|(_, v)| connector.secrets.contains(v))
        .map(|(k, _)| k)
        .collect()
}

/// A config's identity within this process (what the worker rejected), over every value, secret
/// ones too: it is never written anywhere.
pub fn fingerprint(config: &BTreeMap<String, String>) -> String {
    hex12(ring::digest::digest(&ring::digest::SHA256, &canonical(config)).as_ref())
}

fn canonical(map: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(map).expect("a map of strings serialises")
}

fn hex12(bytes: &[u8]) -> String {
    bytes[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The plan. `live` is the worker's state; names listed by the worker but missing from its
/// expanded listing must have been resolved by the caller (present or absent) before this.
/// Only what `ledger` owns, or what a ConfigMap's data declares (adopted first), is ever deleted
/// on a ConfigMap's behalf.
pub fn plan(
    cms: &[CmInput],
    live: &LiveState,
    ledger: &Ledger,
    memory: &PlanMemory,
    options: PlanOptions,
    hash: &AppliedHash,
) -> Plan {
    // Everything declared anywhere: never deleted because some other ConfigMap let go of it.
    let mut desired: BTreeMap<&str, (&CmInput, &Connector)> = BTreeMap::new();
    let mut protected: BTreeSet<&str> = BTreeSet::new();
    for cm in cms.iter().filter(|cm| !cm.deleting) {
        for d in &cm.keys {
            match &d.decl {
                Decl::Apply(c) => {
                    desired.insert(&c.name, (cm, c));
                    protected.insert(&c.name);
                }
                Decl::Rejected(Some(name)) => {
                    protected.insert(name);
                }
                Decl::Absent(_) | Decl::Rejected(None) => {}
            }
        }
    }
    let all_managed: BTreeSet<&str> = cms
        .iter()
        .flat_map(|cm| cm.managed.keys().map(String::as_str))
        .collect();

    let mut plan = Plan::default();
    let mut deletes: Vec<Action> = Vec::new();
    let mut deleting_names: BTreeSet<String> = BTreeSet::new();
    let mut delete = |cm: &str, name: &str, cause: Cause, cm_plan: &mut CmPlan| {
        cm_plan.release.insert(name.to_string());
        if !live.contains_key(name) {
            return;
        }
        if !ledger.owns(name) && !cm_plan.adopted.contains(name) {
            cm_plan.unowned.insert(name.to_string());
            return;
        }
        if deleting_names.insert(name.to_string()) {
            deletes.push(Action::Delete {
                cm: Some(cm.to_string()),
                name: name.to_string(),
                cause,
            });
        }
    };

    for cm in cms {
        let mut cm_plan = CmPlan {
            name: cm.name.clone(),
            deleting: cm.deleting,
            managed_pre: cm.managed.clone(),
            applied: cm
                .applied
                .iter()
                .filter(|(_, h)| hash.same_scheme(h))
                .map(|(n, h)| (n.clone(), h.clone()))
                .collect(),
            // Kept while it declares or manages the connector: a token must not act again
            // because its template failed for a while.
            operations: cm
                .operations
                .iter()
                .filter(|(n, _)| cm.managed.contains_key(*n) || declares(cm, n))
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect(),
            ..CmPlan::default()
        };
        if cm.deleting {
            for name in cm.managed.keys() {
                if protected.contains(name.as_str()) {
                    cm_plan.release.insert(name.clone());
                } else {
                    delete(&cm.name, name, Cause::ConfigMapDeleted, &mut cm_plan);
                }
            }
            plan.cms.push(cm_plan);
            continue;
        }
        let by_key: BTreeMap<&str, &Decl> = cm.keys.iter().map(|d| (d.key.as_str(), &d.decl)).collect();
        for d in &cm.keys {
            match &d.decl {
                Decl::Apply(c) => {
                    cm_plan.managed_pre.insert(c.name.clone(), d.key.clone());
                    cm_plan.desired.insert(c.name.clone(), fingerprint(&c.config));
                    if live.get(&c.name).is_some_and(|l| l.config == c.config) {
                        cm_plan.applied.insert(c.name.clone(), hash.of(c));
                    }
                    let applied_here = desired
                        .get(c.name.as_str())
                        .is_some_and(|(owner, _)| owner.name == cm.name);
                    if applied_here && live.contains_key(&c.name) && !ledger.owns(&c.name) {
                        cm_plan.adopted.insert(c.name.clone());
                    }
                }
                Decl::Absent(Some(name)) if !protected.contains(name.as_str()) => {
                    // A declaration, judged at admission like any: a connector of that name that
                    // is not connect-gate's is adopted, then deleted as declared.
                    if live.contains_key(name) && !ledger.owns(name) {
                        cm_plan.adopted.insert(name.clone());
                    }
                    delete(&cm.name, name, Cause::Disabled, &mut cm_plan);
                }
                Decl::Rejected(Some(name)) => {
                    cm_plan.rejected.insert(name.clone());
                }
                _ => {}
            }
        }
        for (name, key) in &cm.managed {
            if let Some((owner, _)) = desired.get(name.as_str()) {
                if owner.name != cm.name {
                    // Moved to another ConfigMap, which now owns it.
                    cm_plan.release.insert(name.clone());
                }
                continue;
            }
            if protected.contains(name.as_str()) {
                continue;
            }
            let cause = match by_key.get(key.as_str()) {
                None => Cause::KeyRemoved,
                Some(Decl::Apply(_)) => Cause::Renamed,
                Some(Decl::Absent(_)) => Cause::Disabled,
                Some(Decl::Rejected(_)) => continue,
            };
            delete(&cm.name, name, cause, &mut cm_plan);
        }
        // Only a ConfigMap that has (or is about to have) connectors needs its delete held
        // until they are gone; a disabled one that manages nothing is written nothing.
        cm_plan.add_finalizer = !cm.has_finalizer && !cm_plan.managed_pre.is_empty();
        plan.cms.push(cm_plan);
    }

    if options.prune_unmanaged {
        for name in live.keys() {
            let known = desired.contains_key(name.as_str())
                || protected.contains(name.as_str())
                || all_managed.contains(name.as_str());
            if !known && deleting_names.insert(name.clone()) {
                deletes.push(Action::Delete {
                    cm: None,
                    name: name.clone(),
                    cause: Cause::Unmanaged,
                });
            }
        }
    }
    plan.actions.extend(deletes);
    for p in &plan.cms {
        plan.record
            .extend(p.adopted.iter().map(|n| (n.clone(), Provenance::Adopted)));
    }

    let mut writes = Vec::new();
    let mut states = Vec::new();
    for (name, (cm, connector)) in &desired {
        let applied = hash.of(connector);
        // Applied by connect-gate before: then a difference was made behind its back.
        let recorded = cm.applied.get(*name) == Some(&applied);
        let blocked = memory.worker_rejected.get(*name) == Some(&fingerprint(&connector.config));
        let step = day2::step(
            name,
            connector.restart.as_ref(),
            connector.offsets.as_ref(),
            live.get(*name),
            cm.operations.get(*name).unwrap_or(&Record::default()),
            &memory.day2,
        );
        let put = |cause| Action::Put {
            cm: cm.name.clone(),
            name: name.to_string(),
            config: connector.config.clone(),
            hash: applied.clone(),
            cause,
            stopped: step.create_stopped,
        };
        let state = connector.state.unwrap_or_default();
        let transition = |to| Action::State {
            cm: cm.name.clone(),
            name: name.to_string(),
            to,
        };
        let owned = ledger.owns(name);
        match live.get(*name) {
            None => {
                if blocked {
                    continue;
                }
                if !owned {
                    plan.record.insert(name.to_string(), Provenance::Created);
                }
                writes.push(put(if recorded { Cause::DriftDeleted } else { Cause::Created }));
                match state {
                    _ if step.holds_state => {}
                    State::Running => {}
                    State::Paused => states.push(transition(Transition::Pause)),
                    State::Stopped => states.push(transition(Transition::Stop)),
                }
            }
            Some(l) => {
                if l.config != connector.config && !blocked {
                    // Without a key, a difference in secret values only is not seen by the hash:
                    // a rotated secret, not drift.
                    let seen = hash.of_config(&l.config, &secret_keys(connector)) != applied;
                    writes.push(put(if !owned {
                        Cause::Adopted
                    } else if recorded && seen {
                        Cause::DriftChanged
                    } else {
                        Cause::Updated
                    }));
                }
                let Some(status) = &l.status else {
                    // Not written yet: its state is looked at next pass.
                    record_operations(&mut plan.cms, &cm.name, name, step.record);
                    continue;
                };
                let live_state = status.connector.state.as_str();
                let to = match (state, live_state) {
                    // An offsets operation holds it stopped until done.
                    _ if step.holds_state => step.stop.then_some(Transition::Stop),
                    (_, "UNASSIGNED" | "RESTARTING") => None,
                    (State::Running, "PAUSED" | "STOPPED") => Some(Transition::Resume),
                    (State::Paused, s) if s != "PAUSED" => Some(Transition::Pause),
                    (State::Stopped, s) if s != "STOPPED" => Some(Transition::Stop),
                    _ => None,
                };
                if let Some(to) = to {
                    states.push(transition(to));
                } else if let Some((token, change)) = &step.offsets {
                    states.push(Action::Offsets {
                        cm: cm.name.clone(),
                        name: name.to_string(),
                        token: token.clone(),
                        change: change.clone(),
                    });
                } else if let Some(restart) = &step.restart {
                    states.push(Action::Restart {
                        cm: cm.name.clone(),
                        name: name.to_string(),
                        only_failed: restart.only_failed,
                        trigger: Trigger::Token(restart.token.clone()),
                    });
                } else if state == State::Running && !step.holds_state && memory.rotated.contains(*name) {
                    states.push(Action::Restart {
                        cm: cm.name.clone(),
                        name: name.to_string(),
                        only_failed: false,
                        trigger: Trigger::Rotation,
                    });
                } else if state == State::Running
                    && !step.holds_state
                    && options.auto_restart
                    && status.failed()
                    && memory.restart_ready.contains(*name)
                {
                    states.push(Action::Restart {
                        cm: cm.name.clone(),
                        name: name.to_string(),
                        only_failed: true,
                        trigger: Trigger::Failed,
                    });
                }
            }
        }
        record_operations(&mut plan.cms, &cm.name, name, step.record);
    }
    plan.actions.extend(writes);
    plan.actions.extend(states);
    plan
}

/// Whether `cm`'s data declares `name` (applied or rejected).
fn declares(cm: &CmInput, name: &str) -> bool {
    cm.keys.iter().any(|d| match &d.decl {
        Decl::Apply(c) => c.name == name,
        Decl::Rejected(n) | Decl::Absent(n) => n.as_deref() == Some(name),
    })
}

/// Puts a connector's changed operations record into its ConfigMap's plan.
fn record_operations(cms: &mut [CmPlan], cm: &str, name: &str, record: Option<Record>) {
    if let (Some(record), Some(p)) = (record, cms.iter_mut().find(|p| p.name == cm)) {
        p.operations.insert(name.to_string(), record);
    }
}

#[cfg(test)]
mod tests;
