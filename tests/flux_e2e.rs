//! "connect-gate catches bad PRs at Flux sync time", with the real Flux: kustomize-controller
//! (built from its Go module by tests/stack, run by `tests/stack/flux`) applies a Git repository's
//! connector ConfigMaps to the real kube-apiserver, where `connect-gate serve` (the shipped
//! webhook/ registrations, a certificate from `connect-gate certs`) judges them against the real
//! Kafka Connect worker and reconciles what is admitted.
//!
//! The Flux objects are deploy/flux/connectors.yaml as shipped, with only what this stack needs
//! substituted: its namespace (the test's), `targetNamespace` (the test's: the sidecar
//! reconciles one namespace), `sourceRef` (an ExternalArtifact instead of the GitRepository, as
//! no source-controller or Git server runs here) and no `dependsOn` (the `connect-gate`
//! Kustomization deploys a Deployment, which nothing runs on this stack). The Git repository is
//! a real one, made with `git` in a temp dir, holding deploy/base/connectors as shipped (connector
//! names and FileStream paths made unique to the test); each revision is its commit, archived by
//! `git archive` and served by this test over HTTP. The test writes the ExternalArtifact's
//! status (URL, sha256 digest, revision `main@sha1:<commit>`): the artifact contract that Flux's
//! source controllers fulfil. Everything else (fetch, build, server-side dry run, apply, prune,
//! status, Events) is kustomize-controller's own.
//!
//! The story, each step read from the Kustomization's status and Events as a Flux user would:
//!   1. a revision with one good and one bad connector: Ready=False, the message carries the
//!      webhook's denial naming the bad connector; nothing of the revision is applied (the whole
//!      set is dry-run first: the good ConfigMap was judged and admitted in the dry run, yet does
//!      not exist) and no connector appears on the worker;
//!   2. the fix: Ready=True, both ConfigMaps applied, the reconciler creates both connectors and
//!      they run;
//!   3. a revision without one ConfigMap (prune: true): Flux deletes it, connect-gate's finalizer
//!      holds it until its connector is deleted on the worker, then it is gone;
//!   4. deleting the Kustomization prunes the rest the same way.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::gitops::{GitRepo, Source, run};
use support::{BIN, Flux, Process, Registrations, TestEnv, eventually, free_port};

const WAIT: Duration = Duration::from_secs(120);
const FINALIZER: &str = "connect-gate.io/cleanup";
/// The Kustomization's name in deploy/flux/connectors.yaml.
const KUSTOMIZATION: &str = "connectors";
/// The source the test publishes (the example's GitRepository is named so too).
const SOURCE: &str = "connect-gate";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

// ------------------------------------------------------------------------------ connect-gate

/// `connect-gate serve` (webhook + reconciler for the test namespace), registered with the
/// shipped webhook/*.yaml pointed at it (clientConfig.url + caBundle instead of the Service) and
/// scoped to the test namespace (registrations are cluster-wide; other tests must not see it).
struct Gate {
    process: Process,
    metrics_port: u16,
    registrations: Option<Registrations>,
}

impl Gate {
    async fn start(env: &TestEnv, dir: &Path) -> Gate {
        let certs = dir.join("certs");
        run(Command::new(BIN)
            .arg("certs")
            .arg("--out")
            .arg(&certs)
            .args(["--ip", "127.0.0.1", "--dns", "localhost"]));
        // The template variables of deploy/base/template-inputs.yaml's shared ConfigMap, as its
        // whole-directory mount would show them ($ORDERS_TOPIC).
        let vars = dir.join("vars");
        std::fs::create_dir_all(&vars).unwrap();
        let inputs = read("deploy/base/template-inputs.yaml");
        for doc in serde_norway::Deserializer::from_str(&inputs) {
            let object: Value = serde::Deserialize::deserialize(doc).unwrap();
            if object["kind"] == "ConfigMap" {
                for (key, value) in object["data"].as_object().unwrap() {
                    std::fs::write(vars.join(key), value.as_str().unwrap()).unwrap();
                }
            }
        }
        let (port, metrics_port) = (free_port(), free_port());
        let identity = format!("flux-e2e-{}", support::random_suffix());
        let args: Vec<String> = [
            "serve",
            "--namespace",
            &env.namespace,
            "--connect-url",
            &env.connect_url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--tls-cert",
            certs.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            certs.join("tls.key").to_str().unwrap(),
            "--vars-dir",
            vars.to_str().unwrap(),
            "--resync",
            "2s",
            "--lease-duration",
            "4s",
        ]
        .map(String::from)
        .into();
        let process = Process::spawn(&args, &[("POD_NAME", identity.as_ref())], dir.join("serve.log"));
        let mut gate = Gate {
            process,
            metrics_port,
            registrations: None,
        };

        connect_gate::install_crypto_provider();
        let ca = std::fs::read(certs.join("ca.crt")).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let readyz = format!("https://127.0.0.1:{port}/readyz");
        eventually("connect-gate serve to be ready", Duration::from_secs(60), || async {
            match client.get(&readyz).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("readyz {}", r.status())),
                Err(e) => Err(format!("{e}; log: {}", gate.process.log_tail())),
            }
        })
        .await;

        gate.registrations = Some(Registrations::register(env, port, &ca, &[&env.namespace]).await);
        gate
    }

    /// The validating webhook's `verdict` count for CREATE on /metrics.
    async fn validated(&self, verdict: &str) -> u64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!(
            r#"connect_gate_admission_requests_total{{webhook="validate",operation="CREATE",verdict="{verdict}"}} "#
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

// ------------------------------------------------------------------ reading Flux's status

/// The Kustomization as `kubectl get -o json` shows it.
fn kustomization(env: &TestEnv) -> Result<Value, String> {
    let out = env.kubectl(&["get", "kustomization", KUSTOMIZATION, "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn condition<'a>(k: &'a Value, kind: &str) -> Option<&'a Value> {
    k["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// What `flux get kustomizations` prints, from the same fields it reads (NAME, REVISION =
/// status.lastAppliedRevision, SUSPENDED = spec.suspend, READY and MESSAGE = the Ready condition).
fn flux_get(k: &Value) -> String {
    let ready = condition(k, "Ready").cloned().unwrap_or(Value::Null);
    let row = [
        text(&k["metadata"]["name"]).to_string(),
        text(&k["status"]["lastAppliedRevision"]).to_string(),
        if k["spec"]["suspend"] == true { "True" } else { "False" }.to_string(),
        text(&ready["status"]).to_string(),
        text(&ready["message"]).to_string(),
    ];
    let header = ["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"];
    let widths: Vec<usize> = header.iter().zip(&row).map(|(h, v)| h.len().max(v.len())).collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i + 1 == cells.len() {
                    c.to_string()
                } else {
                    format!("{c:<w$}\t")
                }
            })
            .collect::<String>()
    };
    format!(
        "{}\n{}",
        line(header.to_vec()),
        line(row.iter().map(String::as_str).collect())
    )
}

/// The Events a Flux user reads with `kubectl events --for kustomization/connectors` (or
/// `flux events`): (type, reason, message), oldest first.
fn kustomization_events(env: &TestEnv) -> Vec<(String, String, String)> {
    events_for(env, "Kustomization", KUSTOMIZATION)
}

fn events_for(env: &TestEnv, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let list: Value =
        serde_json::from_str(&env.kubectl_ok(&["get", "events", "--field-selector", &selector, "-o", "json"])).unwrap();
    let mut items: Vec<&Value> = list["items"].as_array().unwrap().iter().collect();
    items.sort_by_key(|e| {
        text(&e["lastTimestamp"])
            .to_string()
            .max(text(&e["eventTime"]).to_string())
    });
    items
        .iter()
        .map(|e| {
            (
                text(&e["type"]).into(),
                text(&e["reason"]).into(),
                text(&e["message"]).into(),
            )
        })
        .collect()
}

/// What a Flux user looks at, for the test log: kubectl's view of the Kustomization (the
/// CRD's printer columns), the `flux get kustomizations` view, and its Events.
fn show(env: &TestEnv, title: &str) {
    let k = kustomization(env).unwrap_or_default();
    eprintln!("\n==== {title}");
    eprintln!(
        "$ kubectl get kustomization {KUSTOMIZATION}\n{}",
        env.kubectl_ok(&["get", "kustomization", KUSTOMIZATION]).trim_end()
    );
    eprintln!(
        "$ flux get kustomizations   # equivalent, from .status\n{}",
        flux_get(&k)
    );
    let events = env.kubectl(&["events", "--for", &format!("kustomization/{KUSTOMIZATION}")]);
    eprintln!(
        "$ kubectl events --for kustomization/{KUSTOMIZATION}\n{}{}",
        String::from_utf8_lossy(&events.stdout).trim_end(),
        String::from_utf8_lossy(&events.stderr).trim_end()
    );
}

/// Waits until the Kustomization's last attempt was `revision` and its Ready condition has
/// `reason` (`ReconciliationFailed` with status False, or `ReconciliationSucceeded` with True).
async fn wait_reconciled(env: &TestEnv, flux: &Flux, revision: &str, reason: &str) -> Value {
    eventually(
        &format!("Kustomization {KUSTOMIZATION} {reason} for {revision}"),
        WAIT,
        || async {
            let k = kustomization(env)?;
            let c = condition(&k, "Ready").cloned().unwrap_or(Value::Null);
            let attempted = text(&k["status"]["lastAttemptedRevision"]);
            // kustomize-controller can report Ready before lastAppliedRevision in the same
            // reconciliation: a success is complete once both say so.
            let applied = reason != "ReconciliationSucceeded" || text(&k["status"]["lastAppliedRevision"]) == revision;
            if attempted == revision && c["reason"] == reason && applied {
                Ok(k)
            } else {
                Err(format!(
                    "attempted {attempted:?}, Ready {} {}: {}; kustomize-controller log:\n{}",
                    c["status"],
                    c["reason"],
                    c["message"],
                    flux.log_tail(15)
                ))
            }
        },
    )
    .await
}

async fn connector_status(env: &TestEnv, name: &str) -> (u16, Value) {
    env.connect.get(&format!("/connectors/{name}/status")).await
}

fn running(status: &Value) -> bool {
    status["connector"]["state"] == "RUNNING"
        && status["tasks"]
            .as_array()
            .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["state"] == "RUNNING"))
}

/// Connectors on the worker whose names start with the test's prefix.
async fn our_connectors(env: &TestEnv) -> Vec<String> {
    let (code, body) = env.connect.get("/connectors").await;
    assert_eq!(code, 200, "{body}");
    let mut names: Vec<String> = serde_json::from_value(body).unwrap();
    names.retain(|n| n.starts_with(&env.connector_prefix));
    names.sort();
    names
}

fn connector_configmaps(env: &TestEnv) -> Vec<String> {
    let out = env.kubectl_ok(&["get", "configmaps", "-l", "destination=connect", "-o", "name"]);
    out.lines().map(String::from).collect()
}

// ------------------------------------------------------------------------------------ test

#[tokio::test]
async fn flux_applies_only_what_connect_gate_admits_and_prunes_through_the_finalizer() {
    let env = TestEnv::new("flux").await;
    let dir = tempfile::Builder::new().prefix("flux-e2e-").tempdir().unwrap();
    let gate = Gate::start(&env, dir.path()).await;
    // After the gate, so that it is dropped (and its leftover Kustomizations pruned) first.
    let flux = Flux::ensure();

    // The repository: deploy/base/connectors as shipped, with connector names unique to this
    // test (the worker is shared) and the FileStream files in the test's temp dir.
    let source_name = env.connector_name("orders-file-source");
    let sink_name = env.connector_name("orders-file-sink");
    let files = dir.path().display().to_string();
    let shipped = |file: &str| {
        read(&format!("deploy/base/connectors/{file}"))
            .replace(
                r#""name": "orders-file-source""#,
                &format!(r#""name": "{source_name}""#),
            )
            .replace(r#""name": "orders-file-sink""#, &format!(r#""name": "{sink_name}""#))
            .replace("/tmp/", &format!("{files}/"))
    };
    let repo = GitRepo::init(dir.path().join("repo"));
    let path = "deploy/base/connectors";
    repo.write(&format!("{path}/kustomization.yaml"), &shipped("kustomization.yaml"));
    repo.write(
        &format!("{path}/orders-file-source.yaml"),
        &shipped("orders-file-source.yaml"),
    );
    let good_sink = shipped("orders-file-sink.yaml");
    assert!(good_sink.contains(r#""connector.class": "FileStreamSink""#));
    // The bad PR: a typo in the sink's class.
    let bad_sink = good_sink.replace(
        r#""connector.class": "FileStreamSink""#,
        r#""connector.class": "FileStreamSinc""#,
    );
    repo.write(&format!("{path}/orders-file-sink.yaml"), &bad_sink);
    let rev1 = repo.commit("orders: add a file source and a file sink");

    let source = Source::create(&env.kube, &env.namespace, SOURCE).await;
    source.publish(&repo, &rev1).await;

    // deploy/flux/connectors.yaml, substituted for this stack (see the module docs).
    let mut ks: Value = serde_norway::from_str(&read("deploy/flux/connectors.yaml")).unwrap();
    assert_eq!(ks["kind"], "Kustomization");
    assert_eq!(ks["metadata"]["name"], KUSTOMIZATION);
    assert_eq!(ks["spec"]["path"], format!("./{path}"));
    assert_eq!(ks["spec"]["prune"], true);
    ks["metadata"]["namespace"] = json!(env.namespace);
    ks["spec"]["targetNamespace"] = json!(env.namespace);
    ks["spec"]["sourceRef"] = json!({"kind": "ExternalArtifact", "name": SOURCE});
    ks["spec"].as_object_mut().unwrap().remove("dependsOn");
    let denied_before = gate.validated("denied").await;
    env.kubectl_apply(&serde_json::to_string(&ks).unwrap());

    // ---- 1. the bad revision
    let k = wait_reconciled(&env, &flux, &rev1, "ReconciliationFailed").await;
    show(&env, &format!("revision 1 ({rev1}): one good, one bad connector"));
    let ready = condition(&k, "Ready").unwrap();
    let message = text(&ready["message"]);
    eprintln!("Ready=False message:\n{message}");
    assert_eq!(ready["status"], "False", "{ready}");
    for expected in [
        format!("ConfigMap/{}/orders-file-sink-connector dry-run failed", env.namespace),
        r#"admission webhook "validate.connect-gate.io" denied the request"#.to_string(),
        format!("connector {sink_name}"),
        r#"connector.class "FileStreamSinc" is not installed"#.to_string(),
    ] {
        assert!(
            message.contains(&expected),
            "no {expected:?} in the Ready message:\n{message}"
        );
    }
    assert!(
        !message.contains(&source_name),
        "the good connector is named as bad:\n{message}"
    );
    assert!(source.fetched(&rev1), "kustomize-controller never fetched the artifact");
    // Nothing of the revision applied: no inventory, no applied revision, no ConfigMap (not even
    // the good one, which the dry run judged and the webhook admitted), no connector.
    assert_eq!(text(&k["status"]["lastAppliedRevision"]), "", "{}", k["status"]);
    assert!(
        k["status"]["inventory"]["entries"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{}",
        k["status"]["inventory"]
    );
    assert_eq!(connector_configmaps(&env), Vec::<String>::new());
    // Flux may stop its dry run at the first denial, so the good ConfigMap is not always judged.
    assert!(
        gate.validated("denied").await > denied_before,
        "the webhook did not judge the bad ConfigMap in the dry run"
    );
    let events = kustomization_events(&env);
    assert!(
        events
            .iter()
            .any(|(t, _, m)| t == "Warning" && m.contains("denied the request") && m.contains(&sink_name)),
        "no Warning Event with the denial: {events:?}"
    );
    assert_eq!(our_connectors(&env).await, Vec::<String>::new());

    // ---- 2. the fix
    repo.write(&format!("{path}/orders-file-sink.yaml"), &good_sink);
    let rev2 = repo.commit("orders: fix the sink's connector.class");
    source.publish(&repo, &rev2).await;
    let k = wait_reconciled(&env, &flux, &rev2, "ReconciliationSucceeded").await;
    let ready = condition(&k, "Ready").unwrap();
    assert_eq!(ready["status"], "True", "{ready}");
    assert_eq!(text(&ready["message"]), format!("Applied revision: {rev2}"));
    assert_eq!(text(&k["status"]["lastAppliedRevision"]), rev2);
    for name in [&source_name, &sink_name] {
        eventually(&format!("connector {name} RUNNING"), WAIT, || async {
            let (code, status) = connector_status(&env, name).await;
            if code == 200 && running(&status) {
                Ok(())
            } else {
                Err(format!("{code} {status}; sidecar log:\n{}", gate.process.log_tail()))
            }
        })
        .await;
    }
    show(&env, &format!("revision 2 ({rev2}): the fix"));
    for name in [&source_name, &sink_name] {
        let (_, status) = connector_status(&env, name).await;
        eprintln!(
            "$ curl $CONNECT_URL/connectors/{name}/status\n{}",
            json!({"name": status["name"], "connector": status["connector"]["state"],
                   "tasks": status["tasks"].as_array().unwrap().iter().map(|t| &t["state"]).collect::<Vec<_>>()})
        );
    }
    assert_eq!(
        connector_configmaps(&env),
        vec![
            "configmap/orders-file-sink-connector".to_string(),
            "configmap/orders-file-source-connector".to_string()
        ]
    );
    let finalizers = env.kubectl_ok(&[
        "get",
        "configmap",
        "orders-file-source-connector",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(finalizers.contains(FINALIZER), "{finalizers}");

    // ---- 3. a revision without the source's ConfigMap: prune
    repo.remove(&format!("{path}/orders-file-source.yaml"));
    repo.write(
        &format!("{path}/kustomization.yaml"),
        &shipped("kustomization.yaml").replace("  - orders-file-source.yaml\n", ""),
    );
    let rev3 = repo.commit("orders: remove the file source");
    source.publish(&repo, &rev3).await;
    let k = wait_reconciled(&env, &flux, &rev3, "ReconciliationSucceeded").await;
    assert_eq!(text(&k["status"]["lastAppliedRevision"]), rev3);
    eventually(
        "the pruned ConfigMap's connector deleted, then the ConfigMap gone",
        WAIT,
        || async {
            let (code, _) = connector_status(&env, &source_name).await;
            let cms = connector_configmaps(&env);
            if code == 404 && cms == ["configmap/orders-file-sink-connector"] {
                Ok(())
            } else {
                Err(format!(
                    "connector {code}, ConfigMaps {cms:?}; sidecar log:\n{}",
                    gate.process.log_tail()
                ))
            }
        },
    )
    .await;
    show(
        &env,
        &format!("revision 3 ({rev3}): orders-file-source removed, prune: true"),
    );
    let events = kustomization_events(&env);
    assert!(
        events.iter().any(|(_, _, m)| m.contains(&format!(
            "ConfigMap/{}/orders-file-source-connector deleted",
            env.namespace
        ))),
        "no Flux Event for the pruned ConfigMap: {events:?}"
    );
    // The finalizer path: connect-gate deleted the connector, then let the ConfigMap go.
    let cm_events = events_for(&env, "ConfigMap", "orders-file-source-connector");
    eprintln!(
        "$ kubectl events --for configmap/orders-file-source-connector\n{}",
        env.kubectl_ok(&["events", "--for", "configmap/orders-file-source-connector"])
            .trim_end()
    );
    assert!(
        cm_events
            .iter()
            .any(|(_, reason, m)| reason == "Deleted" && m.contains(&source_name)),
        "no Deleted Event from connect-gate: {cm_events:?}"
    );
    let (code, status) = connector_status(&env, &sink_name).await;
    assert!(code == 200 && running(&status), "the sink stopped: {code} {status}");

    // ---- 4. deleting the Kustomization prunes the rest (and is this test's cleanup).
    env.kubectl_ok(&["delete", "kustomization", KUSTOMIZATION, "--wait", "--timeout=120s"]);
    eventually("everything the Kustomization applied gone", WAIT, || async {
        let connectors = our_connectors(&env).await;
        let cms = connector_configmaps(&env);
        if connectors.is_empty() && cms.is_empty() {
            Ok(())
        } else {
            Err(format!("connectors {connectors:?}, ConfigMaps {cms:?}"))
        }
    })
    .await;
    let log = flux.log();
    assert!(!log.contains(r#""level":"panic""#), "kustomize-controller panicked");
    drop(flux);
    drop(gate);
}
