//! Requests/s the emulator serves on loopback, and incidents/s of a full paged listing
//! of 10,000 generated incidents through the real Graph and Sentinel clients.
//!
//! Run: `cargo bench --bench emulator`. Client and server share the machine's cores,
//! as they do in `demo` and the integration tests.

use rulebridge::client::{
    Api, Credentials, GraphClient, RateLimiter, RetryPolicy, Secret, SentinelClient, TokenSource,
    ARM_SCOPE, GRAPH_SCOPE,
};
use rulebridge::emulator::{Emulator, EmulatorConfig, EmulatorInfo};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INCIDENTS: usize = 10_000;

fn api(info: &EmulatorInfo, scope: &str) -> Api {
    let http = reqwest::Client::new();
    let credentials = Credentials {
        tenant_id: info.tenant_id.clone(),
        client_id: info.client_id.clone(),
        client_secret: Secret::new(info.client_secret.clone()),
    };
    let tokens = Arc::new(TokenSource::new(
        http.clone(),
        info.token_url.clone(),
        credentials,
        scope.into(),
    ));
    // No rate limit: this measures the emulator and the client, not Microsoft's ceilings.
    Api::new(
        http,
        tokens,
        RateLimiter::new(1e9, 1_000_000),
        RetryPolicy::default(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Requests/s served: the services' own rate limits would measure those instead.
        let mut config = EmulatorConfig::default();
        config.observed.throttle = rulebridge::emulator::throttle::ThrottleConfig::unlimited();
        let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
        let info = emulator.info();
        let incidents = rulebridge::emulator::seed::generate(INCIDENTS, 7);
        let bytes: usize = incidents.iter().map(|i| i.to_string().len()).sum();
        let ids: Arc<Vec<String>> = Arc::new(incidents.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect());
        emulator.store().seed_many(incidents).unwrap();

        // Requests/s: 16 concurrent clients GET single incidents for 5 s.
        let graph = Arc::new(GraphClient::new(api(&info, GRAPH_SCOPE), &info.graph_base_url));
        graph.get(&ids[0]).await.unwrap(); // fetches the token
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..16)
            .map(|w| {
                let (graph, done, ids) = (graph.clone(), done.clone(), ids.clone());
                tokio::spawn(async move {
                    let mut i = w;
                    while started.elapsed() < Duration::from_secs(5) {
                        assert!(graph.get(&ids[i % INCIDENTS]).await.unwrap().is_some());
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 16;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let rps = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

        // A full paged listing (50 per page, alerts expanded), twice; the second is reported.
        let mut graph_rate = 0.0;
        for _ in 0..2 {
            let started = Instant::now();
            let listed = graph.list_changed(None).await.unwrap();
            assert_eq!(listed.len(), INCIDENTS);
            graph_rate = INCIDENTS as f64 / started.elapsed().as_secs_f64();
        }

        // Sentinel: 10,000 creates by PUT, then a full listing (1,000 per page).
        let sentinel = Arc::new(SentinelClient::new(api(&info, ARM_SCOPE), &info.sentinel_incidents_url).unwrap());
        let started = Instant::now();
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let sentinel = sentinel.clone();
                tokio::spawn(async move {
                    for i in (w..INCIDENTS).step_by(16) {
                        let props = json!({"title": format!("incident {i}"), "severity": "Medium", "status": "New", "description": "x".repeat(500)});
                        sentinel.put(&format!("00000000-0000-4000-8000-{i:012}"), &props, None).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let put_rate = INCIDENTS as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        assert_eq!(sentinel.list_changed(None).await.unwrap().len(), INCIDENTS);
        let sentinel_rate = INCIDENTS as f64 / started.elapsed().as_secs_f64();

        println!("emulator on loopback, {INCIDENTS} generated Graph incidents (mean {} bytes with alerts):", bytes / INCIDENTS);
        println!("  GET one incident, 16 concurrent clients: {rps:>9.0} requests/s");
        println!("  Graph full paged listing ($top=50, $expand=alerts): {graph_rate:>9.0} incidents/s");
        println!("  Sentinel PUT creates, 16 concurrent clients: {put_rate:>9.0} incidents/s");
        println!("  Sentinel full paged listing ($top=1000): {sentinel_rate:>9.0} incidents/s");
    });
}
