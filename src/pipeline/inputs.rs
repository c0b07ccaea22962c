//! What a template may read: `$VAR`s from mounted files and `env.X` from the environment.
//!
//! Values are secrets. They are held in [`Secret`], whose `Debug` prints `****`, and only
//! their names ever reach a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::properties;
use super::secrets::Secret;

/// Env vars with this prefix configure connect-gate itself and are never visible to templates.
pub const OWN_ENV_PREFIX: &str = "CONNECT_GATE_";

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read vars dir {}: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", file.display())]
    ReadFile { file: PathBuf, source: std::io::Error },
    #[error("{} is not UTF-8 text", file.display())]
    NotUtf8 { file: PathBuf },
    #[error("variable ${name} is defined twice: in {} and in {}", first.display(), second.display())]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}:{line}: expected KEY=VALUE", file.display())]
    EnvFileSyntax { file: PathBuf, line: usize },
    #[error("invalid --template-env-allow regex: {0}")]
    AllowRegex(#[from] regex::Error),
}

/// Everything a template can see. Built once per pass and shared by every render.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateInputs {
    pub vars: BTreeMap<String, Secret>,
    pub env: BTreeMap<String, Secret>,
    /// The `--template-env-allow` regex, to explain why an env var is hidden.
    pub env_allow: Option<String>,
}

/// Where the inputs come from; `load` reads them afresh so a rotated Secret volume is seen.
#[derive(Clone, Debug, Default)]
pub struct InputSources {
    pub vars_dirs: Vec<PathBuf>,
    /// Stands in for the process environment (CI has no real secrets).
    pub env_file: Option<PathBuf>,
    /// Full-match regex over env var names that templates may read; `None` allows all.
    pub env_allow: Option<String>,
}

impl InputSources {
    pub fn load(&self) -> Result<TemplateInputs, InputError> {
        let mut vars = BTreeMap::new();
        let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in &self.vars_dirs {
            for (name, value, file) in read_vars_dir(dir)? {
                if let Some(first) = origin.get(&name) {
                    return Err(InputError::Duplicate {
                        name,
                        first: first.clone(),
                        second: file,
                    });
                }
                origin.insert(name.clone(), file);
                vars.insert(name, Secret::new(value));
            }
        }
        let raw_env = match &self.env_file {
            Some(file) => read_env_file(file)?,
            None => std::env::vars().collect(),
        };
        let allow = self
            .env_allow
            .as_deref()
            .map(|re| Regex::new(&format!("^(?:{re})$")))
            .transpose()?;
        let env = raw_env
            .into_iter()
            .filter(|(k, _)| env_visible(k, allow.as_ref()))
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        Ok(TemplateInputs {
            vars,
            env,
            env_allow: self.env_allow.clone(),
        })
    }
}

impl TemplateInputs {
    /// Why an env var is hidden from templates, or `None` when it is visible (if set).
    pub fn env_hidden_reason(&self, name: &str) -> Option<String> {
        if name.starts_with(OWN_ENV_PREFIX) {
            return Some(format!("{OWN_ENV_PREFIX}* variables are connect-gate's own settings"));
        }
        let allow = self.env_allow.as_deref()?;
        let re = Regex::new(&format!("^(?:{allow})$")).ok()?;
        (!re.is_match(name)).then(|| format!("not allowed by --template-env-allow '{allow}'"))
    }
}

fn env_visible(name: &str, allow: Option<&Regex>) -> bool {
    !name.starts_with(OWN_ENV_PREFIX) && allow.is_none_or(|re| re.is_match(name))
}

/// The inputs as last read, re-read on demand so rotated Secret volumes are seen, with a
/// generation that counts their changes (what caches of verdicts are keyed by; a count, so
/// nothing about the values).
#[derive(Debug)]
pub struct LiveInputs {
    sources: InputSources,
    current: std::sync::RwLock<(u64, std::sync::Arc<TemplateInputs>)>,
}

impl LiveInputs {
    pub fn load(sources: InputSources) -> Result<Self, InputError> {
        let inputs = sources.load()?;
        Ok(Self {
            sources,
            current: std::sync::RwLock::new((0, std::sync::Arc::new(inputs))),
        })
    }

    pub fn current(&self) -> std::sync::Arc<TemplateInputs> {
        self.generation().1
    }

    /// The inputs and their generation, read together.
    pub fn generation(&self) -> (u64, std::sync::Arc<TemplateInputs>) {
        self.current.read().expect("not poisoned").clone()
    }

    /// Re-reads the sources; `Ok(true)` when anything changed. On error the last good inputs stay.
    pub fn reload(&self) -> Result<bool, InputError> {
        let fresh = self.sources.load()?;
        let mut current = self.current.write().expect("not poisoned");
        let changed = *current.1 != fresh;
        if changed {
            *current = (current.0 + 1, std::sync::Arc::new(fresh));
        }
        Ok(changed)
    }
}

/// The original operator's naming: upper-case, `.` and `-` become `_`.
pub fn var_name(key: &str) -> String {
    key.to_uppercase().replace(['.', '-'], "_")
}

/// Reads one mounted directory. Kubernetes Secret and ConfigMap volumes are symlink farms
/// (`key -> ..data/key`, `..data -> ..2026_…`): dot entries are the machinery, not keys.
fn read_vars_dir(dir: &Path) -> Result<Vec<(String, String, PathBuf)>, InputError> {
    let read_dir_err = |source| InputError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_dir_err)?
        .collect::<Result<_, _>>()
        .map_err(read_dir_err)?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for entry in entries {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // metadata() follows the symlink, so a volume's `key -> ..data/key` counts as a file.
        let is_file = std::fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false);
        if file_name.starts_with('.') || !is_file {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|source| InputError::ReadFile {
            file: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| InputError::NotUtf8 { file: path.clone() })?;
        if file_name.ends_with(".properties") {
            for (key, value) in properties::parse(&text) {
                out.push((var_name(&key), value, path.clone()));
            }
        } else {
            let value = text.strip_suffix('\n').unwrap_or(&text).to_string();
            out.push((var_name(&file_name), value, path));
        }
    }
    Ok(out)
}

fn read_env_file(file: &Path) -> Result<Vec<(String, String)>, InputError> {
    let text = std::fs::read_to_string(file).map_err(|source| InputError::ReadFile {
        file: file.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) =
            line.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or(InputError::EnvFileSyntax {
                    file: file.to_path_buf(),
                    line: i + 1,
                })?;
        out.push((key.trim().to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_follow_the_original() {
        assert_eq!(
            var_name("basic.auth.credentials-source"),
            "BASIC_AUTH_CREDENTIALS_SOURCE"
        );
    }

    /// A Secret volume as the kubelet writes it.
    #[test]
    fn reads_a_symlinked_secret_volume() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_11_24_10_00_00.123");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("schema-registry-url"), "https://sr:8081\n").unwrap();
        std::fs::write(data.join("shared.properties"), "a.b=x=y\n# c\n").unwrap();
        symlink("..2026_11_24_10_00_00.123", dir.path().join("..data")).unwrap();
        symlink("..data/schema-registry-url", dir.path().join("schema-registry-url")).unwrap();
        symlink("..data/shared.properties", dir.path().join("shared.properties")).unwrap();
        let sources = InputSources {
            vars_dirs: vec![dir.path().to_path_buf()],
            env_file: Some(write_env("")),
            env_allow: None,
        };
        let inputs = sources.load().unwrap();
        let vars: Vec<_> = inputs.vars.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(vars, vec![("A_B", "x=y"), ("SCHEMA_REGISTRY_URL", "https://sr:8081")]);
    }

    fn write_env(text: &str) -> PathBuf {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file.into_temp_path().keep().unwrap()
    }

    #[test]
    fn env_filtering_hides_own_settings_and_applies_allow_list() {
        let env_file = write_env("CONNECT_GATE_TLS_KEY=k\nMYSQL_USER=u\nexport OTHER=o=p\n# x\n");
        let sources = InputSources {
            vars_dirs: vec![],
            env_file: Some(env_file.clone()),
            env_allow: Some("MYSQL_.*".into()),
        };
        let inputs = sources.load().unwrap();
        assert_eq!(inputs.env.keys().collect::<Vec<_>>(), vec!["MYSQL_USER"]);
        assert!(
            inputs
                .env_hidden_reason("OTHER")
                .unwrap()
                .contains("--template-env-allow")
        );
        assert!(inputs.env_hidden_reason("CONNECT_GATE_X").is_some());
        let all = InputSources {
            env_allow: None,
            ..sources
        };
        let names: Vec<_> = all.load().unwrap().env.into_keys().collect();
        assert_eq!(names, vec!["MYSQL_USER", "OTHER"]);
    }

    #[test]
    fn duplicate_variables_name_both_files() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("x.properties"), "url=1\n").unwrap();
        std::fs::write(a.path().join("url"), "2").unwrap();
        let sources = InputSources {
            vars_dirs: vec![a.path().to_path_buf()],
            env_file: Some(write_env("")),
            env_allow: None,
        };
        let err = sources.load().unwrap_err().to_string();
        assert!(err.contains("$URL") && err.contains("x.properties"), "{err}");
    }
}
