//! Every kind of load error, as data: each folder under `tests/load-errors/` is a rule
//! pack, and its `expect.txt` lists what the problems must say (one substring per line,
//! `{pack}` standing for the pack folder). An empty `expect.txt` means the pack loads.

use crate::common;
use common::copy_dir;

use rulebridge::rules::CompiledPack;
use rulebridge::snapshot::PackSnapshot;
use std::path::Path;

#[test]
fn every_broken_pack_is_refused_with_located_problems() {
    let root = Path::new("tests/load-errors");
    let mut cases: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "expected the load-error cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let label = case.to_string_lossy().to_string();
        let expect = std::fs::read_to_string(case.join("expect.txt")).unwrap();
        let wanted: Vec<String> = expect
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.replace("{pack}", &label))
            .collect();
        let result =
            PackSnapshot::read(case, Some(Path::new("schemas"))).and_then(CompiledPack::build);
        match (result, wanted.is_empty()) {
            (Ok(_), true) => {}
            (Ok(_), false) => {
                failures.push(format!("{label}: loaded, but should fail with {wanted:?}"))
            }
            (Err(problems), true) => {
                failures.push(format!("{label}: should load, got {problems:#?}"))
            }
            (Err(problems), false) => {
                let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                for w in &wanted {
                    if !shown.iter().any(|s| s.contains(w.as_str())) {
                        failures.push(format!(
                            "{label}: no problem mentions {w:?}; problems were:\n  {}",
                            shown.join("\n  ")
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_symlink_out_of_the_pack_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    copy_dir(Path::new("tests/load-errors/ok-minimal"), &pack);
    std::fs::write(dir.path().join("secret.rhai"), "fn f() { 1 }").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.rhai"), pack.join("lib.rhai")).unwrap();
    let problems = PackSnapshot::read(&pack, Some(Path::new("schemas"))).unwrap_err();
    assert!(
        problems.iter().any(|p| p
            .to_string()
            .ends_with("lib.rhai: symlink leads outside the pack folder")),
        "{problems:?}"
    );
}

#[test]
fn editor_leftovers_and_hidden_folders_are_not_part_of_the_pack() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new("tests/load-errors/ok-minimal"), dir.path());
    let before = PackSnapshot::read(dir.path(), Some(Path::new("schemas")))
        .unwrap()
        .version;
    for junk in ["map.rhai~", ".map.rhai.swp", "4913", ".git/HEAD"] {
        let path = dir.path().join(junk);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "garbage {{{").unwrap();
    }
    let after = PackSnapshot::read(dir.path(), Some(Path::new("schemas"))).unwrap();
    assert_eq!(after.version, before);
    CompiledPack::build(after).unwrap();
}
