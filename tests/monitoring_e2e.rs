//! deploy/monitoring/ tested: the PrometheusRule's rules checked and unit-tested with promtool,
//! the kustomization built with kubectl and dry-run on the stack's API server against the
//! Prometheus Operator's CRDs; and on the real stack, a real Prometheus scraping a live
//! `connect-gate serve` (webhook and reconciler, registered on the API server, against the real
//! Connect worker) and the API server: a connector that FAILED, a FAILED task and a stuck offsets
//! operation fire their alerts, every query of the Grafana dashboard parses and returns data, and
//! once the sidecar is gone the no-leader and webhook-error alerts fire. prometheus, promtool and
//! the CRDs are the stack's (`tests/stack/build --prometheus`, in `$PROMETHEUS_BIN`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::sidecar::{SOURCE, configmap, delete_and_wait_gone, source_template, wait_status};
use support::{BIN, Registrations, TestEnv, eventually, free_port, kubectl_in, run_script, stack};

const WAIT: Duration = Duration::from_secs(120);

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

/// The directory holding prometheus and promtool, built first if the stack cache lacks them.
fn prometheus_bin() -> PathBuf {
    stack();
    let dir = PathBuf::from(
        std::env::var("PROMETHEUS_BIN").expect("PROMETHEUS_BIN is exported by tests/stack/up; start the stack again"),
    );
    if !dir.join(".complete").exists() {
        run_script(&["build", "--prometheus"]);
        assert!(
            dir.join(".complete").exists(),
            "PROMETHEUS_BIN={} is not where tests/stack/build puts them now: start the stack again",
            dir.display()
        );
    }
    dir
}

/// The rule groups of the PrometheusRule: its `spec`, which is a plain Prometheus rule file.
fn rule_file() -> serde_norway::Value {
    let text = std::fs::read_to_string(monitoring_dir().join("prometheusrule.yaml")).unwrap();
    let rule: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    rule["spec"].clone()
}

fn alert_names(rules: &serde_norway::Value) -> Vec<String> {
    let groups = rules["groups"].as_sequence().unwrap();
    let rules = groups.iter().flat_map(|g| g["rules"].as_sequence().unwrap());
    rules.filter_map(|r| Some(r["alert"].as_str()?.to_string())).collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let promtool = prometheus_bin().join("promtool");
    let dir = tempfile::tempdir().unwrap();
    let rules = rule_file();
    std::fs::write(
        dir.path().join("connect-gate.rules.yaml"),
        serde_norway::to_string(&rules).unwrap(),
    )
    .unwrap();
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.path().join("connect-gate.rules.yaml")));
    eprintln!("{out}");
    let alerts = alert_names(&rules);
    assert!(out.contains(&format!("SUCCESS: {} rules found", alerts.len())), "{out}");

    // The unit tests name the rule file relative to themselves: beside the extracted one.
    let tests = monitoring_dir().join("tests/connect-gate.test.yaml");
    let copy = dir.path().join("connect-gate.test.yaml");
    std::fs::copy(&tests, &copy).unwrap();
    let out = run(Command::new(&promtool).args(["test", "rules"]).arg(&copy));
    eprintln!("{out}");

    // Every alert is shown firing somewhere and held back somewhere (before its `for`, or on
    // healthy data), so a new alert without tests fails here.
    let unit: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&tests).unwrap()).unwrap();
    let cases: Vec<(String, bool)> = unit["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .map(|c| {
            let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap().to_string(), fires)
        })
        .collect();
    for alert in &alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "{} has no unit test where it {}",
                alert,
                if fires { "fires" } else { "does not fire" }
            );
        }
    }
}

/// `kubectl kustomize deploy/monitoring` (the stack's kubectl, on PATH), parsed.
fn kustomize() -> Vec<Value> {
    stack();
    let out = run(Command::new("kubectl").args(["kustomize"]).arg(monitoring_dir()));
    serde_norway::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_kustomization_builds_the_rule_the_podmonitor_and_the_dashboard() {
    let objects = kustomize();
    let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "PodMonitor", "PrometheusRule"]);
    let rule = &objects[2];
    assert_eq!(
        rule["spec"],
        serde_json::to_value(rule_file()).unwrap(),
        "the PrometheusRule's rules as in prometheusrule.yaml"
    );
    let dashboard = &objects[0];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dashboard["data"]["connect-gate.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, dashboard_json());
}

/// The Prometheus Operator's PodMonitor and PrometheusRule CRDs (`build --prometheus` keeps them
/// beside the binaries), installed on the stack's API server; deleted on drop, being cluster-wide.
struct OperatorCrds(Vec<PathBuf>);

impl OperatorCrds {
    fn install() -> OperatorCrds {
        let mut files: Vec<PathBuf> = std::fs::read_dir(prometheus_bin().join("crds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let crds = OperatorCrds(files);
        for file in &crds.0 {
            let file = file.to_str().unwrap();
            kubectl(&["apply", "--server-side", "--field-manager=monitoring-e2e", "-f", file]);
            kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "-f", file]);
        }
        crds
    }
}

impl Drop for OperatorCrds {
    fn drop(&mut self) {
        for file in &self.0 {
            let args = ["delete", "--ignore-not-found", "--wait", "-f", file.to_str().unwrap()];
            let _ = kubectl_in(None, &args, None);
        }
    }
}

/// The stack's kubectl as its admin; panics unless it succeeds.
fn kubectl(args: &[&str]) -> String {
    let out = kubectl_in(None, args, None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {}: {text}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn dashboard_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(monitoring_dir().join("dashboard.json")).unwrap()).unwrap()
}

struct Query {
    what: String,
    expr: String,
    instant: bool,
}

/// Every query of the dashboard, its template variables replaced as Grafana would: `$__range`
/// and `$__rate_interval` by windows that fit this test's 1 s scrapes, each variable by its
/// "All" value (they are all multi-value regex matchers).
fn dashboard_queries() -> Vec<Query> {
    let dashboard = dashboard_json();
    let list = dashboard["templating"]["list"].as_array().unwrap();
    let mut variables: Vec<(String, String)> = vec![
        ("$__rate_interval".into(), "30s".into()),
        ("$__range".into(), "10m".into()),
    ];
    for var in list.iter().filter(|v| v["type"] == "query") {
        variables.push((
            format!("${}", var["name"].as_str().unwrap()),
            var["allValue"].as_str().unwrap().into(),
        ));
    }
    let substitute = |expr: &str| {
        let out = variables.iter().fold(expr.to_string(), |e, (k, v)| e.replace(k, v));
        assert!(!out.contains('$'), "a variable left in {out}");
        out
    };
    let mut queries: Vec<Query> = list
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| Query {
            what: format!("variable {}", v["name"]),
            expr: substitute(v["query"]["query"].as_str().unwrap()),
            instant: true,
        })
        .collect();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels
        .iter()
        .chain(panels.iter().flat_map(|p| p["panels"].as_array().into_iter().flatten()))
    {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(Query {
                what: format!("panel {}", panel["title"]),
                expr: substitute(target["expr"].as_str().unwrap()),
                instant: target["instant"] == true,
            });
        }
    }
    queries
}

/// A real Prometheus on loopback, with its own directory, scraping as `scrape_configs` say and
/// evaluating `rules` every second; killed on drop.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(rules: &serde_norway::Value, scrape_configs: Value) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("monitoring-e2e-").tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), serde_norway::to_string(rules).unwrap()).unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": scrape_configs,
        });
        std::fs::write(
            dir.path().join("prometheus.yml"),
            serde_json::to_string(&config).unwrap(),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(prometheus_bin().join("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params).unwrap();
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{e}; log:\n{}", self.log_tail()))?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(body.to_string())
        }
    }

    async fn ready(&self) -> Result<(), String> {
        let r = self.http.get(format!("{}/-/ready", self.url)).send().await;
        match r {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}; log:\n{}", self.log_tail())),
        }
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// A range query's result matrix, from `start` to now at the scrape interval.
    async fn query_range(&self, expr: &str, start: std::time::SystemTime) -> Result<Vec<Value>, String> {
        let epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
        let (start, end) = (epoch(start), epoch(std::time::SystemTime::now()));
        let params = [("query", expr), ("start", &start), ("end", &end), ("step", "1s")];
        let data = self.get("/api/v1/query_range", &params).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The values of `label` on the series `selector` selects (Grafana's `label_values`).
    async fn label_values(&self, label: &str, selector: &str) -> Result<Vec<Value>, String> {
        let data = self
            .get(&format!("/api/v1/label/{label}/values"), &[("match[]", selector)])
            .await?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }

    async fn firing(&self, alertname: &str) -> Result<Vec<Value>, String> {
        let data = self.get("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == alertname && a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `connect-gate serve` as deployed: webhook and reconciler in one process, for the test's
/// namespace, with a serving certificate of its own CA.
struct Serve {
    process: support::Process,
    port: u16,
    metrics_port: u16,
}

impl Serve {
    fn start(env: &TestEnv, dir: &Path) -> Serve {
        let certs = dir.join("certs");
        run(Command::new(BIN)
            .args(["certs", "--out"])
            .arg(&certs)
            .args(["--ip", "127.0.0.1"]));
        let vars = dir.join("vars");
        std::fs::create_dir_all(&vars).unwrap();
        std::fs::write(dir.join("env"), "").unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let args: Vec<String> = [
            "serve".to_string(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--metrics-listen=127.0.0.1:{metrics_port}"),
            format!("--tls-cert={}", path(&certs.join("tls.crt"))),
            format!("--tls-key={}", path(&certs.join("tls.key"))),
            format!("--namespace={}", env.namespace),
            format!("--connect-url={}", env.connect_url),
            format!("--vars-dir={}", path(&vars)),
            format!("--env-file={}", path(&dir.join("env"))),
            "--resync=2s".to_string(),
            "--lease-duration=4s".to_string(),
        ]
        .into();
        let process = support::Process::spawn(&args, &[("POD_NAME", "cg-0".as_ref())], dir.join("serve.log"));
        Serve {
            process,
            port,
            metrics_port,
        }
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        eventually("connect-gate serve to be ready", WAIT, || async {
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", self.process.log_tail())),
            }
        })
        .await;
    }
}

/// A connector template with `key` (beside `name` and `config`) declared as `value`.
fn declaring(template: String, key: &str, value: Value) -> String {
    let mut declaration: Value = serde_json::from_str(&template).unwrap();
    declaration[key] = value;
    declaration.to_string()
}

fn manifest(cm: &k8s_openapi::api::core::v1::ConfigMap) -> String {
    serde_json::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": cm.metadata, "data": cm.data}))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connector_fires_its_alerts_and_every_dashboard_query_returns_data() {
    let env = TestEnv::new("monitoring").await;
    // What the kustomization builds is accepted by a real API server serving the Operator's
    // CRDs (their schemas), in the test's namespace for the one it names.
    {
        let _crds = OperatorCrds::install();
        for mut object in kustomize() {
            object["metadata"]["namespace"] = json!(env.namespace);
            let manifest = object.to_string();
            let out = env.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("(server dry run)"),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let dir = tempfile::Builder::new().prefix("monitoring-e2e-").tempdir().unwrap();
    let mut serve = Serve::start(&env, dir.path());
    serve.wait_ready().await;
    let ca = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();
    let _registrations = Registrations::register(&env, serve.port, &ca, &[&env.namespace]).await;
    let started = std::time::SystemTime::now();

    // Every state and verdict the dashboard shows: a connector that runs (and is restarted by a
    // token below); one that FAILS (a heartbeat connector told to forward admin calls through a
    // class that is no admin client fails in start()); one whose task FAILS (a file sink whose
    // directory does not exist); one stuck in an offsets operation (the file source rejects a
    // partition without its `filename` key, so connect-gate keeps it stopped and retries); and a
    // change the webhook denies.
    let healthy = env.connector_name("healthy");
    let broken = env.connector_name("broken");
    let sink = env.connector_name("sink");
    let stuck = env.connector_name("stuck");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a\nb\n").unwrap();
    let broken_template = json!({"name": broken, "config": {
        "connector.class": "org.apache.kafka.connect.mirror.MirrorHeartbeatConnector", "tasks.max": "1",
        "source.cluster.alias": "a", "target.cluster.alias": "b",
        "source.cluster.bootstrap.servers": stack().kafka_bootstrap, "target.cluster.bootstrap.servers": stack().kafka_bootstrap,
        "forwarding.admin.class": "java.lang.String"}});
    let sink_template = json!({"name": sink, "config": {
        "connector.class": "FileStreamSink", "file": dir.path().join("missing/out.txt").display().to_string(),
        "topics": format!("{}-sink", env.id), "tasks.max": "1"}});
    let stuck_template = declaring(
        source_template(&stuck, &input, &env.id, ""),
        "offsets",
        json!({"token": "o1", "set": [{"partition": {"file": "in.txt"}, "offset": {"position": 0}}]}),
    );
    for cm in [
        configmap(
            "healthy",
            &[],
            &[("healthy.json", source_template(&healthy, &input, &env.id, ""))],
        ),
        configmap("broken", &[], &[("broken.json", broken_template.to_string())]),
        configmap("sink", &[], &[("sink.json", sink_template.to_string())]),
        configmap("stuck", &[], &[("stuck.json", stuck_template)]),
    ] {
        env.kubectl_apply(&manifest(&cm));
    }
    let denied = configmap(
        "typo",
        &[],
        &[(
            "typo.json",
            source_template("typo", &input, &env.id, "").replace(SOURCE, "FileStreamSorce"),
        )],
    );
    let out = env.kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest(&denied)));
    assert!(!out.status.success(), "a connector class that does not exist is denied");
    // A restart token declared once the connector runs: one restart.
    wait_status(&env, "healthy", &healthy, "RUNNING").await;
    let restart = declaring(source_template(&healthy, &input, &env.id, ""), "restart", json!("r1"));
    env.kubectl_apply(&manifest(&configmap("healthy", &[], &[("healthy.json", restart)])));

    // The rules as shipped but for their `for`, which promtool's unit tests cover: here every
    // alert fires as soon as its expression holds.
    let mut rules = rule_file();
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule["for"] = "0s".into();
        }
    }
    // Target labels as a PodMonitor's scrape adds them. The API server too, for the metrics of
    // its webhook calls that ConnectGateAdmissionErrors reads.
    let pki = stack().stack_dir.join("pki");
    let api = std::env::var("KUBE_APISERVER_URL").expect("KUBE_APISERVER_URL is exported by tests/stack/up");
    let prometheus = Prometheus::start(
        &rules,
        json!([
            {"job_name": "connect-gate", "static_configs": [{
                "targets": [format!("127.0.0.1:{}", serve.metrics_port)],
                "labels": {"namespace": "connect", "pod": "cg-0", "container": "connect-gate"}}]},
            {"job_name": "apiserver", "scheme": "https",
             "tls_config": {"ca_file": pki.join("ca.crt"), "cert_file": pki.join("admin.crt"), "key_file": pki.join("admin.key")},
             "static_configs": [{"targets": [api.trim_start_matches("https://")]}]},
        ]),
    );
    eventually("Prometheus to be ready", WAIT, || prometheus.ready()).await;

    for (alert, connector) in [
        ("ConnectGateConnectorFailed", &broken),
        ("ConnectGateTaskFailed", &sink),
        ("ConnectGateOffsetsStuck", &stuck),
    ] {
        let labels = eventually(&format!("{alert} to fire for {connector}"), WAIT, || async {
            let firing = prometheus.firing(alert).await?;
            let found = firing.iter().find(|l| l["connector"] == **connector).cloned();
            found.ok_or_else(|| format!("firing: {firing:?}; sidecar log:\n{}", serve.process.log_tail()))
        })
        .await;
        assert_eq!(labels["destination"], "local", "{labels}");
        assert_eq!(labels["namespace"], "connect", "{labels}");
        let others = prometheus.firing(alert).await.unwrap();
        assert!(
            others.iter().all(|l| l["connector"] != *healthy),
            "nothing fires for the running connector: {others:?}"
        );
    }

    // The API server's own metric of calls to the webhook, under the names the alert reads.
    let denials =
        r#"apiserver_admission_webhook_rejection_count{name="validate.connect-gate.io",error_type="no_error"}"#;
    eventually("the API server's count of the webhook's denials", WAIT, || async {
        let result = prometheus.query(denials).await?;
        if result.is_empty() {
            Err("no series".into())
        } else {
            Ok(())
        }
    })
    .await;

    // Grafana asks a time series panel for a range, a table or bar gauge for an instant.
    for query in dashboard_queries() {
        let series = eventually(
            &format!("{} to return data: {}", query.what, query.expr),
            WAIT,
            || async {
                let result = match (query.expr.strip_prefix("label_values("), query.instant) {
                    (Some(args), _) => {
                        let (selector, label) = args.trim_end_matches(')').rsplit_once(", ").unwrap();
                        prometheus.label_values(label, selector).await?
                    }
                    (None, true) => prometheus.query(&query.expr).await?,
                    (None, false) => prometheus.query_range(&query.expr, started).await?,
                };
                if result.is_empty() {
                    Err("no data".into())
                } else {
                    Ok(result.len())
                }
            },
        )
        .await;
        eprintln!("{}: {} series for {}", query.what, series, query.expr);
    }

    // The sidecar gone: no replica holds the Lease or is scraped, and the API server cannot call
    // the webhook, so writes fail closed. The ConfigMaps go first, while the sidecar can still
    // delete their connectors and let go of their finalizers.
    for cm in ["healthy", "broken", "sink", "stuck"] {
        delete_and_wait_gone(&env, cm).await;
    }
    serve.process.kill();
    let calling_errors = r#"apiserver_admission_webhook_rejection_count{name="validate.connect-gate.io",error_type="calling_webhook_error"}"#;
    // A counter's first sample has nothing to increase from: the first failed write makes the
    // series, the second its increase.
    for failures in 1..=2 {
        let cm = configmap(
            "after",
            &[],
            &[("after.json", source_template(&healthy, &input, &env.id, ""))],
        );
        let out = env.kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest(&cm)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("failed calling webhook"),
            "{stderr}"
        );
        eventually(&format!("{failures} failed webhook call(s) scraped"), WAIT, || async {
            let result = prometheus.query(calling_errors).await?;
            let value = result.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
            match value {
                Some(v) if v >= f64::from(failures) => Ok(()),
                _ => Err(format!("{result:?}")),
            }
        })
        .await;
    }
    for (alert, label, value) in [
        ("ConnectGateAdmissionErrors", "name", json!("validate.connect-gate.io")),
        ("ConnectGateNoLeader", "namespace", Value::Null),
    ] {
        eventually(&format!("{alert} to fire"), WAIT, || async {
            let firing = prometheus.firing(alert).await?;
            match firing.iter().find(|l| l[label] == value) {
                Some(_) => Ok(()),
                None => Err(format!("firing: {firing:?}")),
            }
        })
        .await;
    }
}
