//! How long a verdict takes: the work the webhook does per admission request without
//! `--validate-with-worker` and without the verdict cache (render in a warm sandbox + checks on
//! the cached plugin list). A new template text each iteration (the connector's name changes)
//! unless said otherwise, so every iteration compiles.
//!   cargo bench --bench admission
//! Prints a markdown table; BENCHMARKS.md keeps the results from this machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use connect_gate::pipeline::check::plugins::Catalog;
use connect_gate::pipeline::judgement::{Pipeline, PluginCheck};
use connect_gate::pipeline::parse::manifest::{ConnectorConfigMap, parse_yaml};
use connect_gate::pipeline::render::inputs::TemplateInputs;
use connect_gate::pipeline::render::sandbox::Renderer;
use connect_gate::pipeline::render::secrets::Secret;

const ITERATIONS: usize = 1000;

fn main() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/connectors/inventory-jdbc-source.yaml"
    );
    let text = std::fs::read_to_string(fixture).expect("the JDBC source fixture");
    let one = parse_yaml(&text, &PathBuf::from(fixture)).unwrap();
    let template = one[0].data.values().next().unwrap().clone();
    // `n` connectors in one ConfigMap, named after the iteration so that each is a new text.
    let connectors = |n: usize, iteration: usize| {
        let mut cm = one[0].clone();
        cm.data = (0..n)
            .map(|i| {
                let name = format!("jdbc-{iteration}-{i}");
                (format!("c{i}.json"), template.replace("jdbc-inventory", &name))
            })
            .collect();
        vec![cm]
    };

    let inputs = TemplateInputs {
        vars: [
            "SCHEMA_REGISTRY_URL",
            "BASIC_AUTH_CREDENTIALS_SOURCE",
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        ]
        .into_iter()
        .map(|k| (k.to_string(), Secret::new("value-of-".to_string() + k)))
        .collect(),
        env: BTreeMap::from([
            ("MYSQL_CONNECTION_USER".into(), Secret::new("u")),
            ("MYSQL_CONNECTION_PASSWORD".into(), Secret::new("p")),
        ]),
        env_allow: None,
        ..TemplateInputs::default()
    };
    let catalog =
        Catalog::from_json(br#"[{"class":"io.confluent.connect.jdbc.JdbcSourceConnector","type":"source"}]"#).unwrap();
    let pipeline = Pipeline::new(Renderer::new(PathBuf::from(env!("CARGO_BIN_EXE_connect-gate"))));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    println!("| case | iterations | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    type Case<'a> = (&'a str, &'a dyn Fn(usize) -> Vec<ConnectorConfigMap>);
    let cases: [Case; 3] = [
        ("1 connector (JDBC source fixture), a new text each time", &|i| {
            connectors(1, i)
        }),
        (
            "1 connector, the same text each time (compiled once per sandbox)",
            &|_| vec![one[0].clone()],
        ),
        ("10 connectors in one ConfigMap, new texts", &|i| connectors(10, i)),
    ];
    for (name, cms) in cases {
        let mut times: Vec<Duration> = (0..ITERATIONS)
            .map(|i| {
                let cms = cms(i);
                let started = Instant::now();
                let verdicts = runtime.block_on(pipeline.judge(&cms, &inputs, PluginCheck::Catalog(&catalog)));
                assert!(verdicts.iter().all(|v| v.accepted()), "{verdicts:?}");
                started.elapsed()
            })
            .collect();
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "| {name} | {ITERATIONS} | {:.1?} | {:.1?} | {:.1?} | {:.1?} |",
            at(0.5),
            at(0.9),
            at(0.99),
            times[times.len() - 1]
        );
    }
}
