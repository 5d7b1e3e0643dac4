//! Rhai `import`s served from the pack snapshot, never from disk.
//!
//! [`PackResolver`] is the module resolver of the engine that compiles a pack: imports
//! are resolved at compile time (`compile_into_self_contained`), so at run time no module
//! is ever read. It serves only the snapshot's `.rhai` files, relative to the pack
//! folder (`confine` refuses a path that leads outside), runs each module's top level
//! once under the pack's limits, and reports a failed import as a problem at the
//! `import` statement (the root cause first, in whichever file it is). Import cycles and
//! a broken module imported by several rules are reported once.

use super::call::strip_position;
use super::lint;
use super::sandbox::{build_engine, with_limits, Limits, DEADLINE_TOKEN, MEMORY_TOKEN};
use crate::problem::{line_col, Problem};
use crate::snapshot::{confine, PackSnapshot};
use rhai::module_resolvers::ModuleResolver;
use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared, AST};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type SharedModule = Shared<Module>;

/// Serves `import "path"` from the snapshot's `.rhai` files, relative to the pack folder.
#[derive(Clone)]
pub struct PackResolver {
    inner: Arc<ResolverState>,
}

struct ResolverState {
    snapshot: PackSnapshot,
    limits: Limits,
    modules: Mutex<HashMap<String, SharedModule>>,
    /// Modules whose top level failed, with the problem: imported again (by another
    /// rule), they fail at once instead of running out their limits a second time.
    failed: Mutex<HashMap<String, Problem>>,
    /// Files being compiled right now, innermost last: (display path, text). The last
    /// one is the importer of the path being resolved; a repeat is an import cycle.
    compiling: Mutex<Vec<(String, String)>>,
    /// Problems met while resolving, root cause first, located where they are.
    problems: Mutex<Vec<Problem>>,
}

impl PackResolver {
    pub fn new(snapshot: &PackSnapshot, limits: &Limits) -> Self {
        PackResolver {
            inner: Arc::new(ResolverState {
                snapshot: snapshot.clone(),
                limits: *limits,
                modules: Mutex::new(HashMap::new()),
                failed: Mutex::new(HashMap::new()),
                compiling: Mutex::new(Vec::new()),
                problems: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Compiles `text` with its imports embedded; an error becomes a located problem
    /// (for a failed import: the root cause, in whichever file it is).
    fn compile_file(&self, engine: &Engine, path: &str, text: &str) -> Result<AST, Problem> {
        let state = &self.inner;
        state
            .compiling
            .lock()
            .expect("resolver lock")
            .push((path.to_string(), text.to_string()));
        let result = engine.compile_into_self_contained(&Scope::new(), text);
        state.compiling.lock().expect("resolver lock").pop();
        let mut ast = result.map_err(|err| {
            let root_cause = state
                .problems
                .lock()
                .expect("resolver lock")
                .first()
                .cloned();
            root_cause.unwrap_or_else(|| {
                let pos = err.position();
                let (message, parse) = match *err {
                    EvalAltResult::ErrorParsing(ref kind, _) => (kind.to_string(), true),
                    ref other => (strip_position(&other.to_string()), false),
                };
                let problem = Problem::at(
                    path,
                    pos.line(),
                    pos.position().or(pos.line().map(|_| 1)),
                    message.clone(),
                );
                if parse {
                    lint::locate_parse_error(text, &message, problem)
                } else {
                    problem
                }
            })
        })?;
        ast.set_source(path);
        Ok(ast)
    }

    /// Compiles one rule's script; problems left from the previous script are dropped.
    pub fn compile_script(
        &self,
        engine: &Engine,
        path: &str,
        source: &str,
    ) -> Result<AST, Problem> {
        self.inner.problems.lock().expect("resolver lock").clear();
        self.compile_file(engine, path, source)
    }

    /// Records a failed import as a problem at the `import` statement in the importer.
    fn import_failed(&self, path: &str, message: String) -> Box<EvalAltResult> {
        let state = &self.inner;
        let importer = state
            .compiling
            .lock()
            .expect("resolver lock")
            .last()
            .cloned();
        let problem = match importer {
            Some((file, text)) => {
                let at = text
                    .find(&format!("\"{path}\""))
                    .map(|at| line_col(&text, at));
                Problem::at(file, at.map(|a| a.0), at.map(|a| a.1), message.clone())
            }
            None => Problem::in_file(state.snapshot.label.clone(), message.clone()),
        };
        state.problems.lock().expect("resolver lock").push(problem);
        EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
    }
}

impl ModuleResolver for PackResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        _pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let state = &self.inner;
        let with_ext = if path.ends_with(".rhai") {
            path.to_string()
        } else {
            format!("{path}.rhai")
        };
        let rel = confine(&with_ext).map_err(|m| {
            self.import_failed(
                path,
                format!("import {m}; imports are confined to the pack"),
            )
        })?;
        if let Some(module) = state.modules.lock().expect("resolver lock").get(&rel) {
            return Ok(module.clone());
        }
        if let Some(problem) = state.failed.lock().expect("resolver lock").get(&rel) {
            state
                .problems
                .lock()
                .expect("resolver lock")
                .push(problem.clone());
            return Err(EvalAltResult::ErrorRuntime(
                format!("import '{path}' failed to load").into(),
                Position::NONE,
            )
            .into());
        }
        let display = state.snapshot.display_path(&rel);
        if state
            .compiling
            .lock()
            .expect("resolver lock")
            .iter()
            .any(|(file, _)| *file == display)
        {
            return Err(
                self.import_failed(path, format!("import '{path}' is part of an import cycle"))
            );
        }
        let text = match state.snapshot.text(&rel) {
            None => {
                return Err(self.import_failed(
                    path,
                    format!("import '{path}': no file '{display}' in the pack"),
                ))
            }
            Some(Err(p)) => return Err(self.import_failed(path, p.message)),
            Some(Ok(text)) => text,
        };
        let importer = state
            .compiling
            .lock()
            .expect("resolver lock")
            .last()
            .map(|(f, _)| f.clone())
            .unwrap_or_default();
        let ast = self
            .compile_file(engine, &display, text)
            .map_err(|mut problem| {
                if problem.file == display {
                    problem
                        .message
                        .push_str(&format!(" (in '{path}', imported by {importer})"));
                }
                let mut problems = state.problems.lock().expect("resolver lock");
                if problems.is_empty() {
                    problems.push(problem);
                }
                EvalAltResult::ErrorRuntime(
                    format!("import '{path}' failed").into(),
                    Position::NONE,
                )
            })?;
        // A module's top level runs once, here, under the same limits as a rule call:
        // operations, the wall-clock deadline and the memory budget.
        let mut module_engine = build_engine(&state.limits);
        module_engine.set_module_resolver(self.clone());
        let module = with_limits(&state.limits, || {
            Module::eval_ast_as_new(Scope::new(), &ast, &module_engine)
        })
        .map_err(|err| {
            let p = err.position();
            let message = format!(
                "{} (imported by {importer})",
                module_failure(&err, &state.limits)
            );
            let problem = Problem::at(&display, p.line(), p.position(), message);
            state
                .failed
                .lock()
                .expect("resolver lock")
                .insert(rel.clone(), problem.clone());
            state.problems.lock().expect("resolver lock").push(problem);
            Box::new(EvalAltResult::ErrorRuntime(
                format!("import '{path}' failed to load").into(),
                Position::NONE,
            ))
        })?;
        let module: SharedModule = module.into();
        state
            .modules
            .lock()
            .expect("resolver lock")
            .insert(rel, module.clone());
        Ok(module)
    }
}

/// Why a module's top level failed, in the words a rule call's failure would use.
fn module_failure(err: &EvalAltResult, limits: &Limits) -> String {
    match err.unwrap_inner() {
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => {
            format!(
                "the module's top level ran past the wall-clock deadline of {} ms (limits.timeout_ms)",
                limits.timeout_ms
            )
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == MEMORY_TOKEN => format!(
            "the module's top level grew memory past {} bytes (limits.max_memory)",
            limits.max_memory
        ),
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the module's top level stopped after {} operations (limits.max_operations)",
            limits.max_operations
        ),
        _ => strip_position(&crate::problem::clip_display(err)),
    }
}
