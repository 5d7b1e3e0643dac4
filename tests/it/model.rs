//! Model-based test of the whole sync: random analyst edits on both sides interleaved
//! with sync cycles, through the emulator with injected faults (429, 5xx, dropped
//! connections, etag races). After the edits stop and the faults clear, the sync must
//! quiesce, and then: both sides agree field by field, no incident exists twice, further
//! cycles write nothing (no echoes), and every analyst change left an audit row.
//!
//! The model is the emulator's own store (the services' truth); the random schedule is
//! a seeded SplitMix64, so a failing seed replays exactly.

use rulebridge::emulator::analysts::{AnalystEdit, Analysts, EditKind};
use rulebridge::emulator::faults::parse_spec;
use rulebridge::emulator::rng::SplitMix64;
use rulebridge::model::Side;
use rulebridge::testbed::{Testbed, TestbedOptions};

use crate::common::pack;

const FAULTS: &str = "429:0@any=0.04,503@any=0.04,500@graph-patch=0.05,drop@any=0.03,drop@graph-comment=0.1,etag-race@sentinel-put=0.1";

fn write_requests(tb: &Testbed) -> usize {
    tb.emulator
        .store()
        .requests
        .iter()
        .filter(|r| {
            r.method != "GET" && !r.path.contains("oauth2") && !r.path.starts_with("/_emulator")
        })
        .count()
}

/// One random schedule: returns the analyst edits made (with the time they were made).
async fn run_model(seed: u64, faults: bool) -> Injected {
    let dir = tempfile::tempdir().unwrap();
    let mut options = TestbedOptions::new(25, dir.path().join("state.db"));
    options.seed = seed;
    if faults {
        options.faults = parse_spec(FAULTS).unwrap();
    }
    let tb = Testbed::start(pack(), options).await.unwrap();
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    let mut analysts = Analysts::new(seed ^ 0xA11A);
    let mut edits: Vec<(String, AnalystEdit)> = Vec::new();
    for _step in 0..40 {
        match rng.below(3) {
            0 => {
                let n = 1 + rng.below(6);
                let mut store = tb.emulator.store();
                for _ in 0..n {
                    let at =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    if let Some(edit) = analysts.edit_once(&mut store) {
                        edits.push((at, edit));
                    }
                }
            }
            1 => {
                tb.syncer.cycle().await.unwrap();
            }
            _ => {
                // A lone poll of one side: the other side's changes wait a while, so
                // both sides change the same incidents between syncs (conflicts).
                let side = if rng.below(2) == 0 {
                    Side::Defender
                } else {
                    Side::Sentinel
                };
                tb.syncer.poll(side).await.unwrap();
            }
        }
    }
    let injected = {
        let store = tb.emulator.store();
        let count = |f: &dyn Fn(u16) -> bool| store.requests.iter().filter(|r| f(r.status)).count();
        Injected {
            throttled: count(&|s| s == 429),
            server_errors: count(&|s| s >= 500),
            etag_replans: tb.syncer.stats().etag_retries,
        }
    };
    tb.emulator.clear_faults();
    let cycles = tb.quiesce(200).await.unwrap();
    assert!(cycles < 200, "seed {seed}: the sync did not quiesce");

    let report = tb.consistency();
    assert!(report.ok(), "seed {seed} (faults {faults}): {report:#?}");
    assert_eq!(
        report.strays, 0,
        "seed {seed}: a Sentinel incident is not a twin (duplicate?)"
    );
    assert_eq!(
        report.sentinel_incidents, report.synced,
        "seed {seed}: duplicates"
    );

    // No echo: once calm, more cycles read but never write.
    let before = write_requests(&tb);
    for _ in 0..3 {
        tb.syncer.cycle().await.unwrap();
    }
    assert_eq!(
        write_requests(&tb),
        before,
        "seed {seed}: writes after quiescence (echo)"
    );

    // Every analyst change on a synced incident is in the audit trail: written to the
    // other side, or recorded as deliberately not synced, after it was made.
    let state = tb.syncer.state();
    for (at, edit) in &edits {
        let Some(link) = state
            .link(&edit.incident)
            .unwrap()
            .or_else(|| state.link_by_sentinel(&edit.incident).unwrap())
        else {
            continue; // an incident the rules filter out is not synced
        };
        let rows = state.audit_for(&link.defender_id).unwrap();
        // A comment is copied to the other side. A field change is written there, or
        // recorded as not synced, or settled as a conflict (a row for the field that
        // names both values, whichever side the direction rule chose).
        let is_comment = edit.kind == EditKind::Comment;
        let audited = rows.iter().any(|r| {
            r.at.as_str() >= at.as_str()
                && if is_comment {
                    r.action == "comment" && r.side == edit.side.other()
                } else {
                    r.action == "update" || r.action == "skip"
                }
        });
        assert!(
            audited,
            "seed {seed}: edit {edit:?} at {at} left no audit row: {rows:#?}"
        );
    }
    injected
}

/// Faults the emulator answered with (a dropped connection is logged as processed).
#[derive(Debug, Default)]
struct Injected {
    throttled: usize,
    server_errors: usize,
    etag_replans: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_edits_converge_without_faults() {
    for seed in 1..=6 {
        run_model(seed, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_edits_converge_through_429s_5xx_drops_and_etag_races() {
    let mut total = Injected::default();
    for seed in 100..=105 {
        let injected = run_model(seed, true).await;
        total.throttled += injected.throttled;
        total.server_errors += injected.server_errors;
        total.etag_replans += injected.etag_replans;
    }
    // The schedule really went through faults of every kind.
    assert!(
        total.throttled > 0 && total.server_errors > 0 && total.etag_replans > 0,
        "{total:?}"
    );
}
