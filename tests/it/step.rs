//! The engine's own per-incident step (`sync::step`), driven as the engine drives it,
//! with the default rule pack, against two in-memory services that apply writes as
//! Graph and Sentinel do, while generated analysts edit both sides (proptest, so a
//! failure shrinks to the shortest sequence of edits that shows it).
//!
//! The properties, after every sync whose writes were acknowledged:
//! - settled: within two follow-up syncs, deciding again plans nothing, and follow-ups
//!   never write Defender (no echo);
//! - a stored version is safe to skip: when the link's version equals what the service
//!   says now, deciding plans nothing (so the poll that skips it hides no change);
//! - a write that was not acknowledged is planned again, to the same side.
//!
//! And over all cases: the direction rules chose every flow, merges included.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use rulebridge::model::{Flow, Side};
use rulebridge::rules::{CompiledPack, RunOptions, Twin};
use rulebridge::state::Link;
use rulebridge::sync::step::{
    self, settle, Answers, CreateDecision, Decision, DefenderAnswer, Input, Planned,
};
use serde_json::{json, Map, Value};
use std::cell::RefCell;

use crate::common::pack;

/// A fake clock shared by both services and the sync: every event gets a later time,
/// so "the newer change wins" is decided by the order of events.
struct Clock(u64);

impl Clock {
    fn tick(&mut self) -> String {
        self.0 += 1;
        let secs = self.0;
        format!(
            "2026-03-01T{:02}:{:02}:{:02}.000000Z",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )
    }
}

/// Graph's incident, from the real sample payload.
fn defender_incident() -> Value {
    let list: Value = serde_json::from_str(include_str!(
        "../../rules/samples/graph-list-expand-alerts.json"
    ))
    .unwrap();
    let mut d = list["value"][0].clone();
    let tags = d
        .as_object_mut()
        .unwrap()
        .remove("tags")
        .unwrap_or(json!([]));
    d["customTags"] = tags;
    d["comments"] = json!([]);
    d
}

#[derive(Debug, Clone)]
enum DefenderEdit {
    Status(&'static str),
    Severity(&'static str),
    Assign(Option<&'static str>),
    Classify(&'static str, &'static str),
    ToggleTag(&'static str),
    Note(u8),
}

#[derive(Debug, Clone)]
enum SentinelEdit {
    Status(&'static str),
    Close(&'static str, &'static str),
    Owner(Option<&'static str>),
    ToggleLabel(&'static str),
    ClosingNote(u8),
    /// A Defender-owned field edited in Sentinel (the sync puts it back).
    Retitle,
}

const PEOPLE: [&str; 3] = ["ana@contoso.com", "bob@contoso.com", "eve@contoso.com"];
const TAGS: [&str; 4] = ["VIP", "Tier2", "PCI", "Phishing"];

fn defender_edit() -> impl Strategy<Value = DefenderEdit> {
    prop_oneof![
        prop::sample::select(vec!["active", "inProgress", "resolved"])
            .prop_map(DefenderEdit::Status),
        prop::sample::select(vec!["low", "medium", "high"]).prop_map(DefenderEdit::Severity),
        prop::option::of(prop::sample::select(PEOPLE.to_vec())).prop_map(DefenderEdit::Assign),
        prop::sample::select(vec![
            ("truePositive", "malware"),
            ("falsePositive", "notMalicious"),
            ("falsePositive", "notEnoughDataToValidate"),
            ("informationalExpectedActivity", "securityTesting"),
        ])
        .prop_map(|(c, d)| DefenderEdit::Classify(c, d)),
        prop::sample::select(TAGS.to_vec()).prop_map(DefenderEdit::ToggleTag),
        (0u8..3).prop_map(DefenderEdit::Note),
    ]
}

fn sentinel_edit() -> impl Strategy<Value = SentinelEdit> {
    prop_oneof![
        prop::sample::select(vec!["New", "Active"]).prop_map(SentinelEdit::Status),
        prop::sample::select(vec![
            ("TruePositive", "SuspiciousActivity"),
            ("BenignPositive", "SuspiciousButExpected"),
            ("FalsePositive", "IncorrectAlertLogic"),
            ("FalsePositive", "InaccurateData"),
        ])
        .prop_map(|(c, r)| SentinelEdit::Close(c, r)),
        prop::option::of(prop::sample::select(PEOPLE.to_vec())).prop_map(SentinelEdit::Owner),
        prop::sample::select(TAGS.to_vec()).prop_map(SentinelEdit::ToggleLabel),
        (0u8..3).prop_map(SentinelEdit::ClosingNote),
        Just(SentinelEdit::Retitle),
    ]
}

#[derive(Debug, Clone)]
struct Round {
    defender: Vec<DefenderEdit>,
    sentinel: Vec<SentinelEdit>,
    /// Which writes of this round's first sync the services refuse.
    fail_sentinel: bool,
    fail_defender: bool,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec(defender_edit(), 0..3),
        prop::collection::vec(sentinel_edit(), 0..3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(defender, sentinel, fail_sentinel, fail_defender)| Round {
            defender,
            sentinel,
            fail_sentinel,
            fail_defender,
        })
}

/// Both services and the link between them, as the state file would hold it.
struct World {
    clock: Clock,
    /// Who made the Sentinel incident: rulebridge, or Microsoft's connector (adopted).
    twin: Twin,
    d: Value,
    s: Value,
    link: Link,
    etag: u64,
}

impl World {
    fn edit_defender(&mut self, edit: &DefenderEdit) {
        let d = &mut self.d;
        match edit {
            DefenderEdit::Status(v) => d["status"] = json!(v),
            DefenderEdit::Severity(v) => d["severity"] = json!(v),
            DefenderEdit::Assign(v) => d["assignedTo"] = json!(v),
            DefenderEdit::Classify(c, det) => {
                d["classification"] = json!(c);
                d["determination"] = json!(det);
            }
            DefenderEdit::ToggleTag(tag) => {
                let tags = d["customTags"].as_array_mut().unwrap();
                match tags.iter().position(|t| t == tag) {
                    Some(i) => {
                        tags.remove(i);
                    }
                    None => tags.push(json!(tag)),
                }
            }
            DefenderEdit::Note(n) => d["resolvingComment"] = json!(format!("note {n}")),
        }
        self.d["lastUpdateDateTime"] = json!(self.clock.tick());
    }

    fn edit_sentinel(&mut self, edit: &SentinelEdit) {
        let p = &mut self.s["properties"];
        match edit {
            SentinelEdit::Status(v) => p["status"] = json!(v),
            SentinelEdit::Close(class, reason) => {
                p["status"] = json!("Closed");
                p["classification"] = json!(class);
                p["classificationReason"] = json!(reason);
            }
            SentinelEdit::Owner(None) => p["owner"] = json!({}),
            SentinelEdit::Owner(Some(upn)) => {
                // Sentinel knows an object id and a display name Defender never sees.
                p["owner"] = json!({"userPrincipalName": upn, "email": upn,
                    "objectId": format!("oid-{upn}"), "assignedTo": upn.split('@').next(),
                    "ownerType": "User"});
            }
            SentinelEdit::ToggleLabel(tag) => {
                if p["labels"].is_null() {
                    p["labels"] = json!([]);
                }
                let labels = p["labels"].as_array_mut().unwrap();
                match labels.iter().position(|l| l["labelName"] == *tag) {
                    Some(i) => {
                        labels.remove(i);
                    }
                    None => labels.push(json!({"labelName": tag, "labelType": "User"})),
                }
            }
            SentinelEdit::ClosingNote(n) => {
                p["classificationComment"] = json!(format!("closing note {n}"))
            }
            SentinelEdit::Retitle => p["title"] = json!("retitled in Sentinel"),
        }
        self.touch_sentinel();
    }

    fn touch_sentinel(&mut self) {
        self.etag += 1;
        self.s["etag"] = json!(format!("\"{}\"", self.etag));
        self.s["properties"]["lastModifiedTimeUtc"] = json!(self.clock.tick());
    }

    /// A PUT: the writable properties replaced by the body, the service's own kept. A
    /// classification and reason Sentinel does not accept together is refused (400), as
    /// the service and the emulator refuse it (the portal's pairs).
    fn put_sentinel(&mut self, body: &Value) -> Option<Value> {
        let class = body["classification"].as_str();
        let reason = body["classificationReason"].as_str();
        let valid = match (class, reason) {
            (Some("BenignPositive"), None) => false,
            (Some(class), Some(reason)) => matches!(
                (class, reason),
                ("TruePositive", "SuspiciousActivity")
                    | ("BenignPositive", "SuspiciousButExpected")
                    | ("FalsePositive", "IncorrectAlertLogic" | "InaccurateData")
            ),
            _ => true,
        };
        if !valid {
            return None;
        }
        let props = self.s["properties"].as_object_mut().unwrap();
        props.retain(|k, _| !rulebridge::sync::fields::SENTINEL_WRITABLE.contains(&k.as_str()));
        for (k, v) in body.as_object().unwrap() {
            props.insert(k.clone(), v.clone());
        }
        self.touch_sentinel();
        Some(self.s.clone())
    }

    /// A PATCH: the listed properties replaced; Graph answers with the incident (no alerts).
    fn patch_defender(&mut self, body: &Map<String, Value>) -> Value {
        for (k, v) in body {
            self.d[k.as_str()] = v.clone();
        }
        self.d["lastUpdateDateTime"] = json!(self.clock.tick());
        self.d["lastModifiedBy"] = json!("API-App:rulebridge");
        let mut response = self.d.clone();
        response.as_object_mut().unwrap().remove("alerts");
        response
    }
}

fn options(link: Option<&Link>, twin: Twin, now: &str) -> RunOptions {
    RunOptions {
        sync_time: now.to_string(),
        linked: link.is_some(),
        twin,
        explain: false,
    }
}

/// What the generated runs exercised, over all cases.
#[derive(Default, Debug)]
struct Seen {
    flows: [usize; 4],
    writes: [usize; 2],
    retried: usize,
}

fn flow_index(flow: Flow) -> usize {
    match flow {
        Flow::ToSentinel => 0,
        Flow::ToDefender => 1,
        Flow::Skip => 2,
        Flow::Merge => 3,
    }
}

fn planned(pack: &CompiledPack, w: &World, now: &str) -> Result<Planned, TestCaseError> {
    let opts = options(Some(&w.link), w.twin, now);
    let input = Input {
        pack,
        link: &w.link,
        defender: &w.d,
        sentinel: &w.s,
        options: &opts,
    };
    match step::decide(&input) {
        Decision::Write(p) => Ok(*p),
        other => Err(TestCaseError::fail(format!("not a write: {other:?}"))),
    }
}

/// One sync as `reconcile` does it: decide, send the writes (each refused when told),
/// settle the answers, store the link. Returns the plan.
fn sync_once(
    pack: &CompiledPack,
    w: &mut World,
    fail_sentinel: bool,
    fail_defender: bool,
) -> Result<Planned, TestCaseError> {
    let now = w.clock.tick();
    let p = planned(pack, w, &now)?;
    let (before_d, before_s, link) = (w.d.clone(), w.s.clone(), w.link.clone());
    let s_after = match p.sentinel_body() {
        Some(body) if !fail_sentinel => w.put_sentinel(&body),
        _ => None,
    };
    let d_response = match p.defender_body() {
        Some(body) if !fail_defender => Some(w.patch_defender(body)),
        _ => None,
    };
    let answers = Answers {
        sentinel: s_after.as_ref(),
        defender: match (&d_response, p.defender_body()) {
            (Some(r), _) => DefenderAnswer::Patched(r),
            (None, Some(_)) => DefenderAnswer::Failed,
            (None, None) => DefenderAnswer::NotSent,
        },
    };
    let opts = options(Some(&link), w.twin, &now);
    let input = Input {
        pack,
        link: &link,
        defender: &before_d,
        sentinel: &before_s,
        options: &opts,
    };
    let settled = settle(&input, &p, answers, &now);
    w.link = settled.link;
    skipping_is_safe(pack, w)?;
    Ok(p)
}

/// The versions a link stores are the polls' licence to skip an incident: when both
/// match what the services say now, nothing may be pending. Checked after every settle.
fn skipping_is_safe(pack: &CompiledPack, w: &World) -> Result<(), TestCaseError> {
    let d_skipped = w.link.defender_version.as_deref() == w.d["lastUpdateDateTime"].as_str();
    let s_skipped = w.link.sentinel_version.as_deref() == w.s["etag"].as_str();
    // Pending work needs one side whose listing is not skipped: a change on one side
    // is listed by that side's poll only.
    if d_skipped && s_skipped {
        let now = w.clock.0.to_string();
        let p = planned(pack, w, &now)?;
        prop_assert!(
            p.plan.is_empty(),
            "both polls would skip the incident, which hides {:#?}",
            p.plan
        );
    }
    Ok(())
}

/// The sample incident and the twin rulebridge created for it (or Microsoft's connector
/// made, then adopted), linked.
fn new_world(pack: &CompiledPack, connector: bool) -> Result<World, TestCaseError> {
    let mut clock = Clock(0);
    let mut d = defender_incident();
    d["lastUpdateDateTime"] = json!(clock.tick());
    let now = clock.tick();
    let opts = options(None, Twin::Rulebridge, &now);
    let CreateDecision::Create(view) = step::decide_create(pack, &d, &opts) else {
        return Err(TestCaseError::fail("the sample incident is not created"));
    };
    let sid = "7f3c1c9e-0000-5000-8000-000000000001";
    let mut w = World {
        clock,
        twin: if connector {
            Twin::Connector
        } else {
            Twin::Rulebridge
        },
        d: d.clone(),
        s: json!({"name": sid, "etag": "\"0\"", "properties": {}}),
        link: Link {
            defender_id: String::new(),
            sentinel_id: String::new(),
            created: false,
            defender_version: None,
            sentinel_version: None,
            base_defender: Default::default(),
            base_sentinel: Default::default(),
            synced_at: None,
            swept_at: None,
        },
        etag: 0,
    };
    let created = w
        .put_sentinel(&Value::Object(view.clone()))
        .ok_or_else(|| TestCaseError::fail("Sentinel refused the twin"))?;
    let (link, _audit) = step::settle_create(pack, &d, sid, &view, &created, &now);
    w.link = if connector {
        // Adopted from Microsoft's connector: linked with no bases, so the first sync
        // sees every field as a conflict the rules settle.
        Link {
            base_defender: Default::default(),
            base_sentinel: Default::default(),
            defender_version: None,
            sentinel_version: None,
            ..link
        }
    } else {
        link
    };
    skipping_is_safe(pack, &w)?;
    Ok(w)
}

fn run_case(
    pack: &CompiledPack,
    connector: bool,
    rounds: &[Round],
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let mut w = new_world(pack, connector)?;
    for (r, round) in rounds.iter().enumerate() {
        for edit in &round.defender {
            w.edit_defender(edit);
        }
        for edit in &round.sentinel {
            w.edit_sentinel(edit);
        }
        let first = sync_once(pack, &mut w, round.fail_sentinel, round.fail_defender)?;
        for (change, decided) in first.changes.iter().zip(&first.decisions) {
            if change.is_conflict() || change.defender.changed != change.sentinel.changed {
                seen.flows[flow_index(decided.flow)] += 1;
            }
        }
        seen.writes[0] += first.plan.sentinel.len();
        seen.writes[1] += first.plan.defender.len();
        let refused = [
            (
                round.fail_sentinel && !first.plan.sentinel.is_empty(),
                Side::Sentinel,
            ),
            (
                round.fail_defender && !first.plan.defender.is_empty(),
                Side::Defender,
            ),
        ];
        if refused.iter().any(|(failed, _)| *failed) {
            // What was refused is detected again and planned to the same side again.
            let again = sync_once(pack, &mut w, false, false)?;
            for (failed, side) in refused {
                if !failed {
                    continue;
                }
                for f in first.plan.fields.iter().filter(|f| f.written == Some(side)) {
                    let planned_again = again
                        .plan
                        .fields
                        .iter()
                        .any(|g| g.field == f.field && g.written == Some(side));
                    prop_assert!(
                        planned_again,
                        "round {r}: {} lost after a refused {side:?} write: {:#?}",
                        f.field,
                        again.plan
                    );
                    seen.retried += 1;
                }
            }
        }
        // A write to Defender can change how an unwritten field renders (a derived
        // field): that flows to Sentinel once. Nothing ever flows back.
        let mut settled = false;
        for follow_up in 0..3 {
            let p = sync_once(pack, &mut w, false, false)?;
            if p.plan.is_empty() && p.plan.fields.is_empty() {
                settled = true;
                break;
            }
            prop_assert!(
                p.plan.defender.is_empty(),
                "round {r} follow-up {follow_up}: echo to Defender: {:#?}",
                p.plan
            );
        }
        prop_assert!(settled, "round {r}: not settled after three follow-ups");
    }
    Ok(())
}

#[test]
fn property_the_real_step_settles_without_echo_and_loses_no_refused_write() {
    let pack = pack();
    let seen = RefCell::new(Seen::default());
    // A fixed seed, so the suite gives the same answer on every machine; the seed that
    // found a bug becomes a named test above. To explore further, set PROPTEST_CASES
    // and PROPTEST_RNG_SEED (any u64), e.g. `PROPTEST_CASES=20000 PROPTEST_RNG_SEED=7`.
    let explore = std::env::var_os("PROPTEST_RNG_SEED").is_some();
    let defaults = Config::default();
    let mut runner = TestRunner::new(Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            300
        },
        rng_seed: if explore {
            defaults.rng_seed
        } else {
            RngSeed::Fixed(0x5eed_2026)
        },
        failure_persistence: None,
        ..defaults
    });
    let cases = (
        prop::bool::weighted(0.3),
        prop::collection::vec(round(), 1..6),
    );
    let result = runner.run(&cases, |(connector, rounds)| {
        run_case(&pack, connector, &rounds, &mut seen.borrow_mut())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    // The generator reached every flow the direction rules have, merges included, and
    // refused writes of both sides.
    assert!(
        seen.flows.iter().all(|&n| n > 10),
        "flows to_sentinel/to_defender/skip/merge: {seen:?}"
    );
    assert!(seen.writes[0] > 100 && seen.writes[1] > 100, "{seen:?}");
    assert!(seen.retried > 20, "{seen:?}");
}

/// The case CI's proptest run found (stop 20): Sentinel closes, then both sides
/// reclassify in one round and the Defender write is refused.
#[test]
fn a_refused_reclassification_after_a_conflict_is_planned_again() {
    let pack = pack();
    let rounds = [
        Round {
            defender: vec![],
            sentinel: vec![SentinelEdit::Close("FalsePositive", "IncorrectAlertLogic")],
            fail_sentinel: false,
            fail_defender: false,
        },
        Round {
            defender: vec![DefenderEdit::Classify(
                "informationalExpectedActivity",
                "securityTesting",
            )],
            sentinel: vec![SentinelEdit::Close("FalsePositive", "InaccurateData")],
            fail_sentinel: false,
            fail_defender: true,
        },
    ];
    let mut seen = Seen::default();
    if let Err(e) = run_case(&pack, false, &rounds, &mut seen) {
        panic!("{e}");
    }
}

/// Direction rules that send a classification one way and its reason the other would
/// write a pair half from each side: the incident fails with both decisions named, and
/// nothing is written.
#[test]
fn rules_that_split_a_classification_pair_fail_the_incident_instead_of_writing() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::copy_dir(std::path::Path::new("rules"), dir.path());
    let rule = dir.path().join("direction/ownership.rhai");
    let script = std::fs::read_to_string(&rule).unwrap().replace(
        "fn direction(change, ctx) {",
        "fn direction(change, ctx) {\n    \
         if change.field == \"classificationReason\" { return \"to_defender\"; }",
    );
    std::fs::write(&rule, script).unwrap();
    let pack = crate::common::pack_at(dir.path());
    let mut w = new_world(&pack, false).unwrap();
    w.edit_defender(&DefenderEdit::Classify(
        "informationalExpectedActivity",
        "securityTesting",
    ));
    let now = w.clock.tick();
    let opts = options(Some(&w.link), w.twin, &now);
    let input = Input {
        pack: &pack,
        link: &w.link,
        defender: &w.d,
        sentinel: &w.s,
        options: &opts,
    };
    let Decision::Failed(failure) = step::decide(&input) else {
        panic!("a split pair was planned: {:#?}", step::decide(&input));
    };
    assert_eq!(failure.kind, "split_pair");
    assert_eq!(failure.rule.as_deref(), Some("ownership"));
    for named in [
        "`classification` to_sentinel",
        "`classificationReason` to_defender",
        "classification + classificationReason",
    ] {
        assert!(
            failure.reason.contains(named),
            "{named}: {}",
            failure.reason
        );
    }
    // The default rules send the same edit one way, as a pair.
    let default = pack_default_decision(&w, &now);
    assert!(default.plan.defender.is_empty(), "{:#?}", default.plan);
    for field in ["classification", "classificationReason"] {
        assert!(
            default
                .plan
                .fields
                .iter()
                .any(|f| f.field == field && f.written == Some(Side::Sentinel)),
            "{field}: {:#?}",
            default.plan
        );
    }
}

fn pack_default_decision(w: &World, now: &str) -> Planned {
    planned(&pack(), w, now).unwrap_or_else(|e| panic!("{e}"))
}
