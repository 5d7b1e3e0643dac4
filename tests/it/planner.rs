//! The pure planner (`sync::plan`) on its own: 3-way change detection, the writes it
//! plans each way and the bases it stores after them, each case by hand. The invariant
//! the whole sync rests on (once a plan's writes are applied and its bases stored,
//! nothing comes back) is a property of the engine's real per-incident step, tested
//! with generated edits in `tests/step.rs`.

use rulebridge::model::{read_stamp, FieldChange, Flow, Side};
use rulebridge::state::Fields;
use rulebridge::sync::plan::{detect, next_bases, Acknowledged, Decided, Plan, Views};
use serde_json::{json, Map, Value};

const D_AT: &str = "2026-01-02T10:00:00.000000Z";
const S_AT: &str = "2026-01-02T12:00:00.000000+01:00";

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
        defender_changed_at: Some(read_stamp(D_AT).unwrap()),
        sentinel_changed_at: Some(read_stamp(S_AT).unwrap()),
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
    // The rules see both stamps in one form (UTC, seven digits), whatever was sent.
    assert_eq!(
        c.defender.changed_at.as_deref(),
        Some("2026-01-02T10:00:00.0000000Z")
    );
    assert_eq!(
        c.sentinel.changed_at.as_deref(),
        Some("2026-01-02T11:00:00.0000000Z")
    );
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
fn a_classification_pair_edited_on_both_sides_is_one_conflict() {
    // Defender reclassified (classification and reason move); the Sentinel analyst closed
    // with a new reason and the classification the incident already had. Field by field
    // only the reason conflicts; as a pair, both members do.
    let base = with(
        with(synced(), "classification", json!("FalsePositive")),
        "classificationReason",
        json!("IncorrectAlertLogic"),
    );
    let d = with(
        with(base.clone(), "classification", json!("BenignPositive")),
        "classificationReason",
        json!("SuspiciousButExpected"),
    );
    let s = with(
        base.clone(),
        "classificationReason",
        json!("InaccurateData"),
    );
    let changes = detect(&views(&d, &s), &base, &base);
    for field in ["classification", "classificationReason"] {
        let c = change(&changes, field);
        assert!(c.defender.changed && c.sentinel.changed, "{c:#?}");
        assert!(c.is_conflict(), "{field}");
    }
    // The sides' own values and bases are untouched: only the flags say "the pair".
    let c = change(&changes, "classification");
    assert_eq!(c.sentinel.value, c.sentinel.base);

    // Edited on one side only, the pair is what it was: one-sided changes.
    let changes = detect(&views(&d, &base), &base, &base);
    for c in &changes {
        assert!(c.defender.changed && !c.sentinel.changed, "{c:#?}");
    }
    // Uncoupled fields are not drawn in: a status edited in Sentinel beside a Defender
    // reclassification stays a one-sided change.
    let s = with(base.clone(), "status", json!("Active"));
    let changes = detect(&views(&d, &s), &base, &base);
    assert!(!change(&changes, "classification").sentinel.changed);
    assert!(!change(&changes, "status").defender.changed);
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

// The no-echo property over generated edits runs the engine's real step, rules and
// merges included: tests/step.rs.

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
