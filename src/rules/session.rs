//! An interactive evaluation session: expressions evaluated against one incident with a
//! compiled pack's natives, tables and field getters, and one rule's `ctx` and helper
//! functions in scope. `rulebridge repl` and the function reference's example tests
//! both evaluate through it, so an example runs exactly as a rule would.
//!
//! Invariants: every evaluation runs on an engine from [`build_engine`] (the sandbox),
//! under the pack's limits (operations, wall time, memory) and its result is measured
//! before it is shown; variables declared with `let` persist between evaluations.

use super::compile::CompiledPack;
use super::context::{Ctx, Twin};
use super::json::{dynamic_to_value, register_field_getters, result_bytes, JsonView};
use super::pipeline::{Prepared, RunOptions};
use super::sandbox::{build_engine, with_limits};
use crate::model::Side;
use rhai::{Dynamic, Engine, ImmutableString, Scope, AST};
use serde_json::Value;
use std::sync::Arc;

/// One incident, one pack, the chosen rule, and the variables the user declared.
pub struct Session<'p> {
    pack: &'p CompiledPack,
    engine: Engine,
    prepared: Prepared,
    scope: Scope<'static>,
    /// The chosen rule's functions (its helpers and entry points), callable by name.
    functions: AST,
    rule: Option<String>,
}

impl<'p> Session<'p> {
    /// A session on `incident` coming from `source`, with no rule chosen (`ctx.params`
    /// is empty until [`Session::use_rule`]).
    pub fn new(pack: &'p CompiledPack, incident: Value, source: Side, sync_time: &str) -> Self {
        let opts = RunOptions {
            sync_time: sync_time.to_string(),
            linked: false,
            twin: Twin::Rulebridge,
            explain: false,
        };
        let mut engine = build_engine(&pack.limits);
        register_field_getters(&mut engine, &pack.field_names);
        let incident = Arc::new(incident);
        let prepared = pack.prepare(incident.clone(), source, &opts);
        let ctx = Dynamic::from(Ctx {
            env: prepared.env(),
            rule: ImmutableString::new(),
            params: JsonView::new(Arc::new(Value::Object(Default::default()))),
        });
        let mut session = Session {
            pack,
            engine,
            prepared,
            scope: Scope::new(),
            functions: AST::empty(),
            rule: None,
        };
        session.set_ctx(Dynamic::from(JsonView::new(incident)), ctx);
        session
    }

    fn set_ctx(&mut self, incident: Dynamic, ctx: Dynamic) {
        let params = ctx
            .read_lock::<Ctx>()
            .map(|c| Dynamic::from(c.params.clone()))
            .unwrap_or(Dynamic::UNIT);
        self.scope.set_or_push("incident", incident);
        self.scope.set_or_push("ctx", ctx);
        self.scope.set_or_push("params", params);
    }

    /// Makes `name`'s params, `ctx.rule` and functions the session's.
    pub fn use_rule(&mut self, name: &str) -> Result<(), String> {
        let Some(rule) = self.pack.rule(name) else {
            let known: Vec<&str> = self.pack.rules.iter().map(|r| r.name.as_str()).collect();
            return Err(format!(
                "no enabled rule named '{name}' (rules: {})",
                known.join(", ")
            ));
        };
        let ctx = self.pack.ctx(&self.prepared, rule);
        let incident = self
            .scope
            .get_value::<Dynamic>("incident")
            .unwrap_or(Dynamic::UNIT);
        self.set_ctx(incident, ctx);
        self.functions = rule.ast.clone_functions_only();
        self.rule = Some(rule.name.clone());
        Ok(())
    }

    /// The chosen rule, if any.
    pub fn rule(&self) -> Option<&str> {
        self.rule.as_deref()
    }

    /// Evaluates `code` (one or more statements; the last one's value is the result).
    pub fn eval(&mut self, code: &str) -> Result<Dynamic, String> {
        let ast = self
            .engine
            .compile_with_scope(&self.scope, code)
            .map_err(|e| e.to_string())?;
        let ast = self.functions.merge(&ast);
        let limits = self.pack.limits;
        let (engine, scope) = (&self.engine, &mut self.scope);
        let out = with_limits(&limits, || {
            engine.eval_ast_with_scope::<Dynamic>(scope, &ast)
        })
        .map_err(|e| limit_message(&e, &limits))?;
        result_bytes(&out, limits.max_memory).map_err(|e| format!("the result is {e}"))?;
        Ok(out)
    }
}

fn limit_message(err: &rhai::EvalAltResult, limits: &super::sandbox::Limits) -> String {
    match err.unwrap_inner() {
        rhai::EvalAltResult::ErrorTerminated(token, _)
            if token.to_string() == super::sandbox::DEADLINE_TOKEN =>
        {
            format!("stopped after limits.timeout_ms ({} ms)", limits.timeout_ms)
        }
        rhai::EvalAltResult::ErrorTerminated(token, _)
            if token.to_string() == super::sandbox::MEMORY_TOKEN =>
        {
            format!("stopped at limits.max_memory ({} bytes)", limits.max_memory)
        }
        _ => err.to_string(),
    }
}

/// A result as the reference and the REPL show it: JSON where it has one, `()` for unit.
pub fn show(value: &Dynamic) -> String {
    if value.is_unit() {
        return "()".into();
    }
    match dynamic_to_value(value) {
        Ok(json) => serde_json::to_string(&json).unwrap_or_default(),
        Err(_) => format!(
            "{} ({})",
            crate::problem::clip_display(value),
            value.type_name()
        ),
    }
}

/// Whether `code` is an unfinished expression that the next line continues: an open
/// bracket or string, or a line ending in `\`. Comments and string contents are skipped.
pub fn is_incomplete(code: &str) -> bool {
    if code.trim_end().ends_with('\\') {
        return true;
    }
    let mut depth: i64 = 0;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => {
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == '\\' && c == '"' {
                        chars.next();
                    } else if d == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return true;
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_brackets_and_strings_continue_on_the_next_line() {
        assert!(is_incomplete("fn f(x) {"));
        assert!(is_incomplete("let a = [1,\n 2,"));
        assert!(is_incomplete("\"open"));
        assert!(is_incomplete("1 + \\"));
        assert!(!is_incomplete("let s = \"{\"; // (\n s"));
        assert!(!is_incomplete("pluck(incident, \"alerts.title\")"));
    }
}
