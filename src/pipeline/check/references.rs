//! Config-provider references (`${alias:path:key}`) in a rendered connector config, judged as the
//! worker would resolve them. Kafka Connect checks nothing: an unknown alias, a missing key, a
//! path outside `allowed.paths` or a name outside an env allowlist leave the literal text in
//! the value, and a missing properties file fails the REST call. Here each is a denial that
//! names the key, the alias, the path and the cause, never a value.
//!
//! The grammar is Kafka's `ConfigTransformer`: anywhere in a string, several per value, never
//! recursively; the first colon ends the alias, the second the path, and no part holds `}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::providers::{Kind, Provider, WorkerConfig};
use crate::pipeline::parse::properties;

/// One `${alias:path:key}` in a value; `path` is `None` in `${alias:key}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference<'a> {
    pub text: &'a str,
    pub alias: &'a str,
    pub path: Option<&'a str>,
    pub key: &'a str,
}

/// Every reference in `value`, as Kafka's pattern finds them.
pub fn references(value: &str) -> impl Iterator<Item = Reference<'_>> {
    static PATTERN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\$\{([^}]*?):(?:([^}]*?):)?([^}]*?)\}").expect("a valid regex"));
    PATTERN.captures_iter(value).map(|c| Reference {
        text: c.get(0).expect("group 0").as_str(),
        alias: c.get(1).expect("group 1").as_str(),
        path: c.get(2).map(|m| m.as_str()),
        key: c.get(3).expect("group 3").as_str(),
    })
}

/// What to do with a path that does not exist where the check runs: in the sidecar it is the
/// worker's own view (deny); in CI the worker's paths usually do not exist (warn, unless
/// `--strict-references`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolvable {
    Deny,
    Warn,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceProblem {
    #[error(
        "config key `{key}`: `{reference}` names provider alias `{alias}`, which the worker does not configure (config.providers: {configured}), so Kafka Connect would pass it on as literal text; if it is meant as literal text, list \"{alias}\" in the declaration's \"literalAliases\""
    )]
    UnknownAlias {
        key: String,
        reference: String,
        alias: String,
        configured: String,
    },
    #[error(
        "config key `{key}`: `{reference}` gives provider `{alias}` ({kind}) an empty path; write ${{{alias}:PATH:KEY}}"
    )]
    EmptyPath {
        key: String,
        reference: String,
        alias: String,
        kind: &'static str,
    },
    #[error("config key `{key}`: `{reference}` has an empty key")]
    EmptyKey { key: String, reference: String },
    #[error(
        "config key `{key}`: `{reference}`: path {path} is outside allowed.paths of provider `{alias}` ({allowed}), so Kafka Connect would pass it on as literal text"
    )]
    NotAllowed {
        key: String,
        reference: String,
        path: String,
        alias: String,
        allowed: String,
    },
    #[error("config key `{key}`: `{reference}`: {path} {cause}")]
    Unreadable {
        key: String,
        reference: String,
        path: String,
        cause: String,
    },
    #[error("config key `{key}`: `{reference}`: {path} has no key `{name}`; keys there: {available}")]
    MissingKey {
        key: String,
        reference: String,
        path: String,
        name: String,
        available: String,
    },
    #[error(
        "config key `{key}`: `{reference}`: provider `{alias}` (EnvVarConfigProvider) takes no path; write ${{{alias}:NAME}}"
    )]
    PathNotTaken {
        key: String,
        reference: String,
        alias: String,
    },
    #[error(
        "config key `{key}`: `{reference}`: `{name}` does not match allowlist.pattern `{pattern}` of provider `{alias}`, so Kafka Connect would pass it on as literal text"
    )]
    NotAllowlisted {
        key: String,
        reference: String,
        name: String,
        pattern: String,
        alias: String,
    },
    #[error("config key `{key}`: `{reference}`: provider `{alias}` ({class}) takes a path `NAMESPACE/NAME`")]
    KubernetesPath {
        key: String,
        reference: String,
        alias: String,
        class: String,
    },
    #[error(
        "config key `{key}` declares config providers in the connector's config; Kafka Connect reads config.providers only from the worker's config"
    )]
    ProvidersInConnector { key: String },
    #[error(
        "\"literalAliases\" lists `{alias}`, which the worker configures as a provider: its references are resolved, not literal"
    )]
    LiteralIsProvider { alias: String },
}

/// What the references of one connector config amount to.
#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<ReferenceProblem>,
    pub warnings: Vec<String>,
}

/// Judges every reference of `config`, and the config's own `config.providers*` keys. Without
/// the worker's config only the latter can be judged.
pub fn check_config(
    config: &BTreeMap<String, String>,
    literal: &BTreeSet<String>,
    worker: Option<&WorkerConfig>,
    unresolvable: Unresolvable,
) -> Findings {
    let mut findings = Findings::default();
    for key in config
        .keys()
        .filter(|k| *k == "config.providers" || k.starts_with("config.providers."))
    {
        findings
            .problems
            .push(ReferenceProblem::ProvidersInConnector { key: key.clone() });
    }
    let Some(worker) = worker else {
        return findings;
    };
    for alias in literal.iter().filter(|a| worker.providers.contains_key(*a)) {
        findings
            .problems
            .push(ReferenceProblem::LiteralIsProvider { alias: alias.clone() });
    }
    for (key, value) in config {
        for reference in references(value) {
            match worker.providers.get(reference.alias) {
                Some(provider) => check_one(key, &reference, provider, unresolvable, &mut findings),
                None if literal.contains(reference.alias) => {}
                None => findings.problems.push(ReferenceProblem::UnknownAlias {
                    key: key.clone(),
                    reference: reference.text.to_string(),
                    alias: reference.alias.to_string(),
                    configured: worker.aliases(),
                }),
            }
        }
    }
    findings
}

/// The files the worker reads to resolve `config`'s references to its file and directory
/// providers: a change to one is seen by a connector only when it is restarted.
pub fn files_read(config: &BTreeMap<String, String>, worker: &WorkerConfig) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for reference in config.values().flat_map(|v| references(v)) {
        let (Some(provider), Some(path)) = (worker.providers.get(reference.alias), reference.path) else {
            continue;
        };
        match provider.kind {
            Kind::File => files.insert(PathBuf::from(path)),
            Kind::Directory => files.insert(Path::new(path).join(reference.key)),
            _ => false,
        };
    }
    files
}

fn check_one(key: &str, r: &Reference, provider: &Provider, unresolvable: Unresolvable, out: &mut Findings) {
    let key = key.to_string();
    let reference = r.text.to_string();
    let path = r.path.unwrap_or_default();
    if r.key.is_empty() {
        out.problems.push(ReferenceProblem::EmptyKey { key, reference });
        return;
    }
    let kind = match provider.kind {
        Kind::File => "FileConfigProvider",
        Kind::Directory => "DirectoryConfigProvider",
        Kind::EnvVar => {
            return check_env(key, reference, r, provider, out);
        }
        Kind::Kubernetes => {
            let parts: Vec<&str> = path.split('/').collect();
            if !matches!(parts.as_slice(), [ns, name] if !ns.is_empty() && !name.is_empty()) {
                out.problems.push(ReferenceProblem::KubernetesPath {
                    key,
                    reference,
                    alias: provider.alias.clone(),
                    class: provider.class.clone(),
                });
            } else {
                out.warnings.push(unchecked_warning(&key, &reference, provider));
            }
            return;
        }
        Kind::Custom => {
            out.warnings.push(unchecked_warning(&key, &reference, provider));
            return;
        }
    };
    if path.is_empty() {
        out.problems.push(ReferenceProblem::EmptyPath {
            key,
            reference,
            alias: provider.alias.clone(),
            kind,
        });
        return;
    }
    if !provider.allows(Path::new(path)) {
        out.problems.push(ReferenceProblem::NotAllowed {
            key,
            reference,
            path: path.to_string(),
            alias: provider.alias.clone(),
            allowed: provider.allowed_paths_text(),
        });
        return;
    }
    let keys = match provider.kind {
        Kind::File => properties_keys(Path::new(path)),
        _ => directory_keys(Path::new(path)),
    };
    match keys {
        Ok(keys) if keys.contains(r.key) => {}
        Ok(keys) => out.problems.push(ReferenceProblem::MissingKey {
            key,
            reference,
            path: path.to_string(),
            name: r.key.to_string(),
            available: list_or_none(&keys),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && unresolvable == Unresolvable::Warn => {
            out.warnings.push(format!(
                "config key `{key}`: `{reference}`: {path} does not exist here, so the reference was not checked (--strict-references denies it)"
            ));
        }
        Err(e) => out.problems.push(ReferenceProblem::Unreadable {
            key,
            reference,
            path: path.to_string(),
            cause: unreadable_cause(&e, provider.kind),
        }),
    }
}

fn check_env(key: String, reference: String, r: &Reference, provider: &Provider, out: &mut Findings) {
    if r.path.is_some_and(|p| !p.is_empty()) {
        out.problems.push(ReferenceProblem::PathNotTaken {
            key,
            reference,
            alias: provider.alias.clone(),
        });
    } else if let Some((pattern, _)) = provider.allowlist.as_ref().filter(|(_, a)| !a.is_match(r.key)) {
        out.problems.push(ReferenceProblem::NotAllowlisted {
            key,
            reference,
            name: r.key.to_string(),
            pattern: pattern.clone(),
            alias: provider.alias.clone(),
        });
    }
}

fn unchecked_warning(key: &str, reference: &str, provider: &Provider) -> String {
    format!(
        "config key `{key}`: `{reference}`: provider `{}` ({}) is not one connect-gate can resolve; its alias and syntax were checked, not that the value exists",
        provider.alias, provider.class
    )
}

fn unreadable_cause(e: &std::io::Error, kind: Kind) -> String {
    match (e.kind(), kind) {
        (std::io::ErrorKind::NotFound, Kind::File) => {
            "does not exist; FileConfigProvider would fail the worker's REST call".to_string()
        }
        (std::io::ErrorKind::NotFound, _) => {
            "does not exist, so Kafka Connect would pass the reference on as literal text".to_string()
        }
        _ => format!("cannot be read: {e}"),
    }
}

/// The keys of a properties file, as FileConfigProvider reads them.
fn properties_keys(file: &Path) -> std::io::Result<BTreeSet<String>> {
    let bytes = std::fs::read(file)?;
    let text = String::from_utf8(bytes).unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect());
    Ok(properties::parse(&text).into_iter().map(|(k, _)| k).collect())
}

/// The regular files of a directory (symlinks followed, as a Secret volume's are), as
/// DirectoryConfigProvider lists them.
fn directory_keys(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let entries = std::fs::read_dir(dir)?;
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

fn list_or_none(keys: &BTreeSet<String>) -> String {
    match keys.is_empty() {
        true => "none".to_string(),
        false => keys.iter().cloned().collect::<Vec<_>>().join(", "),
    }
}

#[cfg(test)]
mod tests;
