//! The command line: `check` and `render` run the verdict pipeline offline, `certs` writes a
//! development certificate, `serve` hands over to [`crate::serve`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::config::{CertsArgs, Cli, Command, Output, PipelineArgs};
use crate::connect::ConnectClient;
use crate::pipeline::manifest;
use crate::pipeline::plugins::Catalog;
use crate::pipeline::template::Renderer;
use crate::pipeline::verdict::{Desired, Pipeline, PluginCheck, Verdict};
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
    let err = |e: &dyn std::fmt::Display| UsageError(e.to_string());
    let inputs = args.template.sources().load().map_err(|e| err(&e))?;
    let cms = manifest::load_paths(&args.paths).map_err(|e| err(&e))?;
    let catalog = match (&args.plugins, &args.connect_url) {
        (Some(file), _) => {
            let body = std::fs::read(file).map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
            Some(Catalog::from_json(&body).map_err(|e| UsageError(format!("{}: {e}", file.display())))?)
        }
        (None, Some(url)) => Some(ConnectClient::new(url).plugins().await.map_err(|e| err(&e))?),
        (None, None) => None,
    };
    let plugins = catalog.as_ref().map_or(PluginCheck::Skip, PluginCheck::Catalog);
    let exe = std::env::current_exe().map_err(|e| err(&e))?;
    Ok(Pipeline::new(Renderer::new(exe)).judge(&cms, &inputs, plugins).await)
}

fn exit_code(verdicts: &[Verdict]) -> ExitCode {
    if verdicts.iter().all(Verdict::accepted) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn check(args: PipelineArgs, output: Output) -> Result<ExitCode, UsageError> {
    if args.plugins.is_none() && args.connect_url.is_none() {
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
    let s = summary(verdicts);
    out.push_str(&format!(
        "{} connectors: {} accepted, {} rejected",
        s["connectors"], s["accepted"], s["rejected"]
    ));
    out
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
