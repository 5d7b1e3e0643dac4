//! The static pass over each rule script: mistakes found before anything runs.
//!
//! Run by [`CompiledPack::build`](super::CompiledPack::build) on every enabled rule that
//! compiled, so startup, hot reload, `check`, `demo` and the playground all judge a
//! pack the same way. Findings are [`Problem`]s with a code from [`codes`], a span and a
//! hint: errors refuse the pack, warnings are kept on it (`CompiledPack::warnings`).
//!
//! Invariant: an error is certain — the code it points at fails on every run that
//! reaches it (an unknown or forbidden function, a `ctx` member that does not exist, a
//! params key that is neither in the schema nor set, a table the manifest does not
//! declare). Whatever the walk cannot follow is not judged. Warnings cover what is
//! likely wrong but legal (fields the open input schemas do not list, unused variables,
//! unreachable code).
//!
//! The script is parsed a second time for this pass with optimisation off (the running
//! AST is optimised, which removes unreachable code and folds constants away), by an
//! engine from the same factory, so names and syntax are judged exactly as compiled.

pub mod codes;
pub mod fields;
pub mod known;
pub mod parse;
mod walk;

use super::sandbox::{build_engine, Limits};
use crate::model::Stage;
use crate::problem::Problem;
use rhai::{Engine, OptimizationLevel};
use serde_json::Value;

pub use fields::Documents;

/// What the pass knows about one rule.
pub struct Rule<'a> {
    pub name: &'a str,
    pub stage: Stage,
    /// Display path of the script.
    pub path: &'a str,
    pub source: &'a str,
    /// The params as set in pack.toml (validated).
    pub params: &'a Value,
    /// The rule's params schema, when it has one.
    pub params_schema: Option<&'a Value>,
    /// The manifest's table names.
    pub tables: &'a [String],
    pub docs: &'a Documents,
}

impl Rule<'_> {
    /// The params keys a script may read, when the schema lists its properties (and
    /// says nothing that could allow others by pattern or condition).
    fn params_keys(&self) -> Option<Vec<&str>> {
        let schema = self.params_schema?;
        let props = schema.get("properties")?.as_object()?;
        if ["patternProperties", "oneOf", "anyOf", "allOf", "if", "$ref"]
            .iter()
            .any(|k| schema.get(*k).is_some())
        {
            return None;
        }
        let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
        if let Some(set) = self.params.as_object() {
            keys.extend(set.keys().map(String::as_str));
        }
        keys.sort_unstable();
        keys.dedup();
        Some(keys)
    }
}

/// A finding before it is placed in a file.
struct Finding {
    code: &'static str,
    line: Option<usize>,
    col: Option<usize>,
    /// Characters the span covers on its line.
    len: usize,
    message: String,
    hint: Option<String>,
}

/// The engine the pass parses with: the sandbox's, without optimisation.
pub fn lint_engine(limits: &Limits) -> Engine {
    let mut engine = build_engine(limits);
    engine.set_optimization_level(OptimizationLevel::None);
    engine
}

/// Every finding of the pass on one rule, errors and warnings, in source order.
pub fn lint_rule(engine: &Engine, rule: &Rule<'_>) -> Vec<Problem> {
    // The script compiled already; a second parse failing would be a Rhai surprise,
    // and is not the author's problem to read about twice.
    let Ok(ast) = engine.compile(rule.source) else {
        return Vec::new();
    };
    let mut walker = walk::Walker::new(rule, &ast);
    walker.run(&ast);
    let mut findings = walker.findings;
    findings.sort_by_key(|f| (f.line, f.col, f.code));
    findings.dedup_by(|a, b| a.line == b.line && a.col == b.col && a.code == b.code);
    findings
        .into_iter()
        .map(|f| {
            let mut p = Problem::at(rule.path, f.line, f.col, f.message)
                .with_code(f.code)
                .with_severity(codes::severity(f.code));
            if let (Some(line), Some(col)) = (f.line, f.col) {
                p = p.with_end(line, col + f.len.max(1));
            }
            if let Some(hint) = f.hint {
                p = p.with_hint(hint);
            }
            p
        })
        .collect()
}

/// A parse error placed at its cause: an unclosed delimiter, when Rhai reached the end
/// of the file looking for its closing half.
pub fn locate_parse_error(source: &str, message: &str, problem: Problem) -> Problem {
    let mut problem = problem.with_code(codes::SYNTAX);
    let at_end = message.contains("Expecting '}'")
        || message.contains("Expecting ')'")
        || message.contains("Expecting ']'")
        || message.contains("end of script");
    if at_end {
        if let Some((open, line, col)) = parse::unclosed(source) {
            let close = parse::matching(open);
            problem.message = format!("this `{open}` is never closed ({message})");
            problem.line = Some(line);
            problem.col = Some(col);
            problem = problem
                .with_end(line, col + 1)
                .with_hint(format!("add the missing `{close}`"));
        }
    }
    problem
}

#[cfg(test)]
mod tests;
