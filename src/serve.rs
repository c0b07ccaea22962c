//! `connect-gate serve`: the sidecar, wiring only. One [`Judge`] (pipeline, plugin cache,
//! template inputs) and one watch of the reconciled namespace's ConfigMaps serve both the
//! webhook and the reconciler, so they judge alike; plus the metrics listener.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::connect::ConnectClient;
use crate::connect::destinations::DestinationsFile;
use crate::connect::registry::Destinations;
use crate::judge::{Judge, NamespaceView};
use crate::metrics::{self, Metrics};
use crate::pipeline::judgement::Pipeline;
use crate::pipeline::render::inputs::LiveInputs;
use crate::pipeline::render::sandbox::{self, Renderer};
use crate::reconcile;
use crate::reconcile::plan::AppliedHash;
use crate::webhook::tls;
use crate::webhook::{self, Webhook};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (metrics, registry) = Metrics::new();
    let inputs = Arc::new(LiveInputs::load(args.template.sources()).context("loading template inputs")?);
    let connect = ConnectClient::new(&args.connect_url);
    let destinations = match &args.destinations {
        Some(path) => {
            let file = DestinationsFile::load(path)?;
            tracing::info!(destinations = ?file.names(), "destinations");
            Destinations::load(connect, &file, metrics.clone())?
        }
        None => Destinations::local(connect, metrics.clone()),
    };
    let worker = args.providers.load().map_err(anyhow::Error::msg)?;
    if let Some(worker) = &worker {
        tracing::info!(file = %worker.file.display(), providers = %worker.aliases(), secrets_as = ?args.providers.secrets_as, "the worker's config providers");
    }
    let destinations = Arc::new(destinations.with_local_providers(worker, args.providers.secrets_as));
    let exe = std::env::current_exe().context("locating the connect-gate binary for the template sandbox")?;
    let limits = sandbox::Limits::fit_with(
        sandbox::container_memory(),
        sandbox::cores(),
        args.sandboxes,
        args.sandbox_memory_mib.map(|mib| mib << 20),
    )
    .context("sizing the template sandboxes")?;
    tracing::info!(
        sandboxes = limits.children,
        memory_mib = limits.memory >> 20,
        "template sandboxes started"
    );
    let renderer = Renderer::with_limits(exe, limits);
    let judge = Arc::new(Judge::new(Pipeline::new(renderer), inputs, destinations.clone()));
    // SIGTERM cancels `stopping` (the reconciler stops and lets its Lease go; the webhook says it
    // is not ready), then, --shutdown-delay later, `shutdown` (the listeners close).
    let stopping = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    for destination in destinations.declared() {
        destination.plugins.refresh().await;
        destination.plugins.spawn_refresher(args.plugins_refresh);
    }
    spawn_inputs_refresher(judge.clone(), args.inputs_refresh);

    // The reconciled namespace: the only one the webhook judges, even without the reconciler,
    // and watched once for both halves.
    let namespace = reconciled_namespace(args.namespace.clone()).await?;
    let reconciled = if args.no_reconcile {
        None
    } else {
        let applied_hash = applied_hash(args.reconcile.hash_key_file.as_deref())?;
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let (stores, writers) = reconcile::watch::stores();
        let seen = Arc::new(Notify::new());
        let watch = reconcile::watch::run(client.clone(), namespace.clone(), writers, seen.clone());
        let stop = stopping.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = watch => anyhow::bail!("the ConfigMap watch ended"),
                _ = stop.cancelled() => Ok(()),
            }
        });
        destinations.watch_configmaps(stores.others.clone());
        let view = NamespaceView {
            namespace: namespace.clone(),
            connectors: stores.connectors.clone(),
            names: Arc::default(),
        };
        let changes = Arc::new(Notify::new());
        spawn_name_indexer(judge.clone(), view.clone(), seen, changes.clone());
        Some((client, view, stores, changes, applied_hash))
    };

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
    let controller = match (&resolver, &args.controller_username, &reconciled) {
        (None, _, _) => None,
        (Some(_), Some(user), _) => Some(user.clone()),
        (Some(_), None, Some((client, ..))) => Some(
            own_username(client)
                .await
                .context("asking the API server for the sidecar's own username (SelfSubjectReview)")?,
        ),
        (Some(_), None, None) => {
            tracing::warn!(
                "no --controller-username and no reconciler in this process: the webhook refuses every change to connect-gate's annotations and finalizer"
            );
            None
        }
    };
    if let Some(user) = &controller {
        tracing::info!(%user, "only this user may change connect-gate's annotations and finalizer");
    }
    let webhook = resolver.as_ref().map(|resolver| {
        Arc::new(Webhook {
            judge: judge.clone(),
            metrics: metrics.clone(),
            namespace: namespace.clone(),
            neighbours: reconciled.as_ref().map(|(_, view, ..)| view.clone()),
            controller: controller.clone(),
            on_plugins_unavailable: args.on_plugins_unavailable,
            worker_validation: args.validate_with_worker.then_some(args.worker_validation_budget),
            cert_loaded: Box::new({
                let resolver = resolver.clone();
                move || resolver.loaded()
            }),
            stopping: stopping.clone(),
        })
    });
    let registry = Arc::new(registry);
    let scrape = {
        let (resolver, metrics) = (resolver.clone(), metrics.clone());
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
    let mut metrics_router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let scrape = scrape.clone();
                async move { scrape() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
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

    let webhook_serving = webhook.is_some();
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

    if let Some((client, view, stores, changes, applied_hash)) = reconciled {
        let ctx = reconcile::Context {
            judge,
            metrics,
            client,
            view,
            stores,
            changes,
            applied_hash,
        };
        let (opts, stop) = (args.reconcile, stopping.clone());
        tasks.spawn(async move { reconcile::run(ctx, opts, stop).await });
    }

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        Some(result) = tasks.join_next() => {
            stopping.cancel();
            shutdown.cancel();
            return result.context("a task panicked")?.context("a task stopped");
        }
    }
    stopping.cancel();
    if webhook_serving {
        tracing::info!(delay = ?args.shutdown_delay, "webhook answers until the delay is over (not ready meanwhile)");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    shutdown.cancel();
    while let Some(result) = tasks.join_next().await {
        result.context("a task panicked")??;
    }
    Ok(())
}

/// `--namespace`, else the pod's own, else the kubeconfig context's.
async fn reconciled_namespace(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(namespace) = flag.or_else(own_namespace) {
        return Ok(namespace);
    }
    let config = kube::Config::infer()
        .await
        .context("finding the namespace to reconcile (no --namespace and not in a pod)")?;
    Ok(config.default_namespace)
}

/// How `connect-gate.io/applied` is hashed: keyed by `--hash-key-file` when given.
pub(crate) fn applied_hash(key_file: Option<&Path>) -> anyhow::Result<AppliedHash> {
    let Some(path) = key_file else {
        tracing::info!("no --hash-key-file: connect-gate.io/applied leaves out values containing template inputs");
        return Ok(AppliedHash::NonSecret);
    };
    let key = std::fs::read(path).with_context(|| format!("reading --hash-key-file {}", path.display()))?;
    AppliedHash::keyed(&key).with_context(|| format!("--hash-key-file {}", path.display()))
}

/// This process's username as the API server sees it: the reconciler's, since both use this
/// client. Every authenticated user may ask (the built-in ClusterRole system:basic-user).
async fn own_username(client: &kube::Client) -> anyhow::Result<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .context("the SelfSubjectReview named no username")
}

/// The namespace of the pod this runs in, from its service account mount.
fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn spawn_inputs_refresher(judge: Arc<Judge>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            judge.reload_inputs();
        }
    });
}

/// Keeps the namespace's name index up to date: after each change the watch reports (then
/// passed on to the reconciler, whose pass finds the verdicts this left in the cache), and
/// after the template inputs change.
fn spawn_name_indexer(judge: Arc<Judge>, view: NamespaceView, seen: Arc<Notify>, changes: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            let from_watch = tokio::select! {
                _ = seen.notified() => true,
                _ = judge.inputs_changed().notified() => false,
            };
            judge.refresh_names(&view).await;
            if from_watch {
                changes.notify_one();
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
