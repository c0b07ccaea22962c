//! `connect-gate plan` on the real stack: for a series of changes to the manifests, the plan is
//! taken first, then the same manifests are applied to the API server and a real sidecar
//! reconciles them through a recording proxy; the REST writes it makes are exactly the plan's.
//! Plan equals effect: both come from the reconciler's one planner.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::ccloud::CloudStandIn;
use support::proxies::Recorder;
use support::sidecar::*;
use support::{BIN, TestEnv, eventually};

/// A ConfigMap of the "repository": name, labels, data keys.
struct Manifest {
    name: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    data: Vec<(&'static str, String)>,
}

impl Manifest {
    fn object(&self, namespace: &str) -> Value {
        let mut labels: BTreeMap<&str, &str> = [("destination", "connect")].into();
        labels.extend(self.labels.iter().copied());
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": namespace, "labels": labels},
            "data": self.data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// A FileStreamSource declaration; `topic` is spliced in as is (a quoted string or `$VAR`).
fn declaration(name: &str, file: &Path, topic: &str, tasks: u32, top: &str) -> String {
    format!(
        r#"{{"name": "{name}"{top}, "config": {{"connector.class": "{SOURCE}", "file": "{}", "topic": {topic}, "tasks.max": {tasks}}}}}"#,
        file.display()
    )
}

struct Plan {
    code: i32,
    json: Value,
    text: String,
}

impl Plan {
    /// The requests the plan says the reconciler sends, distinct and sorted.
    fn requests(&self) -> BTreeSet<String> {
        self.json["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["request"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Runs `connect-gate plan` over `manifests` (JSON and text) against the worker itself (its
/// reads need no recording) and the test's namespace.
fn plan(env: &TestEnv, dir: &Path, manifests: &[Manifest], extra: &[&str]) -> Plan {
    plan_as(env, dir, manifests, extra, &env.stack.kubeconfig)
}

/// [`plan`] with `kubeconfig`'s identity.
fn plan_as(env: &TestEnv, dir: &Path, manifests: &[Manifest], extra: &[&str], kubeconfig: &Path) -> Plan {
    let file = dir.join("manifests.yaml");
    let docs: Vec<String> = manifests
        .iter()
        .map(|m| serde_norway::to_string(&m.object(&env.namespace)).unwrap())
        .collect();
    std::fs::write(&file, docs.join("---\n")).unwrap();
    let run = |output: &str| {
        let mut args = vec![
            "plan",
            "--connect-url",
            &env.connect_url,
            "--namespace",
            &env.namespace,
            "--vars-dir",
            dir.join("vars").to_str().unwrap(),
            "--env-file",
            dir.join("env").to_str().unwrap(),
            "--output",
            output,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(file.to_str().unwrap().to_string());
        let out = Command::new(BIN)
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            stderr,
        )
    };
    let (code, stdout, stderr) = run("json");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let (text_code, text, _) = run("text");
    assert_eq!(code, text_code, "{text}");
    eprintln!("{text}");
    Plan { code, json, text }
}

/// Applies `manifests` as Flux would (server-side apply; connector ConfigMaps it no longer has
/// are deleted), waits for the reconciler to make the writes it will and settle, and returns
/// the distinct writes it made meanwhile.
async fn apply(
    env: &TestEnv,
    sidecar: &Sidecar,
    recorder: &Recorder,
    manifests: &[Manifest],
    expected: usize,
) -> BTreeSet<String> {
    let before = recorder.writes().len();
    let api = env.api::<ConfigMap>();
    for m in manifests {
        api.patch(
            m.name,
            &PatchParams::apply("plan-e2e").force(),
            &Patch::Apply(&m.object(&env.namespace)),
        )
        .await
        .unwrap();
    }
    let keep: BTreeSet<&str> = manifests.iter().map(|m| m.name).collect();
    for cm in api
        .list(&ListParams::default().labels("destination=connect"))
        .await
        .unwrap()
    {
        let name = cm.metadata.name.unwrap_or_default();
        if !keep.contains(name.as_str()) && cm.metadata.deletion_timestamp.is_none() {
            api.delete(&name, &DeleteParams::default()).await.unwrap();
        }
    }
    let made = || -> BTreeSet<String> {
        recorder.writes()[before..]
            .iter()
            .map(|w| format!("{} {}", w.method, w.path))
            .collect()
    };
    eventually(&format!("{expected} distinct write(s)"), WAIT, || async {
        let made = made();
        if made.len() >= expected {
            Ok(())
        } else {
            Err(format!("{made:?}"))
        }
    })
    .await;
    // Settled: a few passes more, which must write nothing new.
    wait_passes(sidecar, 3.0).await;
    made()
}

async fn wait_gone(env: &TestEnv, name: &str) {
    eventually(&format!("ConfigMap {name} to be gone"), WAIT, || async {
        match env.api::<ConfigMap>().get_opt(name).await.unwrap() {
            None => Ok(()),
            Some(cm) => Err(format!("finalizers {:?}", cm.metadata.finalizers)),
        }
    })
    .await;
}

fn set(lines: &[String]) -> BTreeSet<String> {
    lines.iter().cloned().collect()
}

fn put(name: &str) -> String {
    format!("PUT /connectors/{name}/config")
}

fn delete(name: &str) -> String {
    format!("DELETE /connectors/{name}")
}

/// The change the plan lists for `connector`.
fn change<'a>(plan: &'a Plan, connector: &str) -> &'a Value {
    plan.json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connector"] == connector)
        .unwrap_or_else(|| panic!("no change for {connector}: {}", plan.json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_is_exactly_what_the_reconciler_then_does() {
    let env = TestEnv::new("plan-equals-effect").await;
    let dir = test_dir();
    let vars = dir.path().join("vars");
    std::fs::create_dir_all(&vars).unwrap();
    let (topic_a, topic_b) = (format!("{}-var-a", env.id), format!("{}-var-b", env.id));
    std::fs::write(vars.join("TOPIC_A"), &topic_a).unwrap();
    std::fs::write(vars.join("TOPIC_B"), &topic_b).unwrap();
    let recorder = Recorder::start(&env.connect_url).await;
    let mut sidecar = Sidecar::start(&env, dir.path(), &recorder.url, "first", &[]);
    let input = dir.path().join("in.txt");
    let [plain, var, state, off, renamed, adoptee, stranger] =
        ["plain", "var", "state", "off", "renamed", "adoptee", "stranger"].map(|s| env.connector_name(s));
    let topic = |s: &str| format!("\"{}-{s}\"", env.id);

    // Nothing declared, nothing running: no change, exit 0 even under --fail-on-changes.
    let p = plan(&env, dir.path(), &[], &["--fail-on-changes"]);
    assert_eq!((p.code, p.requests().len()), (0, 0), "{}", p.text);

    // Create: four connectors, one of them from a variable.
    let mut a = Manifest {
        name: "a",
        labels: vec![],
        data: vec![
            ("plain.json", declaration(&plain, &input, &topic("p1"), 1, "")),
            ("var.json", declaration(&var, &input, "$TOPIC_A", 1, "")),
            ("state.json", declaration(&state, &input, &topic("s"), 1, "")),
        ],
    };
    let b = Manifest {
        name: "b",
        labels: vec![],
        data: vec![("off.json", declaration(&off, &input, &topic("o"), 1, ""))],
    };
    let mut manifests = vec![a, b];
    let p = plan(&env, dir.path(), &manifests, &["--fail-on-changes"]);
    assert_eq!(p.code, 3, "changes under --fail-on-changes: {}", p.text);
    let want = set(&[put(&plain), put(&var), put(&state), put(&off)]);
    assert_eq!(p.requests(), want, "{}", p.text);
    assert!(
        p.json["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["kind"] == "create")
    );
    assert!(!p.text.contains(&topic_a), "a variable's value shown: {}", p.text);
    assert!(p.text.contains("⟨$TOPIC_A⟩"), "{}", p.text);
    assert_eq!(apply(&env, &sidecar, &recorder, &manifests, want.len()).await, want);
    wait_status(&env, "a", &state, "RUNNING").await;

    // Update a plain key and a key from a variable; pause one.
    a = manifests.remove(0);
    a.data = vec![
        ("plain.json", declaration(&plain, &input, &topic("p2"), 1, "")),
        ("var.json", declaration(&var, &input, "$TOPIC_B", 1, "")),
        (
            "state.json",
            declaration(&state, &input, &topic("s"), 1, r#", "state": "paused""#),
        ),
    ];
    manifests.insert(0, a);
    let p = plan(&env, dir.path(), &manifests, &[]);
    let want = set(&[put(&plain), put(&var), format!("PUT /connectors/{state}/pause")]);
    assert_eq!((p.code, p.requests()), (0, want.clone()), "{}", p.text);
    let keys = &change(&p, &plain)["keys"];
    assert_eq!(
        keys,
        &json!([{"key": "topic", "old": format!("{}-p1", env.id), "new": format!("{}-p2", env.id), "from_inputs": false, "compared": true}])
    );
    let keys = &change(&p, &var)["keys"];
    assert_eq!(
        keys,
        &json!([{"key": "topic", "old": "(hidden)", "new": "⟨$TOPIC_B⟩", "from_inputs": true, "compared": true}])
    );
    assert!(!p.text.contains(&topic_a) && !p.text.contains(&topic_b), "{}", p.text);
    assert_eq!(apply(&env, &sidecar, &recorder, &manifests, want.len()).await, want);
    wait_status(&env, "a", &state, "PAUSED").await;

    // Rename one, remove the data key of another, disable a ConfigMap, restart by token.
    a = manifests.remove(0);
    a.data = vec![
        ("plain.json", declaration(&renamed, &input, &topic("p2"), 1, "")),
        (
            "var.json",
            declaration(&var, &input, "$TOPIC_B", 1, r#", "restart": "t1""#),
        ),
    ];
    manifests[0].labels = vec![("enabled", "false")];
    manifests.insert(0, a);
    let p = plan(&env, dir.path(), &manifests, &[]);
    let want = set(&[
        delete(&plain),
        put(&renamed),
        delete(&state),
        delete(&off),
        format!("POST /connectors/{var}/restart?includeTasks=true&onlyFailed=false"),
    ]);
    assert_eq!(p.requests(), want, "{}", p.text);
    assert_eq!(change(&p, &plain)["cause"], "Renamed");
    assert_eq!(change(&p, &state)["cause"], "KeyRemoved");
    assert_eq!(change(&p, &off)["cause"], "Disabled");
    assert_eq!(apply(&env, &sidecar, &recorder, &manifests, want.len()).await, want);

    // Behind connect-gate's back, with no reconciler running: one of its connectors edited, one
    // of nobody's created (never touched), and another of nobody's that a ConfigMap now declares
    // (adopted).
    sidecar.kill();
    create_on_worker(&env.connect_url, &stranger, &input, "theirs").await;
    create_on_worker(&env.connect_url, &adoptee, &input, "theirs").await;
    let mut edited = config_at(&env.connect_url, &renamed).await.unwrap();
    edited.insert("tasks.max".into(), "2".into());
    let (status, body) = env
        .connect
        .put(&format!("/connectors/{renamed}/config"), &json!(edited))
        .await;
    assert_eq!(status, 200, "{body}");
    manifests.remove(1);
    manifests.push(Manifest {
        name: "c",
        labels: vec![],
        data: vec![("adoptee.json", declaration(&adoptee, &input, &topic("ours"), 1, ""))],
    });
    let p = plan(&env, dir.path(), &manifests, &[]);
    let want = set(&[put(&renamed), put(&adoptee)]);
    assert_eq!(p.requests(), want, "{}", p.text);
    assert_eq!(change(&p, &renamed)["cause"], "DriftChanged");
    assert_eq!(change(&p, &renamed)["keys"][0]["key"], "tasks.max");
    assert_eq!(change(&p, &adoptee)["cause"], "Adopted");
    sidecar = Sidecar::start(&env, dir.path(), &recorder.url, "second", &[]);
    assert_eq!(apply(&env, &sidecar, &recorder, &manifests, want.len()).await, want);
    wait_gone(&env, "b").await;

    // A ConfigMap gone from the manifests is deleted, as Flux prunes it: its connector goes;
    // nobody's stays.
    manifests.pop();
    let p = plan(&env, dir.path(), &manifests, &[]);
    let want = set(&[delete(&adoptee)]);
    assert_eq!(p.requests(), want, "{}", p.text);
    assert_eq!(change(&p, &adoptee)["cause"], "ConfigMapDeleted");
    assert_eq!(apply(&env, &sidecar, &recorder, &manifests, want.len()).await, want);
    wait_gone(&env, "c").await;
    config_at(&env.connect_url, &stranger)
        .await
        .expect("nobody's connector is left alone");

    // A rejected key: exit 1 as `check`, listed, and neither applied nor deleted.
    manifests[0]
        .data
        .push(("bad.json", r#"{"name": "broken", "config": {"#.to_string()));
    let p = plan(&env, dir.path(), &manifests, &[]);
    assert_eq!((p.code, p.requests().len()), (1, 0), "{}", p.text);
    assert_eq!(p.json["rejected"][0]["key"], "bad.json", "{}", p.json);
    assert!(apply(&env, &sidecar, &recorder, &manifests, 0).await.is_empty());
    manifests[0].data.pop();

    // Converged: the plan is empty, and counts what it leaves alone; the read-only Role shipped
    // for CI is all it needs.
    let role: Value = serde_norway::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ci/plan-reader-role.yaml")).unwrap(),
    )
    .unwrap();
    let rules = serde_norway::to_string(&role["rules"]).unwrap();
    let reader = env.service_account_kubeconfig("plan-reader", &rules, dir.path());
    let p = plan_as(&env, dir.path(), &manifests, &["--fail-on-changes"], &reader);
    assert_eq!((p.code, p.requests().len()), (0, 0), "{}", p.text);
    assert_eq!(p.json["unchanged"], 2, "{}", p.json);
    drop(sidecar);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, "").unwrap();
    let run = |args: &[&str], kubeconfig: &Path| {
        let out = Command::new(BIN)
            .arg("plan")
            .args(args)
            .arg(&file)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let missing = dir.path().join("no-kubeconfig");
    let (code, stderr) = run(&[], &missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--connect-url"), "{stderr}");
    // The worker answers (a stand-in for its plugin list), the API server cannot be found.
    let plugins = dir.path().join("plugins.json");
    std::fs::write(&plugins, "[]").unwrap();
    let (code, stderr) = run(
        &[
            "--connect-url",
            "http://127.0.0.1:9",
            "--plugins",
            plugins.to_str().unwrap(),
        ],
        &missing,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("kubeconfig"), "{stderr}");
}

/// The writes the stand-in saw since `from` (paths after the cluster's prefix), distinct.
fn cloud_writes(cloud: &CloudStandIn, from: usize) -> BTreeSet<String> {
    cloud.seen()[from..]
        .iter()
        .filter(|s| s.method != "GET")
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_confluent_cloud_hidden_values_and_server_side_keys_are_no_change() {
    let env = TestEnv::new("plan-cloud").await;
    let dir = test_dir();
    let behind = env.start_connect_worker("cloud", true);
    let cloud = CloudStandIn::start(
        &behind.url,
        behind.basic_auth.clone(),
        "env-plan",
        "lkc-plan",
        ("CCKEY", "ccsecret"),
    )
    .await;
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (key, secret) = (file("api-key", "CCKEY\n"), file("api-secret", "ccsecret\n"));
    let destinations = file(
        "destinations.yaml",
        &format!(
            "confluentCloud: {{url: {}, apiKeyFile: {key}, apiSecretFile: {secret}}}\n",
            cloud.url
        ),
    );
    let hash_key = file("hash.key", &"k".repeat(40));
    let api_secret = format!("{}-s3cret", env.id);
    file("env", &format!("KAFKA_API_SECRET={api_secret}\n"));
    std::fs::create_dir_all(dir.path().join("vars")).unwrap();
    let flags = [
        "--destinations",
        destinations.as_str(),
        "--hash-key-file",
        hash_key.as_str(),
    ];
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &flags);
    // The ConfigMap the ccloud-operator writes for the cluster.
    let operator = "cloud.env.plan.kafka.one";
    env.api::<ConfigMap>()
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": operator, "labels": {"environment_id": "env-plan", "resource_id": "lkc-plan"}},
                "data": {"bootstrap": "SASL_SSL://stand-in.invalid:9092"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let name = env.connector_name("dg");
    let input = dir.path().join("in.txt");
    let declare = |topic: &str| {
        vec![Manifest {
            name: "dg",
            labels: vec![("destination.cc", operator)],
            data: vec![(
                "dg.json",
                declaration(&name, &input, &format!("\"{topic}\""), 1, "").replacen(
                    r#""tasks.max""#,
                    r#""kafka.api.secret": env.KAFKA_API_SECRET, "tasks.max""#,
                    1,
                ),
            )],
        }]
    };

    // Created through the stand-in.
    let manifests = declare("t1");
    let p = plan(&env, dir.path(), &manifests, &flags);
    let want = set(&[put(&name)]);
    assert_eq!(p.requests(), want, "{}", p.text);
    assert_eq!(
        change(&p, &name)["destination"],
        format!("destination.cc:{operator}"),
        "{}",
        p.json
    );
    assert!(!p.text.contains(&api_secret) && !p.json.to_string().contains(&api_secret));
    let from = cloud.seen().len();
    // The sidecar writes to the stand-in, not through the recorder: wait on what it saw.
    apply_only(&env, &manifests).await;
    eventually("the create through the stand-in", WAIT, || async {
        let made = cloud_writes(&cloud, from);
        if made == want { Ok(()) } else { Err(format!("{made:?}")) }
    })
    .await;
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(cloud_writes(&cloud, from), want);

    // Converged: the masked secret and the keys Confluent Cloud adds are no difference.
    let p = plan(
        &env,
        dir.path(),
        &manifests,
        &[&flags[..], &["--fail-on-changes"]].concat(),
    );
    assert_eq!((p.code, p.requests().len()), (0, 0), "{}", p.text);

    // A plain key changes: only it is listed; the hidden secret is the declared one (applied
    // hash), so it is not.
    let manifests = declare("t2");
    let p = plan(&env, dir.path(), &manifests, &flags);
    assert_eq!(p.requests(), want, "{}", p.text);
    let keys: Vec<&str> = change(&p, &name)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["topic"], "{}", p.json);
    let from = cloud.seen().len();
    apply_only(&env, &manifests).await;
    eventually("the update through the stand-in", WAIT, || async {
        let made = cloud_writes(&cloud, from);
        if made == want { Ok(()) } else { Err(format!("{made:?}")) }
    })
    .await;
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(cloud_writes(&cloud, from), want);
    drop(sidecar);
}

/// Server-side applies `manifests` (the namespace holds no other connector ConfigMap here).
async fn apply_only(env: &TestEnv, manifests: &[Manifest]) {
    for m in manifests {
        env.api::<ConfigMap>()
            .patch(
                m.name,
                &PatchParams::apply("plan-e2e").force(),
                &Patch::Apply(&m.object(&env.namespace)),
            )
            .await
            .unwrap();
    }
}
