//! Destinations: the Connect REST endpoints connectors run on. The worker beside the sidecar is
//! the default ([`LOCAL`]); others are declared in the `--destinations` YAML file, with their
//! auth and kind. Parsing and checking the file is pure; [`Spec::client_options`] reads the
//! credential files it names (never inline values: the file is a ConfigMap, credentials are
//! mounted Secrets).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pipeline::check::secrets_as::SecretsAs;

use super::{Auth, ClientOptions};
use crate::pipeline::render::secrets::Secret;

/// The default destination: the worker at `--connect-url`. Reserved in the file.
pub const LOCAL: &str = "local";
/// Confluent Cloud's API, when a `confluent-cloud` destination names no `url`.
pub const CONFLUENT_CLOUD_API: &str = "https://api.confluent.cloud";

/// What a destination is, which decides the REST paths and what can be done there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Self-managed Kafka Connect.
    Connect,
    /// Confluent Cloud's fully managed connectors of one Kafka cluster.
    ConfluentCloud { environment: String, cluster: String },
}

impl Kind {
    /// The path between the endpoint's URL and `/connectors`.
    pub fn prefix(&self) -> String {
        match self {
            Kind::Connect => String::new(),
            Kind::ConfluentCloud { environment, cluster } => {
                format!("/connect/v1/environments/{environment}/clusters/{cluster}")
            }
        }
    }

    pub fn is_cloud(&self) -> bool {
        matches!(self, Kind::ConfluentCloud { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::ConfluentCloud { .. } => "confluent-cloud",
        }
    }
}

/// How requests authenticate: paths of mounted files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthSpec {
    None,
    Basic { username: PathBuf, password: PathBuf },
    Bearer { token: PathBuf },
}

/// TLS beyond the system roots: a CA for the endpoint's certificate, a client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSpec {
    pub ca: Option<PathBuf>,
    /// (certificate, key), both PEM: mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// One declared destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub url: String,
    pub kind: Kind,
    pub auth: AuthSpec,
    pub tls: TlsSpec,
    /// A copy of its workers' properties file: their config providers, which must read the
    /// sidecar's template inputs at the same paths.
    pub worker_config: Option<PathBuf>,
    pub secrets_as: SecretsAs,
}

/// The API key of the ConfigMaps labelled `destination.cc` (the ccloud-operator's format), whose
/// environment and cluster come from the ConfigMap the label names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudSpec {
    pub url: String,
    pub auth: AuthSpec,
    pub tls: TlsSpec,
}

impl CloudSpec {
    /// The destination for one Kafka cluster.
    pub fn spec(&self, name: String, environment: String, cluster: String) -> Spec {
        Spec {
            name,
            url: self.url.clone(),
            kind: Kind::ConfluentCloud { environment, cluster },
            auth: self.auth.clone(),
            tls: self.tls.clone(),
            worker_config: None,
            secrets_as: SecretsAs::Values,
        }
    }
}

/// The `--destinations` file, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationsFile {
    pub path: PathBuf,
    pub named: Vec<Spec>,
    pub cloud: Option<CloudSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum DestinationsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Yaml { path: PathBuf, source: serde_norway::Error },
    #[error("{}: {at}: {reason}", path.display())]
    Invalid { path: PathBuf, at: String, reason: String },
    #[error("{}: {at}: {key} {}: {cause}", path.display(), file.display())]
    Credential {
        path: PathBuf,
        at: String,
        key: &'static str,
        file: PathBuf,
        cause: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    destinations: Vec<RawDestination>,
    confluent_cloud: Option<RawCloud>,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawKind {
    #[default]
    Connect,
    ConfluentCloud,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDestination {
    name: String,
    #[serde(default)]
    kind: RawKind,
    url: Option<String>,
    auth: Option<RawAuth>,
    tls: Option<RawTls>,
    environment: Option<String>,
    cluster: Option<String>,
    api_key_file: Option<PathBuf>,
    api_secret_file: Option<PathBuf>,
    worker_config: Option<PathBuf>,
    #[serde(default)]
    secrets_as: RawSecretsAs,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawSecretsAs {
    #[default]
    Values,
    References,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAuth {
    basic: Option<RawBasic>,
    bearer: Option<RawBearer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBasic {
    username_file: PathBuf,
    password_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBearer {
    token_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCloud {
    url: Option<String>,
    api_key_file: PathBuf,
    api_secret_file: PathBuf,
    tls: Option<RawTls>,
}

/// A destination name: a DNS label, so it reads the same in a label value, a flag and a message.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// An id of Confluent Cloud (`env-…`, `lkc-…`): it goes into a URL path unencoded.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl DestinationsFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, DestinationsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DestinationsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks the file's text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, DestinationsError> {
        let raw: RawFile = serde_norway::from_str(text).map_err(|source| DestinationsError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |at: String, reason: String| DestinationsError::Invalid {
            path: path.to_path_buf(),
            at,
            reason,
        };
        let mut seen = BTreeSet::new();
        let mut named = Vec::new();
        for (i, d) in raw.destinations.into_iter().enumerate() {
            let at = format!("destinations[{i}] ({:?})", d.name);
            if !valid_name(&d.name) {
                return Err(invalid(
                    at,
                    "name must be a DNS label: lower-case letters, digits and '-', at most 63".into(),
                ));
            }
            if d.name == LOCAL {
                return Err(invalid(
                    at,
                    format!("the name {LOCAL:?} is the worker at --connect-url; choose another"),
                ));
            }
            if !seen.insert(d.name.clone()) {
                return Err(invalid(at, "declared twice".into()));
            }
            named.push(spec(d).map_err(|reason| invalid(at.clone(), reason))?);
        }
        let cloud = raw
            .confluent_cloud
            .map(|c| {
                let at = "confluentCloud".to_string();
                let url = c.url.unwrap_or_else(|| CONFLUENT_CLOUD_API.into());
                check_url(&url).map_err(|reason| invalid(at.clone(), reason))?;
                Ok(CloudSpec {
                    url: url.trim_end_matches('/').to_string(),
                    auth: AuthSpec::Basic {
                        username: c.api_key_file,
                        password: c.api_secret_file,
                    },
                    tls: tls(c.tls).map_err(|reason| invalid(at, reason))?,
                })
            })
            .transpose()?;
        Ok(Self {
            path: path.to_path_buf(),
            named,
            cloud,
        })
    }

    /// Every destination name a ConfigMap may pick, the default first.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(LOCAL.to_string())
            .chain(self.named.iter().map(|s| s.name.clone()))
            .collect()
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("url {url:?} must start with http:// or https://"))
    }
}

fn tls(raw: Option<RawTls>) -> Result<TlsSpec, String> {
    let Some(raw) = raw else { return Ok(TlsSpec::default()) };
    let identity = match (raw.cert_file, raw.key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("tls: certFile and keyFile go together (mutual TLS)".into()),
    };
    Ok(TlsSpec {
        ca: raw.ca_file,
        identity,
    })
}

fn spec(d: RawDestination) -> Result<Spec, String> {
    let kind = match d.kind {
        RawKind::Connect => {
            if d.environment.is_some() || d.cluster.is_some() || d.api_key_file.is_some() || d.api_secret_file.is_some()
            {
                return Err("environment, cluster, apiKeyFile and apiSecretFile are for kind confluent-cloud".into());
            }
            Kind::Connect
        }
        RawKind::ConfluentCloud => {
            let (Some(environment), Some(cluster)) = (d.environment, d.cluster) else {
                return Err("kind confluent-cloud needs environment (env-…) and cluster (lkc-…)".into());
            };
            for (key, id) in [("environment", &environment), ("cluster", &cluster)] {
                if !valid_id(id) {
                    return Err(format!("{key} {id:?} is not a Confluent Cloud id"));
                }
            }
            Kind::ConfluentCloud { environment, cluster }
        }
    };
    let auth = match (&kind, d.auth, d.api_key_file, d.api_secret_file) {
        (Kind::ConfluentCloud { .. }, None, Some(key), Some(secret)) => AuthSpec::Basic {
            username: key,
            password: secret,
        },
        (Kind::ConfluentCloud { .. }, _, _, _) => {
            return Err("kind confluent-cloud authenticates with apiKeyFile and apiSecretFile (not auth)".into());
        }
        (Kind::Connect, None, _, _) => AuthSpec::None,
        (Kind::Connect, Some(RawAuth { basic, bearer }), _, _) => match (basic, bearer) {
            (Some(b), None) => AuthSpec::Basic {
                username: b.username_file,
                password: b.password_file,
            },
            (None, Some(b)) => AuthSpec::Bearer { token: b.token_file },
            (None, None) => AuthSpec::None,
            (Some(_), Some(_)) => return Err("auth: basic or bearer, not both".into()),
        },
    };
    let url = match (d.url, &kind) {
        (Some(url), _) => url,
        (None, Kind::ConfluentCloud { .. }) => CONFLUENT_CLOUD_API.into(),
        (None, Kind::Connect) => return Err("url is required".into()),
    };
    check_url(&url)?;
    let secrets_as = match (d.secrets_as, &d.worker_config, &kind) {
        (_, Some(_), Kind::ConfluentCloud { .. }) | (RawSecretsAs::References, _, Kind::ConfluentCloud { .. }) => {
            return Err(
                "Confluent Cloud has no config providers: workerConfig and secretsAs are for kind connect".into(),
            );
        }
        (RawSecretsAs::References, None, _) => {
            return Err("secretsAs: references needs workerConfig (a copy of its workers' properties file)".into());
        }
        (RawSecretsAs::References, Some(_), _) => SecretsAs::References,
        (RawSecretsAs::Values, _, _) => SecretsAs::Values,
    };
    Ok(Spec {
        name: d.name,
        url: url.trim_end_matches('/').to_string(),
        kind,
        auth,
        tls: tls(d.tls)?,
        worker_config: d.worker_config,
        secrets_as,
    })
}

impl Spec {
    /// The base every REST path is appended to.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.url, self.kind.prefix())
    }

    /// The client options, reading the credential and certificate files now. `file` is the
    /// destinations file, for messages.
    pub fn client_options(&self, file: &Path) -> Result<ClientOptions, DestinationsError> {
        let at = format!("destination {:?}", self.name);
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path).map_err(|e| DestinationsError::Credential {
                path: file.to_path_buf(),
                at: at.clone(),
                key,
                file: path.to_path_buf(),
                cause: e.to_string(),
            })
        };
        let credential = |key: &'static str, path: &Path| -> Result<Secret, DestinationsError> {
            let bytes = read(key, path)?;
            let text = String::from_utf8(bytes).map_err(|_| DestinationsError::Credential {
                path: file.to_path_buf(),
                at: at.clone(),
                key,
                file: path.to_path_buf(),
                cause: "not UTF-8".into(),
            })?;
            // Secret files often end in a newline that is not part of the value.
            Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
        };
        let cloud = self.kind.is_cloud();
        let auth = match &self.auth {
            AuthSpec::None => Auth::None,
            AuthSpec::Basic { username, password } => Auth::Basic {
                username: credential(if cloud { "apiKeyFile" } else { "auth.basic.usernameFile" }, username)?,
                password: credential(
                    if cloud {
                        "apiSecretFile"
                    } else {
                        "auth.basic.passwordFile"
                    },
                    password,
                )?,
            },
            AuthSpec::Bearer { token } => Auth::Bearer(credential("auth.bearer.tokenFile", token)?),
        };
        let ca = self.tls.ca.as_deref().map(|p| read("tls.caFile", p)).transpose()?;
        let identity = match &self.tls.identity {
            Some((cert, key)) => {
                let mut pem = read("tls.certFile", cert)?;
                pem.push(b'\n');
                pem.extend(read("tls.keyFile", key)?);
                Some(pem)
            }
            None => None,
        };
        Ok(ClientOptions { auth, ca, identity })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DestinationsFile, String> {
        DestinationsFile::parse(text, Path::new("dest.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_kind_and_auth() {
        let file = parse(
            r#"
destinations:
  - name: analytics
    url: https://connect.analytics:8083/
    auth: {basic: {usernameFile: /s/user, passwordFile: /s/password}}
    tls: {caFile: /s/ca.crt, certFile: /s/tls.crt, keyFile: /s/tls.key}
  - name: token
    url: http://connect.token:8083
    auth: {bearer: {tokenFile: /s/token}}
  - name: orders
    kind: confluent-cloud
    environment: env-123
    cluster: lkc-456
    apiKeyFile: /cc/key
    apiSecretFile: /cc/secret
confluentCloud: {apiKeyFile: /cc/key, apiSecretFile: /cc/secret}
"#,
        )
        .unwrap();
        assert_eq!(file.names(), ["local", "analytics", "token", "orders"]);
        let analytics = &file.named[0];
        assert_eq!(analytics.base_url(), "https://connect.analytics:8083");
        assert_eq!(analytics.tls.identity, Some(("/s/tls.crt".into(), "/s/tls.key".into())));
        assert!(matches!(file.named[1].auth, AuthSpec::Bearer { .. }));
        let orders = &file.named[2];
        assert_eq!(
            orders.base_url(),
            "https://api.confluent.cloud/connect/v1/environments/env-123/clusters/lkc-456"
        );
        assert_eq!(
            orders.auth,
            AuthSpec::Basic {
                username: "/cc/key".into(),
                password: "/cc/secret".into()
            }
        );
        let cloud = file.cloud.unwrap();
        assert_eq!(cloud.url, CONFLUENT_CLOUD_API);
        let spec = cloud.spec("x".into(), "env-1".into(), "lkc-2".into());
        assert!(spec.base_url().ends_with("/environments/env-1/clusters/lkc-2"));
    }

    #[test]
    fn an_empty_file_declares_only_the_local_worker() {
        assert_eq!(parse("{}").unwrap().names(), ["local"]);
    }

    #[test]
    fn mistakes_name_the_file_the_destination_and_the_cause() {
        let cases = [
            ("destinations: [{name: Bad_Name, url: http://x}]", "DNS label"),
            ("destinations: [{name: local, url: http://x}]", "--connect-url"),
            (
                "destinations: [{name: a, url: http://x}, {name: a, url: http://y}]",
                "declared twice",
            ),
            ("destinations: [{name: a}]", "url is required"),
            ("destinations: [{name: a, url: ftp://x}]", "must start with http"),
            (
                "destinations: [{name: a, url: http://x, password: hunter2}]",
                "unknown field `password`",
            ),
            (
                "destinations: [{name: a, url: http://x, tls: {certFile: /c}}]",
                "certFile and keyFile go together",
            ),
            (
                "destinations: [{name: a, url: http://x, auth: {basic: {usernameFile: u, passwordFile: p}, bearer: {tokenFile: t}}}]",
                "not both",
            ),
            (
                "destinations: [{name: a, kind: confluent-cloud, cluster: lkc-1}]",
                "needs environment",
            ),
            (
                "destinations: [{name: a, kind: confluent-cloud, environment: env-1, cluster: lkc-1}]",
                "apiKeyFile and apiSecretFile",
            ),
            (
                "destinations: [{name: a, kind: confluent-cloud, environment: 'env/1', cluster: lkc-1, apiKeyFile: k, apiSecretFile: s}]",
                "not a Confluent Cloud id",
            ),
            (
                "destinations: [{name: a, url: http://x, cluster: lkc-1}]",
                "for kind confluent-cloud",
            ),
            (
                "destinations: [{name: a, kind: other, url: http://x}]",
                "unknown variant `other`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with("dest.yaml: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = parse("destinations: [{name: a, url: http://x}, {name: Bad, url: http://x}]").unwrap_err();
        assert!(e.contains("destinations[1] (\"Bad\")"), "{e}");
    }

    #[test]
    fn a_connect_destination_may_take_references_with_its_workers_config_and_confluent_cloud_may_not() {
        let parse = |yaml: &str| DestinationsFile::parse(yaml, Path::new("dest.yaml"));
        let file =
            parse("destinations:\n- {name: a, url: 'http://a', workerConfig: /w.properties, secretsAs: references}\n")
                .unwrap();
        assert_eq!(file.named[0].secrets_as, SecretsAs::References);
        let e = parse("destinations:\n- {name: a, url: 'http://a', secretsAs: references}\n").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("secretsAs: references needs workerConfig (a copy of its workers' properties file)"),
            "{e}"
        );
        let e = parse("destinations:\n- {name: c, kind: confluent-cloud, environment: env-1, cluster: lkc-1, apiKeyFile: /k, apiSecretFile: /s, secretsAs: references}\n").unwrap_err();
        assert!(e.to_string().contains("Confluent Cloud has no config providers"), "{e}");
    }

    #[test]
    fn credentials_are_read_from_files_and_a_missing_one_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::write(&user, "alice\n").unwrap();
        let spec = Spec {
            name: "a".into(),
            url: "http://x".into(),
            kind: Kind::Connect,
            auth: AuthSpec::Basic {
                username: user.clone(),
                password: dir.path().join("missing"),
            },
            tls: TlsSpec::default(),
            worker_config: None,
            secrets_as: SecretsAs::Values,
        };
        let e = spec.client_options(Path::new("dest.yaml")).unwrap_err().to_string();
        assert!(
            e.starts_with("dest.yaml: destination \"a\": auth.basic.passwordFile ") && e.contains("missing"),
            "{e}"
        );
        assert!(!e.contains("alice"), "{e}");
        std::fs::write(dir.path().join("missing"), "s3cret").unwrap();
        let options = spec.client_options(Path::new("dest.yaml")).unwrap();
        match &options.auth {
            Auth::Basic { username, password } => {
                assert_eq!((username.expose(), password.expose()), ("alice", "s3cret"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{options:?}").contains("s3cret"));
    }
}
