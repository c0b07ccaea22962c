//! The verdict cache the webhook and the reconciler share: a dry-run followed by the real
//! apply, or a resync, renders nothing again; new inputs do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use connect_gate::connect::ConnectClient;
use connect_gate::connect::destinations::DestinationsFile;
use connect_gate::connect::registry::Destinations;
use connect_gate::judge::Judge;
use connect_gate::metrics::Metrics;
use connect_gate::pipeline::check::verdict::Verdict;
use connect_gate::pipeline::judgement::Pipeline;
use connect_gate::pipeline::parse::manifest::{ConnectorConfigMap, Origin, Target};
use connect_gate::pipeline::render::inputs::{InputSources, LiveInputs};
use connect_gate::pipeline::render::sandbox::Renderer;

fn configmap(name: &str) -> ConnectorConfigMap {
    let template = |n: &str| {
        format!(
            r#"{{"name": "{n}", "config": {{"connector.class": "FileStreamSink", "topics": "t", "file": $URL, "password": env.PW}}}}"#
        )
    };
    ConnectorConfigMap {
        origin: Origin {
            namespace: Some("ns".into()),
            name: name.into(),
            file: None,
        },
        enabled: true,
        destination: Target::Local,
        data: BTreeMap::from([
            ("a.json".to_string(), template("a")),
            ("b.json".to_string(), template("b")),
        ]),
        binary_keys: vec!["bin".into()],
    }
}

/// The inputs `configmap` reads, in `dir`: `$URL` and env `PW` (from the returned env file).
fn inputs(dir: &Path, password: &str) -> (LiveInputs, PathBuf) {
    std::fs::write(dir.join("url"), "/tmp/out-1").unwrap();
    let env_file = dir.join("env");
    std::fs::write(&env_file, format!("PW={password}\n")).unwrap();
    let inputs = LiveInputs::load(InputSources {
        vars_dirs: vec![dir.to_path_buf()],
        env_file: Some(env_file.clone()),
        env_allow: None,
    })
    .unwrap();
    (inputs, env_file)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What a verdict says and would apply, without where it is declared.
fn substance(v: &Verdict) -> (Vec<String>, Vec<String>, Option<BTreeMap<String, String>>) {
    (
        v.problems.clone(),
        v.warnings.clone(),
        v.connector.as_ref().map(|c| c.config.clone()),
    )
}

#[test]
fn dry_run_then_apply_and_resync_render_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, env_file) = inputs(dir.path(), "first-secret");
    let renderer = Renderer::new(PathBuf::from(env!("CARGO_BIN_EXE_connect-gate")));
    // No worker: the plugin check is skipped with a warning, which is cached too.
    let destinations = Destinations::local(ConnectClient::new("http://127.0.0.1:9"), Metrics::new().0);
    let judge = Judge::new(
        Pipeline::new(renderer.clone()),
        Arc::new(inputs),
        Arc::new(destinations),
    );
    let runtime = runtime();
    runtime.block_on(async {
        let first = judge.judge_admitted(configmap("cm"), None).await;
        let rendered = renderer.requests();
        assert_eq!(rendered, 2, "one request per data key");
        assert!(first.iter().take(2).all(|v| v.accepted()), "{first:?}");
        assert_eq!(first[2].key, "bin");

        // The real apply after the dry-run, the reconciler's pass, a resync: no render.
        let applied = judge.judge_admitted(configmap("cm"), None).await;
        let passed = judge.judge(&[configmap("cm")]).await;
        let resynced = judge.judge(&[configmap("cm")]).await;
        assert_eq!(renderer.requests(), rendered);
        for again in [&applied, &passed, &resynced] {
            assert_eq!(
                again.iter().map(substance).collect::<Vec<_>>(),
                first.iter().map(substance).collect::<Vec<_>>()
            );
        }
        // The same data under another name is judged under that name.
        let other = judge.judge(&[configmap("cm"), configmap("copy")]).await;
        assert_eq!(renderer.requests(), rendered);
        assert_eq!(other[3].origin.name, "copy");
        assert_eq!(other[3].key, "a.json");
        assert!(
            other[0]
                .problems
                .iter()
                .any(|p| p.contains("also declared by ConfigMap ns/copy, key a.json"))
        );

        // Rotated secrets: judged again, with the new value.
        std::fs::write(&env_file, "PW=second-secret\n").unwrap();
        assert!(judge.reload_inputs());
        let rotated = judge.judge(&[configmap("cm")]).await;
        assert_eq!(renderer.requests(), rendered + 2);
        assert_eq!(
            rotated[0].connector.as_ref().unwrap().config["password"],
            "second-secret"
        );
    });
}

/// A worker's `GET /connector-plugins` with these classes, on loopback.
async fn plugin_list(classes: &[&str]) -> String {
    let body = serde_json::to_string(
        &classes
            .iter()
            .map(|c| serde_json::json!({"class": c}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let app = axum::Router::new().route("/connector-plugins", axum::routing::get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[test]
fn a_verdict_is_cached_per_destination_and_never_stands_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = inputs(dir.path(), "secret");
    let runtime = runtime();
    runtime.block_on(async {
        // The local worker has only a source; the destination `second` has the sink.
        let local = plugin_list(&["org.apache.kafka.connect.file.FileStreamSourceConnector"]).await;
        let second = plugin_list(&["org.apache.kafka.connect.file.FileStreamSinkConnector"]).await;
        let file = DestinationsFile::parse(
            &format!("destinations: [{{name: second, url: '{second}'}}]\n"),
            std::path::Path::new("d.yaml"),
        )
        .unwrap();
        let destinations = Destinations::load(ConnectClient::new(&local), &file, Metrics::new().0).unwrap();
        for d in destinations.declared() {
            d.plugins.refresh().await.expect("a plugin list");
        }
        let renderer = Renderer::new(PathBuf::from(env!("CARGO_BIN_EXE_connect-gate")));
        let judge = Judge::new(
            Pipeline::new(renderer.clone()),
            Arc::new(inputs),
            Arc::new(destinations),
        );
        let on_second = ConnectorConfigMap {
            destination: Target::Named("second".into()),
            binary_keys: vec![],
            ..configmap("cm")
        };
        let on_local = ConnectorConfigMap {
            binary_keys: vec![],
            ..configmap("cm")
        };
        let there = judge.judge(std::slice::from_ref(&on_second)).await;
        assert!(there.iter().all(Verdict::accepted), "{there:?}");
        let here = judge.judge(std::slice::from_ref(&on_local)).await;
        assert!(
            here.iter().all(|v| v
                .problems
                .iter()
                .any(|p| p.contains("\"FileStreamSink\" is not installed"))),
            "{here:?}"
        );
        // Both judged once per data key, and both stay cached.
        let rendered = renderer.requests();
        assert_eq!(rendered, 4);
        judge.judge(&[on_second]).await;
        judge.judge(&[on_local]).await;
        assert_eq!(renderer.requests(), rendered);
    });
}

#[test]
fn a_judgement_that_finds_no_plugin_list_fetches_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = inputs(dir.path(), "secret");
    let runtime = runtime();
    runtime.block_on(async {
        // The sidecar started before its worker: nothing fetched yet, and the worker has only a
        // source. The sink is not installed, which only a fetched list can tell.
        let worker = plugin_list(&["org.apache.kafka.connect.file.FileStreamSourceConnector"]).await;
        let destinations = Destinations::local(ConnectClient::new(&worker), Metrics::new().0);
        let renderer = Renderer::new(PathBuf::from(env!("CARGO_BIN_EXE_connect-gate")));
        let judge = Judge::new(Pipeline::new(renderer), Arc::new(inputs), Arc::new(destinations));
        let verdicts = judge.judge(&[configmap("cm")]).await;
        assert!(
            verdicts.iter().take(2).all(|v| v
                .problems
                .iter()
                .any(|p| p.contains("\"FileStreamSink\" is not installed"))),
            "{verdicts:?}"
        );
    });
}
