//! `rulebridge check --watch`, the real binary: checks and tests once, then again after
//! every save, printing what `check` and `test` print and where it is watching.

use crate::reload_rig;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Lines up to and including the next `watching …` line.
    fn round(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `watching` line; so far: {lines:#?}"));
            let done = line.starts_with("watching ");
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

#[test]
fn check_watch_reruns_checks_and_tests_on_every_save() {
    let pack = reload_rig::temp_pack();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .arg("check")
        .arg("--watch")
        .arg("--rules")
        .arg(&pack.rules)
        .arg("--schemas")
        .arg(&pack.schemas)
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
    let run = Running { child, lines };

    let first = run.round();
    assert!(first.iter().any(|l| l.ends_with(": ok")), "{first:#?}");
    assert!(
        first.iter().any(|l| l.ends_with("passed, 0 failed")),
        "{first:#?}"
    );
    let rules = pack.rules.display().to_string();
    assert_eq!(
        first.last().unwrap(),
        &format!(
            "watching {rules}/ and {}/ (Ctrl-C stops)",
            pack.schemas.display()
        )
    );

    let script = pack.rules.join("filter/skip-noise.rhai");
    let good = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, good.replace("let p = ctx.params;", "let p = ;")).unwrap();
    let broken = run.round();
    let wanted = format!("{rules}/filter/skip-noise.rhai:");
    assert!(broken.iter().any(|l| l.starts_with(&wanted)), "{broken:#?}");
    assert!(broken.iter().any(|l| l == "1 problem"), "{broken:#?}");

    // A failing pack test is shown with its diff, as `rulebridge test` shows it.
    std::fs::write(&script, &good).unwrap();
    let manifest = pack.rules.join("pack.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("label = \"VIP\"", "label = \"V.I.P.\""),
    )
    .unwrap();
    let failing = run.round();
    assert!(
        failing
            .iter()
            .any(|l| l.starts_with("FAILED  ") && l.contains("vip-account-raises-severity.json")),
        "{failing:#?}"
    );

    std::fs::write(&manifest, text).unwrap();
    let fixed = run.round();
    assert!(
        fixed.iter().any(|l| l.ends_with("passed, 0 failed")),
        "{fixed:#?}"
    );
}
