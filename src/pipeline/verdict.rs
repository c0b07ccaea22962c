//! The verdict pipeline: ConfigMap -> render -> check. The webhook, the reconciler and the CLI
//! all call [`Pipeline::judge`], so admission and reconciliation can never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

use super::inputs::TemplateInputs;
use super::manifest::{ConnectorConfigMap, Origin};
use super::plugins::Catalog;
use super::template::{Outcome, Pos, Renderer, Request, SandboxError};

/// The state a connector is declared to be in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Running,
    Paused,
    Stopped,
}

/// A rendered connector, exactly as it would be sent to Connect: every config value a string,
/// `config.name` equal to `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connector {
    pub name: String,
    pub config: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Config keys whose values came from a variable or env (masked by `render`).
    #[serde(skip)]
    pub secret_keys: BTreeSet<String>,
}

/// Why a connector is rejected. Displayed after its location.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("template does not parse at {pos}: expected {expected}, found `{found}`")]
    Syntax { expected: String, found: String, pos: Pos },
    #[error(
        "undefined variable ${name} at {pos}; variables available: {}",
        list_or_none(available)
    )]
    UndefinedVar {
        name: String,
        pos: Pos,
        available: Vec<String>,
    },
    #[error("unknown {kind} `{name}` at {pos}")]
    UndefinedFilter { kind: String, name: String, pos: Pos },
    #[error("env.{name} is not set{}", used_by(keys))]
    EnvUnset { name: String, keys: Vec<String> },
    #[error("env.{name} is not available to templates ({reason}){}", used_by(keys))]
    EnvHidden {
        name: String,
        reason: String,
        keys: Vec<String>,
    },
    #[error("template failed: {0}")]
    Runtime(String),
    #[error("template must produce exactly one object, it produced {0} outputs")]
    OutputCount(usize),
    #[error("template output is larger than 1 MiB")]
    TooLarge,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the data value is empty")]
    EmptyTemplate,
    #[error("binaryData cannot hold a connector template; put it under data")]
    BinaryData,
    #[error("template must produce an object {{\"name\": ..., \"config\": {{...}}}}, it produced {0}")]
    NotObject(&'static str),
    #[error("unexpected top-level key `{0}` (a template produces name, config and optionally state)")]
    UnknownKey(String),
    #[error("`name` is missing")]
    MissingName,
    #[error("`name` must be a string, it is {0}")]
    NameNotString(&'static str),
    #[error("`name` is empty")]
    EmptyName,
    #[error("connector name {name:?} cannot be used by Connect: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("`config` is missing or not an object")]
    MissingConfig,
    #[error("config.name {config_name:?} differs from name {name:?}")]
    NameMismatch { name: String, config_name: String },
    #[error("config has no `connector.class`")]
    MissingClass,
    #[error("config key `{key}` is {kind}; Connect configs are strings")]
    BadValue { key: String, kind: &'static str },
    #[error("`state` must be \"running\", \"paused\" or \"stopped\"")]
    BadState,
    #[error("connector name {name:?} is also declared by {other}")]
    Duplicate { name: String, other: String },
    #[error(
        "connector.class {class:?} is not installed on the worker; closest installed: {}",
        list_or_none(closest)
    )]
    UnknownClass { class: String, closest: Vec<String> },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn used_by(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!(" (used by {})", keys.join(", "))
    }
}

/// Whether the ConfigMap declares that the connector must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Present,
    Absent,
}

/// The judgement of one data key.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub origin: Origin,
    pub key: String,
    pub desired: Desired,
    /// The connector name, when the template got far enough to yield one.
    pub name: Option<String>,
    /// Present when accepted with `desired: present`.
    #[serde(skip)]
    pub connector: Option<Connector>,
    /// Rejection causes, already scrubbed of secret values. Empty means accepted.
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// The `destination.cc` target: the connector runs on a managed cluster, not the local worker.
    pub cloud_target: Option<String>,
    /// Rejected (at least) because `connector.class` is not in the plugin list used.
    #[serde(skip)]
    pub unknown_class: bool,
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }

    /// Where this connector is declared, for messages.
    pub fn location(&self) -> String {
        let mut s = format!("{}, key {}", self.origin, self.key);
        if let Some(name) = &self.name {
            s.push_str(&format!(", connector {name}"));
        }
        s
    }

    /// One line per problem: location and cause.
    pub fn messages(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|p| format!("{}: {p}", self.location()))
    }
}

/// How the plugin check is done for this judgement.
#[derive(Clone, Copy, Debug)]
pub enum PluginCheck<'a> {
    Catalog(&'a Catalog),
    /// The worker's plugin list could not be had: the check is skipped with this warning.
    Unavailable(&'a str),
    /// Offline use without a plugin list.
    Skip,
}

/// The shared pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    renderer: Renderer,
}

impl Pipeline {
    pub fn new(renderer: Renderer) -> Self {
        Self { renderer }
    }

    /// Judges every data key of every ConfigMap, including names declared twice across them.
    pub async fn judge(
        &self,
        cms: &[ConnectorConfigMap],
        inputs: &TemplateInputs,
        plugins: PluginCheck<'_>,
    ) -> Vec<Verdict> {
        let jobs = cms.iter().flat_map(|cm| {
            let rendered = cm
                .data
                .iter()
                .map(move |(key, code)| self.judge_key(cm, key, code, inputs, plugins));
            let binary = cm
                .binary_keys
                .iter()
                .map(move |key| async move { draft(cm, key).finish(vec![Problem::BinaryData], &Taint::default()) });
            rendered
                .map(futures::future::Either::Left)
                .chain(binary.map(futures::future::Either::Right))
        });
        let mut verdicts: Vec<Verdict> = futures::future::join_all(jobs).await;
        mark_duplicates(&mut verdicts);
        verdicts
    }

    async fn judge_key(
        &self,
        cm: &ConnectorConfigMap,
        key: &str,
        code: &str,
        inputs: &TemplateInputs,
        plugins: PluginCheck<'_>,
    ) -> Verdict {
        let taint = Taint::new(code, inputs);
        let mut verdict = draft(cm, key);
        if let Some(target) = &cm.cloud_target {
            verdict.warnings.push(format!(
                "targets the fully managed cluster {target:?} (label destination.cc): not checked against the local worker's plugins"
            ));
        }
        if code.trim().is_empty() {
            return verdict.finish(vec![Problem::EmptyTemplate], &taint);
        }
        let value = match self.render(code, inputs, cm.enabled).await {
            Ok(value) => value,
            Err(problems) => return verdict.finish(problems, &taint),
        };
        let checked = check_shape(&value, &taint);
        verdict.name = checked.name.clone();
        let mut problems = checked.name_problems;
        if !cm.enabled {
            // Only the name matters to delete it; shape problems of a disabled connector do not.
            return verdict.finish(problems, &taint);
        }
        problems.extend(checked.problems);
        if let (Some(connector), true) = (&checked.connector, cm.cloud_target.is_none()) {
            match plugins {
                PluginCheck::Catalog(catalog) => {
                    let class = &connector.config["connector.class"];
                    if catalog.resolve(class).is_none() {
                        verdict.unknown_class = true;
                        let closest = catalog.closest(class).into_iter().map(String::from).collect();
                        problems.push(Problem::UnknownClass {
                            class: class.clone(),
                            closest,
                        });
                    }
                }
                PluginCheck::Unavailable(why) => verdict.warnings.push(format!("plugin check skipped: {why}")),
                PluginCheck::Skip => {}
            }
        }
        if problems.is_empty() {
            verdict.connector = checked.connector;
        }
        verdict.finish(problems, &taint)
    }

    /// Renders a template. Disabled connectors only need their name, so undefined variables
    /// and unset env are bound to empty strings for them instead of rejecting.
    async fn render(&self, code: &str, inputs: &TemplateInputs, enabled: bool) -> Result<Value, Vec<Problem>> {
        let mut request = Request {
            code: code.to_string(),
            vars: inputs
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            env: inputs
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
        };
        let outcome = self.renderer.eval(&request).await.map_err(|e| vec![e.into()])?;
        if let (Outcome::Undefined(undefined), false) = (&outcome, enabled) {
            let only_vars = undefined.iter().all(|u| u.kind == "variable");
            if only_vars {
                request
                    .vars
                    .extend(undefined.iter().map(|u| (u.name.clone(), String::new())));
                let retried = self.renderer.eval(&request).await.map_err(|e| vec![e.into()])?;
                return outcome_value(retried, inputs);
            }
        }
        let missing: Vec<String> = referenced_env(code)
            .into_iter()
            .filter(|n| !inputs.env.contains_key(n))
            .collect();
        if missing.is_empty() || !enabled {
            return outcome_value(outcome, inputs);
        }
        // Find which unset env vars actually reach the output: render again with a marker in
        // each, and blame those whose marker appears where the first render had null.
        let marker = |name: &str| format!("\u{1}unset:{name}\u{1}");
        request.env.extend(missing.iter().map(|n| (n.clone(), marker(n))));
        let marked = self.renderer.eval(&request).await.map_err(|e| vec![e.into()])?;
        let Outcome::Value(marked) = marked else {
            return outcome_value(outcome, inputs);
        };
        let first = match &outcome {
            Outcome::Value(v) => Some(v),
            _ => None,
        };
        let mut leaves = Vec::new();
        collect_leaves(&marked, &mut Vec::new(), &mut leaves);
        let mut blamed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for name in &missing {
            let m = marker(name);
            for (path, text) in leaves.iter().filter(|(_, t)| t.contains(&m)) {
                let real = first.and_then(|v| lookup(v, path));
                let unset_shows = match real {
                    None | Some(Value::Null) => true,
                    Some(Value::String(s)) => *s == text.replace(&m, "null"),
                    Some(_) => false,
                };
                if unset_shows || first.is_none() {
                    blamed.entry(name).or_default().push(display_path(path));
                }
            }
        }
        if blamed.is_empty() && first.is_none() {
            blamed.extend(missing.iter().map(|n| (n.as_str(), vec![])));
        }
        if blamed.is_empty() {
            return outcome_value(outcome, inputs);
        }
        Err(blamed
            .into_iter()
            .map(|(name, keys)| match inputs.env_hidden_reason(name) {
                Some(reason) => Problem::EnvHidden {
                    name: name.to_string(),
                    reason,
                    keys,
                },
                None => Problem::EnvUnset {
                    name: name.to_string(),
                    keys,
                },
            })
            .collect())
    }
}

fn draft(cm: &ConnectorConfigMap, key: &str) -> Verdict {
    Verdict {
        origin: cm.origin.clone(),
        key: key.to_string(),
        desired: if cm.enabled { Desired::Present } else { Desired::Absent },
        name: None,
        connector: None,
        problems: vec![],
        warnings: vec![],
        cloud_target: cm.cloud_target.clone(),
        unknown_class: false,
    }
}

impl Verdict {
    fn finish(mut self, problems: Vec<Problem>, taint: &Taint) -> Self {
        self.problems = problems.iter().map(|p| taint.scrub(&p.to_string())).collect();
        self.warnings = self.warnings.iter().map(|w| taint.scrub(w)).collect();
        self
    }
}

fn outcome_value(outcome: Outcome, inputs: &TemplateInputs) -> Result<Value, Vec<Problem>> {
    Err(vec![match outcome {
        Outcome::Value(v) => return Ok(v),
        Outcome::Syntax { expected, found, pos } => Problem::Syntax { expected, found, pos },
        Outcome::Undefined(undefined) => {
            return Err(undefined
                .into_iter()
                .map(|u| match u.kind.as_str() {
                    "variable" => Problem::UndefinedVar {
                        name: u.name,
                        pos: u.pos,
                        available: inputs.vars.keys().map(|k| format!("${k}")).collect(),
                    },
                    _ => Problem::UndefinedFilter {
                        kind: u.kind,
                        name: u.name,
                        pos: u.pos,
                    },
                })
                .collect());
        }
        Outcome::Runtime(message) => Problem::Runtime(mask_string_literals(&message)),
        Outcome::OutputCount(n) => Problem::OutputCount(n),
        Outcome::TooLarge => Problem::TooLarge,
    }])
}

/// jq error messages quote the values they failed on; those may be secrets.
fn mask_string_literals(message: &str) -> String {
    static STRING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap());
    STRING.replace_all(message, "\"****\"").into_owned()
}

/// Env var names a template reads: `env.X`, `$ENV.X`, `env["X"]`, `$ENV["X"]`.
pub fn referenced_env(code: &str) -> BTreeSet<String> {
    static REF: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?:\benv|\$ENV)\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([^"\\]+)"\s*\])"#).unwrap()
    });
    REF.captures_iter(code)
        .filter_map(|c| c.get(1).or(c.get(2)).map(|m| m.as_str().to_string()))
        .collect()
}

/// Names of the `$VAR`s a template mentions.
fn referenced_vars(code: &str) -> BTreeSet<String> {
    static REF: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$([A-Za-z_][A-Za-z0-9_]*)").unwrap());
    REF.captures_iter(code).map(|c| c[1].to_string()).collect()
}

type Path = Vec<String>;

fn collect_leaves<'v>(v: &'v Value, path: &mut Path, out: &mut Vec<(Path, &'v str)>) {
    match v {
        Value::String(s) => out.push((path.clone(), s)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            path.push(k.clone());
            collect_leaves(v, path, out);
            path.pop();
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
            path.push(i.to_string());
            collect_leaves(v, path, out);
            path.pop();
        }),
        _ => {}
    }
}

fn lookup<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(map) => map.get(k),
        Value::Array(items) => k.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn display_path(path: &[String]) -> String {
    match path {
        [config, key] if config == "config" => format!("config key `{key}`"),
        _ => format!("`{}`", path.join(".")),
    }
}

/// The values of the variables and env a template reads, to mask in what leaves the process.
/// Only what the template references can reach its output or its errors.
#[derive(Default)]
struct Taint {
    values: Vec<String>,
}

impl Taint {
    fn new(code: &str, inputs: &TemplateInputs) -> Self {
        let vars = referenced_vars(code).into_iter().filter_map(|n| inputs.vars.get(&n));
        let env = referenced_env(code).into_iter().filter_map(|n| inputs.env.get(&n));
        let values = vars
            .chain(env)
            .map(|s| s.expose().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        Self { values }
    }

    /// Whether a rendered value came (at least in part) from a variable.
    fn touches(&self, value: &str) -> bool {
        self.values.iter().any(|v| value.contains(v.as_str()))
    }

    fn scrub(&self, text: &str) -> String {
        super::secrets::mask(text, &self.values)
    }
}

struct Checked {
    name: Option<String>,
    connector: Option<Connector>,
    /// Problems that prevent even deleting the connector.
    name_problems: Vec<Problem>,
    problems: Vec<Problem>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The checks on a rendered value. Pure.
fn check_shape(value: &Value, taint: &Taint) -> Checked {
    let mut checked = Checked {
        name: None,
        connector: None,
        name_problems: vec![],
        problems: vec![],
    };
    let Value::Object(top) = value else {
        checked.name_problems.push(Problem::NotObject(type_name(value)));
        return checked;
    };
    match top.get("name") {
        None | Some(Value::Null) => checked.name_problems.push(Problem::MissingName),
        Some(Value::String(name)) => match name_problem(name) {
            Some(problem) => checked.name_problems.push(problem),
            None => checked.name = Some(name.clone()),
        },
        Some(other) => checked.name_problems.push(Problem::NameNotString(type_name(other))),
    }
    let problems = &mut checked.problems;
    for key in top
        .keys()
        .filter(|k| !["name", "config", "state"].contains(&k.as_str()))
    {
        problems.push(Problem::UnknownKey(key.clone()));
    }
    let state = match top.get("state") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.to_lowercase().as_str() {
            "running" => Some(State::Running),
            "paused" => Some(State::Paused),
            "stopped" => Some(State::Stopped),
            _ => {
                problems.push(Problem::BadState);
                None
            }
        },
        Some(_) => {
            problems.push(Problem::BadState);
            None
        }
    };
    let Some(Value::Object(raw)) = top.get("config") else {
        problems.push(Problem::MissingConfig);
        return checked;
    };
    let config = stringify_config(raw, problems);
    if let (Some(name), Some(config_name)) = (&checked.name, config.get("name"))
        && config_name != name
    {
        problems.push(Problem::NameMismatch {
            name: name.clone(),
            config_name: config_name.clone(),
        });
    }
    if !raw.contains_key("connector.class") || config.get("connector.class").is_some_and(|c| c.trim().is_empty()) {
        problems.push(Problem::MissingClass);
    }
    if let (Some(name), true) = (&checked.name, problems.is_empty() && checked.name_problems.is_empty()) {
        let mut config = config;
        config.insert("name".into(), name.clone());
        let secret_keys = config
            .iter()
            .filter(|(_, v)| taint.touches(v))
            .map(|(k, _)| k.clone())
            .collect();
        checked.connector = Some(Connector {
            name: name.clone(),
            config,
            state,
            secret_keys,
        });
    }
    checked
}

/// Connect stores strings: numbers and booleans become their JSON text; null, objects and
/// arrays are rejected.
fn stringify_config(raw: &Map<String, Value>, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    for (key, value) in raw {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null | Value::Array(_) | Value::Object(_) => {
                problems.push(Problem::BadValue {
                    key: key.clone(),
                    kind: type_name(value),
                });
                continue;
            }
        };
        config.insert(key.clone(), text);
    }
    config
}

/// Names Connect cannot take or that break its REST paths.
fn name_problem(name: &str) -> Option<Problem> {
    let why = if name.trim().is_empty() {
        return Some(Problem::EmptyName);
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else if name.contains('/') || name.contains('\\') {
        "it contains a slash, which breaks the REST API's paths"
    } else if name.trim() != name {
        "it has leading or trailing whitespace, which Connect trims"
    } else if name.len() > 249 {
        "it is longer than 249 bytes"
    } else {
        return None;
    };
    Some(Problem::InvalidName {
        name: name.escape_debug().to_string(),
        why,
    })
}

/// Connector names are not secret (Connect lists them to anyone), so these messages need no mask.
fn mark_duplicates(verdicts: &mut [Verdict]) {
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, v) in verdicts.iter().enumerate() {
        if let Some(name) = &v.name {
            by_name.entry(name.clone()).or_default().push(i);
        }
    }
    for (name, indexes) in by_name.into_iter().filter(|(_, ix)| ix.len() > 1) {
        for &i in &indexes {
            let others: Vec<String> = indexes
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| format!("{}, key {}", verdicts[j].origin, verdicts[j].key))
                .collect();
            let problem = Problem::Duplicate {
                name: name.clone(),
                other: others.join("; "),
            };
            verdicts[i].problems.push(problem.to_string());
            verdicts[i].connector = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_env_references() {
        let code = r#"{"a": env.A, "b": $ENV.B, "c": env["C"], "d": $ENV [ "D" ], "e": "env.NOT"}"#;
        let found: Vec<_> = referenced_env(code).into_iter().collect();
        // The string literal is a false positive that costs nothing: it is only a candidate.
        assert_eq!(found, vec!["A", "B", "C", "D", "NOT"]);
    }

    #[test]
    fn runtime_messages_lose_their_quoted_values() {
        assert_eq!(
            mask_string_literals(r#"cannot use "hun\"ter2" (string) as number"#),
            r#"cannot use "****" (string) as number"#
        );
    }

    #[test]
    fn names_connect_cannot_take() {
        assert!(name_problem("ok-name.1").is_none());
        for bad in ["a/b", "a\nb", " a", "", "  "] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
