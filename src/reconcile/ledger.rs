//! The ledger: the connectors connect-gate created or adopted, the only record a delete is
//! allowed on, per destination ([`Ledgers`]). It is kept in annotations of a Lease that only the
//! sidecar's ServiceAccount may write (RBAC), not on the ConfigMaps, whose editors can change
//! any annotation: a name listed in a ConfigMap's `connect-gate.io/connectors` but missing here
//! is never deleted. The local worker's ledger is [`ANNOTATION_LEDGER`], as before destinations
//! existed; the others' is [`ANNOTATION_LEDGER_DESTINATIONS`]. Pure: reading and writing the
//! values, and how a pass changes them; `writer.rs` does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::live::LiveState;
use crate::connect::destinations::LOCAL;

/// The Lease annotation holding the local worker's ledger: JSON `{connector: "created" | "adopted"}`.
pub const ANNOTATION_LEDGER: &str = "connect-gate.io/ledger";
/// The Lease annotation holding the other destinations' ledgers: JSON `{destination: {connector:
/// "created" | "adopted"}}`.
pub const ANNOTATION_LEDGER_DESTINATIONS: &str = "connect-gate.io/ledger-destinations";

/// How connect-gate came to own a connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// connect-gate's PUT created it.
    Created,
    /// It existed on the worker when a ConfigMap declared it (connect-operator, by hand, an
    /// earlier connect-gate without a ledger); connect-gate took it over.
    Adopted,
}

#[derive(Debug, thiserror::Error)]
#[error("its annotation {annotation} is not a JSON map of connector names to \"created\" or \"adopted\"{}: {source}", if *annotation == ANNOTATION_LEDGER { "" } else { " per destination" })]
pub struct LedgerError {
    annotation: &'static str,
    source: serde_json::Error,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    owned: BTreeMap<String, Provenance>,
}

impl Ledger {
    /// The ledger as stored; no annotation (a new installation, or an upgrade from a version
    /// without a ledger) is an empty one. An unreadable value is an error, never an empty
    /// ledger: written back, it would lose every record.
    pub fn decode(annotation: Option<&str>) -> Result<Self, LedgerError> {
        let owned = annotation
            .map(serde_json::from_str)
            .transpose()
            .map_err(|source| LedgerError {
                annotation: ANNOTATION_LEDGER,
                source,
            })?
            .unwrap_or_default();
        Ok(Self { owned })
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(&self.owned).expect("a map of strings serialises")
    }

    pub fn owns(&self, name: &str) -> bool {
        self.owned.contains_key(name)
    }

    pub fn provenance(&self, name: &str) -> Option<Provenance> {
        self.owned.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.owned.keys()
    }

    /// The ledger to write BEFORE a pass acts: what the plan is about to create or adopt is
    /// recorded first, so a crash between a PUT and its record never leaves a connector
    /// connect-gate cannot delete. Names that are neither on the worker nor declared any more are
    /// dropped: should a connector of that name appear later, it was not connect-gate's.
    /// `declared` is every name the plan's ConfigMaps declare, `record` what it creates or adopts.
    pub fn before_acting<'a>(
        &self,
        live: &LiveState,
        declared: impl IntoIterator<Item = &'a String>,
        record: &BTreeMap<String, Provenance>,
    ) -> Ledger {
        let declared: BTreeSet<&String> = declared.into_iter().collect();
        let mut owned: BTreeMap<String, Provenance> = self
            .owned
            .iter()
            .filter(|(name, _)| live.contains_key(*name) || declared.contains(name))
            .map(|(name, p)| (name.clone(), *p))
            .collect();
        for (name, provenance) in record {
            owned.entry(name.clone()).or_insert(*provenance);
        }
        Ledger { owned }
    }

    /// The ledger after a pass: the connectors it deleted are no longer its own.
    pub fn forget(&self, deleted: &BTreeSet<String>) -> Ledger {
        let mut owned = self.owned.clone();
        owned.retain(|name, _| !deleted.contains(name));
        Ledger { owned }
    }
}

/// The ledgers of every destination, by destination id (`local` included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledgers {
    by_destination: BTreeMap<String, Ledger>,
}

impl Ledgers {
    /// From the two annotations; missing ones are empty, unreadable ones an error.
    pub fn decode(local: Option<&str>, others: Option<&str>) -> Result<Self, LedgerError> {
        let mut by_destination: BTreeMap<String, Ledger> = others
            .map(serde_json::from_str::<BTreeMap<String, BTreeMap<String, Provenance>>>)
            .transpose()
            .map_err(|source| LedgerError {
                annotation: ANNOTATION_LEDGER_DESTINATIONS,
                source,
            })?
            .unwrap_or_default()
            .into_iter()
            .map(|(d, owned)| (d, Ledger { owned }))
            .collect();
        by_destination.insert(LOCAL.into(), Ledger::decode(local)?);
        Ok(Self { by_destination })
    }

    /// The two annotations' values; the second is `None` while only the local worker has
    /// connect-gate's connectors.
    pub fn encode(&self) -> (String, Option<String>) {
        let others: BTreeMap<&String, &BTreeMap<String, Provenance>> = self
            .by_destination
            .iter()
            .filter(|(d, l)| *d != LOCAL && !l.owned.is_empty())
            .map(|(d, l)| (d, &l.owned))
            .collect();
        let others = (!others.is_empty()).then(|| serde_json::to_string(&others).expect("a map of strings serialises"));
        (self.get(LOCAL).encode(), others)
    }

    pub fn get(&self, destination: &str) -> Ledger {
        self.by_destination.get(destination).cloned().unwrap_or_default()
    }

    pub fn set(&mut self, destination: &str, ledger: Ledger) {
        self.by_destination.insert(destination.to_string(), ledger);
    }

    /// The destinations that own some connector.
    pub fn destinations(&self) -> impl Iterator<Item = &String> {
        self.by_destination
            .iter()
            .filter(|(_, l)| !l.owned.is_empty())
            .map(|(d, _)| d)
    }

    /// The destinations whose ledger owns `name`.
    pub fn owners(&self, name: &str) -> Vec<&str> {
        self.by_destination
            .iter()
            .filter(|(_, l)| l.owns(name))
            .map(|(d, _)| d.as_str())
            .collect()
    }

    /// Every destination's entries in one: for reports, which only ask how a name came to be
    /// owned (names are unique across destinations, but for a connector being moved).
    pub fn merged(&self) -> Ledger {
        self.by_destination.values().flat_map(|l| l.owned.clone()).collect()
    }
}

impl FromIterator<(String, Provenance)> for Ledger {
    fn from_iter<I: IntoIterator<Item = (String, Provenance)>>(iter: I) -> Self {
        Ledger {
            owned: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::live::Live;

    fn live(names: &[&str]) -> LiveState {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Live {
                        config: BTreeMap::new(),
                        status: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn round_trips_and_treats_no_annotation_as_empty() {
        let ledger: Ledger = [
            ("a".to_string(), Provenance::Created),
            ("b".into(), Provenance::Adopted),
        ]
        .into_iter()
        .collect();
        assert_eq!(ledger.encode(), r#"{"a":"created","b":"adopted"}"#);
        assert_eq!(Ledger::decode(Some(&ledger.encode())).unwrap(), ledger);
        assert_eq!(Ledger::decode(None).unwrap(), Ledger::default());
        assert_eq!(Ledger::decode(Some("{}")).unwrap(), Ledger::default());
    }

    #[test]
    fn a_corrupted_ledger_is_an_error_never_an_empty_one() {
        for bad in ["", "[\"a\"]", r#"{"a": "mine"}"#, r#"{"a": 1}"#] {
            let e = Ledger::decode(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(ANNOTATION_LEDGER), "{e}");
        }
    }

    #[test]
    fn records_before_acting_and_forgets_what_is_gone() {
        let ledger: Ledger = [
            ("running".to_string(), Provenance::Created),
            ("pending".into(), Provenance::Created),
            ("gone".into(), Provenance::Adopted),
        ]
        .into_iter()
        .collect();
        // `pending` is declared (its PUT may have failed), `new` is about to be created.
        let declared = ["pending".to_string(), "new".into()];
        let record = [
            ("new".to_string(), Provenance::Created),
            ("running".into(), Provenance::Adopted),
        ]
        .into();
        let next = ledger.before_acting(&live(&["running"]), &declared, &record);
        // `pending` is declared (its PUT may have failed), `gone` is neither live nor declared;
        // a name already owned keeps its provenance.
        let want: Ledger = [
            ("running".to_string(), Provenance::Created),
            ("pending".into(), Provenance::Created),
            ("new".into(), Provenance::Created),
        ]
        .into_iter()
        .collect();
        assert_eq!(next, want);
        let after = next.forget(&["running".to_string()].into());
        assert!(!after.owns("running") && after.owns("new"));
        assert_eq!(after.provenance("pending"), Some(Provenance::Created));
    }

    #[test]
    fn each_destination_has_its_own_ledger_and_the_local_one_keeps_its_annotation() {
        let ledgers = Ledgers::decode(Some(r#"{"a":"created"}"#), None).unwrap();
        assert_eq!(ledgers.encode(), (r#"{"a":"created"}"#.to_string(), None));
        let mut ledgers = ledgers;
        ledgers.set(
            "analytics",
            [("b".to_string(), Provenance::Adopted)].into_iter().collect(),
        );
        ledgers.set("empty", Ledger::default());
        let (local, others) = ledgers.encode();
        assert_eq!(local, r#"{"a":"created"}"#);
        assert_eq!(others.as_deref(), Some(r#"{"analytics":{"b":"adopted"}}"#));
        let back = Ledgers::decode(Some(&local), others.as_deref()).unwrap();
        assert_eq!(back.owners("b"), ["analytics"]);
        assert_eq!(back.owners("a"), ["local"]);
        assert!(back.owners("c").is_empty());
        assert_eq!(back.destinations().collect::<Vec<_>>(), ["analytics", "local"]);
        assert_eq!(back.merged().provenance("b"), Some(Provenance::Adopted));
        let e = Ledgers::decode(None, Some("[1]")).unwrap_err().to_string();
        assert!(e.contains(ANNOTATION_LEDGER_DESTINATIONS), "{e}");
    }
}
