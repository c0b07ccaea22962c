//! `connect-gate serve`: the sidecar. Wires the webhook, the reconciler and the metrics
//! listener around one shared pipeline, plugin cache and set of template inputs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cli::{TemplateArgs, parse_duration};
use crate::connect::ConnectClient;
use crate::inputs::LiveInputs;
use crate::metrics::{self, Metrics};
use crate::plugin_cache::PluginCache;
use crate::reconcile::{self, ReconcileArgs};
use crate::shared::Shared;
use crate::template::Renderer;
use crate::tls;
use crate::verdict::Pipeline;
use crate::webhook::{self, OnPluginsUnavailable, Webhook};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The Kafka Connect worker's REST API (the worker beside the sidecar).
    #[arg(long, env = "CONNECT_GATE_CONNECT_URL", default_value = "http://localhost:8083")]
    pub connect_url: String,
    #[command(flatten)]
    pub template: TemplateArgs,
    /// How often mounted variables and the env file are re-read (Secret volumes rotate).
    #[arg(long, env = "CONNECT_GATE_INPUTS_REFRESH", default_value = "10s", value_parser = parse_duration)]
    pub inputs_refresh: Duration,
    /// PEM certificate served by the webhook; reloaded when it changes on disk.
    #[arg(long, env = "CONNECT_GATE_TLS_CERT", required_unless_present = "no_webhook")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CONNECT_GATE_TLS_KEY", required_unless_present = "no_webhook")]
    pub tls_key: Option<PathBuf>,
    /// The webhook's HTTPS address.
    #[arg(long, env = "CONNECT_GATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for Prometheus metrics (`/metrics`).
    #[arg(long, env = "CONNECT_GATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Namespace whose connector ConfigMaps are reconciled (default: the pod's own).
    #[arg(long, env = "CONNECT_GATE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Do not serve the admission webhook.
    #[arg(long, env = "CONNECT_GATE_NO_WEBHOOK")]
    pub no_webhook: bool,
    /// Do not reconcile connectors.
    #[arg(long, env = "CONNECT_GATE_NO_RECONCILE")]
    pub no_reconcile: bool,
    /// When the plugin list cannot be fetched and none is cached: admit with a warning, or deny.
    #[arg(long, env = "CONNECT_GATE_ON_PLUGINS_UNAVAILABLE", value_enum, default_value_t = OnPluginsUnavailable::Warn)]
    pub on_plugins_unavailable: OnPluginsUnavailable,
    /// How often the worker's plugin list is refreshed in the background.
    #[arg(long, env = "CONNECT_GATE_PLUGINS_REFRESH", default_value = "1m", value_parser = parse_duration)]
    pub plugins_refresh: Duration,
    /// Also ask the worker's config validator at admission, denying on its errors.
    #[arg(long, env = "CONNECT_GATE_VALIDATE_WITH_WORKER")]
    pub validate_with_worker: bool,
    /// Time budget for --validate-with-worker; safely under the webhook's 5s timeout.
    #[arg(long, env = "CONNECT_GATE_WORKER_VALIDATION_BUDGET", default_value = "3s", value_parser = parse_duration)]
    pub worker_validation_budget: Duration,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (metrics, registry) = Metrics::new();
    let inputs = Arc::new(LiveInputs::load(args.template.sources()).context("loading template inputs")?);
    let connect = ConnectClient::new(&args.connect_url);
    let plugins = Arc::new(PluginCache::new(connect.clone(), metrics.clone()));
    let exe = std::env::current_exe().context("locating the connect-gate binary for the template sandbox")?;
    let shared = Arc::new(Shared {
        pipeline: Pipeline::new(Renderer::new(exe)),
        inputs,
        plugins,
        connect,
        metrics,
        configmaps: Default::default(),
    });
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    shared.plugins.refresh().await;
    shared.plugins.spawn_refresher(args.plugins_refresh);
    spawn_inputs_refresher(shared.inputs.clone(), args.inputs_refresh);

    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding --metrics-listen {}", args.metrics_listen))?;
    // Missing certificate files are waited for (cert-manager issues them after the pod starts);
    // files that exist but are unusable stop the start.
    let resolver = match (args.no_webhook, &args.tls_cert, &args.tls_key) {
        (false, Some(cert), Some(key)) => Some(
            tls::CertResolver::load_or_wait(cert.clone(), key.clone())
                .context("loading the webhook's serving certificate")?,
        ),
        _ => None,
    };
    let webhook = resolver.as_ref().map(|resolver| {
        Arc::new(Webhook {
            shared: shared.clone(),
            on_plugins_unavailable: args.on_plugins_unavailable,
            worker_validation: args.validate_with_worker.then_some(args.worker_validation_budget),
            cert_loaded: Box::new({
                let resolver = resolver.clone();
                move || resolver.loaded()
            }),
        })
    });
    let registry = Arc::new(registry);
    let scrape = {
        let (resolver, metrics) = (resolver.clone(), shared.metrics.clone());
        let one_at_a_time = std::sync::Mutex::new(());
        move || {
            // The resolver counts; bring the counters up to date at scrape time, one scrape at a
            // time so that two concurrent scrapes cannot both add the same difference.
            if let Some(r) = &resolver {
                let _guard = one_at_a_time.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (counter, total) in [
                    (&metrics.cert_reloads, r.reloads()),
                    (&metrics.cert_reload_failures, r.reload_failures()),
                ] {
                    counter.inc_by(total.saturating_sub(counter.get()));
                }
            }
            metrics::encode(&registry)
        }
    };
    let scrape = Arc::new(scrape);
    let mut metrics_router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let scrape = scrape.clone();
            async move { scrape() }
        }),
    );
    if let Some(webhook) = &webhook {
        // Until its certificate exists the webhook port fails every TLS handshake, so readiness is
        // answered here in plain HTTP too, by the webhook's own /readyz.
        metrics_router = metrics_router.route_service("/readyz", webhook::router(webhook.clone()).into_service());
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(metrics_listener, metrics_router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .context("metrics listener")
    });

    if let (Some(resolver), Some(webhook)) = (resolver, webhook) {
        resolver.spawn_reloader(Duration::from_secs(2));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        tracing::info!(listen = %args.listen, "admission webhook serving");
        let config = tls::server_config(resolver);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tls::serve(listener, config, webhook::router(webhook), stop.cancelled_owned())
                .await
                .context("webhook listener")
        });
    }

    if !args.no_reconcile {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let namespace = match &args.namespace {
            Some(ns) => ns.clone(),
            None => own_namespace().unwrap_or_else(|| client.default_namespace().to_string()),
        };
        let (shared, opts, stop) = (shared.clone(), args.reconcile, shutdown.clone());
        tasks.spawn(async move { reconcile::run(shared, client, namespace, opts, stop).await });
    }

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        Some(result) = tasks.join_next() => {
            shutdown.cancel();
            return result.context("a task panicked")?.context("a task stopped");
        }
    }
    shutdown.cancel();
    while let Some(result) = tasks.join_next().await {
        result.context("a task panicked")??;
    }
    Ok(())
}

/// The namespace of the pod this runs in, from its service account mount.
fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn spawn_inputs_refresher(inputs: Arc<LiveInputs>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match inputs.reload() {
                Ok(true) => tracing::info!("template inputs changed on disk"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot re-read template inputs; keeping the last good ones"),
            }
        }
    });
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
