//! The static pass through the real binary: every broken pack of `tests/lint/` is
//! flagged by `rulebridge check --format json` with the code, file, line, column and
//! severity its `expected.json` names, before anything runs; the packs that are meant
//! to be valid have no finding of any kind; the human rendering of one case is pinned;
//! `--deny-warnings`; README's codes table is the code's; `check --watch` prints only
//! what changed.

use crate::common;

use rulebridge::rules::lint::codes;
use rulebridge::rules::CompiledPack;
use rulebridge::snapshot::PackSnapshot;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn rulebridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(args)
        .output()
        .unwrap()
}

fn check_json(pack: &Path, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let pack = pack.to_str().unwrap();
    let mut args = vec![
        "check",
        "--rules",
        pack,
        "--schemas",
        "schemas",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = rulebridge(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let findings: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{pack}: not a JSON array ({e}):\n{text}"));
    (out.status.code(), findings.as_array().unwrap().clone())
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir("tests/lint")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("pack.toml").is_file())
        .collect();
    cases.sort();
    cases
}

/// The fields `expected.json` pins, from a finding of `check --format json`.
fn pinned(pack: &Path, f: &Value) -> Value {
    let prefix = format!("{}/", pack.display());
    serde_json::json!({
        "code": f["code"],
        "severity": f["severity"],
        "file": f["file"].as_str().unwrap().strip_prefix(&prefix).unwrap_or("?"),
        "line": f["line"],
        "col": f["col"],
    })
}

#[test]
fn every_broken_pack_is_flagged_with_its_code_and_span() {
    let cases = cases();
    assert!(
        cases.len() >= 15,
        "expected the lint corpus, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut seen_codes = BTreeSet::new();
    for case in &cases {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                .unwrap();
        let expected = expected.as_array().unwrap();
        let (exit, findings) = check_json(case, &[]);
        let got: Vec<Value> = findings.iter().map(|f| pinned(case, f)).collect();
        if &got != expected {
            failures.push(format!(
                "{}: expected {}\n  got {}",
                case.display(),
                serde_json::to_string(expected).unwrap(),
                serde_json::to_string(&got).unwrap()
            ));
        }
        let errors = findings.iter().any(|f| f["severity"] == "error");
        if exit != Some(if errors { 1 } else { 0 }) {
            failures.push(format!(
                "{}: exit {exit:?} with errors={errors}",
                case.display()
            ));
        }
        // Every finding says what to do, and is located with an end.
        for f in &findings {
            seen_codes.insert(f["code"].as_str().unwrap_or("").to_string());
            if f["hint"].is_null() || f["line"].is_null() {
                failures.push(format!("{}: no hint or line: {f}", case.display()));
            }
        }
        let base = case.ends_with("base");
        if base != expected.is_empty() {
            failures.push(format!("{}: only `base` is clean", case.display()));
        }
    }
    for code in codes::CODES {
        if !seen_codes.contains(code.code) {
            failures.push(format!("no case in tests/lint shows {}", code.code));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every pack in the repository that is meant to load: the default pack, the bench
/// packs, the valid load-error cases, the hostile cases whose `check` passes, the
/// lint corpus's base and the reload rig's pack.
fn valid_packs() -> Vec<PathBuf> {
    let mut packs = vec![PathBuf::from("rules"), PathBuf::from("tests/lint/base")];
    let dirs = |root: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("pack.toml").is_file())
            .collect();
        v.sort();
        v
    };
    packs.extend(dirs("benches/packs"));
    packs.extend(dirs("tests/load-errors").into_iter().filter(|p| {
        std::fs::read_to_string(p.join("expect.txt")).is_ok_and(|t| t.trim().is_empty())
    }));
    packs.extend(dirs("tests/hostile").into_iter().filter(|p| {
        let expect = std::fs::read_to_string(p.join("expect.toml")).unwrap_or_default();
        let expect: toml::Value = toml::from_str(&expect).unwrap_or(toml::Value::Integer(0));
        p.ends_with("_good")
            || expect
                .get("check")
                .and_then(|c| c.get("exit"))
                .and_then(toml::Value::as_integer)
                == Some(0)
    }));
    packs
}

#[test]
fn packs_meant_to_be_valid_have_no_finding_of_any_kind() {
    let packs = valid_packs();
    // Hostile packs whose own tests meet a limit are refused by check now: fewer remain.
    assert!(packs.len() >= 6, "{packs:?}");
    let mut failures = Vec::new();
    for pack in &packs {
        match PackSnapshot::read(pack, Some(Path::new("schemas"))).and_then(CompiledPack::build) {
            Ok(built) if built.warnings.is_empty() => {}
            Ok(built) => failures.push(format!("{}: {:#?}", pack.display(), built.warnings)),
            Err(problems) => failures.push(format!("{}: refused: {problems:#?}", pack.display())),
        }
    }
    // `check` with no --rules judges rules/ here: its JSON is the empty array.
    let rig = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["check", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rig.stdout).trim(),
        "[]",
        "the built-in default pack"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_human_rendering_shows_the_source_line_with_carets_and_the_hint() {
    let case = "tests/lint/unknown-function";
    let out = rulebridge(&["check", "--rules", case, "--schemas", "schemas"]);
    assert_eq!(out.status.code(), Some(1));
    let want = std::fs::read_to_string(Path::new(case).join("expected-human.txt")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    // Not a terminal: no colour codes.
    assert!(!out.stdout.contains(&0x1b));
}

#[test]
fn warnings_pass_unless_denied_and_short_is_one_gcc_line_each() {
    let case = Path::new("tests/lint/unused-variable");
    let (exit, findings) = check_json(case, &[]);
    assert_eq!((exit, findings.len()), (Some(0), 1));
    let (exit, _) = check_json(case, &["--deny-warnings"]);
    assert_eq!(exit, Some(1));
    let out = rulebridge(&[
        "check",
        "--rules",
        "tests/lint/unused-variable",
        "--schemas",
        "schemas",
        "--format",
        "short",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().next().unwrap(),
        "tests/lint/unused-variable/filter.rhai:4:9: warning: variable `threshold` is never read [RB104]"
    );
    assert!(
        text.lines().last().unwrap().ends_with(": ok, 1 warning"),
        "{text}"
    );
}

#[test]
fn readme_lists_every_code() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(
        readme.contains(&codes::markdown_table()),
        "README's codes table differs from rules::lint::codes; paste:\n{}",
        codes::markdown_table()
    );
}

#[test]
fn check_watch_prints_a_timestamp_and_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    common::copy_dir(Path::new("tests/lint/base"), &pack);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["check", "--watch", "--schemas", "schemas", "--rules"])
        .arg(&pack)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let round = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `watching` line; so far: {got:#?}"));
            let done = line.starts_with("watching ");
            got.push(line);
            if done {
                return got;
            }
        }
    };
    let is_stamp = |l: &str| l.len() == 10 && l.starts_with('[') && l.ends_with(']');
    let first = round();
    assert!(is_stamp(&first[0]), "{first:#?}");
    assert!(first.iter().any(|l| l.ends_with(": ok")), "{first:#?}");

    let filter = pack.join("filter.rhai");
    let good = std::fs::read_to_string(&filter).unwrap();
    let broken = good
        .replace("ctx.params", "ctx.parms")
        .replace("    true\n", "    let spare = 1;\n    true\n");
    std::fs::write(&filter, &broken).unwrap();
    let second = round();
    let file = format!("{}", filter.display());
    assert!(
        second
            .iter()
            .any(|l| l.starts_with(&format!("{file}:3:17:")) && l.ends_with("[RB003]")),
        "{second:#?}"
    );
    // Errors refuse the pack; its warnings are not reported until it builds.
    assert_eq!(
        second.iter().filter(|l| l.contains("[RB")).count(),
        1,
        "{second:#?}"
    );

    // Fix the error: the error is reported fixed, the warning appears, nothing repeats.
    std::fs::write(&filter, broken.replace("ctx.parms", "ctx.params")).unwrap();
    let third = round();
    assert!(is_stamp(&third[0]) || is_stamp(&third[1]), "{third:#?}");
    assert!(
        third
            .iter()
            .any(|l| l.starts_with("fixed: ") && l.contains("[RB003]")),
        "{third:#?}"
    );
    assert!(
        third
            .iter()
            .any(|l| l.starts_with(&file) && l.contains("[RB104]")),
        "{third:#?}"
    );

    // Another save with the same warning: it is not printed again.
    std::fs::write(
        &filter,
        broken
            .replace("ctx.parms", "ctx.params")
            .replace("// Skip", "// Skips"),
    )
    .unwrap();
    let fourth = round();
    assert!(!fourth.iter().any(|l| l.contains("[RB")), "{fourth:#?}");
    assert!(
        fourth.iter().any(|l| l.contains("1 unchanged")),
        "{fourth:#?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
