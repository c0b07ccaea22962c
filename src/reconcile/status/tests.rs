use super::*;
use crate::reconcile::live::{LiveStatus, StateTrace, TaskStatus};

fn live(state: &str, tasks: &[(&str, Option<&str>)]) -> Live {
    Live {
        config: BTreeMap::new(),
        status: Some(LiveStatus {
            connector: StateTrace {
                state: state.into(),
                trace: None,
            },
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, (s, t))| TaskStatus {
                    id: i as i64,
                    state: s.to_string(),
                    trace: t.map(str::to_string),
                })
                .collect(),
        }),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A ConfigMap declaring `a` (hash `h1`), as a pass sees it.
struct Case {
    plan: CmPlan,
    annotations: BTreeMap<String, String>,
    deleting: bool,
    managed: BTreeMap<String, String>,
    applied: BTreeMap<String, String>,
    rejections: Vec<String>,
    errors: Vec<String>,
    failed_deletes: BTreeSet<String>,
    written: BTreeSet<String>,
    live: LiveState,
    worker_rejected: BTreeMap<String, Rejected>,
    restarts: BTreeMap<String, u32>,
    operations: BTreeMap<String, Record>,
    secrets: BTreeMap<String, Vec<String>>,
    ledger: Ledger,
    homes: BTreeMap<String, String>,
    unknown: BTreeSet<String>,
    as_values: BTreeSet<String>,
}

impl Case {
    fn new() -> Self {
        Case {
            plan: CmPlan {
                name: "cm".into(),
                managed_pre: map(&[("a", "a.json")]),
                desired: map(&[("a", "h1")]),
                ..CmPlan::default()
            },
            annotations: BTreeMap::new(),
            deleting: false,
            managed: map(&[("a", "a.json")]),
            applied: map(&[("a", "h1")]),
            rejections: vec![],
            errors: vec![],
            failed_deletes: BTreeSet::new(),
            written: BTreeSet::new(),
            live: [("a".to_string(), live("RUNNING", &[("RUNNING", None)]))].into(),
            worker_rejected: BTreeMap::new(),
            restarts: BTreeMap::new(),
            operations: BTreeMap::new(),
            secrets: BTreeMap::new(),
            ledger: Ledger::default(),
            homes: BTreeMap::new(),
            unknown: BTreeSet::new(),
            as_values: BTreeSet::new(),
        }
    }

    fn report(&self) -> Report {
        report(&Facts {
            plan: &self.plan,
            annotations: &self.annotations,
            deleting: self.deleting,
            has_finalizer: true,
            managed: &self.managed,
            applied: &self.applied,
            rejections: self.rejections.clone(),
            errors: &self.errors,
            failed_deletes: &self.failed_deletes,
            written: &self.written,
            live: &self.live,
            worker_rejected: &self.worker_rejected,
            restarts: &self.restarts,
            operations: &self.operations,
            secrets: &self.secrets,
            ledger: &self.ledger,
            places: Places {
                homes: &self.homes,
                unknown: &self.unknown,
            },
            as_values: &self.as_values,
        })
    }

    /// The annotations after applying this report's patch.
    fn converged(&self) -> BTreeMap<String, String> {
        let mut annotations = self.annotations.clone();
        if let Change::Annotations(patch) = self.report().change {
            for (k, v) in patch {
                match v {
                    Value::String(s) => annotations.insert(k, s),
                    _ => annotations.remove(&k),
                };
            }
        }
        annotations
    }
}

fn patch(report: Report) -> Map<String, Value> {
    match report.change {
        Change::Annotations(p) => p,
        other => panic!("expected an annotation patch, got {other:?}"),
    }
}

#[test]
fn a_running_connector_is_recorded_and_a_converged_configmap_needs_no_write() {
    let mut case = Case::new();
    let p = patch(case.report());
    assert_eq!(p[ANNOTATION_CONNECTORS], json!(r#"{"a":"a.json"}"#));
    assert_eq!(p[ANNOTATION_APPLIED], json!(r#"{"a":"h1"}"#));
    assert_eq!(
        p[ANNOTATION_STATUS],
        json!(r#"{"a":{"state":"RUNNING","tasks":{"0":"RUNNING"}}}"#)
    );
    assert!(!p.contains_key(ANNOTATION_LAST_ERROR), "nothing to remove");
    case.annotations = case.converged();
    assert_eq!(
        case.report(),
        Report {
            notes: vec![],
            change: Change::None
        }
    );
}

#[test]
fn the_status_of_a_connector_elsewhere_names_its_destination_and_is_unknown_while_it_cannot_be_read() {
    let mut case = Case::new();
    case.homes = map(&[("a", "analytics")]);
    let status = |case: &Case| -> Value { serde_json::from_str(&case.converged()[ANNOTATION_STATUS]).unwrap() };
    assert_eq!(status(&case)["a"]["destination"], "analytics");
    assert_eq!(status(&case)["a"]["state"], "RUNNING");
    case.unknown = ["a".to_string()].into();
    case.live.clear();
    let s = status(&case);
    assert_eq!(s["a"]["state"], "UNKNOWN", "{s}");
    assert_eq!(s["a"]["destination"], "analytics");
    case.homes = map(&[("a", "local")]);
    assert!(
        status(&case)["a"].get("destination").is_none(),
        "the local worker is not named"
    );
}

#[test]
fn a_connector_sent_as_values_for_lack_of_providers_says_so() {
    let mut f = Case::new();
    f.as_values.insert("a".into());
    let status: Value = serde_json::from_str(patch(f.report())[ANNOTATION_STATUS].as_str().unwrap()).unwrap();
    assert_eq!(
        status["a"]["note"],
        "its inputs are sent as values: Confluent Cloud has no config providers"
    );
}

#[test]
fn a_connector_written_this_pass_is_pending() {
    let mut case = Case::new();
    case.written.insert("a".into());
    let p = patch(case.report());
    assert_eq!(p[ANNOTATION_STATUS], json!(r#"{"a":{"state":"PENDING"}}"#));
}

#[test]
fn failed_traces_are_shown_masked_and_announced_once() {
    let mut case = Case::new();
    case.live.insert(
        "a".into(),
        live(
            "RUNNING",
            &[
                ("RUNNING", None),
                ("FAILED", Some("java.io.IOException: bad password p4ssw0rd!\n\tat x")),
            ],
        ),
    );
    case.secrets.insert("a".into(), vec!["p4ssw0rd!".into()]);
    let report = case.report();
    assert_eq!(
        report.notes,
        vec![Note::warning(
            "Failed",
            "connector a is FAILED: java.io.IOException: bad password ****".into()
        )]
    );
    assert_eq!(
        patch(report)[ANNOTATION_STATUS],
        json!(
            r#"{"a":{"state":"RUNNING","tasks":{"0":"RUNNING","1":"FAILED"},"trace":"java.io.IOException: bad password ****"}}"#
        )
    );
    case.annotations = case.converged();
    assert!(case.report().notes.is_empty(), "the same trace is not announced again");
}

#[test]
fn rejections_go_to_last_error_and_only_new_ones_become_events() {
    let mut case = Case::new();
    case.plan.desired.clear();
    case.plan.rejected.insert("a".into());
    case.rejections = vec!["key a.json: bad".into()];
    let report = case.report();
    assert_eq!(report.notes, vec![Note::warning("Rejected", "key a.json: bad".into())]);
    let p = patch(report);
    assert_eq!(p[ANNOTATION_LAST_ERROR], json!("key a.json: bad"));
    assert!(p[ANNOTATION_STATUS].as_str().unwrap().contains("rejected: not applied"));
    case.annotations = case.converged();
    assert!(case.report().notes.is_empty());
    case.rejections.clear();
    case.plan.rejected.clear();
    case.plan.desired = map(&[("a", "h1")]);
    assert_eq!(
        patch(case.report())[ANNOTATION_LAST_ERROR],
        Value::Null,
        "fixed: removed"
    );
}

#[test]
fn a_worker_rejection_counts_only_for_the_config_it_rejected_and_says_when_it_is_retried() {
    let mut case = Case::new();
    case.worker_rejected.insert(
        "a".into(),
        Rejected {
            fingerprint: "h1".into(),
            message: "Kafka Connect rejected the config: no".into(),
            attempts: 2,
            retry_in: Duration::from_secs(120),
        },
    );
    let p = patch(case.report());
    assert_eq!(
        p[ANNOTATION_LAST_ERROR],
        json!(
            "connector a: Kafka Connect rejected the config: no (attempt 2; next attempt in 2m unless the config changes)"
        )
    );
    assert!(p[ANNOTATION_STATUS].as_str().unwrap().contains("retried with backoff"));
    case.plan.desired = map(&[("a", "h2")]);
    assert!(!patch(case.report()).contains_key(ANNOTATION_LAST_ERROR));
}

#[test]
fn a_deleted_configmap_is_released_once_its_connectors_are_gone() {
    let mut case = Case::new();
    case.deleting = true;
    case.plan.desired.clear();
    case.plan.release.insert("a".into());
    assert_eq!(case.report().change, Change::Release);
    case.failed_deletes.insert("a".into());
    case.errors = vec!["connector a: DELETE answered 500: boom".into()];
    let p = patch(case.report());
    assert_eq!(
        p[ANNOTATION_LAST_ERROR],
        json!("connector a: DELETE answered 500: boom")
    );
}

#[test]
fn released_names_leave_the_managed_and_applied_maps() {
    let mut case = Case::new();
    case.plan.managed_pre = map(&[("a", "a.json"), ("old", "old.json")]);
    case.plan.release.insert("old".into());
    case.applied = map(&[("a", "h1"), ("old", "h0")]);
    let p = patch(case.report());
    assert_eq!(p[ANNOTATION_CONNECTORS], json!(r#"{"a":"a.json"}"#));
    assert_eq!(p[ANNOTATION_APPLIED], json!(r#"{"a":"h1"}"#));
}

#[test]
fn an_adoption_is_announced_once_and_shown_in_the_status() {
    let mut case = Case::new();
    case.plan.adopted.insert("a".into());
    case.ledger = [("a".to_string(), Provenance::Adopted)].into_iter().collect();
    let report = case.report();
    assert_eq!(
        report.notes,
        vec![Note::normal(
            "Adopted",
            "adopted connector a, which already existed on the worker: connect-gate manages it from now on and deletes it when no ConfigMap declares it".into()
        )]
    );
    let status = patch(report)[ANNOTATION_STATUS].as_str().unwrap().to_string();
    assert!(
        status.contains(r#""note":"adopted: it existed on the worker before connect-gate managed it""#),
        "{status}"
    );
    case.annotations = case.converged();
    case.plan.adopted.clear();
    assert_eq!(
        case.report(),
        Report {
            notes: vec![],
            change: Change::None
        },
        "the status line stays, the Event is not repeated"
    );
}

#[test]
fn a_listed_name_connect_gate_does_not_own_is_reported_and_dropped() {
    let mut case = Case::new();
    case.plan.managed_pre = map(&[("a", "a.json"), ("stranger", "nokey")]);
    case.plan.release.insert("stranger".into());
    case.plan.unowned.insert("stranger".into());
    let report = case.report();
    assert_eq!(
        report.notes,
        vec![Note::warning(
            "NotOwned",
            "connector stranger is listed in connect-gate.io/connectors, but connect-gate did not create or adopt it: not deleted, and dropped from the annotation".into()
        )]
    );
    let p = patch(report);
    assert_eq!(p[ANNOTATION_CONNECTORS], json!(r#"{"a":"a.json"}"#));
    assert_eq!(
        p[ANNOTATION_LAST_ERROR],
        json!(
            "connector stranger: listed in connect-gate.io/connectors but not created or adopted by connect-gate; not deleted"
        )
    );
    // A deleted ConfigMap is still released, and still says why the name was left alone.
    case.deleting = true;
    case.plan.managed_pre = map(&[("stranger", "nokey")]);
    case.plan.desired.clear();
    let report = case.report();
    assert_eq!(report.change, Change::Release);
    assert_eq!(report.notes.len(), 1);
    assert_eq!(report.notes[0].reason, "NotOwned");
}

#[test]
fn restarts_are_counted_in_the_status() {
    let mut case = Case::new();
    case.restarts.insert("a".into(), 2);
    assert!(
        patch(case.report())[ANNOTATION_STATUS]
            .as_str()
            .unwrap()
            .contains(r#""restarts":2"#)
    );
}

#[test]
fn empty_maps_remove_their_annotation_and_traces_are_shortened() {
    assert_eq!(map_annotation(&BTreeMap::new()), Value::Null);
    assert_eq!(map_annotation(&map(&[("a", "k")])), json!(r#"{"a":"k"}"#));
    let t = shorten_trace(
        "org.x.Boom: cannot log in with s3cr3t-pw\n\tat a.b.C",
        &["s3cr3t-pw", "ab"],
        200,
    );
    assert_eq!(t, "org.x.Boom: cannot log in with ****");
    assert_eq!(shorten_trace(&"x".repeat(50), &[], 10), format!("{}…", "x".repeat(10)));
    assert_eq!(ConnectorStatus::from_live(None, &[]).state, "ABSENT");
}

#[test]
fn bound_cuts_on_a_character_boundary_with_a_marker_and_keeps_short_text() {
    assert_eq!(bound("short", 10), "short");
    let long = "é".repeat(1000);
    let cut = bound(&long, 100);
    assert!(cut.len() <= 100, "{}", cut.len());
    assert!(cut.starts_with("éé") && cut.ends_with("more bytes cut]"), "{cut}");
    let kept = cut.split('…').next().unwrap().len();
    assert!(
        cut.contains(&format!("[{} more bytes cut]", long.len() - kept)),
        "{cut}"
    );
    // Even a budget smaller than the marker gives valid UTF-8 and no panic.
    assert!(bound(&long, 3).ends_with("cut]"));
}

#[test]
fn a_huge_rejection_is_bounded_in_last_error_and_announced_once() {
    let mut case = Case::new();
    case.plan.desired.clear();
    case.plan.rejected.insert("a".into());
    let class = "x".repeat(1 << 20);
    case.rejections = vec![
        format!("key a.json: unknown connector class {class}"),
        "key b.json: bad".into(),
    ];
    let report = case.report();
    assert_eq!(report.notes.len(), 1);
    assert!(report.notes[0].text.contains("key b.json: bad"));
    let error = patch(report)[ANNOTATION_LAST_ERROR].as_str().unwrap().to_string();
    assert!(error.len() <= LAST_ERROR_MAX, "{}", error.len());
    assert!(
        error.contains("more bytes cut]\nkey b.json: bad"),
        "{}",
        &error[error.len() - 100..]
    );
    case.annotations = case.converged();
    assert_eq!(
        case.report(),
        Report {
            notes: vec![],
            change: Change::None
        },
        "the cut line is recognised: no Event and no write again"
    );
    // Many errors: as many lines as fit, then a count.
    case.rejections = (0..100).map(|i| format!("key {i}: {}", "y".repeat(1000))).collect();
    let error = patch(case.report())[ANNOTATION_LAST_ERROR]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.len() <= LAST_ERROR_MAX, "{}", error.len());
    assert!(error.ends_with("more"), "{}", &error[error.len() - 40..]);
}

#[test]
fn a_huge_status_drops_task_states_first_and_is_bounded() {
    let mut case = Case::new();
    let tasks: Vec<(&str, Option<&str>)> = vec![("RUNNING", None); 10_000];
    case.live.insert("a".into(), live("RUNNING", &tasks));
    let status = patch(case.report())[ANNOTATION_STATUS].as_str().unwrap().to_string();
    assert!(status.len() <= STATUS_MAX);
    assert_eq!(status, r#"{"a":{"state":"RUNNING"}}"#);
}
