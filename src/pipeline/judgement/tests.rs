//! The verdict pipeline's rules: what is rejected, and what is never shown.

use super::*;

#[test]
fn finds_env_references() {
    let code = r#"{"a": env.A, "b": $ENV.B, "c": env["C"], "d": $ENV [ "D" ], "e": "env.NOT"}"#;
    let found: Vec<_> = referenced_env(code).into_iter().collect();
    assert_eq!(found, vec!["A", "B", "C", "D", "NOT"]);
    assert!(!reads_whole_env(code));
    for whole in ["$ENV | tostring", "env", "[env[]]", "{a: 1} + $ENV", "env | .A"] {
        assert!(reads_whole_env(whole), "{whole}");
    }
}

#[test]
fn shown_problems_come_from_the_placeholder_render_or_hold_no_value() {
    let runtime = |m: &str| Problem::Runtime(m.into());
    let shown = shown_problems(
        vec![runtime("cannot use \"hunter2\""), Problem::MissingClass],
        vec![runtime("cannot use \"⟨$PW⟩\""), Problem::MissingClass],
    );
    let texts: Vec<String> = shown.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "template failed: cannot use \"⟨$PW⟩\"",
            "config has no `connector.class`"
        ]
    );
    // The placeholder render succeeds or fails otherwise: withheld, or shown as is when the
    // text holds no value.
    let shown = shown_problems(vec![runtime("hunter2"), Problem::MissingClass], vec![]);
    assert!(matches!(shown[..], [Problem::Withheld(_), Problem::MissingClass]));
    // Same kind, but neither the real text nor a placeholder: said to differ.
    let shown = shown_problems(vec![Problem::OutputCount(7)], vec![Problem::OutputCount(5)]);
    assert_eq!(
        shown[0].to_string(),
        "template must produce exactly one object, it produced 5 outputs (with placeholders for the variable and env values; the real message differs and is withheld)"
    );
}

#[test]
fn a_filter_that_renders_differently_each_time_is_rejected_at_its_position_with_why() {
    use crate::pipeline::check::problem_kinds::Rule;
    use crate::pipeline::render::evaluation::{Pos, Undefined};
    let pos = Pos { line: 2, column: 14 };
    let undefined = |name: &str| {
        Outcome::Undefined(vec![Undefined {
            kind: "filter".into(),
            name: name.into(),
            pos: pos.clone(),
        }])
    };
    let problems = outcome_value(undefined("now"), &TemplateInputs::default()).unwrap_err();
    assert_eq!(
        problems[0].to_string(),
        "`now` at template line 2, column 14 gives a different value on every render; a connector config must render the same each time (write the time out, or read it from a variable)"
    );
    assert_eq!(problems[0].kind().rule, Rule::Unstable);
    assert_eq!(problems[0].kind().pos, Some(pos.clone()));
    assert_eq!(problems[0].without_values(), None);
    let problems = outcome_value(undefined("localtime"), &TemplateInputs::default()).unwrap_err();
    assert_eq!(
        problems[0].to_string(),
        "`localtime` at template line 2, column 14 depends on the time zone of the machine that renders it; a connector config must render the same each time (use gmtime, which is UTC)"
    );
    // Other unknown filters stay unknown.
    let problems = outcome_value(undefined("input"), &TemplateInputs::default()).unwrap_err();
    assert_eq!(
        problems[0].to_string(),
        "unknown filter `input` at template line 2, column 14"
    );
}

#[test]
fn an_env_var_read_where_none_is_given_is_hidden_naming_both_flags() {
    let inputs = TemplateInputs {
        env_closed: true,
        ..TemplateInputs::default()
    };
    let reason = inputs.env_hidden_reason("DB_PASSWORD").unwrap();
    assert!(
        reason.contains("--env-file") && reason.contains("--template-env-allow"),
        "{reason}"
    );
    assert_eq!(TemplateInputs::default().env_hidden_reason("DB_PASSWORD"), None);
}
