//! The Sentinel push hook (issue 12) through the real binary: `rulebridge run` against
//! the in-process emulator over 127.0.0.1, with a 300 s poll interval, so only the hook
//! can explain a change that reaches the other side within seconds. A valid hook makes a
//! Sentinel edit reach Defender at once, whatever else its body says; forged, replayed,
//! stale, oversized, unauthenticated, malformed and rate-limited hooks change nothing
//! (the Defender incident and the state file are compared before and after) and are each
//! counted; a hook naming an incident rulebridge does not link writes nothing; a stop
//! wins over queued hints; the secret appears in neither the log nor `/metrics`.

use crate::common::{self, Run};
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::emulator::throttle::ThrottleConfig;
use rulebridge::emulator::{Emulator, EmulatorConfig, EmulatorInfo};
use rulebridge::hooks::{sign, SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use rulebridge::state::{SqliteStore, StateStore};
use rulebridge::sync::fields::sentinel_id;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Not the emulator's app secret: the hook's own, to look for in logs and metrics.
const SECRET: &str = "hook-secret-7d41c0e9a2";
const IDS: [&str; 3] = ["700001", "700002", "700003"];

fn incident(id: &str) -> Value {
    crate::common::graph_incident(id, "medium")
}

/// A service synced once (its first cycle), then idle for 300 s unless hooked.
struct Rig {
    emulator: Emulator,
    info: EmulatorInfo,
    dir: tempfile::TempDir,
    run: Run,
    http: reqwest::Client,
}

impl Rig {
    async fn start(hooks: &str, env: &[(&str, &str)]) -> Rig {
        Rig::start_every(hooks, env, 300).await
    }

    /// [`Rig::start`] with cycles every `interval_secs`.
    async fn start_every(hooks: &str, env: &[(&str, &str)], interval_secs: u64) -> Rig {
        let mut config = EmulatorConfig::default();
        config.observed.throttle = ThrottleConfig::unlimited();
        let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        emulator
            .store()
            .seed_many(IDS.iter().map(|id| incident(id)).collect())
            .unwrap();
        let info = emulator.info();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook-secret"), format!("{SECRET}\n")).unwrap();
        let rules = std::env::current_dir().unwrap().join("rules");
        let tail = format!("[reload]\nwatch = false\n[hooks]\n{hooks}\n");
        let config = common::write_emulator_config(
            dir.path(),
            &info,
            &rules,
            "start_from = \"2000-01-01T00:00:00Z\"",
            &tail,
        );
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace(
                "poll_interval_secs = 5",
                &format!("poll_interval_secs = {interval_secs}"),
            ),
        )
        .unwrap();
        let mut run = Run::start_with(&config, env);
        run.seen(|e| e["message"] == "cycle done", "the first cycle");
        let rig = Rig {
            emulator,
            info,
            dir,
            run,
            http: reqwest::Client::new(),
        };
        for id in IDS {
            assert!(rig.emulator.store().sentinel.contains_key(&rig.twin(id)));
        }
        rig
    }

    /// Every request to `endpoint` from now on answers `delay_ms` late.
    fn slow(&self, endpoint: Endpoint, delay_ms: u64) {
        self.emulator.add_fault(FaultRule {
            kind: FaultKind::Slow { delay_ms },
            endpoint,
            rate: 1.0,
            count: None,
            after: 0,
        });
    }

    fn twin(&self, id: &str) -> String {
        sentinel_id(&self.info.tenant_id, id)
    }

    fn arm_id(&self, name: &str) -> String {
        self.emulator.store().sentinel[name]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn label(&self, id: &str, label: &str) {
        common::sentinel_edit(&self.emulator, &self.twin(id), |p| {
            common::add_label(p, label)
        });
    }

    fn tags(&self, id: &str) -> Vec<String> {
        self.emulator.store().graph[id]["customTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    }

    /// Waits up to 10 s for Defender incident `id` to carry `tag`; how long it took.
    async fn tag_arrives(&self, id: &str, tag: &str) -> Duration {
        let started = Instant::now();
        while !self.tags(id).iter().any(|t| t == tag) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{tag} never reached Defender incident {id}: {:?}",
                self.tags(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// What a hook must not change: the Defender incident, and every link and count in
    /// the state file (read beside the running service, as `status` does).
    fn snapshot(&self) -> (Value, Vec<Value>, Value) {
        let store = self.emulator.store();
        let defender = json!(IDS.iter().map(|id| &store.graph[*id]).collect::<Vec<_>>());
        drop(store);
        let state = SqliteStore::open_existing(&self.dir.path().join("state.db")).unwrap();
        let links = IDS
            .iter()
            .map(|id| serde_json::to_value(state.link(id).unwrap().unwrap()).unwrap())
            .collect();
        (
            defender,
            links,
            serde_json::to_value(state.counts().unwrap()).unwrap(),
        )
    }

    /// Writes the emulator received (PUT, PATCH, POST other than sign-ins).
    fn writes(&self) -> usize {
        self.emulator
            .store()
            .requests
            .iter()
            .filter(|r| r.method != "GET" && r.grant.is_none() && !r.path.ends_with("/token"))
            .count()
    }

    async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
        let mut request = self.http.post(url).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let mut body: Value = response.json().await.unwrap_or(Value::Null);
        if let Some(wait) = retry_after {
            body["retry_after"] = json!(wait.to_str().unwrap());
        }
        (status, body)
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.run.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A counter's value in `/metrics` (0 when it has no sample yet).
    async fn counter(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series)
    }

    /// Waits up to 10 s for `series` to reach `want`.
    async fn counter_reaches(&self, series: &str, want: f64) {
        let started = Instant::now();
        loop {
            let text = self.metrics().await;
            if metric(&text, series) >= want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{series} stayed below {want}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the service; its log must be free of the secret.
    fn stop(self) {
        let log = self.run.stop().join("\n");
        assert!(!log.contains(SECRET), "the hook secret leaked into the log");
        assert!(log.contains("push hook on"), "{log}");
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn hooks_total(result: &str) -> String {
    format!("rulebridge_hooks_total{{result=\"{result}\"}}")
}

fn hook_syncs(outcome: &str) -> String {
    format!("rulebridge_hook_syncs_total{{outcome=\"{outcome}\"}}")
}

/// What a Sentinel automation rule hands the playbook's incident trigger, as a Logic App
/// HTTP action with body `@{triggerBody()}` forwards it: the incident under `object`,
/// with properties that must not be taken for data.
fn trigger_body(arm_id: &str, name: &str) -> Vec<u8> {
    json!({
        "eventUniqueId": "0b5a4a4c-1a0e-4f5c-9d6e-2f1d9f0c8a11",
        "objectSchemaType": "Incident",
        "objectEventType": "Update",
        "workspaceInfo": {"SubscriptionId": "s", "ResourceGroupName": "rg", "WorkspaceName": "ws"},
        "workspaceId": "8d300aff-d535-4430-9eef-3046965c48cf",
        "object": {
            "id": arm_id,
            "name": name,
            "etag": "\"forged\"",
            "type": "Microsoft.SecurityInsights/Incidents",
            "properties": {
                "title": "Injected title",
                "status": "Closed",
                "classification": "BenignPositive",
                "labels": [{"labelName": "Injected", "labelType": "User"}],
            },
        },
    })
    .to_string()
    .into_bytes()
}

type Headers = Vec<(&'static str, String)>;

fn secret_header() -> Headers {
    vec![(SECRET_HEADER, SECRET.to_string())]
}

fn signed(secret: &str, timestamp: i64, body: &[u8]) -> Headers {
    let timestamp = timestamp.to_string();
    vec![
        (SIGNATURE_HEADER, sign(secret, &timestamp, body)),
        (TIMESTAMP_HEADER, timestamp),
    ]
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_brings_a_sentinel_change_to_defender_at_once_and_nothing_else() {
    // The hook on a listener of its own (what an ingress points at).
    let mut rig = Rig::start(
        "enabled = true\nsecret_file = \"hook-secret\"\nlisten = \"127.0.0.1:0\"\n",
        &[],
    )
    .await;
    let hook = rig
        .run
        .seen(|e| e["event"] == "hooks.listening", "the hook address");
    let hook = format!("http://{}/hooks/sentinel", hook["addr"].as_str().unwrap());
    let (a, b, c) = (IDS[0], IDS[1], IDS[2]);

    // An analyst's label in Sentinel waits for a poll 300 s away...
    rig.label(a, "Hooked");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rig.tags(a).contains(&"Hooked".to_string()));
    // ...until the playbook's hook names the incident.
    let name = rig.twin(a);
    let (status, body) = rig
        .post(
            &hook,
            &secret_header(),
            trigger_body(&rig.arm_id(&name), &name),
        )
        .await;
    assert_eq!(
        (status, &body["result"]),
        (202, &json!("accepted")),
        "{body}"
    );
    let lag = rig.tag_arrives(a, "Hooked").await;
    eprintln!("hook to Defender write: {lag:?}");
    assert!(lag < Duration::from_secs(5), "{lag:?}");
    rig.counter_reaches(&hook_syncs("synced"), 1.0).await;
    // Its reads are labelled as a hint's in the API budget (its write as a write).
    for side in ["sentinel", "defender"] {
        let series =
            format!("rulebridge_api_calls_by_purpose_total{{purpose=\"hint\",side=\"{side}\"}}");
        assert!(rig.counter(&series).await >= 1.0, "{series}");
    }
    // Only the name was taken: nothing of the body's properties reached either side.
    let d = rig.emulator.store().graph[a].clone();
    assert_eq!(d["status"], "active", "{d:#}");
    assert!(!rig.tags(a).contains(&"Injected".to_string()), "{d:#}");
    let s = rig.emulator.store().sentinel[&name]["properties"].clone();
    assert_ne!(s["title"], "Injected title", "{s:#}");
    assert_ne!(s["status"], "Closed", "{s:#}");

    // The minimal bodies, by name (upper case: ARM names are case-insensitive) and ARM id.
    rig.label(b, "ByName");
    let body = json!({ "incidentName": rig.twin(b).to_uppercase() });
    let (status, _) = rig
        .post(&hook, &secret_header(), body.to_string().into())
        .await;
    assert_eq!(status, 202);
    rig.tag_arrives(b, "ByName").await;
    rig.label(c, "ById");
    let body = json!({ "id": rig.arm_id(&rig.twin(c)) });
    let (status, _) = rig
        .post(&hook, &secret_header(), body.to_string().into())
        .await;
    assert_eq!(status, 202);
    rig.tag_arrives(c, "ById").await;
    rig.counter_reaches(&hook_syncs("synced"), 3.0).await;

    // Names rulebridge does not link write nothing: one that does not exist, and a
    // Sentinel incident of someone else's.
    let base = rig.arm_id(&name);
    let base = base.strip_suffix(&format!("/{name}")).unwrap().to_string();
    let foreign = "0f0e0d0c-0000-4000-8000-00000000f00d";
    rig.emulator
        .store()
        .sentinel_put(
            &base,
            foreign,
            &json!({"properties": {"title": "Made by hand", "severity": "Low", "status": "New"}}),
            None,
        )
        .unwrap();
    let (before, writes) = (rig.snapshot(), rig.writes());
    for unlinked in ["00000000-0000-4000-8000-00000000dead", foreign] {
        let body = json!({ "incidentName": unlinked });
        let (status, _) = rig
            .post(&hook, &secret_header(), body.to_string().into())
            .await;
        assert_eq!(status, 202);
    }
    rig.counter_reaches(&hook_syncs("unlinked"), 2.0).await;
    assert_eq!((rig.snapshot(), rig.writes()), (before, writes));

    // The hook listener serves nothing else, and the ops listener not the hook.
    let base_url = hook.strip_suffix("/hooks/sentinel").unwrap();
    let (status, _) = rig
        .post(&format!("{base_url}/metrics"), &[], Vec::new())
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        reqwest::get(format!("{base_url}/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
    let ops_hook = format!("http://{}/hooks/sentinel", rig.run.ops);
    let (status, _) = rig.post(&ops_hook, &secret_header(), b"{}".to_vec()).await;
    assert_eq!(status, 404);

    let metrics = rig.metrics().await;
    assert_eq!(metric(&metrics, &hooks_total("accepted")), 5.0, "{metrics}");
    assert!(!metrics.contains(SECRET), "the hook secret is in /metrics");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_oversized_malformed_or_throttled_hooks_change_nothing_and_are_counted() {
    let rig = Rig::start(
        "enabled = true\nauth = \"hmac\"\nsecret_env = \"RB_TEST_HOOK_SECRET\"\nrequests_per_minute = 5\n",
        &[("RB_TEST_HOOK_SECRET", SECRET)],
    )
    .await;
    let hook = format!("http://{}/hooks/sentinel", rig.run.ops);
    let a = IDS[0];
    let name = rig.twin(a);
    // A change a valid hook would bring over at once.
    rig.label(a, "Pending");
    let before = rig.snapshot();
    let writes = rig.writes();
    let body = json!({ "incidentName": name }).to_string().into_bytes();
    let t = now();

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let oversized = json!({ "incidentName": name, "pad": "x".repeat(70 * 1024) })
        .to_string()
        .into_bytes();
    let bad_name = br#"{"incidentName":"../../providers/x"}"#.to_vec();
    let not_json = b"incidentName=x".to_vec();
    let attempts: Vec<(&str, Headers, Vec<u8>, u16, &str)> = vec![
        (
            "no credentials",
            vec![],
            body.clone(),
            401,
            "unauthenticated",
        ),
        (
            "the secret header, where a signature is required",
            secret_header(),
            body.clone(),
            401,
            "unauthenticated",
        ),
        (
            "another secret's signature",
            signed("not-the-secret", t, &body),
            body.clone(),
            401,
            "bad_signature",
        ),
        (
            "a signature over another body",
            signed(SECRET, t, &body),
            tampered,
            401,
            "bad_signature",
        ),
        (
            "a signature ten minutes old",
            signed(SECRET, t - 600, &body),
            body.clone(),
            401,
            "stale",
        ),
        (
            "70 KiB",
            signed(SECRET, t, &oversized),
            oversized.clone(),
            413,
            "too_large",
        ),
        (
            "a name with a path in it",
            signed(SECRET, t, &bad_name),
            bad_name.clone(),
            400,
            "malformed",
        ),
        (
            "not JSON",
            signed(SECRET, t, &not_json),
            not_json.clone(),
            400,
            "malformed",
        ),
    ];
    for (what, headers, payload, want, result) in &attempts {
        let (status, answer) = rig.post(&hook, headers, payload.clone()).await;
        assert_eq!(
            (status, answer["result"].as_str()),
            (*want, Some(*result)),
            "{what}: {answer}"
        );
    }
    // Had any of them been taken, the label would be in Defender by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!rig.tags(a).contains(&"Pending".to_string()));
    assert_eq!(rig.snapshot(), before);
    assert_eq!(rig.writes(), writes);
    let metrics = rig.metrics().await;
    for (result, n) in [
        ("unauthenticated", 2.0),
        ("bad_signature", 2.0),
        ("stale", 1.0),
        ("too_large", 1.0),
        ("malformed", 2.0),
    ] {
        assert_eq!(
            metric(&metrics, &hooks_total(result)),
            n,
            "{result}:\n{metrics}"
        );
    }
    assert_eq!(metric(&metrics, &hooks_total("accepted")), 0.0, "{metrics}");

    // The genuine article is taken (the third of five tokens a minute)...
    let genuine = signed(SECRET, now(), &body);
    let (status, answer) = rig.post(&hook, &genuine, body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    rig.tag_arrives(a, "Pending").await;
    rig.counter_reaches(&hook_syncs("synced"), 1.0).await;

    // ...once: the same request again is a replay, however genuine.
    rig.label(a, "Second");
    let before = rig.snapshot();
    let writes = rig.writes();
    let (status, answer) = rig.post(&hook, &genuine, body.clone()).await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (409, Some("replayed")),
        "{answer}"
    );

    // Two more genuine hooks use up the bucket (for names nobody links: no writes);
    // the next one, genuine and for the labelled incident, is refused.
    for unlinked in [
        "00000000-0000-4000-8000-00000000beef",
        "00000000-0000-4000-8000-00000000cafe",
    ] {
        let other = json!({ "incidentName": unlinked }).to_string();
        let (status, _) = rig
            .post(
                &hook,
                &signed(SECRET, now(), other.as_bytes()),
                other.into(),
            )
            .await;
        assert_eq!(status, 202);
    }
    let late = json!({ "id": rig.arm_id(&name) }).to_string().into_bytes();
    let (status, answer) = rig
        .post(&hook, &signed(SECRET, now(), &late), late.clone())
        .await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (429, Some("rate_limited")),
        "{answer}"
    );
    let wait: u64 = answer["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&wait), "{answer}");
    rig.counter_reaches(&hook_syncs("unlinked"), 2.0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!rig.tags(a).contains(&"Second".to_string()));
    assert_eq!(rig.snapshot(), before);
    assert_eq!(rig.writes(), writes);

    let metrics = rig.metrics().await;
    for (result, n) in [("accepted", 3.0), ("replayed", 1.0), ("rate_limited", 1.0)] {
        assert_eq!(
            metric(&metrics, &hooks_total(result)),
            n,
            "{result}:\n{metrics}"
        );
    }
    assert!(!metrics.contains(SECRET), "the hook secret is in /metrics");
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_of_an_incident_already_in_sync_costs_one_arm_read_and_no_graph_call() {
    let rig = Rig::start("enabled = true\nsecret_file = \"hook-secret\"\n", &[]).await;
    let hook = format!("http://{}/hooks/sentinel", rig.run.ops);
    let hint_calls = |side: &str| {
        format!("rulebridge_api_calls_by_purpose_total{{purpose=\"hint\",side=\"{side}\"}}")
    };
    // The first cycle synced everything: a hook now (a duplicate, a late one, one whose
    // change a poll got to first) finds the etag and comment count the sync left.
    let body = json!({ "incidentName": rig.twin(IDS[1]) }).to_string();
    let (status, _) = rig.post(&hook, &secret_header(), body.into()).await;
    assert_eq!(status, 202);
    rig.counter_reaches(&hook_syncs("unchanged"), 1.0).await;
    assert_eq!(rig.counter(&hint_calls("sentinel")).await, 1.0);
    assert_eq!(rig.counter(&hint_calls("defender")).await, 0.0);
    // A comment moves the count, not the etag: that hint reads on.
    let name = rig.twin(IDS[1]);
    let arm_id = rig.arm_id(&name);
    let base = arm_id.strip_suffix(&format!("/{name}")).unwrap();
    rig.emulator
        .store()
        .sentinel_comment(
            base,
            &name,
            "5e0c0000-0000-4000-8000-0000000000b7",
            &json!({"properties": {"message": "a comment only the count shows"}}),
        )
        .unwrap();
    let body = json!({ "incidentName": name }).to_string();
    let (status, _) = rig.post(&hook, &secret_header(), body.into()).await;
    assert_eq!(status, 202);
    rig.counter_reaches(&hook_syncs("synced"), 1.0).await;
    let comments = rig.emulator.store().graph[IDS[1]]["comments"].clone();
    assert!(
        comments
            .to_string()
            .contains("a comment only the count shows"),
        "{comments:#}"
    );
    assert!(rig.counter(&hint_calls("defender")).await >= 1.0);
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_is_served_while_a_cycle_is_running() {
    let mut rig = Rig::start_every("enabled = true\nsecret_file = \"hook-secret\"\n", &[], 5).await;
    let hook = format!("http://{}/hooks/sentinel", rig.run.ops);
    // Every Defender listing from now on takes 8 s: the second cycle, due 5 s after the
    // first, hangs in its Defender poll, its first request.
    rig.slow(Endpoint::GraphList, 8000);
    rig.run.wait_for(
        |e| e["event"] == "cycle.started" && e["cycle"] == 2,
        "the second cycle",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a, name) = (IDS[0], rig.twin(IDS[0]));
    rig.label(a, "WhileCycling");
    let (status, _) = rig
        .post(
            &hook,
            &secret_header(),
            trigger_body(&rig.arm_id(&name), &name),
        )
        .await;
    assert_eq!(status, 202);
    let lag = rig.tag_arrives(a, "WhileCycling").await;
    assert!(lag < Duration::from_secs(5), "{lag:?}");
    let stopping = Instant::now();
    let log = rig.run.stop();
    // A stop does not wait for the hung listing: a read on the wire is dropped.
    let stop_took = stopping.elapsed();
    assert!(
        stop_took < Duration::from_secs(6),
        "the stop took {stop_took:?}"
    );
    // The hinted sync ended while a cycle was running: after that cycle began and before
    // it was done. Before hints ran beside the cycle this could not happen.
    let events: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let hinted = events
        .iter()
        .position(|e| e["event"] == "hook.reconciled" && e["outcome"] == "synced")
        .unwrap_or_else(|| panic!("no synced hint:\n{}", log.join("\n")));
    let began = events[..hinted]
        .iter()
        .rposition(|e| e["event"] == "cycle.started")
        .expect("a cycle began before the hint");
    assert!(
        !events[began..hinted]
            .iter()
            .any(|e| e["message"] == "cycle done"),
        "the hint ran between cycles, not beside one:\n{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_wins_over_queued_hints() {
    let rig = Rig::start("enabled = true\nsecret_file = \"hook-secret\"\n", &[]).await;
    let hook = format!("http://{}/hooks/sentinel", rig.run.ops);
    // Each hinted reconcile's first read takes 1.5 s: three queued hints are 4.5 s of work.
    rig.slow(Endpoint::SentinelGet, 1500);
    for id in IDS {
        let body = json!({ "incidentName": rig.twin(id) }).to_string();
        let (status, _) = rig.post(&hook, &secret_header(), body.into()).await;
        assert_eq!(status, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let log = rig.run.stop();
    let took = started.elapsed();
    // The incident in hand is finished; the queued ones are left to the polls.
    let reconciled = log
        .iter()
        .filter(|l| l.contains("\"hook.reconciled\""))
        .count();
    assert!(
        reconciled <= 1,
        "{reconciled} hints after the stop:\n{}",
        log.join("\n")
    );
    assert!(took < Duration::from_millis(3500), "the stop took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_hook_answers_404_and_is_counted() {
    let rig = Rig::start("enabled = false\n", &[]).await;
    let hook = format!("http://{}/hooks/sentinel", rig.run.ops);
    let body = json!({ "incidentName": rig.twin(IDS[0]) }).to_string();
    let (status, answer) = rig.post(&hook, &secret_header(), body.into()).await;
    assert_eq!((status, answer["result"].as_str()), (404, Some("disabled")));
    assert_eq!(rig.counter(&hooks_total("disabled")).await, 1.0);
    let log = rig.run.stop().join("\n");
    assert!(!log.contains("push hook on"), "{log}");
}

#[test]
fn hooks_enabled_without_a_secret_stop_run_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let info = crate::common::unreachable_emulator("app-secret");
    let rules = std::env::current_dir().unwrap().join("rules");
    let config: PathBuf = common::write_emulator_config(
        dir.path(),
        &info,
        &rules,
        "",
        "[hooks]\nenabled = true\nsecret_env = \"RB_HOOK_SECRET_NEVER_SET_51\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RB_HOOK_SECRET_NEVER_SET_51")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hooks: hooks are enabled but have no secret")
            && err.contains("RB_HOOK_SECRET_NEVER_SET_51"),
        "{err}"
    );
    assert!(!err.contains("cycle done"), "{err}");
}
