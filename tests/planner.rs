//! The pure planner (`sync::plan`) on its own: 3-way change detection, the writes it
//! plans each way, the bases it stores after them, and — as a property over many
//! generated cases — the invariant the whole sync rests on: once a plan's writes are
//! applied and its bases stored, detecting again finds nothing (no echo).

use rulebridge::model::{FieldChange, Flow, Side};
use rulebridge::state::Fields;
use rulebridge::sync::plan::{detect, next_bases, Acknowledged, Decided, Plan, Views};
use serde_json::{json, Map, Value};

const D_AT: &str = "2026-01-02T10:00:00.000000Z";
const S_AT: &str = "2026-01-02T11:00:00.000000Z";

/// The planner with no merged fields (merges are tested on their own below).
fn plan(
    changes: &[FieldChange],
    decisions: &[Decided],
    now: &Value,
    form: Option<&Map<String, Value>>,
) -> Plan {
    rulebridge::sync::plan::plan(changes, decisions, now, form, &Fields::new())
}

fn fields(value: Value) -> Fields {
    value.as_object().cloned().expect("an object")
}

fn views<'a>(defender: &'a Fields, sentinel: &'a Fields) -> Views<'a> {
    Views {
        defender,
        sentinel,
        defender_changed_at: Some(D_AT),
        sentinel_changed_at: Some(S_AT),
    }
}

fn decided(flow: Flow) -> Decided {
    Decided {
        flow,
        rule: Some("test-rule".into()),
    }
}

fn change<'a>(changes: &'a [FieldChange], field: &str) -> &'a FieldChange {
    changes
        .iter()
        .find(|c| c.field == field)
        .unwrap_or_else(|| panic!("no change for `{field}` in {changes:#?}"))
}

/// The fields of a twin that is in sync: status, severity, owner, labels.
fn synced() -> Fields {
    fields(json!({
        "title": "Suspicious sign-in",
        "severity": "High",
        "status": "New",
        "owner": {"userPrincipalName": "ana@contoso.com", "assignedTo": "ana@contoso.com"},
        "labels": [{"labelName": "VIP"}],
    }))
}

// ------------------------------------------------------------------ detect

#[test]
fn nothing_changed_means_no_field_change_and_an_empty_plan() {
    let d = synced();
    let s = synced();
    let changes = detect(&views(&d, &s), &d, &s);
    assert!(changes.is_empty(), "{changes:#?}");
    let p = plan(&changes, &[], &json!({}), None);
    assert!(p.is_empty());
    assert!(p.fields.is_empty());
    assert_eq!(p, Plan::default());
}

#[test]
fn a_change_on_one_side_is_flagged_on_that_side_only() {
    let base = synced();
    let mut d = synced();
    d.insert("status".into(), json!("Active"));
    let changes = detect(&views(&d, &base), &base, &base);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let c = &changes[0];
    assert_eq!(c.field, "status");
    assert_eq!(c.base, json!("New"));
    assert!(c.defender.changed && !c.sentinel.changed);
    assert_eq!(c.defender.value, json!("Active"));
    assert_eq!(c.sentinel.value, json!("New"));
    assert_eq!(c.defender.changed_at.as_deref(), Some(D_AT));
    assert_eq!(c.sentinel.changed_at.as_deref(), Some(S_AT));
    assert!(!c.is_conflict());

    // The mirror image: only Sentinel changed.
    let mut s = synced();
    s.insert(
        "labels".into(),
        json!([{"labelName": "VIP"}, {"labelName": "Tier2"}]),
    );
    let changes = detect(&views(&base, &s), &base, &base);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let c = &changes[0];
    assert_eq!(c.field, "labels");
    assert!(!c.defender.changed && c.sentinel.changed);
    assert!(!c.is_conflict());
}

#[test]
fn each_side_is_compared_with_its_own_base() {
    // The owner is not exactly reversible: Sentinel knows an object id and a display
    // name that Defender does not. Different values on the two sides, each equal to its
    // own base, are no change at all.
    let bd = fields(json!({"owner": {"userPrincipalName": "ana@contoso.com"}}));
    let bs = fields(
        json!({"owner": {"userPrincipalName": "ana@contoso.com", "objectId": "1", "assignedTo": "Ana"}}),
    );
    let changes = detect(&views(&bd, &bs), &bd, &bs);
    assert!(changes.is_empty(), "{changes:#?}");
}

#[test]
fn both_sides_changed_to_the_same_value_is_no_conflict_and_no_write() {
    let base = synced();
    let mut d = synced();
    let mut s = synced();
    d.insert("status".into(), json!("Closed"));
    s.insert("status".into(), json!("Closed"));
    let changes = detect(&views(&d, &s), &base, &base);
    let c = change(&changes, "status");
    assert!(c.defender.changed && c.sentinel.changed);
    assert!(!c.is_conflict());
    // Whichever way the rules send it, both sides already agree: no request.
    for flow in [Flow::ToSentinel, Flow::ToDefender] {
        let now = json!({"status": "resolved"});
        let form = fields(json!({"status": "resolved"}));
        let p = plan(&changes, &[decided(flow)], &now, Some(&form));
        assert!(p.is_empty(), "{flow:?}: {p:#?}");
        assert_eq!(p.fields[0].written, None);
        assert!(!p.fields[0].conflict);
    }
}

#[test]
fn both_sides_changed_differently_is_a_conflict() {
    let base = synced();
    let mut d = synced();
    let mut s = synced();
    d.insert("status".into(), json!("Active"));
    s.insert("status".into(), json!("Closed"));
    let changes = detect(&views(&d, &s), &base, &base);
    let c = change(&changes, "status");
    assert!(c.is_conflict());
    let p = plan(&changes, &[decided(Flow::ToSentinel)], &json!({}), None);
    assert!(p.fields[0].conflict);
    assert_eq!(p.sentinel.get("status"), Some(&json!("Active")));
    // A skipped conflict writes nothing, but is still recorded as a conflict.
    let p = plan(&changes, &[decided(Flow::Skip)], &json!({}), None);
    assert!(p.is_empty());
    assert!(p.fields[0].conflict);
    assert_eq!(p.fields[0].flow, Flow::Skip);
    assert_eq!(p.fields[0].rule.as_deref(), Some("test-rule"));
}

#[test]
fn a_writable_sentinel_field_the_defender_rendering_lacks_is_detected() {
    // An analyst classifies in Sentinel; the Defender rendering has no classification.
    let d = synced();
    let base_s = synced();
    let mut s = synced();
    s.insert("classification".into(), json!("FalsePositive"));
    s.insert("classificationReason".into(), json!("InaccurateData"));
    // Read-only Sentinel properties are not synced fields.
    s.insert("incidentNumber".into(), json!(42));
    let changes = detect(&views(&d, &s), &d, &base_s);
    let names: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(names, ["classification", "classificationReason"]);
    let c = change(&changes, "classification");
    assert!(c.sentinel.changed && !c.defender.changed);
    assert_eq!(c.defender.value, Value::Null);
}

#[test]
fn a_field_that_disappeared_from_the_defender_rendering_is_compared_once_more() {
    let base = synced();
    let mut d = synced();
    d.remove("owner");
    let changes = detect(&views(&d, &base), &base, &base);
    let c = change(&changes, "owner");
    assert!(c.defender.changed);
    assert_eq!(c.defender.value, Value::Null);
}

// ------------------------------------------------------------------ plan

#[test]
fn to_sentinel_is_planned_only_where_the_values_differ() {
    let base = synced();
    let mut d = synced();
    d.insert("severity".into(), json!("Medium"));
    d.insert("title".into(), json!("Renamed"));
    let mut s = synced();
    // The title already changed the same way in Sentinel.
    s.insert("title".into(), json!("Renamed"));
    let changes = detect(&views(&d, &s), &base, &base);
    let decisions = vec![decided(Flow::ToSentinel); changes.len()];
    let p = plan(&changes, &decisions, &json!({}), None);
    let mut expected = Map::new();
    expected.insert("severity".into(), json!("Medium"));
    assert_eq!(p.sentinel, expected);
    assert!(p.defender.is_empty());
    let severity = p.fields.iter().find(|f| f.field == "severity").unwrap();
    assert_eq!(severity.written, Some(Side::Sentinel));
    assert_eq!(severity.old, json!("High"));
    assert_eq!(severity.new, json!("Medium"));
    let title = p.fields.iter().find(|f| f.field == "title").unwrap();
    assert_eq!(title.written, None);
    assert_eq!(title.note, None);
}

/// A Sentinel-side change of `field` planned to Defender, with `form` the map's
/// rendering of the Sentinel incident as a PATCH body and `now` the Defender incident.
fn plan_to_defender(field: &str, value: Value, now: &Value, form: &Map<String, Value>) -> Plan {
    let base = synced();
    let mut s = synced();
    s.insert(field.into(), value);
    let changes = detect(&views(&base, &s), &base, &base);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    plan(&changes, &[decided(Flow::ToDefender)], now, Some(form))
}

#[test]
fn to_defender_goes_through_the_defender_property_table() {
    let now = json!({
        "id": "7", "status": "active", "assignedTo": "ana@contoso.com",
        "classification": "unknown", "determination": "unknown",
        "customTags": ["VIP"], "resolvingComment": null, "severity": "high",
    });
    let form = fields(json!({
        "status": "resolved", "assignedTo": "bob@contoso.com",
        "classification": "falsePositive", "determination": "notEnoughDataToValidate",
        "customTags": ["VIP", "Tier2"], "resolvingComment": "benign",
        "severity": "high", "displayName": "Suspicious sign-in",
    }));
    let cases: [(&str, Value, Value); 5] = [
        ("status", json!("Closed"), json!({"status": "resolved"})),
        (
            "owner",
            json!({"userPrincipalName": "bob@contoso.com"}),
            json!({"assignedTo": "bob@contoso.com"}),
        ),
        (
            "classification",
            json!("FalsePositive"),
            json!({"classification": "falsePositive", "determination": "notEnoughDataToValidate"}),
        ),
        (
            "labels",
            json!([{"labelName": "VIP"}, {"labelName": "Tier2"}]),
            json!({"customTags": ["VIP", "Tier2"]}),
        ),
        (
            "classificationComment",
            json!("benign"),
            json!({"resolvingComment": "benign"}),
        ),
    ];
    for (field, value, patch) in cases {
        let p = plan_to_defender(field, value, &now, &form);
        assert_eq!(Value::Object(p.defender.clone()), patch, "{field}");
        assert!(p.sentinel.is_empty(), "{field}");
        let f = &p.fields[0];
        assert_eq!(f.written, Some(Side::Defender), "{field}");
        assert_eq!(f.new, patch, "{field}");
        // `old` holds the Defender values the PATCH replaces, key by key.
        let old: Map<String, Value> = patch
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), now[k.as_str()].clone()))
            .collect();
        assert_eq!(f.old, Value::Object(old), "{field}");
    }
}

#[test]
fn to_defender_writes_only_the_properties_that_differ_from_defender_now() {
    // The determination already is what the form says: only the classification moves.
    let now = json!({"classification": "truePositive", "determination": "notMalicious"});
    let form = fields(json!({"classification": "falsePositive", "determination": "notMalicious"}));
    let p = plan_to_defender("classification", json!("FalsePositive"), &now, &form);
    assert_eq!(
        Value::Object(p.defender),
        json!({"classification": "falsePositive"})
    );

    // Defender already says everything the form says: nothing to write at all.
    let now = json!({"classification": "falsePositive", "determination": "notMalicious"});
    let p = plan_to_defender("classification", json!("FalsePositive"), &now, &form);
    assert!(p.is_empty(), "{p:#?}");
    assert_eq!(p.fields[0].written, None);
    assert_eq!(p.fields[0].note, None);

    // A key the form does not produce is left alone (never written as null).
    let form = fields(json!({"classification": "falsePositive"}));
    let now = json!({"classification": "truePositive", "determination": "malware"});
    let p = plan_to_defender("classification", json!("FalsePositive"), &now, &form);
    assert_eq!(
        Value::Object(p.defender),
        json!({"classification": "falsePositive"})
    );
}

#[test]
fn a_field_without_a_defender_counterpart_gets_a_note_and_no_write() {
    let form = fields(json!({"status": "active"}));
    let p = plan_to_defender(
        "description",
        json!("edited in Sentinel"),
        &json!({}),
        &form,
    );
    assert!(p.is_empty(), "{p:#?}");
    let f = &p.fields[0];
    assert_eq!(f.flow, Flow::ToDefender);
    assert_eq!(f.written, None);
    let note = f.note.as_deref().expect("a note");
    assert!(
        note.contains("description") && note.contains("no Defender counterpart"),
        "{note}"
    );
}

#[test]
fn to_defender_without_a_form_gets_a_note_and_no_write() {
    let base = synced();
    let mut s = synced();
    s.insert("status".into(), json!("Active"));
    let changes = detect(&views(&base, &s), &base, &base);
    let p = plan(
        &changes,
        &[decided(Flow::ToDefender)],
        &json!({"status": "active"}),
        None,
    );
    assert!(p.is_empty());
    assert!(p.fields[0]
        .note
        .as_deref()
        .unwrap()
        .contains("filtered out"));
}

#[test]
fn one_plan_can_write_both_sides() {
    let base = synced();
    let mut d = synced();
    let mut s = synced();
    d.insert("severity".into(), json!("Low"));
    s.insert("status".into(), json!("Active"));
    let changes = detect(&views(&d, &s), &base, &base);
    let decisions: Vec<Decided> = changes
        .iter()
        .map(|c| {
            decided(if c.defender.changed {
                Flow::ToSentinel
            } else {
                Flow::ToDefender
            })
        })
        .collect();
    let form = fields(json!({"status": "inProgress", "severity": "high"}));
    let p = plan(
        &changes,
        &decisions,
        &json!({"status": "active", "severity": "low"}),
        Some(&form),
    );
    assert_eq!(Value::Object(p.sentinel), json!({"severity": "Low"}));
    assert_eq!(Value::Object(p.defender), json!({"status": "inProgress"}));
}

// ------------------------------------------------------------------ next_bases

/// A case with one field written each way and one unwritten change:
/// Defender changed severity (→ Sentinel), Sentinel changed status (→ Defender),
/// and Sentinel changed the title, which the rules skip.
struct Case {
    base: Fields,
    d: Fields,
    s: Fields,
    plan: Plan,
}

fn case() -> Case {
    let base = synced();
    let mut d = synced();
    let mut s = synced();
    d.insert("severity".into(), json!("Low"));
    s.insert("status".into(), json!("Active"));
    s.insert("title".into(), json!("Sentinel's own title"));
    let changes = detect(&views(&d, &s), &base, &base);
    let decisions: Vec<Decided> = changes
        .iter()
        .map(|c| {
            decided(match c.field.as_str() {
                "severity" => Flow::ToSentinel,
                "status" => Flow::ToDefender,
                _ => Flow::Skip,
            })
        })
        .collect();
    let form = fields(json!({"status": "inProgress"}));
    let plan = plan(
        &changes,
        &decisions,
        &json!({"status": "active"}),
        Some(&form),
    );
    assert_eq!(
        Value::Object(plan.sentinel.clone()),
        json!({"severity": "Low"})
    );
    assert_eq!(
        Value::Object(plan.defender.clone()),
        json!({"status": "inProgress"})
    );
    Case { base, d, s, plan }
}

fn with(mut map: Fields, key: &str, value: Value) -> Fields {
    map.insert(key.into(), value);
    map
}

#[test]
fn acknowledged_writes_take_the_values_they_left_behind() {
    let c = case();
    let s_after = with(c.s.clone(), "severity", json!("Low"));
    // Defender after the PATCH, as rendered: the status moved, and (someone else's
    // change, or a derived field) the owner differs too.
    let d_after = with(
        with(c.d.clone(), "status", json!("Active")),
        "owner",
        json!({"userPrincipalName": "eve@contoso.com"}),
    );
    let ack = Acknowledged {
        sentinel_after: Some(&s_after),
        defender_after: Some(&d_after),
    };
    let (bd, bs) = next_bases(&views(&c.d, &c.s), &c.base, &c.base, &c.plan, ack);
    assert_eq!(bs, s_after, "the Sentinel base is the whole PUT response");
    assert_eq!(
        bd["status"],
        json!("Active"),
        "written: the post-write value"
    );
    assert_eq!(bd["severity"], json!("Low"));
    assert_eq!(bd["title"], c.d["title"], "skipped: observed");
    // Not written and the response is not known to be ours: the owner keeps the value
    // observed before the write, so the other writer's change is detected next time.
    assert_eq!(bd["owner"], c.d["owner"]);
    assert!(!detect(&views(&d_after, &s_after), &bd, &bs).is_empty());
}

#[test]
fn unacknowledged_writes_keep_their_old_bases_and_are_planned_again() {
    let c = case();
    let d_after = with(c.d.clone(), "status", json!("Active"));
    // The Sentinel PUT failed; the Defender PATCH went through.
    let ack = Acknowledged {
        sentinel_after: None,
        defender_after: Some(&d_after),
    };
    let (bd, bs) = next_bases(&views(&c.d, &c.s), &c.base, &c.base, &c.plan, ack);
    assert_eq!(bd["severity"], c.base["severity"]);
    assert_eq!(bs["severity"], c.base["severity"]);
    assert_eq!(bd["status"], json!("Active"));
    assert_eq!(bs["status"], json!("Active"));
    // Unwritten fields take the observed values (the skipped title is settled).
    assert_eq!(bs["title"], c.s["title"]);
    let again = detect(&views(&d_after, &c.s), &bd, &bs);
    let names: Vec<&str> = again.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(names, ["severity"]);
    let p = plan(&again, &[decided(Flow::ToSentinel)], &json!({}), None);
    assert_eq!(Value::Object(p.sentinel), json!({"severity": "Low"}));

    // The other way round: the PATCH failed, the PUT went through.
    let s_after = with(c.s.clone(), "severity", json!("Low"));
    let ack = Acknowledged {
        sentinel_after: Some(&s_after),
        defender_after: None,
    };
    let (bd, bs) = next_bases(&views(&c.d, &c.s), &c.base, &c.base, &c.plan, ack);
    assert_eq!(bd["status"], c.base["status"]);
    assert_eq!(bs["status"], c.base["status"]);
    assert_eq!(bd["severity"], json!("Low"));
    assert_eq!(bs["severity"], json!("Low"));
    let again = detect(&views(&c.d, &s_after), &bd, &bs);
    let names: Vec<&str> = again.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(names, ["status"]);
}

#[test]
fn with_nothing_written_the_bases_are_what_both_sides_say_now() {
    let c = case();
    let empty = Plan::default();
    let (bd, bs) = next_bases(
        &views(&c.d, &c.s),
        &c.base,
        &c.base,
        &empty,
        Acknowledged::default(),
    );
    assert_eq!(bd, c.d);
    assert_eq!(bs, c.s);
}

// ------------------------------------------------------------------ the no-echo property

/// A tiny deterministic generator (Knuth's MMIX LCG); no dependency needed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const G_STATUS: [&str; 3] = ["active", "inProgress", "resolved"];
const G_SEVERITY: [&str; 4] = ["low", "medium", "high", "informational"];
const G_CLASS: [&str; 4] = [
    "unknown",
    "truePositive",
    "falsePositive",
    "informationalExpectedActivity",
];
const G_DETERMINATION: [&str; 3] = ["malware", "notMalicious", "notEnoughDataToValidate"];
const PEOPLE: [&str; 3] = ["ana@contoso.com", "bob@contoso.com", "eve@contoso.com"];
const TAGS: [&str; 4] = ["VIP", "Tier2", "PCI", "Phishing"];

/// The toy map stage, Defender → Sentinel vocabulary (like the default pack, smaller):
/// the owner gains nothing, the classification adds a reason and a comment, and
/// every rendering gets a link label that never flows back.
fn render_defender(d: &Value) -> Fields {
    let status = match d["status"].as_str() {
        Some("inProgress") => "Active",
        Some("resolved") => "Closed",
        _ => "New",
    };
    let severity = match d["severity"].as_str() {
        Some("low") => "Low",
        Some("high") => "High",
        Some("informational") => "Informational",
        _ => "Medium",
    };
    let mut out = fields(json!({
        "title": d["displayName"],
        "severity": severity,
        "status": status,
        "description": d["description"],
    }));
    out.insert(
        "owner".into(),
        match d["assignedTo"].as_str() {
            Some(upn) => json!({"userPrincipalName": upn, "ownerType": "User"}),
            None => Value::Null,
        },
    );
    let (class, reason) = match d["classification"].as_str() {
        Some("truePositive") => (json!("TruePositive"), json!("SuspiciousActivity")),
        Some("falsePositive") => (
            json!("FalsePositive"),
            if d["determination"] == "notEnoughDataToValidate" {
                json!("InaccurateData")
            } else {
                json!("IncorrectAlertLogic")
            },
        ),
        Some("informationalExpectedActivity") => {
            (json!("BenignPositive"), json!("SuspiciousButExpected"))
        }
        _ if status == "Closed" => (json!("Undetermined"), Value::Null),
        _ => (Value::Null, Value::Null),
    };
    if !class.is_null() {
        out.insert("classification".into(), class);
    }
    if !reason.is_null() {
        out.insert("classificationReason".into(), reason);
    }
    if let Some(note) = d["resolvingComment"].as_str() {
        out.insert("classificationComment".into(), json!(note));
    }
    let mut labels: Vec<Value> = d["customTags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| json!({"labelName": t}))
        .collect();
    labels.push(json!({"labelName": format!("defender-xdr:{}", d["id"].as_str().unwrap_or(""))}));
    out.insert("labels".into(), Value::Array(labels));
    out
}

/// The toy map stage, Sentinel → a Defender PATCH body.
fn render_sentinel(s: &Fields) -> Map<String, Value> {
    let mut out = Map::new();
    let status = match s.get("status").and_then(Value::as_str) {
        Some("Active") => "inProgress",
        Some("Closed") => "resolved",
        _ => "active",
    };
    out.insert("status".into(), json!(status));
    out.insert(
        "assignedTo".into(),
        s.get("owner")
            .map(|o| o["userPrincipalName"].clone())
            .unwrap_or(Value::Null),
    );
    match s.get("classification").and_then(Value::as_str) {
        Some("TruePositive") => {
            out.insert("classification".into(), json!("truePositive"));
        }
        Some("BenignPositive") => {
            out.insert(
                "classification".into(),
                json!("informationalExpectedActivity"),
            );
        }
        Some("FalsePositive") => {
            out.insert("classification".into(), json!("falsePositive"));
            let det = match s.get("classificationReason").and_then(Value::as_str) {
                Some("InaccurateData") => "notEnoughDataToValidate",
                _ => "notMalicious",
            };
            out.insert("determination".into(), json!(det));
        }
        Some("Undetermined") => {
            out.insert("classification".into(), json!("unknown"));
        }
        _ => {}
    }
    if let Some(note) = s.get("classificationComment").and_then(Value::as_str) {
        out.insert("resolvingComment".into(), json!(note));
    }
    let tags: Vec<Value> = s
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l["labelName"].as_str())
        .filter(|n| !n.starts_with("defender-xdr:"))
        .map(|n| json!(n))
        .collect();
    out.insert("customTags".into(), Value::Array(tags));
    out
}

/// The toy direction stage: Defender owns title, severity and description; the rest
/// flows both ways; a conflict goes whichever way `coin` says, or is skipped.
fn direct(change: &FieldChange, coin: u64) -> Flow {
    if ["title", "severity", "description"].contains(&change.field.as_str()) {
        return Flow::ToSentinel;
    }
    if change.is_conflict() {
        // The same coin for the same field, however many other fields changed.
        let salt: u64 = change.field.bytes().map(u64::from).sum();
        return [Flow::ToSentinel, Flow::ToDefender, Flow::Skip]
            [(coin.wrapping_add(salt) % 3) as usize];
    }
    if change.defender.changed {
        Flow::ToSentinel
    } else {
        Flow::ToDefender
    }
}

fn random_defender(rng: &mut Lcg, id: usize) -> Value {
    let mut d = json!({
        "id": id.to_string(),
        "displayName": format!("Incident {id}"),
        "status": rng.pick(&G_STATUS),
        "severity": rng.pick(&G_SEVERITY),
        "description": "Defender's text",
        "assignedTo": if rng.chance(30) { Value::Null } else { json!(rng.pick(&PEOPLE)) },
        "classification": rng.pick(&G_CLASS),
        "determination": rng.pick(&G_DETERMINATION),
        "customTags": (0..rng.below(3)).map(|_| rng.pick(&TAGS)).collect::<Vec<_>>(),
        "resolvingComment": Value::Null,
    });
    dedup_tags(&mut d["customTags"]);
    d
}

fn dedup_tags(tags: &mut Value) {
    let mut seen = Vec::new();
    if let Some(list) = tags.as_array_mut() {
        list.retain(|t| {
            let fresh = !seen.contains(t);
            seen.push(t.clone());
            fresh
        });
    }
}

/// An analyst's edit in Defender (Graph vocabulary).
fn edit_defender(rng: &mut Lcg, d: &mut Value) {
    match rng.below(7) {
        0 => d["status"] = json!(rng.pick(&G_STATUS)),
        1 => d["severity"] = json!(rng.pick(&G_SEVERITY)),
        2 => d["assignedTo"] = json!(rng.pick(&PEOPLE)),
        3 => d["assignedTo"] = Value::Null,
        4 => {
            d["classification"] = json!(rng.pick(&G_CLASS));
            d["determination"] = json!(rng.pick(&G_DETERMINATION));
        }
        5 => {
            let tag = rng.pick(&TAGS);
            let list = d["customTags"].as_array_mut().expect("an array");
            if let Some(i) = list.iter().position(|t| t == tag) {
                list.remove(i);
            } else {
                list.push(json!(tag));
            }
        }
        _ => d["resolvingComment"] = json!(format!("note {}", rng.below(3))),
    }
}

/// An analyst's edit in Sentinel (its vocabulary; objectId and display names exist only
/// here, so the owner is never exactly reversible).
fn edit_sentinel(rng: &mut Lcg, s: &mut Fields) {
    match rng.below(7) {
        0 => {
            s.insert("status".into(), json!(rng.pick(&["New", "Active"])));
        }
        1 => {
            let (class, reason) = rng.pick(&[
                ("TruePositive", "SuspiciousActivity"),
                ("BenignPositive", "SuspiciousButExpected"),
                ("FalsePositive", "IncorrectAlertLogic"),
                ("FalsePositive", "InaccurateData"),
            ]);
            s.insert("status".into(), json!("Closed"));
            s.insert("classification".into(), json!(class));
            s.insert("classificationReason".into(), json!(reason));
        }
        2 => {
            let upn = rng.pick(&PEOPLE);
            let owner = json!({"userPrincipalName": upn, "objectId": format!("oid-{upn}"),
                               "assignedTo": upn.split('@').next().unwrap(), "ownerType": "User"});
            s.insert("owner".into(), owner);
        }
        3 => {
            s.insert("owner".into(), Value::Null);
        }
        4 => {
            let tag = rng.pick(&TAGS);
            let mut labels = s
                .get("labels")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(i) = labels.iter().position(|l| l["labelName"] == tag) {
                labels.remove(i);
            } else {
                labels.push(json!({"labelName": tag, "labelType": "User"}));
            }
            s.insert("labels".into(), Value::Array(labels));
        }
        5 => {
            s.insert(
                "classificationComment".into(),
                json!(format!("closing note {}", rng.below(3))),
            );
        }
        _ => {
            // Sentinel-only edits of Defender-owned fields (overwritten by the sync).
            s.insert("title".into(), json!("retitled in Sentinel"));
        }
    }
}

/// Applies a PATCH body the way Graph does: the listed properties replaced.
fn patch(d: &Value, body: &Map<String, Value>) -> Value {
    let mut out = d.clone();
    for (k, v) in body {
        out[k.as_str()] = v.clone();
    }
    out
}

/// Applies a PUT the way Sentinel does: the changed properties over the current ones.
fn put(s: &Fields, body: &Map<String, Value>) -> Fields {
    let mut out = s.clone();
    for (k, v) in body {
        out.insert(k.clone(), v.clone());
    }
    out
}

struct Twin {
    d: Value,
    s: Fields,
    bd: Fields,
    bs: Fields,
}

/// One sync of one twin as the engine does it: detect, decide (conflicts by `coin`),
/// plan, write (each write acknowledged unless told to fail), store the next bases.
/// Returns the plan.
fn sync_once(twin: &mut Twin, coin: u64, fail_sentinel: bool, fail_defender: bool) -> Plan {
    let dview = render_defender(&twin.d);
    let v = views(&dview, &twin.s);
    let changes = detect(&v, &twin.bd, &twin.bs);
    let decisions: Vec<Decided> = changes.iter().map(|c| decided(direct(c, coin))).collect();
    let form = render_sentinel(&twin.s);
    let p = plan(&changes, &decisions, &twin.d, Some(&form));

    // Every planned write changes the target (a no-op is never a request).
    for (k, v) in &p.sentinel {
        assert_ne!(
            twin.s.get(k).unwrap_or(&Value::Null),
            v,
            "no-op Sentinel write of {k}"
        );
    }
    for (k, v) in &p.defender {
        assert_ne!(&twin.d[k.as_str()], v, "no-op Defender write of {k}");
    }

    let s_after = (!p.sentinel.is_empty() && !fail_sentinel).then(|| put(&twin.s, &p.sentinel));
    let d_patched = (!p.defender.is_empty() && !fail_defender).then(|| patch(&twin.d, &p.defender));
    let d_after = d_patched.as_ref().map(render_defender);
    let ack = Acknowledged {
        sentinel_after: s_after.as_ref(),
        defender_after: d_after.as_ref(),
    };
    let (bd, bs) = next_bases(&v, &twin.bd, &twin.bs, &p, ack);
    if let Some(s) = s_after {
        twin.s = s;
    }
    if let Some(d) = d_patched {
        twin.d = d;
    }
    twin.bd = bd;
    twin.bs = bs;
    p
}

#[test]
fn property_after_a_plan_is_applied_nothing_comes_back() {
    let mut rng = Lcg(0x5eed_2026);
    let mut writes = [0usize; 2];
    let mut conflicts = 0;
    for case in 0..400 {
        // A twin just created: Sentinel holds the Defender rendering, bases both sides.
        let d = random_defender(&mut rng, case);
        let s = render_defender(&d);
        let (bd, bs) = next_bases(
            &views(&render_defender(&d), &s),
            &Fields::new(),
            &Fields::new(),
            &Plan::default(),
            Acknowledged::default(),
        );
        let mut twin = Twin { d, s, bd, bs };
        for round in 0..4 {
            for _ in 0..rng.below(3) {
                edit_defender(&mut rng, &mut twin.d);
            }
            for _ in 0..rng.below(3) {
                edit_sentinel(&mut rng, &mut twin.s);
            }
            let p = sync_once(&mut twin, rng.next(), false, false);
            writes[0] += p.sentinel.len();
            writes[1] += p.defender.len();
            conflicts += p.fields.iter().filter(|f| f.conflict).count();

            // A write to Defender can change how an unwritten field renders (a derived
            // field); that change then flows to Sentinel, once. Nothing ever flows back.
            for follow_up in 0..2 {
                let dview = render_defender(&twin.d);
                if detect(&views(&dview, &twin.s), &twin.bd, &twin.bs).is_empty() {
                    break;
                }
                let f = sync_once(&mut twin, rng.next(), false, false);
                assert!(
                    f.defender.is_empty(),
                    "case {case} round {round} follow-up {follow_up}: echo to Defender after {p:#?}: {f:#?}"
                );
            }
            let dview = render_defender(&twin.d);
            let again = detect(&views(&dview, &twin.s), &twin.bd, &twin.bs);
            assert!(
                again.is_empty(),
                "case {case} round {round}: not settled after {p:#?}\n{again:#?}"
            );
            // And a further sync is no request at all.
            let p2 = sync_once(&mut twin, rng.next(), false, false);
            assert!(
                p2.is_empty() && p2.fields.is_empty(),
                "case {case} round {round}: {p2:#?}"
            );
        }
    }
    // The generator really exercised both directions and conflicts.
    assert!(
        writes[0] > 200 && writes[1] > 200 && conflicts > 20,
        "{writes:?} {conflicts}"
    );
}

#[test]
fn property_an_unacknowledged_write_is_planned_again_and_then_settles() {
    let mut rng = Lcg(42);
    let mut retried = 0;
    for case in 0..300 {
        let d = random_defender(&mut rng, case);
        let s = render_defender(&d);
        let (bd, bs) = next_bases(
            &views(&render_defender(&d), &s),
            &Fields::new(),
            &Fields::new(),
            &Plan::default(),
            Acknowledged::default(),
        );
        let mut twin = Twin { d, s, bd, bs };
        for _ in 0..1 + rng.below(3) {
            edit_defender(&mut rng, &mut twin.d);
        }
        for _ in 0..1 + rng.below(3) {
            edit_sentinel(&mut rng, &mut twin.s);
        }
        let fail_sentinel = rng.chance(50);
        let fail_defender = !fail_sentinel || rng.chance(30);
        // The same conflict coin for both attempts, so the retry decides the same way.
        let coin = rng.next();
        let p1 = sync_once(&mut twin, coin, fail_sentinel, fail_defender);
        let p2 = sync_once(&mut twin, coin, false, false);
        for (failed, side, first, second) in [
            (fail_sentinel, Side::Sentinel, &p1.sentinel, &p2.sentinel),
            (fail_defender, Side::Defender, &p1.defender, &p2.defender),
        ] {
            if !failed {
                // What was acknowledged is not planned again (a derived field our Defender
                // write changed may still flow to Sentinel once).
                let again = first.keys().filter(|k| second.contains_key(*k)).count();
                assert_eq!(again, 0, "case {case}: {side:?} again: {p2:#?}");
                continue;
            }
            // What failed is detected again, and planned to the same side again.
            for f in p1.fields.iter().filter(|f| f.written == Some(side)) {
                let again = p2.fields.iter().find(|g| g.field == f.field);
                assert!(
                    again.is_some_and(|g| g.written == Some(side)),
                    "case {case}: {} lost after a failed {side:?} write: {p2:#?}",
                    f.field
                );
                retried += 1;
            }
            // When nothing else was written meanwhile, the very same request is repeated.
            let other_written = match side {
                Side::Sentinel => !fail_defender && !p1.defender.is_empty(),
                Side::Defender => !fail_sentinel && !p1.sentinel.is_empty(),
            };
            if !other_written {
                assert_eq!(first, second, "case {case}: {side:?}");
            }
        }
        for _ in 0..2 {
            let f = sync_once(&mut twin, coin, false, false);
            assert!(
                f.defender.is_empty(),
                "case {case}: echo to Defender: {f:#?}"
            );
        }
        let dview = render_defender(&twin.d);
        let again = detect(&views(&dview, &twin.s), &twin.bd, &twin.bs);
        assert!(again.is_empty(), "case {case}: {again:#?}");
    }
    assert!(retried > 100, "{retried}");
}

#[test]
fn a_merge_keeps_both_sides_additions_and_removals() {
    use rulebridge::sync::plan::merge_set;
    let l = |names: &[&str]| {
        json!(names
            .iter()
            .map(|n| json!({"labelName": n}))
            .collect::<Vec<_>>())
    };
    // Base {a, b}; Defender removed b and added d; Sentinel added s.
    let merged = merge_set(&l(&["a", "b"]), &l(&["a", "d"]), &l(&["a", "b", "s"])).unwrap();
    assert_eq!(merged, l(&["a", "s", "d"]));
    // Not a set: no merge.
    assert_eq!(merge_set(&json!("x"), &json!("y"), &json!("z")), None);

    // Planned: the union goes to Sentinel, and to Defender through the form.
    let base = fields(json!({"labels": l(&["a"])}));
    let d = fields(json!({"labels": l(&["a", "d"])}));
    let s = fields(json!({"labels": l(&["a", "s"])}));
    let changes = detect(&views(&d, &s), &base, &base);
    let mut merged_fields = Fields::new();
    merged_fields.insert("labels".into(), l(&["a", "s", "d"]));
    let form = json!({"customTags": ["a", "s", "d"]})
        .as_object()
        .cloned()
        .unwrap();
    let decisions = [Decided {
        flow: Flow::Merge,
        rule: Some("ownership".into()),
    }];
    let p = rulebridge::sync::plan::plan(
        &changes,
        &decisions,
        &json!({"customTags": ["a", "d"]}),
        Some(&form),
        &merged_fields,
    );
    assert_eq!(p.sentinel.get("labels"), Some(&l(&["a", "s", "d"])));
    assert_eq!(p.defender.get("customTags"), Some(&json!(["a", "s", "d"])));
    let sides: Vec<_> = p.fields.iter().map(|f| f.written).collect();
    assert_eq!(sides.len(), 2, "{:?}", p.fields);
    assert!(sides.contains(&Some(Side::Sentinel)) && sides.contains(&Some(Side::Defender)));
}
