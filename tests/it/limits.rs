//! Every sandbox limit and every kind of per-incident rule failure, on real scripts
//! (`tests/packs/runaway/`): each is stopped, reported as data with file:line:col, and
//! leaves the engine usable for the next incident.

use crate::common;
use common::copy_dir;

use rulebridge::model::{FieldChange, Side, SideValue};
use rulebridge::rules::{CompiledPack, RuleError, RuleErrorKind, RunOptions};
use rulebridge::snapshot::PackSnapshot;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pack() -> CompiledPack {
    common::pack_at(Path::new("tests/packs/runaway"))
}

fn opts() -> RunOptions {
    RunOptions {
        sync_time: "2026-01-01T00:00:00Z".into(),
        linked: false,
        twin: rulebridge::rules::Twin::Rulebridge,
        explain: false,
    }
}

fn incident(id: &str) -> Arc<Value> {
    // Enough evidence that one pluck costs real time, so the deadline is what stops slow.rhai.
    let evidence: Vec<Value> = (0..200)
        .map(|i| json!({"tags": [format!("t{i}"), "shared"]}))
        .collect();
    let alerts: Vec<Value> = (0..50).map(|_| json!({"evidence": evidence})).collect();
    Arc::new(json!({"id": id, "status": "active", "severity": "low", "alerts": alerts}))
}

/// Runs one map rule; returns its error and how long the call took.
fn run(pack: &CompiledPack, rule: &str, id: &str) -> (RuleError, Duration) {
    let prepared = pack.prepare(incident(id), Side::Defender, &opts());
    let started = Instant::now();
    let err = pack
        .run_map(&prepared, Some(rule), &opts(), &mut Vec::new())
        .expect_err("the rule must fail");
    (err, started.elapsed())
}

/// A runaway loop hits max_operations in release builds; an unoptimised build may reach
/// the wall-clock deadline first. Either way it must be stopped at the right statement.
fn assert_stopped(err: &RuleError, file: &str, line: usize) {
    let kind = if err.kind == RuleErrorKind::Timeout {
        RuleErrorKind::Timeout
    } else {
        RuleErrorKind::Limit
    };
    assert_located(err, kind, file, line);
}

fn assert_located(err: &RuleError, kind: RuleErrorKind, file: &str, line: usize) {
    assert_eq!(err.kind, kind, "{err}");
    assert_eq!(err.file.as_deref(), Some(file), "{err}");
    assert_eq!(err.line, Some(line), "{err}");
    assert!(err.col.is_some(), "{err}");
}

#[test]
fn an_endless_loop_is_stopped_within_a_second_and_located() {
    let pack = pack();
    let (err, took) = run(&pack, "loops-forever", "1");
    assert_stopped(&err, "tests/packs/runaway/loop.rhai", 4);
    assert!(
        err.to_string()
            .starts_with("tests/packs/runaway/loop.rhai:4:"),
        "{err}"
    );
    assert!(
        err.message.contains("max_operations") || err.message.contains("timeout_ms"),
        "{err}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn endless_recursion_is_stopped_and_located() {
    let (err, took) = run(&pack(), "recurses-forever", "1");
    assert_located(
        &err,
        RuleErrorKind::Limit,
        "tests/packs/runaway/recurse.rhai",
        2,
    );
    assert!(err.message.contains("max_call_levels"), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_huge_string_or_array_is_stopped_and_located() {
    let pack = pack();
    let (err, took) = run(&pack, "huge-string", "1");
    assert_stopped(&err, "tests/packs/runaway/string.rhai", 4);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Rhai re-measures an array on every push, so a growing array may reach the
    // deadline before the size limit: either way it is stopped at the push.
    let (err, took) = run(&pack, "huge-array", "1");
    assert_stopped(&err, "tests/packs/runaway/array.rhai", 4);
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn native_work_past_the_deadline_is_stopped_and_located() {
    let (err, took) = run(&pack(), "slow-natives", "1");
    assert_located(
        &err,
        RuleErrorKind::Timeout,
        "tests/packs/runaway/slow.rhai",
        5,
    );
    assert!(err.message.contains("timeout_ms"), "{err}");
    // The call and the diagnostic re-run each stop at the 250 ms deadline.
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_throw_is_a_rule_error_and_other_incidents_go_on() {
    let pack = pack();
    let (err, _) = run(&pack, "throws", "boom");
    assert_located(
        &err,
        RuleErrorKind::Script,
        "tests/packs/runaway/throw.rhai",
        3,
    );
    assert!(
        err.message.contains("no incident may be called boom"),
        "{err}"
    );
    let prepared = pack.prepare(incident("fine"), Side::Defender, &opts());
    assert!(pack
        .run_map(&prepared, Some("throws"), &opts(), &mut Vec::new())
        .is_ok());
}

#[test]
fn writing_to_an_incident_explains_that_it_is_read_only() {
    let (err, _) = run(&pack(), "mutates-incident", "1");
    assert_located(
        &err,
        RuleErrorKind::Script,
        "tests/packs/runaway/mutate.rhai",
        3,
    );
    assert!(
        err.message
            .contains("read-only Json views; make a copy with to_map()"),
        "{err}"
    );
}

#[test]
fn an_error_inside_an_imported_library_names_the_library() {
    let (err, _) = run(&pack(), "fails-in-library", "1");
    assert_eq!(err.kind, RuleErrorKind::Script, "{err}");
    assert_eq!(err.rule.as_deref(), Some("fails-in-library"));
    assert_eq!(
        err.file.as_deref(),
        Some("tests/packs/runaway/lib/math.rhai"),
        "{err}"
    );
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("Division by zero"), "{err}");
}

#[test]
fn a_wrong_return_type_is_a_rule_error() {
    let (err, _) = run(&pack(), "returns-junk", "1");
    assert_eq!(err.kind, RuleErrorKind::BadReturn, "{err}");
    assert!(
        err.to_string()
            .contains("rule 'returns-junk' (map): fn to_sentinel must return a map"),
        "{err}"
    );
}

#[test]
fn an_invalid_output_names_the_rule_and_the_json_pointer() {
    let pack = pack();
    let prepared = pack.prepare(incident("1"), Side::Defender, &opts());
    let mut steps = Vec::new();
    let target = pack
        .run_map(&prepared, Some("invalid-output"), &opts(), &mut steps)
        .unwrap();
    let err = pack.finish(Side::Defender, &target, &steps).unwrap_err();
    assert_eq!(err.kind, RuleErrorKind::InvalidOutput);
    assert_eq!(err.rule.as_deref(), Some("invalid-output"));
    assert_eq!(err.pointer.as_deref(), Some("/properties/severity"));
    assert!(
        err.to_string().contains("\"Critical\" is not one of"),
        "{err}"
    );
}

#[test]
fn a_direction_rule_must_return_a_known_flow() {
    let change = FieldChange {
        field: "status".into(),
        base: json!("New"),
        defender: SideValue {
            value: json!("Active"),
            base: json!("New"),
            changed: true,
            changed_at: None,
        },
        sentinel: SideValue {
            value: json!("New"),
            base: json!("New"),
            changed: false,
            changed_at: None,
        },
    };
    let err = pack()
        .decide(&change, incident("1"), None, &opts())
        .unwrap_err();
    assert_eq!(err.kind, RuleErrorKind::BadReturn);
    assert!(
        err.message
            .contains("\"to_sentinel\", \"to_defender\", \"skip\", \"merge\" or ()"),
        "{err}"
    );
}

#[test]
fn limits_in_a_manifest_cannot_exceed_the_ceilings() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new("tests/packs/runaway"), dir.path());
    let manifest = std::fs::read_to_string(dir.path().join("pack.toml"))
        .unwrap()
        .replace("timeout_ms = 250", "timeout_ms = 60000");
    std::fs::write(dir.path().join("pack.toml"), manifest).unwrap();
    let problems = PackSnapshot::read(dir.path(), Some(Path::new("schemas")))
        .and_then(CompiledPack::build)
        .err()
        .unwrap();
    assert!(
        problems.iter().any(|p| p
            .to_string()
            .contains("/limits/timeout_ms: 60000 is greater than the maximum of 1000")),
        "{problems:?}"
    );
}
