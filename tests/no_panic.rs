//! Property tests: no input panics the properties parser, the YAML/ConfigMap reader or the
//! verdict pipeline (renderer included), and every connector gets a definite verdict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use connect_gate::pipeline::check::plugins::Catalog;
use connect_gate::pipeline::check::verdict::Verdict;
use connect_gate::pipeline::judgement::{Pipeline, PluginCheck};
use connect_gate::pipeline::parse::manifest::{ConnectorConfigMap, Origin, Target, parse_yaml};
use connect_gate::pipeline::render::inputs::TemplateInputs;
use connect_gate::pipeline::render::sandbox::Renderer;
use connect_gate::pipeline::render::secrets::Secret;
use proptest::prelude::*;

fn pipeline() -> Pipeline {
    Pipeline::new(Renderer::new(PathBuf::from(env!("CARGO_BIN_EXE_connect-gate"))))
}

fn inputs() -> TemplateInputs {
    TemplateInputs {
        vars: BTreeMap::from([
            ("URL".into(), Secret::new("https://x")),
            ("USER".into(), Secret::new("u")),
        ]),
        env: BTreeMap::from([("PW".into(), Secret::new("pw-value"))]),
        env_allow: None,
        ..TemplateInputs::default()
    }
}

fn judge(templates: Vec<String>, enabled: bool) -> Vec<Verdict> {
    let cm = ConnectorConfigMap {
        origin: Origin {
            namespace: Some("ns".into()),
            name: "cm".into(),
            file: None,
        },
        enabled,
        destination: Target::Local,
        data: templates
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("k{i}"), t))
            .collect(),
        binary_keys: vec![],
    };
    let catalog = Catalog::from_json(br#"[{"class":"a.b.FileStreamSinkConnector","type":"sink"}]"#).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(pipeline().judge(&[cm], &inputs(), PluginCheck::Catalog(&catalog)))
}

fn definite(verdicts: &[Verdict]) -> Result<(), TestCaseError> {
    for v in verdicts {
        // Accepted and enabled means there is a connector to apply; rejected means a reason.
        let ok = if v.accepted() {
            v.connector.is_some() || v.desired == connect_gate::pipeline::check::verdict::Desired::Absent
        } else {
            !v.problems.is_empty()
        };
        prop_assert!(ok, "{v:?}");
        for message in v.messages() {
            prop_assert!(
                !message.contains("pw-value") && !message.contains("https://x"),
                "{message}"
            );
        }
    }
    Ok(())
}

/// Arbitrary JSON, as a template (a JSON literal is a jq program).
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z.\\-/ ]{0,8}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("FileStreamSink")),
    ];
    leaf.prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("config".to_string()),
                    Just("connector.class".to_string()),
                    Just("state".to_string()),
                    "[a-z.]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn properties_parser_never_panics(text in any::<String>()) {
        let _ = connect_gate::pipeline::parse::properties::parse(&text);
    }

    #[test]
    fn properties_round_trip(entries in prop::collection::btree_map("[a-z][a-z0-9.\\-]{0,10}", "[!-~][ -~]{0,20}", 0..6)) {
        let text: String = entries.iter().map(|(k, v)| format!("{k}={}\n", v.replace('\\', "\\\\"))).collect();
        let parsed: BTreeMap<String, String> = connect_gate::pipeline::parse::properties::parse(&text).into_iter().collect();
        prop_assert_eq!(parsed, entries);
    }

    #[test]
    fn yaml_reader_never_panics(text in any::<String>()) {
        let _ = parse_yaml(&text, Path::new("fuzz.yaml"));
    }

    #[test]
    fn yaml_reader_never_panics_on_yamlish_text(text in "(apiVersion: v1\n|kind: ConfigMap\n|kind: List\n|items:\n|- |metadata:\n|  name: x\n|  labels: \\{destination: connect\\}\n|data:\n|  k: [\\[\\]{}:\"'|>-]{0,3}\n|binaryData: \\{b: AA==\\}\n|---\n|[ \\-:\\[\\]{}a-z\"']{0,6}\n){0,14}") {
        let _ = parse_yaml(&text, Path::new("fuzz.yaml"));
    }
}

proptest! {
    // Each case starts sandboxed renders; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pipeline_gives_every_random_template_a_verdict(
        templates in prop::collection::vec("[ -~\n]{0,40}|(\\{|\\}|\\[|\\]|\\(|\\)|\"|\\$URL|\\$NOPE|env\\.PW|env\\.X|//|\\||,|:|\\.|name|config|connector\\.class|FileStreamSink|1|null| ){0,24}", 1..4),
        enabled in any::<bool>(),
    ) {
        definite(&judge(templates, enabled))?;
    }

    #[test]
    fn pipeline_gives_every_json_value_a_verdict(values in prop::collection::vec(json(), 1..4)) {
        definite(&judge(values.iter().map(|v| v.to_string()).collect(), true))?;
    }
}
