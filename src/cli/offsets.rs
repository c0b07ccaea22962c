//! `connect-gate offsets NAME`: a connector's current offsets, read from its worker, printed as
//! the `offsets` value of its declaration (`{"token": ..., "set": [...]}`), so that moving a
//! connector is copy, edit, commit.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::config::OffsetsArgs;
use crate::connect::destinations::{DestinationsError, DestinationsFile, LOCAL};
use crate::connect::offsets::{ConnectorOffsets, OffsetsError, PartitionOffset};
use crate::connect::{ClientOptions, ConnectClient, ConnectError};
use crate::pipeline::check::operations::is_token;
use crate::pipeline::parse::manifest::CLOUD_LABEL;

#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("the connector name is empty")]
    EmptyName,
    #[error("--token {0:?}: a token is 1 to 128 letters, digits, '.', '_', '-' or ':'")]
    Token(String),
    #[error("--connect-url {0:?} must start with http:// or https://")]
    Url(String),
    #[error("--destination {0:?} needs --destinations FILE, the file that declares it")]
    NoFile(String),
    #[error("{}: no destination {name:?} is declared; destinations: {names}", file.display())]
    Unknown { file: PathBuf, name: String, names: String },
    #[error(
        "destination {0:?} is Confluent Cloud: reading offsets is not supported there, only from Kafka Connect workers \
         (destinations of kind connect, or the local worker)"
    )]
    Cloud(String),
    #[error(transparent)]
    File(#[from] DestinationsError),
    #[error("destination {name:?}: {source}")]
    Client { name: String, source: ConnectError },
    #[error(transparent)]
    Read(#[from] OffsetsError),
}

impl CommandError {
    /// 1 when the worker says there is no such connector (as `check` exits 1 for a rejection:
    /// an answer, not a failure); 2 for every usage, file or worker error.
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Read(OffsetsError::NotFound { .. }) => ExitCode::from(1),
            _ => ExitCode::from(2),
        }
    }
}

/// The `offsets` value of a connector declaration.
#[derive(Debug, Serialize)]
struct Declared<'a> {
    token: &'a str,
    set: &'a [PartitionOffset],
}

/// The offsets the worker gave, as a declaration's `offsets` value, pretty-printed.
fn declaration(token: &str, read: &ConnectorOffsets) -> String {
    serde_json::to_string_pretty(&Declared {
        token,
        set: &read.offsets,
    })
    .expect("JSON maps serialise")
}

/// What a declaration's token may be (the admission rule).
/// A token that is new unless two people read within the same second: the UTC time, with `-`
/// for `:` so it also reads well in a file or branch name.
fn suggested_token(now: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(now).to_string().replace(':', "-")
}

pub fn main(args: &OffsetsArgs) -> ExitCode {
    match super::current_thread().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connect-gate: {e}");
            e.exit_code()
        }
    }
}

async fn run(args: &OffsetsArgs) -> Result<(), CommandError> {
    if args.name.is_empty() {
        return Err(CommandError::EmptyName);
    }
    let token = match &args.token {
        Some(t) if !is_token(t) => return Err(CommandError::Token(t.clone())),
        Some(t) => t.clone(),
        None => suggested_token(std::time::SystemTime::now()),
    };
    let client = client(args)?;
    let read = client.offsets(&args.name).await?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", declaration(&token, &read));
    let what = match read.offsets.len() {
        0 => "has no committed offsets yet (\"set\" is empty)".to_string(),
        1 => "has offsets for 1 partition".to_string(),
        n => format!("has offsets for {n} partitions"),
    };
    eprintln!(
        "connect-gate: connector {:?} on Kafka Connect at {} {what}.\n\
         To set them: paste the printed JSON as the \"offsets\" value of the connector's declaration in its \
         ConfigMap template, beside \"name\" and \"config\", edit \"set\", and commit; each new \"token\" is \
         acted on once.",
        args.name,
        client.base()
    );
    Ok(())
}

/// The client of the worker to read from: `--destination` of `--destinations`, else the local
/// worker at `--connect-url`.
fn client(args: &OffsetsArgs) -> Result<ConnectClient, CommandError> {
    let name = match args.destination.as_deref() {
        None | Some(LOCAL) => {
            let url = &args.connect_url;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(CommandError::Url(url.clone()));
            }
            return ConnectClient::with_options(url, &ClientOptions::default()).map_err(|source| {
                CommandError::Client {
                    name: LOCAL.into(),
                    source,
                }
            });
        }
        // `destination.cc` or an id of one, `destination.cc:NAME`, as status and Events name it.
        Some(id) if id == CLOUD_LABEL || id.starts_with(&format!("{CLOUD_LABEL}:")) => {
            return Err(CommandError::Cloud(id.into()));
        }
        Some(name) => name,
    };
    let path = args
        .destinations
        .as_deref()
        .ok_or_else(|| CommandError::NoFile(name.into()))?;
    let file = DestinationsFile::load(path)?;
    let spec = file
        .named
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| CommandError::Unknown {
            file: path.to_path_buf(),
            name: name.into(),
            names: file.names().join(", "),
        })?;
    if spec.kind.is_cloud() {
        return Err(CommandError::Cloud(name.into()));
    }
    let options = spec.client_options(path)?;
    ConnectClient::with_options(&spec.base_url(), &options).map_err(|source| CommandError::Client {
        name: name.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn offsets(body: &str) -> ConnectorOffsets {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn a_source_connectors_offsets_print_as_the_offsets_value_of_its_declaration() {
        let read = offsets(r#"{"offsets": [{"partition": {"filename": "/data/in.txt"}, "offset": {"position": 24}}]}"#);
        assert_eq!(
            declaration("2026-12-06T21-30-00Z", &read),
            r#"{
  "token": "2026-12-06T21-30-00Z",
  "set": [
    {
      "partition": {
        "filename": "/data/in.txt"
      },
      "offset": {
        "position": 24
      }
    }
  ]
}"#
        );
    }

    #[test]
    fn a_sink_connectors_offsets_keep_the_workers_order_and_exact_numbers() {
        let read = offsets(
            r#"{"offsets": [
                {"partition": {"kafka_topic": "orders", "kafka_partition": 1}, "offset": {"kafka_offset": 18446744073709551615}},
                {"partition": {"kafka_topic": "orders", "kafka_partition": 0}, "offset": {"kafka_offset": 0}}
            ]}"#,
        );
        let printed: serde_json::Value = serde_json::from_str(&declaration("t", &read)).unwrap();
        assert_eq!(
            printed,
            serde_json::json!({"token": "t", "set": [
                {"partition": {"kafka_topic": "orders", "kafka_partition": 1}, "offset": {"kafka_offset": u64::MAX}},
                {"partition": {"kafka_topic": "orders", "kafka_partition": 0}, "offset": {"kafka_offset": 0}},
            ]})
        );
        assert_eq!(
            declaration("t", &offsets(r#"{"offsets": []}"#)),
            "{\n  \"token\": \"t\",\n  \"set\": []\n}"
        );
    }

    #[test]
    fn the_suggested_token_is_the_utc_time_and_a_is_token() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_592_600);
        assert_eq!(suggested_token(at), "2026-12-06T21-30-00Z");
        assert!(is_token(&suggested_token(SystemTime::now())));
    }

    #[test]
    fn tokens_are_1_to_128_letters_digits_dots_underscores_dashes_or_colons() {
        for good in ["a", "v2", "2026-12-06T21:30:00Z", "reset_1.b", &"x".repeat(128)] {
            assert!(is_token(good), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", "$(x)", &"x".repeat(129)] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    fn args(destination: Option<&str>, destinations: Option<PathBuf>) -> OffsetsArgs {
        OffsetsArgs {
            name: "orders".into(),
            connect_url: "http://127.0.0.1:1".into(),
            destinations,
            destination: destination.map(Into::into),
            token: None,
        }
    }

    #[test]
    fn the_worker_is_the_local_one_or_a_declared_connect_destination_never_confluent_cloud() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("destinations.yaml");
        std::fs::write(
            &file,
            "destinations:\n\
             - {name: analytics, url: 'http://analytics:8083/'}\n\
             - {name: orders-cloud, kind: confluent-cloud, environment: env-1, cluster: lkc-2, apiKeyFile: /k, apiSecretFile: /s}\n",
        )
        .unwrap();
        let base = |d, f| {
            client(&args(d, f))
                .map(|c| c.base().to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(base(None, None).unwrap(), "http://127.0.0.1:1");
        assert_eq!(base(Some("local"), Some(file.clone())).unwrap(), "http://127.0.0.1:1");
        assert_eq!(
            base(Some("analytics"), Some(file.clone())).unwrap(),
            "http://analytics:8083"
        );
        for cloud in ["orders-cloud", "destination.cc", "destination.cc:cc.env.e.kafka.k"] {
            let e = base(Some(cloud), Some(file.clone())).unwrap_err();
            assert!(
                e.contains("is Confluent Cloud: reading offsets is not supported"),
                "{e}"
            );
        }
        let e = base(Some("billing"), Some(file.clone())).unwrap_err();
        assert!(
            e.ends_with("no destination \"billing\" is declared; destinations: local, analytics, orders-cloud"),
            "{e}"
        );
        let e = base(Some("analytics"), None).unwrap_err();
        assert_eq!(
            e,
            "--destination \"analytics\" needs --destinations FILE, the file that declares it"
        );
        let mut bad = args(None, None);
        bad.connect_url = "localhost:8083".into();
        assert!(matches!(client(&bad), Err(CommandError::Url(_))));
    }

    #[test]
    fn only_a_missing_connector_exits_1() {
        let missing = CommandError::Read(OffsetsError::NotFound {
            url: "u".into(),
            name: "n".into(),
        });
        assert_eq!(missing.exit_code(), ExitCode::from(1));
        assert_eq!(CommandError::EmptyName.exit_code(), ExitCode::from(2));
    }
}
