//! The reconciler's side of a destination's REST API: every call counted, 409 (a rebalance in
//! progress), 429 (rate limited: the wait it asks for is honoured) and 5xx retried with capped
//! exponential backoff, the destination's state read in one bulk call, and each planned
//! [`Action`] turned into its request.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::Method;
use serde_json::{Value, json};

use super::ReconcileError;
use super::day2::OffsetsChange;
use super::lease::Leadership;
use super::live::{self, Live, LiveState};
use super::plan::Action;
use crate::connect::destinations::Kind;
use crate::connect::registry::Destination;
use crate::connect::{ConnectClient, RestResponse, connector_path};
use crate::metrics::{Metrics, RestLabels};
use crate::pipeline::render::secrets::mask;

/// The longest wait a 429's headers are honoured for; a longer one fails the call (retried by
/// the next pass).
const RATE_LIMIT_WAIT_MAX: Duration = Duration::from_secs(30);

/// Retries of one call answered 409, 429 or 5xx, 250 ms doubling up to 4 s.
const CALL_RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(250))
    .with_max_delay(Duration::from_secs(4))
    .with_max_times(5)
    .with_jitter();

/// Why an action did not happen.
pub enum ActionError {
    /// The worker found the config invalid (400): reported, not retried until it changes.
    Rejected(String),
    /// Anything else that failed: retried by the next pass.
    Failed(String),
    /// The worker is unreachable: the pass stops here.
    Fatal(ReconcileError),
}

impl From<ReconcileError> for ActionError {
    fn from(e: ReconcileError) -> Self {
        ActionError::Fatal(e)
    }
}

pub struct Worker {
    connect: ConnectClient,
    kind: Kind,
    metrics: Metrics,
    leadership: Leadership,
}

impl Worker {
    pub fn new(destination: &Destination, metrics: Metrics, leadership: Leadership) -> Self {
        Self {
            connect: destination.client.clone(),
            kind: destination.kind.clone(),
            metrics,
            leadership,
        }
    }

    /// One REST call, counted and retried. An unreachable worker is an error at once: the pass
    /// is retried instead. A write (and each of its retries) is sent only while leading.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<RestResponse, ReconcileError> {
        let mut delays = CALL_RETRY.build();
        loop {
            if method != Method::GET {
                self.leadership.check()?;
            }
            let result = self.connect.send(method.clone(), path, body).await;
            let status = match &result {
                Ok(r) => r.status.as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            self.metrics
                .rest_calls
                .get_or_create(&RestLabels {
                    method: method.to_string(),
                    status,
                })
                .inc();
            match result {
                Ok(r) if matches!(r.status.as_u16(), 409 | 429) || r.status.is_server_error() => {
                    let asked = r.retry_after.unwrap_or_default();
                    match delays.next() {
                        Some(delay) if asked <= RATE_LIMIT_WAIT_MAX => {
                            let delay = delay.max(asked);
                            tracing::debug!(status = %r.status, ?delay, "Kafka Connect busy; retrying");
                            tokio::time::sleep(delay).await;
                        }
                        _ => return Ok(r),
                    }
                }
                other => return Ok(other?),
            }
        }
    }

    /// The worker's connectors in one bulk call; a connector it lists but leaves out of the
    /// expansion (status not written yet) and that matters here is fetched on its own.
    /// Which those are, one plain listing says: names of interest it lacks do not exist (the
    /// common case: connectors about to be created, hundreds of them when Flux applies many).
    pub async fn read_live(&self, interest: &BTreeSet<String>) -> Result<LiveState, ReconcileError> {
        // Confluent Cloud takes the expansions as one comma-separated value.
        let what = match self.kind {
            Kind::Connect => "/connectors?expand=info&expand=status",
            Kind::ConfluentCloud { .. } => "/connectors?expand=info,status",
        };
        let r = self.call(Method::GET, what, None).await?;
        let what = format!("GET {what}");
        if !r.status.is_success() {
            return Err(ReconcileError::WorkerStatus {
                what,
                status: r.status.as_u16(),
                message: r.message(),
            });
        }
        let mut live = live::parse_expanded(&r.body).map_err(|source| ReconcileError::Decode { what, source })?;
        let mut unlisted: Vec<&String> = interest.iter().filter(|n| !live.contains_key(*n)).collect();
        if !unlisted.is_empty() {
            let names = self.names().await?;
            unlisted.retain(|n| names.contains(*n));
        }
        for name in unlisted {
            let r = self.call(Method::GET, &connector_path(name), None).await?;
            match r.status.as_u16() {
                404 => {}
                200 => {
                    #[derive(serde::Deserialize)]
                    struct Info {
                        config: BTreeMap<String, String>,
                    }
                    let info: Info = serde_json::from_slice(&r.body).map_err(|source| ReconcileError::Decode {
                        what: "GET /connectors/{name}".into(),
                        source,
                    })?;
                    live.insert(
                        name.clone(),
                        Live {
                            config: info.config,
                            status: None,
                        },
                    );
                }
                status => {
                    return Err(ReconcileError::WorkerStatus {
                        what: "GET /connectors/{name}".into(),
                        status,
                        message: r.message(),
                    });
                }
            }
        }
        Ok(live)
    }

    /// `GET /connectors`: the names of every connector on the worker.
    async fn names(&self) -> Result<BTreeSet<String>, ReconcileError> {
        let r = self.call(Method::GET, "/connectors", None).await?;
        let what = || "GET /connectors".to_string();
        if !r.status.is_success() {
            return Err(ReconcileError::WorkerStatus {
                what: what(),
                status: r.status.as_u16(),
                message: r.message(),
            });
        }
        serde_json::from_slice(&r.body).map_err(|source| ReconcileError::Decode { what: what(), source })
    }

    /// Sends the request for one action; `Some` holds what the worker answered an offsets change
    /// (its message). What the worker says is masked with `secrets`, the values of the
    /// connector's config that came from variables or env.
    pub async fn execute(&self, action: &Action, secrets: &[&str]) -> Result<Option<String>, ActionError> {
        let fail = |what: &str, r: &RestResponse| {
            ActionError::Failed(format!(
                "{what} answered {}: {}",
                r.status.as_u16(),
                mask(&r.message(), secrets)
            ))
        };
        match action {
            Action::Put {
                name,
                config,
                cause,
                stopped,
                ..
            } => {
                let r = if *stopped {
                    // KIP-980 (Kafka 3.7): it never runs before its offsets are set.
                    let body = json!({"name": name, "config": config, "initial_state": "STOPPED"});
                    self.call(Method::POST, "/connectors", Some(&body)).await?
                } else {
                    let path = format!("{}/config", connector_path(name));
                    self.call(Method::PUT, &path, Some(&json!(config))).await?
                };
                match r.status.as_u16() {
                    200 | 201 => {
                        tracing::info!(connector = %name, cause = ?cause, stopped, "applied");
                        Ok(None)
                    }
                    400 | 422 => {
                        tracing::warn!(connector = %name, "the worker rejected the config");
                        Err(ActionError::Rejected(format!(
                            "Kafka Connect rejected the config: {}",
                            mask(&r.message(), secrets)
                        )))
                    }
                    _ if *stopped => Err(fail("POST /connectors", &r)),
                    _ => Err(fail("PUT config", &r)),
                }
            }
            Action::Delete { name, cause, .. } => {
                let r = self.call(Method::DELETE, &connector_path(name), None).await?;
                match r.status.as_u16() {
                    200 | 202 | 204 | 404 => {
                        tracing::info!(connector = %name, cause = ?cause, "deleted");
                        Ok(None)
                    }
                    _ => Err(fail("DELETE", &r)),
                }
            }
            Action::State { name, to, .. } => {
                let path = format!("{}/{}", connector_path(name), to.verb());
                let r = self.call(Method::PUT, &path, None).await?;
                match r.status.as_u16() {
                    200 | 202 | 204 => {
                        tracing::info!(connector = %name, transition = to.verb(), "state changed");
                        Ok(None)
                    }
                    // 404 included: created a moment ago and not yet visible to this worker.
                    _ => Err(fail(to.verb(), &r)),
                }
            }
            Action::Restart {
                name,
                only_failed,
                trigger,
                ..
            } => {
                let path = format!(
                    "{}/restart?includeTasks=true&onlyFailed={only_failed}",
                    connector_path(name)
                );
                let r = self.call(Method::POST, &path, None).await?;
                match r.status.as_u16() {
                    200 | 202 | 204 => {
                        tracing::info!(connector = %name, only_failed, ?trigger, "restarted");
                        Ok(None)
                    }
                    _ => Err(fail("restart", &r)),
                }
            }
            Action::Offsets {
                name, token, change, ..
            } => {
                let path = format!("{}/offsets", connector_path(name));
                let r = match change {
                    OffsetsChange::Reset => self.call(Method::DELETE, &path, None).await?,
                    OffsetsChange::Set(set) => {
                        let body = json!({ "offsets": set });
                        self.call(Method::PATCH, &path, Some(&body)).await?
                    }
                };
                match r.status.as_u16() {
                    200 => {
                        tracing::info!(connector = %name, %token, "offsets changed");
                        Ok(Some(mask(&r.message(), secrets)))
                    }
                    _ => Err(fail("offsets", &r)),
                }
            }
        }
    }
}
