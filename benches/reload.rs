//! Save-to-active latency of hot reload: a script is saved, the watcher notices, the
//! candidate is read, built and tested, and swapped in; the clock stops when the swap
//! is reported. For the default pack and for a generated pack of 200 more rules.
//!
//! Also printed: the same with the debounce subtracted, and a reload alone
//! (`try_reload` after a save, no watcher): the work itself, snapshot + compile + tests.
//!
//! `cargo bench --bench reload` (plain timing loop, no harness).

// The rig and the helpers it stands on are the integration tests' own.
#[allow(dead_code)]
#[path = "../tests/it/common.rs"]
mod common;
#[path = "../tests/it/reload_rig.rs"]
mod reload_rig;

use rulebridge::metrics::Metrics;
use rulebridge::reload::{self, ReloadOutcome, Reloader, WatchOptions};
use rulebridge::rules::PackHandle;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const SAVES: usize = 20;
const GENERATED: usize = 200;

/// 200 small enrich rules, each with its own constants, none changing the default
/// pack's test outcomes.
fn add_generated_rules(rules: &Path) {
    let dir = rules.join("enrich/generated");
    std::fs::create_dir_all(&dir).unwrap();
    let mut manifest = std::fs::read_to_string(rules.join("pack.toml")).unwrap();
    for i in 0..GENERATED {
        let script = format!(
            "// Generated rule {i}: tags a severity nobody uses.\n\
             fn enrich(target, ctx) {{\n\
             \x20   if ctx.target != \"sentinel\" {{ return target; }}\n\
             \x20   let marker = \"generated-{i}\";\n\
             \x20   if target.severity == \"Severity{i}\" {{\n\
             \x20       if type_of(target.labels) != \"array\" {{ target.labels = []; }}\n\
             \x20       target.labels.push(#{{ labelName: marker }});\n\
             \x20   }}\n\
             \x20   target\n\
             }}\n"
        );
        std::fs::write(dir.join(format!("g{i:03}.rhai")), script).unwrap();
        let _ = write!(
            manifest,
            "\n[[enrich]]\nname = \"generated-{i:03}\"\nscript = \"enrich/generated/g{i:03}.rhai\"\n"
        );
    }
    std::fs::write(rules.join("pack.toml"), manifest).unwrap();
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn show(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {label:<44} median {:>7.1} ms   p95 {:>7.1} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3
    );
}

/// Saves `script` with a new trailing comment (a new version every time).
fn save(script: &Path, base: &str, n: usize) {
    std::fs::write(script, format!("{base}\n// save {n}\n")).unwrap();
}

fn run(name: &str, pack: &reload_rig::TempPack, script: &Path) {
    let handle = Arc::new(PackHandle::new(reload_rig::build(
        &pack.rules,
        &pack.schemas,
    )));
    let rules_n = handle.current().rules.len();
    let reloader = Arc::new(Reloader::new(
        handle.clone(),
        &pack.rules,
        Some(pack.schemas.clone()),
        Arc::new(Metrics::new()),
    ));
    let base = std::fs::read_to_string(script).unwrap();
    println!("{name} ({rules_n} rules), {SAVES} saves each:");

    // The work alone: no watcher, no debounce.
    let mut work = Vec::new();
    for n in 0..SAVES {
        save(script, &base, n);
        let t = Instant::now();
        let outcome = reloader.try_reload();
        work.push(t.elapsed());
        assert!(
            matches!(outcome, ReloadOutcome::Swapped { .. }),
            "{outcome:?}"
        );
    }

    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    reloader.on_outcome(Box::new(move |o| {
        let _ = tx.lock().unwrap().send((Instant::now(), o.clone()));
    }));
    let options = WatchOptions::default();
    let debounce = options.debounce;
    let watcher = reload::watch(reloader.clone(), options).unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let mut latency = Vec::new();
    for n in SAVES..2 * SAVES {
        let t = Instant::now();
        save(script, &base, n);
        loop {
            let (at, o) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            match o {
                ReloadOutcome::Swapped { .. } => {
                    latency.push(at - t);
                    break;
                }
                ReloadOutcome::Unchanged { .. } => continue,
                rejected => panic!("{rejected:?}"),
            }
        }
    }
    drop(watcher);
    show("save -> active (debounce 300 ms)", latency.clone());
    show(
        "save -> active, debounce subtracted",
        latency.iter().map(|l| l.saturating_sub(debounce)).collect(),
    );
    show("reload alone (snapshot + build + tests)", work);
}

fn main() {
    let default = reload_rig::temp_pack();
    // The default pack exactly, without the tests' extra stamp rule.
    std::fs::remove_dir_all(&default.rules).unwrap();
    reload_rig::copy_dir(Path::new("rules"), &default.rules);
    run(
        "default pack",
        &default,
        &default.rules.join("filter/skip-noise.rhai"),
    );

    let big = reload_rig::temp_pack();
    add_generated_rules(&big.rules);
    run(
        "generated pack",
        &big,
        &big.rules.join("enrich/generated/g100.rhai"),
    );
}
