//! Leader election on a `coordination.k8s.io/v1` Lease, with get/create/update only (the
//! RBAC the sidecar has). Every replica runs [`spawn`]; only the holder reconciles.
//!
//! The holder renews every `duration / 5`. A candidate takes the Lease over only when the
//! holder's record has not changed for a whole `duration` by the candidate's own clock (as
//! client-go does, so clock skew between nodes does not matter), and every write goes through
//! the apiserver's optimistic concurrency (resourceVersion), so two replicas can never both
//! win. On shutdown the holder releases the Lease so a successor starts at once.
//!
//! Leadership is a deadline, not a flag: [`Leadership`] is valid until two thirds of the
//! duration after the start of the last successful renewal, by a local timer, whatever the API
//! server does. Every Lease call has a timeout, so an API server that stops answering cannot
//! keep a replica leading; and every write to Connect or to Kubernetes checks the deadline just
//! before it is sent. A successor can take over a whole duration after that renewal at the
//! earliest, so a deposed replica has stopped writing a third of the duration before.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseConfig {
    /// How long a renewal that started at `start` keeps this replica leading.
    fn valid_until(&self, start: Instant) -> Instant {
        start + self.duration * 2 / 3
    }

    /// The time one Lease call may take: a renewal that cannot finish within the leadership it
    /// would extend is useless, and without a bound a silent API server would hang the elector.
    fn call_timeout(&self) -> Duration {
        (self.duration * 2 / 3).max(Duration::from_millis(500))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("Lease {namespace}/{name}: no answer from the API server within {timeout:?}")]
    Timeout {
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

/// Whether this replica may still act as the leader, and until when. Cheap to clone; every
/// clone sees the elector's latest renewal.
#[derive(Clone, Debug)]
pub struct Leadership {
    valid_until: watch::Receiver<Option<Instant>>,
}

/// Refused before a write: the leadership deadline has passed (or was never reached).
#[derive(Debug, thiserror::Error)]
#[error("not the leader any more (the Lease was not renewed in time): nothing more is written")]
pub struct Deposed;

impl Leadership {
    /// A handle fed by `valid_until` (the elector's, or a test's).
    pub fn new(valid_until: watch::Receiver<Option<Instant>>) -> Self {
        Self { valid_until }
    }

    /// A handle that never leads, for read-only use (`connect-gate plan` reads workers through
    /// the reconciler's [`crate::reconcile::worker::Worker`]): every write is refused as
    /// [`Deposed`] before it is sent.
    pub fn never() -> Self {
        let (_, valid_until) = watch::channel(None);
        Self { valid_until }
    }

    /// Called just before every write: Ok only while the deadline has not passed.
    pub fn check(&self) -> Result<(), Deposed> {
        valid_at(*self.valid_until.borrow(), Instant::now())
    }

    /// Resolves once this replica leads; an error when the elector has stopped.
    pub async fn gained(&mut self) -> Result<(), watch::error::RecvError> {
        while self.check().is_err() {
            self.valid_until.changed().await?;
        }
        Ok(())
    }

    /// Resolves when the deadline passes without a renewal, or leadership is given up.
    pub async fn lost(&self) {
        let mut valid_until = self.valid_until.clone();
        loop {
            let Some(until) = *valid_until.borrow_and_update() else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {
                    if valid_at(*valid_until.borrow(), Instant::now()).is_err() {
                        return;
                    }
                }
                changed = valid_until.changed() => if changed.is_err() { return },
            }
        }
    }
}

fn valid_at(valid_until: Option<Instant>, now: Instant) -> Result<(), Deposed> {
    match valid_until {
        Some(until) if now < until => Ok(()),
        _ => Err(Deposed),
    }
}

/// This replica's identity: `POD_NAME`, else `HOSTNAME`, else a random one.
pub fn default_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| format!("connect-gate-{}", random_suffix()))
}

/// Starts the election loop; the [`Leadership`] says whether and until when this replica leads.
pub fn spawn(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let handle = tokio::spawn(async move {
        let mut elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        };
        let period = (elector.config.duration / 5).max(Duration::from_millis(200));
        let timeout = elector.config.call_timeout();
        loop {
            let start = Instant::now();
            let attempt = tokio::time::timeout(timeout, elector.try_acquire_or_renew())
                .await
                .unwrap_or_else(|_| Err(elector.timeout(timeout)));
            let was = valid_at(*tx.borrow(), Instant::now()).is_ok();
            match attempt {
                Ok(true) => {
                    tx.send_replace(Some(elector.config.valid_until(start)));
                }
                Ok(false) => {
                    tx.send_replace(None);
                }
                // The deadline of the last renewal stands: the local timer ends leadership.
                Err(e) => tracing::warn!(error = %e, "cannot read or renew the Lease"),
            }
            let leading = valid_at(*tx.borrow(), Instant::now()).is_ok();
            if was != leading {
                tracing::info!(identity = %elector.config.identity, lease = %elector.config.name, leading, "leadership changed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        let was_leading = valid_at(tx.send_replace(None), Instant::now()).is_ok();
        if was_leading {
            match tokio::time::timeout(timeout, elector.release()).await {
                Ok(Ok(())) => tracing::info!("released the Lease"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the Lease; it expires on its own"),
                Err(_) => {
                    tracing::warn!(error = %elector.timeout(timeout), "cannot release the Lease; it expires on its own")
                }
            }
        }
    });
    (Leadership::new(rx), handle)
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's record as last seen, and when (by our clock) it last changed.
    observed: Option<(Record, Instant)>,
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

    fn timeout(&self, timeout: Duration) -> LeaseError {
        LeaseError::Timeout {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            timeout,
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
                Ok(_) => Ok(true),
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
                self.observed = None;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_handle_refuses_every_write() {
        assert!(Leadership::never().check().is_err());
    }

    fn config(duration: Duration) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            duration,
        }
    }

    #[test]
    fn a_renewal_keeps_leadership_for_two_thirds_of_the_duration_from_its_start() {
        let c = config(Duration::from_secs(15));
        let start = Instant::now();
        assert_eq!(c.valid_until(start), start + Duration::from_secs(10));
        assert!(valid_at(Some(c.valid_until(start)), start + Duration::from_millis(9_999)).is_ok());
        assert!(valid_at(Some(c.valid_until(start)), start + Duration::from_secs(10)).is_err());
        assert!(valid_at(None, start).is_err(), "never renewed: not leading");
        // A Lease call never outlives the leadership it would extend.
        assert_eq!(c.call_timeout(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_by_the_local_timer_without_any_answer_from_the_api() {
        let (tx, rx) = watch::channel(None);
        let mut leadership = Leadership::new(rx);
        assert!(leadership.check().is_err());
        let until = Instant::now() + Duration::from_secs(10);
        tx.send_replace(Some(until));
        leadership.gained().await.unwrap();
        assert!(leadership.check().is_ok());
        // Nothing more is sent (a silent API server): lost() resolves at the deadline.
        leadership.lost().await;
        assert!(Instant::now() >= until);
        assert!(leadership.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_moves_the_deadline_and_giving_up_ends_it_at_once() {
        let (tx, rx) = watch::channel(Some(Instant::now() + Duration::from_secs(10)));
        let leadership = Leadership::new(rx);
        let lost = tokio::spawn({
            let leadership = leadership.clone();
            async move {
                leadership.lost().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let renewed = Instant::now() + Duration::from_secs(10);
        tx.send_replace(Some(renewed));
        assert_eq!(lost.await.unwrap(), renewed, "the renewal extended it");

        tx.send_replace(Some(Instant::now() + Duration::from_secs(10)));
        let lost = tokio::spawn(async move { leadership.lost().await });
        tx.send_replace(None);
        lost.await.unwrap();
        assert!(valid_at(*tx.borrow(), Instant::now()).is_err());
    }
}
