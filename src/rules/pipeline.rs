//! Running a compiled pack on one incident: filter → map → enrich → validate, and the
//! `direction` decision for one changed field — with provenance for every step.
//!
//! Every function here takes `&CompiledPack`, so a whole incident is decided by one
//! consistent pack: a reload that swaps packs mid-incident cannot mix versions.
//! Nothing here does I/O; a failure is a [`RuleError`] value for that incident only.
//!
//! Explaining ([`CompiledPack::explain_pipeline`]) keeps, for every step, the document
//! after it and each field's old → new value; a failing rule is the last step, with its
//! error. An output that fails its schema is blamed on the rule that last wrote the
//! failing field ([`super::blame`]): a run without explain that fails validation is
//! re-run with per-step documents first, so the blame is the same either way.

use super::blame;
use super::call::{call_rule, RuleError, RuleErrorKind};
use super::compile::{CompiledPack, CompiledRule};
use super::context::{CallEnv, Ctx, Twin};
use super::delta::changed_fields;
use super::json::{dynamic_to_value, JsonView};
use crate::model::{Flow, Side, Stage};
use crate::schema;
use rhai::{Dynamic, ImmutableString, Map};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// What the engine tells the rules about this pass.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// RFC 3339 time of the sync pass (`ctx.sync_time`); rules never read the clock.
    pub sync_time: String,
    /// Whether the incident is already linked to its twin (`ctx.linked`).
    pub linked: bool,
    /// Who made the twin (`ctx.twin`).
    pub twin: Twin,
    /// Keep the document after every rule (for `eval --explain` and test diffs).
    pub explain: bool,
}

/// One rule's part in a decision: the provenance an audit row records.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainStep {
    pub rule: String,
    pub stage: Stage,
    pub file: String,
    /// Top-level fields of the target this rule set or changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Filter result or direction decision, for those stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Each field this rule changed, old → new, down to the changed leaves (only with
    /// `explain`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldDelta>,
    /// The target document after this rule (only with `explain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
    /// Why this rule failed (the last step of a failed run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One field a step changed: where (a JSON pointer into the target), before and after.
/// `old` is absent for a field the step added, `new` for one it removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDelta {
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// A pipeline run with every step kept, failed or not (`eval --explain`).
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    pub pack_version: String,
    pub source: Side,
    /// The steps that ran: up to and including a failing one.
    pub steps: Vec<ExplainStep>,
    #[serde(flatten)]
    pub verdict: Option<Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RuleError>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The request body for the other side: `{"properties": …}` for Sentinel, the PATCH
    /// body for Defender. Valid against its schema.
    Synced { body: Value },
    /// A filter rule returned false.
    Filtered { rule: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    pub pack_version: String,
    pub source: Side,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub steps: Vec<ExplainStep>,
}

/// The `direction` stage's answer for one field.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub flow: Flow,
    /// The deciding rule; `None` when every rule abstained (then the flow is `skip`).
    pub rule: Option<String>,
    pub pack_version: String,
    pub steps: Vec<ExplainStep>,
}

/// The incident-wide part of `ctx`, and the incident as scripts see it.
pub struct Prepared {
    env: Arc<CallEnv>,
    incident: Dynamic,
}

impl Prepared {
    /// The incident-wide part of `ctx`.
    pub fn env(&self) -> Arc<CallEnv> {
        self.env.clone()
    }
}

impl CompiledPack {
    /// Wraps an incident for rule calls (no copy of the document is made).
    pub fn prepare(&self, incident: Arc<Value>, source: Side, opts: &RunOptions) -> Prepared {
        let view = JsonView::new(incident);
        Prepared {
            incident: Dynamic::from(view.clone()),
            env: Arc::new(CallEnv {
                tables: self.tables.clone(),
                pack_version: ImmutableString::from(self.version.as_str()),
                sync_time: ImmutableString::from(opts.sync_time.as_str()),
                source,
                incident: view,
                linked: opts.linked,
                twin: opts.twin,
            }),
        }
    }

    pub(crate) fn ctx(&self, prepared: &Prepared, rule: &CompiledRule) -> Dynamic {
        Dynamic::from(Ctx {
            env: prepared.env.clone(),
            rule: rule.script_name.clone(),
            params: rule.params.clone(),
        })
    }

    pub(super) fn selected<'a>(
        &'a self,
        stage: Stage,
        only: Option<&'a str>,
    ) -> impl Iterator<Item = &'a CompiledRule> {
        self.stage(stage)
            .filter(move |r| only.is_none_or(|name| r.name == name))
    }

    /// Filter → map → enrich → schema validation: what `eval` shows and the sync writes.
    pub fn run_pipeline(
        &self,
        incident: Arc<Value>,
        source: Side,
        opts: &RunOptions,
    ) -> Result<PipelineResult, RuleError> {
        let mut steps = Vec::new();
        match self.pipeline_steps(incident.clone(), source, opts, &mut steps) {
            Ok(verdict) => Ok(PipelineResult {
                pack_version: self.version.clone(),
                source,
                verdict,
                steps,
            }),
            // Blame needs the document after every step; only failures pay for them.
            Err(e) if e.kind == RuleErrorKind::InvalidOutput && !opts.explain => {
                let explain = RunOptions {
                    explain: true,
                    ..opts.clone()
                };
                Err(self
                    .explain_pipeline(incident, source, &explain)
                    .error
                    .unwrap_or(e))
            }
            Err(e) => Err(e),
        }
    }

    /// The pipeline with every step's document and field changes kept, whether it
    /// succeeds or not: the steps up to the failing one, then the error.
    pub fn explain_pipeline(
        &self,
        incident: Arc<Value>,
        source: Side,
        opts: &RunOptions,
    ) -> Explained {
        let opts = RunOptions {
            explain: true,
            ..opts.clone()
        };
        let mut steps = Vec::new();
        let result = self.pipeline_steps(incident, source, &opts, &mut steps);
        let (verdict, error) = match result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        Explained {
            pack_version: self.version.clone(),
            source,
            steps,
            verdict,
            error,
        }
    }

    fn pipeline_steps(
        &self,
        incident: Arc<Value>,
        source: Side,
        opts: &RunOptions,
        steps: &mut Vec<ExplainStep>,
    ) -> Result<Verdict, RuleError> {
        if source == Side::Defender {
            let bad = self.schemas.check(schema::DEFENDER_INCIDENT, &incident);
            if let Some(first) = bad.into_iter().next() {
                let message = format!(
                    "incident does not match {}: {}",
                    schema::DEFENDER_INCIDENT,
                    first.message
                );
                return Err(
                    RuleError::new(RuleErrorKind::InvalidInput, message).at_pointer(first.pointer)
                );
            }
        }
        if source == Side::Sentinel && !incident.get("properties").is_some_and(Value::is_object) {
            let message = "a Sentinel incident carries its fields in a `properties` object, and this one has none";
            return Err(
                RuleError::new(RuleErrorKind::InvalidInput, message).at_pointer("/properties")
            );
        }
        let prepared = self.prepare(incident, source, opts);
        if let Some(rule) = self.run_filter(&prepared, None, steps)? {
            return Ok(Verdict::Filtered { rule });
        }
        let target = self.run_map(&prepared, None, opts, steps)?;
        let target = match self.run_enrich(&prepared, target, None, opts, steps) {
            Ok(target) => target,
            Err(e) if matches!(e.kind, RuleErrorKind::Script | RuleErrorKind::BadReturn) => {
                return Err(self.blame_map_output(&prepared, source, opts, steps, e));
            }
            Err(e) => return Err(e),
        };
        let body = self.finish(source, &target, steps)?;
        Ok(Verdict::Synced { body })
    }

    /// An enrich rule failed: if it was handed an invalid value (a map rule returning
    /// `severity: 3`, which an enrich rule then cannot compare), the rule that wrote the
    /// value is to blame, as it would be had no enrich rule read it. The map stage is
    /// re-run to see what it returned (rules are pure), so successful runs pay nothing.
    fn blame_map_output(
        &self,
        prepared: &Prepared,
        source: Side,
        opts: &RunOptions,
        steps: &[ExplainStep],
        failure: RuleError,
    ) -> RuleError {
        let Ok(target) = self.run_map(prepared, None, opts, &mut Vec::new()) else {
            return failure;
        };
        let (body, schema_name, prefix) = match self.body(source, &target, steps) {
            Ok(found) => found,
            Err(e) => return e,
        };
        let Some(bad) = self.violation(schema_name, &body, true) else {
            return failure;
        };
        let in_target = bad.pointer.strip_prefix(prefix).unwrap_or("");
        let message = format!(
            "output does not match {schema_name}: {} (rule '{}' then failed on it: {})",
            bad.message,
            failure.rule.as_deref().unwrap_or("?"),
            failure.message
        );
        output_error(self, steps, in_target, message).at_pointer(bad.pointer)
    }

    /// The first violation of `body` against the named output schema.
    fn violation(
        &self,
        schema_name: &str,
        body: &Value,
        values_only: bool,
    ) -> Option<blame::OutputViolation> {
        let schema_doc = self
            .schemas
            .document(&format!("https://rulebridge.dev/schemas/{schema_name}"));
        match self.schemas.validator(schema_name) {
            Some(validator) => blame::first_violation(validator, schema_doc, body, values_only),
            None => Some(blame::OutputViolation {
                pointer: "/".into(),
                message: format!("schema {schema_name} is not loaded"),
            }),
        }
    }

    /// Runs filter rules in order; returns the name of the first that said no.
    pub fn run_filter(
        &self,
        prepared: &Prepared,
        only: Option<&str>,
        steps: &mut Vec<ExplainStep>,
    ) -> Result<Option<String>, RuleError> {
        for rule in self.selected(Stage::Filter, only) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                "filter",
                &prepared.incident,
                &self.ctx(prepared, rule),
            )
            .map_err(|e| failed(steps, rule, e))?;
            let Some(keep) = out.clone().try_cast::<bool>() else {
                return Err(failed(
                    steps,
                    rule,
                    bad_return(rule, "filter", "true or false", &out),
                ));
            };
            steps.push(step(rule, Vec::new(), Some(keep.to_string()), None));
            if !keep {
                return Ok(Some(rule.name.clone()));
            }
        }
        Ok(None)
    }

    /// Runs the map rules for the source's direction; each contributes fields, later win.
    pub fn run_map(
        &self,
        prepared: &Prepared,
        only: Option<&str>,
        opts: &RunOptions,
        steps: &mut Vec<ExplainStep>,
    ) -> Result<Dynamic, RuleError> {
        let entry = prepared.env.source.map_function();
        let mut target = Map::new();
        for rule in self.selected(Stage::Map, only).filter(|r| r.defines(entry)) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                entry,
                &prepared.incident,
                &self.ctx(prepared, rule),
            )
            .map_err(|e| failed(steps, rule, e))?;
            if out.is_unit() {
                continue;
            }
            // Not `out.clone()`: that would deep-copy every field just to test the type.
            let fields = match out.try_cast_result::<Map>() {
                Ok(fields) => fields,
                Err(out) => {
                    let error = bad_return(rule, entry, "a map of fields (or () for none)", &out);
                    return Err(failed(steps, rule, error));
                }
            };
            let mut changed: Vec<String> = fields.keys().map(|k| k.to_string()).collect();
            changed.sort();
            target.extend(fields);
            let mut step = step(rule, changed, None, None);
            if opts.explain {
                explain_step(&mut step, steps, &Dynamic::from_map(target.clone()));
            }
            steps.push(step);
        }
        Ok(Dynamic::from_map(target))
    }

    /// Runs enrich rules in order, each on the previous one's output.
    pub fn run_enrich(
        &self,
        prepared: &Prepared,
        mut target: Dynamic,
        only: Option<&str>,
        opts: &RunOptions,
        steps: &mut Vec<ExplainStep>,
    ) -> Result<Dynamic, RuleError> {
        for rule in self.selected(Stage::Enrich, only) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                "enrich",
                &target,
                &self.ctx(prepared, rule),
            )
            .map_err(|e| failed(steps, rule, e))?;
            if !out.is_map() {
                let error = bad_return(rule, "enrich", "the target map", &out);
                return Err(failed(steps, rule, error));
            }
            let changed = changed_fields(&target, &out);
            target = out;
            let mut step = step(rule, changed, None, None);
            if opts.explain {
                explain_step(&mut step, steps, &target);
            }
            steps.push(step);
        }
        Ok(target)
    }

    /// Converts the target to the request body and validates it against its schema.
    pub fn finish(
        &self,
        source: Side,
        target: &Dynamic,
        steps: &[ExplainStep],
    ) -> Result<Value, RuleError> {
        let (body, schema_name, prefix) = self.body(source, target, steps)?;
        if let Some(bad) = self.violation(schema_name, &body, false) {
            let in_target = bad.pointer.strip_prefix(prefix).unwrap_or("");
            let message = format!("output does not match {schema_name}: {}", bad.message);
            return Err(output_error(self, steps, in_target, message).at_pointer(bad.pointer));
        }
        Ok(body)
    }

    /// The request body for `target`, the schema it must match and the pointer prefix
    /// of the target's fields in it.
    fn body(
        &self,
        source: Side,
        target: &Dynamic,
        steps: &[ExplainStep],
    ) -> Result<(Value, &'static str, &'static str), RuleError> {
        let fields = dynamic_to_value(target).map_err(|e| {
            // Blamed on the rule that set the offending top-level field.
            let field = e.pointer.trim_start_matches('/').split('/').next();
            let in_target = format!("/{}", field.unwrap_or(""));
            // The pointer into the request body, as schema failures give it.
            let pointer = match source {
                Side::Defender => format!("/properties{}", e.pointer.trim_end_matches('/')),
                Side::Sentinel => e.pointer.clone(),
            };
            RuleError {
                kind: RuleErrorKind::BadReturn,
                ..output_error(self, steps, &in_target, e.message).at_pointer(pointer)
            }
        })?;
        let (body, schema_name, prefix) = match source {
            Side::Defender => (
                // Not `json!`: that would serialize (deep-copy) the whole document again.
                Value::Object(serde_json::Map::from_iter([(
                    "properties".to_string(),
                    fields,
                )])),
                schema::SENTINEL_INCIDENT,
                "/properties",
            ),
            Side::Sentinel => (fields, schema::DEFENDER_UPDATE, ""),
        };
        Ok((body, schema_name, prefix))
    }
}

pub(super) fn step(
    rule: &CompiledRule,
    changed: Vec<String>,
    result: Option<String>,
    document: Option<Value>,
) -> ExplainStep {
    ExplainStep {
        rule: rule.name.clone(),
        stage: rule.stage,
        file: rule.path.clone(),
        changed,
        result,
        changes: Vec::new(),
        document,
        error: None,
    }
}

pub(super) fn bad_return(
    rule: &CompiledRule,
    entry: &str,
    wanted: &str,
    got: &Dynamic,
) -> RuleError {
    let shown = if got.is_unit() {
        "()".to_string()
    } else {
        format!("{} {}", got.type_name(), clip_debug(got))
    };
    RuleError::for_rule(
        rule,
        RuleErrorKind::BadReturn,
        format!("fn {entry} must return {wanted}, returned {shown}"),
    )
}

/// The value, formatted only as far as it is shown (it may be gigabytes).
fn clip_debug(value: &Dynamic) -> String {
    crate::problem::clip_display(value)
}

/// An output failure at `pointer` (into the target), blamed on the rule that last
/// wrote it (see [`blame::culprit`]).
fn output_error(
    pack: &CompiledPack,
    steps: &[ExplainStep],
    pointer: &str,
    message: String,
) -> RuleError {
    let rule = blame::culprit(steps, pointer).and_then(|s| pack.rule(&s.rule));
    match rule {
        Some(rule) => {
            let mut error = RuleError::for_rule(rule, RuleErrorKind::InvalidOutput, message);
            // Located at the function that returned the field (a map or enrich entry).
            let at = rule
                .entries
                .iter()
                .find_map(|entry| rule.entry_position(entry));
            if let Some((line, col)) = at {
                error.line = Some(line);
                error.col = Some(col);
            }
            error
        }
        None => RuleError::new(RuleErrorKind::InvalidOutput, message),
    }
}

/// Records a rule's failure as the last step, and passes the error on.
pub(super) fn failed(
    steps: &mut Vec<ExplainStep>,
    rule: &CompiledRule,
    error: RuleError,
) -> RuleError {
    let mut step = step(rule, Vec::new(), None, None);
    step.error = Some(error.message.clone());
    steps.push(step);
    error
}

/// Fills in the document after `step` and its field changes against the previous
/// document. A target that is not JSON (a NaN, a function pointer) keeps no document:
/// validation then reports it, blamed like any other output failure.
fn explain_step(step: &mut ExplainStep, before: &[ExplainStep], target: &Dynamic) {
    let Ok(now) = dynamic_to_value(target) else {
        return;
    };
    let empty = Value::Object(Default::default());
    let previous = before
        .iter()
        .rev()
        .find_map(|s| s.document.as_ref())
        .unwrap_or(&empty);
    super::delta::field_deltas("", Some(previous), Some(&now), &mut step.changes);
    step.document = Some(now);
}
