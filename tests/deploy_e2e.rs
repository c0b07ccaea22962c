//! The deploy/ manifests on the real test stack (real kube-apiserver, real Kafka Connect):
//!
//! * every object that `kubectl kustomize` builds from deploy/, deploy/base,
//!   deploy/base/connectors, deploy/flux, webhook/ and certs/ passes `kubectl apply
//!   --dry-run=server`, except kinds whose CRDs this API server does not serve (cert-manager,
//!   Flux), and those are skipped only after discovery confirms the group is absent;
//! * the Deployment is wired to what the build contains (the sidecar's flags point into its
//!   whole-directory mounts of Secrets/ConfigMaps that exist, the hash key's in the sidecar only,
//!   the webhook Service reaches the sidecar's port, the NetworkPolicy covers the pods' three
//!   ports, probes, hardening; references mode: the worker mounts every --vars-dir at the same
//!   path, its config providers allow exactly those directories and the template env, and the
//!   sidecar reads that worker config), and the example connector ConfigMaps pass `connect-gate check`
//!   against the real worker with the example template inputs;
//! * the shipped RBAC is sufficient and no more: the real reconciler, authenticated with a real
//!   token of the shipped ServiceAccount bound by the shipped Role, applies a connector, reports
//!   on the ConfigMap (a keyed applied hash), publishes Events, holds its Lease, keeps its ledger
//!   and honours the finalizer, while the ServiceAccount cannot read Secrets or create/delete
//!   ConfigMaps.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::discovery::Discovery;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{BIN, Process, TestEnv, eventually, free_port};

const WAIT: Duration = Duration::from_secs(90);
const FINALIZER: &str = "connect-gate.io/cleanup";

/// Groups served only by CRDs this stack does not install. An object of one of these groups is
/// skipped only if discovery confirms the API server does not serve the group.
const CRD_GROUPS: [&str; 3] = [
    "cert-manager.io",
    "kustomize.toolkit.fluxcd.io",
    "source.toolkit.fluxcd.io",
];

/// Every kustomization the repository ships, relative to the crate root.
const BUILDS: [&str; 6] = [
    "deploy",
    "deploy/base",
    "deploy/base/connectors",
    "deploy/flux",
    "webhook",
    "certs",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR` (kubectl from the stack embeds kustomize), parsed into objects.
fn kustomize(dir: &str) -> Vec<Value> {
    support::stack();
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo().join(dir))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {kubectl} kustomize (the stack's kubectl must be on PATH): {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("kustomize {dir}: bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!objects.is_empty(), "kubectl kustomize {dir} built nothing");
    objects
}

fn group_of(object: &Value) -> &str {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn id(object: &Value) -> String {
    let ns = object["metadata"]["namespace"]
        .as_str()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    format!(
        "{} {}{}",
        object["kind"].as_str().unwrap_or("?"),
        ns,
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the build has no {kind} {name}"))
}

/// Creates the namespaces the manifests use unless they exist, and deletes (purges and
/// finalizes) on drop only the ones it created.
struct Namespaces {
    created: Vec<String>,
}

impl Namespaces {
    async fn ensure(kube: &kube::Client, names: &BTreeSet<String>) -> Namespaces {
        let api = Api::<Namespace>::all(kube.clone());
        let mut created = vec![];
        for name in names {
            if api.get_opt(name).await.unwrap().is_none() {
                let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
                api.create(&PostParams::default(), &ns)
                    .await
                    .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
                created.push(name.clone());
            }
        }
        Namespaces { created }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.created);
        support::run_in_drop(async move {
            let kube = support::kube_client().await;
            for name in names {
                support::delete_namespace(&kube, &name).await;
            }
        });
    }
}

#[tokio::test]
async fn every_manifest_passes_server_side_dry_run() {
    let kube = support::kube_client().await;
    let discovery = Discovery::new(kube.clone())
        .run_aggregated()
        .await
        .expect("API discovery");
    let served: BTreeSet<String> = discovery.groups().map(|g| g.name().to_string()).collect();

    // Every build, deduplicated (deploy/ includes deploy/base, webhook/ and certs/).
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    for dir in BUILDS {
        for object in kustomize(dir) {
            objects.entry(id(&object)).or_insert(object);
        }
    }

    let (skipped, checked): (Vec<&Value>, Vec<&Value>) = objects.values().partition(|o| {
        let group = group_of(o);
        CRD_GROUPS.contains(&group) && !served.contains(group)
    });
    let skipped_groups: BTreeSet<&str> = skipped.iter().map(|o| group_of(o)).collect();
    for group in skipped_groups {
        assert!(
            CRD_GROUPS.contains(&group),
            "skipped a group outside the CRD list: {group}"
        );
    }

    // Namespaced dry runs need their namespace to exist.
    let namespaces: BTreeSet<String> = checked
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str().map(String::from))
        .collect();
    let _namespaces = Namespaces::ensure(&kube, &namespaces).await;

    let mut failures = vec![];
    let mut passed = vec![];
    for object in &checked {
        // Only ever a dry run: a real fail-closed ValidatingWebhookConfiguration would deny
        // ConfigMaps of tests running in parallel.
        let args = ["apply", "--dry-run=server", "-f", "-"];
        let out = support::kubectl_in(None, &args, Some(&serde_json::to_string(object).unwrap()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("(server dry run)") {
            passed.push(id(object));
        } else {
            failures.push(format!(
                "{}: {}{}",
                id(object),
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "rejected by the real API server:\n  {}",
        failures.join("\n  ")
    );

    // Not vacuous: the pieces the deployment consists of were all among the checked objects.
    let kinds: BTreeSet<&str> = checked.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(kind), "no {kind} was checked; kinds: {kinds:?}");
    }
    let kinds_of = |objects: &[&Value]| -> BTreeSet<String> {
        objects
            .iter()
            .map(|o| format!("{}/{}", group_of(o), o["kind"].as_str().unwrap_or("?")))
            .collect()
    };
    let (skipped_kinds, checked_kinds) = (kinds_of(&skipped), kinds_of(&checked));
    // Each is dry-run when its CRD is served here (Flux's, on a stack started with --flux), and
    // skipped otherwise: never silently missing.
    for kind in [
        "cert-manager.io/Issuer",
        "cert-manager.io/Certificate",
        "source.toolkit.fluxcd.io/GitRepository",
        "kustomize.toolkit.fluxcd.io/Kustomization",
    ] {
        assert!(
            skipped_kinds.contains(kind) || checked_kinds.contains(kind),
            "{kind} neither checked nor skipped: skipped {skipped_kinds:?}"
        );
    }
    eprintln!(
        "server-side dry run passed for {} objects; skipped {} of kinds without CRDs here: {skipped_kinds:?}",
        passed.len(),
        skipped.len()
    );
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The values of every `--flag VALUE` / `--flag=VALUE` occurrence in `args`.
fn flag(args: &[String], name: &str) -> Vec<String> {
    let mut out = vec![];
    for (i, a) in args.iter().enumerate() {
        if a == name {
            out.push(args.get(i + 1).cloned().unwrap_or_default());
        } else if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            out.push(v.to_string());
        }
    }
    out
}

/// The volume (ConfigMap or Secret name, and whether it is a Secret) mounted at the directory
/// that contains `path` (or is `path`) in `container`.
fn source_of(deployment: &Value, container: &Value, path: &str) -> (String, bool) {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            let at = m["mountPath"].as_str().unwrap();
            path == at || path.starts_with(&format!("{at}/"))
        })
        .unwrap_or_else(|| panic!("{path} is not inside any volume mount of {}", container["name"]));
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    if let Some(name) = volume["secret"]["secretName"].as_str() {
        (name.to_string(), true)
    } else if let Some(name) = volume["configMap"]["name"].as_str() {
        (name.to_string(), false)
    } else {
        panic!("volume {} is neither a Secret nor a ConfigMap", volume["name"]);
    }
}

/// The data of a built ConfigMap or Secret (stringData or base64 data).
fn data_of(objects: &[Value], kind: &str, name: &str) -> BTreeMap<String, String> {
    use base64::Engine as _;
    let object = find(objects, kind, name);
    let mut out: BTreeMap<String, String> = serde_json::from_value(object["stringData"].clone()).unwrap_or_default();
    if kind == "Secret" {
        let data: BTreeMap<String, String> = serde_json::from_value(object["data"].clone()).unwrap_or_default();
        for (k, v) in data {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v).unwrap();
            out.insert(k, String::from_utf8(bytes).unwrap());
        }
    } else {
        out.extend(serde_json::from_value::<BTreeMap<String, String>>(object["data"].clone()).unwrap_or_default());
    }
    out
}

#[tokio::test]
async fn deployment_is_wired_to_the_build_and_the_examples_pass_check_on_the_worker() {
    let stack = support::stack();
    let objects = kustomize("deploy");
    let connectors = kustomize("deploy/base/connectors");
    let deployment = find(&objects, "Deployment", "connect-service");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["metadata"]["namespace"], "connect");
    assert_eq!(deployment["spec"]["replicas"], 1, "scaling stays the one replicas line");
    let sidecar = container(deployment, "connect-gate");
    let args = strings(&sidecar["args"]);
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    assert_eq!(flag(&args, "--namespace"), ["connectors"]);
    for c in pod["containers"].as_array().unwrap() {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            assert!(
                m.get("subPath").is_none() && m.get("subPathExpr").is_none(),
                "subPath never sees rotation: {m}"
            );
        }
    }

    // TLS: both files come from the cert-manager Secret of certs/.
    let certificate = find(&objects, "Certificate", "connect-gate-webhook");
    for f in ["--tls-cert", "--tls-key"] {
        let path = flag(&args, f).pop().unwrap_or_else(|| panic!("no {f}"));
        assert_eq!(
            source_of(deployment, sidecar, &path),
            (certificate["spec"]["secretName"].as_str().unwrap().to_string(), true)
        );
    }
    // The hash key: the cert-manager Secret of certs/, mounted into the sidecar only.
    let key_file = flag(&args, "--hash-key-file").pop().expect("--hash-key-file");
    let hash_key = find(&objects, "Certificate", "connect-gate-hash-key");
    let (secret, is_secret) = source_of(deployment, sidecar, &key_file);
    assert_eq!(
        (secret.as_str(), is_secret),
        (hash_key["spec"]["secretName"].as_str().unwrap(), true)
    );
    for c in pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] != "connect-gate")
    {
        assert!(
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|m| !key_file.starts_with(m["mountPath"].as_str().unwrap())),
            "the hash key is mounted into {}",
            c["name"]
        );
    }
    // References mode (--secrets-as references): the worker resolves what the sidecar refers to.
    // Every --vars-dir is mounted read-only into the worker at the same path from the same
    // volume; --worker-config is the worker's own properties file; its file and dir providers
    // allow exactly the --vars-dir directories and its env provider's pattern (a full match, as
    // Java's Matcher.matches) covers POD_IP and the template env, which the worker gets by the
    // same envFrom.
    assert_eq!(flag(&args, "--secrets-as"), ["references"]);
    let worker = container(deployment, "connect");
    let read_only_mount = |c: &Value, path: &str| {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| path == m["mountPath"] || path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{path} is not mounted into {}", c["name"]));
        assert_eq!(m["readOnly"], true, "{path} in {}: {m}", c["name"]);
        (m["name"].clone(), m["mountPath"].clone())
    };
    let worker_config = flag(&args, "--worker-config").pop().expect("--worker-config");
    assert_eq!(
        read_only_mount(sidecar, &worker_config),
        read_only_mount(worker, &worker_config)
    );
    assert!(
        strings(&worker["command"]).contains(&worker_config),
        "the worker does not run with {worker_config}: {}",
        worker["command"]
    );
    let (config_map, _) = source_of(deployment, worker, &worker_config);
    let file_name = worker_config.rsplit('/').next().unwrap();
    let properties: BTreeMap<String, String> = data_of(&objects, "ConfigMap", &config_map)
        .remove(file_name)
        .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {file_name}"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not key=value: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let property = |k: &str| {
        properties
            .get(k)
            .unwrap_or_else(|| panic!("{worker_config} has no {k}"))
    };
    assert_eq!(property("config.providers"), "file,dir,env");
    let vars_dirs: BTreeSet<String> = flag(&args, "--vars-dir").into_iter().collect();
    assert!(!vars_dirs.is_empty());
    for dir in &vars_dirs {
        assert_eq!(read_only_mount(sidecar, dir), read_only_mount(worker, dir), "{dir}");
    }
    for (alias, class) in [("file", "FileConfigProvider"), ("dir", "DirectoryConfigProvider")] {
        assert_eq!(
            property(&format!("config.providers.{alias}.class")),
            &format!("org.apache.kafka.common.config.provider.{class}")
        );
        let allowed: BTreeSet<String> = property(&format!("config.providers.{alias}.param.allowed.paths"))
            .split(',')
            .map(String::from)
            .collect();
        assert_eq!(
            allowed, vars_dirs,
            "{alias}: allowed.paths are exactly the --vars-dir directories"
        );
    }
    assert_eq!(
        property("config.providers.env.class"),
        "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    );
    let allowlist = regex::Regex::new(&format!(
        "^(?:{})$",
        property("config.providers.env.param.allowlist.pattern")
    ))
    .unwrap();
    assert_eq!(
        worker["envFrom"], sidecar["envFrom"],
        "the worker resolves the template env itself"
    );
    for from in sidecar["envFrom"].as_array().expect("envFrom") {
        let name = from["secretRef"]["name"].as_str().expect("envFrom a Secret");
        for k in data_of(&objects, "Secret", name).keys().chain([&"POD_IP".to_string()]) {
            assert!(
                allowlist.is_match(k),
                "{k} is outside the env provider's allowlist.pattern"
            );
        }
    }

    // The webhook Service the registrations call reaches the sidecar's HTTPS port.
    let service = find(&objects, "Service", "connect-gate-webhook");
    for hook in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let svc = &find(&objects, hook, "connect-gate")["webhooks"][0]["clientConfig"]["service"];
        assert_eq!(
            (&svc["name"], &svc["namespace"], &svc["port"]),
            (&json!("connect-gate-webhook"), &json!("connect"), &json!(443))
        );
    }
    assert_eq!(service["metadata"]["namespace"], "connect");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    let target = &service["spec"]["ports"][0]["targetPort"];
    let port = sidecar["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| &p["name"] == target || &p["containerPort"] == target)
        .expect("webhook port");
    assert_eq!(port["containerPort"], 8443);
    let selector: BTreeMap<String, String> = serde_json::from_value(service["spec"]["selector"].clone()).unwrap();
    let labels: BTreeMap<String, String> =
        serde_json::from_value(deployment["spec"]["template"]["metadata"]["labels"].clone()).unwrap();
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "webhook Service selector {selector:?} misses pod labels {labels:?}"
    );
    let connect = find(&objects, "Service", "connect");
    assert_eq!(
        (
            &connect["spec"]["ports"][0]["port"],
            &connect["spec"]["ports"][0]["targetPort"]
        ),
        (&json!(80), &json!(8083))
    );

    // The NetworkPolicy covers these pods, names only their ports, and lets the workers reach
    // each other's REST port.
    let policy = find(&objects, "NetworkPolicy", "connect-service");
    assert_eq!(policy["metadata"]["namespace"], "connect");
    let selects_pod = |selector: &Value| {
        let wanted: BTreeMap<String, String> = serde_json::from_value(selector["matchLabels"].clone()).unwrap();
        !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(selects_pod(&policy["spec"]["podSelector"]));
    let port_names: BTreeMap<String, String> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["containerPort"].to_string()))
        .collect();
    let mut ports = vec![];
    for rule in policy["spec"]["ingress"].as_array().unwrap() {
        assert!(
            rule["from"].as_array().is_some_and(|f| !f.is_empty()),
            "open to all: {rule}"
        );
        for p in rule["ports"].as_array().unwrap() {
            let name = p["port"].as_str().unwrap();
            ports.push(port_names.get(name).unwrap_or_else(|| panic!("no port {name}")).clone());
            if name == "http" {
                assert!(selects_pod(&rule["from"][0]["podSelector"]), "{rule}");
            }
        }
    }
    ports.sort();
    assert_eq!(ports, ["8083", "8443", "9090"]);

    // Probes and hardening.
    // Alive over plain HTTP (no certificate needed yet), ready over the webhook's own HTTPS.
    for (probe, scheme, path, port) in [
        ("startupProbe", Value::Null, "/healthz", "metrics"),
        ("livenessProbe", Value::Null, "/healthz", "metrics"),
        ("readinessProbe", json!("HTTPS"), "/readyz", "webhook"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(
            (&get["scheme"], &get["path"], &get["port"]),
            (&scheme, &json!(path), &json!(port)),
            "{probe}"
        );
    }
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true);
    assert!(
        sc["seccompProfile"]["type"] == "RuntimeDefault"
            || pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    );
    for k in ["requests", "limits"] {
        assert!(
            sidecar["resources"][k]["memory"].is_string() && sidecar["resources"][k]["cpu"].is_string(),
            "resources.{k}"
        );
    }
    let pod_name = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME (Lease identity)");
    assert_eq!(pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    // The ServiceAccount the RBAC binds is the pod's, and it has no Secrets access anywhere.
    assert_eq!(pod["serviceAccountName"], "connect-gate");
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
    {
        for rule in role["rules"].as_array().unwrap() {
            let resources = strings(&rule["resources"]);
            assert!(
                !resources.iter().any(|r| r == "secrets" || r == "*"),
                "{}: {rule}",
                id(role)
            );
        }
    }
    assert!(
        !objects.iter().any(|o| o["kind"] == "ClusterRoleBinding"),
        "no cluster-wide rights"
    );

    // The example connectors pass `connect-gate check` against the real worker with the
    // inputs the sidecar would see: each --vars-dir rebuilt from the Secret/ConfigMap mounted
    // there, env from the envFrom Secret, the same --template-env-allow.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--connect-url", &stack.connect_url]);
    for (i, path) in flag(&args, "--vars-dir").iter().enumerate() {
        let (name, secret) = source_of(deployment, sidecar, path);
        let data = data_of(&objects, if secret { "Secret" } else { "ConfigMap" }, &name);
        assert!(!data.is_empty(), "{name} is empty");
        let vars = dir.path().join(format!("vars-{i}"));
        std::fs::create_dir(&vars).unwrap();
        for (k, v) in data {
            std::fs::write(vars.join(k), v).unwrap();
        }
        cmd.arg("--vars-dir").arg(&vars);
    }
    let mut env_lines = String::new();
    for from in sidecar["envFrom"].as_array().expect("envFrom") {
        let name = from["secretRef"]["name"].as_str().expect("envFrom a Secret");
        for (k, v) in data_of(&objects, "Secret", name) {
            env_lines.push_str(&format!("{k}={v}\n"));
        }
    }
    std::fs::write(dir.path().join("env"), env_lines).unwrap();
    cmd.arg("--env-file").arg(dir.path().join("env"));
    for allow in flag(&args, "--template-env-allow") {
        cmd.args(["--template-env-allow", &allow]);
    }
    let manifests: Vec<String> = connectors.iter().map(|o| serde_norway::to_string(o).unwrap()).collect();
    assert!(
        connectors
            .iter()
            .all(|o| o["metadata"]["namespace"] == "connectors" && o["metadata"]["labels"]["destination"] == "connect")
    );
    let mut child = cmd
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifests.join("---\n").as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "connect-gate check rejected the example connectors ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the shipped objects into this test's namespaces: `connect` -> `sa_ns`, `connectors` ->
/// `cm_ns` (metadata.namespace and RoleBinding subjects).
fn relocate(mut object: Value, sa_ns: &str, cm_ns: &str) -> Value {
    let map = |ns: &str| match ns {
        "connect" => sa_ns.to_string(),
        "connectors" => cm_ns.to_string(),
        other => panic!("unexpected namespace {other}"),
    };
    if let Some(ns) = object["metadata"]["namespace"].as_str() {
        object["metadata"]["namespace"] = json!(map(ns));
    }
    if let Some(subjects) = object["subjects"].as_array_mut() {
        for s in subjects {
            if let Some(ns) = s["namespace"].as_str() {
                s["namespace"] = json!(map(ns));
            }
        }
    }
    object
}

/// A kubeconfig for the stack's API server that authenticates with `token` only.
fn token_kubeconfig(dir: &Path, token: &str) -> PathBuf {
    let out = support::kubectl_in(
        None,
        &["config", "view", "--raw", "--minify", "--flatten", "-o", "json"],
        None,
    );
    assert!(out.status.success());
    let admin: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stack", "cluster": cluster}],
        "users": [{"name": "connect-gate", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "stack", "user": "connect-gate"}}],
        "current-context": "sa",
    });
    let path = dir.join("kubeconfig-sa");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// `kubectl auth can-i` with the ServiceAccount's own token.
fn can_i(kubeconfig: &Path, verb: &str, resource: &str, ns: &str) -> bool {
    let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn reconciler_works_with_exactly_the_shipped_rbac() {
    // env.namespace plays `connectors`; a second namespace plays `connect` (the ServiceAccount's).
    let env = TestEnv::new("deploy-rbac").await;
    let sa_ns = format!("{}-sa", env.namespace);
    let _sa_namespace = Namespaces::ensure(&env.kube, &[sa_ns.clone()].into()).await;
    let base = kustomize("deploy/base");
    let rbac: Vec<Value> = base
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .cloned()
        .map(|o| relocate(o, &sa_ns, &env.namespace))
        .collect();
    assert!(
        rbac.iter()
            .all(|o| o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding")
    );
    let sa = rbac
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    let sa_name = sa["metadata"]["name"].as_str().unwrap().to_string();
    for object in &rbac {
        let out = support::kubectl_in(
            None,
            &["apply", "-f", "-"],
            Some(&serde_json::to_string(object).unwrap()),
        );
        assert!(
            out.status.success(),
            "applying {}: {}",
            id(object),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A real token of the ServiceAccount (TokenRequest), in a kubeconfig of its own.
    let dir = tempfile::tempdir().unwrap();
    let out = support::kubectl_in(Some(&sa_ns), &["create", "token", &sa_name, "--duration", "1h"], None);
    assert!(
        out.status.success(),
        "create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = token_kubeconfig(dir.path(), String::from_utf8_lossy(&out.stdout).trim());

    // No more than needed.
    for ns in [&env.namespace, &sa_ns] {
        for verb in ["get", "list", "watch"] {
            assert!(
                !can_i(&kubeconfig, verb, "secrets", ns),
                "the ServiceAccount can {verb} Secrets in {ns}"
            );
        }
    }
    for verb in ["create", "delete", "update"] {
        assert!(
            !can_i(&kubeconfig, verb, "configmaps", &env.namespace),
            "the ServiceAccount can {verb} ConfigMaps"
        );
    }
    assert!(
        !can_i(&kubeconfig, "list", "configmaps", &sa_ns),
        "ConfigMap rights outside the reconciled namespace"
    );
    assert!(!can_i(&kubeconfig, "delete", "leases", &env.namespace));
    assert!(can_i(&kubeconfig, "patch", "configmaps", &env.namespace));

    // The real reconciler as that ServiceAccount, against the real worker.
    let identity = format!("deploy-e2e-{}", support::random_suffix());
    let vars = dir.path().join("vars");
    std::fs::create_dir(&vars).unwrap();
    let hash_key = dir.path().join("hash.key");
    std::fs::write(
        &hash_key,
        format!(
            "a test key, not a secret, 32 bytes or more: {}",
            support::random_suffix()
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "serve",
        "--no-webhook",
        "--hash-key-file",
        hash_key.to_str().unwrap(),
        "--namespace",
        &env.namespace,
        "--connect-url",
        &env.connect_url,
        "--vars-dir",
        vars.to_str().unwrap(),
        "--resync",
        "2s",
        "--lease-duration",
        "4s",
        "--metrics-listen",
        &format!("127.0.0.1:{}", free_port()),
    ]
    .map(String::from)
    .into();
    let envs = [("KUBECONFIG", kubeconfig.as_os_str()), ("POD_NAME", identity.as_ref())];
    let sidecar = Process::spawn(&args, &envs, dir.path().join("serve.log"));

    let connector = env.connector_name("file-source");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\n").unwrap();
    let template = format!(
        r#"{{"name": "{connector}", "config": {{"connector.class": "FileStreamSource", "file": "{}", "topic": "{}", "tasks.max": 1}}}}"#,
        input.display(),
        env.connector_name("topic")
    );
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "rbac-check", "labels": {"destination": "connect"}},
        "data": {"source.json": template},
    }))
    .unwrap();
    let cms = env.api::<ConfigMap>();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    // list/watch + patch: finalizer, and the status annotation once the connector runs.
    eventually("the connector RUNNING and reported on the ConfigMap", WAIT, || async {
        let cm = cms.get("rbac-check").await.map_err(|e| e.to_string())?;
        let finalized = cm.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
        let status = cm
            .metadata
            .annotations
            .unwrap_or_default()
            .get("connect-gate.io/status")
            .cloned()
            .unwrap_or_default();
        if finalized && status.contains(&connector) && status.contains("RUNNING") {
            Ok(())
        } else {
            Err(format!(
                "finalizer {finalized}, status {status:?}; log:\n{}",
                sidecar.log_tail()
            ))
        }
    })
    .await;
    let (code, body) = env.connect.get(&format!("/connectors/{connector}/status")).await;
    assert_eq!((code, &body["connector"]["state"]), (200, &json!("RUNNING")), "{body}");
    let annotations = cms
        .get("rbac-check")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    let applied = annotations.get("connect-gate.io/applied").cloned().unwrap_or_default();
    assert!(applied.contains("hmac-sha256:"), "keyed, as deployed: {applied}");

    // Lease: created, held by this identity.
    let lease = Api::<Lease>::namespaced(env.kube.clone(), &env.namespace)
        .get("connect-gate")
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(identity.as_str())
    );

    // The ledger: a Lease of its own, recording the connector as connect-gate's before its PUT.
    let ledger = Api::<Lease>::namespaced(env.kube.clone(), &env.namespace)
        .get("connect-gate-ledger")
        .await
        .expect("the ledger Lease");
    let recorded = ledger
        .metadata
        .annotations
        .unwrap_or_default()
        .remove("connect-gate.io/ledger")
        .unwrap_or_default();
    assert!(recorded.contains(&format!(r#""{connector}":"created""#)), "{recorded}");

    // Events: created in the ConfigMap's namespace.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), &env.namespace);
    eventually("an Applied Event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        if reasons.iter().any(|r| r == "Applied") {
            Ok(())
        } else {
            Err(format!("reasons {reasons:?}"))
        }
    })
    .await;

    // Finalizer: deleting the ConfigMap deletes the connector, then the finalizer is patched away.
    cms.delete("rbac-check", &DeleteParams::default()).await.unwrap();
    eventually("the ConfigMap and its connector gone", WAIT, || async {
        let (code, _) = env.connect.get(&format!("/connectors/{connector}")).await;
        let cm = cms.get_opt("rbac-check").await.map_err(|e| e.to_string())?;
        if code == 404 && cm.is_none() {
            Ok(())
        } else {
            Err(format!("connector {code}, ConfigMap present {}", cm.is_some()))
        }
    })
    .await;

    let log = sidecar.log();
    for word in ["forbidden", "Forbidden"] {
        assert!(
            !log.contains(word),
            "the reconciler was denied something ({word}):\n{}",
            sidecar.log_tail()
        );
    }
    drop(sidecar);
}
