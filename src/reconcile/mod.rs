//! The reconciler: applies accepted connectors to Kafka Connect and reports on the ConfigMaps.
//!
//! One watch ([`watch`]) keeps the namespace's ConfigMaps in a store. Any change to them
//! (debounced) or the `--resync` tick triggers one full, level-based pass ([`pass`]): re-read
//! the template inputs, judge every ConfigMap together through the shared [`Judge`], read the
//! worker's state in one bulk call ([`worker`]), plan ([`plan`], pure), record what is about to
//! be created, first in the [`ledger`] (the only connectors ever deleted) and then on each
//! ConfigMap (so no delete is ever missed), act, then report ([`status`], pure; written by
//! [`writer`]). Only the holder of the Lease ([`lease`]) runs passes.

pub mod lease;
pub mod ledger;
mod pass;
pub mod plan;
pub mod status;
pub mod watch;
pub mod worker;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use kube::api::Api;
use kube::runtime::events::Reporter;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ReconcileArgs;
use crate::connect::{ConnectClient, ConnectError};
use crate::judge::{Judge, NamespaceView};
use crate::metrics::{Metrics, ResultLabels};
use lease::LeaseConfig;
use plan::AppliedHash;
use worker::Worker;
use writer::Writer;

const DEBOUNCE: Duration = Duration::from_millis(700);
/// After a pass that changed something, look again soon to report the new status.
const SETTLE: Duration = Duration::from_secs(2);
const MAX_SETTLE_PASSES: u32 = 15;
/// A failed pass is retried sooner than the resync, 1 s doubling up to 30 s.
const PASS_RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(30))
    .without_max_times()
    .with_jitter();
/// `--auto-restart`: a connector that keeps failing is restarted 5 s, 10 s, ... up to 5 min apart.
const RESTART_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(5))
    .with_max_delay(Duration::from_secs(300))
    .without_max_times()
    .with_jitter();

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Worker(#[from] ConnectError),
    #[error("Kafka Connect answered {status} to {what}: {message}")]
    WorkerStatus { what: String, status: u16, message: String },
    #[error("unexpected answer from Kafka Connect to {what}: {source}")]
    Decode { what: String, source: serde_json::Error },
    #[error("{failed} action(s) failed; retrying")]
    Incomplete { failed: usize },
    #[error("the ledger (Lease {name}): {source}")]
    LedgerApi { name: String, source: kube::Error },
    /// Nothing is done until it is fixed: acting on a guess could delete what is not ours.
    #[error("the ledger (Lease {name}) is unreadable, so nothing is applied or deleted: {source}")]
    LedgerUnreadable { name: String, source: ledger::LedgerError },
}

/// What the reconciler works with, built by `serve`.
pub struct Context {
    pub judge: Arc<Judge>,
    pub connect: ConnectClient,
    pub metrics: Metrics,
    pub client: kube::Client,
    /// The reconciled namespace's ConfigMaps, filled by [`watch::run`].
    pub view: NamespaceView,
    /// Signalled by [`watch::run`] when a ConfigMap changed in a way that matters.
    pub changes: Arc<Notify>,
    pub applied_hash: AppliedHash,
}

/// Runs passes while this replica holds the Lease, until `shutdown`.
pub async fn run(ctx: Context, args: ReconcileArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let namespace = ctx.view.namespace.clone();
    let identity = lease::default_identity();
    let lease_config = LeaseConfig {
        namespace: namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: args.lease_duration,
    };
    let lease_stop = CancellationToken::new();
    let (mut leading, lease_task) = lease::spawn(ctx.client.clone(), lease_config, lease_stop.clone());
    tracing::info!(%namespace, %identity, lease = %args.lease_name, "reconciler started; waiting for the Lease");
    let changes = ctx.changes.clone();
    let mut reconciler = Reconciler {
        writer: Writer {
            api: Api::namespaced(ctx.client.clone(), &namespace),
            ledger: Api::namespaced(ctx.client.clone(), &namespace),
            ledger_name: args.ledger_name.clone(),
            client: ctx.client,
            reporter: Reporter {
                controller: "connect-gate".into(),
                instance: Some(identity),
            },
        },
        worker: Worker::new(ctx.connect, ctx.metrics.clone()),
        judge: ctx.judge,
        metrics: ctx.metrics,
        view: ctx.view,
        applied_hash: ctx.applied_hash,
        args,
        memory: Memory::default(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        reconciler.metrics.leader.set(1);
        tracing::info!("leading: reconciling");
        tokio::select! {
            _ = reconciler.lead(&changes) => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("lost the Lease: stopped reconciling"),
            _ = shutdown.cancelled() => {}
        }
        reconciler.metrics.leader.set(0);
        reconciler.memory = Memory::default();
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Stop acting first, then let a successor take over at once.
    lease_stop.cancel();
    let _ = lease_task.await;
    Ok(())
}

/// What the leader remembers between passes (forgotten when it loses the Lease).
#[derive(Default)]
struct Memory {
    /// Configs the worker answered 400 to: name -> (fingerprint, message).
    worker_rejected: BTreeMap<String, (String, String)>,
    restarts: BTreeMap<String, Restarts>,
    reported_states: BTreeSet<String>,
    unsettled: u32,
}

struct Restarts {
    total: u32,
    /// Delays of the current streak of failures; a healthy connector starts a new one.
    backoff: ExponentialBackoff,
    next: Instant,
}

impl Restarts {
    fn new() -> Self {
        Self {
            total: 0,
            backoff: RESTART_BACKOFF.build(),
            next: Instant::now(),
        }
    }

    /// Runs again: the next failure starts a new streak from the shortest delay.
    fn healthy(&mut self) {
        self.backoff = RESTART_BACKOFF.build();
    }
}

struct Reconciler {
    judge: Arc<Judge>,
    worker: Worker,
    writer: Writer,
    metrics: Metrics,
    view: NamespaceView,
    applied_hash: AppliedHash,
    args: ReconcileArgs,
    memory: Memory,
}

impl Reconciler {
    /// Runs passes while leading: on changes (debounced), on the resync tick, and sooner
    /// after failures (capped exponential backoff with jitter).
    async fn lead(&mut self, changes: &Notify) {
        let _ = self.view.store.wait_until_ready().await;
        let mut next = Instant::now();
        let mut retry = PASS_RETRY.build();
        loop {
            tokio::select! {
                _ = changes.notified() => tokio::time::sleep(DEBOUNCE).await,
                _ = tokio::time::sleep_until(next) => {}
            }
            let span = tracing::info_span!("reconcile", namespace = %self.view.namespace);
            let started = Instant::now();
            let result = tracing::Instrument::instrument(self.pass(), span).await;
            self.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
            let delay = match result {
                Ok(outcome) => {
                    retry = PASS_RETRY.build();
                    self.count("ok");
                    if outcome.settled || self.memory.unsettled >= MAX_SETTLE_PASSES {
                        self.memory.unsettled = 0;
                        self.args.resync
                    } else {
                        self.memory.unsettled += 1;
                        SETTLE.min(self.args.resync)
                    }
                }
                Err(e) => {
                    self.count("error");
                    let delay = retry
                        .next()
                        .unwrap_or(self.args.resync)
                        .min(self.args.resync.max(Duration::from_secs(1)));
                    tracing::warn!(error = %e, retry_in = ?delay, "reconcile pass incomplete");
                    delay
                }
            };
            next = Instant::now() + delay;
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics.reconciles.get_or_create(&ResultLabels { result }).inc();
    }
}
