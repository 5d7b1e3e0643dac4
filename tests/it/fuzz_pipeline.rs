//! A bounded fuzz run of the JSON → view → rule → output path (proptest, stable Rust):
//! arbitrary JSON documents as Defender and Sentinel incidents through the default
//! pack's whole pipeline and direction rules, and through a pack of rules that return
//! pieces of their input in every shape (views, copies, nested arrays, numbers at the
//! edges). Whatever comes in, the result is an outcome or a located rule error: no
//! panic, no abort. `FUZZ_CASES` raises the number of cases (default 3,000 per property,
//! a few seconds in release builds).

use proptest::prelude::*;
use rulebridge::model::{FieldChange, Side, SideValue};
use rulebridge::rules::{CompiledPack, RunOptions};
use rulebridge::snapshot::PackSnapshot;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::{Arc, OnceLock};

fn opts() -> RunOptions {
    RunOptions {
        sync_time: "2026-01-01T00:00:00Z".into(),
        linked: false,
        twin: rulebridge::rules::Twin::Rulebridge,
        explain: true,
    }
}

fn default_pack() -> &'static CompiledPack {
    static PACK: OnceLock<CompiledPack> = OnceLock::new();
    PACK.get_or_init(|| {
        let snapshot = PackSnapshot::read(Path::new("rules"), Some(Path::new("schemas"))).unwrap();
        CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"))
    })
}

/// Rules that hand their input back in awkward shapes.
fn echo_pack() -> &'static CompiledPack {
    static PACK: OnceLock<CompiledPack> = OnceLock::new();
    PACK.get_or_init(|| {
        let script = r#"
fn to_sentinel(incident, ctx) {
    let out = #{ title: `${incident.displayName}`, severity: "Low", status: "New" };
    out.raw = incident;
    out.copy = if incident.is_map() { incident.to_map() } else { () };
    out.keys = if incident.is_map() { incident.keys() } else { [] };
    for k in out.keys { out[k] = incident[k]; }
    out.nested = [[incident.alerts], [incident.customTags, [incident.id]]];
    out
}
fn to_defender(incident, ctx) {
    let p = incident.properties;
    #{ status: p.status, raw: p, copy: if p.is_map() { p.to_map() } else { () } }
}
fn direction(change, ctx) { if change.conflict { "merge" } else { "to_sentinel" } }
"#;
        let files = [
            (
                "pack.toml".to_string(),
                b"name = \"echo\"\n[[map]]\nname = \"echo\"\nscript = \"echo.rhai\"\n[[direction]]\nname = \"d\"\nscript = \"echo.rhai\"\n".to_vec(),
            ),
            ("echo.rhai".to_string(), script.as_bytes().to_vec()),
        ]
        .into_iter()
        .collect();
        let schemas = rulebridge::schema::BUILT_IN
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_bytes().to_vec()))
            .collect();
        let snapshot = PackSnapshot::from_parts("echo".into(), files, "<built-in>".into(), schemas);
        CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"))
    })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        // Names and values the rules look for.
        prop::sample::select(vec![
            "active",
            "resolved",
            "redirected",
            "high",
            "informational",
            "truePositive",
            "2026-03-01T10:00:00Z",
            "not a date",
            "\u{1F600}\u{0301}",
            "",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "displayName",
            "status",
            "severity",
            "classification",
            "determination",
            "assignedTo",
            "customTags",
            "comments",
            "alerts",
            "evidence",
            "title",
            "properties",
            "labels",
            "owner",
            "createdDateTime",
            "lastUpdateDateTime",
            "serviceSource",
            "redirectIncidentId",
            "tenantId",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z_~/ ]{1,12}",
    ]
}

/// An incident-shaped document: known fields with arbitrary values, plus noise.
fn incident() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(key(), json_value(), 0..12),
        any::<bool>(),
    )
        .prop_map(|(fields, with_id)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            if with_id {
                map.insert("id".into(), json!("fuzz-1"));
            }
            Value::Object(map)
        })
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_json_through_any_pipeline_is_an_outcome_or_a_rule_error(doc in incident(), props in json_value()) {
        let incident = Arc::new(doc.clone());
        let mut sentinel = doc;
        if let Value::Object(map) = &mut sentinel {
            map.insert("properties".into(), props);
        }
        let sentinel = Arc::new(sentinel);
        for pack in [default_pack(), echo_pack()] {
            // Either result is fine; a panic or an abort fails the property.
            let _ = pack.run_pipeline(incident.clone(), Side::Defender, &opts());
            let _ = pack.run_pipeline(sentinel.clone(), Side::Sentinel, &opts());
        }
    }

    #[test]
    fn any_field_change_gets_a_decision_or_a_rule_error(
        field in key(), base in json_value(), d in json_value(), s in json_value(),
        d_changed in any::<bool>(), s_changed in any::<bool>(), doc in incident(),
    ) {
        let change = FieldChange {
            field,
            base,
            defender: SideValue { value: d, base: Value::Null, changed: d_changed, changed_at: Some("2026-03-01T10:00:00Z".into()) },
            sentinel: SideValue { value: s, base: Value::Null, changed: s_changed, changed_at: None },
        };
        let incident = Arc::new(doc);
        for pack in [default_pack(), echo_pack()] {
            let _ = pack.decide(&change, incident.clone(), None, &opts());
        }
    }
}
