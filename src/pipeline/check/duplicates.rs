//! Settling duplicate connector names: each name may be declared by one data key only, among
//! the verdicts being judged and the declarations of the rest of the namespace. Every judgement
//! ends with [`settle`].

use std::collections::BTreeMap;

use super::verdict::{Problem, Verdict};
use crate::pipeline::parse::manifest::Origin;

/// A connector name declared by a data key outside the verdicts being settled.
#[derive(Clone, Debug)]
pub struct Declaration {
    pub origin: Origin,
    pub key: String,
    /// The real name: never shown.
    pub name: String,
}

impl Declaration {
    /// The names `verdicts` declare, as [`settle`] counts them: before it withholds any.
    pub fn of(verdicts: &[Verdict]) -> Vec<Declaration> {
        verdicts
            .iter()
            .filter_map(|v| {
                Some(Declaration {
                    origin: v.origin.clone(),
                    key: v.key.clone(),
                    name: v.name.clone()?,
                })
            })
            .collect()
    }
}

/// Ends a judgement: rejects each name declared twice, among `verdicts` or by one of
/// `elsewhere` (the other ConfigMaps of the namespace), then withholds the names of rejected
/// connectors that depend on variable or env values.
pub fn settle(verdicts: &mut [Verdict], elsewhere: &[Declaration]) {
    mark_duplicates(verdicts, elsewhere);
    for v in verdicts.iter_mut().filter(|v| !v.accepted() && v.name != v.shown_name) {
        // Nothing is applied under it, and the reconciler would record it in an annotation.
        v.name = None;
    }
}

/// Decided on the real names; each message names its connector as the placeholder render does.
fn mark_duplicates(verdicts: &mut [Verdict], elsewhere: &[Declaration]) {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let here: Vec<(usize, String, String)> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, v.name.clone()?, format!("{}, key {}", v.origin, v.key))))
        .collect();
    for (_, name, place) in &here {
        by_name.entry(name).or_default().push(place.clone());
    }
    for d in elsewhere {
        if let Some(places) = by_name.get_mut(d.name.as_str()) {
            places.push(format!("{}, key {}", d.origin, d.key));
        }
    }
    for (i, name, place) in &here {
        let places = &by_name[name.as_str()];
        if places.len() < 2 {
            continue;
        }
        let others: Vec<&str> = places.iter().filter(|p| *p != place).map(String::as_str).collect();
        let problem = Problem::Duplicate {
            name: verdicts[*i].shown_name.clone(),
            other: others.join("; "),
        };
        verdicts[*i].problems.push(problem.to_string());
        verdicts[*i].kinds.push(problem.kind());
        verdicts[*i].connector = None;
        verdicts[*i].shown = None;
    }
}
