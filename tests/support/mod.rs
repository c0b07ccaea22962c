//! Test support for end-to-end tests against the real test stack
//! (`tests/stack/up`: etcd + kube-apiserver, a KRaft Kafka broker and a
//! distributed Kafka Connect worker, all on loopback).
//!
//! The stack is started OUTSIDE the test binary, by `tests/run` (or by
//! hand: `eval "$(tests/stack/up)"`), which exports KUBECONFIG, CONNECT_URL,
//! KAFKA_BOOTSTRAP, STACK_DIR and CONNECT_GATE_STACK_ATTACH=1. This module only
//! attaches to it. If the stack is not there, every test that asks for it
//! panics with instructions: e2e tests never skip.
//!
//! Each test gets a [`TestEnv`]: its own namespace, its own connector-name
//! prefix, a `kube::Client`, the Connect URL, a kubectl helper, and cleanup on
//! drop (also when the test panics):
//!   * every connector whose name starts with the test's prefix is deleted;
//!   * every namespaced object in the test namespace is deleted
//!     (deletecollection over all discovered resource types), then the namespace
//!     is deleted and finalized. There is no kube-controller-manager in the stack,
//!     so nothing else would ever empty or remove it; objects that carry their own
//!     finalizers stay until the test removes them;
//!   * Connect workers started with [`TestEnv::start_connect_worker`] are stopped.
//!
//! Cluster-scoped objects (webhook configurations, CRDs, ...) are NOT cleaned up
//! here: a test that creates one must delete it itself.
#![allow(dead_code)] // each test crate uses a different part

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::Value;

/// The running stack, as described by the environment `tests/stack/up` exports.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kubeconfig: PathBuf,
    pub connect_url: String,
    pub kafka_bootstrap: String,
    pub stack_dir: PathBuf,
    /// The repository's tests/stack directory (scripts).
    pub scripts: PathBuf,
}

const HOW_TO_RUN: &str = "run the e2e tests with `tests/run` (builds and starts the real test stack, runs \
     the tests, stops the stack), or start the stack by hand with `eval \"$(tests/stack/up)\"` and \
     then run `cargo test --test <name>` in that shell";

/// The stack this test process attaches to. Panics (never skips) if there is none.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Result<Stack, String>> = OnceLock::new();
    match STACK.get_or_init(stack_from_env) {
        Ok(s) => s,
        Err(e) => panic!("e2e test stack unavailable: {e}.\nTo fix: {HOW_TO_RUN}."),
    }
}

fn stack_from_env() -> Result<Stack, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("CONNECT_GATE_STACK_ATTACH").as_deref() != Some("1") {
        return Err(
            "CONNECT_GATE_STACK_ATTACH=1 is not set (it is exported by tests/stack/up; required \
             so that a KUBECONFIG of your own is never used by these tests)"
                .into(),
        );
    }
    let missing: Vec<&str> = ["KUBECONFIG", "CONNECT_URL", "KAFKA_BOOTSTRAP", "STACK_DIR"]
        .into_iter()
        .filter(|k| var(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("{} not set", missing.join(", ")));
    }
    let kubeconfig = PathBuf::from(var("KUBECONFIG").unwrap());
    let stack_dir = PathBuf::from(var("STACK_DIR").unwrap());
    if !stack_dir.join(".connect-gate-stack").exists() {
        return Err(format!(
            "STACK_DIR={} is not a running connect-gate test stack",
            stack_dir.display()
        ));
    }
    // Belt and braces: only ever talk to an API server on loopback.
    let kc = Kubeconfig::read_from(&kubeconfig).map_err(|e| format!("cannot read KUBECONFIG: {e}"))?;
    for c in &kc.clusters {
        let server = c.cluster.as_ref().and_then(|c| c.server.clone()).unwrap_or_default();
        if !(server.starts_with("https://127.0.0.1:") || server.starts_with("https://localhost:")) {
            return Err(format!(
                "KUBECONFIG cluster {} points at {server}, not at the loopback test stack",
                c.name
            ));
        }
    }
    Ok(Stack {
        kubeconfig,
        connect_url: var("CONNECT_URL").unwrap().trim_end_matches('/').to_string(),
        kafka_bootstrap: var("KAFKA_BOOTSTRAP").unwrap(),
        stack_dir,
        scripts: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stack"),
    })
}

/// A kube client for the stack's admin user (system:masters).
pub async fn kube_client() -> kube::Client {
    let kc = Kubeconfig::read_from(&stack().kubeconfig).expect("read KUBECONFIG");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config from the stack's KUBECONFIG");
    kube::Client::try_from(config).expect("kube client")
}

/// A short random lowercase hex string (no rand crate needed).
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:06x}", h.finish() & 0xff_ffff)
}

/// `[a-z0-9-]` slug of at most `max` chars, no leading/trailing '-'.
fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(max);
    out.trim_matches('-').to_string()
}

/// Polls `f` every 250 ms until it returns `Ok`, or panics after `timeout` with
/// the last error. For waiting on real asynchronous state (connector RUNNING,
/// object reconciled), never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A Kafka Connect REST client (optionally with basic auth).
#[derive(Clone)]
pub struct ConnectClient {
    pub url: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl ConnectClient {
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        Self {
            url: url.trim_end_matches('/').to_string(),
            http,
            auth: None,
        }
    }

    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Sends a request; returns the status code and the body as JSON
    /// (`Value::String` if it is not JSON, `Value::Null` if empty).
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}/{}", self.url, path.trim_start_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("accept", "application/json");
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Names of all connectors in the Connect cluster.
    pub async fn connectors(&self) -> Vec<String> {
        let (status, body) = self.get("/connectors").await;
        assert_eq!(status, 200, "GET /connectors: {body}");
        serde_json::from_value(body).expect("connector list")
    }
}

/// A Connect worker started for one test by `tests/stack/connect-worker`;
/// stopped when dropped.
pub struct Worker {
    pub name: String,
    pub url: String,
    /// (user, password) when started with basic auth.
    pub basic_auth: Option<(String, String)>,
    stopped: bool,
}

impl Worker {
    pub fn client(&self) -> ConnectClient {
        let c = ConnectClient::new(&self.url);
        match &self.basic_auth {
            Some((u, p)) => c.with_basic_auth(u, p),
            None => c,
        }
    }

    /// Graceful stop: the worker leaves its group.
    pub fn stop(&mut self) {
        run_script(&["connect-worker", "stop", &self.name]);
        self.stopped = true;
    }

    /// SIGKILL, to simulate a crash (the group notices after session.timeout.ms).
    pub fn kill(&mut self) {
        run_script(&["connect-worker", "kill", &self.name]);
        self.stopped = true;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = Command::new(stack().scripts.join("connect-worker"))
                .args(["stop", &self.name])
                .env("STACK_DIR", &stack().stack_dir)
                .stdin(Stdio::null())
                .output();
        }
    }
}

fn run_script(args: &[&str]) -> String {
    let s = stack();
    let out = Command::new(s.scripts.join(args[0]))
        .args(&args[1..])
        .env("STACK_DIR", &s.stack_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running tests/stack/{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "tests/stack/{} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

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
    pub connect: ConnectClient,
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
            connect: ConnectClient::new(&stack.connect_url),
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

    /// Starts an extra Connect worker for this test (name made unique). Plain
    /// workers join the stack's main group (failover tests); basic-auth workers
    /// get their own group. Stopped when the returned `Worker` is dropped.
    pub fn start_connect_worker(&self, name: &str, basic_auth: bool) -> Worker {
        let name = format!("{}-{}", slug(name, 20), random_suffix());
        let mut args = vec!["connect-worker", "start", &name];
        if basic_auth {
            args.push("--basic-auth");
        }
        let url = run_script(&args);
        let basic_auth = basic_auth.then(|| {
            let dir = self.stack.stack_dir.join(format!("connect-{name}"));
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("worker credentials");
            (read("user"), read("password"))
        });
        Worker {
            name,
            url,
            basic_auth,
            stopped: false,
        }
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
            cleanup(&kube, &ConnectClient::new(&url), &ns, &prefix).await;
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

async fn cleanup(kube: &kube::Client, connect: &ConnectClient, namespace: &str, prefix: &str) {
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

/// kubectl against the stack; `namespace` adds `--namespace`.
pub fn kubectl_in(namespace: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let s = stack();
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut cmd = Command::new(&kubectl);
    cmd.arg("--kubeconfig").arg(&s.kubeconfig);
    if let Some(ns) = namespace {
        cmd.args(["--namespace", ns]);
    }
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {kubectl} (is the stack's bin dir on PATH? {HOW_TO_RUN}): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

fn check_kubectl(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The connect-gate binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_connect-gate");

/// A free loopback port (bound, then released for the process under test to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A connect-gate process whose output goes to a log file; SIGKILLed on drop.
pub struct Process {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    /// Runs `connect-gate ARGS` with `envs` added to this process's environment.
    pub fn spawn(args: &[String], envs: &[(&str, &std::ffi::OsStr)], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(envs.iter().copied())
            .env("CONNECT_GATE_LOG", "info,connect_gate=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Process { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 30 lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL: no lease release, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
