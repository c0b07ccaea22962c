//! Leader election on a `coordination.k8s.io/v1` Lease, with get/create/update only (the
//! RBAC the sidecar has). Every replica runs [`spawn`]; only the holder reconciles.
//!
//! The holder renews every `duration / 5`. A candidate takes the Lease over only when the
//! holder's record has not changed for a whole `duration` by the candidate's own clock (as
//! client-go does, so clock skew between nodes does not matter), and every write goes through
//! the apiserver's optimistic concurrency (resourceVersion), so two replicas can never both
//! win. A holder that cannot renew for two thirds of the duration steps down on its own, before
//! anyone else may take over. On shutdown the holder releases the Lease so a successor starts at
//! once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// This replica's identity: `POD_NAME`, else `HOSTNAME`, else a random one.
pub fn default_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| format!("connect-gate-{}", random_suffix()))
}

/// Starts the election loop; the receiver says whether this replica holds the Lease now.
pub fn spawn(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let mut elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renew: None,
        };
        let period = (elector.config.duration / 5).max(Duration::from_millis(200));
        loop {
            let leading = match elector.try_acquire_or_renew().await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read or renew the Lease");
                    // Keep leading only while the last renewal is recent enough.
                    elector
                        .last_renew
                        .is_some_and(|t| t.elapsed() < elector.config.duration * 2 / 3)
                }
            };
            if *tx.borrow() != leading {
                tracing::info!(identity = %elector.config.identity, lease = %elector.config.name, leading, "leadership changed");
            }
            tx.send_replace(leading);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        let was_leading = *tx.borrow();
        tx.send_replace(false);
        if was_leading {
            match elector.release().await {
                Ok(()) => tracing::info!("released the Lease"),
                Err(e) => tracing::warn!(error = %e, "cannot release the Lease; it expires on its own"),
            }
        }
    });
    (rx, handle)
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's record as last seen, and when (by our clock) it last changed.
    observed: Option<(Record, Instant)>,
    last_renew: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew: Option<Timestamp>,
    duration_s: Option<i32>,
}

impl Elector {
    fn err(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    fn duration_s(&self) -> i32 {
        self.config.duration.as_secs_f64().ceil().max(1.0) as i32
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(|e| self.err(e))? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.duration_s()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.last_renew = Some(Instant::now());
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        if !mine {
            let record = Record {
                holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
                renew: spec.renew_time.as_ref().map(|t| t.0),
                duration_s: spec.lease_duration_seconds,
            };
            let changed = self.observed.as_ref().is_none_or(|(r, _)| *r != record);
            if changed {
                self.observed = Some((record.clone(), Instant::now()));
            }
            let their_duration =
                Duration::from_secs(record.duration_s.unwrap_or(0).max(0) as u64).max(self.config.duration);
            let since = self.observed.as_ref().map(|(_, t)| t.elapsed()).unwrap_or_default();
            let free = record.holder.is_none() || since > their_duration;
            if !free {
                self.last_renew = None;
                return Ok(false);
            }
        }
        let mut new_spec = spec.clone();
        if !mine {
            new_spec.holder_identity = Some(self.config.identity.clone());
            new_spec.acquire_time = Some(now.clone());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.lease_duration_seconds = Some(self.duration_s());
        new_spec.renew_time = Some(now);
        lease.spec = Some(new_spec);
        // replace() sends metadata.resourceVersion: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.last_renew = Some(Instant::now());
                self.observed = None;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.last_renew = None;
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    async fn release(&mut self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(|e| self.err(e))? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// A per-process random number for an identity of last resort (std's hasher keys are random).
fn random_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}
