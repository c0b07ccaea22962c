//! Where each data key of each connector ConfigMap sits in its YAML file, so `check` can put an
//! annotation on the line a reviewer sees. serde_norway, which reads the manifests, keeps no
//! positions, so the text is read again with a parser that does (saphyr-parser). A file it
//! cannot map yields no positions rather than wrong ones.

use std::borrow::Cow;
use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::pipeline::render::evaluation::Pos;

/// A place in a file, 1-based; columns count characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePos {
    pub line: usize,
    pub column: usize,
}

/// One data key: where the key is, and where its template's lines are when they can be read
/// one to one from the file (a literal block scalar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySite {
    pub key: FilePos,
    body: Option<Body>,
}

/// A literal block scalar (`|`, `|-`, `|+`) whose every line is the file's line with the block's
/// indentation removed: template line N is file line `first_line + N - 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Body {
    first_line: usize,
    indent: usize,
    lines: usize,
}

impl KeySite {
    /// The file position of a template position; the key's own for a problem without one, or
    /// when the template is not a literal block scalar (quoted, plain and folded scalars do not
    /// keep the template's lines).
    pub fn locate(&self, pos: Option<&Pos>) -> FilePos {
        match (pos, &self.body) {
            (Some(pos), Some(body)) if pos.line >= 1 && pos.line <= body.lines.max(1) => FilePos {
                line: body.first_line + pos.line - 1,
                column: body.indent + pos.column.max(1),
            },
            _ => self.key,
        }
    }
}

/// The connector data keys of one file.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    configmaps: Vec<ConfigMapSites>,
}

#[derive(Clone, Debug)]
struct ConfigMapSites {
    namespace: Option<String>,
    name: String,
    keys: BTreeMap<String, KeySite>,
}

impl SourceMap {
    /// Maps every `v1` ConfigMap of a multi-document YAML text, `kind: List` items too. `None`
    /// when the text does not parse.
    pub fn of_yaml(text: &str) -> Option<Self> {
        let mut map = SourceMap::default();
        for doc in documents(text)? {
            let objects = match doc.get("kind").and_then(Node::as_str) {
                Some("List") => match doc.get("items") {
                    Some(Node::Seq(items)) => items.iter().collect(),
                    _ => vec![],
                },
                _ => vec![&doc],
            };
            for object in objects {
                map.configmaps.extend(configmap_sites(object, text));
            }
        }
        Some(map)
    }

    /// The site of `key` in the first ConfigMap `namespace/name` of the file (a file declaring
    /// one twice gets the first one's positions).
    pub fn site(&self, namespace: Option<&str>, name: &str, key: &str) -> Option<&KeySite> {
        self.configmaps
            .iter()
            .filter(|c| c.namespace.as_deref() == namespace && c.name == name)
            .find_map(|c| c.keys.get(key))
    }
}

fn configmap_sites(object: &Node, text: &str) -> Option<ConfigMapSites> {
    let is_cm = object.get("kind")?.as_str()? == "ConfigMap" && object.get("apiVersion")?.as_str()? == "v1";
    if !is_cm {
        return None;
    }
    let metadata = object.get("metadata")?;
    let mut sites = ConfigMapSites {
        namespace: metadata.get("namespace").and_then(Node::as_str).map(String::from),
        name: metadata
            .get("name")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_string(),
        keys: BTreeMap::new(),
    };
    let sections = ["data", "binaryData"].into_iter().filter_map(|s| object.get(s));
    for section in sections {
        let Node::Map(entries) = section else { continue };
        for (key, value) in entries {
            let Node::Scalar { value: name, span, .. } = key else {
                continue;
            };
            let key = FilePos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            sites.keys.entry(name.clone()).or_insert(KeySite {
                key,
                body: body_of(value, text),
            });
        }
    }
    Some(sites)
}

/// The lines of a literal block scalar, checked against the file: each template line must be
/// the file's line less the block's indentation, else the template's lines are not mapped.
fn body_of(value: &Node, text: &str) -> Option<Body> {
    let Node::Scalar {
        value,
        style: ScalarStyle::Literal,
        span,
    } = value
    else {
        return None;
    };
    // The parser's span starts at the block's first non-empty line, at its indentation; the
    // empty lines before it are the template's first lines.
    let template_lines: Vec<&str> = value.lines().collect();
    let leading = template_lines.iter().take_while(|l| l.is_empty()).count();
    let first_line = span.start.line().checked_sub(leading)?;
    let indent = span.start.col();
    let file_lines: Vec<&str> = text.lines().skip(first_line.checked_sub(1)?).collect();
    let matches = template_lines.iter().enumerate().all(|(i, t)| {
        file_lines.get(i).is_some_and(|f| {
            let cut = f.char_indices().nth(indent).map_or(f.len(), |(b, _)| b);
            let (lead, rest) = f.split_at(cut);
            if t.is_empty() {
                f.trim().is_empty()
            } else {
                lead.chars().count() == indent && lead.chars().all(|c| c == ' ') && rest == *t
            }
        })
    });
    (matches && !template_lines.is_empty()).then_some(Body {
        first_line,
        indent,
        lines: template_lines.len(),
    })
}

/// A YAML node with the positions of its scalars.
#[derive(Debug)]
enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        span: Span,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// An alias: its target is not followed.
    Alias,
}

impl Node {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A collection being built: its items so far (a mapping's keys and values alternate).
enum Open {
    Seq(Vec<Node>),
    Map(Vec<Node>),
}

/// Every document of a YAML stream as a tree, built without recursion so that nesting costs no
/// stack.
fn documents(text: &str) -> Option<Vec<Node>> {
    let mut docs = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let node = match event {
            Event::SequenceStart(..) => {
                stack.push(Open::Seq(vec![]));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Open::Map(vec![]));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop()? {
                Open::Seq(items) => Node::Seq(items),
                Open::Map(items) => Node::Map(pairs(items)),
            },
            Event::Scalar(value, style, ..) => Node::Scalar {
                value: Cow::into_owned(value),
                style,
                span,
            },
            Event::Alias(_) => Node::Alias,
            _ => continue,
        };
        match stack.last_mut() {
            Some(Open::Seq(items) | Open::Map(items)) => items.push(node),
            None => docs.push(node),
        }
    }
    Some(docs)
}

fn pairs(items: Vec<Node>) -> Vec<(Node, Node)> {
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        pairs.push((k, v));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
  namespace: team
  labels: {destination: connect}
data:
  one.json: |
    {
      name: \"one\",
      config: {}
    }
  two.json: '{\"name\": \"two\"}'
  three.json: |-

      {name: \"three\"}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
  data:
    four.json: >
      {name: \"four\"}
";

    fn at(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn maps_keys_and_literal_block_lines() {
        let map = SourceMap::of_yaml(TEXT).unwrap();
        let one = map.site(Some("team"), "a", "one.json").unwrap();
        assert_eq!(one.key, FilePos { line: 9, column: 3 });
        assert_eq!(one.locate(None), one.key);
        assert_eq!(one.locate(Some(&at(1, 1))), FilePos { line: 10, column: 5 });
        assert_eq!(one.locate(Some(&at(3, 11))), FilePos { line: 12, column: 15 });
        // Past the template's lines: the key.
        assert_eq!(one.locate(Some(&at(9, 1))), one.key);
        let two = map.site(Some("team"), "a", "two.json").unwrap();
        assert_eq!(two.locate(Some(&at(1, 3))), FilePos { line: 14, column: 3 });
        let three = map.site(Some("team"), "a", "three.json").unwrap();
        assert_eq!(three.locate(Some(&at(2, 2))), FilePos { line: 17, column: 8 });
        let four = map.site(None, "b", "four.json").unwrap();
        assert_eq!(four.key, FilePos { line: 26, column: 5 });
        assert_eq!(four.locate(Some(&at(1, 2))), four.key);
        assert!(map.site(None, "a", "one.json").is_none());
    }

    #[test]
    fn header_lines_indicators_and_crlf_are_followed_or_fall_back_to_the_key() {
        let text = "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata: {name: c}\r\ndata:\r\n  a.json:\r\n    |\r\n      {x: 1,\r\n       y: }\r\n  b.json: |2\r\n       {z}\r\n";
        let map = SourceMap::of_yaml(text).unwrap();
        // The `|` header on its own line: the template starts on the line after it.
        let a = map.site(None, "c", "a.json").unwrap();
        assert_eq!(a.key, FilePos { line: 5, column: 3 });
        assert_eq!(a.locate(Some(&at(2, 5))), FilePos { line: 8, column: 11 });
        // An explicit indentation indicator keeps the extra spaces in the template.
        let b = map.site(None, "c", "b.json").unwrap();
        assert_eq!(b.locate(Some(&at(1, 4))), FilePos { line: 10, column: 8 });
    }

    #[test]
    fn text_that_does_not_parse_has_no_map() {
        assert!(SourceMap::of_yaml("a: [").is_none());
        assert!(SourceMap::of_yaml("").unwrap().configmaps.is_empty());
    }
}
