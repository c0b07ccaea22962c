//! `connect-gate offsets NAME` as a user runs it, against the stack's real Kafka Connect 4.3.1
//! worker: a FileStreamSource connector's committed offsets, printed as the `offsets` value of
//! its declaration, and that what it prints, edited, is what the worker takes back
//! (`PATCH /connectors/{name}/offsets`). Every wait is a bounded poll.

mod cli;
// Both carry the binary's path (support/process.rs).
#[allow(clippy::duplicate_mod)]
mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestEnv, WorkerRest, eventually};

const WAIT: Duration = Duration::from_secs(90);

/// The printed JSON, checked to be exactly `{"token", "set"}` with a valid token.
fn printed(out: &cli::Run) -> (String, Value) {
    assert_eq!(out.code, 0, "{}", out.all());
    let value: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let object = value.as_object().expect("a JSON object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["set", "token"], "{value}");
    let token = value["token"].as_str().expect("token").to_string();
    assert!(
        (1..=128).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)),
        "{token}"
    );
    (token, value["set"].clone())
}

/// A FileStreamSource connector `name` on the worker of `rest` reading a new file in `dir`, once
/// it has committed its offsets: the file's name and those offsets.
async fn file_source(rest: &WorkerRest, name: &str, dir: &Path, topic: &str) -> (String, Value) {
    let input = dir.join(format!("{name}.txt"));
    let file = input.display().to_string();
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let config = json!({"connector.class": "FileStreamSource", "tasks.max": "1", "file": file, "topic": topic});
    let (status, body) = rest.put(&format!("/connectors/{name}/config"), &config).await;
    assert_eq!(status, 201, "{body}");
    // FileStreamSource's offset is the byte position after the last line read: all 14 bytes.
    let committed = rest
        .wait_offsets(name, "position 14", |o| o[0]["offset"]["position"] == 14)
        .await;
    (file, committed)
}

#[tokio::test]
async fn a_file_source_connectors_offsets_print_as_its_declarations_offsets_and_go_back_edited() {
    let env = TestEnv::new("offsets-file-source").await;
    let name = env.connector_name("file-source");
    let dir = tempfile::tempdir().unwrap();
    let (file, committed) = file_source(&env.connect, &name, dir.path(), &env.connector_name("t")).await;

    let out = cli::offsets(&name, &["--connect-url", &env.connect_url]);
    let (token, set) = printed(&out);
    assert_eq!(
        set,
        json!([{"partition": {"filename": file}, "offset": {"position": 14}}]),
        "{}",
        out.all()
    );
    assert_eq!(set, committed);
    // The suggestion: the current UTC time, `2026-12-06T21-30-00Z`.
    assert!(
        token.len() == 20 && token.ends_with('Z') && !token.contains(':'),
        "{token}"
    );
    for hint in [
        format!(
            "connector {name:?} on Kafka Connect at {} has offsets for 1 partition",
            env.connect_url
        ),
        "paste the printed JSON as the \"offsets\" value".to_string(),
    ] {
        assert!(out.stderr.contains(&hint), "{hint:?} not in:\n{}", out.stderr);
    }

    // The same worker as a declared destination, with a token of the user's.
    let destinations = dir.path().join("destinations.yaml");
    std::fs::write(
        &destinations,
        format!("destinations:\n  - {{name: other, url: '{}'}}\n", env.connect_url),
    )
    .unwrap();
    let out = cli::offsets(
        &name,
        &[
            "--destinations",
            destinations.to_str().unwrap(),
            "--destination",
            "other",
            "--token",
            "rewind-1",
        ],
    );
    assert_eq!(printed(&out), ("rewind-1".to_string(), set.clone()));

    // Edited (back to after the first line), the printed set is what the worker's PATCH takes.
    let mut edited = set.clone();
    edited[0]["offset"]["position"] = json!(4);
    let stop = format!("/connectors/{name}/stop");
    let (status, body) = env.connect.request(reqwest::Method::PUT, &stop, None).await;
    assert!(status == 202 || status == 204, "{status} {body}");
    env.connect.wait_state(&name, "STOPPED").await;
    let patch = json!({"offsets": edited});
    eventually("PATCH of the edited offsets", WAIT, || async {
        let path = format!("/connectors/{name}/offsets");
        match env.connect.request(reqwest::Method::PATCH, &path, Some(&patch)).await {
            (200, _) => Ok(()),
            // The stop's rebalance may still be under way.
            (409, body) => Err(format!("409 {body}")),
            (status, body) => panic!("PATCH {path}: {status} {body}"),
        }
    })
    .await;
    let out = cli::offsets(&name, &["--connect-url", &env.connect_url]);
    assert_eq!(printed(&out).1, edited, "{}", out.all());
}

#[tokio::test]
async fn a_connector_that_does_not_exist_is_named_with_the_worker_and_exits_1() {
    let env = TestEnv::new("offsets-missing").await;
    let name = env.connector_name("absent");
    let out = cli::offsets(&name, &["--connect-url", &env.connect_url]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "connect-gate: connector {name:?} does not exist on Kafka Connect at {}",
            env.connect_url
        )
    );
}

#[tokio::test]
async fn a_destination_with_basic_auth_is_read_with_its_credentials_which_are_never_printed() {
    let env = TestEnv::new("offsets-basic-auth").await;
    let worker = env.start_connect_worker("offsets-auth", true);
    let (user, password) = worker.basic_auth.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = env.connector_name("behind-auth");
    let (_, committed) = file_source(&worker.client(), &name, dir.path(), &env.connector_name("t")).await;
    let write = |file: &str, text: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let user = write("user", &format!("{user}\n"));
    let destinations = |password_file: &str| {
        write(
            "destinations.yaml",
            &format!(
                "destinations:\n  - name: analytics\n    url: {}\n    auth: {{basic: {{usernameFile: {user}, passwordFile: {password_file}}}}}\n",
                worker.url
            ),
        )
    };
    let file = destinations(&write("password", &password));
    let out = cli::offsets(&name, &["--destinations", &file, "--destination", "analytics"]);
    assert_eq!(printed(&out).1, committed, "{}", out.all());
    assert!(!out.all().contains(&password), "{}", out.all());

    let wrong = "not-the-password-7Qx2";
    let file = destinations(&write("wrong", wrong));
    let out = cli::offsets(&name, &["--destinations", &file, "--destination", "analytics"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("answered 401 Unauthorized"), "{}", out.stderr);
    for secret in [wrong, password.as_str()] {
        assert!(!out.all().contains(secret), "{}", out.all());
    }
}

#[test]
fn a_confluent_cloud_destination_is_refused_naming_why_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let destinations = dir.path().join("destinations.yaml");
    std::fs::write(
        &destinations,
        "destinations:\n  - {name: orders-cloud, kind: confluent-cloud, environment: env-1, cluster: lkc-2, apiKeyFile: /k, apiSecretFile: /s}\n",
    )
    .unwrap();
    let file = destinations.to_str().unwrap();
    for destination in ["orders-cloud", "destination.cc:cc.env.env-1.kafka.lkc-2"] {
        let out = cli::offsets("orders", &["--destinations", file, "--destination", destination]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr.starts_with(&format!(
                "connect-gate: destination {destination:?} is Confluent Cloud: reading offsets is not supported there"
            )),
            "{}",
            out.stderr
        );
    }
    let out = cli::offsets("orders", &["--destinations", file, "--destination", "billing"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("no destination \"billing\" is declared; destinations: local, orders-cloud"),
        "{}",
        out.stderr
    );
}
