//! The rule-authoring loop through the real binary: blame of output failures (the
//! mistakes in `tests/authoring/mistakes.json`, each applied to a copy of the default
//! pack), `eval --explain` on failure, direction decisions explained, the function
//! reference, a piped `repl` session, and `test NAME` / `--update` / `unordered`.

use crate::common;
use common::copy_dir;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/authoring");

fn rulebridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the default pack with `replace` swapped for `with` in `file`.
fn broken_pack(dir: &Path, file: &str, replace: &str, with: &str) -> String {
    let pack = dir.join("rules");
    copy_dir(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")),
        &pack,
    );
    let path = pack.join(file);
    let script = std::fs::read_to_string(&path).unwrap();
    assert!(
        script.contains(replace),
        "{file} no longer contains {replace:?}"
    );
    std::fs::write(&path, script.replacen(replace, with, 1)).unwrap();
    pack.to_str().unwrap().to_string()
}

#[test]
fn an_output_failure_blames_the_rule_that_last_wrote_the_field() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{DATA}/mistakes.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 3);
    for case in &cases {
        let s = |k: &str| case[k].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pack = broken_pack(dir.path(), s("file"), s("replace"), s("with"));
        for input in case["inputs"].as_array().unwrap() {
            let input = format!("{DATA}/{}", input.as_str().unwrap());
            // Without and with --explain: the same blame whichever way it ran.
            for explain in [false, true] {
                let mut args = vec!["eval", "--rules", &pack, "--input", &input];
                if explain {
                    args.push("--explain");
                }
                let out = rulebridge(&args);
                let err = text(&out.stderr);
                let what = format!("{} ({input}, explain {explain}): {err}", s("description"));
                assert_eq!(out.status.code(), Some(1), "{what}");
                let blamed = format!("{pack}/{}", s("file_blamed"));
                assert!(err.contains(&format!("{blamed}:")), "{what}");
                assert!(err.contains(&format!("rule '{}'", s("rule"))), "{what}");
                assert!(
                    err.contains(&format!("{}: output does not match", s("pointer"))),
                    "{what}"
                );
                for part in case["message"].as_array().unwrap() {
                    assert!(err.contains(part.as_str().unwrap()), "{what}");
                }
            }
        }
    }
}

#[test]
fn explain_on_failure_shows_the_steps_up_to_the_failing_one_then_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let pack = broken_pack(
        dir.path(),
        "enrich/vip-accounts.rhai",
        "if !vip { return target; }",
        "if !vip { return target; } throw \"no VIPs today\";",
    );
    let input = format!("{DATA}/vip-incident.json");
    let out = rulebridge(&["eval", "--rules", &pack, "--input", &input, "--explain"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = explained["steps"].as_array().unwrap();
    let rules: Vec<&str> = steps.iter().map(|s| s["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["skip-noise", "microsoft-standard", "vip-accounts"]);
    assert!(steps[2]["error"]
        .as_str()
        .unwrap()
        .contains("no VIPs today"));
    assert_eq!(explained["error"]["rule"], "vip-accounts");
    // The map step shows each field it set, old → new.
    let severity = steps[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pointer"] == "/severity")
        .unwrap();
    assert_eq!(severity["new"], "Low");
    assert!(severity.get("old").is_none());
    assert!(text(&out.stderr).contains("no VIPs today"));
}

#[test]
fn explain_shows_an_enrich_rules_change_old_to_new() {
    let input = format!("{DATA}/vip-incident.json");
    let out = rulebridge(&["eval", "--input", &input, "--explain"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
    let enrich = &explained["steps"][2];
    assert_eq!(enrich["rule"], "vip-accounts");
    let changes = enrich["changes"].as_array().unwrap();
    let severity = changes
        .iter()
        .find(|c| c["pointer"] == "/severity")
        .unwrap();
    assert_eq!(
        (&severity["old"], &severity["new"]),
        (&Value::from("Low"), &Value::from("High"))
    );
    assert!(changes.iter().any(|c| c["pointer"] == "/labels"));
    assert_eq!(explained["verdict"], "synced");
}

#[test]
fn direction_decisions_are_explained_per_field() {
    let change = "rules/tests/direction-conflict-newer-wins.json";
    let out = rulebridge(&["eval", "--to", "direction", "--change", change]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "status: to_defender (rule 'ownership')\n"
    );

    let out = rulebridge(&["eval", "--to", "direction", "--change", change, "--explain"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["field"], "status");
    assert_eq!(shown["change"]["conflict"], true);
    assert_eq!(shown["steps"][0]["rule"], "ownership");
    assert_eq!(shown["steps"][0]["result"], "to_defender");
    assert_eq!(shown["decision"], "to_defender");

    // A list of changes: one decision each.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("changes.json");
    let unchanged = serde_json::json!({"value": "x", "changed": false});
    let changed = serde_json::json!({"value": "y", "changed": true});
    let changes = serde_json::json!([
        {"field": "severity", "base": "x", "defender": changed, "sentinel": unchanged},
        {"field": "labels", "base": [], "defender": unchanged, "sentinel": unchanged},
    ]);
    std::fs::write(&list, changes.to_string()).unwrap();
    let out = rulebridge(&[
        "eval",
        "--to",
        "direction",
        "--change",
        list.to_str().unwrap(),
    ]);
    assert_eq!(
        text(&out.stdout),
        "severity: to_sentinel (rule 'ownership')\nlabels: skip (rule 'ownership')\n"
    );
}

#[test]
fn functions_prints_the_reference_docs_rules_md_holds() {
    let out = rulebridge(&["functions", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(0));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rules.md")).unwrap();
    assert_eq!(text(&out.stdout), committed);
    let out = text(&rulebridge(&["functions"]).stdout);
    for name in [
        "pluck(",
        "clip(",
        "summary_lines(",
        "ctx.lookup(",
        "ctx.sync_time",
        "Rhai forbidden",
    ] {
        assert!(
            out.contains(name),
            "{name} missing from `rulebridge functions`"
        );
    }
}

#[test]
fn a_piped_repl_session_evaluates_in_the_sandbox() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["repl", "--input", "rules/samples/graph-incident-29.json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let session = std::fs::read(format!("{DATA}/repl-session.txt")).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &session).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let want = std::fs::read_to_string(format!("{DATA}/repl-session.expected")).unwrap();
    assert_eq!(text(&out.stdout), want);
}

#[test]
fn one_test_by_name_unordered_labels_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("rules");
    copy_dir(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")),
        &pack,
    );
    let pack_arg = pack.to_str().unwrap();
    let test = pack.join("tests/vip-account-raises-severity.json");
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(&test).unwrap()).unwrap();
    spec["expect"]["contains"]["properties"]["labels"]
        .as_array_mut()
        .unwrap()
        .reverse();
    std::fs::write(&test, serde_json::to_string_pretty(&spec).unwrap()).unwrap();

    let out = rulebridge(&["test", "--rules", pack_arg, "vip-account-raises-severity"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("0 passed, 1 failed"), "{shown}");
    assert!(
        shown.contains("/properties/labels: set by rule 'vip-accounts'"),
        "{shown}"
    );

    spec["unordered"] = serde_json::json!(["/properties/labels"]);
    std::fs::write(&test, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let out = rulebridge(&[
        "test",
        "--rules",
        pack_arg,
        "--name",
        "vip-account-raises-severity.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("1 passed, 0 failed"));

    // The pack changes: --update accepts the new output and shows the diff.
    let manifest = pack.join("pack.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        toml.replace(
            "raise_severity_to = \"High\"",
            "raise_severity_to = \"Medium\"",
        ),
    )
    .unwrap();
    let out = rulebridge(&[
        "test",
        "--rules",
        pack_arg,
        "vip-account-raises-severity",
        "--update",
    ]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("-        \"severity\": \"High\"")
            || shown.contains("-    \"severity\": \"High\""),
        "{shown}"
    );
    assert!(shown.contains("\"severity\": \"Medium\""), "{shown}");
    let updated: Value = serde_json::from_str(&std::fs::read_to_string(&test).unwrap()).unwrap();
    assert_eq!(
        updated["expect"]["contains"]["properties"]["severity"],
        "Medium"
    );
    assert_eq!(updated["input"], spec["input"]);
    let out = rulebridge(&["test", "--rules", pack_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let out = rulebridge(&["test", "--rules", pack_arg, "no-such-test"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no test named 'no-such-test'"));
}
