//! Hot reload under a running sync (emulator + real clients + SQLite): a valid save
//! decides the next incident, broken saves never do, and 50 swaps while incidents flow
//! leave every incident decided by exactly one complete pack, none lost or duplicated.

use crate::reload_rig::*;
use rulebridge::emulator::analysts::Analysts;
use rulebridge::emulator::seed;
use rulebridge::reload::{ReloadOutcome, WatchOptions};
use rulebridge::state::AuditRow;
use rulebridge::sync::fields::sentinel_id;
use rulebridge::testbed::{Testbed, TestbedOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(8);

async fn testbed(pack: &TempPack, incidents: usize) -> Testbed {
    let options = TestbedOptions::new(incidents, pack.dir.path().join("state.db"));
    Testbed::start(build(&pack.rules, &pack.schemas), options)
        .await
        .unwrap()
}

/// A new Defender incident, stamped now so the next poll sees it.
fn add_incident(tb: &Testbed, id: &str) {
    let mut incident = seed::generate(1, 77).remove(0);
    let map = incident.as_object_mut().unwrap();
    map.insert("id".into(), json!(id));
    map.remove("createdDateTime");
    map.remove("lastUpdateDateTime");
    map.insert("severity".into(), json!("high"));
    tb.emulator.store().seed_graph(incident).unwrap();
}

fn twin_title(tb: &Testbed, id: &str) -> String {
    let sid = sentinel_id(&tb.info.tenant_id, id);
    let store = tb.emulator.store();
    store.sentinel[&sid]["properties"]["title"]
        .as_str()
        .unwrap()
        .to_string()
}

fn audit(tb: &Testbed, id: &str) -> Vec<AuditRow> {
    tb.syncer.state().audit_for(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_save_is_active_within_two_seconds_and_decides_the_next_incident() {
    let pack = temp_pack();
    let tb = testbed(&pack, 5).await;
    tb.quiesce(20).await.unwrap();
    let rig = rig(
        tb.pack.clone(),
        &pack.rules,
        &pack.schemas,
        WatchOptions::default(),
    );
    let old = tb.pack.current().version.clone();

    let saved = Instant::now();
    set_suffix(&pack.rules, "b");
    let (at, new) = rig.swapped(WAIT);
    let latency = at - saved;
    eprintln!("save to active: {latency:?}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert_ne!(new, old);

    add_incident(&tb, "999001");
    tb.syncer.cycle().await.unwrap();
    let rows = audit(&tb, "999001");
    assert!(rows.iter().any(|r| r.action == "create"), "{rows:#?}");
    assert!(rows.iter().all(|r| r.pack_version == new), "{rows:#?}");
    assert!(twin_title(&tb, "999001").ends_with(" [b]"));
}

/// The first half of `text`, as an editor mid-save leaves it.
/// The file as an editor mid-save leaves it: cut off after the first `=` past the
/// middle, so the cut is never at a line end or inside a comment (a prefix that happens
/// to be valid would be a different case: a manifest that lacks something).
fn half(text: &str) -> String {
    let middle = (0..=text.len() / 2)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap();
    let cut = text[middle..]
        .find(" = ")
        .map_or(middle, |at| middle + at + 3);
    text[..cut].to_string()
}

/// The pack's own bytes with one edit applied.
fn edited(path: &std::path::Path, from: &str, to: &str) -> String {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    text.replacen(from, to, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_saves_are_rejected_with_their_location_and_the_old_pack_keeps_deciding() {
    let pack = temp_pack();
    let tb = testbed(&pack, 3).await;
    tb.quiesce(20).await.unwrap();
    let rig = rig(tb.pack.clone(), &pack.rules, &pack.schemas, fast());
    let original = tb.pack.current().version.clone();

    let manifest = pack.rules.join("pack.toml");
    let filter = pack.rules.join("filter/skip-noise.rhai");
    let vip = pack.rules.join("enrich/vip-accounts.rhai");
    let schema = pack.schemas.join("sentinel-incident.schema.json");
    let whole = fs::read_to_string(&manifest).unwrap();
    let whole_schema = fs::read_to_string(&schema).unwrap();
    // (case, file, broken content, where the problem must point, with a line?)
    let cases: Vec<(&str, &std::path::Path, String, &str, bool)> = vec![
        (
            "syntax error",
            filter.as_path(),
            edited(
                &filter,
                "let p = ctx.params;",
                "let p = ctx.params;\n    let = 5;",
            ),
            "filter/skip-noise.rhai",
            true,
        ),
        (
            "params fail their schema",
            manifest.as_path(),
            edited(
                &manifest,
                "raise_severity_to = \"High\"",
                "raise_severity_to = 42",
            ),
            "pack.toml",
            false,
        ),
        (
            "missing entry point",
            vip.as_path(),
            edited(&vip, "fn enrich(target, ctx)", "fn enrich_all(target, ctx)"),
            "enrich/vip-accounts.rhai",
            true,
        ),
        (
            "failing pack test",
            manifest.as_path(),
            edited(&manifest, "label = \"VIP\"", "label = \"V.I.P.\""),
            "tests/vip-account-raises-severity.json",
            false,
        ),
        (
            "half-written manifest",
            manifest.as_path(),
            half(&whole),
            "pack.toml",
            true,
        ),
        (
            "half-written schema",
            schema.as_path(),
            half(&whole_schema),
            "sentinel-incident.schema.json",
            true,
        ),
    ];
    for (i, (case, path, broken, place, with_line)) in cases.iter().enumerate() {
        let good = fs::read(path).unwrap();
        atomic_write(path, broken);
        let problems = match rig.next_change(WAIT) {
            Some((_, ReloadOutcome::Rejected { problems, .. })) => problems,
            other => panic!("{case}: expected a rejection, got {other:?}"),
        };
        let located = problems.iter().find(|p| p.file.ends_with(place));
        let Some(p) = located else {
            panic!("{case}: no problem in {place}: {problems:#?}")
        };
        assert!(!with_line || p.line.is_some(), "{case}: {p}");
        assert!(
            p.line.is_some() || p.pointer.is_some() || case.contains("test"),
            "{case}: {p}"
        );
        eprintln!("{case}: {p}");
        assert_eq!(tb.pack.current().version, original, "{case}");

        // Meanwhile the old pack decides new incidents.
        let id = format!("99900{i}");
        add_incident(&tb, &id);
        tb.syncer.cycle().await.unwrap();
        let rows = audit(&tb, &id);
        assert!(
            !rows.is_empty() && rows.iter().all(|r| r.pack_version == original),
            "{case}: {rows:#?}"
        );
        assert!(twin_title(&tb, &id).ends_with(" [a]"));

        // One save can reach the watcher as events on both sides of a debounce.
        for o in rig.drain(Duration::from_millis(300)) {
            assert!(!matches!(o, ReloadOutcome::Swapped { .. }), "{case}: {o:?}");
        }

        // Fixing the file brings back the running pack's bytes: nothing to swap.
        atomic_write(path, good);
        match rig.next(WAIT) {
            Some((_, ReloadOutcome::Unchanged { version })) => assert_eq!(version, original),
            other => panic!("{case}: expected unchanged after the fix, got {other:?}"),
        }
        rig.drain(Duration::from_millis(300));
    }
    let status = rig.reloader.status();
    assert!(
        status.counts.rejected as usize >= cases.len(),
        "{status:#?}"
    );
    assert_eq!(status.counts.swapped, 0);
    let failure = status.last_failure.expect("a failure recorded");
    assert!(
        failure
            .problems
            .iter()
            .any(|p| p.contains("sentinel-incident.schema.json:")),
        "{failure:#?}"
    );
    assert_eq!(
        rig.metrics
            .value(rulebridge::metrics::RELOADS, &[("result", "rejected")]),
        Some(status.counts.rejected as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_while_incidents_flow_decide_each_incident_with_one_whole_pack() {
    let pack = temp_pack();
    let tb = testbed(&pack, 30).await;
    tb.quiesce(20).await.unwrap();
    let options = WatchOptions {
        debounce: Duration::from_millis(40),
        ..WatchOptions::default()
    };
    let rig = rig(tb.pack.clone(), &pack.rules, &pack.schemas, options);
    let mut variant: BTreeMap<String, &str> = BTreeMap::new();
    variant.insert(tb.pack.current().version.clone(), "a");

    // The sync runs continuously, with analysts editing both sides between cycles.
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let syncer = tb.syncer.clone();
        let store = tb.emulator.store_handle();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut analysts = Analysts::new(11);
            let mut cycles = 0;
            while !stop.load(Ordering::SeqCst) {
                {
                    let mut store = store.lock().unwrap();
                    for _ in 0..3 {
                        analysts.edit_once(&mut store);
                    }
                }
                syncer.cycle().await.unwrap();
                cycles += 1;
            }
            cycles
        })
    };

    let started = Instant::now();
    let mut swaps = 0;
    for i in 0..50 {
        let suffix = if i % 2 == 0 { "b" } else { "a" };
        // Blocking here is fine: the sync runs on the runtime's worker threads.
        set_suffix(&pack.rules, suffix);
        let (_, to) = rig.swapped(WAIT);
        variant.insert(to, suffix);
        swaps += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let cycles = flow.await.unwrap();
    eprintln!(
        "{swaps} swaps in {:?} while {cycles} sync cycles ran",
        started.elapsed()
    );
    assert_eq!(swaps, 50);
    assert_eq!(variant.len(), 2, "two contents, two versions: {variant:?}");
    assert!(
        cycles >= 5,
        "the sync ran during the swaps ({cycles} cycles)"
    );

    // After the last swap, a calm sync brings every twin to the final pack's view.
    tb.quiesce(30).await.unwrap();
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.sentinel_incidents, report.synced, "{report:#?}");

    let rows = tb.syncer.state().audit_since(0, 1_000_000).unwrap();
    let mut creates: BTreeMap<&str, usize> = BTreeMap::new();
    let mut versions_seen = BTreeSet::new();
    for row in &rows {
        let Some(suffix) = variant.get(&row.pack_version) else {
            panic!("audit row names a version that was never active: {row:#?}")
        };
        versions_seen.insert(row.pack_version.clone());
        if row.action == "create" {
            *creates.entry(&row.defender_id).or_default() += 1;
        }
        // The title written is the one the named pack renders: one whole pack decided.
        let title = match (row.action.as_str(), row.field.as_deref()) {
            ("create", _) => row.new["title"].clone(),
            ("update", Some("title")) => row.new.clone(),
            _ => Value::Null,
        };
        if let Some(title) = title.as_str() {
            assert!(title.ends_with(&format!(" [{suffix}]")), "{row:#?}");
        }
    }
    assert!(creates.values().all(|&n| n == 1), "{creates:?}");
    assert_eq!(versions_seen.len(), 2, "both variants decided incidents");
    let retitled = rows
        .iter()
        .filter(|r| r.field.as_deref() == Some("title"))
        .count();
    assert!(
        retitled > 10,
        "swaps re-decided incidents ({retitled} title updates)"
    );
}
