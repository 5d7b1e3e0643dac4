//! Shadow run: how a candidate pack would decide recent incidents differently from the
//! running one, before it is swapped in.
//!
//! Both packs run the Defender pipeline (filter → map → enrich → schema check) on the
//! same incidents at the same sync time, as linked incidents, and the results are
//! compared: a verdict that flips (synced ↔ filtered) and every top-level field of the
//! Sentinel body that differs. Each difference is charged to the rule that produced it
//! (the last step of the candidate that set the field, or the filter that now decides),
//! so an author sees which of their edits moved which decisions. Pure: no I/O, no clock.

use crate::model::Side;
use crate::rules::natives::clip;
use crate::rules::{CompiledPack, ExplainStep, PipelineResult, RunOptions, Verdict};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Examples kept per rule: enough to recognise the change, not a dump.
const EXAMPLES: usize = 3;
/// Characters of a value shown in an example.
const SHOWN: usize = 60;
/// Characters kept before the first difference of two long values.
const CONTEXT: usize = 20;

/// The differences charged to one rule.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RuleShadow {
    /// Incidents whose decision this rule changes.
    pub changed: usize,
    /// At most three, as `incident <id>: <field>: <old> -> <new>`.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ShadowReport {
    pub incidents: usize,
    /// Incidents decided differently (any field or the verdict).
    pub changed: usize,
    pub per_rule: BTreeMap<String, RuleShadow>,
    /// Incidents the candidate fails on (`incident <id>: <rule error>`).
    pub errors: Vec<String>,
}

/// Runs `old` and `new` on every incident and compares the decisions.
pub fn shadow(
    old: &CompiledPack,
    new: &CompiledPack,
    incidents: &[Arc<Value>],
    sync_time: &str,
) -> ShadowReport {
    let opts = RunOptions {
        sync_time: sync_time.to_string(),
        linked: true,
        twin: crate::rules::Twin::Rulebridge,
        explain: false,
    };
    let mut report = ShadowReport {
        incidents: incidents.len(),
        ..ShadowReport::default()
    };
    for incident in incidents {
        let id = incident["id"].as_str().unwrap_or("?");
        let before = old.run_pipeline(incident.clone(), Side::Defender, &opts);
        let after = new.run_pipeline(incident.clone(), Side::Defender, &opts);
        let diffs = match (before, after) {
            (_, Err(e)) => {
                report.errors.push(format!("incident {id}: {e}"));
                continue;
            }
            (Err(e), Ok(_)) => vec![(
                e.rule.clone().unwrap_or_else(|| "(no rule)".into()),
                format!("incident {id}: rule error -> decided"),
            )],
            (Ok(b), Ok(a)) => differences(id, &b, &a),
        };
        if diffs.is_empty() {
            continue;
        }
        report.changed += 1;
        let mut charged: Vec<&str> = Vec::new();
        for (rule, example) in &diffs {
            let entry = report.per_rule.entry(rule.clone()).or_default();
            // One incident counts once per rule, however many fields that rule moved.
            if !charged.contains(&rule.as_str()) {
                entry.changed += 1;
                charged.push(rule);
            }
            if entry.examples.len() < EXAMPLES {
                entry.examples.push(example.clone());
            }
        }
    }
    report
}

/// (rule, example) for every difference between two outcomes of one incident.
fn differences(id: &str, before: &PipelineResult, after: &PipelineResult) -> Vec<(String, String)> {
    match (&before.verdict, &after.verdict) {
        (Verdict::Filtered { .. }, Verdict::Filtered { .. }) => Vec::new(),
        (Verdict::Synced { .. }, Verdict::Filtered { rule }) => {
            vec![(
                rule.clone(),
                format!("incident {id}: verdict: synced -> filtered"),
            )]
        }
        (Verdict::Filtered { rule }, Verdict::Synced { .. }) => {
            vec![(
                rule.clone(),
                format!("incident {id}: verdict: filtered -> synced"),
            )]
        }
        (Verdict::Synced { body: b }, Verdict::Synced { body: a }) => {
            let (b, a) = (fields(b), fields(a));
            let mut names: Vec<&String> = b.keys().chain(a.keys()).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .filter_map(|field| {
                    let (was, now) = (
                        b.get(field).unwrap_or(&Value::Null),
                        a.get(field).unwrap_or(&Value::Null),
                    );
                    (was != now).then(|| {
                        let rule = setter(&after.steps, field)
                            .or_else(|| setter(&before.steps, field))
                            .unwrap_or("(no rule)");
                        let (was, now) = show(was, now);
                        let example = format!("incident {id}: {field}: {was} -> {now}");
                        (rule.to_string(), example)
                    })
                })
                .collect()
        }
    }
}

/// The Sentinel body's properties (the fields a write would carry).
fn fields(body: &Value) -> Map<String, Value> {
    body.get("properties")
        .and_then(Value::as_object)
        .or_else(|| body.as_object())
        .cloned()
        .unwrap_or_default()
}

/// The last rule that set `field`: later steps overwrite earlier ones.
fn setter<'a>(steps: &'a [ExplainStep], field: &str) -> Option<&'a str> {
    steps
        .iter()
        .rev()
        .find(|s| s.changed.iter().any(|c| c == field))
        .map(|s| s.rule.as_str())
}

/// Both values as JSON, clipped; a long common start is elided so that the part that
/// differs (often the end of a title or description) stays in view.
fn show(was: &Value, now: &Value) -> (String, String) {
    let (a, b) = (was.to_string(), now.to_string());
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let skip = common.saturating_sub(CONTEXT);
    let cut = |s: &str| {
        if skip == 0 {
            clip(s, SHOWN)
        } else {
            format!(
                "…{}",
                clip(&s.chars().skip(skip).collect::<String>(), SHOWN)
            )
        }
    };
    (cut(&a), cut(&b))
}
