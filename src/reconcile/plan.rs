//! The reconciler's planning, pure: from what the ConfigMaps declare, what the worker runs and
//! what connect-gate created before, to the REST actions that converge them. No I/O here, so
//! every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

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
    /// Connectors connect-gate applied from this ConfigMap: name -> data key (annotation).
    pub managed: BTreeMap<String, String>,
    /// Hash of the config last applied, per connector (annotation).
    pub applied: BTreeMap<String, String>,
}

/// Why a connector is written or deleted; becomes the Event's reason and note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cause {
    Created,
    Updated,
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
    /// Desired connectors of this ConfigMap (for status), with their config hash.
    pub desired: BTreeMap<String, String>,
    /// Names its keys declare but that were rejected (kept as they are).
    pub rejected: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub cms: Vec<CmPlan>,
    /// In execution order: deletes first (a renamed connector's old name frees its resources),
    /// then writes, then state changes and restarts.
    pub actions: Vec<Action>,
}

/// What the reconciler remembers between passes.
#[derive(Clone, Debug, Default)]
pub struct PlanMemory {
    /// Connectors whose config the worker answered 400 to: name -> hash of that config. Not
    /// retried until the desired config changes.
    pub worker_rejected: BTreeMap<String, String>,
    /// FAILED connectors whose restart backoff has elapsed.
    pub restart_ready: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions {
    pub prune_unmanaged: bool,
    pub auto_restart: bool,
}

/// Hash of a config as recorded in `connect-gate.io/applied`: never the config itself.
pub fn config_hash(config: &BTreeMap<String, String>) -> String {
    let canonical = serde_json::to_vec(config).expect("a map of strings serialises");
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
    let hex: String = digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The plan. `live` is the worker's state; names listed by the worker but missing from its
/// expanded listing must have been resolved by the caller (present or absent) before this.
pub fn plan(cms: &[CmInput], live: &LiveState, memory: &PlanMemory, options: PlanOptions) -> Plan {
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
        if live.contains_key(name) && deleting_names.insert(name.to_string()) {
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
        cm_plan.add_finalizer = !cm.has_finalizer;
        let by_key: BTreeMap<&str, &Decl> = cm.keys.iter().map(|d| (d.key.as_str(), &d.decl)).collect();
        for d in &cm.keys {
            match &d.decl {
                Decl::Apply(c) => {
                    cm_plan.managed_pre.insert(c.name.clone(), d.key.clone());
                    cm_plan.desired.insert(c.name.clone(), config_hash(&c.config));
                }
                Decl::Absent(Some(name)) if !protected.contains(name.as_str()) => {
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

    let mut writes = Vec::new();
    let mut states = Vec::new();
    for (name, (cm, connector)) in &desired {
        let hash = config_hash(&connector.config);
        let recorded = cm.applied.get(*name);
        let blocked = memory.worker_rejected.get(*name) == Some(&hash);
        let put = |cause| Action::Put {
            cm: cm.name.clone(),
            name: name.to_string(),
            config: connector.config.clone(),
            hash: hash.clone(),
            cause,
        };
        let state = connector.state.unwrap_or_default();
        let transition = |to| Action::State {
            cm: cm.name.clone(),
            name: name.to_string(),
            to,
        };
        match live.get(*name) {
            None => {
                if blocked {
                    continue;
                }
                writes.push(put(if recorded == Some(&hash) {
                    Cause::DriftDeleted
                } else {
                    Cause::Created
                }));
                match state {
                    State::Running => {}
                    State::Paused => states.push(transition(Transition::Pause)),
                    State::Stopped => states.push(transition(Transition::Stop)),
                }
            }
            Some(l) => {
                if l.config != connector.config && !blocked {
                    writes.push(put(if recorded == Some(&hash) {
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

    fn run(cms: &[CmInput], live: &LiveState) -> Plan {
        plan(cms, live, &PlanMemory::default(), PlanOptions::default())
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
        input.applied.insert("a".into(), config_hash(&a.config));
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
        plan(cms, live, &PlanMemory::default(), options)
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
    fn missing_finalizer_is_added() {
        let mut input = cm("cm", vec![], &[]);
        input.has_finalizer = false;
        assert!(run(&[input], &LiveState::new()).cms[0].add_finalizer);
    }

    #[test]
    fn a_config_the_worker_rejected_is_not_retried_until_it_changes() {
        let a = connector("a", &[], None);
        let cms = [cm("cm", vec![apply("a", a.clone())], &[])];
        let mut memory = PlanMemory::default();
        memory.worker_rejected.insert("a".into(), config_hash(&a.config));
        assert!(
            plan(&cms, &LiveState::new(), &memory, PlanOptions::default())
                .actions
                .is_empty()
        );
        memory.worker_rejected.insert("a".into(), "sha256:older".into());
        assert_eq!(
            summary(&plan(&cms, &LiveState::new(), &memory, PlanOptions::default())),
            ["put a Created"]
        );
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
        assert!(plan(&cms, &live, &PlanMemory::default(), on).actions.is_empty());
        let memory = PlanMemory {
            restart_ready: ["a".to_string()].into(),
            ..PlanMemory::default()
        };
        assert_eq!(summary(&plan(&cms, &live, &memory, on)), ["restart a"]);
        assert!(plan(&cms, &live, &memory, PlanOptions::default()).actions.is_empty());
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

    #[test]
    fn hashes_are_stable_and_never_contain_the_config() {
        let a = connector("a", &[("password", "hunter2-very-secret")], None);
        let h = config_hash(&a.config);
        assert_eq!(h, config_hash(&a.config.clone()));
        assert!(h.starts_with("sha256:") && h.len() == 7 + 24);
        assert!(!h.contains("hunter2"));
        assert_ne!(h, config_hash(&connector("a", &[("password", "other")], None).config));
    }
}
