//! Running the connect-gate binary the way a user does, with template inputs in a temp dir.
#![allow(dead_code)] // each test crate uses a different part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// The binary under test, shared with the e2e support (whose process module needs nothing else).
#[path = "../support/process.rs"]
mod process;
pub use process::BIN;

/// The project's own connector ConfigMaps and template-variable files (tests/fixtures/README.md).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Secret values the tests plant; none may ever be printed unless `--reveal`. All but the
/// second (the env file's password) are values in `tests/fixtures/vars`.
pub const SECRETS: &[&str] = &[
    "s3cr3t-user-info==x",
    "hunter2-password",
    "https://sr.internal:8081",
    "jaas-pa55word",
];

pub const PLUGINS: &str = r#"[
  {"class":"org.apache.kafka.connect.file.FileStreamSinkConnector","type":"sink","version":"4.3.1"},
  {"class":"org.apache.kafka.connect.file.FileStreamSourceConnector","type":"source","version":"4.3.1"},
  {"class":"io.confluent.connect.jdbc.JdbcSourceConnector","type":"source","version":"10.8.0"}
]"#;

/// A workspace with a vars dir (a copy of `tests/fixtures/vars`), an env file and a plugins file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ws = Self { dir };
        let vars = Path::new(FIXTURES).join("vars");
        for entry in std::fs::read_dir(&vars).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            ws.write(&format!("vars/{}", path.file_name().unwrap().to_str().unwrap()), &text);
        }
        ws.write(
            "env",
            &format!(
                "MYSQL_CONNECTION_USER=connect\nMYSQL_CONNECTION_PASSWORD={}\n",
                SECRETS[1]
            ),
        );
        ws.write("plugins.json", PLUGINS);
        ws
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The inputs every command takes.
    pub fn input_args(&self) -> Vec<String> {
        vec![
            "--vars-dir".into(),
            self.path("vars").display().to_string(),
            "--env-file".into(),
            self.path("env").display().to_string(),
        ]
    }

    pub fn check(&self, extra: &[&str], paths: &[&Path]) -> Run {
        let mut args = vec!["check".to_string()];
        args.extend(self.input_args());
        args.extend(["--plugins".into(), self.path("plugins.json").display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(paths.iter().map(|p| p.display().to_string()));
        run(&args, None)
    }

    pub fn render(&self, extra: &[&str], paths: &[&Path]) -> Run {
        let mut args = vec!["render".to_string()];
        args.extend(self.input_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(paths.iter().map(|p| p.display().to_string()));
        run(&args, None)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// No planted secret appears anywhere in what the command printed.
    pub fn assert_no_secrets(&self) {
        let all = self.all();
        for secret in SECRETS {
            assert!(!all.contains(secret), "secret leaked in output:\n{all}");
        }
    }
}

pub fn run(args: &[String], stdin: Option<&str>) -> Run {
    run_in(None, args, stdin, &[])
}

/// `connect-gate ARGS` in `dir` (this process's working directory when `None`), with `envs`
/// added and `stdin` piped in.
pub fn run_in(dir: Option<&Path>, args: &[String], stdin: Option<&str>, envs: &[(String, String)]) -> Run {
    let mut command = Command::new(BIN);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A connector ConfigMap with the given data entries, as a user would write it.
pub fn configmap(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: team\n  labels:\n    destination: connect\n"
    );
    for (k, v) in labels {
        yaml.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    yaml.push_str("data:\n");
    for (k, v) in data {
        yaml.push_str(&format!("  {k}: |-\n"));
        for line in v.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
        if v.is_empty() {
            yaml = yaml.replace(&format!("  {k}: |-\n"), &format!("  {k}: \"\"\n"));
        }
    }
    yaml
}

/// `connect-gate offsets NAME ARGS`: what a user runs to read a connector's offsets.
pub fn offsets(name: &str, args: &[&str]) -> Run {
    let mut all = vec!["offsets".to_string(), name.to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    run(&all, None)
}
