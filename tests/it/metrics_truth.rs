//! `rulebridge_api_calls_total` is counted where requests are sent, so it must agree
//! with what the emulator received, request for request: every side, method and
//! status, retries of 503s and comment reads included.

use rulebridge::emulator::analysts::Analysts;
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::metrics;
use rulebridge::rules::CompiledPack;
use rulebridge::snapshot::PackSnapshot;
use rulebridge::testbed::{Testbed, TestbedOptions};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_counted_equal_the_requests_the_services_received() {
    let dir = tempfile::tempdir().unwrap();
    let pack = CompiledPack::build(PackSnapshot::built_in(None).unwrap()).unwrap();
    let mut options = TestbedOptions::new(40, dir.path().join("state.db"));
    // Some requests fail and are retried: each attempt is a request.
    options.faults = vec![FaultRule {
        kind: FaultKind::ServerError { status: 503 },
        endpoint: Endpoint::Any,
        rate: 0.05,
        count: None,
        after: 0,
    }];
    let tb = Testbed::start(pack, options).await.unwrap();
    tb.quiesce(20).await.unwrap();
    let mut analysts = Analysts::new(3);
    {
        let mut store = tb.emulator.store();
        for _ in 0..40 {
            analysts.edit_once(&mut store);
        }
    }
    tb.quiesce(20).await.unwrap();
    tb.syncer.sweep(40).await.unwrap();

    let mut received: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for r in tb.emulator.store().requests.iter() {
        let side = if r.path.starts_with("/v1.0/security") {
            "defender"
        } else if r.path.starts_with("/subscriptions/") {
            "sentinel"
        } else {
            continue; // token requests: the identity client's own
        };
        *received
            .entry((side.into(), r.method.clone(), r.status.to_string()))
            .or_default() += 1.0;
    }
    assert!(
        received.len() >= 6,
        "too little traffic to compare: {received:?}"
    );
    assert!(
        received.keys().any(|(_, _, status)| status == "503"),
        "no retried request among {received:?}"
    );
    for ((side, method, status), n) in &received {
        let counted = tb.metrics.value(
            metrics::API_CALLS,
            &[("side", side), ("method", method), ("status", status)],
        );
        assert_eq!(
            counted,
            Some(*n),
            "{side} {method} {status}: the emulator received {n}"
        );
    }
    // And nothing counted that the services never received.
    let total: f64 = received.values().sum();
    let rendered = tb.metrics.render();
    let counted_total: f64 = rendered
        .lines()
        .filter(|l| l.starts_with("rulebridge_api_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted_total, total, "{rendered}");
}
