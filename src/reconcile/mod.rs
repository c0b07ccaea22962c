//! The reconciler: applies accepted connectors to Kafka Connect and reports on the ConfigMaps.
//!
//! Two watches ([`watch`]) keep the namespace's ConfigMaps that matter in stores. Any change to them
//! (debounced) or the `--resync` tick triggers one full, level-based pass ([`pass`]): re-read
//! the template inputs, judge every ConfigMap together through the shared [`Judge`], read the
//! worker's state in one bulk call ([`worker`]), plan ([`plan`], pure), record what is about to
//! be created, first in the [`ledger`] (the only connectors ever deleted) and then on each
//! ConfigMap (so no delete is ever missed), act, then report ([`status`], pure; written by
//! [`writer`]). Only the holder of the Lease ([`lease`]) runs passes.

pub mod day2;
pub mod fanout;
pub mod input;
pub mod lease;
pub mod ledger;
pub mod live;
mod pass;
pub mod plan;
mod rotation;
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
use crate::connect::ConnectError;
use crate::judge::{Judge, NamespaceView};
use crate::metrics::{ConnectorSeries, Metrics, ResultLabels};
use lease::LeaseConfig;
use plan::AppliedHash;
use status::Rejected;
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
    /// A write was refused because this replica's leadership deadline has passed.
    #[error(transparent)]
    Deposed(#[from] lease::Deposed),
    #[error("{failed} action(s) failed; retrying")]
    Incomplete { failed: usize },
    /// Destinations that could not be read or stopped answering: their ConfigMaps wait.
    #[error("destination(s) {destinations} unreachable, {failed} action(s) failed; retrying")]
    Unreachable { destinations: String, failed: usize },
    #[error("cannot update ConfigMap {name}: {source}")]
    ConfigMap { name: String, source: kube::Error },
    #[error("the ledger (Lease {name}): {source}")]
    LedgerApi { name: String, source: kube::Error },
    /// Nothing is done until it is fixed: acting on a guess could delete what is not ours.
    #[error("the ledger (Lease {name}) is unreadable, so nothing is applied or deleted: {source}")]
    LedgerUnreadable { name: String, source: ledger::LedgerError },
}

/// What the reconciler works with, built by `serve`.
pub struct Context {
    pub judge: Arc<Judge>,
    pub metrics: Metrics,
    pub client: kube::Client,
    /// The reconciled namespace's connector ConfigMaps, filled by [`watch::run`].
    pub view: NamespaceView,
    /// What [`watch::run`] keeps: the connector ConfigMaps and the others connect-gate reads.
    pub stores: watch::Stores,
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
    let (mut leadership, lease_task) = lease::spawn(ctx.client.clone(), lease_config, lease_stop.clone());
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
            leadership: leadership.clone(),
        },
        judge: ctx.judge,
        metrics: ctx.metrics,
        view: ctx.view,
        stores: ctx.stores,
        applied_hash: ctx.applied_hash,
        args,
        memory: Memory::default(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            gained = leadership.gained() => if gained.is_err() { break },
        }
        reconciler.metrics.leader.set(1);
        tracing::info!("leading: reconciling");
        // Dropping the pass in flight at the deadline cancels its requests; the writes' own
        // checks cover the moment between the deadline and this select noticing it.
        tokio::select! {
            _ = reconciler.lead(&changes) => {}
            _ = leadership.lost() => tracing::warn!("leadership lost or not renewed in time: stopped reconciling"),
            _ = shutdown.cancelled() => {}
        }
        reconciler.metrics.leader.set(0);
        // Only the leader reads the workers: a follower's per-connector series would go stale.
        let series = std::mem::take(&mut reconciler.memory.reported_series);
        reconciler
            .metrics
            .report_connectors(&series, &ConnectorSeries::default());
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
    /// Configs the worker answered 400 to, by connector.
    worker_rejected: BTreeMap<String, Rejection>,
    restarts: BTreeMap<String, Restarts>,
    /// Failed offsets operations, retried with the same backoff as restarts.
    offsets_retry: BTreeMap<String, Restarts>,
    reported_states: BTreeSet<String>,
    /// The operations records this leader left on each ConfigMap, by ConfigMap: newer than the
    /// watch's copy until it catches up.
    operations: BTreeMap<String, BTreeMap<String, day2::Record>>,
    /// The per-connector series last exported.
    reported_series: ConnectorSeries,
    /// The files each connector's references read, as it was last started with them.
    rotation: rotation::Rotation,
    unsettled: u32,
}

impl Memory {
    /// The rejected configs not to send again yet: name -> fingerprint (see [`plan::PlanMemory`]).
    fn rejections_waiting(&self, now: Instant) -> BTreeMap<String, String> {
        self.worker_rejected
            .iter()
            .filter(|(_, r)| r.next > now)
            .map(|(name, r)| (name.clone(), r.report.fingerprint.clone()))
            .collect()
    }
}

/// A config the worker rejected (400/422), and when to send it again unchanged. A validator may
/// depend on more than the config (a JDBC or Debezium connector's database must be up), so the
/// same config is retried, on a long capped backoff; a changed config is sent at once.
struct Rejection {
    report: Rejected,
    next: Instant,
    backoff: ExponentialBackoff,
}

impl Rejection {
    /// After an attempt at the config `fingerprint` was rejected at `now`: the same config
    /// rejected again waits longer, another one starts from the shortest wait.
    fn after(
        previous: Option<Rejection>,
        fingerprint: String,
        message: String,
        policy: ExponentialBuilder,
        now: Instant,
    ) -> Rejection {
        let (attempts, mut backoff) = match previous {
            Some(p) if p.report.fingerprint == fingerprint => (p.report.attempts, p.backoff),
            _ => (0, policy.build()),
        };
        let retry_in = backoff.next().unwrap_or_default();
        Rejection {
            report: Rejected {
                fingerprint,
                message,
                attempts: attempts + 1,
                retry_in,
            },
            next: now + retry_in,
            backoff,
        }
    }
}

/// A streak of attempts spaced by a growing delay: `--auto-restart`'s restarts, failed offsets
/// operations.
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
    writer: Writer,
    metrics: Metrics,
    view: NamespaceView,
    stores: watch::Stores,
    applied_hash: AppliedHash,
    args: ReconcileArgs,
    memory: Memory,
}

impl Reconciler {
    /// Runs passes while leading: on changes (debounced), on the resync tick, and sooner
    /// after failures (capped exponential backoff with jitter).
    async fn lead(&mut self, changes: &Notify) {
        self.stores.wait_until_ready().await;
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
            crate::allocator::give_back();
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

    /// `--rejected-retry` doubling up to `--rejected-retry-max`, without jitter so that the wait
    /// reported is the wait.
    fn rejection_policy(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.args.rejected_retry)
            .with_max_delay(self.args.rejected_retry_max.max(self.args.rejected_retry))
            .without_max_times()
    }

    fn count(&self, result: &'static str) {
        self.metrics.reconciles.get_or_create(&ResultLabels { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_secs(60))
            .with_max_delay(Duration::from_secs(600))
            .without_max_times()
    }

    fn reject(memory: &mut Memory, fingerprint: &str, now: Instant) -> Duration {
        let previous = memory.worker_rejected.remove("a");
        let r = Rejection::after(previous, fingerprint.into(), "no".into(), policy(), now);
        let wait = r.report.retry_in;
        memory.worker_rejected.insert("a".into(), r);
        wait
    }

    #[test]
    fn a_rejected_config_is_sent_again_after_a_wait_that_doubles_up_to_the_cap() {
        let mut memory = Memory::default();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = reject(&mut memory, "h1", now);
            assert_eq!(
                memory.rejections_waiting(now),
                [("a".to_string(), "h1".to_string())].into()
            );
            assert!(
                memory
                    .rejections_waiting(now + wait - Duration::from_millis(1))
                    .contains_key("a")
            );
            // Due: the same config is planned again.
            now += wait;
            assert!(memory.rejections_waiting(now).is_empty());
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, [60, 120, 240, 480, 600, 600]);
        assert_eq!(memory.worker_rejected["a"].report.attempts, 6);
    }

    #[test]
    fn a_changed_config_rejected_again_starts_a_new_streak() {
        let mut memory = Memory::default();
        let now = Instant::now();
        reject(&mut memory, "h1", now);
        reject(&mut memory, "h1", now);
        assert_eq!(reject(&mut memory, "h2", now), Duration::from_secs(60));
        assert_eq!(memory.worker_rejected["a"].report.attempts, 1);
    }
}
