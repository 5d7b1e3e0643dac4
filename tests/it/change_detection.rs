//! Finding every change without reading everything (issue 12): comments found from what
//! the listings carry (per-link digests, the comment scans), the sweep as a safety net
//! that closed, quiet incidents retire from, and requests labelled by purpose.
//! Real HTTP over 127.0.0.1 against the emulator (observed profile), a real SQLite file.

use rulebridge::config::Config;
use rulebridge::emulator::analysts::ANALYST;
use rulebridge::metrics;
use rulebridge::testbed::{Testbed, TestbedOptions};
use serde_json::{json, Value};

use crate::common::pack;

fn options(incidents: usize, dir: &tempfile::TempDir) -> TestbedOptions {
    let mut options = TestbedOptions::new(incidents, dir.path().join("state.db"));
    // No sweep: only polls and scans may find what these tests ask for.
    options.sweep_batch = 0;
    options
}

/// Cycles until one writes nothing (the initial sync of a small seed).
async fn settle(tb: &Testbed) {
    for _ in 0..10 {
        let reports = tb.syncer.cycle().await.unwrap();
        if reports
            .iter()
            .all(|r| r.written == 0 && r.interrupted.is_none())
        {
            return;
        }
    }
    panic!("the sync did not settle in 10 cycles");
}

/// A linked incident whose Defender status is open, and its Sentinel twin's name and
/// ARM base id.
fn open_link(tb: &Testbed) -> (String, String, String) {
    let links = tb.syncer.state().links().unwrap();
    let store = tb.emulator.store();
    let link = links
        .iter()
        .find(|l| {
            l.created
                && matches!(
                    store.graph[&l.defender_id]["status"].as_str(),
                    Some("active" | "inProgress")
                )
        })
        .expect("an open linked incident in the seed");
    let name = store.sentinel_key(&link.sentinel_id);
    let base = store.sentinel[&name]["id"]
        .as_str()
        .unwrap()
        .strip_suffix(&format!("/{name}"))
        .unwrap()
        .to_string();
    (link.defender_id.clone(), name, base)
}

fn defender_comments(tb: &Testbed, id: &str) -> Vec<String> {
    tb.emulator.store().graph[id]["comments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["comment"].as_str().map(str::to_string))
        .collect()
}

fn sentinel_comments(tb: &Testbed, name: &str) -> Vec<String> {
    let store = tb.emulator.store();
    store
        .sentinel_comments
        .get(name)
        .map(|all| {
            all.values()
                .filter_map(|c| c["properties"]["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds a comment on each side of one open link, then runs `cycles` cycles; returns
/// whether each arrived on the other side.
async fn comments_arrive_within(tb: &Testbed, cycles: usize) -> (bool, bool) {
    let (id, name, base) = open_link(tb);
    {
        let mut store = tb.emulator.store();
        let before = store.graph[&id]["lastUpdateDateTime"].clone();
        store
            .graph_comment(&id, &json!({"comment": "defender-side note 7f3"}), ANALYST)
            .unwrap();
        store
            .sentinel_comment(
                &base,
                &name,
                "5e0c0000-0000-4000-8000-0000000000a1",
                &json!({"properties": {"message": "sentinel-side note 9b2"}}),
            )
            .unwrap();
        // The premise: neither comment moves a change stamp, so no poll lists them.
        assert_eq!(store.graph[&id]["lastUpdateDateTime"], before);
    }
    for _ in 0..cycles {
        tb.syncer.cycle().await.unwrap();
    }
    let to_sentinel = sentinel_comments(tb, &name)
        .iter()
        .any(|m| m.contains("defender-side note 7f3"));
    let to_defender = defender_comments(tb, &id)
        .iter()
        .any(|c| c.contains("sentinel-side note 9b2"));
    (to_sentinel, to_defender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_no_poll_and_no_sweep_visits_arrives_within_two_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(pack(), options(30, &dir)).await.unwrap();
    settle(&tb).await;
    assert_eq!(comments_arrive_within(&tb, 2).await, (true, true));
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
}

/// Graph at its production rate and kept busy: every cycle, analysts save other
/// incidents in Sentinel, and each save costs two Graph requests before the scans run,
/// so Graph's bucket never holds the scans' reserve. The scans' guaranteed pages still
/// walk (`scan::guaranteed`), so a Defender comment no poll lists arrives within two
/// cycles; from spare tokens alone it waited for the walk to come round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defender_comment_arrives_within_two_cycles_while_graph_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(30, &dir);
    options.production_rate_limits = true;
    let tb = Testbed::start(pack(), options).await.unwrap();
    settle(&tb).await;
    let (id, name, _) = open_link(&tb);
    let others: Vec<String> = tb
        .syncer
        .state()
        .links()
        .unwrap()
        .into_iter()
        .filter(|l| l.created && l.defender_id != id)
        .map(|l| tb.emulator.store().sentinel_key(&l.sentinel_id))
        .take(6)
        .collect();
    {
        let mut store = tb.emulator.store();
        let before = store.graph[&id]["lastUpdateDateTime"].clone();
        store
            .graph_comment(&id, &json!({"comment": "busy-day note 4c1"}), ANALYST)
            .unwrap();
        assert_eq!(store.graph[&id]["lastUpdateDateTime"], before);
    }
    for cycle in 0..2 {
        for other in &others {
            crate::common::sentinel_edit(&tb.emulator, other, |p| {
                crate::common::add_label(p, &format!("Busy-{cycle}"))
            });
        }
        tb.syncer.cycle().await.unwrap();
    }
    let arrived = sentinel_comments(&tb, &name)
        .iter()
        .any(|m| m.contains("busy-day note 4c1"));
    let scan_pages = tb
        .metrics
        .value(
            metrics::API_CALLS_BY_PURPOSE,
            &[("side", "defender"), ("purpose", "scan")],
        )
        .unwrap_or(0.0);
    assert!(arrived, "Graph scan pages sent: {scan_pages}");
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
}

/// A Sentinel comment the Sentinel scan copies to Defender moves Defender's comments
/// too; the Defender scan later in the same cycle lists them, and finds the digest that
/// copy stored, not the one it loaded when the scan began: one comment list, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_copied_by_one_scan_is_not_read_again_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(pack(), options(30, &dir)).await.unwrap();
    settle(&tb).await;
    let (id, name, base) = open_link(&tb);
    tb.emulator
        .store()
        .sentinel_comment(
            &base,
            &name,
            "5e0c0000-0000-4000-8000-0000000000c3",
            &json!({"properties": {"message": "copied once 2d8"}}),
        )
        .unwrap();
    let lists = |tb: &Testbed| {
        tb.emulator
            .store()
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/{name}/comments")))
            .count()
    };
    let before = lists(&tb);
    tb.syncer.cycle().await.unwrap();
    assert!(defender_comments(&tb, &id)
        .iter()
        .any(|c| c.contains("copied once 2d8")));
    assert_eq!(
        lists(&tb) - before,
        1,
        "the twin's comments were listed again"
    );
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_digests_the_same_comments_wait_for_the_sweep() {
    // The control: the sweep-only behaviour of earlier versions, sweep off, does not
    // find them, so the test above is not passing by accident.
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(30, &dir);
    options.sweep_only = true;
    let tb = Testbed::start(pack(), options).await.unwrap();
    settle(&tb).await;
    assert_eq!(comments_arrive_within(&tb, 2).await, (false, false));
}

fn comment_reads(tb: &Testbed) -> usize {
    tb.emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/comments"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_change_costs_no_comment_read() {
    for sweep_only in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(12, &dir);
        options.sweep_only = sweep_only;
        let tb = Testbed::start(pack(), options).await.unwrap();
        settle(&tb).await;
        let (id, name, _) = open_link(&tb);
        let before = comment_reads(&tb);
        let owner = "new.owner@contoso.com";
        {
            let mut store = tb.emulator.store();
            let changes = json!({"assignedTo": owner});
            let Value::Object(changes) = changes else {
                unreachable!()
            };
            store.graph_patch(&id, changes, ANALYST).unwrap();
        }
        tb.syncer.cycle().await.unwrap();
        let store = tb.emulator.store();
        let synced = &store.sentinel[&name]["properties"]["owner"];
        assert!(
            synced.to_string().contains(owner),
            "the change reached Sentinel: {synced}"
        );
        drop(store);
        let reads = comment_reads(&tb) - before;
        if sweep_only {
            assert!(
                reads >= 1,
                "earlier versions read comments on every reconcile"
            );
        } else {
            assert_eq!(
                reads, 0,
                "comments unchanged on both sides: nothing to read"
            );
        }
    }
}

fn sweep_meta(tb: &Testbed) -> Value {
    let text = tb
        .syncer
        .state()
        .meta(rulebridge::sync::META_SWEEP)
        .unwrap()
        .expect("the sweep records its size");
    serde_json::from_str(&text).unwrap()
}

fn retire_after_a_second(config: &mut Config) {
    config.sync.retire_closed_after = "1s".into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_incidents_leave_the_sweep_and_come_back_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = TestbedOptions::new(30, dir.path().join("state.db"));
    options.sweep_batch = 50;
    options.configure = Some(retire_after_a_second);
    let tb = Testbed::start(pack(), options).await.unwrap();
    tb.quiesce(20).await.unwrap();
    let links = tb.syncer.state().links().unwrap();
    let closed: Vec<_> = links
        .iter()
        .filter(|l| l.base_sentinel["status"] == "Closed")
        .collect();
    assert!(
        !closed.is_empty() && closed.len() < links.len(),
        "the seed has both"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    tb.syncer.cycle().await.unwrap();
    assert_eq!(
        sweep_meta(&tb)["links"],
        json!(links.len() - closed.len()),
        "closed, quiet incidents retired"
    );
    // Retired links are not read: their swept time stays.
    let reopened = closed[0].defender_id.clone();
    let swept_before = tb.syncer.state().link(&reopened).unwrap().unwrap().swept_at;
    tb.syncer.cycle().await.unwrap();
    let swept_after = tb.syncer.state().link(&reopened).unwrap().unwrap().swept_at;
    assert_eq!(swept_before, swept_after);
    // Reopened in Defender: the poll syncs it and it is back in the sweep.
    {
        let mut store = tb.emulator.store();
        let Value::Object(changes) = json!({"status": "active"}) else {
            unreachable!()
        };
        store.graph_patch(&reopened, changes, ANALYST).unwrap();
    }
    tb.syncer.cycle().await.unwrap();
    let status = &tb
        .syncer
        .state()
        .link(&reopened)
        .unwrap()
        .unwrap()
        .base_sentinel["status"];
    assert_ne!(status, "Closed", "the reopening reached Sentinel");
    tb.syncer.cycle().await.unwrap();
    assert_eq!(
        sweep_meta(&tb)["links"],
        json!(links.len() - closed.len() + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_labelled_with_its_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = TestbedOptions::new(20, dir.path().join("state.db"));
    options.sweep_batch = 5;
    let tb = Testbed::start(pack(), options).await.unwrap();
    tb.quiesce(20).await.unwrap();
    let m = &tb.metrics;
    let text = m.render();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let by_purpose = sum("rulebridge_api_calls_by_purpose_total{");
    assert!(by_purpose > 0.0);
    assert_eq!(by_purpose, sum("rulebridge_api_calls_total{"), "{text}");
    for purpose in ["write", "poll", "scan", "sweep"] {
        let found = ["defender", "sentinel"].iter().any(|side| {
            m.value(
                metrics::API_CALLS_BY_PURPOSE,
                &[("side", side), ("purpose", purpose)],
            )
            .is_some_and(|n| n > 0.0)
        });
        assert!(found, "no {purpose} request counted:\n{text}");
    }
}
