//! What an action that succeeded means for its ConfigMap's report: its records, and the Event
//! notes that say what was done.

use super::CmState;
use crate::connect::destinations::LOCAL;
use crate::reconcile::day2::{self, OffsetsChange, OffsetsRecord, Phase, RestartRecord};
use crate::reconcile::plan::{Action, Cause, Trigger};
use crate::reconcile::status::Note;

/// How notes name a destination other than the local worker.
fn at(destination: &str) -> String {
    if destination == LOCAL {
        String::new()
    } else {
        format!(" (destination {destination})")
    }
}

/// What an action that succeeded means for its ConfigMap's report.
pub(super) enum Done {
    Ok,
    Restarted(u32),
    /// Offsets changed; the worker's message.
    Offsets(String),
}

impl Done {
    /// Each note ends with where the connector is, when not on the local worker.
    pub(super) fn apply_to(self, cm: &mut CmState, action: &Action, destination: &str) {
        let before = cm.notes.len();
        self.note(cm, action);
        let at = at(destination);
        for note in &mut cm.notes[before..] {
            note.text.push_str(&at);
        }
    }

    fn note(self, cm: &mut CmState, action: &Action) {
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
            (
                Done::Ok,
                Action::Restart {
                    name,
                    trigger: Trigger::Token(token),
                    only_failed,
                    ..
                },
            ) => {
                cm.written.insert(name.clone());
                let result = if *only_failed {
                    "restarted its failed parts"
                } else {
                    "restarted with its tasks"
                };
                cm.operations.entry(name.clone()).or_default().restart = Some(RestartRecord {
                    token: token.clone(),
                    result: result.into(),
                });
                cm.notes.push(Note::normal(
                    "Restarted",
                    format!("connector {name}: {result} for restart token {token}"),
                ));
            }
            (
                Done::Offsets(message),
                Action::Offsets {
                    name, token, change, ..
                },
            ) => {
                let (reason, verb) = match change {
                    OffsetsChange::Reset => ("OffsetsReset", "reset"),
                    OffsetsChange::Set(_) => ("OffsetsAltered", "altered"),
                };
                let text = format!("connector {name}: offsets {verb} for offsets token {token}: {message}");
                cm.notes.push(if day2::framework_only(&message) {
                    Note::warning(
                        "OffsetsFrameworkOnly",
                        format!("{text} (only the offsets Kafka Connect keeps changed: a connector that keeps its own must be moved in its own system)"),
                    )
                } else {
                    Note::normal(reason, text)
                });
                cm.operations.entry(name.clone()).or_default().offsets = Some(OffsetsRecord {
                    token: token.clone(),
                    phase: Phase::Done,
                    result: Some(message),
                });
            }
            (
                Done::Ok,
                Action::Restart {
                    name,
                    trigger: Trigger::Rotation,
                    ..
                },
            ) => {
                cm.written.insert(name.clone());
                cm.notes.push(Note::normal(
                    "RestartedForRotation",
                    format!("connector {name}: restarted with its tasks, since a file its config-provider references read changed"),
                ));
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
