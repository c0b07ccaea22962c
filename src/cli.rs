//! The command line: `check` and `render` run the verdict pipeline offline, `certs` writes a
//! development certificate, `offsets` reads a connector's offsets to declare them ([`offsets`]),
//! `serve` hands over to [`crate::serve`].

mod annotations;
mod offsets;
mod plan;
mod plan_report;
mod sarif;
mod source_map;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use std::collections::BTreeMap;

use crate::config::{CertsArgs, Cli, Command, Output, PipelineArgs};
use crate::connect::ConnectClient;
use crate::connect::destinations::{DestinationsFile, LOCAL};
use crate::pipeline::check::duplicates::settle;
use crate::pipeline::check::plugins::Catalog;
use crate::pipeline::check::providers::WorkerConfig;
use crate::pipeline::check::references::Unresolvable;
use crate::pipeline::check::secrets_as::SecretsAs;
use crate::pipeline::check::verdict::{Desired, Verdict};
use crate::pipeline::judgement::{DestinationCheck, Pipeline, PluginCheck};
use crate::pipeline::parse::manifest::{self, CLOUD_LABEL, ConnectorConfigMap, Target};
use crate::pipeline::render::sandbox::Renderer;
use crate::webhook::tls;

/// A usage or I/O error: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sidecar logs what it does; the CLI only what went wrong.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONNECT_GATE_LOG").unwrap_or_else(|_| default_level.into()),
        )
        .init();
    crate::install_crypto_provider();
    let result = match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            return match runtime.block_on(crate::serve::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Certs(args) => certs(&args),
        Command::Offsets(args) => return offsets::main(&args),
        Command::Plan(args) => current_thread().block_on(plan::run(&args)),
        Command::Check { inputs, output } => current_thread().block_on(check(inputs, output)),
        Command::Render { inputs, reveal } => current_thread().block_on(render(inputs, reveal)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("connect-gate: {e}");
            ExitCode::from(2)
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn judge(args: &PipelineArgs) -> Result<Vec<Verdict>, UsageError> {
    Ok(judge_loaded(args).await?.1)
}

/// The connector ConfigMaps of `args.paths` (read once: `-` is stdin) and their verdicts.
async fn judge_loaded(args: &PipelineArgs) -> Result<(Vec<ConnectorConfigMap>, Vec<Verdict>), UsageError> {
    let cms = manifest::load_paths(&args.paths).map_err(|e| UsageError(e.to_string()))?;
    let verdicts = judge_these(args, &cms).await?;
    Ok((cms, verdicts))
}

/// `cms` judged together as `check` judges them, with `args`' inputs and plugin lists.
async fn judge_these(args: &PipelineArgs, cms: &[ConnectorConfigMap]) -> Result<Vec<Verdict>, UsageError> {
    let err = |e: &dyn std::fmt::Display| UsageError(e.to_string());
    // Not the process environment unless asked: a template under review must not read CI's.
    let inputs = args.template.sources().load_closed().map_err(|e| err(&e))?;
    let destinations = args
        .destinations
        .as_deref()
        .map(DestinationsFile::load)
        .transpose()
        .map_err(|e| err(&e))?;
    let mut catalogs: BTreeMap<String, Catalog> = BTreeMap::new();
    for arg in &args.plugins {
        let file = &arg.file;
        let body = std::fs::read(file).map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
        let catalog = Catalog::from_json(&body).map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
        let name = arg.destination.clone().unwrap_or_else(|| LOCAL.into());
        let known =
            name == LOCAL || name == CLOUD_LABEL || destinations.as_ref().is_some_and(|d| d.names().contains(&name));
        if !known {
            return Err(UsageError(format!(
                "--plugins {name}={}: no destination {name:?} (destinations: {})",
                file.display(),
                destinations.as_ref().map_or(LOCAL.into(), |d| d.names().join(", "))
            )));
        }
        catalogs.insert(name, catalog);
    }
    if let (false, Some(url)) = (catalogs.contains_key(LOCAL), &args.connect_url) {
        let catalog = ConnectClient::new(url).plugins().await.map_err(|e| err(&e))?;
        catalogs.insert(LOCAL.into(), catalog);
    }
    let workers = workers(args, destinations.as_ref())?;
    let offline: Vec<Offline> = cms
        .iter()
        .map(|cm| offline_destination(cm, destinations.as_ref(), &catalogs, &workers))
        .collect();
    let checks: Vec<DestinationCheck> = offline.iter().map(Offline::check).collect();
    let exe = std::env::current_exe().map_err(|e| err(&e))?;
    let unresolvable = match args.strict_references {
        true => Unresolvable::Deny,
        false => Unresolvable::Warn,
    };
    let mut verdicts = Pipeline::new(Renderer::new(exe))
        .unresolvable(unresolvable)
        .judge_each(cms, &inputs, &checks)
        .await;
    settle(&mut verdicts, &[]);
    Ok(verdicts)
}

/// Each Connect destination's config providers and how inputs reach it, by destination key.
type Workers = BTreeMap<String, (Option<WorkerConfig>, SecretsAs)>;

fn workers(args: &PipelineArgs, file: Option<&DestinationsFile>) -> Result<Workers, UsageError> {
    let mut workers = Workers::new();
    workers.insert(
        LOCAL.into(),
        (args.providers.load().map_err(UsageError)?, args.providers.secrets_as),
    );
    for spec in file.iter().flat_map(|f| f.named.iter()) {
        let worker = spec
            .worker_config
            .as_deref()
            .map(WorkerConfig::load)
            .transpose()
            .map_err(|e| UsageError(format!("destination {:?}: {e}", spec.name)))?;
        // Confluent Cloud has no providers: the pipeline sends values, and says so under references.
        let secrets_as = match spec.kind.is_cloud() {
            true => args.providers.secrets_as,
            false => spec.secrets_as,
        };
        workers.insert(spec.name.clone(), (worker, secrets_as));
    }
    Ok(workers)
}

/// A ConfigMap's destination as `check` and `render` see it without a cluster.
struct Offline<'a> {
    catalog: Option<&'a Catalog>,
    /// Why its plugins are not checked, when a list was expected but not given.
    unchecked: Option<String>,
    unusable: Option<String>,
    cloud: Option<String>,
    /// Its workers' config providers (`--worker-config` for the local worker, `workerConfig` of
    /// --destinations for another) and how inputs reach them.
    providers: Option<&'a WorkerConfig>,
    secrets_as: SecretsAs,
}

impl Offline<'_> {
    fn check(&self) -> DestinationCheck<'_> {
        DestinationCheck {
            plugins: match (self.catalog, &self.unchecked) {
                (Some(c), _) => PluginCheck::Catalog(c),
                (None, Some(why)) => PluginCheck::Unavailable(why),
                (None, None) => PluginCheck::Skip,
            },
            unusable: self.unusable.as_deref(),
            cloud: self.cloud.as_deref(),
            providers: self.providers,
            secrets_as: self.secrets_as,
        }
    }
}

/// Without `--destinations`, only the local worker is known, and `destination.cc` ConfigMaps are
/// checked against `--plugins destination.cc=FILE` when given (the ccloud-operator's ConfigMap
/// cannot be read offline). With it, a name it does not declare is rejected as the sidecar
/// rejects it.
fn offline_destination<'a>(
    cm: &ConnectorConfigMap,
    file: Option<&DestinationsFile>,
    catalogs: &'a BTreeMap<String, Catalog>,
    workers: &'a Workers,
) -> Offline<'a> {
    let names = || file.map_or(LOCAL.into(), |f| f.names().join(", "));
    let (key, cloud) = match &cm.destination {
        Target::Local => (LOCAL.to_string(), false),
        Target::Named(name) => match file.and_then(|f| f.named.iter().find(|s| &s.name == name)) {
            Some(spec) => (name.clone(), spec.kind.is_cloud()),
            None if name == LOCAL => (LOCAL.to_string(), false),
            None => {
                return Offline {
                    catalog: None,
                    unchecked: None,
                    unusable: Some(format!(
                        "destination {name:?} (label connect-gate.io/destination) is not declared in --destinations; destinations: {}",
                        names()
                    )),
                    cloud: None,
                    providers: None,
                    secrets_as: SecretsAs::Values,
                };
            }
        },
        Target::Cloud(_) if file.is_some_and(|f| f.cloud.is_none()) => {
            return Offline {
                catalog: None,
                unchecked: None,
                unusable: Some(format!(
                    "label {CLOUD_LABEL} needs the confluentCloud section (API key files) in --destinations; destinations: {}",
                    names()
                )),
                cloud: None,
                providers: None,
                secrets_as: SecretsAs::Values,
            };
        }
        Target::Cloud(_) => (CLOUD_LABEL.to_string(), true),
        other @ Target::Both { .. } => {
            return Offline {
                catalog: None,
                unchecked: None,
                unusable: Some(format!(
                    "{other}: labels connect-gate.io/destination and {CLOUD_LABEL} both pick a destination; keep one"
                )),
                cloud: None,
                providers: None,
                secrets_as: SecretsAs::Values,
            };
        }
    };
    let catalog = catalogs.get(&key);
    Offline {
        catalog,
        unchecked: (catalog.is_none() && key != LOCAL).then(|| {
            format!(
                "no plugin list for destination {} (label {}); give --plugins {key}=FILE",
                cm.destination,
                label_of(&cm.destination)
            )
        }),
        unusable: None,
        cloud: cloud.then(|| cm.destination.to_string()),
        providers: workers.get(&key).and_then(|(w, _)| w.as_ref()),
        // Confluent Cloud has none: the pipeline sends values and says so under references.
        secrets_as: workers.get(&key).map_or(workers[LOCAL].1, |(_, mode)| *mode),
    }
}

fn label_of(target: &Target) -> &'static str {
    match target {
        Target::Cloud(_) => CLOUD_LABEL,
        _ => manifest::DESTINATION_NAME_LABEL,
    }
}

fn exit_code(verdicts: &[Verdict]) -> ExitCode {
    if verdicts.iter().all(Verdict::accepted) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn check(args: PipelineArgs, output: Output) -> Result<ExitCode, UsageError> {
    if args.plugins.is_empty() && args.connect_url.is_none() {
        return Err(UsageError(
            "check needs the installed plugins: give --plugins FILE or --connect-url URL".into(),
        ));
    }
    let verdicts = judge(&args).await?;
    let mut out = std::io::stdout().lock();
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&serde_json::json!({
            "verdicts": verdicts,
            "summary": summary(&verdicts),
        }))
        .expect("verdicts serialise"),
        Output::Text => text_report(&verdicts, std::io::stdout().is_terminal()),
        Output::Github | Output::Sarif => {
            let cwd =
                std::env::current_dir().map_err(|e| UsageError(format!("cannot read the working directory: {e}")))?;
            let findings = annotations::findings(&verdicts, &cwd);
            match output {
                Output::Sarif => serde_json::to_string_pretty(&sarif::log(&findings, &cwd)).expect("SARIF serialises"),
                _ => annotations::github(&findings, &summary_line(&verdicts)),
            }
        }
    };
    let _ = writeln!(out, "{text}");
    Ok(exit_code(&verdicts))
}

fn summary(verdicts: &[Verdict]) -> serde_json::Value {
    let accepted = verdicts.iter().filter(|v| v.accepted()).count();
    serde_json::json!({ "connectors": verdicts.len(), "accepted": accepted, "rejected": verdicts.len() - accepted })
}

/// Every connector with its verdict, grouped by ConfigMap; colour only on a terminal.
fn text_report(verdicts: &[Verdict], colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let mut current = None;
    for v in verdicts {
        if current != Some(&v.origin) {
            out.push_str(&format!("{}\n", v.origin));
            current = Some(&v.origin);
        }
        let verdict = if v.accepted() {
            paint("32", "accepted")
        } else {
            paint("31;1", "REJECTED")
        };
        let name = v.shown_name.as_deref().unwrap_or("?");
        let desired = match v.desired {
            Desired::Present => "",
            Desired::Absent => " (disabled: to be deleted)",
        };
        out.push_str(&format!("  {verdict}  {} -> {name}{desired}\n", v.key));
        for p in &v.problems {
            out.push_str(&format!("      error: {p}\n"));
        }
        for w in &v.warnings {
            out.push_str(&format!("      {}: {w}\n", paint("33", "warning")));
        }
    }
    out.push_str(&summary_line(verdicts));
    out
}

fn summary_line(verdicts: &[Verdict]) -> String {
    let s = summary(verdicts);
    format!(
        "{} connectors: {} accepted, {} rejected",
        s["connectors"], s["accepted"], s["rejected"]
    )
}

async fn render(args: PipelineArgs, reveal: bool) -> Result<ExitCode, UsageError> {
    let verdicts = judge(&args).await?;
    let mut out = std::io::stdout().lock();
    for v in &verdicts {
        for message in v.messages() {
            eprintln!("rejected: {message}");
        }
        let Some(connector) = &v.connector else { continue };
        // Without --reveal, the placeholder render: a value that depends on a variable or env
        // shows as (a transform of) its placeholder.
        let shown = if reveal { Some(connector) } else { v.shown.as_ref() };
        let Some(shown) = shown else {
            eprintln!(
                "not shown: {}: with placeholders for the variable and env values the template renders no valid connector; --reveal prints the real one",
                v.location()
            );
            continue;
        };
        if shown.config.len() != connector.config.len() {
            eprintln!(
                "note: {}: with the real variable and env values the config has other keys than shown; --reveal prints it",
                v.location()
            );
        }
        let _ = writeln!(out, "{}", serde_json::to_string(shown).expect("connector serialises"));
    }
    Ok(exit_code(&verdicts))
}

fn certs(args: &CertsArgs) -> Result<ExitCode, UsageError> {
    let files = tls::generate_certs(&args.out, &args.dns, &args.ips).map_err(|e| UsageError(e.to_string()))?;
    let (ca_cert, cert, key) = (files.ca_cert.display(), files.cert.display(), files.key.display());
    println!("wrote {cert} and {key} (key mode 0600), signed by {ca_cert}");
    println!("serve with: --tls-cert {cert} --tls-key {key}");
    println!("webhook caBundle: base64 -w0 {ca_cert}");
    Ok(ExitCode::SUCCESS)
}
