//! The warm pool of sandboxed template evaluators (the parent's side of [`super::template`]).
//!
//! A fixed number of child processes (this same binary, `__render`) are started ahead of need,
//! each under its own address-space and CPU limits and with an empty environment, and each
//! evaluates many requests over a framed pipe protocol. A request that runs past its deadline
//! has its child killed; a child that dies (memory limit, stack overflow) answers for that
//! request only. Either way a fresh child takes its place at once, and children are recycled
//! after [`RECYCLE_RENDERS`] requests or [`RECYCLE_BUSY`] of work, long before their cumulative
//! CPU limit could end one in the middle of an innocent render.
//!
//! The pool runs on its own thread and runtime, so a [`Renderer`] may be used from any runtime
//! (the CLI and the tests build one per command or per case).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::evaluation::{MAX_CHILD_MEMORY, MAX_OUTPUT, Outcome, Request};

/// How long one request (every run of one template) may take inside its child.
pub const DEADLINE: Duration = Duration::from_millis(750);
/// The smallest address space a child can work in.
pub const MIN_CHILD_MEMORY: u64 = 128 << 20;
/// What the sidecar keeps for itself when the pool is sized from the container's memory.
pub const PARENT_RESERVE: u64 = 192 << 20;
const RECYCLE_BUSY: Duration = Duration::from_secs(20);
const RECYCLE_RENDERS: u32 = 10_000;
/// Requests waiting for a child, per child: beyond that callers wait to enqueue.
const QUEUE_PER_CHILD: usize = 64;

/// The child failed rather than answered.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the template did not finish within {0:?} (templates are data: no unbounded recursion or generators)")]
    Timeout(Duration),
    #[error("the template exhausted the renderer's memory limit")]
    OutOfMemory,
    #[error("the template is nested or recursive too deeply")]
    StackOverflow,
    #[error("the renderer failed ({0})")]
    Crashed(String),
    #[error("cannot start the renderer {}: {reason}", exe.display())]
    Spawn { exe: PathBuf, reason: String },
}

/// How many children the pool keeps and what each may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub children: usize,
    /// RLIMIT_AS of each child, bytes.
    pub memory: u64,
    pub deadline: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error(
        "the container has {} MiB of memory: not enough for the sidecar ({} MiB) and one template sandbox ({} MiB)",
        .container >> 20, PARENT_RESERVE >> 20, MIN_CHILD_MEMORY >> 20
    )]
    TooSmall { container: u64 },
    #[error(
        "{children} template sandboxes of {} MiB and the sidecar ({} MiB) need more than the container's {} MiB of memory",
        .memory >> 20, PARENT_RESERVE >> 20, .container >> 20
    )]
    Exceeds {
        children: usize,
        memory: u64,
        container: u64,
    },
    #[error("a template sandbox needs at least {} MiB and one child at least", MIN_CHILD_MEMORY >> 20)]
    BelowMinimum,
}

impl Limits {
    /// One child per core, each with as much address space as fits: `children × memory` plus
    /// [`PARENT_RESERVE`] never exceeds `container` (bytes; `None` when unlimited). Pure.
    pub fn fit(container: Option<u64>, cores: usize) -> Result<Self, LimitsError> {
        let wanted = cores.max(1);
        let Some(container) = container else {
            return Ok(Self {
                children: wanted,
                memory: MAX_CHILD_MEMORY,
                deadline: DEADLINE,
            });
        };
        let budget = container
            .checked_sub(PARENT_RESERVE)
            .filter(|b| *b >= MIN_CHILD_MEMORY)
            .ok_or(LimitsError::TooSmall { container })?;
        let children = wanted.min((budget / MIN_CHILD_MEMORY) as usize).max(1);
        Ok(Self {
            children,
            memory: (budget / children as u64).min(MAX_CHILD_MEMORY),
            deadline: DEADLINE,
        })
    }

    /// `fit`, with the operator's `--sandboxes` and `--sandbox-memory-mib` in place of the
    /// computed figures; refused when they do not fit the container.
    pub fn fit_with(
        container: Option<u64>,
        cores: usize,
        children: Option<usize>,
        memory: Option<u64>,
    ) -> Result<Self, LimitsError> {
        let fitted = match children {
            Some(n) => Self::fit(container, n)?,
            None => Self::fit(container, cores)?,
        };
        let limits = Self {
            children: children.unwrap_or(fitted.children),
            memory: memory.unwrap_or(fitted.memory),
            ..fitted
        };
        if limits.children == 0 || limits.memory < MIN_CHILD_MEMORY {
            return Err(LimitsError::BelowMinimum);
        }
        match container {
            Some(c) if limits.children as u64 * limits.memory + PARENT_RESERVE > c => Err(LimitsError::Exceeds {
                children: limits.children,
                memory: limits.memory,
                container: c,
            }),
            _ => Ok(limits),
        }
    }

    /// Sized from this container's memory limit and cores.
    pub fn for_this_container() -> Result<Self, LimitsError> {
        Self::fit(container_memory(), cores())
    }
}

/// The CPUs this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The container's memory limit in bytes: cgroup v2's `memory.max`, else cgroup v1's
/// `memory.limit_in_bytes`; `None` when unlimited or unknown.
pub fn container_memory() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .into_iter()
    .find_map(|file| std::fs::read_to_string(file).ok())
    .and_then(|text| parse_memory_limit(&text))
}

/// `max` and cgroup v1's "unlimited" (a page-rounded `i64::MAX`) mean no limit.
fn parse_memory_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|bytes| *bytes < 1 << 60)
}

/// The most the parent reads of an answer: every run's outcome at its largest, and room for
/// the list around them.
fn answer_limit(runs: usize) -> usize {
    (MAX_OUTPUT + 1024) * runs.max(1)
}

struct Job {
    request: Vec<u8>,
    runs: usize,
    reply: oneshot::Sender<Result<Vec<u8>, SandboxError>>,
}

/// Evaluates templates in the pool; cheap to clone. The pool stops, and its children are
/// killed, when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Renderer {
    jobs: mpsc::Sender<Job>,
    limits: Limits,
    /// Requests evaluated by this pool, over all clones.
    requests: Arc<AtomicU64>,
}

impl Renderer {
    /// `exe` is a connect-gate binary (normally `std::env::current_exe()`); the pool is sized
    /// from this container's memory, or the defaults when that does not fit.
    pub fn new(exe: PathBuf) -> Self {
        let limits = Limits::for_this_container().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "sizing the template sandbox pool; using one small sandbox");
            Limits {
                children: 1,
                memory: MIN_CHILD_MEMORY,
                deadline: DEADLINE,
            }
        });
        Self::with_limits(exe, limits)
    }

    pub fn with_limits(exe: PathBuf, limits: Limits) -> Self {
        let (jobs, queue) = mpsc::channel(limits.children * QUEUE_PER_CHILD);
        let pool = async move {
            let queue = Arc::new(Mutex::new(queue));
            let workers = (0..limits.children).map(|_| tokio::spawn(serve(exe.clone(), limits, queue.clone())));
            futures::future::join_all(workers).await;
        };
        std::thread::Builder::new()
            .name("template-sandboxes".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(pool),
                    // Every request then fails with "the pool stopped": visible, not silent.
                    Err(e) => tracing::error!(error = %e, "cannot start the template sandbox pool"),
                }
            })
            .expect("a thread for the template sandbox pool");
        Self {
            jobs,
            limits,
            requests: Arc::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many requests this pool was sent (each renders one template, once per run).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One outcome per run of `request`, in order.
    pub async fn eval(&self, request: &Request) -> Result<Vec<Outcome>, SandboxError> {
        let runs = request.runs.len();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let stopped = || SandboxError::Crashed("the sandbox pool stopped".into());
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: serde_json::to_vec(request).expect("request serialises"),
            runs,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        let answer = answer.await.map_err(|_| stopped())??;
        let outcomes: Vec<Outcome> = serde_json::from_slice(&answer)
            .map_err(|e| SandboxError::Crashed(format!("unreadable answer: {}", e.classify_name())))?;
        if outcomes.len() != runs {
            return Err(SandboxError::Crashed(format!(
                "{} outcomes for {runs} runs",
                outcomes.len()
            )));
        }
        Ok(outcomes)
    }
}

/// serde_json's error category, never its text (which could quote a value).
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

/// One pool slot: keeps a warm child, serves queued jobs with it, replaces it when it fails
/// or is worn.
async fn serve(exe: PathBuf, limits: Limits, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut warm = Sandbox::spawn(&exe, limits.memory).ok();
    loop {
        let job = queue.lock().await.recv().await;
        let Some(job) = job else { return };
        let result = run(&exe, limits, &mut warm, &job).await;
        let _ = job.reply.send(result);
        if warm.is_none() {
            warm = Sandbox::spawn(&exe, limits.memory).ok();
        }
    }
}

/// Runs `job` on the warm child (starting one if there is none); leaves `warm` empty when the
/// child must not serve again.
async fn run(exe: &Path, limits: Limits, warm: &mut Option<Sandbox>, job: &Job) -> Result<Vec<u8>, SandboxError> {
    let mut sandbox = match warm.take() {
        Some(s) => s,
        None => Sandbox::spawn(exe, limits.memory)?,
    };
    let started = Instant::now();
    let mut result = sandbox
        .eval(&job.request, answer_limit(job.runs), limits.deadline)
        .await;
    if let Err(Failure::Gone) = result {
        // It died while idle (nothing of this request reached it): one fresh child retries.
        sandbox = Sandbox::spawn(exe, limits.memory)?;
        result = sandbox
            .eval(&job.request, answer_limit(job.runs), limits.deadline)
            .await;
    }
    sandbox.served += 1;
    sandbox.busy += started.elapsed();
    match result {
        Ok(answer) => {
            if sandbox.served < RECYCLE_RENDERS && sandbox.busy < RECYCLE_BUSY {
                *warm = Some(sandbox);
            }
            Ok(answer)
        }
        Err(Failure::Timeout) => {
            sandbox.kill().await;
            Err(SandboxError::Timeout(limits.deadline))
        }
        Err(Failure::TooLarge) => {
            sandbox.kill().await;
            let outcomes: Vec<Outcome> = (0..job.runs).map(|_| Outcome::TooLarge).collect();
            Ok(serde_json::to_vec(&outcomes).expect("outcomes serialise"))
        }
        Err(Failure::Gone | Failure::Died) => Err(sandbox.post_mortem().await),
    }
}

enum Failure {
    Timeout,
    TooLarge,
    /// The request could not be sent: the child was already dead.
    Gone,
    /// The child died after the request was sent.
    Died,
}

/// A child process of the pool.
struct Sandbox {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    served: u32,
    busy: Duration,
}

impl Sandbox {
    fn spawn(exe: &Path, memory: u64) -> Result<Self, SandboxError> {
        let spawn_error = |reason: String| SandboxError::Spawn {
            exe: exe.to_path_buf(),
            reason,
        };
        let mut child = tokio::process::Command::new(exe)
            .arg("__render")
            .arg(memory.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(e.to_string()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(spawn_error("no pipes to the child".into()));
        };
        Ok(Self {
            child,
            stdin,
            stdout,
            stderr,
            served: 0,
            busy: Duration::ZERO,
        })
    }

    /// Sends one framed request and reads the framed answer, within `deadline`.
    async fn eval(&mut self, request: &[u8], limit: usize, deadline: Duration) -> Result<Vec<u8>, Failure> {
        let send = async {
            let len = u32::try_from(request.len()).map_err(|_| Failure::TooLarge)?;
            self.stdin
                .write_all(&len.to_be_bytes())
                .await
                .map_err(|_| Failure::Gone)?;
            self.stdin.write_all(request).await.map_err(|_| Failure::Gone)?;
            self.stdin.flush().await.map_err(|_| Failure::Gone)
        };
        let exchange = async {
            send.await?;
            let mut len = [0u8; 4];
            self.stdout.read_exact(&mut len).await.map_err(|_| Failure::Died)?;
            let len = u32::from_be_bytes(len) as usize;
            if len > limit {
                return Err(Failure::TooLarge);
            }
            let mut answer = vec![0u8; len];
            self.stdout.read_exact(&mut answer).await.map_err(|_| Failure::Died)?;
            Ok(answer)
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Why the child died. Its stderr is only classified, never echoed: a panic message could
    /// quote a value.
    async fn post_mortem(mut self) -> SandboxError {
        let reaped = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
        let status = match reaped {
            Ok(Ok(status)) => status.to_string(),
            _ => {
                let _ = self.child.kill().await;
                "killed: it stopped answering".into()
            }
        };
        let mut err = Vec::new();
        let mut stderr = (&mut self.stderr).take(64 << 10);
        let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_end(&mut err)).await;
        let err = String::from_utf8_lossy(&err);
        if err.contains("overflowed its stack") {
            SandboxError::StackOverflow
        } else if err.contains("memory allocation") || err.contains("capacity overflow") {
            SandboxError::OutOfMemory
        } else {
            SandboxError::Crashed(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_pool_and_the_parent_fit_the_container() {
        // deploy/: 1 GiB, 2 cores.
        let limits = Limits::fit(Some(1024 * MIB), 2).unwrap();
        assert_eq!((limits.children, limits.memory), (2, 416 * MIB));
        // Roomy: capped per child.
        let limits = Limits::fit(Some(8192 * MIB), 4).unwrap();
        assert_eq!((limits.children, limits.memory), (4, MAX_CHILD_MEMORY));
        // Tight: fewer children rather than children too small to work.
        let limits = Limits::fit(Some(448 * MIB), 4).unwrap();
        assert_eq!((limits.children, limits.memory), (2, 128 * MIB));
        assert_eq!(
            Limits::fit(Some(256 * MIB), 2),
            Err(LimitsError::TooSmall { container: 256 * MIB })
        );
        for (container, cores) in [(1024, 2), (700, 8), (5000, 3), (320, 1)] {
            let l = Limits::fit(Some(container * MIB), cores).unwrap();
            assert!(l.children as u64 * l.memory + PARENT_RESERVE <= container * MIB);
        }
        // No limit: one per core at the largest size.
        assert_eq!(Limits::fit(None, 3).unwrap().children, 3);
    }

    #[test]
    fn overrides_are_refused_when_they_do_not_fit() {
        let one_gib = Some(1024 * MIB);
        let more = Limits::fit_with(one_gib, 2, Some(4), None).unwrap();
        assert_eq!((more.children, more.memory), (4, 208 * MIB));
        assert!(matches!(
            Limits::fit_with(one_gib, 2, Some(2), Some(512 * MIB)),
            Err(LimitsError::Exceeds { .. })
        ));
        assert_eq!(
            Limits::fit_with(one_gib, 2, None, Some(64 * MIB)),
            Err(LimitsError::BelowMinimum)
        );
        assert_eq!(Limits::fit_with(None, 2, Some(3), Some(256 * MIB)).unwrap().children, 3);
    }

    #[test]
    fn cgroup_limits_parse() {
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_memory_limit(""), None);
    }
}
