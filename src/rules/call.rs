//! Calling one rule function, and turning whatever goes wrong into a located [`RuleError`].
//!
//! Each thread keeps its own [`Engine`] (built by the same factory the pack was compiled
//! with): engines are cheap to keep but one engine shared by threads scales worse than
//! one per thread, while the compiled ASTs are shared.
//!
//! Rhai reports limit hits (operations, call depth, data size, deadline, memory) without
//! the position they happened at. For those rare failures the call is repeated once on
//! a diagnostic engine that records every statement it steps on, and the last one is the
//! location reported. Normal calls pay nothing for this. The re-run does not get a
//! fresh deadline: it keeps the original one plus [`LOCATE_GRACE`] (a timeout has no
//! time left), and it stops at the operation the first run stopped at, so a call that
//! hit a limit costs at most `timeout_ms` + the grace, not twice the timeout.
//!
//! A result is measured before it is returned: a map of 10,000 references to one
//! 256 KB string is small in memory but 2.6 GB as JSON, so its size (every string
//! counted each time it appears) must fit `limits.max_memory` too.

use super::budget;
use super::compile::CompiledRule;
use super::json::{register_field_getters, result_bytes, FieldNames};
use super::sandbox::{
    build_engine, stopped_at_ops, with_deadline_at, Limits, DEADLINE_TOKEN, MEMORY_TOKEN,
};
use crate::model::Stage;
use rhai::debugger::{DebuggerCommand, DebuggerEvent};
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};
use serde::Serialize;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Extra time a located re-run may take past the call's own deadline (a timeout has
/// none left). Keeps a limit hit within `timeout_ms` + 250 ms with room to spare.
pub const LOCATE_GRACE: Duration = Duration::from_millis(100);

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
    let deadline = Instant::now() + limits.timeout();
    let result = with_deadline_at(deadline, || {
        budget::with_budget(limits.max_memory, || {
            invoke(&engine, rule, entry, first.clone(), ctx.clone())
        })
    });
    match result {
        Ok(out) => match result_bytes(&out, limits.max_memory) {
            Ok(_) => Ok(out),
            Err(too_big) => {
                let message = if too_big.starts_with("data nested") {
                    format!("fn {entry} returned {too_big}; results that deep are refused")
                } else {
                    format!(
                        "fn {entry} returned {too_big} (each string counted every time it appears), over limits.max_memory ({} bytes)",
                        limits.max_memory
                    )
                };
                let mut error = RuleError::for_rule(rule, RuleErrorKind::Limit, message);
                if let Some((line, col)) = rule.entry_position(entry) {
                    error.line = Some(line);
                    error.col = Some(col);
                }
                Err(error)
            }
        },
        Err(err) => {
            let location = if err.is_system_exception() || is_deadline(&err) || is_memory(&err) {
                let ops = if is_deadline(&err) || is_memory(&err) {
                    Some(stopped_at_ops())
                } else {
                    None
                };
                let until = deadline.max(Instant::now()) + LOCATE_GRACE;
                locate_limit_hit(
                    rule,
                    (limits, fields),
                    entry,
                    first.clone(),
                    ctx.clone(),
                    until,
                    ops,
                )
            } else {
                None
            };
            Err(to_rule_error(rule, limits, &err, location))
        }
    }
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

fn is_memory(err: &EvalAltResult) -> bool {
    matches!(err.unwrap_inner(), EvalAltResult::ErrorTerminated(token, _) if token.to_string() == MEMORY_TOKEN)
}

/// Where a call that hit a limit was when it stopped: (source, position).
type Location = (Option<String>, Position);

/// Repeats a failed call with a stepping debugger to find the statement it stopped at:
/// until `until` at the latest, and after `ops` operations when the first run was
/// stopped by the clock or the memory budget (the same operation, for a deterministic
/// script, found without running the whole timeout again).
fn locate_limit_hit(
    rule: &CompiledRule,
    (limits, fields): (&Limits, &FieldNames),
    entry: &str,
    first: Dynamic,
    ctx: Dynamic,
    until: Instant,
    ops: Option<u64>,
) -> Option<Location> {
    let last: Arc<Mutex<Option<Location>>> = Arc::default();
    // The same functions as the failed call, so it stops at the same place.
    let mut engine = runtime_engine(limits, fields);
    if let Some(ops) = ops.filter(|&n| n > 0) {
        engine.set_max_operations(ops);
    }
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
    let _ = with_deadline_at(until, || {
        budget::with_budget(limits.max_memory, || {
            invoke(&engine, rule, entry, first, ctx)
        })
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
            format!(
                "stopped at its wall-clock deadline of {} ms (limits.timeout_ms)",
                limits.timeout_ms
            ),
        ),
        e if is_memory(e) => (
            RuleErrorKind::Limit,
            format!(
                "stopped: it grew memory past {} bytes (limits.max_memory)",
                limits.max_memory
            ),
        ),
        // A script's `throw`, or a native helper refusing: the value is the message.
        EvalAltResult::ErrorRuntime(value, _) => {
            (RuleErrorKind::Script, crate::problem::clip_display(value))
        }
        other => (
            RuleErrorKind::Script,
            strip_position(&crate::problem::clip_display(other)),
        ),
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

/// Rhai appends ` (line 3, position 7)` to messages; problems carry the location apart.
pub fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') => message[..at].to_string(),
        _ => message.to_string(),
    }
}
