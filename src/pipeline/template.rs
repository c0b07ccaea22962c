//! Evaluating connector templates (jq programs) safely.
//!
//! Templates are data, not programs, but jq can express non-terminating or exploding
//! computations (`def f: f; f`, `[range(1e9)]`, `"x" * 1e9`, deep nesting). No in-process
//! interpreter can be stopped in the middle of such a step, so every template is evaluated in a
//! child process (this same binary, hidden subcommand `__render`) that lowers its own memory and
//! CPU limits before reading anything and is killed at a wall-clock deadline. The values reach
//! it through a pipe: nothing is written to disk or put on a command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// What the child evaluates: one template against each set of bindings in turn, one outcome
/// each. One child for all of them, because starting it is most of the cost of a render.
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
#[derive(Debug, Serialize, Deserialize)]
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

/// The child process failed rather than answered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the template did not finish within {0:?} (templates are data: no unbounded recursion or generators)")]
    Timeout(Duration),
    #[error("the template exhausted the renderer's memory limit")]
    OutOfMemory,
    #[error("the template is nested or recursive too deeply")]
    StackOverflow,
    #[error("the renderer failed ({0})")]
    Crashed(String),
    #[error("cannot start the renderer {}: {source}", exe.display())]
    Spawn { exe: PathBuf, source: std::io::Error },
}

/// Limits a single evaluation runs under.
pub const MEMORY_LIMIT: u64 = 512 << 20;
pub const CPU_LIMIT_SECS: u64 = 2;
const MAX_OUTPUT: usize = 1 << 20;
const MAX_REQUEST: u64 = 16 << 20;

/// The most the parent reads of an answer: every run's outcome at its largest, and room for
/// the list around them.
fn answer_limit(runs: usize) -> usize {
    (MAX_OUTPUT + 1024) * runs.max(1)
}

/// Spawns sandboxed evaluations; cheap to clone.
#[derive(Clone, Debug)]
pub struct Renderer {
    exe: PathBuf,
    timeout: Duration,
    permits: Arc<Semaphore>,
}

impl Renderer {
    /// `exe` is a connect-gate binary (normally `std::env::current_exe()`).
    pub fn new(exe: PathBuf) -> Self {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        Self {
            exe,
            timeout: Duration::from_millis(750),
            permits: Arc::new(Semaphore::new(parallel)),
        }
    }

    /// One outcome per run of `request`, in order.
    pub async fn eval(&self, request: &Request) -> Result<Vec<Outcome>, SandboxError> {
        let runs = request.runs.len();
        let _permit = self.permits.acquire().await.expect("semaphore never closed");
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("__render")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                exe: self.exe.clone(),
                source,
            })?;
        let input = serde_json::to_vec(request).expect("request serialises");
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped").take(answer_limit(runs) as u64);
        let mut stderr = child.stderr.take().expect("piped").take(64 << 10);
        let run = async {
            // The child reads all input before it writes, so writing first cannot deadlock.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (o, e) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            o.and(e).map_err(|e| SandboxError::Crashed(e.to_string()))?;
            let status = child.wait().await.map_err(|e| SandboxError::Crashed(e.to_string()))?;
            Ok::<_, SandboxError>((status, out, err))
        };
        let (status, out, err) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| SandboxError::Timeout(self.timeout))??;
        if let Ok(outcomes) = serde_json::from_slice::<Vec<Outcome>>(&out) {
            if outcomes.len() != runs {
                return Err(SandboxError::Crashed(format!(
                    "{} outcomes for {runs} runs",
                    outcomes.len()
                )));
            }
            return Ok(outcomes);
        }
        // Only classify stderr, never echo it: a panic message could quote a value.
        let err = String::from_utf8_lossy(&err);
        Err(if err.contains("overflowed its stack") {
            SandboxError::StackOverflow
        } else if err.contains("memory allocation") || err.contains("capacity overflow") {
            SandboxError::OutOfMemory
        } else if out.len() >= answer_limit(runs) {
            return Ok((0..runs).map(|_| Outcome::TooLarge).collect());
        } else {
            SandboxError::Crashed(status.to_string())
        })
    }
}

/// Entry point of the `__render` child: limit itself, read a request, answer on stdout.
pub fn child_main() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let limits = rlimit::setrlimit(rlimit::Resource::AS, MEMORY_LIMIT, MEMORY_LIMIT)
        .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, CPU_LIMIT_SECS, CPU_LIMIT_SECS + 1));
    if limits.is_err() {
        return std::process::ExitCode::from(3);
    }
    let mut input = Vec::new();
    if std::io::stdin().take(MAX_REQUEST).read_to_end(&mut input).is_err() {
        return std::process::ExitCode::from(3);
    }
    let Ok(request) = serde_json::from_slice::<Request>(&input) else {
        return std::process::ExitCode::from(3);
    };
    let mut answer = b"[".to_vec();
    for (i, bindings) in request.runs.iter().enumerate() {
        let mut outcome = serde_json::to_vec(&eval(&request.code, bindings)).expect("outcome serialises");
        if outcome.len() > MAX_OUTPUT {
            outcome = serde_json::to_vec(&Outcome::TooLarge).expect("outcome serialises");
        }
        if i > 0 {
            answer.push(b',');
        }
        answer.extend(outcome);
    }
    answer.push(b']');
    let _ = std::io::stdout().write_all(&answer);
    std::process::ExitCode::SUCCESS
}

/// jaq's native `env` reads the whole process environment; templates get a definition over the
/// filtered `$ENV` instead. (Other effects, such as `halt` or `debug`, stay inside the child.)
const BLOCKED_BUILTINS: &[&str] = &["env"];

/// Evaluates a template in this process. Only the sandboxed child calls this with untrusted code.
pub fn eval(code: &str, bindings: &Bindings) -> Outcome {
    use jaq_core::load::{Arena, File, Loader};
    use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
    use jaq_json::Val;

    let prelude = jaq_core::load::parse("def env: $ENV;", |p| p.defs()).expect("prelude parses");
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .chain(prelude);
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !BLOCKED_BUILTINS.contains(name));

    let arena = Arena::default();
    let modules = match Loader::new(defs).load(&arena, File { code, path: () }) {
        Ok(modules) => modules,
        Err(errors) => return syntax_outcome(code, errors),
    };
    let names: Vec<String> = bindings.vars.keys().map(|k| format!("${k}")).collect();
    let filter = match Compiler::default()
        .with_funs(funs)
        .with_global_vars(names.iter().map(String::as_str).chain(["$ENV"]))
        .compile(modules)
    {
        Ok(filter) => filter,
        Err(errors) => {
            let undefined = errors
                .into_iter()
                .flat_map(|(_, errs)| errs)
                .map(|(name, kind)| Undefined {
                    kind: kind.as_str().to_string(),
                    name: name.trim_start_matches('$').to_string(),
                    pos: pos_of(code, name),
                })
                .collect();
            return Outcome::Undefined(undefined);
        }
    };

    let string = |s: &String| Val::from(s.clone());
    let env = bindings.env.iter().map(|(k, v)| (string(k), string(v))).collect();
    let values = bindings.vars.values().map(string).chain([Val::obj(env)]);
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new(values));
    let mut outputs = filter.id.run((ctx, Val::Null)).map(unwrap_valr);
    match (outputs.next(), outputs.next()) {
        (Some(Ok(value)), None) => Outcome::Value(with_literal_config_numbers(&value, to_json(&value))),
        (Some(Err(e)), _) | (Some(Ok(_)), Some(Err(e))) => Outcome::Runtime(e.to_string()),
        (None, _) => Outcome::OutputCount(0),
        (Some(Ok(_)), Some(Ok(_))) => Outcome::OutputCount(2 + outputs.take(1000).count()),
    }
}

fn syntax_outcome<P>(code: &str, errors: jaq_core::load::Errors<&str, P>) -> Outcome {
    use jaq_core::load::{Error, lex};
    let first = errors.into_iter().find_map(|(_, error)| match error {
        Error::Lex(errs) => errs.into_iter().next().map(|(expect, found)| {
            let expected = match expect {
                lex::Expect::Delim(open) => format!("closing delimiter for {open}"),
                lex::Expect::Digit => "digit".into(),
                lex::Expect::Ident => "identifier".into(),
                lex::Expect::Escape => "string escape sequence".into(),
                lex::Expect::Unicode => "4-digit hexadecimal code point".into(),
                _ => "token".into(),
            };
            (expected, found)
        }),
        Error::Parse(errs) => errs
            .into_iter()
            .next()
            .map(|(e, found)| (e.as_str().to_string(), found)),
        Error::Io(errs) => errs
            .into_iter()
            .next()
            .map(|(path, _)| ("no module imports".into(), path)),
    });
    let (expected, found) = first.unwrap_or_else(|| ("valid jq".into(), code));
    let shown: String = found.chars().take(20).collect();
    Outcome::Syntax {
        expected,
        found: if shown.is_empty() {
            "end of template".into()
        } else {
            shown
        },
        pos: pos_of(code, found),
    }
}

/// Line and column of `part`, a slice of `whole` (jaq reports errors as such slices).
fn pos_of(whole: &str, part: &str) -> Pos {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    let offset = if start <= whole.len() { start } else { whole.len() };
    let before = &whole[..floor_char_boundary(whole, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, column }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn to_json(v: &jaq_json::Val) -> Value {
    use jaq_json::{Num, Val};
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(n) => number(&n.to_string()),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(to_json).collect()),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

/// Connect config values are strings: a number the template wrote as a literal reaches Connect
/// with the literal's text (`12345678901234567890`, `1e18`, `1.0`), which JSON numbers cannot
/// carry exactly. Numbers computed by arithmetic print as jq prints them.
fn with_literal_config_numbers(output: &jaq_json::Val, mut json: Value) -> Value {
    use jaq_json::{Num, Val};
    let Val::Obj(top) = output else { return json };
    let Some(Val::Obj(config)) = top.get(&Val::from("config".to_string())) else {
        return json;
    };
    let Some(Value::Object(out)) = json.get_mut("config") else {
        return json;
    };
    for (key, value) in config.iter() {
        if let (Val::TStr(key) | Val::BStr(key), Val::Num(n @ (Num::BigInt(_) | Num::Dec(_)))) = (key, value) {
            out.insert(String::from_utf8_lossy(key).into_owned(), Value::String(n.to_string()));
        }
    }
    json
}

/// jq prints integral numbers without a fraction; non-finite ones become null, as in jq.
fn number(text: &str) -> Value {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e17 => Value::from(f as i64),
        Ok(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Err(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str, vars: &[(&str, &str)], env: &[(&str, &str)]) -> Outcome {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        eval(
            code,
            &Bindings {
                vars: map(vars),
                env: map(env),
            },
        )
    }

    #[test]
    fn config_number_literals_keep_their_text() {
        let code = r#"{"name": "n", "config": {"a": 12345678901234567890, "b": 1e18, "c": 1.0, "d": 1.50,
            "e": 123456789012345678901234567890, "f": 3, "g": (1.5 * 2), "h": (0.1 + 0.2)}}"#;
        let Outcome::Value(v) = run(code, &[], &[]) else {
            panic!()
        };
        assert_eq!(
            v["config"].to_string(),
            r#"{"a":"12345678901234567890","b":"1e18","c":"1.0","d":"1.50","e":"123456789012345678901234567890","f":3,"g":3,"h":0.30000000000000004}"#
        );
    }

    #[test]
    fn binds_vars_and_env() {
        let out = run(
            r#"{"a": $A, "b": $B, "e": env.E, "f": $ENV.E, "i": "x-\($A)", "d": (env.NOPE // "dflt")}"#,
            &[("A", "1"), ("B", "2")],
            &[("E", "e")],
        );
        let Outcome::Value(v) = out else { panic!("{out:?}") };
        assert_eq!(
            v,
            serde_json::json!({"a":"1","b":"2","e":"e","f":"e","i":"x-1","d":"dflt"})
        );
    }

    #[test]
    fn reports_undefined_variables_with_position() {
        let Outcome::Undefined(u) = run("{\n  \"a\": $MISSING }", &[], &[]) else {
            panic!()
        };
        assert_eq!(u[0].name, "MISSING");
        assert_eq!(u[0].kind, "variable");
        assert_eq!(u[0].pos, Pos { line: 2, column: 8 });
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let out = run("{\n  \"a\": 1,\n  \"b\" 2 }", &[], &[]);
        let Outcome::Syntax { pos, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(pos.line, 3);
    }

    #[test]
    fn process_environment_is_not_reachable() {
        // SAFETY-free: set_var is unsafe in edition 2024, so use a variable every process has.
        let out = run("env.PATH // \"hidden\"", &[], &[]);
        let Outcome::Value(v) = out else { panic!("{out:?}") };
        assert_eq!(v, "hidden");
        assert!(matches!(run("input", &[], &[]), Outcome::Undefined(_)));
    }

    #[test]
    fn output_counts() {
        assert!(matches!(run("empty", &[], &[]), Outcome::OutputCount(0)));
        assert!(matches!(run("1, 2", &[], &[]), Outcome::OutputCount(2)));
    }

    #[test]
    fn numbers_print_like_jq() {
        let Outcome::Value(v) = run("[1, 1.0, 2.5, 10000000000, 1e400]", &[], &[]) else {
            panic!()
        };
        assert_eq!(v.to_string(), "[1,1,2.5,10000000000,null]");
    }
}
