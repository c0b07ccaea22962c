//! Attaching to the running test stack described by the environment, and running its scripts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The running stack, as described by the environment `tests/stack/up` exports.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kubeconfig: PathBuf,
    pub connect_url: String,
    pub kafka_bootstrap: String,
    pub stack_dir: PathBuf,
    /// `CONNECT_WORKER_CONFIG`: the main worker's properties file (its `config.providers`).
    pub worker_config: PathBuf,
    /// `CONNECT_PROVIDER_DIR`: a directory inside the providers' `allowed.paths`, for tests' inputs.
    pub provider_dir: PathBuf,
    /// The repository's tests/stack directory (scripts).
    pub scripts: PathBuf,
}

pub(super) const HOW_TO_RUN: &str = "run the e2e tests with `tests/run` (builds and starts the real test stack, runs \
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
    let missing: Vec<&str> = [
        "KUBECONFIG",
        "CONNECT_URL",
        "KAFKA_BOOTSTRAP",
        "STACK_DIR",
        "CONNECT_WORKER_CONFIG",
        "CONNECT_PROVIDER_DIR",
    ]
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
    // Belt and braces: only ever talk to the stack's API server, on loopback or (with
    // `up --cluster`) on the test node's own address.
    let kc = Kubeconfig::read_from(&kubeconfig).map_err(|e| format!("cannot read KUBECONFIG: {e}"))?;
    for c in &kc.clusters {
        let server = c.cluster.as_ref().and_then(|c| c.server.clone()).unwrap_or_default();
        if !["https://127.0.0.1:", "https://localhost:", "https://198.18.0.1:"]
            .iter()
            .any(|p| server.starts_with(p))
        {
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
        worker_config: PathBuf::from(var("CONNECT_WORKER_CONFIG").unwrap()),
        provider_dir: PathBuf::from(var("CONNECT_PROVIDER_DIR").unwrap()),
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

/// Runs `tests/stack/ARGS[0] ARGS[1..]` with the stack's STACK_DIR; the raw outcome.
pub(super) fn script_output(args: &[&str]) -> std::io::Result<Output> {
    let s = stack();
    Command::new(s.scripts.join(args[0]))
        .args(&args[1..])
        .env("STACK_DIR", &s.stack_dir)
        .stdin(Stdio::null())
        .output()
}

/// Like [`script_output`] but panics with stderr unless it succeeds; returns stdout, trimmed.
pub fn run_script(args: &[&str]) -> String {
    let out = script_output(args).unwrap_or_else(|e| panic!("running tests/stack/{}: {e}", args[0]));
    assert!(
        out.status.success(),
        "tests/stack/{} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
