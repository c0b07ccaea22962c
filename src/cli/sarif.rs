//! `check --output sarif`: the findings as a SARIF 2.1.0 log, for code scanning and other
//! viewers. One rule per kind of problem; results at the file, line and column of
//! [`super::annotations`], relative to the working directory (`%SRCROOT%`).

use std::path::Path;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};

use super::annotations::{Finding, Place};
use crate::pipeline::check::problem_kinds::Rule;

/// What a URI path segment may not hold as is (RFC 3986: everything but unreserved, sub-delims,
/// `:` and `@`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

const SRCROOT: &str = "%SRCROOT%";

/// The log of one run of `check`.
pub fn log(findings: &[Finding], cwd: &Path) -> Value {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "shortDescription": {"text": r.description()},
                "defaultConfiguration": {"level": level(*r)},
            })
        })
        .collect();
    let results: Vec<Value> = findings.iter().map(result).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "connect-gate",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "originalUriBaseIds": {SRCROOT: {"uri": directory_uri(cwd)}},
            // Columns count characters, as template positions do.
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

fn level(rule: Rule) -> &'static str {
    if rule.is_warning() { "warning" } else { "error" }
}

fn result(f: &Finding) -> Value {
    let index = Rule::ALL.iter().position(|r| *r == f.rule).unwrap_or_default();
    let logical = json!([{"fullyQualifiedName": f.object}]);
    let location = match &f.at {
        Place::File { path, pos } => {
            let artifact = if path.is_absolute() {
                json!({"uri": file_uri(path)})
            } else {
                json!({"uri": uri_path(path), "uriBaseId": SRCROOT})
            };
            let mut physical = json!({"artifactLocation": artifact});
            if let Some(pos) = pos {
                physical["region"] = json!({"startLine": pos.line, "startColumn": pos.column});
            }
            json!({"physicalLocation": physical, "logicalLocations": logical})
        }
        Place::Stdin => json!({"logicalLocations": logical}),
    };
    json!({
        "ruleId": f.rule.id(),
        "ruleIndex": index,
        "level": level(f.rule),
        "message": {"text": f.message},
        "locations": [location],
    })
}

/// A path as URI path segments, each percent-encoded.
fn uri_path(path: &Path) -> String {
    path.iter()
        .filter(|part| *part != "/")
        .map(|part| utf8_percent_encode(&part.to_string_lossy(), SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `file:///...` of an absolute path.
fn file_uri(path: &Path) -> String {
    format!("file:///{}", uri_path(path))
}

/// A base URI must end with a slash.
fn directory_uri(path: &Path) -> String {
    let uri = file_uri(path);
    if uri.ends_with('/') { uri } else { uri + "/" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_encode_what_a_uri_cannot_hold() {
        assert_eq!(uri_path(Path::new("m/a b#1.yaml")), "m/a%20b%231.yaml");
        assert_eq!(file_uri(Path::new("/w/x y")), "file:///w/x%20y");
        assert_eq!(directory_uri(Path::new("/")), "file:///");
        assert_eq!(directory_uri(Path::new("/w")), "file:///w/");
    }
}
