//! Contract tests: the real clients against the emulator over 127.0.0.1, for every
//! operation, every fault kind and every error status, with assertions on what the
//! emulator received.

use rulebridge::client::{
    Api, ClientError, Credentials, GraphClient, RateLimiter, RetryPolicy, Secret, SentinelClient,
    TokenSource, ARM_SCOPE, GRAPH_SCOPE,
};
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::emulator::{Emulator, EmulatorConfig, EmulatorInfo};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn credentials(info: &EmulatorInfo, secret: &str) -> Credentials {
    Credentials {
        tenant_id: info.tenant_id.clone(),
        client_id: info.client_id.clone(),
        client_secret: Secret::new(secret),
    }
}

fn api(info: &EmulatorInfo, scope: &str, secret: &str) -> Api {
    let http = reqwest::Client::new();
    let tokens = Arc::new(TokenSource::new(
        http.clone(),
        info.token_url.clone(),
        credentials(info, secret),
        scope.into(),
    ));
    let retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(3),
        timeout: Duration::from_millis(500),
    };
    Api::new(http, tokens, RateLimiter::new(10_000.0, 1_000), retry)
}

async fn setup() -> (Emulator, GraphClient, SentinelClient) {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    let info = emulator.info();
    {
        let mut store = emulator.store();
        for i in 0..120 {
            store.seed_graph(json!({"id": format!("{}", 500 + i), "status": "active", "severity": "low", "alerts": [{"id": format!("a{i}")}]})).unwrap();
        }
    }
    let graph = GraphClient::new(
        api(&info, GRAPH_SCOPE, &info.client_secret),
        &info.graph_base_url,
    );
    let sentinel = SentinelClient::new(
        api(&info, ARM_SCOPE, &info.client_secret),
        &info.sentinel_incidents_url,
    )
    .unwrap();
    (emulator, graph, sentinel)
}

fn fault(kind: FaultKind, endpoint: Endpoint, count: u32) -> FaultRule {
    FaultRule {
        kind,
        endpoint,
        rate: 0.0,
        count: Some(count),
        after: 0,
    }
}

fn requests_to(emulator: &Emulator, method: &str, path_part: &str) -> Vec<(u16, Option<Value>)> {
    emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.method == method && r.path.contains(path_part))
        .map(|r| (r.status, r.body.clone()))
        .collect()
}

fn props(title: &str) -> Value {
    json!({"title": title, "severity": "Medium", "status": "New"})
}

#[tokio::test]
async fn graph_listing_pages_by_50_with_alerts_and_asks_for_no_order() {
    let (emulator, graph, _) = setup().await;
    let all = graph.list_changed(None).await.unwrap();
    assert_eq!(all.len(), 120);
    assert!(all.iter().all(|i| i["alerts"].is_array()));
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 120, "every incident once on a quiet tenant");
    let lists = requests_to(&emulator, "GET", "/security/incidents");
    assert_eq!(lists.len(), 3, "120 incidents are 3 pages of at most 50");
    assert!(
        emulator
            .store()
            .requests
            .iter()
            .all(|r| !r.query.contains("orderby")),
        "Graph ignores $orderby on incidents: asking for one would only pretend"
    );

    // The 101st oldest change: 20 incidents changed at or after it (stamps are distinct).
    let mut stamps: Vec<&str> = all
        .iter()
        .map(|i| i["lastUpdateDateTime"].as_str().unwrap())
        .collect();
    stamps.sort_by_key(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap());
    let newer = graph.list_changed(Some(stamps[100])).await.unwrap();
    assert_eq!(newer.len(), 20);
}

#[tokio::test]
async fn graph_get_patch_and_comments() {
    let (emulator, graph, _) = setup().await;
    assert!(graph.get("500").await.unwrap().unwrap()["alerts"].is_array());
    assert_eq!(graph.get("99999").await.unwrap(), None);

    assert_eq!(
        graph.patch("500", &Map::new()).await.unwrap(),
        None,
        "an empty change set makes no request"
    );
    let mut changes = Map::new();
    changes.insert("status".into(), json!("inProgress"));
    let updated = graph.patch("500", &changes).await.unwrap().unwrap();
    assert_eq!(updated["status"], "inProgress");
    let patches = requests_to(&emulator, "PATCH", "/security/incidents/500");
    assert_eq!(
        patches,
        vec![(200, Some(json!({"status": "inProgress"})))],
        "only the changed field is sent"
    );

    let comments = graph
        .add_comment("500", "from Sentinel: checked")
        .await
        .unwrap();
    assert_eq!(
        comments.last().unwrap()["comment"],
        "from Sentinel: checked"
    );
}

#[tokio::test]
async fn a_read_only_property_is_a_permanent_error_with_the_service_message() {
    let (_emulator, graph, _) = setup().await;
    let mut changes = Map::new();
    changes.insert("tenantId".into(), json!("x"));
    match graph.patch("500", &changes).await.unwrap_err() {
        ClientError::Permanent {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((status, code.as_str()), (400, "BadRequest"));
            assert!(message.contains("tenantId"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let (emulator, graph, _) = setup().await;
    emulator.add_fault(fault(
        FaultKind::Throttle { retry_after: 1 },
        Endpoint::GraphGet,
        1,
    ));
    let started = Instant::now();
    assert!(graph.get("501").await.unwrap().is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After: {:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = requests_to(&emulator, "GET", "/security/incidents/501")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(statuses, [429, 200]);
}

#[tokio::test]
async fn a_retry_after_given_as_an_http_date_is_honoured() {
    let (emulator, graph, _) = setup().await;
    emulator.add_fault(fault(
        FaultKind::ThrottleDate { retry_after: 2 },
        Endpoint::GraphGet,
        1,
    ));
    let started = Instant::now();
    assert!(graph.get("501").await.unwrap().is_some());
    // The date has whole seconds: 2 s ahead is at least 1 s of waiting.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for the Retry-After date: {:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = requests_to(&emulator, "GET", "/security/incidents/501")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(statuses, [429, 200]);
}

#[tokio::test]
async fn every_graph_request_asks_for_new_enum_members_and_gzip() {
    // A bare listener: the request head as the client sent it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let head = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = socket.read(&mut buf).await.unwrap();
        let body = r#"{"value":[]}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
    });
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    let info = emulator.info();
    let graph = GraphClient::new(
        api(&info, GRAPH_SCOPE, &info.client_secret),
        format!("http://{addr}/v1.0"),
    );
    let page = graph
        .window(Some("2026-01-01T00:00:00Z"), None, true)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    let head = head.await.unwrap();
    assert!(
        head.contains("\r\nprefer: include-unknown-enum-members\r\n"),
        "{head}"
    );
    assert!(head.contains("accept-encoding: gzip"), "{head}");
    assert!(!head.contains("orderby"), "{head}");
    assert!(head.contains("$top=50"), "{head}");
}

#[tokio::test]
async fn sentinel_lists_ask_for_1000_and_every_comment_page_is_read() {
    let (emulator, _, sentinel) = setup().await;
    let name = "dddddddd-0000-4000-8000-000000000001";
    sentinel
        .put(name, &props("many comments"), None)
        .await
        .unwrap();
    for i in 0..45 {
        sentinel
            .put_comment(
                name,
                &format!("eeeeeeee-0000-4000-8000-{i:012}"),
                &format!("note {i}"),
            )
            .await
            .unwrap();
    }
    let comments = sentinel.list_comments(name).await.unwrap();
    assert_eq!(comments.len(), 45, "all pages of comments");
    assert!(
        requests_to(&emulator, "GET", "/comments").len() > 1,
        "the emulator pages comments"
    );
    sentinel.list_changed(None).await.unwrap();
    let store = emulator.store();
    let list = store
        .requests
        .iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/incidents"))
        .unwrap();
    assert!(list.query.contains("$top=1000"), "{}", list.query);
    drop(store);
    assert!(
        sentinel.api().remaining_requests().is_some(),
        "x-ms-ratelimit-remaining-* read"
    );
}

#[tokio::test]
async fn server_errors_slow_responses_and_dropped_connections_are_retried() {
    let (emulator, graph, sentinel) = setup().await;
    emulator.add_fault(fault(
        FaultKind::ServerError { status: 500 },
        Endpoint::GraphGet,
        1,
    ));
    emulator.add_fault(fault(
        FaultKind::ServerError { status: 503 },
        Endpoint::GraphGet,
        1,
    ));
    assert!(graph.get("502").await.unwrap().is_some());
    let statuses: Vec<u16> = requests_to(&emulator, "GET", "/security/incidents/502")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(statuses, [500, 503, 200]);

    // Slower than the client's 500 ms timeout: abandoned, then retried.
    emulator.add_fault(fault(
        FaultKind::Slow { delay_ms: 1500 },
        Endpoint::SentinelPut,
        1,
    ));
    sentinel
        .put("aaaaaaaa-0000-4000-8000-000000000001", &props("slow"), None)
        .await
        .unwrap();
    // A connection closed mid-response, on a create: retried, and still one incident.
    emulator.add_fault(fault(FaultKind::Drop, Endpoint::SentinelPut, 1));
    sentinel
        .put(
            "aaaaaaaa-0000-4000-8000-000000000002",
            &props("dropped"),
            None,
        )
        .await
        .unwrap();
    // The abandoned slow PUT still lands on the server later, as it would for real.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let listed = sentinel.list_changed(None).await.unwrap();
    assert_eq!(listed.len(), 2, "a retried create is one incident");
    assert_eq!(
        requests_to(&emulator, "PUT", "000000000001").len(),
        2,
        "the slow PUT was repeated"
    );
    assert_eq!(
        requests_to(&emulator, "PUT", "000000000002").len(),
        2,
        "the dropped PUT was repeated"
    );
}

#[tokio::test]
async fn a_listing_survives_dropped_pages_without_losing_or_repeating_incidents() {
    let (emulator, graph, _) = setup().await;
    emulator.add_fault(FaultRule {
        kind: FaultKind::Drop,
        endpoint: Endpoint::GraphList,
        rate: 0.3,
        count: None,
        after: 0,
    });
    let all = graph.list_changed(None).await.unwrap();
    emulator.clear_faults();
    let ids: HashSet<&str> = all.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!((all.len(), ids.len()), (120, 120));
    let lists = requests_to(&emulator, "GET", "/security/incidents");
    assert!(
        lists.len() > 3,
        "some pages were dropped and fetched again: {} requests",
        lists.len()
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    let (emulator, graph, _) = setup().await;
    emulator.add_fault(fault(
        FaultKind::ServerError { status: 503 },
        Endpoint::GraphGet,
        10,
    ));
    match graph.get("503").await.unwrap_err() {
        ClientError::Exhausted { attempts, last, .. } => {
            assert_eq!(attempts, 4);
            assert!(last.contains("503"), "{last}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_comment_post_is_not_repeated_when_its_outcome_is_unknown() {
    let (emulator, graph, _) = setup().await;
    emulator.add_fault(fault(
        FaultKind::ServerError { status: 500 },
        Endpoint::GraphComment,
        1,
    ));
    assert!(matches!(
        graph.add_comment("504", "once").await.unwrap_err(),
        ClientError::Ambiguous { .. }
    ));
    // 429 and 503 say "not processed": those are retried.
    emulator.add_fault(fault(
        FaultKind::Throttle { retry_after: 0 },
        Endpoint::GraphComment,
        1,
    ));
    assert_eq!(graph.add_comment("504", "twice?").await.unwrap().len(), 1);
}

#[tokio::test]
async fn sentinel_put_get_etag_conflicts_and_comments() {
    let (emulator, _, sentinel) = setup().await;
    let name = "bbbbbbbb-0000-4000-8000-000000000001";
    assert_eq!(sentinel.get(name).await.unwrap(), None);
    let created = sentinel.put(name, &props("first"), None).await.unwrap();
    let etag = created["etag"].as_str().unwrap().to_string();
    let updated = sentinel
        .put(name, &props("second"), Some(&etag))
        .await
        .unwrap();
    assert_ne!(updated["etag"], created["etag"]);
    assert!(matches!(
        sentinel
            .put(name, &props("stale"), Some(&etag))
            .await
            .unwrap_err(),
        ClientError::Conflict { .. }
    ));

    // Another writer saves between our GET and our PUT.
    let current = sentinel.get(name).await.unwrap().unwrap();
    emulator.add_fault(fault(FaultKind::EtagRace, Endpoint::SentinelPut, 1));
    let raced = sentinel
        .put(name, &props("raced"), current["etag"].as_str())
        .await
        .unwrap_err();
    assert!(matches!(raced, ClientError::Conflict { .. }), "{raced:?}");
    assert_eq!(
        sentinel.get(name).await.unwrap().unwrap()["properties"]["title"],
        "second",
        "nothing overwritten"
    );

    let closed = json!({"title": "t", "severity": "High", "status": "Closed"});
    match sentinel.put(name, &closed, None).await.unwrap_err() {
        ClientError::Permanent {
            status: 400,
            message,
            ..
        } => assert!(message.contains("classification"), "{message}"),
        other => panic!("{other:?}"),
    }

    sentinel
        .put_comment(name, "c-1", "from Defender")
        .await
        .unwrap();
    sentinel
        .put_comment(name, "c-1", "from Defender")
        .await
        .unwrap();
    let comments = sentinel.list_comments(name).await.unwrap();
    assert_eq!(comments.len(), 1, "a repeated comment PUT is one comment");
}

#[tokio::test]
async fn sentinel_listing_follows_next_link_and_filters_by_modification_time() {
    let (_emulator, _, sentinel) = setup().await;
    for i in 0..30 {
        sentinel
            .put(
                &format!("cccccccc-0000-4000-8000-{i:012}"),
                &props(&format!("t{i}")),
                None,
            )
            .await
            .unwrap();
    }
    let all = sentinel.list_changed(None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect::<HashSet<_>>()
            .len(),
        30
    );
    // Listed newest first by default: the 26th oldest modification has 5 after it.
    let mut stamps: Vec<&str> = all
        .iter()
        .map(|i| i["properties"]["lastModifiedTimeUtc"].as_str().unwrap())
        .collect();
    stamps.sort_by_key(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap());
    assert_eq!(
        sentinel.list_changed(Some(stamps[25])).await.unwrap().len(),
        5
    );
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_does_not_contain_the_secret() {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    let info = emulator.info();
    let secret = "not-the-secret-9f8e7d";
    let graph = GraphClient::new(api(&info, GRAPH_SCOPE, secret), &info.graph_base_url);
    let err = graph.get("1").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Auth { error, .. } if error == "invalid_client"),
        "{err:?}"
    );
    assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));
    assert_eq!(
        format!("{:?}", credentials(&info, secret))
            .matches(secret)
            .count(),
        0,
        "Debug of credentials hides the secret"
    );
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let (emulator, graph, _) = setup().await;
    emulator.store().token_lifetime = chrono::Duration::seconds(2);
    graph.get("500").await.unwrap();
    // Past half the lifetime (the refresh point for short tokens), before expiry.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    graph.get("501").await.unwrap();
    assert_eq!(
        requests_to(&emulator, "POST", "/oauth2/v2.0/token").len(),
        2,
        "a new token before the old one expired"
    );
    assert!(
        emulator.store().requests.iter().all(|r| r.status != 401),
        "no call was refused"
    );
}

#[tokio::test]
async fn tokens_are_cached_and_refreshed_after_a_401() {
    let (emulator, graph, _) = setup().await;
    for id in ["500", "501", "502"] {
        graph.get(id).await.unwrap();
    }
    assert_eq!(
        requests_to(&emulator, "POST", "/oauth2/v2.0/token").len(),
        1,
        "one token for three calls"
    );
    emulator.store().tokens.clear(); // the service forgets (revokes) every token
    graph.get("503").await.unwrap();
    assert_eq!(
        requests_to(&emulator, "POST", "/oauth2/v2.0/token").len(),
        2
    );
}
