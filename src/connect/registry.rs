//! The destinations at run time: a REST client and a plugin cache for each, found from a
//! ConfigMap's labels ([`Target`]). `destination.cc: NAME` is resolved through the ConfigMap
//! NAME that the ccloud-operator wrote in the namespace (labels `environment_id`,
//! `resource_id`), read from the namespace's watched metadata, with the API key of the
//! destinations file's `confluentCloud` section.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::Store;

use super::destinations::{CloudSpec, DestinationsError, DestinationsFile, Kind, LOCAL, Spec};
use super::plugin_cache::PluginCache;
use super::{ClientOptions, ConnectClient, ConnectError};
use crate::metrics::Metrics;
use crate::pipeline::check::plugins::Catalog;
use crate::pipeline::check::providers::WorkerConfig;
use crate::pipeline::check::secrets_as::SecretsAs;
use crate::pipeline::check::verdict::Verdict;
use crate::pipeline::judgement::{DestinationCheck, PluginCheck};
use crate::pipeline::parse::manifest::{
    CLOUD_CLUSTER_LABEL, CLOUD_ENVIRONMENT_LABEL, CLOUD_LABEL, ConnectorConfigMap, Target,
};

/// One destination: where its connectors are applied and checked.
#[derive(Debug)]
pub struct Destination {
    /// How messages, status and the ledger name it: `local`, its name, or `destination.cc:NAME`.
    pub id: String,
    pub kind: Kind,
    pub client: ConnectClient,
    pub plugins: Arc<PluginCache>,
    /// Its workers' config providers (`--worker-config` for the local worker), when known.
    pub providers: Option<Arc<WorkerConfig>>,
    pub secrets_as: SecretsAs,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    File(#[from] DestinationsError),
    #[error("{}: destination {name:?}: {source}", file.display())]
    Client {
        file: std::path::PathBuf,
        name: String,
        source: ConnectError,
    },
    #[error("{}: destination {name:?}: {source}", file.display())]
    WorkerConfig {
        file: std::path::PathBuf,
        name: String,
        source: Box<crate::pipeline::check::providers::WorkerConfigError>,
    },
}

pub struct Destinations {
    local: Arc<Destination>,
    /// In the file's order, which messages keep.
    named: Vec<Arc<Destination>>,
    /// For `destination.cc`: the API key, read at start.
    cloud: Option<(CloudSpec, ClientOptions)>,
    /// `destination.cc` targets resolved so far, by id.
    resolved: RwLock<BTreeMap<String, Arc<Destination>>>,
    /// The reconciled namespace's ConfigMaps, where the ccloud-operator's ConfigMaps are found.
    configmaps: OnceLock<Store<ConfigMap>>,
    metrics: Metrics,
}

impl Destinations {
    /// The local worker only.
    pub fn local(client: ConnectClient, metrics: Metrics) -> Self {
        Self {
            local: destination(LOCAL.into(), Kind::Connect, client, &metrics),
            named: Vec::new(),
            cloud: None,
            resolved: RwLock::default(),
            configmaps: OnceLock::new(),
            metrics,
        }
    }

    /// The local worker's config providers and how inputs reach it (`--worker-config`,
    /// `--secrets-as`).
    pub fn with_local_providers(mut self, providers: Option<WorkerConfig>, secrets_as: SecretsAs) -> Self {
        let local = Arc::get_mut(&mut self.local).expect("set before the destinations are shared");
        local.providers = providers.map(Arc::new);
        local.secrets_as = secrets_as;
        // Confluent Cloud has no providers: the pipeline sends values, and says so under references.
        for d in self.named.iter_mut().filter(|d| d.kind.is_cloud()) {
            Arc::get_mut(d)
                .expect("set before the destinations are shared")
                .secrets_as = secrets_as;
        }
        self
    }

    /// The local worker and those of `file`, whose credential files are read now.
    pub fn load(client: ConnectClient, file: &DestinationsFile, metrics: Metrics) -> Result<Self, RegistryError> {
        let mut this = Self::local(client, metrics);
        for spec in &file.named {
            let d = this.build(spec, &spec.client_options(&file.path)?, &file.path)?;
            this.named.push(d);
        }
        if let Some(cloud) = &file.cloud {
            let probe = cloud.spec("confluentCloud".into(), String::new(), String::new());
            this.cloud = Some((cloud.clone(), probe.client_options(&file.path)?));
        }
        Ok(this)
    }

    fn build(
        &self,
        spec: &Spec,
        options: &ClientOptions,
        file: &std::path::Path,
    ) -> Result<Arc<Destination>, RegistryError> {
        let client =
            ConnectClient::with_options(&spec.base_url(), options).map_err(|source| RegistryError::Client {
                file: file.to_path_buf(),
                name: spec.name.clone(),
                source,
            })?;
        let mut d = destination(spec.name.clone(), spec.kind.clone(), client, &self.metrics);
        let providers = spec
            .worker_config
            .as_deref()
            .map(WorkerConfig::load)
            .transpose()
            .map_err(|e| RegistryError::WorkerConfig {
                file: file.to_path_buf(),
                name: spec.name.clone(),
                source: Box::new(e),
            })?;
        let built = Arc::get_mut(&mut d).expect("not shared yet");
        built.providers = providers.map(Arc::new);
        built.secrets_as = spec.secrets_as;
        Ok(d)
    }

    /// Where `destination.cc` names are looked up; set once the namespace is watched.
    pub fn watch_configmaps(&self, store: Store<ConfigMap>) {
        let _ = self.configmaps.set(store);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn local_destination(&self) -> &Arc<Destination> {
        &self.local
    }

    /// The declared destinations: the local one first.
    pub fn declared(&self) -> impl Iterator<Item = &Arc<Destination>> {
        std::iter::once(&self.local).chain(self.named.iter())
    }

    /// What a ConfigMap may name, for messages.
    fn choices(&self) -> String {
        let mut names: Vec<String> = self.declared().map(|d| d.id.clone()).collect();
        if self.cloud.is_some() {
            names.push(format!("{CLOUD_LABEL}: a ccloud-operator ConfigMap"));
        }
        names.join(", ")
    }

    /// The destination a ConfigMap's labels pick, or why there is none (a denial's text: it
    /// names labels and destinations, never credentials).
    pub fn resolve(&self, target: &Target) -> Result<Arc<Destination>, String> {
        match target {
            Target::Local => Ok(self.local.clone()),
            Target::Named(name) if name == LOCAL => Ok(self.local.clone()),
            Target::Named(name) => self.named.iter().find(|d| &d.id == name).cloned().ok_or_else(|| {
                format!(
                    "destination {name:?} (label connect-gate.io/destination) is not declared in --destinations; destinations: {}",
                    self.choices()
                )
            }),
            Target::Cloud(cm) => self.resolve_cloud(cm),
            Target::Both { .. } => Err(format!(
                "labels connect-gate.io/destination and {CLOUD_LABEL} both pick a destination; keep one"
            )),
        }
    }

    /// The destination of an id as [`Destination::id`] gives it (from the ledger).
    pub fn resolve_id(&self, id: &str) -> Result<Arc<Destination>, String> {
        match id.strip_prefix(CLOUD_PREFIX) {
            Some(cm) => self.resolve_cloud(cm),
            None => self.resolve(&Target::Named(id.to_string())),
        }
    }

    fn resolve_cloud(&self, cm: &str) -> Result<Arc<Destination>, String> {
        let Some((spec, options)) = &self.cloud else {
            return Err(format!(
                "label {CLOUD_LABEL} needs the confluentCloud section (API key files) in --destinations; destinations: {}",
                self.choices()
            ));
        };
        let Some(store) = self.configmaps.get() else {
            return Err(format!(
                "label {CLOUD_LABEL}: ConfigMap {cm:?} cannot be looked up: this sidecar does not watch its namespace (--no-reconcile)"
            ));
        };
        let object = store
            .state()
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some(cm))
            .ok_or_else(|| format!("label {CLOUD_LABEL}: there is no ConfigMap {cm:?} labelled {CLOUD_ENVIRONMENT_LABEL} and {CLOUD_CLUSTER_LABEL} in this namespace (the ccloud-operator writes one per Kafka cluster)"))?;
        let (environment, cluster) = cloud_ids(object.metadata.labels.as_ref())
            .map_err(|why| format!("label {CLOUD_LABEL}: ConfigMap {cm:?} {why}"))?;
        let id = format!("{CLOUD_PREFIX}{cm}");
        let kind = Kind::ConfluentCloud {
            environment: environment.clone(),
            cluster: cluster.clone(),
        };
        if let Some(d) = self.resolved.read().expect("not poisoned").get(&id)
            && d.kind == kind
        {
            return Ok(d.clone());
        }
        let spec = spec.spec(id.clone(), environment, cluster);
        let client = ConnectClient::with_options(&spec.base_url(), options)
            .map_err(|e| format!("label {CLOUD_LABEL}: ConfigMap {cm:?}: {e}"))?;
        let mut d = destination(id.clone(), kind, client, &self.metrics);
        // No providers there: the pipeline sends values and says so when references were asked.
        Arc::get_mut(&mut d).expect("not shared yet").secrets_as = self.local.secrets_as;
        self.resolved.write().expect("not poisoned").insert(id, d.clone());
        Ok(d)
    }

    /// Each ConfigMap's destination, for one judgement of them together.
    pub fn prepare(&self, cms: &[ConnectorConfigMap]) -> Prepared {
        Prepared {
            targets: cms
                .iter()
                .map(|cm| {
                    let destination = self.resolve(&cm.destination);
                    let (catalog, unavailable) = match &destination {
                        Ok(d) => (d.plugins.catalog(), d.plugins_unavailable().unwrap_or_default()),
                        Err(_) => (None, String::new()),
                    };
                    Resolved {
                        destination,
                        catalog,
                        unavailable,
                    }
                })
                .collect(),
        }
    }
}

impl Destination {
    /// Why there is no plugin list to check classes against, when there is none.
    pub fn plugins_unavailable(&self) -> Option<String> {
        if self.plugins.catalog().is_some() {
            return None;
        }
        let error = self.plugins.last_error();
        let error = error.as_deref().unwrap_or("not fetched yet");
        Some(if self.id == LOCAL {
            format!("the worker's plugin list is unavailable ({error})")
        } else {
            format!("the plugin list of destination {} is unavailable ({error})", self.id)
        })
    }
}

/// The id prefix of a `destination.cc` destination.
const CLOUD_PREFIX: &str = "destination.cc:";

fn destination(id: String, kind: Kind, client: ConnectClient, metrics: &Metrics) -> Arc<Destination> {
    Arc::new(Destination {
        id,
        kind,
        plugins: Arc::new(PluginCache::new(client.clone(), metrics.clone())),
        client,
        providers: None,
        secrets_as: SecretsAs::Values,
    })
}

/// The environment and cluster a ccloud-operator ConfigMap names in its labels.
pub fn cloud_ids(labels: Option<&BTreeMap<String, String>>) -> Result<(String, String), String> {
    let label = |k: &str| {
        labels
            .and_then(|l| l.get(k))
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .cloned()
            .ok_or_else(|| format!("has no usable label {k}"))
    };
    Ok((label(CLOUD_ENVIRONMENT_LABEL)?, label(CLOUD_CLUSTER_LABEL)?))
}

/// The destinations of ConfigMaps judged together, with the plugin lists used.
pub struct Prepared {
    targets: Vec<Resolved>,
}

/// One ConfigMap's destination (or why it has none) and the plugin list used for it.
struct Resolved {
    destination: Result<Arc<Destination>, String>,
    catalog: Option<Arc<Catalog>>,
    /// Why there is no plugin list, when there is none.
    unavailable: String,
}

impl Prepared {
    /// The plugin list used for each ConfigMap, in order.
    pub fn catalogs(&self) -> impl Iterator<Item = Option<&Arc<Catalog>>> {
        self.targets.iter().map(|r| r.catalog.as_ref())
    }

    /// What the pipeline checks each ConfigMap against, in order.
    pub fn checks(&self) -> Vec<DestinationCheck<'_>> {
        self.targets
            .iter()
            .map(|r| match &r.destination {
                Err(why) => DestinationCheck {
                    unusable: Some(why),
                    ..PluginCheck::Skip.into()
                },
                Ok(d) => DestinationCheck {
                    plugins: match &r.catalog {
                        Some(c) => PluginCheck::Catalog(c),
                        None => PluginCheck::Unavailable(&r.unavailable),
                    },
                    unusable: None,
                    cloud: d.kind.is_cloud().then_some(d.id.as_str()),
                    providers: d.providers.as_deref(),
                    secrets_as: d.secrets_as,
                },
            })
            .collect()
    }

    /// After a judgement: refetches, at most every `min_age`, the plugin lists of the
    /// destinations a verdict found an unknown class for. True when one of them changed.
    pub async fn refresh_after_miss(
        &mut self,
        cms: &[ConnectorConfigMap],
        verdicts: &[Verdict],
        min_age: Duration,
    ) -> bool {
        let mut changed = false;
        for (cm, r) in cms.iter().zip(self.targets.iter_mut()) {
            let missed = verdicts.iter().any(|v| v.unknown_class && v.origin == cm.origin);
            let Ok(d) = &r.destination else { continue };
            if !missed {
                continue;
            }
            match d.plugins.refresh_after_miss(min_age).await {
                Some(fresh) => {
                    r.catalog = Some(fresh);
                    changed = true;
                }
                None => r.catalog = d.plugins.catalog(),
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Destinations {
        let file = DestinationsFile::parse(
            "destinations: [{name: analytics, url: 'http://127.0.0.1:1'}]\n",
            std::path::Path::new("d.yaml"),
        )
        .unwrap();
        Destinations::load(ConnectClient::new("http://127.0.0.1:2"), &file, Metrics::new().0).unwrap()
    }

    #[test]
    fn labels_pick_a_declared_destination_and_an_unknown_one_names_those_that_exist() {
        let r = registry();
        assert_eq!(r.resolve(&Target::Local).unwrap().id, "local");
        assert_eq!(r.resolve(&Target::Named("local".into())).unwrap().id, "local");
        assert_eq!(r.resolve(&Target::Named("analytics".into())).unwrap().id, "analytics");
        assert_eq!(r.resolve_id("analytics").unwrap().id, "analytics");
        let e = r.resolve(&Target::Named("billing".into())).unwrap_err();
        assert!(
            e.contains("\"billing\"") && e.ends_with("destinations: local, analytics"),
            "{e}"
        );
        let e = r.resolve(&Target::Cloud("cc.env.e.kafka.k".into())).unwrap_err();
        assert!(e.contains("confluentCloud section"), "{e}");
        let e = r
            .resolve(&Target::Both {
                named: "a".into(),
                cloud: "b".into(),
            })
            .unwrap_err();
        assert!(e.contains("keep one"), "{e}");
    }

    #[test]
    fn a_ccloud_operator_configmap_names_environment_and_cluster_in_its_labels() {
        let labels: BTreeMap<String, String> = [
            ("environment_id".to_string(), "env-1".to_string()),
            ("resource_id".into(), "lkc-2".into()),
        ]
        .into();
        assert_eq!(cloud_ids(Some(&labels)).unwrap(), ("env-1".into(), "lkc-2".into()));
        let mut bad = labels.clone();
        bad.insert("resource_id".into(), "../x".into());
        assert_eq!(cloud_ids(Some(&bad)).unwrap_err(), "has no usable label resource_id");
        assert_eq!(cloud_ids(None).unwrap_err(), "has no usable label environment_id");
    }
}
