//! What a template may read: `$VAR`s from mounted files and `env.X` from the environment.
//!
//! Values are secrets. They are held in [`Secret`], whose `Debug` prints `****`, and only
//! their names ever reach a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::secrets::Secret;
use crate::pipeline::parse::properties;

/// Env vars with this prefix configure connect-gate itself and are never visible to templates.
pub const OWN_ENV_PREFIX: &str = "CONNECT_GATE_";

/// Why a template sees no env var under [`InputSources::load_closed`].
pub const CLOSED_ENV_REASON: &str = "check, plan and render read no env var unless --env-file FILE stands in for the environment or --template-env-allow REGEX names those to read";

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read vars dir {}: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", file.display())]
    ReadFile { file: PathBuf, source: std::io::Error },
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
    /// Variables that exist but cannot be used, and why (file and key named, never the value):
    /// one bad input makes only its own variables unusable.
    pub unusable_vars: BTreeMap<String, String>,
    /// The same for env vars.
    pub unusable_env: BTreeMap<String, String>,
    /// The `--template-env-allow` regex, to explain why an env var is hidden.
    pub env_allow: Option<String>,
    /// Where each usable variable is defined: what references mode writes in its place.
    pub origins: BTreeMap<String, VarOrigin>,
    /// No env var is visible because none was given ([`InputSources::load_closed`]): explains
    /// every env var a template reads.
    pub env_closed: bool,
}

/// The file a variable comes from, as a worker's config provider reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarOrigin {
    /// An entry of a `*.properties` file: FileConfigProvider's `${alias:file:key}`.
    Properties { file: PathBuf, key: String },
    /// A file of a mounted directory (a Secret volume): DirectoryConfigProvider's
    /// `${alias:dir:file}`.
    File { dir: PathBuf, name: String },
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
    /// The inputs, with the process environment standing in for env when there is no env file.
    pub fn load(&self) -> Result<TemplateInputs, InputError> {
        self.load_env(true)
    }

    /// As [`Self::load`], but templates read the process environment only through
    /// `--template-env-allow`: with neither it nor an env file they see no env var at all. What
    /// `check`, `plan` and `render` read, so that a template under review cannot read the
    /// environment of the CI job that checks it.
    pub fn load_closed(&self) -> Result<TemplateInputs, InputError> {
        self.load_env(false)
    }

    fn load_env(&self, process_env_by_default: bool) -> Result<TemplateInputs, InputError> {
        let mut defined: BTreeMap<String, Vec<Definition>> = BTreeMap::new();
        for dir in &self.vars_dirs {
            for d in read_vars_dir(dir)? {
                defined.entry(var_name(&d.key)).or_default().push(d);
            }
        }
        let mut vars = BTreeMap::new();
        let mut origins = BTreeMap::new();
        let mut unusable_vars = BTreeMap::new();
        for (name, mut definitions) in defined {
            match (definitions.pop(), definitions.is_empty()) {
                (
                    Some(Definition {
                        value: Ok(value),
                        key,
                        file,
                    }),
                    true,
                ) => {
                    vars.insert(name.clone(), Secret::new(value));
                    origins.insert(name, origin(file, key));
                }
                (Some(Definition { value: Err(why), .. }), true) => {
                    unusable_vars.insert(name, why);
                }
                (Some(last), false) => {
                    let all: Vec<String> = definitions.iter().chain([&last]).map(Definition::place).collect();
                    unusable_vars.insert(name, format!("defined more than once: {}", all.join(", ")));
                }
                (None, _) => {}
            }
        }
        let env_closed = !process_env_by_default && self.env_file.is_none() && self.env_allow.is_none();
        let raw_env = match &self.env_file {
            Some(file) => read_env_file(file)?.into_iter().map(|(k, v)| (k, Ok(v))).collect(),
            None if env_closed => vec![],
            None => process_env(),
        };
        let allow = self
            .env_allow
            .as_deref()
            .map(|re| Regex::new(&format!("^(?:{re})$")))
            .transpose()?;
        let mut env = BTreeMap::new();
        let mut unusable_env = BTreeMap::new();
        for (k, v) in raw_env.into_iter().filter(|(k, _)| env_visible(k, allow.as_ref())) {
            match v {
                Ok(v) => {
                    env.insert(k, Secret::new(v));
                }
                Err(why) => {
                    unusable_env.insert(k, why);
                }
            }
        }
        Ok(TemplateInputs {
            vars,
            env,
            unusable_vars,
            unusable_env,
            env_allow: self.env_allow.clone(),
            origins,
            env_closed,
        })
    }
}

fn origin(file: PathBuf, key: String) -> VarOrigin {
    match file.extension().is_some_and(|e| e == "properties") {
        true => VarOrigin::Properties { file, key },
        false => VarOrigin::File {
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            name: key,
        },
    }
}

/// One variable as a file defines it: its value, or why it cannot be read.
struct Definition {
    key: String,
    file: PathBuf,
    value: Result<String, String>,
}

impl Definition {
    fn place(&self) -> String {
        match self.file.extension().is_some_and(|e| e == "properties") {
            true => format!("{} (key {})", self.file.display(), self.key),
            false => self.file.display().to_string(),
        }
    }
}

/// The process environment; a value that is not UTF-8 makes only its variable unusable.
fn process_env() -> Vec<(String, Result<String, String>)> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?; // a name jq cannot spell cannot be read anyway
            let v = v.into_string().map_err(|_| "its value is not UTF-8 text".to_string());
            Some((k, v))
        })
        .collect()
}

impl TemplateInputs {
    /// Why an env var is hidden from templates, or `None` when it is visible (if set).
    pub fn env_hidden_reason(&self, name: &str) -> Option<String> {
        if let Some(why) = self.unusable_env.get(name) {
            return Some(why.clone());
        }
        if name.starts_with(OWN_ENV_PREFIX) {
            return Some(format!("{OWN_ENV_PREFIX}* variables are connect-gate's own settings"));
        }
        if self.env_closed {
            return Some(CLOSED_ENV_REASON.into());
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
/// (`key -> ..data/key`, `..data -> ..2026_…`): dot entries are the machinery, not keys. Only an
/// unreadable directory is an error; a file that cannot be read or decoded makes its own
/// variables unusable.
fn read_vars_dir(dir: &Path) -> Result<Vec<Definition>, InputError> {
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
        let bytes = std::fs::read(&path);
        if file_name.ends_with(".properties") {
            let text = match bytes {
                Ok(bytes) => properties_text(bytes),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a properties file; its variables are undefined");
                    continue;
                }
            };
            // Java's Properties: a key given twice in one file takes its last value.
            let entries: BTreeMap<String, String> = properties::parse(&text).into_iter().collect();
            out.extend(entries.into_iter().map(|(key, value)| Definition {
                key,
                file: path.clone(),
                value: Ok(value),
            }));
        } else {
            let value = match bytes {
                Ok(bytes) => String::from_utf8(bytes)
                    .map(|text| text.strip_suffix('\n').unwrap_or(&text).to_string())
                    .map_err(|_| format!("{} is not UTF-8 text", path.display())),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            };
            out.push(Definition {
                key: file_name,
                file: path,
                value,
            });
        }
    }
    Ok(out)
}

/// Properties files are UTF-8, or ISO-8859-1 as `java.util.Properties.load(InputStream)` reads
/// them (every byte is a character there, so any file decodes).
fn properties_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect())
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

    fn load(dir: &Path) -> TemplateInputs {
        InputSources {
            vars_dirs: vec![dir.to_path_buf()],
            env_file: Some(write_env("")),
            env_allow: None,
        }
        .load()
        .unwrap()
    }

    #[test]
    fn a_variable_defined_twice_is_unusable_naming_both_places_and_the_rest_works() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("x.properties"), "url=1\na.b=2\na-b=3\nok=4\n").unwrap();
        std::fs::write(a.path().join("url"), "5").unwrap();
        let inputs = load(a.path());
        assert_eq!(inputs.vars.keys().collect::<Vec<_>>(), ["OK"]);
        let url = &inputs.unusable_vars["URL"];
        assert!(url.contains("x.properties (key url)") && url.contains("/url,"), "{url}");
        let ab = &inputs.unusable_vars["A_B"];
        assert!(ab.contains("(key a.b)") && ab.contains("(key a-b)"), "{ab}");
    }

    #[test]
    fn a_key_repeated_in_one_properties_file_takes_its_last_value_as_java_does() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("x.properties"), "k=first\nk=last\n").unwrap();
        let inputs = load(a.path());
        assert_eq!(inputs.vars["K"].expose(), "last");
        assert!(inputs.unusable_vars.is_empty());
    }

    #[test]
    fn a_file_that_is_not_utf8_makes_only_its_variable_unusable() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("binary-key"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(a.path().join("good"), "fine\n").unwrap();
        // Properties files are read as ISO-8859-1 when not UTF-8, as Java reads them.
        std::fs::write(a.path().join("latin.properties"), b"caf\xe9=cr\xe8me\n").unwrap();
        let inputs = load(a.path());
        assert_eq!(inputs.vars["GOOD"].expose(), "fine");
        assert_eq!(inputs.vars["CAFÉ"].expose(), "crème");
        assert!(inputs.unusable_vars["BINARY_KEY"].contains("is not UTF-8 text"));
    }

    /// `check`, `plan` and `render` (`load_closed`) show templates no env var unless
    /// `--env-file` or `--template-env-allow` says so; the sidecar (`load`) the process's.
    #[test]
    fn the_cli_reads_no_process_env_unless_an_env_file_or_allow_regex_is_given() {
        let none = InputSources::default();
        let closed = none.load_closed().unwrap();
        assert!(closed.env.is_empty() && closed.env_closed);
        let why = closed.env_hidden_reason("PATH").unwrap();
        assert!(
            why.contains("--env-file") && why.contains("--template-env-allow"),
            "{why}"
        );
        // The sidecar: the process environment, as before.
        let open = none.load().unwrap();
        assert!(open.env.contains_key("PATH") && !open.env_closed);
        assert_eq!(open.env_hidden_reason("PATH"), None);
        // --template-env-allow: the process environment, filtered.
        let allowed = InputSources {
            env_allow: Some("PATH|HOME".into()),
            ..InputSources::default()
        }
        .load_closed()
        .unwrap();
        assert!(allowed.env.contains_key("PATH") && !allowed.env_closed);
        assert!(allowed.env.keys().all(|k| k == "PATH" || k == "HOME"));
        // --env-file: the file stands in, and nothing else.
        let filed = InputSources {
            env_file: Some(write_env("ONLY=1\n")),
            ..InputSources::default()
        }
        .load_closed()
        .unwrap();
        assert_eq!(filed.env.keys().collect::<Vec<_>>(), ["ONLY"]);
        assert_eq!(filed.env_hidden_reason("PATH"), None, "unset, not hidden");
    }

    #[test]
    fn an_env_var_that_is_not_utf8_is_hidden_with_a_reason_never_its_value() {
        use std::os::unix::ffi::OsStrExt;
        let name = "CONNECT_GATE_TEST_NOT_UTF8_VALUE_X";
        let visible = name.trim_start_matches(OWN_ENV_PREFIX);
        // SAFETY: this test alone sets and reads this variable.
        unsafe { std::env::set_var(visible, std::ffi::OsStr::from_bytes(&[0x66, 0xff, 0x6f])) };
        let inputs = InputSources::default().load().unwrap();
        unsafe { std::env::remove_var(visible) };
        assert!(!inputs.env.contains_key(visible));
        assert_eq!(
            inputs.env_hidden_reason(visible).unwrap(),
            "its value is not UTF-8 text"
        );
    }
}
