//! One plan per destination, pure: each ConfigMap is projected onto every destination it
//! touches (the one its labels pick, and those whose ledger owns a connector it manages), each
//! destination is planned on its own by [`plan::plan`] against its own state and ledger, and
//! the per-destination plans of a ConfigMap are merged back into the one it is reported by.
//! A connector moved to another destination is so deleted where it was and created where it
//! goes; a ConfigMap whose destination cannot be read is held as it is ([`hold`]).

use std::collections::{BTreeMap, BTreeSet};

use super::ledger::Ledgers;
use super::live::LiveState;
use super::plan::{AppliedHash, CmInput, CmPlan, Decl, fingerprint};

/// A ConfigMap and the destination its labels pick (for one being deleted, the one they
/// picked, or `local` when that cannot be resolved).
#[derive(Clone, Debug)]
pub struct Placed {
    pub input: CmInput,
    pub target: String,
}

/// The destinations a name managed by a ConfigMap placed on `target` is on: those whose ledger
/// owns it, else the ConfigMap's own.
pub fn homes<'a>(ledgers: &'a Ledgers, name: &str, target: &'a str) -> Vec<&'a str> {
    let owners = ledgers.owners(name);
    if owners.is_empty() { vec![target] } else { owners }
}

/// Every destination `placed` touches.
pub fn touched<'a>(placed: &'a Placed, ledgers: &'a Ledgers) -> BTreeSet<&'a str> {
    std::iter::once(placed.target.as_str())
        .chain(
            placed
                .input
                .managed
                .keys()
                .flat_map(|n| homes(ledgers, n, &placed.target)),
        )
        .collect()
}

/// The ConfigMaps as `destination` is planned: one placed there declares its keys; elsewhere
/// it is as if deleted there, managing only the names that are there.
pub fn project(placed: &[Placed], ledgers: &Ledgers, destination: &str) -> Vec<CmInput> {
    placed
        .iter()
        .filter_map(|p| {
            let here = p.target == destination && !p.input.deleting;
            let managed: BTreeMap<String, String> = p
                .input
                .managed
                .iter()
                .filter(|(n, _)| homes(ledgers, n, &p.target).contains(&destination))
                .map(|(n, k)| (n.clone(), k.clone()))
                .collect();
            if !here && managed.is_empty() {
                return None;
            }
            Some(CmInput {
                name: p.input.name.clone(),
                deleting: !here,
                has_finalizer: p.input.has_finalizer,
                keys: if here { p.input.keys.clone() } else { vec![] },
                managed,
                applied: p.input.applied.clone(),
                operations: p.input.operations.clone(),
            })
        })
        .collect()
}

/// One ConfigMap's plan from its plans on each destination. A name released on one
/// destination (deleted there) but desired on another stays managed.
pub fn merge(input: &CmInput, plans: &[&CmPlan]) -> CmPlan {
    let mut merged = CmPlan {
        name: input.name.clone(),
        deleting: input.deleting,
        ..CmPlan::default()
    };
    for p in plans {
        merged.add_finalizer |= p.add_finalizer;
        merged.managed_pre.extend(p.managed_pre.clone());
        merged.release.extend(p.release.iter().cloned());
        merged.desired.extend(p.desired.clone());
        merged.applied.extend(p.applied.clone());
        merged.rejected.extend(p.rejected.iter().cloned());
        merged.adopted.extend(p.adopted.iter().cloned());
        merged.unowned.extend(p.unowned.iter().cloned());
        merged.operations.extend(p.operations.clone());
    }
    let desired = merged.desired.clone();
    merged.release.retain(|n| !desired.contains_key(n));
    merged
}

/// The plan of a ConfigMap left as it is this pass (its destination could not be read): it
/// keeps what it manages and its applied hashes, and reports its connectors.
pub fn hold(input: &CmInput) -> CmPlan {
    let mut plan = CmPlan {
        name: input.name.clone(),
        deleting: input.deleting,
        managed_pre: input.managed.clone(),
        applied: input.applied.clone(),
        operations: input.operations.clone(),
        ..CmPlan::default()
    };
    for d in input.keys.iter().filter(|_| !input.deleting) {
        match &d.decl {
            Decl::Apply(c) => {
                plan.desired.insert(c.name.clone(), fingerprint(&c.config));
            }
            Decl::Rejected(Some(name)) => {
                plan.rejected.insert(name.clone());
            }
            _ => {}
        }
    }
    plan
}

/// How Confluent Cloud masks a secret value on read.
fn masked(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b'*')
}

/// Confluent Cloud's `GET …/config` adds keys of its own (`cloud.environment`, `kafka.endpoint`,
/// …) and hides secret values. So that neither reads as drift, the live configs of the
/// connectors `inputs` declare are reduced to the keys connect-gate sets, and a hidden value is
/// taken to be the declared one when the recorded applied hash says connect-gate applied this
/// very config (with `--hash-key-file`, a secret rotated since changes that hash; without it,
/// values from inputs are left out of it, so their rotation goes unseen there).
pub fn as_applied(inputs: &[CmInput], live: &mut LiveState, hash: &AppliedHash) {
    for cm in inputs.iter().filter(|cm| !cm.deleting) {
        for c in cm.accepted() {
            let Some(l) = live.get_mut(&c.name) else { continue };
            let recorded = cm.applied.get(&c.name) == Some(&hash.of(c));
            l.config = c
                .config
                .iter()
                .filter_map(|(k, want)| {
                    let have = l.config.get(k)?;
                    let value = if recorded && masked(have) { want } else { have };
                    Some((k.clone(), value.clone()))
                })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::check::verdict::Connector;
    use crate::reconcile::ledger::{Ledger, Provenance};
    use crate::reconcile::live::Live;
    use crate::reconcile::plan::{Action, Cause, Declared, PlanMemory, PlanOptions, plan};

    fn connector(name: &str, extra: &[(&str, &str)]) -> Connector {
        let mut config: BTreeMap<String, String> = [
            ("name".to_string(), name.to_string()),
            ("connector.class".into(), "DatagenSource".into()),
        ]
        .into();
        config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Connector {
            name: name.into(),
            config,
            state: None,
            restart: None,
            offsets: None,
            secrets: vec![],
            ..Connector::default()
        }
    }

    fn cm(name: &str, connectors: &[Connector], managed: &[&str]) -> CmInput {
        CmInput {
            name: name.into(),
            has_finalizer: true,
            keys: connectors
                .iter()
                .map(|c| Declared {
                    key: format!("{}.json", c.name),
                    decl: Decl::Apply(c.clone()),
                })
                .collect(),
            managed: managed.iter().map(|n| (n.to_string(), format!("{n}.json"))).collect(),
            ..CmInput::default()
        }
    }

    fn ledgers(entries: &[(&str, &str)]) -> Ledgers {
        let mut l = Ledgers::default();
        for (destination, name) in entries {
            let mut ledger = l.get(destination);
            ledger = ledger
                .names()
                .cloned()
                .chain([name.to_string()])
                .map(|n| (n, Provenance::Created))
                .collect::<Ledger>();
            l.set(destination, ledger);
        }
        l
    }

    fn live_of(c: &Connector) -> Live {
        Live {
            config: c.config.clone(),
            status: None,
        }
    }

    /// Plans every destination of `placed` as the pass does, returning the actions per
    /// destination and the merged plan of each ConfigMap.
    fn fan_out(
        placed: &[Placed],
        ledgers: &Ledgers,
        live: &BTreeMap<&str, LiveState>,
    ) -> (Vec<(String, Action)>, BTreeMap<String, CmPlan>) {
        let hash = AppliedHash::NonSecret;
        let mut actions = vec![];
        let mut plans: BTreeMap<String, Vec<CmPlan>> = BTreeMap::new();
        for (destination, state) in live {
            let inputs = project(placed, ledgers, destination);
            let p = plan(
                &inputs,
                state,
                &ledgers.get(destination),
                &PlanMemory::default(),
                PlanOptions::default(),
                &hash,
            );
            actions.extend(p.actions.iter().map(|a| (destination.to_string(), a.clone())));
            for c in p.cms {
                plans.entry(c.name.clone()).or_default().push(c);
            }
        }
        let merged = placed
            .iter()
            .map(|p| {
                let parts: Vec<&CmPlan> = plans.get(&p.input.name).into_iter().flatten().collect();
                (p.input.name.clone(), merge(&p.input, &parts))
            })
            .collect();
        (actions, merged)
    }

    fn summary(actions: &[(String, Action)]) -> Vec<String> {
        actions
            .iter()
            .map(|(d, a)| match a {
                Action::Put { name, cause, .. } => format!("{d}: put {name} {cause:?}"),
                Action::Delete { name, .. } => format!("{d}: delete {name}"),
                other => format!("{d}: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn each_destination_gets_only_the_connectors_of_the_configmaps_placed_on_it() {
        let a = connector("a", &[]);
        let b = connector("b", &[]);
        let placed = [
            Placed {
                input: cm("on-local", std::slice::from_ref(&a), &[]),
                target: "local".into(),
            },
            Placed {
                input: cm("on-analytics", std::slice::from_ref(&b), &[]),
                target: "analytics".into(),
            },
        ];
        let live = BTreeMap::from([("local", LiveState::new()), ("analytics", LiveState::new())]);
        let (actions, plans) = fan_out(&placed, &Ledgers::default(), &live);
        assert_eq!(summary(&actions), ["analytics: put b Created", "local: put a Created"]);
        assert_eq!(plans["on-analytics"].managed_pre.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_connector_moved_to_another_destination_is_deleted_where_it_was_and_created_where_it_goes() {
        let a = connector("a", &[]);
        let placed = [Placed {
            input: cm("cm", std::slice::from_ref(&a), &["a"]),
            target: "analytics".into(),
        }];
        let ledgers = ledgers(&[("local", "a")]);
        let live = BTreeMap::from([
            ("local", LiveState::from([("a".to_string(), live_of(&a))])),
            ("analytics", LiveState::new()),
        ]);
        let (actions, plans) = fan_out(&placed, &ledgers, &live);
        assert_eq!(summary(&actions), ["analytics: put a Created", "local: delete a"]);
        let p = &plans["cm"];
        assert!(p.managed_pre.contains_key("a"), "still managed: it is desired");
        assert!(p.release.is_empty(), "{p:?}");
        assert!(!p.deleting);
    }

    #[test]
    fn a_deleted_configmap_deletes_its_connectors_on_the_destination_that_owns_them() {
        let mut input = cm("cm", &[], &["b"]);
        input.deleting = true;
        let placed = [Placed {
            input,
            target: "local".into(),
        }];
        let ledgers = ledgers(&[("analytics", "b")]);
        let b = connector("b", &[]);
        let live = BTreeMap::from([
            ("local", LiveState::from([("b".to_string(), live_of(&b))])),
            ("analytics", LiveState::from([("b".to_string(), live_of(&b))])),
        ]);
        let (actions, plans) = fan_out(&placed, &ledgers, &live);
        // Never the local worker's namesake, which connect-gate does not own.
        assert_eq!(summary(&actions), ["analytics: delete b"]);
        assert!(plans["cm"].release.contains("b") && plans["cm"].deleting);
        let touched: Vec<&str> = touched(&placed[0], &ledgers).into_iter().collect();
        assert_eq!(touched, ["analytics", "local"]);
    }

    #[test]
    fn a_held_configmap_keeps_what_it_manages_and_reports_what_it_declares() {
        let mut input = cm("cm", &[connector("a", &[])], &["a", "old"]);
        input.applied = [("a".to_string(), "h".to_string())].into();
        input.keys.push(Declared {
            key: "r.json".into(),
            decl: Decl::Rejected(Some("r".into())),
        });
        let p = hold(&input);
        assert_eq!(p.managed_pre, input.managed);
        assert_eq!(p.applied, input.applied);
        assert!(p.release.is_empty() && !p.add_finalizer);
        assert_eq!(p.desired.keys().collect::<Vec<_>>(), ["a"]);
        assert!(p.rejected.contains("r"));
    }

    fn cloud_live(c: &Connector, hidden: &[&str]) -> Live {
        let mut config = c.config.clone();
        for k in hidden {
            config.insert(k.to_string(), "****************".into());
        }
        config.insert("cloud.environment".into(), "prod".into());
        config.insert("kafka.endpoint".into(), "SASL_SSL://pkc.example:9092".into());
        Live { config, status: None }
    }

    /// The actions for `input`'s connector `dg`, owned by connect-gate, with `live` as Confluent
    /// Cloud returns it.
    fn plan_cloud(input: &CmInput, live: Live, hash: &AppliedHash) -> Vec<Action> {
        let mut live = LiveState::from([("dg".to_string(), live)]);
        let inputs = std::slice::from_ref(input);
        as_applied(inputs, &mut live, hash);
        let ledger: Ledger = [("dg".to_string(), Provenance::Created)].into_iter().collect();
        plan(
            inputs,
            &live,
            &ledger,
            &PlanMemory::default(),
            PlanOptions::default(),
            hash,
        )
        .actions
    }

    fn causes(actions: &[Action]) -> Vec<Cause> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Put { cause, .. } => Some(*cause),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn confluent_cloud_server_side_keys_and_hidden_secrets_are_not_drift_once_applied() {
        let hash = AppliedHash::keyed(&[7; 32]).unwrap();
        let c = connector("dg", &[("kafka.api.secret", "s3cret")]);
        let mut input = cm("cm", std::slice::from_ref(&c), &["dg"]);
        input.applied = [("dg".to_string(), hash.of(&c))].into();
        let mut live = LiveState::from([("dg".to_string(), cloud_live(&c, &["kafka.api.secret"]))]);
        as_applied(std::slice::from_ref(&input), &mut live, &hash);
        assert_eq!(live["dg"].config, c.config, "only what connect-gate sets, as it set it");
        let actions = plan_cloud(&input, cloud_live(&c, &["kafka.api.secret"]), &hash);
        assert!(actions.is_empty(), "no PUT on every pass: {actions:?}");
    }

    #[test]
    fn a_hidden_value_connect_gate_did_not_apply_is_sent_once_and_a_visible_change_is_drift() {
        let hash = AppliedHash::keyed(&[7; 32]).unwrap();
        let old = connector("dg", &[("kafka.api.secret", "old")]);
        let new = connector("dg", &[("kafka.api.secret", "rotated")]);
        // Applied before the secret rotated: the recorded hash is the old config's.
        let mut input = cm("cm", std::slice::from_ref(&new), &["dg"]);
        input.applied = [("dg".to_string(), hash.of(&old))].into();
        let actions = plan_cloud(&input, cloud_live(&old, &["kafka.api.secret"]), &hash);
        assert_eq!(causes(&actions), [Cause::Updated]);
        // Once applied, a visible value changed behind connect-gate's back is drift.
        input.applied = [("dg".to_string(), hash.of(&new))].into();
        let mut changed = cloud_live(&new, &["kafka.api.secret"]);
        changed.config.insert("connector.class".into(), "Other".into());
        assert_eq!(causes(&plan_cloud(&input, changed, &hash)), [Cause::DriftChanged]);
    }
}
