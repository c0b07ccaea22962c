//! The Kafka Connect REST API client, shared by the CLI, the webhook and the reconciler, and
//! the worker's plugin list cached from it.

pub mod plugin_cache;

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::pipeline::plugins::{Catalog, CatalogError};
use crate::pipeline::secrets::mask;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Kafka Connect at {url} is unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("Kafka Connect at {url} answered {status} to {what}")]
    Status {
        url: String,
        what: String,
        status: reqwest::StatusCode,
    },
    #[error("Kafka Connect at {url}: {source}")]
    Plugins { url: String, source: CatalogError },
}

/// A client for one worker's REST API.
#[derive(Clone, Debug)]
pub struct ConnectClient {
    base: String,
    http: reqwest::Client,
}

impl ConnectClient {
    pub fn new(base: &str) -> Self {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// `GET /connector-plugins`: the installed connector classes.
    pub async fn plugins(&self) -> Result<Catalog, ConnectError> {
        let url = format!("{}/connector-plugins", self.base);
        let unreachable = |source| ConnectError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = self.http.get(&url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(ConnectError::Status {
                url: self.base.clone(),
                what: "GET /connector-plugins".into(),
                status: response.status(),
            });
        }
        let body = response.bytes().await.map_err(unreachable)?;
        Catalog::from_json(&body).map_err(|source| ConnectError::Plugins {
            url: self.base.clone(),
            source,
        })
    }
}

/// One config key the worker's validator found fault with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub errors: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ValidateResponse {
    configs: Vec<ValidateEntry>,
}

#[derive(serde::Deserialize)]
struct ValidateEntry {
    definition: Option<ValidateDefinition>,
    value: ValidateValue,
}

#[derive(serde::Deserialize)]
struct ValidateDefinition {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(serde::Deserialize)]
struct ValidateValue {
    name: String,
    #[serde(default)]
    errors: Vec<String>,
}

impl ConnectClient {
    /// `PUT /connector-plugins/{class}/config/validate`: the worker's own verdict on a config.
    /// Error texts can quote values: the values of PASSWORD-type keys and `secrets` are masked
    /// in them, and in the keys.
    pub async fn validate(
        &self,
        config: &std::collections::BTreeMap<String, String>,
        secrets: &[String],
    ) -> Result<Vec<ConfigIssue>, ConnectError> {
        let class = config.get("connector.class").map(String::as_str).unwrap_or_default();
        let url = format!("{}/connector-plugins/{}/config/validate", self.base, urlencode(class));
        let unreachable = |source| ConnectError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = self.http.put(&url).json(config).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(ConnectError::Status {
                url: self.base.clone(),
                what: "PUT /connector-plugins/{class}/config/validate".into(),
                status: response.status(),
            });
        }
        let body: ValidateResponse = response.json().await.map_err(unreachable)?;
        let hidden: Vec<&str> = body
            .configs
            .iter()
            .filter(|c| c.definition.as_ref().is_some_and(|d| d.kind == "PASSWORD"))
            .filter_map(|c| config.get(&c.value.name).map(String::as_str))
            .chain(secrets.iter().map(String::as_str))
            .collect();
        let mask = |e: &String| mask(e, &hidden);
        Ok(body
            .configs
            .into_iter()
            .filter(|c| !c.value.errors.is_empty())
            .map(|c| ConfigIssue {
                errors: c.value.errors.iter().map(mask).collect(),
                key: mask(&c.value.name),
            })
            .collect())
    }
}

/// What stays as it is in a path segment: class and connector names are plain, but a template
/// controls them.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-').remove(b'$');

fn urlencode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// A raw answer from the REST API, for the reconciler (which counts and retries calls itself).
#[derive(Debug, Clone)]
pub struct RestResponse {
    pub status: reqwest::StatusCode,
    pub body: Vec<u8>,
}

impl RestResponse {
    /// Connect's error body is `{"error_code": ..., "message": ...}`; the message, else the body.
    pub fn message(&self) -> String {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            message: String,
        }
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => e.message,
            Err(_) => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

impl ConnectClient {
    /// Sends one request to `path` (which starts with `/`), without retrying.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RestResponse, ConnectError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |source| ConnectError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let mut request = self.http.request(method, &url).header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?.to_vec();
        Ok(RestResponse { status, body })
    }
}

/// `/connectors/{name}` with the name percent-encoded.
pub fn connector_path(name: &str) -> String {
    format!("/connectors/{}", urlencode(name))
}
