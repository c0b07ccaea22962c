//! The Kafka Connect REST API client, shared by the CLI, the webhook and the reconciler, and
//! the worker's plugin list cached from it.

pub mod destinations;
pub mod offsets;
pub mod plugin_cache;
pub mod registry;

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::pipeline::check::plugins::{Catalog, CatalogError};
use crate::pipeline::render::secrets::{Secret, mask};

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
    #[error("Kafka Connect at {url}: unexpected answer to {what}: {source}")]
    Decode {
        url: String,
        what: String,
        source: serde_json::Error,
    },
    #[error("Kafka Connect at {url}: {what} is not usable: {source}")]
    Tls {
        url: String,
        what: &'static str,
        source: reqwest::Error,
    },
}

/// How requests to a REST endpoint authenticate.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: Secret,
        password: Secret,
    },
    Bearer(Secret),
}

/// What a client of a destination needs besides its URL: auth, and TLS beyond the system roots.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    pub auth: Auth,
    /// PEM CA certificate(s) the endpoint's certificate must chain to (in addition to the roots).
    pub ca: Option<Vec<u8>>,
    /// PEM certificate and private key: mutual TLS.
    pub identity: Option<Vec<u8>>,
}

impl std::fmt::Debug for ConnectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A client for one worker's REST API (or Confluent Cloud's Connect API, `base` ending in the
/// cluster's path prefix).
#[derive(Clone)]
pub struct ConnectClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl ConnectClient {
    pub fn new(base: &str) -> Self {
        Self::with_options(base, &ClientOptions::default()).expect("a client without TLS options builds")
    }

    /// A client with auth and TLS options; a CA or client certificate that does not parse is
    /// an error naming which.
    pub fn with_options(base: &str, options: &ClientOptions) -> Result<Self, ConnectError> {
        crate::install_crypto_provider();
        let url = base.trim_end_matches('/').to_string();
        let tls = |what| {
            let url = url.clone();
            move |source| ConnectError::Tls { url, what, source }
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &options.ca {
            for cert in reqwest::Certificate::from_pem_bundle(ca).map_err(tls("the CA file"))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &options.identity {
            builder = builder.identity(reqwest::Identity::from_pem(identity).map_err(tls("the client certificate"))?);
        }
        let http = builder.build().map_err(tls("the TLS configuration"))?;
        Ok(Self {
            base: url,
            http,
            auth: options.auth.clone(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `url` with this endpoint's credentials.
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => request.basic_auth(username.expose(), Some(password.expose())),
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
        }
    }

    /// `GET /connector-plugins`: the installed connector classes.
    pub async fn plugins(&self) -> Result<Catalog, ConnectError> {
        let body = self
            .send_checked(
                reqwest::Method::GET,
                "/connector-plugins",
                None,
                "GET /connector-plugins",
            )
            .await?;
        Catalog::from_json(&body).map_err(|source| ConnectError::Plugins {
            url: self.base.clone(),
            source,
        })
    }

    /// [`send`](Self::send), with any answer but a success an error naming `what`.
    async fn send_checked(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Vec<u8>, ConnectError> {
        let response = self.send(method, path, body).await?;
        if !response.status.is_success() {
            return Err(ConnectError::Status {
                url: self.base.clone(),
                what: what.into(),
                status: response.status,
            });
        }
        Ok(response.body)
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
        let what = "PUT /connector-plugins/{class}/config/validate";
        let path = format!("/connector-plugins/{}/config/validate", urlencode(class));
        let config_json = serde_json::to_value(config).expect("a map of strings is JSON");
        let body = self
            .send_checked(reqwest::Method::PUT, &path, Some(&config_json), what)
            .await?;
        let body: ValidateResponse = serde_json::from_slice(&body).map_err(|source| ConnectError::Decode {
            url: self.base.clone(),
            what: what.into(),
            source,
        })?;
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
    /// How long the server asked to wait before the next request (429, 503).
    pub retry_after: Option<Duration>,
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
        let mut request = self.request(method, &url).header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(unreachable)?.to_vec();
        Ok(RestResponse {
            status,
            body,
            retry_after,
        })
    }
}

/// The wait a rate-limited answer asks for: `Retry-After` in seconds (the HTTP-date form is not
/// used by Connect or Confluent Cloud), else the seconds until the rate limit resets
/// (`RateLimit-Reset`, `X-RateLimit-Reset`, as Confluent Cloud sends them).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    ["retry-after", "ratelimit-reset", "x-ratelimit-reset"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// `/connectors/{name}` with the name percent-encoded.
pub fn connector_path(name: &str) -> String {
    format!("/connectors/{}", urlencode(name))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;

    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn the_wait_of_a_rate_limited_answer_comes_from_its_headers() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3"), ("ratelimit-reset", "9")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
            None
        );
    }

    /// A Connect REST endpoint over TLS that requires a client certificate from `ca` and
    /// answers `GET /connector-plugins` with the Authorization header it got, as a class name.
    async fn mtls_endpoint(server: &crate::webhook::tls::CertFiles) -> String {
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&server.ca_cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let resolver = crate::webhook::tls::CertResolver::load(server.cert.clone(), server.key.clone()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        let app = axum::Router::new().route(
            "/connector-plugins",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("none")
                    .replace(' ', ".");
                format!(r#"[{{"class": "auth.{auth}"}}]"#)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(crate::webhook::tls::serve(
            listener,
            Arc::new(config),
            app,
            std::future::pending(),
        ));
        url
    }

    #[tokio::test]
    async fn mutual_tls_with_a_ca_and_basic_or_bearer_credentials_reach_the_endpoint() {
        use crate::webhook::tls::generate_certs;
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let server = generate_certs(&dir.path().join("server"), &[], &["127.0.0.1".parse().unwrap()]).unwrap();
        let url = mtls_endpoint(&server).await;
        let ca = std::fs::read(&server.ca_cert).unwrap();
        // A client certificate from the same CA.
        let ca_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("server/ca.key")).unwrap()).unwrap();
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["connect-gate".to_string()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let identity = format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes();
        let classes = |catalog: Catalog| format!("{catalog:?}");

        let basic = ClientOptions {
            auth: Auth::Basic {
                username: Secret::new("u"),
                password: Secret::new("p"),
            },
            ca: Some(ca.clone()),
            identity: Some(identity.clone()),
        };
        let plugins = ConnectClient::with_options(&url, &basic)
            .unwrap()
            .plugins()
            .await
            .unwrap();
        assert!(classes(plugins).contains("auth.Basic.dTpw"), "basic auth sent");
        let bearer = ClientOptions {
            auth: Auth::Bearer(Secret::new("t0ken")),
            ..basic.clone()
        };
        let plugins = ConnectClient::with_options(&url, &bearer)
            .unwrap()
            .plugins()
            .await
            .unwrap();
        assert!(classes(plugins).contains("auth.Bearer.t0ken"), "bearer token sent");

        // Without the client certificate, or without the CA, the endpoint cannot be used.
        let no_identity = ClientOptions {
            identity: None,
            ..basic.clone()
        };
        assert!(
            ConnectClient::with_options(&url, &no_identity)
                .unwrap()
                .plugins()
                .await
                .is_err()
        );
        let no_ca = ClientOptions { ca: None, ..basic };
        assert!(
            ConnectClient::with_options(&url, &no_ca)
                .unwrap()
                .plugins()
                .await
                .is_err()
        );
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let bad = ClientOptions {
            ca: Some(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec()),
            ..ClientOptions::default()
        };
        let e = ConnectClient::with_options("https://x", &bad).unwrap_err().to_string();
        assert!(e.contains("the CA file"), "{e}");
    }
}
