//! `check --output github|sarif`: every problem and warning as a finding at the line of its
//! ConfigMap's data key in the YAML file, or for a template error with a position, at that
//! position inside the key's literal block scalar. Messages are the verdicts' own texts, built
//! from the placeholder render: no value is added here.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::cli::source_map::{FilePos, SourceMap};
use crate::pipeline::check::problem_kinds::{ProblemKind, Rule};
use crate::pipeline::check::verdict::Verdict;
use crate::pipeline::parse::manifest::STDIN;

/// Said of every finding from standard input, which has no file to point into.
pub const NO_FILE_POSITION: &str = "(from stdin: no file position)";

/// One annotation.
#[derive(Clone, Debug)]
pub struct Finding {
    pub rule: Rule,
    /// The verdict's location and the problem or warning.
    pub message: String,
    pub at: Place,
    /// `namespace/name/key`: where it is in the cluster's terms.
    pub object: String,
}

/// Where a finding points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A file, as given relative to the working directory when it is under it; the position
    /// when the file could be mapped.
    File { path: PathBuf, pos: Option<FilePos> },
    /// Standard input: no file position.
    Stdin,
}

/// Every problem and warning of `verdicts`, problems first within each verdict. Files are read
/// again to find positions; one that cannot be read or parsed gives findings without a line.
pub fn findings(verdicts: &[Verdict], cwd: &Path) -> Vec<Finding> {
    let mut maps: BTreeMap<PathBuf, Option<SourceMap>> = BTreeMap::new();
    let mut out = Vec::new();
    for v in verdicts {
        let file = v.origin.file.as_deref().filter(|f| *f != Path::new(STDIN));
        let map = file.and_then(|f| {
            maps.entry(f.to_path_buf())
                .or_insert_with(|| std::fs::read_to_string(f).ok().and_then(|t| SourceMap::of_yaml(&t)))
                .as_ref()
        });
        let site = map.and_then(|m| m.site(v.origin.namespace.as_deref(), &v.origin.name, &v.key));
        let place = |pos: Option<&crate::pipeline::render::evaluation::Pos>| match file {
            Some(f) => Place::File {
                path: relative(f, cwd),
                pos: site.map(|s| s.locate(pos)),
            },
            None => Place::Stdin,
        };
        let object = match &v.origin.namespace {
            Some(ns) => format!("{ns}/{}/{}", v.origin.name, v.key),
            None => format!("{}/{}", v.origin.name, v.key),
        };
        let suffix = if file.is_none() {
            format!(" {NO_FILE_POSITION}")
        } else {
            String::new()
        };
        let location = v.location();
        for (i, problem) in v.problems.iter().enumerate() {
            // A problem recorded without its kind (none today) is still reported, at the key.
            let kind = v.kinds.get(i).cloned().unwrap_or(ProblemKind {
                rule: Rule::ConnectorShape,
                pos: None,
            });
            out.push(Finding {
                rule: kind.rule,
                message: format!("{location}: {problem}{suffix}"),
                at: place(kind.pos.as_ref()),
                object: object.clone(),
            });
        }
        for warning in &v.warnings {
            out.push(Finding {
                rule: Rule::Warning,
                message: format!("{location}: {warning}{suffix}"),
                at: place(None),
                object: object.clone(),
            });
        }
    }
    out
}

/// `path` relative to `cwd` when it is under it (lexically: `./a/../b` is `b`), else as given.
pub fn relative(path: &Path, cwd: &Path) -> PathBuf {
    let absolute = normalise(&cwd.join(path));
    match absolute.strip_prefix(normalise(cwd)) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => absolute,
    }
}

fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// GitHub Actions workflow commands, one line each (`::error file=..,line=..,col=..,title=..::..`),
/// then the summary line `check` prints as text.
pub fn github(findings: &[Finding], summary: &str) -> String {
    let mut out = String::new();
    for f in findings {
        let command = if f.rule.is_warning() { "warning" } else { "error" };
        let mut properties = Vec::new();
        if let Place::File { path, pos } = &f.at {
            properties.push(format!("file={}", property(&path.display().to_string())));
            if let Some(pos) = pos {
                properties.push(format!("line={}", pos.line));
                properties.push(format!("col={}", pos.column));
            }
        }
        properties.push(format!("title={}", property(&format!("connect-gate {}", f.rule.id()))));
        out.push_str(&format!("::{command} {}::{}\n", properties.join(","), data(&f.message)));
    }
    out.push_str(summary);
    out
}

/// The escaping of a workflow command's message: `%`, CR and LF.
fn data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// The escaping of a workflow command's property value: the message's, and `:` and `,`.
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_the_actions_toolkit_does() {
        assert_eq!(data("50% done\r\nnext: a,b"), "50%25 done%0D%0Anext: a,b");
        assert_eq!(property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn paths_are_relative_to_the_working_directory_when_under_it() {
        let cwd = Path::new("/repo");
        assert_eq!(relative(Path::new("./m/a.yaml"), cwd), Path::new("m/a.yaml"));
        assert_eq!(relative(Path::new("/repo/m/../a.yaml"), cwd), Path::new("a.yaml"));
        assert_eq!(
            relative(Path::new("/elsewhere/a.yaml"), cwd),
            Path::new("/elsewhere/a.yaml")
        );
        assert_eq!(relative(Path::new("../x/a.yaml"), cwd), Path::new("/x/a.yaml"));
    }

    #[test]
    fn github_lines() {
        let findings = vec![
            Finding {
                rule: Rule::TemplateSyntax,
                message: "ConfigMap t/a (m/a.yaml), key k: template does not parse at template line 1, column 2: expected x, found `}`".into(),
                at: Place::File {
                    path: "m/a,b.yaml".into(),
                    pos: Some(FilePos { line: 9, column: 6 }),
                },
                object: "t/a/k".into(),
            },
            Finding {
                rule: Rule::Warning,
                message: format!("w {NO_FILE_POSITION}"),
                at: Place::Stdin,
                object: "t/a/k".into(),
            },
        ];
        let out = github(&findings, "2 connectors");
        assert_eq!(
            out,
            "::error file=m/a%2Cb.yaml,line=9,col=6,title=connect-gate template-syntax::ConfigMap t/a (m/a.yaml), key k: template does not parse at template line 1, column 2: expected x, found `}`\n\
             ::warning title=connect-gate warning::w (from stdin: no file position)\n\
             2 connectors"
        );
    }
}
