//! What a pass reports on one ConfigMap, pure: from its plan, the worker's state and what
//! happened this pass, to the Events to publish and the change to its annotations (or the
//! release of its finalizer). No I/O here, so every rule is unit-tested; `report.rs` writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::day2::{self, OffsetsRecord, Phase, Record, RestartRecord};
use super::ledger::{Ledger, Provenance};
use super::live::{Live, LiveState};
use super::plan::CmPlan;
use crate::connect::destinations::LOCAL;
use crate::pipeline::parse::manifest::{
    ANNOTATION_APPLIED, ANNOTATION_CONNECTORS, ANNOTATION_LAST_ERROR, ANNOTATION_OPERATIONS, ANNOTATION_STATUS,
};
use crate::pipeline::render::secrets::mask;

/// connect-gate's own annotations, all removed when a ConfigMap is released.
pub const ANNOTATIONS: [&str; 5] = [
    ANNOTATION_CONNECTORS,
    ANNOTATION_APPLIED,
    ANNOTATION_STATUS,
    ANNOTATION_LAST_ERROR,
    ANNOTATION_OPERATIONS,
];

const TRACE_MAX: usize = 240;
/// Budgets of the free-text annotations, well under the API server's 256 KiB for all of an
/// object's annotations together: a failed status patch would end every later pass
/// 'Incomplete'. The records (`connectors`, `applied`) are never cut (a lost record is a lost
/// delete); their entries are bounded already (names of at most 249 bytes, data keys of at most
/// 253, hashes of fixed length).
pub const STATUS_MAX: usize = 64 * 1024;
pub const LAST_ERROR_MAX: usize = 16 * 1024;
/// One line of last-error (one rejection or failure).
const LINE_MAX: usize = 2048;
/// Event notes: the API server refuses more than 1 kB.
pub const NOTE_MAX: usize = 1000;

/// `text` cut to at most `max` bytes, on a character boundary, ending with a marker that says
/// how much was left out.
pub fn bound(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let marker = |cut: usize| format!("… [{cut} more bytes cut]");
    // The marker's own length depends on the count; the longest it can be is reserved.
    let mut end = max.saturating_sub(marker(text.len()).len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &text[..end], marker(text.len() - end))
}

/// The worker's answer to the last attempt at a config it rejected (400/422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The rejected config's fingerprint: a changed config is a new case.
    pub fingerprint: String,
    pub message: String,
    /// Attempts at this config so far, all rejected.
    pub attempts: u32,
    /// The wait before the next attempt.
    pub retry_in: Duration,
}

impl Rejected {
    /// The line for last-error and the Event of an attempt.
    pub fn describe(&self, name: &str) -> String {
        format!(
            "connector {name}: {} (attempt {}; next attempt in {} unless the config changes)",
            self.message,
            self.attempts,
            humantime::format_duration(self.retry_in)
        )
    }
}

/// An Event to publish on the ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub text: String,
}

impl Note {
    pub fn normal(reason: &'static str, text: String) -> Self {
        Self {
            warning: false,
            reason,
            text,
        }
    }

    pub fn warning(reason: &'static str, text: String) -> Self {
        Self {
            warning: true,
            reason,
            text,
        }
    }
}

/// Everything the report on one ConfigMap depends on.
pub struct Facts<'a> {
    pub plan: &'a CmPlan,
    /// Its annotations as they are now.
    pub annotations: &'a BTreeMap<String, String>,
    /// Being deleted, or unlabelled while still holding the finalizer.
    pub deleting: bool,
    pub has_finalizer: bool,
    /// `connect-gate.io/connectors` as recorded before this pass.
    pub managed: &'a BTreeMap<String, String>,
    /// `connect-gate.io/applied` after this pass's writes.
    pub applied: &'a BTreeMap<String, String>,
    /// The pipeline's rejection messages for its keys.
    pub rejections: Vec<String>,
    /// What failed this pass (REST calls, its own updates).
    pub errors: &'a [String],
    pub failed_deletes: &'a BTreeSet<String>,
    /// Connectors written this pass: their status is not known yet.
    pub written: &'a BTreeSet<String>,
    pub live: &'a LiveState,
    /// Connectors whose config the worker rejected.
    pub worker_rejected: &'a BTreeMap<String, Rejected>,
    /// Restarts so far, per connector.
    pub restarts: &'a BTreeMap<String, u32>,
    /// The day-2 tokens acted on, after this pass's results.
    pub operations: &'a BTreeMap<String, Record>,
    /// Secret values per connector, masked in whatever the worker says about it.
    pub secrets: &'a BTreeMap<String, Vec<String>>,
    /// The ledger as written this pass: which connectors were adopted rather than created.
    pub ledger: &'a Ledger,
    pub places: Places<'a>,
    /// Connectors whose inputs are sent as values where references were asked (Confluent Cloud).
    pub as_values: &'a BTreeSet<String>,
}

/// Where connectors are, when not all on the local worker.
#[derive(Clone, Copy, Debug)]
pub struct Places<'a> {
    /// The destination of each connector (`local` or absent: the local worker).
    pub homes: &'a BTreeMap<String, String>,
    /// Connectors whose destination could not be read this pass: their state is unknown.
    pub unknown: &'a BTreeSet<String>,
}

/// What to write on the ConfigMap.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    None,
    /// A JSON merge patch of `metadata.annotations` (`null` removes one).
    Annotations(Map<String, Value>),
    /// Its connectors are gone: remove the finalizer and every connect-gate annotation.
    Release,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub notes: Vec<Note>,
    pub change: Change,
}

/// What `connect-gate.io/status` says about one connector.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ConnectorStatus {
    pub state: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// Where it runs, when not on the local worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The last `restart` token acted on, and how it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartRecord>,
    /// The last `offsets` token, its phase and the worker's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<OffsetsRecord>,
}

impl ConnectorStatus {
    fn from_live(live: Option<&Live>, secrets: &[&str]) -> Self {
        let empty = |state: &str| ConnectorStatus {
            state: state.into(),
            tasks: BTreeMap::new(),
            trace: None,
            restarts: None,
            note: None,
            destination: None,
            restart: None,
            offsets: None,
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
            .map(|t| shorten_trace(t, secrets, TRACE_MAX));
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
            destination: None,
            restart: None,
            offsets: None,
        }
    }
}

/// The report on one ConfigMap.
pub fn report(f: &Facts) -> Report {
    let p = f.plan;
    let mut managed = p.managed_pre.clone();
    for name in &p.release {
        if !f.failed_deletes.contains(name) {
            managed.remove(name);
        }
    }
    // Ownership first: a deleted ConfigMap's release must not swallow why a name was not deleted.
    let mut notes: Vec<Note> = p
        .adopted
        .iter()
        .map(|name| {
            Note::normal(
                "Adopted",
                format!("adopted connector {name}, which already existed on the worker: connect-gate manages it from now on and deletes it when no ConfigMap declares it"),
            )
        })
        .collect();
    let mut ownership_errors = Vec::new();
    for name in &p.unowned {
        notes.push(Note::warning(
            "NotOwned",
            format!("connector {name} is listed in {ANNOTATION_CONNECTORS}, but connect-gate did not create or adopt it: not deleted, and dropped from the annotation"),
        ));
        ownership_errors.push(format!(
            "connector {name}: listed in {ANNOTATION_CONNECTORS} but not created or adopted by connect-gate; not deleted"
        ));
    }
    if f.deleting {
        if managed.is_empty() && f.has_finalizer {
            return Report {
                notes,
                change: Change::Release,
            };
        }
        if managed == *f.managed && f.errors.is_empty() && notes.is_empty() {
            return Report {
                notes,
                change: Change::None,
            };
        }
    }

    // last-error: the pipeline's rejections, the worker's 400s, failures of this pass.
    let worker_rejected = |name: &String| {
        f.worker_rejected
            .get(name)
            .filter(|r| p.desired.get(name) == Some(&r.fingerprint))
    };
    let mut errors = f.rejections.clone();
    for name in p.desired.keys() {
        if let Some(rejected) = worker_rejected(name) {
            errors.push(rejected.describe(name));
        }
    }
    errors.extend(f.errors.iter().cloned());
    errors.extend(ownership_errors);
    for (name, record) in f.operations.iter().filter(|(n, _)| p.desired.contains_key(*n)) {
        if let Some(o) = record.offsets.as_ref().filter(|o| o.phase == Phase::Failed) {
            errors.push(format!(
                "connector {name}: offsets token {}: {}; left stopped, retried with backoff",
                o.token,
                o.result.as_deref().unwrap_or("failed")
            ));
        }
    }
    let lines = last_error_lines(&errors);
    let last_error = (!lines.is_empty()).then(|| lines.join("\n"));
    let previous: BTreeSet<&str> = f
        .annotations
        .get(ANNOTATION_LAST_ERROR)
        .map(|e| e.lines().collect())
        .unwrap_or_default();
    // Compared as written: a cut line is the same rejection as long as it stays.
    let new_rejections: Vec<String> = f
        .rejections
        .iter()
        .map(|m| bound(m, LINE_MAX))
        .filter(|m| lines.contains(m) && !previous.contains(m.as_str()))
        .collect();
    if !new_rejections.is_empty() {
        notes.push(Note::warning("Rejected", new_rejections.join("\n")));
    }

    // status: every connector this ConfigMap declares or still manages.
    let names: BTreeSet<&String> = p
        .desired
        .keys()
        .chain(p.rejected.iter())
        .chain(managed.keys())
        .collect();
    let previous_status: BTreeMap<String, Value> = f
        .annotations
        .get(ANNOTATION_STATUS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let mut status: BTreeMap<&String, ConnectorStatus> = BTreeMap::new();
    for name in names {
        let secrets: Vec<&str> = f
            .secrets
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mut s = ConnectorStatus::from_live(f.live.get(name), &secrets);
        s.destination = f.places.homes.get(name).filter(|d| *d != LOCAL).cloned();
        if f.places.unknown.contains(name) {
            s.state = "UNKNOWN".into();
            s.tasks.clear();
            s.trace = None;
            s.note = Some("its destination could not be read; left as it was, see connect-gate.io/last-error");
        } else if f.written.contains(name) {
            s.state = "PENDING".into();
            s.tasks.clear();
            s.trace = None;
        }
        if p.rejected.contains(name) {
            s.note = Some("rejected: not applied, see connect-gate.io/last-error");
        } else if worker_rejected(name).is_some() {
            s.note = Some("the worker rejected the config; retried with backoff, see connect-gate.io/last-error");
        } else if f.ledger.provenance(name) == Some(Provenance::Adopted) {
            s.note = Some("adopted: it existed on the worker before connect-gate managed it");
        } else if f.as_values.contains(name) {
            s.note = Some("its inputs are sent as values: Confluent Cloud has no config providers");
        }
        s.restarts = f.restarts.get(name).copied().filter(|t| *t > 0);
        if let Some(record) = f.operations.get(name) {
            s.restart = record.restart.clone();
            s.offsets = record.offsets.clone();
        }
        let was_trace = previous_status
            .get(name)
            .and_then(|v| v.get("trace"))
            .and_then(Value::as_str);
        if let Some(trace) = &s.trace
            && was_trace != Some(trace.as_str())
        {
            notes.push(Note::warning("Failed", format!("connector {name} is FAILED: {trace}")));
        }
        status.insert(name, s);
    }

    let applied: BTreeMap<String, String> = f
        .applied
        .iter()
        .filter(|(n, _)| managed.contains_key(*n))
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect();
    let status = if status.is_empty() {
        Value::Null
    } else {
        json!(status_annotation(status))
    };
    let operations: BTreeMap<String, Record> = f
        .operations
        .iter()
        .filter(|(n, _)| managed.contains_key(*n) || p.desired.contains_key(*n) || p.rejected.contains(*n))
        .map(|(n, r)| (n.clone(), r.clone()))
        .collect();
    let wanted: [(&str, Value); 5] = [
        (ANNOTATION_CONNECTORS, map_annotation(&managed)),
        (ANNOTATION_APPLIED, map_annotation(&applied)),
        (ANNOTATION_STATUS, status),
        (
            ANNOTATION_LAST_ERROR,
            last_error.map(Value::String).unwrap_or(Value::Null),
        ),
        (ANNOTATION_OPERATIONS, day2::encode(&operations).into()),
    ];
    let mut patch = Map::new();
    for (key, value) in wanted {
        let current = f
            .annotations
            .get(key)
            .map(|s| Value::String(s.clone()))
            .unwrap_or(Value::Null);
        if current != value {
            patch.insert(key.to_string(), value);
        }
    }
    let change = if patch.is_empty() {
        Change::None
    } else {
        Change::Annotations(patch)
    };
    Report { notes, change }
}

/// last-error's lines: each cut to [`LINE_MAX`], as many as fit in [`LAST_ERROR_MAX`], then one
/// that counts the rest.
fn last_error_lines(errors: &[String]) -> Vec<String> {
    const COUNT_LINE: usize = 64;
    let mut lines = Vec::new();
    let mut size = 0;
    for (i, e) in errors.iter().enumerate() {
        let line = bound(e, LINE_MAX);
        if size + line.len() + 1 > LAST_ERROR_MAX - COUNT_LINE {
            lines.push(format!("… and {} more", errors.len() - i));
            break;
        }
        size += line.len() + 1;
        lines.push(line);
    }
    lines
}

/// The status as JSON within [`STATUS_MAX`]: task states are left out first (what remains is still
/// JSON); cut only if that is not enough.
fn status_annotation(mut status: BTreeMap<&String, ConnectorStatus>) -> String {
    let json = serde_json::to_string(&status).expect("serialises");
    if json.len() <= STATUS_MAX {
        return json;
    }
    for s in status.values_mut() {
        s.tasks.clear();
    }
    bound(&serde_json::to_string(&status).expect("serialises"), STATUS_MAX)
}

/// Shortens a FAILED trace to its first line (the exception and its message), at most `max`
/// characters, with the given secret values masked.
pub fn shorten_trace(trace: &str, secrets: &[&str], max: usize) -> String {
    let first = trace.lines().next().unwrap_or_default().trim();
    let masked = mask(first, secrets);
    if masked.chars().count() > max {
        let cut: String = masked.chars().take(max).collect();
        format!("{cut}…")
    } else {
        masked
    }
}

/// A JSON map annotation (`{connector: ...}`) as recorded; empty when absent or unreadable.
pub fn json_annotation(annotations: &BTreeMap<String, String>, key: &str) -> BTreeMap<String, String> {
    annotations
        .get(key)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// A map as an annotation value: compact JSON, or `null` (removed) when empty.
pub fn map_annotation(map: &BTreeMap<String, String>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        Value::String(serde_json::to_string(map).expect("serialises"))
    }
}

#[cfg(test)]
mod tests;
