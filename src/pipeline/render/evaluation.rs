//! What a template evaluation is asked and answers, and the limits it runs under: the protocol
//! between the sandbox pool (the parent, [`super::sandbox`]) and the evaluating child
//! ([`super::template`]), below both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest address space a child gets (also its limit when its command line gives none).
pub const MAX_CHILD_MEMORY: u64 = 512 << 20;
/// A child's cumulative CPU limit (RLIMIT_CPU): a backstop only, since the parent kills a
/// request at its deadline and recycles a child after 20 s of work, far below it.
pub const CHILD_CPU_SECS: u64 = 60;
/// What the child evaluates: one template against each set of bindings in turn, one outcome
/// each.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub code: String,
    pub runs: Vec<Bindings>,
}

/// The `$VAR`s and `$ENV` of one evaluation. Values are secrets: this type is never logged.
#[derive(Serialize, Deserialize)]
pub struct Bindings {
    pub vars: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

/// A position in the template, 1-based.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template line {}, column {}", self.line, self.column)
    }
}

/// An undefined symbol: `$VAR` or a filter jq does not know (`input`, a typo).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undefined {
    pub kind: String,
    pub name: String,
    pub pos: Pos,
}

/// The child's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    Value(Value),
    Syntax {
        expected: String,
        found: String,
        pos: Pos,
    },
    Undefined(Vec<Undefined>),
    /// A jq runtime error. Its text may quote the values bound.
    Runtime(String),
    OutputCount(usize),
    TooLarge,
}

/// The largest outcome of one run; larger ones become [`Outcome::TooLarge`].
pub const MAX_OUTPUT: usize = 1 << 20;
