//! The shipped `webhook/*.yaml` registered for one test: pointed at a local `connect-gate serve`
//! and scoped to the test's namespaces (webhook configurations are cluster-wide: other tests must
//! not see them). Deleted again on drop. [`Webhook`]: such a `serve`, webhook only, registered.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::{BIN, Process, TestEnv, eventually, free_port, kubectl_in};

/// `connect-gate serve --no-reconcile` judging the test's namespace against the stack's worker,
/// with a certificate of its own (`connect-gate certs` in `dir`), registered as the webhooks.
pub struct Webhook {
    pub process: Process,
    pub registrations: Registrations,
}

impl Webhook {
    pub async fn start(env: &TestEnv, dir: &Path) -> Webhook {
        Self::start_with(env, dir, &dir.join("webhook-vars"), &[]).await
    }

    /// With template variables in `vars` and further `serve` flags.
    pub async fn start_with(env: &TestEnv, dir: &Path, vars: &Path, extra: &[String]) -> Webhook {
        let certs = dir.join("webhook-certs");
        let status = std::process::Command::new(BIN)
            .arg("certs")
            .arg("--out")
            .arg(&certs)
            .args(["--ip", "127.0.0.1", "--dns", "localhost"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "connect-gate certs failed");
        std::fs::create_dir_all(vars).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let args: Vec<String> = [
            "serve".to_string(),
            "--no-reconcile".to_string(),
            format!("--namespace={}", env.namespace),
            format!("--connect-url={}", env.connect_url),
            format!("--listen=127.0.0.1:{port}"),
            format!("--metrics-listen=127.0.0.1:{metrics_port}"),
            format!("--tls-cert={}", path(&certs.join("tls.crt"))),
            format!("--tls-key={}", path(&certs.join("tls.key"))),
            format!("--vars-dir={}", path(vars)),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
        let process = Process::spawn(&args, &[], dir.join(format!("webhook-{port}.log")));
        let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
        eventually("the webhook to be ready", Duration::from_secs(60), || async {
            match reqwest::get(&readyz).await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", process.log_tail())),
            }
        })
        .await;
        let ca = std::fs::read(certs.join("ca.crt")).unwrap();
        let registrations = Registrations::register(env, port, &ca, &[&env.namespace]).await;
        Webhook { process, registrations }
    }
}

/// A server-side dry run of ConfigMap `cm` declaring `template` under `c.json`: what `kubectl
/// apply` printed on stderr, and whether it was admitted.
pub fn dry_run(env: &TestEnv, cm: &str, template: &str) -> (bool, String) {
    let manifest = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": cm, "labels": {"destination": "connect"}},
        "data": {"c.json": template},
    });
    let out = env.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest.to_string()));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts that the webhook denies ConfigMap `cm` declaring connector `cm` with `template`, with
/// exactly `cause` (as `kubectl apply` prints it); returns what was printed.
pub fn assert_denied(env: &TestEnv, cm: &str, template: &str, cause: &str) -> String {
    let (admitted, stderr) = dry_run(env, cm, template);
    assert!(!admitted, "{cm} admitted");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"validate.connect-gate.io\" denied the request: connect-gate rejected 1 connector(s):\n- ConfigMap {}/{cm}, key c.json, connector {cm}: {cause}",
            env.namespace
        ),
        "{cm}"
    );
    stderr
}

pub struct Registrations(Vec<String>);

impl Registrations {
    /// Registers both webhooks as they ship, at `https://127.0.0.1:{port}` trusting `ca_pem`, with
    /// `namespaces` standing in for the reconciled namespace `connectors` they select and the test
    /// namespace's ServiceAccount `connect-gate` for the shipped one in `connect`; returns once the
    /// API server denies a bad ConfigMap through them.
    pub async fn register(env: &TestEnv, port: u16, ca_pem: &[u8], namespaces: &[&str]) -> Registrations {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let mut made = Vec::new();
        for (file, path) in [("validating.yaml", "/validate"), ("mutating.yaml", "/mutate")] {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook").join(file);
            let mut config: Value = serde_norway::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
            let name = format!("connect-gate-{}", env.id);
            config["metadata"]["name"] = json!(name);
            config["metadata"]["annotations"] = json!({});
            let hook = &mut config["webhooks"][0];
            hook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca});
            let selector = &mut hook["namespaceSelector"]["matchExpressions"];
            assert_eq!(
                *selector,
                json!([{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["connectors"]}]),
                "webhook/{file} selects exactly the reconciled namespace"
            );
            selector[0]["values"] = json!(namespaces);
            for condition in hook["matchConditions"].as_array_mut().into_iter().flatten() {
                let expression = condition["expression"].as_str().unwrap().replace(
                    "system:serviceaccount:connect:connect-gate",
                    &format!("system:serviceaccount:{}:connect-gate", env.namespace),
                );
                condition["expression"] = json!(expression);
            }
            let kind = config["kind"].as_str().unwrap().to_lowercase();
            env.kubectl_apply(&serde_json::to_string(&config).unwrap());
            made.push(format!("{kind}/{name}"));
        }
        // The API server picks registrations up asynchronously: wait until a denial shows.
        let probe = serde_json::to_string(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "probe", "labels": {"destination": "connect"}},
            "data": {"p.json": "{\"name\": \"x\", \"config\": {}}"},
        }))
        .unwrap();
        eventually(
            "the webhook registration to take effect",
            Duration::from_secs(30),
            || async {
                let out = env.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&probe));
                if out.status.success() {
                    Err("not denied yet".into())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        Registrations(made)
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        for registration in &self.0 {
            let _ = kubectl_in(None, &["delete", registration, "--ignore-not-found"], None);
        }
    }
}
