//! `connect-gate plan`: what the reconciler would do if the manifests were merged. The manifests
//! are judged as `check` judges them; the namespace's ConfigMaps (connect-gate's annotations on
//! them), the ledger and every destination that matters are read, never written; and each
//! destination is planned by the very function a pass plans it with
//! ([`plan_destination`]: the reconciler's pure planner), from inputs built as a pass builds them
//! ([`cm_input`], [`interest`]), the ConfigMaps' plans merged as a pass merges them
//! ([`fanout::merge`]). So the plan is the effect.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher;

use super::UsageError;
use super::plan_report::{self, Desired, Earlier, Rejected, Report};
use crate::config::{PlanArgs, PlanOutput};
use crate::connect::ConnectClient;
use crate::connect::destinations::{DestinationsFile, LOCAL};
use crate::connect::registry::{Destination, Destinations};
use crate::metrics::Metrics;
use crate::pipeline::check::verdict::{Connector, Verdict};
use crate::pipeline::parse::manifest::{Target, declaring};
use crate::reconcile::fanout::{self, Placed};
use crate::reconcile::input::{cm_input, interest, plan_destination};
use crate::reconcile::lease::Leadership;
use crate::reconcile::live::LiveState;
use crate::reconcile::plan::{AppliedHash, CmInput, CmPlan, Decl, PlanMemory, PlanOptions};
use crate::reconcile::watch::{holds_finalizer, ours};
use crate::reconcile::worker::Worker;
use crate::reconcile::writer::Writer;

pub async fn run(args: &PlanArgs) -> Result<ExitCode, UsageError> {
    let usage = |what: &str, e: &dyn std::fmt::Display| UsageError(format!("{what}: {e}"));
    let Some(url) = args.inputs.connect_url.as_deref() else {
        return Err(UsageError(
            "plan reads the local worker: give --connect-url URL (its plugin list is read there too, unless --plugins)"
                .into(),
        ));
    };
    let hash = crate::serve::applied_hash(args.hash_key_file.as_deref()).map_err(|e| UsageError(format!("{e:#}")))?;
    let (manifests, verdicts) = super::judge_loaded(&args.inputs).await?;

    let config = kube::Config::infer().await.map_err(|e| {
        usage(
            "plan reads the namespace's ConfigMaps and ledger: no usable kubeconfig (KUBECONFIG, ~/.kube/config or in-cluster)",
            &e,
        )
    })?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| usage("kube client", &e))?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let listed = api
        .list(&ListParams::default())
        .await
        .map_err(|e| usage(&format!("listing the ConfigMaps of namespace {namespace}"), &e))?;
    // Read through the reconciler's own reader; its leadership never leads, so it cannot write.
    let reader = Writer {
        api: api.clone(),
        client: client.clone(),
        reporter: Reporter {
            controller: "connect-gate-plan".into(),
            instance: None,
        },
        ledger: Api::namespaced(client, &namespace),
        ledger_name: args.ledger_name.clone(),
        leadership: Leadership::never(),
    };
    let ledgers = reader
        .read_ledger()
        .await
        .map_err(|e| UsageError(e.to_string()))?
        .ledger;

    let (metrics, _) = Metrics::new();
    let file = args
        .inputs
        .destinations
        .as_deref()
        .map(DestinationsFile::load)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let client = ConnectClient::new(url);
    let destinations = match &file {
        Some(f) => Destinations::load(client, f, metrics.clone()).map_err(|e| UsageError(e.to_string()))?,
        None => Destinations::local(client, metrics.clone()),
    };
    // destination.cc names resolve through the ccloud-operator's ConfigMaps, as in the sidecar.
    let (store, mut writer) = reflector::store::<ConfigMap>();
    for cm in &listed.items {
        writer.apply_watcher_event(&watcher::Event::Apply(cm.clone()));
    }
    destinations.watch_configmaps(store);

    let cluster: BTreeMap<String, &ConfigMap> = listed
        .items
        .iter()
        .filter(|cm| ours(cm))
        .filter_map(|cm| Some((cm.metadata.name.clone()?, cm)))
        .collect();
    let placed = place(&manifests_by_name(&manifests), &cluster, &verdicts, &destinations);
    // The values from inputs of the revision the namespace holds now: what runs was rendered from
    // it, so a live value may be one of them even where the manifests now declare a literal.
    let earlier = declaring(cluster.values().copied(), &namespace);
    let before: BTreeMap<String, Earlier> = super::judge_these(&args.inputs, &earlier)
        .await?
        .into_iter()
        .filter_map(|v| {
            let real = v.connector?;
            // Keys whose value differs with placeholders came from inputs; without a placeholder
            // render, every key may have.
            let keys = real
                .config
                .iter()
                .filter(|(k, value)| v.shown.as_ref().is_none_or(|s| s.config.get(*k) != Some(*value)))
                .map(|(k, _)| k.clone())
                .collect();
            Some((
                real.name.clone(),
                Earlier {
                    values: real.secrets,
                    keys,
                },
            ))
        })
        .collect();

    let mut ids: BTreeSet<String> = std::iter::once(LOCAL.to_string())
        .chain(ledgers.destinations().cloned())
        .collect();
    ids.extend(placed.iter().filter_map(|(_, p)| p.as_ref()).map(|p| p.target.clone()));
    let mut live_by: BTreeMap<String, (Arc<Destination>, LiveState)> = BTreeMap::new();
    for id in ids {
        let d = destinations
            .resolve_id(&id)
            .map_err(|why| UsageError(format!("destination {id}: {why}")))?;
        let interest: BTreeSet<String> = ledgers
            .get(&id)
            .names()
            .cloned()
            .chain(
                placed
                    .iter()
                    .filter_map(|(_, p)| p.as_ref())
                    .flat_map(|p| interest(p, &ledgers, &id)),
            )
            .collect();
        let worker = Worker::new(&d, metrics.clone(), Leadership::never());
        let live = worker
            .read_live(&interest)
            .await
            .map_err(|e| UsageError(format!("cannot read destination {id}, so nothing can be planned: {e}")))?;
        live_by.insert(id, (d, live));
    }

    let active: Vec<Placed> = placed.iter().filter_map(|(_, p)| p.clone()).collect();
    let options = PlanOptions {
        prune_unmanaged: args.prune_unmanaged,
        auto_restart: args.auto_restart,
    };
    let mut report = plan_all(&active, &ledgers, &mut live_by, options, &hash, &verdicts, &before);
    report.namespace = namespace;
    for (name, p) in &placed {
        if p.is_none() {
            report.notes.push(format!(
                "ConfigMap {name}: its destination cannot be resolved; the reconciler leaves its connectors as they are"
            ));
        }
    }

    let text = match args.output {
        PlanOutput::Json => serde_json::to_string_pretty(&report).map_err(|e| usage("JSON", &e))?,
        PlanOutput::Text => plan_report::text(&report, std::io::stdout().is_terminal()),
    };
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    Ok(ExitCode::from(plan_report::exit_code(&report, args.fail_on_changes)))
}

fn manifests_by_name(
    manifests: &[crate::pipeline::parse::manifest::ConnectorConfigMap],
) -> BTreeMap<String, &crate::pipeline::parse::manifest::ConnectorConfigMap> {
    manifests.iter().map(|m| (m.origin.name.clone(), m)).collect()
}

/// Every ConfigMap as the reconciler would see it once the manifests are merged: those of the
/// manifests with connect-gate's annotations and finalizer from their namespace counterpart, and
/// the namespace's connector ConfigMaps the manifests no longer hold as deleted (Flux prunes
/// them). `None`: its destination cannot be resolved, so a pass holds it.
fn place(
    manifests: &BTreeMap<String, &crate::pipeline::parse::manifest::ConnectorConfigMap>,
    cluster: &BTreeMap<String, &ConfigMap>,
    verdicts: &[Verdict],
    destinations: &Destinations,
) -> Vec<(String, Option<Placed>)> {
    let names: BTreeSet<&String> = manifests.keys().chain(cluster.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let object = cluster.get(name);
            let annotations = object.and_then(|o| o.metadata.annotations.clone()).unwrap_or_default();
            let has_finalizer = object.is_some_and(|o| holds_finalizer(&o.metadata));
            let (deleting, target, mine) = match manifests.get(name) {
                Some(m) => {
                    let mine: Vec<Verdict> = verdicts.iter().filter(|v| &v.origin.name == name).cloned().collect();
                    (false, destinations.resolve(&m.destination), mine)
                }
                None => {
                    let labels = object.and_then(|o| o.metadata.labels.as_ref());
                    (true, destinations.resolve(&Target::from_labels(labels)), vec![])
                }
            };
            let target = match target {
                Ok(d) => Some(d.id.clone()),
                // As a pass: one being deleted still deletes what the ledgers say it created.
                Err(_) if deleting => Some(LOCAL.to_string()),
                Err(_) => None,
            };
            let placed = target.map(|target| Placed {
                input: cm_input(name.clone(), deleting, has_finalizer, &annotations, &mine),
                target,
            });
            (name.clone(), placed)
        })
        .collect()
}

/// Plans every destination as a pass does, from the memory of a newly elected leader (no
/// rejection or restart backoff pending), and reports it.
fn plan_all(
    active: &[Placed],
    ledgers: &crate::reconcile::ledger::Ledgers,
    live_by: &mut BTreeMap<String, (Arc<Destination>, LiveState)>,
    options: PlanOptions,
    hash: &AppliedHash,
    verdicts: &[Verdict],
    before: &BTreeMap<String, Earlier>,
) -> Report {
    let mut report = Report::default();
    let no_inputs = Earlier::default();
    let mut parts: BTreeMap<String, Vec<CmPlan>> = BTreeMap::new();
    let mut acted: BTreeSet<(String, String)> = BTreeSet::new();
    let shown: BTreeMap<(&str, &str), &Connector> = verdicts
        .iter()
        .filter_map(|v| {
            Some((
                (v.origin.name.as_str(), v.connector.as_ref()?.name.as_str()),
                v.shown.as_ref()?,
            ))
        })
        .collect();
    for (id, (d, live)) in live_by.iter_mut() {
        // A newly elected leader's memory: no rejected config or restart waiting for its backoff.
        let memory = PlanMemory {
            restart_ready: live.keys().cloned().collect(),
            ..PlanMemory::default()
        };
        let (inputs, p) = plan_destination(active, ledgers, d, live, &memory, options, hash);
        let desired: BTreeMap<&str, (&CmInput, &Connector)> = inputs
            .iter()
            .filter(|cm| !cm.deleting)
            .flat_map(|cm| {
                cm.keys.iter().filter_map(move |k| match &k.decl {
                    Decl::Apply(c) => Some((c.name.as_str(), (cm, c))),
                    _ => None,
                })
            })
            .collect();
        for action in &p.actions {
            let d = desired.get(action.name()).map(|(cm, real)| Desired {
                real,
                shown: shown.get(&(cm.name.as_str(), action.name())).copied(),
                before: before.get(action.name()).unwrap_or(&no_inputs),
                applied: cm.applied.get(action.name()).map(String::as_str),
                hash,
            });
            report
                .changes
                .push(plan_report::change(id, action, d.as_ref(), live.get(action.name())));
            acted.insert((id.clone(), action.name().to_string()));
        }
        report.unchanged += desired
            .keys()
            .filter(|n| !acted.contains(&(id.clone(), n.to_string())))
            .count();
        for c in p.cms {
            parts.entry(c.name.clone()).or_default().push(c);
        }
    }
    for p in active {
        let mine: Vec<&CmPlan> = parts.get(&p.input.name).into_iter().flatten().collect();
        let merged = fanout::merge(&p.input, &mine);
        for name in merged.adopted.iter().filter(|n| !acted.iter().any(|(_, a)| a == *n)) {
            report.notes.push(format!(
                "connector {name}: already runs as ConfigMap {} declares it; connect-gate adopts it (recorded in the ledger, no REST write)",
                p.input.name
            ));
        }
        for name in &merged.unowned {
            report.notes.push(format!(
                "connector {name}: ConfigMap {} lists it, but connect-gate did not create or adopt it (not in the ledger): not deleted",
                p.input.name
            ));
        }
    }
    report.rejected = verdicts
        .iter()
        .filter(|v| !v.accepted())
        .map(|v| Rejected {
            configmap: v.origin.name.clone(),
            key: v.key.clone(),
            problems: v.messages().collect(),
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::manifest::{ConnectorConfigMap, FINALIZER};

    fn object(name: &str, annotations: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"destination": "connect"},
                "finalizers": [FINALIZER],
                "annotations": annotations,
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_merge_keeps_connect_gates_records_and_counts_what_the_manifests_drop_as_deleted() {
        let managed = serde_json::json!({"connect-gate.io/connectors": r#"{"x":"x.json"}"#});
        let (kept, dropped) = (object("kept", managed.clone()), object("dropped", managed));
        let cluster: BTreeMap<String, &ConfigMap> =
            [("kept".to_string(), &kept), ("dropped".to_string(), &dropped)].into();
        let manifest = ConnectorConfigMap::from_configmap(&object("kept", serde_json::json!({})), None).unwrap();
        let added = ConnectorConfigMap::from_configmap(&object("added", serde_json::json!({})), None).unwrap();
        let manifests = [manifest, added];
        let (metrics, _) = Metrics::new();
        let destinations = Destinations::local(ConnectClient::new("http://127.0.0.1:9"), metrics);
        let placed = place(&manifests_by_name(&manifests), &cluster, &[], &destinations);
        let by_name: BTreeMap<&str, &Placed> = placed
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_ref().expect("the local worker resolves")))
            .collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["added", "dropped", "kept"]
        );
        // The manifests' version, with what connect-gate recorded on the namespace's.
        let kept = &by_name["kept"].input;
        assert!(!kept.deleting && kept.has_finalizer && kept.managed.contains_key("x"));
        // Gone from the manifests: deleted, as Flux prunes it.
        assert!(by_name["dropped"].input.deleting);
        // New: nothing recorded on it yet.
        let added = &by_name["added"].input;
        assert!(!added.deleting && !added.has_finalizer && added.managed.is_empty());
        assert_eq!(by_name["added"].target, LOCAL);
    }
}
