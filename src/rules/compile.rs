//! Turning a [`PackSnapshot`] into a [`CompiledPack`]: validate, compile, check.
//!
//! Order: central schemas → manifest (against `rule-pack.schema.json`) → lookup tables
//! (against their row schemas) → every enabled script compiled, its imports resolved
//! inside the pack, its entry points checked by name and arity → params validated
//! against each rule's params schema. Every problem found is reported, not just the first;
//! a pack with any problem is never returned.
//!
//! Imports are resolved at compile time (`compile_into_self_contained`) by
//! [`PackResolver`], which serves only `.rhai` files of the snapshot: a path that leads
//! outside the pack is a load error, and at run time no module is ever read from disk.

use super::engine::{build_engine, with_limits, Limits, DEADLINE_TOKEN, MEMORY_TOKEN};
use super::json::{FieldNames, JsonView};
use super::lint::{self, codes, Documents};
use super::manifest::{
    locate_in_manifest, referenced_file, referenced_schema, toml_location, Manifest, RuleSpec,
    MANIFEST,
};
use super::tables::Tables;
use crate::model::Stage;
use crate::problem::{line_col, Problem, Severity};
use crate::schema::{violations, SchemaSet};
use crate::snapshot::{confine, PackSnapshot};
use rhai::module_resolvers::ModuleResolver;
use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared, AST};

type SharedModule = Shared<Module>;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One rule, compiled and ready to call.
pub struct CompiledRule {
    pub name: String,
    /// `name` as scripts see it (`ctx.rule`), made once.
    pub script_name: rhai::ImmutableString,
    pub stage: Stage,
    /// Display path of the script (`rules/map/standard.rhai`).
    pub path: String,
    pub ast: AST,
    /// Entry points the script defines (for `map`, one or both directions).
    pub entries: Vec<&'static str>,
    pub params: JsonView,
    /// Whether the script has top-level statements (imports, constants) that must run
    /// before each call; scripts made only of functions skip that step.
    pub runs_top_level: bool,
    /// Where each entry point is defined (line, col), to locate errors about what it
    /// returned.
    pub entry_positions: Vec<(&'static str, usize, usize)>,
}

impl CompiledRule {
    pub fn defines(&self, entry: &str) -> bool {
        self.entries.contains(&entry)
    }

    pub fn entry_position(&self, entry: &str) -> Option<(usize, usize)> {
        self.entry_positions
            .iter()
            .find(|(e, _, _)| *e == entry)
            .map(|&(_, l, c)| (l, c))
    }
}

/// A rule pack that passed every check. Immutable; shared by all workers.
pub struct CompiledPack {
    pub name: String,
    /// Content hash of the pack and schemas it was built from.
    pub version: String,
    pub limits: Limits,
    /// Keys of the params and table rows, read through direct getters.
    pub field_names: FieldNames,
    /// Enabled rules, grouped by stage in pipeline order, manifest order within a stage.
    pub rules: Vec<CompiledRule>,
    pub tables: Arc<Tables>,
    pub schemas: Arc<SchemaSet>,
    pub snapshot: Arc<PackSnapshot>,
    /// The static pass's warnings (`rules::lint`): reported by `check`, never refusing.
    pub warnings: Vec<Problem>,
}

impl CompiledPack {
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &CompiledRule> {
        self.rules.iter().filter(move |r| r.stage == stage)
    }

    pub fn rule(&self, name: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Validates, compiles and checks the whole snapshot.
    pub fn build(snapshot: PackSnapshot) -> Result<CompiledPack, Vec<Problem>> {
        let schemas = SchemaSet::from_files(&snapshot.schemas, &snapshot.schemas_label)?;
        let manifest = Manifest::load(&snapshot, &schemas)?;
        let manifest_path = snapshot.display_path(MANIFEST);
        let mut problems = Vec::new();

        let tables = Tables::load(&manifest.tables, &snapshot, &schemas, &manifest_path)
            .unwrap_or_else(|mut p| {
                problems.append(&mut p);
                Tables::default()
            });

        let limits = manifest.limits;
        let mut engine = build_engine(&limits);
        let resolver = PackResolver::new(&snapshot, &limits);
        engine.set_module_resolver(resolver.clone());

        let docs = Documents::new(|name| {
            snapshot
                .schemas
                .get(name)
                .and_then(|b| String::from_utf8(b.clone()).ok())
        });
        let lint_engine = lint::lint_engine(&limits);
        let table_names: Vec<String> = manifest.tables.keys().cloned().collect();
        let mut warnings = Vec::new();
        let mut rules = Vec::new();
        for stage in Stage::ALL {
            for (index, spec) in manifest.rules(stage).iter().enumerate() {
                if !spec.enabled {
                    continue;
                }
                let pointer = format!("/{stage}/{index}");
                match compile_rule(
                    &engine,
                    &resolver,
                    &snapshot,
                    &schemas,
                    stage,
                    spec,
                    &manifest_path,
                    &pointer,
                ) {
                    Ok(rule) => {
                        let found = lint_compiled(
                            &lint_engine,
                            &snapshot,
                            &manifest_path,
                            spec,
                            &rule,
                            &table_names,
                            &docs,
                        );
                        for p in found {
                            if p.severity == Severity::Warning {
                                warnings.push(p);
                            } else {
                                problems.push(p);
                            }
                        }
                        rules.push(rule);
                    }
                    Err(mut p) => problems.append(&mut p),
                }
            }
        }
        for (entry, side) in [
            ("to_sentinel", "Defender → Sentinel"),
            ("to_defender", "Sentinel → Defender"),
        ] {
            if problems.is_empty() && !rules.iter().any(|r| r.defines(entry)) {
                problems.push(Problem::at_pointer(
                    &manifest_path,
                    "/map",
                    format!(
                        "no enabled map rule defines fn {entry}(incident, ctx); {side} needs one"
                    ),
                ));
            }
        }
        if problems.is_empty() && !rules.iter().any(|r| r.stage == Stage::Direction) {
            problems.push(Problem::at_pointer(
                &manifest_path,
                "/direction",
                "no enabled direction rule",
            ));
        }
        if !problems.is_empty() {
            let text = snapshot.text(MANIFEST).and_then(Result::ok).unwrap_or("");
            locate_in_manifest(&mut problems, &manifest_path, text, |stage, i| {
                manifest.rule_name(stage, i)
            });
            // One broken library imported by several rules is one problem, not several.
            let mut seen = std::collections::HashSet::new();
            problems.retain(|p| seen.insert(p.to_string()));
            return Err(problems);
        }
        let field_names =
            FieldNames::collect(rules.iter().map(|r| r.params.node()).chain(tables.rows()));
        Ok(CompiledPack {
            name: manifest.name,
            version: snapshot.version.clone(),
            limits,
            field_names,
            rules,
            tables: Arc::new(tables),
            schemas: Arc::new(schemas),
            snapshot: Arc::new(snapshot),
            warnings,
        })
    }
}

/// The static pass on one compiled rule (see `rules::lint`).
fn lint_compiled(
    engine: &Engine,
    snapshot: &PackSnapshot,
    manifest_path: &str,
    spec: &RuleSpec,
    rule: &CompiledRule,
    tables: &[String],
    docs: &Documents,
) -> Vec<Problem> {
    let Some(rel) = rule.path.strip_prefix(&format!("{}/", snapshot.label)) else {
        return Vec::new();
    };
    let Some(Ok(source)) = snapshot.text(rel) else {
        return Vec::new();
    };
    // Its validator compiled already (check_params); here only its property names.
    let params_schema: Option<Value> = spec.params_schema.as_ref().and_then(|rel| {
        let rel = confine(rel).ok()?;
        serde_json::from_str(snapshot.text(&rel)?.ok()?).ok()
    });
    let _ = manifest_path;
    lint::lint_rule(
        engine,
        &lint::Rule {
            name: &spec.name,
            stage: rule.stage,
            path: &rule.path,
            source,
            params: rule.params.node(),
            params_schema: params_schema.as_ref(),
            tables,
            docs,
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    engine: &Engine,
    resolver: &PackResolver,
    snapshot: &PackSnapshot,
    schemas: &SchemaSet,
    stage: Stage,
    spec: &RuleSpec,
    manifest_path: &str,
    pointer: &str,
) -> Result<CompiledRule, Vec<Problem>> {
    let mut problems = Vec::new();
    let params =
        check_params(snapshot, schemas, spec, manifest_path, pointer).unwrap_or_else(|mut p| {
            problems.append(&mut p);
            Value::Null
        });

    let (rel, source) = match referenced_file(
        snapshot,
        manifest_path,
        &format!("{pointer}/script"),
        "script",
        &spec.script,
    ) {
        Ok(found) => found,
        Err(mut p) => {
            problems.append(&mut p);
            return Err(problems);
        }
    };
    let path = snapshot.display_path(&rel);

    let ast = match resolver.compile_script(engine, &path, source) {
        Ok(ast) => ast,
        Err(p) => {
            problems.push(p);
            return Err(problems);
        }
    };

    let mut entries = Vec::new();
    for &entry in stage.entry_points() {
        let arities: Vec<usize> = ast
            .iter_functions()
            .filter(|f| f.name == entry)
            .map(|f| f.params.len())
            .collect();
        if arities.contains(&2) {
            entries.push(entry);
        } else if let Some(n) = arities.first() {
            let (line, col) = find_fn(source, entry);
            let first = match stage {
                Stage::Enrich => "target",
                Stage::Direction => "change",
                _ => "incident",
            };
            problems.push(Problem::at(
                &path,
                line,
                col,
                format!("fn {entry} takes {n} parameter(s); the {stage} stage calls {entry}({first}, ctx) with 2"),
            ).with_code(codes::ENTRY_ARITY).with_hint(format!("declare it as fn {entry}({first}, ctx)")));
        }
    }
    if entries.is_empty() && problems.is_empty() {
        let wanted: Vec<String> = stage
            .entry_points()
            .iter()
            .map(|e| format!("fn {e}(…, ctx)"))
            .collect();
        let wanted = wanted.join(if stage == Stage::Map { " or " } else { ", " });
        problems.push(Problem::at(
            &path,
            Some(1),
            Some(1),
            format!("a {stage} rule must define {wanted}"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let entry_positions = entries
        .iter()
        .filter_map(|&e| match find_fn(source, e) {
            (Some(l), Some(c)) => Some((e, l, c)),
            _ => None,
        })
        .collect();
    Ok(CompiledRule {
        entry_positions,
        name: spec.name.clone(),
        script_name: spec.name.as_str().into(),
        stage,
        path,
        runs_top_level: !ast.statements().is_empty(),
        ast,
        entries,
        params: JsonView::new(Arc::new(params)),
    })
}

/// Validates a rule's params against its params schema; absent params count as `{}`.
fn check_params(
    snapshot: &PackSnapshot,
    schemas: &SchemaSet,
    spec: &RuleSpec,
    manifest_path: &str,
    pointer: &str,
) -> Result<Value, Vec<Problem>> {
    let params = spec
        .params
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let Some(schema_rel) = &spec.params_schema else {
        return Ok(params);
    };
    let validator = referenced_schema(
        snapshot,
        schemas,
        manifest_path,
        &format!("{pointer}/params_schema"),
        schema_rel,
    )?;
    let bad = violations(&validator, &params);
    if bad.is_empty() {
        Ok(params)
    } else {
        let text = snapshot.text(MANIFEST).and_then(Result::ok).unwrap_or("");
        Err(bad
            .into_iter()
            .map(|v| {
                let at = if v.pointer == "/" {
                    String::new()
                } else {
                    v.pointer
                };
                let full = format!("{pointer}/params{at}");
                let stage = pointer.split('/').nth(1).unwrap_or("");
                let message = format!("rule '{}' ({stage}): params{at}: {}", spec.name, v.message);
                let hint = format!(
                    "the params must match {}",
                    spec.params_schema.as_deref().unwrap_or("the params schema")
                );
                match toml_location(text, &full) {
                    Some((line, col)) => Problem::at(manifest_path, Some(line), Some(col), message),
                    None => Problem::at_pointer(manifest_path, full, message),
                }
                .with_code(codes::BAD_PARAMS)
                .with_hint(hint)
            })
            .collect())
    }
}

/// Line and column of `fn name(` in a script, for problems about a function's signature.
fn find_fn(source: &str, name: &str) -> (Option<usize>, Option<usize>) {
    let needle = format!("fn {name}");
    source
        .find(&needle)
        .map(|at| line_col(source, at))
        .map_or((None, None), |(l, c)| (Some(l), Some(c)))
}

/// Serves `import "path"` from the snapshot's `.rhai` files, relative to the pack folder.
#[derive(Clone)]
struct PackResolver {
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
    fn new(snapshot: &PackSnapshot, limits: &Limits) -> Self {
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

    fn compile_script(&self, engine: &Engine, path: &str, source: &str) -> Result<AST, Problem> {
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

/// Rhai appends ` (line 3, position 7)` to messages; problems carry the location apart.
pub fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') => message[..at].to_string(),
        _ => message.to_string(),
    }
}
