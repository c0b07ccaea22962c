//! deploy/ as users run it, on the real single-node Kubernetes of `tests/stack/up --cluster`
//! (kubelet, containerd and runc running real pods, kube-proxy, the controller manager and
//! scheduler, cert-manager's controllers) with the images built here from the project's own
//! Dockerfile (`tests/stack/images`).
//!
//! `kubectl apply -k tests/stack/overlay` (deploy/ as shipped; only image names, pull policy and
//! the worker's Kafka address change), then, in order, as one story over one deployment:
//!   1. cert-manager issues the webhook's serving certificate and injects its CA into both
//!      webhook registrations; the pod runs with both containers Ready;
//!   2. the bad example ConfigMap is denied by `kubectl apply` with the exact message, through
//!      the `connect-gate-webhook` Service; the example connectors run on the worker in the pod,
//!      their template inputs sent as config-provider references (deploy/'s references mode),
//!      and their status is on their ConfigMaps;
//!   3. runaway templates (memory, time) are denied inside the pod; the sidecar is neither
//!      OOM-killed nor restarted;
//!   4. a Flux revision scales the Deployment from 1 to 2: both pods Ready, both sidecars answer
//!      admission, exactly one holds the Lease and reconciles, a change made while scaled is
//!      applied once;
//!   5. the leader pod is deleted: the other takes over within --lease-duration, a change made
//!      meanwhile is applied once; a Flux revision scales back to 1;
//!   6. a Flux revision with a new image tag rolls the Deployment while dry-runs run in a loop
//!      through the fail-closed webhook: not one fails or is wrongly judged;
//!   7. cert-manager renews the serving certificate while dry-runs run: none fails, every sidecar
//!      reloads it.
//!
//! The NetworkPolicy is applied but not enforced: the stack's CNI (the bridge plugin) does not
//! implement NetworkPolicy, and this test does not claim it.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::gitops::{GitRepo, Source};
use support::{Flux, WorkerRest, eventually, kube_client, run_in_drop, run_script, stack};

const CONNECT: &str = "connect";
const CONNECTORS: &str = "connectors";
const DEPLOYMENT: &str = "connect-service";
const OVERLAY: &str = "tests/stack/overlay";
/// The tag tests/stack/overlay gives connect-gate, and the one the rolling update moves to.
const TAG: &str = "0.1.0";
const NEXT_TAG: &str = "0.1.0-next";
/// Where the Flux objects of this test live, and the platform Kustomization's name
/// (deploy/flux/platform.yaml).
const FLUX_NS: &str = "flux-system";
const PLATFORM: &str = "connect-gate";
/// Pods start a JVM on two shared cores: minutes, not seconds.
const ROLLOUT: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(180);
/// deploy/'s `--lease-duration` (the default).
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn kubectl(args: &[&str]) -> std::process::Output {
    support::kubectl_in(None, args, None)
}

fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn log(step: &str, started: Instant) {
    eprintln!("[cluster_e2e {:>6.1}s] {step}", started.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------------------ the cluster

/// The connect-gate images `tests/run` built from the Dockerfile (`tests/stack/images
/// connect-gate TAG...`), imported into the node's containerd.
fn import_connect_gate_images() {
    let dir = std::env::var("CONNECT_GATE_IMAGES").unwrap_or_else(|_| {
        panic!(
            "CONNECT_GATE_IMAGES is not set: tests/run builds the connect-gate images (tests/stack/images \
             connect-gate {TAG} {NEXT_TAG}) and exports their directory; by hand: \
             tests/stack/images connect-gate --out target/images {TAG} {NEXT_TAG} && \
             export CONNECT_GATE_IMAGES=$PWD/target/images"
        )
    });
    for tag in [TAG, NEXT_TAG] {
        let archive = Path::new(&dir).join(format!("connect-gate-{tag}.oci.tar"));
        assert!(
            archive.exists(),
            "{} is missing (CONNECT_GATE_IMAGES={dir})",
            archive.display()
        );
        run_script(&["node", "import", archive.to_str().unwrap()]);
    }
}

/// Deletes what the test deployed, in an order that leaves nothing stuck: connector ConfigMaps
/// while their reconciler still runs (its finalizer); Flux's Kustomization, suspended first (no
/// new reconcile: it would fetch an artifact nobody serves any more) and without pruning, while
/// its controller still runs; then the controller, deploy/ with the overlay and the namespaces.
/// Waits until they are gone so that later suites may use `connect` and `connectors` again.
#[derive(Default)]
struct Teardown {
    flux: Option<Flux>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let flux = self.flux.take();
        let overlay = repo_root().join(OVERLAY).display().to_string();
        run_in_drop(async move {
            let quiet = |line: &str| drop(kubectl(&line.split(' ').collect::<Vec<_>>()));
            quiet(&format!(
                "delete configmaps -n {CONNECTORS} -l destination=connect --timeout=90s"
            ));
            // Whatever the reconciler could not finish (it may be gone): free it.
            let out = kubectl(&["get", "configmaps", "-n", CONNECTORS, "-o", "name"]);
            for name in String::from_utf8_lossy(&out.stdout).lines() {
                quiet(&format!(
                    r#"patch -n {CONNECTORS} {name} --type=merge -p {{"metadata":{{"finalizers":null}}}}"#
                ));
            }
            let kustomizations = "kustomizations.kustomize.toolkit.fluxcd.io";
            quiet(&format!(
                r#"patch -n {FLUX_NS} {kustomizations} {PLATFORM} --type=merge -p {{"spec":{{"prune":false,"suspend":true}}}}"#
            ));
            quiet(&format!("delete -n {FLUX_NS} {kustomizations} --all --timeout=60s"));
            drop(flux);
            quiet(&format!("delete -k {overlay} --ignore-not-found --timeout=180s"));
            quiet(&format!(
                "delete namespace {CONNECT} {CONNECTORS} {FLUX_NS} --ignore-not-found --timeout=180s"
            ));
        });
    }
}

async fn pods(kube: &kube::Client) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(kube.clone(), CONNECT);
    api.list(&ListParams::default().labels("app=connect-service"))
        .await
        .unwrap()
        .items
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && status
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c.ready))
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap()
}

fn image_of(pod: &Pod, container: &str) -> String {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
        .unwrap()
}

/// Waits until exactly `n` pods exist, all Ready with both containers, all running `image` for
/// connect-gate, and the Deployment says so too.
async fn wait_pods(kube: &kube::Client, n: usize, image: &str) -> Vec<Pod> {
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), CONNECT);
    eventually(&format!("{n} Ready pod(s) running {image}"), ROLLOUT, || async {
        let pods = pods(kube).await;
        let ready: Vec<Pod> = pods
            .iter()
            .filter(|p| is_ready(p) && image_of(p, "connect-gate") == image)
            .cloned()
            .collect();
        let d = deployments.get(DEPLOYMENT).await.map_err(|e| e.to_string())?;
        let status = d.status.unwrap_or_default();
        let settled = status.updated_replicas == Some(n as i32)
            && status.ready_replicas == Some(n as i32)
            && status.replicas == Some(n as i32);
        if ready.len() == n && pods.len() == n && settled {
            Ok(ready)
        } else {
            Err(format!(
                "{} pods, {} ready on {image}; deployment {status:?}: {}",
                pods.len(),
                ready.len(),
                pods.iter().map(pod_summary).collect::<Vec<_>>().join("; ")
            ))
        }
    })
    .await
}

fn pod_summary(p: &Pod) -> String {
    let status = p.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{} ready={} restarts={} state={:?}",
                        c.name, c.ready, c.restart_count, c.state
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "{} {:?} [{containers}]",
        name_of(p),
        status.and_then(|s| s.phase.clone())
    )
}

/// The worker's REST API through the `connect` Service (ClusterIP, routed by kube-proxy).
async fn worker(kube: &kube::Client) -> WorkerRest {
    let services: Api<Service> = Api::namespaced(kube.clone(), CONNECT);
    let ip = services.get("connect").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    WorkerRest::new(&format!("http://{ip}:80"))
}

async fn wait_running(worker: &WorkerRest, name: &str) {
    eventually(
        &format!("connector {name} RUNNING on the worker in the pod"),
        WAIT,
        || async {
            // Through the Service: a pod going away may take a request before it leaves it.
            let (code, body) = worker
                .try_request(reqwest::Method::GET, &format!("connectors/{name}/status"), None)
                .await?;
            let tasks = body["tasks"]
                .as_array()
                .map(|t| t.iter().all(|t| t["state"] == "RUNNING") && !t.is_empty());
            if code == 200 && body["connector"]["state"] == "RUNNING" && tasks == Some(true) {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        },
    )
    .await;
}

async fn wait_config(worker: &WorkerRest, name: &str, key: &str, value: &str) {
    eventually(&format!("{name}'s {key} = {value} on the worker"), WAIT, || async {
        let (code, body) = worker
            .try_request(reqwest::Method::GET, &format!("connectors/{name}/config"), None)
            .await?;
        if code == 200 && body[key] == value {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
}

async fn lease_holder(kube: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(kube.clone(), CONNECTORS);
    api.get_opt("connect-gate")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// A metric's value on one pod's sidecar (its metrics port, plain HTTP, from the node).
async fn metric(pod: &Pod, name: &str) -> Result<f64, String> {
    let text = reqwest::get(format!("http://{}:9090/metrics", pod_ip(pod)))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    Ok(support::sidecar::sum_metric(&text, name, &[]))
}

// ------------------------------------------------------------------------------ admission

/// A connector ConfigMap for namespace `connectors` with one key rendering `template`.
fn connector_configmap(name: &str, key: &str, template: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": CONNECTORS, "labels": {"destination": "connect"}},
        "data": {key: template},
    }))
    .unwrap()
}

fn sink_template(name: &str, file: &str) -> String {
    format!(
        r#"{{"name": "{name}", "config": {{"connector.class": "FileStreamSink", "topics": $ORDERS_TOPIC, "file": "{file}", "tasks.max": 1}}}}"#
    )
}

/// The serving certificate's CA, from the Secret cert-manager wrote.
async fn webhook_ca(kube: &kube::Client) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), CONNECT);
    let secret = secrets.get("connect-gate-webhook-tls").await.unwrap();
    secret.data.unwrap()["ca.crt"].0.clone()
}

/// Sends an AdmissionReview for creating `cm` straight to one pod's webhook port, with the
/// Service's name for TLS (as the API server checks it); returns `response`.
async fn review_at(pod: &Pod, ca: &[u8], cm: &ConfigMap) -> Value {
    let addr = format!("{}:8443", pod_ip(pod)).parse().unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .resolve("connect-gate-webhook.connect.svc", addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "cluster-e2e", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": CONNECTORS, "name": cm.metadata.name, "operation": "CREATE",
            "userInfo": {"username": "cluster-e2e"}, "dryRun": true,
            "object": cm,
        }
    });
    let resp = client
        .post("https://connect-gate-webhook.connect.svc:8443/validate")
        .json(&review)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /validate at pod {}: {e}", name_of(pod)));
    assert!(resp.status().is_success(), "pod {}: {}", name_of(pod), resp.status());
    resp.json::<Value>().await.unwrap()["response"].clone()
}

/// Server-side dry-run creates through the API server and the fail-closed webhook, in a loop
/// until stopped: a good ConfigMap must be admitted and a bad one denied by connect-gate's
/// judgement, every time. Anything else (a webhook call that failed, a timeout) is a failure.
struct DryRuns {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl DryRuns {
    fn start(kube: &kube::Client) -> DryRuns {
        let stop = Arc::new(AtomicBool::new(false));
        let api: Api<ConfigMap> = Api::namespaced(kube.clone(), CONNECTORS);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let good = connector_configmap(
                "dry-run-good",
                "good.json",
                &sink_template("dry-run-good", "/tmp/dry.txt"),
            );
            let bad = connector_configmap(
                "dry-run-bad",
                "bad.json",
                r#"{"name": "dry-run-bad", "config": {"connector.class": "FileStreamSinc", "topics": "t"}}"#,
            );
            let params = PostParams {
                dry_run: true,
                field_manager: None,
            };
            let (mut sent, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                match api.create(&params, &good).await {
                    Ok(_) => {}
                    Err(e) => failures.push(format!(
                        "good ConfigMap not admitted after {:?}: {e}",
                        started.elapsed()
                    )),
                }
                match api.create(&params, &bad).await {
                    Err(kube::Error::Api(e)) if e.message.contains("connect-gate rejected 1 connector(s)") => {}
                    other => failures.push(format!("bad ConfigMap not denied by connect-gate: {other:?}")),
                }
                sent += 2;
            }
            (sent, failures)
        });
        DryRuns { stop, task }
    }

    /// Stops the loop; panics on any failure; returns how many were sent.
    async fn finish(self, during: &str) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, failures) = self.task.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} of {sent} dry-runs failed during {during}:\n{}",
            failures.len(),
            failures.join("\n")
        );
        sent
    }
}

// ------------------------------------------------------------------------------ Flux

/// The platform under Flux as deploy/flux/platform.yaml ships it, with the source an
/// ExternalArtifact (no source-controller runs here) and the path the stack's overlay.
struct Platform {
    repo: GitRepo,
    source: Source,
    _dir: tempfile::TempDir,
}

impl Platform {
    async fn start(kube: &kube::Client) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let repo = GitRepo::init(dir.path().join("repo"));
        for tree in ["deploy", "webhook", "certs", OVERLAY] {
            copy_tree(&repo_root().join(tree), &repo.dir.join(tree));
        }
        let revision = repo.commit("deploy/ as applied");
        let _ = kubectl(&["create", "namespace", FLUX_NS]);
        let source = Source::create(kube, FLUX_NS, "connect-gate").await;
        source.publish(&repo, &revision).await;
        let mut ks: Value = serde_norway::from_str(&read("deploy/flux/platform.yaml")).unwrap();
        ks["metadata"]["namespace"] = json!(FLUX_NS);
        ks["spec"]["path"] = json!(format!("./{OVERLAY}"));
        ks["spec"]["sourceRef"] = json!({"kind": "ExternalArtifact", "name": "connect-gate"});
        support::kubectl_in(None, &["apply", "-f", "-"], Some(&ks.to_string()));
        let platform = Platform {
            repo,
            source,
            _dir: dir,
        };
        platform.wait_applied(kube, &revision).await;
        platform
    }

    /// Commits `edit` of `file` as a new revision (a merged PR) and waits until Flux applied it
    /// and the Deployment is rolled out (`wait: true`).
    async fn merge(&self, kube: &kube::Client, file: &str, from: &str, to: &str, message: &str) {
        let path = self.repo.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{file} must hold {from:?} once");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let revision = self.repo.commit(message);
        self.source.publish(&self.repo, &revision).await;
        self.wait_applied(kube, &revision).await;
    }

    async fn wait_applied(&self, kube: &kube::Client, revision: &str) {
        let gvk = GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), FLUX_NS, &ApiResource::from_gvk(&gvk));
        eventually(&format!("Flux to apply {revision} (Ready=True)"), ROLLOUT, || async {
            let ks = api.get(PLATFORM).await.map_err(|e| e.to_string())?;
            let status = &ks.data["status"];
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or_default();
            if status["lastAppliedRevision"] == revision && ready["status"] == "True" {
                Ok(())
            } else {
                Err(format!(
                    "lastAppliedRevision {} Ready {ready}",
                    status["lastAppliedRevision"]
                ))
            }
        })
        .await;
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

// ------------------------------------------------------------------------------ the story

#[tokio::test]
async fn shipped_deployment_runs_scales_rolls_and_renews_on_a_real_node() {
    let started = Instant::now();
    assert_eq!(
        std::env::var("CONNECT_GATE_STACK_CLUSTER").as_deref(),
        Ok("1"),
        "this suite needs the stack's node: `tests/run` starts it (tests/stack/up --cluster)"
    );
    stack();
    let kube = kube_client().await;
    import_connect_gate_images();
    let mut teardown = Teardown::default();

    // 1. deploy/ as shipped.
    kubectl_ok(&["apply", "-k", &repo_root().join(OVERLAY).display().to_string()]);
    log("kubectl apply -k tests/stack/overlay", started);
    kubectl_ok(&[
        "wait",
        "-n",
        CONNECT,
        "--for=condition=Ready",
        "certificates.cert-manager.io",
        "--all",
        "--timeout=180s",
    ]);
    let ca = webhook_ca(&kube).await;
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        eventually(
            &format!("cert-manager to inject the CA into the {kind}"),
            WAIT,
            || async {
                let out = kubectl_ok(&[
                    "get",
                    kind,
                    "connect-gate",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ]);
                let injected = base64_decode(out.trim());
                if injected == ca {
                    Ok(())
                } else {
                    Err(format!("caBundle {:?}", out.trim()))
                }
            },
        )
        .await;
    }
    log("certificates issued, CA injected", started);
    let image = format!("localhost/connect-gate:{TAG}");
    let first = wait_pods(&kube, 1, &image).await;
    log(&format!("pod Ready: {}", pod_summary(&first[0])), started);
    // The sidecar speaks to the API server as the shipped ServiceAccount (its projected token);
    // the Connect worker beside it has no token at all.
    let pod = name_of(&first[0]);
    let sidecar_log = kubectl_ok(&["logs", "-n", CONNECT, &pod, "-c", "connect-gate"]);
    assert!(
        sidecar_log.contains("system:serviceaccount:connect:connect-gate"),
        "the sidecar's SelfSubjectReview names another user:\n{sidecar_log}"
    );
    let token_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let out = kubectl(&["exec", "-n", CONNECT, &pod, "-c", "connect", "--", "ls", token_dir]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No such file"),
        "the Connect worker container has {token_dir}: {out:?}"
    );

    // 2. The denial, exactly as a user sees it, and the examples running.
    let bad = repo_root().join("deploy/examples/bad-connector.yaml");
    let out = kubectl(&["apply", "-n", CONNECTORS, "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "the bad example was admitted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end(), expected_denial(&bad), "kubectl's denial");
    log("bad example denied", started);
    kubectl_ok(&[
        "apply",
        "-k",
        &repo_root().join("deploy/base/connectors").display().to_string(),
    ]);
    let worker = worker(&kube).await;
    for name in ["orders-file-source", "orders-file-sink"] {
        wait_running(&worker, name).await;
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), CONNECTORS);
    eventually("status RUNNING on orders-file-sink-connector", WAIT, || async {
        let cm = configmaps
            .get("orders-file-sink-connector")
            .await
            .map_err(|e| e.to_string())?;
        let status = cm
            .metadata
            .annotations
            .unwrap_or_default()
            .get("connect-gate.io/status")
            .cloned()
            .unwrap_or_default();
        let status: Value = serde_json::from_str(&status).unwrap_or_default();
        if status["orders-file-sink"]["state"] == "RUNNING" {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    log(
        "examples RUNNING in the pod's worker, status on the ConfigMaps",
        started,
    );
    // deploy/ ships --secrets-as references: the worker holds references to the template inputs
    // it mounts at the sidecar's paths, and runs on what they resolve to (the topic above).
    let (code, config) = worker.get("/connectors/orders-file-sink/config").await;
    assert_eq!(code, 200, "{config}");
    assert_eq!(
        config["topics"],
        "${file:/etc/config/connect-gate/shared/shared-client.properties:orders.topic}"
    );
    assert_eq!(config["errors.tolerance"], "${env:ERRORS_TOLERANCE}");

    // 3. Runaway templates inside the pod. The memory one asks for one 16 GB string: past the
    // sandbox's address-space limit at once, however loaded the machine (a slow bomb may meet the
    // time limit first).
    for (key, template, cause) in [
        (
            "memory.json",
            r#"{"name": "runaway-memory", "config": {"connector.class": "FileStreamSink", "topics": ("aaaaaaaaaaaaaaaa" * 1000000000 | length | tostring)}}"#,
            "memory limit",
        ),
        (
            "time.json",
            r#"{"name": "runaway-time", "config": {"connector.class": "FileStreamSink", "topics": (last(range(1e15)) | tostring)}}"#,
            "did not finish within",
        ),
    ] {
        let cm = connector_configmap(&format!("runaway-{}", key.trim_end_matches(".json")), key, template);
        let err = configmaps
            .create(
                &PostParams {
                    dry_run: true,
                    field_manager: None,
                },
                &cm,
            )
            .await
            .unwrap_err();
        let kube::Error::Api(e) = err else {
            panic!("{key}: {err}")
        };
        assert!(
            e.message.contains("connect-gate rejected 1 connector(s)") && e.message.contains(cause),
            "{key}: {}",
            e.message
        );
    }
    let pod = &pods(&kube).await[0];
    let sidecar = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == "connect-gate")
        .unwrap();
    assert_eq!(sidecar.restart_count, 0, "connect-gate restarted: {sidecar:?}");
    assert!(
        sidecar
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_none(),
        "{sidecar:?}"
    );
    log(
        "runaway templates denied in the pod; connect-gate not restarted",
        started,
    );

    // 4. Scaling by PR: Flux takes over the platform, then a revision sets replicas: 2.
    teardown.flux = Some(Flux::ensure());
    let platform = Platform::start(&kube).await;
    log("Flux applies the platform", started);
    platform
        .merge(
            &kube,
            "deploy/base/deployment.yaml",
            "replicas: 1\n",
            "replicas: 2\n",
            "Scale Connect to 2 workers",
        )
        .await;
    let two = wait_pods(&kube, 2, &image).await;
    log("Flux revision: 2 pods Ready", started);
    let good = connector_configmap("both-answer", "good.json", &sink_template("both-answer", "/tmp/b.txt"));
    let bad_cm = connector_configmap(
        "both-answer",
        "bad.json",
        r#"{"name": "b", "config": {"connector.class": "FileStreamSinc"}}"#,
    );
    let ca = webhook_ca(&kube).await;
    for pod in &two {
        assert_eq!(
            review_at(pod, &ca, &good).await["allowed"],
            true,
            "pod {}",
            name_of(pod)
        );
        let denied = review_at(pod, &ca, &bad_cm).await;
        assert_eq!(denied["allowed"], false, "pod {}", name_of(pod));
    }
    let holder = eventually("one Lease holder among the pods", WAIT, || async {
        match lease_holder(&kube).await {
            Some(h) if two.iter().any(|p| name_of(p) == h) => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut leaders = 0.0;
    for pod in &two {
        leaders += metric(pod, "connect_gate_leader").await.unwrap();
    }
    assert_eq!(leaders, 1.0, "exactly one sidecar leads");
    log(&format!("both sidecars judge; {holder} alone reconciles"), started);

    change_and_count(
        &kube,
        &worker,
        "orders-file-sink-connector",
        "orders-file-sink",
        "orders-file-sink.json",
        "file",
        "/tmp/orders-copy.txt",
        "/tmp/orders-copy-2.txt",
    )
    .await;
    log("a change while scaled applied once", started);

    // 5. The leader pod deleted.
    let deleted_at = Instant::now();
    kubectl_ok(&["delete", "pod", "-n", CONNECT, &holder, "--wait=false"]);
    change_source_file(&kube, "/tmp/orders-2.txt").await;
    let successor = eventually(
        "another pod to take the Lease",
        LEASE_DURATION + Duration::from_secs(30),
        || async {
            match lease_holder(&kube).await {
                Some(h) if h != holder => Ok(h),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let takeover = deleted_at.elapsed();
    assert!(
        takeover <= LEASE_DURATION,
        "takeover took {takeover:?}, more than --lease-duration"
    );
    wait_config(&worker, "orders-file-source", "file", "/tmp/orders-2.txt").await;
    assert_applied_once(&kube, "orders-file-source-connector", "orders-file-source").await;
    log(
        &format!("leader {holder} deleted: {successor} took over in {takeover:?}; the change meanwhile applied once"),
        started,
    );
    wait_pods(&kube, 2, &image).await;
    platform
        .merge(
            &kube,
            "deploy/base/deployment.yaml",
            "replicas: 2\n",
            "replicas: 1\n",
            "Back to 1 worker",
        )
        .await;
    wait_pods(&kube, 1, &image).await;
    log("Flux revision: back to 1 pod", started);

    // 6. A rolling update to a new image tag under a dry-run loop.
    let dry_runs = DryRuns::start(&kube);
    platform
        .merge(
            &kube,
            &format!("{OVERLAY}/kustomization.yaml"),
            &format!("newTag: {TAG}\n"),
            &format!("newTag: {NEXT_TAG}\n"),
            "connect-gate next",
        )
        .await;
    let next_image = format!("localhost/connect-gate:{NEXT_TAG}");
    let rolled = wait_pods(&kube, 1, &next_image).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = dry_runs.finish("the rolling update").await;
    log(
        &format!(
            "rolled to {next_image} ({}) with {sent} dry-runs, none failed",
            name_of(&rolled[0])
        ),
        started,
    );

    // 7. cert-manager renews the serving certificate while dry-runs run.
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), CONNECT);
    let cert_before = secrets.get("connect-gate-webhook-tls").await.unwrap().data.unwrap()["tls.crt"]
        .0
        .clone();
    let reloads_before = metric(&rolled[0], "connect_gate_cert_reloads_total").await.unwrap();
    let dry_runs = DryRuns::start(&kube);
    renew("connect-gate-webhook", &kube).await;
    eventually("cert-manager to write a renewed certificate", WAIT, || async {
        let now = secrets
            .get("connect-gate-webhook-tls")
            .await
            .map_err(|e| e.to_string())?
            .data
            .unwrap()["tls.crt"]
            .0
            .clone();
        if now != cert_before {
            Ok(())
        } else {
            Err("unchanged".into())
        }
    })
    .await;
    eventually(
        "the sidecar to reload the renewed certificate (kubelet volume sync)",
        WAIT,
        || async {
            let reloads = metric(&rolled[0], "connect_gate_cert_reloads_total").await?;
            if reloads > reloads_before {
                Ok(())
            } else {
                Err(format!("{reloads} reloads"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = dry_runs.finish("the certificate renewal").await;
    log(
        &format!("serving certificate renewed and reloaded with {sent} dry-runs, none failed"),
        started,
    );
}

/// Changes `key` of connector `connector` in ConfigMap `cm` from `from` to `to` (a PR's edit,
/// applied with kubectl), waits for the worker to have it, and checks it was applied once.
#[allow(clippy::too_many_arguments)]
async fn change_and_count(
    kube: &kube::Client,
    worker: &WorkerRest,
    cm: &str,
    connector: &str,
    data_key: &str,
    key: &str,
    from: &str,
    to: &str,
) {
    let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), CONNECTORS);
    let current = configmaps.get(cm).await.unwrap();
    let template = current.data.unwrap()[data_key].clone();
    assert_eq!(
        template.matches(from).count(),
        1,
        "{cm}/{data_key} must hold {from} once"
    );
    let patch = json!({"data": {data_key: template.replace(from, to)}});
    configmaps
        .patch(cm, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_config(worker, connector, key, to).await;
    assert_applied_once(kube, cm, connector).await;
}

async fn change_source_file(kube: &kube::Client, to: &str) {
    let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), CONNECTORS);
    let template = configmaps
        .get("orders-file-source-connector")
        .await
        .unwrap()
        .data
        .unwrap()["orders-file-source.json"]
        .clone();
    let patch =
        json!({"data": {"orders-file-source.json": template.replace("\"/tmp/orders.txt\"", &format!("\"{to}\""))}});
    configmaps
        .patch(
            "orders-file-source-connector",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

/// One `Updated` Event for `connector` on `cm`, and still one after a resync's worth of passes
/// by whoever leads (nothing applied twice).
async fn assert_applied_once(kube: &kube::Client, cm: &str, connector: &str) {
    let note = format!("updated connector {connector}");
    let count = || async {
        support::sidecar::events_in(kube, CONNECTORS, cm, "Updated")
            .await
            .iter()
            .filter(|n| **n == note)
            .count()
    };
    eventually(&format!("the Updated Event for {connector}"), WAIT, || async {
        match count().await {
            0 => Err("none yet".to_string()),
            n => Ok(n),
        }
    })
    .await;
    // Every replica runs a pass at least every resync (60 s) when it leads; a second write would
    // show within a few passes of change notifications, which come at once.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        count().await,
        1,
        "{connector} applied more than once: {:?}",
        support::sidecar::events_in(kube, CONNECTORS, cm, "Updated").await
    );
}

/// What `cmctl renew` does: the Issuing condition, set through the status subresource.
async fn renew(certificate: &str, kube: &kube::Client) {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), CONNECT, &ApiResource::from_gvk(&gvk));
    let mut cert = api.get_status(certificate).await.unwrap();
    let conditions = cert.data["status"]["conditions"].as_array_mut().unwrap();
    conditions.retain(|c| c["type"] != "Issuing");
    conditions.push(json!({
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered", "lastTransitionTime": support::gitops::utc_now(),
    }));
    api.replace_status(certificate, &PostParams::default(), &cert)
        .await
        .unwrap();
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

/// The denial `kubectl apply` prints for deploy/examples/bad-connector.yaml with deploy/'s
/// template inputs, verbatim.
fn expected_denial(file: &Path) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"{}\": admission webhook \"validate.connect-gate.io\" denied the request: {}",
        file.display(),
        EXPECTED_DENIAL
    )
}

const EXPECTED_DENIAL: &str = "connect-gate rejected 2 connector(s):\n\
- ConfigMap connectors/payments-bad-connector, key payments-file.json, connector payments-file: connector.class \"FileStreamSinc\" is not installed on the worker; closest installed: org.apache.kafka.connect.file.FileStreamSinkConnector, org.apache.kafka.connect.file.FileStreamSourceConnector\n\
- ConfigMap connectors/payments-bad-connector, key payments-jdbc.json: undefined variable $PAYMENTS_DB_URL at template line 5, column 23; variables available: $BASIC_AUTH_CREDENTIALS_SOURCE, $ORDERS_TOPIC, $SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO, $SCHEMA_REGISTRY_URL";
