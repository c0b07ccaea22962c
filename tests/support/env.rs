//! The per-test environment ([`TestEnv`]) and its cleanup, which also runs on drop.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};

use super::kubectl::{check_kubectl, kubectl_in, kubectl_with};
use super::names::{random_suffix, slug};
use super::stack::{Stack, kube_client, stack};
use super::worker_rest::WorkerRest;
use super::workers::Worker;

/// Per-test environment. Create with [`TestEnv::new`] at the top of a test.
pub struct TestEnv {
    /// Unique id of this test run, e.g. `create-configmap-3fa9c1`.
    pub id: String,
    /// The test's own namespace (created by `new`).
    pub namespace: String,
    /// Prefix every connector this test creates must start with (cleaned up on drop).
    pub connector_prefix: String,
    pub kube: kube::Client,
    pub connect_url: String,
    pub connect: WorkerRest,
    /// The main worker's properties file (`CONNECT_WORKER_CONFIG`), for `--worker-config`: its
    /// `config.providers` are file, dir (both `allowed.paths` = `$STACK_DIR/providers`) and env
    /// (`allowlist.pattern` `CONNECT_GATE_TEST_.*`; the workers' environment has
    /// `CONNECT_GATE_TEST_SECRET=env-secret-of-the-worker`).
    pub worker_config: PathBuf,
    /// A directory inside the providers' `allowed.paths` that tests write their inputs into
    /// (`CONNECT_PROVIDER_DIR`); use a subdirectory named after [`id`](Self::id).
    pub provider_dir: PathBuf,
    pub stack: &'static Stack,
}

impl TestEnv {
    /// Attaches to the stack and creates this test's namespace.
    /// `test_name` is only used to make the names readable.
    pub async fn new(test_name: &str) -> TestEnv {
        let stack = stack();
        let id = format!("{}-{}", slug(test_name, 40), random_suffix());
        let kube = kube_client().await;
        let namespace = format!("t-{id}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {"connect-gate.test/e2e": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(kube.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {namespace} on the test stack: {e}"));
        TestEnv {
            connector_prefix: format!("cg-{id}-"),
            id,
            namespace,
            kube,
            connect_url: stack.connect_url.clone(),
            connect: WorkerRest::new(&stack.connect_url),
            worker_config: stack.worker_config.clone(),
            provider_dir: stack.provider_dir.clone(),
            stack,
        }
    }

    /// A connector name unique to this test: `<prefix><suffix>`.
    pub fn connector_name(&self, suffix: &str) -> String {
        format!("{}{}", self.connector_prefix, suffix)
    }

    /// Typed API for a namespaced resource in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.kube.clone(), &self.namespace)
    }

    /// Runs `kubectl --kubeconfig $KUBECONFIG --namespace <test ns> ARGS`.
    /// kubectl is the one built by the stack (first on PATH after `up`).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl_in(Some(&self.namespace), args, stdin)
    }

    /// Like [`kubectl`](Self::kubectl) but panics with stderr unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        check_kubectl(args, self.kubectl(args))
    }

    /// `kubectl apply -f -` with `manifest` on stdin; panics unless it succeeds.
    pub fn kubectl_apply(&self, manifest: &str) -> String {
        let args = ["apply", "-f", "-"];
        check_kubectl(&args, self.kubectl_with_stdin(&args, Some(manifest)))
    }

    /// A kubeconfig (written into `dir`) that authenticates as a new ServiceAccount `name` of
    /// this namespace with a real token (TokenRequest), bound to a Role of `rules` (the YAML list
    /// under a Role's `rules:`). The API server and webhooks see
    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn service_account_kubeconfig(&self, name: &str, rules: &str, dir: &Path) -> PathBuf {
        self.kubectl_ok(&["create", "serviceaccount", name]);
        self.kubectl_apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}}}\nrules:\n{rules}"
        ));
        let subject = format!("{}:{name}", self.namespace);
        self.kubectl_ok(&[
            "create",
            "rolebinding",
            name,
            "--role",
            name,
            "--serviceaccount",
            &subject,
        ]);
        let token = self.kubectl_ok(&["create", "token", name, "--duration", "1h"]);
        let mut kubeconfig: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(&self.stack.kubeconfig).unwrap()).unwrap();
        kubeconfig["users"][0]["user"] = serde_norway::from_str(&format!("{{token: {}}}", token.trim())).unwrap();
        let path = dir.join(format!("kubeconfig-{name}"));
        std::fs::write(&path, serde_norway::to_string(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// Runs kubectl in this namespace as the user of `kubeconfig` (see
    /// [`service_account_kubeconfig`](Self::service_account_kubeconfig)).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        kubectl_with(kubeconfig, Some(&self.namespace), args, None)
    }

    /// Starts an extra Connect worker for this test (name made unique). Plain
    /// workers join the stack's main group (failover tests); basic-auth workers
    /// get their own group. Stopped when the returned `Worker` is dropped.
    pub fn start_connect_worker(&self, name: &str, basic_auth: bool) -> Worker {
        Worker::start(name, basic_auth)
    }

    /// Cleans up now (also done on drop). Idempotent.
    pub async fn cleanup(&self) {
        cleanup(&self.kube, &self.connect, &self.namespace, &self.connector_prefix).await;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Drop can't be async and may run inside the test's runtime, so clean up
        // from a fresh thread with its own runtime and its own clients.
        let (ns, prefix, url) = (
            self.namespace.clone(),
            self.connector_prefix.clone(),
            self.connect_url.clone(),
        );
        run_in_drop(async move {
            let kube = kube_client().await;
            cleanup(&kube, &WorkerRest::new(&url), &ns, &prefix).await;
        });
    }
}

/// Runs async cleanup from `Drop`, which can't be async and may run inside the test's runtime:
/// on a fresh thread with its own runtime. A failure is re-raised unless already panicking.
pub fn run_in_drop(cleanup: impl Future<Output = ()> + Send + 'static) {
    let handle = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup)
    });
    if let Err(e) = handle.join()
        && !std::thread::panicking()
    {
        std::panic::resume_unwind(e);
    }
}

async fn cleanup(kube: &kube::Client, connect: &WorkerRest, namespace: &str, prefix: &str) {
    let mut problems = Vec::new();

    // 1. Connectors with this test's prefix.
    let (status, body) = connect.get("/connectors").await;
    if status == 200 {
        let names: Vec<String> = serde_json::from_value(body).unwrap_or_default();
        for name in names.into_iter().filter(|n| n.starts_with(prefix)) {
            let (status, body) = connect.delete(&format!("/connectors/{name}")).await;
            if !(status == 204 || status == 200 || status == 404) {
                problems.push(format!("DELETE connector {name}: {status} {body}"));
            }
        }
    } else {
        problems.push(format!("GET /connectors: {status} {body}"));
    }

    // 2. Everything in the namespace, then the namespace itself.
    problems.extend(purge_namespace(kube, namespace).await);

    if !problems.is_empty() {
        panic!("test cleanup failed:\n  {}", problems.join("\n  "));
    }
}

/// Deletes every namespaced object in `namespace` (deletecollection over all
/// discovered resource types), deletes the namespace and finalizes it, so it is
/// really gone (no namespace controller runs in the stack). Objects that carry
/// finalizers of their own keep it Terminating. Returns the problems met.
pub async fn purge_namespace(kube: &kube::Client, namespace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let namespaces = Api::<Namespace>::all(kube.clone());
    if namespaces.get_opt(namespace).await.ok().flatten().is_some() {
        match Discovery::new(kube.clone()).run_aggregated().await {
            Ok(discovery) => {
                for group in discovery.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::DELETE_COLLECTION) {
                            continue;
                        }
                        // Skip types that cannot be listed.
                        if !caps.supports_operation(verbs::LIST) {
                            continue;
                        }
                        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), namespace, &ar);
                        if let Err(e) = api
                            .delete_collection(&DeleteParams::default(), &ListParams::default())
                            .await
                        {
                            problems.push(format!("deletecollection {} in {namespace}: {e}", ar.plural));
                        }
                    }
                }
            }
            Err(e) => problems.push(format!("discovery: {e}")),
        }
        match namespaces.delete(namespace, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => problems.push(format!("delete namespace {namespace}: {e}")),
        }
        // No namespace controller runs in the stack: finalize the (now empty)
        // namespace ourselves so it really goes away instead of staying Terminating.
        if let Ok(Some(mut ns)) = namespaces.get_opt(namespace).await {
            if let Some(spec) = ns.spec.as_mut() {
                spec.finalizers = Some(vec![]);
            }
            if let Err(e) = namespaces
                .replace_subresource("finalize", namespace, &PostParams::default(), &ns)
                .await
            {
                problems.push(format!("finalize namespace {namespace}: {e}"));
            }
        }
    }

    problems
}

/// [`purge_namespace`], panicking on problems.
pub async fn delete_namespace(kube: &kube::Client, namespace: &str) {
    let problems = purge_namespace(kube, namespace).await;
    assert!(problems.is_empty(), "deleting namespace {namespace}: {problems:?}");
}
