//! Evaluating connector templates (jq programs) safely: the child's side.
//!
//! Templates are data, not programs, but jq can express non-terminating or exploding
//! computations (`def f: f; f`, `[range(1e9)]`, `"x" * 1e9`, deep nesting). No in-process
//! interpreter can be stopped in the middle of such a step, so templates are evaluated in child
//! processes (this same binary, hidden subcommand `__render`) that lower their own memory and
//! CPU limits before reading anything and are killed at a deadline ([`super::sandbox`] keeps a
//! warm pool of them). A child answers framed requests (a 4-byte big-endian length, then JSON)
//! on its stdin until it is closed. The values reach it through the pipe: nothing is written to
//! disk or put on a command line.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;

use serde_json::Value;

use super::data_template::DataTemplate;
use super::evaluation::{Bindings, CHILD_CPU_SECS, MAX_CHILD_MEMORY, MAX_OUTPUT, Outcome, Pos, Request, Undefined};

const MAX_REQUEST: usize = 16 << 20;

/// Entry point of the `__render` child: limit itself (address space from its first argument,
/// cumulative CPU), then answer framed requests until stdin closes.
pub fn child_main() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let memory = std::env::args()
        .nth(2)
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(MAX_CHILD_MEMORY);
    let cpu = CHILD_CPU_SECS;
    let limits = rlimit::setrlimit(rlimit::Resource::AS, memory, memory)
        .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu + 1));
    if limits.is_err() {
        return std::process::ExitCode::from(3);
    }
    let mut engine = Engine::default();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut len = [0u8; 4];
        if stdin.read_exact(&mut len).is_err() {
            // Closed: the pool is done with this child.
            return std::process::ExitCode::SUCCESS;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_REQUEST {
            return std::process::ExitCode::from(3);
        }
        let mut input = vec![0u8; len];
        if stdin.read_exact(&mut input).is_err() {
            return std::process::ExitCode::from(3);
        }
        let Ok(request) = serde_json::from_slice::<Request>(&input) else {
            return std::process::ExitCode::from(3);
        };
        let answer = engine.answer(&request);
        let Ok(len) = u32::try_from(answer.len()) else {
            return std::process::ExitCode::from(3);
        };
        let sent = stdout
            .write_all(&len.to_be_bytes())
            .and_then(|()| stdout.write_all(&answer))
            .and_then(|()| stdout.flush());
        if sent.is_err() {
            return std::process::ExitCode::from(3);
        }
    }
}

/// jaq's native `env` reads the whole process environment; templates get a definition over the
/// filtered `$ENV` instead. `stderr` and `debug` write nowhere (the child has no logger), and
/// `halt` and `halt_error` end the render, not the child ([`run`]).
const BLOCKED_BUILTINS: &[&str] = &["env"];

/// A jaq filter a template may not use because its value is not the template's: a connector
/// config must render the same every time and on every machine (`check` in CI, the webhook,
/// the reconciler), or the sidecar sees a change where there is none.
#[derive(Debug)]
pub struct Unstable {
    pub name: &'static str,
    /// What makes it change, after its name and position.
    pub why: &'static str,
    /// What to write instead.
    pub instead: &'static str,
}

/// Every filter of the sandbox's jaq whose value changes from one render to the next: the
/// clock, and the time zone of the machine that renders. They are left out of the sandbox's
/// definitions, so a template naming one does not compile and is rejected at its position
/// (`gmtime`, `mktime`, `strftime`, `strptime` and `todate` are UTC, the same everywhere).
pub const UNSTABLE: &[Unstable] = &[
    Unstable {
        name: "now",
        why: "gives a different value on every render",
        instead: "write the time out, or read it from a variable",
    },
    Unstable {
        name: "localtime",
        why: "depends on the time zone of the machine that renders it",
        instead: "use gmtime, which is UTC",
    },
    Unstable {
        name: "strflocaltime",
        why: "depends on the time zone of the machine that renders it",
        instead: "use strftime, which formats in UTC",
    },
];

/// The entry of [`UNSTABLE`] named `name`.
pub fn unstable(name: &str) -> Option<&'static Unstable> {
    UNSTABLE.iter().find(|u| u.name == name)
}

/// connect-gate's definitions, after jq's: `env` over the filtered `$ENV`, and `halt_error`,
/// which in jaq prints its input and exits the process, ending the render with its input as the
/// message ([`HALT_MESSAGE`], read by [`run`]).
const PRELUDE: &str = "def env: $ENV;
def halt_error($exit_code): halt_error_message, halt($exit_code);
def halt_error: halt_error(5);";

thread_local! {
    /// What `halt_error` was given in the render under way, as jq prints it.
    static HALT_MESSAGE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// `halt_error_message`: keeps its input as the message of the `halt` that follows, outputs
/// nothing.
fn halt_error_message() -> jaq_core::native::Fun<jaq_core::data::JustLut<jaq_json::Val>> {
    use jaq_json::Val;
    jaq_core::native::run(("halt_error_message", jaq_core::native::v(0), |cv| {
        let message = match &cv.1 {
            Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).trim_end_matches('\n').to_string(),
            other => other.to_string(),
        };
        HALT_MESSAGE.with(|m| *m.borrow_mut() = Some(message));
        Box::new(std::iter::empty())
    }))
}

type Filter = jaq_core::Filter<jaq_core::data::JustLut<jaq_json::Val>>;
type Def = jaq_core::load::parse::Def<&'static str>;

/// A template and the names of the variables bound for it.
type TemplateKey = (String, Vec<String>);

/// A template ready to run: plain data, or compiled by jaq (or why it does not compile).
enum Prepared {
    Data(DataTemplate),
    Jaq(Result<Filter, Outcome>),
}

/// Compiled templates a child keeps, by total template bytes: past it the cache starts over.
const CACHE_BYTES: usize = 8 << 20;

/// A child's evaluator: jq's standard definitions parsed once, and each template compiled once
/// for a given set of variable names (the real and placeholder renders share it). A template
/// that names none of the standard definitions is compiled without them (only the native
/// filters and `env`): most templates are data, and compiling the definitions is most of the
/// cost of a render.
pub struct Engine {
    /// jq's, jaq's and connect-gate's definitions.
    all: Vec<Def>,
    /// Only connect-gate's.
    prelude: Vec<Def>,
    /// The names the standard definitions define.
    standard: HashSet<&'static str>,
    compiled: HashMap<TemplateKey, Rc<Prepared>>,
    cached_bytes: usize,
}

impl Default for Engine {
    fn default() -> Self {
        let prelude: Vec<Def> = jaq_core::load::parse(PRELUDE, |p| p.defs())
            .expect("prelude parses")
            .into_iter()
            .collect();
        let standard: Vec<Def> = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .collect();
        Self {
            standard: standard.iter().map(|d| d.name).collect(),
            all: standard.into_iter().chain(prelude.iter().cloned()).collect(),
            prelude,
            compiled: HashMap::new(),
            cached_bytes: 0,
        }
    }
}

impl Engine {
    /// Every run of `request`, as the JSON list of their outcomes; each outcome larger than
    /// [`MAX_OUTPUT`] becomes [`Outcome::TooLarge`].
    fn answer(&mut self, request: &Request) -> Vec<u8> {
        let mut answer = b"[".to_vec();
        for (i, bindings) in request.runs.iter().enumerate() {
            let mut outcome = serde_json::to_vec(&self.eval(&request.code, bindings)).expect("outcome serialises");
            if outcome.len() > MAX_OUTPUT {
                outcome = serde_json::to_vec(&Outcome::TooLarge).expect("outcome serialises");
            }
            if i > 0 {
                answer.push(b',');
            }
            answer.extend(outcome);
        }
        answer.push(b']');
        answer
    }

    /// Evaluates a template in this process. Only a sandboxed child runs untrusted code.
    pub fn eval(&mut self, code: &str, bindings: &Bindings) -> Outcome {
        let key = (code.to_string(), bindings.vars.keys().cloned().collect::<Vec<_>>());
        let prepared = match self.compiled.get(&key) {
            Some(prepared) => prepared.clone(),
            None => {
                let prepared = Rc::new(self.prepare(code, &key.1));
                if self.cached_bytes + code.len() > CACHE_BYTES {
                    self.compiled.clear();
                    self.cached_bytes = 0;
                }
                self.cached_bytes += code.len();
                self.compiled.insert(key, prepared.clone());
                prepared
            }
        };
        match prepared.as_ref() {
            Prepared::Data(template) => Outcome::Value(template.eval(&bindings.vars, &bindings.env)),
            Prepared::Jaq(Ok(filter)) => run(filter, bindings),
            Prepared::Jaq(Err(outcome)) => outcome.clone(),
        }
    }

    fn prepare(&self, code: &str, vars: &[String]) -> Prepared {
        if let Some(data) = DataTemplate::parse(code, vars) {
            return Prepared::Data(data);
        }
        // Without the standard definitions when it names none; with them when it does, or
        // when something it uses turns out to be undefined without them.
        let lean = (!names_any(code, &self.standard)).then(|| compile(&self.prelude, code, vars));
        Prepared::Jaq(match lean {
            Some(Err(Outcome::Undefined(_))) | None => compile(&self.all, code, vars),
            Some(lean) => lean,
        })
    }
}

/// Whether `code` may name one of `defined`: any identifier outside string literals (inside
/// them too when a string interpolates). Over-counting costs only time.
fn names_any(code: &str, defined: &HashSet<&str>) -> bool {
    static STRING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap());
    static IDENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"@?[A-Za-z_][A-Za-z0-9_]*").unwrap());
    let scanned = if code.contains("\\(") {
        std::borrow::Cow::Borrowed(code)
    } else {
        STRING.replace_all(code, "\"\"")
    };
    IDENT.find_iter(&scanned).any(|m| defined.contains(m.as_str()))
}

/// Evaluates a template in this process with a fresh [`Engine`].
pub fn eval(code: &str, bindings: &Bindings) -> Outcome {
    Engine::default().eval(code, bindings)
}

/// Compiles `code` with `$ENV` and the variables `vars` bound; a syntax error or undefined
/// symbols come back as their outcome.
fn compile(defs: &[Def], code: &str, vars: &[String]) -> Result<Filter, Outcome> {
    use jaq_core::Compiler;
    use jaq_core::load::{Arena, File, Loader};

    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !BLOCKED_BUILTINS.contains(name) && unstable(name).is_none())
        .chain([halt_error_message()]);
    let arena = Arena::default();
    let modules = Loader::new(defs.iter().cloned())
        .load(&arena, File { code, path: () })
        .map_err(|errors| syntax_outcome(code, errors))?;
    let names: Vec<String> = vars.iter().map(|k| format!("${k}")).collect();
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(names.iter().map(String::as_str).chain(["$ENV"]))
        .compile(modules)
        .map_err(|errors| {
            let undefined = errors
                .into_iter()
                .flat_map(|(_, errs)| errs)
                .map(|(name, kind)| Undefined {
                    kind: kind.as_str().to_string(),
                    name: name.trim_start_matches('$').to_string(),
                    pos: pos_of(code, name),
                })
                .collect();
            Outcome::Undefined(undefined)
        })
}

/// Runs a compiled template against the values of one render.
fn run(filter: &Filter, bindings: &Bindings) -> Outcome {
    use jaq_core::{Ctx, Vars, data};
    use jaq_json::Val;

    let string = |s: &String| Val::from(s.clone());
    let env = bindings.env.iter().map(|(k, v)| (string(k), string(v))).collect();
    let values = bindings.vars.values().map(string).chain([Val::obj(env)]);
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new(values));
    HALT_MESSAGE.with(|m| m.borrow_mut().take());
    let mut outputs = filter.id.run((ctx, Val::Null)).map(|output| output.map_err(Stop::from));
    match (outputs.next(), outputs.next()) {
        (Some(Ok(value)), None) => Outcome::Value(with_literal_config_numbers(&value, to_json(&value))),
        (Some(Err(stop)), _) | (Some(Ok(_)), Some(Err(stop))) => stop.outcome(),
        (None, _) => Outcome::OutputCount(0),
        // The outputs up to a `halt`, as jq prints them.
        (Some(Ok(_)), Some(Ok(_))) => Outcome::OutputCount(
            2 + outputs
                .take(1000)
                .take_while(|o| !matches!(o, Err(Stop::Halt(_))))
                .count(),
        ),
    }
}

/// Why a render stopped short of its outputs: a jq error, or `halt` (jaq would exit the
/// process: a template cannot end its sandbox that way).
enum Stop {
    Error(String),
    Halt(i32),
}

impl<V: std::fmt::Display> From<jaq_core::Exn<'_, V>> for Stop {
    fn from(exn: jaq_core::Exn<'_, V>) -> Self {
        match exn.get_err() {
            Ok(error) => Stop::Error(error.to_string()),
            Err(exn) => match exn.get_halt() {
                Ok(code) => Stop::Halt(code),
                // jaq's own control flow, never seen at the top (a bug of jaq if it is).
                Err(_) => Stop::Error("the template stopped unexpectedly".into()),
            },
        }
    }
}

impl Stop {
    /// A failed render: a `halt_error`'s message is its input; a `halt` is said to stop it.
    fn outcome(self) -> Outcome {
        Outcome::Runtime(match self {
            Stop::Error(message) => message,
            Stop::Halt(code) => match HALT_MESSAGE.with(|m| m.borrow_mut().take()) {
                Some(message) if !message.is_empty() => message,
                Some(_) => "`halt_error` with an empty message".into(),
                None if code == 0 => "`halt` stops it before it produces a connector".into(),
                None => format!("`halt({code})` stops it before it produces a connector"),
            },
        })
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
    use std::collections::BTreeMap;

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
    fn templates_naming_no_standard_definition_compile_without_them_alike() {
        let engine = Engine::default();
        let plain = r#"{"name": "n", "config": {"tasks.max": 1, "a": env.X, "b": ($Y // "d"), "c": "x-\($Y)"}}"#;
        assert!(!names_any(
            r#"{"name": "n", "config": {"tasks.max": 1, "a": env.X, "b": $Y}}"#,
            &engine.standard
        ));
        assert!(names_any(r#"{"a": ([$Y] | map(.))}"#, &engine.standard));
        assert!(
            names_any(r#"{"a": "\(map(.))"}"#, &engine.standard),
            "interpolations are code"
        );
        let bindings = Bindings {
            vars: BTreeMap::from([("Y".into(), "Yes".into())]),
            env: BTreeMap::from([("X".into(), "x".into())]),
        };
        for code in [
            plain,
            "{a: 1} + {b: 2}",
            "$Y | ascii_downcase",
            "[1, 2] | .[0]",
            "if $Y == \"Yes\" then 1 else 2 end",
            "nope",
        ] {
            let names = vec!["Y".to_string()];
            let outcome = |defs: &[Def]| match compile(defs, code, &names) {
                Ok(filter) => format!("{:?}", super::run(&filter, &bindings)),
                Err(outcome) => format!("{outcome:?}"),
            };
            assert_eq!(outcome(&engine.prelude), outcome(&engine.all), "{code}");
        }
    }

    /// A template the data path takes, as text: objects, arrays, strings with escapes and
    /// interpolations, literals, `$Y`, `env.X`, `$ENV.X`, `$ENV`.
    fn data_template() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let text = prop::collection::vec(
            prop_oneof![
                "[a-z =:/é]{0,6}",
                Just("\\n".to_string()),
                Just("\\\"".to_string()),
                Just("\\u00e9".to_string())
            ],
            0..4,
        )
        .prop_map(|parts| parts.concat());
        let leaf = prop_oneof![
            text.clone().prop_map(|t| format!("\"{t}\"")),
            Just("$Y".to_string()),
            Just("env.X".to_string()),
            Just("env.UNSET".to_string()),
            Just("$ENV.X?".to_string()),
            Just("$ENV[\"X\"]".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            (
                text.clone(),
                prop_oneof![Just("$Y"), Just("env.X"), Just("null"), Just("\"s\"")]
            )
                .prop_map(|(t, hole)| format!("\"{t}\\({hole}){t}\"")),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
                prop::collection::vec((prop_oneof!["[a-c]{1,2}", "\"[a-c.]{0,3}\""], inner), 0..5).prop_map(
                    |entries| {
                        let entries: Vec<String> = entries.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                        format!("{{{}}}", entries.join(", "))
                    }
                ),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_data_path_renders_as_jaq_does(code in data_template()) {
            let names = vec!["Y".to_string()];
            let bindings = Bindings {
                vars: BTreeMap::from([("Y".into(), "y\"\\é".into())]),
                env: BTreeMap::from([("X".into(), "x".into()), ("Z".into(), "z".into())]),
            };
            let data = DataTemplate::parse(&code, &names).expect("a data template");
            let jaq = compile(&Engine::default().all, &code, &names).map(|f| super::run(&f, &bindings));
            proptest::prop_assert_eq!(
                format!("{:?}", Outcome::Value(data.eval(&bindings.vars, &bindings.env))),
                format!("{:?}", jaq.unwrap_or_else(|o| o))
            );
        }
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
    fn filters_that_render_differently_each_time_are_not_defined_in_the_sandbox() {
        for (code, name, pos) in [
            ("{\"name\": \"n\", \"t\": now}", "now", Pos { line: 1, column: 20 }),
            ("0 |\n  localtime", "localtime", Pos { line: 2, column: 3 }),
            ("0 | strflocaltime(\"%H\")", "strflocaltime", Pos { line: 1, column: 5 }),
        ] {
            let out = run(code, &[], &[]);
            let Outcome::Undefined(undefined) = &out else {
                panic!("{code}: {out:?}")
            };
            assert_eq!(
                (
                    undefined[0].kind.as_str(),
                    undefined[0].name.as_str(),
                    &undefined[0].pos
                ),
                ("filter", name, &pos),
                "{code}"
            );
            assert!(unstable(name).is_some());
        }
        // UTC time is the same everywhere, and a template's own `now` is its own.
        let out = run(
            r#"[0 | todate, (0 | gmtime | mktime), (86400 | strftime("%Y-%m-%d")), ("1970-01-02T00:00:00Z" | fromdate), (def now: 7; now)]"#,
            &[],
            &[],
        );
        let Outcome::Value(v) = out else { panic!("{out:?}") };
        assert_eq!(
            v,
            serde_json::json!(["1970-01-01T00:00:00Z", 0, "1970-01-02", 86400, 7])
        );
    }

    #[test]
    fn halt_error_fails_the_render_with_its_input_as_the_message() {
        let message = |code: &str| match run(code, &[("PW", "hunter2")], &[]) {
            Outcome::Runtime(message) => message,
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(message(r#""boom" | halt_error"#), "boom");
        assert_eq!(message(r#""boom\n" | halt_error(1)"#), "boom");
        assert_eq!(message(r#"{"a": 1} | halt_error"#), r#"{"a":1}"#);
        assert_eq!(message(r#""x-\($PW)" | halt_error"#), "x-hunter2");
        assert_eq!(message(r#""" | halt_error"#), "`halt_error` with an empty message");
        // Not caught by `try`, as in jq; a message kept by one render is not another's.
        assert_eq!(message(r#"try ("boom" | halt_error) catch "caught""#), "boom");
        assert_eq!(message("halt"), "`halt` stops it before it produces a connector");
    }

    #[test]
    fn halt_ends_the_render_with_a_message_not_the_sandbox() {
        let mut engine = Engine::default();
        let bindings = Bindings {
            vars: BTreeMap::new(),
            env: BTreeMap::new(),
        };
        for (code, expected) in [
            ("halt", "`halt` stops it before it produces a connector"),
            ("{} | halt(3)", "`halt(3)` stops it before it produces a connector"),
            (r#""bye" | halt_error"#, "bye"),
            ("halt", "`halt` stops it before it produces a connector"),
        ] {
            let out = engine.eval(code, &bindings);
            assert!(matches!(&out, Outcome::Runtime(m) if m == expected), "{code}: {out:?}");
        }
        // The outputs before a halt are what jq prints.
        assert!(matches!(
            engine.eval("1, 2, halt, 3", &bindings),
            Outcome::OutputCount(2)
        ));
        assert!(matches!(engine.eval("1", &bindings), Outcome::Value(_)));
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
