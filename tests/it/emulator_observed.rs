//! The emulator's observed profile (the default), over real HTTP on 127.0.0.1: each
//! behaviour of `../shared/reference/observed-behaviour.md` that it models, one test
//! each, and a diff of its Sentinel shapes against the real service's recorded
//! responses in `tests/fixtures/recorded/`.

use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::emulator::throttle::{Bucket, ThrottleConfig};
use rulebridge::emulator::{seed, Emulator, EmulatorConfig, EmulatorInfo, Profile};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

const GRAPH: &str = "https://graph.microsoft.com/.default";
const ARM: &str = "https://management.azure.com/.default";

struct Env {
    emulator: Emulator,
    info: EmulatorInfo,
    client: Client,
    graph: String,
    arm: String,
}

async fn token(client: &Client, info: &EmulatorInfo, scope: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", info.client_id.as_str()),
        ("client_secret", info.client_secret.as_str()),
        ("scope", scope),
    ];
    client
        .post(&info.token_url)
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn access_token(client: &Client, info: &EmulatorInfo, scope: &str) -> String {
    let body: Value = token(client, info, scope).await.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn start_with(config: EmulatorConfig) -> Env {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let info = emulator.info();
    // Raw bodies: reqwest's gzip feature (rulebridge's clients use it) would otherwise
    // decompress and drop `Content-Encoding` before a test could look at them.
    let client = Client::builder().no_gzip().build().unwrap();
    let graph = access_token(&client, &info, GRAPH).await;
    let arm = access_token(&client, &info, ARM).await;
    Env {
        emulator,
        info,
        client,
        graph,
        arm,
    }
}

async fn start() -> Env {
    start_with(EmulatorConfig::default()).await
}

impl Env {
    async fn get(&self, url: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
        let response = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn graph_get(&self, path: &str) -> Value {
        let (status, _, body) = self
            .get(&format!("{}{path}", self.info.graph_base_url), &self.graph)
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    /// The Sentinel URL of `name` plus `suffix` (e.g. `/comments`), with api-version.
    fn sentinel(&self, name: &str, suffix: &str) -> String {
        let (base, query) = self.info.sentinel_incidents_url.split_once('?').unwrap();
        format!("{base}/{name}{suffix}?{query}")
    }

    async fn put(&self, url: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let response = self
            .client
            .put(url)
            .bearer_auth(&self.arm)
            .json(body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Graph incidents `1000 + i`, created a minute apart in id order.
    fn seed_graph(&self, n: usize) {
        let mut store = self.emulator.store();
        for i in 0..n {
            let at = format!("2025-01-01T{:02}:{:02}:00Z", i / 60, i % 60);
            store.seed_graph(json!({"id": format!("{}", 1000 + i), "displayName": format!("incident {i}"),
                "status": "active", "severity": "low", "createdDateTime": at, "lastUpdateDateTime": at,
                "alerts": [{"id": format!("da{i}"), "title": "alert", "serviceSource": "microsoftDefenderForEndpoint"}]}))
                .unwrap();
        }
    }

    /// Sentinel incidents `inc-000`… made through the store (no tokens spent).
    fn seed_sentinel(&self, n: usize) {
        let mut store = self.emulator.store();
        let base = store.sentinel_base.clone();
        for i in 0..n {
            let body = json!({"properties": {"title": format!("t{i}"), "severity": "Low", "status": "New"}});
            store
                .sentinel_put(&base, &format!("inc-{i:03}"), &body, None)
                .unwrap();
        }
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().or(i["id"].as_str()).unwrap().to_string())
        .collect()
}

/// `yyyy-mm-ddThh:mm:ss.fffffffZ`: exactly 7 fractional digits.
fn seven_digits(stamp: &str) -> bool {
    let Some((_, fraction)) = stamp.split_once('.') else {
        return false;
    };
    fraction.len() == 8
        && fraction.ends_with('Z')
        && fraction[..7].bytes().all(|b| b.is_ascii_digit())
        && chrono::DateTime::parse_from_rfc3339(stamp).is_ok()
}

#[tokio::test]
async fn graph_accepts_orderby_but_lists_newest_created_first() {
    let env = start().await;
    env.seed_graph(30);
    let body = env
        .graph_get("/security/incidents?$orderby=lastUpdateDateTime%20asc&$top=10")
        .await;
    let expected: Vec<String> = (0..10).map(|i| format!("{}", 1029 - i)).collect();
    assert_eq!(
        ids(&body),
        expected,
        "ignored $orderby: newest created first"
    );
    let (status, _, _) = env
        .get(
            &format!(
                "{}/security/incidents?$orderby=title",
                env.info.graph_base_url
            ),
            &env.graph,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "its syntax is still checked"
    );
}

#[tokio::test]
async fn graph_next_links_are_skip_offsets_over_the_live_set() {
    let env = start().await;
    env.seed_graph(120);
    let window =
        "lastUpdateDateTime ge 2000-01-01T00:00:00Z and lastUpdateDateTime lt 2030-01-01T00:00:00Z";
    let first = env
        .graph_get(&format!(
            "/security/incidents?$filter={window}&$top=50&$count=true"
        ))
        .await;
    assert_eq!(first["@odata.count"], 120, "the whole filtered set");
    let next = first["@odata.nextLink"].as_str().unwrap().to_string();
    assert!(
        next.contains("$skip=50") && next.contains("$top=50"),
        "{next}"
    );
    assert!(
        next.contains("$filter=lastUpdateDateTime%20ge%20"),
        "{next}"
    );
    // An incident already listed leaves the result set (here: resolved, then filtered
    // out by status) — every later item moves up by one and the walk skips one.
    let first_ids = ids(&first);
    let walk = |filter: &'static str| {
        let env = &env;
        async move {
            let mut url = format!(
                "{}/security/incidents?$filter={filter}&$top=50",
                env.info.graph_base_url
            );
            let mut pages = Vec::new();
            loop {
                let (_, _, body) = env.get(&url, &env.graph).await;
                pages.push(ids(&body));
                if pages.len() == 1 {
                    let gone = &pages[0][0];
                    env.client
                        .patch(format!(
                            "{}/security/incidents/{gone}",
                            env.info.graph_base_url
                        ))
                        .bearer_auth(&env.graph)
                        .json(&json!({"status": "inProgress"}))
                        .send()
                        .await
                        .unwrap();
                }
                match body["@odata.nextLink"].as_str() {
                    Some(n) => url = n.to_string(),
                    None => return pages,
                }
            }
        }
    };
    let pages = walk("status eq 'active'").await;
    let seen: HashSet<&String> = pages.iter().flatten().collect();
    assert_eq!(pages[0], first_ids);
    assert_eq!(pages[1][0], "1068", "page 2 starts one further down");
    assert!(
        !seen.contains(&"1069".to_string()),
        "1069 moved onto page 1 and was never listed"
    );
    assert_eq!(seen.len(), 119);
}

#[tokio::test]
async fn a_new_incident_mid_walk_repeats_an_item_on_the_next_page() {
    let env = start().await;
    env.seed_graph(60);
    let first = env.graph_get("/security/incidents?$top=50").await;
    env.emulator
        .store()
        .seed_graph(json!({"id": "5000", "createdDateTime": "2026-01-01T00:00:00Z"}))
        .unwrap();
    let next = first["@odata.nextLink"].as_str().unwrap();
    let (_, _, second) = env.get(next, &env.graph).await;
    assert_eq!(
        ids(&second)[0],
        ids(&first)[49],
        "the last of page 1, again"
    );
}

#[tokio::test]
async fn expand_with_filter_fails_above_the_tenant_limit_only() {
    let mut config = EmulatorConfig::default();
    config.observed.graph_expand_filter_limit = Some(5);
    let env = start_with(config).await;
    env.seed_graph(5);
    let filter = "$filter=lastUpdateDateTime%20ge%202000-01-01T00:00:00Z";
    let url = |q: &str| format!("{}/security/incidents?{q}", env.info.graph_base_url);
    let at_limit = env
        .get(&url(&format!("{filter}&$expand=alerts")), &env.graph)
        .await;
    assert_eq!(
        at_limit.0,
        StatusCode::OK,
        "5 incidents: not above the limit"
    );
    env.emulator
        .store()
        .seed_graph(json!({"id": "9999"}))
        .unwrap();
    let (status, _, body) = env
        .get(&url(&format!("{filter}&$expand=alerts")), &env.graph)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "InternalServerError");
    for alone in [filter.to_string(), "$expand=alerts".to_string()] {
        assert_eq!(
            env.get(&url(&alone), &env.graph).await.0,
            StatusCode::OK,
            "{alone}"
        );
    }
    let one = env
        .graph_get("/security/incidents/1003?$expand=alerts")
        .await;
    assert_eq!(one["alerts"][0]["id"], "da3");
    // The other way to the alerts: `alerts_v2`, by the filters Graph documents for it.
    // `incidentId` is not among them, so the emulator refuses it (the stricter reading).
    let (status, _, _) = env
        .get(
            &format!(
                "{}/security/alerts_v2?$filter=incidentId%20eq%20'1003'",
                env.info.graph_base_url
            ),
            &env.graph,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let all = env.graph_get("/security/alerts_v2?$count=true").await;
    assert!(ids(&all).contains(&"da3".to_string()), "{all}");
    assert_eq!(all["@odata.count"], ids(&all).len());
}

#[tokio::test]
async fn alerts_v2_lists_alerts_changed_in_a_window_by_offset_pages() {
    let env = start().await;
    env.seed_graph(3);
    let (quiet, changed, moved) = {
        let mut store = env.emulator.store();
        let quiet = store.graph_alerts().count();
        let since = store.tick();
        let ids: Vec<String> = store.graph.keys().cloned().collect();
        let mut changed = Vec::new();
        for n in 0..60 {
            let alert = store.graph_add_alert(&ids[n % 3], "New alert").unwrap();
            changed.push(alert["id"].as_str().unwrap().to_string());
        }
        // A move leaves the alert's own stamp where it was (the harder case).
        let first = store.graph[&ids[0]]["alerts"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let moved = store.graph_move_alert(&first, &ids[1]).unwrap();
        assert_eq!(moved["incidentId"], ids[1].as_str());
        (quiet, changed, (since, moved))
    };
    let (since, moved) = moved;
    let filter = format!("lastUpdateDateTime%20ge%20{since}");
    let first = env
        .graph_get(&format!(
            "/security/alerts_v2?$top=50&$count=true&$filter={filter}"
        ))
        .await;
    assert_eq!(
        first["@odata.count"], 60,
        "the new alerts only: {quiet} were older"
    );
    assert_eq!(ids(&first).len(), 50);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("$skip=50"), "{next}");
    let (_, _, second) = env.get(next, &env.graph).await;
    let mut seen: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    seen.sort();
    let mut want = changed.clone();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(moved["id"], "da0");
    assert_eq!(moved["lastUpdateDateTime"], "2025-01-01T00:00:00Z");
    assert!(
        !seen.contains(&"da0".to_string()),
        "a moved alert's stamp stays"
    );
}

#[tokio::test]
async fn newer_enum_members_need_the_prefer_header() {
    let env = start().await;
    env.emulator.store().seed_graph(json!({"id": "7", "status": "awaitingAction",
        "alerts": [{"id": "a1", "serviceSource": "microsoftSentinel", "detectionSource": "microsoftSentinel"},
                   {"id": "a2", "serviceSource": "microsoftThreatIntelligence"},
                   {"id": "a3", "serviceSource": "microsoftInsiderRiskManagement"},
                   {"id": "a4", "serviceSource": "microsoftDefenderForEndpoint"}]})).unwrap();
    let url = format!(
        "{}/security/incidents/7?$expand=alerts",
        env.info.graph_base_url
    );
    let plain = env.graph_get("/security/incidents/7?$expand=alerts").await;
    assert_eq!(plain["status"], "unknownFutureValue");
    let sources: Vec<&str> = plain["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["serviceSource"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "unknownFutureValue",
            "unknownFutureValue",
            "unknownFutureValue",
            "microsoftDefenderForEndpoint"
        ]
    );
    assert_eq!(plain["alerts"][0]["detectionSource"], "unknownFutureValue");
    let listed = env.graph_get("/security/incidents?$expand=alerts").await;
    assert_eq!(listed["value"][0]["status"], "unknownFutureValue");
    let opted: Value = env
        .client
        .get(&url)
        .bearer_auth(&env.graph)
        .header("Prefer", "include-unknown-enum-members")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(opted["status"], "awaitingAction");
    assert_eq!(opted["alerts"][0]["serviceSource"], "microsoftSentinel");
    assert_eq!(
        env.emulator.store().graph["7"]["status"],
        "awaitingAction",
        "the store keeps the real value"
    );
}

#[tokio::test]
async fn sentinel_incidents_appear_in_graph_by_rate_with_their_workspace_twin() {
    let mut config = EmulatorConfig::default();
    config.observed.sentinel_incidents_in_graph = 0.3;
    let env = start_with(config).await;
    env.emulator
        .store()
        .seed_many(seed::generate(100, 4))
        .unwrap();
    let store = env.emulator.store();
    let from_sentinel: Vec<&Value> = store
        .graph
        .values()
        .filter(|i| i["alerts"][0]["serviceSource"] == "microsoftSentinel")
        .collect();
    assert!(
        (15..=45).contains(&from_sentinel.len()),
        "{}",
        from_sentinel.len()
    );
    for incident in &from_sentinel {
        let id = incident["id"].as_str().unwrap();
        assert!(incident["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["detectionSource"] == "microsoftSentinel"));
        let twins = store
            .sentinel
            .values()
            .filter(|s| s["properties"]["providerIncidentId"] == id)
            .count();
        assert_eq!(twins, 1, "{id}: the workspace holds it once");
    }
    assert_eq!(store.sentinel.len(), from_sentinel.len());
    // The same data gives the same tenant.
    let mut again = rulebridge::emulator::Store::new("t", "c", "s");
    again.observed.sentinel_incidents_in_graph = 0.3;
    again.seed_many(seed::generate(100, 4)).unwrap();
    assert_eq!(again.graph, store.graph);
}

#[tokio::test]
async fn sentinel_lists_50_newest_first_with_opaque_skip_tokens() {
    let env = start().await;
    env.seed_sentinel(120);
    let (status, _, first) = env.get(&env.info.sentinel_incidents_url, &env.arm).await;
    assert_eq!(status, StatusCode::OK);
    let names = ids(&first);
    assert_eq!(names.len(), 50, "50 per page without $top");
    assert_eq!(names[0], "inc-119", "newest first");
    let next = first["nextLink"].as_str().unwrap();
    let (path, query) = next.split_once('?').unwrap();
    assert!(path.ends_with("/incidents"));
    let keys: Vec<&str> = query
        .split('&')
        .map(|p| p.split('=').next().unwrap())
        .collect();
    assert_eq!(keys, ["api-version", "$skipToken"], "{next}");
    let url = |q: &str| format!("{}&{q}", env.info.sentinel_incidents_url);
    assert_eq!(
        env.get(&url("$top=1001"), &env.arm).await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, _, all) = env.get(&url("$top=1000"), &env.arm).await;
    assert_eq!(ids(&all).len(), 120);
    assert!(
        all.get("nextLink").is_none(),
        "no nextLink key on the last page"
    );
    // An explicit $orderby is honoured, and the token carries it and the filter.
    let (_, _, asc) = env
        .get(&url("$orderby=properties/createdTimeUtc%20asc&$top=7&$filter=properties/lastModifiedTimeUtc%20ge%202000-01-01T00:00:00Z%20and%20properties/lastModifiedTimeUtc%20lt%202100-01-01T00:00:00Z"), &env.arm)
        .await;
    assert_eq!(ids(&asc)[0], "inc-000");
    let (_, _, asc2) = env.get(asc["nextLink"].as_str().unwrap(), &env.arm).await;
    assert_eq!(
        ids(&asc2),
        (7..14).map(|i| format!("inc-{i:03}")).collect::<Vec<_>>()
    );
    let (status, _, _) = env.get(&url("$skipToken=not-a-token"), &env.arm).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sentinel_skip_tokens_page_the_live_set() {
    let env = start().await;
    env.seed_sentinel(60);
    let (_, _, first) = env.get(&env.info.sentinel_incidents_url, &env.arm).await;
    assert_eq!(ids(&first)[0], "inc-059");
    // An incident of page 1 is deleted: page 2 starts one later than it would have.
    let response = env
        .client
        .delete(env.sentinel("inc-059", ""))
        .bearer_auth(&env.arm)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({}),
        "200 with {{}}"
    );
    let (_, _, second) = env.get(first["nextLink"].as_str().unwrap(), &env.arm).await;
    assert_eq!(ids(&second)[0], "inc-008", "inc-009 was skipped");
}

#[tokio::test]
async fn sentinel_filters_find_connector_incidents_by_provider_id() {
    let env = start().await;
    env.seed_graph(3);
    let name = env.emulator.add_connector_incident("1001").unwrap();
    assert_eq!(
        env.emulator.add_connector_incident("1001").unwrap(),
        name,
        "once"
    );
    env.seed_sentinel(3);
    let url = format!(
        "{}&$filter=properties/providerIncidentId%20eq%20'1001'",
        env.info.sentinel_incidents_url
    );
    let (_, _, found) = env.get(&url, &env.arm).await;
    assert_eq!(ids(&found), vec![name.clone()]);
    let p = &found["value"][0]["properties"];
    assert_eq!(p["providerName"], "Microsoft XDR");
    assert_eq!(p["title"], "incident 1");
    assert_eq!(
        (p["severity"].as_str(), p["status"].as_str()),
        (Some("Low"), Some("New"))
    );
    assert_eq!(p["labels"], json!([]));
    assert!(p["owner"]["objectId"].is_null() && p["owner"]["email"].is_null());
    assert!(p.get("description").is_none());
    assert_eq!(name.len(), 36, "a GUID name: {name}");
}

#[tokio::test]
async fn connector_incidents_are_made_by_rate_and_through_the_control_api() {
    let mut config = EmulatorConfig::default();
    config.observed.connector_incidents = 0.5;
    let env = start_with(config).await;
    env.emulator
        .store()
        .seed_many(seed::generate(60, 9))
        .unwrap();
    let (count, numbers, missing) = {
        let store = env.emulator.store();
        let numbers: BTreeSet<i64> = store
            .sentinel
            .values()
            .map(|s| s["properties"]["incidentNumber"].as_i64().unwrap())
            .collect();
        for s in store.sentinel.values() {
            let p = &s["properties"];
            let graph = &store.graph[p["providerIncidentId"].as_str().unwrap()];
            assert_eq!(p["title"], graph["displayName"]);
            assert_eq!(p["providerName"], "Microsoft XDR");
            if graph["status"] == "resolved" {
                assert_eq!(p["status"], "Closed");
                assert!(p["classification"].is_string());
            }
        }
        let linked: HashSet<&str> = store
            .sentinel
            .values()
            .map(|s| s["properties"]["providerIncidentId"].as_str().unwrap())
            .collect();
        let missing = store
            .graph
            .keys()
            .find(|k| !linked.contains(k.as_str()))
            .unwrap()
            .clone();
        (store.sentinel.len(), numbers, missing)
    };
    assert!((15..=45).contains(&count), "about half of 60: {count}");
    assert_eq!(numbers, (1..=count as i64).collect(), "numbers count up");
    let made: Value = env
        .client
        .post(format!(
            "http://{}/_emulator/connector/incidents",
            env.emulator.addr
        ))
        .json(&json!({"defenderId": missing}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        made["incident"]["properties"]["providerIncidentId"],
        missing.as_str()
    );
    assert_eq!(
        made["incident"]["properties"]["incidentNumber"],
        count as i64 + 1
    );
}

#[tokio::test]
async fn sentinel_names_are_lowercased_and_found_in_any_casing() {
    let env = start().await;
    let body = json!({"properties": {"severity": "Low", "status": "Active", "title": "SDKCreateIncidentTest"}});
    let (status, _, created) = env
        .put(&env.sentinel("testIncidents-5034", ""), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["name"], "testincidents-5034");
    let id = created["id"].as_str().unwrap();
    assert!(
        id.ends_with("/providers/Microsoft.SecurityInsights/Incidents/testincidents-5034"),
        "{id}"
    );
    assert!(id.contains("/resourceGroups/"));
    assert_eq!(created["type"], "Microsoft.SecurityInsights/Incidents");
    let (status, _, got) = env
        .get(&env.sentinel("TESTINCIDENTS-5034", ""), &env.arm)
        .await;
    assert_eq!((status, &got["name"]), (StatusCode::OK, &created["name"]));
    let (status, _, _) = env
        .put(&env.sentinel("TestIncidents-5034", ""), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "the same incident, updated");
    let comment = json!({"properties": {"message": "hello"}});
    let (status, _, c) = env
        .put(
            &env.sentinel("testINCIDENTS-5034", "/comments/Comment-A"),
            &comment,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(c["name"], "comment-a");
    assert!(c["id"]
        .as_str()
        .unwrap()
        .ends_with("/Incidents/testincidents-5034/Comments/comment-a"));
    let (status, _, _) = env
        .get(
            &env.sentinel("testincidents-5034", "/comments/COMMENT-A"),
            &env.arm,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(env.emulator.store().sentinel.len(), 1);
}

#[tokio::test]
async fn an_unassigned_owner_is_an_object_of_nulls_and_additional_data_is_kept() {
    let env = start().await;
    let body = json!({"properties": {"severity": "Low", "status": "New", "title": "t", "description": null}});
    let (_, _, created) = env.put(&env.sentinel("a", ""), &body).await;
    let p = &created["properties"];
    assert_eq!(
        p["owner"],
        json!({"objectId": null, "email": null, "assignedTo": null, "userPrincipalName": null, "ownerType": "Unknown"})
    );
    assert_eq!(p["labels"], json!([]));
    assert!(
        p.get("description").is_none(),
        "optional properties are left out"
    );
    assert!(
        p.get("providerName").is_none(),
        "none on API-made incidents (recorded)"
    );
    assert_eq!(p["additionalData"]["commentsCount"], 0);
    for i in 0..3 {
        let (status, _, _) = env
            .put(
                &env.sentinel("a", &format!("/comments/c{i}")),
                &json!({"properties": {"message": "m"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, _, got) = env.get(&env.sentinel("a", ""), &env.arm).await;
    assert_eq!(got["properties"]["additionalData"]["commentsCount"], 3);
    assert_eq!(
        got["etag"], created["etag"],
        "a comment does not move the etag"
    );
}

#[tokio::test]
async fn stamps_have_seven_fractional_digits_on_both_apis() {
    let env = start().await;
    let body = json!({"properties": {"severity": "Low", "status": "New", "title": "t"}});
    let (_, _, created) = env.put(&env.sentinel("s", ""), &body).await;
    for key in ["createdTimeUtc", "lastModifiedTimeUtc"] {
        let stamp = created["properties"][key].as_str().unwrap();
        assert!(seven_digits(stamp), "{key}: {stamp}");
    }
    let (_, _, comment) = env
        .put(
            &env.sentinel("s", "/comments/c"),
            &json!({"properties": {"message": "m"}}),
        )
        .await;
    assert!(seven_digits(
        comment["properties"]["createdTimeUtc"].as_str().unwrap()
    ));
    env.seed_graph(1);
    let patched: Value = env
        .client
        .patch(format!(
            "{}/security/incidents/1000",
            env.info.graph_base_url
        ))
        .bearer_auth(&env.graph)
        .json(&json!({"status": "inProgress"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        seven_digits(patched["lastUpdateDateTime"].as_str().unwrap()),
        "{patched}"
    );
}

#[tokio::test]
async fn comments_are_paged_and_capped_at_100() {
    let env = start().await;
    env.seed_sentinel(1);
    {
        let mut store = env.emulator.store();
        let base = store.sentinel_base.clone();
        for i in 0..45 {
            store
                .sentinel_comment(
                    &base,
                    "inc-000",
                    &format!("c{i:03}"),
                    &json!({"properties": {"message": format!("m{i}")}}),
                )
                .unwrap();
        }
    }
    let mut url = env.sentinel("inc-000", "/comments");
    let mut pages = Vec::new();
    loop {
        let (status, _, body) = env.get(&url, &env.arm).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages.push(ids(&body));
        match body["nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [20, 20, 5]);
    assert_eq!(pages.concat().iter().collect::<HashSet<_>>().len(), 45);
    {
        let mut store = env.emulator.store();
        let base = store.sentinel_base.clone();
        for i in 45..100 {
            store
                .sentinel_comment(
                    &base,
                    "inc-000",
                    &format!("c{i:03}"),
                    &json!({"properties": {"message": "m"}}),
                )
                .unwrap();
        }
    }
    let message = json!({"properties": {"message": "one too many"}});
    let (status, _, body) = env
        .put(&env.sentinel("inc-000", "/comments/c100"), &message)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = env
        .put(&env.sentinel("inc-000", "/comments/c007"), &message)
        .await;
    assert_eq!(status, StatusCode::OK, "editing one of the 100 is fine");
}

#[tokio::test]
async fn arm_reports_remaining_tokens_and_throttles_with_retry_after() {
    let mut config = EmulatorConfig::default();
    config.observed.throttle = ThrottleConfig {
        arm_reads: Some(Bucket {
            burst: 3.0,
            per_second: 0.5,
        }),
        arm_writes: Some(Bucket {
            burst: 5.0,
            per_second: 0.5,
        }),
        graph: Some(Bucket {
            burst: 2.0,
            per_second: 0.5,
        }),
        retry_after_http_date: false,
    };
    let env = start_with(config).await;
    let read = "x-ms-ratelimit-remaining-subscription-reads";
    let mut left = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = env.get(&env.info.sentinel_incidents_url, &env.arm).await;
        assert_eq!(status, StatusCode::OK);
        left.push(headers[read].to_str().unwrap().to_string());
    }
    assert_eq!(left, ["2", "1", "0"], "counting down");
    let (status, headers, body) = env.get(&env.info.sentinel_incidents_url, &env.arm).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "TooManyRequests");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let (status, headers, _) = env
        .put(
            &env.sentinel("w", ""),
            &json!({"properties": {"title": "t", "severity": "Low", "status": "New"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "writes have their own bucket");
    assert_eq!(headers["x-ms-ratelimit-remaining-subscription-writes"], "4");
    let graph = format!("{}/security/incidents", env.info.graph_base_url);
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all((0..3).map(|_| env.get(&graph, &env.graph)))
            .await
            .into_iter()
            .map(|r| r.0)
            .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_fault_sends_retry_after_as_an_http_date() {
    let env = start().await;
    env.emulator.add_fault(FaultRule {
        kind: FaultKind::ThrottleDate { retry_after: 3 },
        endpoint: Endpoint::SentinelList,
        rate: 0.0,
        count: Some(1),
        after: 0,
    });
    let (status, headers, _) = env.get(&env.info.sentinel_incidents_url, &env.arm).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let date = headers["retry-after"].to_str().unwrap();
    let at = chrono::NaiveDateTime::parse_from_str(date, "%a, %d %b %Y %H:%M:%S GMT")
        .unwrap_or_else(|e| panic!("{date}: {e}"))
        .and_utc();
    let ahead = (at - chrono::Utc::now()).num_milliseconds();
    assert!(
        (2_000..=4_100).contains(&ahead),
        "{date} is {ahead} ms ahead"
    );
    let rules = rulebridge::emulator::faults::parse_spec("429date:2@graph-list=0.5").unwrap();
    assert_eq!(rules[0].kind, FaultKind::ThrottleDate { retry_after: 2 });
}

#[tokio::test]
async fn token_audiences_are_checked_in_both_profiles() {
    for config in [EmulatorConfig::default(), EmulatorConfig::strict()] {
        let env = start_with(config).await;
        let (status, _, body) = env.get(&env.info.sentinel_incidents_url, &env.graph).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a Graph token at ARM");
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid audience"));
        let graph = format!("{}/security/incidents", env.info.graph_base_url);
        let (status, _, _) = env.get(&graph, &env.arm).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "an ARM token at Graph");
        let (status, _, _) = env.get(&graph, &env.graph).await;
        assert_eq!(status, StatusCode::OK);
        let refused = token(&env.client, &env.info, "https://vault.azure.net/.default").await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "invalid_scope");
    }
}

#[tokio::test]
async fn lengths_are_counted_in_utf16_code_units() {
    let env = start().await;
    let put = |props: Value| {
        let env = &env;
        async move {
            let mut body =
                json!({"properties": {"title": "t", "severity": "Low", "status": "New"}});
            for (k, v) in props.as_object().unwrap() {
                body["properties"][k] = v.clone();
            }
            env.put(&env.sentinel("len", ""), &body).await.0
        }
    };
    // 2,501 emoji: 2,501 characters, 5,002 UTF-16 units.
    assert_eq!(
        put(json!({"description": "🛡".repeat(2_501)})).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(json!({"description": "🛡".repeat(2_500)})).await,
        StatusCode::CREATED
    );
    assert_eq!(
        put(json!({"title": "🔥".repeat(129)})).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(json!({"title": "🔥".repeat(128)})).await,
        StatusCode::OK
    );
    let message = |n| json!({"properties": {"message": "😀".repeat(n)}});
    assert_eq!(
        env.put(&env.sentinel("len", "/comments/c"), &message(15_001))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        env.put(&env.sentinel("len", "/comments/c"), &message(15_000))
            .await
            .0,
        StatusCode::CREATED
    );
    env.seed_graph(1);
    let comment = |n| {
        let env = &env;
        async move {
            env.client
                .post(format!(
                    "{}/security/incidents/1000/comments",
                    env.info.graph_base_url
                ))
                .bearer_auth(&env.graph)
                .json(&json!({"comment": "😀".repeat(n)}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(comment(15_001).await, StatusCode::BAD_REQUEST);
    assert_eq!(comment(15_000).await, StatusCode::OK);
}

#[tokio::test]
async fn responses_are_gzipped_when_the_client_asks() {
    use std::io::Read;
    let env = start().await;
    env.seed_graph(20);
    let url = format!(
        "{}/security/incidents?$expand=alerts",
        env.info.graph_base_url
    );
    let response = env
        .client
        .get(&url)
        .bearer_auth(&env.graph)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let bytes = response.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let zipped: Value = serde_json::from_str(&text).unwrap();
    let plain = env.graph_get("/security/incidents?$expand=alerts").await;
    assert_eq!(zipped, plain);
    let (_, headers, _) = env.get(&env.info.sentinel_incidents_url, &env.arm).await;
    assert!(headers.get("content-encoding").is_none(), "only when asked");
}

#[tokio::test]
async fn the_strict_profile_keeps_the_tidy_behaviour() {
    let env = start_with(EmulatorConfig::strict()).await;
    assert_eq!(env.emulator.profile(), Profile::Strict);
    env.seed_graph(30);
    let asc = env
        .graph_get("/security/incidents?$orderby=createdDateTime%20asc&$top=5")
        .await;
    assert_eq!(ids(&asc), ["1000", "1001", "1002", "1003", "1004"]);
    assert!(asc["@odata.nextLink"]
        .as_str()
        .unwrap()
        .contains("$skiptoken="));
    let body = json!({"properties": {"title": "t", "severity": "Low", "status": "New"}});
    let (status, headers, created) = env.put(&env.sentinel("MixedCase", ""), &body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["name"], "MixedCase");
    assert!(headers
        .get("x-ms-ratelimit-remaining-subscription-writes")
        .is_none());
    assert_eq!(created["properties"]["providerName"], "Azure Sentinel");
}

// ---- The recorded traffic of the real service, diffed against the emulator ----

fn recorded(file: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/recorded/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["Entries"].as_array().unwrap().clone()
}

/// A recorded body: an object (new format) or a pretty-printed string (old format).
fn body_of(v: &Value) -> Value {
    match v {
        Value::String(s) if s.is_empty() => Value::Null,
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences in shape: the same keys at every level and the same kind of value
/// (arrays by their first items). `extra` lists our keys the recording may lack
/// because they are newer than its api-version.
fn shape_diff(at: &str, ours: &Value, theirs: &Value, extra: &[&str], out: &mut Vec<String>) {
    if kind(ours) != kind(theirs) {
        out.push(format!(
            "{at}: ours {} / recorded {}",
            kind(ours),
            kind(theirs)
        ));
        return;
    }
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{key}: missing"));
            }
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                if !extra.contains(&format!("{at}.{key}").as_str()) {
                    out.push(format!("{at}.{key}: not in the recording"));
                }
            }
            for (key, value) in a.iter().filter(|(k, _)| b.contains_key(*k)) {
                shape_diff(&format!("{at}.{key}"), value, &b[key], extra, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if !a.is_empty() && !b.is_empty() => {
            shape_diff(&format!("{at}[0]"), &a[0], &b[0], extra, out)
        }
        _ => {}
    }
}

/// `ownerType` is in the 2024-03-01 spec (our api-version), not in 2022-08-01's output.
const NEWER: [&str; 1] = ["$.properties.owner.ownerType"];

fn assert_same_shape(what: &str, ours: &Value, theirs: &Value) {
    let mut problems = Vec::new();
    shape_diff("$", ours, theirs, &NEWER, &mut problems);
    assert!(problems.is_empty(), "{what}: {problems:#?}\nours: {ours}");
}

/// What follows `/providers/Microsoft.SecurityInsights/` in an id.
fn id_tail(id: &Value) -> &str {
    id.as_str()
        .unwrap()
        .split_once("/providers/Microsoft.SecurityInsights/")
        .unwrap()
        .1
}

fn assert_incident_like_recorded(what: &str, ours: &Value, theirs: &Value) {
    assert_same_shape(what, ours, theirs);
    assert_eq!(
        id_tail(&ours["id"]),
        id_tail(&theirs["id"]),
        "{what}: id form"
    );
    assert_eq!(ours["name"], theirs["name"], "{what}: name");
    assert_eq!(ours["type"], theirs["type"], "{what}: type");
    let etag = ours["etag"].as_str().unwrap();
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    for (side, v) in [("ours", ours), ("recorded", theirs)] {
        let url = format!(
            "https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident{}",
            v["id"].as_str().unwrap()
        );
        assert_eq!(
            v["properties"]["incidentUrl"],
            url.as_str(),
            "{what} {side}"
        );
    }
    for key in ["createdTimeUtc", "lastModifiedTimeUtc"] {
        assert!(
            seven_digits(ours["properties"][key].as_str().unwrap()),
            "{what} {key}"
        );
    }
    assert_eq!(
        ours["properties"]["incidentNumber"],
        theirs["properties"]["incidentNumber"]
    );
}

#[tokio::test]
async fn sentinel_shapes_match_the_recorded_service() {
    let mut etags = (Vec::new(), Vec::new());
    for file in ["incident-collection.json", "incident-resource.json"] {
        // A fresh workspace per recording: incident numbers start at 1 in each.
        let env = start().await;
        for entry in recorded(file) {
            let uri = entry["RequestUri"].as_str().unwrap();
            let Some((_, rest)) = uri.split_once("/Microsoft.SecurityInsights/incidents") else {
                continue;
            };
            let name = rest.split('?').next().unwrap().trim_start_matches('/');
            let url = if name.is_empty() {
                env.info.sentinel_incidents_url.clone()
            } else {
                env.sentinel(name, "")
            };
            let theirs = body_of(&entry["ResponseBody"]);
            let what = format!("{file} {} {name}", entry["RequestMethod"]);
            let (status, ours) = match entry["RequestMethod"].as_str().unwrap() {
                "PUT" => {
                    let (s, _, b) = env.put(&url, &body_of(&entry["RequestBody"])).await;
                    etags.0.push(b["etag"].clone());
                    etags.1.push(theirs["etag"].clone());
                    (s, b)
                }
                "DELETE" => {
                    let r = env
                        .client
                        .delete(&url)
                        .bearer_auth(&env.arm)
                        .send()
                        .await
                        .unwrap();
                    (r.status(), r.json().await.unwrap())
                }
                _ => {
                    let (s, _, b) = env.get(&url, &env.arm).await;
                    (s, b)
                }
            };
            assert_eq!(
                status.as_u16(),
                entry["StatusCode"].as_u64().unwrap() as u16,
                "{what}"
            );
            if status == StatusCode::NOT_FOUND || entry["RequestMethod"] == "DELETE" {
                assert_eq!(ours, theirs, "{what}: the same body");
            } else if name.is_empty() {
                assert!(ours.get("nextLink").is_none() && theirs.get("nextLink").is_none());
                let names = |v: &Value| ids(v);
                assert_eq!(names(&ours), names(&theirs), "{what}: newest first");
                for (a, b) in ours["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(theirs["value"].as_array().unwrap())
                {
                    assert_incident_like_recorded(&what, a, b);
                }
            } else {
                assert_incident_like_recorded(&what, &ours, &theirs);
            }
        }
    }
    // A PUT of an unchanged incident still moves the etag, as recorded.
    let changed = |v: &[Value]| v[0] != v[1];
    assert_eq!(changed(&etags.0), changed(&etags.1));

    // Comments (2020-01-01 recording, old format).
    let env = start().await;
    let mut incident = String::new();
    for entry in recorded("incident-comments-list.json") {
        let uri = entry["RequestUri"].as_str().unwrap();
        let (_, rest) = uri
            .split_once("/Microsoft.SecurityInsights/incidents/")
            .unwrap();
        let path = rest.split('?').next().unwrap();
        let (name, suffix) = path
            .split_once('/')
            .map_or((path, String::new()), |(n, s)| (n, format!("/{s}")));
        incident = name.to_string();
        let url = env.sentinel(name, &suffix);
        let theirs = body_of(&entry["ResponseBody"]);
        match (entry["RequestMethod"].as_str().unwrap(), suffix.is_empty()) {
            ("PUT", true) => {
                let (status, _, _) = env.put(&url, &body_of(&entry["RequestBody"])).await;
                assert_eq!(status, StatusCode::CREATED);
            }
            ("PUT", false) => {
                let (status, _, ours) = env.put(&url, &body_of(&entry["RequestBody"])).await;
                assert_eq!(status, StatusCode::CREATED);
                assert_same_shape("comment PUT", &ours, &theirs);
                assert_eq!(id_tail(&ours["id"]), id_tail(&theirs["id"]));
                assert_eq!(ours["type"], theirs["type"]);
                assert!(seven_digits(
                    ours["properties"]["createdTimeUtc"].as_str().unwrap()
                ));
            }
            ("GET", false) => {
                let (_, _, ours) = env.get(&url, &env.arm).await;
                assert_same_shape("comments list", &ours, &theirs);
            }
            _ => {}
        }
    }
    assert!(!incident.is_empty());

    // A connector-made incident against the recorded alert-made ones (2020-01-01).
    env.seed_graph(1);
    let name = env.emulator.add_connector_incident("1000").unwrap();
    let ours = env.emulator.store().sentinel[&name].clone();
    let list = body_of(&recorded("incidents-list.json")[0]["ResponseBody"]);
    let theirs = &list["value"][0];
    assert_eq!(ours["properties"]["owner"].as_object().unwrap().len(), 5);
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let mut ours_data = keys(&ours["properties"]["additionalData"]);
    ours_data.remove("providerIncidentUrl"); // documented for newer api-versions
    assert_eq!(ours_data, keys(&theirs["properties"]["additionalData"]));
    assert_eq!(
        id_tail(&ours["id"]).split('/').next(),
        id_tail(&theirs["id"]).split('/').next()
    );
}
