//! The emulator's seed data and analysts: the generator's determinism and variety (and
//! that its output is what the Defender input schema accepts), seed files in every
//! accepted shape with located errors, analysts that only ever make valid writes on
//! both sides, the control route over real HTTP, and the `emulate` command's flags.

use reqwest::{Client, StatusCode};
use rulebridge::emulator::analysts::{self, AnalystEdit, Analysts, EditKind};
use rulebridge::emulator::seed::{generate, load_seed_file, SeedError};
use rulebridge::emulator::{Emulator, EmulatorConfig, EmulatorInfo, Store};
use rulebridge::model::Side;
use rulebridge::schema::{SchemaSet, DEFENDER_INCIDENT};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

const BASE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/incidents";

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

#[test]
fn the_generator_is_deterministic_per_seed() {
    let a = serde_json::to_string(&generate(60, 7)).unwrap();
    let b = serde_json::to_string(&generate(60, 7)).unwrap();
    assert_eq!(a, b, "same (n, seed): byte-identical");
    assert_ne!(a, serde_json::to_string(&generate(60, 8)).unwrap());
    assert!(generate(0, 7).is_empty());
    // A prefix is stable too: asking for more does not reshuffle the first ones' ids.
    let ids = |v: Vec<Value>| {
        v.iter()
            .map(|i| str_of(i, "id").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(generate(60, 7))[..1], ids(generate(1, 7))[..1]);
}

#[test]
fn generated_incidents_have_the_variety_of_real_tenants() {
    let incidents = generate(500, 1);
    let set = |f: &dyn Fn(&Value) -> Vec<String>| -> HashSet<String> {
        incidents.iter().flat_map(f).collect()
    };
    let statuses = set(&|i| vec![str_of(i, "status").to_string()]);
    for s in ["active", "inProgress", "resolved", "redirected"] {
        assert!(statuses.contains(s), "status {s} in {statuses:?}");
    }
    let severities = set(&|i| vec![str_of(i, "severity").to_string()]);
    for s in [
        "unknown",
        "informational",
        "low",
        "medium",
        "high",
        "unknownFutureValue",
    ] {
        assert!(severities.contains(s), "severity {s} in {severities:?}");
    }
    let future = incidents
        .iter()
        .filter(|i| i["severity"] == "unknownFutureValue")
        .count();
    assert!(future < 25, "unknownFutureValue is rare: {future}");
    let active = incidents.iter().filter(|i| i["status"] == "active").count();
    assert!(active > 200, "mostly active: {active}");

    let ids: Vec<&str> = incidents.iter().map(|i| str_of(i, "id")).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 500, "unique ids");
    assert!(
        ids.iter().all(|id| id.parse::<u64>().is_ok()),
        "numeric string ids"
    );
    let now = chrono::Utc::now();
    let mut sizes = Vec::new();
    for i in &incidents {
        let id = str_of(i, "id");
        let time = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(str_of(i, k))
                .unwrap_or_else(|e| panic!("{id} {k}: {e}"))
        };
        assert!(
            time("createdDateTime") <= time("lastUpdateDateTime"),
            "{id}"
        );
        assert!(time("lastUpdateDateTime") < now, "{id}: in the past");
        match str_of(i, "status") {
            "redirected" => {
                let target = str_of(i, "redirectIncidentId");
                assert!(
                    ids.contains(&target) && target != id,
                    "{id} redirects to another generated incident"
                );
            }
            status => {
                assert!(i["redirectIncidentId"].is_null(), "{id}");
                let class = i["classification"].as_str();
                if status == "resolved" {
                    assert!(
                        matches!(
                            class,
                            Some(
                                "truePositive" | "falsePositive" | "informationalExpectedActivity"
                            )
                        ),
                        "{id}"
                    );
                    assert!(
                        !matches!(i["determination"].as_str(), None | Some("unknown")),
                        "{id}"
                    );
                } else if status == "active" {
                    assert!(
                        matches!(class, None | Some("unknown")),
                        "{id}: open incidents are unclassified"
                    );
                }
            }
        }
        let alerts = i["alerts"].as_array().unwrap();
        assert!(alerts.len() <= 6, "{id}");
        for a in alerts {
            let n = a["evidence"].as_array().unwrap().len();
            assert!((1..=5).contains(&n), "{id}: {n} evidence items");
            assert!(
                a["mitreTechniques"].is_array()
                    && a["serviceSource"].is_string()
                    && a["category"].is_string()
            );
            assert!(
                a["firstActivityDateTime"].is_string() && a["lastActivityDateTime"].is_string()
            );
        }
        sizes.push(serde_json::to_string(i).unwrap().len());
    }
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    assert!(
        (2_000..=6_000).contains(&median),
        "typical incident 2–6 KB, median {median}"
    );

    let has = |p: &dyn Fn(&Value) -> bool| incidents.iter().any(p);
    assert!(
        has(&|i| i.get("tags").is_some_and(Value::is_array)),
        "legacy tags"
    );
    assert!(
        has(&|i| i["customTags"].as_array().is_some_and(|t| !t.is_empty())),
        "customTags"
    );
    let comments: Vec<&Value> = incidents
        .iter()
        .flat_map(|i| i["comments"].as_array().unwrap())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.get("createdBy").is_some() && c.get("createdTime").is_some()),
        "legacy comment names"
    );
    assert!(
        comments
            .iter()
            .any(|c| c.get("createdByDisplayName").is_some()),
        "current comment names"
    );
    let descriptions: Vec<&Value> = incidents.iter().map(|i| &i["description"]).collect();
    assert!(descriptions.iter().any(|d| d.is_null()), "null description");
    assert!(
        descriptions
            .iter()
            .any(|d| d.as_str().is_some_and(|s| s.chars().count() > 5_000)),
        "long description"
    );
    let text = serde_json::to_string(&incidents).unwrap();
    for needle in ["détectée", "🔥", "张伟", "检测到"] {
        assert!(text.contains(needle), "unicode {needle}");
    }
    assert!(has(&|i| i["assignedTo"].is_null()) && has(&|i| str_of(i, "assignedTo").contains('@')));

    let evidence: Vec<&Value> = incidents
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap())
        .flat_map(|a| a["evidence"].as_array().unwrap())
        .collect();
    let kinds: HashSet<&str> = evidence.iter().map(|e| str_of(e, "@odata.type")).collect();
    for k in ["device", "user", "ip", "url", "file", "process", "mailbox"] {
        assert!(
            kinds.contains(format!("#microsoft.graph.security.{k}Evidence").as_str()),
            "{k}Evidence in {kinds:?}"
        );
    }
    for e in &evidence {
        match str_of(e, "@odata.type") {
            "#microsoft.graph.security.userEvidence" => {
                for f in ["accountName", "domainName", "userPrincipalName"] {
                    assert!(e["userAccount"][f].is_string(), "userAccount.{f}");
                }
            }
            "#microsoft.graph.security.fileEvidence" => {
                assert!(e["fileDetails"]["fileName"].is_string())
            }
            "#microsoft.graph.security.mailboxEvidence" => assert!(e["primaryAddress"].is_string()),
            _ => {}
        }
    }
}

#[test]
fn every_generated_incident_matches_the_defender_incident_schema() {
    let schemas = SchemaSet::built_in();
    for incident in generate(500, 2) {
        let problems = schemas.check(DEFENDER_INCIDENT, &incident);
        assert!(problems.is_empty(), "{}: {problems:?}", incident["id"]);
    }
}

#[test]
fn graph_fixtures_load_and_other_resources_are_refused_with_the_reason() {
    let dir = Path::new("tests/fixtures/microsoft");
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = load_seed_file(&path);
        if name.starts_with("azure-rest-api-specs") {
            assert!(
                result.is_err(),
                "{name}: Sentinel examples are not Graph incidents"
            );
        } else if name.contains("alert-get") {
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains(&name) && err.contains("microsoft.graph.security.alert"),
                "{err}"
            );
        } else if name.contains("incident") {
            let incidents = result.unwrap_or_else(|e| panic!("{e}"));
            assert!(!incidents.is_empty(), "{name}");
            let mut store = Store::new("t", "c", "s");
            assert_eq!(store.seed_many(incidents.clone()).unwrap(), incidents.len());
            for i in &incidents {
                let stored = &store.graph[str_of(i, "id")];
                assert!(
                    stored.get("@odata.context").is_none(),
                    "seeding drops the response context"
                );
                assert_eq!(stored["displayName"], i["displayName"]);
            }
            loaded += 1;
        }
    }
    assert_eq!(loaded, 3, "the update response and both list responses");
}

#[test]
fn seed_files_in_every_shape_and_errors_that_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let one = json!({"id": "1", "displayName": "one"});
    let two = json!({"id": "2", "displayName": "two"});
    let ids = |v: Vec<Value>| {
        v.iter()
            .map(|i| str_of(i, "id").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(load_seed_file(&write("single.json", &one.to_string())).unwrap()),
        ["1"]
    );
    assert_eq!(
        ids(load_seed_file(&write("array.json", &json!([one, two]).to_string())).unwrap()),
        ["1", "2"]
    );
    let list = json!({"@odata.context": "x", "value": [one, two]});
    assert_eq!(
        ids(load_seed_file(&write(
            "list.json",
            &serde_json::to_string_pretty(&list).unwrap()
        ))
        .unwrap()),
        ["1", "2"]
    );
    let jsonl = format!("{one}\n\n{}\n{two}\n", json!({"value": [{"id": "3"}]}));
    assert_eq!(
        ids(load_seed_file(&write("lines.jsonl", &jsonl)).unwrap()),
        ["1", "3", "2"]
    );
    assert_eq!(
        ids(load_seed_file(&write("lines.json", &jsonl)).unwrap()),
        ["1", "3", "2"],
        "JSONL detected"
    );

    let bad = write("bad.jsonl", &format!("{one}\n{two}\n{{\"id\": \"3\",\n"));
    let err = load_seed_file(&bad).unwrap_err();
    assert!(matches!(err, SeedError::Line { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: invalid JSON", bad.display())),
        "{err}"
    );
    let no_id = write(
        "noid.jsonl",
        &format!("{one}\n{{\"displayName\": \"x\"}}\n"),
    );
    let err = load_seed_file(&no_id).unwrap_err().to_string();
    assert!(
        err.contains("noid.jsonl:2:") && err.contains("no 'id'"),
        "{err}"
    );

    let typo = write(
        "typo.json",
        "{\n  \"id\": \"1\",\n  \"displayName\": nope\n}\n",
    );
    let err = load_seed_file(&typo).unwrap_err();
    assert!(matches!(err, SeedError::Json { line: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("typo.json:3:"), "{err}");
    let err = load_seed_file(&write(
        "num.json",
        &json!({"value": [{"id": 5}]}).to_string(),
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("value[0]") && err.to_string().contains("string"),
        "{err}"
    );
    let err = load_seed_file(&write(
        "sentinel.json",
        &json!({"id": "/x/a", "name": "a", "properties": {}}).to_string(),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("Sentinel"), "{err}");
    let err = load_seed_file(&dir.path().join("missing.json")).unwrap_err();
    assert!(
        matches!(err, SeedError::Read { .. }) && err.to_string().contains("missing.json"),
        "{err}"
    );

    let mut store = Store::new("t", "c", "s");
    assert!(store
        .seed_many(vec![one.clone(), json!({"id": 3})])
        .is_err());
    assert!(store.graph.is_empty(), "all or nothing");
}

/// A Sentinel incident as the sync would create it.
fn put_sentinel(store: &mut Store, base: &str, name: &str, status: &str) {
    let mut props = json!({"title": format!("Incident {name}"), "severity": "Medium", "status": status,
                           "description": "from Defender", "labels": [{"labelName": "Defender", "labelType": "User"}]});
    if status == "Closed" {
        props["classification"] = json!("FalsePositive");
        props["classificationReason"] = json!("InaccurateData");
    }
    store
        .sentinel_put(base, name, &json!({ "properties": props }), None)
        .unwrap();
}

fn seeded_store() -> Store {
    let mut store = Store::new("t", "c", "s");
    store.seed_many(generate(100, 3)).unwrap();
    for (i, status) in ["New", "New", "Active", "Closed"]
        .iter()
        .cycle()
        .take(20)
        .enumerate()
    {
        put_sentinel(&mut store, BASE, &format!("sentinel-{i:02}"), status);
    }
    store
}

#[test]
fn a_thousand_analyst_edits_are_all_valid_writes_on_both_sides() {
    let mut store = seeded_store();
    let mut analysts = Analysts::new(42);
    let mut edits = Vec::new();
    for n in 0..1_000 {
        let graph_before = store.graph.clone();
        let sentinel_before = store.sentinel.clone();
        let edit = match analysts.try_edit_once(&mut store) {
            Ok(Some(edit)) => edit,
            other => panic!("edit {n}: {other:?}"),
        };
        // Every write advances what a sync watches: Graph's lastUpdateDateTime (comments
        // excepted: the service does not bump it), Sentinel's etag and modified time.
        match (edit.side, edit.kind) {
            (Side::Defender, EditKind::Comment) => {
                let comments = store.graph[&edit.incident]["comments"].as_array().unwrap();
                assert_eq!(comments.last().unwrap()["comment"], edit.detail.as_str());
            }
            (Side::Defender, _) => {
                let (before, after) = (&graph_before[&edit.incident], &store.graph[&edit.incident]);
                assert_ne!(
                    before["lastUpdateDateTime"], after["lastUpdateDateTime"],
                    "{edit:?}"
                );
                assert_eq!(after["lastModifiedBy"], "API-App:analyst@contoso.com");
            }
            (Side::Sentinel, EditKind::Comment) => {
                let comments = &store.sentinel_comments[&edit.incident];
                assert!(comments
                    .values()
                    .any(|c| c["properties"]["message"] == edit.detail.as_str()));
            }
            (Side::Sentinel, _) => {
                let (before, after) = (
                    &sentinel_before[&edit.incident],
                    &store.sentinel[&edit.incident],
                );
                assert_ne!(before["etag"], after["etag"], "{edit:?}");
                // PUT replaces the writable properties: the analyst kept the others.
                assert_eq!(before["properties"]["title"], after["properties"]["title"]);
                assert_eq!(
                    before["properties"]["description"],
                    after["properties"]["description"]
                );
            }
        }
        edits.push(edit);
    }
    let count = |side: Side| edits.iter().filter(|e| e.side == side).count();
    assert!(
        count(Side::Defender) > 300 && count(Side::Sentinel) > 300,
        "both sides"
    );
    let kinds: HashSet<(Side, EditKind)> = edits.iter().map(|e| (e.side, e.kind)).collect();
    for kind in [
        EditKind::Assign,
        EditKind::Start,
        EditKind::Close,
        EditKind::Tag,
        EditKind::Comment,
    ] {
        assert!(
            kinds.contains(&(Side::Defender, kind)) && kinds.contains(&(Side::Sentinel, kind)),
            "{kind:?} on both sides"
        );
    }
    assert!(kinds.contains(&(Side::Defender, EditKind::Untag)));
    let closed: BTreeMap<&str, &Value> = store
        .sentinel
        .iter()
        .map(|(k, v)| (k.as_str(), &v["properties"]))
        .collect();
    assert!(closed
        .values()
        .all(|p| p["status"] != "Closed" || p["classification"].is_string()));

    // Same seed, same data: the same edits.
    let replay = |seed| {
        let mut store = seeded_store();
        let mut analysts = Analysts::new(seed);
        (0..200)
            .map(|_| analysts.edit_once(&mut store).unwrap())
            .collect::<Vec<AnalystEdit>>()
    };
    assert_eq!(replay(9), replay(9));
    assert_ne!(replay(9), replay(10));
}

async fn token(client: &Client, info: &EmulatorInfo, scope: &str) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", info.client_id.as_str()),
        ("client_secret", info.client_secret.as_str()),
        ("scope", scope),
    ];
    let body: Value = client
        .post(&info.token_url)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn get(client: &Client, url: &str, token: &str) -> Value {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_control_route_applies_edits_that_clients_then_see() {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    let info = emulator.info();
    let (sentinel_url, api) = info.sentinel_incidents_url.split_once('?').unwrap();
    let sentinel_path = sentinel_url
        .split_once("127.0.0.1")
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .1;
    {
        let mut store = emulator.store();
        store.seed_many(generate(10, 5)).unwrap();
        for (i, status) in ["New", "Active", "Closed", "New"].iter().enumerate() {
            put_sentinel(
                &mut store,
                &format!("/{sentinel_path}"),
                &format!("s{i}"),
                status,
            );
        }
    }
    let client = Client::new();
    let control = format!("http://{}/_emulator/analysts/edit", emulator.addr);
    let one: Value = client
        .post(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        one["value"].as_array().unwrap().len(),
        1,
        "default count 1: {one}"
    );
    let two: Value = client
        .post(format!("{control}?count=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(two["value"].as_array().unwrap().len(), 2);
    let response = client
        .post(&control)
        .json(&json!({"count": 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let edits: Vec<AnalystEdit> = serde_json::from_value(body["value"].clone()).unwrap();
    assert_eq!(edits.len(), 40);
    let bad = client
        .post(format!("{control}?count=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let graph_token = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let arm_token = token(&client, &info, "https://management.azure.com/.default").await;
    let mut sides = HashSet::new();
    for edit in &edits {
        sides.insert(edit.side);
        match edit.side {
            Side::Defender => {
                let incident = get(
                    &client,
                    &format!(
                        "{}/security/incidents/{}",
                        info.graph_base_url, edit.incident
                    ),
                    &graph_token,
                )
                .await;
                if edit.kind == EditKind::Comment {
                    let comments = incident["comments"].as_array().unwrap();
                    assert!(
                        comments
                            .iter()
                            .any(|c| c["comment"] == edit.detail.as_str()),
                        "{edit:?}"
                    );
                } else {
                    assert_eq!(
                        incident["lastModifiedBy"], "API-App:analyst@contoso.com",
                        "{edit:?}"
                    );
                }
            }
            Side::Sentinel => {
                let url = format!("{sentinel_url}/{}", edit.incident);
                if edit.kind == EditKind::Comment {
                    let comments = get(&client, &format!("{url}/comments?{api}"), &arm_token).await;
                    let messages: Vec<&Value> = comments["value"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| &c["properties"]["message"])
                        .collect();
                    assert!(
                        messages.iter().any(|m| *m == edit.detail.as_str()),
                        "{edit:?}"
                    );
                } else {
                    let incident = get(&client, &format!("{url}?{api}"), &arm_token).await;
                    let p = &incident["properties"];
                    assert_ne!(p["createdTimeUtc"], p["lastModifiedTimeUtc"], "{edit:?}");
                }
            }
        }
    }
    assert_eq!(sides.len(), 2, "both sides edited");
}

#[tokio::test]
async fn spawned_analysts_edit_at_their_rate_until_aborted() {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    emulator.store().seed_many(generate(30, 11)).unwrap();
    let touched = |store: &Store| {
        store
            .graph
            .values()
            .filter(|i| {
                i["lastModifiedBy"] == "API-App:analyst@contoso.com"
                    || i["comments"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["createdByDisplayName"] == "API-App:analyst@contoso.com")
                    })
            })
            .count()
    };
    let task = analysts::spawn(emulator.store_handle(), 200.0, 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    task.abort();
    let _ = task.await;
    let after_abort = touched(&emulator.store());
    assert!(after_abort > 5, "edits happened: {after_abort}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        touched(&emulator.store()),
        after_abort,
        "no edits after abort"
    );
    // Rate 0 is "off": the task ends on its own.
    analysts::spawn(emulator.store_handle(), 0.0, 1)
        .await
        .unwrap();
}

#[test]
fn emulate_help_names_every_flag_and_a_bad_seed_file_fails_before_listening() {
    let bin = env!("CARGO_BIN_EXE_rulebridge");
    let out = std::process::Command::new(bin)
        .args(["emulate", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--seed",
        "--generate",
        "--random-seed",
        "--analysts",
        "--faults",
        "--profile",
        "--connector-incidents",
        "--sentinel-incidents-in-graph",
        "--graph-expand-filter-limit",
        "127.0.0.1:8943",
        "[default: 200]",
    ] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }
    let out = std::process::Command::new(bin)
        .args([
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "tests/fixtures/microsoft/no-such-file.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file.json"));
}
