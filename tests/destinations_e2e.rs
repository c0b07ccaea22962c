//! Destinations on the real stack: `connect-gate serve --destinations FILE` reconciling
//! ConfigMaps onto a second, real Kafka Connect cluster (its own group, config/offset/status
//! topics and port, basic auth) beside the local worker, and onto the `confluent-cloud` kind
//! through a STAND-IN for Confluent Cloud's Connect API (`support::ccloud`): Confluent Cloud
//! cannot be reached from here, so the stand-in serves the documented v1 paths and status codes
//! in front of a real worker. Every wait is a bounded poll, never a timed assertion.

mod support;

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::ccloud::{CloudStandIn, MASK};
use support::sidecar::*;
use support::{TestEnv, Worker, WorkerRest, eventually};

/// The connector's config on a worker reached with `rest` (auth included).
async fn config_on(rest: &WorkerRest, name: &str) -> Result<serde_json::Map<String, Value>, String> {
    match rest.get(&format!("/connectors/{name}/config")).await {
        (200, Value::Object(config)) => Ok(config),
        (status, body) => Err(format!("GET config of {name}: {status} {body}")),
    }
}

async fn wait_config_on(rest: &WorkerRest, name: &str, key: &str, value: &str) {
    eventually(&format!("{name}.{key} = {value} on {}", rest.url), WAIT, || async {
        let config = config_on(rest, name).await?;
        match config.get(key) {
            Some(Value::String(v)) if v == value => Ok(()),
            other => Err(format!("{key} is {other:?}")),
        }
    })
    .await;
}

async fn wait_absent_on(rest: &WorkerRest, name: &str) {
    eventually(&format!("{name} gone from {}", rest.url), WAIT, || async {
        match rest.get(&format!("/connectors/{name}")).await {
            (404, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
}

/// The status annotation's entry for `connector` once `check` holds for it.
async fn wait_entry(env: &TestEnv, cm: &str, connector: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{connector} on {cm}: {what}"), WAIT, || async {
        let status = annotation(env, cm, "connect-gate.io/status")
            .await
            .ok_or("no status annotation")?;
        let status: Value = serde_json::from_str(&status).map_err(|e| e.to_string())?;
        if check(&status[connector]) {
            Ok(status[connector].clone())
        } else {
            Err(status.to_string())
        }
    })
    .await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The credentials of a basic-auth worker as mounted files, and a destination using them.
fn basic_auth_destination(dir: &Path, name: &str, worker: &Worker) -> String {
    let (user, password) = worker.basic_auth.clone().unwrap();
    let user = write(dir, &format!("{name}-user"), &format!("{user}\n"));
    let password = write(dir, &format!("{name}-password"), &password);
    format!(
        "- name: {name}\n  url: {}\n  auth: {{basic: {{usernameFile: {user}, passwordFile: {password}}}}}\n",
        worker.url
    )
}

fn remove_finalizer(env: &TestEnv, cm: &str) {
    env.kubectl_ok(&[
        "patch",
        "configmap",
        cm,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_cluster_with_basic_auth_is_a_destination() {
    let env = TestEnv::new("dest-second").await;
    let dir = test_dir();
    let mut second = env.start_connect_worker("second", true);
    let rest = second.client();
    let destinations = write(
        dir.path(),
        "destinations.yaml",
        &format!(
            "destinations:\n{}",
            basic_auth_destination(dir.path(), "second", &second)
        ),
    );
    let sidecar = Sidecar::start(
        &env,
        dir.path(),
        &env.connect_url,
        "solo",
        &["--destinations", &destinations],
    );
    let input = dir.path().join("in.txt");
    let (remote, local) = (env.connector_name("remote"), env.connector_name("local"));
    let label = [("connect-gate.io/destination", "second")];
    create(
        &env,
        &configmap(
            "remote",
            &label,
            &[("r.json", source_template(&remote, &input, &env.id, ""))],
        ),
    )
    .await;
    create(
        &env,
        &configmap("here", &[], &[("l.json", source_template(&local, &input, &env.id, ""))]),
    )
    .await;

    // Created on the second cluster only, reported with its destination, owned in its ledger.
    wait_config_on(&rest, &remote, "topic", &env.id).await;
    wait_config(&env.connect_url, &local, "topic", &env.id).await;
    let entry = wait_entry(&env, "remote", &remote, "RUNNING", |s| s["state"] == "RUNNING").await;
    assert_eq!(entry["destination"], "second", "{entry}");
    let (status, _) = env.connect.get(&format!("/connectors/{remote}")).await;
    assert_eq!(status, 404, "not on the local worker");
    assert!(!rest.connectors().await.contains(&local), "the local one stays local");
    let lease: k8s_openapi::api::coordination::v1::Lease = env.api().get("connect-gate-ledger").await.unwrap();
    let others: Value =
        serde_json::from_str(&lease.metadata.annotations.unwrap()["connect-gate.io/ledger-destinations"]).unwrap();
    assert_eq!(others["second"][&remote], "created", "{others}");
    wait_event(&env, "remote", "Applied", "(destination second)").await;

    // Unchanged: no writes on later passes.
    let before = puts(&sidecar).await;
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(puts(&sidecar).await, before, "passes over unchanged connectors wrote");

    // Update and pause.
    let topic_b = format!("{}-b", env.id);
    let updated = source_template(&remote, &input, &topic_b, "").replacen('{', r#"{"state": "paused", "#, 1);
    merge(&env, "remote", json!({"data": {"r.json": updated}})).await;
    wait_config_on(&rest, &remote, "topic", &topic_b).await;
    wait_entry(&env, "remote", &remote, "PAUSED", |s| s["state"] == "PAUSED").await;
    let (_, status) = rest.get(&format!("/connectors/{remote}/status")).await;
    assert_eq!(status["connector"]["state"], "PAUSED", "{status}");

    // Drift on the second cluster is reverted, with an Event.
    let mut drifted = config_on(&rest, &remote).await.unwrap();
    drifted.insert("topic".into(), json!("drifted"));
    let (code, body) = rest
        .put(&format!("/connectors/{remote}/config"), &Value::Object(drifted))
        .await;
    assert_eq!(code, 200, "{body}");
    wait_event(&env, "remote", "DriftReverted", &remote).await;
    wait_config_on(&rest, &remote, "topic", &topic_b).await;

    // Moved: a local ConfigMap relabelled to the second cluster deletes its connector from the
    // local worker and creates it there.
    let mover = env.connector_name("mover");
    create(
        &env,
        &configmap(
            "mover",
            &[],
            &[("m.json", source_template(&mover, &input, &env.id, ""))],
        ),
    )
    .await;
    wait_status(&env, "mover", &mover, "RUNNING").await;
    wait_ledger(&env, &mover, json!("created")).await;
    merge(
        &env,
        "mover",
        json!({"metadata": {"labels": {"connect-gate.io/destination": "second"}}}),
    )
    .await;
    wait_config_on(&rest, &mover, "topic", &env.id).await;
    wait_absent(&env.connect_url, &mover).await;
    wait_ledger(&env, &mover, Value::Null).await;
    let entry = wait_entry(&env, "mover", &mover, "on second", |s| s["destination"] == "second").await;
    assert_ne!(entry["state"], "ABSENT", "{entry}");

    // Delete: gone from the second cluster, the finalizer released, the ledger entry dropped.
    delete_and_wait_gone(&env, "remote").await;
    wait_absent_on(&rest, &remote).await;
    eventually("the ledger to forget it", WAIT, || async {
        let lease: k8s_openapi::api::coordination::v1::Lease = env.api().get("connect-gate-ledger").await.unwrap();
        match lease
            .metadata
            .annotations
            .unwrap_or_default()
            .get("connect-gate.io/ledger-destinations")
        {
            Some(others) if others.contains(&remote) => Err(others.clone()),
            _ => Ok(()),
        }
    })
    .await;

    // The second cluster stops: its ConfigMap waits, reported UNKNOWN, while the local worker's
    // connectors keep converging.
    let held = env.connector_name("held");
    create(
        &env,
        &configmap(
            "held",
            &label,
            &[("h.json", source_template(&held, &input, &env.id, ""))],
        ),
    )
    .await;
    wait_config_on(&rest, &held, "topic", &env.id).await;
    second.stop();
    let entry = wait_entry(&env, "held", &held, "UNKNOWN", |s| s["state"] == "UNKNOWN").await;
    assert_eq!(entry["destination"], "second", "{entry}");
    let last_error = annotation(&env, "held", "connect-gate.io/last-error").await.unwrap();
    assert!(
        last_error.contains("destination second cannot be reached"),
        "{last_error}"
    );
    let topic_c = format!("{}-c", env.id);
    merge(
        &env,
        "here",
        json!({"data": {"l.json": source_template(&local, &input, &topic_c, "")}}),
    )
    .await;
    wait_config(&env.connect_url, &local, "topic", &topic_c).await;
    wait_status(&env, "here", &local, "RUNNING").await;
    let managed = annotation(&env, "held", "connect-gate.io/connectors").await.unwrap();
    assert!(
        managed.contains(&held),
        "still managed while its destination is away: {managed}"
    );

    drop(sidecar);
    // Its cluster is gone for good: free the ConfigMap for cleanup.
    remove_finalizer(&env, "held");
}

/// What the fixtures' `$BIGQUERY_PROJECT` and `env.*` stand for in this test.
const KAFKA_API_SECRET: &str = "cc-api-secret-not-for-logs";

/// A fixture ConfigMap (streaming-ops format, label destination.cc) made runnable on the worker
/// behind the stand-in: enabled, and its connector.class swapped for a FileStream class the
/// worker has (the real DatagenSource and BigQuerySink exist only in Confluent Cloud), with
/// the keys that class needs; every other key is kept as the fixture has it.
fn runnable_fixture(file: &str, class: &str, extra: &str) -> ConfigMap {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/connectors/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut cm: ConfigMap = serde_norway::from_str(&text).unwrap();
    cm.metadata.labels.as_mut().unwrap().remove("enabled");
    for value in cm.data.as_mut().unwrap().values_mut() {
        let original = value.clone();
        let at = original.find("\"connector.class\"").unwrap();
        let end = at + original[at..].find(',').unwrap();
        *value = format!(
            "{}\"connector.class\": \"{class}\",{extra}{}",
            &original[..at],
            &original[end + 1..]
        );
    }
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_cloud_kind_through_a_stand_in_in_front_of_a_real_worker() {
    let env = TestEnv::new("dest-cloud").await;
    let dir = test_dir();
    // The real worker behind the stand-in: its own cluster (group, topics, port).
    let behind = env.start_connect_worker("cloud", true);
    let rest = behind.client();
    let cloud = CloudStandIn::start(
        &behind.url,
        behind.basic_auth.clone(),
        "env-test1",
        "lkc-test1",
        ("CCKEY", "ccsecret"),
    )
    .await;
    let key = write(dir.path(), "api-key", "CCKEY\n");
    let secret = write(dir.path(), "api-secret", "ccsecret\n");
    let destinations = write(
        dir.path(),
        "destinations.yaml",
        &format!(
            "confluentCloud: {{url: {}, apiKeyFile: {key}, apiSecretFile: {secret}}}\n",
            cloud.url
        ),
    );
    let hash_key = write(dir.path(), "hash.key", &"k".repeat(40));
    // The fixtures' inputs: env.KAFKA_API_*, env.SHIPMENTS_BQ_SINK_KEYFILE, $BIGQUERY_PROJECT.
    std::fs::write(
        dir.path().join("env"),
        format!(
            "KAFKA_API_KEY=cc-api-key\nKAFKA_API_SECRET={KAFKA_API_SECRET}\nSHIPMENTS_BQ_SINK_KEYFILE=/keys/bq.json\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("vars")).unwrap();
    std::fs::write(
        dir.path().join("vars/bigquery.properties"),
        "bigquery.project=logistics-prod\n",
    )
    .unwrap();
    let sidecar = Sidecar::start(
        &env,
        dir.path(),
        &env.connect_url,
        "solo",
        &["--destinations", &destinations, "--hash-key-file", &hash_key],
    );

    // The ConfigMaps the ccloud-operator wrote for the two clusters the fixtures name.
    for name in [
        "cloud.env.analytics-staging.kafka.clickstream",
        "cloud.env.analytics-staging.kafka.logistics",
    ] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"environment_id": "env-test1", "resource_id": "lkc-test1"}},
            "data": {"bootstrap": "SASL_SSL://stand-in.invalid:9092"},
        }))
        .unwrap();
        env.api::<ConfigMap>()
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let sink_file = dir.path().join("bq.out");
    let source_file = dir.path().join("clicks.in");
    let datagen = runnable_fixture(
        "clickstream-datagen-source.yaml",
        "FileStreamSource",
        &format!(" \"file\": \"{}\", \"topic\": \"{}\",", source_file.display(), env.id),
    );
    let bigquery = runnable_fixture(
        "shipments-bigquery-sink.yaml",
        "FileStreamSink",
        &format!(" \"file\": \"{}\",", sink_file.display()),
    );
    create(&env, &datagen).await;
    create(&env, &bigquery).await;

    // Created through the stand-in's upsert, on the worker behind it.
    let (dg, bq) = ("clickstream-users-datagen", "shipments-bq-sink");
    wait_config_on(&rest, dg, "kafka.topic", "clickstream-users").await;
    wait_config_on(&rest, bq, "project", "logistics-prod").await;
    let entry = wait_entry(&env, "clickstream-datagen-source", dg, "RUNNING", |s| {
        s["state"] == "RUNNING"
    })
    .await;
    assert_eq!(
        entry["destination"], "destination.cc:cloud.env.analytics-staging.kafka.clickstream",
        "{entry}"
    );
    wait_entry(&env, "shipments-bigquery-sink", bq, "RUNNING", |s| {
        s["state"] == "RUNNING"
    })
    .await;
    assert!(cloud.count("PUT", &format!("/connectors/{dg}/config"), Some(200)) >= 1);
    assert!(
        cloud.count("GET", "/connectors?expand=info,status", Some(200)) >= 1,
        "{:?}",
        cloud.seen()
    );
    // What the stand-in returns hides the secret and adds its own keys...
    let shown: Value = reqwest::Client::new()
        .get(format!(
            "{}/connect/v1/environments/env-test1/clusters/lkc-test1/connectors/{dg}/config",
            cloud.url
        ))
        .basic_auth("CCKEY", Some("ccsecret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["kafka.api.secret"], MASK, "{shown}");
    assert_eq!(shown["cloud.environment"], "env-test1", "{shown}");
    // ...and none of that is drift: no PUT on later passes.
    let puts_before = cloud.count("PUT", "/connectors/", None);
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(
        cloud.count("PUT", "/connectors/", None),
        puts_before,
        "a pass wrote to the cloud destination: {:?}",
        cloud.seen()
    );

    // Pause: 202 now, PAUSED a moment later.
    let paused = datagen
        .data
        .as_ref()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .replacen('{', r#"{"state": "paused", "#, 1);
    let key_name = datagen.data.as_ref().unwrap().keys().next().unwrap().clone();
    merge(&env, "clickstream-datagen-source", json!({"data": {&key_name: paused}})).await;
    wait_entry(&env, "clickstream-datagen-source", dg, "PAUSED", |s| {
        s["state"] == "PAUSED"
    })
    .await;
    assert!(cloud.count("PUT", &format!("/connectors/{dg}/pause"), Some(202)) >= 1);

    // Rate limited: the sidecar waits as told and still converges.
    cloud.throttle(3);
    let sink_changed = json!({"data": {"shipments-bq-sink.json": bigquery.data.as_ref().unwrap()["shipments-bq-sink.json"].replace("\"logistics\"", "\"logistics-eu\"")}});
    merge(&env, "shipments-bigquery-sink", sink_changed).await;
    wait_config_on(&rest, bq, "datasets", "logistics-eu").await;
    assert!(
        cloud.count("GET", "/connectors", Some(429)) + cloud.count("PUT", "/connectors", Some(429)) >= 1,
        "{:?}",
        cloud.seen()
    );
    assert!(
        sidecar
            .metric("connect_gate_rest_calls_total", &[r#"status="429""#])
            .await
            .unwrap()
            >= 1.0
    );

    // Drift behind the stand-in is reverted.
    let mut drifted = config_on(&rest, bq).await.unwrap();
    drifted.insert("topics".into(), json!("elsewhere"));
    let (code, body) = rest
        .put(&format!("/connectors/{bq}/config"), &Value::Object(drifted))
        .await;
    assert_eq!(code, 200, "{body}");
    wait_event(&env, "shipments-bigquery-sink", "DriftReverted", bq).await;
    wait_config_on(&rest, bq, "topics", "shipments,shipment-events").await;

    // Delete through the stand-in.
    delete_and_wait_gone(&env, "shipments-bigquery-sink").await;
    wait_absent_on(&rest, bq).await;
    assert!(cloud.count("DELETE", &format!("/connectors/{bq}"), Some(200)) >= 1);

    // Nothing the stand-in saw, nor the ConfigMaps, holds the secret.
    let cm: ConfigMap = env.api().get("clickstream-datagen-source").await.unwrap();
    let annotations = serde_json::to_string(&cm.metadata.annotations).unwrap();
    assert!(!annotations.contains(KAFKA_API_SECRET), "{annotations}");
    assert!(!sidecar.log().contains(KAFKA_API_SECRET));
    assert!(!sidecar.log().contains("ccsecret"), "the API secret is never logged");

    // Disable the datagen source as the fixture has it: deleted.
    env.api::<ConfigMap>()
        .patch(
            "clickstream-datagen-source",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"enabled": "false"}}})),
        )
        .await
        .unwrap();
    wait_absent_on(&rest, dg).await;
    drop(sidecar);
}
