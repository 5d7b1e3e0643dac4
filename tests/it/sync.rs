//! The sync engine end to end: the default pack, a SQLite file, the real clients over
//! 127.0.0.1 against the emulator. Each test states a behaviour users rely on.

use rulebridge::emulator::analysts::Analysts;
use rulebridge::testbed::{Testbed, TestbedOptions};

use crate::common::pack;

async fn testbed(incidents: usize, dir: &tempfile::TempDir) -> Testbed {
    let options = TestbedOptions::new(incidents, dir.path().join("state.db"));
    Testbed::start(pack(), options).await.unwrap()
}

/// Write requests (PUT/PATCH/POST, not tokens) the emulator has received so far.
fn writes(tb: &Testbed) -> Vec<(String, String)> {
    tb.emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("oauth2") && r.status < 300)
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_sync_mirrors_every_incident_once_and_then_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tb = testbed(60, &dir).await;
    tb.quiesce(20).await.unwrap();
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
    assert!(report.synced > 40, "{report:#?}");
    assert_eq!(report.synced + report.filtered, 60);
    assert_eq!(report.sentinel_incidents, report.synced);
    let stats = tb.syncer.stats();
    assert_eq!(stats.created as usize, report.synced);

    // Calm: more cycles read, but write nothing (no echo of our own writes).
    let before = writes(&tb).len();
    for _ in 0..3 {
        tb.syncer.cycle().await.unwrap();
    }
    assert_eq!(writes(&tb).len(), before, "{:?}", &writes(&tb)[before..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_edits_on_both_sides_converge_without_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let tb = testbed(40, &dir).await;
    tb.quiesce(20).await.unwrap();
    let mut analysts = Analysts::new(7);
    for round in 0..5 {
        {
            let mut store = tb.emulator.store();
            for _ in 0..30 {
                analysts.edit_once(&mut store);
            }
        }
        tb.quiesce(30).await.unwrap();
        let report = tb.consistency();
        if !report.ok() {
            for d in &report.disagreements {
                let id = d.split(' ').next().unwrap();
                eprintln!(
                    "AUDIT {id}: {:#?}",
                    tb.syncer.state().audit_for(id).unwrap()
                );
                let store = tb.emulator.store();
                eprintln!(
                    "GRAPH {}",
                    serde_json::to_string_pretty(&store.graph[id])
                        .unwrap()
                        .lines()
                        .filter(|l| !l.contains("evidence"))
                        .take(40)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        assert!(report.ok(), "round {round}: {report:#?}");
    }
    let before = writes(&tb).len();
    for _ in 0..3 {
        tb.syncer.cycle().await.unwrap();
    }
    assert_eq!(writes(&tb).len(), before, "{:?}", &writes(&tb)[before..]);
    let stats = tb.syncer.stats();
    assert!(
        stats.updates_to_defender > 0 && stats.updates_to_sentinel > 0,
        "{stats:?}"
    );
    assert!(
        stats.comments_to_defender > 0 && stats.comments_to_sentinel > 0,
        "{stats:?}"
    );
}
