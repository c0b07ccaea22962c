//! Extra Kafka Connect workers started for one test by `tests/stack/connect-worker`.

use super::names::{random_suffix, slug};
use super::stack::{run_script, script_output, stack};
use super::worker_rest::WorkerRest;

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
    /// Starts a worker named after `name` (made unique). Plain workers join the stack's main
    /// group (failover tests); basic-auth workers get their own group.
    pub(super) fn start(name: &str, basic_auth: bool) -> Worker {
        let name = format!("{}-{}", slug(name, 20), random_suffix());
        let mut args = vec!["connect-worker", "start", &name];
        if basic_auth {
            args.push("--basic-auth");
        }
        let url = run_script(&args);
        let basic_auth = basic_auth.then(|| {
            let dir = stack().stack_dir.join(format!("connect-{name}"));
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

    pub fn client(&self) -> WorkerRest {
        let c = WorkerRest::new(&self.url);
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
            let _ = script_output(&["connect-worker", "stop", &self.name]);
        }
    }
}
