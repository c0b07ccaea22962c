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
