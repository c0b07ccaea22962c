//! End-to-end checks of the test stack itself: a real kube-apiserver and a real
//! Kafka Connect worker, reached the way connect-gate's own e2e tests reach them.
//! Run with `tests/run` (starts and stops the stack). Never skipped: without
//! the stack every test here fails with instructions.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::{TestEnv, eventually};

#[tokio::test]
async fn apiserver_namespace_and_configmap_with_kubectl() {
    let env = TestEnv::new("apiserver_kubectl").await;

    // The namespace TestEnv created is visible to kubectl.
    let ns = env.kubectl_ok(&["get", "namespace", &env.namespace, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(ns, "Active");

    // A namespace and a ConfigMap created by kubectl.
    let other_ns = format!("{}-k", env.namespace);
    env.kubectl_ok(&["create", "namespace", &other_ns]);
    env.kubectl_ok(&["create", "configmap", "from-kubectl", "--from-literal=greeting=hello"]);
    env.kubectl_apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  source: kubectl-apply\n");

    // ... read back through the kube crate.
    let cm = env.api::<ConfigMap>().get("from-kubectl").await.unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "hello");
    let cm = env.api::<ConfigMap>().get("applied").await.unwrap();
    assert_eq!(cm.data.unwrap()["source"], "kubectl-apply");
    let got = Api::<Namespace>::all(env.kube.clone()).get(&other_ns).await.unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some(other_ns.as_str()));

    // The extra namespace is ours to clean up (TestEnv only owns env.namespace).
    support::delete_namespace(&env.kube, &other_ns).await;
    assert!(
        Api::<Namespace>::all(env.kube.clone())
            .get_opt(&other_ns)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn apiserver_namespace_and_configmap_with_kube_crate() {
    let env = TestEnv::new("apiserver_kube").await;

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "from-kube", "labels": {"app": "connect-gate-e2e"}},
        "data": {"answer": "42"}
    }))
    .unwrap();
    env.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    // ... read back with kubectl.
    let answer = env.kubectl_ok(&["get", "configmap", "from-kube", "-o", "jsonpath={.data.answer}"]);
    assert_eq!(answer, "42");

    // RBAC is on and we are an admin through the client certificate.
    let whoami = env.kubectl_ok(&["auth", "whoami", "-o", "json"]);
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    let groups = whoami["status"]["userInfo"]["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g == "system:masters"), "{whoami}");

    // The server reports its real version, not v0.0.0.
    let version = env.kube.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    assert!(version.git_version.starts_with("v1."), "{version:?}");

    // Admission webhooks are enabled (the next issue registers one).
    let webhooks = env.kubectl_ok(&["get", "--raw", "/apis/admissionregistration.k8s.io/v1"]);
    assert!(webhooks.contains("validatingwebhookconfigurations"), "{webhooks}");
    assert!(webhooks.contains("mutatingwebhookconfigurations"), "{webhooks}");
}

#[tokio::test]
async fn connect_worker_lists_file_stream_plugins() {
    let env = TestEnv::new("connect_plugins").await;
    let (status, body) = env.connect.get("/connector-plugins").await;
    assert_eq!(status, 200, "{body}");
    let classes: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["class"].as_str())
        .collect();
    for expected in [
        "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "org.apache.kafka.connect.file.FileStreamSinkConnector",
        "org.apache.kafka.connect.mirror.MirrorSourceConnector",
        "org.apache.kafka.connect.tools.VerifiableSourceConnector",
    ] {
        assert!(classes.contains(&expected), "{expected} missing from {classes:?}");
    }
    let (status, root) = env.connect.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(root["version"], "4.3.1", "{root}");
}

#[tokio::test]
async fn file_stream_source_connector_runs_and_is_deleted() {
    let env = TestEnv::new("file_source").await;
    let name = env.connector_name("file-source");
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), "line one\nline two\n").unwrap();

    let (status, body) = env
        .connect
        .post(
            "/connectors",
            &json!({
                "name": name,
                "config": {
                    "connector.class": "FileStreamSource",
                    "tasks.max": "1",
                    "file": input.path().to_str().unwrap(),
                    "topic": format!("{name}-topic"),
                }
            }),
        )
        .await;
    assert_eq!(status, 201, "create connector: {body}");

    let connectors = env.connect.connectors().await;
    assert!(connectors.contains(&name), "{connectors:?}");

    let status = eventually("connector and task RUNNING", Duration::from_secs(60), || {
        let connect = env.connect.clone();
        let name = name.clone();
        async move {
            let (code, s) = connect.get(&format!("/connectors/{name}/status")).await;
            let running = code == 200
                && s["connector"]["state"] == "RUNNING"
                && s["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 1 && t[0]["state"] == "RUNNING");
            if running { Ok(s) } else { Err(format!("{code} {s}")) }
        }
    })
    .await;
    assert_eq!(status["type"], "source");

    let (code, body) = env.connect.delete(&format!("/connectors/{name}")).await;
    assert_eq!(code, 204, "{body}");
    eventually("connector gone", Duration::from_secs(30), || {
        let connect = env.connect.clone();
        let name = name.clone();
        async move {
            let (code, body) = connect.get(&format!("/connectors/{name}")).await;
            if code == 404 {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        }
    })
    .await;
}

/// The workers' config providers (tests/stack/README.md, "Config providers"): a connector config
/// holding `${file:...}`, `${dir:...}` and `${env:...}` runs with the values the worker resolves,
/// while Connect returns the references.
#[tokio::test]
async fn worker_resolves_config_provider_references() {
    let env = TestEnv::new("config_providers").await;
    let worker_config = std::fs::read_to_string(&env.worker_config).unwrap();
    let providers = env.stack.stack_dir.join("providers");
    for line in [
        "config.providers=file,dir,env".to_string(),
        format!("config.providers.file.param.allowed.paths={}", providers.display()),
        format!("config.providers.dir.param.allowed.paths={}", providers.display()),
        "config.providers.env.param.allowlist.pattern=CONNECT_GATE_TEST_.*".to_string(),
    ] {
        assert!(
            worker_config.lines().any(|l| l == line),
            "{line} not in {worker_config}"
        );
    }
    assert!(env.provider_dir.starts_with(&providers));

    let dir = env.provider_dir.join(&env.id);
    std::fs::create_dir_all(&dir).unwrap();
    let refs = dir.join("refs.properties");
    std::fs::write(&refs, format!("out={}\n", dir.join("out").display())).unwrap();
    let input = dir.join("in.txt");
    std::fs::write(&input, "line one\nline two\n").unwrap();
    let topic = env.connector_name("topic");
    let file = format!(
        "${{file:{}:out}}-${{file:{}:user}}-${{dir:{}:password}}-${{env:CONNECT_GATE_TEST_SECRET}}",
        refs.display(),
        providers.join("db.properties").display(),
        providers.join("secret-volume").display()
    );
    let resolved = dir.join("out-stack-user-stack-volume-password-env-secret-of-the-worker");
    let strings = "org.apache.kafka.connect.storage.StringConverter";
    for (suffix, config) in [
        (
            "source",
            json!({"connector.class": "FileStreamSource", "tasks.max": "1", "file": input, "topic": topic,
                   "value.converter": strings}),
        ),
        (
            "sink",
            json!({"connector.class": "FileStreamSink", "tasks.max": "1", "file": file, "topics": topic,
                   "value.converter": strings}),
        ),
    ] {
        let name = env.connector_name(suffix);
        let (status, body) = env.connect.put(&format!("/connectors/{name}/config"), &config).await;
        assert_eq!(status, 201, "create {name}: {body}");
    }
    eventually(
        "the sink writing to the resolved path",
        Duration::from_secs(60),
        || async {
            match std::fs::read_to_string(&resolved) {
                Ok(text) if text == "line one\nline two\n" => Ok(()),
                other => Err(format!("{}: {other:?}", resolved.display())),
            }
        },
    )
    .await;
    let (code, config) = env
        .connect
        .get(&format!("/connectors/{}/config", env.connector_name("sink")))
        .await;
    assert_eq!(
        (code, &config["file"]),
        (200, &json!(file)),
        "Connect returns the references"
    );
    env.cleanup().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn basic_auth_worker_rejects_anonymous_requests() {
    let env = TestEnv::new("basic_auth").await;
    let worker = env.start_connect_worker("auth", true);
    let (user, password) = worker.basic_auth.clone().unwrap();

    let anonymous = support::WorkerRest::new(&worker.url);
    let (status, _) = anonymous.get("/connectors").await;
    assert_eq!(status, 401);
    let wrong = support::WorkerRest::new(&worker.url).with_basic_auth(&user, "not-the-password");
    assert_eq!(wrong.get("/connectors").await.0, 401);
    let (status, body) = worker.client().get("/connectors").await;
    assert_eq!(status, 200, "{body}");
    let _ = password;
}

#[tokio::test]
async fn cleanup_removes_namespace_objects_and_connectors() {
    let env = TestEnv::new("cleanup").await;
    env.kubectl_ok(&["create", "configmap", "leftover", "--from-literal=a=b"]);
    let name = env.connector_name("leftover");
    let input = tempfile::NamedTempFile::new().unwrap();
    let (status, body) = env
        .connect
        .put(
            &format!("/connectors/{name}/config"),
            &json!({"connector.class": "FileStreamSource", "file": input.path().to_str().unwrap(), "topic": format!("{name}-t")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    env.cleanup().await;

    assert!(
        !env.connect.connectors().await.contains(&name),
        "connector {name} survived cleanup"
    );
    // No namespace controller runs in the stack; cleanup empties and finalizes the namespace itself.
    let ns = Api::<Namespace>::all(env.kube.clone())
        .get_opt(&env.namespace)
        .await
        .unwrap();
    assert!(
        ns.is_none(),
        "namespace {} survived cleanup: {:?}",
        env.namespace,
        ns.and_then(|n| n.status)
    );
}
