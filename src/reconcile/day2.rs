//! Day-2 operations planned, pure: from a connector's declared `restart` and `offsets`, what the
//! worker runs and the record of the tokens acted on (`connect-gate.io/operations`), to the next
//! step. Each token acts once: the record is written before an offsets operation starts and
//! after each step, so a crash or a leader change resumes from it; nothing is ever removed from
//! the ConfigMap, so there is nothing for Flux to put back.
//!
//! An offsets operation is a small state machine driven by what the worker reports, one step a
//! pass: stop the connector (or create it stopped), wait until it is STOPPED with no tasks, reset
//! or alter its offsets, then let the planner put it back in its declared state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::live::Live;
use crate::pipeline::check::operations::{Offsets, PartitionOffset, Restart};

/// What `connect-gate.io/operations` says about one connector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<OffsetsRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    pub token: String,
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsRecord {
    pub token: String,
    pub phase: Phase,
    /// The worker's answer, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Recorded before the connector is stopped; until done, the connector is held stopped.
    Pending,
    Done,
    /// The last attempt failed; retried with backoff, the connector left stopped meanwhile.
    Failed,
    /// Its `offsets` was removed from the declaration before it was done: not retried, the
    /// connector back in its declared state. The same token declared again acts.
    Withdrawn,
}

/// What a restart token on a connector's first creation is recorded with.
pub const AT_CREATION: &str = "recorded when the connector was created; not acted on";

/// What an offsets operation removed from the declaration before it was done is recorded with.
pub const WITHDRAWN: &str = "removed from the declaration before it was done; not retried";

/// `DELETE` or `PATCH /connectors/{name}/offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsChange {
    Reset,
    Set(Vec<PartitionOffset>),
}

impl OffsetsChange {
    fn of(declared: &Offsets) -> Self {
        match &declared.set {
            Some(set) => OffsetsChange::Set(set.clone()),
            None => OffsetsChange::Reset,
        }
    }
}

/// The next step for one connector's operations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// An offsets operation is under way: the connector's declared state and `--auto-restart`
    /// wait until it is done.
    pub holds_state: bool,
    /// It does not exist yet and has offsets declared: create it stopped.
    pub create_stopped: bool,
    /// Stop it first (it runs, or is paused).
    pub stop: bool,
    /// Its offsets, now (it is STOPPED with no tasks).
    pub offsets: Option<(String, OffsetsChange)>,
    /// Restart it (with its tasks), for this token.
    pub restart: Option<Restart>,
    /// The record to write before acting, when it changes.
    pub record: Option<Record>,
}

/// What the planner remembers for operations between passes.
#[derive(Clone, Debug, Default)]
pub struct Waiting {
    /// Connectors whose failed offsets operation is not due for another attempt yet.
    pub offsets_retry: BTreeSet<String>,
}

/// The step for a connector declaring `restart` and `offsets`, which the worker has as `live`
/// (`None`: it does not exist) and whose tokens are recorded as `record`.
pub fn step(
    name: &str,
    restart: Option<&Restart>,
    offsets: Option<&Offsets>,
    live: Option<&Live>,
    record: &Record,
    waiting: &Waiting,
) -> Step {
    let mut step = Step::default();
    let mut next = record.clone();
    if offsets.is_none()
        && let Some(r) = record.offsets.as_ref().filter(|r| in_progress_phase(r.phase))
    {
        next.offsets = Some(OffsetsRecord {
            token: r.token.clone(),
            phase: Phase::Withdrawn,
            result: Some(WITHDRAWN.into()),
        });
    }
    if let Some(declared) = offsets.filter(|o| !done(record, &o.token)) {
        step.holds_state = true;
        let failed = record
            .offsets
            .as_ref()
            .is_some_and(|r| r.token == declared.token && r.phase == Phase::Failed);
        if !failed {
            next.offsets = Some(OffsetsRecord {
                token: declared.token.clone(),
                phase: Phase::Pending,
                result: None,
            });
        }
        let status = live.map(|l| l.status.as_ref());
        match status {
            None => step.create_stopped = true,
            // Its status is not written yet: look again next pass.
            Some(None) => {}
            Some(Some(_)) if failed && waiting.offsets_retry.contains(name) => {}
            Some(Some(s)) if s.connector.state == "STOPPED" => {
                if s.tasks.is_empty() {
                    step.offsets = Some((declared.token.clone(), OffsetsChange::of(declared)));
                }
            }
            Some(Some(_)) => step.stop = true,
        }
    }
    if let Some(declared) = restart.filter(|r| record.restart.as_ref().is_none_or(|d| d.token != r.token)) {
        if live.is_none() {
            next.restart = Some(RestartRecord {
                token: declared.token.clone(),
                result: AT_CREATION.into(),
            });
        } else if !step.holds_state && live.is_some_and(|l| l.status.is_some()) {
            step.restart = Some(declared.clone());
        }
    }
    step.record = (next != *record).then_some(next);
    step
}

fn done(record: &Record, token: &str) -> bool {
    record
        .offsets
        .as_ref()
        .is_some_and(|r| r.token == token && r.phase == Phase::Done)
}

/// Whether an offsets operation is under way for this record (for metrics and status).
pub fn in_progress(record: &Record) -> bool {
    record.offsets.as_ref().is_some_and(|r| in_progress_phase(r.phase))
}

fn in_progress_phase(phase: Phase) -> bool {
    matches!(phase, Phase::Pending | Phase::Failed)
}

/// The worker's answer to an offsets change says only the offsets Connect keeps were changed:
/// a connector that keeps its own (a sink committing elsewhere, a source reading its own
/// position) has not moved.
pub fn framework_only(message: &str) -> bool {
    message.contains("framework-managed")
}

/// The records of one ConfigMap, as its annotation holds them; an unreadable one is empty (it
/// is connect-gate's own, guarded by the webhook: at worst a token acts again).
pub fn decode(annotation: Option<&String>) -> BTreeMap<String, Record> {
    annotation
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// The annotation's value: compact JSON, `None` when there is nothing to record.
pub fn encode(records: &BTreeMap<String, Record>) -> Option<String> {
    (!records.is_empty()).then(|| serde_json::to_string(records).expect("serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::live::{LiveStatus, StateTrace, TaskStatus};
    use serde_json::json;

    fn live(state: &str, tasks: usize) -> Live {
        Live {
            config: BTreeMap::new(),
            status: Some(LiveStatus {
                connector: StateTrace {
                    state: state.into(),
                    trace: None,
                },
                tasks: (0..tasks)
                    .map(|id| TaskStatus {
                        id: id as i64,
                        state: state.into(),
                        trace: None,
                    })
                    .collect(),
            }),
        }
    }

    fn restart(token: &str) -> Restart {
        Restart {
            token: token.into(),
            only_failed: false,
        }
    }

    fn reset(token: &str) -> Offsets {
        Offsets {
            token: token.into(),
            reset: true,
            set: None,
        }
    }

    fn restarted(token: &str) -> Record {
        Record {
            restart: Some(RestartRecord {
                token: token.into(),
                result: "restarted".into(),
            }),
            offsets: None,
        }
    }

    fn offsets_at(token: &str, phase: Phase) -> Record {
        Record {
            restart: None,
            offsets: Some(OffsetsRecord {
                token: token.into(),
                phase,
                result: None,
            }),
        }
    }

    fn run(restart: Option<&Restart>, offsets: Option<&Offsets>, live: Option<&Live>, record: &Record) -> Step {
        step("c", restart, offsets, live, record, &Waiting::default())
    }

    #[test]
    fn a_new_restart_token_restarts_once_and_the_same_token_never_again() {
        let running = live("RUNNING", 1);
        let s = run(Some(&restart("r1")), None, Some(&running), &Record::default());
        assert_eq!(s.restart, Some(restart("r1")));
        assert_eq!(s.record, None, "recorded after the restart, with its result");
        let s = run(Some(&restart("r1")), None, Some(&running), &restarted("r1"));
        assert_eq!(s, Step::default());
        assert_eq!(
            run(Some(&restart("r2")), None, Some(&running), &restarted("r1")).restart,
            Some(restart("r2"))
        );
    }

    #[test]
    fn removing_a_restart_token_does_nothing() {
        assert_eq!(
            run(None, None, Some(&live("RUNNING", 1)), &restarted("r1")),
            Step::default()
        );
    }

    #[test]
    fn a_restart_token_seen_at_creation_is_recorded_not_acted_on() {
        let s = run(Some(&restart("r1")), None, None, &Record::default());
        assert_eq!(s.restart, None);
        let record = s.record.unwrap();
        assert_eq!(record.restart.unwrap().result, AT_CREATION);
    }

    #[test]
    fn a_restart_waits_for_a_status_and_for_an_offsets_operation() {
        let unknown = Live {
            config: BTreeMap::new(),
            status: None,
        };
        assert_eq!(
            run(Some(&restart("r1")), None, Some(&unknown), &Record::default()).restart,
            None
        );
        let s = run(
            Some(&restart("r1")),
            Some(&reset("o1")),
            Some(&live("RUNNING", 1)),
            &Record::default(),
        );
        assert_eq!((s.restart, s.stop), (None, true));
    }

    #[test]
    fn a_new_offsets_token_is_recorded_pending_then_stops_the_connector() {
        let s = run(None, Some(&reset("o1")), Some(&live("RUNNING", 2)), &Record::default());
        assert!(s.holds_state && s.stop && s.offsets.is_none());
        assert_eq!(s.record, Some(offsets_at("o1", Phase::Pending)));
        // Paused counts as not stopped too.
        assert!(
            run(
                None,
                Some(&reset("o1")),
                Some(&live("PAUSED", 1)),
                &offsets_at("o1", Phase::Pending)
            )
            .stop
        );
    }

    #[test]
    fn offsets_change_only_once_the_connector_is_stopped_with_no_tasks() {
        let pending = offsets_at("o1", Phase::Pending);
        let s = run(None, Some(&reset("o1")), Some(&live("STOPPED", 1)), &pending);
        assert!(s.holds_state && !s.stop && s.offsets.is_none() && s.record.is_none());
        let s = run(None, Some(&reset("o1")), Some(&live("STOPPED", 0)), &pending);
        assert_eq!(s.offsets, Some(("o1".into(), OffsetsChange::Reset)));
    }

    #[test]
    fn a_crash_between_stop_and_change_resumes_from_the_record() {
        // The record says pending and the worker says stopped: the change is made, not the stop.
        let s = run(
            None,
            Some(&reset("o1")),
            Some(&live("STOPPED", 0)),
            &offsets_at("o1", Phase::Pending),
        );
        assert!(!s.stop && s.offsets.is_some());
    }

    #[test]
    fn a_done_operation_releases_the_state_and_never_acts_again() {
        let s = run(
            None,
            Some(&reset("o1")),
            Some(&live("STOPPED", 0)),
            &offsets_at("o1", Phase::Done),
        );
        assert_eq!(s, Step::default());
    }

    #[test]
    fn a_failed_operation_keeps_the_connector_stopped_and_retries_when_due() {
        let failed = offsets_at("o1", Phase::Failed);
        let stopped = live("STOPPED", 0);
        let waiting = Waiting {
            offsets_retry: ["c".to_string()].into(),
        };
        let s = step("c", None, Some(&reset("o1")), Some(&stopped), &failed, &waiting);
        assert!(s.holds_state && s.offsets.is_none() && s.record.is_none(), "{s:?}");
        let s = run(None, Some(&reset("o1")), Some(&stopped), &failed);
        assert!(
            s.offsets.is_some() && s.record.is_none(),
            "the failure stays recorded until it succeeds"
        );
    }

    #[test]
    fn an_offsets_operation_removed_before_it_is_done_is_withdrawn_not_left_in_progress() {
        let running = live("RUNNING", 1);
        for phase in [Phase::Pending, Phase::Failed] {
            let s = run(None, None, Some(&live("STOPPED", 0)), &offsets_at("o1", phase));
            assert!(!s.holds_state && s.offsets.is_none(), "{s:?}");
            let record = s.record.unwrap();
            assert_eq!(
                record.offsets,
                Some(OffsetsRecord {
                    token: "o1".into(),
                    phase: Phase::Withdrawn,
                    result: Some(WITHDRAWN.into())
                })
            );
            assert!(!in_progress(&record));
            // Withdrawn stays withdrawn; declared again, the same token acts.
            assert_eq!(run(None, None, Some(&running), &record), Step::default());
            let s = run(None, Some(&reset("o1")), Some(&running), &record);
            assert!(s.holds_state && s.stop, "{s:?}");
            assert_eq!(s.record, Some(offsets_at("o1", Phase::Pending)));
        }
        // Done is left as it is.
        let done = offsets_at("o1", Phase::Done);
        assert_eq!(run(None, None, Some(&running), &done), Step::default());
    }

    #[test]
    fn a_connector_with_offsets_that_does_not_exist_is_created_stopped() {
        let set = Offsets {
            token: "o1".into(),
            reset: false,
            set: Some(vec![PartitionOffset {
                partition: json!({"filename": "/x"}).as_object().unwrap().clone(),
                offset: Some(json!({"position": 3}).as_object().unwrap().clone()),
            }]),
        };
        let s = run(Some(&restart("r1")), Some(&set), None, &Record::default());
        assert!(s.create_stopped && s.holds_state && s.offsets.is_none());
        let record = s.record.unwrap();
        assert_eq!(record.offsets.unwrap().phase, Phase::Pending);
        assert_eq!(record.restart.unwrap().result, AT_CREATION);
    }

    #[test]
    fn records_round_trip_through_the_annotation_and_say_what_is_in_progress() {
        let records: BTreeMap<String, Record> = [
            ("a".to_string(), restarted("r1")),
            ("b".into(), offsets_at("o", Phase::Failed)),
        ]
        .into();
        let text = encode(&records).unwrap();
        assert_eq!(
            text,
            r#"{"a":{"restart":{"token":"r1","result":"restarted"}},"b":{"offsets":{"token":"o","phase":"failed"}}}"#
        );
        assert_eq!(decode(Some(&text)), records);
        assert!(decode(Some(&"not json".to_string())).is_empty());
        assert_eq!(encode(&BTreeMap::new()), None);
        assert!(in_progress(&records["b"]) && !in_progress(&records["a"]));
        assert!(framework_only(
            "The Connect framework-managed offsets for this connector have been reset successfully. However, ..."
        ));
        assert!(!framework_only(
            "The offsets for this connector have been reset successfully"
        ));
    }
}
