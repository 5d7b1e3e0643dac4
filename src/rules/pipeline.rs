//! Running a compiled pack on one incident: filter → map → enrich → validate, and the
//! `direction` decision for one changed field — with provenance for every step.
//!
//! Every function here takes `&CompiledPack`, so a whole incident is decided by one
//! consistent pack: a reload that swaps packs mid-incident cannot mix versions.
//! Nothing here does I/O; a failure is a [`RuleError`] value for that incident only.

use super::call::{call_rule, RuleError, RuleErrorKind};
use super::compile::{CompiledPack, CompiledRule};
use super::context::{CallEnv, Ctx, Twin};
use super::json::{dynamic_to_value, JsonView};
use crate::model::{FieldChange, Flow, Side, Stage};
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
pub struct Step {
    pub rule: String,
    pub stage: Stage,
    pub file: String,
    /// Top-level fields of the target this rule set or changed.
    pub changed: Vec<String>,
    /// Filter result or direction decision, for those stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The target document after this rule (only with `explain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
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
pub struct Outcome {
    pub pack_version: String,
    pub source: Side,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub steps: Vec<Step>,
}

/// The `direction` stage's answer for one field.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub flow: Flow,
    /// The deciding rule; `None` when every rule abstained (then the flow is `skip`).
    pub rule: Option<String>,
    pub pack_version: String,
    pub steps: Vec<Step>,
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

    fn ctx(&self, prepared: &Prepared, rule: &CompiledRule) -> Dynamic {
        Dynamic::from(Ctx {
            env: prepared.env.clone(),
            rule: rule.script_name.clone(),
            params: rule.params.clone(),
        })
    }

    fn selected<'a>(
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
    ) -> Result<Outcome, RuleError> {
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
        let mut steps = Vec::new();
        if let Some(rule) = self.run_filter(&prepared, None, &mut steps)? {
            return Ok(Outcome {
                pack_version: self.version.clone(),
                source,
                verdict: Verdict::Filtered { rule },
                steps,
            });
        }
        let target = self.run_map(&prepared, None, opts, &mut steps)?;
        let target = self.run_enrich(&prepared, target, None, opts, &mut steps)?;
        let body = self.finish(source, &target, &steps)?;
        Ok(Outcome {
            pack_version: self.version.clone(),
            source,
            verdict: Verdict::Synced { body },
            steps,
        })
    }

    /// Runs filter rules in order; returns the name of the first that said no.
    pub fn run_filter(
        &self,
        prepared: &Prepared,
        only: Option<&str>,
        steps: &mut Vec<Step>,
    ) -> Result<Option<String>, RuleError> {
        for rule in self.selected(Stage::Filter, only) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                "filter",
                &prepared.incident,
                &self.ctx(prepared, rule),
            )?;
            let Some(keep) = out.clone().try_cast::<bool>() else {
                return Err(bad_return(rule, "filter", "true or false", &out));
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
        steps: &mut Vec<Step>,
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
            )?;
            if out.is_unit() {
                continue;
            }
            // Not `out.clone()`: that would deep-copy every field just to test the type.
            let fields = match out.try_cast_result::<Map>() {
                Ok(fields) => fields,
                Err(out) => {
                    return Err(bad_return(
                        rule,
                        entry,
                        "a map of fields (or () for none)",
                        &out,
                    ))
                }
            };
            let mut changed: Vec<String> = fields.keys().map(|k| k.to_string()).collect();
            changed.sort();
            target.extend(fields);
            let document = if opts.explain {
                Some(to_json(rule, &Dynamic::from_map(target.clone()))?)
            } else {
                None
            };
            steps.push(step(rule, changed, None, document));
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
        steps: &mut Vec<Step>,
    ) -> Result<Dynamic, RuleError> {
        for rule in self.selected(Stage::Enrich, only) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                "enrich",
                &target,
                &self.ctx(prepared, rule),
            )?;
            if !out.is_map() {
                return Err(bad_return(rule, "enrich", "the target map", &out));
            }
            let changed = changed_fields(&target, &out);
            target = out;
            let document = if opts.explain {
                Some(to_json(rule, &target)?)
            } else {
                None
            };
            steps.push(step(rule, changed, None, document));
        }
        Ok(target)
    }

    /// Converts the target to the request body and validates it against its schema.
    pub fn finish(
        &self,
        source: Side,
        target: &Dynamic,
        steps: &[Step],
    ) -> Result<Value, RuleError> {
        // Blamed on the rule that set the offending top-level field (`/field/...`).
        let fields = dynamic_to_value(target).map_err(|e| {
            let field = e
                .pointer
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            let field = field.replace("~1", "/").replace("~0", "~");
            // The pointer into the request body, as schema failures give it.
            let pointer = match source {
                Side::Defender => format!("/properties{}", e.pointer.trim_end_matches('/')),
                Side::Sentinel => e.pointer.clone(),
            };
            RuleError {
                kind: RuleErrorKind::BadReturn,
                ..output_error(self, steps, &field, e.message).at_pointer(pointer)
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
                "/properties/",
            ),
            Side::Sentinel => (fields, schema::DEFENDER_UPDATE, "/"),
        };
        let bad = self.schemas.check(schema_name, &body);
        if let Some(first) = bad.into_iter().next() {
            let field = first
                .pointer
                .strip_prefix(prefix)
                .and_then(|p| p.split('/').next())
                .unwrap_or("");
            let message = format!("output does not match {schema_name}: {}", first.message);
            return Err(output_error(self, steps, field, message).at_pointer(first.pointer));
        }
        Ok(body)
    }

    /// Asks the direction rules, in order, where a changed field should flow. The first
    /// rule that returns a flow decides; `()` means "no opinion, ask the next rule".
    pub fn decide(
        &self,
        change: &FieldChange,
        incident: Arc<Value>,
        only: Option<&str>,
        opts: &RunOptions,
    ) -> Result<Decision, RuleError> {
        let prepared = self.prepare(incident, Side::Defender, opts);
        let change = Dynamic::from(JsonView::new(Arc::new(change.to_script_value())));
        let mut steps = Vec::new();
        for rule in self.selected(Stage::Direction, only) {
            let out = call_rule(
                rule,
                (&self.limits, &self.field_names),
                "direction",
                &change,
                &self.ctx(&prepared, rule),
            )?;
            if out.is_unit() {
                steps.push(step(rule, Vec::new(), Some("()".into()), None));
                continue;
            }
            let flow = out
                .clone()
                .into_immutable_string()
                .ok()
                .and_then(|s| Flow::parse(&s));
            let Some(flow) = flow else {
                return Err(bad_return(
                    rule,
                    "direction",
                    "\"to_sentinel\", \"to_defender\", \"skip\", \"merge\" or ()",
                    &out,
                ));
            };
            steps.push(step(rule, Vec::new(), Some(flow.name().into()), None));
            return Ok(Decision {
                flow,
                rule: Some(rule.name.clone()),
                pack_version: self.version.clone(),
                steps,
            });
        }
        Ok(Decision {
            flow: Flow::Skip,
            rule: None,
            pack_version: self.version.clone(),
            steps,
        })
    }
}

fn step(
    rule: &CompiledRule,
    changed: Vec<String>,
    result: Option<String>,
    document: Option<Value>,
) -> Step {
    Step {
        rule: rule.name.clone(),
        stage: rule.stage,
        file: rule.path.clone(),
        changed,
        result,
        document,
    }
}

fn bad_return(rule: &CompiledRule, entry: &str, wanted: &str, got: &Dynamic) -> RuleError {
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

fn to_json(rule: &CompiledRule, value: &Dynamic) -> Result<Value, RuleError> {
    dynamic_to_value(value).map_err(|e| {
        RuleError::for_rule(rule, RuleErrorKind::BadReturn, e.message).at_pointer(e.pointer)
    })
}

/// An output failure, blamed on the last rule that set `field` (else the first map rule).
fn output_error(pack: &CompiledPack, steps: &[Step], field: &str, message: String) -> RuleError {
    let culprit = steps
        .iter()
        .rev()
        .find(|s| s.changed.iter().any(|c| c == field))
        .or_else(|| steps.iter().find(|s| s.stage == Stage::Map));
    let rule = culprit.and_then(|s| pack.rule(&s.rule));
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

/// Top-level keys whose values differ between two maps (added, removed or changed).
fn changed_fields(before: &Dynamic, after: &Dynamic) -> Vec<String> {
    let (Some(before), Some(after)) = (before.read_lock::<Map>(), after.read_lock::<Map>()) else {
        return Vec::new();
    };
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(k.as_str()).is_none_or(|old| !dyn_eq(old, v)))
        .map(|(k, _)| k.to_string())
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(k.as_str()))
                .map(|k| k.to_string()),
        )
        .collect();
    changed.sort();
    changed
}

/// Structural equality of script values (Rhai's `Dynamic` has none).
pub fn dyn_eq(a: &Dynamic, b: &Dynamic) -> bool {
    if a.type_id() != b.type_id() {
        return false;
    }
    // Most values are strings, and an unchanged one is still the same shared string.
    if let (Some(x), Some(y)) = (
        a.read_lock::<ImmutableString>(),
        b.read_lock::<ImmutableString>(),
    ) {
        return x.ptr_eq(&y) || *x == *y;
    }
    if a.is_unit() {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.read_lock::<Map>(), b.read_lock::<Map>()) {
        return x.len() == y.len()
            && x.iter()
                .all(|(k, v)| y.get(k.as_str()).is_some_and(|w| dyn_eq(v, w)));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Array>(), b.read_lock::<rhai::Array>()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(v, w)| dyn_eq(v, w));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<JsonView>(), b.read_lock::<JsonView>()) {
        return x.node() == y.node();
    }
    a.to_string() == b.to_string()
}
