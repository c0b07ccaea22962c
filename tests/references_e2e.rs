//! Secrets that never reach Kafka Connect in plain text, on the real stack: the stack's worker
//! runs with the file, directory and env config providers (`allowed.paths` set to
//! `$CONNECT_PROVIDER_DIR`'s tree; its properties file is `$CONNECT_WORKER_CONFIG`), and
//! `connect-gate serve --secrets-as references` (a real process) sends template inputs to it as
//! references. Read back with the worker's REST API and with Kafka's own console consumer on the
//! config topic; every broken reference denied through the real webhook on the real
//! kube-apiserver. Every wait is a bounded poll.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::sidecar::*;
use support::webhooks::{assert_denied, dry_run};
use support::{TestEnv, Webhook, eventually};

fn worker_config() -> PathBuf {
    std::env::var_os("CONNECT_WORKER_CONFIG")
        .expect("CONNECT_WORKER_CONFIG (exported by tests/stack/up): the stack worker's properties file")
        .into()
}

/// A directory of this test inside the worker's `allowed.paths`, as a Secret volume mounted in
/// both containers would be.
fn provider_dir(prefix: &str) -> tempfile::TempDir {
    let root = std::env::var_os("CONNECT_PROVIDER_DIR")
        .expect("CONNECT_PROVIDER_DIR (exported by tests/stack/up): a directory inside allowed.paths");
    tempfile::Builder::new().prefix(prefix).tempdir_in(root).unwrap()
}

/// A worker property, from the stack worker's file.
fn worker_property(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(worker_config()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(|v| v.trim().to_string()))
}

/// Writes a file as the kubelet updates a Secret volume: a new file renamed into place.
fn replace(file: &Path, content: &str) {
    let next = file.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, file).unwrap();
}

fn serve_flags() -> Vec<String> {
    vec![
        format!("--worker-config={}", worker_config().display()),
        "--secrets-as=references".to_string(),
    ]
}

/// Every record of `topic`, read from the beginning with Kafka's own console consumer.
fn read_topic(topic: &str) -> String {
    let stack_dir = std::env::var("STACK_DIR").expect("STACK_DIR");
    let stack_env = std::fs::read_to_string(Path::new(&stack_dir).join("stack.env")).unwrap();
    let var = |name: &str| {
        stack_env
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("{name} in stack.env"))
    };
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/lib/*", var("KAFKA_HOME")))
        .arg("org.apache.kafka.tools.consumer.ConsoleConsumer")
        .args(["--bootstrap-server", &var("KAFKA_BOOTSTRAP"), "--topic", topic])
        .args(["--from-beginning", "--timeout-ms", "15000"])
        .args(["--property", "print.key=true"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.is_empty(),
        "nothing read from {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn wait_lines(file: &Path, want: &[&str]) {
    eventually(&format!("{} to hold {want:?}", file.display()), WAIT, || async {
        let got = std::fs::read_to_string(file).unwrap_or_default();
        let got: Vec<&str> = got.lines().collect();
        if got == want { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_connect_only_as_a_reference_it_resolves_and_a_rotation_restarts_the_connector() {
    let env = TestEnv::new("references").await;
    let dir = provider_dir("references-");
    let vars = dir.path().join("vars");
    std::fs::create_dir_all(&vars).unwrap();
    // The inputs, as a Secret volume gives them: the sink's output file comes from one (so the
    // worker's use of the resolved value shows in where the records land), a canary from another.
    let (out_a, out_b) = (dir.path().join("out-a.txt"), dir.path().join("out-b.txt"));
    let canary = format!("canary-{}", env.id);
    std::fs::write(vars.join("out-file"), out_a.display().to_string()).unwrap();
    std::fs::write(vars.join("api-password"), &canary).unwrap();
    let sidecar = Sidecar::start(
        &env,
        dir.path(),
        &env.connect_url,
        "solo",
        &serve_flags().iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // A feed into the topic, made directly on the worker.
    let topic = format!("{}-lines", env.id);
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\n").unwrap();
    create_on_worker(&env.connect_url, &env.connector_name("feed"), &input, &topic).await;

    let name = env.connector_name("sink");
    let template = format!(
        r#"{{"name": "{name}", "config": {{"connector.class": "FileStreamSink", "topics": "{topic}", "file": $OUT_FILE, "api.password": "pw:\($API_PASSWORD)", "tasks.max": 1}}}}"#
    );
    create(&env, &configmap("cm", &[], &[("c.json", template)])).await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    wait_lines(&out_a, &["one"]).await;

    let config = config_at(&env.connect_url, &name).await.unwrap();
    let vars_text = vars.display().to_string();
    assert_eq!(config["file"], format!("${{dir:{vars_text}:out-file}}"));
    assert_eq!(config["api.password"], format!("pw:${{dir:{vars_text}:api-password}}"));
    let topic_text = read_topic(&worker_property("config.storage.topic").unwrap());
    assert!(
        topic_text.contains(&format!("${{dir:{vars_text}:api-password}}")),
        "the config topic holds the reference"
    );
    assert!(!topic_text.contains(&canary), "the config topic holds the secret value");

    // Rotation: the Secret volume's file is replaced; the connector is restarted with its tasks
    // once and takes the new value.
    replace(&vars.join("out-file"), &out_b.display().to_string());
    wait_event(&env, "cm", "RestartedForRotation", &name).await;
    std::fs::write(&input, "one\ntwo\n").unwrap();
    wait_lines(&out_b, &["two"]).await;
    assert_eq!(
        std::fs::read_to_string(&out_a).unwrap().lines().collect::<Vec<_>>(),
        ["one"]
    );
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(
        events(&env, "cm", "RestartedForRotation").await.len(),
        1,
        "one restart per change"
    );
    let restarts = sidecar
        .metric(
            "connect_gate_operations_total",
            &[r#"operation="rotation-restart""#, r#"result="ok""#],
        )
        .await
        .unwrap();
    assert_eq!(restarts, 1.0);
    assert!(
        !sidecar.log().contains(&canary),
        "the sidecar's log holds the secret value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_that_would_not_resolve_is_denied_at_admission_naming_the_cause() {
    let env = TestEnv::new("references-admission").await;
    let dir = provider_dir("references-admission-");
    let vars = dir.path().join("vars");
    std::fs::create_dir_all(&vars).unwrap();
    std::fs::write(vars.join("db.properties"), "user=alice\npassword=hunter2\n").unwrap();
    std::fs::write(vars.join("token"), "t0ken").unwrap();
    let _webhook = Webhook::start_with(&env, dir.path(), &vars, &serve_flags()).await;
    let props = vars.join("db.properties").display().to_string();
    let vars_text = vars.display().to_string();
    let sink = |extra: Value| {
        let mut config = json!({"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/out.txt"});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config
    };
    let cases: Vec<(&str, String, String)> = vec![
        (
            "unknown-alias",
            json!({"name": "unknown-alias", "config": sink(json!({"x": format!("${{secret:{props}:user}}")}))}).to_string(),
            format!("config key `x`: `${{secret:{props}:user}}` names provider alias `secret`, which the worker does not configure (config.providers: dir, env, file), so Kafka Connect would pass it on as literal text; if it is meant as literal text, list \"secret\" in the declaration's \"literalAliases\""),
        ),
        (
            "missing-key",
            json!({"name": "missing-key", "config": sink(json!({"x": format!("${{file:{props}:pass}}")}))}).to_string(),
            format!("config key `x`: `${{file:{props}:pass}}`: {props} has no key `pass`; keys there: password, user"),
        ),
        (
            "missing-file",
            json!({"name": "missing-file", "config": sink(json!({"x": format!("${{file:{vars_text}/nope.properties:user}}")}))}).to_string(),
            format!("config key `x`: `${{file:{vars_text}/nope.properties:user}}`: {vars_text}/nope.properties does not exist; FileConfigProvider would fail the worker's REST call"),
        ),
        (
            "missing-file-in-dir",
            json!({"name": "missing-file-in-dir", "config": sink(json!({"x": format!("${{dir:{vars_text}:tok}}")}))}).to_string(),
            format!("config key `x`: `${{dir:{vars_text}:tok}}`: {vars_text} has no key `tok`; keys there: db.properties, token"),
        ),
        (
            "missing-directory",
            json!({"name": "missing-directory", "config": sink(json!({"x": format!("${{dir:{vars_text}/nodir:token}}")}))}).to_string(),
            format!("config key `x`: `${{dir:{vars_text}/nodir:token}}`: {vars_text}/nodir does not exist, so Kafka Connect would pass the reference on as literal text"),
        ),
        (
            "env-outside-allowlist",
            json!({"name": "env-outside-allowlist", "config": sink(json!({"x": "${env:HOME}"}))}).to_string(),
            format!(
                "config key `x`: `${{env:HOME}}`: `HOME` does not match allowlist.pattern `{}` of provider `env`, so Kafka Connect would pass it on as literal text",
                worker_property("config.providers.env.param.allowlist.pattern").unwrap()
            ),
        ),
        (
            "outside-allowed-paths",
            json!({"name": "outside-allowed-paths", "config": sink(json!({"x": "${dir:/etc:hostname}"}))}).to_string(),
            format!(
                "config key `x`: `${{dir:/etc:hostname}}`: path /etc is outside allowed.paths of provider `dir` ({}), so Kafka Connect would pass it on as literal text",
                worker_property("config.providers.dir.param.allowed.paths").unwrap()
            ),
        ),
        (
            "env-with-path",
            json!({"name": "env-with-path", "config": sink(json!({"x": "${env:/etc:HOME}"}))}).to_string(),
            "config key `x`: `${env:/etc:HOME}`: provider `env` (EnvVarConfigProvider) takes no path; write ${env:NAME}".to_string(),
        ),
        (
            "empty-path",
            json!({"name": "empty-path", "config": sink(json!({"x": "${dir:/mnt/x/user.p12}"}))}).to_string(),
            "config key `x`: `${dir:/mnt/x/user.p12}` gives provider `dir` (DirectoryConfigProvider) an empty path; write ${dir:PATH:KEY}".to_string(),
        ),
        (
            "providers-in-connector",
            json!({"name": "providers-in-connector", "config": sink(json!({"config.providers": "file"}))}).to_string(),
            "config key `config.providers` declares config providers in the connector's config; Kafka Connect reads config.providers only from the worker's config".to_string(),
        ),
        (
            "computed",
            r#"{"name": "computed", "config": {"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/o", "x": ($PASSWORD | ascii_upcase)}}"#.to_string(),
            "config key `x` is computed from $PASSWORD, not placed as it is; with --secrets-as references an input can only reach Connect as a reference the worker resolves, which cannot be transformed: place the input as it is, or keep the transformed value in the input's file".to_string(),
        ),
    ];
    for (cm, template, cause) in cases {
        let stderr = assert_denied(&env, cm, &template, &cause);
        assert!(!stderr.contains("hunter2") && !stderr.contains("t0ken"), "{stderr}");
    }

    // Literal text a declaration names as such, and a reference that resolves, are admitted.
    let fine = json!({"name": "fine", "literalAliases": ["date"], "config": sink(json!({
        "x": format!("${{file:{props}:user}}"),
        "y": "${date:now:yyyyMMdd}",
    }))});
    let (admitted, stderr) = dry_run(&env, "fine", &fine.to_string());
    assert!(admitted, "{stderr}");
}
