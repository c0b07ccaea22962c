//! The one way the sidecar judges connector ConfigMaps, for the webhook and the reconciler
//! alike: the current template inputs, each ConfigMap's destination with its cached plugin list
//! (fetched when there is none, refetched after a class it does not know, at most every
//! [`MISS_REFRESH_MIN_AGE`]) and the verdict pipeline. Both halves judging through the same
//! [`Judge`] is what keeps admission and reconciliation in agreement:
//! the reconciler judges the namespace's ConfigMaps together, and admission judges one of them
//! against the names the others declare, kept in a [`NameIndex`] that is brought up to date as
//! the watch sees changes, so an admission renders only the ConfigMap under review.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::connect::registry::{Destinations, Prepared};
use crate::pipeline::check::duplicates::{Declaration, settle};
use crate::pipeline::check::plugins::Catalog;
use crate::pipeline::check::verdict::Verdict;
use crate::pipeline::judgement::{Pipeline, PluginCheck};
use crate::pipeline::parse::manifest::{ConnectorConfigMap, Target, declaring};
use crate::pipeline::render::inputs::LiveInputs;

/// A plugin list younger than this is not refetched after a miss, so a flood of requests naming
/// an unknown class cannot hammer the worker, and a plugin installed a moment ago is still found.
pub const MISS_REFRESH_MIN_AGE: Duration = Duration::from_secs(5);
/// How long a judgement waits for a plugin list fetched because there was none.
const NO_LIST_FETCH_BUDGET: Duration = Duration::from_secs(1);

pub struct Judge {
    pipeline: Pipeline,
    inputs: Arc<LiveInputs>,
    destinations: Arc<Destinations>,
    /// Signalled when a reload finds the inputs changed: the name index is then out of date.
    inputs_changed: Notify,
    verdicts: VerdictCache,
}

impl Judge {
    pub fn new(pipeline: Pipeline, inputs: Arc<LiveInputs>, destinations: Arc<Destinations>) -> Self {
        Self {
            pipeline,
            inputs,
            destinations,
            inputs_changed: Notify::new(),
            verdicts: VerdictCache::default(),
        }
    }

    pub fn inputs_changed(&self) -> &Notify {
        &self.inputs_changed
    }

    pub fn destinations(&self) -> &Arc<Destinations> {
        &self.destinations
    }

    /// Re-reads the template inputs (Secret volumes rotate); whether they changed. On a read
    /// error the last good inputs stay in use.
    pub fn reload_inputs(&self) -> bool {
        match self.inputs.reload() {
            Ok(changed) => {
                if changed {
                    tracing::info!("template inputs changed on disk");
                    self.inputs_changed.notify_one();
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read template inputs; keeping the last good ones");
                false
            }
        }
    }

    /// Why there is no plugin list to check `cm`'s classes against, when its destination has
    /// none.
    pub fn plugins_unavailable(&self, cm: &ConnectorConfigMap) -> Option<String> {
        self.destinations.resolve(&cm.destination).ok()?.plugins_unavailable()
    }

    /// Judges `cms` together (so a connector name declared twice is caught). Without a cached
    /// plugin list the plugin check is skipped with a warning.
    pub async fn judge(&self, cms: &[ConnectorConfigMap]) -> Vec<Verdict> {
        let mut verdicts = self.judge_each(cms).await;
        settle(&mut verdicts, &[]);
        verdicts
    }

    /// One ConfigMap under admission: rendered alone, its connector names checked against those
    /// the other ConfigMaps of `view`'s namespace declare, as the reconciler would find them
    /// judging all together.
    pub async fn judge_admitted(&self, cm: ConnectorConfigMap, view: Option<&NamespaceView>) -> Vec<Verdict> {
        let cms = [cm];
        let mut verdicts = self.judge_each(&cms).await;
        let elsewhere = match view {
            Some(view) if cms[0].origin.namespace.as_deref() == Some(view.namespace.as_str()) => view
                .names
                .declared_elsewhere(&cms[0].origin.name, verdicts.iter().filter_map(|v| v.name.as_deref())),
            _ => vec![],
        };
        settle(&mut verdicts, &elsewhere);
        verdicts
    }

    /// Every ConfigMap on its own, against its destination's cached plugin list: fetched first
    /// when there is none yet (a worker that was still starting), refetched once after a miss.
    async fn judge_each(&self, cms: &[ConnectorConfigMap]) -> Vec<Verdict> {
        for cm in cms {
            if let Ok(d) = self.destinations.resolve(&cm.destination)
                && d.plugins.catalog().is_none()
            {
                // Bounded: a destination that does not answer must not cost the webhook its
                // timeout; without a list the ConfigMap is then judged as before (a warning).
                let _ = tokio::time::timeout(NO_LIST_FETCH_BUDGET, d.plugins.refresh_after_miss(MISS_REFRESH_MIN_AGE))
                    .await;
            }
        }
        let mut prepared = self.destinations.prepare(cms);
        let verdicts = self.judge_cached(cms, &prepared).await;
        if verdicts.iter().any(|v| v.unknown_class)
            && prepared.refresh_after_miss(cms, &verdicts, MISS_REFRESH_MIN_AGE).await
        {
            return self.judge_cached(cms, &prepared).await;
        }
        verdicts
    }

    /// [`Pipeline::judge_each`] through the verdict cache: only data keys it has no verdict for
    /// under the current inputs and their destination's plugin list are rendered.
    async fn judge_cached(&self, cms: &[ConnectorConfigMap], prepared: &Prepared) -> Vec<Verdict> {
        let (generation, inputs) = self.inputs.generation();
        let checks = prepared.checks();
        let plugins: Vec<Plugins> = checks
            .iter()
            .zip(prepared.catalogs())
            .zip(cms)
            .map(
                |((check, catalog), cm)| match (check.unusable, catalog, check.plugins) {
                    (Some(why), _, _) => Plugins::Unusable(why.to_string()),
                    (None, Some(c), _) => Plugins::Listed(self.verdicts.catalog_generation(&cm.destination, c)),
                    (None, None, PluginCheck::Unavailable(why)) => Plugins::Unavailable(why.to_string()),
                    (None, None, _) => Plugins::Unavailable(String::new()),
                },
            )
            .collect();
        let key = |i: usize, code: &str| CacheKey {
            code: code.to_string(),
            enabled: cms[i].enabled,
            destination: cms[i].destination.clone(),
            inputs: generation,
            plugins: plugins[i].clone(),
        };
        // Each data key's cached verdict, looked up once: what is missing is judged below, as
        // ConfigMaps holding only those keys (and the binary keys, judged without a render).
        let cached: Vec<Vec<Option<Arc<Verdict>>>> = cms
            .iter()
            .enumerate()
            .map(|(i, cm)| cm.data.values().map(|code| self.verdicts.get(&key(i, code))).collect())
            .collect();
        let (missing, missing_checks): (Vec<ConnectorConfigMap>, Vec<_>) = cms
            .iter()
            .zip(&cached)
            .zip(&checks)
            .map(|((cm, hits), check)| {
                let missing = ConnectorConfigMap {
                    data: cm
                        .data
                        .iter()
                        .zip(hits)
                        .filter(|(_, hit)| hit.is_none())
                        .map(|((k, code), _)| (k.clone(), code.clone()))
                        .collect(),
                    ..cm.clone()
                };
                (missing, *check)
            })
            .filter(|(cm, _)| !cm.data.is_empty() || !cm.binary_keys.is_empty())
            .unzip();
        let rendered: usize = missing.iter().map(|cm| cm.data.len()).sum();
        self.destinations.metrics().renders.inc_by(rendered as u64);
        let mut fresh = self
            .pipeline
            .judge_each(&missing, &inputs, &missing_checks)
            .await
            .into_iter();
        let mut verdicts = Vec::new();
        for (i, (cm, hits)) in cms.iter().zip(cached).enumerate() {
            for ((data_key, code), hit) in cm.data.iter().zip(hits) {
                match hit {
                    Some(hit) => verdicts.push(Verdict {
                        origin: cm.origin.clone(),
                        key: data_key.clone(),
                        ..hit.as_ref().clone()
                    }),
                    None => verdicts.extend(fresh.next().inspect(|v| self.verdicts.insert(key(i, code), v))),
                }
            }
            verdicts.extend(fresh.by_ref().take(cm.binary_keys.len()));
        }
        verdicts
    }

    /// Brings `view`'s name index up to date with its store and the template inputs: only the
    /// ConfigMaps whose resourceVersion or inputs generation changed since they were indexed are
    /// judged again.
    pub async fn refresh_names(&self, view: &NamespaceView) {
        let (generation, _) = self.inputs.generation();
        let objects = view.connectors.state();
        let declaring_now = declaring(objects.iter().map(|o| o.as_ref()), &view.namespace);
        let versions: HashMap<&str, &str> = objects
            .iter()
            .filter_map(|o| Some((o.metadata.name.as_deref()?, o.metadata.resource_version.as_deref()?)))
            .collect();
        let current: BTreeMap<String, Version> = declaring_now
            .iter()
            .map(|cm| {
                let rv = versions.get(cm.origin.name.as_str()).copied().unwrap_or_default();
                (cm.origin.name.clone(), (rv.to_string(), generation))
            })
            .collect();
        let stale = view.names.retain_and_find_stale(&current);
        if stale.is_empty() {
            return;
        }
        let judged: Vec<ConnectorConfigMap> = declaring_now
            .into_iter()
            .filter(|cm| stale.contains(&cm.origin.name))
            .collect();
        let verdicts = self.judge_each(&judged).await;
        for cm in &judged {
            let mine: Vec<Verdict> = verdicts.iter().filter(|v| v.origin == cm.origin).cloned().collect();
            view.names.insert(
                &cm.origin.name,
                current[&cm.origin.name].clone(),
                Declaration::of(&mine),
            );
        }
    }
}

/// The plugin list a verdict was judged against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Plugins {
    /// Its generation: a new one each time the list's contents change.
    Listed(u64),
    /// None could be had, for this reason.
    Unavailable(String),
    /// The ConfigMap's destination cannot be used, for this reason.
    Unusable(String),
}

/// What a data key's verdict depends on, besides its ConfigMap's name and the key's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    code: String,
    enabled: bool,
    /// Its destination labels: they decide the plugin list and what the destination supports.
    destination: Target,
    inputs: u64,
    plugins: Plugins,
}

/// Verdicts the webhook and the reconciler share, so that a Flux dry-run followed by the real
/// apply, or a resync of unchanged ConfigMaps, renders nothing again. In memory only, and
/// nothing in it leaves the process but through a [`Verdict`]'s own rules. Entries of older
/// inputs can never be hit again, so they are dropped when a newer one is stored, and the whole
/// cache starts over past [`VERDICTS_CACHED`] entries (entries of a destination's older plugin
/// lists go then).
#[derive(Default)]
struct VerdictCache {
    entries: std::sync::Mutex<VerdictEntries>,
    /// Per destination, the last plugin list seen and its generation.
    catalogs: std::sync::Mutex<HashMap<Target, (Arc<Catalog>, u64)>>,
}

#[derive(Default)]
struct VerdictEntries {
    /// The inputs generation the entries were judged against.
    judged_against: Option<u64>,
    by_key: HashMap<CacheKey, Arc<Verdict>>,
}

const VERDICTS_CACHED: usize = 20_000;

impl VerdictCache {
    fn get(&self, key: &CacheKey) -> Option<Arc<Verdict>> {
        self.entries.lock().expect("not poisoned").by_key.get(key).cloned()
    }

    fn insert(&self, key: CacheKey, verdict: &Verdict) {
        let mut entries = self.entries.lock().expect("not poisoned");
        let against = Some(key.inputs);
        if entries.judged_against != against || entries.by_key.len() >= VERDICTS_CACHED {
            entries.by_key.clear();
            entries.judged_against = against;
        }
        entries.by_key.insert(key, Arc::new(verdict.clone()));
    }

    /// The generation of `destination`'s `catalog`: the same as long as the list's contents
    /// are (the plugin cache refetches it every minute).
    fn catalog_generation(&self, destination: &Target, catalog: &Arc<Catalog>) -> u64 {
        let mut catalogs = self.catalogs.lock().expect("not poisoned");
        let last = catalogs
            .entry(destination.clone())
            .or_insert_with(|| (catalog.clone(), 0));
        if !Arc::ptr_eq(&last.0, catalog) {
            if *last.0 != **catalog {
                last.1 += 1;
            }
            last.0 = catalog.clone();
        }
        last.1
    }
}

/// The ConfigMaps of the namespace the reconciler owns, as one watch sees them, and the names
/// they declare; the webhook checks an incoming ConfigMap's names against them.
#[derive(Clone)]
pub struct NamespaceView {
    pub namespace: String,
    /// Its connector ConfigMaps (the label-selected watch's store).
    pub connectors: Store<ConfigMap>,
    pub names: Arc<NameIndex>,
}

/// What an index entry was computed from: the ConfigMap's resourceVersion and the inputs
/// generation.
pub type Version = (String, u64);

/// The connector names each connector ConfigMap of a namespace declares, by ConfigMap name.
#[derive(Default)]
pub struct NameIndex {
    inner: RwLock<Names>,
}

#[derive(Default)]
struct Names {
    by_cm: HashMap<String, (Version, Vec<Declaration>)>,
    by_name: HashMap<String, Vec<Declaration>>,
}

impl Names {
    fn remove(&mut self, cm: &str) {
        let Some((_, declared)) = self.by_cm.remove(cm) else {
            return;
        };
        for d in declared {
            if let Some(places) = self.by_name.get_mut(&d.name) {
                places.retain(|p| p.origin.name != cm);
                if places.is_empty() {
                    self.by_name.remove(&d.name);
                }
            }
        }
    }
}

impl NameIndex {
    /// Drops the ConfigMaps no longer in `current` and returns those whose entry is missing or
    /// was computed from another version.
    pub fn retain_and_find_stale(&self, current: &BTreeMap<String, Version>) -> Vec<String> {
        let mut names = self.inner.write().expect("not poisoned");
        let gone: Vec<String> = names
            .by_cm
            .keys()
            .filter(|cm| !current.contains_key(*cm))
            .cloned()
            .collect();
        for cm in gone {
            names.remove(&cm);
        }
        current
            .iter()
            .filter(|(cm, version)| names.by_cm.get(*cm).is_none_or(|(v, _)| v != *version))
            .map(|(cm, _)| cm.clone())
            .collect()
    }

    /// Records what ConfigMap `cm` declares at `version`.
    pub fn insert(&self, cm: &str, version: Version, declared: Vec<Declaration>) {
        let mut names = self.inner.write().expect("not poisoned");
        names.remove(cm);
        for d in &declared {
            names.by_name.entry(d.name.clone()).or_default().push(d.clone());
        }
        names.by_cm.insert(cm.to_string(), (version, declared));
    }

    /// The declarations of `wanted` names by ConfigMaps other than `except`.
    pub fn declared_elsewhere<'n>(&self, except: &str, wanted: impl Iterator<Item = &'n str>) -> Vec<Declaration> {
        let names = self.inner.read().expect("not poisoned");
        let mut found: Vec<Declaration> = Vec::new();
        for name in wanted {
            let places = names.by_name.get(name).into_iter().flatten();
            for d in places.filter(|d| d.origin.name != except) {
                if !found.iter().any(|f| f.origin == d.origin && f.key == d.key) {
                    found.push(d.clone());
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::manifest::Origin;

    fn declared(cm: &str, key: &str, name: &str) -> Declaration {
        Declaration {
            origin: Origin {
                namespace: Some("ns".into()),
                name: cm.into(),
                file: None,
            },
            key: key.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_index_follows_versions_and_answers_by_name() {
        let index = NameIndex::default();
        let version = |rv: &str, generation| (rv.to_string(), generation);
        let current = BTreeMap::from([("a".to_string(), version("1", 0)), ("b".to_string(), version("7", 0))]);
        assert_eq!(index.retain_and_find_stale(&current), ["a", "b"]);
        index.insert(
            "a",
            version("1", 0),
            vec![declared("a", "k", "orders"), declared("a", "l", "x")],
        );
        index.insert("b", version("7", 0), vec![declared("b", "k", "orders")]);
        assert!(
            index.retain_and_find_stale(&current).is_empty(),
            "computed once per version"
        );
        let elsewhere = index.declared_elsewhere("c", ["orders", "nope"].into_iter());
        let places: Vec<_> = elsewhere
            .iter()
            .map(|d| (d.origin.name.as_str(), d.key.as_str()))
            .collect();
        assert_eq!(places, [("a", "k"), ("b", "k")]);
        assert_eq!(index.declared_elsewhere("a", ["orders", "x"].into_iter()).len(), 1);
        // A new resourceVersion or inputs generation makes an entry stale; a ConfigMap gone
        // from the store leaves the index.
        let changed = BTreeMap::from([("a".to_string(), version("2", 0)), ("b".to_string(), version("7", 1))]);
        assert_eq!(index.retain_and_find_stale(&changed), ["a", "b"]);
        let only_b = BTreeMap::from([("b".to_string(), version("7", 0))]);
        assert!(index.retain_and_find_stale(&only_b).is_empty());
        assert!(index.declared_elsewhere("b", ["orders", "x"].into_iter()).is_empty());
    }
}
