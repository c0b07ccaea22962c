//! The shape a rendered template must have (`{"name", "config", "state", "restart",
//! "offsets", "literalAliases"}`) and the names Connect can take. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::operations;
use super::verdict::{Connector, Problem, State};

pub(crate) struct Checked {
    pub name: Option<String>,
    pub connector: Option<Connector>,
    /// Problems that prevent even deleting the connector.
    pub name_problems: Vec<Problem>,
    pub problems: Vec<Problem>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The checks on a rendered value. Pure.
pub(crate) fn check_shape(value: &Value) -> Checked {
    let mut checked = Checked {
        name: None,
        connector: None,
        name_problems: vec![],
        problems: vec![],
    };
    let Value::Object(top) = value else {
        checked.name_problems.push(Problem::NotObject(type_name(value)));
        return checked;
    };
    match top.get("name") {
        None | Some(Value::Null) => checked.name_problems.push(Problem::MissingName),
        Some(Value::String(name)) => match name_problem(name) {
            Some(problem) => checked.name_problems.push(problem),
            None => checked.name = Some(name.clone()),
        },
        Some(other) => checked.name_problems.push(Problem::NameNotString(type_name(other))),
    }
    let problems = &mut checked.problems;
    for key in top
        .keys()
        .filter(|k| !["name", "config", "state", "restart", "offsets", "literalAliases"].contains(&k.as_str()))
    {
        problems.push(Problem::UnknownKey(key.clone()));
    }
    let state = match top.get("state") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.to_lowercase().as_str() {
            "running" => Some(State::Running),
            "paused" => Some(State::Paused),
            "stopped" => Some(State::Stopped),
            _ => {
                problems.push(Problem::BadState);
                None
            }
        },
        Some(_) => {
            problems.push(Problem::BadState);
            None
        }
    };
    let literal_aliases = literal_aliases(top.get("literalAliases"), problems);
    let operations = operations::read(top);
    problems.extend(operations.problems.into_iter().map(Problem::from));
    let Some(Value::Object(raw)) = top.get("config") else {
        problems.push(Problem::MissingConfig);
        return checked;
    };
    let config = stringify_config(raw, problems);
    if let (Some(name), Some(config_name)) = (&checked.name, config.get("name"))
        && config_name != name
    {
        problems.push(Problem::NameMismatch {
            name: name.clone(),
            config_name: config_name.clone(),
        });
    }
    if !raw.contains_key("connector.class") || config.get("connector.class").is_some_and(|c| c.trim().is_empty()) {
        problems.push(Problem::MissingClass);
    }
    if let (Some(name), true) = (&checked.name, problems.is_empty() && checked.name_problems.is_empty()) {
        let mut config = config;
        config.insert("name".into(), name.clone());
        checked.connector = Some(Connector {
            name: name.clone(),
            config,
            state,
            restart: operations.restart,
            offsets: operations.offsets,
            secrets: vec![],
            literal_aliases,
            ..Connector::default()
        });
    }
    checked
}

/// `"literalAliases": ["date", ...]`: provider aliases whose references are literal text.
fn literal_aliases(value: Option<&Value>, problems: &mut Vec<Problem>) -> BTreeSet<String> {
    let alias = |v: &Value| {
        v.as_str()
            .filter(|a| !a.is_empty() && !a.contains([':', '}']))
            .map(String::from)
    };
    match value {
        None | Some(Value::Null) => BTreeSet::new(),
        Some(Value::Array(items)) => match items.iter().map(alias).collect::<Option<BTreeSet<_>>>() {
            Some(aliases) => aliases,
            None => {
                problems.push(Problem::LiteralAliases);
                BTreeSet::new()
            }
        },
        Some(_) => {
            problems.push(Problem::LiteralAliases);
            BTreeSet::new()
        }
    }
}

/// Connect stores strings: numbers and booleans become their JSON text; null, objects and
/// arrays are rejected.
fn stringify_config(raw: &Map<String, Value>, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    for (key, value) in raw {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null | Value::Array(_) | Value::Object(_) => {
                problems.push(Problem::BadValue {
                    key: key.clone(),
                    kind: type_name(value),
                });
                continue;
            }
        };
        config.insert(key.clone(), text);
    }
    config
}

/// Names Connect cannot take or that break its REST paths.
pub(crate) fn name_problem(name: &str) -> Option<Problem> {
    let why = if name.trim().is_empty() {
        return Some(Problem::EmptyName);
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else if name.contains('/') || name.contains('\\') {
        "it contains a slash, which breaks the REST API's paths"
    } else if name.trim() != name {
        "it has leading or trailing whitespace, which Connect trims"
    } else if name.len() > 249 {
        "it is longer than 249 bytes"
    } else {
        return None;
    };
    Some(Problem::InvalidName {
        name: name.escape_debug().to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_connect_cannot_take() {
        assert!(name_problem("ok-name.1").is_none());
        for bad in ["a/b", "a\nb", " a", "", "  "] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
