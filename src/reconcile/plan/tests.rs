//! The planner's rules, one requirement-named test each.

use super::*;
use crate::reconcile::day2::{OffsetsRecord, Phase, RestartRecord};
use crate::reconcile::live::{Live, LiveStatus, StateTrace, TaskStatus, parse_expanded};

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
        restart: None,
        offsets: None,
        secrets: vec![],
        ..Connector::default()
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
        operations: BTreeMap::new(),
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
            Action::Restart {
                name,
                trigger: Trigger::Token(t),
                ..
            } => format!("restart {name} for {t}"),
            Action::Restart {
                name,
                trigger: Trigger::Failed,
                ..
            } => format!("restart {name}"),
            Action::Restart {
                name,
                trigger: Trigger::Rotation,
                ..
            } => format!("restart {name} for rotation"),
            Action::Offsets { name, token, .. } => format!("offsets {name} for {token}"),
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

fn with_offsets(mut c: Connector, token: &str) -> Connector {
    c.offsets = Some(crate::pipeline::check::operations::Offsets {
        token: token.into(),
        reset: true,
        set: None,
    });
    c
}

fn offsets_record(token: &str, phase: Phase) -> Record {
    Record {
        restart: None,
        offsets: Some(OffsetsRecord {
            token: token.into(),
            phase,
            result: None,
        }),
    }
}

#[test]
fn a_new_connector_declared_with_offsets_is_created_stopped_and_its_operation_recorded_first() {
    let a = with_offsets(connector("a", &[], None), "o1");
    let plan = run(&[cm("cm", vec![apply("a.json", a)], &[])], &LiveState::new());
    assert!(
        matches!(plan.actions[..], [Action::Put { stopped: true, .. }]),
        "{:?}",
        plan.actions
    );
    assert_eq!(plan.cms[0].operations["a"], offsets_record("o1", Phase::Pending));
}

#[test]
fn an_offsets_operation_holds_the_declared_state_until_it_is_done() {
    let a = with_offsets(connector("a", &[], None), "o1");
    let mut input = cm("cm", vec![apply("a.json", a.clone())], &[("a", "a.json")]);
    // Running: stopped first, the operation recorded pending before.
    let live: LiveState = [("a".to_string(), live_of(&a, "RUNNING"))].into();
    let plan = run(std::slice::from_ref(&input), &live);
    assert_eq!(summary(&plan), ["stop a"]);
    assert_eq!(plan.cms[0].operations["a"], offsets_record("o1", Phase::Pending));
    // Stopped with no tasks: the offsets change, not the declared resume.
    input
        .operations
        .insert("a".into(), offsets_record("o1", Phase::Pending));
    let stopped: LiveState = [("a".to_string(), live_of(&a, "STOPPED"))].into();
    assert_eq!(
        summary(&run(std::slice::from_ref(&input), &stopped)),
        ["offsets a for o1"]
    );
    // Done: back to the declared state, and the token never acts again.
    input.operations.insert("a".into(), offsets_record("o1", Phase::Done));
    assert_eq!(summary(&run(std::slice::from_ref(&input), &stopped)), ["resume a"]);
}

#[test]
fn a_restart_token_restarts_once_in_place_of_the_auto_restart() {
    let mut a = connector("a", &[], None);
    a.restart = Some(crate::pipeline::check::operations::Restart {
        token: "r1".into(),
        only_failed: false,
    });
    let mut input = cm("cm", vec![apply("a.json", a.clone())], &[("a", "a.json")]);
    let mut failed = live_of(&a, "FAILED");
    failed.status.as_mut().unwrap().connector.state = "FAILED".into();
    let live: LiveState = [("a".to_string(), failed)].into();
    let memory = PlanMemory {
        restart_ready: ["a".to_string()].into(),
        ..PlanMemory::default()
    };
    let options = PlanOptions {
        auto_restart: true,
        ..PlanOptions::default()
    };
    let planned = |input: &CmInput| {
        let cms = std::slice::from_ref(input);
        summary(&plan(cms, &live, &owning_all(cms, &live), &memory, options, &keyed()))
    };
    assert_eq!(planned(&input), ["restart a for r1"]);
    input.operations.insert(
        "a".into(),
        Record {
            restart: Some(RestartRecord {
                token: "r1".into(),
                result: "restarted with its tasks".into(),
            }),
            offsets: None,
        },
    );
    assert_eq!(
        planned(&input),
        ["restart a"],
        "the token is spent; --auto-restart goes on"
    );
}

#[test]
fn a_running_connector_whose_referenced_files_changed_is_restarted_with_its_tasks() {
    let a = connector("a", &[("password", "${dir:/mnt/secret:password}")], None);
    let mut paused = connector("p", &[], None);
    paused.state = Some(State::Paused);
    let live: LiveState = [
        ("a".to_string(), live_of(&a, "RUNNING")),
        ("p".to_string(), live_of(&paused, "PAUSED")),
    ]
    .into();
    let cms = [cm("cm", vec![apply("a", a), apply("p", paused)], &[])];
    let memory = PlanMemory {
        rotated: ["a".to_string(), "p".to_string()].into(),
        ..PlanMemory::default()
    };
    let options = PlanOptions::default();
    let planned = plan(&cms, &live, &owning_all(&cms, &live), &memory, options, &keyed());
    // A paused connector is not restarted: it stays due until it runs again.
    assert_eq!(summary(&planned), ["restart a for rotation"]);
    assert!(matches!(planned.actions[0], Action::Restart { only_failed: false, .. }));
}
