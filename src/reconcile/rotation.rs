//! Which connectors to restart because a file their config-provider references read changed.
//! Kafka's built-in providers give no TTL: a running connector keeps the value it was started
//! with until it is restarted. A file's version is its identity on disk and its modification
//! time (a Secret volume's update swaps in new files; an edit changes the time), never anything
//! read from it, so no version says anything about a secret value.
//!
//! Kept by the leader between passes: the first sight of a connector's files is recorded, not
//! acted on, so a sidecar restart or a leader change restarts nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The version of a set of files, as the disk shows it now.
pub fn version(files: &BTreeSet<PathBuf>) -> String {
    files
        .iter()
        .map(|f| match std::fs::metadata(f) {
            Ok(m) => format!("{}:{}:{}.{}", f.display(), m.ino(), m.mtime(), m.mtime_nsec()),
            Err(_) => format!("{}:missing", f.display()),
        })
        .collect::<Vec<_>>()
        .join("|")
}

#[derive(Debug, Default)]
pub struct Rotation {
    /// The version each connector was last started (or first seen) with.
    started: BTreeMap<String, String>,
    /// The versions of this pass, until the restarts they call for are done.
    current: BTreeMap<String, String>,
}

impl Rotation {
    /// The connectors whose files' version changed since they were last started, out of
    /// `current` (name -> version of each connector that references files). First sightings are
    /// recorded; connectors no longer in `current` are forgotten.
    pub fn changed(&mut self, current: BTreeMap<String, String>) -> BTreeSet<String> {
        self.started.retain(|name, _| current.contains_key(name));
        for (name, version) in &current {
            self.started.entry(name.clone()).or_insert_with(|| version.clone());
        }
        let changed = current
            .iter()
            .filter(|(name, version)| self.started.get(*name) != Some(*version))
            .map(|(name, _)| name.clone())
            .collect();
        self.current = current;
        changed
    }

    /// `name` was restarted, or written (which restarts it), with this pass's files.
    pub fn restarted(&mut self, name: &str) {
        if let Some(version) = self.current.get(name) {
            self.started.insert(name.to_string(), version.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(rotation: &mut Rotation, versions: &[(&str, &str)]) -> Vec<String> {
        let current = versions.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        rotation.changed(current).into_iter().collect()
    }

    #[test]
    fn a_first_sight_restarts_nothing_and_a_change_restarts_once() {
        let mut r = Rotation::default();
        assert!(pass(&mut r, &[("a", "1"), ("b", "1")]).is_empty());
        assert_eq!(pass(&mut r, &[("a", "2"), ("b", "1")]), ["a"]);
        // Not restarted yet (it failed, or it was not running): still due.
        assert_eq!(pass(&mut r, &[("a", "2"), ("b", "1")]), ["a"]);
        r.restarted("a");
        assert!(pass(&mut r, &[("a", "2"), ("b", "1")]).is_empty());
    }

    #[test]
    fn a_connector_that_goes_away_and_comes_back_is_a_first_sight() {
        let mut r = Rotation::default();
        pass(&mut r, &[("a", "1")]);
        pass(&mut r, &[]);
        assert!(pass(&mut r, &[("a", "2")]).is_empty());
    }

    #[test]
    fn a_version_changes_with_the_file_never_with_what_it_holds_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "one").unwrap();
        let files = BTreeSet::from([file.clone()]);
        let before = version(&files);
        assert!(!before.contains("one"));
        // A Secret volume update: a new file takes the old one's place.
        let next = dir.path().join(".next");
        std::fs::write(&next, "two").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert_ne!(version(&files), before);
    }
}
