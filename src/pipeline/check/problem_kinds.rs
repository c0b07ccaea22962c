//! What each rejection is apart from its text: the rule an annotation names (`check --output
//! github|sarif`), the template position it points at, and what it is without the values its
//! text may quote. Verdicts keep problems as texts built from the placeholder render; this is what
//! they keep beside them, so annotations can point at a line without parsing those texts
//! (`Problem::kind` in `verdict.rs` maps each problem to its kind).

use crate::pipeline::render::evaluation::Pos;

/// A kind of finding, as annotations name it: one per kind of rejection, and one for warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    TemplateSyntax,
    UndefinedVariable,
    UndefinedFilter,
    EnvUnavailable,
    TemplateFailed,
    TemplateOutput,
    TemplateLimits,
    EmptyValue,
    BinaryData,
    NameFromInputs,
    ConnectorShape,
    ConnectorName,
    MissingClass,
    ConfigValue,
    State,
    Duplicate,
    UnknownClass,
    Withheld,
    Destination,
    Operation,
    Reference,
    SecretsAsReferences,
    Unstable,
    Warning,
}

impl Rule {
    /// Every rule, in the order a SARIF log lists them.
    pub const ALL: [Rule; 24] = [
        Rule::TemplateSyntax,
        Rule::UndefinedVariable,
        Rule::UndefinedFilter,
        Rule::EnvUnavailable,
        Rule::TemplateFailed,
        Rule::TemplateOutput,
        Rule::TemplateLimits,
        Rule::EmptyValue,
        Rule::BinaryData,
        Rule::NameFromInputs,
        Rule::ConnectorShape,
        Rule::ConnectorName,
        Rule::MissingClass,
        Rule::ConfigValue,
        Rule::State,
        Rule::Duplicate,
        Rule::UnknownClass,
        Rule::Withheld,
        Rule::Destination,
        Rule::Operation,
        Rule::Reference,
        Rule::SecretsAsReferences,
        Rule::Unstable,
        Rule::Warning,
    ];

    /// A stable identifier: what CI annotations and SARIF results name.
    pub fn id(self) -> &'static str {
        match self {
            Rule::TemplateSyntax => "template-syntax",
            Rule::UndefinedVariable => "undefined-variable",
            Rule::UndefinedFilter => "undefined-filter",
            Rule::EnvUnavailable => "env-unavailable",
            Rule::TemplateFailed => "template-failed",
            Rule::TemplateOutput => "template-output",
            Rule::TemplateLimits => "template-limits",
            Rule::EmptyValue => "empty-value",
            Rule::BinaryData => "binary-data",
            Rule::NameFromInputs => "name-from-inputs",
            Rule::ConnectorShape => "connector-shape",
            Rule::ConnectorName => "connector-name",
            Rule::MissingClass => "missing-connector-class",
            Rule::ConfigValue => "config-value",
            Rule::State => "state",
            Rule::Duplicate => "duplicate-name",
            Rule::UnknownClass => "unknown-connector-class",
            Rule::Withheld => "withheld",
            Rule::Destination => "destination",
            Rule::Operation => "day2-operation",
            Rule::Reference => "config-provider-reference",
            Rule::SecretsAsReferences => "secrets-as-references",
            Rule::Unstable => "nondeterministic-filter",
            Rule::Warning => "warning",
        }
    }

    /// One sentence on what the rule rejects.
    pub fn description(self) -> &'static str {
        match self {
            Rule::TemplateSyntax => "The template does not parse as jq.",
            Rule::UndefinedVariable => "The template uses a $VARIABLE that is not defined or cannot be used.",
            Rule::UndefinedFilter => "The template uses a filter or function jq does not know.",
            Rule::EnvUnavailable => "An env value the template reads is unset or hidden and reaches the output.",
            Rule::TemplateFailed => "The template fails when it runs.",
            Rule::TemplateOutput => "The template does not produce exactly one value of at most 1 MiB.",
            Rule::TemplateLimits => "The template runs too long, uses too much memory or nests too deeply.",
            Rule::EmptyValue => "The data value is empty.",
            Rule::BinaryData => "A binaryData entry cannot hold a connector template.",
            Rule::NameFromInputs => "The connector name depends on variable or env values.",
            Rule::ConnectorShape => "The result is not an object of name, config and the optional keys.",
            Rule::ConnectorName => "The connector name is missing, empty, unusable or differs from config.name.",
            Rule::MissingClass => "The config has no connector.class.",
            Rule::ConfigValue => "A config value is null, an array or an object.",
            Rule::State => "The state is not one the destination can take.",
            Rule::Duplicate => "The connector name is declared more than once.",
            Rule::UnknownClass => "The connector.class is not installed on the destination's worker.",
            Rule::Withheld => "The template fails with the real values; the details depend on them.",
            Rule::Destination => "The ConfigMap's destination cannot be used.",
            Rule::Operation => "A restart or offsets operation cannot be done as declared.",
            Rule::Reference => "A config-provider reference would not resolve on the worker.",
            Rule::SecretsAsReferences => "An input cannot be sent to Connect as a config-provider reference.",
            Rule::Unstable => {
                "The template uses a filter whose value changes from one render to the next (now, the local time zone)."
            }
            Rule::Warning => "The connector is accepted with a warning.",
        }
    }

    pub fn is_warning(self) -> bool {
        self == Rule::Warning
    }
}

/// A problem's kind and, for template errors that have one, its position in the template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProblemKind {
    pub rule: Rule,
    pub pos: Option<Pos>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_distinct_and_all_listed() {
        let ids: std::collections::BTreeSet<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
        assert_eq!(ids.len(), Rule::ALL.len());
    }
}
