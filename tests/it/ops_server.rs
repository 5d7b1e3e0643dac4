//! The operations endpoint over real HTTP: `/metrics` in the Prometheus text format and
//! `/healthz` following the health closure.

use rulebridge::metrics::{self, Metrics};
use rulebridge::ops_server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[tokio::test]
async fn serves_metrics_and_health_until_shut_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let metrics = Arc::new(Metrics::new());
    metrics.inc(metrics::POLLS, &[("side", "defender"), ("result", "ok")]);
    metrics.observe(metrics::SYNC_LAG, &[], 1.5);
    let healthy = Arc::new(AtomicBool::new(true));
    let health = {
        let healthy = healthy.clone();
        Arc::new(move || {
            if healthy.load(Ordering::SeqCst) {
                (true, "pack abc123".to_string())
            } else {
                (false, "defender poll failing for 300s".to_string())
            }
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ops_server::serve(
        listener,
        metrics.clone(),
        health,
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();

    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains("# TYPE rulebridge_polls_total counter\n"),
        "{body}"
    );
    assert!(body.contains("rulebridge_polls_total{result=\"ok\",side=\"defender\"} 1\n"));
    assert!(body.contains("rulebridge_sync_lag_seconds_bucket{le=\"2\"} 1\n"));
    assert!(body.contains("rulebridge_sync_lag_seconds_count 1\n"));
    assert_eq!(body, metrics.render());

    let response = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok pack abc123\n");

    healthy.store(false, Ordering::SeqCst);
    let response = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        "defender poll failing for 300s\n"
    );

    let response = http.get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    stop.send(()).unwrap();
    // Graceful shutdown waits for idle keep-alive connections; dropping the client
    // closes them.
    drop(http);
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("the server stops when told to")
        .unwrap()
        .unwrap();
}
