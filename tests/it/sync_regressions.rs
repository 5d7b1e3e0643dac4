//! Regression tests of the sync against the emulator: closed incidents, same-second
//! edits, comments whose POST outcome is unknown, merged incidents, etag races and rule
//! errors. Every edit goes through the emulator's own write paths (the same `Store`
//! methods its HTTP handlers call), so stamps and etags move as in the real services,
//! and every test asserts what ended up in the emulator's store and in the audit trail.

use crate::common;

use rulebridge::emulator::analysts::ANALYST;
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::emulator::graph::check_patch;
use rulebridge::rules::CompiledPack;
use rulebridge::state::AuditRow;
use rulebridge::sync::fields::sentinel_id;
use rulebridge::testbed::{Testbed, TestbedOptions};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

use crate::common::{add_label, pack, pack_at as pack_from};

/// A Graph incident the default pack syncs (medium severity, no alerts needed).
fn incident(id: &str) -> Value {
    crate::common::graph_incident(id, "medium")
}

/// A testbed over `ids` (and no generated incidents), synced to quiescence.
async fn synced_testbed(dir: &tempfile::TempDir, ids: &[&str]) -> Testbed {
    synced_testbed_with(dir, ids, pack(), |_| {}).await
}

async fn synced_testbed_with(
    dir: &tempfile::TempDir,
    ids: &[&str],
    pack: CompiledPack,
    tune: impl FnOnce(&mut TestbedOptions),
) -> Testbed {
    let mut options = TestbedOptions::new(0, dir.path().join("state.db"));
    tune(&mut options);
    let tb = Testbed::start(pack, options).await.unwrap();
    {
        let mut store = tb.emulator.store();
        for id in ids {
            store.seed_graph(incident(id)).unwrap();
        }
    }
    settle(&tb).await;
    tb
}

/// Runs cycles until nothing is left to write; fails if that never happens.
async fn settle(tb: &Testbed) {
    let cycles = tb.quiesce(30).await.unwrap();
    assert!(
        cycles < 30,
        "no quiescence after 30 cycles: {:#?}",
        tb.consistency()
    );
}

fn twin(tb: &Testbed, id: &str) -> String {
    sentinel_id(&tb.info.tenant_id, id)
}

/// An analyst's PATCH in Defender, checked as the Graph handler checks it.
fn graph_edit(tb: &Testbed, id: &str, changes: Value) {
    let checked = check_patch(&changes).unwrap();
    tb.emulator
        .store()
        .graph_patch(id, checked, ANALYST)
        .unwrap();
}

/// An analyst's save in the Sentinel portal: every writable property as stored, with
/// `edit` applied, PUT with the current etag.
fn sentinel_edit(tb: &Testbed, name: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
    common::sentinel_edit(&tb.emulator, name, edit);
}

fn graph(tb: &Testbed, id: &str) -> Value {
    tb.emulator.store().graph[id].clone()
}

fn sentinel(tb: &Testbed, name: &str) -> Value {
    tb.emulator.store().sentinel[name]["properties"].clone()
}

fn label_names(props: &Value) -> Vec<String> {
    props["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["labelName"].as_str().map(str::to_string))
        .collect()
}

fn tags(incident: &Value) -> Vec<String> {
    incident["customTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

/// Successful write requests (PUT/PATCH/POST/DELETE, not tokens) so far, with bodies.
fn writes(tb: &Testbed) -> Vec<(String, String, Option<Value>)> {
    tb.emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("oauth2") && r.status < 300)
        .map(|r| (r.method.clone(), r.path.clone(), r.body.clone()))
        .collect()
}

fn audit(tb: &Testbed, id: &str) -> Vec<AuditRow> {
    tb.syncer.state().audit_for(id).unwrap()
}

/// Audit rows of `action` writing `field` (conflicts included) on `side`.
fn audited(rows: &[AuditRow], action: &str, side: &str, field: &str) -> usize {
    rows.iter()
        .filter(|r| r.action == action && r.side.name() == side)
        .filter(|r| {
            r.field
                .as_deref()
                .is_some_and(|f| f == field || f.starts_with(&format!("{field} (")))
        })
        .count()
}

fn assert_consistent(tb: &Testbed) {
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
}

// ------------------------------------------------------------------ a) closed incidents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_incident_still_receives_later_changes_from_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500101", "500102"]).await;
    let id = "500101";
    let name = twin(&tb, id);
    assert_eq!(sentinel(&tb, &name)["status"], "New");

    // Closed in Sentinel, with a classification, a reason and a closing note.
    sentinel_edit(&tb, &name, |p| {
        p.insert("status".into(), json!("Closed"));
        p.insert("classification".into(), json!("FalsePositive"));
        p.insert("classificationReason".into(), json!("InaccurateData"));
        p.insert(
            "classificationComment".into(),
            json!("Test account, not a threat."),
        );
    });
    settle(&tb).await;
    let d = graph(&tb, id);
    assert_eq!(d["status"], "resolved");
    assert_eq!(d["classification"], "falsePositive");
    assert_eq!(d["determination"], "notEnoughDataToValidate");
    assert_eq!(d["resolvingComment"], "Test account, not a threat.");
    assert_consistent(&tb);

    // Later, in the same cycle: reassigned in Defender, labelled in Sentinel.
    graph_edit(&tb, id, json!({ "assignedTo": "bob@contoso.com" }));
    sentinel_edit(&tb, &name, |p| add_label(p, "FollowUp"));
    settle(&tb).await;
    let s = sentinel(&tb, &name);
    let d = graph(&tb, id);
    assert_eq!(s["owner"]["userPrincipalName"], "bob@contoso.com", "{s:#}");
    assert!(tags(&d).contains(&"FollowUp".to_string()), "{d:#}");
    assert_eq!(d["assignedTo"], "bob@contoso.com");

    // And a tag added in Defender afterwards reaches Sentinel, keeping the label.
    graph_edit(
        &tb,
        id,
        json!({ "customTags": ["Demo", "FollowUp", "Tier2"] }),
    );
    settle(&tb).await;
    let s = sentinel(&tb, &name);
    let labels = label_names(&s);
    for want in ["Demo", "FollowUp", "Tier2"] {
        assert!(
            labels.iter().any(|l| l == want),
            "{want} missing: {labels:?}"
        );
    }

    // Closed on both sides throughout, classification untouched.
    let d = graph(&tb, id);
    assert_eq!(s["status"], "Closed");
    assert_eq!(s["classification"], "FalsePositive");
    assert_eq!(s["classificationReason"], "InaccurateData");
    assert_eq!(d["status"], "resolved");
    assert_eq!(d["classification"], "falsePositive");
    assert_consistent(&tb);

    let rows = audit(&tb, id);
    assert_eq!(
        audited(&rows, "update", "defender", "status"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "sentinel", "owner"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "defender", "labels"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "sentinel", "labels"),
        1,
        "{rows:#?}"
    );
    // The status was never written back to Sentinel (no reopen, no echo).
    assert_eq!(
        audited(&rows, "update", "sentinel", "status"),
        0,
        "{rows:#?}"
    );
}

// ------------------------------------------------------------------ b) no accidental reopen

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncing_never_reopens_a_closed_incident_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500201", "500202"]).await;
    let id = "500201";
    let name = twin(&tb, id);
    let twin_path = format!("/incidents/{name}");

    // Resolved in Defender: Sentinel closes.
    graph_edit(
        &tb,
        id,
        json!({ "status": "resolved", "classification": "truePositive", "determination": "malware" }),
    );
    settle(&tb).await;
    let s = sentinel(&tb, &name);
    assert_eq!(s["status"], "Closed");
    assert_eq!(s["classification"], "TruePositive");
    assert_eq!(s["classificationReason"], "SuspiciousActivity");
    let closed_at = writes(&tb).len();

    // An unrelated Defender edit: Sentinel's owner moves, its status stays Closed.
    graph_edit(&tb, id, json!({ "assignedTo": "carol@contoso.com" }));
    settle(&tb).await;
    let s = sentinel(&tb, &name);
    assert_eq!(s["status"], "Closed");
    assert_eq!(s["owner"]["userPrincipalName"], "carol@contoso.com");

    // A Sentinel label on the closed incident: Defender gets the tag, stays resolved.
    sentinel_edit(&tb, &name, |p| add_label(p, "Reviewed"));
    settle(&tb).await;
    let d = graph(&tb, id);
    assert_eq!(d["status"], "resolved");
    assert_eq!(d["classification"], "truePositive");
    assert_eq!(d["determination"], "malware");
    assert!(tags(&d).contains(&"Reviewed".to_string()), "{d:#}");
    assert_eq!(sentinel(&tb, &name)["status"], "Closed");
    assert_consistent(&tb);

    // Every write since the close: Sentinel PUTs of this twin say Closed, Defender
    // PATCHes of this incident carry only the tags.
    let since = &writes(&tb)[closed_at..];
    let puts: Vec<&Value> = since
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.ends_with(&twin_path))
        .filter_map(|(_, _, b)| b.as_ref())
        .collect();
    assert!(!puts.is_empty());
    for body in &puts {
        assert_eq!(body["properties"]["status"], "Closed", "{body:#}");
    }
    let patches: Vec<&Value> = since
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p.ends_with(&format!("/incidents/{id}")))
        .filter_map(|(_, _, b)| b.as_ref())
        .collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    let keys: Vec<&String> = patches[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["customTags"], "{:#}", patches[0]);

    let rows = audit(&tb, id);
    assert_eq!(
        audited(&rows, "update", "defender", "status"),
        0,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "sentinel", "status"),
        1,
        "{rows:#?}"
    );
}

// ------------------------------------------------------------------ c) same-second edits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_within_the_same_second_are_all_synced_and_overlap_rereads_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["500301", "500302", "500303"];
    let tb = synced_testbed(&dir, &ids).await;
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let c_twin = twin(&tb, c);

    // Back to back, between two polls: two incidents in Defender, one of them twice
    // (different fields), and one Sentinel incident twice.
    graph_edit(&tb, a, json!({ "assignedTo": "dave@contoso.com" }));
    graph_edit(&tb, b, json!({ "severity": "high" }));
    graph_edit(&tb, a, json!({ "customTags": ["Demo", "Escalated"] }));
    sentinel_edit(&tb, &c_twin, |p| add_label(p, "Tier2"));
    sentinel_edit(&tb, &c_twin, |p| {
        p.insert(
            "owner".into(),
            json!({ "email": "erin@contoso.com", "userPrincipalName": "erin@contoso.com",
                    "assignedTo": "Erin", "ownerType": "User",
                    "objectId": "6f1c0e1e-0000-4000-8000-000000000001" }),
        );
    });
    // (The emulator stamps them microseconds apart, in order, like the services do
    // within one second.)

    // One cycle is enough for all of them.
    let [d_pass, s_pass, _] = tb.syncer.cycle().await.unwrap();
    assert!(d_pass.interrupted.is_none() && s_pass.interrupted.is_none());
    let s_a = sentinel(&tb, &twin(&tb, a));
    assert_eq!(s_a["owner"]["userPrincipalName"], "dave@contoso.com");
    assert!(
        label_names(&s_a).contains(&"Escalated".to_string()),
        "{s_a:#}"
    );
    assert_eq!(sentinel(&tb, &twin(&tb, b))["severity"], "High");
    let d_c = graph(&tb, c);
    assert!(tags(&d_c).contains(&"Tier2".to_string()), "{d_c:#}");
    assert_eq!(d_c["assignedTo"], "erin@contoso.com");
    settle(&tb).await;
    assert_consistent(&tb);

    // Re-reads inside the overlap window (at least the newest change of each side is
    // listed again, since the cursor minus 5 s) cost no write at all.
    let before = writes(&tb).len();
    for _ in 0..3 {
        let [d_pass, s_pass, _] = tb.syncer.cycle().await.unwrap();
        assert!(
            d_pass.seen >= 1 && s_pass.seen >= 1,
            "{d_pass:?} {s_pass:?}"
        );
        assert_eq!(d_pass.written + s_pass.written, 0);
    }
    assert_eq!(writes(&tb).len(), before, "{:#?}", &writes(&tb)[before..]);

    let rows = audit(&tb, a);
    assert_eq!(
        audited(&rows, "update", "sentinel", "owner"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "sentinel", "labels"),
        1,
        "{rows:#?}"
    );
    let rows = audit(&tb, c);
    assert_eq!(
        audited(&rows, "update", "defender", "owner"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "defender", "labels"),
        1,
        "{rows:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_lands_while_a_poll_is_in_progress_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["500311", "500312", "500313"];
    let tb = synced_testbed(&dir, &ids).await;
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let c_twin = twin(&tb, c);

    // The Defender poll lists `a`; reading its twin then takes a while, and meanwhile
    // `b` changes in Defender and `c` in Sentinel.
    graph_edit(&tb, a, json!({ "severity": "low" }));
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Slow { delay_ms: 1500 },
        endpoint: Endpoint::SentinelGet,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    let mark = tb.emulator.store().requests.len();
    let syncer = tb.syncer.clone();
    let cycle = tokio::spawn(async move { syncer.cycle().await.unwrap() });
    // Wait for the Defender list to be answered, then edit during the slow read.
    let started = std::time::Instant::now();
    loop {
        let listed = tb.emulator.store().requests[mark..]
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/security/incidents"));
        if listed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no Defender poll"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let store = tb.emulator.store();
        let twin_reads = store.requests[mark..]
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path.contains("/Microsoft.SecurityInsights/incidents/")
            })
            .count();
        assert_eq!(
            twin_reads, 0,
            "the slow twin read should still be in flight"
        );
    }
    graph_edit(&tb, b, json!({ "assignedTo": "frank@contoso.com" }));
    sentinel_edit(&tb, &c_twin, |p| add_label(p, "Mid-poll"));
    let [d_pass, _, _] = cycle.await.unwrap();
    assert!(d_pass.interrupted.is_none(), "{d_pass:?}");
    assert_eq!(sentinel(&tb, &twin(&tb, a))["severity"], "Low");

    settle(&tb).await;
    assert_eq!(
        sentinel(&tb, &twin(&tb, b))["owner"]["userPrincipalName"],
        "frank@contoso.com"
    );
    assert!(tags(&graph(&tb, c)).contains(&"Mid-poll".to_string()));
    assert_consistent(&tb);
    let rows = audit(&tb, b);
    assert_eq!(
        audited(&rows, "update", "sentinel", "owner"),
        1,
        "{rows:#?}"
    );
}

// ------------------------------------------------------------------ d) comments

fn defender_comments(tb: &Testbed, id: &str) -> Vec<String> {
    graph(tb, id)["comments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["comment"].as_str().map(str::to_string))
        .collect()
}

fn sentinel_comments(tb: &Testbed, name: &str) -> Vec<String> {
    tb.emulator
        .store()
        .sentinel_comments
        .get(name)
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|c| c["properties"]["message"].as_str().map(str::to_string))
        .collect()
}

fn count_starting(texts: &[String], prefix: &str) -> usize {
    texts.iter().filter(|t| t.starts_with(prefix)).count()
}

fn graph_comment_posts(tb: &Testbed, id: &str) -> usize {
    tb.emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&format!("/incidents/{id}/comments")))
        .count()
}

/// Adds a Defender comment and a Sentinel comment to `id` and its twin.
fn comment_both_sides(tb: &Testbed, id: &str, d_text: &str, s_text: &str) {
    let name = twin(tb, id);
    let mut store = tb.emulator.store();
    store
        .graph_comment(id, &json!({ "comment": d_text }), ANALYST)
        .unwrap();
    let base_id = store.sentinel[&name]["id"]
        .as_str()
        .unwrap()
        .strip_suffix(&format!("/{name}"))
        .unwrap()
        .to_string();
    store
        .sentinel_comment(
            &base_id,
            &name,
            "7d1f0000-0000-4000-8000-00000000c001",
            &json!({ "properties": { "message": s_text } }),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_sync_both_ways_once_even_when_a_graph_post_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500401", "500402"]).await;
    let id = "500401";
    let name = twin(&tb, id);
    comment_both_sides(
        &tb,
        id,
        "Defender note: device isolated.",
        "Sentinel note: user called.",
    );
    // The connection drops after the headers of the first comment POST: the client
    // cannot know whether the comment was added.
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Drop,
        endpoint: Endpoint::GraphComment,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    settle(&tb).await;

    let d = defender_comments(&tb, id);
    let s = sentinel_comments(&tb, &name);
    assert_eq!(
        count_starting(&d, "Sentinel note: user called."),
        1,
        "{d:#?}"
    );
    assert_eq!(
        count_starting(&d, "Defender note: device isolated."),
        1,
        "{d:#?}"
    );
    assert_eq!(
        count_starting(&s, "Defender note: device isolated."),
        1,
        "{s:#?}"
    );
    assert_eq!(
        count_starting(&s, "Sentinel note: user called."),
        1,
        "{s:#?}"
    );
    assert_eq!(graph_comment_posts(&tb, id), 2, "one dropped, one retried");
    assert_consistent(&tb);

    // Calm afterwards: nothing copied again, in any direction.
    let before = writes(&tb).len();
    for _ in 0..3 {
        tb.syncer.cycle().await.unwrap();
    }
    assert_eq!(writes(&tb).len(), before, "{:#?}", &writes(&tb)[before..]);
    let rows = audit(&tb, id);
    assert_eq!(
        audited(&rows, "comment", "defender", "comments"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "comment", "sentinel", "comments"),
        1,
        "{rows:#?}"
    );
    assert_eq!(tb.syncer.state().counts().unwrap().dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_post_that_timed_out_but_landed_is_adopted_not_reposted() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed_with(&dir, &["500411"], pack(), |o| {
        o.retry.timeout = Duration::from_millis(400);
    })
    .await;
    let id = "500411";
    let name = twin(&tb, id);
    comment_both_sides(
        &tb,
        id,
        "Defender note: checked.",
        "Sentinel note: escalated.",
    );
    // The POST is processed only after the client gave up on it.
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Slow { delay_ms: 700 },
        endpoint: Endpoint::GraphComment,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    let [_, _, sweep] = tb.syncer.cycle().await.unwrap();
    assert!(
        sweep.interrupted.is_some(),
        "the POST should time out: {sweep:?}"
    );
    // The comment lands in Defender after the timeout…
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        count_starting(&defender_comments(&tb, id), "Sentinel note: escalated."),
        1
    );
    // …and the sync recognises it instead of posting it again.
    settle(&tb).await;
    let d = defender_comments(&tb, id);
    assert_eq!(count_starting(&d, "Sentinel note: escalated."), 1, "{d:#?}");
    assert_eq!(graph_comment_posts(&tb, id), 1);
    let s = sentinel_comments(&tb, &name);
    assert_eq!(count_starting(&s, "Defender note: checked."), 1, "{s:#?}");
    assert_consistent(&tb);
}

// ------------------------------------------------------------------ e) merged incidents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_incident_closes_its_twin_with_redirect_labels() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500501", "500502"]).await;
    let (merged, survivor) = ("500501", "500502");
    let name = twin(&tb, merged);
    // Defender merges 500501 into 500502 (the service does this itself, not through
    // the update API, which cannot set "redirected").
    {
        let mut changes = Map::new();
        changes.insert("status".into(), json!("redirected"));
        changes.insert("redirectIncidentId".into(), json!(survivor));
        tb.emulator
            .store()
            .graph_patch(merged, changes, "Microsoft 365 Defender")
            .unwrap();
        // Merged before it was ever synced: never mirrored at all.
        let mut never = incident("500503");
        never["status"] = json!("redirected");
        never["redirectIncidentId"] = json!(survivor);
        tb.emulator.store().seed_graph(never).unwrap();
    }
    let patches_before = writes(&tb).iter().filter(|(m, _, _)| m == "PATCH").count();
    settle(&tb).await;

    let s = sentinel(&tb, &name);
    assert_eq!(s["status"], "Closed", "{s:#}");
    assert_eq!(s["classification"], "Undetermined");
    let labels = label_names(&s);
    assert!(labels.contains(&"redirected".to_string()), "{labels:?}");
    assert!(
        labels.contains(&format!("redirected-to:{survivor}")),
        "{labels:?}"
    );
    assert!(
        labels.contains(&format!("defender-xdr:{merged}")),
        "{labels:?}"
    );
    assert!(
        s["description"]
            .as_str()
            .unwrap()
            .contains(&format!("Merged into Defender XDR incident {survivor}")),
        "{}",
        s["description"]
    );
    // The survivor's twin is untouched and still open; nothing was written to Defender.
    assert_eq!(sentinel(&tb, &twin(&tb, survivor))["status"], "New");
    let patches_after = writes(&tb).iter().filter(|(m, _, _)| m == "PATCH").count();
    assert_eq!(patches_after, patches_before);
    assert_eq!(graph(&tb, merged)["status"], "redirected");
    assert!(!tb
        .emulator
        .store()
        .sentinel
        .contains_key(&twin(&tb, "500503")));
    let report = tb.consistency();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.filtered, 1);

    let rows = audit(&tb, merged);
    assert_eq!(
        audited(&rows, "update", "sentinel", "status"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "sentinel", "labels"),
        1,
        "{rows:#?}"
    );
    let labels_row = rows
        .iter()
        .find(|r| r.action == "update" && r.field.as_deref() == Some("labels"))
        .unwrap();
    assert!(
        labels_row.new.to_string().contains("redirected-to:500502"),
        "{labels_row:#?}"
    );
    assert_eq!(labels_row.rule.as_deref(), Some("ownership"));
}

// ------------------------------------------------------------------ f) etag races

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_etag_races_converge_without_overwriting_an_analyst() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["500601", "500602", "500603", "500604"];
    let tb = synced_testbed(&dir, &ids).await;

    // Another writer bumps the etag before each of the next three PUTs.
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::EtagRace,
        endpoint: Endpoint::SentinelPut,
        rate: 0.0,
        count: Some(3),
        after: 0,
    });
    graph_edit(&tb, ids[0], json!({ "severity": "high" }));
    graph_edit(&tb, ids[1], json!({ "assignedTo": "gina@contoso.com" }));
    graph_edit(&tb, ids[2], json!({ "status": "inProgress" }));
    // In the same cycle, an analyst edits another field of one of them in Sentinel.
    sentinel_edit(&tb, &twin(&tb, ids[1]), |p| add_label(p, "Analyst-1"));
    settle(&tb).await;
    assert_consistent(&tb);
    assert!(
        tb.syncer.stats().etag_retries >= 3,
        "{:?}",
        tb.syncer.stats()
    );
    assert_eq!(sentinel(&tb, &twin(&tb, ids[0]))["severity"], "High");
    assert_eq!(sentinel(&tb, &twin(&tb, ids[2]))["status"], "Active");
    let s1 = sentinel(&tb, &twin(&tb, ids[1]));
    assert_eq!(s1["owner"]["userPrincipalName"], "gina@contoso.com");
    assert!(
        label_names(&s1).contains(&"Analyst-1".to_string()),
        "{s1:#}"
    );
    assert!(tags(&graph(&tb, ids[1])).contains(&"Analyst-1".to_string()));

    // A real race: the analyst saves between the sync's read and its PUT.
    let id = ids[3];
    let name = twin(&tb, id);
    let retries = tb.syncer.stats().etag_retries;
    graph_edit(&tb, id, json!({ "severity": "low" }));
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Slow { delay_ms: 800 },
        endpoint: Endpoint::SentinelPut,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    let mark = tb.emulator.store().requests.len();
    let syncer = tb.syncer.clone();
    let cycle = tokio::spawn(async move { syncer.cycle().await.unwrap() });
    let started = std::time::Instant::now();
    let twin_path = format!("/incidents/{name}");
    // The PUT follows the Defender listing by milliseconds (planned from the stored
    // copy, no read between) and is held 800 ms: the analyst saves inside that hold.
    loop {
        let listed = tb.emulator.store().requests[mark..]
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/security/incidents"));
        if listed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "Defender was never listed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sentinel_edit(&tb, &name, |p| add_label(p, "Analyst-2"));
    cycle.await.unwrap();
    settle(&tb).await;
    assert!(
        tb.syncer.stats().etag_retries > retries,
        "the PUT did not race"
    );
    let s = sentinel(&tb, &name);
    assert_eq!(s["severity"], "Low");
    assert!(
        label_names(&s).contains(&"Analyst-2".to_string()),
        "analyst label lost: {s:#}"
    );
    assert!(tags(&graph(&tb, id)).contains(&"Analyst-2".to_string()));
    assert_consistent(&tb);
    // Every PUT of the twin but its create carried an etag (never a blind overwrite).
    {
        let store = tb.emulator.store();
        let puts = store
            .requests
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with(&twin_path));
        for r in puts {
            let body = r.body.as_ref().unwrap();
            assert!(body["etag"].is_string() || r.status == 201, "{body:#}");
        }
    }
    let rows = audit(&tb, id);
    assert_eq!(
        audited(&rows, "update", "sentinel", "severity"),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        audited(&rows, "update", "defender", "labels"),
        1,
        "{rows:#?}"
    );
}

// ------------------------------------------------------------------ g) rule errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_error_dead_letters_only_its_incident() {
    let dir = tempfile::tempdir().unwrap();
    let pack_dir = dir.path().join("rules");
    common::copy_dir(Path::new("rules"), &pack_dir);
    let script = pack_dir.join("map/microsoft-standard.rhai");
    let text = std::fs::read_to_string(&script).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("fn to_sentinel(incident, ctx)"))
        .unwrap();
    lines.insert(
        at + 1,
        r#"    if incident.id == "500702" { throw "cannot map incident 500702"; }"#.into(),
    );
    std::fs::write(&script, lines.join("\n") + "\n").unwrap();
    let line = at + 2; // 1-based line of the throw
    let broken = pack_from(&pack_dir);

    let ids = ["500701", "500702", "500703", "500704"];
    let tb = synced_testbed_with(&dir, &ids, broken, |_| {}).await;

    let letters = tb.syncer.state().dead_letters().unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter.incident_id, "500702");
    assert_eq!(letter.side.name(), "defender");
    assert_eq!(letter.kind, "rule_error");
    assert_eq!(letter.rule.as_deref(), Some("microsoft-standard"));
    assert!(
        letter
            .reason
            .contains(&format!("microsoft-standard.rhai:{line}:")),
        "no file:line:col in {:?}",
        letter.reason
    );
    assert!(
        letter.reason.contains("microsoft-standard"),
        "{:?}",
        letter.reason
    );
    assert!(
        letter.reason.contains("cannot map incident 500702"),
        "{:?}",
        letter.reason
    );

    // The others, before and after it in the same poll, are mirrored.
    {
        let store = tb.emulator.store();
        for id in ["500701", "500703", "500704"] {
            assert!(
                store.sentinel.contains_key(&twin(&tb, id)),
                "{id} not synced"
            );
        }
        assert!(!store.sentinel.contains_key(&twin(&tb, "500702")));
    }
    for id in ["500701", "500703", "500704"] {
        let rows = audit(&tb, id);
        assert!(rows.iter().any(|r| r.action == "create"), "{id}: {rows:#?}");
    }
    assert!(audit(&tb, "500702").is_empty());
    let report = tb.consistency();
    assert_eq!(report.synced, 3, "{report:#?}");
    assert_eq!(report.disagreements.len(), 1, "{report:#?}");
    assert!(
        report.disagreements[0].starts_with("500702: rule error"),
        "{report:#?}"
    );

    // Later edits of the others still flow while the letter waits.
    graph_edit(&tb, "500703", json!({ "severity": "high" }));
    settle(&tb).await;
    assert_eq!(sentinel(&tb, &twin(&tb, "500703"))["severity"], "High");

    // A fixed pack retries the letter: the incident is mirrored and the letter resolved.
    tb.pack.swap(pack());
    let retry = tb.syncer.retry_dead_letters().await.unwrap();
    assert_eq!(retry.seen, 1);
    assert!(tb.syncer.state().dead_letters().unwrap().is_empty());
    settle(&tb).await;
    assert_consistent(&tb);
}

// ------------------------------------------------------------------ found bugs
//
// Each test below first failed on the sync and names what it guards.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclassifying_a_closed_incident_in_sentinel_leaves_both_sides_agreeing() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500801"]).await;
    let id = "500801";
    let name = twin(&tb, id);
    // Resolved in Defender without a resolving comment: Sentinel's closing comment is
    // the map's "Defender XDR: truePositive / malware".
    graph_edit(
        &tb,
        id,
        json!({ "status": "resolved", "classification": "truePositive", "determination": "malware" }),
    );
    settle(&tb).await;
    assert_consistent(&tb);
    assert_eq!(
        sentinel(&tb, &name)["classificationComment"],
        "Defender XDR: truePositive / malware"
    );
    // An analyst reclassifies in Sentinel and leaves the comment as it is.
    sentinel_edit(&tb, &name, |p| {
        p.insert("classification".into(), json!("FalsePositive"));
        p.insert("classificationReason".into(), json!("InaccurateData"));
    });
    settle(&tb).await;
    let d = graph(&tb, id);
    assert_eq!(d["classification"], "falsePositive");
    assert_eq!(d["determination"], "notEnoughDataToValidate");
    // Fails: Defender now renders "Defender XDR: falsePositive / notEnoughDataToValidate",
    // Sentinel keeps "Defender XDR: truePositive / malware", and no later cycle fixes it.
    assert_consistent(&tb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_added_on_both_sides_in_the_same_cycle_are_both_kept() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500811"]).await;
    let id = "500811";
    let name = twin(&tb, id);
    graph_edit(&tb, id, json!({ "customTags": ["Demo", "FromDefender"] }));
    sentinel_edit(&tb, &name, |p| add_label(p, "FromSentinel"));
    settle(&tb).await;
    assert_consistent(&tb);
    let d = tags(&graph(&tb, id));
    let s = label_names(&sentinel(&tb, &name));
    // Fails: the audit shows `labels (conflict)` written to Defender as
    // ["Demo", "FromSentinel"]; "FromDefender" is gone from both sides.
    for want in ["FromDefender", "FromSentinel"] {
        assert!(
            d.iter().any(|t| t == want),
            "{want} lost in Defender: {d:?}"
        );
        assert!(
            s.iter().any(|t| t == want),
            "{want} lost in Sentinel: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_post_still_in_flight_after_its_timeout_is_not_posted_again() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed_with(&dir, &["500821"], pack(), |o| {
        o.retry.timeout = Duration::from_millis(300);
    })
    .await;
    let id = "500821";
    let name = twin(&tb, id);
    comment_both_sides(&tb, id, "Defender note: x.", "Sentinel note: y.");
    // The service processes the POST 1.2 s after it arrived; the client gave up at 0.3 s.
    tb.emulator.add_fault(FaultRule {
        kind: FaultKind::Slow { delay_ms: 1200 },
        endpoint: Endpoint::GraphComment,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    // Cycles straight after the timeout, while the first POST is still in flight.
    settle(&tb).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    settle(&tb).await;
    let d = defender_comments(&tb, id);
    let s = sentinel_comments(&tb, &name);
    // Fails: 2 POSTs, the comment twice in Defender, and a third Sentinel comment
    // ("Sentinel note: y. — … in Microsoft Sentinel — … in Microsoft Defender XDR").
    assert_eq!(count_starting(&d, "Sentinel note: y."), 1, "{d:#?}");
    assert_eq!(count_starting(&s, "Sentinel note: y."), 1, "{s:#?}");
    assert_consistent(&tb);
}

/// Hints run beside the cycle. A cycle's copy listed before a hint synced the incident
/// predates the hint's writes: decided from as it is, the Defender copy without the
/// label the hint just wrote there would read as "Defender removed it" and take the
/// analyst's label off Sentinel again (and the twin's old copy, the tag off Defender).
/// Such copies are read again instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_listed_before_a_hinted_sync_does_not_undo_it() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500821"]).await;
    let id = "500821";
    let name = twin(&tb, id);
    // A cycle lists the incident on both sides as it is now...
    let listed = graph(&tb, id);
    let listed_twin = tb.emulator.store().sentinel[&name].clone();
    // ...an analyst labels the twin, and the hook's hint syncs it at once.
    sentinel_edit(&tb, &name, |p| add_label(p, "Hinted"));
    assert_eq!(tb.syncer.sync_hint(&name).await.unwrap(), "synced");
    assert!(tags(&graph(&tb, id)).contains(&"Hinted".to_string()));
    // Then the cycle reaches its older copies: of the twin (without the label, which
    // would read as "removed in Sentinel" and take the tag off Defender) and of Defender.
    tb.syncer.from_sentinel(listed_twin, false).await.unwrap();
    assert!(
        tags(&graph(&tb, id)).contains(&"Hinted".to_string()),
        "the twin's stale copy took the tag off Defender: {:?}",
        tags(&graph(&tb, id))
    );
    tb.syncer.from_defender(listed, false).await.unwrap();
    assert!(
        label_names(&sentinel(&tb, &name)).contains(&"Hinted".to_string()),
        "the stale copy took the analyst's label off: {}",
        sentinel(&tb, &name)
    );
    assert!(tags(&graph(&tb, id)).contains(&"Hinted".to_string()));
    settle(&tb).await;
    assert_consistent(&tb);
}

/// A close made in Sentinel reaches Defender, and Defender's rendering of it changes a
/// field nobody wrote (the classification note): that note reaches the twin in the
/// same sync, so the Defender poll that lists the PATCHed incident finds it in sync
/// and reads nothing of Sentinel for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_sentinel_settles_its_derived_note_in_the_same_sync() {
    let dir = tempfile::tempdir().unwrap();
    let tb = synced_testbed(&dir, &["500831"]).await;
    let id = "500831";
    let name = twin(&tb, id);
    sentinel_edit(&tb, &name, |p| {
        p.insert("status".into(), json!("Closed"));
        p.insert("classification".into(), json!("FalsePositive"));
        p.insert("classificationReason".into(), json!("InaccurateData"));
    });
    let listed = tb.emulator.store().sentinel[&name].clone();
    tb.syncer.from_sentinel(listed, false).await.unwrap();
    let d = graph(&tb, id);
    assert_eq!(
        (d["status"].as_str(), d["classification"].as_str()),
        (Some("resolved"), Some("falsePositive"))
    );
    assert_eq!(
        sentinel(&tb, &name)["classificationComment"],
        "Defender XDR: falsePositive / notEnoughDataToValidate"
    );
    let twin_reads = |tb: &Testbed| {
        tb.emulator
            .store()
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/incidents/{name}")))
            .count()
    };
    let (before, writes_before) = (twin_reads(&tb), writes(&tb).len());
    tb.syncer
        .poll(rulebridge::model::Side::Defender)
        .await
        .unwrap();
    assert_eq!(
        twin_reads(&tb),
        before,
        "the Defender poll re-read the twin"
    );
    // Reading nothing is not enough (the stored copy saves that read): the note was
    // already written, so the poll writes nothing.
    assert_eq!(writes(&tb)[writes_before..], [], "the Defender poll wrote");
    assert_consistent(&tb);
}

/// A Defender change to a linked incident is planned from the Sentinel copy its last
/// sync stored and PUT with that copy's etag: no Sentinel read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defender_change_is_put_with_the_stored_etag_without_reading_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    let id = "500841";
    let tb = synced_testbed(&dir, &[id]).await;
    let name = twin(&tb, id);
    let twin_path = format!("/incidents/{name}");
    let etag = tb.emulator.store().sentinel[&name]["etag"].clone();
    graph_edit(&tb, id, json!({ "status": "inProgress" }));
    let mark = tb.emulator.store().requests.len();
    tb.syncer
        .poll(rulebridge::model::Side::Defender)
        .await
        .unwrap();
    assert_eq!(sentinel(&tb, &name)["status"], "Active");
    let store = tb.emulator.store();
    let since = &store.requests[mark..];
    assert!(
        !since
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with(&twin_path)),
        "the twin was read: {:?}",
        since
            .iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
    let puts: Vec<_> = since
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(&twin_path))
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].status, 200);
    assert_eq!(puts[0].body.as_ref().unwrap()["etag"], etag);
    drop(store);
    assert_eq!(tb.syncer.stats().sentinel_reads_saved, 1);
    assert_consistent(&tb);
}

/// An analyst's Sentinel save that no poll has seen yet makes the stored copy stale:
/// its etag is refused, the twin is read and the change planned again, and both the
/// analyst's label and the Defender change stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_save_the_stored_copy_does_not_know_refuses_its_etag_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let id = "500842";
    let tb = synced_testbed(&dir, &[id]).await;
    let name = twin(&tb, id);
    graph_edit(&tb, id, json!({ "severity": "high" }));
    sentinel_edit(&tb, &name, |p| add_label(p, "Unpolled"));
    let retries = tb.syncer.stats().etag_retries;
    let mark = tb.emulator.store().requests.len();
    tb.syncer
        .poll(rulebridge::model::Side::Defender)
        .await
        .unwrap();
    assert_eq!(tb.syncer.stats().etag_retries, retries + 1);
    let refused = tb.emulator.store().requests[mark..]
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 409)
        .count();
    assert_eq!(refused, 1);
    let s = sentinel(&tb, &name);
    assert_eq!(s["severity"], "High");
    assert!(label_names(&s).contains(&"Unpolled".to_string()), "{s:#}");
    settle(&tb).await;
    assert!(tags(&graph(&tb, id)).contains(&"Unpolled".to_string()));
    assert_consistent(&tb);
}
