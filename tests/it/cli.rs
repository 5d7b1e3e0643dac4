//! The commands as users run them: the real binary, real files, exit codes and output.

use crate::common;
use common::copy_dir;

use std::process::{Command, Output};

fn rulebridge(args: &[&str]) -> Output {
    rulebridge_in(std::path::Path::new("."), args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_the_default_pack() {
    let out = rulebridge(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("rule pack 'default' version "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_prints_every_problem_gcc_style_and_exits_1() {
    let out = rulebridge(&[
        "check",
        "--rules",
        "tests/load-errors/syntax-error",
        "--format",
        "short",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("tests/load-errors/syntax-error/map.rhai:2:"),
        "{text}"
    );
    let out = rulebridge(&["check", "--rules", "tests/load-errors/table-bad-row"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).ends_with("2 problems\n"), "{}", stdout(&out));
}

#[test]
fn test_runs_the_pack_tests_and_ends_with_the_tally() {
    let out = rulebridge(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let last = stdout(&out).lines().last().unwrap().to_string();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");

    let dir = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new("rules"), dir.path());
    let test = dir.path().join("tests/unknown-future-values.json");
    let text = std::fs::read_to_string(&test)
        .unwrap()
        .replace("\"Medium\"", "\"Low\"");
    std::fs::write(&test, text).unwrap();
    let out = rulebridge(&["test", "--rules", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAILED  ")
            && text.contains("-  \"severity\": \"Low\"")
            && text.contains("+  \"severity\": \"Medium\""),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().ends_with(" passed, 1 failed"),
        "{text}"
    );
}

#[test]
fn eval_prints_the_sentinel_put_body() {
    let out = rulebridge(&["eval", "--input", "tests/fixtures/microsoft/learn.microsoft.com--graph-v1.0--security-incident-update--response.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["properties"]["severity"], "High");
    assert_eq!(body["properties"]["status"], "New");
}

#[test]
fn eval_to_defender_prints_the_patch_body() {
    let out = rulebridge(&[
        "eval",
        "--to",
        "defender",
        "--input",
        "rules/samples/sentinel-incident-closed.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["status"], "resolved");
}

#[test]
fn eval_explain_shows_every_rule_step() {
    let out = rulebridge(&[
        "eval",
        "--explain",
        "--input",
        "rules/samples/graph-list-expand-alerts.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> = outcome["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["skip-noise", "microsoft-standard", "vip-accounts"]);
    assert!(outcome["steps"][1]["document"]["title"].is_string());
}

#[test]
fn eval_says_when_an_incident_is_filtered_out_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("incident.json");
    std::fs::write(
        &input,
        r#"{"id": "42", "status": "active", "severity": "informational", "alerts": []}"#,
    )
    .unwrap();
    let out = rulebridge(&["eval", "--input", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("incident 42: filtered out by rule 'skip-noise'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn eval_reports_a_rule_error_with_its_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("incident.json");
    std::fs::write(
        &input,
        r#"{"id": "42", "status": "active", "severity": "low"}"#,
    )
    .unwrap();
    let out = rulebridge(&[
        "eval",
        "--rules",
        "tests/packs/runaway",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("incident 42: error: tests/packs/runaway/loop.rhai:4:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_imported_library_function_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("incident.json");
    std::fs::write(
        &input,
        r#"{"id": "1", "displayName": "quiet", "status": "active", "severity": "low"}"#,
    )
    .unwrap();
    let out = rulebridge(&[
        "eval",
        "--rules",
        "tests/load-errors/ok-with-import",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["properties"]["title"], "QUIET");
}

/// The commands run from a folder with no `rules/`: the default pack built into the
/// binary is used, and says so where it matters.
fn rulebridge_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn without_a_rules_folder_the_built_in_default_pack_is_used() {
    let elsewhere = tempfile::tempdir().unwrap();
    let here = rulebridge(&["check"]);
    let there = rulebridge_in(elsewhere.path(), &["check"]);
    assert_eq!(there.status.code(), Some(0), "{}", stderr(&there));
    // Same pack version: the binary carries exactly the project's rules/ and schemas/.
    assert_eq!(stdout(&there), stdout(&here));

    let tested = rulebridge_in(elsewhere.path(), &["test"]);
    assert_eq!(tested.status.code(), Some(0), "{}", stdout(&tested));
    assert!(
        stdout(&tested).contains(" passed, 0 failed"),
        "{}",
        stdout(&tested)
    );

    let input = std::env::current_dir()
        .unwrap()
        .join("rules/samples/graph-incident-29.json");
    let evaluated = rulebridge_in(
        elsewhere.path(),
        &["eval", "--input", input.to_str().unwrap()],
    );
    assert_eq!(evaluated.status.code(), Some(0), "{}", stderr(&evaluated));
    assert!(
        stdout(&evaluated).contains("\"properties\""),
        "{}",
        stdout(&evaluated)
    );

    // There is no folder to watch: a clear error, not a watch on nothing.
    let watched = rulebridge_in(elsewhere.path(), &["check", "--watch"]);
    assert_eq!(watched.status.code(), Some(1));
    assert!(
        stderr(&watched).contains("pass --rules DIR"),
        "{}",
        stderr(&watched)
    );

    // An explicit --rules that does not exist is an error, never the built-in pack.
    let missing = rulebridge_in(elsewhere.path(), &["check", "--rules", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stdout(&missing).contains("nope: cannot open"),
        "{}",
        stdout(&missing)
    );
}

#[test]
fn eval_points_into_an_azure_rest_api_example_file() {
    let example = "tests/fixtures/microsoft/azure-rest-api-specs--securityinsights--stable-2024-03-01--examples--incidents--GetIncidentById.json";
    let out = rulebridge(&["eval", "--to", "defender", "--input", example]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("responses.<status>.body"),
        "{}",
        stderr(&out)
    );
}
