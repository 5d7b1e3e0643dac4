//! The operations endpoint of `rulebridge run`: `GET /metrics` (Prometheus text format
//! 0.0.4) and `GET /healthz` (200 `ok …` or 503 with the reason), on their own
//! listener so scraping never competes with anything else.
//!
//! Edge module (tokio, axum). It knows nothing of the sync: health is whatever the
//! caller's closure says, so the rule of what is healthy lives with the sync.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;

/// `(healthy, message)`, asked on every `/healthz` request; must not block.
pub type Health = Arc<dyn Fn() -> (bool, String) + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Serves until `shutdown` completes (in-flight requests finish first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<dyn Fn() -> (bool, String) + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .with_state(Ops { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(ops): State<Ops>) -> Response {
    let (healthy, message) = (ops.health)();
    let body = match (healthy, message.is_empty()) {
        (true, true) => "ok\n".to_string(),
        (true, false) => format!("ok {message}\n"),
        (false, _) => format!("{message}\n"),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
