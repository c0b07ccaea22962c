//! The connector plugins installed on a worker, and how Connect resolves `connector.class`.

use serde::Deserialize;

/// One entry of the worker's `GET /connector-plugins`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Plugin {
    pub class: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// The installed connector classes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    plugins: Vec<Plugin>,
    /// The worker's Kafka version (`GET /`), when it was read with the list.
    worker_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("not a GET /connector-plugins response: {0}")]
pub struct CatalogError(#[from] serde_json::Error);

impl Catalog {
    pub fn new(plugins: Vec<Plugin>) -> Self {
        Self {
            plugins,
            worker_version: None,
        }
    }

    pub fn with_worker_version(self, version: Option<String>) -> Self {
        Self {
            worker_version: version,
            ..self
        }
    }

    pub fn worker_version(&self) -> Option<&str> {
        self.worker_version.as_deref()
    }

    /// Parses the JSON body of `GET /connector-plugins`.
    pub fn from_json(body: &[u8]) -> Result<Self, CatalogError> {
        Ok(Self::new(serde_json::from_slice(body)?))
    }

    /// Resolves a `connector.class` as Connect does: the fully qualified name, the simple class
    /// name, or the simple name without its `Connector` suffix (`FileStreamSink`).
    pub fn resolve(&self, class: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| {
            let simple = simple_name(&p.class);
            p.class == class || simple == class || simple.strip_suffix("Connector") == Some(class)
        })
    }

    /// Up to three installed classes closest to `class`, best first.
    pub fn closest(&self, class: &str) -> Vec<&str> {
        let wanted = simple_name(class).to_lowercase();
        let mut scored: Vec<(f64, &str)> = self
            .plugins
            .iter()
            .map(|p| {
                let simple = simple_name(&p.class).to_lowercase();
                let pruned = simple.strip_suffix("connector").unwrap_or(&simple);
                let score = strsim::jaro_winkler(&wanted, &simple).max(strsim::jaro_winkler(&wanted, pruned));
                (score, p.class.as_str())
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        scored
            .into_iter()
            .filter(|(s, _)| *s > 0.6)
            .take(3)
            .map(|(_, c)| c)
            .collect()
    }
}

fn simple_name(class: &str) -> &str {
    class.rsplit('.').next().unwrap_or(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_json(
            br#"[{"class":"org.apache.kafka.connect.file.FileStreamSinkConnector","type":"sink","version":"4.3.1"},
                 {"class":"org.apache.kafka.connect.file.FileStreamSourceConnector","type":"source","version":"4.3.1"},
                 {"class":"org.apache.kafka.connect.mirror.MirrorSourceConnector","type":"source","version":"4.3.1"}]"#,
        )
        .unwrap()
    }

    #[test]
    fn resolves_the_three_forms_connect_accepts() {
        let c = catalog();
        for name in [
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "FileStreamSinkConnector",
            "FileStreamSink",
        ] {
            assert_eq!(c.resolve(name).unwrap().kind, "sink", "{name}");
        }
        assert!(c.resolve("file.FileStreamSink").is_none());
        assert!(c.resolve("FileStreamSinkConnectorX").is_none());
    }

    #[test]
    fn suggests_close_classes() {
        let c = catalog();
        assert_eq!(
            c.closest("FileStreamSinc")[0],
            "org.apache.kafka.connect.file.FileStreamSinkConnector"
        );
        assert_eq!(
            c.closest("io.x.FileStreamSourceConector")[0],
            "org.apache.kafka.connect.file.FileStreamSourceConnector"
        );
    }
}
