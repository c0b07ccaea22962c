//! A STAND-IN for Confluent Cloud's Connect API (`/connect/v1/environments/{env}/clusters/
//! {cluster}/…`), which cannot be reached from the test machine. It is not Confluent Cloud: it
//! serves the documented paths and status codes of the Connect v1 API in front of a real Kafka
//! Connect worker (started by the test), so that connect-gate's `confluent-cloud` kind is
//! exercised against a real worker's behaviour:
//!   * only the cluster's path prefix, with the API key and secret as basic auth (401 otherwise);
//!   * `GET …/connectors?expand=info,status` (one comma-separated value), `GET …/connectors/{n}`
//!     and `…/config`: every config gains server-side keys (`cloud.environment`,
//!     `cloud.provider`, `kafka.endpoint`, `kafka.region`) and secret values are masked
//!     (`****************`) as Confluent Cloud does for password-type keys;
//!   * `PUT …/connectors/{n}/config` creates or updates (200 for both);
//!   * `PUT …/pause` and `…/resume` answer 202 and act a moment later; there is no `…/stop`;
//!   * `DELETE …/connectors/{n}`;
//!   * 429 with `Retry-After` and `RateLimit-Reset` while the test asks it to throttle.
//!
//! Every request is recorded (method, path after the prefix, status).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::proxies::serve_until_stopped;

/// The mask Confluent Cloud shows instead of a secret value.
pub const MASK: &str = "****************";
/// Keys the stand-in adds to every config it returns, as Confluent Cloud adds its own.
pub const SERVER_KEYS: &[&str] = &["cloud.environment", "cloud.provider", "kafka.endpoint", "kafka.region"];

/// One request the stand-in answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The path after the cluster's prefix, with the query.
    pub path: String,
    pub status: u16,
}

pub struct CloudStandIn {
    /// The API's base URL, as a destination's `url` (without the cluster's prefix).
    pub url: String,
    pub environment: String,
    pub cluster: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    throttle: Arc<AtomicUsize>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    upstream_auth: Option<(String, String)>,
    prefix: String,
    key: (String, String),
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
    throttle: Arc<AtomicUsize>,
}

impl CloudStandIn {
    /// Serves environment `environment`, cluster `cluster`, for API key `key` (id, secret), in
    /// front of the worker at `upstream` (with its basic auth, if any).
    pub async fn start(
        upstream: &str,
        upstream_auth: Option<(String, String)>,
        environment: &str,
        cluster: &str,
        key: (&str, &str),
    ) -> CloudStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let throttle: Arc<AtomicUsize> = Arc::default();
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            upstream_auth,
            prefix: format!("/connect/v1/environments/{environment}/clusters/{cluster}"),
            key: (key.0.to_string(), key.1.to_string()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            seen: seen.clone(),
            throttle: throttle.clone(),
        };
        let stop = serve_until_stopped(listener, axum::Router::new().fallback(serve).with_state(shared));
        CloudStandIn {
            url,
            environment: environment.into(),
            cluster: cluster.into(),
            seen,
            throttle,
            stop,
        }
    }

    /// The next `n` requests are answered 429.
    pub fn throttle(&self, n: usize) {
        self.throttle.store(n, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests so far matched `method` and a path starting with `path`.
    pub fn count(&self, method: &str, path: &str, status: Option<u16>) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(path) && status.is_none_or(|st| st == s.status))
            .count()
    }
}

impl Drop for CloudStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Confluent Cloud masks password-type keys; the stand-in takes these for them.
fn secret_key(key: &str) -> bool {
    ["secret", "password", "keyfile"].iter().any(|s| key.contains(s))
}

/// A config as Confluent Cloud returns it: its own keys added, secret values masked.
fn as_cloud_returns(config: &mut Map<String, Value>, environment: &str) {
    for (k, v) in config.iter_mut() {
        if secret_key(k) {
            *v = Value::String(MASK.into());
        }
    }
    for key in SERVER_KEYS {
        let value = match *key {
            "cloud.environment" => environment.to_string(),
            "cloud.provider" => "stand-in".into(),
            "kafka.endpoint" => "SASL_SSL://stand-in.invalid:9092".into(),
            _ => "loopback".into(),
        };
        config.insert(key.to_string(), Value::String(value));
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    let mut response = Response::new(axum::body::Body::from(if body.is_null() {
        String::new()
    } else {
        body.to_string()
    }));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(
        status,
        serde_json::json!({"error_code": status.as_u16(), "message": message}),
    )
}

async fn serve(axum::extract::State(s): axum::extract::State<Shared>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let method = parts.method.clone();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let rest = path.strip_prefix(&s.prefix).map(str::to_string);
    let response = answer(&s, &parts.headers, &method, rest.as_deref(), query.as_deref(), body).await;
    s.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: format!(
            "{}{}",
            rest.unwrap_or(path),
            query.map(|q| format!("?{q}")).unwrap_or_default()
        ),
        status: response.status().as_u16(),
    });
    response
}

async fn answer(
    s: &Shared,
    headers: &axum::http::HeaderMap,
    method: &reqwest::Method,
    rest: Option<&str>,
    query: Option<&str>,
    body: axum::body::Bytes,
) -> Response {
    let Some(rest) = rest else {
        return error(StatusCode::NOT_FOUND, "no such environment or cluster");
    };
    let authorized = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(base64_decode)
        .is_some_and(|creds| creds == format!("{}:{}", s.key.0, s.key.1));
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if s.throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        r.headers_mut().insert("ratelimit-limit", HeaderValue::from_static("5"));
        r.headers_mut().insert("ratelimit-reset", HeaderValue::from_static("1"));
        return r;
    }
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let environment = s.prefix.split('/').nth(4).unwrap_or_default().to_string();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["connectors"]) => {
            let expand = query.and_then(|q| q.strip_prefix("expand=")).unwrap_or_default();
            if !expand.is_empty() && expand.split(',').any(|e| !["info", "status", "id"].contains(&e)) {
                return error(StatusCode::BAD_REQUEST, "expand takes info,status,id as one value");
            }
            let upstream_query: Vec<String> = expand
                .split(',')
                .filter(|e| !e.is_empty() && *e != "id")
                .map(|e| format!("expand={e}"))
                .collect();
            let (status, mut value) = s
                .forward(
                    reqwest::Method::GET,
                    &format!("/connectors?{}", upstream_query.join("&")),
                    None,
                )
                .await;
            if let Some(all) = value.as_object_mut() {
                for entry in all.values_mut() {
                    if let Some(config) = entry.pointer_mut("/info/config").and_then(Value::as_object_mut) {
                        as_cloud_returns(config, &environment);
                    }
                }
            }
            reply(status, value)
        }
        ("GET", ["connectors", name]) => {
            let (status, mut value) = s
                .forward(reqwest::Method::GET, &format!("/connectors/{name}"), None)
                .await;
            if let Some(config) = value.get_mut("config").and_then(Value::as_object_mut) {
                as_cloud_returns(config, &environment);
            }
            reply(status, value)
        }
        ("GET", ["connectors", name, "config"]) => {
            let (status, mut value) = s
                .forward(reqwest::Method::GET, &format!("/connectors/{name}/config"), None)
                .await;
            if let Some(config) = value.as_object_mut() {
                as_cloud_returns(config, &environment);
            }
            reply(status, value)
        }
        ("GET", ["connectors", name, "status"]) => {
            let (status, value) = s
                .forward(reqwest::Method::GET, &format!("/connectors/{name}/status"), None)
                .await;
            reply(status, value)
        }
        ("PUT", ["connectors", name, "config"]) => {
            let config: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, value) = s
                .forward(
                    reqwest::Method::PUT,
                    &format!("/connectors/{name}/config"),
                    Some(config),
                )
                .await;
            // Created or updated: 200 either way.
            let status = if status == StatusCode::CREATED {
                StatusCode::OK
            } else {
                status
            };
            reply(status, value)
        }
        ("PUT", ["connectors", name, verb @ ("pause" | "resume")]) => {
            // Accepted now, done a moment later.
            let (s, path) = (s.clone(), format!("/connectors/{name}/{verb}"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                s.forward(reqwest::Method::PUT, &path, None).await;
            });
            reply(StatusCode::ACCEPTED, Value::Null)
        }
        ("DELETE", ["connectors", name]) => {
            let (status, value) = s
                .forward(reqwest::Method::DELETE, &format!("/connectors/{name}"), None)
                .await;
            let status = if status == StatusCode::NO_CONTENT {
                StatusCode::OK
            } else {
                status
            };
            reply(status, value)
        }
        ("GET", ["connector-plugins"]) => {
            let (status, value) = s.forward(reqwest::Method::GET, "/connector-plugins", None).await;
            reply(status, value)
        }
        ("PUT", ["connector-plugins", plugin, "config", "validate"]) => {
            let config: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, value) = s
                .forward(
                    reqwest::Method::PUT,
                    &format!("/connector-plugins/{plugin}/config/validate"),
                    Some(config),
                )
                .await;
            reply(status, value)
        }
        // No STOPPED state, no other paths.
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

impl Shared {
    async fn forward(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.upstream));
        if let Some((u, p)) = &self.upstream_auth {
            request = request.basic_auth(u, Some(p));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(r) => {
                let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let text = r.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(e) => (StatusCode::BAD_GATEWAY, Value::String(e.to_string())),
        }
    }
}

fn base64_decode(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    String::from_utf8(bytes).ok()
}
