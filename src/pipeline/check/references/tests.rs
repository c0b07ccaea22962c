use super::*;
use crate::pipeline::check::providers::{DIRECTORY_CLASS, ENV_CLASS, FILE_CLASS, STRIMZI_SECRET_CLASS};

fn refs(value: &str) -> Vec<(&str, Option<&str>, &str)> {
    references(value).map(|r| (r.alias, r.path, r.key)).collect()
}

#[test]
fn references_follow_kafkas_grammar_anywhere_in_a_string_several_per_value() {
    assert_eq!(
        refs("${file:/a/b.properties:user}"),
        [("file", Some("/a/b.properties"), "user")]
    );
    assert_eq!(
        refs("jdbc://${env:HOST}:5432/${dir:/s:db}?x"),
        [("env", None, "HOST"), ("dir", Some("/s"), "db")]
    );
    // The first colon ends the alias, the second the path; the key keeps any further colon.
    assert_eq!(refs("${a:b:c:d}"), [("a", Some("b"), "c:d")]);
    // One colon: an empty path, which file and directory providers resolve to nothing.
    assert_eq!(refs("${dir:/mnt/x/user.p12}"), [("dir", None, "/mnt/x/user.p12")]);
    // No part holds `}`; nothing is resolved recursively.
    assert_eq!(refs("${a:${b:c}}"), [("a", Some("${b"), "c")]);
    assert_eq!(refs("$file:x} ${nocolon} {a:b}"), []);
}

struct Fixture {
    dir: tempfile::TempDir,
    worker: WorkerConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("db.properties"), "user=u\npassword=p\n").unwrap();
    std::fs::create_dir(root.join("volume")).unwrap();
    std::fs::write(root.join("volume/token"), "t").unwrap();
    std::fs::create_dir(root.join("volume/sub")).unwrap();
    let text = format!(
        "config.providers=file,dir,env,vault,k8s\n\
         config.providers.file.class={FILE_CLASS}\n\
         config.providers.file.param.allowed.paths={root}\n\
         config.providers.dir.class={DIRECTORY_CLASS}\n\
         config.providers.dir.param.allowed.paths={root}\n\
         config.providers.env.class={ENV_CLASS}\n\
         config.providers.env.param.allowlist.pattern=DB_.*\n\
         config.providers.vault.class=com.example.Vault\n\
         config.providers.k8s.class={STRIMZI_SECRET_CLASS}\n",
        root = root.display()
    );
    let worker = WorkerConfig::parse(Path::new("worker.properties"), &text).unwrap();
    Fixture { dir, worker }
}

impl Fixture {
    fn check(&self, value: &str, unresolvable: Unresolvable) -> Findings {
        let value = value.replace("ROOT", &self.dir.path().display().to_string());
        let config = BTreeMap::from([("k".to_string(), value)]);
        check_config(
            &config,
            &BTreeSet::from(["date".to_string()]),
            Some(&self.worker),
            unresolvable,
        )
    }

    fn denial(&self, value: &str) -> String {
        let findings = self.check(value, Unresolvable::Deny);
        assert_eq!(findings.problems.len(), 1, "{findings:?}");
        findings.problems[0]
            .to_string()
            .replace(&self.dir.path().display().to_string(), "ROOT")
    }
}

#[test]
fn references_that_resolve_pass() {
    let f = fixture();
    let ok = f.check(
        "${file:ROOT/db.properties:user} ${dir:ROOT/volume:token} ${env:DB_USER} ${date:now:yyyyMMdd}",
        Unresolvable::Deny,
    );
    assert!(ok.problems.is_empty() && ok.warnings.is_empty(), "{ok:?}");
}

#[test]
fn an_unknown_alias_is_denied_listing_the_configured_ones_and_saying_how_to_keep_it_literal() {
    assert_eq!(
        fixture().denial("${secret:ROOT/db.properties:user}"),
        "config key `k`: `${secret:ROOT/db.properties:user}` names provider alias `secret`, which the worker does not configure (config.providers: dir, env, file, k8s, vault), so Kafka Connect would pass it on as literal text; if it is meant as literal text, list \"secret\" in the declaration's \"literalAliases\""
    );
}

#[test]
fn a_missing_key_lists_the_keys_that_are_there() {
    let f = fixture();
    assert_eq!(
        f.denial("${file:ROOT/db.properties:pass}"),
        "config key `k`: `${file:ROOT/db.properties:pass}`: ROOT/db.properties has no key `pass`; keys there: password, user"
    );
    assert_eq!(
        f.denial("${dir:ROOT/volume:tok}"),
        "config key `k`: `${dir:ROOT/volume:tok}`: ROOT/volume has no key `tok`; keys there: token"
    );
}

#[test]
fn a_missing_file_or_directory_is_denied_in_the_sidecar_and_a_warning_elsewhere() {
    let f = fixture();
    assert_eq!(
        f.denial("${file:ROOT/nope.properties:user}"),
        "config key `k`: `${file:ROOT/nope.properties:user}`: ROOT/nope.properties does not exist; FileConfigProvider would fail the worker's REST call"
    );
    assert_eq!(
        f.denial("${dir:ROOT/nodir:token}"),
        "config key `k`: `${dir:ROOT/nodir:token}`: ROOT/nodir does not exist, so Kafka Connect would pass the reference on as literal text"
    );
    let ci = f.check("${dir:ROOT/nodir:token}", Unresolvable::Warn);
    assert!(ci.problems.is_empty());
    assert!(
        ci.warnings[0].contains("was not checked (--strict-references denies it)"),
        "{ci:?}"
    );
}

#[test]
fn a_path_outside_allowed_paths_is_denied() {
    assert_eq!(
        fixture()
            .denial("${file:ROOT/../db.properties:user}")
            .split(" is outside")
            .next()
            .unwrap(),
        "config key `k`: `${file:ROOT/../db.properties:user}`: path ROOT/../db.properties"
    );
}

#[test]
fn a_path_given_to_the_env_provider_and_a_name_outside_its_allowlist_are_denied() {
    let f = fixture();
    assert_eq!(
        f.denial("${env:/etc:DB_USER}"),
        "config key `k`: `${env:/etc:DB_USER}`: provider `env` (EnvVarConfigProvider) takes no path; write ${env:NAME}"
    );
    assert_eq!(
        f.denial("${env:HOME}"),
        "config key `k`: `${env:HOME}`: `HOME` does not match allowlist.pattern `DB_.*` of provider `env`, so Kafka Connect would pass it on as literal text"
    );
}

#[test]
fn an_empty_path_for_file_or_directory_is_denied() {
    assert_eq!(
        fixture().denial("${dir:/mnt/x/user.p12}"),
        "config key `k`: `${dir:/mnt/x/user.p12}` gives provider `dir` (DirectoryConfigProvider) an empty path; write ${dir:PATH:KEY}"
    );
}

#[test]
fn custom_providers_are_checked_for_alias_and_syntax_and_a_warning_says_so() {
    let f = fixture();
    let vault = f.check("${vault:secret/db:password}", Unresolvable::Deny);
    assert!(vault.problems.is_empty());
    assert!(vault.warnings[0].contains("not that the value exists"), "{vault:?}");
    assert!(f.check("${k8s:ns/name:key}", Unresolvable::Deny).problems.is_empty());
    assert!(f.denial("${k8s:name:key}").contains("takes a path `NAMESPACE/NAME`"));
}

#[test]
fn config_providers_in_the_connectors_own_config_are_denied_even_without_the_worker_config() {
    let config = BTreeMap::from([("config.providers".to_string(), "file".to_string())]);
    let findings = check_config(&config, &BTreeSet::new(), None, Unresolvable::Deny);
    assert_eq!(
        findings.problems[0].to_string(),
        "config key `config.providers` declares config providers in the connector's config; Kafka Connect reads config.providers only from the worker's config"
    );
}

#[test]
fn a_literal_alias_that_is_a_provider_is_denied() {
    let f = fixture();
    let config = BTreeMap::new();
    let findings = check_config(
        &config,
        &BTreeSet::from(["file".to_string()]),
        Some(&f.worker),
        Unresolvable::Deny,
    );
    assert!(matches!(
        findings.problems[..],
        [ReferenceProblem::LiteralIsProvider { .. }]
    ));
}
