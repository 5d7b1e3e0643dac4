//! Kept alerts (issue 12): on a tenant where Graph fails `$expand=alerts` with `$filter`,
//! a listed change is completed from the alerts kept at the last read, unless an alert
//! changed since (one `alerts_v2` listing per poll says which) or the incident's own
//! fields do not explain its new stamp (an alert arrived or left). Each test changes
//! alerts the ways a tenant does and checks that Sentinel still shows them.
//! Real HTTP over 127.0.0.1, a real SQLite file, the default pack.

use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::model::Side;
use rulebridge::testbed::{Testbed, TestbedOptions};
use serde_json::{json, Value};
use std::time::Duration;

use crate::common::pack;

/// The poll overlap the tests run with: a change is vouched for once this old.
const OVERLAP_SECS: u64 = 1;

async fn fallback_testbed(dir: &tempfile::TempDir, copies: bool) -> Testbed {
    let mut options = TestbedOptions::new(16, dir.path().join("state.db"));
    // Only polls: a sweep would read what these tests expect the polls to read.
    options.sweep_batch = 0;
    options.observed.graph_expand_filter_limit = Some(4);
    options.configure = Some(if copies {
        |c| c.sync.overlap_secs = OVERLAP_SECS
    } else {
        |c| {
            c.sync.overlap_secs = OVERLAP_SECS;
            c.sync.alert_copies_max_age = "off".into();
        }
    });
    let tb = Testbed::start(pack(), options).await.unwrap();
    tb.quiesce(20).await.unwrap();
    assert!(
        tb.syncer.expand_fallback(),
        "the tenant is too big to expand"
    );
    tb
}

/// Linked incidents with alerts, open in Defender, in id order.
fn open_linked(tb: &Testbed) -> Vec<String> {
    let store = tb.emulator.store();
    let state = tb.syncer.state();
    store
        .graph
        .iter()
        .filter(|(_, i)| i["status"] == "active" || i["status"] == "inProgress")
        .filter(|(_, i)| i["alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter(|(id, _)| state.link(id).unwrap().is_some_and(|l| l.created))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Reads of one incident in full (`GET /security/incidents/{id}`).
fn reads_of(tb: &Testbed, id: &str) -> usize {
    let path = format!("/security/incidents/{id}");
    let store = tb.emulator.store();
    store
        .requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&path))
        .count()
}

fn alert_listings(tb: &Testbed) -> Vec<u16> {
    let store = tb.emulator.store();
    store
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/security/alerts_v2"))
        .map(|r| r.status)
        .collect()
}

fn analyst_sets(tb: &Testbed, id: &str, changes: Value) {
    let changes = changes.as_object().unwrap().clone();
    tb.emulator
        .store()
        .graph_patch(id, changes, "analyst")
        .unwrap();
}

/// Renames the first alert of `id` as Graph's own update would (only its stamp moves).
fn rename_first_alert(tb: &Testbed, id: &str, title: &str) {
    let mut store = tb.emulator.store();
    let alert = store.graph[id]["alerts"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let set = json!({ "title": title });
    store
        .graph_update_alert(&alert, set.as_object().unwrap())
        .unwrap();
}

fn twin_description(tb: &Testbed, id: &str) -> String {
    let link = tb.syncer.state().link(id).unwrap().unwrap();
    let store = tb.emulator.store();
    let twin = &store.sentinel[&store.sentinel_key(&link.sentinel_id)];
    twin["properties"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A Defender poll once the changes made so far are older than the overlap, by the
/// service's clock as its whole-second `Date` headers tell it (up to a second early).
async fn poll_defender(tb: &Testbed) {
    tokio::time::sleep(Duration::from_millis(OVERLAP_SECS * 1000 + 1300)).await;
    let report = tb.syncer.poll(Side::Defender).await.unwrap();
    assert!(report.interrupted.is_none(), "{report:?}");
}

fn assert_consistent(tb: &Testbed) {
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_an_incident_whose_alerts_did_not_change_costs_no_read_of_them() {
    for copies in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let tb = fallback_testbed(&dir, copies).await;
        let id = open_linked(&tb).remove(0);
        // The first poll after the history starts the record of alert changes.
        poll_defender(&tb).await;
        let before = reads_of(&tb, &id);
        analyst_sets(
            &tb,
            &id,
            json!({"severity": "high", "assignedTo": "kim@contoso.com"}),
        );
        poll_defender(&tb).await;
        let link = tb.syncer.state().link(&id).unwrap().unwrap();
        let store = tb.emulator.store();
        let twin = &store.sentinel[&store.sentinel_key(&link.sentinel_id)];
        assert_eq!(twin["properties"]["owner"]["email"], "kim@contoso.com");
        drop(store);
        let read = reads_of(&tb, &id) - before;
        if copies {
            assert_eq!(read, 0, "the kept alerts stood in for the read");
            assert!(tb.syncer.stats().alert_reads_saved >= 1);
            assert!(
                !alert_listings(&tb).is_empty(),
                "one alerts listing per poll"
            );
        } else {
            assert_eq!(read, 1, "with copies off, every changed incident is read");
            assert!(alert_listings(&tb).is_empty());
        }
        assert_consistent(&tb);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_changed_behind_its_incident_is_read_when_the_incident_next_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tb = fallback_testbed(&dir, true).await;
    let id = open_linked(&tb).remove(0);
    poll_defender(&tb).await;
    // An automated investigation renames the alert: its stamp moves, its incident's not.
    rename_first_alert(&tb, &id, "Renamed by the investigation");
    poll_defender(&tb).await;
    assert!(!twin_description(&tb, &id).contains("Renamed by the investigation"));
    let before = reads_of(&tb, &id);
    analyst_sets(&tb, &id, json!({"assignedTo": "kim@contoso.com"}));
    poll_defender(&tb).await;
    assert_eq!(reads_of(&tb, &id) - before, 1, "its copy was dropped: read");
    assert!(
        twin_description(&tb, &id).contains("Renamed by the investigation"),
        "{}",
        twin_description(&tb, &id)
    );
    assert_consistent(&tb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_that_arrive_or_move_without_a_stamp_of_their_own_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let tb = fallback_testbed(&dir, true).await;
    let open = open_linked(&tb);
    let (from, to, other) = (open[0].clone(), open[1].clone(), open[2].clone());
    poll_defender(&tb).await;
    let (moved, grown) = {
        let store = tb.emulator.store();
        let alert = &store.graph[&from]["alerts"][0];
        let grown = store.graph[&to]["alerts"].as_array().unwrap().len() + 1;
        (
            alert["id"].as_str().unwrap().to_string(),
            format!("Alerts ({grown})"),
        )
    };
    assert!(!twin_description(&tb, &to).contains(&grown));
    let reads = |tb: &Testbed| [&from, &to, &other].map(|id| reads_of(tb, id));
    let before = reads(&tb);
    // A move (Graph's moveAlerts): both incidents' stamps move, the alert's does not, so
    // the alerts listing cannot tell; the incidents' own fields explain nothing.
    tb.emulator.store().graph_move_alert(&moved, &to).unwrap();
    // And a new alert correlated into a third incident.
    tb.emulator
        .store()
        .graph_add_alert(&other, "Suspicious inbox rule created")
        .unwrap();
    poll_defender(&tb).await;
    let after = reads(&tb);
    for (i, id) in [&from, &to, &other].iter().enumerate() {
        assert_eq!(after[i] - before[i], 1, "{id} was read");
    }
    assert!(twin_description(&tb, &to).contains(&grown));
    assert!(twin_description(&tb, &other).contains("Suspicious inbox rule created"));
    assert_consistent(&tb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_listing_of_changed_alerts_vouches_for_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let tb = fallback_testbed(&dir, true).await;
    let id = open_linked(&tb).remove(0);
    poll_defender(&tb).await;
    rename_first_alert(&tb, &id, "Renamed while Graph was failing");
    analyst_sets(&tb, &id, json!({"assignedTo": "kim@contoso.com"}));
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::ServerError { status: 503 },
        endpoint: Endpoint::GraphAlerts,
        rate: 0.0,
        count: Some(20),
        after: 0,
    });
    let before = reads_of(&tb, &id);
    poll_defender(&tb).await;
    assert!(alert_listings(&tb).contains(&503));
    assert_eq!(reads_of(&tb, &id) - before, 1, "no vouch: read");
    assert!(twin_description(&tb, &id).contains("Renamed while Graph was failing"));
    assert_consistent(&tb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_is_read_even_when_an_analyst_edits_the_incident_it_went_into() {
    let dir = tempfile::tempdir().unwrap();
    let tb = fallback_testbed(&dir, true).await;
    let open = open_linked(&tb);
    let (merged, into) = (open[0].clone(), open[1].clone());
    poll_defender(&tb).await;
    let (alerts, together) = {
        let store = tb.emulator.store();
        let alerts: Vec<String> = store.graph[&merged]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        let together = alerts.len() + store.graph[&into]["alerts"].as_array().unwrap().len();
        (alerts, format!("Alerts ({together})"))
    };
    assert!(!twin_description(&tb, &into).contains(&together));
    {
        // Defender merges: the alerts move (their own stamps stay), the merged incident
        // is redirected to the one it went into.
        let mut store = tb.emulator.store();
        for alert in &alerts {
            store.graph_move_alert(alert, &into).unwrap();
        }
        let redirect = json!({"status": "redirected", "redirectIncidentId": into});
        store
            .graph_patch(&merged, redirect.as_object().unwrap().clone(), "Defender")
            .unwrap();
    }
    // And an analyst edits the incident it went into: its fields explain its new stamp.
    analyst_sets(&tb, &into, json!({"assignedTo": "kim@contoso.com"}));
    let before = reads_of(&tb, &into);
    poll_defender(&tb).await;
    assert_eq!(
        reads_of(&tb, &into) - before,
        1,
        "the merge target was read"
    );
    assert!(
        twin_description(&tb, &into).contains(&together),
        "{}",
        twin_description(&tb, &into)
    );
    assert_consistent(&tb);
}
