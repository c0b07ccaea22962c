//! The reconciler: applies accepted connectors to Kafka Connect and reports on the ConfigMaps.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cli::parse_duration;
use crate::shared::Shared;

#[derive(Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// Period of the full pass that re-applies drifted connectors and re-reads secrets.
    #[arg(long, env = "CONNECT_GATE_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Also delete connectors that no ConfigMap declares and connect-gate never created.
    #[arg(long, env = "CONNECT_GATE_PRUNE_UNMANAGED")]
    pub prune_unmanaged: bool,
    /// Restart FAILED connectors and tasks, with capped exponential backoff.
    #[arg(long, env = "CONNECT_GATE_AUTO_RESTART")]
    pub auto_restart: bool,
}

pub async fn run(
    _shared: Arc<Shared>,
    _client: kube::Client,
    _namespace: String,
    _args: ReconcileArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
