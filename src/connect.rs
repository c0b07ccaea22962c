//! The Kafka Connect REST API client.

use std::time::Duration;

use crate::plugins::{Catalog, CatalogError};

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

    pub fn url(&self) -> &str {
        &self.base
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
