//! Connector ConfigMaps: the streaming-ops format, read from Kubernetes objects or YAML files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

pub const DESTINATION_LABEL: &str = "destination";
pub const DESTINATION_CONNECT: &str = "connect";
pub const ENABLED_LABEL: &str = "enabled";
/// The original format's pick of a fully managed cluster: the name of the ConfigMap the
/// ccloud-operator wrote for it (`cc.env.<env>.kafka.<cluster>`).
pub const CLOUD_LABEL: &str = "destination.cc";
/// Picks a destination of `--destinations` by name.
pub const DESTINATION_NAME_LABEL: &str = "connect-gate.io/destination";
/// The labels of the ccloud-operator's ConfigMap that name the environment and the cluster.
pub const CLOUD_ENVIRONMENT_LABEL: &str = "environment_id";
pub const CLOUD_CLUSTER_LABEL: &str = "resource_id";

// What connect-gate itself writes on a connector ConfigMap.

/// Lets the reconciler delete a connector before its ConfigMap disappears.
pub const FINALIZER: &str = "connect-gate.io/cleanup";

/// The prefix of every annotation connect-gate writes; only connect-gate may change them.
pub const ANNOTATION_PREFIX: &str = "connect-gate.io/";
/// Connectors applied from a ConfigMap: JSON `{connector: data key}`.
pub const ANNOTATION_CONNECTORS: &str = "connect-gate.io/connectors";
/// Per connector: the hash of the config last applied, never the config.
pub const ANNOTATION_APPLIED: &str = "connect-gate.io/applied";
/// Per connector: state, task states, shortened FAILED trace, restarts.
pub const ANNOTATION_STATUS: &str = "connect-gate.io/status";
/// Why something declared here is not (yet) as declared; absent when all is well.
pub const ANNOTATION_LAST_ERROR: &str = "connect-gate.io/last-error";
/// Per connector: the `restart` and `offsets` tokens acted on, and how it went. The record that
/// makes a token act once, across restarts and leader changes.
pub const ANNOTATION_OPERATIONS: &str = "connect-gate.io/operations";

/// The file name a ConfigMap read from standard input (`-`) is shown with.
pub const STDIN: &str = "<stdin>";

/// Where a ConfigMap came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Origin {
    pub namespace: Option<String>,
    pub name: String,
    pub file: Option<PathBuf>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigMap ")?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}", self.name)?;
        if let Some(file) = &self.file {
            write!(f, " ({})", file.display())?;
        }
        Ok(())
    }
}

/// Where a ConfigMap's connectors run, as its labels say.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// No destination label: the worker beside the sidecar.
    Local,
    /// `connect-gate.io/destination: NAME`.
    Named(String),
    /// `destination.cc: NAME`: the Confluent Cloud cluster the ccloud-operator's ConfigMap NAME
    /// describes.
    Cloud(String),
    /// Both labels: ambiguous, so rejected.
    Both { named: String, cloud: String },
}

impl Target {
    pub fn from_labels(labels: Option<&BTreeMap<String, String>>) -> Self {
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        match (label(DESTINATION_NAME_LABEL), label(CLOUD_LABEL)) {
            (None, None) => Target::Local,
            (Some(named), None) => Target::Named(named),
            (None, Some(cloud)) => Target::Cloud(cloud),
            (Some(named), Some(cloud)) => Target::Both { named, cloud },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local => f.write_str("local"),
            Target::Named(name) => f.write_str(name),
            Target::Cloud(cm) => write!(f, "{CLOUD_LABEL}:{cm}"),
            Target::Both { named, cloud } => write!(f, "{named} and {CLOUD_LABEL}:{cloud}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A ConfigMap labelled `destination: connect`: every data key is one connector template.
#[derive(Clone, Debug)]
pub struct ConnectorConfigMap {
    pub origin: Origin,
    /// `enabled: "false"` declares that its connectors must not exist.
    pub enabled: bool,
    /// Its destination labels.
    pub destination: Target,
    pub data: BTreeMap<String, String>,
    /// Keys under `binaryData`, which cannot hold a template.
    pub binary_keys: Vec<String>,
}

/// Whether a ConfigMap's labels make it a connector ConfigMap.
pub fn is_connector_configmap(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(DESTINATION_LABEL))
        .is_some_and(|d| d == DESTINATION_CONNECT)
}

impl ConnectorConfigMap {
    /// `None` when the ConfigMap is not labelled `destination: connect`.
    pub fn from_configmap(cm: &ConfigMap, file: Option<PathBuf>) -> Option<Self> {
        let labels = cm.metadata.labels.as_ref();
        if !is_connector_configmap(labels) {
            return None;
        }
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        Some(Self {
            origin: Origin {
                namespace: cm.metadata.namespace.clone(),
                name: cm.metadata.name.clone().unwrap_or_default(),
                file,
            },
            enabled: label(ENABLED_LABEL).as_deref() != Some("false"),
            destination: Target::from_labels(labels),
            data: cm.data.clone().unwrap_or_default(),
            binary_keys: cm
                .binary_data
                .as_ref()
                .map(|b| b.keys().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

/// The connector ConfigMaps of a namespace that declare connectors now (labelled, not being
/// deleted): what the reconciler judges together, and what admission checks names against.
pub fn declaring<'a>(objects: impl IntoIterator<Item = &'a ConfigMap>, namespace: &str) -> Vec<ConnectorConfigMap> {
    objects
        .into_iter()
        .filter(|cm| cm.metadata.deletion_timestamp.is_none())
        .filter_map(|cm| ConnectorConfigMap::from_configmap(cm, None))
        .map(|mut cm| {
            cm.origin.namespace.get_or_insert_with(|| namespace.to_string());
            cm
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: document {doc}: {source}", path.display())]
    Yaml {
        path: PathBuf,
        doc: usize,
        source: serde_norway::Error,
    },
    #[error("{}: document {doc}: not a valid ConfigMap: {source}", path.display())]
    ConfigMap {
        path: PathBuf,
        doc: usize,
        source: serde_json::Error,
    },
}

/// Reads connector ConfigMaps from files, directories (recursively, `*.yaml`/`*.yml`) or `-`
/// (stdin). Other kinds and unlabelled ConfigMaps are skipped.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<ConnectorConfigMap>, ManifestError> {
    let mut out = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| ManifestError::Io {
                path: path.clone(),
                source,
            })?;
            out.extend(parse_yaml(&text, Path::new(STDIN))?);
        } else {
            for file in yaml_files(path)? {
                let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Io {
                    path: file.clone(),
                    source,
                })?;
                out.extend(parse_yaml(&text, &file)?);
            }
        }
    }
    Ok(out)
}

fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(yaml_files(&entry)?);
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Parses a multi-document YAML stream; `kind: List` documents are expanded.
pub fn parse_yaml(text: &str, path: &Path) -> Result<Vec<ConnectorConfigMap>, ManifestError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let value = serde_norway::Value::deserialize(doc).map_err(|source| ManifestError::Yaml {
            path: path.to_path_buf(),
            doc: doc_no,
            source,
        })?;
        let value: serde_json::Value = serde_norway::from_value(value).map_err(|source| ManifestError::Yaml {
            path: path.to_path_buf(),
            doc: doc_no,
            source,
        })?;
        let objects = match value.get("kind").and_then(|k| k.as_str()) {
            Some("List") => value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default(),
            _ => vec![value],
        };
        for object in objects {
            let is_cm = object.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap")
                && object.get("apiVersion").and_then(|k| k.as_str()) == Some("v1");
            if !is_cm {
                continue;
            }
            let cm: ConfigMap = serde_json::from_value(object).map_err(|source| ManifestError::ConfigMap {
                path: path.to_path_buf(),
                doc: doc_no,
                source,
            })?;
            out.extend(ConnectorConfigMap::from_configmap(&cm, Some(path.to_path_buf())));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_configmaps_and_skips_the_rest() {
        let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: ns, labels: {destination: connect, enabled: "false", destination.cc: x}}
data: {k.json: "{}"}
binaryData: {b: AAAA}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unlabelled}
data: {k: v}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labels: {destination: connect}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b, labels: {destination: connect}}
"#;
        let cms = parse_yaml(text, Path::new("x.yaml")).unwrap();
        assert_eq!(cms.len(), 2);
        assert_eq!(cms[0].origin.to_string(), "ConfigMap ns/a (x.yaml)");
        assert!(!cms[0].enabled);
        assert_eq!(cms[0].destination, Target::Cloud("x".into()));
        assert_eq!(cms[0].destination.to_string(), "destination.cc:x");
        assert_eq!(cms[0].binary_keys, vec!["b"]);
        assert!(cms[1].enabled && cms[1].data.is_empty());
        assert_eq!(cms[1].destination, Target::Local);
    }

    #[test]
    fn the_destination_comes_from_one_label_or_the_other() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let named = labels(&[(DESTINATION_NAME_LABEL, "analytics")]);
        assert_eq!(Target::from_labels(Some(&named)), Target::Named("analytics".into()));
        let both = labels(&[(DESTINATION_NAME_LABEL, "a"), (CLOUD_LABEL, "cc.env.e.kafka.k")]);
        assert_eq!(
            Target::from_labels(Some(&both)).to_string(),
            "a and destination.cc:cc.env.e.kafka.k"
        );
        assert_eq!(Target::from_labels(None), Target::Local);
    }

    #[test]
    fn bad_yaml_names_file_and_document() {
        let err = parse_yaml("a: 1\n---\n: [", Path::new("bad.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.yaml: document 2:"), "{err}");
        let err = parse_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: [1]}\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a valid ConfigMap"), "{err}");
    }
}
