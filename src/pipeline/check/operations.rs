//! Day-2 operations a connector declaration may carry, acted on once per token by the
//! reconciler (`reconcile/day2.rs`): `restart` and `offsets` (Kafka Connect's offsets API,
//! KIP-875). Pure: their shape, and whether the destination can do them, as admission judges it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::plugins::Plugin;

/// Tokens are shown in status, Events and metrics-free logs; bounded and plain.
pub const TOKEN_MAX: usize = 128;

/// `"restart": "TOKEN"` or `{"token": ..., "onlyFailed": true}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    pub token: String,
    pub only_failed: bool,
}

/// `{"token": ..., "reset": true}` or `{"token": ..., "set": [...]}`; exactly one of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offsets {
    pub token: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<PartitionOffset>>,
}

/// One entry of `offsets.set`, as `PATCH /connectors/{name}/offsets` takes it and `GET` gives
/// it. A source connector's partition and offset are whatever it defines (FileStreamSource:
/// `{"filename"}`, `{"position"}`); a sink's are `{"kafka_topic", "kafka_partition"}` and
/// `{"kafka_offset"}`. A null offset resets that partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub partition: Map<String, Value>,
    pub offset: Option<Map<String, Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperationProblem {
    #[error("`restart` must be a token string or {{\"token\": ..., \"onlyFailed\": true|false}}")]
    RestartShape,
    #[error("`{field}` token {token:?} is invalid: a token is 1 to {TOKEN_MAX} letters, digits, '.', '_', '-' or ':'")]
    BadToken { field: &'static str, token: String },
    #[error(
        "`offsets` must be {{\"token\": ..., \"reset\": true}} or {{\"token\": ..., \"set\": [{{\"partition\": {{...}}, \"offset\": {{...}}}}, ...]}}"
    )]
    OffsetsShape,
    #[error("`offsets` must have exactly one of `\"reset\": true` and `set`")]
    ResetXorSet,
    #[error("`offsets.set` is empty; to reset every partition, declare `\"reset\": true`")]
    EmptySet,
    #[error("`offsets.set[{index}]` must be {{\"partition\": {{...}}, \"offset\": {{...}} or null}}")]
    EntryShape { index: usize },
    #[error(
        "`offsets.set[{index}]` is not a sink connector's offset: a sink's partition is {{\"kafka_topic\": string, \"kafka_partition\": integer}} and its offset {{\"kafka_offset\": integer}} or null"
    )]
    SinkEntry { index: usize },
    #[error("`{field}` needs Kafka Connect {needed} or later ({why}); the worker runs {running}")]
    WorkerTooOld {
        field: &'static str,
        needed: &'static str,
        why: &'static str,
        running: String,
    },
    #[error(
        "the `{field}` token depends on variable or env values; a token is shown in status and Events, so write it out in the template"
    )]
    TokenFromInputs { field: &'static str },
    #[error(
        "`{field}` cannot be declared for destination {destination}: it is Confluent Cloud, and connect-gate drives restarts and offsets only through the Kafka Connect REST API"
    )]
    Unsupported { field: &'static str, destination: String },
}

/// The day-2 operations of a rendered declaration.
#[derive(Debug, Default)]
pub struct Declared {
    pub restart: Option<Restart>,
    pub offsets: Option<Offsets>,
    pub problems: Vec<OperationProblem>,
}

/// Reads `restart` and `offsets` from a rendered declaration's top level.
pub fn read(top: &Map<String, Value>) -> Declared {
    let mut declared = Declared::default();
    let problems = &mut declared.problems;
    declared.restart = match top.get("restart") {
        None | Some(Value::Null) => None,
        Some(value) => restart(value, problems),
    };
    declared.offsets = match top.get("offsets") {
        None | Some(Value::Null) => None,
        Some(value) => offsets(value, problems),
    };
    declared
}

fn restart(value: &Value, problems: &mut Vec<OperationProblem>) -> Option<Restart> {
    let (token, only_failed) = match value {
        Value::String(token) => (token, false),
        Value::Object(o) if o.keys().all(|k| k == "token" || k == "onlyFailed") => {
            let only_failed = match o.get("onlyFailed") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return shape(problems, OperationProblem::RestartShape),
            };
            match o.get("token") {
                Some(Value::String(token)) => (token, only_failed),
                _ => return shape(problems, OperationProblem::RestartShape),
            }
        }
        _ => return shape(problems, OperationProblem::RestartShape),
    };
    let token = valid_token("restart", token, problems)?;
    Some(Restart { token, only_failed })
}

fn offsets(value: &Value, problems: &mut Vec<OperationProblem>) -> Option<Offsets> {
    let Value::Object(o) = value else {
        return shape(problems, OperationProblem::OffsetsShape);
    };
    if !o.keys().all(|k| ["token", "reset", "set"].contains(&k.as_str())) {
        return shape(problems, OperationProblem::OffsetsShape);
    }
    let Some(Value::String(token)) = o.get("token") else {
        return shape(problems, OperationProblem::OffsetsShape);
    };
    let reset = match o.get("reset") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return shape(problems, OperationProblem::OffsetsShape),
    };
    let set = match o.get("set") {
        None => None,
        Some(Value::Array(entries)) => Some(entries),
        Some(_) => return shape(problems, OperationProblem::OffsetsShape),
    };
    if reset == set.is_some() {
        return shape(problems, OperationProblem::ResetXorSet);
    }
    let set = match set {
        Some(entries) if entries.is_empty() => return shape(problems, OperationProblem::EmptySet),
        Some(entries) => Some(
            entries
                .iter()
                .enumerate()
                .map(|(index, e)| entry(e).ok_or(OperationProblem::EntryShape { index }))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|p| problems.push(p))
                .ok()?,
        ),
        None => None,
    };
    let token = valid_token("offsets", token, problems)?;
    Some(Offsets { token, reset, set })
}

fn entry(e: &Value) -> Option<PartitionOffset> {
    let o = e.as_object().filter(|o| o.len() == 2)?;
    let partition = o.get("partition")?.as_object()?.clone();
    let offset = match o.get("offset")? {
        Value::Null => None,
        Value::Object(offset) => Some(offset.clone()),
        _ => return None,
    };
    Some(PartitionOffset { partition, offset })
}

fn shape<T>(problems: &mut Vec<OperationProblem>, problem: OperationProblem) -> Option<T> {
    problems.push(problem);
    None
}

/// Whether `token` is a token: 1 to [`TOKEN_MAX`] letters, digits, '.', '_', '-' or ':'.
pub fn is_token(token: &str) -> bool {
    (1..=TOKEN_MAX).contains(&token.len())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

fn valid_token(field: &'static str, token: &str, problems: &mut Vec<OperationProblem>) -> Option<String> {
    if is_token(token) {
        return Some(token.to_string());
    }
    problems.push(OperationProblem::BadToken {
        field,
        token: token.chars().take(TOKEN_MAX + 1).collect(),
    });
    None
}

/// The tokens of the real render that the placeholder render (`shown`, `None` when it yields no
/// connector) does not repeat: they depend on variable or env values, and a token is shown.
pub fn tokens_from_inputs(
    real: (Option<&Restart>, Option<&Offsets>),
    shown: Option<(Option<&Restart>, Option<&Offsets>)>,
) -> Vec<OperationProblem> {
    let restart = |r: Option<&Restart>| r.map(|r| r.token.clone());
    let offsets = |o: Option<&Offsets>| o.map(|o| o.token.clone());
    let pairs = [
        ("restart", restart(real.0), shown.map(|s| restart(s.0))),
        ("offsets", offsets(real.1), shown.map(|s| offsets(s.1))),
    ];
    pairs
        .into_iter()
        .filter(|(_, real, shown)| real.is_some() && shown.as_ref() != Some(real))
        .map(|(field, _, _)| OperationProblem::TokenFromInputs { field })
        .collect()
}

/// What the destination must be able to do for the declared operations: `plugin` is the
/// connector's class as the worker lists it (sink or source), `worker_version` its `GET /`
/// version when known. `cloud` names a Confluent Cloud destination.
pub fn check_destination(
    restart: Option<&Restart>,
    offsets: Option<&Offsets>,
    plugin: Option<&Plugin>,
    worker_version: Option<&str>,
    cloud: Option<&str>,
) -> Vec<OperationProblem> {
    let mut problems = Vec::new();
    let declared = [("restart", restart.is_some()), ("offsets", offsets.is_some())];
    if let Some(destination) = cloud {
        return declared
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(field, _)| OperationProblem::Unsupported {
                field,
                destination: destination.to_string(),
            })
            .collect();
    }
    // What each operation needs of the worker: (declared, field, version, shown, why).
    let needs = [
        (
            restart.is_some(),
            "restart",
            (3, 0),
            "3.0",
            "restarting a connector with its tasks, KIP-745",
        ),
        (
            offsets.is_some(),
            "offsets",
            (3, 7),
            "3.7",
            "the offsets API, KIP-875, and creating a connector stopped, KIP-980",
        ),
    ];
    if let Some((running, version)) = worker_version.and_then(|v| Some((v, kafka_version(v)?))) {
        for (declared, field, least, needed, why) in needs {
            if declared && version < least {
                problems.push(OperationProblem::WorkerTooOld {
                    field,
                    needed,
                    why,
                    running: running.to_string(),
                });
            }
        }
    }
    let Some(offsets) = offsets else { return problems };
    if plugin.is_some_and(|p| p.kind == "sink") {
        for (index, e) in offsets.set.iter().flatten().enumerate() {
            if !sink_entry(e) {
                problems.push(OperationProblem::SinkEntry { index });
            }
        }
    }
    problems
}

fn sink_entry(e: &PartitionOffset) -> bool {
    let p = &e.partition;
    let partition = p.len() == 2
        && p.get("kafka_topic").is_some_and(Value::is_string)
        && p.get("kafka_partition").is_some_and(Value::is_u64);
    let offset = e
        .offset
        .as_ref()
        .is_none_or(|o| o.len() == 1 && o.get("kafka_offset").is_some_and(Value::is_u64));
    partition && offset
}

/// The Apache Kafka (major, minor) of a worker's `GET /` version: `4.3.1`, or a Confluent
/// Platform build such as `7.6.0-ccs` (Confluent Platform 7.x ships Kafka 3.x, 8.x Kafka 4.x).
/// `None` when unrecognised: then nothing is denied for it.
pub fn kafka_version(version: &str) -> Option<(u32, u32)> {
    let (numbers, suffix) = version.split_once('-').unwrap_or((version, ""));
    let mut parts = numbers.split('.').map(str::parse::<u32>);
    let (major, minor) = (parts.next()?.ok()?, parts.next()?.ok()?);
    let confluent = suffix.starts_with("ccs") || suffix.starts_with("ce");
    Some(match (confluent, major) {
        (true, 7) => (3, minor),
        (true, 8) => (4, minor),
        (true, m) if m < 7 => (2, 0),
        _ => (major, minor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_json(v: Value) -> Declared {
        read(v.as_object().unwrap())
    }

    fn problems(v: Value) -> Vec<String> {
        read_json(v).problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_restart_is_a_token_or_an_object_with_only_failed() {
        let d = read_json(json!({"restart": "2026-12-06.1"}));
        assert_eq!(
            d.restart,
            Some(Restart {
                token: "2026-12-06.1".into(),
                only_failed: false
            })
        );
        let d = read_json(json!({"restart": {"token": "t:1", "onlyFailed": true}}));
        assert!(d.restart.unwrap().only_failed);
        for bad in [
            json!(1),
            json!({"token": "t", "only": true}),
            json!({"onlyFailed": true}),
            json!({"token": "t", "onlyFailed": "yes"}),
        ] {
            assert_eq!(
                problems(json!({"restart": bad})),
                ["`restart` must be a token string or {\"token\": ..., \"onlyFailed\": true|false}"]
            );
        }
        assert!(read_json(json!({"restart": null})).restart.is_none());
    }

    #[test]
    fn tokens_are_short_and_plain() {
        assert_eq!(
            problems(json!({"restart": "a b"})),
            ["`restart` token \"a b\" is invalid: a token is 1 to 128 letters, digits, '.', '_', '-' or ':'"]
        );
        assert_eq!(problems(json!({"restart": ""})).len(), 1);
        assert_eq!(
            problems(json!({"offsets": {"token": "x".repeat(129), "reset": true}})).len(),
            1
        );
        assert!(problems(json!({"offsets": {"token": "x".repeat(128), "reset": true}})).is_empty());
    }

    #[test]
    fn offsets_are_a_reset_xor_a_set_of_partition_offsets() {
        let d = read_json(json!({"offsets": {"token": "o1", "reset": true}}));
        assert_eq!(
            d.offsets,
            Some(Offsets {
                token: "o1".into(),
                reset: true,
                set: None
            })
        );
        let d = read_json(json!({"offsets": {"token": "o2", "set": [
            {"partition": {"filename": "/x"}, "offset": {"position": 5}},
            {"partition": {"filename": "/y"}, "offset": null}]}}));
        let set = d.offsets.unwrap().set.unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set[1].offset, None);
        let xor = "`offsets` must have exactly one of `\"reset\": true` and `set`";
        assert_eq!(problems(json!({"offsets": {"token": "o"}})), [xor]);
        assert_eq!(
            problems(json!({"offsets": {"token": "o", "reset": true, "set": []}})),
            [xor]
        );
        assert_eq!(
            problems(json!({"offsets": {"token": "o", "set": []}})),
            ["`offsets.set` is empty; to reset every partition, declare `\"reset\": true`"]
        );
        assert_eq!(
            problems(
                json!({"offsets": {"token": "o", "set": [{"partition": {}, "offset": {}}, {"partition": 1, "offset": {}}]}})
            ),
            ["`offsets.set[1]` must be {\"partition\": {...}, \"offset\": {...} or null}"]
        );
        for bad in [
            json!("o"),
            json!({"reset": true}),
            json!({"token": "o", "reset": "yes"}),
            json!({"token": "o", "reset": true, "x": 1}),
        ] {
            assert_eq!(problems(json!({ "offsets": bad })).len(), 1, "{bad}");
        }
    }

    fn sink() -> Plugin {
        Plugin {
            class: "org.apache.kafka.connect.file.FileStreamSinkConnector".into(),
            kind: "sink".into(),
        }
    }

    fn offsets_of(v: Value) -> Offsets {
        read_json(json!({ "offsets": v })).offsets.unwrap()
    }

    #[test]
    fn a_sink_connector_takes_only_kafka_topic_partition_offsets() {
        let good = offsets_of(json!({"token": "o", "set": [
            {"partition": {"kafka_topic": "t", "kafka_partition": 0}, "offset": {"kafka_offset": 10}},
            {"partition": {"kafka_topic": "t", "kafka_partition": 1}, "offset": null}]}));
        assert!(check_destination(None, Some(&good), Some(&sink()), Some("4.3.1"), None).is_empty());
        let bad = offsets_of(json!({"token": "o", "set": [
            {"partition": {"kafka_topic": "t", "kafka_partition": 0}, "offset": {"kafka_offset": 10}},
            {"partition": {"filename": "/x"}, "offset": {"position": 1}},
            {"partition": {"kafka_topic": "t", "kafka_partition": -1}, "offset": {"kafka_offset": 1}}]}));
        let found: Vec<String> = check_destination(None, Some(&bad), Some(&sink()), None, None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 2);
        assert!(
            found[0].starts_with("`offsets.set[1]` is not a sink connector's offset"),
            "{found:?}"
        );
        assert!(found[1].starts_with("`offsets.set[2]`"), "{found:?}");
        let source = Plugin {
            kind: "source".into(),
            ..sink()
        };
        assert!(check_destination(None, Some(&bad), Some(&source), None, None).is_empty());
    }

    #[test]
    fn a_token_that_depends_on_inputs_is_denied_without_its_value() {
        let restart = |token: &str| Restart {
            token: token.into(),
            only_failed: false,
        };
        let reset = offsets_of(json!({"token": "o1", "reset": true}));
        let (real, shown) = (restart("s3cret"), restart("PLACEHOLDER"));
        let found = tokens_from_inputs((Some(&real), Some(&reset)), Some((Some(&shown), Some(&reset))));
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "the `restart` token depends on variable or env values; a token is shown in status and Events, so write it out in the template"
            ]
        );
        assert!(tokens_from_inputs((Some(&real), None), Some((Some(&real), None))).is_empty());
        assert_eq!(tokens_from_inputs((None, Some(&reset)), None).len(), 1);
    }

    #[test]
    fn an_old_worker_or_confluent_cloud_is_denied_naming_why() {
        let reset = offsets_of(json!({"token": "o", "reset": true}));
        let restart = Restart {
            token: "r".into(),
            only_failed: false,
        };
        let found = check_destination(Some(&restart), Some(&reset), None, Some("3.6.2"), None);
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "`offsets` needs Kafka Connect 3.7 or later (the offsets API, KIP-875, and creating a connector stopped, KIP-980); the worker runs 3.6.2"
            ]
        );
        assert!(check_destination(Some(&restart), Some(&reset), None, Some("7.7.1-ccs"), None).is_empty());
        assert_eq!(
            check_destination(Some(&restart), None, None, Some("2.8.0"), None).len(),
            1
        );
        assert!(check_destination(Some(&restart), Some(&reset), None, Some("trunk"), None).is_empty());
        let cloud = check_destination(Some(&restart), Some(&reset), None, None, Some("analytics"));
        assert_eq!(
            cloud[1].to_string(),
            "`offsets` cannot be declared for destination analytics: it is Confluent Cloud, and connect-gate drives restarts and offsets only through the Kafka Connect REST API"
        );
        assert_eq!(kafka_version("4.3.1"), Some((4, 3)));
        assert_eq!(kafka_version("7.6.0-ccs"), Some((3, 6)));
        assert_eq!(kafka_version("8.0.0-ce"), Some((4, 0)));
    }
}
