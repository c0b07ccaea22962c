//! The worker's config providers (KIP-297), read from the worker's own properties file
//! (`--worker-config`): each alias of `config.providers`, its class and the parameters that
//! decide what a reference may resolve (`allowed.paths`, KIP-993; `allowlist.pattern`, KIP-887).
//! Only those keys are read: a worker's config also holds its own credentials, and no other
//! value of it is kept or shown.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use regex::Regex;

use crate::pipeline::parse::properties;

pub const FILE_CLASS: &str = "org.apache.kafka.common.config.provider.FileConfigProvider";
pub const DIRECTORY_CLASS: &str = "org.apache.kafka.common.config.provider.DirectoryConfigProvider";
pub const ENV_CLASS: &str = "org.apache.kafka.common.config.provider.EnvVarConfigProvider";
/// Strimzi's provider of Kubernetes Secrets: `${alias:namespace/name:key}`.
pub const STRIMZI_SECRET_CLASS: &str = "io.strimzi.kafka.KubernetesSecretConfigProvider";
pub const STRIMZI_CONFIGMAP_CLASS: &str = "io.strimzi.kafka.KubernetesConfigMapConfigProvider";

const PROVIDERS: &str = "config.providers";

#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("cannot read the worker config {}: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: config.providers names `{alias}` but config.providers.{alias}.class is not set", file.display())]
    NoClass { file: PathBuf, alias: String },
    #[error("{}: config.providers.{alias}.param.allowed.paths: `{path}` is not an absolute path", file.display())]
    RelativeAllowedPath { file: PathBuf, alias: String, path: String },
    #[error("{}: config.providers.{alias}.param.allowlist.pattern does not compile: {source}", file.display())]
    Allowlist {
        file: PathBuf,
        alias: String,
        source: regex::Error,
    },
}

/// What a provider class is to connect-gate: one of Kafka's own, resolved here as the worker
/// would, or another whose references are only checked for their alias and syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    EnvVar,
    /// Strimzi's Kubernetes Secret or ConfigMap provider: its path is `namespace/name`.
    Kubernetes,
    Custom,
}

impl Kind {
    fn of(class: &str) -> Self {
        match class {
            FILE_CLASS => Kind::File,
            DIRECTORY_CLASS => Kind::Directory,
            ENV_CLASS => Kind::EnvVar,
            STRIMZI_SECRET_CLASS | STRIMZI_CONFIGMAP_CLASS => Kind::Kubernetes,
            _ => Kind::Custom,
        }
    }
}

/// One alias of `config.providers`.
#[derive(Clone, Debug)]
pub struct Provider {
    pub alias: String,
    pub class: String,
    pub kind: Kind,
    /// `param.allowed.paths`, normalised as Kafka's `AllowedPaths` does; `None` allows any path.
    pub allowed_paths: Option<Vec<PathBuf>>,
    /// `param.allowlist.pattern` of the env provider, as written and compiled to match a whole
    /// name (as the worker matches it). `None` allows every variable.
    pub allowlist: Option<(String, Regex)>,
}

impl Provider {
    /// Whether the worker lets this provider read `path` (KIP-993): the normalised path lies
    /// under one of `allowed.paths`, compared by components.
    pub fn allows(&self, path: &Path) -> bool {
        let path = normalise(path);
        self.allowed_paths
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| path.starts_with(a)))
    }

    pub fn allowed_paths_text(&self) -> String {
        self.allowed_paths
            .as_ref()
            .map(|paths| {
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

/// The providers a worker is configured with, by alias.
#[derive(Clone, Debug, Default)]
pub struct WorkerConfig {
    pub file: PathBuf,
    pub providers: BTreeMap<String, Provider>,
}

impl WorkerConfig {
    pub fn load(file: &Path) -> Result<Self, WorkerConfigError> {
        let bytes = std::fs::read(file).map_err(|source| WorkerConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        // Java reads a worker's properties as ISO-8859-1 when they are not UTF-8.
        let text = String::from_utf8(bytes).unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect());
        Self::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Self, WorkerConfigError> {
        let entries: BTreeMap<String, String> = properties::parse(text).into_iter().collect();
        let aliases = entries.get(PROVIDERS).map(String::as_str).unwrap_or_default();
        let mut providers = BTreeMap::new();
        for alias in aliases.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let param = |name: &str| entries.get(&format!("{PROVIDERS}.{alias}.param.{name}"));
            let class = entries
                .get(&format!("{PROVIDERS}.{alias}.class"))
                .map(|c| c.trim().to_string())
                .ok_or_else(|| WorkerConfigError::NoClass {
                    file: file.to_path_buf(),
                    alias: alias.to_string(),
                })?;
            let allowed_paths = param("allowed.paths")
                .map(|paths| {
                    paths
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| match Path::new(p).is_absolute() {
                            true => Ok(normalise(Path::new(p))),
                            false => Err(WorkerConfigError::RelativeAllowedPath {
                                file: file.to_path_buf(),
                                alias: alias.to_string(),
                                path: p.to_string(),
                            }),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let allowlist = param("allowlist.pattern")
                .map(|p| Regex::new(&format!("^(?:{p})$")).map(|re| (p.clone(), re)))
                .transpose()
                .map_err(|source| WorkerConfigError::Allowlist {
                    file: file.to_path_buf(),
                    alias: alias.to_string(),
                    source,
                })?;
            let kind = Kind::of(&class);
            providers.insert(
                alias.to_string(),
                Provider {
                    alias: alias.to_string(),
                    class,
                    kind,
                    allowed_paths,
                    allowlist,
                },
            );
        }
        Ok(Self {
            file: file.to_path_buf(),
            providers,
        })
    }

    /// The first alias configured with one of Kafka's built-in classes, as references mode
    /// writes references with it.
    pub fn alias_of(&self, kind: Kind) -> Option<&Provider> {
        self.providers.values().find(|p| p.kind == kind)
    }

    pub fn aliases(&self) -> String {
        match self.providers.is_empty() {
            true => "none".to_string(),
            false => self.providers.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

/// `Path::normalize` as Java has it: `.` dropped and `..` folded, lexically.
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER: &str = "bootstrap.servers=b:9092\n\
        sasl.jaas.config=secret-stuff\n\
        config.providers = file, dir,env ,vault\n\
        config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n\
        config.providers.file.param.allowed.paths=/mnt/a,/mnt/b/../c\n\
        config.providers.dir.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider\n\
        config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n\
        config.providers.env.param.allowlist.pattern=DB_.*\n\
        config.providers.vault.class=com.example.VaultConfigProvider\n";

    #[test]
    fn reads_each_alias_its_class_and_the_parameters_that_limit_it() {
        let worker = WorkerConfig::parse(Path::new("w.properties"), WORKER).unwrap();
        assert_eq!(worker.aliases(), "dir, env, file, vault");
        let file = &worker.providers["file"];
        assert_eq!(file.kind, Kind::File);
        assert_eq!(file.allowed_paths_text(), "/mnt/a, /mnt/c");
        assert!(file.allows(Path::new("/mnt/a/x.properties")));
        assert!(file.allows(Path::new("/mnt/c/./d/x")));
        assert!(
            !file.allows(Path::new("/mnt/a/../b/x")),
            "normalised before the comparison"
        );
        assert!(
            !file.allows(Path::new("/mnt/ab/x")),
            "compared by components, not by text"
        );
        assert!(worker.providers["dir"].allows(Path::new("/anywhere")));
        let env = &worker.providers["env"];
        let (pattern, allow) = env.allowlist.as_ref().unwrap();
        assert_eq!(pattern, "DB_.*");
        assert!(allow.is_match("DB_USER"));
        assert!(
            !allow.is_match("MY_DB_USER"),
            "the whole name must match, as on the worker"
        );
        assert_eq!(worker.providers["vault"].kind, Kind::Custom);
        assert_eq!(worker.alias_of(Kind::Directory).unwrap().alias, "dir");
    }

    #[test]
    fn an_alias_without_a_class_is_an_error_naming_the_file_and_alias_and_no_value() {
        let err = WorkerConfig::parse(
            Path::new("w.properties"),
            "config.providers=file\nsasl.password=hunter2\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "w.properties: config.providers names `file` but config.providers.file.class is not set"
        );
    }

    #[test]
    fn a_relative_allowed_path_is_an_error() {
        let text = format!(
            "config.providers=f\nconfig.providers.f.class={FILE_CLASS}\nconfig.providers.f.param.allowed.paths=mnt\n"
        );
        let err = WorkerConfig::parse(Path::new("w"), &text).unwrap_err();
        assert!(matches!(err, WorkerConfigError::RelativeAllowedPath { .. }), "{err}");
    }

    #[test]
    fn a_worker_without_providers_has_none() {
        let worker = WorkerConfig::parse(Path::new("w"), "group.id=g\n").unwrap();
        assert_eq!(worker.aliases(), "none");
    }
}
