//! The verdict pipeline: ConfigMap -> render -> check. The webhook, the reconciler and the CLI
//! all call [`Pipeline::judge`], so admission and reconciliation can never disagree.
//!
//! Every template is rendered twice, in one sandboxed child: against the real variable and env
//! values, which decides, and against placeholders naming them (`⟨$VAR⟩`, `⟨env.X⟩`), which
//! every text is built from. A template that transforms a value before it surfaces (`@base64`,
//! a slice, a config key, `error(...)`) so shows the transform of a placeholder, never of the
//! value; where the two renders disagree, the messages say so without values.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::pipeline::check::duplicates::settle;
use crate::pipeline::check::operations;
use crate::pipeline::check::plugins::Catalog;
use crate::pipeline::check::providers::WorkerConfig;
use crate::pipeline::check::references::{Unresolvable, check_config, files_read};
use crate::pipeline::check::secrets_as::{SecretsAs, as_references};
use crate::pipeline::check::shape::check_shape;
use crate::pipeline::check::verdict::{Connector, Desired, Problem, State, Verdict};
use crate::pipeline::parse::manifest::ConnectorConfigMap;
use crate::pipeline::render::evaluation::{Bindings, Outcome, Request};
use crate::pipeline::render::inputs::TemplateInputs;
use crate::pipeline::render::sandbox::{Renderer, SandboxError};
use crate::pipeline::render::secrets::{PLACEHOLDER_OPEN, Secret, env_placeholder, var_placeholder};
use crate::pipeline::render::template;

/// How the plugin check is done for this judgement.
#[derive(Clone, Copy, Debug)]
pub enum PluginCheck<'a> {
    Catalog(&'a Catalog),
    /// The worker's plugin list could not be had: the check is skipped with this warning.
    Unavailable(&'a str),
    /// Offline use without a plugin list.
    Skip,
}

/// How one ConfigMap is checked against its destination.
#[derive(Clone, Copy, Debug)]
pub struct DestinationCheck<'a> {
    pub plugins: PluginCheck<'a>,
    /// Why its destination cannot be used (unknown, unresolvable): each of its keys is rejected.
    pub unusable: Option<&'a str>,
    /// The destination, when it is Confluent Cloud: `state: stopped`, `restart` and `offsets` are
    /// rejected.
    pub cloud: Option<&'a str>,
    /// The config providers of the destination's workers, when known: every reference is
    /// judged against them.
    pub providers: Option<&'a WorkerConfig>,
    /// How template inputs reach the destination; `References` needs `providers`.
    pub secrets_as: SecretsAs,
}

impl<'a> From<PluginCheck<'a>> for DestinationCheck<'a> {
    fn from(plugins: PluginCheck<'a>) -> Self {
        Self {
            plugins,
            unusable: None,
            cloud: None,
            providers: None,
            secrets_as: SecretsAs::Values,
        }
    }
}

/// The shared pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    renderer: Renderer,
    unresolvable: Unresolvable,
}

impl Pipeline {
    /// The sidecar's pipeline: a reference to a path that does not exist is denied.
    pub fn new(renderer: Renderer) -> Self {
        Self {
            renderer,
            unresolvable: Unresolvable::Deny,
        }
    }

    /// What a reference to a path that does not exist here is (`check` and `plan` run where
    /// the worker's paths may not exist).
    pub fn unresolvable(self, unresolvable: Unresolvable) -> Self {
        Self { unresolvable, ..self }
    }

    /// Judges every data key of every ConfigMap against one plugin list, including names
    /// declared twice across them.
    pub async fn judge(
        &self,
        cms: &[ConnectorConfigMap],
        inputs: &TemplateInputs,
        plugins: PluginCheck<'_>,
    ) -> Vec<Verdict> {
        let mut verdicts = self.judge_each(cms, inputs, &vec![plugins.into(); cms.len()]).await;
        settle(&mut verdicts, &[]);
        verdicts
    }

    /// Judges every data key of every ConfigMap on its own, each ConfigMap against its own
    /// destination (`checks[i]` for `cms[i]`): names declared twice, across destinations too,
    /// are left to [`settle`], which every judgement must end with.
    pub async fn judge_each(
        &self,
        cms: &[ConnectorConfigMap],
        inputs: &TemplateInputs,
        checks: &[DestinationCheck<'_>],
    ) -> Vec<Verdict> {
        let jobs = cms.iter().zip(checks.iter().copied()).flat_map(|(cm, check)| {
            let rendered = cm
                .data
                .iter()
                .map(move |(key, code)| self.judge_key(cm, key, code, inputs, check));
            let binary = cm
                .binary_keys
                .iter()
                .map(move |key| async move { draft(cm, key).finish(vec![Problem::BinaryData], &Taint::default()) });
            rendered
                .map(futures::future::Either::Left)
                .chain(binary.map(futures::future::Either::Right))
        });
        futures::future::join_all(jobs).await
    }

    async fn judge_key(
        &self,
        cm: &ConnectorConfigMap,
        key: &str,
        code: &str,
        inputs: &TemplateInputs,
        check: DestinationCheck<'_>,
    ) -> Verdict {
        let taint = Taint::new(code, inputs);
        let mut verdict = draft(cm, key);
        let plugins = check.plugins;
        if let Some(why) = check.unusable {
            return verdict.finish(vec![Problem::Destination(why.to_string())], &taint);
        }
        if code.trim().is_empty() {
            return verdict.finish(vec![Problem::EmptyTemplate], &taint);
        }
        let [real, shown] = match self.render(code, inputs, cm.enabled).await {
            Ok(outcomes) => outcomes,
            Err(problems) => return verdict.finish(problems, &taint),
        };
        let real = read(real, cm, inputs, check, self.unresolvable);
        let shown = read(shown, cm, inputs, check, self.unresolvable);
        if let (Some(_), PluginCheck::Unavailable(why)) = (&real.connector, plugins) {
            verdict.warnings.push(format!("plugin check skipped: {why}"));
        }
        // Built from the placeholder render only: the real one's may quote values.
        verdict.warnings.extend(shown.warnings);
        verdict.name = real.name;
        verdict.shown_name = shown.name;
        verdict.unknown_class = real.unknown_class;
        verdict.connector = real.connector.map(|mut connector| {
            connector.secrets = secrets_of(&connector, shown.connector.as_ref(), &taint);
            connector
        });
        verdict.shown = verdict.connector.as_ref().and(shown.connector);
        let mut problems = shown_problems(real.problems, shown.problems);
        if let (Some(real), Some(shown)) = (&mut verdict.connector, &mut verdict.shown) {
            problems.extend(send_inputs(real, shown, inputs, check, &mut verdict.warnings));
        }
        if verdict.name.is_some() && verdict.name != verdict.shown_name {
            problems.push(Problem::NameFromInputs);
        }
        if let Some(real) = &verdict.connector {
            let shown = verdict.shown.as_ref().map(|s| (s.restart.as_ref(), s.offsets.as_ref()));
            let tokens = operations::tokens_from_inputs((real.restart.as_ref(), real.offsets.as_ref()), shown);
            problems.extend(tokens.into_iter().map(Problem::from));
        }
        if let (Some(c), Some(destination)) = (&verdict.connector, check.cloud) {
            if c.state == Some(State::Stopped) {
                problems.push(Problem::StopUnsupported(destination.to_string()));
            }
            let cloud =
                operations::check_destination(c.restart.as_ref(), c.offsets.as_ref(), None, None, Some(destination));
            problems.extend(cloud.into_iter().map(Problem::from));
        }
        verdict.finish(problems, &taint)
    }

    /// Renders a template against the real values and against placeholders, in one child:
    /// `[real, placeholder]`. Disabled connectors only need their name, so undefined variables
    /// are bound to empty strings for them instead of rejecting. The problems returned hold no
    /// value.
    async fn render(&self, code: &str, inputs: &TemplateInputs, enabled: bool) -> Result<[Outcome; 2], Vec<Problem>> {
        let mut request = Request {
            code: code.to_string(),
            runs: vec![real_bindings(inputs), placeholder_bindings(inputs)],
        };
        let [real, shown] = self.eval(&request).await?;
        if let (Outcome::Undefined(undefined), false) = (&real, enabled)
            && undefined.iter().all(|u| u.kind == "variable")
        {
            for run in &mut request.runs {
                run.vars
                    .extend(undefined.iter().map(|u| (u.name.clone(), String::new())));
            }
            return self.eval(&request).await;
        }
        let missing: Vec<String> = referenced_env(code)
            .into_iter()
            .filter(|n| !inputs.env.contains_key(n))
            .collect();
        if missing.is_empty() || !enabled {
            return Ok([real, shown]);
        }
        // Find which unset env vars actually reach the output: render again with a marker in
        // each. The real renders decide which; the keys named come from the placeholder ones.
        for run in &mut request.runs {
            run.env.extend(missing.iter().map(|n| (n.clone(), unset_marker(n))));
        }
        let [real_marked, shown_marked] = self.eval(&request).await?;
        let blamed = blame(&missing, &real, &real_marked);
        if blamed.is_empty() {
            return Ok([real, shown]);
        }
        let mut shown_keys = blame(&missing, &shown, &shown_marked);
        Err(blamed
            .into_keys()
            .map(|name| {
                let keys = shown_keys.remove(name).unwrap_or_default();
                match inputs.env_hidden_reason(name) {
                    Some(reason) => Problem::EnvHidden {
                        name: name.to_string(),
                        reason,
                        keys,
                    },
                    None => Problem::EnvUnset {
                        name: name.to_string(),
                        keys,
                    },
                }
            })
            .collect())
    }

    async fn eval(&self, request: &Request) -> Result<[Outcome; 2], Vec<Problem>> {
        let outcomes = self.renderer.eval(request).await.map_err(|e| vec![e.into()])?;
        <[Outcome; 2]>::try_from(outcomes)
            .map_err(|o| vec![SandboxError::Crashed(format!("{} outcomes for 2 runs", o.len())).into()])
    }
}

/// The real values: the render that decides.
fn real_bindings(inputs: &TemplateInputs) -> Bindings {
    let exposed = |values: &BTreeMap<String, Secret>| {
        values
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect()
    };
    Bindings {
        vars: exposed(&inputs.vars),
        env: exposed(&inputs.env),
    }
}

/// Placeholders naming the same variables and env: the render every text is built from.
fn placeholder_bindings(inputs: &TemplateInputs) -> Bindings {
    let named = |values: &BTreeMap<String, Secret>, placeholder: fn(&str) -> String| {
        values.keys().map(|k| (k.clone(), placeholder(k))).collect()
    };
    Bindings {
        vars: named(&inputs.vars, var_placeholder),
        env: named(&inputs.env, env_placeholder),
    }
}

fn unset_marker(name: &str) -> String {
    format!("\u{1}unset:{name}\u{1}")
}

/// The `missing` env vars that reach the output of `first`, with the paths they reach: those
/// whose marker shows in `marked` (the same render with a marker in each) where `first` had null.
fn blame<'n>(missing: &'n [String], first: &Outcome, marked: &Outcome) -> BTreeMap<&'n str, Vec<String>> {
    let Outcome::Value(marked) = marked else {
        return BTreeMap::new();
    };
    let first = match first {
        Outcome::Value(v) => Some(v),
        _ => None,
    };
    let mut leaves = Vec::new();
    collect_leaves(marked, &mut Vec::new(), &mut leaves);
    let mut blamed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in missing {
        let m = unset_marker(name);
        for (path, text) in leaves.iter().filter(|(_, t)| t.contains(&m)) {
            let unset_shows = match first.and_then(|v| lookup(v, path)) {
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
    blamed
}

/// What one render amounts to: the name, the problems, and the connector when there are none.
#[derive(Default)]
struct Reading {
    name: Option<String>,
    connector: Option<Connector>,
    problems: Vec<Problem>,
    /// Rejected (at least) because `connector.class` is not in the plugin list.
    unknown_class: bool,
    warnings: Vec<String>,
}

fn read(
    outcome: Outcome,
    cm: &ConnectorConfigMap,
    inputs: &TemplateInputs,
    check: DestinationCheck<'_>,
    unresolvable: Unresolvable,
) -> Reading {
    let plugins = check.plugins;
    let value = match outcome_value(outcome, inputs) {
        Ok(value) => value,
        Err(problems) => {
            return Reading {
                problems,
                ..Reading::default()
            };
        }
    };
    let checked = check_shape(&value);
    let mut reading = Reading {
        name: checked.name,
        problems: checked.name_problems,
        ..Reading::default()
    };
    if !cm.enabled {
        // Only the name matters to delete it; shape problems of a disabled connector do not.
        return reading;
    }
    reading.problems.extend(checked.problems);
    if let (Some(connector), PluginCheck::Catalog(catalog)) = (&checked.connector, plugins) {
        let class = &connector.config["connector.class"];
        let plugin = catalog.resolve(class);
        reading.problems.extend(
            operations::check_destination(
                connector.restart.as_ref(),
                connector.offsets.as_ref(),
                plugin,
                catalog.worker_version(),
                None,
            )
            .into_iter()
            .map(Problem::from),
        );
        if plugin.is_none() {
            reading.unknown_class = true;
            let closest = catalog.closest(class).into_iter().map(String::from).collect();
            reading.problems.push(Problem::UnknownClass {
                class: class.clone(),
                closest,
            });
        }
    }
    if let Some(connector) = &checked.connector {
        let findings = check_config(
            &connector.config,
            &connector.literal_aliases,
            check.providers,
            unresolvable,
        );
        reading
            .problems
            .extend(findings.problems.into_iter().map(Problem::from));
        reading.warnings = findings.warnings;
    }
    if reading.problems.is_empty() {
        reading.connector = checked.connector;
    }
    reading
}

/// Puts the inputs of `real` as the destination takes them: as values, or in references mode as
/// the references its workers resolve (Confluent Cloud has no providers: values, said in a
/// warning).
fn send_inputs(
    real: &mut Connector,
    shown: &mut Connector,
    inputs: &TemplateInputs,
    check: DestinationCheck<'_>,
    warnings: &mut Vec<String>,
) -> Vec<Problem> {
    let problems = match (check.secrets_as, check.providers, check.cloud) {
        (SecretsAs::References, Some(worker), _) => match as_references(&real.config, &shown.config, inputs, worker) {
            Ok(done) => {
                // A reference names a file and a key, never a value: what is shown is what is sent.
                for key in &done.converted {
                    shown.config.insert(key.clone(), done.config[key].clone());
                }
                real.config = done.config;
                warnings.extend(done.warnings);
                vec![]
            }
            Err(problems) => problems.into_iter().map(Problem::from).collect(),
        },
        (SecretsAs::References, None, Some(cloud)) => {
            real.values_for_lack_of_providers = true;
            warnings.push(format!(
                "destination {cloud} is Confluent Cloud, which has no config providers: inputs are sent as values"
            ));
            vec![]
        }
        _ => vec![],
    };
    if let Some(worker) = check.providers {
        real.referenced_files = files_read(&real.config, worker);
    }
    problems
}

/// The problems to show for the real render's: the placeholder render's own of the same kind
/// when it has as many of them; else the real one when its text holds no value; else what it
/// is, without the details.
fn shown_problems(real: Vec<Problem>, mut shown: Vec<Problem>) -> Vec<Problem> {
    let kind = std::mem::discriminant::<Problem>;
    let count = |problems: &[Problem], p: &Problem| problems.iter().filter(|q| kind(q) == kind(p)).count();
    let matched: Vec<bool> = real.iter().map(|r| count(&real, r) == count(&shown, r)).collect();
    real.into_iter()
        .zip(matched)
        .map(|(real, matched)| {
            let pair = matched
                .then(|| shown.iter().position(|s| kind(s) == kind(&real)))
                .flatten();
            match (pair, real.without_values()) {
                (Some(i), _) => {
                    let shown = shown.remove(i);
                    let text = shown.to_string();
                    if text == real.to_string() || text.contains(PLACEHOLDER_OPEN) {
                        shown
                    } else {
                        Problem::Differs(Box::new(shown))
                    }
                }
                (None, Some(what)) => Problem::Withheld(what),
                (None, None) => real,
            }
        })
        .collect()
}

/// What to mask in what the worker says about `real`: its config values and keys that differ
/// in the placeholder render (all of them without one), and the values the template reads.
fn secrets_of(real: &Connector, shown: Option<&Connector>, taint: &Taint) -> Vec<String> {
    let mut secrets = [taint.values.as_slice(), &taint.whole_env].concat();
    for (key, value) in &real.config {
        match shown.and_then(|s| s.config.get(key)) {
            Some(same) if same == value => {}
            Some(_) => secrets.push(value.clone()),
            None => secrets.extend([key.clone(), value.clone()]),
        }
    }
    secrets
}

fn draft(cm: &ConnectorConfigMap, key: &str) -> Verdict {
    Verdict {
        origin: cm.origin.clone(),
        key: key.to_string(),
        desired: if cm.enabled { Desired::Present } else { Desired::Absent },
        name: None,
        shown_name: None,
        connector: None,
        shown: None,
        problems: vec![],
        kinds: vec![],
        warnings: vec![],
        destination: cm.destination.clone(),
        unknown_class: false,
    }
}

impl Verdict {
    fn finish(mut self, problems: Vec<Problem>, taint: &Taint) -> Self {
        self.problems = problems.iter().map(|p| taint.scrub(&p.to_string())).collect();
        self.kinds = problems.iter().map(Problem::kind).collect();
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
                .map(|u| match (u.kind.as_str(), inputs.unusable_vars.get(&u.name)) {
                    ("variable", Some(reason)) => Problem::UnusableVar {
                        name: u.name,
                        pos: u.pos,
                        reason: reason.clone(),
                    },
                    ("variable", None) => Problem::UndefinedVar {
                        name: u.name,
                        pos: u.pos,
                        available: inputs.vars.keys().map(|k| format!("${k}")).collect(),
                    },
                    ("filter", _) if let Some(unstable) = template::unstable(&u.name) => Problem::Unstable {
                        name: u.name,
                        pos: u.pos,
                        why: unstable.why,
                        instead: unstable.instead,
                    },
                    _ => Problem::UndefinedFilter {
                        kind: u.kind,
                        name: u.name,
                        pos: u.pos,
                    },
                })
                .collect());
        }
        Outcome::Runtime(message) => Problem::Runtime(message),
        Outcome::OutputCount(n) => Problem::OutputCount(n),
        Outcome::TooLarge => Problem::TooLarge,
    }])
}

/// Env var names a template reads: `env.X`, `$ENV.X`, `env["X"]`, `$ENV["X"]`.
pub fn referenced_env(code: &str) -> BTreeSet<String> {
    env_reads(code).flatten().collect()
}

/// Whether a template reads env as a whole (`$ENV`, `env` not followed by a name), which holds
/// every allowed env value.
fn reads_whole_env(code: &str) -> bool {
    env_reads(code).any(|name| name.is_none())
}

/// Each read of env in a template: the name it reads, `None` for the whole object. A string
/// literal that looks like one is a false positive that costs nothing: it is only a candidate.
fn env_reads(code: &str) -> impl Iterator<Item = Option<String>> + '_ {
    static REF: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?:\benv\b|\$ENV\b)(?:\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([^"\\]+)"\s*\]))?"#).unwrap()
    });
    REF.captures_iter(code)
        .map(|c| c.get(1).or(c.get(2)).map(|m| m.as_str().to_string()))
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

/// The values of the variables and env a template reads, masked in what leaves the process as a
/// second line of defence.
#[derive(Default)]
struct Taint {
    /// Those it names: masked in its messages. Only these: masking every env value would garble
    /// every message.
    values: Vec<String>,
    /// Every env value, when it reads env as a whole: masked too in what the worker says about
    /// its connector, which may quote any part of a config.
    whole_env: Vec<String>,
}

impl Taint {
    fn new(code: &str, inputs: &TemplateInputs) -> Self {
        let exposed = |secrets: Vec<&Secret>| {
            secrets
                .into_iter()
                .map(|s| s.expose().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let vars = referenced_vars(code).into_iter().filter_map(|n| inputs.vars.get(&n));
        let env = referenced_env(code).into_iter().filter_map(|n| inputs.env.get(&n));
        let whole_env = if reads_whole_env(code) {
            inputs.env.values().collect()
        } else {
            vec![]
        };
        Self {
            values: exposed(vars.chain(env).collect()),
            whole_env: exposed(whole_env),
        }
    }

    fn scrub(&self, text: &str) -> String {
        crate::pipeline::render::secrets::mask(text, &self.values)
    }
}

#[cfg(test)]
mod tests;
