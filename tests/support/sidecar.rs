//! The reconciler under test: `connect-gate serve --no-webhook` as a real process ([`Sidecar`])
//! reconciling a test's namespace, and the helpers the reconciler's e2e tests share to declare
//! connectors in ConfigMaps and to wait on what the sidecar reports and what the worker holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::env::TestEnv;
use super::poll::eventually;
use super::process::{Process, free_port};
use super::worker_rest::WorkerRest;

pub const WAIT: Duration = Duration::from_secs(90);
/// The sidecars' `--lease-duration`: short, so that failovers are quick.
pub const LEASE_DURATION: Duration = Duration::from_secs(4);
pub const FINALIZER: &str = "connect-gate.io/cleanup";
pub const SOURCE: &str = "org.apache.kafka.connect.file.FileStreamSourceConnector";

/// The test's scratch directory (sidecar logs, vars, FileStream files); kept for inspection
/// when RECONCILE_E2E_KEEP=1.
pub fn test_dir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new().prefix("reconcile-e2e-").tempdir().unwrap();
    if std::env::var("RECONCILE_E2E_KEEP").as_deref() == Ok("1") {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// A `connect-gate serve --no-webhook` process reconciling the test's namespace.
pub struct Sidecar {
    pub process: Process,
    pub metrics_port: u16,
}

impl Sidecar {
    pub fn start(env: &TestEnv, dir: &Path, connect_url: &str, identity: &str, extra: &[&str]) -> Sidecar {
        Self::start_as(env, dir, connect_url, identity, extra, None)
    }

    /// With `kubeconfig`, the sidecar talks to the apiserver as that user instead of the admin.
    pub fn start_as(
        env: &TestEnv,
        dir: &Path,
        connect_url: &str,
        identity: &str,
        extra: &[&str],
        kubeconfig: Option<&Path>,
    ) -> Sidecar {
        let metrics_port = free_port();
        let log = dir.join(format!("serve-{identity}-{metrics_port}.log"));
        let vars = dir.join("vars");
        std::fs::create_dir_all(&vars).unwrap();
        let env_file = dir.join("env");
        if !env_file.exists() {
            std::fs::write(&env_file, "").unwrap();
        }
        let mut args: Vec<String> = [
            "serve",
            "--no-webhook",
            "--namespace",
            &env.namespace,
            "--connect-url",
            connect_url,
            "--vars-dir",
            vars.to_str().unwrap(),
            "--env-file",
            env_file.to_str().unwrap(),
            "--resync",
            "2s",
            "--lease-duration",
            &format!("{}s", LEASE_DURATION.as_secs()),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ]
        .map(String::from)
        .into();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut envs: Vec<(&str, &std::ffi::OsStr)> = vec![("POD_NAME", identity.as_ref())];
        if let Some(kubeconfig) = kubeconfig {
            envs.push(("KUBECONFIG", kubeconfig.as_os_str()));
        }
        Sidecar {
            process: Process::spawn(&args, &envs, log),
            metrics_port,
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub async fn metrics(&self) -> Result<String, String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e}; log tail: {}", self.process.log_tail())),
        }
    }

    /// Sum of the samples of `metric` whose labels contain every one of `labels`.
    pub async fn metric(&self, metric: &str, labels: &[&str]) -> Result<f64, String> {
        let text = self.metrics().await?;
        Ok(sum_metric(&text, metric, labels))
    }
}

pub fn sum_metric(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A FileStreamSource template reading `file` into `topic`; `extra` is spliced into config.
pub fn source_template(name: &str, file: &Path, topic: &str, extra: &str) -> String {
    format!(
        r#"{{"name": "{name}", "config": {{"connector.class": "{SOURCE}", "file": "{}", "topic": "{topic}", "tasks.max": 1{extra}}}}}"#,
        file.display()
    )
}

pub fn configmap(name: &str, labels: &[(&str, &str)], data: &[(&str, String)]) -> ConfigMap {
    let mut all_labels: BTreeMap<String, String> = [("destination".to_string(), "connect".to_string())].into();
    all_labels.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": all_labels},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

pub async fn create(env: &TestEnv, cm: &ConfigMap) {
    env.api::<ConfigMap>().create(&PostParams::default(), cm).await.unwrap();
}

pub async fn merge(env: &TestEnv, name: &str, patch: Value) {
    env.api::<ConfigMap>()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

pub async fn annotation(env: &TestEnv, cm: &str, key: &str) -> Option<String> {
    let cm = env.api::<ConfigMap>().get_opt(cm).await.unwrap()?;
    cm.metadata.annotations?.get(key).cloned()
}

/// The connector's config on the worker at `url`, or an error naming its absence.
pub async fn config_at(url: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
    let (status, body) = WorkerRest::new(url).get(&format!("/connectors/{name}/config")).await;
    match status {
        200 => Ok(serde_json::from_value(body).unwrap()),
        s => Err(format!("GET config of {name}: {s} {body}")),
    }
}

pub async fn wait_config(url: &str, name: &str, key: &str, value: &str) {
    eventually(&format!("{name}.{key} = {value}"), WAIT, || async {
        let config = config_at(url, name).await?;
        match config.get(key) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{key} is {other:?}")),
        }
    })
    .await;
}

pub async fn wait_absent(url: &str, name: &str) {
    eventually(&format!("connector {name} to be deleted"), WAIT, || async {
        let (status, body) = WorkerRest::new(url).get(&format!("/connectors/{name}")).await;
        if status == 404 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
}

/// Waits for the `connect-gate.io/status` annotation to show `state` for `connector`.
pub async fn wait_status(env: &TestEnv, cm: &str, connector: &str, state: &str) -> Value {
    eventually(
        &format!("status of {connector} on {cm} to be {state}"),
        WAIT,
        || async {
            let status = annotation(env, cm, "connect-gate.io/status")
                .await
                .ok_or("no status annotation")?;
            let status: Value = serde_json::from_str(&status).map_err(|e| e.to_string())?;
            if status[connector]["state"] == state {
                Ok(status)
            } else {
                Err(status.to_string())
            }
        },
    )
    .await
}

/// Events about a ConfigMap with this reason: their notes.
pub async fn events(env: &TestEnv, cm: &str, reason: &str) -> Vec<String> {
    events_in(&env.kube, &env.namespace, cm, reason).await
}

/// Events about ConfigMap `namespace/cm` with this reason: their notes.
pub async fn events_in(kube: &kube::Client, namespace: &str, cm: &str, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(kube.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cm) && e.reason.as_deref() == Some(reason)
        })
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

pub async fn wait_event(env: &TestEnv, cm: &str, reason: &str, note_contains: &str) {
    eventually(
        &format!("a {reason} Event on {cm} mentioning {note_contains:?}"),
        WAIT,
        || async {
            let notes = events(env, cm, reason).await;
            if notes.iter().any(|n| n.contains(note_contains)) {
                Ok(())
            } else {
                Err(format!("{notes:?}"))
            }
        },
    )
    .await;
}

/// The ledger of the connectors connect-gate created or adopted: its Lease's annotation, parsed.
pub async fn ledger(env: &TestEnv) -> Value {
    let lease = Api::<Lease>::namespaced(env.kube.clone(), &env.namespace)
        .get_opt("connect-gate-ledger")
        .await
        .unwrap();
    let annotation = lease.and_then(|l| l.metadata.annotations?.get("connect-gate.io/ledger").cloned());
    annotation.map_or(json!({}), |a| serde_json::from_str(&a).unwrap())
}

pub async fn wait_ledger(env: &TestEnv, name: &str, want: Value) {
    eventually(&format!("the ledger to say {want} for {name}"), WAIT, || async {
        let ledger = ledger(env).await;
        if ledger[name] == want {
            Ok(())
        } else {
            Err(ledger.to_string())
        }
    })
    .await;
}

/// Creates a connector directly on the worker, as someone other than connect-gate would.
pub async fn create_on_worker(url: &str, name: &str, file: &Path, topic: &str) {
    let config =
        json!({"connector.class": SOURCE, "file": file.display().to_string(), "topic": topic, "tasks.max": "1"});
    let (status, body) = WorkerRest::new(url)
        .put(&format!("/connectors/{name}/config"), &config)
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Waits until the sidecar has finished `n` more successful passes than now.
pub async fn wait_passes(sidecar: &Sidecar, n: f64) {
    let start = eventually("metrics", WAIT, || {
        sidecar.metric("connect_gate_reconciles_total", &[r#"result="ok""#])
    })
    .await;
    eventually(&format!("{n} more reconcile passes"), WAIT, || async {
        let now = sidecar
            .metric("connect_gate_reconciles_total", &[r#"result="ok""#])
            .await?;
        if now >= start + n {
            Ok(())
        } else {
            Err(format!("{now} passes"))
        }
    })
    .await;
}

pub async fn puts(sidecar: &Sidecar) -> f64 {
    sidecar
        .metric("connect_gate_rest_calls_total", &[r#"method="PUT""#])
        .await
        .unwrap()
}

/// Deletes a ConfigMap and waits until the sidecar has cleaned up and it is gone.
pub async fn delete_and_wait_gone(env: &TestEnv, name: &str) {
    let api = env.api::<ConfigMap>();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(&format!("ConfigMap {name} to be gone"), WAIT, || async {
        match api.get_opt(name).await.unwrap() {
            None => Ok(()),
            Some(cm) => Err(format!("still there, finalizers {:?}", cm.metadata.finalizers)),
        }
    })
    .await;
}
