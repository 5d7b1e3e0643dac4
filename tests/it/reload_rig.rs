//! Shared by the hot-reload tests and benchmark: a copy of the default pack in a temp
//! folder with one extra enrich rule whose parameter is easy to flip, and a reloader
//! whose every outcome is reported on a channel with the time it happened.
#![allow(dead_code)]

use rulebridge::metrics::Metrics;
use rulebridge::reload::{self, ReloadOutcome, Reloader, WatchOptions};
use rulebridge::rules::{CompiledPack, PackHandle};
use rulebridge::snapshot::PackSnapshot;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Appends " [suffix]" to the title of generated incidents (six-digit ids). The pack's
/// own tests use other ids, so every variant passes them and only the suffix differs.
pub const STAMP_RHAI: &str = r#"// Marks which pack variant decided an incident.
fn enrich(target, ctx) {
    if ctx.target != "sentinel" { return target; }
    let id = ctx.incident.id;
    if type_of(id) != "string" || id.len() != 6 { return target; }
    target.title = target.title + " [" + ctx.params.suffix + "]";
    target
}
"#;

pub const STAMP_TOML: &str = r#"
[[enrich]]
name = "stamp"
description = "Marks which pack variant decided an incident"
script = "enrich/stamp.rhai"
params_schema = "params/stamp.schema.json"
[enrich.params]
suffix = "a"
"#;

pub const STAMP_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["suffix"],
  "properties": { "suffix": { "type": "string", "minLength": 1 } }
}
"#;

pub struct TempPack {
    pub dir: tempfile::TempDir,
    pub rules: PathBuf,
    pub schemas: PathBuf,
}

pub use crate::common::copy_dir;

/// Writes the default pack plus the stamp rule (suffix "a") into `rules`.
pub fn write_pack(rules: &Path) {
    copy_dir(Path::new("rules"), rules);
    std::fs::write(rules.join("enrich/stamp.rhai"), STAMP_RHAI).unwrap();
    std::fs::write(rules.join("params/stamp.schema.json"), STAMP_SCHEMA).unwrap();
    let manifest = std::fs::read_to_string(rules.join("pack.toml")).unwrap() + STAMP_TOML;
    std::fs::write(rules.join("pack.toml"), manifest).unwrap();
}

pub fn temp_pack() -> TempPack {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    let schemas = dir.path().join("schemas");
    write_pack(&rules);
    copy_dir(Path::new("schemas"), &schemas);
    TempPack {
        dir,
        rules,
        schemas,
    }
}

/// The manifest text with the stamp suffix replaced.
pub fn with_suffix(manifest: &str, suffix: &str) -> String {
    let start = manifest.rfind("suffix = \"").expect("stamp rule present");
    let end = start + manifest[start..].find('\n').unwrap();
    format!(
        "{}suffix = \"{suffix}\"{}",
        &manifest[..start],
        &manifest[end..]
    )
}

/// Saves the manifest in place with a new suffix (an ordinary editor save).
pub fn set_suffix(rules: &Path, suffix: &str) {
    let path = rules.join("pack.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, with_suffix(&text, suffix)).unwrap();
}

/// Replaces `path` whole (temp file renamed over it), so no reader ever sees it
/// half-written: for tests that must judge exactly the bytes they wrote.
pub fn atomic_write(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn build(rules: &Path, schemas: &Path) -> CompiledPack {
    let snapshot = PackSnapshot::read(rules, Some(schemas)).unwrap_or_else(|p| panic!("{p:#?}"));
    CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"))
}

pub fn fast() -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
        ..WatchOptions::default()
    }
}

pub struct Rig {
    pub reloader: Arc<Reloader>,
    pub handle: Arc<PackHandle>,
    pub metrics: Arc<Metrics>,
    pub outcomes: mpsc::Receiver<(Instant, ReloadOutcome)>,
    pub watcher: reload::Watcher,
}

/// A reloader over `handle` for `rules` + `schemas`, watched with `options`; returns
/// once the watcher's first attempt (at start) is done.
pub fn rig(handle: Arc<PackHandle>, rules: &Path, schemas: &Path, options: WatchOptions) -> Rig {
    let metrics = Arc::new(Metrics::new());
    let reloader = Arc::new(Reloader::new(
        handle.clone(),
        rules,
        Some(schemas.to_path_buf()),
        metrics.clone(),
    ));
    let (tx, outcomes) = mpsc::channel();
    let tx = Mutex::new(tx);
    reloader.on_outcome(Box::new(move |o| {
        let _ = tx.lock().unwrap().send((Instant::now(), o.clone()));
    }));
    let watcher = reload::watch(reloader.clone(), options).unwrap();
    let rig = Rig {
        reloader,
        handle,
        metrics,
        outcomes,
        watcher,
    };
    let (_, first) = rig
        .next(Duration::from_secs(10))
        .expect("the initial attempt");
    assert!(
        matches!(first, ReloadOutcome::Unchanged { .. }),
        "{first:?}"
    );
    rig
}

pub fn rig_for(pack: &TempPack, options: WatchOptions) -> Rig {
    let handle = Arc::new(PackHandle::new(build(&pack.rules, &pack.schemas)));
    rig(handle, &pack.rules, &pack.schemas, options)
}

impl Rig {
    pub fn next(&self, timeout: Duration) -> Option<(Instant, ReloadOutcome)> {
        self.outcomes.recv_timeout(timeout).ok()
    }

    /// The next outcome that is not `Unchanged` (spurious events cause those).
    pub fn next_change(&self, timeout: Duration) -> Option<(Instant, ReloadOutcome)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                (_, ReloadOutcome::Unchanged { .. }) => continue,
                other => return Some(other),
            }
        }
    }

    /// Waits for the next swap; panics on a timeout. A rejection on the way is allowed:
    /// on a loaded machine the debounce can expire between an in-place save's truncate
    /// and its write, and that half-written candidate is rightly refused.
    pub fn swapped(&self, timeout: Duration) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_change(left) {
                Some((at, ReloadOutcome::Swapped { to, .. })) => return (at, to),
                Some((_, rejected @ ReloadOutcome::Rejected { .. })) => {
                    eprintln!("rejected on the way to a swap: {rejected:?}")
                }
                other => panic!("expected a swap, got {other:?}"),
            }
        }
    }

    /// Every outcome until nothing happens for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<ReloadOutcome> {
        let mut all = Vec::new();
        while let Some((_, o)) = self.next(quiet) {
            all.push(o);
        }
        all
    }

    pub fn active_manifest(&self) -> String {
        let pack = self.handle.current();
        String::from_utf8(pack.snapshot.files["pack.toml"].clone()).unwrap()
    }
}
