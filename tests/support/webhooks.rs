//! The shipped `webhook/*.yaml` registered for one test: pointed at a local `connect-gate serve`
//! and scoped to the test's namespaces (webhook configurations are cluster-wide: other tests must
//! not see them). Deleted again on drop.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::{TestEnv, eventually, kubectl_in};

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
