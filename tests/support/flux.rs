//! Flux's kustomize-controller on the stack, managed by `tests/stack/flux`.

use super::stack::{run_script, script_output, stack};

/// The real kustomize-controller running against the stack (with its Kustomization and
/// ExternalArtifact CRDs installed). [`Flux::ensure`] uses the one `tests/stack/up --flux`
/// started, or starts one for this test with `tests/stack/flux start`; only one it started is
/// stopped on drop (`flux stop`: Kustomizations finalized, controller stopped, CRDs deleted, so
/// the stack's other test binaries see it as without Flux).
pub struct Flux {
    started_here: bool,
}

impl Flux {
    /// Attaches to a running kustomize-controller or starts one (building it first if the stack
    /// cache lacks it; `tests/run` builds it before the tests run).
    pub fn ensure() -> Flux {
        stack();
        let running = script_output(&["flux", "status"]).is_ok_and(|o| o.status.success());
        if !running {
            run_script(&["flux", "start"]);
        }
        Flux { started_here: !running }
    }

    /// The controller's log (JSON lines), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(stack().stack_dir.join("kustomize-controller/log")).unwrap_or_default()
    }

    /// The last `n` lines of the controller's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Flux {
    fn drop(&mut self) {
        if self.started_here {
            let _ = script_output(&["flux", "stop"]);
        }
    }
}
