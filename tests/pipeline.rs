//! `connect-gate check` and `render` as a user runs them: every rejection's message, and that
//! no secret value is ever printed.

mod cli;

use std::path::Path;

use cli::{Workspace, configmap, run};

/// Connector ConfigMaps in the streaming-ops format, with other objects beside them.
const CONNECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/connectors");

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(CONNECTORS).join(name)
}

const GOOD: &str = r#"{"name": "files-sink", "config": {"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/out", "tasks.max": 1}}"#;

/// Checks one template in its own ConfigMap and returns what was printed.
fn check_template(ws: &Workspace, template: &str) -> cli::Run {
    check_configmap(ws, &configmap("cm", &[], &[("c.json", template)]))
}

fn check_configmap(ws: &Workspace, yaml: &str) -> cli::Run {
    let file = ws.write("cm.yaml", yaml);
    let out = ws.check(&[], &[&file]);
    out.assert_no_secrets();
    out
}

fn assert_rejected(out: &cli::Run, needles: &[&str]) {
    assert_eq!(out.code, 1, "expected a rejection:\n{}", out.all());
    for needle in needles {
        assert!(out.stdout.contains(needle), "missing {needle:?} in:\n{}", out.stdout);
    }
}

#[test]
fn streaming_ops_format_fixtures_are_accepted() {
    let ws = Workspace::new();
    let out = ws.check(&[], &[Path::new(CONNECTORS)]);
    out.assert_no_secrets();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("inventory-jdbc-source.json -> jdbc-inventory\n"),
        "{}",
        out.stdout
    );
    // The BigQuery sink is disabled and its env vars and variable are absent: accepted, name
    // still found.
    assert!(
        out.stdout
            .contains("shipments-bq-sink.json -> shipments-bq-sink (disabled: to be deleted)"),
        "{}",
        out.stdout
    );
    // Both data keys of one ConfigMap are connectors.
    for line in [
        "audit-file-source.json -> audit-log-source\n",
        "audit-file-sink.json -> audit-archive-sink\n",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in:\n{}", out.stdout);
    }
    assert!(
        out.stdout.ends_with("5 connectors: 5 accepted, 0 rejected\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn render_shows_placeholders_for_variable_values_unless_revealed() {
    let ws = Workspace::new();
    let file = fixture("inventory-jdbc-source.yaml");
    let masked = ws.render(&[], &[&file]);
    assert_eq!(masked.code, 0, "{}", masked.all());
    masked.assert_no_secrets();
    let line: serde_json::Value = serde_json::from_str(masked.stdout.trim()).unwrap();
    assert_eq!(line["name"], "jdbc-inventory");
    assert_eq!(line["config"]["connection.password"], "⟨env.MYSQL_CONNECTION_PASSWORD⟩");
    assert_eq!(
        line["config"]["value.converter.schema.registry.url"],
        "⟨$SCHEMA_REGISTRY_URL⟩"
    );
    assert_eq!(line["config"]["mode"], "timestamp+incrementing");
    let revealed = ws.render(&["--reveal"], &[&file]);
    let line: serde_json::Value = serde_json::from_str(revealed.stdout.trim()).unwrap();
    assert_eq!(line["config"]["connection.password"], cli::SECRETS[1]);
    assert_eq!(
        line["config"]["value.converter.schema.registry.basic.auth.user.info"],
        cli::SECRETS[0]
    );
    assert_eq!(masked.stdout.lines().count(), 1);
}

#[test]
fn config_values_become_strings_and_name_is_added() {
    let ws = Workspace::new();
    let file = ws.write(
        "cm.yaml",
        &configmap("cm", &[], &[("a.json", r#"{"name": "n1", "state": "PAUSED", "config": {"connector.class": "FileStreamSource", "tasks.max": 2, "batch.size": 1.5, "flag": true}}"#)]),
    );
    let out = ws.render(&[], &[&file]);
    assert_eq!(
        out.stdout.trim(),
        r#"{"name":"n1","config":{"batch.size":"1.5","connector.class":"FileStreamSource","flag":"true","name":"n1","tasks.max":"2"},"state":"paused"}"#
    );
}

#[test]
fn parse_error_names_line_and_column() {
    let out = check_template(
        &Workspace::new(),
        "{\n  \"name\": \"x\",\n  \"config\": {\"a\" \"b\"}\n}",
    );
    assert_rejected(
        &out,
        &[
            "ConfigMap team/cm (",
            "c.json -> ?",
            "does not parse at template line 3, column",
        ],
    );
}

#[test]
fn undefined_variable_is_named_with_the_available_names() {
    let out = check_template(
        &Workspace::new(),
        r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "url": $SCHEMA_REGISTRY_ULR}}"#,
    );
    assert_rejected(
        &out,
        &[
            "undefined variable $SCHEMA_REGISTRY_ULR",
            "$SCHEMA_REGISTRY_URL",
            "$BASIC_AUTH_CREDENTIALS_SOURCE",
        ],
    );
}

/// One bad input makes only its own variables unusable: the others, and every template that
/// does not read it, keep working.
#[test]
fn a_variable_that_cannot_be_used_is_named_with_why_and_the_rest_still_works() {
    let ws = Workspace::new();
    ws.write("vars/clash.properties", "db.url=jdbc:one\ndb-url=jdbc:two\n");
    let reads = r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "url": $DB_URL}}"#;
    let other = r#"{"name": "y", "config": {"connector.class": "FileStreamSink", "url": $SCHEMA_REGISTRY_URL}}"#;
    let out = check_configmap(&ws, &configmap("cm", &[], &[("a.json", reads), ("b.json", other)]));
    assert_rejected(
        &out,
        &[
            "variable $DB_URL at template line 1, column",
            "cannot be used: defined more than once:",
            "clash.properties (key db.url)",
            "clash.properties (key db-url)",
            "1 accepted, 1 rejected",
        ],
    );
    assert!(
        !out.all().contains("jdbc:one") && !out.all().contains("jdbc:two"),
        "{}",
        out.all()
    );
}

#[test]
fn unset_env_is_named_unless_a_default_is_given() {
    let ws = Workspace::new();
    let out = check_template(
        &ws,
        r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "user": env.MYSQL_USR, "pw": "p-\(env.NOPE)"}}"#,
    );
    assert_rejected(
        &out,
        &[
            "env.MYSQL_USR is not set (used by config key `user`)",
            "env.NOPE is not set (used by config key `pw`)",
        ],
    );
    let out = check_template(
        &ws,
        r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "user": (env.MYSQL_USR // "anon"), "pw": $ENV.MYSQL_CONNECTION_PASSWORD}}"#,
    );
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn connect_gates_own_env_and_disallowed_env_are_hidden() {
    let ws = Workspace::new();
    ws.write(
        "env",
        &format!(
            "CONNECT_GATE_TLS_KEY=private-key-material\nMYSQL_CONNECTION_PASSWORD={}\n",
            cli::SECRETS[1]
        ),
    );
    let out = check_template(
        &ws,
        r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "k": env.CONNECT_GATE_TLS_KEY}}"#,
    );
    assert_rejected(
        &out,
        &[
            "env.CONNECT_GATE_TLS_KEY is not available to templates (CONNECT_GATE_* variables are connect-gate's own settings)",
        ],
    );
    assert!(!out.stdout.contains("private-key-material"));
    let file = ws.write(
        "cm.yaml",
        &configmap(
            "cm",
            &[],
            &[(
                "c.json",
                r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "k": env.MYSQL_CONNECTION_PASSWORD}}"#,
            )],
        ),
    );
    let out = ws.check(&["--template-env-allow", "KAFKA_.*"], &[&file]);
    out.assert_no_secrets();
    assert_rejected(
        &out,
        &[
            "env.MYSQL_CONNECTION_PASSWORD is not available to templates (not allowed by --template-env-allow 'KAFKA_.*')",
        ],
    );
}

#[test]
fn shape_problems_of_the_result() {
    let ws = Workspace::new();
    let cases: &[(&str, &[&str])] = &[
        (
            r#""just a string""#,
            &["must produce an object", "it produced a string"],
        ),
        (
            r#"{"config": {"connector.class": "FileStreamSink"}}"#,
            &["`name` is missing"],
        ),
        (
            r#"{"name": "", "config": {"connector.class": "FileStreamSink"}}"#,
            &["`name` is empty"],
        ),
        (
            r#"{"name": "a", "config": {"name": "b", "connector.class": "FileStreamSink"}}"#,
            &[r#"config.name "b" differs from name "a""#],
        ),
        (
            r#"{"name": "a", "config": {"topics": "t"}}"#,
            &["config has no `connector.class`"],
        ),
        (
            r#"{"name": "a", "config": {"connector.class": "FileStreamSink", "n": null, "o": {}, "l": [1]}}"#,
            &[
                "config key `n` is null",
                "config key `o` is an object",
                "config key `l` is an array",
            ],
        ),
        (
            r#"{"name": "a/b", "config": {"connector.class": "FileStreamSink"}}"#,
            &[r#"connector name "a/b" cannot be used by Connect: it contains a slash"#],
        ),
        (
            r#"{"name": "a\u0007", "config": {"connector.class": "FileStreamSink"}}"#,
            &["control characters"],
        ),
        (
            r#"{"name": "a", "confg": {}, "config": {"connector.class": "FileStreamSink"}}"#,
            &["unexpected top-level key `confg`"],
        ),
        (
            r#"{"name": "a", "state": "sleeping", "config": {"connector.class": "FileStreamSink"}}"#,
            &["`state` must be"],
        ),
        (r#"1, 2"#, &["exactly one object, it produced 2 outputs"]),
        (r#"($SCHEMA_REGISTRY_URL | tonumber)"#, &["template failed:"]),
    ];
    for (template, needles) in cases {
        let out = check_template(&ws, template);
        assert_rejected(&out, needles);
    }
}

#[test]
fn unknown_class_suggests_the_closest_installed() {
    let ws = Workspace::new();
    let out = check_template(&ws, r#"{"name": "a", "config": {"connector.class": "FileStreamSinc"}}"#);
    assert_rejected(
        &out,
        &[
            r#"connector.class "FileStreamSinc" is not installed on the worker; closest installed: org.apache.kafka.connect.file.FileStreamSinkConnector"#,
            "c.json -> a",
        ],
    );
    for accepted in [
        "org.apache.kafka.connect.file.FileStreamSinkConnector",
        "FileStreamSinkConnector",
        "FileStreamSink",
    ] {
        let out = check_template(&ws, &GOOD.replace("FileStreamSink", accepted));
        assert_eq!(out.code, 0, "{accepted}: {}", out.all());
    }
}

#[test]
fn duplicates_binary_data_and_empty_values() {
    let ws = Workspace::new();
    let mut yaml = configmap("one", &[], &[("a.json", GOOD), ("b.json", GOOD), ("empty.json", "")]);
    yaml.push_str("binaryData:\n  bin.json: e30=\n---\n");
    yaml.push_str(&configmap("two", &[], &[("c.json", GOOD)]));
    let out = check_configmap(&ws, &yaml);
    assert_rejected(
        &out,
        &[
            r#"connector name "files-sink" is also declared by ConfigMap team/one ("#,
            "key b.json;",
            "ConfigMap team/two",
            "empty.json -> ?",
            "the data value is empty",
            "binaryData cannot hold a connector template",
        ],
    );
    assert!(
        out.stdout.ends_with("5 connectors: 0 accepted, 5 rejected\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn every_bad_connector_is_reported_not_only_the_first() {
    let ws = Workspace::new();
    let yaml = configmap(
        "cm",
        &[],
        &[
            ("a.json", "{"),
            ("b.json", GOOD),
            ("c.json", r#"{"name": "c", "config": {}}"#),
        ],
    );
    let out = check_configmap(&ws, &yaml);
    assert_rejected(
        &out,
        &["a.json -> ?", "c.json -> c", "3 connectors: 1 accepted, 2 rejected"],
    );
}

#[test]
fn runaway_templates_are_rejected_not_run() {
    let ws = Workspace::new();
    for template in [
        "def f: f; f",
        "[range(1e9)]",
        "[repeat(.)]",
        "def f: [f]; f",
        r#""x" * 1e10"#,
        "[limit(100000000; repeat(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"))]",
        &format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        "reduce range(1e6) as $i (null; [.])",
    ] {
        let started = std::time::Instant::now();
        let out = check_template(&ws, template);
        assert_eq!(out.code, 1, "{}: {}", &template[..template.len().min(40)], out.all());
        assert!(
            [
                "did not finish",
                "memory",
                "too deeply",
                "larger than",
                "template failed",
                "does not parse"
            ]
            .iter()
            .any(|n| out.stdout.contains(n)),
            "{}",
            out.stdout
        );
        eprintln!(
            "{:>40} rejected in {:?}",
            &template[..template.len().min(40)],
            started.elapsed()
        );
    }
}

#[test]
fn stdin_json_output_and_exit_codes() {
    let ws = Workspace::new();
    let yaml = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n",
        configmap("cm", &[], &[("a.json", GOOD)])
    );
    let mut args = vec!["check".to_string()];
    args.extend(ws.input_args());
    args.extend([
        "--plugins".into(),
        ws.path("plugins.json").display().to_string(),
        "--output".into(),
        "json".into(),
        "-".into(),
    ]);
    let out = run(&args, Some(&yaml));
    assert_eq!(out.code, 0, "{}", out.all());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["accepted"], 1);
    assert_eq!(doc["verdicts"][0]["name"], "files-sink");
    assert_eq!(doc["verdicts"][0]["origin"]["name"], "cm");

    let missing = ws.check(&[], &[Path::new("/nonexistent/x.yaml")]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/nonexistent/x.yaml"), "{}", missing.stderr);
    let no_plugins = run(&["check".into(), "-".into()], Some(""));
    assert_eq!(no_plugins.code, 2);
    assert!(no_plugins.stderr.contains("--plugins FILE or --connect-url URL"));
}

#[test]
fn check_with_destinations_judges_each_configmap_against_its_destinations_plugins() {
    let ws = Workspace::new();
    let destinations = ws.write(
        "destinations.yaml",
        "destinations:\n- {name: analytics, url: 'http://connect.analytics:8083'}\n- {name: orders, kind: confluent-cloud, environment: env-1, cluster: lkc-1, apiKeyFile: /k, apiSecretFile: /s}\n",
    );
    // The analytics cluster has only a datagen source.
    let analytics = ws.write(
        "analytics.json",
        r#"[{"class": "io.confluent.kafka.connect.datagen.DatagenConnector", "type": "source"}]"#,
    );
    let datagen = r#"{"name": "users", "config": {"connector.class": "DatagenConnector", "kafka.topic": "users"}}"#;
    let file = ws.write(
        "cms.yaml",
        &[
            configmap(
                "on-analytics",
                &[("connect-gate.io/destination", "analytics")],
                &[("d.json", datagen)],
            ),
            configmap(
                "sink-on-analytics",
                &[("connect-gate.io/destination", "analytics")],
                &[("s.json", GOOD)],
            ),
            configmap(
                "nowhere",
                &[("connect-gate.io/destination", "billing")],
                &[("n.json", GOOD)],
            ),
            configmap(
                "stopped-in-cloud",
                &[("connect-gate.io/destination", "orders")],
                &[(
                    "c.json",
                    r#"{"name": "c", "state": "stopped", "config": {"connector.class": "X"}}"#,
                )],
            ),
        ]
        .join("---\n"),
    );
    let dest = destinations.display().to_string();
    let plugins = format!("analytics={}", analytics.display());
    let out = ws.check(&["--destinations", &dest, "--plugins", &plugins], &[&file]);
    assert_rejected(
        &out,
        &[
            "connector.class \"FileStreamSink\" is not installed",
            "destination \"billing\" (label connect-gate.io/destination) is not declared in --destinations; destinations: local, analytics, orders",
            "`state: stopped` is not supported by its destination orders",
            "no plugin list for destination orders",
        ],
    );
    assert!(out.stdout.contains("d.json -> users\n"), "{}", out.stdout);
    assert!(
        out.stdout.ends_with("4 connectors: 1 accepted, 3 rejected\n"),
        "{}",
        out.stdout
    );

    let billing = format!("billing={}", analytics.display());
    let unknown = ws.check(&["--plugins", &billing], &[&file]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown.stderr.contains("no destination \"billing\""),
        "{}",
        unknown.stderr
    );
}

#[test]
fn restart_and_offsets_are_judged_before_they_reach_a_worker() {
    let ws = Workspace::new();
    let sink = |ops: &str| GOOD.replacen('{', &format!("{{{ops}, "), 1);
    let accepted = [
        r#""restart": "2026-12-06""#,
        r#""restart": {"token": "r:2", "onlyFailed": true}, "offsets": {"token": "o.1", "reset": true}"#,
        r#""offsets": {"token": "o2", "set": [{"partition": {"kafka_topic": "t", "kafka_partition": 0}, "offset": {"kafka_offset": 5}}, {"partition": {"kafka_topic": "t", "kafka_partition": 1}, "offset": null}]}"#,
    ];
    for ops in accepted {
        let out = check_template(&ws, &sink(ops));
        assert_eq!(out.code, 0, "{ops}: {}", out.all());
    }
    let rejected = [
        (
            r#""restart": 7"#,
            r#"`restart` must be a token string or {"token": ..., "onlyFailed": true|false}"#,
        ),
        (
            r#""restart": "two words""#,
            r#"`restart` token "two words" is invalid: a token is 1 to 128 letters, digits, '.', '_', '-' or ':'"#,
        ),
        (
            r#""offsets": {"token": "o"}"#,
            r#"`offsets` must have exactly one of `"reset": true` and `set`"#,
        ),
        (
            r#""offsets": {"token": "o", "set": []}"#,
            r#"`offsets.set` is empty; to reset every partition, declare `"reset": true`"#,
        ),
        (
            r#""offsets": {"token": "o", "set": [{"partition": {"filename": "/x"}, "offset": {"position": 1}}]}"#,
            r#"`offsets.set[0]` is not a sink connector's offset: a sink's partition is {"kafka_topic": string, "kafka_partition": integer} and its offset {"kafka_offset": integer} or null"#,
        ),
    ];
    for (ops, message) in rejected {
        let out = check_template(&ws, &sink(ops));
        assert_rejected(
            &out,
            &["REJECTED  c.json -> files-sink", &format!("      error: {message}\n")],
        );
    }
    // A source connector's partitions are its own.
    let source = r#"{"name": "s", "offsets": {"token": "o", "set": [{"partition": {"filename": "/x"}, "offset": {"position": 1}}]}, "config": {"connector.class": "FileStreamSource", "topic": "t", "file": "/x"}}"#;
    let out = check_template(&ws, source);
    assert_eq!(out.code, 0, "{}", out.all());
}

/// Issue "closed, deterministic templates", item 1: `now` renders differently every time, so
/// a template using it is rejected at its position, under a rule of its own for annotations.
#[test]
fn a_template_using_now_is_rejected_at_its_position_because_it_renders_differently_each_time() {
    let ws = Workspace::new();
    let template =
        "{\"name\": \"x\", \"config\": {\"connector.class\": \"FileStreamSink\",\n  \"started\": (now | todate)}}";
    let out = check_template(&ws, template);
    assert_rejected(
        &out,
        &[
            "`now` at template line 2, column 15 gives a different value on every render; a connector config must render the same each time (write the time out, or read it from a variable)",
        ],
    );
    let out = check_template(
        &ws,
        r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "h": (0 | strflocaltime("%H"))}}"#,
    );
    assert_rejected(
        &out,
        &["`strflocaltime` at template line 1, column 73 depends on the time zone of the machine that renders it"],
    );
    let file = ws.write("cm.yaml", &configmap("cm", &[], &[("c.json", template)]));
    let github = ws.check(&["--output", "github"], &[&file]);
    assert_eq!(github.code, 1, "{}", github.all());
    assert!(
        github.stdout.contains("title=connect-gate nondeterministic-filter::"),
        "{}",
        github.stdout
    );
    let sarif = ws.check(&["--output", "sarif"], &[&file]);
    assert!(
        sarif.stdout.contains("\"ruleId\": \"nondeterministic-filter\""),
        "{}",
        sarif.stdout
    );
    // Time in UTC from a literal is the same every time.
    let out = check_template(
        &ws,
        r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "since": (1767225600 | todate)}}"#,
    );
    assert_eq!(out.code, 0, "{}", out.all());
}

/// Item 2: `halt_error` rejects with its own message (from the placeholder render, like every
/// message), `halt` with a clear one, and neither ends a sandbox.
#[test]
fn halt_error_rejects_with_its_own_message_and_halt_with_a_clear_one() {
    let ws = Workspace::new();
    let cases: &[(&str, &str)] = &[
        (r#""boom" | halt_error"#, "template failed: boom"),
        (r#"{"a": 1} | halt_error"#, r#"template failed: {"a":1}"#),
        (
            r#""bad registry \($SCHEMA_REGISTRY_URL)\n" | halt_error(1)"#,
            "template failed: bad registry ⟨$SCHEMA_REGISTRY_URL⟩",
        ),
        (
            "halt",
            "template failed: `halt` stops it before it produces a connector",
        ),
    ];
    for (template, expected) in cases {
        let out = check_template(&ws, template);
        assert_rejected(&out, &[expected]);
        assert!(!out.all().contains("renderer failed"), "{}", out.all());
    }
    let out = check_template(&ws, GOOD);
    assert_eq!(out.code, 0, "{}", out.all());
}

/// `check`/`render` arguments with the workspace's vars but no `--env-file`, and `extra`.
fn without_env_file(ws: &Workspace, command: &str, extra: &[&str], file: &Path) -> Vec<String> {
    let mut args = vec![
        command.to_string(),
        "--vars-dir".into(),
        ws.path("vars").display().to_string(),
    ];
    if command == "check" {
        args.extend(["--plugins".into(), ws.path("plugins.json").display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(file.display().to_string());
    args
}

/// Item 3: without `--env-file` or `--template-env-allow`, `check` and `render` (and `plan`,
/// which judges the same way) show templates no env var, not CI's environment.
#[test]
fn check_and_render_read_no_env_var_unless_env_file_or_template_env_allow_says_so() {
    let ws = Workspace::new();
    let secret = "ci-token-value-1234";
    let envs = [("CI_DEPLOY_TOKEN".to_string(), secret.to_string())];
    let template = r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "token": env.CI_DEPLOY_TOKEN, "d": (env.CI_UNSET // "dflt")}}"#;
    let file = ws.write("cm.yaml", &configmap("cm", &[], &[("c.json", template)]));
    let run = |command: &str, extra: &[&str]| {
        let out = cli::run_in(None, &without_env_file(&ws, command, extra, &file), None, &envs);
        out.assert_no_secrets();
        out
    };
    let denied = run("check", &[]);
    assert_rejected(
        &denied,
        &[
            "env.CI_DEPLOY_TOKEN is not available to templates (check, plan and render read no env var unless --env-file FILE stands in for the environment or --template-env-allow REGEX names those to read) (used by config key `token`)",
        ],
    );
    assert!(!denied.all().contains(secret), "{}", denied.all());
    let denied = run("render", &["--reveal"]);
    assert_eq!(denied.code, 1, "{}", denied.all());
    assert!(denied.stderr.contains("--template-env-allow"), "{}", denied.all());
    assert!(!denied.all().contains(secret), "{}", denied.all());
    // Allowed by name: the process environment, filtered.
    let allowed = run("check", &["--template-env-allow", "CI_DEPLOY_.*"]);
    assert_eq!(allowed.code, 0, "{}", allowed.all());
    let shown = run("render", &["--template-env-allow", "CI_DEPLOY_.*"]);
    assert_eq!(
        shown.stdout.trim(),
        r#"{"name":"x","config":{"connector.class":"FileStreamSink","d":"dflt","name":"x","token":"⟨env.CI_DEPLOY_TOKEN⟩"}}"#
    );
    let revealed = run("render", &["--template-env-allow", "CI_DEPLOY_.*", "--reveal"]);
    assert!(revealed.stdout.contains(secret), "{}", revealed.all());
    // An env file stands in for the environment: the process's is not read.
    let env_file = ws.write("ci.env", "CI_DEPLOY_TOKEN=stand-in\n");
    let filed = run("render", &["--env-file", env_file.to_str().unwrap(), "--reveal"]);
    assert!(filed.stdout.contains("\"token\":\"stand-in\""), "{}", filed.all());
    // A default keeps a template working without any env.
    let file = ws.write(
        "cm.yaml",
        &configmap(
            "cm",
            &[],
            &[(
                "c.json",
                r#"{"name": "x", "config": {"connector.class": "FileStreamSink", "token": (env.CI_DEPLOY_TOKEN // "none")}}"#,
            )],
        ),
    );
    let out = cli::run_in(
        None,
        &without_env_file(&ws, "render", &["--reveal"], &file),
        None,
        &envs,
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("\"token\":\"none\""), "{}", out.all());
}

/// A worker config with the built-in providers, `allowed.paths` the workspace's vars and
/// `/mnt/worker` (a path of the worker's that CI does not have).
fn worker_config(ws: &Workspace) -> String {
    let vars = ws.path("vars").display().to_string();
    let text = format!(
        "config.providers=file,dir,env\n\
         config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n\
         config.providers.file.param.allowed.paths={vars},/mnt/worker\n\
         config.providers.dir.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider\n\
         config.providers.dir.param.allowed.paths={vars},/mnt/worker\n\
         config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n\
         config.providers.env.param.allowlist.pattern=MYSQL_.*\n\
         sasl.jaas.config=worker-own-secret-value\n"
    );
    ws.write("worker.properties", &text).display().to_string()
}

#[test]
fn check_judges_references_against_the_worker_config_warning_where_its_paths_are_absent() {
    let ws = Workspace::new();
    let worker = worker_config(&ws);
    let template = r#"{"name": "r", "config": {"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/o", "password": "${dir:/mnt/worker/db:password}"}}"#;
    let file = ws.write("cm.yaml", &configmap("cm", &[], &[("c.json", template)]));
    let ci = ws.check(&["--worker-config", &worker], &[&file]);
    assert_eq!(ci.code, 0, "{}", ci.all());
    assert!(
        ci.stdout.contains("config key `password`: `${dir:/mnt/worker/db:password}`: /mnt/worker/db does not exist here, so the reference was not checked (--strict-references denies it)"),
        "{}",
        ci.all()
    );
    let strict = ws.check(&["--worker-config", &worker, "--strict-references"], &[&file]);
    assert_rejected(
        &strict,
        &[
            "config key `password`: `${dir:/mnt/worker/db:password}`: /mnt/worker/db does not exist, so Kafka Connect would pass the reference on as literal text",
        ],
    );
    // The worker's own values never show.
    assert!(!strict.all().contains("worker-own-secret-value"));
    let typo = r#"{"name": "r", "config": {"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/o", "password": "${secrets:/mnt/worker/db:password}"}}"#;
    assert_rejected(
        &ws.check(
            &["--worker-config", &worker],
            &[&ws.write("cm.yaml", &configmap("cm", &[], &[("c.json", typo)]))],
        ),
        &["names provider alias `secrets`, which the worker does not configure (config.providers: dir, env, file)"],
    );
}

#[test]
fn render_in_references_mode_sends_inputs_as_the_references_the_worker_resolves() {
    let ws = Workspace::new();
    let worker = worker_config(&ws);
    let vars = ws.path("vars").display().to_string();
    let template = r#"{"name": "r", "config": {"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/o",
        "sr": $SCHEMA_REGISTRY_URL, "auth": "user:\($SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO)", "db": env.MYSQL_CONNECTION_PASSWORD}}"#;
    let file = ws.write("cm.yaml", &configmap("cm", &[], &[("c.json", template)]));
    let refs = ["--worker-config", worker.as_str(), "--secrets-as", "references"];
    for out in [
        ws.render(&refs, &[&file]),
        ws.render(&[&refs[..], &["--reveal"]].concat(), &[&file]),
    ] {
        assert_eq!(out.code, 0, "{}", out.all());
        out.assert_no_secrets();
        let sent: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(
            sent["config"]["sr"],
            format!("${{file:{vars}/schema-registry.properties:schema.registry.url}}")
        );
        assert_eq!(
            sent["config"]["auth"],
            format!("user:${{file:{vars}/schema-registry.properties:schema.registry.basic.auth.user.info}}")
        );
        assert_eq!(sent["config"]["db"], "${env:MYSQL_CONNECTION_PASSWORD}");
    }
    let computed = r#"{"name": "r", "config": {"connector.class": "FileStreamSink", "topics": "t", "file": "/tmp/o", "sr": ($SCHEMA_REGISTRY_URL | ascii_upcase)}}"#;
    let file = ws.write("cm.yaml", &configmap("cm", &[], &[("c.json", computed)]));
    let out = ws.check(&refs, &[&file]);
    assert_rejected(
        &out,
        &["config key `sr` is computed from $SCHEMA_REGISTRY_URL, not placed as it is"],
    );
    out.assert_no_secrets();
    let usage = ws.check(&["--secrets-as", "references"], &[&file]);
    assert_eq!(usage.code, 2, "{}", usage.all());
    assert!(
        usage.stderr.contains("--secrets-as references needs --worker-config"),
        "{}",
        usage.all()
    );
}
