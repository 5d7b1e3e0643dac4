//! `POST /hooks/sentinel`: a Sentinel automation rule's playbook (a Logic App) tells
//! rulebridge that an incident changed, and the poll loop reconciles that incident at
//! once instead of at the next poll. A hook is a hint, never data: only the incident's
//! name is taken from the body, and the reconcile re-reads both sides, so a forged or
//! replayed hook can at most cause one extra reconcile of an incident rulebridge links.
//!
//! Edge module (axum). A request is taken in this order, each step bounded: the body
//! (size and read time), authentication (`auth`), the rate limit (a token bucket over
//! authenticated requests, so forged floods cannot starve the real sender), replay
//! memory, the name (`payload`), and the bounded queue the loop drains ([`HintQueue`],
//! one entry per incident). Every outcome is counted in `rulebridge_hooks_total`.

pub mod auth;
pub mod payload;

pub use auth::{sign, MAX_SKEW_SECS, SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::client::Secret;
use crate::config::HooksConfig;
use crate::metrics::{self, Metrics};
use auth::{Presented, TokenBucket, Verifier};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The hook's path.
pub const PATH: &str = "/hooks/sentinel";
/// A body not read completely in this time is refused (a slow sender holds nothing).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at once; more are refused at once rather than queued.
const MAX_IN_FLIGHT: usize = 32;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The incident was already waiting; its one entry stands for both.
    Coalesced,
    Full,
}

/// The incidents waiting for an immediate reconcile, oldest first, each at most once.
/// The service loop takes them one at a time, between cycles.
pub struct HintQueue {
    /// Waiting names in order, and each one's (lowercased) time of queueing.
    queued: Mutex<(VecDeque<String>, HashMap<String, Instant>)>,
    ready: tokio::sync::Notify,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl HintQueue {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> HintQueue {
        metrics.set_gauge(metrics::HOOK_QUEUE, &[], 0.0);
        HintQueue {
            queued: Mutex::new((VecDeque::new(), HashMap::new())),
            ready: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
            metrics,
        }
    }

    pub fn push(&self, name: &str) -> Pushed {
        let mut queued = lock(&self.queued);
        // ARM names are case-insensitive: one incident, one entry.
        let key = name.to_ascii_lowercase();
        if queued.1.contains_key(&key) {
            return Pushed::Coalesced;
        }
        queued.1.insert(key, Instant::now());
        if queued.0.len() >= self.capacity {
            queued.1.remove(&name.to_ascii_lowercase());
            return Pushed::Full;
        }
        queued.0.push_back(name.to_string());
        self.metrics
            .set_gauge(metrics::HOOK_QUEUE, &[], queued.0.len() as f64);
        drop(queued);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// The oldest waiting incident; a hook for it from now on queues it again (the
    /// change it announces may come after the read that is about to happen).
    pub fn pop(&self) -> Option<String> {
        self.pop_queued().map(|(name, _)| name)
    }

    /// [`HintQueue::pop`] with when the name was queued.
    fn pop_queued(&self) -> Option<(String, Instant)> {
        let mut queued = lock(&self.queued);
        let name = queued.0.pop_front()?;
        let at = queued
            .1
            .remove(&name.to_ascii_lowercase())
            .unwrap_or_else(Instant::now);
        self.metrics
            .set_gauge(metrics::HOOK_QUEUE, &[], queued.0.len() as f64);
        Some((name, at))
    }

    /// Resolves with the oldest waiting incident and when it was queued, as soon as
    /// there is one. Cancel-safe: nothing is taken unless it is returned.
    pub async fn next(&self) -> (String, Instant) {
        loop {
            if let Some(queued) = self.pop_queued() {
                return queued;
            }
            self.ready.notified().await;
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.queued).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Enabled {
    verifier: Mutex<Verifier>,
    bucket: Mutex<TokenBucket>,
    queue: Arc<HintQueue>,
    max_body: usize,
    in_flight: tokio::sync::Semaphore,
}

struct HookState {
    metrics: Arc<Metrics>,
    enabled: Option<Enabled>,
}

/// The hook endpoint, enabled or not (a disabled one answers 404 and counts it).
#[derive(Clone)]
pub struct Hooks {
    state: Arc<HookState>,
}

impl Hooks {
    pub fn disabled(metrics: Arc<Metrics>) -> Hooks {
        Hooks {
            state: Arc::new(HookState {
                metrics,
                enabled: None,
            }),
        }
    }

    /// Hooks authenticated with `secret` as `config` says, feeding `queue`.
    pub fn enabled(
        config: &HooksConfig,
        secret: &Secret,
        queue: Arc<HintQueue>,
        metrics: Arc<Metrics>,
    ) -> Hooks {
        Hooks {
            state: Arc::new(HookState {
                metrics,
                enabled: Some(Enabled {
                    verifier: Mutex::new(Verifier::new(config.auth, secret)),
                    bucket: Mutex::new(TokenBucket::per_minute(
                        config.requests_per_minute,
                        Instant::now(),
                    )),
                    queue,
                    max_body: config.max_body_bytes,
                    in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
                }),
            }),
        }
    }

    /// `POST /hooks/sentinel`, to merge into a router.
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, post(sentinel))
            .with_state(self.state.clone())
    }
}

/// Serves only the hook on `listener` (`hooks.listen`) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, hooks.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// An answer: the `result` label, the status, a short reason (never request content
/// beyond what the sender knows), and how long to wait before retrying.
struct Answer {
    result: &'static str,
    status: StatusCode,
    reason: &'static str,
    retry_after: Option<Duration>,
}

impl Answer {
    fn new(result: &'static str, status: StatusCode, reason: &'static str) -> Answer {
        Answer {
            result,
            status,
            reason,
            retry_after: None,
        }
    }

    fn retry_after(mut self, wait: Duration) -> Answer {
        self.retry_after = Some(wait);
        self
    }
}

async fn sentinel(State(state): State<Arc<HookState>>, headers: HeaderMap, body: Body) -> Response {
    let answer = match &state.enabled {
        Some(enabled) => take(enabled, &headers, body).await,
        None => Answer::new("disabled", StatusCode::NOT_FOUND, "hooks are disabled"),
    };
    state
        .metrics
        .inc(metrics::HOOKS, &[("result", answer.result)]);
    if answer.status.is_success() {
        tracing::debug!(event = "hook.taken", result = answer.result, "hook taken");
    } else {
        // Debug only: a flood of forged requests must not flood the log; the metric
        // is what to alert on.
        tracing::debug!(
            event = "hook.refused",
            result = answer.result,
            reason = answer.reason,
            "hook refused"
        );
    }
    let mut response = (
        answer.status,
        axum::Json(serde_json::json!({ "result": answer.result, "reason": answer.reason })),
    )
        .into_response();
    if let Some(wait) = answer.retry_after {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

async fn take(on: &Enabled, headers: &HeaderMap, body: Body) -> Answer {
    let Ok(_permit) = on.in_flight.try_acquire() else {
        return Answer::new(
            "rate_limited",
            StatusCode::TOO_MANY_REQUESTS,
            "too many hooks at once",
        )
        .retry_after(Duration::from_secs(1));
    };
    let too_large = || {
        Answer::new(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is too large",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body declared larger than the drain bound is refused before it is read (the
    // sender may see the connection close instead of the 413: it asked for that).
    if declared.is_some_and(|n| n > on.max_body.max(DRAIN_MAX) as u64) {
        return too_large();
    }
    let body = match read_body(body, on.max_body, BODY_TIMEOUT).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Unreadable) => {
            return Answer::new(
                "malformed",
                StatusCode::BAD_REQUEST,
                "the body could not be read",
            )
        }
    };
    let presented = Presented {
        secret: headers.get(SECRET_HEADER).map(HeaderValue::as_bytes),
        signature: headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes),
        timestamp: headers.get(TIMESTAMP_HEADER).map(HeaderValue::as_bytes),
    };
    let now = chrono::Utc::now().timestamp();
    let signed = match lock(&on.verifier).check(presented, &body, now) {
        Ok(signed) => signed,
        Err(refusal) => {
            let status = match refusal {
                auth::Refusal::Replayed => StatusCode::CONFLICT,
                _ => StatusCode::UNAUTHORIZED,
            };
            return Answer::new(refusal.label(), status, "not authenticated");
        }
    };
    if let Err(wait) = lock(&on.bucket).take(Instant::now()) {
        return Answer::new(
            "rate_limited",
            StatusCode::TOO_MANY_REQUESTS,
            "hooks are rate-limited",
        )
        .retry_after(wait);
    }
    if let Some(signed) = signed {
        if !lock(&on.verifier).remember(signed, now) {
            return Answer::new("replayed", StatusCode::CONFLICT, "not authenticated");
        }
    }
    let name = match payload::incident_name(&body) {
        Ok(name) => name,
        Err(reason) => return Answer::new("malformed", StatusCode::BAD_REQUEST, reason),
    };
    match on.queue.push(&name) {
        Pushed::Queued => Answer::new("accepted", StatusCode::ACCEPTED, "queued"),
        Pushed::Coalesced => Answer::new("coalesced", StatusCode::ACCEPTED, "already queued"),
        Pushed::Full => Answer::new(
            "queue_full",
            StatusCode::SERVICE_UNAVAILABLE,
            "the hint queue is full",
        )
        .retry_after(Duration::from_secs(5)),
    }
}

#[derive(Debug, PartialEq)]
enum BodyError {
    TooLarge,
    Unreadable,
}

/// How much of an oversized body is read and thrown away before the 413, so that a
/// sender still writing it reads the answer instead of a reset connection (answering
/// before the body is in lets the server close the connection under the sender).
const DRAIN_MAX: usize = 1024 * 1024;

/// The body, at most `max` bytes, read within `timeout`. Past `max` nothing more is
/// kept: the rest is drained (up to [`DRAIN_MAX`] in all) and the body is too large.
async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let read = async {
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
            seen += chunk.len();
            if seen > max {
                if seen > DRAIN_MAX {
                    return Err(BodyError::TooLarge);
                }
                bytes.clear();
                continue;
            }
            bytes.extend_from_slice(&chunk);
        }
        if seen > max {
            return Err(BodyError::TooLarge);
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| BodyError::Unreadable)??;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_keeps_one_entry_per_incident_and_its_bound() {
        let metrics = Arc::new(Metrics::new());
        let queue = HintQueue::new(2, metrics.clone());
        assert_eq!(queue.push("a"), Pushed::Queued);
        assert_eq!(queue.push("A"), Pushed::Coalesced);
        assert_eq!(queue.push("b"), Pushed::Queued);
        assert_eq!(queue.push("c"), Pushed::Full);
        assert_eq!(metrics.value(metrics::HOOK_QUEUE, &[]), Some(2.0));
        assert_eq!(queue.pop().as_deref(), Some("a"));
        // Taken: a new hook for it queues it again.
        assert_eq!(queue.push("a"), Pushed::Queued);
        assert_eq!(queue.pop().as_deref(), Some("b"));
        assert_eq!(queue.pop().as_deref(), Some("a"));
        assert!(queue.is_empty() && queue.pop().is_none());
        assert_eq!(metrics.value(metrics::HOOK_QUEUE, &[]), Some(0.0));
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_and_its_time() {
        use futures_util::stream;
        let chunks = |n: usize| {
            Body::from_stream(stream::iter(
                (0..n).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 30 * 1024])),
            ))
        };
        let long = Duration::from_secs(5);
        assert_eq!(
            read_body(chunks(2), 64 * 1024, long).await.map(|b| b.len()),
            Ok(60 * 1024)
        );
        // No length declared: too large once a chunk crosses the limit; the rest is
        // drained so the sender reads the 413, but never past the drain bound.
        assert_eq!(
            read_body(chunks(3), 64 * 1024, long).await,
            Err(BodyError::TooLarge)
        );
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let counted = stream::iter((0..1000).map(|_| vec![b'x'; 30 * 1024]))
            .inspect(move |c| {
                counter.fetch_add(c.len(), std::sync::atomic::Ordering::Relaxed);
            })
            .map(Ok::<_, std::io::Error>);
        assert_eq!(
            read_body(Body::from_stream(counted), 64 * 1024, long).await,
            Err(BodyError::TooLarge)
        );
        let drained = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(drained <= DRAIN_MAX + 30 * 1024, "read {drained} bytes");
        let endless =
            stream::iter([Ok::<_, std::io::Error>(b"{".to_vec())]).chain(stream::pending());
        let started = std::time::Instant::now();
        let read = read_body(
            Body::from_stream(endless),
            64 * 1024,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(read, Err(BodyError::Unreadable));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn next_wakes_for_a_push_made_while_it_waits() {
        let queue = Arc::new(HintQueue::new(10, Arc::new(Metrics::new())));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.push("x");
        let (name, queued_at) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(name, "x");
        // Queued after the waiter started: its age is less than the whole wait.
        assert!(queued_at.elapsed() < Duration::from_secs(5));
    }
}
