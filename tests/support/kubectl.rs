//! kubectl against the stack (the kubectl the stack built, first on PATH after `up`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::stack::{HOW_TO_RUN, stack};

/// kubectl against the stack as its admin; `namespace` adds `--namespace`.
pub fn kubectl_in(namespace: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_with(&stack().kubeconfig, namespace, args, stdin)
}

/// kubectl against the stack as the user of `kubeconfig`; `namespace` adds `--namespace`.
pub fn kubectl_with(kubeconfig: &Path, namespace: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut cmd = Command::new(&kubectl);
    cmd.arg("--kubeconfig").arg(kubeconfig);
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

/// Panics with stdout and stderr unless `out` (of `kubectl ARGS`) succeeded; returns stdout.
pub(super) fn check_kubectl(args: &[&str], out: Output) -> String {
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
