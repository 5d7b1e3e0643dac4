//! The default rule pack (`rules/`) against its own tests and against every real
//! Microsoft payload in `tests/fixtures/microsoft/`, plus the real-world inputs the
//! issue names: nulls, legacy names, unknown enum values, hundreds of alerts.

use rulebridge::model::Side;
use rulebridge::packtest::{run_pack_tests, summary};
use rulebridge::rules::{CompiledPack, RuleErrorKind, RunOptions, Verdict};
use rulebridge::schema::{self, SchemaSet};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

use crate::common::pack;

fn opts(linked: bool) -> RunOptions {
    RunOptions {
        sync_time: "2026-01-01T00:00:00Z".into(),
        linked,
        twin: rulebridge::rules::Twin::Rulebridge,
        explain: true,
    }
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(Path::new("tests/fixtures/microsoft").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn synced(pack: &CompiledPack, incident: Value, source: Side) -> Value {
    match pack
        .run_pipeline(Arc::new(incident), source, &opts(true))
        .unwrap_or_else(|e| panic!("{e}"))
        .verdict
    {
        Verdict::Synced { body } => body,
        Verdict::Filtered { rule } => panic!("filtered by {rule}"),
    }
}

#[test]
fn the_default_pack_passes_its_own_tests() {
    let results = run_pack_tests(&pack());
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}\n{}", r.name, r.detail))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(results.len() >= 15, "{}", summary(&results));
}

#[test]
fn the_built_in_schemas_are_the_schemas_folder() {
    for (name, text) in schema::BUILT_IN {
        assert_eq!(
            std::fs::read_to_string(Path::new("schemas").join(name)).unwrap(),
            text,
            "{name}"
        );
    }
    let _ = SchemaSet::built_in();
}

#[test]
fn every_graph_incident_fixture_maps_to_a_valid_sentinel_put_body() {
    let pack = pack();
    let mut seen = 0;
    for name in [
        "microsoft-graph-docs-contrib--v1.0--security-list-incidents--expand-alerts--response.json",
        "microsoft-graph-docs-contrib--v1.0--security-list-incidents--response.json",
        "learn.microsoft.com--graph-v1.0--security-incident-update--response.json",
    ] {
        let doc = fixture(name);
        let incidents = doc
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![doc.clone()]);
        for incident in incidents {
            let id = incident["id"].as_str().unwrap().to_string();
            let body = synced(&pack, incident, Side::Defender);
            assert!(pack
                .schemas
                .check(schema::SENTINEL_INCIDENT, &body)
                .is_empty());
            let labels: Vec<&str> = body["properties"]["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["labelName"].as_str().unwrap())
                .collect();
            assert!(
                labels.contains(&format!("defender-xdr:{id}").as_str()),
                "{name}: {labels:?}"
            );
            assert!(body["properties"]["description"]
                .as_str()
                .unwrap()
                .contains(&id));
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn every_sentinel_incident_fixture_maps_to_a_valid_defender_patch_body() {
    let pack = pack();
    let get = fixture("azure-rest-api-specs--securityinsights--stable-2024-03-01--examples--incidents--GetIncidentById.json");
    let list = fixture("azure-rest-api-specs--securityinsights--stable-2023-02-01--examples--incidents--GetIncidents.json");
    let create = fixture("azure-rest-api-specs--securityinsights--stable-2023-02-01--examples--incidents--CreateIncident.json");
    let mut incidents = vec![
        get["responses"]["200"]["body"].clone(),
        create["responses"]["201"]["body"].clone(),
    ];
    incidents.extend(
        list["responses"]["200"]["body"]["value"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    assert_eq!(incidents.len(), 3);
    for incident in incidents {
        let body = synced(&pack, incident, Side::Sentinel);
        assert!(
            pack.schemas
                .check(schema::DEFENDER_UPDATE, &body)
                .is_empty(),
            "{body}"
        );
        assert_eq!(body["status"], "resolved");
    }
    // The request of CreateIncident is itself a valid PUT body by our schema.
    let request = json!({"properties": create["parameters"]["incident"]["properties"]});
    assert_eq!(
        pack.schemas.check(schema::SENTINEL_INCIDENT, &request),
        vec![]
    );
}

#[test]
fn the_alert_fixture_as_an_incident_alert_feeds_the_entity_summary() {
    let alert = fixture("microsoft-graph-docs-contrib--v1.0--security-alert-get--response.json");
    let incident = json!({"id": "77", "status": "active", "severity": "high", "alerts": [alert]});
    let body = synced(&pack(), incident, Side::Defender);
    let description = body["properties"]["description"].as_str().unwrap();
    assert!(description.contains("Alerts (1): "), "{description}");
    assert!(description.contains("Accounts: "), "{description}");
}

#[test]
fn an_alert_passed_off_as_an_incident_is_rejected_at_its_odata_type() {
    // An alert has an id, a status and a severity too; only its type tells it apart.
    let alert = fixture("microsoft-graph-docs-contrib--v1.0--security-alert-get--response.json");
    let err = pack()
        .run_pipeline(Arc::new(alert), Side::Defender, &opts(false))
        .expect_err("an alert is not an incident");
    assert_eq!(err.kind, RuleErrorKind::InvalidInput);
    assert_eq!(err.pointer.as_deref(), Some("/@odata.type"));
    for accepted in [
        "#microsoft.graph.security.incident",
        "microsoft.graph.security.incident",
    ] {
        let incident =
            json!({"@odata.type": accepted, "id": "5", "status": "active", "severity": "low"});
        synced(&pack(), incident, Side::Defender);
    }
}

#[test]
fn nulls_everywhere_still_map() {
    let incident = json!({
        "id": "9", "status": "active", "severity": "medium", "displayName": null, "description": null,
        "assignedTo": null, "classification": null, "determination": null, "customTags": null,
        "comments": null, "alerts": null, "createdDateTime": null, "lastUpdateDateTime": null,
        "incidentWebUrl": null, "redirectIncidentId": null
    });
    let body = synced(&pack(), incident, Side::Defender);
    let p = &body["properties"];
    assert_eq!(p["title"], "Microsoft Defender XDR incident 9");
    assert_eq!(p["owner"], Value::Null);
    assert!(p.get("firstActivityTimeUtc").is_none_or(Value::is_null));
}

#[test]
fn hundreds_of_alerts_and_a_huge_description_stay_within_sentinel_limits() {
    let alerts: Vec<Value> = (0..400)
        .map(|i| json!({
            "id": format!("da{i}"), "title": format!("Alert number {i} — ünïcödé"), "serviceSource": "microsoftDefenderForEndpoint",
            "category": "Execution", "mitreTechniques": [format!("T{}", 1000 + i % 50)],
            "firstActivityDateTime": format!("2026-02-01T10:{:02}:00Z", i % 60), "lastActivityDateTime": "2026-02-02T10:00:00.1234567Z",
            "evidence": [{"@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": format!("host{i}.contoso.com")},
                         {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": {"userPrincipalName": format!("user{i}@contoso.com")}}]
        }))
        .collect();
    let incident = json!({"id": "1000", "status": "inProgress", "severity": "low", "description": "x".repeat(20_000), "alerts": alerts});
    let body = synced(&pack(), incident, Side::Defender);
    let description = body["properties"]["description"].as_str().unwrap();
    assert!(
        description.encode_utf16().count() <= 5000,
        "{}",
        description.encode_utf16().count()
    );
    assert!(description.starts_with("Microsoft Defender XDR incident 1000"));
    assert_eq!(
        body["properties"]["firstActivityTimeUtc"],
        "2026-02-01T10:00:00Z"
    );
    assert_eq!(body["properties"]["status"], "Active");
}

#[test]
fn a_defender_incident_that_breaks_its_input_schema_is_refused_with_a_pointer() {
    let err = pack()
        .run_pipeline(
            Arc::new(json!({"id": "5", "customTags": ["ok", 7]})),
            Side::Defender,
            &opts(false),
        )
        .unwrap_err();
    assert_eq!(err.pointer.as_deref(), Some("/customTags/1"));
}

#[test]
fn explain_records_which_rule_changed_which_fields() {
    let pack = pack();
    let alert = json!({"evidence": [{"userAccount": {"userPrincipalName": "cfo@contoso.com"}}]});
    let incident = json!({"id": "12", "status": "active", "severity": "low", "alerts": [alert]});
    let outcome = pack
        .run_pipeline(Arc::new(incident), Side::Defender, &opts(false))
        .unwrap();
    let stages: Vec<(&str, Vec<String>)> = outcome
        .steps
        .iter()
        .map(|s| (s.rule.as_str(), s.changed.clone()))
        .collect();
    assert_eq!(stages[0].0, "skip-noise");
    assert_eq!(stages[1].0, "microsoft-standard");
    assert!(stages[1].1.contains(&"severity".to_string()));
    assert_eq!(
        stages[2],
        (
            "vip-accounts",
            vec!["labels".to_string(), "severity".to_string()]
        )
    );
    assert_eq!(
        outcome.steps[2].document.as_ref().unwrap()["severity"],
        "High"
    );
    assert_eq!(
        outcome.steps[1].document.as_ref().unwrap()["severity"],
        "Low"
    );
    assert_eq!(outcome.pack_version, pack.version);
}

fn utf16_units(s: &str) -> usize {
    s.encode_utf16().count()
}

#[test]
fn an_emoji_description_is_clipped_in_utf16_units_and_not_dead_lettered() {
    // 4,999 emoji: 4,999 characters, so it passes a code-point limit of 5,000, but
    // 9,998 UTF-16 code units, which Sentinel (.NET) refuses with a 400.
    let pack = pack();
    let own = "😀".repeat(4_999);
    let incident = json!({"id": "903", "status": "active", "severity": "low", "displayName": "Emoji", "description": own});
    let body = synced(&pack, incident, Side::Defender);
    let description = body["properties"]["description"].as_str().unwrap();
    assert!(
        utf16_units(description) <= 5000,
        "{}",
        utf16_units(description)
    );
    assert!(description.starts_with("Microsoft Defender XDR incident 903\n\n😀😀"));
    assert!(
        description.ends_with("😀…"),
        "clipped whole, with the marker"
    );
    assert_eq!(
        pack.schemas.check(schema::SENTINEL_INCIDENT, &body),
        vec![],
        "the body must pass the UTF-16 limit"
    );
    // The same text in Sentinel's description and a Defender summary of alerts with
    // emoji titles: every part clipped, the whole within the limit.
    let alerts: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("da{i}"), "title": format!("{i} {}", "🔥".repeat(400))}))
        .collect();
    let incident = json!({"id": "904", "status": "active", "severity": "low", "summary": "😀".repeat(3_000), "alerts": alerts});
    let body = synced(&pack, incident, Side::Defender);
    let description = body["properties"]["description"].as_str().unwrap();
    assert!(
        utf16_units(description) <= 5000,
        "{}",
        utf16_units(description)
    );
    assert!(
        utf16_units(description) >= 4990,
        "the budget is used, not wasted"
    );
    assert_eq!(pack.schemas.check(schema::SENTINEL_INCIDENT, &body), vec![]);
}

fn put_body(description: &str) -> Value {
    json!({"properties": {"title": "t", "severity": "Low", "status": "New", "description": description}})
}

#[test]
fn the_schema_counts_a_description_in_utf16_units() {
    let schemas = SchemaSet::built_in();
    // 2,600 emoji: within 5,000 code points, 5,200 UTF-16 code units.
    let got = schemas.check(schema::SENTINEL_INCIDENT, &put_body(&"😀".repeat(2_600)));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].pointer, "/properties/description");
    let message = &got[0].message;
    assert!(
        message.contains("5200 UTF-16 code units") && message.contains("limit of 5000"),
        "{message}"
    );
    // The value is quoted, but only its start: a message is a log line, not a dump.
    assert!(message.starts_with("\"😀😀"), "{message}");
    assert!(message.chars().count() < 200, "{}", message.chars().count());

    // Exactly at the limit is fine, one unit over is not, whatever the characters.
    for (ok, text) in [
        (true, "😀".repeat(2_500)),
        (true, "x".repeat(5_000)),
        (true, "漢".repeat(5_000)),
        (false, format!("{}😀", "x".repeat(4_999))),
        (false, "x".repeat(5_001)),
    ] {
        let violations = schemas.check(schema::SENTINEL_INCIDENT, &put_body(&text));
        assert_eq!(
            violations.is_empty(),
            ok,
            "{} units: {violations:?}",
            utf16_units(&text)
        );
    }
}

#[test]
fn comment_bodies_are_limited_in_utf16_units_on_both_sides() {
    let schemas = SchemaSet::built_in();
    let def = |schema: &str, def: &str| {
        schemas
            .compile(
                &json!({"$ref": format!("https://rulebridge.dev/schemas/{schema}#/$defs/{def}")}),
            )
            .unwrap()
    };
    let sentinel = def(schema::SENTINEL_INCIDENT, "comment");
    let graph = def(schema::DEFENDER_UPDATE, "comment");
    let within = "😀".repeat(15_000); // 30,000 units
    let over = format!("{within}!");
    assert!(sentinel.is_valid(&json!({"properties": {"message": within}})));
    assert!(graph.is_valid(&json!({"comment": within})));
    let got = schema::violations(&sentinel, &json!({"properties": {"message": over}}));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].pointer, "/properties/message");
    assert!(
        got[0].message.contains("30001 UTF-16 code units"),
        "{}",
        got[0].message
    );
    let got = schema::violations(&graph, &json!({"comment": over}));
    assert_eq!(got[0].pointer, "/comment");
}
