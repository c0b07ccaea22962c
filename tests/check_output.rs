//! `connect-gate check --output github|sarif` as a PR pipeline runs it: the exact annotation
//! lines and SARIF regions for a fixture with problems at known lines, the SARIF log validated
//! against the SARIF 2.1.0 schema, and the CI files of deploy/ci and .pre-commit-hooks.yaml run
//! as written.

mod cli;

use std::path::{Path, PathBuf};

use cli::{FIXTURES, Run, Workspace, run_in};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Relative to the repository root, where these tests run the binary: paths are shown as given.
const ORDERS: &str = "tests/fixtures/annotations/orders.yaml";

/// `check --output OUTPUT PATH` on the orders fixture, from the repository root.
fn check_orders(ws: &Workspace, output: &str, path: &str, stdin: Option<&str>) -> Run {
    let mut args = vec!["check".to_string()];
    args.extend(ws.input_args());
    args.extend(["--plugins".into(), ws.path("plugins.json").display().to_string()]);
    args.extend(["--output".into(), output.into(), path.into()]);
    let out = run_in(Some(Path::new(REPO)), &args, stdin, &[]);
    out.assert_no_secrets();
    assert_eq!(out.code, 1, "{}", out.all());
    out
}

const AVAILABLE: &str = "variables available: $BASIC_AUTH_CREDENTIALS_SOURCE, $SASL_JAAS_CONFIG, $SASL_MECHANISM, $SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO, $SCHEMA_REGISTRY_URL, $SECURITY_PROTOCOL";

/// The orders fixture's findings: `(command, rule, line, col, message after the location)`.
fn expected() -> Vec<(&'static str, &'static str, &'static str, usize, usize, String)> {
    vec![
        // Template line 3, column 48 of the `|` block indented by 4, which starts on line 19.
        (
            "error",
            "template-syntax",
            "team/orders (F), key broken.json",
            21,
            52,
            "template does not parse at template line 3, column 48: expected comma or right brace, found `\"topics\"`"
                .into(),
        ),
        // A quoted scalar keeps no lines of its own: its key's line.
        (
            "error",
            "template-syntax",
            "team/orders (F), key quoted.json",
            26,
            3,
            "template does not parse at template line 1, column 57: expected closing delimiter for {, found `]}}`"
                .into(),
        ),
        // Template line 2, column 58 of a `|-` block.
        (
            "error",
            "undefined-variable",
            "team/orders (F), key undefined.json",
            25,
            62,
            format!("undefined variable $ORDERS_TOPIC at template line 2, column 58; {AVAILABLE}"),
        ),
        // No template position: the key's line.
        (
            "error",
            "unknown-connector-class",
            "team/orders (F), key unknown.json, connector orders-unknown",
            27,
            3,
            "connector.class \"NoSuchConnector\" is not installed on the worker; closest installed: io.confluent.connect.jdbc.JdbcSourceConnector, org.apache.kafka.connect.file.FileStreamSourceConnector".into(),
        ),
        // A warning of an accepted connector, in a `kind: List` of the third document.
        (
            "warning",
            "warning",
            "team/clicks (F), key clicks.json, connector clicks",
            44,
            7,
            "plugin check skipped: no plugin list for destination destination.cc:cc.env.prod.kafka.lkc-1 (label destination.cc); give --plugins destination.cc=FILE".into(),
        ),
    ]
}

const SUMMARY: &str = "6 connectors: 2 accepted, 4 rejected";

#[test]
fn github_annotations_point_at_the_data_key_or_the_template_position() {
    let ws = Workspace::new();
    let out = check_orders(&ws, "github", ORDERS, None);
    let mut want: Vec<String> = expected()
        .into_iter()
        .map(|(command, rule, location, line, col, message)| {
            let location = location.replace("(F)", &format!("({ORDERS})"));
            format!(
                "::{command} file={ORDERS},line={line},col={col},title=connect-gate {rule}::ConfigMap {location}: {message}"
            )
        })
        .collect();
    want.push(SUMMARY.into());
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), want, "{}", out.stderr);
}

#[test]
fn findings_from_stdin_say_they_have_no_file_position() {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(Path::new(REPO).join(ORDERS)).unwrap();
    let out = check_orders(&ws, "github", "-", Some(&text));
    let mut want: Vec<String> = expected()
        .into_iter()
        .map(|(command, rule, location, _, _, message)| {
            let location = location.replace("(F)", "(<stdin>)");
            format!(
                "::{command} title=connect-gate {rule}::ConfigMap {location}: {message} (from stdin: no file position)"
            )
        })
        .collect();
    want.push(SUMMARY.into());
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), want, "{}", out.stderr);

    let sarif: Value = serde_json::from_str(&check_orders(&ws, "sarif", "-", Some(&text)).stdout).unwrap();
    assert_valid_sarif(&sarif);
    for result in sarif["runs"][0]["results"].as_array().unwrap() {
        let location = &result["locations"][0];
        assert!(location.get("physicalLocation").is_none(), "{result}");
        assert!(location["logicalLocations"][0]["fullyQualifiedName"].is_string());
        assert!(
            result["message"]["text"]
                .as_str()
                .unwrap()
                .ends_with(" (from stdin: no file position)")
        );
    }
}

#[test]
fn sarif_results_carry_the_same_positions_and_the_log_is_valid_sarif() {
    let ws = Workspace::new();
    let out = check_orders(&ws, "sarif", ORDERS, None);
    let sarif: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_valid_sarif(&sarif);

    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "connect-gate");
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    let rules: Vec<&str> = driver["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let cwd = format!("file://{REPO}/");
    assert_eq!(run["originalUriBaseIds"]["%SRCROOT%"]["uri"], cwd.as_str());

    let results = run["results"].as_array().unwrap();
    let got: Vec<(String, String, String, u64, u64, String)> = results
        .iter()
        .map(|r| {
            let physical = &r["locations"][0]["physicalLocation"];
            assert_eq!(physical["artifactLocation"]["uriBaseId"], "%SRCROOT%");
            // ruleIndex points at the rule named.
            assert_eq!(rules[r["ruleIndex"].as_u64().unwrap() as usize], r["ruleId"]);
            (
                r["level"].as_str().unwrap().to_string(),
                r["ruleId"].as_str().unwrap().to_string(),
                physical["artifactLocation"]["uri"].as_str().unwrap().to_string(),
                physical["region"]["startLine"].as_u64().unwrap(),
                physical["region"]["startColumn"].as_u64().unwrap(),
                r["message"]["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, u64, u64, String)> = expected()
        .into_iter()
        .map(|(command, rule, location, line, col, message)| {
            let location = location.replace("(F)", &format!("({ORDERS})"));
            (
                command.into(),
                rule.into(),
                ORDERS.into(),
                line as u64,
                col as u64,
                format!("ConfigMap {location}: {message}"),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_schema_validation_rejects_what_is_not_sarif() {
    let ws = Workspace::new();
    let mut sarif: Value = serde_json::from_str(&check_orders(&ws, "sarif", ORDERS, None).stdout).unwrap();
    // Lines start at 1: the validator must see this, or the validations above prove nothing.
    sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0.into();
    assert!(!schema().is_valid(&sarif));
    sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 1.into();
    sarif["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!schema().is_valid(&sarif));
}

#[test]
fn json_output_is_unchanged_by_the_kinds_kept_for_annotations() {
    let ws = Workspace::new();
    let json: Value = serde_json::from_str(&check_orders(&ws, "json", ORDERS, None).stdout).unwrap();
    let first = json["verdicts"][0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "desired",
            "destination",
            "key",
            "name",
            "origin",
            "problems",
            "warnings"
        ]
    );
}

/// The official SARIF 2.1.0 schema (tests/fixtures/README.md says where it comes from), draft 7,
/// with formats asserted.
struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

fn schema() -> Schema {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("sarif-schema-2.1.0.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler.add_resource("sarif-schema-2.1.0.json", schema).unwrap();
    let index = compiler
        .compile("sarif-schema-2.1.0.json", &mut schemas)
        .unwrap_or_else(|e| panic!("{e:#}"));
    Schema { schemas, index }
}

impl Schema {
    fn is_valid(&self, log: &Value) -> bool {
        self.schemas.validate(log, self.index).is_ok()
    }
}

fn assert_valid_sarif(log: &Value) {
    if let Err(e) = schema().schemas.validate(log, schema().index) {
        panic!("not valid SARIF 2.1.0: {e:#}\n{log:#}");
    }
}

// The CI files as written.

/// A checkout as the workflow and the hook expect it: connectors/, ci/vars, ci/ci.env,
/// ci/plugins.json.
fn checkout() -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    let root = ws.path("checkout");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    };
    copy(&Path::new(FIXTURES).join("connectors"), &root.join("connectors"));
    copy(&ws.path("vars"), &root.join("ci/vars"));
    std::fs::copy(ws.path("env"), root.join("ci/ci.env")).unwrap();
    std::fs::copy(ws.path("plugins.json"), root.join("ci/plugins.json")).unwrap();
    (ws, root)
}

/// The connector fixtures as one stream, as `kustomize build` would print them.
fn built() -> String {
    let dir = Path::new(FIXTURES).join("connectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(Path::new(REPO).join(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The arguments after `connect-gate` of a shell line's `connect-gate check` command, and
/// whether it reads stdin (a pipe into it). The lines hold no quoting, so words are split on
/// white space.
fn check_command(line: &str) -> Option<(Vec<String>, bool)> {
    let segments: Vec<&str> = line.split('|').collect();
    let (i, segment) = segments
        .iter()
        .enumerate()
        .find(|(_, s)| s.trim_start().starts_with("connect-gate check"))?;
    let words = segment.split_whitespace().skip(1).map(String::from).collect();
    Some((words, i > 0))
}

#[test]
fn the_workflow_example_runs_its_check_lines_as_written() {
    let workflow = yaml("deploy/ci/github-actions.yaml");
    assert!(workflow["on"]["pull_request"].is_object(), "{workflow:#}");
    assert_eq!(workflow["permissions"]["contents"], "read");
    let envs: Vec<(String, String)> = workflow["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let (_ws, root) = checkout();
    let mut commands = Vec::new();
    for step in workflow["jobs"]["check"]["steps"].as_array().unwrap() {
        let Some(script) = step["run"].as_str() else { continue };
        commands.extend(script.lines().filter_map(check_command));
    }
    // One on the files, one on the kustomize build piped in.
    assert_eq!(
        commands.iter().map(|(_, piped)| *piped).collect::<Vec<_>>(),
        [false, true],
        "{commands:?}"
    );
    let orders = std::fs::read_to_string(Path::new(REPO).join(ORDERS)).unwrap();
    for (args, piped) in &commands {
        assert!(args.windows(2).any(|w| w == ["--output", "github"]), "{args:?}");
        // The connector fixtures: all accepted.
        let stream = built();
        let out = run_in(Some(&root), args, piped.then_some(stream.as_str()), &envs);
        out.assert_no_secrets();
        assert_eq!(out.code, 0, "connect-gate {}:\n{}", args.join(" "), out.all());
        assert_eq!(out.stdout, "5 connectors: 5 accepted, 0 rejected\n");
        // With the orders fixture among them: annotations, at its lines or from stdin.
        let stream = format!("{stream}\n---\n{orders}");
        std::fs::write(root.join("connectors/orders.yaml"), &orders).unwrap();
        let out = run_in(Some(&root), args, piped.then_some(stream.as_str()), &envs);
        std::fs::remove_file(root.join("connectors/orders.yaml")).unwrap();
        out.assert_no_secrets();
        assert_eq!(out.code, 1, "connect-gate {}:\n{}", args.join(" "), out.all());
        let first = out.stdout.lines().next().unwrap();
        let want = if *piped {
            "::error title=connect-gate template-syntax::ConfigMap team/orders (<stdin>), key broken.json"
        } else {
            "::error file=connectors/orders.yaml,line=21,col=52,title=connect-gate template-syntax::ConfigMap team/orders (connectors/orders.yaml), key broken.json"
        };
        assert!(first.starts_with(want), "{}", out.stdout);
        assert!(
            out.stdout.ends_with("11 connectors: 7 accepted, 4 rejected\n"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn the_pre_commit_hook_runs_on_changed_yaml_files() {
    let hooks = yaml(".pre-commit-hooks.yaml");
    let hooks = hooks.as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook["id"], "connect-gate-check");
    assert_eq!(hook["language"], "system");
    let files = regex::Regex::new(hook["files"].as_str().unwrap()).unwrap();
    for (path, matches) in [
        ("connectors/a.yaml", true),
        ("b.yml", true),
        ("c.json", false),
        ("d.yaml.bak", false),
    ] {
        assert_eq!(files.is_match(path), matches, "{path}");
    }
    let entry: Vec<String> = hook["entry"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(entry[0], "connect-gate");
    let (_ws, root) = checkout();
    // The args the hook's comment tells users to set, then the files pre-commit passes.
    let args = |files: &[&str]| {
        let mut args: Vec<String> = entry[1..].to_vec();
        args.extend(
            [
                "--plugins",
                "ci/plugins.json",
                "--vars-dir",
                "ci/vars",
                "--env-file",
                "ci/ci.env",
            ]
            .map(String::from),
        );
        args.extend(files.iter().map(|f| f.to_string()));
        args
    };
    let good = run_in(
        Some(&root),
        &args(&[
            "connectors/audit-file-connectors.yaml",
            "connectors/not-connectors.yaml",
        ]),
        None,
        &[],
    );
    assert_eq!(good.code, 0, "{}", good.all());
    std::fs::copy(Path::new(REPO).join(ORDERS), root.join("connectors/orders.yaml")).unwrap();
    let bad = run_in(Some(&root), &args(&["connectors/orders.yaml"]), None, &[]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(bad.stdout.contains("REJECTED  broken.json"), "{}", bad.stdout);
}

#[test]
fn the_plan_reader_role_only_reads_what_plan_needs() {
    let role = yaml("deploy/ci/plan-reader-role.yaml");
    assert_eq!(role["kind"], "Role");
    // The namespace and the ledger's name are those the reconciler's Role is given.
    let rbac = std::fs::read_to_string(Path::new(REPO).join("deploy/base/rbac.yaml")).unwrap();
    let reconciler: Value = serde_norway::Deserializer::from_str(&rbac)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|o: &Value| o["kind"] == "Role")
        .unwrap();
    assert_eq!(role["metadata"]["namespace"], reconciler["metadata"]["namespace"]);
    let ledger_names = reconciler["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resourceNames"].as_array().cloned().unwrap_or_default())
        .collect::<Vec<_>>();
    assert!(ledger_names.contains(&"connect-gate-ledger".into()));
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["connect-gate-ledger"], "verbs": ["get"]},
        ])
    );
}
