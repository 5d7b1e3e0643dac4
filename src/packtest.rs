//! A rule pack's own tests: JSON files under `tests/` in the pack, each an input, the
//! stage or pipeline to run, and the expected output or decision
//! (`schemas/pack-test.schema.json`). The one runner behind `rulebridge test`, hot
//! reload's test step and the project's integration tests.
//!
//! A failing test says, for each differing output field, which rule last wrote it (the
//! same blame as an output failure, [`crate::rules::blame`]), and carries the spec it
//! would have with the current output accepted, for `rulebridge test --update`. Arrays
//! at the pointers a test lists in `unordered` compare as multisets.

use crate::model::{FieldChange, Side};
use crate::problem::Problem;
use crate::rules::json::value_to_dynamic;
use crate::rules::{blame, CompiledPack, RuleError, RunOptions, Verdict};
use crate::schema::{self, violations};
use crate::snapshot::{confine, PackSnapshot};
use serde_json::Value;
use std::sync::Arc;

/// The sync time pack tests run at unless they say otherwise, so results never depend
/// on when the tests run.
pub const DEFAULT_SYNC_TIME: &str = "2026-01-01T00:00:00Z";

#[derive(Debug, Clone)]
pub struct TestResult {
    /// Display path of the test file.
    pub name: String,
    pub passed: bool,
    /// Why it failed: a diff, an unexpected error, a malformed test.
    pub detail: String,
    /// The pack-relative path of the test file.
    pub rel: String,
    /// For a failing test whose expectation can be accepted: the test with its
    /// expectation replaced by what the run produced (`rulebridge test --update`).
    pub updated: Option<Value>,
}

/// Why a test failed, and the spec that would accept the current output.
struct Failure {
    detail: String,
    updated: Option<Value>,
}

impl From<String> for Failure {
    fn from(detail: String) -> Self {
        Failure {
            detail,
            updated: None,
        }
    }
}

/// A failing test's detail is cut to this many lines in the problem that refuses a
/// pack (the whole diff is what `rulebridge test` is for).
const TEST_DETAIL_LINES: usize = 8;

/// The one acceptance of a pack, used by `run` at startup, by every hot reload and by
/// `doctor`: it builds (schemas, compile, entry points), then passes its own tests. A
/// pack whose tests fail is refused with the same problems wherever it is offered.
pub fn accept(snapshot: PackSnapshot) -> Result<CompiledPack, Vec<Problem>> {
    let candidate = CompiledPack::build(snapshot)?;
    let results = run_pack_tests(&candidate);
    let failed: Vec<Problem> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| Problem::in_file(&r.name, format!("test failed: {}", first_lines(&r.detail))))
        .collect();
    if !failed.is_empty() {
        return Err(failed);
    }
    tracing::debug!(version = %candidate.version, tests = %summary(&results), "the pack passed its tests");
    Ok(candidate)
}

fn first_lines(detail: &str) -> String {
    let mut lines: Vec<&str> = detail.lines().take(TEST_DETAIL_LINES).collect();
    if detail.lines().count() > TEST_DETAIL_LINES {
        lines.push("    …");
    }
    lines.join("\n")
}

/// Runs every `tests/**/*.json` of the pack, in path order.
pub fn run_pack_tests(pack: &CompiledPack) -> Vec<TestResult> {
    run_pack_tests_named(pack, None)
}

/// Whether a test file is the one `name` asks for: its file name with or without
/// `.json`, or its path within the pack.
pub fn is_named(rel: &str, name: &str) -> bool {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    [rel, file, file.trim_end_matches(".json")].contains(&name)
        || rel.trim_end_matches(".json") == name.trim_end_matches(".json")
}

/// Runs the pack's tests (only the one called `name`, if given), in path order.
pub fn run_pack_tests_named(pack: &CompiledPack, name: Option<&str>) -> Vec<TestResult> {
    pack.snapshot
        .files
        .keys()
        .filter(|rel| rel.starts_with("tests/") && rel.ends_with(".json"))
        .filter(|rel| name.is_none_or(|n| is_named(rel, n)))
        .map(|rel| {
            let name = pack.snapshot.display_path(rel);
            match run_one(pack, rel) {
                Ok(()) => TestResult {
                    name,
                    passed: true,
                    detail: String::new(),
                    rel: rel.clone(),
                    updated: None,
                },
                Err(failure) => TestResult {
                    name,
                    passed: false,
                    detail: failure.detail,
                    rel: rel.clone(),
                    updated: failure.updated,
                },
            }
        })
        .collect()
}

/// What a run produced: (synced?, output, decision).
type Observed = (Option<bool>, Option<Value>, Option<String>);

/// `N passed, M failed`, the last line of every test run.
pub fn summary(results: &[TestResult]) -> String {
    let passed = results.iter().filter(|r| r.passed).count();
    format!("{passed} passed, {} failed", results.len() - passed)
}

fn run_one(pack: &CompiledPack, rel: &str) -> Result<(), Failure> {
    let spec = read_json(pack, rel)?;
    let bad = pack
        .schemas
        .validator(schema::PACK_TEST)
        .map(|v| violations(v, &spec))
        .unwrap_or_default();
    if let Some(v) = bad.first() {
        return Err(
            Problem::at_pointer(pack.snapshot.display_path(rel), &v.pointer, &v.message)
                .to_string()
                .into(),
        );
    }
    let run = spec["run"].as_str().unwrap_or("pipeline");
    let source = if spec["from"] == "sentinel" {
        Side::Sentinel
    } else {
        Side::Defender
    };
    let only = spec.get("rule").and_then(Value::as_str);
    if let Some(name) = only {
        let found = pack.rule(name).map(|r| r.stage.name());
        if found != Some(run) {
            return Err(format!("no enabled {run} rule named '{name}'").into());
        }
    }
    let opts = RunOptions {
        sync_time: spec["ctx"]["sync_time"]
            .as_str()
            .unwrap_or(DEFAULT_SYNC_TIME)
            .to_string(),
        linked: spec["ctx"]["linked"].as_bool().unwrap_or(false),
        twin: match spec["ctx"]["twin"].as_str() {
            Some("connector") => crate::rules::Twin::Connector,
            _ => crate::rules::Twin::Rulebridge,
        },
        explain: false,
    };
    let input = Arc::new(resolve_input(pack, &spec["input"])?);
    let explain_input = input.clone();
    let expect = &spec["expect"];

    let result: Result<Observed, RuleError> = match run {
        "pipeline" => {
            pack.run_pipeline(input, source, &opts)
                .map(|outcome| match outcome.verdict {
                    Verdict::Synced { body } => (Some(true), Some(body), None),
                    Verdict::Filtered { .. } => (Some(false), None, None),
                })
        }
        "filter" => {
            let prepared = pack.prepare(input, source, &opts);
            pack.run_filter(&prepared, only, &mut Vec::new())
                .map(|stopped| (Some(stopped.is_none()), None, None))
        }
        "map" | "enrich" => (|| {
            let prepared = pack.prepare(input, source, &opts);
            let mut steps = Vec::new();
            let target = match (&spec["target"], run) {
                (Value::Object(_), "enrich") => value_to_dynamic(&spec["target"]),
                _ => pack.run_map(
                    &prepared,
                    if run == "map" { only } else { None },
                    &opts,
                    &mut steps,
                )?,
            };
            let target = if run == "enrich" {
                pack.run_enrich(&prepared, target, only, &opts, &mut steps)?
            } else {
                target
            };
            let out = crate::rules::json::dynamic_to_value(&target).map_err(|e| {
                RuleError::new(crate::rules::RuleErrorKind::BadReturn, e.message)
                    .at_pointer(e.pointer)
            })?;
            Ok((None, Some(out), None))
        })(),
        "direction" => {
            let change: FieldChange = serde_json::from_value((*input).clone())
                .map_err(|e| format!("input is not a field change for the direction stage: {e}"))?;
            pack.decide(
                &change,
                Arc::new(Value::Object(Default::default())),
                only,
                &opts,
            )
            .map(|d| (None, None, Some(d.flow.name().to_string())))
        }
        other => return Err(format!("unknown run '{other}'").into()),
    };

    let (synced, output, decision) = match (result, expect.get("error").and_then(Value::as_str)) {
        (Err(err), Some(wanted)) if err.to_string().contains(wanted) => return Ok(()),
        (Err(err), Some(wanted)) => {
            return Err(format!("expected an error containing '{wanted}', got: {err}").into())
        }
        (Err(err), None) => return Err(format!("rule error: {err}").into()),
        (Ok(_), Some(wanted)) => {
            return Err(
                format!("expected an error containing '{wanted}', but the run succeeded").into(),
            )
        }
        (Ok(r), None) => r,
    };
    let mut failures = Vec::new();
    let mut updated = spec.clone();
    let unordered: Vec<&str> = spec["unordered"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(want) = expect.get("synced").and_then(Value::as_bool) {
        if synced != Some(want) {
            updated["expect"]["synced"] = synced.map_or(Value::Null, Value::Bool);
            failures.push(format!(
                "expected synced = {want}, got {}",
                synced.map_or("n/a".into(), |s| s.to_string())
            ));
        }
    }
    if let Some(want) = expect.get("decision").and_then(Value::as_str) {
        if decision.as_deref() != Some(want) {
            updated["expect"]["decision"] = decision.clone().map_or(Value::Null, Value::String);
            failures.push(format!(
                "expected decision {want}, got {}",
                decision.as_deref().unwrap_or("none")
            ));
        }
    }
    for (key, subset) in [("output", false), ("contains", true)] {
        if let Some(want) = expect.get(key) {
            let got = output.clone().unwrap_or(Value::Null);
            let shown = if subset { project(&got, want) } else { got };
            let (want_cmp, shown_cmp) =
                (sorted_at(want, &unordered), sorted_at(&shown, &unordered));
            if want_cmp != shown_cmp {
                let mut text = format!(
                    "{key} differs (- expected, + actual):\n{}",
                    diff(&want_cmp, &shown_cmp)
                );
                if run == "pipeline" {
                    text.push_str(&setters(
                        pack,
                        explain_input.clone(),
                        source,
                        &opts,
                        &want_cmp,
                        &shown_cmp,
                    ));
                }
                failures.push(text);
                updated["expect"][key] = shown;
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            detail: failures.join("\n"),
            updated: Some(updated),
        })
    }
}

/// A copy of `value` with the arrays at `pointers` sorted (by their JSON text), so
/// that those lists compare without regard to order.
fn sorted_at(value: &Value, pointers: &[&str]) -> Value {
    let mut value = value.clone();
    for pointer in pointers {
        if let Some(Value::Array(items)) = value.pointer_mut(pointer) {
            items.sort_by_cached_key(|v| v.to_string());
        }
    }
    value
}

/// For each output field that differs, the rule that last wrote it (from a re-run that
/// keeps every step's document).
fn setters(
    pack: &CompiledPack,
    input: Arc<Value>,
    source: Side,
    opts: &RunOptions,
    want: &Value,
    got: &Value,
) -> String {
    let explained = pack.explain_pipeline(input, source, opts);
    let prefix = if source == Side::Defender {
        "/properties"
    } else {
        ""
    };
    let mut pointers = Vec::new();
    crate::rules::delta::field_deltas("", Some(want), Some(got), &mut pointers);
    let mut out = String::new();
    for delta in pointers {
        let in_target = delta.pointer.strip_prefix(prefix).unwrap_or(&delta.pointer);
        let line = match blame::culprit(&explained.steps, in_target) {
            Some(step) => format!(
                "    {}: set by rule '{}' ({})\n",
                delta.pointer, step.rule, step.file
            ),
            None => format!("    {}: set by no rule\n", delta.pointer),
        };
        out.push_str(&line);
    }
    out
}

fn read_json(pack: &CompiledPack, rel: &str) -> Result<Value, String> {
    let path = pack.snapshot.display_path(rel);
    let text = pack
        .snapshot
        .text(rel)
        .ok_or_else(|| format!("{path}: no such file in the pack"))?
        .map_err(|p| p.to_string())?;
    serde_json::from_str(text)
        .map_err(|e| format!("{path}:{}:{}: not valid JSON: {e}", e.line(), e.column()))
}

/// `{"file": "relative/path.json"}` reads the input from the pack; a Graph or Sentinel
/// list response (`{"value": [...]}`) is reduced to its first incident.
fn resolve_input(pack: &CompiledPack, input: &Value) -> Result<Value, String> {
    let value = match input.as_object() {
        Some(map) if map.len() == 1 && map.get("file").is_some_and(Value::is_string) => {
            let rel = confine(map["file"].as_str().unwrap_or_default())?;
            read_json(pack, &rel)?
        }
        _ => input.clone(),
    };
    Ok(first_incident(value))
}

/// The first incident of a list response, or the value itself.
pub fn first_incident(value: Value) -> Value {
    match value {
        Value::Object(mut map) if map.get("value").is_some_and(Value::is_array) => {
            match map.remove("value") {
                Some(Value::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
                _ => Value::Null,
            }
        }
        other => other,
    }
}

/// The part of `actual` that `expected` talks about: objects keep only expected's keys.
fn project(actual: &Value, expected: &Value) -> Value {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => Value::Object(
            e.keys()
                .filter_map(|k| a.get(k).map(|v| (k.clone(), project(v, &e[k]))))
                .collect(),
        ),
        _ => actual.clone(),
    }
}

fn diff(expected: &Value, actual: &Value) -> String {
    let e = serde_json::to_string_pretty(expected).unwrap_or_default() + "\n";
    let a = serde_json::to_string_pretty(actual).unwrap_or_default() + "\n";
    similar::TextDiff::from_lines(&e, &a)
        .unified_diff()
        .context_radius(3)
        .to_string()
        .lines()
        .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
        .map(|l| format!("    {l}\n"))
        .collect()
}
