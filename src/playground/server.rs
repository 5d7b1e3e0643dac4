//! The playground's HTTP side (edge: axum): the embedded page and a small JSON API.
//!
//! `GET /` (and `/app.js`, `/app.css`) the page, compiled into the binary; `GET
//! /api/files` the pack's files and samples; `GET /api/file?path=` one file's text;
//! `POST /api/eval` an edited pack on a sample; `POST /api/save` one file, if the pack
//! it makes is accepted.
//!
//! Any web page the user has open can send requests to 127.0.0.1, so every request,
//! the page included, passes [`guard`] first: its `Host` must be the address the
//! playground listens on (a DNS-rebinding page has its own name there) and an `Origin`,
//! when sent, must be this page's own. POSTs take only `application/json` (a form post
//! from another site cannot be one without a CORS preflight, which nothing here
//! answers). Bodies are capped at [`MAX_BODY`]. The session does the work on blocking
//! threads: a build or a pack's tests never stall the listener.

use super::session::{EvalRequest, Playground, PlaygroundError};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The largest request body: a whole pack file or a pasted incident fits many times over.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The `Host` values (and so `Origin`s) this server answers to.
#[derive(Clone)]
struct Guard {
    hosts: Arc<Vec<String>>,
}

impl Guard {
    fn for_addr(addr: SocketAddr) -> Guard {
        let port = addr.port();
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        Guard {
            hosts: Arc::new(hosts),
        }
    }
}

#[derive(Clone)]
struct App {
    playground: Arc<Playground>,
}

/// Serves the playground on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    playground: Arc<Playground>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = Guard::for_addr(listener.local_addr()?);
    let app = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/files", get(files))
        .route("/api/file", get(file))
        .route("/api/eval", post(eval))
        .route("/api/save", post(save))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(guard, guard_layer))
        .with_state(App { playground });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn guard_layer(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if let Err(why) = guard_check(&guard, req.method(), req.headers()) {
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // The page is never framed by another site (clickjacking) and runs only its own code.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Why a request is refused, if it is.
fn guard_check(guard: &Guard, method: &Method, headers: &HeaderMap) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !guard.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(format!(
            "Host '{}' is not this playground ({}); open it by that address",
            crate::problem::clip_text(host),
            guard.hosts.join(" or ")
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = guard
            .hosts
            .iter()
            .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
        if !own {
            return Err(format!(
                "Origin '{}' is not this playground's page",
                crate::problem::clip_text(origin)
            ));
        }
    }
    if method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err("POST takes only application/json".to_string());
        }
    }
    Ok(())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A session error as an HTTP answer: bad paths are the client's fault (400), an
/// unreadable pack on disk or a failed write the server's (500).
fn error_response(err: PlaygroundError) -> Response {
    let status = match err {
        PlaygroundError::Path(_) | PlaygroundError::NotText(_) => StatusCode::BAD_REQUEST,
        PlaygroundError::Unreadable(_) | PlaygroundError::Write { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (
        status,
        Json(serde_json::json!({ "error": err.to_string() })),
    )
        .into_response()
}

/// Runs session work on a blocking thread (builds and pack tests are CPU work).
async fn blocking<T: serde::Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, PlaygroundError> + Send + 'static,
    ok: StatusCode,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => (ok, Json(value)).into_response(),
        Ok(Err(err)) => error_response(err),
        Err(join) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the evaluation failed: {join}"),
        )
            .into_response(),
    }
}

async fn files(State(app): State<App>) -> Response {
    blocking(move || app.playground.list(), StatusCode::OK).await
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
}

async fn file(State(app): State<App>, Query(q): Query<FileQuery>) -> Response {
    blocking(
        move || {
            let text = app.playground.read(&q.path)?;
            Ok(serde_json::json!({ "path": q.path, "text": text }))
        },
        StatusCode::OK,
    )
    .await
}

async fn eval(State(app): State<App>, Json(req): Json<EvalRequest>) -> Response {
    blocking(move || app.playground.evaluate(&req), StatusCode::OK).await
}

#[derive(Deserialize)]
struct SaveRequest {
    path: String,
    text: String,
}

async fn save(State(app): State<App>, Json(req): Json<SaveRequest>) -> Response {
    let result =
        tokio::task::spawn_blocking(move || app.playground.save(&req.path, &req.text)).await;
    match result {
        // A refused save is an answer, not a failure of the request: 422 with the reasons.
        Ok(Ok(report)) if !report.saved => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response()
        }
        Ok(Ok(report)) => (StatusCode::OK, Json(report)).into_response(),
        Ok(Err(err)) => error_response(err),
        Err(join) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the save failed: {join}"),
        )
            .into_response(),
    }
}
