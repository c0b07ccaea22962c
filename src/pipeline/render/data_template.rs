//! Templates that are JSON with holes, evaluated without jq's machinery.
//!
//! Almost every connector template is an object of string literals, `$VAR`s and `env.X`
//! (streaming-ops' all are). jaq builds such an object one key at a time, cloning it at each
//! step, and compiling the template costs as much again; together they were most of a render.
//! A template that jaq's own parser reads as nothing but objects with literal keys, arrays,
//! strings (interpolating such values), `true`/`false`/`null`, bound `$VAR`s, `$ENV.X` and
//! `env.X` is evaluated here directly; anything else (numbers, operators, calls, definitions,
//! unbound variables, several outputs) is left to jaq, which then also reports every error.
//! A property test in `template.rs` checks that jaq gives the same output; `tests/jq_oracle.rs`
//! that jq 1.6 does.

use std::collections::BTreeMap;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::path::{Opt, Part};
use serde_json::{Map, Value};

/// A template in the form evaluated here.
#[derive(Debug, PartialEq)]
pub enum DataTemplate {
    Object(Vec<(String, DataTemplate)>),
    Array(Vec<DataTemplate>),
    Text(Vec<TextPart>),
    Literal(Value),
    Var(String),
    Env(String),
    AllEnv,
}

#[derive(Debug, PartialEq)]
pub enum TextPart {
    Literal(String),
    Interpolated(DataTemplate),
}

impl DataTemplate {
    /// `code` in this form, or `None` when jaq must evaluate it. `vars` are the variables bound
    /// (without `$`).
    pub fn parse(code: &str, vars: &[String]) -> Option<Self> {
        let term = jaq_core::load::parse(code, |p| p.term())?;
        from_term(&term, vars)
    }

    /// The template's one output for these bindings.
    pub fn eval(&self, vars: &BTreeMap<String, String>, env: &BTreeMap<String, String>) -> Value {
        match self {
            Self::Object(entries) => {
                let mut object = Map::new();
                for (key, value) in entries {
                    object.insert(key.clone(), value.eval(vars, env));
                }
                Value::Object(object)
            }
            Self::Array(items) => Value::Array(items.iter().map(|i| i.eval(vars, env)).collect()),
            Self::Text(parts) => {
                let mut text = String::new();
                for part in parts {
                    match part {
                        TextPart::Literal(s) => text.push_str(s),
                        TextPart::Interpolated(t) => match t.eval(vars, env) {
                            Value::String(s) => text.push_str(&s),
                            // Only strings and null can reach here (see `interpolable`).
                            other => text.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(text)
            }
            Self::Literal(value) => value.clone(),
            Self::Var(name) => vars.get(name).map_or(Value::Null, |v| Value::String(v.clone())),
            Self::Env(name) => env.get(name).map_or(Value::Null, |v| Value::String(v.clone())),
            Self::AllEnv => Value::Object(env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
        }
    }

    /// Whether jq would interpolate this as its text: strings as they are, null as `null`.
    /// Objects and arrays print as JSON, whose spacing and escapes are jq's own: left to jaq.
    fn interpolable(&self) -> bool {
        matches!(
            self,
            Self::Text(_) | Self::Var(_) | Self::Env(_) | Self::Literal(Value::Null)
        )
    }
}

fn from_term(term: &Term<&str>, vars: &[String]) -> Option<DataTemplate> {
    match term {
        Term::Obj(entries) => entries
            .iter()
            .map(|(key, value)| Some((literal_text(key)?, from_term(value.as_ref()?, vars)?)))
            .collect::<Option<_>>()
            .map(DataTemplate::Object),
        Term::Arr(None) => Some(DataTemplate::Array(vec![])),
        Term::Arr(Some(items)) => {
            let mut out = Vec::new();
            comma_items(items, &mut out);
            out.into_iter()
                .map(|item| from_term(item, vars))
                .collect::<Option<_>>()
                .map(DataTemplate::Array)
        }
        Term::Str(None, parts) => parts
            .iter()
            .map(|part| match part {
                StrPart::Str(s) => Some(TextPart::Literal(s.to_string())),
                StrPart::Char(c) => Some(TextPart::Literal(c.to_string())),
                StrPart::Term(t) => from_term(t, vars)
                    .filter(DataTemplate::interpolable)
                    .map(TextPart::Interpolated),
            })
            .collect::<Option<_>>()
            .map(DataTemplate::Text),
        Term::Call(name, args) if args.is_empty() => match *name {
            "true" => Some(DataTemplate::Literal(Value::Bool(true))),
            "false" => Some(DataTemplate::Literal(Value::Bool(false))),
            "null" => Some(DataTemplate::Literal(Value::Null)),
            _ => None,
        },
        Term::Var("$ENV") => Some(DataTemplate::AllEnv),
        Term::Var(name) => {
            let name = name.strip_prefix('$')?;
            vars.iter()
                .any(|v| v == name)
                .then(|| DataTemplate::Var(name.to_string()))
        }
        // `env.X`, `$ENV.X` (also with `?`, which cannot fail on an object).
        Term::Path(head, path) => {
            let [(Part::Index(key), Opt::Essential | Opt::Optional)] = path.0.as_slice() else {
                return None;
            };
            let from_env = matches!(head.as_ref(), Term::Call("env", args) if args.is_empty())
                || matches!(head.as_ref(), Term::Var("$ENV"));
            from_env.then(|| literal_text(key)).flatten().map(DataTemplate::Env)
        }
        _ => None,
    }
}

/// The items of `a, b, c`.
fn comma_items<'t, 's>(term: &'t Term<&'s str>, out: &mut Vec<&'t Term<&'s str>>) {
    match term {
        Term::BinOp(left, BinaryOp::Comma, right) => {
            comma_items(left, out);
            comma_items(right, out);
        }
        other => out.push(other),
    }
}

/// A string literal without interpolation.
fn literal_text(term: &Term<&str>) -> Option<String> {
    let Term::Str(None, parts) = term else { return None };
    parts
        .iter()
        .map(|part| match part {
            StrPart::Str(s) => Some(s.to_string()),
            StrPart::Char(c) => Some(c.to_string()),
            StrPart::Term(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<String> {
        vec!["A".into()]
    }

    #[test]
    fn connector_templates_take_the_data_path() {
        let code = r#"{"name": "x", config: {"a": $A, "u": env.U, "p": $ENV.P, "s": "pre-\($A)-\(env.NONE)\n",
            "list": [1 == 1, true, null], "t": [true, "x", []]}}"#;
        assert!(DataTemplate::parse(code, &vars()).is_none(), "an operator is jaq's");
        let code = r#"{"name": "x", config: {"a": $A, "u": env.U, "p": $ENV.P?, "s": "pre-\($A)-\(env.NONE)\n",
            "t": [true, "x", [], {}], "a": "again"}}"#;
        let template = DataTemplate::parse(code, &vars()).expect("data");
        let vars = BTreeMap::from([("A".to_string(), "va".to_string())]);
        let env = BTreeMap::from([("U".to_string(), "vu".to_string()), ("P".to_string(), "vp".to_string())]);
        assert_eq!(
            template.eval(&vars, &env),
            serde_json::json!({"name": "x", "config": {"a": "again", "u": "vu", "p": "vp",
                "s": "pre-va-null\n", "t": [true, "x", [], {}]}})
        );
    }

    #[test]
    fn anything_else_is_left_to_jaq() {
        for code in [
            r#"{"a": $UNBOUND}"#,
            r#"{"a": 1}"#,
            r#"{"a": "x" + $A}"#,
            r#"{"a": env.X.Y}"#,
            r#"{($A): "x"}"#,
            r#"{"a"}"#,
            r#"{"a": "\([1])"}"#,
            r#"{"a": @base64 "x"}"#,
            r#"def f: 1; {"a": f}"#,
            r#"{"a": "x"}, {"b": "y"}"#,
            r#"{"a": input}"#,
            r#"{"a": "x""#,
        ] {
            assert!(DataTemplate::parse(code, &vars()).is_none(), "{code}");
        }
    }
}
