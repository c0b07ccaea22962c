//! [`WorkerRest`]: the tests' own raw client for a Kafka Connect worker's REST API. Deliberately
//! not the crate's `connect_gate::connect::ConnectClient` (the code under test): it returns the
//! status code and the body as they came, so tests can check what the worker really holds.

use std::time::Duration;

use serde_json::Value;

use super::poll::eventually;

const WAIT: Duration = Duration::from_secs(90);

/// A Kafka Connect REST client (optionally with basic auth).
#[derive(Clone)]
pub struct WorkerRest {
    pub url: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl WorkerRest {
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        Self {
            url: url.trim_end_matches('/').to_string(),
            http,
            auth: None,
        }
    }

    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Sends a request; returns the status code and the body as JSON
    /// (`Value::String` if it is not JSON, `Value::Null` if empty).
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_request(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`request`](Self::request), with a request that got no answer (a worker going away
    /// behind a Service) an error rather than a panic.
    pub async fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}/{}", self.url, path.trim_start_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("accept", "application/json");
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A GET, retried while the worker answers that a rebalance is under way (409, or 500
    /// "rebalance is expected"): reads must not fail a test for the cluster's own churn.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        for _ in 0..20 {
            let (status, body) = self.request(reqwest::Method::GET, path, None).await;
            let rebalancing = status == 409 || (status == 500 && body.to_string().contains("rebalance"));
            if !rebalancing {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.request(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Names of all connectors in the Connect cluster.
    pub async fn connectors(&self) -> Vec<String> {
        let (status, body) = self.get("/connectors").await;
        assert_eq!(status, 200, "GET /connectors: {body}");
        serde_json::from_value(body).expect("connector list")
    }

    /// The connector's committed offsets (`GET /connectors/{name}/offsets`) once `check` holds
    /// for them.
    pub async fn wait_offsets(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("offsets of {name}: {what}"), WAIT, || async {
            match self.get(&format!("/connectors/{name}/offsets")).await {
                (200, body) if check(&body["offsets"]) => Ok(body["offsets"].clone()),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await
    }

    /// Waits until the worker reports the connector in `state`.
    pub async fn wait_state(&self, name: &str, state: &str) {
        eventually(&format!("{name} {state}"), WAIT, || async {
            match self.get(&format!("/connectors/{name}/status")).await {
                (200, s) if s["connector"]["state"] == state => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
    }
}
