//! How template inputs reach Kafka Connect: as values, or as config-provider references the
//! worker resolves (`--secrets-as references`), so that the config topic and
//! `GET /connectors/{name}/config` never hold them.
//!
//! Which inputs a value holds, and whether verbatim, is read from the two renders the pipeline
//! makes: the placeholder render shows `⟨$VAR⟩` / `⟨env.X⟩` where an input was placed as it is.
//! A value is verbatim when putting the real inputs back into the placeholder render's value
//! gives the real one; each placeholder is then replaced by the reference to the input's file.
//! Anything else computed from an input cannot be a reference and is denied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::providers::{Kind, Provider, WorkerConfig};
use crate::pipeline::render::inputs::{TemplateInputs, VarOrigin};

/// Config keys Kafka Connect reads before it resolves references: their value is sent as it is.
pub const READ_BEFORE_RESOLUTION: &[&str] = &["connector.class", "name"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretsAs {
    /// Inputs are rendered into the config (as streaming-ops did).
    #[default]
    Values,
    /// Inputs placed verbatim are sent as the worker's config-provider references.
    References,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsAsProblem {
    #[error(
        "config key `{key}` is computed from {}, not placed as it is; with --secrets-as references an input can only reach Connect as a reference the worker resolves, which cannot be transformed: place the input as it is, or keep the transformed value in the input's file",
        names_or_inputs(from)
    )]
    Computed { key: String, from: Vec<String> },
    #[error(
        "a config key's name depends on variable or env values; with --secrets-as references only values can come from inputs"
    )]
    KeyFromInputs,
    #[error(
        "config key `{key}`: {input} comes from {what}, but the worker's config configures no {class} to send it as a reference (config.providers: {configured})"
    )]
    NoProvider {
        key: String,
        input: String,
        what: &'static str,
        class: &'static str,
        configured: String,
    },
    #[error(
        "config key `{key}`: {input} comes from {path}, outside allowed.paths of provider `{alias}` ({allowed}): mount it under one of those paths on the worker and the sidecar alike"
    )]
    NotAllowed {
        key: String,
        input: String,
        path: String,
        alias: String,
        allowed: String,
    },
    #[error(
        "config key `{key}`: {input} comes from {path}, which holds `:` or `}}` and cannot be written in a reference"
    )]
    Unwritable { key: String, input: String, path: String },
    #[error(
        "config key `{key}`: env.{name} does not match allowlist.pattern `{pattern}` of provider `{alias}`, so it cannot be sent as a reference"
    )]
    EnvNotAllowed {
        key: String,
        name: String,
        pattern: String,
        alias: String,
    },
}

fn names_or_inputs(names: &[String]) -> String {
    match names.is_empty() {
        true => "variable or env values".to_string(),
        false => names.join(", "),
    }
}

/// A config with its inputs turned into references.
#[derive(Debug, Default)]
pub struct AsReferences {
    pub config: BTreeMap<String, String>,
    /// The keys whose inputs became references: their value holds none, so it may be shown.
    pub converted: BTreeSet<String>,
    pub warnings: Vec<String>,
}

/// Turns the inputs of `real` into references, reading which and where from `shown`, the
/// placeholder render of the same config.
pub fn as_references(
    real: &BTreeMap<String, String>,
    shown: &BTreeMap<String, String>,
    inputs: &TemplateInputs,
    worker: &WorkerConfig,
) -> Result<AsReferences, Vec<SecretsAsProblem>> {
    let mut out = AsReferences::default();
    let mut problems = Vec::new();
    for (key, value) in real {
        let Some(shape) = shown.get(key) else {
            problems.push(SecretsAsProblem::KeyFromInputs);
            continue;
        };
        let pieces = pieces(shape);
        let names: Vec<String> = pieces.iter().filter_map(Piece::name).collect();
        if shape == value && names.is_empty() {
            out.config.insert(key.clone(), value.clone());
            continue;
        }
        if names.is_empty() || fill(&pieces, |p| p.value(inputs)).as_deref() != Some(value.as_str()) {
            problems.push(SecretsAsProblem::Computed {
                key: key.clone(),
                from: names,
            });
            continue;
        }
        if READ_BEFORE_RESOLUTION.contains(&key.as_str()) {
            out.warnings.push(format!(
                "config key `{key}` comes from {}, which Kafka Connect reads before it resolves references: it is sent as its value",
                names.join(", ")
            ));
            out.config.insert(key.clone(), value.clone());
            continue;
        }
        let mut failed = false;
        let reference = fill(&pieces, |p| match p.reference(key, inputs, worker) {
            Ok(text) => Some(text),
            Err(problem) => {
                problems.push(problem);
                failed = true;
                None
            }
        });
        if let (Some(reference), false) = (reference, failed) {
            out.config.insert(key.clone(), reference);
            out.converted.insert(key.clone());
        }
    }
    match problems.is_empty() {
        true => Ok(out),
        false => Err(problems),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
    Env(&'a str),
}

/// A placeholder render's value cut into its text and its placeholders.
fn pieces(shape: &str) -> Vec<Piece<'_>> {
    static PLACEHOLDER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"⟨(?:\$([^⟩]+)|env\.([^⟩]+))⟩").expect("a valid regex"));
    let mut out = Vec::new();
    let mut at = 0;
    for c in PLACEHOLDER.captures_iter(shape) {
        let whole = c.get(0).expect("group 0");
        out.push(Piece::Text(&shape[at..whole.start()]));
        out.push(match (c.get(1), c.get(2)) {
            (Some(var), _) => Piece::Var(var.as_str()),
            (_, Some(env)) => Piece::Env(env.as_str()),
            _ => unreachable!("the regex has one of the two groups"),
        });
        at = whole.end();
    }
    out.push(Piece::Text(&shape[at..]));
    out
}

/// The pieces joined, each placeholder replaced by what `f` gives; `None` when it gives none.
fn fill<'p>(pieces: &'p [Piece<'p>], mut f: impl FnMut(&'p Piece<'p>) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            placeholder => out.push_str(&f(placeholder)?),
        }
    }
    Some(out)
}

impl Piece<'_> {
    fn name(&self) -> Option<String> {
        match self {
            Piece::Text(_) => None,
            Piece::Var(name) => Some(format!("${name}")),
            Piece::Env(name) => Some(format!("env.{name}")),
        }
    }

    fn value(&self, inputs: &TemplateInputs) -> Option<String> {
        match self {
            Piece::Text(text) => Some(text.to_string()),
            Piece::Var(name) => inputs.vars.get(*name).map(|s| s.expose().to_string()),
            Piece::Env(name) => inputs.env.get(*name).map(|s| s.expose().to_string()),
        }
    }

    /// The reference the worker resolves to this input.
    fn reference(&self, key: &str, inputs: &TemplateInputs, worker: &WorkerConfig) -> Result<String, SecretsAsProblem> {
        let input = self.name().unwrap_or_default();
        let provider = |kind: Kind, what: &'static str, class: &'static str| {
            worker.alias_of(kind).ok_or_else(|| SecretsAsProblem::NoProvider {
                key: key.to_string(),
                input: input.clone(),
                what,
                class,
                configured: worker.aliases(),
            })
        };
        match self {
            Piece::Text(_) => unreachable!("only placeholders are references"),
            Piece::Env(name) => {
                let p = provider(Kind::EnvVar, "the environment", "EnvVarConfigProvider")?;
                if let Some((pattern, _)) = p.allowlist.as_ref().filter(|(_, a)| !a.is_match(name)) {
                    return Err(SecretsAsProblem::EnvNotAllowed {
                        key: key.to_string(),
                        name: name.to_string(),
                        pattern: pattern.clone(),
                        alias: p.alias.clone(),
                    });
                }
                Ok(format!("${{{}:{name}}}", p.alias))
            }
            Piece::Var(name) => {
                // The placeholder render only names variables that exist.
                let origin = inputs.origins.get(*name).ok_or_else(|| SecretsAsProblem::Computed {
                    key: key.to_string(),
                    from: vec![input.clone()],
                })?;
                let (p, path, entry) = match origin {
                    VarOrigin::Properties { file, key: entry } => (
                        provider(Kind::File, "a properties file", "FileConfigProvider")?,
                        absolute(file),
                        entry,
                    ),
                    VarOrigin::File { dir, name } => (
                        provider(
                            Kind::Directory,
                            "a file of a mounted directory",
                            "DirectoryConfigProvider",
                        )?,
                        absolute(dir),
                        name,
                    ),
                };
                check_path(key, &input, p, &path)?;
                let text = path.display().to_string();
                if text.contains([':', '}']) || entry.contains('}') {
                    return Err(SecretsAsProblem::Unwritable {
                        key: key.to_string(),
                        input,
                        path: text,
                    });
                }
                Ok(format!("${{{}:{text}:{entry}}}", p.alias))
            }
        }
    }
}

fn check_path(key: &str, input: &str, provider: &Provider, path: &Path) -> Result<(), SecretsAsProblem> {
    match provider.allows(path) {
        true => Ok(()),
        false => Err(SecretsAsProblem::NotAllowed {
            key: key.to_string(),
            input: input.to_string(),
            path: path.display().to_string(),
            alias: provider.alias.clone(),
            allowed: provider.allowed_paths_text(),
        }),
    }
}

/// The worker is given absolute paths: a relative `--vars-dir` is taken from the current
/// directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests;
