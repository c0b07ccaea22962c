//! Leak probes: templates that transform a secret before it surfaces (case, encodings, byte
//! codes, slices, reversal, as a config key, as the connector name, inside `error(...)`, the
//! whole `$ENV`). No transformed form of the secret may appear in anything connect-gate emits:
//! `check` and `render` output, the verdicts' messages, the webhook's denial, the reconciler's
//! Events and annotations, the sidecar's log and metrics. Meant to grow: a new way out is a new
//! [`PROBES`] entry or a new [`PLACEMENTS`] entry, and every test below then tries it.

mod cli;
// Both include support/process.rs, cli for the binary's path only: two copies of a few lines.
#[allow(clippy::duplicate_mod)]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use cli::Workspace;
use connect_gate::pipeline::check::plugins::Catalog;
use connect_gate::pipeline::check::verdict::Verdict;
use connect_gate::pipeline::judgement::{Pipeline, PluginCheck};
use connect_gate::pipeline::parse::manifest::parse_yaml;
use connect_gate::pipeline::render::inputs::{InputSources, TemplateInputs};
use connect_gate::pipeline::render::sandbox::Renderer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use support::{Process, TestEnv, eventually, free_port};

/// Read by templates as `$LEAK_SECRET` (a mounted file) and `env.LEAK_TOKEN`; long and
/// random-looking, so that every transformed form of it is unambiguous.
const SECRET: &str = "S3cr3t-Pa55word-9f8e7d";

/// A way a template transforms the secret before it surfaces: the jq expression, and the same
/// transform in Rust (what the real render yields).
struct Probe {
    name: &'static str,
    expr: &'static str,
    form: fn(&str) -> String,
}

const PROBES: &[Probe] = &[
    Probe {
        name: "downcase",
        expr: "$LEAK_SECRET | ascii_downcase",
        form: |s| s.to_ascii_lowercase(),
    },
    Probe {
        name: "upcase",
        expr: "env.LEAK_TOKEN | ascii_upcase",
        form: |s| s.to_ascii_uppercase(),
    },
    Probe {
        name: "base64",
        expr: "$LEAK_SECRET | @base64",
        form: |s| base64::engine::general_purpose::STANDARD.encode(s),
    },
    Probe {
        name: "downcase-base64",
        expr: "$LEAK_SECRET | ascii_downcase | @base64",
        form: |s| base64::engine::general_purpose::STANDARD.encode(s.to_ascii_lowercase()),
    },
    Probe {
        name: "uri",
        expr: "$ENV.LEAK_TOKEN | @uri",
        form: |s| {
            use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
            const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
            utf8_percent_encode(s, RESERVED).to_string()
        },
    },
    Probe {
        name: "explode",
        expr: "$LEAK_SECRET | explode | tostring",
        form: |s| format!("[{}]", codes(s).join(",")),
    },
    Probe {
        name: "codes",
        expr: r#"$LEAK_SECRET | explode | map(tostring) | join(",")"#,
        form: |s| codes(s).join(","),
    },
    Probe {
        name: "slice",
        expr: "$LEAK_SECRET[0:6]",
        form: |s| s[..6].to_string(),
    },
    Probe {
        name: "reverse",
        expr: "$LEAK_SECRET | explode | reverse | implode",
        form: |s| s.chars().rev().collect(),
    },
    Probe {
        name: "split-join",
        expr: r#"$LEAK_SECRET | split("-") | join("+")"#,
        form: |s| s.replace('-', "+"),
    },
    Probe {
        name: "ltrimstr",
        expr: r#"$LEAK_SECRET | ltrimstr("S3cr3t-")"#,
        form: |s| s.strip_prefix("S3cr3t-").unwrap_or(s).to_string(),
    },
    Probe {
        name: "tojson",
        expr: "$LEAK_SECRET | tojson",
        form: |s| serde_json::to_string(s).unwrap(),
    },
    Probe {
        name: "interpolation",
        expr: r#""pre-\($LEAK_SECRET)-post""#,
        form: |s| format!("pre-{s}-post"),
    },
    // The whole env object: every allowed env value, the secret among them.
    Probe {
        name: "env-object",
        expr: "$ENV | tostring",
        form: str::to_string,
    },
    Probe {
        name: "env-filter",
        expr: "env | tostring",
        form: str::to_string,
    },
];

fn codes(s: &str) -> Vec<String> {
    s.chars().map(|c| (c as u32).to_string()).collect()
}

/// Where a template puts a probe's expression (`EXPR`); `NAME` is a connector name unique to
/// the probe and placement. Some are rejected (their messages are searched), some accepted
/// (what `render` prints is searched).
const PLACEMENTS: &[(&str, &str)] = &[
    ("class", r#"{"name": "NAME", "config": {"connector.class": (EXPR)}}"#),
    (
        "value",
        r#"{"name": "NAME", "config": {"connector.class": "FileStreamSink", "topics": "t", "x.secret": (EXPR)}}"#,
    ),
    (
        "key",
        r#"{"name": "NAME", "config": {"connector.class": "FileStreamSink", "topics": "t", (EXPR): "v"}}"#,
    ),
    (
        "null-key",
        r#"{"name": "NAME", "config": {"connector.class": "FileStreamSink", (EXPR): null}}"#,
    ),
    (
        "name",
        r#"{"name": ("NAME-" + (EXPR)), "config": {"connector.class": "FileStreamSink", "topics": "t"}}"#,
    ),
    (
        "name-rejected",
        r#"{"name": ("NAME-" + (EXPR)), "config": {"connector.class": "NoSuchConnector"}}"#,
    ),
    (
        "config-name",
        r#"{"name": "NAME", "config": {"connector.class": "FileStreamSink", "name": (EXPR)}}"#,
    ),
    ("error", "error(EXPR)"),
    ("error-object", r#"error({"why": (EXPR)})"#),
];

fn template(placement: &str, probe: &Probe, prefix: &str) -> String {
    let (_, shape) = PLACEMENTS.iter().find(|(p, _)| *p == placement).unwrap();
    shape
        .replace("NAME", &format!("{prefix}{}-{placement}", probe.name))
        .replace("EXPR", probe.expr)
}

fn probe(name: &str) -> &'static Probe {
    PROBES.iter().find(|p| p.name == name).unwrap()
}

/// Every data key of a probe's ConfigMap: the probe in every placement.
fn probe_data(probe: &Probe) -> Vec<(String, String)> {
    PLACEMENTS
        .iter()
        .map(|(placement, _)| (format!("{placement}.json"), template(placement, probe, "")))
        .collect()
}

/// The forms of the secret that `text` holds: every probe's transform of it, the planted test
/// secrets, and distinctive pieces of it in any case (a slice, a transform no probe names).
fn leaked(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let forms = PROBES
        .iter()
        .map(|p| (p.form)(SECRET))
        .chain(cli::SECRETS.iter().map(|s| s.to_string()))
        .filter(|form| text.contains(form.as_str()));
    let pieces = ["s3cr3t", "pa55word", "9f8e7d", "d7e8f9", "drow55ap"]
        .into_iter()
        .filter(|piece| lower.contains(piece))
        .map(String::from);
    forms.chain(pieces).collect()
}

fn assert_no_leak(what: &str, text: &str) {
    let found = leaked(text);
    assert!(found.is_empty(), "{what} holds {found:?}:\n{text}");
}

/// A workspace whose inputs hold the secret as a variable and as an env var.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("vars/leak-secret", SECRET);
    ws.write(
        "env",
        &format!(
            "LEAK_TOKEN={SECRET}\nMYSQL_CONNECTION_USER=connect\nMYSQL_CONNECTION_PASSWORD={}\n",
            cli::SECRETS[1]
        ),
    );
    ws
}

fn inputs(ws: &Workspace, env_allow: Option<&str>) -> TemplateInputs {
    InputSources {
        vars_dirs: vec![ws.path("vars")],
        env_file: Some(ws.path("env")),
        env_allow: env_allow.map(String::from),
    }
    .load()
    .unwrap()
}

fn configmap_yaml(name: &str, data: &[(String, String)]) -> String {
    let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cli::configmap(name, &[], &data)
}

fn judge(ws: &Workspace, yaml: &str, env_allow: Option<&str>) -> Vec<Verdict> {
    let cms = parse_yaml(yaml, &PathBuf::from("probe.yaml")).unwrap();
    let inputs = inputs(ws, env_allow);
    let catalog = Catalog::from_json(cli::PLUGINS.as_bytes()).unwrap();
    let pipeline = Pipeline::new(Renderer::new(PathBuf::from(cli::BIN)));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(pipeline.judge(&cms, &inputs, PluginCheck::Catalog(&catalog)))
}

#[test]
fn check_and_render_print_no_form_of_the_secret() {
    let ws = workspace();
    for probe in PROBES {
        let file = ws.write("probe.yaml", &configmap_yaml("probe", &probe_data(probe)));
        let text = ws.check(&[], &[&file]);
        assert_eq!(
            text.code,
            1,
            "{}: some placements are rejected:\n{}",
            probe.name,
            text.all()
        );
        assert_no_leak(&format!("check ({})", probe.name), &text.all());
        let json = ws.check(&["--output", "json"], &[&file]);
        assert_no_leak(&format!("check --output json ({})", probe.name), &json.all());
        let render = ws.render(&[], &[&file]);
        assert!(
            render.stdout.contains("x.secret"),
            "{}: the accepted placements are printed:\n{}",
            probe.name,
            render.all()
        );
        assert_no_leak(&format!("render ({})", probe.name), &render.all());
        // Asked for, the real config is printed: the probe does reach it.
        let revealed = ws.render(&["--reveal"], &[&file]);
        assert!(
            revealed.stdout.contains(&(probe.form)(SECRET).replace('"', "\\\"")),
            "{}: --reveal prints the transformed secret:\n{}",
            probe.name,
            revealed.stdout
        );
    }
}

#[test]
fn verdicts_hold_no_form_of_the_secret_and_mask_it_in_worker_messages() {
    let ws = workspace();
    for probe in PROBES {
        let verdicts = judge(&ws, &configmap_yaml("probe", &probe_data(probe)), None);
        assert_eq!(verdicts.len(), PLACEMENTS.len());
        for v in &verdicts {
            let what = format!("{} {}", probe.name, v.key);
            let shown = serde_json::to_string(&v.shown).unwrap();
            let texts = [
                v.messages().collect::<Vec<_>>().join("\n"),
                v.warnings.join("\n"),
                v.location(),
                serde_json::to_string(v).unwrap(),
                shown,
            ];
            for text in texts {
                assert_no_leak(&what, &text);
            }
            // What the worker says about an applied config is masked with these.
            if let Some(connector) = &v.connector
                && ["value.json", "key.json"].contains(&v.key.as_str())
            {
                let form = (probe.form)(SECRET);
                let masked =
                    connect_gate::pipeline::render::secrets::mask(&format!("Invalid value {form}"), &connector.secrets);
                assert_no_leak(&format!("{what}: a worker message"), &masked);
            }
        }
        let rejected: Vec<&Verdict> = verdicts.iter().filter(|v| !v.accepted()).collect();
        assert!(
            rejected.iter().all(|v| v.name.is_none() || v.name == v.shown_name),
            "{what}: a rejected connector keeps no name computed from the secret",
            what = probe.name
        );
    }
}

/// The messages users see, verbatim, for probes of each kind: the placeholder render's own, one
/// marked as differing from the real one, and one withheld.
#[test]
fn messages_are_the_placeholder_renders() {
    let ws = workspace();
    let data = [
        ("down.json", template("class", probe("downcase"), "")),
        ("base64.json", template("class", probe("base64"), "")),
        ("key.json", template("null-key", probe("slice"), "")),
        ("error.json", template("error", probe("interpolation"), "")),
        (
            "only-real-fails.json",
            r#"if ($LEAK_SECRET | startswith("S3")) then error("bad: " + $LEAK_SECRET) else {"name": "w", "config": {"connector.class": "FileStreamSink"}} end"#.into(),
        ),
        ("dup1.json", template("name", probe("reverse"), "dup-")),
        ("dup2.json", template("name", probe("reverse"), "dup-")),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let verdicts = judge(&ws, &configmap_yaml("cm", &data), None);
    let messages: Vec<String> = verdicts.iter().flat_map(Verdict::messages).collect();
    let at = "ConfigMap team/cm (probe.yaml), key";
    let expected = [
        format!(
            r#"{at} base64.json, connector base64-class: connector.class "4p+oJExFQUtfU0VDUkVU4p+p" is not installed on the worker; closest installed: none (with placeholders for the variable and env values; the real message differs and is withheld)"#
        ),
        format!(
            r#"{at} down.json, connector downcase-class: connector.class "⟨$leak_secret⟩" is not installed on the worker; closest installed: org.apache.kafka.connect.file.FileStreamSourceConnector, org.apache.kafka.connect.file.FileStreamSinkConnector"#
        ),
        format!(
            "{at} dup1.json, connector dup-reverse-name-⟩TERCES_KAEL$⟨: the connector name depends on variable or env values; a name is shown in annotations, Events and logs, so write it out in the template"
        ),
        format!(
            r#"{at} dup1.json, connector dup-reverse-name-⟩TERCES_KAEL$⟨: connector name "dup-reverse-name-⟩TERCES_KAEL$⟨" is also declared by ConfigMap team/cm (probe.yaml), key dup2.json"#
        ),
        format!(
            "{at} dup2.json, connector dup-reverse-name-⟩TERCES_KAEL$⟨: the connector name depends on variable or env values; a name is shown in annotations, Events and logs, so write it out in the template"
        ),
        format!(
            r#"{at} dup2.json, connector dup-reverse-name-⟩TERCES_KAEL$⟨: connector name "dup-reverse-name-⟩TERCES_KAEL$⟨" is also declared by ConfigMap team/cm (probe.yaml), key dup1.json"#
        ),
        format!(r#"{at} error.json: template failed: "pre-⟨$LEAK_SECRET⟩-post""#),
        format!("{at} key.json, connector slice-null-key: config key `⟨$LEAK` is null; Connect configs are strings"),
        format!(
            "{at} only-real-fails.json, connector w: the template fails with the real variable and env values; the details are withheld because they depend on those values, and with placeholders for them the template renders differently"
        ),
    ];
    assert_eq!(messages, expected);
}

/// `$ENV` and `env` as a whole hold only the `--template-env-allow` names, each value a
/// placeholder in every message.
#[test]
fn env_as_a_whole_holds_only_allowed_names_as_placeholders() {
    let ws = workspace();
    let data = [("env.json".to_string(), template("class", probe("env-filter"), ""))];
    let verdicts = judge(&ws, &configmap_yaml("cm", &data), Some("LEAK_.*"));
    assert_eq!(
        verdicts[0].problems,
        [
            r#"connector.class "{\"LEAK_TOKEN\":\"⟨env.LEAK_TOKEN⟩\"}" is not installed on the worker; closest installed: none"#
        ]
    );
    let file = ws.write("cm.yaml", &configmap_yaml("cm", &data));
    let out = ws.render(&["--template-env-allow", "LEAK_.*"], &[&file]);
    assert_eq!(
        out.stdout.trim(),
        r#"{"name":"env-filter-class","config":{"connector.class":"{\"LEAK_TOKEN\":\"⟨env.LEAK_TOKEN⟩\"}","name":"env-filter-class"}}"#
    );
}

/// A template whose config the worker rejects quoting the transformed secret, for the
/// webhook's worker validation and the reconciler's PUT.
fn worker_probe(name: &str, topic: &str) -> String {
    format!(
        r#"{{"name": "{name}", "config": {{"connector.class": "FileStreamSource", "topic": "{topic}", "file": "/tmp/{topic}", "tasks.max": ($LEAK_SECRET | @base64)}}}}"#
    )
}

/// The rejected probes the e2e test sends through the webhook and the reconciler.
fn e2e_data(prefix: &str) -> Vec<(String, String)> {
    [
        ("class", "downcase"),
        ("class", "base64"),
        ("class", "explode"),
        ("class", "codes"),
        ("class", "reverse"),
        ("class", "env-object"),
        ("null-key", "split-join"),
        ("name-rejected", "upcase"),
        ("config-name", "ltrimstr"),
        ("error", "tojson"),
        ("error-object", "interpolation"),
    ]
    .into_iter()
    .map(|(placement, name)| {
        (
            format!("{name}-{placement}.json"),
            template(placement, probe(name), prefix),
        )
    })
    .collect()
}

fn manifest(name: &str, data: &[(String, String)]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"destination": "connect"}},
        "data": data.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// The test's validating webhook registration (cluster-wide, so deleted on drop): the shipped
/// one's rules, pointed at a loopback port and scoped to the test's namespace.
struct Registration(String);

impl Registration {
    fn new(env: &TestEnv, port: u16, ca: &[u8]) -> Self {
        let name = format!("leaks-{}", env.id);
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "validate.connect-gate.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/validate"),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(ca),
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}],
                "objectSelector": {"matchLabels": {"destination": "connect"}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}},
            }],
        });
        env.kubectl_apply(&config.to_string());
        Self(format!("validatingwebhookconfiguration/{name}"))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = support::kubectl_in(None, &["delete", &self.0, "--ignore-not-found"], None);
    }
}

/// A server-side dry-run `kubectl apply` of `manifest`, once connect-gate (not the apiserver
/// failing to call it) answers: its output.
async fn denial(env: &TestEnv, manifest: &Value) -> String {
    let manifest = manifest.to_string();
    eventually("a denial from connect-gate", Duration::from_secs(60), || async {
        let out = env.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match (
            out.status.success(),
            text.contains("connect-gate rejected") || text.contains("validator rejected"),
        ) {
            (false, true) => Ok(text),
            _ => Err(text),
        }
    })
    .await
}

/// What connect-gate wrote on the test namespace's ConfigMaps and in its Events: annotation
/// values and Event notes.
async fn written(env: &TestEnv) -> (String, String) {
    let cms = env.api::<ConfigMap>().list(&ListParams::default()).await.unwrap();
    let annotations: Vec<String> = cms
        .items
        .iter()
        .flat_map(|cm| cm.metadata.annotations.clone().unwrap_or_default().into_values())
        .collect();
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = env.api();
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    (annotations.join("\n"), notes.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_reconciler_and_log_emit_no_form_of_the_secret() {
    let env = TestEnv::new("leaks").await;
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace();
    let certs = dir.path().join("certs");
    let out = cli::run(
        &["certs", "--out", certs.to_str().unwrap(), "--ip", "127.0.0.1"].map(String::from),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let (port, metrics_port) = (free_port(), free_port());
    // Temp dir paths hold no spaces.
    let args = format!(
        "serve --listen 127.0.0.1:{port} --metrics-listen 127.0.0.1:{metrics_port} --tls-cert {} --tls-key {} \
         --connect-url {} --namespace {} --resync 2s --lease-duration 4s --validate-with-worker",
        certs.join("tls.crt").display(),
        certs.join("tls.key").display(),
        env.connect_url,
        env.namespace,
    );
    let mut args: Vec<String> = args.split_whitespace().map(String::from).collect();
    args.extend(ws.input_args());
    let serve = Process::spawn(
        &args,
        &[("POD_NAME", std::ffi::OsStr::new("leaks"))],
        dir.path().join("serve.log"),
    );

    // Created before the webhook is registered, so that the reconciler judges them.
    let worker_name = env.connector_name("worker");
    let cms = [
        manifest("rejected", &e2e_data("r-")),
        manifest("worker", &[("w.json".into(), worker_probe(&worker_name, &env.id))]),
    ];
    for cm in &cms {
        let cm: ConfigMap = serde_json::from_value(cm.clone()).unwrap();
        env.api::<ConfigMap>()
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let _registration = Registration::new(&env, port, &std::fs::read(certs.join("ca.crt")).unwrap());

    let rejected = denial(&env, &manifest("dry", &e2e_data("d-"))).await;
    assert!(rejected.contains("is not installed on the worker"), "{rejected}");
    assert_no_leak("the webhook's denial", &rejected);
    let worker_name_dry = env.connector_name("worker-dry");
    let validated = denial(
        &env,
        &manifest(
            "worker-dry",
            &[("w.json".into(), worker_probe(&worker_name_dry, &env.id))],
        ),
    )
    .await;
    assert!(
        validated.contains("the worker rejects config key `tasks.max`"),
        "{validated}"
    );
    assert_no_leak("the webhook's worker-validation denial", &validated);

    // The reconciler's Events and last-error: the pipeline's rejections and the worker's own.
    let (annotations, events) = eventually(
        "the reconciler to report both ConfigMaps",
        Duration::from_secs(90),
        || async {
            let (annotations, events) = written(&env).await;
            let reported = annotations.contains("is not installed on the worker")
                && annotations.contains("Kafka Connect rejected the config")
                && events.contains("Rejected: ")
                && events.contains("Kafka Connect rejected the config");
            if reported {
                Ok((annotations, events))
            } else {
                Err(format!("annotations:\n{annotations}\nevents:\n{events}"))
            }
        },
    )
    .await;
    assert_no_leak("the ConfigMaps' annotations", &annotations);
    assert_no_leak("the Events", &events);
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_leak("the metrics", &metrics);
    assert_no_leak("the sidecar's log", &serve.log());

    // The reconciler releases its finalizers, so the namespace can go.
    env.kubectl_ok(&["delete", "configmap", "--all", "--timeout=90s"]);
}
