//! The admission webhook on the real stack: `connect-gate serve` runs as a process, registered on
//! the real kube-apiserver by `clientConfig.url` + `caBundle` from the manifests in webhook/,
//! judging ConfigMaps against the real Connect worker's plugins.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{BIN, Process, Registrations, TestEnv, eventually, free_port};

/// A `connect-gate serve` process (webhook only, unless given `--namespace`) with its own
/// certificates, reconciling (or, webhook only, judging) the test's namespace, and registered as
/// the validating and mutating webhook for that namespace (or the ones given).
struct Gate {
    process: Process,
    dir: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
    registrations: Option<Registrations>,
}

impl Gate {
    async fn start(env: &TestEnv, extra: &[&str]) -> Gate {
        Self::launch(env, extra, true, &[&env.namespace], None).await
    }

    /// Talking to the API server as the user of `kubeconfig` instead of the admin.
    async fn start_as(env: &TestEnv, extra: &[&str], kubeconfig: &Path) -> Gate {
        Self::launch(env, extra, true, &[&env.namespace], Some(kubeconfig)).await
    }

    /// For a sidecar that is alive but never ready (no plugin list under a deny policy).
    async fn start_unready(env: &TestEnv, extra: &[&str]) -> Gate {
        Self::launch(env, extra, false, &[&env.namespace], None).await
    }

    /// With registrations that select `namespaces`, not just the one the sidecar judges.
    async fn start_selecting(env: &TestEnv, namespaces: &[&str], extra: &[&str]) -> Gate {
        Self::launch(env, extra, true, namespaces, None).await
    }

    async fn launch(
        env: &TestEnv,
        extra: &[&str],
        ready: bool,
        namespaces: &[&str],
        kubeconfig: Option<&Path>,
    ) -> Gate {
        let mut gate = Self::spawn(env, extra, true, kubeconfig);
        gate.wait_until_answering(if ready { "readyz" } else { "healthz" })
            .await;
        gate.register(env, namespaces).await;
        gate
    }

    /// Starts `connect-gate serve` without waiting for it. With `certs` false its certificate
    /// files do not exist yet, as when cert-manager issues them after the pod started.
    fn spawn(env: &TestEnv, extra: &[&str], certs: bool, kubeconfig: Option<&Path>) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        if certs {
            issue_certs(&certs_dir);
        }
        let vars = dir.path().join("vars");
        std::fs::create_dir(&vars).unwrap();
        std::fs::write(vars.join("topics.properties"), "orders.topic=orders\n").unwrap();
        std::fs::write(dir.path().join("env"), "SINK_FILE=/tmp/connect-gate-sink.out\n").unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--tls-cert",
            certs_dir.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            certs_dir.join("tls.key").to_str().unwrap(),
            "--vars-dir",
            vars.to_str().unwrap(),
            "--env-file",
            dir.path().join("env").to_str().unwrap(),
        ]
        .map(String::from)
        .into();
        // Without a reconciled namespace of its own, the sidecar runs the webhook alone, for the
        // test's namespace.
        if !extra.contains(&"--namespace") {
            args.extend(["--no-reconcile", "--namespace", &env.namespace].map(String::from));
        }
        if !extra.contains(&"--connect-url") {
            args.extend(["--connect-url".to_string(), env.connect_url.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let envs: Vec<(&str, &std::ffi::OsStr)> =
            kubeconfig.map(|k| ("KUBECONFIG", k.as_os_str())).into_iter().collect();
        let process = Process::spawn(&args, &envs, dir.path().join("serve.log"));
        Gate {
            process,
            dir,
            port,
            metrics_port,
            registrations: None,
        }
    }

    /// Waits until `GET /{path}` on the webhook port succeeds.
    async fn wait_until_answering(&self, path: &str) {
        let client = self.https_client();
        let url = format!("https://127.0.0.1:{}/{path}", self.port);
        eventually(
            &format!("the webhook to answer /{path}"),
            Duration::from_secs(30),
            || async {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{path} {}", r.status())),
                    Err(e) => Err(format!("{e}; log: {}", self.process.log_tail())),
                }
            },
        )
        .await;
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("certs/ca.crt")).unwrap()
    }

    fn https_client(&self) -> reqwest::Client {
        connect_gate::install_crypto_provider();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem()).unwrap())
            .build()
            .unwrap()
    }

    /// Registers webhook/*.yaml as they ship, pointed at this process, with `namespaces` standing
    /// in for the reconciled namespace they select.
    async fn register(&mut self, env: &TestEnv, namespaces: &[&str]) {
        self.registrations = Some(Registrations::register(env, self.port, &self.ca_pem(), namespaces).await);
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the counter `name` (e.g. `connect_gate_cert_reloads_total`) on /metrics.
    async fn counter(&self, name: &str) -> u64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in:\n{metrics}"))
    }

    /// `GET /readyz` on the plain-HTTP metrics port: status and body.
    async fn plain_readyz(&self) -> Result<(u16, String), String> {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.metrics_port))
            .await
            .map_err(|e| format!("{e}; log: {}", self.process.log_tail()))?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| e.to_string())?))
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }
}

/// `connect-gate certs` into `dir`: a new CA the first time, a new serving certificate after.
fn issue_certs(dir: &Path) {
    let status = Command::new(BIN)
        .args([
            "certs",
            "--out",
            dir.to_str().unwrap(),
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "connect-gate certs failed");
}

/// A connector ConfigMap manifest.
fn configmap(name: &str, data: &[(&str, &str)]) -> String {
    configmap_labelled(name, &[], data)
}

fn configmap_labelled(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> String {
    let mut labels_json = json!({"destination": "connect"});
    for (k, v) in labels {
        labels_json[k] = json!(v);
    }
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels_json},
        "data": data,
    }))
    .unwrap()
}

fn finalizers(env: &TestEnv, configmap: &str) -> String {
    env.kubectl_ok(&["get", "configmap", configmap, "-o", "jsonpath={.metadata.finalizers}"])
}

/// Adds connect-gate's finalizer as the reconciler does before it creates anything.
fn put_finalizer(env: &TestEnv, configmap: &str) {
    env.kubectl_ok(&[
        "patch",
        "configmap",
        configmap,
        "--type=merge",
        "-p",
        r#"{"metadata": {"finalizers": ["connect-gate.io/cleanup"]}}"#,
    ]);
}

/// Frees a ConfigMap for cleanup where no reconciler runs.
fn remove_finalizers(env: &TestEnv, configmap: &str) {
    env.kubectl_ok(&[
        "patch",
        "configmap",
        configmap,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
}

fn sink(name: &str) -> String {
    format!(
        r#"{{"name": "{name}", "config": {{"connector.class": "FileStreamSink", "topics": $ORDERS_TOPIC, "file": env.SINK_FILE}}}}"#
    )
}

fn dry_run(env: &TestEnv, manifest: &str, server_side: bool) -> (bool, String) {
    let mut args = vec!["apply", "--dry-run=server", "-f", "-"];
    if server_side {
        args.insert(1, "--server-side");
    }
    let out = env.kubectl_with_stdin(&args, Some(manifest));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn each_configmap_is_judged_against_its_destination() {
    let env = TestEnv::new("webhook-destinations").await;
    // `second` is the stack's worker under another name, so that its plugin list is a real one;
    // `managed` is a Confluent Cloud cluster nothing answers for.
    let dir = tempfile::tempdir().unwrap();
    let destinations = dir.path().join("destinations.yaml");
    std::fs::write(
        &destinations,
        format!(
            "destinations:\n- {{name: second, url: '{}'}}\n- {{name: managed, kind: confluent-cloud, url: 'http://127.0.0.1:1', environment: env-1, cluster: lkc-1, apiKeyFile: {key}, apiSecretFile: {key}}}\n",
            env.connect_url,
            key = destinations.display()
        ),
    )
    .unwrap();
    let _gate = Gate::start(&env, &["--destinations", destinations.to_str().unwrap()]).await;
    let on = |destination: &str, name: &str, template: &str| {
        configmap_labelled(
            name,
            &[("connect-gate.io/destination", destination)],
            &[("c.json", template)],
        )
    };

    let (ok, text) = dry_run(&env, &on("second", "good", &sink(&env.connector_name("a"))), false);
    assert!(ok, "{text}");
    let typo = sink(&env.connector_name("b")).replace("FileStreamSink", "FileStreamSinc");
    let (ok, text) = dry_run(&env, &on("second", "typo", &typo), false);
    assert!(
        !ok && text.contains(r#"connector.class "FileStreamSinc" is not installed"#),
        "{text}"
    );

    let (ok, text) = dry_run(&env, &on("billing", "nowhere", &sink(&env.connector_name("c"))), false);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"destination "billing" (label connect-gate.io/destination) is not declared in --destinations; destinations: local, second, managed"#),
        "{text}"
    );

    let stopped = format!(
        r#"{{"name": "{}", "state": "stopped", "config": {{"connector.class": "DatagenSource"}}}}"#,
        env.connector_name("d")
    );
    let (ok, text) = dry_run(&env, &on("managed", "stopped", &stopped), false);
    assert!(
        !ok && text.contains("`state: stopped` is not supported by its destination managed"),
        "{text}"
    );
}

#[tokio::test]
async fn dry_run_denials_name_the_cause() {
    let env = TestEnv::new("webhook-denials").await;
    let gate = Gate::start(&env, &[]).await;

    let undefined = configmap(
        "undefined-var",
        &[("c.json", &sink("a").replace("$ORDERS_TOPIC", "$ORDERS_TOPIK"))],
    );
    let (ok, text) = dry_run(&env, &undefined, false);
    assert!(!ok, "{text}");
    assert!(
        text.contains("admission webhook") && text.contains("denied the request"),
        "{text}"
    );
    assert!(
        text.contains("undefined variable $ORDERS_TOPIK") && text.contains("$ORDERS_TOPIC"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ConfigMap {}/undefined-var", env.namespace)),
        "{text}"
    );

    let unknown = configmap(
        "unknown-class",
        &[("c.json", &sink("b").replace("FileStreamSink", "FileStreamSinc"))],
    );
    let (ok, text) = dry_run(&env, &unknown, false);
    assert!(!ok);
    assert!(
        text.contains(r#"connector.class "FileStreamSinc" is not installed"#),
        "{text}"
    );
    assert!(
        text.contains("org.apache.kafka.connect.file.FileStreamSinkConnector"),
        "{text}"
    );

    let two_bad = configmap(
        "two-bad",
        &[
            ("a.json", "{"),
            ("b.json", r#"{"name": "b", "config": {"connector.class": "Nope"}}"#),
        ],
    );
    let (ok, text) = dry_run(&env, &two_bad, false);
    assert!(!ok);
    assert!(
        text.contains("rejected 2 connector(s)") && text.contains("key a.json") && text.contains("key b.json"),
        "{text}"
    );

    // Nothing was created by any of these.
    assert!(
        env.kubectl_ok(&["get", "configmaps", "-l", "destination=connect", "-o", "name"])
            .trim()
            .is_empty()
    );
    let metrics = gate.metrics().await;
    assert!(
        metrics.contains(
            r#"connect_gate_admission_requests_total{webhook="validate",operation="CREATE",verdict="denied"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn good_configmap_is_admitted_a_dropped_finalizer_is_put_back_and_warnings_show() {
    let env = TestEnv::new("webhook-admit").await;
    let _gate = Gate::start(&env, &[]).await;
    let good = configmap("good", &[("sink.json", &sink(&env.connector_name("sink")))]);
    let out = env.kubectl_apply(&good);
    assert!(out.contains("configmap/good created"), "{out}");
    // A create is not sent to the mutating webhook: the reconciler (none runs here) adds the
    // finalizer before it creates anything.
    assert_eq!(finalizers(&env, "good"), "");
    // Once it is there, an update that drops it gets it back, exactly once.
    put_finalizer(&env, "good");
    let out = env.kubectl_with_stdin(&["replace", "-f", "-"], Some(&good));
    assert!(out.status.success(), "{out:?}");
    let held = finalizers(&env, "good");
    assert_eq!(held.matches("connect-gate.io/cleanup").count(), 1, "{held}");
    env.kubectl_apply(&good);
    let held = finalizers(&env, "good");
    assert_eq!(held.matches("connect-gate.io/cleanup").count(), 1, "{held}");

    // A managed-cluster connector without the Confluent Cloud API key in --destinations is
    // denied: it names what is missing and the destinations that exist.
    let cc = configmap_labelled(
        "cloud",
        &[("destination.cc", "cc.env.dev"), ("enabled", "false")],
        &[(
            "c.json",
            r#"{"name": "cloud-sink", "config": {"connector.class": "BigQuerySink", "keyfile": env.NOT_HERE}}"#,
        )],
    );
    let (ok, text) = dry_run(&env, &cc, false);
    assert!(!ok, "{text}");
    assert!(
        text.contains("label destination.cc needs the confluentCloud section") && text.contains("destinations: local"),
        "{text}"
    );

    // Free the ConfigMap for cleanup: no reconciler runs in this test.
    remove_finalizers(&env, "good");
}

#[tokio::test]
async fn server_side_apply_of_a_set_with_one_bad_configmap_fails() {
    let env = TestEnv::new("webhook-ssa").await;
    let _gate = Gate::start(&env, &[]).await;
    let set = [
        configmap("first-good", &[("a.json", &sink(&env.connector_name("a")))]),
        configmap(
            "the-bad-one",
            &[(
                "b.json",
                r#"{"name": "b", "config": {"connector.class": "FileStreamSink", "topics": $MISSING}}"#,
            )],
        ),
        configmap("second-good", &[("c.json", &sink(&env.connector_name("c")))]),
    ]
    .join("\n---\n");
    let (ok, text) = dry_run(&env, &set, true);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the-bad-one") && text.contains("undefined variable $MISSING"),
        "{text}"
    );
    assert!(
        !text.contains("first-good\" is forbidden") && !text.contains("second-good\" is forbidden"),
        "{text}"
    );
}

#[tokio::test]
async fn certificate_rotation_drops_no_request() {
    let env = TestEnv::new("webhook-rotation").await;
    let gate = Gate::start(&env, &[]).await;
    let client = gate.https_client();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": env.namespace, "name": "x", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "x", "labels": {"destination": "connect"}},
                       "data": {"a.json": sink("rot")}}
        }
    });
    let url = format!("https://127.0.0.1:{}/validate", gate.port);
    let certs = gate.certs_dir();
    let before = std::fs::read(certs.join("tls.crt")).unwrap();
    let reloads_before = gate.counter("connect_gate_cert_reloads_total").await;
    let ca = reqwest::Certificate::from_pem(&gate.ca_pem()).unwrap();
    let load = {
        let (client, url, review) = (client.clone(), url.clone(), review.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..400 {
                // Alternate a kept-alive connection with fresh ones (fresh handshakes).
                let fresh;
                let c = if i % 2 == 0 {
                    &client
                } else {
                    fresh = reqwest::Client::builder()
                        .add_root_certificate(ca.clone())
                        .build()
                        .unwrap();
                    &fresh
                };
                match c.post(&url).json(&review).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            failures
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        issue_certs(&certs);
    }
    let failures = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_ne!(
        before,
        std::fs::read(certs.join("tls.crt")).unwrap(),
        "the certificate was rotated"
    );
    // The reloader polls every 2s: the last rotation may be counted only after the load ended.
    eventually("the rotations to be counted", Duration::from_secs(30), || async {
        match gate.counter("connect_gate_cert_reloads_total").await {
            n if n > reloads_before => Ok(()),
            n => Err(format!("connect_gate_cert_reloads_total still {n}")),
        }
    })
    .await;
}

#[tokio::test]
async fn serve_starts_before_its_certificate_exists_and_serves_once_it_appears() {
    let env = TestEnv::new("webhook-late-cert").await;
    let mut gate = Gate::spawn(&env, &[], false, None);

    // Up without a certificate: readiness says why on the plain-HTTP port...
    let (status, body) = eventually(
        "serve to answer /readyz on the metrics port",
        Duration::from_secs(30),
        || async { gate.plain_readyz().await },
    )
    .await;
    assert_eq!((status, body.as_str()), (503, "serving certificate not loaded"));
    assert!(
        gate.process.log().contains("waiting for it"),
        "{}",
        gate.process.log_tail()
    );

    // ...and the webhook port fails TLS handshakes cleanly, again and again.
    let staging = gate.dir.path().join("staging");
    issue_certs(&staging);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(staging.join("ca.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    for _ in 0..3 {
        let err = client
            .get(format!("https://127.0.0.1:{}/healthz", gate.port))
            .send()
            .await
            .unwrap_err();
        let chain: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect();
        assert!(chain.iter().any(|e| e.contains("fatal alert")), "{chain:?}");
    }
    assert_eq!(gate.plain_readyz().await.unwrap().0, 503);
    // Waiting for the first certificate is not a reload failure.
    assert_eq!(gate.counter("connect_gate_cert_reload_failures_total").await, 0);

    // The certificate is issued: the files appear at the paths serve was given.
    std::fs::rename(&staging, gate.certs_dir()).unwrap();
    gate.wait_until_answering("readyz").await;
    assert_eq!(gate.plain_readyz().await.unwrap(), (200, "ready".to_string()));
    // The apiserver reaches the webhook: registering waits for a denial to show.
    gate.register(&env, &[&env.namespace]).await;
    let (ok, text) = dry_run(&env, &configmap("fine", &[("s.json", &sink("fine"))]), false);
    assert!(ok, "{text}");
    assert_eq!(
        gate.counter("connect_gate_cert_reloads_total").await,
        0,
        "the first certificate is no reload"
    );
    assert_eq!(gate.counter("connect_gate_cert_reload_failures_total").await, 0);
    assert!(!gate.process.log().contains("panicked"), "{}", gate.process.log());
}

#[tokio::test]
async fn serve_refuses_to_start_with_a_certificate_that_exists_but_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    issue_certs(&certs);
    std::fs::write(certs.join("tls.crt"), "not a certificate\n").unwrap();
    let (port, metrics_port, worker_port) = (free_port(), free_port(), free_port());
    let serve = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--no-reconcile",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--connect-url",
            &format!("http://127.0.0.1:{worker_port}"),
            "--tls-cert",
            certs.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            certs.join("tls.key").to_str().unwrap(),
        ])
        .env("CONNECT_GATE_LOG", "info")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("serve exits")
        .unwrap();
    assert!(!out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.contains(&format!("{}: not PEM", certs.join("tls.crt").display())),
        "{log}"
    );
}

#[tokio::test]
async fn worker_validator_and_plugin_policy() {
    let env = TestEnv::new("webhook-worker").await;
    // The worker's own validator: a sink without topics is invalid to Connect, not to the template.
    let gate = Gate::start(&env, &["--validate-with-worker"]).await;
    let no_topics = configmap(
        "no-topics",
        &[(
            "s.json",
            r#"{"name": "s", "config": {"connector.class": "FileStreamSink"}}"#,
        )],
    );
    let (ok, text) = dry_run(&env, &no_topics, false);
    assert!(!ok, "{text}");
    assert!(text.contains("the worker rejects config key `topics`"), "{text}");
    let (ok, text) = dry_run(&env, &configmap("fine", &[("s.json", &sink("fine"))]), false);
    assert!(ok, "{text}");
    drop(gate);

    // An unreachable worker: admitted with a warning by default, denied by policy.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let good = configmap("good", &[("s.json", &sink("good"))]);
    let env2 = TestEnv::new("webhook-nowork").await;
    let gate = Gate::start(&env2, &["--connect-url", &dead]).await;
    let (ok, text) = dry_run(&env2, &good, false);
    assert!(ok, "{text}");
    assert!(
        text.contains("Warning:") && text.contains("plugin check skipped"),
        "{text}"
    );
    drop(gate);
    let env3 = TestEnv::new("webhook-deny").await;
    let gate = Gate::start_unready(&env3, &["--connect-url", &dead, "--on-plugins-unavailable", "deny"]).await;
    let (ok, text) = dry_run(&env3, &good, false);
    assert!(!ok && text.contains("--on-plugins-unavailable=deny"), "{text}");
    drop(gate);
}

#[tokio::test]
async fn bad_bodies_get_errors_not_panics() {
    let env = TestEnv::new("webhook-bodies").await;
    let gate = Gate::start(&env, &[]).await;
    let client = gate.https_client();
    let base = format!("https://127.0.0.1:{}", gate.port);
    for body in [
        "",
        "{",
        "[]",
        r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
        "\u{0}\u{1}",
    ] {
        for path in ["/validate", "/mutate"] {
            let r = client.post(format!("{base}{path}")).body(body).send().await.unwrap();
            assert_eq!(r.status(), 400, "{path} {body:?}");
        }
    }
    let huge = vec![b'x'; 8 << 20];
    let r = client.post(format!("{base}/validate")).body(huge).send().await;
    assert!(
        r.map(|r| r.status() == 413).unwrap_or(true),
        "an oversized body is refused"
    );
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert!(r.status().is_success());
    // Still serving after all that.
    let (ok, _) = dry_run(&env, &configmap("p", &[("p.json", "{")]), false);
    assert!(!ok);
}

#[tokio::test]
async fn a_name_declared_by_another_configmap_is_denied_as_the_reconciler_would() {
    let env = TestEnv::new("webhook-duplicates").await;
    let _gate = Gate::start(&env, &["--namespace", &env.namespace, "--resync", "2s"]).await;
    let name = env.connector_name("shared-name");
    env.kubectl_apply(&configmap("first", &[("a.json", &sink(&name))]));
    let second = configmap("second", &[("b.json", &sink(&name))]);
    let text = eventually(
        "the second declaration to be denied",
        Duration::from_secs(30),
        || async {
            match dry_run(&env, &second, false) {
                (false, text) => Ok(text),
                (true, text) => Err(format!("admitted: {text}")),
            }
        },
    )
    .await;
    let expected = format!(
        r#"connector name "{name}" is also declared by ConfigMap {}/first"#,
        env.namespace
    );
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains("rejected 1 connector(s)"),
        "only the incoming ConfigMap is judged: {text}"
    );
    // Re-applying the first one itself is not a duplicate of itself.
    let (ok, text) = dry_run(&env, &configmap("first", &[("a.json", &sink(&name))]), false);
    assert!(ok, "{text}");
    // The reconciler in the same process deletes the connector, then lets the ConfigMap go.
    env.kubectl_ok(&["delete", "configmap", "first", "--wait=false"]);
    eventually("the ConfigMap to be gone", Duration::from_secs(30), || async {
        let out = env.kubectl(&["get", "configmap", "first"]);
        if out.status.success() {
            Err("still there".into())
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
async fn configmaps_outside_the_reconciled_namespace_are_not_judged_get_no_finalizer_and_delete_normally() {
    let env = TestEnv::new("webhook-scope").await;
    let other = TestEnv::new("webhook-scope-other").await;
    // Registrations broader than they should be, selecting a namespace the sidecar does not
    // reconcile: the webhook itself must leave that one alone.
    let gate = Gate::start_selecting(&env, &[&env.namespace, &other.namespace], &[]).await;
    let broken = configmap("broken", &[("b.json", "{")]);

    // Created for real there: admitted unjudged with a warning, and no finalizer.
    let out = other.kubectl_with_stdin(&["apply", "-f", "-"], Some(&broken));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = format!("connect-gate reconciles namespace {} only", env.namespace);
    assert!(stderr.contains("Warning:") && stderr.contains(&warning), "{stderr}");
    assert_eq!(finalizers(&other, "broken"), "");
    // Changed there: still unjudged; and a finalizer dropped there is not put back.
    other.kubectl_apply(&configmap("broken", &[("b.json", "{"), ("c.json", "[")]));
    put_finalizer(&other, "broken");
    remove_finalizers(&other, "broken");
    assert_eq!(finalizers(&other, "broken"), "");
    // The webhooks were asked, and answered without judging or patching.
    let asked = [
        ("validate", "CREATE", 1),
        ("validate", "UPDATE", 3),
        ("mutate", "UPDATE", 1),
    ];
    for (hook, operation, times) in asked {
        let series = format!(
            r#"connect_gate_admission_requests_total{{webhook="{hook}",operation="{operation}",verdict="out_of_scope"}}"#
        );
        assert_eq!(gate.counter(&series).await, times, "{series}");
    }
    // Deleted like any ConfigMap: nothing holds it.
    other.kubectl_ok(&["delete", "configmap", "broken", "--timeout=30s"]);
    let out = other.kubectl(&["get", "configmap", "broken"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );

    // The reconciled namespace is still judged, and a finalizer dropped there is put back.
    let (ok, text) = dry_run(&env, &broken, false);
    assert!(!ok && text.contains("rejected 1 connector(s)"), "{text}");
    env.kubectl_apply(&configmap("good", &[("s.json", &sink(&env.connector_name("s")))]));
    put_finalizer(&env, "good");
    remove_finalizers(&env, "good");
    let held = finalizers(&env, "good");
    assert!(held.contains("connect-gate.io/cleanup"), "{held}");
    // Free it for cleanup: no reconciler runs in this test.
    remove_finalizers(&env, "good");
}

/// Slow and silent clients, as many as fit beside the API server's own connections, do not
/// keep real admission requests from being answered: every dry-run is judged, none reaches the
/// webhook timeout. The latencies with and without them are printed for BENCHMARKS.md.
#[tokio::test]
async fn hostile_clients_do_not_starve_admission() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use rustls::pki_types::pem::PemObject;

    const HOSTILE: usize = 900;
    const REQUESTS: usize = 200;
    const CONCURRENCY: usize = 10;

    let env = TestEnv::new("webhook-hostile").await;
    let gate = Gate::start(&env, &[]).await;
    let api: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &env.namespace);

    /// Dry-run creates, half good and half bad; every answer must be the verdict. Returns the
    /// latencies in ms, sorted.
    async fn admissions(api: &Api<ConfigMap>, round: &str) -> Vec<f64> {
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let results = futures::stream::iter(0..REQUESTS)
            .map(|i| {
                let params = params.clone();
                let good = i % 2 == 0;
                let name = format!("{round}-{i}");
                let class = if good { "FileStreamSink" } else { "FileStreamSinc" };
                let connector = sink(&name).replace("FileStreamSink", class);
                let cm: ConfigMap = serde_json::from_str(&configmap(&name, &[("c.json", &connector)])).unwrap();
                async move {
                    let started = std::time::Instant::now();
                    let result = api.create(&params, &cm).await;
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    match (good, result) {
                        (true, Ok(_)) => {}
                        (false, Err(kube::Error::Api(s))) if s.code == 403 && s.message.contains("FileStreamSinc") => {}
                        (good, other) => panic!("{name} (good: {good}) was not judged: {other:?}"),
                    }
                    ms
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<f64>>()
            .await;
        let mut sorted = results;
        sorted.sort_by(f64::total_cmp);
        sorted
    }
    fn report(label: &str, ms: &[f64]) {
        let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
        println!(
            "{label}: {} dry-runs through kube-apiserver, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }

    let quiet = admissions(&api, "quiet").await;

    // The hostile clients: a quarter each never finish the TLS handshake, send an HTTP/1.1
    // head one byte at a time, send a body one byte at a time, or open HTTP/2 and only answer
    // the server's pings. Each reconnects when dropped, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let tls = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&gate.ca_pem()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = |alpn: &[u8]| {
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![alpn.to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(c))
        };
        Arc::new((config(b"http/1.1"), config(b"h2")))
    };
    let addr = format!("127.0.0.1:{}", gate.port);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..HOSTILE {
        let (stop, connected, opened, tls, addr) = (
            stop.clone(),
            connected.clone(),
            opened.clone(),
            tls.clone(),
            addr.clone(),
        );
        clients.spawn(async move {
            use tokio::io::AsyncWriteExt;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tcp) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                connected.fetch_add(1, Ordering::Relaxed);
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let drip = |mut w: Box<dyn tokio::io::AsyncWrite + Unpin + Send>, head: Vec<u8>| {
                    let stop = stop.clone();
                    async move {
                        let _ = w.write_all(&head).await;
                        while !stop.load(Ordering::Relaxed) {
                            if w.write_all(b"x").await.is_err() || w.flush().await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                };
                match i % 4 {
                    0 => {
                        // Silent: holds the TCP connection, never says hello.
                        let mut buf = [0u8; 1];
                        let _ = tokio::time::timeout(Duration::from_secs(30), tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await;
                    }
                    1 => {
                        if let Ok(tls) = tls.0.connect(name, tcp).await {
                            drip(Box::new(tls), b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec()).await;
                        }
                    }
                    2 => {
                        if let Ok(tls) = tls.0.connect(name, tcp).await {
                            let head = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3000000\r\n\r\n";
                            drip(Box::new(tls), head.to_vec()).await;
                        }
                    }
                    _ => {
                        if let Ok(tls) = tls.1.connect(name, tcp).await
                            && let Ok((_send, connection)) = h2::client::handshake(tls).await
                        {
                            // The connection task answers pings; no request is ever sent.
                            let _ = connection.await;
                        }
                    }
                }
                connected.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    let hostile = eventually("the hostile clients to connect", Duration::from_secs(60), || async {
        let n = connected.load(Ordering::Relaxed);
        if n >= HOSTILE * 9 / 10 {
            Ok(n)
        } else {
            Err(format!("{n} connected"))
        }
    })
    .await;
    let loaded = admissions(&api, "loaded").await;
    let still = connected.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    clients.abort_all();

    println!(
        "hostile clients connected: {hostile} at the start, {still} at the end, {} connections opened",
        opened.load(Ordering::Relaxed)
    );
    report("without hostile clients", &quiet);
    report(&format!("with {HOSTILE} hostile clients"), &loaded);
    assert!(
        gate.process.log_tail().lines().all(|l| !l.contains("panicked")),
        "{}",
        gate.process.log_tail()
    );
}

const REMOVE_FINALIZER: &str = r#"[{"op": "remove", "path": "/metadata/finalizers/0"}]"#;

/// kubectl as `kubeconfig`'s user with `stdin`: success and the combined output.
fn kubectl_as(env: &TestEnv, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let out = support::kubectl_with(kubeconfig, Some(&env.namespace), args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn wait_gone(env: &TestEnv, name: &str) {
    eventually(
        &format!("ConfigMap {name} to be gone"),
        Duration::from_secs(60),
        || async {
            let out = env.kubectl(&["get", "configmap", name, "-o", "jsonpath={.metadata.finalizers}"]);
            if out.status.success() {
                Err(format!(
                    "still there, finalizers {}",
                    String::from_utf8_lossy(&out.stdout)
                ))
            } else {
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn only_connect_gate_changes_its_records_and_an_operator_frees_a_stuck_configmap_as_connect_gate() {
    let env = TestEnv::new("webhook-records").await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = env.service_account_kubeconfig("connect-gate", support::RECONCILER_RULES, dir.path());
    let editor = env.service_account_kubeconfig("editor", support::CONFIGMAP_EDITOR_RULES, dir.path());
    let controller = format!("system:serviceaccount:{}:connect-gate", env.namespace);
    let refusal = format!("only connect-gate ({controller}) may change its records on a ConfigMap");
    // Someone else holds the reconciler's Lease for now: nothing reconciles yet.
    env.kubectl_apply(
        r#"{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "connect-gate"},
            "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600}}"#,
    );
    let gate = Gate::start_as(&env, &["--namespace", &env.namespace, "--resync", "2s"], &sidecar).await;

    // A ConfigMap deleted while nothing reconciles stays Terminating on the finalizer (here put
    // there by its editor, as the reconciler would before creating its connector). Its editor
    // may not take the finalizer off...
    let stuck = configmap("stuck", &[("s.json", &sink(&env.connector_name("stuck")))]);
    let (ok, text) = kubectl_as(&env, &editor, &["create", "-f", "-"], Some(&stuck));
    assert!(ok, "{text}");
    let (ok, text) = kubectl_as(
        &env,
        &editor,
        &[
            "patch",
            "configmap",
            "stuck",
            "--type=merge",
            "-p",
            r#"{"metadata": {"finalizers": ["connect-gate.io/cleanup"]}}"#,
        ],
        None,
    );
    assert!(ok, "{text}");
    let (ok, text) = kubectl_as(&env, &editor, &["delete", "configmap", "stuck", "--wait=false"], None);
    assert!(ok, "{text}");
    let patch = ["patch", "configmap", "stuck", "--type=json", "-p", REMOVE_FINALIZER];
    let (ok, text) = kubectl_as(&env, &editor, &patch, None);
    assert!(!ok && text.contains(&refusal), "{text}");
    assert!(
        text.contains("this request changes finalizer connect-gate.io/cleanup (removed)"),
        "{text}"
    );
    // ...an operator frees it as connect-gate, by impersonation (README).
    let mut as_controller = vec!["--as", controller.as_str()];
    as_controller.extend(patch);
    env.kubectl_ok(&as_controller);
    wait_gone(&env, "stuck").await;

    // The Lease is free again: the reconciler takes over, and its own writes pass the webhook.
    env.kubectl_ok(&[
        "patch",
        "lease",
        "connect-gate",
        "--type=merge",
        "-p",
        r#"{"spec": {"holderIdentity": null}}"#,
    ]);
    let name = env.connector_name("sink");
    let (ok, text) = kubectl_as(
        &env,
        &editor,
        &["create", "-f", "-"],
        Some(&configmap("cm", &[("s.json", &sink(&name))])),
    );
    assert!(ok, "{text}");
    eventually(
        "the reconciler to record its connector on the ConfigMap",
        Duration::from_secs(60),
        || async {
            let out = env.kubectl(&["get", "configmap", "cm", "-o", "jsonpath={.metadata.annotations}"]);
            let annotations = String::from_utf8_lossy(&out.stdout).to_string();
            if annotations.contains("connect-gate.io/connectors") && annotations.contains(&name) {
                Ok(())
            } else {
                Err(annotations)
            }
        },
    )
    .await;

    // connect-gate's own record keeping is not sent to the webhook at all (the registration's
    // match condition); a change of data is, whoever makes it.
    let judged = || async {
        let metrics = gate.metrics().await;
        metrics
            .lines()
            .filter(|l| l.starts_with("connect_gate_admission_requests_total{webhook=\"validate\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = judged().await;
    env.kubectl_ok(&[
        "--as",
        &controller,
        "annotate",
        "configmap",
        "cm",
        "example.com/touched=yes",
    ]);
    assert_eq!(
        judged().await,
        before,
        "the sidecar's own update was sent to the webhook"
    );
    let bad_data = [
        "--as",
        controller.as_str(),
        "patch",
        "configmap",
        "cm",
        "--type=merge",
        "-p",
        r#"{"data": {"bad.json": "{"}}"#,
    ];
    let out = env.kubectl(&bad_data);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("does not parse"), "{text}");
    assert!(judged().await > before);

    // The editor claims another connector for it: refused. Taking the finalizer off a live
    // ConfigMap is undone by the mutating webhook within the same request.
    let forged = format!(r#"connect-gate.io/connectors={{"{name}": "s.json", "some-connector": "nokey"}}"#);
    let (ok, text) = kubectl_as(
        &env,
        &editor,
        &["annotate", "--overwrite", "configmap", "cm", &forged],
        None,
    );
    assert!(!ok && text.contains(&refusal), "{text}");
    assert!(
        text.contains("this request changes annotation connect-gate.io/connectors."),
        "{text}"
    );
    let (ok, text) = kubectl_as(
        &env,
        &editor,
        &["patch", "configmap", "cm", "--type=json", "-p", REMOVE_FINALIZER],
        None,
    );
    assert!(ok, "{text}");
    let held = finalizers(&env, "cm");
    assert!(held.contains("connect-gate.io/cleanup"), "{held}");
    // What is the editor's stays the editor's; deleting still deletes the connector first.
    let (ok, text) = kubectl_as(&env, &editor, &["annotate", "configmap", "cm", "team=orders"], None);
    assert!(ok, "{text}");
    let (ok, text) = kubectl_as(&env, &editor, &["delete", "configmap", "cm", "--wait=false"], None);
    assert!(ok, "{text}");
    wait_gone(&env, "cm").await;
    let (status, _) = env.connect.get(&format!("/connectors/{name}")).await;
    assert_eq!(
        status, 404,
        "the reconciler deleted the connector before letting the ConfigMap go"
    );
}

/// Bad template inputs never take the sidecar down: it starts with them, admits what does not
/// read them, and a template reading one is denied with where it is defined and why, never its
/// value.
#[tokio::test]
async fn bad_template_inputs_make_only_their_own_variables_unusable() {
    let env = TestEnv::new("webhook-bad-inputs").await;
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("clash.properties"),
        "db.url=jdbc:one\ndb-url=jdbc:two\n",
    )
    .unwrap();
    std::fs::write(bad.path().join("binary-secret"), [0xff, 0xfe, 0x00]).unwrap();
    let _gate = Gate::start(&env, &["--vars-dir", bad.path().to_str().unwrap()]).await;

    let good = configmap("good", &[("s.json", &sink(&env.connector_name("s")))]);
    let (ok, text) = dry_run(&env, &good, false);
    assert!(ok, "{text}");
    for (var, why) in [
        ("$DB_URL", "cannot be used: defined more than once"),
        ("$BINARY_SECRET", "is not UTF-8 text"),
    ] {
        let template = sink(&env.connector_name("b")).replace("$ORDERS_TOPIC", var);
        let (ok, text) = dry_run(&env, &configmap("bad", &[("b.json", &template)]), false);
        assert!(!ok && text.contains(why), "{var}: {text}");
        assert!(!text.contains("jdbc:one") && !text.contains("jdbc:two"), "{text}");
    }
    let (ok, text) = dry_run(
        &env,
        &configmap(
            "clash",
            &[(
                "c.json",
                &sink(&env.connector_name("c")).replace("$ORDERS_TOPIC", "$DB_URL"),
            )],
        ),
        false,
    );
    assert!(
        !ok && text.contains("clash.properties (key db.url)") && text.contains("clash.properties (key db-url)"),
        "{text}"
    );
}
