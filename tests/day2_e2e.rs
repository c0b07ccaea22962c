//! Day-2 operations declared in Git, on the real stack: `restart` and `offsets` tokens beside a
//! connector's config, acted on once each by `connect-gate serve` (a real process) against the
//! real Kafka Connect 4.3.1 worker (KIP-875 offsets API, KIP-980 creation stopped), recorded in
//! `connect-gate.io/operations` on the real kube-apiserver; and judged at the door by the real
//! webhook. Records are moved through topics by FileStream connectors the tests make on the
//! worker themselves (a feed into a topic, a dump out of it). Every wait is a bounded poll.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::proxies::{Recorder, Write};
use support::sidecar::*;
use support::webhooks::assert_denied;
use support::{TestEnv, Webhook, eventually};

/// A connector declaration: `name`, `config` and the top-level keys of `extra`.
fn declaration(name: &str, config: &Value, extra: Value) -> String {
    let mut declared = json!({"name": name, "config": config});
    declared
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    declared.to_string()
}

fn source_config(file: &Path, topic: &str) -> Value {
    json!({"connector.class": SOURCE, "file": file.display().to_string(), "topic": topic, "tasks.max": 1})
}

fn sink_config(topic: &str, file: &Path) -> Value {
    json!({"connector.class": "FileStreamSink", "topics": topic, "file": file.display().to_string(), "tasks.max": 1})
}

/// `connect-gate.io/operations` of a ConfigMap, parsed (`{}` when absent).
async fn operations(env: &TestEnv, cm: &str) -> Value {
    annotation(env, cm, "connect-gate.io/operations")
        .await
        .map_or(json!({}), |a| serde_json::from_str(&a).unwrap())
}

/// Waits until `connect-gate.io/operations` says `want` for the connector's `field`.
async fn wait_record(env: &TestEnv, cm: &str, name: &str, field: &str, want: Value) -> Value {
    eventually(&format!("the {field} record of {name} to be {want}"), WAIT, || async {
        let record = operations(env, cm).await;
        let got = &record[name][field];
        let matches = match (&want, got) {
            // Only the keys asked for are compared (the worker's message is checked apart).
            (Value::Object(w), Value::Object(g)) => w.iter().all(|(k, v)| g.get(k) == Some(v)),
            _ => *got == want,
        };
        if matches {
            Ok(got.clone())
        } else {
            Err(record.to_string())
        }
    })
    .await
}

/// The records in `file` (a FileStream sink's output), one a line.
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_lines(file: &Path, want: &[&str]) {
    eventually(&format!("{} to hold {want:?}", file.display()), WAIT, || async {
        let got = lines(file);
        if got == want { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
}

/// A FileStreamSink made directly on the worker (no ConfigMap): copies `topic` into a file of
/// `dir`, returned. Named with the test's prefix, so it goes with the test.
async fn dump(env: &TestEnv, dir: &Path, topic: &str) -> PathBuf {
    let name = env.connector_name(&format!("dump-{topic}"));
    let file = dir.join(format!("dump-{topic}.txt"));
    let (status, body) = env
        .connect
        .put(&format!("/connectors/{name}/config"), &sink_config(topic, &file))
        .await;
    assert_eq!(status, 201, "{body}");
    file
}

/// The writes the recorder saw about connector `name` (its own paths, and `POST /connectors`
/// with its name in the body), as `METHOD path`.
fn writes_about(recorder: &Recorder, name: &str) -> Vec<Write> {
    let own = format!("/connectors/{name}");
    recorder
        .writes()
        .into_iter()
        .filter(|w| {
            w.path.starts_with(&format!("{own}/"))
                || w.path.starts_with(&format!("{own}?"))
                || w.path == own
                || (w.path == "/connectors" && w.body.contains(&format!("\"{name}\"")))
        })
        .collect()
}

fn line(w: &Write) -> String {
    format!("{} {}", w.method, w.path)
}

async fn operations_metric(sidecar: &Sidecar, operation: &str, result: &str) -> f64 {
    sidecar
        .metric(
            "connect_gate_operations_total",
            &[&format!(r#"operation="{operation}""#), &format!(r#"result="{result}""#)],
        )
        .await
        .unwrap()
}

async fn wait_leader(sidecar: &Sidecar) {
    eventually("the sidecar to lead", WAIT, || async {
        match sidecar.metric("connect_gate_leader", &[]).await? {
            1.0 => Ok(()),
            l => Err(format!("leader={l}; log: {}", sidecar.process.log_tail())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_token_acts_once_across_sidecar_restarts_and_leader_changes() {
    let env = TestEnv::new("day2-restart").await;
    let dir = test_dir();
    let recorder = Recorder::start(&env.connect_url).await;
    let mut first = Sidecar::start(&env, dir.path(), &recorder.url, "replica-a", &[]);
    let name = env.connector_name("src");
    let config = source_config(&dir.path().join("in.txt"), &env.id);
    let declare = |restart: Value| declaration(&name, &config, json!({ "restart": restart }));
    // Restarts the worker carried out: one answered 409 (a rebalance) is retried by the client.
    let restarts = || -> Vec<String> {
        writes_about(&recorder, &name)
            .iter()
            .filter(|w| w.path.contains("/restart") && w.status.is_some_and(|s| (200..300).contains(&s)))
            .map(line)
            .collect()
    };

    // A token already there when the connector is created is recorded, not acted on.
    create(&env, &configmap("cm", &[], &[("c.json", declare(json!("r0")))])).await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    let at_creation = json!({"token": "r0", "result": "recorded when the connector was created; not acted on"});
    wait_record(&env, "cm", &name, "restart", at_creation.clone()).await;
    wait_passes(&first, 2.0).await;
    assert_eq!(restarts(), Vec::<String>::new());
    let status = wait_status(&env, "cm", &name, "RUNNING").await;
    assert_eq!(status[&name]["restart"], at_creation, "{status}");

    // A new token: one restart of the connector with its tasks, recorded, an Event.
    merge(&env, "cm", json!({"data": {"c.json": declare(json!("r1"))}})).await;
    let note = format!("connector {name}: restarted with its tasks for restart token r1");
    wait_event(&env, "cm", "Restarted", &note).await;
    let once = [format!(
        "POST /connectors/{name}/restart?includeTasks=true&onlyFailed=false"
    )];
    assert_eq!(restarts(), once);
    let answered = writes_about(&recorder, &name).last().unwrap().status;
    assert!(matches!(answered, Some(202 | 204)), "the worker answered {answered:?}");
    wait_record(
        &env,
        "cm",
        &name,
        "restart",
        json!({"token": "r1", "result": "restarted with its tasks"}),
    )
    .await;
    eventually("the status to show the restart token", WAIT, || async {
        let status = wait_status(&env, "cm", &name, "RUNNING").await;
        match &status[&name]["restart"] {
            r if *r == json!({"token": "r1", "result": "restarted with its tasks"}) => Ok(()),
            _ => Err(status.to_string()),
        }
    })
    .await;
    wait_passes(&first, 2.0).await;
    assert_eq!(restarts(), once);

    // The same token, after the sidecar restarts: not again.
    first.kill();
    let second = Sidecar::start(&env, dir.path(), &recorder.url, "replica-a-again", &[]);
    wait_leader(&second).await;
    wait_passes(&second, 3.0).await;
    assert_eq!(restarts(), once, "the same token acted again after a sidecar restart");

    // ... nor after a leader change.
    let mut second = second;
    let third = Sidecar::start(&env, dir.path(), &recorder.url, "replica-b", &[]);
    eventually("replica-b to follow", WAIT, || third.metric("connect_gate_leader", &[])).await;
    second.kill();
    wait_leader(&third).await;
    wait_passes(&third, 3.0).await;
    assert_eq!(restarts(), once, "the same token acted again after a leader change");

    // A new token restarts again, here its failed parts only.
    merge(
        &env,
        "cm",
        json!({"data": {"c.json": declare(json!({"token": "r2", "onlyFailed": true}))}}),
    )
    .await;
    let note = format!("connector {name}: restarted its failed parts for restart token r2");
    wait_event(&env, "cm", "Restarted", &note).await;
    let twice = [
        once[0].clone(),
        format!("POST /connectors/{name}/restart?includeTasks=true&onlyFailed=true"),
    ];
    assert_eq!(restarts(), twice);

    // Removing the token does nothing, and the record stays.
    merge(
        &env,
        "cm",
        json!({"data": {"c.json": declaration(&name, &config, json!({}))}}),
    )
    .await;
    wait_passes(&third, 3.0).await;
    assert_eq!(restarts(), twice);
    let record = operations(&env, "cm").await;
    assert_eq!(
        record[&name]["restart"],
        json!({"token": "r2", "result": "restarted its failed parts"}),
        "{record}"
    );
    assert_eq!(operations_metric(&third, "restart", "ok").await, 1.0);
    assert_eq!(operations_metric(&third, "restart", "failed").await, 0.0);
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_connectors_offsets_are_reset_and_set_as_declared_and_it_runs_again() {
    let env = TestEnv::new("day2-sink-offsets").await;
    let dir = test_dir();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    // Five records on a topic, fed by a FileStreamSource made on the worker.
    let topic = format!("{}-orders", env.id);
    let feed = dir.path().join("orders.txt");
    std::fs::write(&feed, "o0\no1\no2\no3\no4\n").unwrap();
    create_on_worker(&env.connect_url, &env.connector_name("feed"), &feed, &topic).await;

    let name = env.connector_name("sink");
    let out = dir.path().join("out.txt");
    let config = sink_config(&topic, &out);
    let declare = |extra: Value| json!({"data": {"s.json": declaration(&name, &config, extra)}});
    create(
        &env,
        &configmap("cm", &[], &[("s.json", declaration(&name, &config, json!({})))]),
    )
    .await;
    let all = ["o0", "o1", "o2", "o3", "o4"];
    wait_lines(&out, &all).await;
    let at = |offset: u64| json!([{"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": offset}}]);
    env.connect
        .wait_offsets(&name, "all five consumed", |o| *o == at(5))
        .await;

    // Reset: it reads the topic again from the start, and runs on.
    merge(
        &env,
        "cm",
        declare(json!({"offsets": {"token": "reset-1", "reset": true}})),
    )
    .await;
    let record = wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "reset-1", "phase": "done"}),
    )
    .await;
    let message = record["result"].as_str().unwrap().to_string();
    assert!(message.contains("reset"), "the worker's message: {record}");
    wait_event(
        &env,
        "cm",
        "OffsetsReset",
        &format!("connector {name}: offsets reset for offsets token reset-1: {message}"),
    )
    .await;
    wait_lines(&out, &[all, all].concat()).await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    env.connect.wait_state(&name, "RUNNING").await;
    env.connect
        .wait_offsets(&name, "all five consumed again", |o| *o == at(5))
        .await;

    // Set, declared stopped meanwhile: the worker holds exactly the declared offsets.
    let set = at(3);
    let offsets = json!({"token": "set-1", "set": set});
    merge(&env, "cm", declare(json!({"state": "stopped", "offsets": offsets}))).await;
    let record = wait_record(&env, "cm", &name, "offsets", json!({"token": "set-1", "phase": "done"})).await;
    let message = record["result"].as_str().unwrap();
    wait_event(
        &env,
        "cm",
        "OffsetsAltered",
        &format!("connector {name}: offsets altered for offsets token set-1: {message}"),
    )
    .await;
    let status = wait_status(&env, "cm", &name, "STOPPED").await;
    assert_eq!(status[&name]["offsets"], record, "{status}");
    assert_eq!(
        env.connect.get(&format!("/connectors/{name}/offsets")).await,
        (200, json!({ "offsets": set }))
    );

    // Running again, it goes on from there: the last two records once more.
    merge(&env, "cm", declare(json!({ "offsets": offsets }))).await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    wait_lines(&out, &[&all[..], &all[..], &all[3..]].concat()).await;
    env.connect
        .wait_offsets(&name, "all five consumed", |o| *o == at(5))
        .await;
    assert_eq!(operations_metric(&sidecar, "offsets", "ok").await, 2.0);
    assert!(
        events(&env, "cm", "OffsetsFrameworkOnly").await.is_empty(),
        "a sink's offsets are Connect's own"
    );
    delete_and_wait_gone(&env, "cm").await;
}

/// A FileStreamSource's offsets: `file` read up to byte `position`.
fn position(file: &Path, position: u64) -> Value {
    json!([{"partition": {"filename": file.display().to_string()}, "offset": {"position": position}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_connectors_offsets_are_set_as_declared_and_it_resumes_from_them() {
    let env = TestEnv::new("day2-source-offsets").await;
    let dir = test_dir();
    let _sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let topic = format!("{}-lines", env.id);
    let copy = dump(&env, dir.path(), &topic).await;
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let name = env.connector_name("src");
    let config = source_config(&input, &topic);
    create(
        &env,
        &configmap("cm", &[], &[("c.json", declaration(&name, &config, json!({})))]),
    )
    .await;
    wait_lines(&copy, &["one", "two", "three"]).await;
    env.connect
        .wait_offsets(&name, "all 14 bytes read", |o| *o == position(&input, 14))
        .await;

    // Back to after the first line; declared stopped meanwhile, so what the worker holds shows.
    let offsets = json!({"token": "rewind-1", "set": position(&input, 4)});
    let declare = |extra: Value| json!({"data": {"c.json": declaration(&name, &config, extra)}});
    merge(&env, "cm", declare(json!({"state": "stopped", "offsets": offsets}))).await;
    let record = wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "rewind-1", "phase": "done"}),
    )
    .await;
    wait_event(
        &env,
        "cm",
        "OffsetsAltered",
        &format!("connector {name}: offsets altered for offsets token rewind-1: "),
    )
    .await;
    assert!(record["result"].is_string(), "{record}");
    wait_status(&env, "cm", &name, "STOPPED").await;
    assert_eq!(
        env.connect.get(&format!("/connectors/{name}/offsets")).await,
        (200, json!({"offsets": position(&input, 4)}))
    );

    // Resumed, it reads on from byte 4: the second and third lines again, nothing else.
    merge(&env, "cm", declare(json!({ "offsets": offsets }))).await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    wait_lines(&copy, &["one", "two", "three", "two", "three"]).await;
    env.connect
        .wait_offsets(&name, "all 14 bytes read", |o| *o == position(&input, 14))
        .await;
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_between_stop_and_offsets_write_is_finished_by_the_next() {
    let env = TestEnv::new("day2-offsets-crash").await;
    let dir = test_dir();
    let recorder = Recorder::start(&env.connect_url).await;
    let topic = format!("{}-lines", env.id);
    let copy = dump(&env, dir.path(), &topic).await;
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let name = env.connector_name("src");
    let config = source_config(&input, &topic);
    let mut first = Sidecar::start(&env, dir.path(), &recorder.url, "first", &[]);
    create(
        &env,
        &configmap("cm", &[], &[("c.json", declaration(&name, &config, json!({})))]),
    )
    .await;
    wait_lines(&copy, &["one", "two", "three"]).await;
    env.connect
        .wait_offsets(&name, "all 14 bytes read", |o| *o == position(&input, 14))
        .await;

    // The offsets write never reaches the worker: the sidecar is stuck on it when it dies.
    let patch = format!("PATCH /connectors/{name}/offsets");
    recorder.block(Some(&patch));
    let offsets = json!({"token": "rewind-1", "set": position(&input, 4)});
    merge(
        &env,
        "cm",
        json!({"data": {"c.json": declaration(&name, &config, json!({ "offsets": offsets }))}}),
    )
    .await;
    eventually("the sidecar to be stuck on the offsets write", WAIT, || async {
        let (_, status) = env.connect.get(&format!("/connectors/{name}/status")).await;
        let record = operations(&env, "cm").await;
        let sent: Vec<String> = writes_about(&recorder, &name).iter().map(line).collect();
        if status["connector"]["state"] == "STOPPED"
            && record[&name]["offsets"] == json!({"token": "rewind-1", "phase": "pending"})
            && sent.contains(&patch)
        {
            Ok(())
        } else {
            Err(format!("{status} {record} {sent:?}"))
        }
    })
    .await;
    let label = format!(r#"connector="{name}""#);
    assert_eq!(
        first
            .metric("connect_gate_offsets_in_progress", &[&label])
            .await
            .unwrap(),
        1.0
    );
    first.kill();
    assert!(
        writes_about(&recorder, &name)
            .iter()
            .all(|w| !(line(w) == patch && w.status.is_some())),
        "an offsets write reached the worker"
    );
    let sent: Vec<String> = writes_about(&recorder, &name).iter().map(line).collect();
    assert!(sent.contains(&format!("PUT /connectors/{name}/stop")), "{sent:?}");

    // The next sidecar finds the record pending and the connector stopped, and finishes.
    recorder.block(None);
    let second = Sidecar::start(&env, dir.path(), &recorder.url, "second", &[]);
    wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "rewind-1", "phase": "done"}),
    )
    .await;
    wait_event(
        &env,
        "cm",
        "OffsetsAltered",
        &format!("connector {name}: offsets altered for offsets token rewind-1: "),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    env.connect.wait_state(&name, "RUNNING").await;
    wait_lines(&copy, &["one", "two", "three", "two", "three"]).await;
    env.connect
        .wait_offsets(&name, "all 14 bytes read", |o| *o == position(&input, 14))
        .await;
    let patches: Vec<Option<u16>> = writes_about(&recorder, &name)
        .iter()
        .filter(|w| line(w) == patch)
        .map(|w| w.status)
        .collect();
    assert_eq!(
        patches.iter().filter(|s| s.is_some()).collect::<Vec<_>>(),
        [&Some(200)],
        "offsets writes that reached the worker: {patches:?}"
    );
    wait_passes(&second, 2.0).await;
    assert_eq!(operations_metric(&second, "offsets", "ok").await, 1.0);
    assert_eq!(
        second
            .metric("connect_gate_offsets_in_progress", &[&label])
            .await
            .unwrap(),
        0.0
    );
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connector_declared_with_offsets_is_created_stopped_and_starts_from_them() {
    let env = TestEnv::new("day2-create-stopped").await;
    let dir = test_dir();
    let recorder = Recorder::start(&env.connect_url).await;
    let topic = format!("{}-lines", env.id);
    let copy = dump(&env, dir.path(), &topic).await;
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let sidecar = Sidecar::start(&env, dir.path(), &recorder.url, "solo", &[]);
    let name = env.connector_name("src");
    let offsets = json!({"token": "start-at-4", "set": position(&input, 4)});
    let declared = declaration(&name, &source_config(&input, &topic), json!({ "offsets": offsets }));
    create(&env, &configmap("cm", &[], &[("c.json", declared)])).await;

    wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "start-at-4", "phase": "done"}),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    wait_lines(&copy, &["two", "three"]).await;
    env.connect
        .wait_offsets(&name, "all 14 bytes read", |o| *o == position(&input, 14))
        .await;
    wait_passes(&sidecar, 2.0).await;
    assert_eq!(lines(&copy), ["two", "three"], "it never read the first line");
    let label = format!(r#"connector="{name}""#);
    for (metric, state) in [
        ("connect_gate_connector_state", "running"),
        ("connect_gate_connector_tasks", "running"),
    ] {
        let labels = [r#"destination="local""#, label.as_str(), &format!(r#"state="{state}""#)];
        assert_eq!(sidecar.metric(metric, &labels).await.unwrap(), 1.0, "{metric}");
    }
    assert_eq!(
        sidecar
            .metric("connect_gate_connector_state", &[&label, r#"state="stopped""#])
            .await
            .unwrap(),
        0.0,
        "a stopped series left behind"
    );

    // Created stopped, its offsets set, then resumed; never started before the PATCH.
    let writes = writes_about(&recorder, &name);
    let sent: Vec<String> = writes.iter().map(line).collect();
    assert_eq!(
        sent,
        [
            "POST /connectors".to_string(),
            format!("PATCH /connectors/{name}/offsets"),
            format!("PUT /connectors/{name}/resume"),
        ]
    );
    let created: Value = serde_json::from_str(&writes[0].body).unwrap();
    assert_eq!(created["name"], name.as_str());
    assert_eq!(created["initial_state"], "STOPPED", "{created}");
    assert_eq!(writes[0].status, Some(201));
    assert_eq!(writes[1].status, Some(200));
    wait_event(
        &env,
        "cm",
        "OffsetsAltered",
        &format!("connector {name}: offsets altered for offsets token start-at-4: "),
    )
    .await;
    delete_and_wait_gone(&env, "cm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_restart_and_offsets_declarations_are_denied_at_admission_naming_the_cause() {
    let env = TestEnv::new("day2-admission").await;
    let dir = test_dir();
    let _webhook = Webhook::start(&env, dir.path()).await;
    let source = source_config(Path::new("/tmp/in.txt"), "t");
    let sink = sink_config("t", Path::new("/tmp/out.txt"));
    let cases = [
        (
            "bad-token",
            declaration("bad-token", &source, json!({"restart": "a b"})),
            "`restart` token \"a b\" is invalid: a token is 1 to 128 letters, digits, '.', '_', '-' or ':'",
        ),
        (
            "reset-and-set",
            declaration(
                "reset-and-set",
                &source,
                json!({"offsets": {"token": "o1", "reset": true, "set": position(Path::new("/x"), 1)}}),
            ),
            "`offsets` must have exactly one of `\"reset\": true` and `set`",
        ),
        (
            "sink-set",
            declaration(
                "sink-set",
                &sink,
                json!({"offsets": {"token": "o1", "set": position(Path::new("/x"), 1)}}),
            ),
            "`offsets.set[0]` is not a sink connector's offset: a sink's partition is {\"kafka_topic\": string, \"kafka_partition\": integer} and its offset {\"kafka_offset\": integer} or null",
        ),
    ];
    for (cm, template, cause) in cases {
        assert_denied(&env, cm, &template, cause);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_change_the_worker_refuses_is_retried_while_declared_and_shown_only_until_fixed_or_withdrawn() {
    let env = TestEnv::new("day2-offsets-refused").await;
    let dir = test_dir();
    let sidecar = Sidecar::start(&env, dir.path(), &env.connect_url, "solo", &[]);
    let topic = format!("{}-lines", env.id);
    let copy = dump(&env, dir.path(), &topic).await;
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let name = env.connector_name("src");
    let config = source_config(&input, &topic);
    let declare = |extra: Value| json!({"data": {"c.json": declaration(&name, &config, extra)}});
    create(
        &env,
        &configmap("cm", &[], &[("c.json", declaration(&name, &config, json!({})))]),
    )
    .await;
    env.connect
        .wait_offsets(&name, "all 14 bytes read", |o| *o == position(&input, 14))
        .await;
    let label = format!(r#"connector="{name}""#);
    let labels = [label.as_str()];
    let in_progress = || sidecar.metric("connect_gate_offsets_in_progress", &labels);
    let last_error = || async { annotation(&env, "cm", "connect-gate.io/last-error").await };

    // FileStreamSource takes only a number for a position: the worker refuses the change.
    let bad = json!([{"partition": {"filename": input.display().to_string()}, "offset": {"position": "four"}}]);
    merge(
        &env,
        "cm",
        declare(json!({"offsets": {"token": "rewind-1", "set": bad}})),
    )
    .await;
    let record = wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "rewind-1", "phase": "failed"}),
    )
    .await;
    let cause = record["result"].as_str().unwrap();
    assert!(cause.contains("position"), "{record}");
    let line = format!("connector {name}: offsets token rewind-1: {cause}; left stopped, retried with backoff");
    eventually("last-error to show the refused change", WAIT, || async {
        match last_error().await {
            Some(e) if e.contains(&line) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("a retry, refused again", WAIT, || async {
        match operations_metric(&sidecar, "offsets", "failed").await {
            n if n >= 2.0 => Ok(()),
            n => Err(format!("{n} failed attempts")),
        }
    })
    .await;
    env.connect.wait_state(&name, "STOPPED").await;
    assert_eq!(in_progress().await.unwrap(), 1.0);

    // Fixed under the same token: done, resumed, and nothing left in last-error.
    merge(
        &env,
        "cm",
        declare(json!({"offsets": {"token": "rewind-1", "set": position(&input, 4)}})),
    )
    .await;
    wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "rewind-1", "phase": "done"}),
    )
    .await;
    wait_status(&env, "cm", &name, "RUNNING").await;
    wait_lines(&copy, &["one", "two", "three", "two", "three"]).await;
    eventually("last-error to be cleared", WAIT, || async {
        last_error().await.map_or(Ok(()), Err)
    })
    .await;
    assert_eq!(in_progress().await.unwrap(), 0.0);

    // Refused again under a new token, then withdrawn from the declaration: it runs again, and
    // nothing says it is left stopped or retried.
    merge(
        &env,
        "cm",
        declare(json!({"offsets": {"token": "rewind-2", "set": bad}})),
    )
    .await;
    wait_record(
        &env,
        "cm",
        &name,
        "offsets",
        json!({"token": "rewind-2", "phase": "failed"}),
    )
    .await;
    merge(&env, "cm", declare(json!({}))).await;
    let withdrawn = json!({"token": "rewind-2", "phase": "withdrawn",
        "result": "removed from the declaration before it was done; not retried"});
    wait_record(&env, "cm", &name, "offsets", withdrawn.clone()).await;
    let status = wait_status(&env, "cm", &name, "RUNNING").await;
    assert_eq!(status[&name]["offsets"], withdrawn, "{status}");
    env.connect.wait_state(&name, "RUNNING").await;
    wait_passes(&sidecar, 2.0).await;
    let failed = operations_metric(&sidecar, "offsets", "failed").await;
    wait_passes(&sidecar, 3.0).await;
    assert_eq!(
        operations_metric(&sidecar, "offsets", "failed").await,
        failed,
        "retried once withdrawn"
    );
    eventually("last-error to be cleared once withdrawn", WAIT, || async {
        last_error().await.map_or(Ok(()), Err)
    })
    .await;
    assert_eq!(in_progress().await.unwrap(), 0.0);
    delete_and_wait_gone(&env, "cm").await;
}
