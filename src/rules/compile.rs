//! Turning a [`PackSnapshot`] into a [`CompiledPack`]: validate, compile, check.
//!
//! Order: central schemas → manifest (against `rule-pack.schema.json`) → lookup tables
//! (against their row schemas) → every enabled script compiled, its imports resolved
//! inside the pack, its entry points checked by name and arity → params validated
//! against each rule's params schema (`params.rs`) → the static pass (`lint`). Every
//! problem found is reported, not just the first; a pack with any problem is never
//! returned.
//!
//! Imports are resolved at compile time by [`PackResolver`] (`resolver.rs`), from the
//! snapshot only: at run time no module is ever read from disk.

use super::json::{FieldNames, JsonView};
use super::lint::{self, codes, Documents};
use super::manifest::{locate_in_manifest, referenced_file, Manifest, RuleSpec, MANIFEST};
use super::params::check_params;
use super::resolver::PackResolver;
use super::sandbox::{build_engine, Limits};
use super::tables::Tables;
use crate::model::Stage;
use crate::problem::{line_col, Problem, Severity};
use crate::schema::SchemaSet;
use crate::snapshot::{confine, PackSnapshot};
use rhai::{Engine, AST};
use serde_json::Value;
use std::sync::Arc;

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

/// Line and column of `fn name(` in a script, for problems about a function's signature.
fn find_fn(source: &str, name: &str) -> (Option<usize>, Option<usize>) {
    let needle = format!("fn {name}");
    source
        .find(&needle)
        .map(|at| line_col(source, at))
        .map_or((None, None), |(l, c)| (Some(l), Some(c)))
}
