//! `connect-gate plan`'s report, pure: each planned [`Action`] as a change a person (text) or a
//! tool (JSON) reads, the keys an update changes, and the exit code. Values that came from
//! template inputs are shown only as their placeholder and compared only through digests: the
//! report leaves the process (a PR comment, a CI log).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::connect::connector_path;
use crate::connect::destinations::LOCAL;
use crate::pipeline::check::verdict::Connector;
use crate::pipeline::render::secrets::mask;
use crate::reconcile::day2::OffsetsChange;
use crate::reconcile::live::Live;
use crate::reconcile::plan::{Action, AppliedHash, Cause, Trigger};

/// Keys Connect adds to a config it returns: never a difference.
const ADDED_BY_CONNECT: [&str; 2] = ["name", "__internal.config.version"];
/// How an input-derived old value is shown: never the value.
const HIDDEN: &str = "(hidden)";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Create,
    Update,
    Delete,
    Pause,
    Resume,
    Stop,
    Restart,
    Offsets,
}

/// One key of a create or update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    /// The key, or its placeholder when the key's name itself comes from inputs.
    pub key: String,
    /// The live value (`None`: not set); [`HIDDEN`] when the new value comes from inputs.
    pub old: Option<String>,
    /// The value to apply as the placeholder render shows it (`None`: removed).
    pub new: Option<String>,
    /// The new value depends on a variable or env value.
    pub from_inputs: bool,
    /// Whether old and new were compared (an input-derived value Connect hides, `****`, whose
    /// applied hash cannot decide, is not).
    pub compared: bool,
}

/// One REST write the reconciler would make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub destination: String,
    pub connector: String,
    /// The ConfigMap it is made for (`None`: an unmanaged connector pruned).
    pub configmap: Option<String>,
    pub kind: Kind,
    pub cause: Option<Cause>,
    /// The request, as `METHOD /path`: what the reconciler sends.
    pub request: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyChange>,
    /// The restart or offsets token, or why a create is stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A data key that is neither applied nor deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub configmap: String,
    pub key: String,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub namespace: String,
    pub changes: Vec<Change>,
    /// Declared connectors the plan leaves as they are.
    pub unchanged: usize,
    pub rejected: Vec<Rejected>,
    /// What else a person should know (names listed on a ConfigMap but not connect-gate's).
    pub notes: Vec<String>,
}

/// The method and path the reconciler's worker sends for `action` (see `Worker::execute`).
pub fn request(action: &Action) -> String {
    let path = connector_path(action.name());
    match action {
        Action::Put { stopped: true, .. } => "POST /connectors".into(),
        Action::Put { .. } => format!("PUT {path}/config"),
        Action::Delete { .. } => format!("DELETE {path}"),
        Action::State { to, .. } => format!("PUT {path}/{}", to.verb()),
        Action::Restart { only_failed, .. } => {
            format!("POST {path}/restart?includeTasks=true&onlyFailed={only_failed}")
        }
        Action::Offsets {
            change: OffsetsChange::Reset,
            ..
        } => format!("DELETE {path}/offsets"),
        Action::Offsets { .. } => format!("PATCH {path}/offsets"),
    }
}

/// What the revision the namespace holds now says about a connector's inputs: the values that
/// came from them and the keys they were set under. What runs was rendered from it, so an old
/// value under one of those keys, or holding one of those values, is never shown: a secret
/// rotated since no longer matches by value, but its key still says where it came from.
#[derive(Clone, Debug, Default)]
pub struct Earlier {
    pub values: Vec<String>,
    pub keys: BTreeSet<String>,
}

/// Key names that hold credentials by convention: their old values are never shown, whatever
/// their origin (a connector adopted or edited by hand may carry one as a literal).
fn sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "jaas",
        "apikey",
        "api.key",
        "private.key",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// What the connector of a `Put` is to be: the real render (compared, never shown where it
/// depends on inputs) and the placeholder render (shown).
pub struct Desired<'a> {
    pub real: &'a Connector,
    pub shown: Option<&'a Connector>,
    /// What the namespace's ConfigMaps declare now (before the merge) about its inputs.
    pub before: &'a Earlier,
    /// Its `connect-gate.io/applied` hash as recorded, and the scheme: what decides whether a
    /// value Connect hides is still the declared one.
    pub applied: Option<&'a str>,
    pub hash: &'a AppliedHash,
}

impl Desired<'_> {
    /// Whether the hidden (`****`) values of `live` are the declared ones: only a keyed hash
    /// covers them, and it decides when the live config with the declared values in their place
    /// is exactly what connect-gate applied (a value from inputs rotated since, or any key
    /// changed in between, leaves it undecided).
    fn hidden_values_unchanged(&self, live: &BTreeMap<String, String>) -> bool {
        let (AppliedHash::Keyed(_), Some(recorded)) = (self.hash, self.applied) else {
            return false;
        };
        let config = live
            .iter()
            .map(|(k, v)| match self.real.config.get(k) {
                Some(want) if masked(v) => (k.clone(), want.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        let applied = Connector {
            config,
            ..self.real.clone()
        };
        self.hash.of(&applied) == recorded
    }
}

/// `action` on `destination` as a change; `desired` is its connector for a `Put`, `live` what
/// the destination runs under that name (as the planner saw it).
pub fn change(destination: &str, action: &Action, desired: Option<&Desired>, live: Option<&Live>) -> Change {
    let (kind, cause, detail) = match action {
        Action::Put { cause, stopped, .. } => (
            if live.is_some() { Kind::Update } else { Kind::Create },
            Some(*cause),
            stopped.then(|| "created stopped: its offsets are set before it runs".to_string()),
        ),
        Action::Delete { cause, .. } => (Kind::Delete, Some(*cause), None),
        Action::State { to, .. } => (
            match to.verb() {
                "pause" => Kind::Pause,
                "resume" => Kind::Resume,
                _ => Kind::Stop,
            },
            None,
            None,
        ),
        Action::Restart {
            trigger, only_failed, ..
        } => (
            Kind::Restart,
            None,
            Some(match trigger {
                Trigger::Token(t) => format!("token {t}{}", if *only_failed { ", failed parts only" } else { "" }),
                Trigger::Failed => "--auto-restart: its failed parts".into(),
                Trigger::Rotation => "a file its references read changed".into(),
            }),
        ),
        Action::Offsets { token, change, .. } => (
            Kind::Offsets,
            None,
            Some(match change {
                OffsetsChange::Reset => format!("reset, token {token}"),
                OffsetsChange::Set(set) => format!("set {} partition(s), token {token}", set.len()),
            }),
        ),
    };
    let keys = match (action, desired) {
        (Action::Put { .. }, Some(d)) => key_changes(d, live.map(|l| &l.config)),
        _ => vec![],
    };
    Change {
        destination: destination.to_string(),
        connector: action.name().to_string(),
        configmap: action.cm().map(str::to_string),
        kind,
        cause,
        request: request(action),
        keys,
        detail,
    }
}

/// How Connect (Confluent Cloud) hides a value on read.
fn masked(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b'*')
}

fn digest(value: &str) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, value.as_bytes())
}

/// The keys that differ between `live` (`None`: it does not exist) and the desired config.
/// An input-derived value is compared by digest only and shown as its placeholder; a value
/// Connect hides (`****`) was already taken as the desired one by `fanout::as_applied` where the
/// applied hash decides, so one still hidden is listed as not compared, never as changed.
pub fn key_changes(desired: &Desired, live: Option<&BTreeMap<String, String>>) -> Vec<KeyChange> {
    let real = desired.real;
    let secrets: &[String] = &real.secrets;
    let empty = BTreeMap::new();
    let live = live.unwrap_or(&empty);
    let keys: BTreeSet<&String> = real.config.keys().chain(live.keys()).collect();
    let hidden_same = live.values().any(|v| masked(v)) && desired.hidden_values_unchanged(live);
    let mut out = Vec::new();
    for key in keys {
        if ADDED_BY_CONNECT.contains(&key.as_str()) {
            continue;
        }
        let (want, have) = (real.config.get(key), live.get(key));
        let from_inputs = want.is_some_and(|w| secrets.contains(w));
        let key_shown = if secrets.contains(key) {
            "⟨a key from inputs⟩".to_string()
        } else {
            key.clone()
        };
        let new = want.map(|w| {
            if from_inputs {
                desired
                    .shown
                    .and_then(|s| s.config.get(key))
                    .cloned()
                    .unwrap_or_else(|| "⟨from inputs⟩".into())
            } else {
                w.clone()
            }
        });
        let (differs, compared) = match (want, have) {
            (Some(_), Some(h)) if masked(h) => (false, !from_inputs || hidden_same),
            (Some(w), Some(h)) if from_inputs => (digest(w).as_ref() != digest(h).as_ref(), true),
            (Some(w), Some(h)) => (w != h, true),
            _ => (true, true),
        };
        if !differs && compared {
            continue;
        }
        // The live value was rendered from the earlier revision: a key that came from an input
        // then (and is plain now, or removed) holds one of its values.
        let old = have.map(|h| {
            let before = desired.before;
            if from_inputs
                || sensitive(key)
                || before.keys.contains(key)
                || secrets.contains(h)
                || before.values.contains(h)
            {
                HIDDEN.to_string()
            } else {
                mask(&mask(h, secrets), &before.values)
            }
        });
        out.push(KeyChange {
            key: key_shown,
            old,
            new,
            from_inputs,
            compared,
        });
    }
    out
}

/// 1 when a connector is rejected (as `check`), else 3 for changes under `--fail-on-changes`,
/// else 0.
pub fn exit_code(report: &Report, fail_on_changes: bool) -> u8 {
    if !report.rejected.is_empty() {
        1
    } else if fail_on_changes && !report.changes.is_empty() {
        3
    } else {
        0
    }
}

fn why(cause: Cause) -> &'static str {
    match cause {
        Cause::Created => "",
        Cause::Updated => "",
        Cause::Adopted => " (not connect-gate's yet: adopted)",
        Cause::DriftChanged => " (changed behind connect-gate's back: re-applied)",
        Cause::DriftDeleted => " (deleted behind connect-gate's back: recreated)",
        Cause::KeyRemoved => " (its data key was removed)",
        Cause::Renamed => " (renamed)",
        Cause::Disabled => " (enabled: \"false\")",
        Cause::ConfigMapDeleted => " (its ConfigMap is deleted or gone from the manifests)",
        Cause::Unmanaged => " (no ConfigMap declares it: --prune-unmanaged)",
    }
}

fn quoted(value: &Option<String>) -> String {
    match value {
        Some(v) if v == HIDDEN => v.clone(),
        Some(v) => format!("{v:?}"),
        None => "(unset)".into(),
    }
}

/// The plan for people; colour only on a terminal.
pub fn text(report: &Report, colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = format!("Plan for namespace {}:\n", report.namespace);
    for c in &report.changes {
        let (sign, code) = match c.kind {
            Kind::Create => ("+", "32"),
            Kind::Delete => ("-", "31"),
            Kind::Update => ("~", "33"),
            _ => (">", "36"),
        };
        let verb = format!("{:?}", c.kind).to_lowercase();
        let mut line = format!("  {} {verb:<8} {}", paint(code, sign), c.connector);
        if c.destination != LOCAL {
            line.push_str(&format!(" on {}", c.destination));
        }
        if let Some(cm) = &c.configmap {
            line.push_str(&format!(" [ConfigMap {cm}]"));
        }
        if let Some(cause) = c.cause {
            line.push_str(why(cause));
        }
        if let Some(detail) = &c.detail {
            line.push_str(&format!(": {detail}"));
        }
        out.push_str(&line);
        out.push('\n');
        for k in &c.keys {
            let note = match (k.from_inputs, k.compared) {
                (true, true) => " (from inputs)",
                (true, false) => " (from inputs, not compared)",
                _ => "",
            };
            if c.kind == Kind::Create {
                out.push_str(&format!("      {}: {}{note}\n", k.key, quoted(&k.new)));
            } else {
                out.push_str(&format!(
                    "      {}: {} -> {}{note}\n",
                    k.key,
                    quoted(&k.old),
                    quoted(&k.new)
                ));
            }
        }
    }
    if !report.rejected.is_empty() {
        out.push_str(&format!(
            "{}\n",
            paint("31;1", "Rejected (neither applied nor deleted):")
        ));
        for r in &report.rejected {
            out.push_str(&format!("  ConfigMap {}, key {}\n", r.configmap, r.key));
            for p in &r.problems {
                out.push_str(&format!("      error: {p}\n"));
            }
        }
    }
    for n in &report.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out.push_str(&summary_line(report));
    out
}

pub fn summary_line(report: &Report) -> String {
    format!(
        "{} change(s), {} connector(s) unchanged, {} rejected",
        report.changes.len(),
        report.unchanged,
        report.rejected.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan::Transition;

    fn connector(config: &[(&str, &str)], secrets: &[&str]) -> Connector {
        Connector {
            name: "dg".into(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            state: None,
            restart: None,
            offsets: None,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            ..Connector::default()
        }
    }

    fn live(config: &[(&str, &str)]) -> BTreeMap<String, String> {
        config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_update_lists_the_keys_that_change_and_never_a_key_connect_adds() {
        let real = connector(&[("name", "dg"), ("topic", "b"), ("tasks.max", "1")], &[]);
        let d = Desired {
            real: &real,
            shown: None,
            before: &Earlier::default(),
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        let have = live(&[
            ("name", "dg"),
            ("topic", "a"),
            ("old", "x"),
            ("__internal.config.version", "2"),
            ("tasks.max", "1"),
        ]);
        let keys = key_changes(&d, Some(&have));
        let shown: Vec<(&str, Option<&str>, Option<&str>)> = keys
            .iter()
            .map(|k| (k.key.as_str(), k.old.as_deref(), k.new.as_deref()))
            .collect();
        assert_eq!(shown, [("old", Some("x"), None), ("topic", Some("a"), Some("b"))]);
    }

    #[test]
    fn a_value_from_inputs_shows_as_its_placeholder_and_its_old_value_never() {
        let real = connector(&[("password", "s3cret-new"), ("url", "jdbc://db")], &["s3cret-new"]);
        let shown = connector(&[("password", "⟨$DB_PASSWORD⟩"), ("url", "jdbc://db")], &[]);
        let d = Desired {
            real: &real,
            shown: Some(&shown),
            before: &Earlier::default(),
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        let have = live(&[("password", "s3cret-old"), ("url", "jdbc://db")]);
        let keys = key_changes(&d, Some(&have));
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].old.as_deref(), Some(HIDDEN));
        assert_eq!(keys[0].new.as_deref(), Some("⟨$DB_PASSWORD⟩"));
        assert!(keys[0].from_inputs && keys[0].compared);
        let text = serde_json::to_string(&keys).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        // The same value: compared by digest, not listed.
        let same = live(&[("password", "s3cret-new"), ("url", "jdbc://db")]);
        assert!(key_changes(&d, Some(&same)).is_empty());
    }

    #[test]
    fn a_hidden_value_is_not_a_difference_and_one_from_inputs_is_marked_not_compared() {
        let real = connector(&[("api.secret", "s3cret"), ("region", "eu")], &["s3cret"]);
        let d = Desired {
            real: &real,
            shown: None,
            before: &Earlier::default(),
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        let keys = key_changes(&d, Some(&live(&[("api.secret", "*******"), ("region", "eu")])));
        assert_eq!(keys.len(), 1);
        assert!(keys[0].from_inputs && !keys[0].compared);
        assert_eq!(keys[0].new.as_deref(), Some("⟨from inputs⟩"));
        let plain = connector(&[("region", "eu")], &[]);
        let d = Desired {
            real: &plain,
            shown: None,
            before: &Earlier::default(),
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        assert!(key_changes(&d, Some(&live(&[("region", "****")]))).is_empty());
    }

    #[test]
    fn a_keyed_applied_hash_decides_whether_a_hidden_value_changed() {
        let hash = AppliedHash::keyed(&[7; 32]).unwrap();
        let real = connector(&[("api.secret", "s3cret"), ("topic", "b")], &["s3cret"]);
        let was = |secret: &str| hash.of(&connector(&[("api.secret", secret), ("topic", "a")], &[secret]));
        let have = live(&[("api.secret", "****"), ("topic", "a")]);
        let listed = |recorded: &str| -> Vec<(String, bool)> {
            let d = Desired {
                real: &real,
                shown: None,
                before: &Earlier::default(),
                applied: Some(recorded),
                hash: &hash,
            };
            key_changes(&d, Some(&have))
                .into_iter()
                .map(|k| (k.key, k.compared))
                .collect()
        };
        // Applied with this very secret: only the topic changes.
        assert_eq!(listed(&was("s3cret")), [("topic".to_string(), true)]);
        // Applied with another one (rotated since): the hidden value cannot be compared.
        assert_eq!(
            listed(&was("old")),
            [("api.secret".to_string(), false), ("topic".to_string(), true)]
        );
    }

    #[test]
    fn an_old_value_holding_a_current_secret_is_masked() {
        let real = connector(&[("url", "jdbc://db"), ("pw", "hunter22")], &["hunter22"]);
        let d = Desired {
            real: &real,
            shown: None,
            before: &Earlier::default(),
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        let keys = key_changes(&d, Some(&live(&[("url", "jdbc://u:hunter22@db"), ("pw", "hunter22")])));
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].old.as_deref(), Some("jdbc://u:****@db"));
    }

    #[test]
    fn a_live_value_that_came_from_inputs_before_is_never_shown() {
        // Declared from $DB_PASSWORD before; now a literal, and another key removed.
        let real = connector(&[("password", "literal"), ("url", "jdbc://db")], &[]);
        let before = Earlier {
            values: vec!["old-s3cret".to_string(), "ab".to_string()],
            keys: BTreeSet::new(),
        };
        let d = Desired {
            real: &real,
            shown: None,
            before: &before,
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        let have = live(&[("password", "old-s3cret"), ("url", "jdbc://db"), ("user", "ab")]);
        let keys = key_changes(&d, Some(&have));
        let olds: Vec<Option<&str>> = keys.iter().map(|k| k.old.as_deref()).collect();
        assert_eq!(olds, [Some(HIDDEN), Some(HIDDEN)], "{keys:?}");
    }

    #[test]
    fn an_old_value_from_inputs_rotated_since_is_hidden_by_its_key_and_credentials_always() {
        // `conn.secret` came from $CONN_SECRET, rotated since: its live value matches nothing.
        let real = connector(
            &[("conn.secret", "literal"), ("db.password", "x"), ("url", "jdbc://b")],
            &[],
        );
        let before = Earlier {
            values: vec!["new-s3cret".to_string()],
            keys: ["conn.secret".to_string()].into(),
        };
        let d = Desired {
            real: &real,
            shown: None,
            before: &before,
            applied: None,
            hash: &AppliedHash::NonSecret,
        };
        let have = live(&[
            ("conn.secret", "old-s3cret"),
            ("db.password", "hand-set"),
            ("url", "jdbc://a"),
        ]);
        let olds: Vec<(String, Option<String>)> = key_changes(&d, Some(&have))
            .into_iter()
            .map(|k| (k.key, k.old))
            .collect();
        assert_eq!(
            olds,
            [
                ("conn.secret".to_string(), Some(HIDDEN.to_string())),
                ("db.password".into(), Some(HIDDEN.into())),
                ("url".into(), Some("jdbc://a".into())),
            ]
        );
    }

    fn put(stopped: bool) -> Action {
        Action::Put {
            cm: "cm".into(),
            name: "a b".into(),
            config: BTreeMap::new(),
            hash: String::new(),
            cause: Cause::Created,
            stopped,
        }
    }

    #[test]
    fn each_action_names_the_request_the_worker_sends() {
        assert_eq!(request(&put(false)), "PUT /connectors/a%20b/config");
        assert_eq!(request(&put(true)), "POST /connectors");
        let state = Action::State {
            cm: "cm".into(),
            name: "a".into(),
            to: Transition::Pause,
        };
        assert_eq!(request(&state), "PUT /connectors/a/pause");
        let offsets = Action::Offsets {
            cm: "cm".into(),
            name: "a".into(),
            token: "t".into(),
            change: OffsetsChange::Reset,
        };
        assert_eq!(request(&offsets), "DELETE /connectors/a/offsets");
        let c = change("local", &state, None, None);
        assert_eq!(c.kind, Kind::Pause);
    }

    #[test]
    fn exit_codes_put_rejections_before_changes() {
        let mut report = Report::default();
        assert_eq!(exit_code(&report, true), 0);
        report.changes.push(change("local", &put(false), None, None));
        assert_eq!(exit_code(&report, false), 0);
        assert_eq!(exit_code(&report, true), 3);
        report.rejected.push(Rejected {
            configmap: "cm".into(),
            key: "k".into(),
            problems: vec![],
        });
        assert_eq!(exit_code(&report, true), 1);
        let text = text(&report, false);
        assert!(text.contains("+ create   a b [ConfigMap cm]"), "{text}");
        assert!(
            text.ends_with("1 change(s), 0 connector(s) unchanged, 1 rejected"),
            "{text}"
        );
    }
}
