//! The operations endpoint of `rulebridge run`: `GET /metrics` (Prometheus text format
//! 0.0.4), `GET /healthz` (liveness: 200 `ok …` or 503 with the reason) and `GET
//! /readyz` (readiness: 200 or 503, a JSON body with the reasons), on their own
//! listener so scraping never competes with anything else.
//!
//! Edge module (tokio, axum). It knows nothing of the sync: health and readiness are
//! whatever the caller's closures say, so the rule of what is healthy lives with the
//! sync (`health`).

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

/// `(ready, body)`, asked on every `/readyz` request; must not block.
pub type Readiness = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    health: Health,
    ready: Readiness,
}

/// Serves until `shutdown` completes (in-flight requests finish first); `/readyz`
/// follows `/healthz` (for callers with one notion of health).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<dyn Fn() -> (bool, String) + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ready: Readiness = {
        let health = health.clone();
        Arc::new(move || {
            let (ok, message) = health();
            (ok, serde_json::json!({ "ready": ok, "reason": message }))
        })
    };
    serve_probes(listener, metrics, health, ready, shutdown).await
}

/// [`serve`] with readiness apart from liveness.
pub async fn serve_probes(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, metrics, health, ready, Router::new(), shutdown).await
}

/// [`serve_probes`] with `extra` routes beside them (the push hook).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    ready: Readiness,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops {
            metrics,
            health,
            ready,
        })
        .merge(extra);
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

async fn readyz(State(ops): State<Ops>) -> Response {
    let (ready, body) = (ops.ready)();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
