//! The reconciler under faults, on the real stack: a leader cut off from the API server, a
//! worker that keeps rejecting a config, a ConfigMap whose errors are huge. Faults are made on
//! loopback only (proxies in `support::proxies`); every wait is a bounded poll.

mod support;

use std::time::Instant;

use serde_json::{Value, json};
use support::proxies::{CutProxy, Recorder, apiserver_addr, kubeconfig_via};
use support::sidecar::*;
use support::{TestEnv, eventually};

async fn wait_leader(sidecar: &Sidecar, want: f64) {
    eventually(&format!("connect_gate_leader to be {want}"), WAIT, || async {
        let leader = sidecar.metric("connect_gate_leader", &[]).await?;
        if leader == want {
            Ok(())
        } else {
            Err(format!("{leader}; log: {}", sidecar.process.log_tail()))
        }
    })
    .await;
}

async fn reconciles(sidecar: &Sidecar, result: &str) -> f64 {
    sidecar
        .metric("connect_gate_reconciles_total", &[&format!(r#"result="{result}""#)])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_writes_nothing_after_its_deadline() {
    let env = TestEnv::new("faults-cut-off-leader").await;
    let dir = test_dir();
    // Replica A reaches the API server through a proxy the test cuts, and the worker through a
    // recorder; replica B reaches both directly.
    let api = CutProxy::start(apiserver_addr()).await;
    let recorder = Recorder::start(&env.connect_url).await;
    let kubeconfig = kubeconfig_via(api.addr, dir.path());
    let a = Sidecar::start_as(&env, dir.path(), &recorder.url, "replica-a", &[], Some(&kubeconfig));
    wait_leader(&a, 1.0).await;
    let b = Sidecar::start(&env, dir.path(), &env.connect_url, "replica-b", &[]);
    wait_leader(&b, 0.0).await;

    // A change in flight: A's first PUTs have reached the worker, A waits for the answers.
    let (x, y, z) = (
        env.connector_name("x"),
        env.connector_name("y"),
        env.connector_name("z"),
    );
    let input = dir.path().join("in");
    let declare = |name: &str, topic: &str| source_template(name, &input, &format!("{}-{topic}", env.id), "");
    recorder.hold_answers(true);
    create(
        &env,
        &configmap(
            "cm",
            &[],
            &[("x.json", declare(&x, "t1")), ("y.json", declare(&y, "t1"))],
        ),
    )
    .await;
    eventually("replica A's first write to be in flight", WAIT, || async {
        match recorder.waiting() {
            0 => Err(format!("writes so far: {:?}", recorder.writes())),
            _ => Ok(()),
        }
    })
    .await;
    let cut_at = Instant::now();
    api.cut();
    // A's last renewal started before the cut, so its deadline is at the latest this.
    let deadline = cut_at + LEASE_DURATION * 2 / 3;

    // B takes over; A, whose API server is silent, steps down by its own timer.
    wait_leader(&b, 1.0).await;
    wait_leader(&a, 0.0).await;
    wait_status(&env, "cm", &y, "RUNNING").await;
    // Changes through B: y goes, x changes, z comes.
    merge(
        &env,
        "cm",
        json!({"data": {"x.json": declare(&x, "t2"), "y.json": null, "z.json": declare(&z, "t2")}}),
    )
    .await;
    let t2 = format!("{}-t2", env.id);
    wait_config(&env.connect_url, &x, "topic", &t2).await;
    wait_config(&env.connect_url, &z, "topic", &t2).await;
    wait_absent(&env.connect_url, &y).await;
    // A's request in flight is answered now: a replica still leading would go on with its pass
    // (PUT y: recreating what B deleted).
    recorder.hold_answers(false);
    wait_passes(&b, 3.0).await;

    let writes = recorder.writes();
    let late: Vec<_> = writes.iter().filter(|w| w.at >= deadline).collect();
    assert!(late.is_empty(), "replica A wrote after its deadline: {late:?}");
    // What A sent is what was in flight at the cut (it sends a few connectors' writes at once).
    let sent: Vec<String> = writes.iter().map(|w| format!("{} {}", w.method, w.path)).collect();
    let in_flight = [
        format!("PUT /connectors/{x}/config"),
        format!("PUT /connectors/{y}/config"),
    ];
    assert!(
        !sent.is_empty() && sent.iter().all(|w| in_flight.contains(w)),
        "replica A's writes: {sent:?}"
    );
    assert!(a.log().contains("stopped reconciling"), "{}", a.process.log_tail());

    // Exactly what Git declares.
    let mut ours: Vec<String> = env
        .connect
        .connectors()
        .await
        .into_iter()
        .filter(|n| n.starts_with(&env.connector_prefix))
        .collect();
    ours.sort();
    assert_eq!(ours, [x.clone(), z.clone()]);
    for name in [&x, &z] {
        assert_eq!(config_at(&env.connect_url, name).await.unwrap()["topic"], t2);
    }
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_worker_rejects_is_retried_with_a_capped_backoff_and_shown_while_it_lasts() {
    // No connector of the stack's plugins validates against anything outside its config (as a
    // JDBC or Debezium connector does against its database), so the 400 here lasts until the
    // config changes; what is shown is the retry schedule and what a user sees meanwhile.
    let env = TestEnv::new("faults-worker-400").await;
    let dir = test_dir();
    let retry = ["--rejected-retry", "2s", "--rejected-retry-max", "4s"];
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &retry);
    let name = env.connector_name("bad");
    let input = dir.path().join("in");
    // The pipeline accepts it (strings are strings); the worker's validator does not.
    let bad = source_template(&name, &input, &env.id, "").replace(r#""tasks.max": 1"#, r#""tasks.max": "many""#);
    create(&env, &configmap("cm", &[], &[("b.json", bad)])).await;

    // Each rejected attempt is an Event that says when the next one comes: 2 s, doubling, capped.
    for (attempt, wait) in [(1, "2s"), (2, "4s"), (3, "4s")] {
        wait_event(
            &env,
            "cm",
            "Failed",
            &format!("(attempt {attempt}; next attempt in {wait} unless the config changes)"),
        )
        .await;
    }
    let attempts = sidecar
        .metric("connect_gate_rest_calls_total", &[r#"method="PUT""#, r#"status="400""#])
        .await
        .unwrap();
    assert!(attempts >= 3.0, "{attempts} PUTs answered 400");
    // The worker's 400 stays in last-error and the status while it lasts.
    let error = annotation(&env, "cm", "connect-gate.io/last-error").await.unwrap();
    assert!(
        error.contains("Kafka Connect rejected the config") && error.contains("tasks.max"),
        "{error}"
    );
    let status: Value = serde_json::from_str(&annotation(&env, "cm", "connect-gate.io/status").await.unwrap()).unwrap();
    assert!(
        status[&name]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("retried with backoff"),
        "{status}"
    );

    // Fixed: applied at once, and the error goes away.
    merge(
        &env,
        "cm",
        json!({"data": {"b.json": source_template(&name, &input, &env.id, "")}}),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    eventually("last-error to be cleared", WAIT, || async {
        match annotation(&env, "cm", "connect-gate.io/last-error").await {
            None => Ok(()),
            Some(e) => Err(e),
        }
    })
    .await;
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_class_name_is_reported_within_bounds_and_passes_keep_succeeding() {
    let env = TestEnv::new("faults-huge-class").await;
    let dir = test_dir();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let good = env.connector_name("good");
    let input = dir.path().join("in");
    create(
        &env,
        &configmap("good", &[], &[("g.json", source_template(&good, &input, &env.id, ""))]),
    )
    .await;
    // Close to the 1 MiB a ConfigMap may hold.
    let class = format!("org.example.{}", "Huge".repeat(240_000));
    let huge = format!(
        r#"{{"name": "{}", "config": {{"connector.class": "{class}", "tasks.max": 1}}}}"#,
        env.connector_name("huge")
    );
    create(&env, &configmap("huge", &[], &[("h.json", huge)])).await;

    let error = eventually("last-error on the huge ConfigMap", WAIT, || async {
        annotation(&env, "huge", "connect-gate.io/last-error")
            .await
            .ok_or_else(|| sidecar.process.log_tail())
    })
    .await;
    assert!(error.len() <= 16 * 1024, "last-error has {} bytes", error.len());
    assert!(error.contains("more bytes cut]"), "{}", &error[..200.min(error.len())]);
    wait_event(&env, "huge", "Rejected", "more bytes cut]").await;
    assert!(
        events(&env, "huge", "Rejected").await.iter().all(|n| n.len() <= 1000),
        "an Event note over 1000 bytes"
    );
    wait_status(&env, "good", &good, "RUNNING").await;

    // Later passes succeed: nothing about the huge ConfigMap makes them fail.
    let errors = reconciles(&sidecar, "error").await;
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(
        reconciles(&sidecar, "error").await,
        errors,
        "{}",
        sidecar.process.log_tail()
    );
    delete_and_wait_gone(&env, "good").await;
    delete_and_wait_gone(&env, "huge").await;
}
