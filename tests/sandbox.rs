//! The warm sandbox pool: one pool outlives runaway templates, and templates built to exhaust
//! memory, sent in parallel, never take the process tree past what the pool was sized for
//! (issue 13 item 4). Memory is measured, never time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use connect_gate::pipeline::render::evaluation::{Bindings, Outcome, Request};
use connect_gate::pipeline::render::sandbox::Renderer;
use connect_gate::pipeline::render::sandbox::{Limits, PARENT_RESERVE};

const MIB: u64 = 1 << 20;

fn renderer(limits: Limits) -> Renderer {
    Renderer::with_limits(PathBuf::from(env!("CARGO_BIN_EXE_connect-gate")), limits)
}

fn request(code: &str) -> Request {
    let bindings = || Bindings {
        vars: BTreeMap::from([("PW".to_string(), "hunter2".to_string())]),
        env: BTreeMap::new(),
    };
    Request {
        code: code.to_string(),
        runs: vec![bindings(), bindings()],
    }
}

const GOOD: &str = r#"{"name": "n", "config": {"connector.class": "X", "password": $PW}}"#;

const RUNAWAYS: &[&str] = &[
    "def f: f; f",
    "[range(1e9)]",
    r#""x" * 1e10"#,
    "def f: [f]; f",
    "[limit(100000000; repeat(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"))]",
    "reduce range(1e6) as $i (null; [.])",
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn one_pool_outlives_runaway_templates_and_answers_after_each() {
    let pool = renderer(Limits::fit(Some(704 * MIB), 2).unwrap());
    runtime().block_on(async {
        for runaway in RUNAWAYS {
            let result = pool.eval(&request(runaway)).await;
            let rejected = match &result {
                Err(_) => true,
                Ok(outcomes) => outcomes.iter().all(|o| !matches!(o, Outcome::Value(_))),
            };
            assert!(rejected, "{runaway}: {result:?}");
            let good = pool.eval(&request(GOOD)).await.unwrap();
            assert!(
                matches!(good[..], [Outcome::Value(_), Outcome::Value(_)]),
                "after {runaway}"
            );
        }
    });
}

/// Resident set sizes of this process's sandbox children with the given memory limit, bytes:
/// (current, lifetime peaks).
fn children_rss(memory: u64) -> Vec<(u64, u64)> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let dir = e.path();
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args.get(1) == Some(&&b"__render"[..]) && args.get(2) == Some(&memory.to_string().as_bytes());
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let parent = status_field(&status, "PPid:")?;
            (ours && parent == me).then(|| {
                let kib = |f| {
                    status_field(&status, f)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                (kib("VmRSS:") << 10, kib("VmHWM:") << 10)
            })
        })
        .collect()
}

fn status_field<'s>(status: &'s str, field: &str) -> Option<&'s str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.split_whitespace().next().unwrap_or(""))
}

fn own_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status_field(&status, "VmRSS:").unwrap().parse::<u64>().unwrap() << 10
}

#[test]
fn memory_bombs_in_parallel_never_take_the_tree_past_its_container() {
    // A 704 MiB container on 2 cores: 2 sandboxes of 256 MiB beside the sidecar's 192 MiB.
    let container = 704 * MIB;
    let limits = Limits::fit(Some(container), 2).unwrap();
    assert_eq!((limits.children, limits.memory), (2, 256 * MIB));
    let pool = renderer(limits);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let (mut tree, mut each, mut samples) = (0u64, 0u64, 0u32);
            while sampling.load(Ordering::Relaxed) {
                let children = children_rss(limits.memory);
                tree = tree.max(own_rss() + children.iter().map(|c| c.0).sum::<u64>());
                each = each.max(children.iter().map(|c| c.1).max().unwrap_or(0));
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            (tree, each, samples)
        })
    };
    let bombs = [
        "[range(1e9)]",
        r#""x" * 1e10"#,
        "[limit(100000000; repeat(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"))]",
        "[range(1e8) | tostring]",
    ];
    let requests: Vec<Request> = bombs.iter().cycle().take(16).map(|code| request(code)).collect();
    let results = runtime().block_on(futures::future::join_all(requests.iter().map(|r| pool.eval(r))));
    sampling.store(false, Ordering::Relaxed);
    let (tree, each, samples) = sampler.join().unwrap();
    for result in &results {
        let defused = match result {
            Err(_) => true,
            Ok(outcomes) => outcomes.iter().all(|o| !matches!(o, Outcome::Value(_))),
        };
        assert!(defused, "{result:?}");
    }
    eprintln!(
        "16 memory bombs over 2 sandboxes of {} MiB: peak process tree RSS {} MiB (parent included), peak sandbox RSS {} MiB, {samples} samples",
        limits.memory >> 20,
        tree >> 20,
        each >> 20
    );
    assert!(each <= limits.memory, "a sandbox reached {} MiB", each >> 20);
    assert!(tree <= container, "the tree reached {} MiB", tree >> 20);
    assert!(own_rss() < PARENT_RESERVE, "the parent alone is over its reserve");
}
