//! Calling one rule function, and turning whatever goes wrong into a located [`RuleError`].
//!
//! Each thread keeps its own [`Engine`] (built by the same factory the pack was compiled
//! with): engines are cheap to keep but one engine shared by threads scales worse than
//! one per thread, while the compiled ASTs are shared.
//!
//! Rhai reports limit hits (operations, call depth, data size, deadline) without the
//! position they happened at. For those rare failures the call is repeated once on a
//! diagnostic engine that records every statement it steps on, and the last one is the
//! location reported. Normal calls pay nothing for this.

use super::compile::{strip_position, CompiledRule};
use super::engine::{build_engine, with_deadline, Limits, DEADLINE_TOKEN};
use super::json::{register_field_getters, FieldNames};
use crate::model::Stage;
use rhai::debugger::{DebuggerCommand, DebuggerEvent};
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};
use serde::Serialize;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// What kind of failure a rule error is; the sync engine dead-letters all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleErrorKind {
    /// The incident itself fails its input schema.
    InvalidInput,
    /// The script threw, or an operation in it failed.
    Script,
    /// The script hit a resource limit (operations, call depth, data size).
    Limit,
    /// The script ran past its wall-clock deadline.
    Timeout,
    /// The script returned something its stage does not accept.
    BadReturn,
    /// The final document fails the target's schema.
    InvalidOutput,
}

/// A per-incident failure, as data: which rule, where, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct RuleError {
    pub kind: RuleErrorKind,
    pub rule: Option<String>,
    pub stage: Option<Stage>,
    /// The file the error is in (the rule's script, or a library it imports).
    pub file: Option<String>,
    pub line: Option<usize>,
    pub col: Option<usize>,
    /// JSON pointer, for schema failures.
    pub pointer: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            f.write_str(file)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.col {
                    write!(f, ":{col}")?;
                }
            }
            f.write_str(": ")?;
        }
        if let (Some(rule), Some(stage)) = (&self.rule, self.stage) {
            write!(f, "rule '{rule}' ({stage}): ")?;
        }
        if let Some(pointer) = &self.pointer {
            write!(f, "{pointer}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl RuleError {
    /// A failure no single rule is to blame for (the input itself, say).
    pub fn new(kind: RuleErrorKind, message: impl Into<String>) -> Self {
        RuleError {
            kind,
            rule: None,
            stage: None,
            file: None,
            line: None,
            col: None,
            pointer: None,
            message: message.into(),
        }
    }

    pub fn for_rule(rule: &CompiledRule, kind: RuleErrorKind, message: impl Into<String>) -> Self {
        RuleError {
            rule: Some(rule.name.clone()),
            stage: Some(rule.stage),
            file: Some(rule.path.clone()),
            ..RuleError::new(kind, message)
        }
    }

    /// The same error, located at a JSON pointer in the document concerned.
    pub fn at_pointer(self, pointer: impl Into<String>) -> Self {
        RuleError {
            pointer: Some(pointer.into()),
            ..self
        }
    }
}

thread_local! {
    static ENGINE: RefCell<Option<(Limits, FieldNames, Rc<Engine>)>> = const { RefCell::new(None) };
}

/// This thread's engine for a pack's limits and field names, built on first use (and
/// again when a reload brings other ones).
fn engine_for(limits: &Limits, fields: &FieldNames) -> Rc<Engine> {
    ENGINE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some((l, f, engine)) = slot.as_mut() {
            if l == limits && f == fields {
                // The same names from a newer pack: keep its copy, so that the next
                // comparison is a pointer comparison again.
                if !f.is_same(fields) {
                    *f = fields.clone();
                }
                return engine.clone();
            }
        }
        let engine = Rc::new(runtime_engine(limits, fields));
        *slot = Some((*limits, fields.clone(), engine.clone()));
        engine
    })
}

/// A run-time engine: the sandboxed engine plus getters for the pack's field names
/// (functions only; language options, which must match the compile engine, are equal).
fn runtime_engine(limits: &Limits, fields: &FieldNames) -> Engine {
    let mut engine = build_engine(limits);
    register_field_getters(&mut engine, fields);
    engine
}

/// Calls `entry` of `rule` with two arguments, under the pack's limits and deadline.
/// The arguments are borrowed: they are copied once for the call, and once more only
/// if a limit hit has to be located.
pub fn call_rule(
    rule: &CompiledRule,
    (limits, fields): (&Limits, &FieldNames),
    entry: &str,
    first: &Dynamic,
    ctx: &Dynamic,
) -> Result<Dynamic, RuleError> {
    let engine = engine_for(limits, fields);
    let result = with_deadline(limits.timeout(), || {
        invoke(&engine, rule, entry, first.clone(), ctx.clone())
    });
    result.map_err(|err| {
        let location = if err.is_system_exception() || is_deadline(&err) {
            locate_limit_hit(rule, (limits, fields), entry, first.clone(), ctx.clone())
        } else {
            None
        };
        to_rule_error(rule, limits, &err, location)
    })
}

fn invoke(
    engine: &Engine,
    rule: &CompiledRule,
    entry: &str,
    first: Dynamic,
    ctx: Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let options = CallFnOptions::new()
        .eval_ast(rule.runs_top_level)
        .rewind_scope(false);
    engine.call_fn_with_options::<Dynamic>(
        options,
        &mut Scope::new(),
        &rule.ast,
        entry,
        (first, ctx),
    )
}

fn is_deadline(err: &EvalAltResult) -> bool {
    matches!(err.unwrap_inner(), EvalAltResult::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN)
}

/// Where a call that hit a limit was when it stopped: (source, position).
type Location = (Option<String>, Position);

/// Repeats a failed call with a stepping debugger to find the statement it stopped at.
fn locate_limit_hit(
    rule: &CompiledRule,
    (limits, fields): (&Limits, &FieldNames),
    entry: &str,
    first: Dynamic,
    ctx: Dynamic,
) -> Option<Location> {
    let last: Arc<Mutex<Option<Location>>> = Arc::default();
    // The same functions as the failed call, so it stops at the same place.
    let mut engine = runtime_engine(limits, fields);
    let recorder = last.clone();
    #[allow(deprecated)] // "volatile", not deprecated: see Engine::register_debugger
    engine.register_debugger(
        |_, debugger| debugger,
        move |_, event, _node, source, pos| {
            if matches!(event, DebuggerEvent::Step | DebuggerEvent::Start) && !pos.is_none() {
                *recorder.lock().expect("debugger lock") = Some((source.map(str::to_string), pos));
            }
            Ok(DebuggerCommand::StepInto)
        },
    );
    let _ = with_deadline(limits.timeout(), || {
        invoke(&engine, rule, entry, first, ctx)
    });
    let found = last.lock().expect("debugger lock").clone();
    found
}

fn to_rule_error(
    rule: &CompiledRule,
    limits: &Limits,
    err: &EvalAltResult,
    location: Option<Location>,
) -> RuleError {
    // The innermost error carries the real position; wrappers name the call chain.
    let mut source = None;
    let mut pos = err.position();
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(_, src, next, call_pos)
    | EvalAltResult::ErrorInModule(src, next, call_pos) = inner
    {
        if !src.is_empty() {
            source = Some(src.clone());
        }
        if !call_pos.is_none() {
            pos = *call_pos;
        }
        inner = next;
    }
    if !inner.position().is_none() {
        pos = inner.position();
    }
    let (kind, message) = match inner {
        EvalAltResult::ErrorTooManyOperations(_) => (
            RuleErrorKind::Limit,
            format!(
                "stopped after {} operations (limits.max_operations)",
                limits.max_operations
            ),
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            RuleErrorKind::Limit,
            "too many nested function calls (limits.max_call_levels); unbounded recursion?"
                .to_string(),
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => (
            RuleErrorKind::Limit,
            format!(
                "{what} exceeds its limit (limits.max_string_size / max_array_size / max_map_size)"
            ),
        ),
        e if is_deadline(e) => (
            RuleErrorKind::Timeout,
            "stopped at its wall-clock deadline (limits.timeout_ms)".to_string(),
        ),
        // A script's `throw`, or a native helper refusing: the value is the message.
        EvalAltResult::ErrorRuntime(value, _) => (RuleErrorKind::Script, value.to_string()),
        other => (RuleErrorKind::Script, strip_position(&other.to_string())),
    };
    if let Some((src, at)) = location {
        source = src.or(source);
        pos = at;
    }
    let mut error = RuleError::for_rule(rule, kind, message);
    if let Some(source) = source {
        error.file = Some(source);
    }
    error.line = pos.line();
    error.col = pos.position().or(pos.line().map(|_| 1));
    error
}
