use super::*;
use crate::pipeline::check::providers::{DIRECTORY_CLASS, ENV_CLASS, FILE_CLASS};
use crate::pipeline::render::secrets::{Secret, env_placeholder, var_placeholder};

fn worker(providers: &str) -> WorkerConfig {
    let all = format!(
        "config.providers.file.class={FILE_CLASS}\nconfig.providers.file.param.allowed.paths=/mnt/props\n\
         config.providers.dir.class={DIRECTORY_CLASS}\nconfig.providers.dir.param.allowed.paths=/mnt/secret\n\
         config.providers.env.class={ENV_CLASS}\nconfig.providers.env.param.allowlist.pattern=DB_.*\n\
         config.providers={providers}\n"
    );
    WorkerConfig::parse(Path::new("worker.properties"), &all).unwrap()
}

fn inputs() -> TemplateInputs {
    let mut inputs = TemplateInputs::default();
    for (name, value, origin) in [
        (
            "USER",
            "alice",
            VarOrigin::Properties {
                file: "/mnt/props/db.properties".into(),
                key: "user".into(),
            },
        ),
        (
            "PASSWORD",
            "hunter2",
            VarOrigin::File {
                dir: "/mnt/secret".into(),
                name: "password".into(),
            },
        ),
        (
            "ELSEWHERE",
            "x",
            VarOrigin::File {
                dir: "/etc/other".into(),
                name: "elsewhere".into(),
            },
        ),
    ] {
        inputs.vars.insert(name.into(), Secret::new(value));
        inputs.origins.insert(name.into(), origin);
    }
    inputs.env.insert("DB_HOST".into(), Secret::new("db.local"));
    inputs.env.insert("HOME".into(), Secret::new("/root"));
    inputs
}

/// The real and placeholder renders of a config given as (key, real, shown).
fn renders(entries: &[(&str, &str, &str)]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let real = entries.iter().map(|(k, r, _)| (k.to_string(), r.to_string())).collect();
    let shown = entries.iter().map(|(k, _, s)| (k.to_string(), s.to_string())).collect();
    (real, shown)
}

#[test]
fn inputs_placed_as_they_are_become_references_whole_or_inside_a_string() {
    let user = var_placeholder("USER");
    let password = var_placeholder("PASSWORD");
    let host = env_placeholder("DB_HOST");
    let (real, shown) = renders(&[
        ("connection.user", "alice", &user),
        ("connection.password", "hunter2", &password),
        (
            "connection.url",
            "jdbc:pg://db.local/alice",
            &format!("jdbc:pg://{host}/{user}"),
        ),
        ("topics", "t", "t"),
    ]);
    let done = as_references(&real, &shown, &inputs(), &worker("file,dir,env")).unwrap();
    assert_eq!(done.config["connection.user"], "${file:/mnt/props/db.properties:user}");
    assert_eq!(done.config["connection.password"], "${dir:/mnt/secret:password}");
    assert_eq!(
        done.config["connection.url"],
        "jdbc:pg://${env:DB_HOST}/${file:/mnt/props/db.properties:user}"
    );
    assert_eq!(done.config["topics"], "t");
    assert!(done.warnings.is_empty());
}

#[test]
fn a_value_computed_from_an_input_is_denied_naming_the_key_and_the_input() {
    let (real, shown) = renders(&[("a", "ALICE", &var_placeholder("USER").to_uppercase()), ("b", "5", "9")]);
    let problems = as_references(&real, &shown, &inputs(), &worker("file,dir,env")).unwrap_err();
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        texts[0].starts_with("config key `a` is computed from $USER, not placed as it is"),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with("config key `b` is computed from variable or env values"),
        "{texts:?}"
    );
    assert!(texts.iter().all(|t| !t.contains("alice") && !t.contains("ALICE")));
}

#[test]
fn keys_connect_reads_before_resolving_keep_their_value_with_a_warning() {
    let (real, shown) = renders(&[("connector.class", "alice", &var_placeholder("USER"))]);
    let done = as_references(&real, &shown, &inputs(), &worker("file,dir,env")).unwrap();
    assert_eq!(done.config["connector.class"], "alice");
    assert!(done.warnings[0].contains("reads before it resolves references"));
}

#[test]
fn an_input_the_worker_cannot_resolve_is_denied_saying_why() {
    let texts = |entries: &[(&str, &str, &str)], providers: &str| -> Vec<String> {
        let (real, shown) = renders(entries);
        as_references(&real, &shown, &inputs(), &worker(providers))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        texts(&[("p", "hunter2", &var_placeholder("PASSWORD"))], "file,env"),
        [
            "config key `p`: $PASSWORD comes from a file of a mounted directory, but the worker's config configures no DirectoryConfigProvider to send it as a reference (config.providers: env, file)"
        ]
    );
    assert_eq!(
        texts(&[("e", "x", &var_placeholder("ELSEWHERE"))], "file,dir,env"),
        [
            "config key `e`: $ELSEWHERE comes from /etc/other, outside allowed.paths of provider `dir` (/mnt/secret): mount it under one of those paths on the worker and the sidecar alike"
        ]
    );
    assert_eq!(
        texts(&[("h", "/root", &env_placeholder("HOME"))], "file,dir,env"),
        [
            "config key `h`: env.HOME does not match allowlist.pattern `DB_.*` of provider `env`, so it cannot be sent as a reference"
        ]
    );
}
