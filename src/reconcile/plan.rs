//! The reconciler's planning, pure: from what the ConfigMaps declare, what the worker runs and
//! what connect-gate created or adopted before (its [`Ledger`]), to the REST actions that
//! converge them. No I/O here, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ledger::{Ledger, Provenance};
use crate::pipeline::verdict::{Connector, State};

/// A connector's status as `GET /connectors?expand=status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct LiveStatus {
    pub connector: StateTrace,
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct StateTrace {
    pub state: String,
    #[serde(default)]
    pub trace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    pub id: i64,
    pub state: String,
    #[serde(default)]
    pub trace: Option<String>,
}

impl LiveStatus {
    /// The connector or one of its tasks is FAILED.
    pub fn failed(&self) -> bool {
        self.connector.state == "FAILED" || self.tasks.iter().any(|t| t.state == "FAILED")
    }
}

/// A connector the worker has: its config as Connect returns it (all strings, `name` included)
/// and its status, which is `None` while the worker has not written it yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub config: BTreeMap<String, String>,
    pub status: Option<LiveStatus>,
}

/// Every connector on the worker; a name not in the map does not exist.
pub type LiveState = BTreeMap<String, Live>;

#[derive(Deserialize)]
struct Expanded {
    info: Option<ExpandedInfo>,
    status: Option<LiveStatus>,
}

#[derive(Deserialize)]
struct ExpandedInfo {
    config: BTreeMap<String, String>,
}

/// Parses the body of `GET /connectors?expand=info&expand=status`. Connect leaves out a
/// connector whose info or status it cannot read yet; such names are simply not in the result
/// (the caller must not take them for absent: see `missing_from_listing`).
pub fn parse_expanded(body: &[u8]) -> Result<LiveState, serde_json::Error> {
    let raw: BTreeMap<String, Expanded> = serde_json::from_slice(body)?;
    Ok(raw
        .into_iter()
        .filter_map(|(name, e)| {
            let info = e.info?;
            Some((
                name,
                Live {
                    config: info.config,
                    status: e.status,
                },
            ))
        })
        .collect())
}

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `PUT /connectors/{name}/config`.
    Put {
        cm: String,
        name: String,
        config: BTreeMap<String, String>,
        hash: String,
        cause: Cause,
    },
    /// `DELETE /connectors/{name}`; `cm` is `None` for an unmanaged connector being pruned.
    Delete {
        cm: Option<String>,
        name: String,
        cause: Cause,
    },
    /// `PUT /connectors/{name}/{pause,resume,stop}`.
    State { cm: String, name: String, to: Transition },
    /// `POST /connectors/{name}/restart?includeTasks=true&onlyFailed=true`.
    Restart { cm: String, name: String },
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Put { name, .. }
            | Action::Delete { name, .. }
            | Action::State { name, .. }
            | Action::Restart { name, .. } => name,
        }
    }

    pub fn cm(&self) -> Option<&str> {
        match self {
            Action::Put { cm, .. } | Action::State { cm, .. } | Action::Restart { cm, .. } => Some(cm),
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
        let put = |cause| Action::Put {
            cm: cm.name.clone(),
            name: name.to_string(),
            config: connector.config.clone(),
            hash: applied.clone(),
            cause,
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
                let Some(status) = &l.status else { continue };
                let live_state = status.connector.state.as_str();
                let to = match (state, live_state) {
                    (_, "UNASSIGNED" | "RESTARTING") => None,
                    (State::Running, "PAUSED" | "STOPPED") => Some(Transition::Resume),
                    (State::Paused, s) if s != "PAUSED" => Some(Transition::Pause),
                    (State::Stopped, s) if s != "STOPPED" => Some(Transition::Stop),
                    _ => None,
                };
                if let Some(to) = to {
                    states.push(transition(to));
                } else if state == State::Running
                    && options.auto_restart
                    && status.failed()
                    && memory.restart_ready.contains(*name)
                {
                    states.push(Action::Restart {
                        cm: cm.name.clone(),
                        name: name.to_string(),
                    });
                }
            }
        }
    }
    plan.actions.extend(writes);
    plan.actions.extend(states);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(name: &str, extra: &[(&str, &str)], state: Option<State>) -> Connector {
        let mut config: BTreeMap<String, String> = [("connector.class", "FileStreamSource"), ("name", name)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Connector {
            name: name.into(),
            config,
            state,
            secrets: vec![],
        }
    }

    fn apply(key: &str, c: Connector) -> Declared {
        Declared {
            key: key.into(),
            decl: Decl::Apply(c),
        }
    }

    fn cm(name: &str, keys: Vec<Declared>, managed: &[(&str, &str)]) -> CmInput {
        CmInput {
            name: name.into(),
            deleting: false,
            has_finalizer: true,
            keys,
            managed: managed.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect(),
            applied: BTreeMap::new(),
        }
    }

    fn live_of(c: &Connector, state: &str) -> Live {
        Live {
            config: c.config.clone(),
            status: Some(LiveStatus {
                connector: StateTrace {
                    state: state.into(),
                    trace: None,
                },
                tasks: vec![],
            }),
        }
    }

    fn keyed() -> AppliedHash {
        AppliedHash::keyed(&[7; MIN_HASH_KEY]).unwrap()
    }

    /// Plans as if connect-gate had created everything live and everything recorded, as before
    /// there was a ledger; the ownership tests pass their own.
    fn run(cms: &[CmInput], live: &LiveState) -> Plan {
        plan_with(cms, live, PlanOptions::default())
    }

    fn owning_all(cms: &[CmInput], live: &LiveState) -> Ledger {
        let managed = cms.iter().flat_map(|cm| cm.managed.keys());
        live.keys()
            .chain(managed)
            .map(|n| (n.clone(), Provenance::Created))
            .collect()
    }

    fn summary(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Put { name, cause, .. } => format!("put {name} {cause:?}"),
                Action::Delete { name, cause, .. } => format!("delete {name} {cause:?}"),
                Action::State { name, to, .. } => format!("{} {name}", to.verb()),
                Action::Restart { name, .. } => format!("restart {name}"),
            })
            .collect()
    }

    #[test]
    fn creates_what_is_missing_and_records_it_before_acting() {
        let a = connector("a", &[], None);
        let cms = [cm("cm", vec![apply("a.json", a)], &[])];
        let plan = run(&cms, &LiveState::new());
        assert_eq!(summary(&plan), ["put a Created"]);
        assert_eq!(plan.cms[0].managed_pre.get("a").map(String::as_str), Some("a.json"));
        assert!(!plan.cms[0].add_finalizer);
    }

    fn ledger(entries: &[(&str, Provenance)]) -> Ledger {
        entries.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    fn with_ledger(cms: &[CmInput], live: &LiveState, ledger: &Ledger) -> Plan {
        plan(
            cms,
            live,
            ledger,
            &PlanMemory::default(),
            PlanOptions::default(),
            &keyed(),
        )
    }

    #[test]
    fn creating_records_the_name_in_the_ledger_before_acting() {
        let a = connector("a", &[], None);
        let cms = [cm("cm", vec![apply("a.json", a)], &[])];
        let plan = with_ledger(&cms, &LiveState::new(), &Ledger::default());
        assert_eq!(summary(&plan), ["put a Created"]);
        assert_eq!(plan.record, [("a".to_string(), Provenance::Created)].into());
        // Already owned (deleted behind its back): recreated, nothing new to record.
        let owned = ledger(&[("a", Provenance::Adopted)]);
        let plan = with_ledger(&cms, &LiveState::new(), &owned);
        assert_eq!(summary(&plan), ["put a Created"]);
        assert!(plan.record.is_empty());
    }

    #[test]
    fn a_name_only_the_annotation_lists_is_never_deleted_and_is_reported() {
        let a = connector("a", &[], None);
        let stranger = connector("stranger", &[], None);
        let live: LiveState = [
            ("a".to_string(), live_of(&a, "RUNNING")),
            ("stranger".into(), live_of(&stranger, "RUNNING")),
        ]
        .into();
        let owned = ledger(&[("a", Provenance::Created)]);
        // Forged into the annotation of a ConfigMap whose key `nokey` does not exist.
        let forged = cm(
            "cm",
            vec![apply("a.json", a.clone())],
            &[("a", "a.json"), ("stranger", "nokey")],
        );
        let plan = with_ledger(std::slice::from_ref(&forged), &live, &owned);
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert_eq!(plan.cms[0].unowned, ["stranger".to_string()].into());
        assert!(plan.cms[0].release.contains("stranger"), "dropped from the annotation");
        assert!(plan.record.is_empty());
        // Nor when its ConfigMap is deleted, or its key renamed: only `a`, connect-gate's own, goes.
        let mut deleted = forged;
        deleted.deleting = true;
        deleted.keys.clear();
        let plan = with_ledger(&[deleted], &live, &owned);
        assert_eq!(summary(&plan), ["delete a ConfigMapDeleted"]);
        assert_eq!(plan.cms[0].unowned, ["stranger".to_string()].into());
        let renamed = cm("cm", vec![apply("k", a)], &[("stranger", "k")]);
        let plan = with_ledger(&[renamed], &live, &owned);
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert_eq!(plan.cms[0].unowned, ["stranger".to_string()].into());
        // A forged name that is not on the worker is simply released, with nothing to report.
        let gone = cm("cm", vec![], &[("ghost", "nokey")]);
        let plan = with_ledger(&[gone], &live, &owned);
        assert!(plan.actions.is_empty() && plan.cms[0].unowned.is_empty());
        assert!(plan.cms[0].release.contains("ghost"));
    }

    #[test]
    fn a_declared_connector_already_on_the_worker_is_adopted_then_owned() {
        let wanted = connector("x", &[("topic", "mine")], None);
        let mut theirs = live_of(&wanted, "RUNNING");
        theirs.config.insert("topic".into(), "theirs".into());
        let live: LiveState = [("x".to_string(), theirs)].into();
        let cms = [cm("cm", vec![apply("x.json", wanted.clone())], &[])];
        let run = |live: &LiveState, owned: &Ledger| with_ledger(&cms, live, owned);
        let plan = run(&live, &Ledger::default());
        assert_eq!(summary(&plan), ["put x Adopted"]);
        assert_eq!(plan.record, [("x".to_string(), Provenance::Adopted)].into());
        assert_eq!(plan.cms[0].adopted, ["x".to_string()].into());
        // Same config: adopted without a write.
        let same: LiveState = [("x".to_string(), live_of(&wanted, "RUNNING"))].into();
        let plan = run(&same, &Ledger::default());
        assert!(plan.actions.is_empty());
        assert_eq!(plan.cms[0].adopted, ["x".to_string()].into());
        // Owned from then on: not adopted again, and deleted with its ConfigMap.
        let owned = ledger(&[("x", Provenance::Adopted)]);
        assert!(run(&same, &owned).cms[0].adopted.is_empty());
        let mut gone = cm("cm", vec![], &[("x", "x.json")]);
        gone.deleting = true;
        let plan = with_ledger(&[gone], &same, &owned);
        assert_eq!(summary(&plan), ["delete x ConfigMapDeleted"]);
    }

    #[test]
    fn disabling_a_connector_connect_gate_does_not_own_adopts_then_deletes_it() {
        let x = connector("x", &[], None);
        let live: LiveState = [("x".to_string(), live_of(&x, "RUNNING"))].into();
        let keys = vec![Declared {
            key: "x.json".into(),
            decl: Decl::Absent(Some("x".into())),
        }];
        let plan = with_ledger(&[cm("cm", keys, &[])], &live, &Ledger::default());
        assert_eq!(summary(&plan), ["delete x Disabled"]);
        assert_eq!(plan.record, [("x".to_string(), Provenance::Adopted)].into());
        assert!(plan.cms[0].unowned.is_empty());
    }

    #[test]
    fn unchanged_connectors_cost_zero_writes() {
        let a = connector("a", &[("tasks.max", "1")], None);
        let p = connector("p", &[], Some(State::Paused));
        let s = connector("s", &[], Some(State::Stopped));
        let live: LiveState = [
            ("a".to_string(), live_of(&a, "RUNNING")),
            ("p".into(), live_of(&p, "PAUSED")),
            ("s".into(), live_of(&s, "STOPPED")),
        ]
        .into();
        let cms = [cm(
            "cm",
            vec![apply("a", a), apply("p", p), apply("s", s)],
            &[("a", "a"), ("p", "p"), ("s", "s")],
        )];
        assert!(run(&cms, &live).actions.is_empty());
    }

    #[test]
    fn a_changed_config_is_an_update_unless_it_was_applied_before_then_it_is_drift() {
        let a = connector("a", &[("topic", "new")], None);
        let mut old = live_of(&a, "RUNNING");
        old.config.insert("topic".into(), "old".into());
        let live: LiveState = [("a".to_string(), old)].into();
        let mut input = cm("cm", vec![apply("a", a.clone())], &[("a", "a")]);
        assert_eq!(summary(&run(std::slice::from_ref(&input), &live)), ["put a Updated"]);
        input.applied.insert("a".into(), keyed().of(&a));
        assert_eq!(
            summary(&run(std::slice::from_ref(&input), &live)),
            ["put a DriftChanged"]
        );
        assert_eq!(summary(&run(&[input], &LiveState::new())), ["put a DriftDeleted"]);
    }

    #[test]
    fn declared_state_is_applied_and_waits_for_a_status() {
        let p = connector("p", &[], Some(State::Paused));
        let r = connector("r", &[], None);
        let s = connector("s", &[], Some(State::Stopped));
        let u = connector("u", &[], Some(State::Paused));
        let mut unknown = live_of(&u, "RUNNING");
        unknown.status = None;
        let live: LiveState = [
            ("p".to_string(), live_of(&p, "RUNNING")),
            ("r".into(), live_of(&r, "STOPPED")),
            ("s".into(), live_of(&s, "PAUSED")),
            ("u".into(), unknown),
        ]
        .into();
        let cms = [cm(
            "cm",
            vec![apply("p", p), apply("r", r), apply("s", s), apply("u", u)],
            &[],
        )];
        assert_eq!(summary(&run(&cms, &live)), ["pause p", "resume r", "stop s"]);
        // Created paused: the pause follows the PUT in the same pass.
        let q = connector("q", &[], Some(State::Paused));
        assert_eq!(
            summary(&run(&[cm("cm", vec![apply("q", q)], &[])], &LiveState::new())),
            ["put q Created", "pause q"]
        );
    }

    #[test]
    fn deletes_exactly_what_it_created() {
        let a = connector("a", &[], None);
        let b = connector("b", &[], None);
        let other = connector("other", &[], None);
        let live: LiveState = [
            ("a".to_string(), live_of(&a, "RUNNING")),
            ("b".into(), live_of(&b, "RUNNING")),
            ("other".into(), live_of(&other, "RUNNING")),
        ]
        .into();
        // Key b removed: b deleted; `other` never managed: left alone.
        let cms = [cm("cm", vec![apply("a", a.clone())], &[("a", "a"), ("b", "b")])];
        let plan = run(&cms, &live);
        assert_eq!(summary(&plan), ["delete b KeyRemoved"]);
        assert!(plan.cms[0].release.contains("b"));
        // ...unless pruning.
        let pruned = plan_with(
            &cms,
            &live,
            PlanOptions {
                prune_unmanaged: true,
                auto_restart: false,
            },
        );
        assert_eq!(summary(&pruned), ["delete b KeyRemoved", "delete other Unmanaged"]);
        // A managed name already gone is released without a call.
        let plan = run(&cms, &[("a".to_string(), live_of(&a, "RUNNING"))].into());
        assert!(plan.actions.is_empty());
        assert!(plan.cms[0].release.contains("b"));
    }

    fn plan_with(cms: &[CmInput], live: &LiveState, options: PlanOptions) -> Plan {
        plan(
            cms,
            live,
            &owning_all(cms, live),
            &PlanMemory::default(),
            options,
            &keyed(),
        )
    }

    #[test]
    fn rename_deletes_the_old_and_creates_the_new() {
        let old = connector("old", &[], None);
        let new = connector("new", &[], None);
        let live: LiveState = [("old".to_string(), live_of(&old, "RUNNING"))].into();
        let cms = [cm("cm", vec![apply("k", new)], &[("old", "k")])];
        let plan = run(&cms, &live);
        assert_eq!(summary(&plan), ["delete old Renamed", "put new Created"]);
        assert_eq!(plan.cms[0].managed_pre.len(), 2);
    }

    #[test]
    fn disabled_configmaps_delete_their_connectors_even_when_names_cannot_be_rendered() {
        let a = connector("a", &[], None);
        let b = connector("b", &[], None);
        let live: LiveState = [
            ("a".to_string(), live_of(&a, "RUNNING")),
            ("b".into(), live_of(&b, "RUNNING")),
        ]
        .into();
        let keys = vec![
            Declared {
                key: "a".into(),
                decl: Decl::Absent(Some("a".into())),
            },
            Declared {
                key: "b".into(),
                decl: Decl::Absent(None),
            },
        ];
        let cms = [cm("cm", keys, &[("a", "a"), ("b", "b")])];
        assert_eq!(summary(&run(&cms, &live)), ["delete a Disabled", "delete b Disabled"]);
    }

    #[test]
    fn rejected_connectors_are_neither_applied_nor_deleted() {
        let a = connector("a", &[], None);
        let live: LiveState = [("a".to_string(), live_of(&a, "RUNNING"))].into();
        for decl in [Decl::Rejected(Some("a".into())), Decl::Rejected(None)] {
            let cms = [cm("cm", vec![Declared { key: "a".into(), decl }], &[("a", "a")])];
            let plan = plan_with(
                &cms,
                &live,
                PlanOptions {
                    prune_unmanaged: true,
                    auto_restart: true,
                },
            );
            assert!(plan.actions.is_empty(), "{plan:?}");
            assert!(plan.cms[0].release.is_empty());
        }
    }

    #[test]
    fn deleted_configmaps_delete_their_connectors_but_not_ones_moved_elsewhere() {
        let a = connector("a", &[], None);
        let moved = connector("moved", &[], None);
        let live: LiveState = [
            ("a".to_string(), live_of(&a, "RUNNING")),
            ("moved".into(), live_of(&moved, "RUNNING")),
        ]
        .into();
        let mut gone = cm("gone", vec![], &[("a", "a"), ("moved", "m")]);
        gone.deleting = true;
        gone.has_finalizer = true;
        let cms = [gone, cm("new", vec![apply("m", moved)], &[])];
        let plan = run(&cms, &live);
        assert_eq!(summary(&plan), ["delete a ConfigMapDeleted"]);
        assert_eq!(plan.cms[0].release, ["a".to_string(), "moved".into()].into());
        assert!(!plan.cms[0].add_finalizer);
    }

    #[test]
    fn a_connector_moved_between_configmaps_is_released_by_the_old_one_and_not_deleted() {
        let a = connector("a", &[], None);
        let live: LiveState = [("a".to_string(), live_of(&a, "RUNNING"))].into();
        let cms = [cm("old", vec![], &[("a", "k")]), cm("new", vec![apply("k", a)], &[])];
        let plan = run(&cms, &live);
        assert!(plan.actions.is_empty());
        assert!(plan.cms[0].release.contains("a"));
        assert!(plan.cms[1].managed_pre.contains_key("a"));
    }

    #[test]
    fn the_finalizer_is_added_before_anything_is_created_and_only_where_something_is_managed() {
        let a = connector("a", &[], None);
        let mut creating = cm("creating", vec![apply("a", a.clone())], &[]);
        creating.has_finalizer = false;
        let mut managing = cm("managing", vec![], &[("b", "b")]);
        managing.has_finalizer = false;
        let absent = Declared {
            key: "c".into(),
            decl: Decl::Absent(Some("c".into())),
        };
        let mut disabled = cm("disabled", vec![absent], &[]);
        disabled.has_finalizer = false;
        let plan = run(&[creating, managing, disabled], &LiveState::new());
        let added: Vec<bool> = plan.cms.iter().map(|p| p.add_finalizer).collect();
        assert_eq!(added, [true, true, false]);
    }

    #[test]
    fn a_config_the_worker_rejected_is_not_sent_again_before_its_retry_unless_it_changes() {
        let a = connector("a", &[], None);
        let cms = [cm("cm", vec![apply("a", a.clone())], &[])];
        let mut memory = PlanMemory::default();
        memory.worker_rejected.insert("a".into(), fingerprint(&a.config));
        assert!(
            plan(
                &cms,
                &LiveState::new(),
                &Ledger::default(),
                &memory,
                PlanOptions::default(),
                &keyed()
            )
            .actions
            .is_empty()
        );
        memory.worker_rejected.insert("a".into(), "older".into());
        assert_eq!(
            summary(&plan(
                &cms,
                &LiveState::new(),
                &Ledger::default(),
                &memory,
                PlanOptions::default(),
                &keyed()
            )),
            ["put a Created"]
        );
        // A fixed secret value is a change too, even to a hash that leaves it out.
        memory
            .worker_rejected
            .insert("a".into(), fingerprint(&with_secret("a", "bad").config));
        let fixed = [cm("cm", vec![apply("a", with_secret("a", "fixed"))], &[])];
        let unkeyed = plan(
            &fixed,
            &LiveState::new(),
            &Ledger::default(),
            &memory,
            PlanOptions::default(),
            &AppliedHash::NonSecret,
        );
        assert_eq!(summary(&unkeyed), ["put a Created"]);
    }

    #[test]
    fn failed_connectors_are_restarted_only_when_asked_and_due() {
        let a = connector("a", &[], None);
        let mut failed = live_of(&a, "RUNNING");
        failed.status.as_mut().unwrap().tasks.push(TaskStatus {
            id: 0,
            state: "FAILED".into(),
            trace: Some("boom".into()),
        });
        let live: LiveState = [("a".to_string(), failed)].into();
        let cms = [cm("cm", vec![apply("a", a)], &[])];
        let on = PlanOptions {
            prune_unmanaged: false,
            auto_restart: true,
        };
        assert!(
            plan(
                &cms,
                &live,
                &owning_all(&cms, &live),
                &PlanMemory::default(),
                on,
                &keyed()
            )
            .actions
            .is_empty()
        );
        let memory = PlanMemory {
            restart_ready: ["a".to_string()].into(),
            ..PlanMemory::default()
        };
        assert_eq!(
            summary(&plan(&cms, &live, &owning_all(&cms, &live), &memory, on, &keyed())),
            ["restart a"]
        );
        assert!(
            plan(
                &cms,
                &live,
                &owning_all(&cms, &live),
                &memory,
                PlanOptions::default(),
                &keyed()
            )
            .actions
            .is_empty()
        );
    }

    #[test]
    fn parses_the_expanded_listing_and_skips_entries_without_info() {
        let body = br#"{
            "a": {"info": {"name": "a", "config": {"name": "a", "tasks.max": "1"}, "tasks": [], "type": "source"},
                  "status": {"name": "a", "connector": {"state": "RUNNING", "worker_id": "w"},
                             "tasks": [{"id": 0, "state": "FAILED", "worker_id": "w", "trace": "x\ny"}], "type": "source"}},
            "b": {"info": {"name": "b", "config": {"name": "b"}, "tasks": [], "type": "sink"}},
            "c": {}
        }"#;
        let live = parse_expanded(body).unwrap();
        assert_eq!(live.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(live["a"].status.as_ref().unwrap().failed());
        assert!(live["b"].status.is_none());
    }

    fn with_secret(name: &str, password: &str) -> Connector {
        let mut c = connector(name, &[("password", password), ("topic", "t")], None);
        c.secrets.push(password.into());
        c
    }

    #[test]
    fn the_applied_hash_is_keyed_or_leaves_secret_values_out_and_never_contains_the_config() {
        let a = with_secret("a", "hunter2-very-secret");
        let h = keyed().of(&a);
        assert_eq!(h, keyed().of(&a.clone()));
        assert!(
            h.starts_with("hmac-sha256:") && h.len() == "hmac-sha256:".len() + 24,
            "{h}"
        );
        assert!(!h.contains("hunter2"));
        assert_ne!(h, keyed().of(&with_secret("a", "other")));
        let other_key = AppliedHash::keyed(&[8; MIN_HASH_KEY]).unwrap();
        assert_ne!(h, other_key.of(&a), "a hash is only reproducible with the key");

        let n = AppliedHash::NonSecret.of(&a);
        assert!(n.starts_with("sha256-nonsecret:"), "{n}");
        assert_eq!(
            n,
            AppliedHash::NonSecret.of(&with_secret("a", "other")),
            "secret values are left out"
        );
        let mut moved = with_secret("a", "hunter2-very-secret");
        moved.config.insert("topic".into(), "u".into());
        assert_ne!(n, AppliedHash::NonSecret.of(&moved), "other values are covered");
    }

    #[test]
    fn a_short_hash_key_is_refused_without_showing_it() {
        let err = AppliedHash::keyed(b"changeme").unwrap_err().to_string();
        assert_eq!(err, "the hash key has 8 bytes; at least 32 random bytes are needed");
    }

    #[test]
    fn a_hash_recorded_under_another_scheme_is_never_drift_and_is_replaced_once_in_sync() {
        let a = with_secret("a", "s3cret");
        // What earlier versions recorded: the unkeyed SHA-256 of the whole config.
        let old = format!("sha256:{}", fingerprint(&a.config));
        let mut input = cm("cm", vec![apply("a", a.clone())], &[("a", "a")]);
        input.applied.insert("a".into(), old.clone());
        input.applied.insert("rejected-since".into(), old);
        let mut changed = live_of(&a, "RUNNING");
        changed.config.insert("topic".into(), "changed".into());
        let live: LiveState = [("a".to_string(), changed)].into();
        assert_eq!(summary(&run(std::slice::from_ref(&input), &live)), ["put a Updated"]);
        assert_eq!(
            summary(&run(std::slice::from_ref(&input), &LiveState::new())),
            ["put a Created"]
        );
        // In sync: nothing to do on the worker, and the old hash is replaced by the current one.
        let live: LiveState = [("a".to_string(), live_of(&a, "RUNNING"))].into();
        let plan = run(std::slice::from_ref(&input), &live);
        assert!(plan.actions.is_empty());
        assert_eq!(plan.cms[0].applied, [("a".to_string(), keyed().of(&a))].into());
        // So is one made without a key, once a key is given.
        input.applied = [("a".to_string(), AppliedHash::NonSecret.of(&a))].into();
        assert_eq!(plan.cms[0].applied, run(&[input], &live).cms[0].applied);
    }

    #[test]
    fn without_a_key_a_changed_secret_value_is_an_update_and_any_other_change_is_drift() {
        let a = with_secret("a", "rotated");
        let mut input = cm("cm", vec![apply("a", a.clone())], &[("a", "a")]);
        input.applied.insert("a".into(), AppliedHash::NonSecret.of(&a));
        let unkeyed = |live: &LiveState| {
            summary(&plan(
                std::slice::from_ref(&input),
                live,
                &owning_all(std::slice::from_ref(&input), live),
                &PlanMemory::default(),
                PlanOptions::default(),
                &AppliedHash::NonSecret,
            ))
        };
        let mut before_rotation = live_of(&a, "RUNNING");
        before_rotation.config.insert("password".into(), "old".into());
        assert_eq!(unkeyed(&[("a".to_string(), before_rotation)].into()), ["put a Updated"]);
        let mut tampered = live_of(&a, "RUNNING");
        tampered.config.insert("topic".into(), "elsewhere".into());
        assert_eq!(unkeyed(&[("a".to_string(), tampered)].into()), ["put a DriftChanged"]);
        assert_eq!(unkeyed(&LiveState::new()), ["put a DriftDeleted"]);
    }
}
