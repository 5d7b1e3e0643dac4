//! The sync against the services as they are observed to behave (issue 10): the
//! emulator's default profile ignores `$orderby`, pages Graph by `$skip` offsets over
//! the live set, fails `$expand` + `$filter` on large tenants, pages comments, holds
//! incidents Microsoft's connector made, and lists Sentinel's own incidents in Graph.
//! Each test names a way the sync used to lose or duplicate work on a real tenant.
//! Real HTTP over 127.0.0.1, a real SQLite file, the default pack.

use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::model::Side;
use rulebridge::testbed::{Testbed, TestbedOptions};
use serde_json::json;
use std::time::Duration;

use crate::common::pack;

fn options(incidents: usize, dir: &tempfile::TempDir) -> TestbedOptions {
    TestbedOptions::new(incidents, dir.path().join("state.db"))
}

/// Polls of both sides (no sweep: only polls may find what is asked of them here)
/// until one writes nothing and nothing is interrupted.
async fn poll_until_calm(tb: &Testbed, max: usize) {
    for _ in 0..max {
        let d = tb.syncer.poll(Side::Defender).await.unwrap();
        let s = tb.syncer.poll(Side::Sentinel).await.unwrap();
        if d.written + s.written == 0 && d.interrupted.is_none() && s.interrupted.is_none() {
            return;
        }
    }
    panic!("the polls did not calm down in {max} rounds");
}

fn drop_list_after(pages: u32) -> FaultRule {
    // Enough failures in a row to outlast the client's retries: the pass ends there.
    FaultRule {
        kind: FaultKind::Drop,
        endpoint: Endpoint::GraphList,
        rate: 0.0,
        count: Some(20),
        after: pages,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_pass_cut_off_after_any_page_loses_nothing() {
    // Graph lists newest-created first whatever $orderby says: a cursor taken from the
    // stamps of the pages read so far skips everything older on the pages not read.
    for cut in [0, 1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let tb = Testbed::start(pack(), options(240, &dir)).await.unwrap();
        tb.emulator.add_fault(drop_list_after(cut));
        let first = tb.syncer.poll(Side::Defender).await.unwrap();
        assert!(first.interrupted.is_some(), "cut after {cut}: {first:?}");
        tb.emulator.clear_faults();
        poll_until_calm(&tb, 10).await;
        let report = tb.consistency();
        assert!(
            report.missing.is_empty(),
            "cut after {cut} list requests: {report:#?}"
        );
        assert!(report.synced > 150, "{report:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_changes_made_while_the_first_sync_pages_all_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(pack(), options(300, &dir)).await.unwrap();
    // Slow list pages give the analysts time to work between them.
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Slow { delay_ms: 150 },
        endpoint: Endpoint::GraphList,
        rate: 1.0,
        count: None,
        after: 0,
    });
    let ids: Vec<String> = tb.emulator.store().graph.keys().cloned().collect();
    let syncer = tb.syncer.clone();
    let pass = tokio::spawn(async move { syncer.poll(Side::Defender).await.unwrap() });
    let mut edited = Vec::new();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut store = tb.emulator.store();
        if i % 2 == 0 {
            // A new incident: first in Graph's order, it shifts every later offset.
            let id = format!("{}", 990_000 + i);
            store
                .seed_graph(json!({
                    "id": id, "displayName": format!("New during the pass {i}"),
                    "status": "active", "severity": "high", "alerts": [
                        {"id": format!("a{id}"), "title": "Suspicious sign-in", "serviceSource": "microsoftDefenderForIdentity", "severity": "high"}
                    ]
                }))
                .unwrap();
            edited.push((id, "High"));
        } else {
            let id = ids[(i * 37) % ids.len()].clone();
            // Status, not severity: the VIP enrichment may keep a severity raised.
            let changes = json!({"status": "inProgress"}).as_object().unwrap().clone();
            store.graph_patch(&id, changes, "analyst").unwrap();
            edited.push((id, "Active"));
        }
    }
    pass.await.unwrap();
    tb.emulator.clear_faults();
    poll_until_calm(&tb, 10).await;
    let report = tb.consistency();
    assert!(
        report.missing.is_empty() && report.disagreements.is_empty(),
        "{report:#?}"
    );
    let store = tb.emulator.store();
    for (id, expected) in &edited {
        let link = tb.syncer.state().link(id).unwrap();
        let Some(link) = link else {
            // The default pack may filter an incident out; these all have alerts.
            panic!("{id} was never synced");
        };
        let twin = &store.sentinel[&store.sentinel_key(&link.sentinel_id)];
        let field = if *expected == "High" {
            "severity"
        } else {
            "status"
        };
        assert_eq!(twin["properties"][field], *expected, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_graph_fails_expand_with_filter_every_incident_arrives_with_its_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(300, &dir);
    opts.observed.graph_expand_filter_limit = Some(100);
    let mut tb = Testbed::start(pack(), opts).await.unwrap();
    tb.quiesce(30).await.unwrap();
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
    assert!(report.synced > 200, "{report:#?}");
    assert!(tb.syncer.expand_fallback());
    assert_eq!(
        tb.metrics.value(rulebridge::metrics::EXPAND_FALLBACK, &[]),
        Some(1.0)
    );
    // The twins' descriptions summarise the alerts, which only the per-incident reads
    // brought (the consistency check above renders from the stored, expanded incidents).
    let failures = {
        let store = tb.emulator.store();
        let with_alerts = store
            .sentinel
            .values()
            .filter(|s| {
                s["properties"]["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("Alerts ("))
            })
            .count();
        assert!(with_alerts > 200, "{with_alerts}");
        let expanded_lists = store
            .requests
            .iter()
            .filter(|r| {
                r.path.ends_with("/security/incidents")
                    && r.query.contains("expand")
                    && r.query.contains("filter")
            })
            .map(|r| r.status)
            .collect::<Vec<_>>();
        assert!(expanded_lists.contains(&500), "{expanded_lists:?}");
        expanded_lists.iter().filter(|s| **s == 500).count()
    };

    // A restarted process remembers the switch instead of rediscovering the 500.
    tb.restart().unwrap();
    {
        let mut store = tb.emulator.store();
        let id = store.graph.keys().next().unwrap().clone();
        let changes = json!({"status": "inProgress"}).as_object().unwrap().clone();
        store.graph_patch(&id, changes, "analyst").unwrap();
    }
    tb.syncer.poll(Side::Defender).await.unwrap();
    assert!(tb.syncer.expand_fallback());
    let after = tb
        .emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/security/incidents") && r.status == 500)
        .count();
    assert_eq!(after, failures, "no new 500s after the restart");
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_sentinel_comments_all_reach_defender() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(pack(), options(10, &dir)).await.unwrap();
    tb.quiesce(20).await.unwrap();
    let link = tb.syncer.state().links().unwrap().remove(0);
    {
        let mut store = tb.emulator.store();
        let name = store.sentinel_key(&link.sentinel_id);
        let id = store.sentinel[&name]["id"].as_str().unwrap().to_string();
        let base = id.strip_suffix(&format!("/{name}")).unwrap().to_string();
        for i in 0..25 {
            store
                .sentinel_comment(
                    &base,
                    &name,
                    &format!("c{i:03}-0000-4000-8000-000000000000"),
                    &json!({"properties": {"message": format!("analyst note {i}")}}),
                )
                .unwrap();
        }
    }
    tb.quiesce(30).await.unwrap();
    let store = tb.emulator.store();
    let comments: Vec<&str> = store.graph[&link.defender_id]["comments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["comment"].as_str())
        .collect();
    for i in 0..25 {
        let text = format!("analyst note {i}");
        assert!(
            comments.iter().any(|c| c.starts_with(&text)),
            "{text} missing from {comments:#?}"
        );
    }
    drop(store);
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_dated_stamps_do_not_hide_later_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(pack(), options(60, &dir)).await.unwrap();
    {
        let mut store = tb.emulator.store();
        let ids: Vec<String> = store.graph.keys().take(3).cloned().collect();
        for id in ids {
            let incident = store.graph.get_mut(&id).unwrap();
            incident["lastUpdateDateTime"] = json!("2031-01-01T00:00:00.0000000Z");
        }
    }
    poll_until_calm(&tb, 10).await;
    let cursor = tb.syncer.state().cursor(Side::Defender).unwrap().unwrap();
    assert!(
        cursor.as_str() < "2031",
        "the cursor jumped ahead: {cursor}"
    );
    // An ordinary change now: one poll (no sweep) must carry it.
    let link = tb
        .syncer
        .state()
        .links()
        .unwrap()
        .into_iter()
        .find(|l| {
            !tb.emulator.store().graph[&l.defender_id]["lastUpdateDateTime"]
                .as_str()
                .unwrap()
                .starts_with("2031")
        })
        .unwrap();
    {
        let mut store = tb.emulator.store();
        let changes = json!({"status": "inProgress"}).as_object().unwrap().clone();
        store
            .graph_patch(&link.defender_id, changes, "analyst")
            .unwrap();
    }
    tb.syncer.poll(Side::Defender).await.unwrap();
    {
        let store = tb.emulator.store();
        let twin = &store.sentinel[&store.sentinel_key(&link.sentinel_id)];
        assert_eq!(twin["properties"]["status"], "Active");
    }

    // A state file whose cursor an earlier version took from such a stamp: the poll
    // must not wait for 2031 either.
    tb.syncer
        .state()
        .set_cursor(Side::Defender, "2031-01-01T00:00:00.0000000Z")
        .unwrap();
    {
        let mut store = tb.emulator.store();
        let changes = json!({"status": "resolved", "classification": "truePositive", "determination": "malware"})
            .as_object()
            .unwrap()
            .clone();
        store
            .graph_patch(&link.defender_id, changes, "analyst")
            .unwrap();
    }
    tb.syncer.poll(Side::Defender).await.unwrap();
    let store = tb.emulator.store();
    let twin = &store.sentinel[&store.sentinel_key(&link.sentinel_id)];
    assert_eq!(twin["properties"]["status"], "Closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_descriptions_reach_sentinel_instead_of_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(pack(), options(0, &dir)).await.unwrap();
    let description = "🔥".repeat(4_000);
    tb.emulator
        .store()
        .seed_graph(json!({
            "id": "424242", "displayName": "Ransomware 🔥 on finance servers 🔥",
            "description": description, "status": "active", "severity": "high",
            "alerts": [{"id": "e1", "title": "🔥 Ransom note dropped", "serviceSource": "microsoftDefenderForEndpoint", "severity": "high"}]
        }))
        .unwrap();
    tb.quiesce(10).await.unwrap();
    assert_eq!(tb.syncer.state().dead_letters().unwrap(), vec![]);
    let link = tb.syncer.state().link("424242").unwrap().unwrap();
    let store = tb.emulator.store();
    let twin = &store.sentinel[&store.sentinel_key(&link.sentinel_id)];
    let written = twin["properties"]["description"].as_str().unwrap();
    assert!(written.encode_utf16().count() <= 5_000);
    assert!(written.contains("🔥🔥🔥"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_of_microsofts_connector_are_linked_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(80, &dir);
    opts.observed.connector_incidents = 0.5;
    let tb = Testbed::start(pack(), opts).await.unwrap();
    let made_by_connector: Vec<(String, String)> = tb
        .emulator
        .store()
        .sentinel
        .iter()
        .map(|(name, s)| {
            (
                s["properties"]["providerIncidentId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                name.clone(),
            )
        })
        .collect();
    assert!(made_by_connector.len() > 20, "{}", made_by_connector.len());
    tb.quiesce(30).await.unwrap();
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
    assert!(report.connector_twins > 0, "{report:#?}");
    // One Sentinel incident per Defender incident: no twin beside the connector's.
    let store = tb.emulator.store();
    let mut per_defender = std::collections::HashMap::<String, usize>::new();
    for link in tb.syncer.state().links().unwrap() {
        *per_defender.entry(link.defender_id.clone()).or_default() += 1;
        if let Some((_, name)) = made_by_connector
            .iter()
            .find(|(id, _)| *id == link.defender_id)
        {
            assert_eq!(
                &link.sentinel_id, name,
                "linked to the connector's incident"
            );
        }
    }
    assert!(per_defender.values().all(|n| *n == 1));
    assert_eq!(
        store.sentinel.len(),
        report.synced + made_by_connector.len() - report.connector_twins,
        "{report:#?}"
    );
    // The connector's fields are left to it; what the rules add is there.
    for (defender_id, name) in &made_by_connector {
        let Some(link) = tb.syncer.state().link(defender_id).unwrap() else {
            continue;
        };
        assert_eq!(&link.sentinel_id, name);
        let labels = &store.sentinel[name]["properties"]["labels"];
        assert!(
            labels
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["labelName"] == format!("defender-xdr:{defender_id}")),
            "{labels}"
        );
        let audit = tb.syncer.state().audit_for(defender_id).unwrap();
        assert!(audit.iter().any(|a| a.action == "link"), "{audit:#?}");
        assert!(!audit.iter().any(|a| a.action == "create"), "{audit:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_own_incidents_listed_by_graph_are_never_twinned() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(80, &dir);
    opts.observed.sentinel_incidents_in_graph = 0.3;
    let tb = Testbed::start(pack(), opts).await.unwrap();
    let from_sentinel: Vec<String> = tb
        .emulator
        .store()
        .graph
        .iter()
        .filter(|(_, d)| {
            d["alerts"].as_array().is_some_and(|a| {
                !a.is_empty() && a.iter().all(|a| a["serviceSource"] == "microsoftSentinel")
            })
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert!(from_sentinel.len() > 10, "{}", from_sentinel.len());
    tb.quiesce(30).await.unwrap();
    for id in &from_sentinel {
        assert_eq!(
            tb.syncer.state().link(id).unwrap(),
            None,
            "{id} was twinned"
        );
    }
    // The Prefer header made Graph name the source; without it the filter could not.
    let lists = tb
        .emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/security/incidents"))
        .count();
    assert!(lists > 0);
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_syncs_from_now_on_and_history_is_a_paced_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(120, &dir);
    opts.start_from = None;
    let mut tb = Testbed::start(pack(), opts).await.unwrap();
    tb.quiesce(10).await.unwrap();
    assert_eq!(
        tb.syncer.state().counts().unwrap().links,
        0,
        "history is not twinned on a first start"
    );
    // A new incident after the first start is.
    tb.emulator
        .store()
        .seed_graph(json!({
            "id": "880001", "displayName": "New after the first start", "status": "active",
            "severity": "medium",
            "alerts": [{"id": "n1", "title": "Malware detected", "serviceSource": "microsoftDefenderForEndpoint", "severity": "medium"}]
        }))
        .unwrap();
    tb.quiesce(10).await.unwrap();
    assert!(tb.syncer.state().link("880001").unwrap().is_some());

    // A backfill: a few windows per cycle until the history is in.
    let first_start = tb
        .syncer
        .state()
        .meta("poll.first_start.defender")
        .unwrap()
        .unwrap();
    tb.options_mut().backfill = Some(chrono::TimeDelta::days(3650));
    tb.restart().unwrap();
    let mut cycles = 0;
    loop {
        cycles += 1;
        tb.syncer.cycle().await.unwrap();
        let status = tb.syncer.backfill_status().unwrap().unwrap();
        assert_eq!(
            status.to, first_start,
            "the backfill ends where the polls began"
        );
        if status.complete() {
            break;
        }
        assert!(cycles < 200, "{status:?}");
    }
    assert!(cycles > 1, "paced over several cycles");
    tb.quiesce(10).await.unwrap();
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.synced + report.filtered, 121);
    assert_eq!(
        tb.metrics
            .value(rulebridge::metrics::BACKFILL_PROGRESS, &[]),
        Some(1.0)
    );
    // Asked again, the same span costs nothing more.
    let before = tb.syncer.state().counts().unwrap().audit_rows;
    tb.restart().unwrap();
    tb.syncer.cycle().await.unwrap();
    assert_eq!(tb.syncer.state().counts().unwrap().audit_rows, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cuts_a_long_retry_after_short() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(10, &dir);
    opts.retry.max_delay = Duration::from_secs(600);
    let tb = Testbed::start(pack(), opts).await.unwrap();
    tb.quiesce(10).await.unwrap();
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Throttle { retry_after: 300 },
        endpoint: Endpoint::GraphList,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    let syncer = tb.syncer.clone();
    let pass = tokio::spawn(async move { syncer.poll(Side::Defender).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tb.syncer.request_stop();
    // Without the stop the pass would sleep five minutes; a minute is a hang.
    let report = tokio::time::timeout(Duration::from_secs(60), pass)
        .await
        .expect("the stop ended the wait")
        .unwrap();
    assert!(report.interrupted.is_some(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_rate_limit_headers_slow_the_client_before_a_429() {
    use rulebridge::emulator::throttle::{Bucket, ThrottleConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(60, &dir);
    // ARM's buckets, with a small burst: the client's own limiter (10/s, a burst of 50,
    // as `run` has it) would overrun it without reading the remaining count.
    opts.observed.throttle = ThrottleConfig {
        arm_writes: Some(Bucket {
            burst: 15.0,
            per_second: 10.0,
        }),
        arm_reads: Some(Bucket {
            burst: 25.0,
            per_second: 25.0,
        }),
        ..ThrottleConfig::unlimited()
    };
    opts.production_rate_limits = true;
    opts.sweep_batch = 5;
    let tb = Testbed::start(pack(), opts).await.unwrap();
    tb.quiesce(40).await.unwrap();
    assert!(tb.consistency().ok(), "{:#?}", tb.consistency());
    let store = tb.emulator.store();
    let throttled: Vec<_> = store.requests.iter().filter(|r| r.status == 429).collect();
    assert!(
        throttled.is_empty(),
        "{} requests met a 429",
        throttled.len()
    );
    drop(store);
    assert!(tb
        .metrics
        .value(
            rulebridge::metrics::RATELIMIT_REMAINING,
            &[("side", "sentinel")]
        )
        .is_some());
}
