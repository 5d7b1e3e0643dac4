//! Hot reload against real file-system changes in temp folders (no mocked watcher):
//! every way people save reaches the running pack, bursts coalesce, and broken saves
//! are rejected with their location while the old pack keeps deciding.

use crate::reload_rig::*;
use rulebridge::metrics;
use rulebridge::model::Side;
use rulebridge::reload::{ReloadOutcome, WatchOptions};
use rulebridge::rules::{RunOptions, Verdict};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(8);

/// The title the running pack gives a generated incident.
fn title_now(rig: &Rig) -> String {
    let incident = rulebridge::emulator::seed::generate(1, 5).remove(0);
    let opts = RunOptions {
        sync_time: "2026-01-01T00:00:00Z".into(),
        linked: false,
        twin: rulebridge::rules::Twin::Rulebridge,
        explain: false,
    };
    let pack = rig.handle.current();
    match pack
        .run_pipeline(Arc::new(incident), Side::Defender, &opts)
        .unwrap()
        .verdict
    {
        Verdict::Synced { body } => body["properties"]["title"].as_str().unwrap().to_string(),
        Verdict::Filtered { rule } => panic!("filtered by {rule}"),
    }
}

#[test]
fn an_in_place_save_is_active_within_two_seconds() {
    let pack = temp_pack();
    let rig = rig_for(&pack, WatchOptions::default());
    assert!(title_now(&rig).ends_with(" [a]"));
    let saved = Instant::now();
    set_suffix(&pack.rules, "b");
    let (at, to) = rig.swapped(WAIT);
    let latency = at - saved;
    eprintln!("save to active: {latency:?} (debounce 300 ms)");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert_eq!(rig.handle.current().version, to);
    assert!(title_now(&rig).ends_with(" [b]"));
    assert!(!rig.watcher.is_polling());

    let status = rig.reloader.status();
    assert_eq!(status.active_version, to);
    assert_eq!(status.counts.swapped, 1);
    assert_eq!(
        rig.metrics
            .value(metrics::RELOADS, &[("result", "swapped")]),
        Some(1.0)
    );
    let rendered = rig.metrics.render();
    assert!(
        rendered.contains(&format!("rulebridge_pack_info{{version=\"{to}\"}} 1")),
        "{rendered}"
    );
}

#[test]
fn a_burst_of_fifty_saves_in_one_second_ends_on_the_last_content() {
    let pack = temp_pack();
    let rig = rig_for(&pack, WatchOptions::default());
    let start = Instant::now();
    for i in 0..50 {
        set_suffix(&pack.rules, &format!("s{i}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("50 saves in {:?}", start.elapsed());
    let outcomes = rig.drain(Duration::from_secs(3));
    let attempts: Vec<&ReloadOutcome> = outcomes
        .iter()
        .filter(|o| !matches!(o, ReloadOutcome::Unchanged { .. }))
        .collect();
    // One reload normally; the 2 s ceiling may add one mid-burst on a slow machine.
    assert!((1..=3).contains(&attempts.len()), "{outcomes:#?}");
    assert!(
        matches!(attempts.last(), Some(ReloadOutcome::Swapped { .. })),
        "{outcomes:#?}"
    );
    assert!(rig.active_manifest().contains("suffix = \"s49\""));
    assert!(title_now(&rig).ends_with(" [s49]"));
}

/// Writes `text` to a hidden temp file beside `path` and renames it over `path`, as
/// VS Code, JetBrains' safe write, `sed -i` and most atomic writers do.
fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_file_name(".pack.toml.tmp-save");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Vim's default: the original renamed to a backup, a new file written, backup removed.
fn vim_save(path: &Path, text: &str) {
    let backup = path.with_file_name("pack.toml~");
    fs::rename(path, &backup).unwrap();
    fs::write(path, text).unwrap();
    fs::remove_file(&backup).unwrap();
}

#[test]
fn rename_over_and_vim_saves_are_picked_up_every_time() {
    let pack = temp_pack();
    let rig = rig_for(&pack, fast());
    let manifest = pack.rules.join("pack.toml");
    let base = fs::read_to_string(&manifest).unwrap();
    // A watch on the file itself would die after the first of these.
    for (i, save) in [rename_over, vim_save, rename_over, vim_save]
        .into_iter()
        .enumerate()
    {
        let suffix = format!("r{i}");
        save(&manifest, &with_suffix(&base, &suffix));
        rig.swapped(WAIT);
        assert!(
            title_now(&rig).ends_with(&format!(" [{suffix}]")),
            "save {i}"
        );
    }
    // No leftover (temp file, backup) ever became part of the pack.
    let files: Vec<String> = rig
        .handle
        .current()
        .snapshot
        .files
        .keys()
        .cloned()
        .collect();
    assert!(
        !files
            .iter()
            .any(|f| f.contains("tmp-save") || f.ends_with('~')),
        "{files:?}"
    );
}

#[test]
fn replacing_the_whole_pack_folder_is_picked_up_every_time() {
    let pack = temp_pack();
    let rig = rig_for(&pack, fast());
    for (i, suffix) in ["x", "y"].into_iter().enumerate() {
        // A `git checkout` of another branch or a deploy script: a new folder moved in.
        let fresh = pack.dir.path().join(format!("rules.new{i}"));
        write_pack(&fresh);
        set_suffix(&fresh, suffix);
        fs::rename(&pack.rules, pack.dir.path().join(format!("rules.old{i}"))).unwrap();
        fs::rename(&fresh, &pack.rules).unwrap();
        rig.swapped(WAIT);
        assert!(title_now(&rig).ends_with(&format!(" [{suffix}]")));
    }
    // And the renewed watch still sees ordinary saves inside it.
    set_suffix(&pack.rules, "z");
    rig.swapped(WAIT);
    assert!(title_now(&rig).ends_with(" [z]"));
}

/// Lays out `mount` as the kubelet does for a ConfigMap volume: the files in a
/// timestamped folder, `..data` pointing at it, each top-level entry a symlink through
/// `..data`. `stamp` names the folder.
fn configmap_publish(mount: &Path, stamp: &str, suffix: &str, entries: &[&str]) {
    let dated = mount.join(format!("..{stamp}"));
    let staged = mount.join(format!("staging-{stamp}"));
    write_pack(&staged);
    set_suffix(&staged, suffix);
    fs::rename(&staged, &dated).unwrap();
    let old = fs::read_link(mount.join("..data")).ok();
    let tmp = mount.join("..data_tmp");
    symlink(format!("..{stamp}"), &tmp).unwrap();
    fs::rename(&tmp, mount.join("..data")).unwrap();
    for entry in entries {
        let link = mount.join(entry);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{entry}"), &link).unwrap();
        }
    }
    if let Some(old) = old {
        fs::remove_dir_all(mount.join(old)).unwrap();
    }
}

const PACK_ENTRIES: [&str; 9] = [
    "pack.toml",
    "filter",
    "map",
    "enrich",
    "direction",
    "params",
    "samples",
    "tables",
    "tests",
];

#[test]
fn a_configmap_data_symlink_swap_is_picked_up() {
    let pack = temp_pack();
    let mount = pack.dir.path().join("configmap");
    fs::create_dir(&mount).unwrap();
    let entries = PACK_ENTRIES;
    configmap_publish(&mount, "2026_01_01_00_00_00.1", "a", &entries);
    let handle = Arc::new(rulebridge::rules::PackHandle::new(build(
        &mount,
        &pack.schemas,
    )));
    let rig = rig(handle, &mount, &pack.schemas, fast());
    for (i, suffix) in ["k1", "k2"].into_iter().enumerate() {
        configmap_publish(
            &mount,
            &format!("2026_01_01_00_00_0{i}.2"),
            suffix,
            &entries,
        );
        rig.swapped(WAIT);
        assert!(title_now(&rig).ends_with(&format!(" [{suffix}]")));
    }
}

#[test]
fn a_configmap_swap_one_level_above_the_pack_is_picked_up() {
    // The ConfigMap holds the pack as a folder: mount/rules -> ..data/rules.
    let pack = temp_pack();
    let mount = pack.dir.path().join("configmap");
    fs::create_dir(&mount).unwrap();
    let publish = |stamp: &str, suffix: &str| {
        let dated = mount.join(format!("..{stamp}"));
        write_pack(&dated.join("rules"));
        set_suffix(&dated.join("rules"), suffix);
        let old = fs::read_link(mount.join("..data")).ok();
        symlink(format!("..{stamp}"), mount.join("..data_tmp")).unwrap();
        fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        if fs::symlink_metadata(mount.join("rules")).is_err() {
            symlink("..data/rules", mount.join("rules")).unwrap();
        }
        if let Some(old) = old {
            fs::remove_dir_all(mount.join(old)).unwrap();
        }
    };
    publish("v0", "a");
    let rules = mount.join("rules");
    let handle = Arc::new(rulebridge::rules::PackHandle::new(build(
        &rules,
        &pack.schemas,
    )));
    let rig = rig(handle, &rules, &pack.schemas, fast());
    for (i, suffix) in ["u1", "u2"].into_iter().enumerate() {
        publish(&format!("v{}", i + 1), suffix);
        rig.swapped(WAIT);
        assert!(title_now(&rig).ends_with(&format!(" [{suffix}]")));
    }
}

#[test]
fn the_polling_watcher_picks_up_saves_too() {
    let pack = temp_pack();
    let options = WatchOptions {
        polling: true,
        ..fast()
    };
    let rig = rig_for(&pack, options);
    assert!(rig.watcher.is_polling());
    for suffix in ["p1", "p2"] {
        set_suffix(&pack.rules, suffix);
        rig.swapped(WAIT);
        assert!(title_now(&rig).ends_with(&format!(" [{suffix}]")));
    }
}

#[test]
fn a_trigger_reloads_without_waiting_and_a_schema_change_is_a_new_version() {
    let pack = temp_pack();
    let rig = rig_for(&pack, WatchOptions::default());
    // SIGHUP's path: nothing changed, so nothing is swapped.
    rig.watcher.trigger();
    let (_, o) = rig.next(WAIT).unwrap();
    assert!(matches!(o, ReloadOutcome::Unchanged { .. }), "{o:?}");
    // The schemas folder is part of the version: a harmless edit there is a swap.
    let schema = pack.schemas.join("pack-test.schema.json");
    let text = fs::read_to_string(&schema).unwrap();
    fs::write(&schema, text + "\n").unwrap();
    let (_, to) = rig.swapped(WAIT);
    assert_eq!(rig.handle.current().version, to);
}

#[test]
fn a_shadow_run_charges_each_changed_decision_to_its_rule() {
    let pack = temp_pack();
    let old = build(&pack.rules, &pack.schemas);
    set_suffix(&pack.rules, "b");
    let manifest = pack.rules.join("pack.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    let text = text.replace(
        "skip_severities_without_alerts = [\"informational\"]",
        "skip_severities_without_alerts = []",
    );
    fs::write(&manifest, text).unwrap();
    let new = build(&pack.rules, &pack.schemas);

    let mut incidents: Vec<Arc<serde_json::Value>> = rulebridge::emulator::seed::generate(6, 3)
        .into_iter()
        .map(Arc::new)
        .collect();
    // Informational without alerts: the old filter skips it, the new one does not.
    let mut quiet = (*incidents[0]).clone();
    quiet["id"] = "123456".into();
    quiet["severity"] = "informational".into();
    quiet["alerts"] = serde_json::json!([]);
    incidents.push(Arc::new(quiet));

    let report = rulebridge::reload::shadow(&old, &new, &incidents, "2026-01-01T00:00:00Z");
    assert_eq!(report.incidents, 7);
    assert_eq!(report.changed, 7, "{report:#?}");
    assert!(report.errors.is_empty(), "{report:#?}");
    let stamp = &report.per_rule["stamp"];
    assert_eq!(stamp.changed, 6, "{report:#?}");
    assert_eq!(stamp.examples.len(), 3);
    // The part that differs stays in view however long the title.
    let id = incidents[0]["id"].as_str().unwrap();
    let example = &stamp.examples[0];
    assert!(
        example.starts_with(&format!("incident {id}: title: …"))
            && example.contains(" [a]\" -> …")
            && example.ends_with(" [b]\""),
        "{report:#?}"
    );
    let filter = &report.per_rule["skip-noise"];
    assert_eq!(filter.changed, 1);
    assert_eq!(
        filter.examples,
        ["incident 123456: verdict: filtered -> synced"]
    );
    // The same pack on both sides changes nothing.
    let same = rulebridge::reload::shadow(&new, &new, &incidents, "2026-01-01T00:00:00Z");
    assert_eq!((same.changed, same.per_rule.len()), (0, 0));
}

#[test]
fn a_reload_with_a_shadow_source_keeps_the_report_in_its_status() {
    let pack = temp_pack();
    let rig = rig_for(&pack, fast());
    let incidents: Vec<Arc<serde_json::Value>> = rulebridge::emulator::seed::generate(4, 9)
        .into_iter()
        .map(Arc::new)
        .collect();
    rig.reloader
        .set_shadow_source(Box::new(move || incidents.clone()));
    set_suffix(&pack.rules, "shadowed");
    rig.swapped(WAIT);
    let shadow = rig.reloader.status().last_shadow.expect("a shadow report");
    assert_eq!(shadow.incidents, 4);
    assert_eq!(shadow.per_rule["stamp"].changed, shadow.changed);
    assert!(shadow.changed >= 3, "{shadow:#?}");
}
