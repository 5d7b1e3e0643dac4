//! The emulator's own rules, over real HTTP on 127.0.0.1: tokens, Graph list / paging /
//! PATCH / comments, Sentinel PUT with etags and closing rules, comments, delete. These
//! hold in both profiles unless a test says otherwise; the observed profile's own
//! behaviour is tested in `emulator_observed.rs`.

use reqwest::{Client, StatusCode};
use rulebridge::emulator::{Emulator, EmulatorConfig, EmulatorInfo};
use serde_json::{json, Value};
use std::collections::HashSet;

async fn start() -> (Emulator, EmulatorInfo, Client) {
    start_with(EmulatorConfig::default()).await
}

async fn start_with(config: EmulatorConfig) -> (Emulator, EmulatorInfo, Client) {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let info = emulator.info();
    (emulator, info, Client::new())
}

async fn token(client: &Client, info: &EmulatorInfo, scope: &str) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", info.client_id.as_str()),
        ("client_secret", info.client_secret.as_str()),
        ("scope", scope),
    ];
    let response = client
        .post(&info.token_url)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    body["access_token"].as_str().unwrap().to_string()
}

fn seed_graph(emulator: &Emulator, n: usize) {
    let mut store = emulator.store();
    for i in 0..n {
        store
            .seed_graph(json!({"id": format!("{}", 1000 + i), "displayName": format!("incident {i}"), "status": "active", "severity": "low",
                               "alerts": [{"id": format!("da{i}"), "title": "alert"}]}))
            .unwrap();
    }
}

fn sentinel_url(info: &EmulatorInfo, id: &str) -> String {
    let (base, query) = info.sentinel_incidents_url.split_once('?').unwrap();
    format!("{base}/{id}?{query}")
}

#[tokio::test]
async fn tokens_are_required_and_a_wrong_secret_gets_an_aadsts_error() {
    let (_emulator, info, client) = start().await;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", info.client_id.as_str()),
        ("client_secret", "wrong"),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let response = client
        .post(&info.token_url)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));

    let response = client
        .get(format!("{}/security/incidents", info.graph_base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .get(&info.sentinel_incidents_url)
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn graph_refuses_top_above_50_and_unknown_filters() {
    let (_emulator, info, client) = start().await;
    let token = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let url = format!("{}/security/incidents", info.graph_base_url);
    let response = client
        .get(&url)
        .query(&[("$top", "51")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("The limit of '50' for Top query has been exceeded"));
    let response = client
        .get(&url)
        .query(&[("$filter", "title eq 'x'")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// Strict profile: walks are served from a snapshot and `$orderby` is honoured. (The
/// observed profile pages over the live set; see `emulator_observed.rs`.)
#[tokio::test]
async fn graph_paging_returns_every_incident_once_while_incidents_are_updated() {
    let (emulator, info, client) = start_with(EmulatorConfig::strict()).await;
    seed_graph(&emulator, 180);
    let token = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let mut url = format!("{}/security/incidents?$filter=lastUpdateDateTime ge 2000-01-01T00:00:00Z&$orderby=lastUpdateDateTime asc&$top=50&$expand=alerts", info.graph_base_url);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let body: Value = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for incident in body["value"].as_array().unwrap() {
            assert!(
                incident["alerts"].is_array(),
                "$expand=alerts returns alerts"
            );
            seen.push(incident["id"].as_str().unwrap().to_string());
        }
        // Analysts update incidents that were already listed, and ones not listed yet.
        for id in [&seen[0], &format!("{}", 1000 + 170 - pages)] {
            let patched = client
                .patch(format!("{}/security/incidents/{id}", info.graph_base_url))
                .bearer_auth(&token)
                .json(&json!({"status": "inProgress"}))
                .send()
                .await
                .unwrap();
            assert_eq!(patched.status(), StatusCode::OK);
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 180);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        180,
        "no incident twice"
    );
}

#[tokio::test]
async fn a_page_link_can_be_fetched_again_with_the_same_result() {
    let (emulator, info, client) = start().await;
    seed_graph(&emulator, 120);
    let token = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let first: Value = client
        .get(format!(
            "{}/security/incidents?$top=50",
            info.graph_base_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = first["@odata.nextLink"].as_str().unwrap();
    let again = |url: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let (a, b) = (again(next.to_string()).await, again(next.to_string()).await);
    assert_eq!(a["value"], b["value"], "a retried page is the same page");
    assert_eq!(a["value"].as_array().unwrap().len(), 50);
    assert_eq!(a["@odata.nextLink"], b["@odata.nextLink"]);
}

#[tokio::test]
async fn graph_patch_changes_only_updatable_properties_and_bumps_the_stamp() {
    let (emulator, info, client) = start().await;
    seed_graph(&emulator, 1);
    let token = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let url = format!("{}/security/incidents/1000", info.graph_base_url);
    let before: Value = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(before.get("alerts").is_none(), "alerts only with $expand");

    let response = client
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({"tenantId": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = client
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({"status": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let first: Value = client
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({"assignedTo": "a@contoso.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: Value = client.patch(&url).bearer_auth(&token).json(&json!({"status": "resolved", "classification": "truePositive", "determination": "malware"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(second["assignedTo"], "a@contoso.com");
    assert_eq!(second["status"], "resolved");
    assert!(second["lastModifiedBy"]
        .as_str()
        .unwrap()
        .starts_with("API-App:"));
    let stamps: Vec<&str> = [&before, &first, &second]
        .iter()
        .map(|v| v["lastUpdateDateTime"].as_str().unwrap())
        .collect();
    assert!(
        stamps[0] < stamps[1] && stamps[1] < stamps[2],
        "two changes in the same second are ordered: {stamps:?}"
    );

    let comments: Value = client
        .post(format!("{url}/comments"))
        .bearer_auth(&token)
        .json(&json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": "looked at it"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(comments["value"].as_array().unwrap().len(), 1);
    assert_eq!(comments["value"][0]["comment"], "looked at it");

    let requests = emulator.store().requests.clone();
    let patches: Vec<&Value> = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 200)
        .filter_map(|r| r.body.as_ref())
        .collect();
    assert_eq!(patches[0], &json!({"assignedTo": "a@contoso.com"}));
}

#[tokio::test]
async fn sentinel_put_creates_then_updates_with_etags_and_refuses_stale_ones() {
    let (_emulator, info, client) = start().await;
    let token = token(&client, &info, "https://management.azure.com/.default").await;
    let url = sentinel_url(&info, "73e01a99-5cd7-4139-a149-9f2736ff2ab5");
    let body = json!({"properties": {"title": "t", "severity": "High", "status": "New", "incidentNumber": 99}});
    let created = client
        .put(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_ne!(
        created["properties"]["incidentNumber"], 99,
        "read-only fields are ignored"
    );
    let etag = created["etag"].as_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "etags are quoted strings: {etag}"
    );

    let update = json!({"etag": etag, "properties": {"title": "t2", "severity": "High", "status": "Active"}});
    let updated = client
        .put(&url)
        .bearer_auth(&token)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_ne!(updated["etag"], created["etag"]);

    let stale = client
        .put(&url)
        .bearer_auth(&token)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let stale: Value = stale.json().await.unwrap();
    assert_eq!(stale["error"]["code"], "Conflict");

    let got: Value = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["properties"]["title"], "t2");
}

#[tokio::test]
async fn sentinel_enforces_required_fields_and_closing_rules() {
    let (_emulator, info, client) = start().await;
    let token = token(&client, &info, "https://management.azure.com/.default").await;
    let url = sentinel_url(&info, "0c3b1a2e-0000-4000-8000-000000000001");
    for (body, why) in [
        (
            json!({"properties": {"severity": "High", "status": "New"}}),
            "title",
        ),
        (
            json!({"properties": {"title": "t", "severity": "Critical", "status": "New"}}),
            "severity",
        ),
        (
            json!({"properties": {"title": "t", "severity": "High", "status": "Closed"}}),
            "classification",
        ),
        (
            json!({"properties": {"title": "t", "severity": "High", "status": "Closed", "classification": "BenignPositive"}}),
            "classificationReason",
        ),
        (
            json!({"properties": {"title": "t", "severity": "High", "status": "New", "description": "x".repeat(5001)}}),
            "5000",
        ),
    ] {
        let response = client
            .put(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().contains(why),
            "{why}: {error}"
        );
    }
    let no_version = info
        .sentinel_incidents_url
        .split_once('?')
        .unwrap()
        .0
        .to_string();
    let response = client
        .get(no_version)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let closed = json!({"properties": {"title": "t", "severity": "High", "status": "Closed", "classification": "FalsePositive", "classificationReason": "InaccurateData"}});
    assert_eq!(
        client
            .put(&url)
            .bearer_auth(&token)
            .json(&closed)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn sentinel_paging_comments_and_delete() {
    let (_emulator, info, client) = start().await;
    let token = token(&client, &info, "https://management.azure.com/.default").await;
    for i in 0..25 {
        let body =
            json!({"properties": {"title": format!("t{i}"), "severity": "Low", "status": "New"}});
        let r = client
            .put(sentinel_url(
                &info,
                &format!("00000000-0000-4000-8000-{i:012}"),
            ))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let mut url = format!("{}&$top=10&$orderby=properties/lastModifiedTimeUtc asc&$filter=properties/lastModifiedTimeUtc ge 2000-01-01T00:00:00Z", info.sentinel_incidents_url);
    let mut names = HashSet::new();
    loop {
        let body: Value = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for i in body["value"].as_array().unwrap() {
            assert!(names.insert(i["name"].as_str().unwrap().to_string()));
        }
        match body["nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(names.len(), 25);

    let incident = sentinel_url(&info, "00000000-0000-4000-8000-000000000003");
    let (base, query) = incident.split_once('?').unwrap();
    let comment_url = format!("{base}/comments/c1?{query}");
    let r = client
        .put(&comment_url)
        .bearer_auth(&token)
        .json(&json!({"properties": {"message": "hello"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .put(&comment_url)
        .bearer_auth(&token)
        .json(&json!({"properties": {"message": "x".repeat(30_001)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let list: Value = client
        .get(format!("{base}/comments?{query}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"][0]["properties"]["message"], "hello");

    assert_eq!(
        client
            .delete(&incident)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(&incident)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client
            .delete(&incident)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn tokens_expire() {
    let (emulator, info, client) = start().await;
    emulator.store().token_lifetime = chrono::Duration::seconds(1);
    let token = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let url = format!("{}/security/incidents", info.graph_base_url);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[tokio::test]
async fn the_control_api_reports_info_and_never_logs_the_secret() {
    let (emulator, info, client) = start().await;
    let _ = token(&client, &info, "https://graph.microsoft.com/.default").await;
    let url = format!("http://{}/_emulator/info", emulator.addr);
    let got: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["token_url"], info.token_url);
    assert_eq!(got["sentinel_incidents_url"], info.sentinel_incidents_url);
    let requests: Value = client
        .get(format!("http://{}/_emulator/requests", emulator.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!requests.to_string().contains(&info.client_secret));
    assert_eq!(
        requests["value"][0]["path"],
        format!("/{}/oauth2/v2.0/token", info.tenant_id)
    );
}
