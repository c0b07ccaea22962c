//! What the pipeline says about one data key: the [`Verdict`], the rendered [`Connector`] and
//! every [`Problem`] a template can have. Types only, below the pipeline ([`super::judgement`])
//! and duplicate settling ([`super::duplicates`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::operations::{Offsets, OperationProblem, Restart};
use super::problem_kinds::{ProblemKind, Rule};
use super::references::ReferenceProblem;
use super::secrets_as::SecretsAsProblem;
use crate::pipeline::parse::manifest::{Origin, Target};
use crate::pipeline::render::evaluation::Pos;
use crate::pipeline::render::sandbox::SandboxError;

/// The state a connector is declared to be in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Running,
    Paused,
    Stopped,
}

/// A rendered connector, exactly as it would be sent to Connect: every config value a string,
/// `config.name` equal to `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Connector {
    pub name: String,
    pub config: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Day-2 operations, each acted on once per token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<Offsets>,
    /// Texts to mask in whatever the worker says about this connector: the config values, and
    /// keys, that differ in the placeholder render (they depend on variable or env values), and
    /// the values the template reads. A second line of defence: messages are built from the
    /// placeholder render.
    #[serde(skip)]
    pub secrets: Vec<String>,
    /// Provider aliases whose `${alias:...}` text is literal (Camel's `${date:now:...}`), as
    /// the declaration lists them: not denied as unknown.
    #[serde(rename = "literalAliases", skip_serializing_if = "BTreeSet::is_empty")]
    pub literal_aliases: BTreeSet<String>,
    /// The files the config's references read (references mode): a change to one restarts the
    /// connector, since the worker resolves them only when it starts it.
    #[serde(skip)]
    pub referenced_files: BTreeSet<PathBuf>,
    /// References were asked for, but its destination (Confluent Cloud) has no config
    /// providers: its inputs are sent as values, which its status says.
    #[serde(skip)]
    pub values_for_lack_of_providers: bool,
}

/// Why a connector is rejected. Displayed after its location; every text comes from the
/// placeholder render or holds no value.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("template does not parse at {pos}: expected {expected}, found `{found}`")]
    Syntax { expected: String, found: String, pos: Pos },
    #[error(
        "undefined variable ${name} at {pos}; variables available: {}",
        list_or_none(available)
    )]
    UndefinedVar {
        name: String,
        pos: Pos,
        available: Vec<String>,
    },
    #[error("variable ${name} at {pos} cannot be used: {reason}")]
    UnusableVar { name: String, pos: Pos, reason: String },
    #[error("unknown {kind} `{name}` at {pos}")]
    UndefinedFilter { kind: String, name: String, pos: Pos },
    /// A filter whose value changes from one render to the next (`now`): left out of the
    /// sandbox's definitions.
    #[error("`{name}` at {pos} {why}; a connector config must render the same each time ({instead})")]
    Unstable {
        name: String,
        pos: Pos,
        why: &'static str,
        instead: &'static str,
    },
    #[error("env.{name} is not set{}", used_by(keys))]
    EnvUnset { name: String, keys: Vec<String> },
    #[error("env.{name} is not available to templates ({reason}){}", used_by(keys))]
    EnvHidden {
        name: String,
        reason: String,
        keys: Vec<String>,
    },
    #[error("template failed: {0}")]
    Runtime(String),
    #[error("template must produce exactly one object, it produced {0} outputs")]
    OutputCount(usize),
    #[error("template output is larger than 1 MiB")]
    TooLarge,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the data value is empty")]
    EmptyTemplate,
    #[error("binaryData cannot hold a connector template; put it under data")]
    BinaryData,
    #[error(
        "the connector name depends on variable or env values; a name is shown in annotations, Events and logs, so write it out in the template"
    )]
    NameFromInputs,
    #[error("template must produce an object {{\"name\": ..., \"config\": {{...}}}}, it produced {0}")]
    NotObject(&'static str),
    #[error(
        "unexpected top-level key `{0}` (a template produces name, config and optionally state, restart, offsets and literalAliases)"
    )]
    UnknownKey(String),
    #[error("`name` is missing")]
    MissingName,
    #[error("`name` must be a string, it is {0}")]
    NameNotString(&'static str),
    #[error("`name` is empty")]
    EmptyName,
    #[error("connector name {name:?} cannot be used by Connect: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("`config` is missing or not an object")]
    MissingConfig,
    #[error("config.name {config_name:?} differs from name {name:?}")]
    NameMismatch { name: String, config_name: String },
    #[error("config has no `connector.class`")]
    MissingClass,
    #[error("config key `{key}` is {kind}; Connect configs are strings")]
    BadValue { key: String, kind: &'static str },
    #[error("`state` must be \"running\", \"paused\" or \"stopped\"")]
    BadState,
    #[error("connector name {} is also declared by {other}", quoted_or_withheld(name))]
    Duplicate { name: Option<String>, other: String },
    #[error(
        "connector.class {class:?} is not installed on the worker; closest installed: {}",
        list_or_none(closest)
    )]
    UnknownClass { class: String, closest: Vec<String> },
    #[error(
        "{0} with the real variable and env values; the details are withheld because they depend on those values, and with placeholders for them the template renders differently"
    )]
    Withheld(&'static str),
    #[error("{0} (with placeholders for the variable and env values; the real message differs and is withheld)")]
    Differs(Box<Problem>),
    /// The ConfigMap's destination cannot be used; the text names labels and destinations only.
    #[error("{0}")]
    Destination(String),
    #[error("`state: stopped` is not supported by its destination {0}; use paused")]
    StopUnsupported(String),
    #[error(transparent)]
    Operation(#[from] OperationProblem),
    #[error("`literalAliases` must be an array of provider alias names")]
    LiteralAliases,
    #[error(transparent)]
    Reference(#[from] ReferenceProblem),
    #[error(transparent)]
    SecretsAs(#[from] SecretsAsProblem),
}

impl Problem {
    pub fn kind(&self) -> ProblemKind {
        let at = |rule, pos: &Pos| ProblemKind {
            rule,
            pos: Some(pos.clone()),
        };
        let rule = match self {
            Problem::Syntax { pos, .. } => return at(Rule::TemplateSyntax, pos),
            Problem::UndefinedVar { pos, .. } | Problem::UnusableVar { pos, .. } => {
                return at(Rule::UndefinedVariable, pos);
            }
            Problem::UndefinedFilter { pos, .. } => return at(Rule::UndefinedFilter, pos),
            Problem::Unstable { pos, .. } => return at(Rule::Unstable, pos),
            // The placeholder render's problem is what is shown, at its position.
            Problem::Differs(shown) => return shown.kind(),
            Problem::EnvUnset { .. } | Problem::EnvHidden { .. } => Rule::EnvUnavailable,
            Problem::Runtime(_) => Rule::TemplateFailed,
            Problem::OutputCount(_) | Problem::TooLarge => Rule::TemplateOutput,
            Problem::Sandbox(_) => Rule::TemplateLimits,
            Problem::EmptyTemplate => Rule::EmptyValue,
            Problem::BinaryData => Rule::BinaryData,
            Problem::NameFromInputs => Rule::NameFromInputs,
            Problem::NotObject(_) | Problem::UnknownKey(_) | Problem::MissingConfig => Rule::ConnectorShape,
            Problem::MissingName
            | Problem::NameNotString(_)
            | Problem::EmptyName
            | Problem::InvalidName { .. }
            | Problem::NameMismatch { .. } => Rule::ConnectorName,
            Problem::MissingClass => Rule::MissingClass,
            Problem::BadValue { .. } => Rule::ConfigValue,
            Problem::BadState | Problem::StopUnsupported(_) => Rule::State,
            Problem::Duplicate { .. } => Rule::Duplicate,
            Problem::UnknownClass { .. } => Rule::UnknownClass,
            Problem::Withheld(_) => Rule::Withheld,
            Problem::Destination(_) => Rule::Destination,
            Problem::Operation(_) => Rule::Operation,
            Problem::LiteralAliases | Problem::Reference(_) => Rule::Reference,
            Problem::SecretsAs(_) => Rule::SecretsAsReferences,
        };
        ProblemKind { rule, pos: None }
    }

    /// What the problem is, without the values its text quotes; `None` when its text holds no
    /// value (it comes from the template's code, names and types only).
    pub(crate) fn without_values(&self) -> Option<&'static str> {
        Some(match self {
            Problem::Runtime(_) => "the template fails",
            Problem::OutputCount(_) => "the template does not produce exactly one output",
            Problem::UnknownKey(_) => "the template produces an unexpected top-level key",
            Problem::InvalidName { .. } => "the connector name cannot be used by Connect",
            Problem::NameMismatch { .. } => "config.name differs from name",
            Problem::BadValue { .. } => "a config value is null, an array or an object",
            Problem::UnknownClass { .. } => "connector.class is not installed on the worker",
            Problem::Duplicate { .. } => "the connector name is declared more than once",
            Problem::Operation(_) => "`restart` or `offsets` cannot be used as declared",
            // Env problems name their keys from the placeholder render already.
            Problem::EnvUnset { .. }
            | Problem::EnvHidden { .. }
            | Problem::Syntax { .. }
            | Problem::UndefinedVar { .. }
            | Problem::UnusableVar { .. }
            | Problem::UndefinedFilter { .. }
            | Problem::Unstable { .. }
            | Problem::TooLarge
            | Problem::Sandbox(_)
            | Problem::EmptyTemplate
            | Problem::BinaryData
            | Problem::NameFromInputs
            | Problem::NotObject(_)
            | Problem::MissingName
            | Problem::NameNotString(_)
            | Problem::EmptyName
            | Problem::MissingClass
            | Problem::MissingConfig
            | Problem::BadState
            | Problem::Withheld(_)
            | Problem::Destination(_)
            | Problem::StopUnsupported(_)
            | Problem::Differs(_)
            | Problem::LiteralAliases
            | Problem::SecretsAs(_) => return None,
            Problem::Reference(_) => "a config-provider reference would not resolve on the worker",
        })
    }
}

fn quoted_or_withheld(name: &Option<String>) -> String {
    match name {
        Some(name) => format!("{name:?}"),
        None => "(withheld: it depends on variable or env values)".into(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn used_by(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!(" (used by {})", keys.join(", "))
    }
}

/// Whether the ConfigMap declares that the connector must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Present,
    Absent,
}

/// The judgement of one data key.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub origin: Origin,
    pub key: String,
    pub desired: Desired,
    /// The connector name, when the template got far enough to yield one: what is applied or
    /// deleted. Never shown, as it may come from a variable or env value; `None` for a rejected
    /// connector whose name depends on them, since nothing is applied under it.
    #[serde(skip)]
    pub name: Option<String>,
    /// The name as the placeholder render yields it: what messages show.
    #[serde(rename = "name")]
    pub shown_name: Option<String>,
    /// Present when accepted with `desired: present`.
    #[serde(skip)]
    pub connector: Option<Connector>,
    /// `connector` as the placeholder render yields it, when that yields one: what `render`
    /// prints without `--reveal`.
    #[serde(skip)]
    pub shown: Option<Connector>,
    /// Rejection causes, built from the placeholder render. Empty means accepted.
    pub problems: Vec<String>,
    /// Per problem, in order: its kind and template position, for annotations.
    #[serde(skip)]
    pub kinds: Vec<ProblemKind>,
    pub warnings: Vec<String>,
    /// Where its connector runs, as the ConfigMap's labels say.
    pub destination: Target,
    /// Rejected (at least) because `connector.class` is not in the plugin list used.
    #[serde(skip)]
    pub unknown_class: bool,
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }

    /// Where this connector is declared, for messages.
    pub fn location(&self) -> String {
        let mut s = format!("{}, key {}", self.origin, self.key);
        if let Some(name) = &self.shown_name {
            s.push_str(&format!(", connector {name}"));
        }
        s
    }

    /// One line per problem: location and cause.
    pub fn messages(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|p| format!("{}: {p}", self.location()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_errors_keep_their_position_through_differs() {
        let pos = Pos { line: 2, column: 7 };
        let syntax = Problem::Syntax {
            expected: "term".into(),
            found: "}".into(),
            pos: pos.clone(),
        };
        assert_eq!(
            syntax.kind(),
            ProblemKind {
                rule: Rule::TemplateSyntax,
                pos: Some(pos.clone())
            }
        );
        assert_eq!(Problem::Differs(Box::new(syntax)).kind().pos, Some(pos));
        assert_eq!(
            Problem::MissingClass.kind(),
            ProblemKind {
                rule: Rule::MissingClass,
                pos: None
            }
        );
    }
}
