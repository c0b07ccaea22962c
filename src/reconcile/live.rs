//! What a destination runs, as its REST API reports it: the reconciler's view of the worker,
//! below both the planner and the ledger.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A connector's status as `GET /connectors?expand=status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct LiveStatus {
    pub connector: StateTrace,
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct StateTrace {
    pub state: String,
    #[serde(default)]
    pub trace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    pub id: i64,
    pub state: String,
    #[serde(default)]
    pub trace: Option<String>,
}

impl LiveStatus {
    /// The connector or one of its tasks is FAILED.
    pub fn failed(&self) -> bool {
        self.connector.state == "FAILED" || self.tasks.iter().any(|t| t.state == "FAILED")
    }
}

/// A connector the worker has: its config as Connect returns it (all strings, `name` included)
/// and its status, which is `None` while the worker has not written it yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub config: BTreeMap<String, String>,
    pub status: Option<LiveStatus>,
}

/// Every connector on the worker; a name not in the map does not exist.
pub type LiveState = BTreeMap<String, Live>;

#[derive(Deserialize)]
struct Expanded {
    info: Option<ExpandedInfo>,
    status: Option<LiveStatus>,
}

#[derive(Deserialize)]
struct ExpandedInfo {
    config: BTreeMap<String, String>,
}

/// Parses the body of `GET /connectors?expand=info&expand=status`. Connect leaves out a
/// connector whose info or status it cannot read yet; such names are simply not in the result
/// (the caller must not take them for absent: see `missing_from_listing`).
pub fn parse_expanded(body: &[u8]) -> Result<LiveState, serde_json::Error> {
    let raw: BTreeMap<String, Expanded> = serde_json::from_slice(body)?;
    Ok(raw
        .into_iter()
        .filter_map(|(name, e)| {
            let info = e.info?;
            Some((
                name,
                Live {
                    config: info.config,
                    status: e.status,
                },
            ))
        })
        .collect())
}
