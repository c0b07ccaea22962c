//! The worker's plugin list, cached: refreshed in the background and after a miss (a class it
//! does not know, or no list at all), never fetched per admission request while cached.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::ConnectClient;
use crate::metrics::Metrics;
use crate::pipeline::check::plugins::Catalog;

/// How soon the background refresh tries again while it has no list.
const NO_LIST_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Cached {
    catalog: Option<Arc<Catalog>>,
    /// The last fetch, whether it succeeded or not.
    attempted: Option<Instant>,
    error: Option<String>,
}

#[derive(Debug)]
pub struct PluginCache {
    client: ConnectClient,
    metrics: Metrics,
    cached: RwLock<Cached>,
    /// One fetch at a time: concurrent misses share it.
    fetching: tokio::sync::Mutex<()>,
}

impl PluginCache {
    pub fn new(client: ConnectClient, metrics: Metrics) -> Self {
        Self {
            client,
            metrics,
            cached: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn catalog(&self) -> Option<Arc<Catalog>> {
        self.cached.read().expect("not poisoned").catalog.clone()
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.cached.read().expect("not poisoned").error.clone()
    }

    /// Fetches the list now. On failure the previous list stays in use.
    pub async fn refresh(&self) -> Option<Arc<Catalog>> {
        let _one = self.fetching.lock().await;
        self.fetch().await
    }

    async fn fetch(&self) -> Option<Arc<Catalog>> {
        self.metrics.plugin_refreshes.inc();
        // Counted from the start: a caller that gives up waiting still spaces the next attempt.
        self.cached.write().expect("not poisoned").attempted = Some(Instant::now());
        let result = match self.client.plugins().await {
            // Admission checks day-2 operations against it; a worker that does not say is not
            // judged by version.
            Ok(catalog) => Ok(catalog.with_worker_version(self.worker_version().await)),
            Err(e) => Err(e),
        };
        let mut cached = self.cached.write().expect("not poisoned");
        match result {
            Ok(catalog) => {
                cached.catalog = Some(Arc::new(catalog));
                cached.error = None;
            }
            Err(e) => {
                self.metrics.plugin_refresh_failures.inc();
                tracing::warn!(error = %e, "cannot fetch the worker's plugin list");
                cached.error = Some(e.to_string());
            }
        }
        cached.catalog.clone()
    }

    /// The worker's `GET /` version, if it answers one.
    async fn worker_version(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Root {
            version: String,
        }
        let r = self.client.send(reqwest::Method::GET, "/", None).await.ok()?;
        let root: Root = serde_json::from_slice(&r.body).ok().filter(|_| r.status.is_success())?;
        Some(root.version)
    }

    /// After a class was not found, or with no list at all (a worker that was still starting):
    /// refetch unless the last attempt is younger than `min_age` (so a plugin installed a minute
    /// ago is found, and a flood of requests cannot hammer the worker). Returns the new list when
    /// it differs from the one that missed.
    pub async fn refresh_after_miss(&self, min_age: Duration) -> Option<Arc<Catalog>> {
        let before = self.catalog();
        let _one = self.fetching.lock().await;
        let fresh = self
            .cached
            .read()
            .expect("not poisoned")
            .attempted
            .is_some_and(|t| t.elapsed() < min_age);
        let after = if fresh { self.catalog() } else { self.fetch().await };
        (after != before).then_some(after).flatten()
    }

    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                cache.refresh().await;
                // Without a list (the worker beside the sidecar still starting), try again soon.
                let wait = if cache.catalog().is_some() {
                    every
                } else {
                    every.min(NO_LIST_RETRY)
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A stand-in for one endpoint of the worker, for the cache's timing rules only.
    async fn fake_worker(body: Arc<Mutex<String>>) -> String {
        let app = axum::Router::new().route(
            "/connector-plugins",
            axum::routing::get(move || {
                let body = body.clone();
                async move { body.lock().unwrap().clone() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn without_a_list_a_failed_attempt_also_counts_for_the_min_age() {
        let metrics = Metrics::new().0;
        let cache = PluginCache::new(ConnectClient::new("http://127.0.0.1:9"), metrics.clone());
        assert!(cache.refresh().await.is_none());
        assert!(cache.refresh_after_miss(Duration::from_secs(3600)).await.is_none());
        assert_eq!(metrics.plugin_refreshes.get(), 1, "no second attempt within min_age");
        cache.refresh_after_miss(Duration::ZERO).await;
        assert_eq!(metrics.plugin_refreshes.get(), 2, "an attempt once min_age is over");
    }

    #[tokio::test]
    async fn refetches_after_a_miss_unless_fresh() {
        let body = Arc::new(Mutex::new(r#"[{"class": "a.AConnector"}]"#.to_string()));
        let url = fake_worker(body.clone()).await;
        let cache = PluginCache::new(ConnectClient::new(&url), Metrics::new().0);
        assert!(cache.refresh().await.unwrap().resolve("A").is_some());
        *body.lock().unwrap() = r#"[{"class": "a.AConnector"}, {"class": "b.BConnector"}]"#.into();
        assert!(
            cache.refresh_after_miss(Duration::from_secs(3600)).await.is_none(),
            "fresh lists are not refetched"
        );
        let fresh = cache.refresh_after_miss(Duration::ZERO).await.expect("a changed list");
        assert!(fresh.resolve("B").is_some());
        assert!(
            cache.refresh_after_miss(Duration::ZERO).await.is_none(),
            "unchanged list"
        );
    }

    #[tokio::test]
    async fn keeps_the_last_list_when_the_worker_goes_away() {
        let body = Arc::new(Mutex::new(r#"[{"class": "a.AConnector"}]"#.to_string()));
        let url = fake_worker(body.clone()).await;
        let cache = PluginCache::new(ConnectClient::new(&url), Metrics::new().0);
        cache.refresh().await;
        *body.lock().unwrap() = "not json".into();
        assert!(cache.refresh().await.is_some());
        assert!(
            cache
                .last_error()
                .unwrap()
                .contains("not a GET /connector-plugins response")
        );
    }
}
