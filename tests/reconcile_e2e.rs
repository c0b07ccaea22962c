//! The reconciler on the real stack: `connect-gate serve --no-webhook` runs as a real process
//! against the real kube-apiserver and the real Kafka Connect worker(s), applying FileStream
//! connectors declared in ConfigMaps. Every wait is a bounded poll, never a timed assertion.

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};
use support::sidecar::*;
use support::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_state_and_delete_while_running() {
    let env = TestEnv::new("reconcile-create-update").await;
    let dir = test_dir();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let name = env.connector_name("src");
    let input = dir.path().join("in.txt");
    let topic = format!("{}-a", env.id);
    create(
        &env,
        &configmap("cm", &[], &[("src.json", source_template(&name, &input, &topic, ""))]),
    )
    .await;

    wait_config(&env.connect_url, &name, "topic", &topic).await;
    let config = config_at(&env.connect_url, &name).await.unwrap();
    assert_eq!(config["tasks.max"], "1", "numbers arrive as strings");
    assert_eq!(config["name"], name);
    wait_status(&env, "cm", &name, "RUNNING").await;
    let cm = env.api::<ConfigMap>().get("cm").await.unwrap();
    assert!(
        cm.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
    );
    let managed: Value =
        serde_json::from_str(&annotation(&env, "cm", "connect-gate.io/connectors").await.unwrap()).unwrap();
    assert_eq!(managed, json!({ &name: "src.json" }));
    let applied = annotation(&env, "cm", "connect-gate.io/applied").await.unwrap();
    // No --hash-key-file: a hash of the values that came from no template input.
    assert!(
        applied.contains("sha256-nonsecret:") && !applied.contains(&topic),
        "{applied}"
    );
    wait_event(&env, "cm", "Applied", &name).await;
    assert_eq!(ledger(&env).await[&name], "created", "recorded as connect-gate's own");

    // Unchanged: later passes make no write calls at all.
    let before = puts(&sidecar).await;
    assert_eq!(
        before,
        1.0,
        "one PUT to create it; metrics:\n{}",
        sidecar.metrics().await.unwrap()
    );
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(
        puts(&sidecar).await,
        before,
        "passes over an unchanged connector wrote to Connect"
    );

    // Update: new topic, declared paused.
    let topic_b = format!("{}-b", env.id);
    let updated = source_template(&name, &input, &topic_b, "").replacen('{', r#"{"state": "paused", "#, 1);
    merge(&env, "cm", json!({"data": {"src.json": updated}})).await;
    wait_config(&env.connect_url, &name, "topic", &topic_b).await;
    wait_status(&env, "cm", &name, "PAUSED").await;
    wait_event(&env, "cm", "Updated", &name).await;
    let (_, status) = env.connect.get(&format!("/connectors/{name}/status")).await;
    assert_eq!(status["connector"]["state"], "PAUSED", "{status}");

    // Delete while running: the connector goes, then the ConfigMap, then its ledger entry.
    delete_and_wait_gone(&env, "cm").await;
    wait_absent(&env.connect_url, &name).await;
    wait_ledger(&env, &name, Value::Null).await;
    drop(sidecar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_ownership_annotation_never_deletes_a_connector_connect_gate_did_not_create() {
    let env = TestEnv::new("reconcile-forged-owner").await;
    let dir = test_dir();
    // The reconciler alone, as if the webhook were bypassed: the ledger must hold on its own.
    let _sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let input = dir.path().join("in.txt");
    let stranger = env.connector_name("stranger");
    create_on_worker(&env.connect_url, &stranger, &input, &env.id).await;
    let mine = env.connector_name("mine");
    create(
        &env,
        &configmap("cm", &[], &[("m.json", source_template(&mine, &input, &env.id, ""))]),
    )
    .await;
    wait_status(&env, "cm", &mine, "RUNNING").await;

    // Another identity, with ConfigMap rights only, claims the stranger for this ConfigMap
    // (an annotation-only update: admission would not even judge it)...
    let editor = env.service_account_kubeconfig("editor", support::CONFIGMAP_EDITOR_RULES, dir.path());
    let forged = json!({ &mine: "m.json", &stranger: "nokey" }).to_string();
    let out = env.kubectl_as(
        &editor,
        &[
            "annotate",
            "--overwrite",
            "configmap",
            "cm",
            &format!("connect-gate.io/connectors={forged}"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ...and on a ConfigMap of its own, finalizer included, which it then deletes.
    let decoy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: decoy\n  labels: {{destination: connect}}\n  \
         finalizers: [{FINALIZER}]\n  annotations:\n    connect-gate.io/connectors: '{}'\n",
        json!({ &stranger: "gone.json" })
    );
    let out = support::kubectl_with(&editor, Some(&env.namespace), &["create", "-f", "-"], Some(&decoy));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.kubectl_as(&editor, &["delete", "configmap", "decoy", "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Refused and visible: a NotOwned Warning on each, the claim dropped, the decoy let go.
    wait_event(&env, "cm", "NotOwned", &stranger).await;
    wait_event(&env, "decoy", "NotOwned", &stranger).await;
    eventually("the forged claim to be dropped from the annotation", WAIT, || async {
        let managed = annotation(&env, "cm", "connect-gate.io/connectors")
            .await
            .unwrap_or_default();
        if managed.contains(&stranger) {
            Err(managed)
        } else {
            Ok(())
        }
    })
    .await;
    eventually("the decoy to be released", WAIT, || async {
        match env.api::<ConfigMap>().get_opt("decoy").await.unwrap() {
            None => Ok(()),
            Some(cm) => Err(format!("finalizers {:?}", cm.metadata.finalizers)),
        }
    })
    .await;
    let notes = events(&env, "cm", "NotOwned").await.join("\n");
    assert!(
        notes.contains(&format!("connector {stranger} is listed in connect-gate.io/connectors, but connect-gate did not create or adopt it: not deleted")),
        "{notes}"
    );

    // connect-gate's own connector still goes with its ConfigMap; the stranger never does.
    delete_and_wait_gone(&env, "cm").await;
    wait_absent(&env.connect_url, &mine).await;
    config_at(&env.connect_url, &stranger)
        .await
        .expect("the connector connect-gate did not create is still there");
    assert_eq!(ledger(&env).await[&stranger], Value::Null, "never entered the ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_already_on_the_worker_is_adopted_visibly_and_then_owned() {
    let env = TestEnv::new("reconcile-adopt").await;
    let dir = test_dir();
    let input = dir.path().join("in.txt");
    // As connect-operator left it: on the worker, with a config of its own.
    let name = env.connector_name("legacy");
    create_on_worker(&env.connect_url, &name, &input, "theirs").await;
    let _sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let topic = format!("{}-ours", env.id);
    create(
        &env,
        &configmap("cm", &[], &[("l.json", source_template(&name, &input, &topic, ""))]),
    )
    .await;

    wait_config(&env.connect_url, &name, "topic", &topic).await;
    wait_event(&env, "cm", "Adopted", &name).await;
    let notes = events(&env, "cm", "Adopted").await.join("\n");
    assert!(
        notes.contains(&format!(
            "adopted connector {name}, which already existed on the worker"
        )),
        "{notes}"
    );
    let status = wait_status(&env, "cm", &name, "RUNNING").await;
    assert_eq!(
        status[&name]["note"], "adopted: it existed on the worker before connect-gate managed it",
        "{status}"
    );
    wait_ledger(&env, &name, json!("adopted")).await;
    assert!(events(&env, "cm", "Applied").await.is_empty(), "adopted, not created");

    // Owned now: deleted with its ConfigMap, and forgotten.
    delete_and_wait_gone(&env, "cm").await;
    wait_absent(&env.connect_url, &name).await;
    wait_ledger(&env, &name, Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_reenable_rename_and_remove_a_key() {
    let env = TestEnv::new("reconcile-disable-rename").await;
    let dir = test_dir();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let (a, b, renamed) = (
        env.connector_name("a"),
        env.connector_name("b"),
        env.connector_name("a2"),
    );
    let input = dir.path().join("in.txt");
    let t = |n: &str| source_template(n, &input, &format!("{}-t", env.id), "");
    create(&env, &configmap("cm", &[], &[("a.json", t(&a)), ("b.json", t(&b))])).await;
    wait_status(&env, "cm", &a, "RUNNING").await;
    wait_status(&env, "cm", &b, "RUNNING").await;

    merge(&env, "cm", json!({"metadata": {"labels": {"enabled": "false"}}})).await;
    wait_absent(&env.connect_url, &a).await;
    wait_absent(&env.connect_url, &b).await;
    wait_event(&env, "cm", "Deleted", &a).await;
    // Converged with only disabled connectors: a pass reads the worker once, in bulk, and asks
    // nothing about each connector declared absent.
    wait_passes(&sidecar, 1.0).await;
    let gets = || sidecar.metric("connect_gate_rest_calls_total", &[r#"method="GET""#]);
    let passes = || sidecar.metric("connect_gate_reconciles_total", &[]);
    let (gets_before, passes_before) = (gets().await.unwrap(), passes().await.unwrap());
    wait_passes(&sidecar, 3.0).await;
    let (gets_after, passes_after) = (gets().await.unwrap(), passes().await.unwrap());
    assert!(
        gets_after - gets_before <= passes_after - passes_before + 1.0,
        "{} GETs in {} passes",
        gets_after - gets_before,
        passes_after - passes_before
    );

    merge(&env, "cm", json!({"metadata": {"labels": {"enabled": "true"}}})).await;
    wait_status(&env, "cm", &a, "RUNNING").await;
    wait_status(&env, "cm", &b, "RUNNING").await;

    // Rename a (same key, new name): old deleted, new created.
    merge(&env, "cm", json!({"data": {"a.json": t(&renamed)}})).await;
    wait_status(&env, "cm", &renamed, "RUNNING").await;
    wait_absent(&env.connect_url, &a).await;

    // Remove key b: its connector goes, the rest stays.
    merge(&env, "cm", json!({"data": {"b.json": null}})).await;
    wait_absent(&env.connect_url, &b).await;
    eventually(
        "the managed annotation to list only the renamed connector",
        WAIT,
        || async {
            let managed = annotation(&env, "cm", "connect-gate.io/connectors")
                .await
                .unwrap_or_default();
            let managed: Value = serde_json::from_str(&managed).map_err(|e| e.to_string())?;
            if managed == json!({ &renamed: "a.json" }) {
                Ok(())
            } else {
                Err(managed.to_string())
            }
        },
    )
    .await;
    config_at(&env.connect_url, &renamed).await.unwrap();
    delete_and_wait_gone(&env, "cm").await;
    wait_absent(&env.connect_url, &renamed).await;

    // Removing the label releases a ConfigMap: its connector goes, then the finalizer and the
    // annotations, and the ConfigMap itself stays.
    create(&env, &configmap("released", &[], &[("r.json", t(&a))])).await;
    wait_status(&env, "released", &a, "RUNNING").await;
    merge(&env, "released", json!({"metadata": {"labels": {"destination": null}}})).await;
    wait_absent(&env.connect_url, &a).await;
    eventually(
        "the released ConfigMap to lose finalizer and annotations",
        WAIT,
        || async {
            let cm = env
                .api::<ConfigMap>()
                .get("released")
                .await
                .map_err(|e| e.to_string())?;
            let finalizers = cm.metadata.finalizers.unwrap_or_default();
            let annotations = cm.metadata.annotations.unwrap_or_default();
            if finalizers.is_empty() && !annotations.keys().any(|k| k.starts_with("connect-gate.io/")) {
                Ok(())
            } else {
                Err(format!(
                    "finalizers {finalizers:?}, annotations {:?}",
                    annotations.keys()
                ))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reverted_and_recorded() {
    let env = TestEnv::new("reconcile-drift").await;
    let dir = test_dir();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let name = env.connector_name("drift");
    let topic = format!("{}-t", env.id);
    let template = source_template(&name, &dir.path().join("in.txt"), &topic, "");
    create(&env, &configmap("cm", &[], &[("d.json", template)])).await;
    wait_status(&env, "cm", &name, "RUNNING").await;

    // Changed behind its back through REST.
    let mut changed = config_at(&env.connect_url, &name).await.unwrap();
    changed.insert("topic".into(), "hijacked".into());
    let (status, body) = env
        .connect
        .put(&format!("/connectors/{name}/config"), &json!(changed))
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    wait_config(&env.connect_url, &name, "topic", &topic).await;
    wait_event(&env, "cm", "DriftReverted", "changed behind").await;

    // Deleted behind its back.
    let (status, body) = env.connect.delete(&format!("/connectors/{name}")).await;
    assert!(status == 204 || status == 200, "{status} {body}");
    wait_event(&env, "cm", "DriftReverted", "deleted behind").await;
    wait_config(&env.connect_url, &name, "topic", &topic).await;
    let reverts = eventually("drift metric", WAIT, || {
        sidecar.metric("connect_gate_drift_reverts_total", &[])
    })
    .await;
    assert!(reverts >= 2.0, "drift reverts: {reverts}");
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_while_the_sidecar_is_down() {
    let env = TestEnv::new("reconcile-delete-down").await;
    let dir = test_dir();
    let mut sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let name = env.connector_name("down");
    create(
        &env,
        &configmap(
            "cm",
            &[],
            &[("x.json", source_template(&name, &dir.path().join("in"), &env.id, ""))],
        ),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;

    sidecar.kill();
    env.api::<ConfigMap>()
        .delete("cm", &DeleteParams::default())
        .await
        .unwrap();
    let held = env.api::<ConfigMap>().get("cm").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "the finalizer holds the ConfigMap"
    );
    config_at(&env.connect_url, &name)
        .await
        .expect("nothing deleted it while the sidecar was down");

    let _sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo-again", &[]);
    wait_absent(&env.connect_url, &name).await;
    eventually("the ConfigMap to be gone", WAIT, || async {
        match env.api::<ConfigMap>().get_opt("cm").await.unwrap() {
            None => Ok(()),
            Some(cm) => Err(format!("finalizers {:?}", cm.metadata.finalizers)),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_reaches_connect_and_a_rejected_connector_is_kept() {
    let env = TestEnv::new("reconcile-secret").await;
    let dir = test_dir();
    let vars = dir.path().join("vars");
    std::fs::create_dir_all(&vars).unwrap();
    std::fs::write(vars.join("DB_PASSWORD"), "s3cret-value-one\n").unwrap();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let name = env.connector_name("sec");
    let template = source_template(
        &name,
        &dir.path().join("in"),
        &env.id,
        r#", "x.password": $DB_PASSWORD"#,
    );
    create(&env, &configmap("cm", &[], &[("s.json", template)])).await;
    wait_config(&env.connect_url, &name, "x.password", "s3cret-value-one").await;

    // Rotated (as kubelet does, by replacing the file): the new value reaches Connect.
    std::fs::write(vars.join(".tmp"), "s3cret-value-two\n").unwrap();
    std::fs::rename(vars.join(".tmp"), vars.join("DB_PASSWORD")).unwrap();
    wait_config(&env.connect_url, &name, "x.password", "s3cret-value-two").await;
    wait_event(&env, "cm", "Updated", &name).await;

    // The secret disappears: the connector is now rejected, kept as it is, and the ConfigMap says why.
    std::fs::remove_file(vars.join("DB_PASSWORD")).unwrap();
    let error = eventually("last-error to explain the rejection", WAIT, || async {
        let e = annotation(&env, "cm", "connect-gate.io/last-error")
            .await
            .ok_or("no last-error")?;
        if e.contains("$DB_PASSWORD") { Ok(e) } else { Err(e) }
    })
    .await;
    assert!(error.contains("undefined variable"), "{error}");
    wait_event(&env, "cm", "Rejected", "DB_PASSWORD").await;
    wait_passes(&sidecar, 2.0).await;
    wait_config(&env.connect_url, &name, "x.password", "s3cret-value-two").await;

    // No secret value anywhere on the ConfigMap or in its Events.
    let cm = env.api::<ConfigMap>().get("cm").await.unwrap();
    let annotations = serde_json::to_string(&cm.metadata.annotations).unwrap();
    assert!(!annotations.contains("s3cret"), "{annotations}");
    let api: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let all = serde_json::to_string(&api.list(&ListParams::default()).await.unwrap().items).unwrap();
    assert!(!all.contains("s3cret"), "{all}");
    assert!(!sidecar.log().contains("s3cret"), "the log shows a secret");

    // Cleanup needs the name only (a disabled ConfigMap tolerates undefined variables).
    delete_and_wait_gone(&env, "cm").await;
    wait_absent(&env.connect_url, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_applies_and_the_other_takes_over() {
    let env = TestEnv::new("reconcile-replicas").await;
    let dir = test_dir();
    let a = Sidecar::start(&env, dir.path(), &env.connect_url, "replica-a", &[]);
    let b = Sidecar::start(&env, dir.path(), &env.connect_url, "replica-b", &[]);
    let name = env.connector_name("ha");
    let input = dir.path().join("in");
    create(
        &env,
        &configmap("cm", &[], &[("h.json", source_template(&name, &input, &env.id, ""))]),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;

    let leaders = eventually("exactly one leader", WAIT, || async {
        let (la, lb) = (
            a.metric("connect_gate_leader", &[]).await?,
            b.metric("connect_gate_leader", &[]).await?,
        );
        if la + lb == 1.0 {
            Ok((la, lb))
        } else {
            Err(format!("leader a={la} b={lb}"))
        }
    })
    .await;
    let (mut leader, follower) = if leaders.0 == 1.0 { (a, b) } else { (b, a) };
    assert_eq!(puts(&leader).await, 1.0);
    let follower_calls = follower.metric("connect_gate_rest_calls_total", &[]).await.unwrap();
    assert_eq!(follower_calls, 0.0, "the follower called Connect");

    leader.kill();
    eventually("the follower to take the Lease", WAIT, || async {
        let l = follower.metric("connect_gate_leader", &[]).await?;
        if l == 1.0 {
            Ok(())
        } else {
            Err(format!("leader={l}; log: {}", follower.process.log_tail()))
        }
    })
    .await;
    wait_passes(&follower, 2.0).await;
    assert_eq!(
        puts(&follower).await,
        0.0,
        "the new leader re-applied an unchanged connector"
    );

    // The new leader applies changes.
    let updated = source_template(&name, &input, &format!("{}-new", env.id), "");
    merge(&env, "cm", json!({"data": {"h.json": updated}})).await;
    wait_config(&env.connect_url, &name, "topic", &format!("{}-new", env.id)).await;
    assert_eq!(puts(&follower).await, 1.0);
    delete_and_wait_gone(&env, "cm").await;
}

/// A Connect worker in a group of its own (so restarting it loses the group's only member).
struct OwnWorker {
    name: String,
}

impl OwnWorker {
    fn start(name: &str) -> String {
        let s = support::stack();
        let out = Command::new(s.scripts.join("connect-worker"))
            .args(["start", name, "--group", name])
            .env("STACK_DIR", &s.stack_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting worker {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn kill(&self) {
        let s = support::stack();
        let out = Command::new(s.scripts.join("connect-worker"))
            .args(["kill", &self.name])
            .env("STACK_DIR", &s.stack_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "killing worker {}", self.name);
    }
}

impl Drop for OwnWorker {
    fn drop(&mut self) {
        let s = support::stack();
        let _ = Command::new(s.scripts.join("connect-worker"))
            .args(["stop", &self.name])
            .env("STACK_DIR", &s.stack_dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// Forwards TCP from a fixed loopback port to whatever worker URL is current, so the sidecar
/// keeps one `--connect-url` while the worker behind it restarts on a new port.
async fn forwarder(target: Arc<Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let to = target.lock().unwrap().trim_start_matches("http://").to_string();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_restarted_mid_reconcile_loses_nothing() {
    let env = TestEnv::new("reconcile-worker-restart").await;
    let dir = test_dir();
    let worker_name = format!("rs-{}", support::random_suffix());
    let url = OwnWorker::start(&worker_name);
    let worker = OwnWorker {
        name: worker_name.clone(),
    };
    let target = Arc::new(Mutex::new(url.clone()));
    let proxy = forwarder(target.clone()).await;
    let _sidecar = Sidecar::start(&env, dir.path(), &proxy, "solo", &[]);

    let names: Vec<String> = (0..4).map(|i| env.connector_name(&format!("r{i}"))).collect();
    for (i, name) in names.iter().enumerate() {
        let cm = configmap(
            &format!("cm{i}"),
            &[],
            &[("c.json", source_template(name, &dir.path().join("in"), &env.id, ""))],
        );
        create(&env, &cm).await;
    }
    // As soon as the first connector exists, the worker dies.
    eventually("the first connector to be created", WAIT, || async {
        let (status, body) = support::WorkerRest::new(&url).get("/connectors").await;
        let list: Vec<String> = serde_json::from_value(body.clone()).unwrap_or_default();
        if status == 200 && !list.is_empty() {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    worker.kill();
    let restarted = OwnWorker::start(&worker_name);
    *target.lock().unwrap() = restarted.clone();

    for (i, name) in names.iter().enumerate() {
        wait_config(&restarted, name, "topic", &env.id).await;
        wait_status(&env, &format!("cm{i}"), name, "RUNNING").await;
    }
    for i in 0..4 {
        delete_and_wait_gone(&env, &format!("cm{i}")).await;
    }
    for name in &names {
        wait_absent(&restarted, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_only_the_documented_rbac() {
    let env = TestEnv::new("reconcile-rbac").await;
    let dir = test_dir();
    let path = env.service_account_kubeconfig("connect-gate", support::RECONCILER_RULES, dir.path());
    // Sanity: this user cannot read Secrets.
    let can = env.kubectl_as(&path, &["auth", "can-i", "get", "secrets"]);
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no");

    let sidecar = Sidecar::start_as(&env, dir.path(), &env.connect_url, "rbac", &[], Some(&path));
    let name = env.connector_name("rbac");
    create(
        &env,
        &configmap(
            "cm",
            &[],
            &[("r.json", source_template(&name, &dir.path().join("in"), &env.id, ""))],
        ),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    wait_event(&env, "cm", "Applied", &name).await;
    delete_and_wait_gone(&env, "cm").await;
    wait_absent(&env.connect_url, &name).await;
    assert!(!sidecar.log().contains("forbidden"), "{}", sidecar.process.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_restart_brings_a_failed_task_back() {
    let env = TestEnv::new("reconcile-auto-restart").await;
    let dir = test_dir();
    let _sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &["--auto-restart"]);
    let name = env.connector_name("sink");
    // The sink's task fails at start: its output directory does not exist yet.
    let missing = dir.path().join("not-yet");
    let template = format!(
        r#"{{"name": "{name}", "config": {{"connector.class": "FileStreamSink", "file": "{}", "topics": "{}-t", "tasks.max": 1}}}}"#,
        missing.join("out.txt").display(),
        env.id
    );
    create(&env, &configmap("cm", &[], &[("s.json", template)])).await;
    let task_state = |want: &'static str, min_restarts: u64| {
        let (env, name) = (&env, &name);
        move || async move {
            let status = annotation(env, "cm", "connect-gate.io/status")
                .await
                .ok_or("no status annotation")?;
            let status: Value = serde_json::from_str(&status).map_err(|e| e.to_string())?;
            let restarts = status[name]["restarts"].as_u64().unwrap_or(0);
            if status[name]["tasks"]["0"] == want && restarts >= min_restarts {
                Ok(())
            } else {
                Err(status.to_string())
            }
        }
    };
    eventually("the task to fail and be restarted", WAIT, task_state("FAILED", 1)).await;
    wait_event(&env, "cm", "Restarted", &name).await;
    std::fs::create_dir(&missing).unwrap();
    eventually(
        "a later restart to bring the task to RUNNING",
        WAIT,
        task_state("RUNNING", 2),
    )
    .await;
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_connectors_are_left_alone_unless_pruning() {
    // A worker of its own: pruning on the shared one would delete other tests' connectors.
    let env = TestEnv::new("reconcile-prune").await;
    let dir = test_dir();
    let worker_name = format!("pr-{}", support::random_suffix());
    let url = OwnWorker::start(&worker_name);
    let _worker = OwnWorker { name: worker_name };
    let rest = support::WorkerRest::new(&url);
    let stranger = env.connector_name("stranger");
    let input = dir.path().join("in.txt");
    let config =
        json!({"connector.class": SOURCE, "file": input.display().to_string(), "topic": env.id, "tasks.max": "1"});
    let (status, body) = rest.put(&format!("/connectors/{stranger}/config"), &config).await;
    assert_eq!(status, 201, "{body}");

    let managed = env.connector_name("managed");
    create(
        &env,
        &configmap("cm", &[], &[("m.json", source_template(&managed, &input, &env.id, ""))]),
    )
    .await;
    let sidecar = Sidecar::start(&env, dir.path(), &url, "solo", &[]);
    wait_status(&env, "cm", &managed, "RUNNING").await;
    // Several full passes later, the connector nobody declares is still there.
    eventually("two more passes", WAIT, || async {
        let passes = sidecar.metric("connect_gate_reconciles_total", &[]).await?;
        if passes >= 3.0 {
            Ok(())
        } else {
            Err(format!("{passes} passes"))
        }
    })
    .await;
    assert_eq!(
        rest.get(&format!("/connectors/{stranger}")).await.0,
        200,
        "left alone without --prune-unmanaged"
    );
    drop(sidecar);

    let _pruning = Sidecar::start(&env, dir.path(), &url, "pruner", &["--prune-unmanaged"]);
    eventually("the unmanaged connector to be pruned", WAIT, || async {
        match rest.get(&format!("/connectors/{stranger}")).await.0 {
            404 => Ok(()),
            code => Err(format!("GET answered {code}")),
        }
    })
    .await;
    assert_eq!(
        rest.get(&format!("/connectors/{managed}")).await.0,
        200,
        "the declared connector stays"
    );
    delete_and_wait_gone(&env, "cm").await;
}
