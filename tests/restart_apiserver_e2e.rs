//! The API server and etcd restart while the reconciler runs and a change is in flight. Alone in
//! its test binary on purpose: the stack's control plane goes away for every client meanwhile,
//! and cargo runs test binaries one after another, so no other test is running then. Named so it
//! runs after `cluster_e2e` (cargo runs them in name order): that suite schedules pods, and once a
//! pod created right after this restart stayed unscheduled for its whole 10 min wait.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::proxies::Recorder;
use support::sidecar::*;
use support::{TestEnv, eventually, run_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_rides_out_a_control_plane_restart_without_deleting_or_applying_twice() {
    let env = TestEnv::new("apiserver-restart").await;
    let dir = test_dir();
    let recorder = Recorder::start(&env.connect_url).await;
    let sidecar = Sidecar::start(&env, dir.path(), &recorder.url, "solo", &[]);
    let names: Vec<String> = (0..5).map(|i| env.connector_name(&format!("c{i}"))).collect();
    let input = dir.path().join("in");
    let declare = |i: usize, topic: &str| {
        configmap(
            &format!("cm{i}"),
            &[],
            &[(
                "c.json",
                source_template(&names[i], &input, &format!("{}-{topic}", env.id), ""),
            )],
        )
    };
    for i in 0..3 {
        create(&env, &declare(i, "t1")).await;
    }
    for (i, name) in names.iter().enumerate().take(3) {
        wait_status(&env, &format!("cm{i}"), name, "RUNNING").await;
    }

    // A change in flight: the PUT of c3 has reached the worker, its answer is kept while the
    // control plane stops; then the pass goes on without an API server.
    recorder.hold_answers(true);
    create(&env, &declare(3, "t1")).await;
    eventually("the write of c3 to be in flight", WAIT, || async {
        match recorder.waiting() {
            0 => Err(format!("writes so far: {:?}", recorder.writes())),
            _ => Ok(()),
        }
    })
    .await;
    run_script(&["control-plane", "stop"]);
    recorder.hold_answers(false);
    // It cannot renew the Lease: it stops reconciling by its own timer.
    eventually("the sidecar to step down", WAIT, || async {
        match sidecar.metric("connect_gate_leader", &[]).await? {
            0.0 => Ok(()),
            l => Err(format!("leader={l}")),
        }
    })
    .await;
    run_script(&["control-plane", "start"]);

    // The watch resumed: changes made after the restart reach the worker.
    let cm0 = declare(0, "t2");
    merge(&env, "cm0", json!({"data": cm0.data})).await;
    create(&env, &declare(4, "t1")).await;
    wait_config(&env.connect_url, &names[0], "topic", &format!("{}-t2", env.id)).await;
    for (i, name) in names.iter().enumerate() {
        wait_status(&env, &format!("cm{i}"), name, "RUNNING").await;
    }
    wait_passes(&sidecar, 3.0).await;

    // Never a delete, and every config applied exactly once (c0 twice: two configs).
    let writes = recorder.writes();
    let deletes: Vec<_> = writes.iter().filter(|w| w.method == "DELETE").collect();
    assert!(deletes.is_empty(), "deleted: {deletes:?}");
    let mut puts: BTreeMap<String, usize> = BTreeMap::new();
    for w in writes.iter().filter(|w| w.method == "PUT") {
        *puts.entry(w.path.clone()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("/connectors/{n}/config"), if i == 0 { 2 } else { 1 }))
        .collect();
    assert_eq!(puts, want, "all writes: {writes:?}");
    for i in 0..5 {
        delete_and_wait_gone(&env, &format!("cm{i}")).await;
    }
}
