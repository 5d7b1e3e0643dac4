//! Change stamps in the real per-incident step (`sync::step`) with the default pack:
//! conflicts between stamps of different precisions and offsets (seven fractional
//! digits as Sentinel sends, fewer as Graph does, `+00:00` against `Z`) are decided by
//! time, even by a rule that compares the `changed_at` strings; a stamp that is not an
//! RFC 3339 time fails its incident with its own reason; lags are measured between
//! instants.

use rulebridge::model::{Flow, Side};
use rulebridge::rules::{CompiledPack, RunOptions, Twin};
use rulebridge::state::Link;
use rulebridge::sync::step::{
    self, settle, Answers, CreateDecision, Decision, DefenderAnswer, Input, Planned,
};
use serde_json::{json, Value};
use std::path::Path;

use crate::common::{copy_dir, pack, pack_at};

const NOW: &str = "2026-03-01T10:00:30.000000Z";

fn options() -> RunOptions {
    RunOptions {
        sync_time: NOW.into(),
        linked: true,
        twin: Twin::Rulebridge,
        explain: false,
    }
}

/// A Defender incident and its twin, linked as a create leaves them; then Defender
/// assigns it to ana and Sentinel to bob, with the given stamps: a conflict on `owner`.
fn owner_conflict(pack: &CompiledPack, defender_at: &str, sentinel_at: &str) -> World {
    let list: Value = serde_json::from_str(include_str!(
        "../../rules/samples/graph-list-expand-alerts.json"
    ))
    .unwrap();
    let mut d = list["value"][0].clone();
    d["comments"] = json!([]);
    d["lastUpdateDateTime"] = json!("2026-03-01T09:00:00Z");
    let CreateDecision::Create(view) = step::decide_create(pack, &d, &options()) else {
        panic!("the sample incident is not created");
    };
    let sid = "7f3c1c9e-0000-5000-8000-000000000001";
    let mut properties = view.clone();
    properties.insert("lastModifiedTimeUtc".into(), json!("2026-03-01T09:00:00Z"));
    let created = json!({"name": sid, "etag": "\"1\"", "properties": properties});
    let (link, _) = step::settle_create(pack, &d, sid, &view, &created, NOW);
    let mut s = created;
    d["assignedTo"] = json!("ana@contoso.com");
    d["lastUpdateDateTime"] = json!(defender_at);
    s["properties"]["owner"] = json!({"userPrincipalName": "bob@contoso.com",
        "email": "bob@contoso.com", "objectId": "oid-bob", "assignedTo": "bob", "ownerType": "User"});
    s["properties"]["lastModifiedTimeUtc"] = json!(sentinel_at);
    s["etag"] = json!("\"2\"");
    World { link, d, s }
}

struct World {
    link: Link,
    d: Value,
    s: Value,
}

impl World {
    fn decide(&self, pack: &CompiledPack) -> Decision {
        step::decide(&Input {
            pack,
            link: &self.link,
            defender: &self.d,
            sentinel: &self.s,
            options: &options(),
        })
    }

    fn planned(&self, pack: &CompiledPack) -> Planned {
        match self.decide(pack) {
            Decision::Write(p) => *p,
            other => panic!("not a write: {other:?}"),
        }
    }
}

/// Who won the owner conflict.
fn owner_flow(p: &Planned) -> Flow {
    let (change, decided) = p
        .changes
        .iter()
        .zip(&p.decisions)
        .find(|(c, _)| c.field == "owner")
        .expect("owner changed");
    assert!(change.is_conflict(), "{change:?}");
    decided.flow
}

/// Earlier first; each pair sorts the other way as strings.
const NEWER_SENTINEL: [(&str, &str); 3] = [
    // 100 ns apart: `Z` sorts after `.`.
    ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00.0000001+00:00"),
    // Graph's three digits against Sentinel's seven.
    ("2026-03-01T10:00:00.5Z", "2026-03-01T10:00:00.5000001Z"),
    // The same wall-clock digits an hour apart: the offset decides.
    (
        "2026-03-01T10:00:00.9+01:00",
        "2026-03-01T09:30:00.1234567Z",
    ),
];

#[test]
fn conflicts_between_stamps_of_mixed_precision_and_offset_go_to_the_newer_change() {
    let pack = pack();
    for (earlier, later) in NEWER_SENTINEL {
        let p = owner_conflict(&pack, earlier, later).planned(&pack);
        assert_eq!(owner_flow(&p), Flow::ToDefender, "{earlier} < {later}");
        let p = owner_conflict(&pack, later, earlier).planned(&pack);
        assert_eq!(owner_flow(&p), Flow::ToSentinel, "{later} > {earlier}");
    }
    // The rules are shown both stamps in one form: UTC, seven digits.
    let p = owner_conflict(&pack, NEWER_SENTINEL[0].0, NEWER_SENTINEL[0].1).planned(&pack);
    let change = p.changes.iter().find(|c| c.field == "owner").unwrap();
    assert_eq!(
        change.defender.changed_at.as_deref(),
        Some("2026-03-01T10:00:00.0000000Z")
    );
    assert_eq!(
        change.sentinel.changed_at.as_deref(),
        Some("2026-03-01T10:00:00.0000001Z")
    );
}

#[test]
fn a_rule_comparing_the_stamp_strings_still_orders_them_by_time() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new("rules"), dir.path());
    let script = dir.path().join("direction/ownership.rhai");
    let text = std::fs::read_to_string(&script).unwrap();
    let lexical = text.replace(
        "let order = time_cmp(change.defender.changed_at, change.sentinel.changed_at);",
        "let order = if change.defender.changed_at > change.sentinel.changed_at { 1 } \
         else if change.defender.changed_at < change.sentinel.changed_at { -1 } else { 0 };",
    );
    assert_ne!(
        lexical, text,
        "ownership.rhai no longer calls time_cmp like this"
    );
    std::fs::write(&script, lexical).unwrap();
    let pack = pack_at(dir.path());
    for (earlier, later) in NEWER_SENTINEL {
        let p = owner_conflict(&pack, earlier, later).planned(&pack);
        assert_eq!(owner_flow(&p), Flow::ToDefender, "{earlier} < {later}");
        let p = owner_conflict(&pack, later, earlier).planned(&pack);
        assert_eq!(owner_flow(&p), Flow::ToSentinel, "{later} > {earlier}");
    }
}

#[test]
fn a_stamp_that_is_not_a_time_fails_its_incident_instead_of_losing_the_conflict() {
    let pack = pack();
    for (defender_at, sentinel_at, side, shown) in [
        (
            "2026-03-01T10:00:00Z",
            "2026-03-01 10:00",
            Side::Sentinel,
            "properties.lastModifiedTimeUtc '2026-03-01 10:00' is not an RFC 3339 time",
        ),
        (
            "2026-03-01T10:00:00",
            "2026-03-01T10:00:00Z",
            Side::Defender,
            "lastUpdateDateTime '2026-03-01T10:00:00' is not an RFC 3339 time",
        ),
    ] {
        let Decision::Failed(failure) =
            owner_conflict(&pack, defender_at, sentinel_at).decide(&pack)
        else {
            panic!("{defender_at} / {sentinel_at}: decided");
        };
        assert_eq!(failure.kind, "unreadable_stamp");
        assert_eq!(failure.side, side);
        assert!(failure.reason.starts_with(shown), "{}", failure.reason);
        assert_eq!(failure.rule, None);
    }
    // A stamp as a number is no time either.
    let mut w = owner_conflict(&pack, "2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z");
    w.s["properties"]["lastModifiedTimeUtc"] = json!(1_772_359_200);
    let Decision::Failed(failure) = w.decide(&pack) else {
        panic!("a numeric stamp decided");
    };
    assert!(
        failure
            .reason
            .starts_with("properties.lastModifiedTimeUtc '1772359200' is not an RFC 3339 time"),
        "{}",
        failure.reason
    );
}

#[test]
fn a_missing_stamp_is_shown_to_the_rules_as_none_and_loses_a_conflict_as_documented() {
    let pack = pack();
    let mut w = owner_conflict(&pack, "2026-03-01T10:00:00Z", "2026-03-01T10:00:01Z");
    w.s["properties"]
        .as_object_mut()
        .unwrap()
        .remove("lastModifiedTimeUtc");
    let p = w.planned(&pack);
    let change = p.changes.iter().find(|c| c.field == "owner").unwrap();
    assert_eq!(change.sentinel.changed_at, None);
    assert_eq!(owner_flow(&p), Flow::ToSentinel);
}

#[test]
fn a_writes_lag_is_measured_between_instants() {
    let pack = pack();
    // Defender's change at 10:00:00Z written as 11:00:00+01:00; now is 10:00:30Z.
    let w = owner_conflict(&pack, "2026-03-01T11:00:00+01:00", "2026-03-01T09:59:00Z");
    let p = w.planned(&pack);
    assert_eq!(owner_flow(&p), Flow::ToSentinel);
    let after = json!({"name": w.s["name"], "etag": "\"3\"", "properties": w.s["properties"]});
    let settled = settle(
        &Input {
            pack: &pack,
            link: &w.link,
            defender: &w.d,
            sentinel: &w.s,
            options: &options(),
        },
        &p,
        Answers {
            sentinel: Some(&after),
            defender: DefenderAnswer::NotSent,
        },
        NOW,
    );
    assert!(!settled.tally.lags.is_empty());
    assert!(
        settled.tally.lags.iter().all(|&lag| lag == 30.0),
        "{:?}",
        settled.tally.lags
    );
}
