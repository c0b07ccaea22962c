//! A connector's offsets as Kafka Connect gives them (KIP-875, `GET /connectors/{name}/offsets`):
//! `{"offsets": [{"partition": {...}, "offset": {...}}, ...]}`. Each entry is also what
//! `PATCH /connectors/{name}/offsets` and a declaration's `offsets.set` take.

use serde::{Deserialize, Serialize};

use super::{ConnectClient, ConnectError, RestResponse, connector_path};
pub use crate::pipeline::check::operations::PartitionOffset;

/// The body of `GET /connectors/{name}/offsets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectorOffsets {
    pub offsets: Vec<PartitionOffset>,
}

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("connector {name:?} does not exist on Kafka Connect at {url}")]
    NotFound { url: String, name: String },
    #[error(
        "Kafka Connect at {url} has no offsets endpoint (it answered {status} to GET /connectors/{{name}}/offsets): \
         reading and setting a connector's offsets needs Kafka Connect 3.6 or later (KIP-875)"
    )]
    Unsupported { url: String, status: reqwest::StatusCode },
    #[error("Kafka Connect at {url} answered {status} to GET the offsets of connector {name:?}: {message}")]
    Status {
        url: String,
        name: String,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("Kafka Connect at {url}: unexpected answer to GET the offsets of connector {name:?}: {source}")]
    Decode {
        url: String,
        name: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Jersey's answer to a path no resource matches: what a worker without KIP-875 says, where a
/// missing connector is "Connector NAME not found".
const NO_SUCH_PATH: &str = "HTTP 404 Not Found";

impl ConnectClient {
    /// `GET /connectors/{name}/offsets`: the connector's committed offsets.
    pub async fn offsets(&self, name: &str) -> Result<ConnectorOffsets, OffsetsError> {
        let path = format!("{}/offsets", connector_path(name));
        let response = self.send(reqwest::Method::GET, &path, None).await?;
        read_offsets(self.base(), name, &response)
    }
}

/// What an answer to `GET /connectors/{name}/offsets` from the worker at `url` means.
pub fn read_offsets(url: &str, name: &str, response: &RestResponse) -> Result<ConnectorOffsets, OffsetsError> {
    let status = response.status;
    let url = url.to_string();
    let name = name.to_string();
    if status == reqwest::StatusCode::METHOD_NOT_ALLOWED
        || (status == reqwest::StatusCode::NOT_FOUND && response.message() == NO_SUCH_PATH)
    {
        return Err(OffsetsError::Unsupported { url, status });
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(OffsetsError::NotFound { url, name });
    }
    if !status.is_success() {
        return Err(OffsetsError::Status {
            url,
            name,
            status,
            message: response.message(),
        });
    }
    serde_json::from_slice(&response.body).map_err(|source| OffsetsError::Decode { url, name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> RestResponse {
        RestResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    fn read(status: u16, body: &str) -> Result<ConnectorOffsets, String> {
        read_offsets("http://w:8083", "orders", &answer(status, body)).map_err(|e| e.to_string())
    }

    #[test]
    fn source_and_sink_offsets_are_read_as_the_worker_gives_them() {
        let source = read(
            200,
            r#"{"offsets": [{"partition": {"filename": "/data/in.txt"}, "offset": {"position": 24}}]}"#,
        )
        .unwrap();
        assert_eq!(source.offsets.len(), 1);
        assert_eq!(source.offsets[0].partition["filename"], "/data/in.txt");
        assert_eq!(source.offsets[0].offset.as_ref().unwrap()["position"], 24);
        let sink = read(
            200,
            r#"{"offsets": [
                {"partition": {"kafka_topic": "t", "kafka_partition": 0}, "offset": {"kafka_offset": 5}},
                {"partition": {"kafka_topic": "t", "kafka_partition": 1}, "offset": {"kafka_offset": 9007199254740993}}
            ]}"#,
        )
        .unwrap();
        // In the worker's order, and a 64-bit offset exactly.
        assert_eq!(sink.offsets[1].partition["kafka_partition"], 1);
        assert_eq!(
            sink.offsets[1].offset.as_ref().unwrap()["kafka_offset"].as_u64(),
            Some(9_007_199_254_740_993)
        );
        assert_eq!(read(200, r#"{"offsets": []}"#).unwrap().offsets, []);
    }

    #[test]
    fn a_missing_connector_and_a_worker_without_the_endpoint_are_told_apart() {
        let missing = read(404, r#"{"error_code": 404, "message": "Connector orders not found"}"#).unwrap_err();
        assert_eq!(
            missing,
            "connector \"orders\" does not exist on Kafka Connect at http://w:8083"
        );
        for (status, body) in [
            (404, r#"{"error_code": 404, "message": "HTTP 404 Not Found"}"#),
            (405, r#"{"error_code": 405, "message": "HTTP 405 Method Not Allowed"}"#),
        ] {
            let old = read(status, body).unwrap_err();
            assert!(old.contains("needs Kafka Connect 3.6 or later"), "{old}");
            assert!(
                old.starts_with("Kafka Connect at http://w:8083 has no offsets endpoint"),
                "{old}"
            );
        }
    }

    #[test]
    fn other_answers_name_the_status_and_the_workers_message() {
        let e = read(500, r#"{"error_code": 500, "message": "Failed to read offsets"}"#).unwrap_err();
        assert_eq!(
            e,
            "Kafka Connect at http://w:8083 answered 500 Internal Server Error to GET the offsets of connector \"orders\": Failed to read offsets"
        );
        for body in ["not json", r#"{"offsets": [{"partition": "p", "offset": {}}]}"#, "{}"] {
            let e = read(200, body).unwrap_err();
            assert!(e.contains("unexpected answer"), "{body}: {e}");
        }
    }
}
