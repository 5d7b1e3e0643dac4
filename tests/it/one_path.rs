//! A pack is accepted through one path (`packtest::accept`: build, then the pack's own
//! tests) wherever it is offered: `run` at startup, `demo`, a hot reload. A pack whose
//! tests fail is refused by each of them with the same problems.

use rulebridge::metrics::Metrics;
use rulebridge::reload::{ReloadOutcome, Reloader};
use rulebridge::rules::{CompiledPack, PackHandle};
use rulebridge::snapshot::PackSnapshot;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use crate::common;

/// The default pack with one test's expectation changed: it builds, its tests fail.
fn failing_tests_pack(dir: &Path) -> std::path::PathBuf {
    let pack = dir.join("rules");
    common::copy_dir(Path::new("rules"), &pack);
    let test = pack.join("tests/benign-positive-pascal-case.json");
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(&test).unwrap()).unwrap();
    let key = spec
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("expect"))
        .cloned()
        .expect("a pack test has an expectation");
    spec[key.as_str()] = serde_json::json!({"this": "is not what the rules produce"});
    std::fs::write(&test, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    pack
}

/// The problem lines a command printed (`path: …`), in order.
fn problem_lines(stdout: &[u8], pack: &Path) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with(&pack.display().to_string()))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_pack_whose_tests_fail_is_refused_alike_by_run_demo_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pack = failing_tests_pack(dir.path());
    let config = dir.path().join("rb.toml");
    std::fs::write(
        &config,
        format!(
            "[defender]\ntenant_id = \"00000000-0000-4000-8000-000000000001\"\n\
             [sentinel]\nsubscription_id = \"s\"\nresource_group = \"g\"\nworkspace = \"w\"\n\
             [sync]\nstate = \"state.db\"\nrules = \"{}\"\n",
            pack.display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_rulebridge");
    let run = Command::new(bin)
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("nothing was synced"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !dir.path().join("state.db").exists(),
        "run touched the state before refusing the pack"
    );
    let at_startup = problem_lines(&run.stdout, &pack);
    assert!(
        !at_startup.is_empty() && at_startup.iter().all(|l| l.contains("test failed")),
        "{at_startup:#?}"
    );

    let demo = Command::new(bin)
        .args(["demo", "--duration", "1", "--incidents", "5", "--rules"])
        .arg(&pack)
        .output()
        .unwrap();
    assert!(!demo.status.success());
    assert_eq!(problem_lines(&demo.stdout, &pack), at_startup);

    // A service running the good pack is offered the same files as a reload.
    let good = CompiledPack::build(PackSnapshot::read(Path::new("rules"), None).unwrap()).unwrap();
    let reloader = Arc::new(Reloader::new(
        Arc::new(PackHandle::new(good)),
        &pack,
        None,
        Arc::new(Metrics::new()),
    ));
    match reloader.try_reload() {
        ReloadOutcome::Rejected { problems, .. } => {
            let at_reload: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            assert_eq!(at_reload, at_startup);
        }
        other => panic!("the reload was not refused: {other:?}"),
    }
}
