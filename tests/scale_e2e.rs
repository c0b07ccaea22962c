//! The scale bench (`tests/perf/scale`) at a small size, on the running stack: for correctness
//! only (it runs, its figures are all there, a restart with everything converged writes nothing to
//! Connect); its timings are not asserted. Alone in its test binary: cargo runs test binaries one
//! after another, so its connectors share the worker with no other test's.

mod support;

use std::process::Command;

use support::{BIN, random_suffix, stack};

#[test]
fn the_scale_bench_runs_small_and_a_converged_restart_writes_nothing() {
    let stack = stack();
    let out = tempfile::tempdir().unwrap();
    let script = stack.scripts.join("../perf/scale");
    let output = Command::new(&script)
        .env("SCALE_BIN", BIN)
        .env("SCALE_NAMESPACE", format!("scale-{}", random_suffix()))
        .env("PERF_OUT", out.path())
        .envs([
            ("SCALE_CONNECTOR_CMS", "30"),
            ("SCALE_CONNECTORS", "12"),
            ("SCALE_RUNNING", "3"),
            ("SCALE_OTHER_CMS", "60"),
            ("SCALE_LARGE", "3"),
            ("SCALE_LARGE_KIB", "256"),
            ("SCALE_DRY_RUNS", "100"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let table = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{} failed:\n{log}\n{table}", script.display());
    println!("{table}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what"))
        .collect();
    assert_eq!(rows.len(), 10, "every figure is in the table:\n{table}");
    let restart = rows.iter().find(|r| r.contains("restart with")).unwrap();
    assert!(
        restart.contains("**0 writes"),
        "a converged restart writes nothing: {restart}"
    );
    let failed = rows.iter().find(|r| r.contains("admission through")).unwrap();
    assert!(failed.contains("), 0 failed"), "no admission failed: {failed}");
}
